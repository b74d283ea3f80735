"""What a published online value means: the publication record, the tail layout, and the
value of an entity at a read time ``T`` (contracts O1, O2, O4).

A read at ``T`` must equal ``get_training_data`` for a label at ``T`` (rule P2). So a
publish stores, per entity, exactly the rows a label at or after the version's watermark
can take:

* **metric feature** -- the entity's *tail*: its grid rows labelled at or after the
  watermark (at most ``max_window / interval`` rows; later labels are past its windows),
  stored as ONE value, so a read is still one key lookup: a :class:`~mlforge.online.base.Tail`
  of the labels (epoch seconds) and one row of values per label, written a row per line
  (see :mod:`mlforge.online.base`) so a read decodes only the row it takes::

      {"user_id": 42, "__mlforge_tail": Tail(interval=86400,
                                             labels=[1704412800, 1704499200],
                                             values={"spend_7d": [12.5, 3.0], "n_7d": [2, 1]})}

  A read at ``T`` takes the row labelled ``floor(T / interval) * interval``; a label the
  tail lacks has empty windows (rule W4: count and sum 0, the rest null), as in training.
  Values of format 1 held the tail column-wise in plain JSON; they still read.
* **other features** -- the newest row of the entity (timestamp at or before the
  watermark), as stored offline. A read at ``T`` ignores it when its timestamp is older
  than ``T - ttl`` (rule O4).

Every publish also writes a :class:`Publication` record per feature, under the
pseudo-feature :data:`PUBLICATIONS` (a name no feature can have: ``.`` is not allowed in
feature names, rule E4), read in the same round trip as the entities. It says how to read
the values (interval, ttl, the W4 values), from which instant on they hold (the
watermark: a read before it cannot be answered from the tail and is refused), and which
versions' entities may still be stored (so the next publish removes the ones that left).

Rows written with ``store.write`` directly (not by ``build --online``) carry no tail and
are served as written; with a publication record present, a metric row without a tail is
a left-over of an older mlforge and reads as unknown.
"""

from __future__ import annotations

import bisect
import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any, NamedTuple

from mlforge.definitions.durations import parse_duration
from mlforge.errors import OnlineStoreError, RetrievalError
from mlforge.online.base import TAIL, Tail, not_an_mlforge_row
from mlforge.records import VersionRecord

if TYPE_CHECKING:
    from mlforge.definitions.feature import Feature

#: The pseudo-feature holding one publication record per feature, keyed by ``feature``.
PUBLICATIONS = "mlforge.publications"
#: Format of the record and of the tail; a reader refuses a newer one. 2: tails are a
#: row per line (:class:`~mlforge.online.base.Tail`); 1: column-wise JSON, still read.
FORMAT = 2
#: W4: these aggregations read 0 for an empty window, the others null.
EMPTY_IS_ZERO = frozenset({"count", "sum"})


@dataclass(frozen=True)
class Publication:
    """How to read the online values of one feature (the record of its last publish).

    Attributes:
        feature: the feature.
        version: the offline version the values come from (``None``: not from a publish).
        keys: the key columns.
        timestamp: the timestamp column (grid label for metric features).
        interval: grid step in seconds; ``None`` for features without metrics.
        ttl: seconds a row of a non-metric feature stays valid (O4); ``None``: forever.
        watermark: epoch seconds from which on the values hold (O1); ``None``: no bound.
        columns: the value columns, in order.
        empty: ``(column, value)`` an entity without rows reads (W4 for metric features).
        present: versions whose entities the store may hold (for removal on the next publish).
        published_at: when the publish finished (ISO 8601, UTC).
    """

    feature: str
    version: str | None
    keys: tuple[str, ...]
    timestamp: str | None
    interval: int | None
    ttl: int | None
    watermark: int | None
    columns: tuple[str, ...]
    empty: tuple[tuple[str, Any], ...] = ()
    present: tuple[str, ...] = ()
    published_at: str | None = None
    format: int = FORMAT

    @property
    def is_metric(self) -> bool:
        return self.interval is not None

    @property
    def empty_values(self) -> dict[str, Any]:
        """A new dict of what an empty read gives (W4), made from a template built once."""
        return dict(self._empty_template)

    @functools.cached_property
    def _empty_template(self) -> dict[str, Any]:
        values = dict.fromkeys(self.columns)
        values.update(self.empty)
        return values

    @classmethod
    def from_record(cls, record: VersionRecord, *, present: Sequence[str] = (), published_at: str | None = None) -> Publication:
        """The publication of a stored version, from its record (rule S3)."""
        metrics = record.metrics
        keys = tuple(record.keys)
        ts = record.timestamp
        schema = dict(record.schema)
        metric_names = {m.name for m in metrics}
        order = [m.name for m in metrics] + [c for c in schema if c not in metric_names]
        columns = tuple(c for c in dict.fromkeys(order) if c not in keys and c != ts and not c.startswith("__mlforge"))
        interval = parse_duration(record.interval) if metrics and record.interval else None
        ttl = parse_duration(record.ttl) if record.ttl and not metrics else None
        empty = tuple((m.name, empty_value(m.function, schema.get(m.name))) for m in metrics if m.function in EMPTY_IS_ZERO)
        watermark = record.watermark if ts else None
        return cls(record.name, record.version or "", keys, ts, interval, ttl, watermark, columns, empty, tuple(present), published_at)

    @classmethod
    def from_feature(cls, feature: Feature) -> Publication:
        """What a definition alone says (nothing built or published yet): no watermark."""
        metrics = feature.metric_columns
        empty = tuple((c.output_name, 0) for c in metrics if c.function in EMPTY_IS_ZERO)
        interval = feature.interval_seconds if metrics else None
        columns = tuple(c.output_name for c in metrics)
        return cls(feature.name, None, tuple(feature.keys), feature.timestamp_column, interval, feature.ttl_seconds, None, columns, empty)

    def to_row(self) -> dict[str, Any]:
        """The record as a row of :data:`PUBLICATIONS` (keyed by ``feature``)."""
        return {
            "feature": self.feature, "format": self.format, "version": self.version, "keys": list(self.keys),
            "timestamp": self.timestamp, "interval": self.interval, "ttl": self.ttl, "watermark": self.watermark,
            "columns": list(self.columns), "empty": {c: v for c, v in self.empty}, "present": list(self.present),
            "published_at": self.published_at,
        }

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Publication:
        if int(row.get("format", 0)) > FORMAT:
            raise OnlineStoreError(
                f"the online store holds a publication of {row.get('feature')!r} in format {row.get('format')}, newer than this mlforge reads ({FORMAT})",
                fix="upgrade mlforge where it reads the online store, or re-publish with this version (`mlforge build --online`)",
            )
        return cls(
            row["feature"], row.get("version"), tuple(row["keys"]), row.get("timestamp"), row.get("interval"), row.get("ttl"),
            row.get("watermark"), tuple(row["columns"]), tuple((row.get("empty") or {}).items()), tuple(row.get("present") or ()),
            row.get("published_at"), int(row.get("format", FORMAT)),
        )


def empty_value(function: str, canonical: str | None) -> Any:
    """W4 for ``count``/``sum``: a zero of the column's type (what training's fill gives)."""
    kind = (canonical or "").lower()
    if function == "sum" and kind.startswith(("float", "double")):
        return 0.0
    if function == "sum" and kind.startswith("decimal"):
        return Decimal(0)
    return 0


# -- writing ------------------------------------------------------------------------------------
def tail_value(key: Mapping[str, Any], rows: Sequence[Mapping[str, Any]], timestamp: str, columns: Sequence[str], interval: int) -> dict[str, Any]:
    """The stored value of one entity of a metric feature from its tail rows (label order).

    >>> from datetime import datetime, UTC
    >>> row = {"ts": datetime(2024, 1, 5, tzinfo=UTC), "n_2d": 1}
    >>> tail_value({"user_id": "a"}, [row], "ts", ["n_2d"], 86400)["__mlforge_tail"]
    Tail(interval=86400, labels=[1704412800], values={'n_2d': [1]})
    """
    labels = [epoch_seconds(r[timestamp]) for r in rows]
    return {**key, TAIL: Tail(interval, labels, list(columns), rows=[[r.get(c) for c in columns] for r in rows])}


def epoch_seconds(instant: datetime) -> int:
    aware = instant if instant.tzinfo is not None else instant.replace(tzinfo=UTC)
    return math.floor(aware.timestamp())


# -- reading ------------------------------------------------------------------------------------
class Reading(NamedTuple):
    """One feature of one entity at a read time.

    Attributes:
        values: every value column (what training gives for a label at ``T``).
        label_time: the instant the values belong to: the grid label for metric features,
            the row's timestamp for others; ``None`` when no row counts.
        known: whether the store holds the entity.
        row: key columns, timestamp and values, as REST answers it; ``None`` when no row counts
            for a feature without metrics.
    """

    values: dict[str, Any]
    label_time: datetime | None
    known: bool
    row: dict[str, Any] | None = None


def check_read_time(publication: Publication, at: datetime) -> None:
    """O1 holds from the watermark on: before it the tail cannot answer, so refuse."""
    if publication.watermark is not None and at.timestamp() < publication.watermark:
        since = datetime.fromtimestamp(publication.watermark, tz=UTC).isoformat()
        raise RetrievalError(
            f"read time {at.isoformat()} is before {since}, the watermark of the published version {publication.version} of {publication.feature!r}",
            where=f"online lookup of {publication.feature!r}",
            fix=f"read at or after {since} (default: now), or use get_training_data for earlier label times",
        )


def value_at(publication: Publication, key: Mapping[str, Any], stored: Mapping[str, Any] | None, at: datetime, *, published: bool) -> Reading:
    """What ``get_training_data`` gives for a label at ``at``, from one stored value.

    Args:
        publication: how to read the feature (its record, or a stand-in from the metadata).
        key: the key columns looked up.
        stored: the stored row, or ``None`` for an entity the store does not hold.
        at: the read time (UTC).
        published: whether ``publication`` is a record written by a publish (rows of
            metric features then must carry a tail).
    """
    return values_at(publication, [key], [stored], at, published=published)[0]


def values_at(publication: Publication, keys: Sequence[Mapping[str, Any]], stored: Sequence[Mapping[str, Any] | None], at: datetime, *, published: bool) -> list[Reading]:
    """:func:`value_at` for the entities ``keys`` of one feature, ``stored[i]`` being the
    row of ``keys[i]``: the read time's epoch seconds are taken once for all of them."""
    seconds = math.floor(at.timestamp())
    out = []
    for key, row in zip(keys, stored, strict=True):
        if row is not None and publication.is_metric and (published or TAIL in row):
            out.append(_metric_reading(publication, key, row, seconds))
        elif row is None:
            out.append(_unknown(publication, key, seconds))
        else:
            out.append(_plain_reading(publication, row, at))
    return out


def _metric_reading(publication: Publication, key: Mapping[str, Any], stored: Mapping[str, Any], seconds: int) -> Reading:
    tail = stored.get(TAIL)
    if tail is None:  # a row of an older publish layout: not a value at any known time
        return _unknown(publication, key, seconds)
    if not isinstance(tail, Tail):  # format 1: columns of plain JSON
        tail = Tail.from_columns(tail)
    label, label_time = grid_label(seconds, tail.interval)
    labels = tail.labels
    at_label = bisect.bisect_left(labels, label)
    values = publication.empty_values
    if at_label < len(labels) and labels[at_label] == label:
        try:
            stored_row = tail.row(at_label)
        except ValueError as exc:  # a damaged row line: not JSON, or not one value per column
            raise not_an_mlforge_row(
                f"the stored value of {publication.feature!r} for {dict(key)}", exc,
                fix="re-publish it with `mlforge build --online`; if another program writes under the same keys, give mlforge its own prefix, table or schema",
            ) from None
        # The record's columns only: an entity written by another version than the
        # record's (while a publish runs) may hold other columns; every entity of one
        # answer has the record's.
        for column in values:
            if column in stored_row:
                values[column] = stored_row[column]
    for column in values.keys() - set(tail.columns):
        # A column the record has and the stored value lacks (an entity the running publish
        # has not written yet): its value is not known, which is not an empty window (W4).
        values[column] = None
    row = {k: stored[k] if k in stored else key.get(k) for k in publication.keys}
    return Reading(values, label_time, True, _with_label(row, publication.timestamp, label_time, values))


def _unknown(publication: Publication, key: Mapping[str, Any], seconds: int) -> Reading:
    """O2: an entity without rows reads as training gives it (W4 for metric features)."""
    if not publication.is_metric:
        return Reading(dict.fromkeys(publication.columns), None, False, None)
    _, label_time = grid_label(seconds, publication.interval or 1)  # a metric publication always has one
    values = publication.empty_values
    return Reading(values, label_time, False, _with_label(dict(key), publication.timestamp, label_time, values))


def _plain_reading(publication: Publication, stored: Mapping[str, Any], at: datetime) -> Reading:
    """A row as stored: the newest row of a feature without metrics (O4 applies its ttl)."""
    ts = publication.timestamp
    skip = {*publication.keys, *([ts] if ts else [])}
    columns = publication.columns or tuple(c for c in stored if c not in skip)
    stamp = stored.get(ts) if ts else None
    if isinstance(stamp, datetime) and stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=UTC)
    if publication.ttl is not None and isinstance(stamp, datetime) and stamp < at - timedelta(seconds=publication.ttl):
        return Reading(dict.fromkeys(columns), None, True, None)
    values = {c: stored.get(c) for c in columns}
    return Reading(values, stamp if isinstance(stamp, datetime) else None, True, dict(stored))


@functools.lru_cache(maxsize=64)
def grid_label(seconds: int, interval: int) -> tuple[int, datetime]:
    """The grid label a read at ``seconds`` (epoch) falls on, as seconds and as a UTC
    timestamp (rule O1). Cached: one lookup asks it for every entity of a feature.

    >>> grid_label(90_000, 86_400)
    (86400, datetime.datetime(1970, 1, 2, 0, 0, tzinfo=datetime.timezone.utc))
    """
    label = (seconds // interval) * interval
    try:
        return label, datetime.fromtimestamp(label, tz=UTC)
    except (OverflowError, ValueError, OSError):  # a read near year 1 on a long interval
        raise RetrievalError(
            f"the grid label of the read time, {label} s from the epoch, is out of range",
            where="at=",
            fix="pass a later read time",
        ) from None


def _with_label(row: dict[str, Any], timestamp: str | None, label_time: datetime, values: Mapping[str, Any]) -> dict[str, Any]:
    if timestamp:
        row[timestamp] = label_time
    row.update(values)
    return row


def read_time(at: Any = None) -> datetime:
    """The read time as an aware UTC datetime: ``None`` is now; naive values are UTC (T1).

    >>> read_time("2024-01-05T12:00:00").isoformat()
    '2024-01-05T12:00:00+00:00'
    """
    if at is None:
        return datetime.now(tz=UTC)
    if isinstance(at, str):
        try:
            at = datetime.fromisoformat(at)
        except ValueError:
            raise RetrievalError(f"cannot read the read time {at!r}", where="at=", fix="pass a datetime or an ISO 8601 text like '2024-01-05T12:00:00Z'") from None
    if not isinstance(at, datetime):
        raise RetrievalError(f"the read time must be a datetime, got {type(at).__name__}", where="at=", fix="pass a datetime (naive values are UTC) or an ISO 8601 text")
    if hasattr(at, "to_pydatetime"):  # pandas.Timestamp
        at = at.to_pydatetime()
    if at != at:  # pandas.NaT passes for a datetime, but is no instant
        raise RetrievalError("the read time is NaT, not an instant", where="at=", fix="pass a datetime (naive values are UTC), an ISO 8601 text, or None for now")
    try:
        moment = at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)
    except (OverflowError, ValueError):
        moment = None
    if moment is None or not (_EARLIEST_READ <= moment < _LATEST_READ):
        raise RetrievalError(
            f"the read time {at.isoformat()} is out of range",
            where="at=",
            fix=f"pass an instant from {_EARLIEST_READ:%Y-%m-%d} to before {_LATEST_READ:%Y-%m-%d} (UTC)",
        )
    return moment


#: Read times whose grid labels and epoch seconds every interval and clock can hold: a day
#: inside Python's datetime range at either end (9999-12-31 23:59:59.999999 as float
#: seconds rounds up into the year 10000).
_EARLIEST_READ = datetime(1, 1, 2, tzinfo=UTC)
_LATEST_READ = datetime(9999, 12, 31, tzinfo=UTC)
