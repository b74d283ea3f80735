"""The one metric compiler: a feature's metrics -> one Ibis expression (rules W1-W9).

The plan uses only the portable subset of Ibis that DuckDB, Polars and PySpark all run:

1. drop events with a null key or timestamp (W9) and give each event its grid bucket
   ``b = floor(epoch_seconds(ts) / interval)``; bucket ``b`` holds ``[b*I, (b+1)*I)``;
2. aggregate per ``(keys, b)`` into partial aggregates (count, sum, min, max) -- or keep
   the raw events when a metric needs them (``std``, ``median``);
3. cross join with a small table of offsets ``o = 1..M`` (``M = max_window / I``): the
   events of bucket ``b`` belong to the windows of labels ``k = b + o``; a window of ``m``
   intervals at label ``k`` is exactly the buckets with ``o <= m`` (W1: ``t - w <= e < t``);
4. group by ``(keys, k)`` and combine with ``where o <= m`` per window.

Every emitted ``(keys, k)`` has at least one event within the largest window, and every
label with such an event is emitted (W3); empty windows give 0 for count/sum and null
otherwise (W4).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mlforge.errors import DefinitionError

if TYPE_CHECKING:
    import ibis.expr.types as ir

    from mlforge.definitions.feature import Feature
    from mlforge.definitions.metrics import MetricColumn
    from mlforge.engines.base import Engine

#: Functions that need the raw values of a window rather than partial aggregates.
RAW_FUNCTIONS = frozenset({"std", "median"})
_BUCKET = "__mlforge_bucket"
_OFFSET = "__mlforge_offset"
_LABEL = "__mlforge_label"


@dataclass(frozen=True)
class LabelRange:
    """Grid labels ``start <= k*I < end``, in epoch seconds; ``None`` is unbounded."""

    start: int | None = None
    end: int | None = None


def metric_plan_name(columns: Sequence[MetricColumn]) -> str:
    """``raw`` when some metric needs raw values, else ``partial``."""
    return "raw" if any(c.function in RAW_FUNCTIONS for c in columns) else "partial"


def check_metric_inputs(feature: Feature, schema: Any) -> None:
    """Fail before compute when the function output lacks a metric field or has the wrong type."""
    where = f"feature {feature.name!r}"
    names = set(schema.names)
    needed = list(feature.keys) + ([feature.timestamp_column] if feature.timestamp_column else [])
    missing = [c for c in needed if c not in names]
    if missing:
        raise DefinitionError(
            f"the feature function's output has no column(s) {missing}",
            where=where,
            fix=f"return the key and timestamp columns; the output has {sorted(names)}",
        )
    for col in feature.metric_columns:
        if col.field not in names:
            raise DefinitionError(
                f"metric field {col.field!r} is not a column of the feature function's output",
                where=where,
                fix=f"return {col.field!r} from the function, or use one of {sorted(names)}",
            )
        dtype = schema[col.field]
        if col.function != "count" and not dtype.is_numeric() and not (col.function in ("min", "max") and (dtype.is_temporal() or dtype.is_string())):
            raise DefinitionError(
                f"cannot take {col.function} of column {col.field!r} of type {dtype}",
                where=where,
                fix="cast the column to a number in the feature function, or use count",
            )


def compile_metrics(feature: Feature, table: ir.Table, engine: Engine, labels: LabelRange | None = None) -> ir.Table:
    """Return the expression computing ``feature``'s metrics over ``table``.

    ``table`` is the feature function's output, with the timestamp already in UTC.
    The result has the key columns, the timestamp column holding grid labels (W7) and
    one column per metric window, in declaration order.
    """
    import ibis

    check_metric_inputs(feature, table.schema())
    interval = feature.interval_seconds
    assert interval is not None
    columns = feature.metric_columns
    keys = list(feature.keys)
    ts = feature.timestamp_column
    max_offsets = feature.max_window_seconds // interval
    fields = list(dict.fromkeys(c.field for c in columns))

    events = table.filter([table[k].notnull() for k in keys] + [table[ts].notnull()])
    events = events.select(*keys, *fields, **{_BUCKET: _floor_div(engine.epoch_seconds(events[ts]), interval)})
    raw = metric_plan_name(columns) == "raw"
    base = events if raw else _partials(events, keys, fields, columns)

    offsets = ibis.memtable({_OFFSET: list(range(1, max_offsets + 1))})
    spread = base.cross_join(offsets)
    spread = spread.mutate(**{_LABEL: spread[_BUCKET] + spread[_OFFSET]})
    if labels is not None:
        spread = _filter_labels(spread, labels, interval)

    aggs = {c.output_name: _combine(spread, c, interval, raw) for c in columns}
    out = spread.group_by([*keys, _LABEL]).aggregate(**aggs)
    for c in columns:
        if c.function in ("count", "sum"):
            out = out.mutate(**{c.output_name: out[c.output_name].fill_null(0)})
    label_ts = (out[_LABEL] * interval).as_timestamp("s").cast("timestamp('UTC', 6)")
    schema = table.schema()
    values = {c.output_name: _explicit_cast(out[c.output_name], output_type(c.function, schema[c.field])) for c in columns}
    return out.select(*keys, **{ts: label_ts}, **values)


def _explicit_cast(value: ir.Value, target: Any) -> ir.Value:
    """A cast Ibis cannot drop: DuckDB's SUM over BIGINT returns HUGEINT while Ibis types it
    int64, so ``.cast("int64")`` would be elided and the column stored as a double (W5)."""
    import ibis.expr.datatypes as dt
    import ibis.expr.operations as ops

    return ops.Cast(value, to=dt.dtype(target)).to_expr()


def output_type(function: str, field_type: Any) -> Any:
    """The stored type of a metric column (rule W5)."""
    if function == "count":
        return "int64"
    if function == "sum":
        return "int64" if field_type.is_integer() or field_type.is_boolean() else "float64"
    if function in ("mean", "std", "median"):
        return "float64"
    return field_type


def _floor_div(value: ir.IntegerValue, divisor: int) -> ir.IntegerValue:
    # Ibis's // floors on DuckDB, Polars and Spark alike (checked for negatives in tests).
    return (value // divisor).cast("int64")


def _partial_names(field: str) -> dict[str, str]:
    return {p: f"__mlforge_{p}__{field}" for p in ("count", "sum", "min", "max")}


def _partials(events: ir.Table, keys: list[str], fields: list[str], columns: Sequence[MetricColumn]) -> ir.Table:
    """Per ``(keys, bucket)`` partial aggregates of each field, only those the metrics need."""
    needed: dict[str, set[str]] = {f: set() for f in fields}
    for c in columns:
        needed[c.field] |= {"count", "sum"} if c.function == "mean" else {c.function}
    aggs: dict[str, Any] = {}
    for field, parts in needed.items():
        names = _partial_names(field)
        col = events[field]
        if "count" in parts:
            aggs[names["count"]] = col.count()
        if "sum" in parts:
            aggs[names["sum"]] = col.sum()
        if "min" in parts:
            aggs[names["min"]] = col.min()
        if "max" in parts:
            aggs[names["max"]] = col.max()
    return events.group_by([*keys, _BUCKET]).aggregate(**aggs)


def _combine(spread: ir.Table, column: MetricColumn, interval: int, raw: bool) -> ir.Value:
    """The aggregate of one metric window over the spread table."""
    in_window = spread[_OFFSET] <= column.window_seconds // interval
    function = column.function
    if raw:
        value = spread[column.field]
        if function == "count":
            return value.count(where=in_window)
        if function == "sum":
            return value.sum(where=in_window)
        if function == "mean":
            return value.cast("float64").mean(where=in_window)
        if function == "std":
            return value.cast("float64").std(how="sample", where=in_window)
        if function == "median":
            # Not ``where=``: Ibis turns that into percentile(x, IF(cond, 0.5, NULL)) on
            # Spark, which rejects a non-constant percentage.
            import ibis

            return in_window.ifelse(value.cast("float64"), ibis.null("float64")).median()
        return getattr(value, function)(where=in_window)
    names = _partial_names(column.field)
    if function == "count":
        return spread[names["count"]].sum(where=in_window)
    if function == "sum":
        return spread[names["sum"]].sum(where=in_window)
    if function == "mean":
        total = spread[names["sum"]].sum(where=in_window).cast("float64")
        count = spread[names["count"]].sum(where=in_window)
        return total / count.nullif(0).cast("float64")
    if function == "min":
        return spread[names["min"]].min(where=in_window)
    if function == "max":
        return spread[names["max"]].max(where=in_window)
    raise DefinitionError(f"aggregation {function!r} needs raw values", fix="this is a bug in mlforge; please report it")


def _filter_labels(spread: ir.Table, labels: LabelRange, interval: int) -> ir.Table:
    """Keep labels ``start <= k*I < end`` (k is an integer bucket index)."""
    conditions = []
    if labels.start is not None:
        conditions.append(spread[_LABEL] >= -(-labels.start // interval))
    if labels.end is not None:
        conditions.append(spread[_LABEL] < -(-labels.end // interval))
    return spread.filter(conditions) if conditions else spread
