"""Backward as-of joins (ties included) in portable Ibis, for engines without a correct
native one.

``asof_backward`` answers, for each row of ``base``, the value columns of the newest row
of ``right`` with equal keys and ``right[time] <= base[label]``; rows without a match
keep nulls, and ``base`` keeps its row count. Two plans:

* ``window`` -- labels and events in one table per key, ordered by time (events first at
  equal times); each event row holds its values in one struct, and each label row takes
  the last non-null struct before it: linear in labels + events, one shuffle and sort of
  both, and one join back to ``base`` by row id; needs window functions.
* ``pairwise`` -- an equality join and a group-by: runs everywhere, at a cost of
  labels x events per key.

Engines pick one from their capabilities (:meth:`mlforge.engines.base.Engine.asof_backward`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import ibis.expr.types as ir

_ASOF = "__mlforge_asof_ts"
_TIME = "__mlforge_time"
_IS_LABEL = "__mlforge_is_label"
_VALUES = "__mlforge_values"
_ROW = "__mlforge_found_row"


@dataclass(frozen=True)
class AsofJoin:
    """The columns of one backward as-of join.

    Attributes:
        row: a unique row id of ``base``.
        label: the label time column of ``base``.
        time: the event time column of ``right``.
        left_keys / right_keys: equal-key columns of ``base`` and ``right``, pairwise.
        values: the columns of ``right`` to attach.
    """

    row: str
    label: str
    time: str
    left_keys: tuple[str, ...]
    right_keys: tuple[str, ...]
    values: tuple[str, ...]

    def usable_labels(self, base: ir.Table) -> ir.Table:
        """Labels that can match: a null key or time matches nothing (the row keeps nulls)."""
        return _non_null(base, [*self.left_keys, self.label])

    def usable_events(self, right: ir.Table) -> ir.Table:
        return _non_null(right, [*self.right_keys, self.time])


def _non_null(table: ir.Table, columns: Sequence[str]) -> ir.Table:
    return table.filter([table[c].notnull() for c in columns])


def native(base: ir.Table, right: ir.Table, join: AsofJoin) -> ir.Table:
    """Ibis's ``asof_join``, for engines whose native as-of join is correct."""
    # Same-named "on" columns on both sides: Ibis mis-compiles as-of joins whose columns
    # differ in name; DuckDB's ASOF counts ts == label as known (ties included).
    import ibis

    right = right.rename(**{join.label: join.time})
    predicates = [base[k] == right[rk] for k, rk in zip(join.left_keys, join.right_keys, strict=True)]
    joined = base.asof_join(right, on=join.label, predicates=predicates).select(*base.columns, *join.values)
    # A null label knows nothing (P2); DuckDB's ASOF matched it to the newest row when the
    # query held another join (a metric feature requested in the same call).
    unknown = joined[join.label].isnull()
    return joined.mutate(**{v: ibis.ifelse(unknown, ibis.null(joined[v].type()), joined[v]) for v in join.values})


def window(base: ir.Table, right: ir.Table, join: AsofJoin) -> ir.Table:
    """The linear plan: the newest event's values carried forward in time (engines with
    window functions)."""
    import ibis

    events = join.usable_events(right)
    # A struct per event, so a null value of the newest event stays null instead of letting
    # an older event's value through (``last`` skips null structs, not null fields).
    carried = ibis.struct({name: events[name] for name in join.values})
    events = events.select(*join.right_keys, **{_TIME: events[join.time], join.row: ibis.null("int64"), _IS_LABEL: ibis.literal(0, "int8"), _VALUES: carried})
    labels = join.usable_labels(base)
    labels = labels.select(
        **{rk: labels[k] for k, rk in zip(join.left_keys, join.right_keys, strict=True)},
        **{_TIME: labels[join.label], join.row: labels[join.row].cast("int64"), _IS_LABEL: ibis.literal(1, "int8"), _VALUES: ibis.null(carried.type())},
    )
    both = events.union(labels, distinct=False)
    running = ibis.cumulative_window(group_by=list(join.right_keys), order_by=[both[_TIME], both[_IS_LABEL]])
    both = both.mutate(**{_VALUES: both[_VALUES].last(include_null=False).over(running)})
    found = both.filter(both[_IS_LABEL] == 1)
    found = found.select(**{_ROW: found[join.row]}, **{name: found[_VALUES][name] for name in join.values})
    return base.left_join(found, base[join.row] == found[_ROW]).select(*base.columns, *join.values)


def pairwise(base: ir.Table, right: ir.Table, join: AsofJoin) -> ir.Table:
    """The plan every engine runs: join on the keys, keep ``time <= label``, take the max."""
    probe = base.select(join.row, join.label, *join.left_keys)
    events = right.select(*join.right_keys, join.time)
    pairs = probe.inner_join(events, [probe[k] == events[rk] for k, rk in zip(join.left_keys, join.right_keys, strict=True)])
    pairs = pairs.filter(pairs[join.time] <= pairs[join.label])
    return _newest_rows(base, right, join, pairs.group_by(join.row).aggregate(**{_ASOF: pairs[join.time].max()}))


def _newest_rows(base: ir.Table, right: ir.Table, join: AsofJoin, newest: ir.Table) -> ir.Table:
    """Each base row's values at its newest event time (nulls when there is none)."""
    with_ts = base.left_join(newest, base[join.row] == newest[join.row]).select(*base.columns, _ASOF)
    rows = right.distinct(on=[*join.right_keys, join.time], keep="first")
    on = [with_ts[k] == rows[rk] for k, rk in zip(join.left_keys, join.right_keys, strict=True)] + [with_ts[_ASOF] == rows[join.time]]
    return with_ts.left_join(rows, on).select(*base.columns, *join.values)
