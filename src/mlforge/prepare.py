"""Turning a source into a feature function's input, and its output into a stored frame.

Timestamps become UTC instants (rule T1), surrogate keys are added (rule K1), the feature
function runs on an Ibis table (or the engine's native frame), and its output is checked.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal, cast

from mlforge.definitions.names import UNREADABLE_PREFIX, check_column_name
from mlforge.definitions.source import TIMESTAMP_FORMATS, Timestamp
from mlforge.errors import BuildError, DefinitionError, EngineError, SourceError

if TYPE_CHECKING:
    from collections.abc import Iterable

    import ibis.expr.datatypes as dt
    import ibis.expr.types as ir

    from mlforge.definitions.entity import Entity
    from mlforge.definitions.feature import Feature
    from mlforge.engines.base import Engine

log = logging.getLogger(__name__)

KEY_SEPARATOR = "\x1f"
NULL_TEXT = "\\N"
_SAMPLE = 2000
_DIAGNOSED = 5_000_000  # distinct timestamp texts read to find why a parse failed


# -- timestamps (T1) ---------------------------------------------------------------------
def normalize_timestamp(table: ir.Table, ts: Timestamp, engine: Engine, where: str) -> ir.Table:
    """Make ``ts.column`` a naive UTC timestamp named ``ts.output_name``."""
    if ts.column not in table.columns:
        raise SourceError(
            f"timestamp column {ts.column!r} is not in the source",
            where=where,
            fix=f"use one of {list(table.columns)}",
        )
    col = table[ts.column]
    dtype = col.type()
    if dtype.is_timestamp():
        value = _floor_to_micros(col) if cast("dt.Timestamp", dtype).scale == 9 else col  # nanoseconds, as pandas writes them
        value = engine.to_utc_naive(value) if dtype.timezone else value
    elif dtype.is_date():
        import ibis.expr.datatypes as dt

        # Microseconds by name: Polars casts a date to nanoseconds while Ibis types the result
        # with no scale, which epoch_seconds reads as microseconds (labels 1000x too late).
        value = col.cast(dt.Timestamp(scale=6))
    elif dtype.is_string():
        value = _parse_strings(table, ts, engine, where)
    elif dtype.is_integer() and ts.format is not None:
        # Digits a reader took for a number (20240105 in a CSV): the format says they are text.
        table = table.mutate(**{ts.column: col.cast("string")})
        value = _parse_strings(table, ts, engine, where)
    else:
        raise SourceError(
            f"timestamp column {ts.column!r} has type {dtype}, not a timestamp, date or string",
            where=where,
            fix="convert it in the feature function, point timestamp= at a datetime column, or, for digits such as 20240105, "
            "give their format: Timestamp(column, format='%Y%m%d')",
        )
    if ts.alias and ts.alias != ts.column:
        # Mutate first: ``value`` refers to the table that still has ``ts.column``.
        return table.mutate(**{ts.alias: value}).drop(ts.column)
    return table.mutate(**{ts.column: value})


def _floor_to_micros(value: ir.TimestampValue) -> ir.TimestampValue:
    """Nanoseconds to microseconds, rounded down: DuckDB's cast rounds an instant before 1970
    toward zero, so an event 1 ns before a grid label landed on it (W1) and was stored up to
    1 µs late; Polars and Spark floor. (DuckDB reads a zoned nanosecond Parquet column as
    microseconds already, cut the same way; entity_df labels are floored in Arrow before the
    engine takes them in, ``retrieval.frames._floor_to_micros``.)"""
    import ibis
    import ibis.expr.datatypes as dt

    micros = cast("ir.TimestampValue", value.cast(dt.Timestamp(timezone=cast("dt.Timestamp", value.type()).timezone, scale=6)))
    later = micros.cast(value.type()) > value
    return cast("ir.TimestampValue", ibis.ifelse(later, micros - ibis.interval(microseconds=1), micros))


def detect_format(values: list[str]) -> str | None:
    """The first format of ``TIMESTAMP_FORMATS`` that parses every value, or None.

    >>> detect_format(["2024-01-05 10:00:00", "2024-02-01 00:00:00"])
    '%Y-%m-%d %H:%M:%S'
    """
    for fmt in TIMESTAMP_FORMATS:
        if all(_parses(v, fmt) for v in values):
            return fmt
    # ISO times written with a fraction only when it is not zero (``datetime.isoformat()``)
    for fmt in _FRACTION_TWINS:
        if all(_matches(v, fmt, detected=True) for v in values):
            return fmt
    return None


#: The ISO formats with a fraction of a second, and the same without it: a detected format
#: of the first kind also reads values of the second (``datetime.isoformat()`` writes
#: ``10:00:00`` and ``11:00:00.250000`` in one column), as if their fraction were zero.
_FRACTION_TWINS = {
    "%Y-%m-%dT%H:%M:%S.%f%z": "%Y-%m-%dT%H:%M:%S%z",
    "%Y-%m-%dT%H:%M:%S.%f": "%Y-%m-%dT%H:%M:%S",
    "%Y-%m-%d %H:%M:%S.%f%z": "%Y-%m-%d %H:%M:%S%z",
    "%Y-%m-%d %H:%M:%S.%f": "%Y-%m-%d %H:%M:%S",
}


def _matches(value: str, fmt: str, *, detected: bool) -> bool:
    """Whether ``value`` reads with ``fmt``; a detected ISO format with a fraction also
    reads a value written without one.

    >>> _matches("2024-01-05T10:00:00", "%Y-%m-%dT%H:%M:%S.%f", detected=True)
    True
    >>> _matches("2024-01-05T10:00:00", "%Y-%m-%dT%H:%M:%S.%f", detected=False)
    False
    """
    if _parses(value, fmt):
        return True
    plain = _FRACTION_TWINS.get(fmt) if detected else None
    return plain is not None and "." not in value and _parses(value, plain)


def check_unambiguous(values: list[str], fmt: str | None, column: str, where: str) -> None:
    """Fail when another listed format also parses every sampled value but reads one of them
    as another instant (``03/04/2024``: 3 April by ``%d/%m/%Y``, 4 March by ``%m/%d/%Y``):
    taking the first would misread every such date without a word (T1)."""
    if fmt is None:
        return
    for other in TIMESTAMP_FORMATS[TIMESTAMP_FORMATS.index(fmt) + 1 :]:
        if all(_parses(v, other) for v in values):
            differ = [v for v in values if datetime.strptime(v, fmt) != datetime.strptime(v, other)]
            if differ:
                raise SourceError(
                    f"timestamp column {column!r} is ambiguous: its values parse with {fmt!r} and with {other!r}, "
                    f"which read {differ[0]!r} as different instants",
                    where=where,
                    fix=f"pass Timestamp({column!r}, format=...) with the one the data uses, e.g. format={other!r}",
                )


def _parses(value: str, fmt: str) -> bool:
    try:
        datetime.strptime(value, fmt)
    except ValueError:
        return False
    return True


def _parse_strings(table: ir.Table, ts: Timestamp, engine: Engine, where: str) -> ir.Value:
    col = table[ts.column]
    sample = _sample_strings(table, ts.column)
    fmt = ts.format
    if fmt is None:
        fmt = detect_format(sample)
        check_unambiguous(sample, fmt, ts.column, where)
        if fmt is None:
            bad = [v for v in sample if not any(_parses(v, f) for f in TIMESTAMP_FORMATS)][:3] or sample[:3]
            raise SourceError(
                f"cannot parse timestamp column {ts.column!r}; tried formats {list(TIMESTAMP_FORMATS)}; offending values {bad}",
                where=where,
                fix="pass Timestamp(column, format='...') with strftime codes matching the data",
            )
    else:
        bad = [v for v in sample if not _parses(v, fmt)][:3]
        if bad:
            raise SourceError(
                f"timestamp column {ts.column!r} does not match format {fmt!r}; offending values {bad}",
                where=where,
                fix="fix the format string (strftime codes) or the data",
            )
    text = col.strip()
    if "%z" in fmt:
        text = text.re_replace(r"Z$", "+00:00")
    if ts.format is None and fmt in _FRACTION_TWINS:  # a value without a fraction reads as .000000
        import ibis

        if "%z" in fmt:  # before the offset: +HH:MM, or +HHMM (constant patterns: Polars takes no column there)
            offset = r"[+-]\d\d:?\d\d$"
            plain = text.re_replace(offset, "") + ".000000" + text.re_extract(offset, 0)
        else:
            plain = text + ".000000"
        text = cast("ir.StringValue", ibis.ifelse(text.contains("."), text, plain))
    parsed = engine.parse_timestamp(text, fmt)
    if cast("dt.Timestamp", parsed.type()).timezone or "%z" in fmt:
        parsed = engine.to_utc_naive(parsed)
    return parsed


def unparsed_timestamps(feature: Feature, engine: Engine) -> SourceError | None:
    """After a build failed inside the engine: whether its text timestamps are why (T1).

    The format is chosen on a sample of the first rows; a bad value after them stops the
    engine's parse with the engine's own words. This reads the column's distinct values
    (up to :data:`_DIAGNOSED` of them) and, when some do not parse, names the format and
    three of them, as a bad sample would have. ``None`` when they all parse or the
    timestamp is not text.
    """
    ts = feature.timestamp
    if ts is None:
        return None
    table = engine.read_source(feature.source)
    if ts.column not in table.columns:
        return None
    col = table[ts.column]
    if not (col.type().is_string() or (col.type().is_integer() and ts.format is not None)):
        return None
    table = table.mutate(**{ts.column: col.cast("string")}) if col.type().is_integer() else table
    fmt = ts.format or detect_format(_sample_strings(table, ts.column))
    if fmt is None:
        return None  # the sample already fails: _parse_strings said so before compute
    values = table.filter(table[ts.column].notnull()).select(v=table[ts.column].strip()).distinct().limit(_DIAGNOSED)
    bad: list[str] = []
    for batch in engine.arrow_batches(values, 65_536):
        bad += [v for v in batch.column("v").to_pylist() if not _matches(v, fmt, detected=ts.format is None)][: 3 - len(bad)]
        if len(bad) == 3:
            break
    if not bad:
        return None
    return SourceError(
        f"timestamp column {ts.column!r} does not match format {fmt!r} ({'given' if ts.format else f'detected on its first {_SAMPLE} values'}); offending values {sorted(bad)}",
        where=f"feature {feature.name!r}",
        fix="fix those values, or pass Timestamp(column, format='...') with strftime codes matching every value",
    )


def _sample_strings(table: ir.Table, column: str) -> list[str]:
    col = table[column]
    rows = table.filter(col.notnull()).select(v=col).limit(_SAMPLE).to_pyarrow()
    return [v.strip() for v in rows.column("v").to_pylist()]


# -- surrogate keys (K1) -------------------------------------------------------------------
def key_text(table: ir.Table, entity: Entity, where: str) -> ir.StringValue:
    """The text hashed for a surrogate key: values joined by U+001F, nulls as ``\\N``."""
    import ibis

    parts = []
    for name in entity.from_columns or ():
        if name not in table.columns:
            raise SourceError(
                f"entity {entity.name!r} needs column {name!r} for its surrogate key, but it is missing",
                where=where,
                fix=f"available columns: {list(table.columns)}",
            )
        col = table[name]
        dtype = col.type()
        if not (dtype.is_string() or dtype.is_integer() or dtype.is_date()):
            raise DefinitionError(
                f"surrogate key column {name!r} of entity {entity.name!r} has type {dtype}; only string, integer and date columns are allowed",
                where=where,
                fix=f"cast {name!r} to string or integer before using it as a key",
            )
        text = col if dtype.is_string() else col.cast("string")
        parts.append(text.fill_null(NULL_TEXT))
    return cast("ir.StringValue", ibis.literal(KEY_SEPARATOR)).join(parts) if len(parts) > 1 else parts[0]


def add_surrogate_key(table: ir.Table, entity: Entity, engine: Engine, where: str) -> ir.Table:
    """Add ``entity.join_key`` computed from ``entity.from_columns`` (rule K1)."""
    text = key_text(table, entity, where)
    try:
        return engine.add_hex_digest_column(table, text, entity.join_key)
    except EngineError as exc:
        raise EngineError(exc.what, where=where, fix=exc.fix) from None


def surrogate_key_value(*values: Any) -> str:
    """The surrogate key of one tuple of values, computed in Python (rule K1).

    >>> surrogate_key_value("JFK", "LAX")[:8]
    '3a69323c'
    """
    import hashlib
    from datetime import date

    parts = []
    for v in values:
        if v is None:
            parts.append(NULL_TEXT)
        elif isinstance(v, bool):
            raise DefinitionError(f"surrogate key value {v!r} is a boolean", fix="use string, integer or date values")
        elif isinstance(v, (str, int)):
            parts.append(str(v))
        elif isinstance(v, date) and not isinstance(v, datetime):
            parts.append(v.isoformat())
        else:
            raise DefinitionError(f"surrogate key value {v!r} has type {type(v).__name__}", fix="use string, integer or date values")
    return hashlib.sha256(KEY_SEPARATOR.join(parts).encode("utf-8")).hexdigest()[:32]


# -- the feature function ---------------------------------------------------------------
def prepare_input(feature: Feature, engine: Engine) -> ir.Table:
    """The source, with UTC timestamps and surrogate keys, as an Ibis table."""
    where = f"feature {feature.name!r}"
    try:
        table = engine.read_source(feature.source)
    except SourceError as exc:
        # The engine knows the file, not which feature wanted it (E1: say where).
        raise SourceError(exc.what, where=f"{where}, {exc.where}" if exc.where else where, fix=exc.fix) from exc
    if feature.timestamp is not None and feature.timestamp.column in table.columns:
        table = normalize_timestamp(table, feature.timestamp, engine, where)
    elif feature.timestamp is not None and feature.timestamp.output_name not in table.columns and feature.metrics:
        raise SourceError(
            f"timestamp column {feature.timestamp.column!r} is not in the source",
            where=where,
            fix=f"use one of {list(table.columns)}",
        )
    for entity in feature.surrogate_entities:
        if entity.join_key not in table.columns and all(c in table.columns for c in entity.from_columns or ()):
            table = add_surrogate_key(table, entity, engine, where)
    return table


def run_function(feature: Feature, table: ir.Table, engine: Engine) -> ir.Table:
    """Call the feature function with an Ibis table (or native frame) and return Ibis."""
    import ibis.expr.types as ir_types

    where = f"feature {feature.name!r}"
    if feature.native_frame is not None and feature.native_frame != engine.native_frame:
        raise EngineError(
            f"the function of feature {feature.name!r} takes a {feature.native_frame} frame, but the engine is {engine.name!r}",
            where=where,
            fix=f"build it with engine='{feature.native_frame}', or annotate the function with an Ibis table",
        )
    arg = table
    if feature.native_frame is not None:
        arg = engine.native_input(table, eager=_wants_eager_frame(feature))
    try:
        result = feature.fn(arg)
    except Exception as exc:
        # Ibis's "column not found" (an IbisTypeError or AttributeError) naming a column the
        # engine could not read under its own name: say why (check_column_name raises)
        if isinstance(exc, AttributeError) or type(exc).__name__ == "IbisTypeError":
            for column in table.columns:
                given = column[len(UNREADABLE_PREFIX) :] if column.startswith(UNREADABLE_PREFIX) else None
                if given and f"'{given}'" in str(exc) and given not in table.columns:
                    check_column_name(column, kind="column", where=where)
        raise BuildError(
            f"the feature function raised {type(exc).__name__}: {exc}",
            where=where,
            fix=f"fix the feature function, then check it without writing anything: `mlforge validate --features {feature.name}`",
        ) from exc
    if feature.native_frame is not None and not isinstance(result, ir_types.Table):
        result = engine.from_native(result)
    if not isinstance(result, ir_types.Table):
        raise BuildError(
            f"the feature function returned {type(result).__name__}, not a table",
            where=where,
            fix="return the Ibis table expression (or the native frame you were given)",
        )
    return finish_output(feature, result, engine)


def _wants_eager_frame(feature: Feature) -> bool:
    """Whether the function is annotated with an eager frame (not a ``LazyFrame``)."""
    import inspect

    params = list(inspect.signature(feature.fn).parameters.values())
    annotation = params[0].annotation
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__qualname__", "")
    return "LazyFrame" not in text


def _zoned_in_utc(table: ir.Table) -> ir.Table:
    """Zoned timestamp columns as the same instants in UTC (T1): DuckDB's session gives them
    UTC already, Polars kept each column's own zone, so a version's types (and a rebuild's
    change kind, S2) depended on the engine."""
    import ibis.expr.datatypes as dt

    stamps = {name: dtype for name, dtype in table.schema().items() if isinstance(dtype, dt.Timestamp)}
    zoned = {name: table[name].cast(dt.Timestamp(timezone="UTC", scale=dtype.scale)) for name, dtype in stamps.items() if dtype.timezone not in (None, "UTC")}
    return table.mutate(**zoned) if zoned else table


def finish_output(feature: Feature, table: ir.Table, engine: Engine) -> ir.Table:
    """Re-add surrogate keys the output dropped, and make its timestamp UTC."""
    where = f"feature {feature.name!r}"
    for entity in feature.surrogate_entities:
        if entity.join_key not in table.columns and all(c in table.columns for c in entity.from_columns or ()):
            table = add_surrogate_key(table, entity, engine, where)
    ts = feature.timestamp_column
    if ts and ts in table.columns:
        dtype = table[ts].type()
        if dtype.is_timestamp() and dtype.timezone:
            table = table.mutate(**{ts: engine.to_utc_naive(table[ts])})
        elif dtype.is_string() or dtype.is_date():
            table = normalize_timestamp(table, Timestamp(ts), engine, where)
    table = _zoned_in_utc(table)
    missing = [k for k in feature.keys if k not in table.columns]
    if missing:
        raise DefinitionError(
            f"the feature function's output lacks key column(s) {missing}",
            where=where,
            fix=f"return them from the function; the output has {list(table.columns)}",
        )
    return table


def range_filter_place(output: ir.Table, source: ir.Table, column: str) -> Literal["source", "output", "none"]:
    """Where a range build's event filter on ``column`` may go (I1).

    ``"source"``: ``output`` is made from ``source`` row by row and passes ``column`` through
    as it is (projections that keep it and compute other columns from each row, filters on
    row values, sorts, distinct rows, dropped nulls, joins of other tables onto ``source``);
    the filter then sits on the source, where it reaches the engine's scan.
    ``"output"``: rows are still made one event at a time, but the function computes the
    event time (a delay): the filter goes on the function's rows.
    ``"none"``: a row depends on other events (a window, reduction or subquery over the
    rows, a join of the source with itself, a limit): a range of the function's rows is not
    what a full refresh stores for it, so only a full refresh is exact.

    >>> import ibis
    >>> t = ibis.table({"k": "string", "ts": "timestamp", "x": "float64"}, name="events")
    >>> range_filter_place(t.filter(t.x > 0).mutate(y=t.x * 2), t, "ts")
    'source'
    >>> range_filter_place(t.mutate(ts=t.ts + ibis.interval(days=2)), t, "ts")
    'output'
    >>> range_filter_place(t.mutate(n=t.x.count().over(group_by=t.k)), t, "ts")
    'none'
    """
    import ibis.expr.operations as ops
    from ibis.common.graph import Graph

    whole_table = (ops.WindowFunction, ops.Reduction, ops.Analytic, ops.Subquery)

    def row_wise(values: Iterable[Any]) -> bool:
        return not any(v.find(whole_table, filter=ops.Value) for v in values)

    target = source.op()
    rel: Any = output.op()
    name: str | None = column  # where the event time comes from, while it is passed through
    while rel != target:
        if isinstance(rel, ops.Project | ops.DropColumns):
            if not row_wise(rel.values.values()):
                return "none"
            value = rel.values.get(name) if name is not None else None
            name = value.name if isinstance(value, ops.Field) else None
            rel = rel.parent
        elif isinstance(rel, ops.Filter):
            if not row_wise(rel.predicates):
                return "none"
            rel = rel.parent
        elif isinstance(rel, ops.Sort | ops.Distinct | ops.DropNull | ops.SelfReference):
            rel = rel.parent
        elif isinstance(rel, ops.JoinChain):
            if not row_wise(rel.values.values()):
                return "none"
            for link in rel.rest:
                if link.how not in ("inner", "left", "semi", "anti", "asof") or not row_wise(link.predicates) or target in Graph.from_bfs(link.table):
                    return "none"
            value = rel.values.get(name) if name is not None else None
            name = value.name if isinstance(value, ops.Field) and value.rel == rel.first else None
            rel = rel.first.parent
        else:
            return "none"
    return "source" if name == column else "output"
