"""Version metadata (S3): canonical column types, fingerprints and the metadata record."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from typing import Any

#: Canonical type names stored in metadata, from Ibis dtypes.
_CANONICAL = {
    "int8": "int64", "int16": "int64", "int32": "int64", "int64": "int64",
    "uint8": "int64", "uint16": "int64", "uint32": "int64", "uint64": "int64",
    "float16": "float64", "float32": "float64", "float64": "float64",
    "string": "string", "boolean": "bool", "date": "date",
}


def canonical_type(dtype: Any) -> str:
    """A stable, engine-independent name for a column type.

    Nullability is not part of it: engines disagree on it for the same column.

    >>> import ibis.expr.datatypes as dt
    >>> canonical_type(dt.Timestamp(timezone="UTC"))
    'timestamp[UTC]'
    >>> canonical_type(dt.Array(dt.Int32(nullable=False), nullable=False))
    'array<int64>'
    """
    if dtype.is_timestamp():
        return f"timestamp[{dtype.timezone or 'naive'}]"
    if dtype.is_decimal():
        return f"decimal({dtype.precision},{dtype.scale})"
    if dtype.is_array():
        return f"array<{canonical_type(dtype.value_type)}>"
    if dtype.is_map():
        return f"map<{canonical_type(dtype.key_type)}, {canonical_type(dtype.value_type)}>"
    if dtype.is_struct():
        return "struct<" + ", ".join(f"{name}: {canonical_type(field)}" for name, field in dtype.items()) + ">"
    name = str(dtype.copy(nullable=True))
    return _CANONICAL.get(name, name)


def canonical_schema(schema: Any) -> dict[str, str]:
    return {name: canonical_type(dtype) for name, dtype in schema.items()}


def exact_types(schema: Any) -> dict[str, str]:
    """Each column's exact type as Ibis type text, from an Arrow schema (a version's files);
    a type whose text Ibis cannot read back is left out (it reads with its canonical type).

    >>> import pyarrow as pa
    >>> exact_types(pa.schema([("n", pa.int32()), ("m", pa.map_(pa.string(), pa.float32()))]))
    {'n': 'int32', 'm': 'map<!string, float32>'}
    """
    import ibis.expr.datatypes as dt

    out = {}
    for field in schema:
        text = str(dt.dtype(field.type).copy(nullable=True))
        read_back = exact_arrow_type(text)
        if read_back is not None and (read_back == field.type or dt.dtype(read_back) == dt.dtype(field.type)):
            out[field.name] = text
    return out


def exact_arrow_type(text: str) -> Any:
    """The Arrow type of :func:`exact_types`' text; ``None`` when Ibis's parser cannot read
    it (struct fields named as words only: no ``first name``; a hand-edited record)."""
    import ibis

    try:
        return ibis.dtype(text).to_pyarrow()
    except Exception:  # parsy's ParseError, or a type Arrow has no twin for
        return None


def arrow_schema(schema: dict[str, str]) -> Any:
    import pyarrow as pa

    mapping = {"int64": pa.int64(), "float64": pa.float64(), "string": pa.string(), "bool": pa.bool_(), "date": pa.date32(), "binary": pa.binary()}
    fields = []
    for name, kind in schema.items():
        if kind.startswith("timestamp["):
            zone = kind[len("timestamp[") : -1]
            fields.append(pa.field(name, pa.timestamp("us", tz=None if zone == "naive" else zone)))
        else:
            fields.append(pa.field(name, mapping.get(kind, pa.string())))
    return pa.schema(fields)


def stable_hash(payload: Any) -> str:
    """SHA-256 of a JSON-serialisable payload with sorted keys."""
    text = json.dumps(payload, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def file_digests(paths: list[str], known: Mapping[str, str] | None = None) -> dict[str, str]:
    """SHA-256 of each file's contents, by file name. ``known`` holds digests already taken
    of files reused unchanged from an earlier version; those files are not read again."""
    digests = {}
    for path in sorted(paths):
        name = os.path.basename(path)
        digests[name] = known[name] if known and name in known else sha256_file(path)
    return digests


def sha256_file(path: str) -> str:
    """SHA-256 of a file's contents, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def digests_hash(digests: Mapping[str, str]) -> str:
    """The data hash of a version: SHA-256 over its files' names and digests, in name order."""
    text = "".join(f"{name}:{digests[name]}\n" for name in sorted(digests))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def files_hash(paths: list[str]) -> str:
    """The data hash of a version's files, read afresh (see :func:`digests_hash`)."""
    return digests_hash(file_digests(paths))
