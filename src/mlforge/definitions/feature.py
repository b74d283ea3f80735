"""The ``@feature`` decorator and the frozen :class:`Feature` it produces."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from mlforge.definitions.durations import format_duration, parse_duration
from mlforge.definitions.entity import Entity
from mlforge.definitions.metrics import Aggregate, MetricColumn, Rolling
from mlforge.definitions.names import check_column_name, check_distinct_columns, check_name
from mlforge.definitions.source import Source, Timestamp
from mlforge.definitions.validators import Validator
from mlforge.errors import DefinitionError
from mlforge.plugins import ENGINE_NAMES

#: Tags that double as build schedules (contract I2).
SCHEDULES: tuple[str, ...] = ("realtime", "hourly", "daily", "weekly", "monthly", "on-demand")


@dataclass(frozen=True)
class Feature:
    """A declared feature: a function over a source, plus keys, timestamp and metrics."""

    name: str
    fn: Callable[..., Any] = field(compare=False)
    source: Source
    keys: tuple[str, ...]
    entities: tuple[Entity, ...] = ()
    timestamp: Timestamp | None = None
    interval: str | None = None
    metrics: tuple[Aggregate | Rolling, ...] = ()
    validators: tuple[tuple[str, tuple[Validator, ...]], ...] = ()
    tags: tuple[str, ...] = ()
    description: str | None = None
    engine: str | None = None
    native_frame: str | None = None
    ttl: str | None = None

    def __call__(self, *args, **kwargs):
        return self.fn(*args, **kwargs)

    @property
    def interval_seconds(self) -> int | None:
        return parse_duration(self.interval) if self.interval else None

    @property
    def ttl_seconds(self) -> int | None:
        """How long a row stays valid after its timestamp (rule O4); ``None``: forever."""
        return parse_duration(self.ttl) if self.ttl else None

    @property
    def schedule(self) -> str | None:
        found = [t for t in self.tags if t in SCHEDULES]
        return found[0] if found else None

    @property
    def metric_columns(self) -> list[MetricColumn]:
        """Every metric output column, in declaration order."""
        out: list[MetricColumn] = []
        for metric in self.metrics:
            if isinstance(metric, Rolling):
                out += metric.columns(self.name, self.tags, self.interval or "")
            else:
                out += metric.columns(self.name, self.tags)
        return out

    @property
    def max_window_seconds(self) -> int:
        return max((c.window_seconds for c in self.metric_columns), default=0)

    @property
    def timestamp_column(self) -> str | None:
        return self.timestamp.output_name if self.timestamp else None

    @property
    def surrogate_entities(self) -> tuple[Entity, ...]:
        return tuple(e for e in self.entities if e.is_surrogate)


def feature(
    source: Source | str,
    *,
    keys: Sequence[str] | None = None,
    entities: Sequence[Entity] | None = None,
    timestamp: str | Timestamp | None = None,
    interval: str | None = None,
    metrics: Sequence[Aggregate | Rolling] | None = None,
    validators: dict[str, Validator | Sequence[Validator]] | None = None,
    tags: Sequence[str] | None = None,
    description: str | None = None,
    engine: str | None = None,
    ttl: str | timedelta | None = None,
) -> Callable[[Callable[..., Any]], Feature]:
    """Declare a feature; the decorated function's name is the feature name.

    The function receives the source as an Ibis table expression (or, if its first
    parameter is annotated with ``polars.DataFrame``/``LazyFrame`` or
    ``pyspark.sql.DataFrame``, that engine's native frame) and returns one.

    Example:
        >>> import mlforge as mlf
        >>> @mlf.feature(source="data/tx.parquet", keys=["user_id"], timestamp="ts",
        ...              interval="1d", metrics=[mlf.Sum("amt", windows=["7d"])])
        ... def user_spend(t):
        ...     return t.select("user_id", "ts", "amt")
        >>> user_spend.name
        'user_spend'
    """

    def decorate(fn: Callable[..., Any]) -> Feature:
        return _make_feature(fn, source, keys, entities, timestamp, interval, metrics, validators, tags, description, engine, ttl)

    return decorate


def _make_feature(fn, source, keys, entities, timestamp, interval, metrics, validators, tags, description, engine, ttl=None) -> Feature:
    name = check_name(getattr(fn, "__name__", None), kind="feature")
    where = f"feature {name!r}"
    src = source if isinstance(source, Source) else _coerce_source(source, where)
    entity_tuple = tuple(entities or ())
    for e in entity_tuple:
        if not isinstance(e, Entity):
            raise DefinitionError(f"entities must be mlf.Entity objects, got {e!r}", where=where, fix="entities=[mlf.Entity('user', join_key='user_id')]")
    key_tuple = _resolve_keys(keys, entity_tuple, where)
    ts = _resolve_timestamp(timestamp, src)
    metric_tuple = tuple(metrics or ())
    tag_tuple = _check_tags(tags, where)
    if engine is not None and engine not in ENGINE_NAMES:
        raise DefinitionError(f"unknown engine {engine!r}", where=where, fix=f"use one of {', '.join(ENGINE_NAMES)}")
    interval_text = _check_interval(interval, metric_tuple, ts, where)
    ttl_text = _check_ttl(ttl, metric_tuple, ts, where)
    feat = Feature(
        name=name,
        fn=fn,
        source=src,
        keys=key_tuple,
        entities=entity_tuple,
        timestamp=ts,
        interval=interval_text,
        metrics=metric_tuple,
        validators=_normalise_validators(validators, where),
        tags=tag_tuple,
        description=description or inspect.getdoc(fn),
        engine=engine,
        native_frame=_native_frame(fn),
        ttl=ttl_text,
    )
    _check_metric_names(feat, where)
    return feat


def _coerce_source(source: object, where: str) -> Source:
    if isinstance(source, str):
        return Source(source)
    raise DefinitionError(f"source must be a path or mlf.Source, got {source!r}", where=where, fix="source=mlf.Source('data/events.parquet')")


def _resolve_keys(keys, entities: tuple[Entity, ...], where: str) -> tuple[str, ...]:
    if keys is not None and isinstance(keys, str):
        keys = [keys]
    key_list = list(keys or [])
    for e in entities:
        if e.join_key not in key_list:
            key_list.append(e.join_key)
    if not key_list:
        raise DefinitionError("a feature needs keys or entities", where=where, fix="pass keys=['user_id'] or entities=[user]")
    if len(set(key_list)) != len(key_list):
        raise DefinitionError(f"duplicate key columns {key_list}", where=where, fix="list each key once")
    for key in key_list:
        check_column_name(key, kind="key column", where=where)
    return tuple(key_list)


def _resolve_timestamp(timestamp, src: Source) -> Timestamp | None:
    declared = src.timestamp if isinstance(src.timestamp, Timestamp) else None
    if timestamp is None:
        return declared
    if isinstance(timestamp, str):
        # Naming the source's own timestamp column keeps how the source said to read it (its
        # format, its alias): dropping the format would detect one, and 01/02 is two dates.
        if declared is not None and timestamp in (declared.column, declared.output_name):
            return declared
        return Timestamp(timestamp)
    return timestamp


def _check_tags(tags, where: str) -> tuple[str, ...]:
    tag_tuple = (tags,) if isinstance(tags, str) else tuple(tags or ())
    for t in tag_tuple:
        if not isinstance(t, str) or not t:
            raise DefinitionError(f"tag {t!r} must be a non-empty string", where=where, fix="tags=['daily', 'users']")
    schedules = [t for t in tag_tuple if t in SCHEDULES]
    if len(schedules) > 1:
        raise DefinitionError(
            f"feature has two schedule tags {schedules}",
            where=where,
            fix=f"keep one of the schedule tags ({', '.join(SCHEDULES)})",
        )
    return tag_tuple


def _check_interval(interval, metrics, ts: Timestamp | None, where: str) -> str | None:
    if interval is not None:
        interval_text = interval if isinstance(interval, str) else format_duration(parse_duration(interval, where=where))
        parse_duration(interval_text, where=f"interval of {where}")
    else:
        interval_text = None
    if not metrics:
        return interval_text
    if ts is None:
        raise DefinitionError("a feature with metrics needs a timestamp column", where=where, fix="pass timestamp='event_time'")
    if interval_text is None:
        raise DefinitionError("a feature with metrics needs an interval (the grid step)", where=where, fix="pass interval='1d'")
    for m in metrics:
        if not isinstance(m, (Aggregate, Rolling)):
            raise DefinitionError(f"metrics must be mlf.Aggregate / mlf.Sum(...) objects, got {m!r}", where=where, fix="metrics=[mlf.Sum('amt', windows=['7d'])]")
    step = parse_duration(interval_text)
    for m in metrics:
        for w in m.windows:
            seconds = parse_duration(w, where=where)
            if seconds % step != 0:
                raise DefinitionError(
                    f"window {w!r} is not a whole multiple of the interval {interval_text!r}",
                    where=where,
                    fix=f"use windows that are multiples of {interval_text}, or a smaller interval",
                )
    return interval_text


def _check_ttl(ttl, metrics, ts: Timestamp | None, where: str) -> str | None:
    """Rule O4: a ttl is a positive duration, for features without metrics that have a timestamp."""
    if ttl is None:
        return None
    if metrics:
        raise DefinitionError(
            f"ttl={ttl!r} is not allowed on a feature with metrics: its windows already bound how old an event may be",
            where=f"{where}, field ttl",
            fix="remove ttl=, or shorten the metric windows",
        )
    if ts is None:
        raise DefinitionError(
            f"ttl={ttl!r} needs a timestamp column: the age of a row is measured from its timestamp",
            where=f"{where}, field ttl",
            fix="pass timestamp='event_time', or remove ttl=",
        )
    text = ttl if isinstance(ttl, str) else format_duration(parse_duration(ttl, where=f"ttl of {where}"))
    parse_duration(text, where=f"ttl of {where}")
    return text.strip()


def _normalise_validators(validators, where: str) -> tuple[tuple[str, tuple[Validator, ...]], ...]:
    if not validators:
        return ()
    if not isinstance(validators, dict):
        raise DefinitionError("validators must map column names to validators", where=where, fix="validators={'amt': [mlf.greater_than(0)]}")
    out = []
    for column, checks in validators.items():
        checks = (checks,) if isinstance(checks, Validator) else tuple(checks)
        for c in checks:
            if not isinstance(c, Validator):
                raise DefinitionError(f"validator for column {column!r} is not a validator: {c!r}", where=where, fix="use mlf.not_null(), mlf.greater_than(0), ...")
        out.append((column, checks))
    return tuple(out)


def _check_metric_names(feat: Feature, where: str) -> None:
    if feat.timestamp_column is not None:
        check_column_name(feat.timestamp_column, kind="timestamp column", where=where)
    for col in feat.metric_columns:
        check_column_name(col.field, kind="metric field", where=where)
        check_column_name(col.output_name, kind="metric output", where=where)
        if col.field in feat.keys:
            raise DefinitionError(
                f"metric field {col.field!r} is a key column of the feature: every event of a row's window has the same key",
                where=where,
                fix=f"aggregate another column; to count events, copy the key in the function (t.mutate(events=t[{col.field!r}])) and use mlf.Count('events', ...)",
            )
    fixed = [*feat.keys, *([feat.timestamp_column] if feat.timestamp_column else [])]
    check_distinct_columns([*fixed, *(c.output_name for c in feat.metric_columns)], kind="column", where=where)
    seen: set[str] = set()
    reserved = set(fixed)
    for col in feat.metric_columns:
        if col.output_name in seen:
            raise DefinitionError(f"two metrics produce the output column {col.output_name!r}", where=where, fix="give the metrics different name= values")
        if col.output_name in reserved:
            raise DefinitionError(f"metric output {col.output_name!r} clashes with a key or timestamp column", where=where, fix="rename the metric")
        seen.add(col.output_name)


def _native_frame(fn: Callable[..., Any]) -> str | None:
    """Which engine's native frame the function's first parameter asks for, if any."""
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return None
    if not params:
        return None
    annotation = params[0].annotation
    if annotation is inspect.Parameter.empty:
        return None
    text = annotation if isinstance(annotation, str) else f"{getattr(annotation, '__module__', '')}.{getattr(annotation, '__qualname__', '')}"
    if "pyspark" in text or "SparkDataFrame" in text:
        return "pyspark"
    if text.startswith("polars") or text.startswith("pl.") or "LazyFrame" in text:
        return "polars"
    return None
