"""Fingerprints of a feature's definition and of its source (S2, S3; STYLE 7).

The definition hash is taken over the feature function's *compiled, unbound* Ibis
expression plus the metric configuration, so reformatting a function does not change it.
"""

from __future__ import annotations

import glob
import hashlib
import os
from typing import TYPE_CHECKING, Any

from mlforge.manifest import sha256_file, stable_hash

if TYPE_CHECKING:
    from mlforge.definitions.feature import Feature
    from mlforge.definitions.source import Source

__all__ = ["definition_hash", "source_fingerprint", "stable_hash"]


def definition_config(feature: Feature) -> dict[str, Any]:
    """Everything about a feature's declaration that shapes its stored table, or what its
    rows mean (``ttl``, rule O4: recorded only when set, so older hashes stay valid)."""
    config = {
        "keys": list(feature.keys),
        "timestamp": feature.timestamp_column,
        "interval": feature.interval,
        "metrics": [
            {"name": c.output_name, "field": c.field, "function": c.function, "window": c.window_seconds}
            for c in feature.metric_columns
        ],
        "entities": [(e.name, e.join_key, list(e.from_columns or [])) for e in feature.entities],
        "validators": [(col, [v.describe() for v in vs]) for col, vs in feature.validators],
        "source": {"location": feature.source.location, "format": repr(feature.source.format)},
    }
    if feature.ttl is not None:
        config["ttl"] = feature.ttl_seconds
    return config


def definition_hash(feature: Feature, input_schema: Any) -> str:
    """Hash of the unbound function expression and the declaration."""
    return stable_hash({"config": definition_config(feature), "expression": _expression_text(feature, input_schema)})


def _expression_text(feature: Feature, input_schema: Any) -> str:
    import ibis

    if feature.native_frame is None:
        try:
            unbound = ibis.table(input_schema, name=f"source_{feature.source.name}")
            return ibis.to_sql(feature.fn(unbound), dialect="duckdb")
        except Exception:  # the function needs real data: fall back to its bytecode
            pass
    return _bytecode_text(feature.fn)


def _bytecode_text(fn: Any) -> str:
    code = getattr(fn, "__code__", None)
    if code is None:
        return repr(fn)
    consts = [c if not hasattr(c, "co_code") else _code_digest(c) for c in code.co_consts]
    return f"{_code_digest(code)}:{consts!r}:{code.co_names!r}"


def _code_digest(code: Any) -> str:
    return hashlib.sha256(code.co_code).hexdigest()


def source_fingerprint(source: Source) -> str:
    """Content hash of a local source's files (names relative to the source); for remote or
    catalog sources, the location (they are re-read on every build)."""
    if source.is_table or source.is_remote:
        return stable_hash({"location": source.location})
    paths = _source_files(source.location)
    digest = hashlib.sha256()
    base = source.location if os.path.isdir(source.location) else os.path.dirname(source.location)
    for path in paths:
        digest.update(os.path.relpath(path, base).encode())
        digest.update(_file_digest(path).encode())
    return digest.hexdigest()


def _source_files(location: str) -> list[str]:
    if os.path.isdir(location):
        found = [p for p in glob.glob(os.path.join(location, "**", "*"), recursive=True) if os.path.isfile(p)]
    else:
        found = glob.glob(location) if any(ch in location for ch in "*?[") else [location]
    return sorted(p for p in found if os.path.isfile(p))


_DIGESTS: dict[tuple[str, int, int], str] = {}


def _file_digest(path: str) -> str:
    stat = os.stat(path)
    key = (os.path.abspath(path), stat.st_size, stat.st_mtime_ns)
    if key not in _DIGESTS:
        _DIGESTS[key] = sha256_file(path)
    return _DIGESTS[key]
