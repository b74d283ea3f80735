"""The one metric compiler: a feature's metrics -> one Ibis expression (rules W1-W9).

The plan uses only the portable subset of Ibis that DuckDB, Polars and PySpark all run:

1. drop events with a null key or timestamp (W9) and give each event its grid bucket
   ``b = floor(epoch_seconds(ts) / interval)``; bucket ``b`` holds ``[b*I, (b+1)*I)``;
2. aggregate per ``(keys, b)`` into partial aggregates (count, sum, min, max) -- or keep
   the raw events when a metric needs them (``std``, ``median``: no partials);
3. cross join with a small table of offsets ``o = 1..M`` (``M = max_window / I``): the
   events of bucket ``b`` belong to the windows of labels ``k = b + o``; a window of ``m``
   intervals at label ``k`` is exactly the buckets with ``o <= m`` (W1: ``t - w <= e < t``);
4. group by ``(keys, k)`` and combine with ``where o <= m`` per window.

Every emitted ``(keys, k)`` has at least one event within the largest window, and every
label with such an event is emitted (W3); empty windows give 0 for count/sum and null
otherwise (W4).

Engines with the ``window_functions`` capability run metrics made of partial aggregates
(all but ``std`` and ``median`` today) with a plan that does not multiply the partials by ``M``:

3'. per key, in bucket order, each bucket ``b`` with events emits the labels
    ``b+1 .. min(b+M, next bucket)``: every label with an event within the largest window
    (W3) exactly once, owned by the newest bucket before it; the first, ``b+1``, carries
    ``b``'s partials and the others nulls (no join of labels to partials);
4'. each window of ``m`` intervals is a frame of the ``m`` labels up to ``k``: ``ROWS
    BETWEEN m-1 PRECEDING AND CURRENT ROW`` over the labels of step 3' (they are consecutive
    wherever a frame can reach a partial), ``RANGE`` over those of step 5'.
5'. a label range (an incremental build) keeps the labels of step 3' that fall inside the
    range; the partials its frames reach before the range ride along as rows of their own
    (a union, not a join) and are dropped after framing.

Engines with the ``rolling_frames`` capability (Polars: Ibis's Polars backend has no window
functions) run the same metrics on the ``rolling`` plan: steps 1-2 and the finishing
expressions stay Ibis; the frames of step 4' -- over the labels of step 3' -- are rolled by
the engine's own rolling aggregation (:meth:`~mlforge.engines.base.Engine.rolling_frames`).

All plans give identical results (W8); the parity suite runs each against the oracle.

Which aggregations exist and how each one is computed (over a window's raw events, or
from the partials both plans share) is the table in :mod:`mlforge.aggregations`; this
module branches on no aggregation name.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from mlforge.aggregations import ADDS_UP, AGGREGATIONS, COUNTED_BY, PARTIALS, Aggregation, Partial
from mlforge.engines.base import Capability, RollingFrame
from mlforge.errors import DefinitionError

if TYPE_CHECKING:
    import ibis.expr.types as ir

    from mlforge.definitions.feature import Feature
    from mlforge.definitions.metrics import MetricColumn
    from mlforge.engines.base import Engine

_BUCKET = "__mlforge_bucket"
_OFFSET = "__mlforge_offset"
_LABEL = "__mlforge_label"
_FROM = "__mlforge_from"  # the first label a bucket owns inside a range
_UNTIL = "__mlforge_until"  # and the label after its last one
_SPINE = "__mlforge_spine"

#: The plans :func:`compile_metrics` can use; see the module docstring.
PLANS = ("spread", "window", "rolling")
#: The plans that run only metrics made of partial aggregates.
_PARTIAL_PLANS = ("window", "rolling")


@dataclass(frozen=True)
class LabelRange:
    """Grid labels ``start <= k*I < end``, in epoch seconds; ``None`` is unbounded."""

    start: int | None = None
    end: int | None = None


def metric_plan_name(columns: Sequence[MetricColumn]) -> str:
    """``raw`` when some metric needs raw values, else ``partial``."""
    return "raw" if any(AGGREGATIONS[c.function].needs_raw for c in columns) else "partial"


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
        if not AGGREGATIONS[col.function].accepts(dtype):
            raise DefinitionError(
                f"cannot take {col.function} of column {col.field!r} of type {dtype}",
                where=where,
                fix="cast the column to a number in the feature function, or use count",
            )


def added_integer_fields(feature: Feature, schema: Any) -> list[str]:
    """The integer metric fields some partial adds up (a sum, a mean): their partials are
    int64, which an engine may wrap past 2**63 (Polars) where another widens (DuckDB)."""
    return list(dict.fromkeys(
        c.field for c in feature.metric_columns
        if c.field in schema and schema[c.field].is_integer() and ADDS_UP.intersection(AGGREGATIONS[c.function].partials)
    ))


def choose_plan(columns: Sequence[MetricColumn], engine: Engine) -> str:
    """For partial aggregates, ``window`` on engines with window functions and ``rolling``
    on engines that roll frames natively; else ``spread``."""
    if metric_plan_name(columns) == "partial":
        if engine.supports(Capability.WINDOW_FUNCTIONS):
            return "window"
        if engine.supports(Capability.ROLLING_FRAMES):
            return "rolling"
    return "spread"


def compile_metrics(feature: Feature, table: ir.Table, engine: Engine, labels: LabelRange | None = None, *, plan: str | None = None) -> ir.Table:
    """Return the expression computing ``feature``'s metrics over ``table``.

    ``table`` is the feature function's output, with the timestamp already in UTC.
    The result has the key columns, the timestamp column holding grid labels (W7) and
    one column per metric window, in declaration order. ``plan`` overrides
    :func:`choose_plan` (tests compare the plans).
    """
    check_metric_inputs(feature, table.schema())
    interval = feature.interval_seconds
    assert interval is not None
    columns = feature.metric_columns
    keys = list(feature.keys)
    ts = feature.timestamp_column
    assert ts is not None  # metric features require a timestamp (checked when declared)
    fields = list(dict.fromkeys(c.field for c in columns))
    plan = plan or choose_plan(columns, engine)
    if plan not in PLANS or (plan in _PARTIAL_PLANS and metric_plan_name(columns) == "raw"):
        raw = " and ".join(a.name for a in AGGREGATIONS.values() if a.needs_raw)
        raise DefinitionError(f"unknown metric plan {plan!r} for these metrics", fix=f"use one of {PLANS}; {raw} need 'spread'")

    events = table.filter([table[k].notnull() for k in keys] + [table[ts].notnull()])
    # NaN is a missing value, as null is (W5): engines disagree on NaN's place in max and std.
    values = [
        _nan_as_null(events[f]).name(f) if events[f].type().is_floating() else events[f]
        for f in fields
    ]
    events = events.select(
        *keys, *values, **{_BUCKET: _floor_div(engine.epoch_seconds(events[ts]), interval)}
    )
    if plan == "window":
        out = _window_plan(feature, events, keys, fields, labels)  # only the labels of the range
    else:
        out = _rolling_plan(feature, events, keys, fields, engine) if plan == "rolling" else _spread_plan(feature, events, keys, fields)
        if labels is not None:
            out = _filter_labels(out, labels, interval)
    label_ts = engine.from_epoch_seconds(out[_LABEL] * interval).cast("timestamp('UTC', 6)")
    schema = table.schema()
    # One projection for every column: each extra select on top costs Ibis compile time.
    values = {
        c.output_name: _explicit_cast(out[c.output_name].fill_null(0) if AGGREGATIONS[c.function].zero_when_empty else out[c.output_name], AGGREGATIONS[c.function].output_type(schema[c.field]))
        for c in columns
    }
    return out.select(*keys, **{ts: label_ts}, **values)


def _spread_plan(feature: Feature, events: ir.Table, keys: list[str], fields: list[str]) -> ir.Table:
    """Steps 2-4: partials (or raw events) cross-joined with the offsets, grouped by label."""
    import ibis

    interval = feature.interval_seconds
    assert interval is not None  # metric features require an interval (checked when declared)
    columns = feature.metric_columns
    raw = metric_plan_name(columns) == "raw"
    base = events if raw else _partials(events, keys, fields, columns)
    offsets = ibis.memtable({_OFFSET: list(range(1, feature.max_window_seconds // interval + 1))})
    spread = base.cross_join(offsets)
    spread = spread.mutate(**{_LABEL: spread[_BUCKET] + spread[_OFFSET]})
    if raw:
        spread = _with_references(spread, [*keys, _LABEL], columns)
    aggs = {c.output_name: _combine(spread, c, interval, raw) for c in columns}
    return spread.group_by([*keys, _LABEL]).aggregate(**aggs)


def _with_references(spread: ir.Table, group: list[str], columns: Sequence[MetricColumn]) -> ir.Table:
    """``spread`` plus, for each field a centred aggregation reads, the least finite value
    of the field in the event's ``group`` -- a key's label, so its largest window (0 when
    it has none): the reference its values are read from (see
    :attr:`~mlforge.aggregations.Aggregation.centred`). Taken over a label's own events, it
    is the same in a full build and in a range build, which reads every event of the
    windows it computes (I1)."""
    fields = list(dict.fromkeys(c.field for c in columns if AGGREGATIONS[c.function].centred))
    if not fields:
        return spread
    values = {f: spread[f].cast("float64") for f in fields}
    references = spread.group_by(group).aggregate(**{_reference_name(f): v.min(where=~v.isinf()) for f, v in values.items()})
    joined = spread.left_join(references, group)  # left: a float key that is NaN equals no key, not even its own
    return joined.select(*[joined[c] for c in spread.columns], **{_reference_name(f): joined[_reference_name(f)].fill_null(0.0) for f in fields})


def _reference_name(field: str) -> str:
    return f"__mlforge_reference__{field}"


def _window_plan(feature: Feature, events: ir.Table, keys: list[str], fields: list[str], labels: LabelRange | None = None) -> ir.Table:
    """Steps 3'-5': the W3 labels with the partials before them -> RANGE window frames."""
    interval = feature.interval_seconds
    assert interval is not None  # metric features require an interval (checked when declared)
    columns = feature.metric_columns
    max_offsets = feature.max_window_seconds // interval
    partials = _partials(events, keys, fields, columns)
    values = [c for c in partials.columns if c not in keys and c != _BUCKET]
    if labels is not None and labels.start is not None:
        rows = _labels_in_range(partials, keys, values, labels, interval, max_offsets)
    else:
        rows = _labels_after_buckets(partials, keys, values, max_offsets)
    trimmed = _SPINE in rows.columns
    # Each (partial, window) frame once: mean shares the frames of sum and count.
    frames: dict[str, ir.Value] = {}
    for c in columns:
        for partial in AGGREGATIONS[c.function].partials:
            name = _frame_name(c, partial)
            if name not in frames:
                frames[name] = _windowed(rows, _partial_names(c.field)[partial], PARTIALS[partial], keys, c.window_seconds // interval, by_rows=not trimmed)
    framed = rows.select(*keys, _LABEL, *([_SPINE] if trimmed else []), **frames)
    if trimmed:  # the partials' own rows carried values into the frames; they are no labels
        framed = framed.filter(framed[_SPINE])  # and the spine holds only labels in range
    elif labels is not None:
        framed = _filter_labels(framed, labels, interval)
    return framed.select(*keys, _LABEL, **{c.output_name: _from_frames(framed, c) for c in columns})


def _rolling_plan(feature: Feature, events: ir.Table, keys: list[str], fields: list[str], engine: Engine) -> ir.Table:
    """Steps 3'-4' by the engine's own rolling aggregation: the partials of bucket ``k-1``
    sit at label ``k``, and each frame rolls over the last ``m`` labels."""
    import ibis

    interval = feature.interval_seconds
    assert interval is not None  # metric features require an interval (checked when declared)
    columns = feature.metric_columns
    partials = _partials(events, keys, fields, columns, counted=True)
    shifted = partials.mutate(**{_BUCKET: partials[_BUCKET] + 1}).rename({_LABEL: _BUCKET})  # bucket k-1 is known at label k
    frames: dict[str, RollingFrame] = {}
    emptied: dict[str, str] = {}  # a rolled frame -> the frame counting its values
    for c in columns:
        parts = AGGREGATIONS[c.function].partials
        counters = {p: COUNTED_BY[p] for p in parts if p in COUNTED_BY}
        for partial in dict.fromkeys((*parts, *counters.values())):
            name = _frame_name(c, partial)
            frames.setdefault(name, RollingFrame(name, _partial_names(c.field)[partial], PARTIALS[partial].rolls_with, c.window_seconds // interval))
        emptied.update({_frame_name(c, p): _frame_name(c, counter) for p, counter in counters.items()})
    rolled = engine.rolling_frames(shifted, keys, _LABEL, list(frames.values()), feature.max_window_seconds // interval)
    # A rolling sum adds the values entering its frame and subtracts those leaving it, so
    # a frame that has emptied can keep a float residue (-3.7e-11 for 0): W4 says 0.
    rolled = rolled.mutate(**{s: ibis.ifelse(rolled[n].fill_null(0) == 0, ibis.literal(0).cast(rolled[s].type()), rolled[s]) for s, n in emptied.items()})
    return rolled.select(*keys, _LABEL, **{c.output_name: _from_frames(rolled, c) for c in columns})


def _labels_after_buckets(partials: ir.Table, keys: list[str], values: list[str], max_offsets: int) -> ir.Table:
    """Every W3 label once, with the partials of the bucket before it (nulls if none).

    Label ``k`` is owned by the newest bucket ``b < k`` holding events; it is a W3 label when
    ``k - b <= M``. So each bucket emits the labels ``b+1 .. min(b+M, next bucket)``, and the
    first of them, ``b+1``, carries ``b``'s partials. One pass over the partials in bucket
    order and an unnest: no islands to aggregate and no join of labels to partials.
    """
    import ibis

    reach = partials.mutate(**{_OFFSET: _reach(partials, keys, max_offsets)})
    steps = reach.select(*keys, _BUCKET, *values, **{_OFFSET: ibis.range(1, reach[_OFFSET] + 1).unnest()})
    first = steps[_OFFSET] == 1
    nulls = {name: ibis.ifelse(first, steps[name], ibis.null().cast(steps[name].type())) for name in values}
    return steps.select(*keys, **{_LABEL: steps[_BUCKET] + steps[_OFFSET]}, **nulls)


def _reach(partials: ir.Table, keys: list[str], max_offsets: int) -> ir.IntegerValue:
    """How many labels each bucket owns (W3): up to its key's next bucket, at most ``M``."""
    import ibis

    bucket = partials[_BUCKET]
    following = bucket.lead().over(ibis.window(group_by=keys, order_by=_BUCKET))
    gap = following - bucket
    return cast("ir.IntegerValue", ibis.ifelse(following.isnull() | (gap > max_offsets), max_offsets, gap))


def _labels_in_range(partials: ir.Table, keys: list[str], values: list[str], labels: LabelRange, interval: int, max_offsets: int) -> ir.Table:
    """The rows the frames of an incremental build need: the W3 labels inside the range,
    and, as rows of their own, the partials of the buckets before the range that those
    labels' frames reach.

    The labels are those of :func:`_labels_after_buckets` cut to the range: bucket ``b``
    owns ``b+1 .. min(b+M, next bucket)``, so each label in range comes once, and its first
    label carries ``b``'s partials. A range of a few steps after a long history runs its
    window over the labels it keeps plus at most ``M - 1`` steps of partials before them.

    Of the buckets before the range, only each key's newest can own a label in it (any
    older one's labels stop at the next bucket), and its partials sit at a label before the
    range. So the owners are the buckets from ``first - 1`` on plus, without partials, each
    key's newest bucket before them: the reach is computed over those few rows instead of
    every bucket the read range holds.
    """
    import ibis

    assert labels.start is not None  # only called for a range with a start
    first_label = -(-labels.start // interval)
    last_label = None if labels.end is None else -(-labels.end // interval)  # exclusive
    inside = partials.filter(partials[_BUCKET] >= first_label - 1).select(*keys, _BUCKET, *values)
    # ``max(where=)``, not a filter: DuckDB would push the filters of every reader of the
    # partials, or-ed, down onto the event scan and compute each event's bucket twice.
    newest = partials.group_by(keys).aggregate(**{_BUCKET: partials[_BUCKET].max(where=partials[_BUCKET] < first_label - 1)})
    newest = newest.filter(newest[_BUCKET].notnull()).select(*keys, _BUCKET, **{name: ibis.null().cast(partials[name].type()) for name in values})
    candidates = inside.union(newest)
    bucket = candidates[_BUCKET]
    reach = _reach(candidates, keys, max_offsets)
    low = ibis.greatest(bucket + 1, first_label)
    high = bucket + reach + 1 if last_label is None else ibis.least(bucket + reach + 1, last_label)  # exclusive
    owners = candidates.mutate(**{_FROM: low, _UNTIL: high})
    owners = owners.filter(owners[_FROM] < owners[_UNTIL])  # buckets owning a label in range
    steps = owners.select(*keys, _BUCKET, *values, **{_LABEL: ibis.range(owners[_FROM], owners[_UNTIL]).unnest()})
    first = steps[_LABEL] == steps[_BUCKET] + 1
    spine = steps.select(
        *keys, _LABEL, **{name: ibis.ifelse(first, steps[name], ibis.null().cast(steps[name].type())) for name in values}, **{_SPINE: ibis.literal(True)}
    )
    shifted = partials[_BUCKET] + 1  # bucket k-1 is known at label k
    before = partials.filter([shifted >= first_label - max_offsets + 1, shifted < first_label])
    carriers = before.select(*keys, **{_LABEL: before[_BUCKET] + 1}, **{name: before[name] for name in values}, **{_SPINE: ibis.literal(False)})
    return spine.union(carriers)


def _windowed(rows: ir.Table, column: str, partial: Partial, keys: list[str], intervals: int, *, by_rows: bool) -> ir.Value:
    """The partials in ``column`` rolled up over a frame of ``intervals`` labels (rule W1).

    ``by_rows``: the rows are :func:`_labels_after_buckets`'s, where a ``ROWS`` frame holds
    the same rows as the ``RANGE`` frame and costs less (no search for each frame's start,
    ~12% of DuckDB's query). The labels from a partial's row up to ``M`` steps after it are
    all there, one row each, so any frame of ``m <= M`` labels reaching that row back covers
    consecutive labels; across a gap (a key's next bucket more than ``M`` steps later) the
    ``M`` rows before it already span more than any window. The rows of an incremental
    range carry the partials before the range at their own labels, with gaps: ``RANGE``.
    """
    import ibis

    bounds = (-(intervals - 1), 0)
    frame = ibis.window(group_by=keys, order_by=_LABEL, rows=bounds) if by_rows else ibis.window(group_by=keys, order_by=_LABEL, range=bounds)
    return partial.roll_up(rows[column]).over(frame)


def _frame_name(column: MetricColumn, partial: str) -> str:
    """The column holding one partial of ``column``'s field over ``column``'s window."""
    return f"{_partial_names(column.field)[partial]}__{column.window_seconds}"


def _from_frames(framed: ir.Table, column: MetricColumn) -> ir.Value:
    aggregation = AGGREGATIONS[column.function]
    return _finish(aggregation, {p: framed[_frame_name(column, p)] for p in aggregation.partials})


def _finish(aggregation: Aggregation, rolled: Mapping[str, ir.Value]) -> ir.Value:
    """``aggregation``'s value from its rolled-up partials."""
    if aggregation.from_partials is None:
        raise DefinitionError(f"aggregation {aggregation.name!r} needs raw values", fix="this is a bug in mlforge; please report it")
    return aggregation.from_partials(rolled)


def _nan_as_null(value: ir.Value) -> ir.Value:
    import ibis

    number = cast("ir.FloatingValue", value)
    return ibis.ifelse(number.isnan(), ibis.null().cast(value.type()), value)


def _explicit_cast(value: ir.Value, target: Any) -> ir.Value:
    """A cast Ibis cannot drop: DuckDB's SUM over BIGINT returns HUGEINT while Ibis types it
    int64, so ``.cast("int64")`` would be elided and the column stored as a double (W5)."""
    import ibis.expr.datatypes as dt
    import ibis.expr.operations as ops

    return ops.Cast(cast(Any, value).op(), to=dt.dtype(target)).to_expr()


def _floor_div(value: ir.IntegerValue, divisor: int) -> ir.IntegerValue:
    # Ibis's // floors on DuckDB, Polars and Spark alike (checked for negatives in tests).
    return cast("ir.IntegerValue", (value // divisor).cast("int64"))


def _partial_names(field: str) -> dict[str, str]:
    return {p: f"__mlforge_{p}__{field}" for p in PARTIALS}


def _partials(events: ir.Table, keys: list[str], fields: list[str], columns: Sequence[MetricColumn], *, counted: bool = False) -> ir.Table:
    """Per ``(keys, bucket)`` partial aggregates of each field, only those the metrics need
    (``counted``: with the partial that counts each one that needs it, :data:`COUNTED_BY`)."""
    needed: dict[str, set[str]] = {f: set() for f in fields}
    for c in columns:
        needed[c.field] |= set(AGGREGATIONS[c.function].partials)
        if counted:
            needed[c.field] |= {COUNTED_BY[p] for p in needed[c.field] if p in COUNTED_BY}
    aggs: dict[str, Any] = {}
    for field, parts in needed.items():
        names = _partial_names(field)
        for name, partial in PARTIALS.items():  # in table order, whatever order the metrics name them
            if name in parts:
                aggs[names[name]] = partial.of_bucket(events[field])
    return events.group_by([*keys, _BUCKET]).aggregate(**aggs)


def _combine(spread: ir.Table, column: MetricColumn, interval: int, raw: bool) -> ir.Value:
    """The aggregate of one metric window over the spread table."""
    in_window = spread[_OFFSET] <= column.window_seconds // interval
    aggregation = AGGREGATIONS[column.function]
    if raw:
        values = spread[column.field]
        if aggregation.centred:
            values = values.cast("float64") - spread[_reference_name(column.field)]
        return aggregation.of_raw(values, in_window)
    names = _partial_names(column.field)
    return _finish(aggregation, {p: PARTIALS[p].roll_up(spread[names[p]], where=in_window) for p in aggregation.partials})


def _filter_labels(out: ir.Table, labels: LabelRange, interval: int) -> ir.Table:
    """Keep labels ``start <= k*I < end`` (k is an integer bucket index)."""
    conditions = []
    if labels.start is not None:
        conditions.append(out[_LABEL] >= -(-labels.start // interval))
    if labels.end is not None:
        conditions.append(out[_LABEL] < -(-labels.end // interval))
    return out.filter(conditions) if conditions else out
