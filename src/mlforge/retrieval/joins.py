"""The joins of training data: grid-label equality joins and backward as-of joins (P2, P3)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mlforge.errors import RetrievalError

if TYPE_CHECKING:
    import ibis.expr.types as ir

    from mlforge.definitions.entity import Entity
    from mlforge.engines.base import Engine
    from mlforge.retrieval.specs import _Plan

_ROW = "__mlforge_row"
_LABEL = "__mlforge_label"
_TS = "__mlforge_ts"
_ASOF = "__mlforge_asof_ts"
_NEWEST = "__mlforge_newest"
_TIME = "__mlforge_time"
_IS_LABEL = "__mlforge_is_label"
_MATCH_ROW = "__mlforge_match_row"
_KEY = "__mlforge_key_{}"


def _prepare(base: ir.Table, plans: list[_Plan], computed: dict[str, Entity], timestamp: str | None, engine: Engine) -> ir.Table:
    """Add computed join keys (K2) and the label as a naive UTC timestamp; check key types."""
    import ibis.expr.datatypes as dt

    from mlforge.prepare import add_surrogate_key

    for entity in computed.values():
        base = add_surrogate_key(base, entity, engine, where="entity_df")
    if timestamp is not None:
        dtype = base[timestamp].type()
        if not dtype.is_timestamp():
            raise RetrievalError(f"timestamp column {timestamp!r} of entity_df has type {dtype}, not a timestamp", fix="convert it first (pd.to_datetime, pl.col(...).str.to_datetime); naive values are read as UTC")
        label = engine.to_utc_naive(base[timestamp]) if dtype.timezone else base[timestamp]
        base = base.mutate(**{_LABEL: label.cast(dt.Timestamp(scale=6))})
    for plan in plans:
        for key in plan.keys:
            left, right = base[key].type(), plan.table[key].type()
            if not (left.is_integer() and right.is_integer()) and not (left.is_string() and right.is_string()) and left.copy(nullable=True) != right.copy(nullable=True):
                raise RetrievalError(f"key column {key!r} is {left} in entity_df but {right} in feature {plan.name!r}", fix=f"cast entity_df[{key!r}] to {right}")
    return base


def _attach(base: ir.Table, plans: list[_Plan], engine: Engine, *, point_in_time: bool) -> ir.Table:
    for plan in plans:
        base = _join_feature(base, plan, engine, point_in_time)
    return base


def _join_feature(base: ir.Table, plan: _Plan, engine: Engine, point_in_time: bool) -> ir.Table:
    """Left-join one feature's value columns onto ``base``; never changes its row count."""
    import ibis
    import ibis.expr.datatypes as dt

    table = plan.table
    keys = {_KEY.format(i): _key_as(table[k], base[k].type()) for i, k in enumerate(plan.keys)}
    right = table.select(**keys, **({_TS: _naive(table[plan.timestamp], engine)} if plan.timestamp else {}), **{v: table[v] for v in plan.values})

    def on(left: ir.Table, other: ir.Table) -> list[Any]:
        return [left[k] == other[rk] for k, rk in zip(plan.keys, keys, strict=True)]

    if not point_in_time or plan.timestamp is None:
        latest = _latest(right, list(keys), _TS if plan.timestamp else None)
        return base.left_join(latest, on(base, latest)).select(*base.columns, *plan.values)
    if plan.interval is not None:
        grid = f"__mlforge_grid_{plan.interval}"
        if grid not in base.columns:
            seconds = engine.epoch_seconds(base[_LABEL])
            base = base.mutate(**{grid: ((seconds // plan.interval) * plan.interval).as_timestamp("s").cast(dt.Timestamp(scale=6))})
        joined = base.left_join(right, [*on(base, right), base[grid] == right[_TS]]).select(*base.columns, *plan.values)
        filled = {v: ibis.ifelse(joined[_LABEL].isnull(), joined[v], joined[v].fill_null(0)) for v in plan.values if v in plan.empty_zero}
        return joined.mutate(**filled) if filled else joined
    if engine.supports("asof_join"):
        # Same-named "on" columns on both sides: Ibis mis-compiles as-of joins whose
        # columns differ in name; DuckDB's ASOF counts ts == L as known (ties included).
        right = right.rename(**{_LABEL: _TS})
        return base.asof_join(right, on=_LABEL, predicates=on(base, right)).select(*base.columns, *plan.values)
    return _asof(base, right, plan, list(keys), engine)


def _asof(base: ir.Table, right: ir.Table, plan: _Plan, rkeys: list[str], engine: Engine) -> ir.Table:
    """Backward as-of join (ties included) with the fastest plan the engine runs correctly."""
    if engine.native_frame == "polars":
        # Ibis lowers as-of joins on Polars wrongly for unsorted input, so sort and call
        # Polars' own join_asof on the compiled lazy frames.
        return _polars_asof(base, right, plan, rkeys, engine)
    if engine.supports("window_functions"):
        return _newest_rows(base, right, plan, rkeys, _window_newest(base, right, plan, rkeys))
    return _newest_rows(base, right, plan, rkeys, _pairwise_newest(base, right, plan, rkeys))


def _usable(table: ir.Table, columns: list[str]) -> ir.Table:
    """Rows that can match: a null key or time matches nothing (the left join keeps the row)."""
    return table.filter([table[c].notnull() for c in columns])


def _window_newest(base: ir.Table, right: ir.Table, plan: _Plan, rkeys: list[str]) -> ir.Table:
    """``(row, newest event time <= label)``: labels and events in one table per key, ordered
    by time with events before labels at equal times, and the running max of event times.

    Linear in labels + events, where a pairwise join grows with their product per key."""
    import ibis

    labels = _usable(base, [*plan.keys, _LABEL])
    labels = labels.select(
        **{rk: labels[k] for k, rk in zip(plan.keys, rkeys, strict=True)},
        **{_TIME: labels[_LABEL], _ROW: labels[_ROW].cast("int64"), _ASOF: ibis.null("timestamp(6)"), _IS_LABEL: ibis.literal(1, "int8")},
    )
    events = _usable(right, [*rkeys, _TS])
    events = events.select(
        *rkeys, **{_TIME: events[_TS], _ROW: ibis.null("int64"), _ASOF: events[_TS], _IS_LABEL: ibis.literal(0, "int8")}
    )
    both = labels.union(events, distinct=False)
    running = ibis.cumulative_window(group_by=rkeys, order_by=[both[_TIME], both[_IS_LABEL]])
    both = both.mutate(**{_ASOF: both[_ASOF].max().over(running)})
    return both.filter(both[_IS_LABEL] == 1).select(_ROW, _ASOF)


def _pairwise_newest(base: ir.Table, right: ir.Table, plan: _Plan, rkeys: list[str]) -> ir.Table:
    """``(row, newest event time <= label)`` from an equality join and a group-by: every
    engine runs it, at a cost of (labels x events) per key."""
    probe = base.select(_ROW, _LABEL, *plan.keys)
    events = right.select(*rkeys, _TS)
    pairs = probe.inner_join(events, [probe[k] == events[rk] for k, rk in zip(plan.keys, rkeys, strict=True)])
    pairs = pairs.filter(pairs[_TS] <= pairs[_LABEL])
    return pairs.group_by(_ROW).aggregate(**{_ASOF: pairs[_TS].max()})


def _newest_rows(base: ir.Table, right: ir.Table, plan: _Plan, rkeys: list[str], newest: ir.Table) -> ir.Table:
    """Each base row's feature values at its newest event time (nulls when there is none)."""
    with_ts = base.left_join(newest, base[_ROW] == newest[_ROW]).select(*base.columns, _ASOF)
    rows = right.distinct(on=[*rkeys, _TS], keep="first")
    on = [with_ts[k] == rows[rk] for k, rk in zip(plan.keys, rkeys, strict=True)] + [with_ts[_ASOF] == rows[_TS]]
    return with_ts.left_join(rows, on).select(*base.columns, *plan.values)


def _polars_asof(base: ir.Table, right: ir.Table, plan: _Plan, rkeys: list[str], engine: Engine) -> ir.Table:
    import polars as pl

    labels = engine.to_native(_usable(base, [*plan.keys, _LABEL]).select(_ROW, _LABEL, *plan.keys)).sort(_LABEL)
    events = engine.to_native(_usable(right, [*rkeys, _TS]).select(*rkeys, _TS, *plan.values)).sort(_TS)
    matched = labels.join_asof(events, left_on=_LABEL, right_on=_TS, by_left=list(plan.keys), by_right=rkeys, strategy="backward", check_sortedness=False)
    found = engine.from_native(matched.select(pl.col(_ROW).alias(_MATCH_ROW), *plan.values))
    return base.left_join(found, base[_ROW] == found[_MATCH_ROW]).select(*base.columns, *plan.values)


def _latest(right: ir.Table, rkeys: list[str], ts: str | None) -> ir.Table:
    """One row per key: the newest by ``ts`` (any one of them when there is no ``ts``)."""
    if ts is not None:
        newest = right.group_by(rkeys).aggregate(**{_NEWEST: right[ts].max()})
        right = right.inner_join(newest, [*rkeys, right[ts] == newest[_NEWEST]]).select(*right.columns)
    return right.distinct(on=rkeys, keep="first")


def _key_as(col: ir.Value, dtype: Any) -> ir.Value:
    """The stored key in entity_df's type (Polars joins only equal types); an integer out
    of that type's range matches nothing rather than failing."""
    if col.type().copy(nullable=True) == dtype.copy(nullable=True):
        return col
    return col.try_cast(dtype)


def _naive(col: ir.TimestampValue, engine: Engine) -> ir.TimestampValue:
    import ibis.expr.datatypes as dt

    value = engine.to_utc_naive(col) if col.type().timezone else col
    return value.cast(dt.Timestamp(scale=6))
