"""The version record (S3, S7): what a store keeps about one version, as one typed value.

:class:`VersionRecord` is written to and read from JSON only here (``to_dict`` /
``from_dict``); every other module reads its attributes. The on-disk layout is the one
``_metadata.json`` has always had, plus, from record format 2 on, ``format_version`` and
``data_files`` (each data file's path under ``data/``, size in bytes and row count), which
every read checks the files against (S7).

Record formats:

* **1** (no ``format_version`` key): what mlforge wrote before; object stores listed file
  names under ``files``, local stores listed nothing. Such versions still read; their files
  can only be checked for presence (object stores) or not at all (local stores).
* **2**: ``format_version: 2`` and ``data_files``. ``files`` (the names only) is still
  written, so that plain readers keep working (S5).

``format`` is the data format (``parquet``, ``delta``), as before; it is not the record
format. A record from a newer mlforge (a higher ``format_version``) is refused rather than
misread.

>>> record = VersionRecord.from_dict({"name": "spend", "keys": ["user_id"], "rows": 3})
>>> record.format_version, record.keys, record.files
(1, ('user_id',), None)
>>> VersionRecord.from_dict(record.to_dict()) == record
True
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from mlforge.errors import StoreError

#: The record format this mlforge writes.
FORMAT_VERSION = 2


@dataclass(frozen=True)
class DataFile:
    """One data file of a version: its path under the version's ``data/`` directory, its
    size in bytes and its row count (``None`` when an older record did not say)."""

    path: str
    size: int | None = None
    rows: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "size": self.size, "rows": self.rows}


@dataclass(frozen=True)
class EntityRecord:
    """An entity of the feature, as stored: its join key and the columns it is made from."""

    name: str
    join_key: str
    from_columns: tuple[str, ...] = ()


@dataclass(frozen=True)
class MetricRecord:
    """One metric output column, as stored (S3: metric descriptions and units)."""

    name: str
    field: str | None = None
    function: str | None = None
    window: str | None = None
    description: str | None = None
    unit: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class BuiltRange:
    """The label range ``[since, until)`` a build computed, in epoch seconds (``None``: open)."""

    since: int | None = None
    until: int | None = None


@dataclass(frozen=True)
class VersionRecord:
    """Everything mlforge records about one version of a feature (S3).

    The mappings (``schema``, ``file_digests``, ``extra``) are never mutated; make a changed
    record with :meth:`with_changes`.
    """

    name: str = ""
    version: str | None = None
    keys: tuple[str, ...] = ()
    entities: tuple[EntityRecord, ...] = ()
    timestamp: str | None = None
    interval: str | None = None
    #: A non-metric feature's time to live (O4), as declared (``"30d"``); ``None``: none.
    ttl: str | None = None
    #: Rows of a non-metric feature that share their keys and timestamp with another row:
    #: reads pick one of each such group by value (:meth:`Engine.last_per_group`). ``None``:
    #: not counted (a record of an earlier release), so readers assume there may be some.
    tied_rows: int | None = None
    schema: Mapping[str, str] = field(default_factory=dict)
    #: Each column's exact type in the stored files, as Ibis type text (``int32``,
    #: ``decimal(19, 2)``, ``map<string, int64>``): ``schema`` keeps only what engines agree
    #: on (``int64`` for every integer), online reads give values these types (O2). Empty in
    #: records of earlier releases.
    types: Mapping[str, str] = field(default_factory=dict)
    metrics: tuple[MetricRecord, ...] = ()
    tags: tuple[str, ...] = ()
    description: str | None = None
    rows: int = 0
    created_at: str | None = None
    definition_hash: str | None = None
    schema_hash: str | None = None
    data_hash: str | None = None
    file_digests: Mapping[str, str] = field(default_factory=dict)
    source: str | None = None
    source_fingerprint: str | None = None
    build_range: BuiltRange = BuiltRange()
    watermark: int | None = None
    engine: str | None = None
    format: str = "parquet"
    change: str | None = None
    reason: str | None = None
    #: The version's data files; ``None`` for a record that did not list them (format 1, local).
    files: tuple[DataFile, ...] | None = None
    format_version: int = FORMAT_VERSION
    #: Keys this mlforge does not know (a store's own, e.g. Unity Catalog's ``delta_version``).
    extra: Mapping[str, Any] = field(default_factory=dict)

    def with_changes(self, **changes: Any) -> VersionRecord:
        """A copy with some fields replaced."""
        return dataclasses.replace(self, **changes)

    def with_files(self, files: Sequence[DataFile], **changes: Any) -> VersionRecord:
        """A copy listing ``files`` (this format), whose rows are its ``rows``: a record says
        what its version holds, and reads check the two agree (S7)."""
        return dataclasses.replace(self, files=tuple(files), rows=sum(f.rows or 0 for f in files), format_version=FORMAT_VERSION, **changes)

    @property
    def verifiable(self) -> bool:
        """Whether the record lists every data file with its size and row count (S7)."""
        return self.files is not None and all(f.size is not None and f.rows is not None for f in self.files)

    # -- JSON ------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready form written as ``_metadata.json`` (and shown by ``inspect``)."""
        out: dict[str, Any] = {
            "format_version": self.format_version,
            "name": self.name,
            "version": self.version,
            "keys": list(self.keys),
            "entities": [{"name": e.name, "join_key": e.join_key, "from_columns": list(e.from_columns)} for e in self.entities],
            "timestamp": self.timestamp,
            "interval": self.interval,
            "schema": dict(self.schema),
            "metrics": [m.to_dict() for m in self.metrics],
            "tags": list(self.tags),
            "description": self.description,
            "rows": self.rows,
            "created_at": self.created_at,
            "definition_hash": self.definition_hash,
            "schema_hash": self.schema_hash,
            "data_hash": self.data_hash,
            "file_digests": dict(self.file_digests),
            "source": self.source,
            "source_fingerprint": self.source_fingerprint,
            "build_range": {"since": self.build_range.since, "until": self.build_range.until},
            "watermark": self.watermark,
            "engine": self.engine,
            "format": self.format,
            "change": self.change,
            "reason": self.reason,
        }
        if self.ttl is not None:  # only when declared: records without one stay as they were
            out["ttl"] = self.ttl
        if self.tied_rows is not None:
            out["tied_rows"] = self.tied_rows
        if self.types:
            out["types"] = dict(self.types)
        if self.files is not None:
            out["files"] = [f.path for f in self.files]  # names only, for plain readers (S5)
            if self.verifiable:
                out["data_files"] = [f.to_dict() for f in self.files]
        return {**self.extra, **out}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> VersionRecord:
        """Read a record of any format up to :data:`FORMAT_VERSION`; fields an older record
        lacks get their defaults."""
        label = " ".join(part for part in (raw.get("name"), raw.get("version")) if isinstance(part, str) and part) or "a version"
        problem = _shape_problem(raw)
        if problem:
            raise StoreError(f"the metadata of {label} is damaged: {problem}", fix="restore its _metadata.json from a backup, or point latest at another version (`mlforge rollback`)")
        format_version = int(raw.get("format_version") or 1)
        if format_version > FORMAT_VERSION:
            raise StoreError(
                f"the metadata of {label} has record format {format_version}; this mlforge reads formats up to {FORMAT_VERSION}",
                fix="upgrade mlforge (`pip install -U mlforge`)",
            )
        built = raw.get("build_range") or {}
        return cls(
            name=str(raw.get("name") or ""),
            version=raw.get("version"),
            keys=tuple(raw.get("keys") or ()),
            entities=tuple(
                EntityRecord(e["name"], e["join_key"], tuple(e.get("from_columns") or ())) for e in raw.get("entities") or ()
            ),
            timestamp=raw.get("timestamp"),
            interval=raw.get("interval"),
            ttl=raw.get("ttl"),
            tied_rows=raw.get("tied_rows"),
            schema=dict(raw.get("schema") or {}),
            types=dict(raw.get("types") or {}),
            metrics=tuple(_metric(m) for m in raw.get("metrics") or ()),
            tags=tuple(raw.get("tags") or ()),
            description=raw.get("description"),
            rows=int(raw.get("rows") or 0),
            created_at=raw.get("created_at"),
            definition_hash=raw.get("definition_hash"),
            schema_hash=raw.get("schema_hash"),
            data_hash=raw.get("data_hash"),
            file_digests=dict(raw.get("file_digests") or {}),
            source=raw.get("source"),
            source_fingerprint=raw.get("source_fingerprint"),
            build_range=BuiltRange(built.get("since"), built.get("until")),
            watermark=raw.get("watermark"),
            engine=raw.get("engine"),
            format=str(raw.get("format") or "parquet"),
            change=raw.get("change"),
            reason=raw.get("reason"),
            files=_files(raw),
            format_version=format_version,
            extra={k: v for k, v in raw.items() if k not in _KNOWN},
        )


def record_json(payload: Mapping[str, Any], *, indent: int | None = None) -> str:
    """A record's dict as JSON text: every object's keys sorted (stable bytes), except the
    ``schema``'s, which keeps the stored column order -- what a reader without the data
    files (an online lookup) orders a feature's value columns by."""

    def sort(value: Any, *, keep: bool = False) -> Any:
        if isinstance(value, Mapping):
            items = value.items() if keep else sorted(value.items())
            return {k: sort(v) for k, v in items}
        if isinstance(value, list | tuple):
            return [sort(v) for v in value]
        return value

    ordered = {k: sort(v, keep=k == "schema") for k, v in sorted(payload.items())}
    return json.dumps(ordered, indent=indent, default=str)


def _shape_problem(raw: Mapping[str, Any]) -> str | None:
    """What in a stored record is not of the kind mlforge writes (a hand-edited or damaged
    ``_metadata.json``), or ``None``: read as it is, such a field would fail far from the
    file it came from.

    >>> _shape_problem({"rows": "many"})
    "field 'rows' should be an integer, not 'many'"
    >>> _shape_problem({"data_files": [{"path": "a.parquet", "size": 10, "rows": 1}]}) is None
    True
    """

    def integer(value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool)

    def texts(value: Any) -> bool:
        return isinstance(value, list) and all(isinstance(v, str) for v in value)

    def objects(value: Any, **fields: Any) -> bool:
        return isinstance(value, list) and all(isinstance(v, dict) and all(check(v.get(f)) for f, check in fields.items()) for v in value)

    def optional(check: Any) -> Any:
        return lambda value: value is None or check(value)

    text = optional(lambda v: isinstance(v, str))
    expected: dict[str, tuple[Any, str]] = {
        "name": (text, "a text"), "version": (text, "a text"), "timestamp": (text, "a text"), "interval": (text, "a text"), "ttl": (text, "a text"),
        "keys": (optional(texts), "a list of column names"), "tags": (optional(texts), "a list of texts"), "files": (optional(texts), "a list of file names"),
        "rows": (optional(integer), "an integer"), "tied_rows": (optional(integer), "an integer"), "watermark": (optional(integer), "an integer"), "format_version": (optional(integer), "an integer"),
        "schema": (optional(lambda v: isinstance(v, dict) and all(isinstance(t, str) for t in v.values())), "an object of column types"),
        "types": (optional(lambda v: isinstance(v, dict) and all(isinstance(t, str) for t in v.values())), "an object of column types"),
        "file_digests": (optional(lambda v: isinstance(v, dict)), "an object"),
        "build_range": (optional(lambda v: isinstance(v, dict) and all(v.get(k) is None or integer(v.get(k)) for k in ("since", "until"))), "an object of 'since' and 'until' (epoch seconds or null)"),
        "entities": (optional(lambda v: objects(v, name=lambda x: isinstance(x, str), join_key=lambda x: isinstance(x, str))), "a list of entity objects"),
        "metrics": (optional(lambda v: objects(v, name=lambda x: isinstance(x, str))), "a list of metric objects"),
        "data_files": (optional(lambda v: objects(v, path=lambda x: isinstance(x, str), size=integer, rows=integer)), "a list of objects with 'path', 'size' and 'rows'"),
    }
    for name, (check, kind) in expected.items():
        if name in raw and not check(raw[name]):
            return f"field {name!r} should be {kind}, not {raw[name]!r}"[:300]
    return None


def _metric(raw: Mapping[str, Any]) -> MetricRecord:
    return MetricRecord(
        name=raw["name"], field=raw.get("field"), function=raw.get("function"), window=raw.get("window"),
        description=raw.get("description"), unit=raw.get("unit"),
    )


def _files(raw: Mapping[str, Any]) -> tuple[DataFile, ...] | None:
    """``data_files`` (format 2) or, failing that, the bare names under ``files`` (format 1
    object stores)."""
    described = raw.get("data_files")
    if described is not None:
        return tuple(DataFile(str(f["path"]), int(f["size"]), int(f["rows"])) for f in described)
    names = raw.get("files")
    if names is not None:
        return tuple(DataFile(str(name)) for name in names)
    return None


_KNOWN = frozenset({f.name for f in dataclasses.fields(VersionRecord)} - {"extra"} | {"data_files"})
