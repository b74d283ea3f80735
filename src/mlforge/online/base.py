"""The online store protocol, the key layout and the value codec (contracts O1, O2).

An online store holds, per feature, one value per entity: what ``build --online`` publishes
(see :mod:`mlforge.online.publication`: the tail of grid rows of a metric feature, the
newest row of another) or what ``write`` was given. Every store keeps
the same two things, so a row written through one client reads back identically through
any other, and stores differ only in how they talk to their server.

**Entity key.** The key values of a row, ordered by key *column name*, rendered as text
and joined by U+001F (the separator of rule K1)::

    key_text({"user_id": 42})                       -> "42"
    key_text({"origin": "JFK", "dest": "LAX"})      -> "LAX\\x1fJFK"   (dest < origin)

Strings stay as they are, integers in decimal (so ``42`` and ``"42"`` name the same
entity; request JSON often carries ids as strings), a float without a fraction as that
integer (``3.0`` is ``3``: REST's JSON has one kind of number), dates in ISO 8601, timestamps as the
ISO 8601 text of the instant in UTC (naive ones are UTC, rule T1: ``2024-01-02T03:00:00+00:00``
whatever zone the value carries), ``-0.0`` as ``0``, null as ``\\N``. With more than one
key column, a string part that could be mistaken for another part (it holds U+001F or U+001E,
or is ``\\N``) is escaped: U+001E, then the text with U+001E doubled and U+001F as
U+001E ``_``. So distinct keys never share a text, and keys without those characters read
as they always did. Each store prefixes the text with the feature name: Redis uses
``{prefix}:{feature}:{key_text}``, DynamoDB the partition key ``{feature}:{key_text}``.
Feature names cannot contain ``:`` (rule E4), so features never share keys.

**Value.** The whole stored row (key columns, timestamp and value columns) as compact
JSON. JSON keeps ``int``/``float``/``str``/``bool``/``null`` apart by itself; every other
type is written as a tagged object ``{"$t": tag, "v": ...}`` so it comes back as the same
Python type (O2)::

    datetime  {"$t": "ts", "v": "2024-01-02T03:04:05.000006+00:00"}  (naive stays naive)
    date      {"$t": "date", "v": "2024-01-02"}
    time      {"$t": "time", "v": "03:04:05"}
    timedelta {"$t": "td", "v": <microseconds>}
    Decimal   {"$t": "dec", "v": "1.10"}
    bytes     {"$t": "b64", "v": "<base64>"}
    nan/±inf  {"$t": "f", "v": "nan" | "inf" | "-inf"}
    int past 64 bits  {"$t": "int", "v": "<decimal digits>"}
    dict      {"$t": "map", "v": {...}}     (struct / map columns; keeps "$t" unambiguous)

Lists are JSON arrays of encoded items.

**Tails.** The value of a metric feature's entity holds its :class:`Tail` under the column
``__mlforge_tail``: the grid labels and one row of values per label. It is written with one
row per line, so the text stays plain JSON for any reader and a read at a time ``T`` parses
only the head (keys, interval, labels, column names) and the one row it needs::

    {"user_id":42,"__mlforge_tail":{"interval":86400,"labels":[1704412800,1704499200],"columns":["spend_7d","n_7d"],"rows":[
    [12.5,2],
    [3.0,1]
    ]}}

Compact JSON has no other line break (one inside a string is written ``\\n``), so splitting
the text at line breaks finds the rows.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

import orjson

from mlforge.errors import OnlineStoreError

if TYPE_CHECKING:
    import pyarrow as pa

KEY_SEPARATOR = "\x1f"
NULL_TEXT = "\\N"
TAG = "$t"
#: The column of a stored metric value holding its :class:`Tail`.
TAIL = "__mlforge_tail"


@dataclass(frozen=True)
class OnlineCapabilities:
    """What an online store declares it can do (read by the services, never probed).

    Attributes:
        batched_reads: ``read_many`` answers several features in one round trip.
        fills_from_offline: the offline store ``kind`` whose tables the store's platform
            copies itself (``publish_values`` / ``publish_table``), instead of rows
            streamed by mlforge (``write`` / ``delete``).
        in_process: the values live in the serving process itself (``MemoryStore``):
            ``mlforge serve`` fills it at start and cannot share it between workers.
        async_reads: the store is an :class:`AsyncReader`: ``mlforge serve`` awaits its
            ``read_many_async`` on the event loop instead of handing each read to a thread
            (the hop cost a 1-entity request a third of its CPU and most of its p99).
    """

    batched_reads: bool = False
    fills_from_offline: str | None = None
    in_process: bool = False
    async_reads: bool = False


@runtime_checkable
class OnlineStore(Protocol):
    """What every online store provides.

    ``write`` upserts rows (newest write wins per entity); ``delete`` removes entities;
    ``read`` returns, for each key dict, the stored row as a dict, or ``None`` for an
    entity the store does not hold (O2: unknown entities are never errors). A key dict
    holds exactly the feature's key columns. Every method raises
    :class:`~mlforge.errors.OnlineStoreError` when the store cannot be reached.
    """

    capabilities: ClassVar[OnlineCapabilities]

    def write(self, feature: str, key_columns: list[str], batches: Iterable[pa.RecordBatch]) -> int:
        """Upsert every row of ``batches``; returns the number of rows written."""
        ...

    def delete(self, feature: str, keys: list[dict[str, Any]]) -> int:
        """Remove these entities (absent ones are no error); returns how many were asked."""
        ...

    def read(self, feature: str, keys: list[dict[str, Any]]) -> list[dict[str, Any] | None]: ...

    def ping(self) -> None:
        """Return if the store answers; raise ``OnlineStoreError`` otherwise."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class AsyncReader(Protocol):
    """A store that declares ``async_reads``: ``read_many`` without blocking the event loop."""

    async def read_many_async(self, requests: Mapping[str, list[dict[str, Any]]]) -> dict[str, list[dict[str, Any] | None]]:
        """What ``read_many`` answers, awaited (same rows, same errors)."""
        ...


@runtime_checkable
class PlatformPublisher(Protocol):
    """A store whose platform copies a table into it (it declares ``fills_from_offline``)."""

    def publish_values(self, offline_store: Any, feature: str, key_columns: list[str], values: Iterable[dict[str, Any]], record: dict[str, Any]) -> int:
        """Publish one stored value per entity plus the publication ``record`` as the online
        table of ``feature`` (replacing what it held); returns the entities published."""
        ...


# -- keys ---------------------------------------------------------------------------------
def key_text(key: Mapping[str, Any]) -> str:
    """The entity part of a stored key (see the module docstring).

    >>> key_text({"user_id": 42}) == key_text({"user_id": "42"})
    True
    >>> key_text({"origin": "JFK", "dest": "LAX"}).split("\\x1f")
    ['LAX', 'JFK']
    """
    if len(key) == 1:  # the common case, on the hot path of every read
        (value,) = key.values()
        kind = type(value)
        return value if kind is str else str(value) if kind is int else _key_part(value)
    if not key:
        raise OnlineStoreError("an online lookup needs at least one key column", fix="pass the feature's key columns, e.g. {'user_id': 1}")
    return KEY_SEPARATOR.join(_escaped(_key_part(key[name]), key[name]) for name in sorted(key))


def _key_part(value: Any) -> str:
    if value is None:
        return NULL_TEXT
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):  # an instant: the same text for naive (UTC) and any zone
        return (value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)).isoformat()
    if isinstance(value, (date, time)):
        return value.isoformat()
    if isinstance(value, float) and value.is_integer():
        # 3.0 is the entity 3 (JSON, and so REST, has one kind of number; -0.0 is 0, as in a join)
        return str(int(value))
    return str(value)


def _escaped(part: str, value: Any) -> str:
    """A part of a composite key that no other part or value can spell: see the module
    docstring.

    >>> key_text({"a": "x\x1fy", "b": "z"}) != key_text({"a": "x", "b": "y\x1fz"})
    True
    >>> key_text({"a": NULL_TEXT, "b": 1}) != key_text({"a": None, "b": 1})  # the text \\N, and null
    True
    """
    if type(value) is not str or (_ESCAPE not in part and KEY_SEPARATOR not in part and part != NULL_TEXT):
        return part
    return _ESCAPE + part.replace(_ESCAPE, _ESCAPE * 2).replace(KEY_SEPARATOR, _ESCAPE + "_")


#: Starts an escaped part of a composite key (U+001E, the record separator).
_ESCAPE = "\x1e"


# -- rows ---------------------------------------------------------------------------------
def iter_rows(batches: Iterable[Any]) -> Iterator[dict[str, Any]]:
    """Rows as dicts from Arrow record batches / tables (or already-made dicts)."""
    for batch in batches:
        if isinstance(batch, Mapping):
            yield dict(batch)
        elif hasattr(batch, "to_pylist"):
            yield from batch.to_pylist()
        else:
            yield from batch


def keyed_rows(key_columns: list[str], batches: Iterable[Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(key_text, row)`` for each row; rows whose key columns are all null are skipped."""
    if not key_columns:
        raise OnlineStoreError("writing to an online store needs the feature's key columns", fix="pass key_columns=['user_id']")
    for row in iter_rows(batches):
        try:
            key = {name: row[name] for name in key_columns}
        except KeyError as exc:
            raise OnlineStoreError(f"row has no key column {exc.args[0]!r}", fix=f"the rows must contain {key_columns}") from None
        if all(v is None for v in key.values()):
            continue
        yield key_text(key), row


def chunked(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    chunk: list[Any] = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


# -- value codec --------------------------------------------------------------------------
#: What reading back a value mlforge did not write (or that was damaged) can raise.
UNREADABLE = (ValueError, KeyError, TypeError)


def not_an_mlforge_row(what: str, exc: Exception, *, fix: str, where: str | None = None) -> OnlineStoreError:
    """The error for a stored value that does not read back (``what``: e.g. "a stored row of 'spend'")."""
    return OnlineStoreError(f"{what} is not an mlforge row ({type(exc).__name__}: {exc})", where=where, fix=fix)


def check_storable(columns: Iterable[str]) -> None:
    """Refuse the column name that marks typed values in the stored JSON (``$t``)."""
    if TAG in columns:
        raise OnlineStoreError(
            f"cannot store a row with a column named {TAG!r} in an online store: the name marks typed values in the stored JSON",
            fix=f"rename the column {TAG!r} in the feature function",
        )


def encode_row(row: Mapping[str, Any]) -> str:
    """A row as JSON text that :func:`decode_row` turns back into equal, same-typed values.

    >>> from datetime import datetime
    >>> row = {"n": 1, "x": 1.0, "ts": datetime(2024, 1, 2, 3, 4, 5)}
    >>> decode_row(encode_row(row)) == row
    True
    """
    check_storable(row)
    tail = row.get(TAIL)
    if not isinstance(tail, Tail):
        return _dumps({str(k): _encode(v) for k, v in row.items()})
    head = _dumps({str(k): _encode(v) for k, v in row.items() if k != TAIL})
    lines = ",\n".join(_dumps([_encode(v) for v in values]) for values in tail.rows())
    spec = _dumps({"interval": tail.interval, "labels": tail.labels, "columns": tail.columns})
    return f'{head[:-1]}{"," if len(head) > 2 else ""}"{TAIL}":{spec[:-1]},"rows":[' + (f"\n{lines}" if lines else "") + _TAIL_END


def decode_row(text: str | bytes) -> dict[str, Any]:
    """The row :func:`encode_row` stored. A tail's rows stay text until one is asked for
    (:meth:`Tail.row`): only the head (keys, interval, labels, column names) is parsed.

    Raises:
        ValueError: the text is not JSON, not an object, or a tail's parts are not what a
            publish writes (its rows do not match its labels).
    """
    text = text if isinstance(text, str) else text.decode("utf-8")
    if not text.endswith(_TAIL_END):
        row = _loads(text)
        if not isinstance(row, dict):
            raise ValueError(f"a stored row is a JSON object, not {type(row).__name__}")
        tail = row.get(TAIL)
        if tail is not None and not (isinstance(tail, dict) and isinstance(tail.get("labels"), list) and isinstance(tail.get("values"), dict) and isinstance(tail.get("interval"), int)):
            raise ValueError("a stored tail has an interval, a list of labels and values by column")
        return row
    first, last = text.find("\n"), len(text) - len(_TAIL_END)
    row = _loads(text[:first] + text[last:])
    spec = row[TAIL]
    labels, body = spec["labels"], text[first + 1 : last]
    if not (isinstance(labels, list) and isinstance(spec["columns"], list) and isinstance(spec["interval"], int)):
        raise ValueError("a stored tail has an interval, a list of labels and a list of columns")
    rows = body.count("\n") + 1 if body else 0
    if rows != len(labels):
        raise ValueError(f"a tail of {len(labels)} labels holds {rows} rows")
    row[TAIL] = Tail(spec["interval"], labels, spec["columns"], body=body)
    return row


_TAIL_END = "\n]}}"


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), allow_nan=False)


class Tail(Mapping[str, Any]):
    """The tail of one entity of a metric feature: grid labels (epoch seconds, ascending)
    and one row of values per label, in ``columns`` order.

    Read as a mapping it is ``{"interval", "labels", "values"}`` with ``values`` column-wise
    (``{column: [value per label]}``); :meth:`row` decodes a single row, which is what a
    read at one time needs.

    >>> tail = Tail(86400, [0, 86400], ["n_2d"], rows=[[1], [2]])
    >>> decode_row(encode_row({"k": "a", TAIL: tail}))[TAIL] == tail
    True
    >>> decode_row(encode_row({"k": "a", TAIL: tail}))[TAIL].row(1)
    {'n_2d': 2}
    """

    __slots__ = ("_body", "_rows", "columns", "interval", "labels")

    def __init__(self, interval: int, labels: list[int], columns: list[str], *, rows: list[list[Any]] | None = None, body: str | None = None):
        self.interval, self.labels, self.columns = int(interval), labels, list(columns)
        self._rows, self._body = rows, body

    @classmethod
    def from_columns(cls, tail: Mapping[str, Any]) -> Tail:
        """A tail of publication format 1: ``{"interval", "labels", "values": {column: [...]}}``."""
        values = tail["values"]
        columns = list(values)
        return cls(tail["interval"], tail["labels"], columns, rows=[[values[c][i] for c in columns] for i in range(len(tail["labels"]))])

    def row(self, index: int) -> dict[str, Any]:
        """The values of label ``labels[index]``, by column."""
        return dict(zip(self.columns, self.row_values(index), strict=True))

    def rows(self) -> list[list[Any]]:
        """Every row's values, label by label."""
        if self._rows is None:
            self._rows = [_loads(line.removesuffix(",")) for line in self._body.split("\n")] if self._body else []
        return self._rows

    def row_values(self, index: int) -> list[Any]:
        """The values of label ``labels[index]``, in ``columns`` order. Of stored text, only
        that row's line is cut out (from the nearer end) and parsed."""
        count = len(self.labels)
        if not 0 <= index < count:
            raise IndexError(f"a tail of {count} labels has no row {index}")
        if self._rows is not None:
            return self._rows[index]
        body = self._body or ""
        line = body.split("\n", index + 1)[index] if 2 * index < count else body.rsplit("\n", count - index)[1]
        return _loads(line.removesuffix(","))

    def __getitem__(self, name: str) -> Any:
        if name == "interval":
            return self.interval
        if name == "labels":
            return self.labels
        if name == "values":
            rows = self.rows()
            return {c: [r[i] for r in rows] for i, c in enumerate(self.columns)}
        raise KeyError(name)

    def __iter__(self) -> Iterator[str]:
        return iter(("interval", "labels", "values"))

    def __len__(self) -> int:
        return 3

    def __repr__(self) -> str:
        return f"Tail(interval={self.interval}, labels={self.labels}, values={self['values']})"


def _encode(value: Any) -> Any:
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        if -(2**63) <= value < 2**64:
            return int(value)  # IntEnum and friends become plain ints
        return {TAG: "int", "v": str(value)}  # past 64 bits: orjson would read a float
    if isinstance(value, float):
        if math.isfinite(value):
            return float(value)
        return {TAG: "f", "v": "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")}
    if isinstance(value, datetime):
        if hasattr(value, "to_pydatetime"):  # pandas.Timestamp
            value = value.to_pydatetime()
        return {TAG: "ts", "v": value.isoformat()}
    if isinstance(value, date):
        return {TAG: "date", "v": value.isoformat()}
    if isinstance(value, time):
        return {TAG: "time", "v": value.isoformat()}
    if isinstance(value, timedelta):
        return {TAG: "td", "v": value // timedelta(microseconds=1)}
    if isinstance(value, Decimal):
        return {TAG: "dec", "v": str(value)}
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {TAG: "b64", "v": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, Mapping):
        if TAG in value:  # the reserved key as a map key: stored as pairs, read back as a dict
            return {TAG: "pairs", "v": [[str(k), _encode(v)] for k, v in value.items()]}
        return {TAG: "map", "v": {str(k): _encode(v) for k, v in value.items()}}
    if isinstance(value, (list, tuple)):
        return [_encode(v) for v in value]
    if hasattr(value, "item"):  # numpy scalars
        return _encode(value.item())
    raise OnlineStoreError(
        f"cannot store a value of type {type(value).__name__} in an online store",
        fix="cast the column to a number, string, boolean, date, timestamp, list or struct",
    )


_DECODERS = {
    "f": float,
    "int": int,
    "ts": datetime.fromisoformat,
    "date": date.fromisoformat,
    "time": time.fromisoformat,
    "td": lambda v: timedelta(microseconds=v),
    "dec": Decimal,
    "b64": base64.b64decode,
    "map": lambda v: v,  # its inner object was read already
    "pairs": dict,
}


def _typed(obj: dict[str, Any]) -> Any:
    """One JSON object as read: a tagged value becomes its Python value; any other object
    (a row, a map's contents) stays as it is. A map holding the key ``$t`` is stored as
    ``pairs``, so a stored object with a tag is always a tagged value."""
    tag = obj.get(TAG)
    if tag is None:
        return obj
    decoder = _DECODERS.get(tag) if type(tag) is str and len(obj) == 2 else None
    if decoder is None or "v" not in obj:  # not ours: a map an earlier release stored as is
        return obj
    return decoder(obj["v"])


_READER = json.JSONDecoder(object_hook=_typed)


def _loads(text: str) -> Any:
    """JSON text as stored: orjson where nothing is tagged (most values: 2-4x faster), the
    standard parser with :func:`_typed` on each object otherwise. A text without the tag
    name holds no tagged value. The standard parser also reads what orjson refuses (a lone
    surrogate in a string), and keeps integers past 64 bits exact (a timedelta's
    microseconds can be one). Untagged integers past 64 bits, which an earlier mlforge may
    have written, read as floats from a text without tags, so re-publish those."""
    if TAG_TEXT not in text:
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError:
            pass  # not JSON at all, or JSON orjson refuses: the standard parser decides
    return _READER.decode(text)


#: How the tag name appears in stored JSON (json.dumps writes it this way, unescaped).
TAG_TEXT = f'"{TAG}"'


def ttl_seconds(ttl: Any, where: str) -> float | None:
    """A TTL given as seconds or a ``timedelta``; ``None`` means keep forever."""
    if ttl is None:
        return None
    seconds = ttl.total_seconds() if isinstance(ttl, timedelta) else ttl
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or seconds <= 0:
        from mlforge.errors import ConfigError

        raise ConfigError(f"ttl must be a positive number of seconds, got {ttl!r}", where=where, fix="e.g. ttl=86400 (one day)")
    return float(seconds)


def read_many(store: Any, requests: Mapping[str, list[dict[str, Any]]]) -> dict[str, list[dict[str, Any] | None]]:
    """Read several features at once: ``{feature: keys}`` -> ``{feature: rows}``.

    Stores that declare ``batched_reads`` (Redis: one pipeline of ``MGET``) answer in one
    round trip with their own ``read_many``; others are read feature by feature.
    """
    if store.capabilities.batched_reads:
        return store.read_many(requests)
    return {feature: store.read(feature, keys) for feature, keys in requests.items()}
