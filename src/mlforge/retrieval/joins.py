"""The joins of training data: grid-label equality joins and backward as-of joins (P2, P3)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from mlforge.engines.asof import AsofJoin
from mlforge.errors import RetrievalError
from mlforge.prepare import add_surrogate_key

if TYPE_CHECKING:
    import ibis.expr.datatypes as dt
    import ibis.expr.types as ir

    from mlforge.definitions.entity import Entity
    from mlforge.engines.base import Engine
    from mlforge.retrieval.specs import Plan

ROW = "__mlforge_row"
_LABEL = "__mlforge_label"
_TS = "__mlforge_ts"
_NEWEST = "__mlforge_newest"
_MATCHED = "__mlforge_matched_ts"
_KEY = "__mlforge_key_{}"


def prepare_base(base: ir.Table, plans: list[Plan], computed: dict[str, Entity], timestamp: str | None, engine: Engine) -> ir.Table:
    """Add computed join keys (K2) and the label as a naive UTC timestamp; check key types."""
    import ibis.expr.datatypes as dt

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
            if left.is_timestamp() and right.is_timestamp() and left.copy(nullable=True) != right.copy(nullable=True):
                # Instants in another zone (or naive, read as UTC: T1): the same key in the stored zone.
                base = base.mutate(**{key: base[key].cast(right)})
                continue
            if not (left.is_integer() and right.is_integer()) and not (left.is_string() and right.is_string()) and left.copy(nullable=True) != right.copy(nullable=True):
                raise RetrievalError(f"key column {key!r} is {left} in entity_df but {right} in feature {plan.name!r}", fix=f"cast entity_df[{key!r}] to {right}")
    return base


def attach(base: ir.Table, plans: list[Plan], engine: Engine, *, point_in_time: bool) -> ir.Table:
    for plan in plans:
        base = _join_feature(base, plan, engine, point_in_time)
    return base


def _join_feature(base: ir.Table, plan: Plan, engine: Engine, point_in_time: bool) -> ir.Table:
    """Left-join one feature's value columns onto ``base``; never changes its row count."""
    import ibis
    import ibis.expr.datatypes as dt

    table = plan.table
    if plan.interval is None and plan.metadata.tied_rows != 0:
        # Of rows sharing keys and timestamp, the one whose stored values (all of them, as
        # publishing orders them) sort last: what an online read serves (O1).
        table = engine.last_per_group(table, [*plan.keys, *([plan.timestamp] if plan.timestamp else [])])
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
            grid_seconds = cast("ir.IntegerValue", (seconds // plan.interval) * plan.interval)
            base = base.mutate(**{grid: engine.from_epoch_seconds(grid_seconds).cast(dt.Timestamp(scale=6))})
        joined = base.left_join(right, [*on(base, right), base[grid] == right[_TS]]).select(*base.columns, *plan.values)
        filled = {v: ibis.ifelse(joined[_LABEL].isnull(), joined[v], joined[v].fill_null(0)) for v in plan.values if v in plan.empty_zero}
        return joined.mutate(**filled) if filled else joined
    if plan.ttl is None:
        join = AsofJoin(row=ROW, label=_LABEL, time=_TS, left_keys=plan.keys, right_keys=tuple(keys), values=plan.values)
        return engine.asof_backward(base, right, join)
    return _asof_within_ttl(base, right.mutate(**{_MATCHED: right[_TS]}), plan, tuple(keys), engine)


def _asof_within_ttl(base: ir.Table, right: ir.Table, plan: Plan, keys: tuple[str, ...], engine: Engine) -> ir.Table:
    """O4: the newest row at or before ``L`` counts only if it is not older than ``L - ttl``
    (a row with ``ts = L - ttl`` counts); older ones are ignored, so the values are null."""
    import ibis

    join = AsofJoin(row=ROW, label=_LABEL, time=_TS, left_keys=plan.keys, right_keys=keys, values=(*plan.values, _MATCHED))
    joined = engine.asof_backward(base, right, join)
    too_old = joined[_MATCHED] < joined[_LABEL] - ibis.interval(seconds=plan.ttl)
    expired = {v: ibis.ifelse(too_old, ibis.null().cast(joined[v].type()), joined[v]) for v in plan.values}
    return joined.mutate(**expired).drop(_MATCHED)


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

    value = engine.to_utc_naive(col) if cast("dt.Timestamp", col.type()).timezone else col
    return cast("ir.TimestampValue", value.cast(dt.Timestamp(scale=6)))
