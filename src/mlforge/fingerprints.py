"""Fingerprints of a feature's definition and of its source (S2, S3; STYLE 7).

The definition hash is taken over the feature function's *compiled, unbound* Ibis
expression plus the metric configuration, so reformatting a function does not change it.

The expression is the part of the function's output a build consumes (all of it for a
feature without metrics; the keys, timestamp, metric fields and validated columns for one
with metrics), compiled over the source's columns with engine-independent canonical types,
with ``*`` expanded and the columns nothing consumes pruned. So the hash covers the
function's logic and the source columns it actually uses: a new source column the feature
does not use (pandas' ``__index_level_0__``) changes nothing, on any engine.
"""

from __future__ import annotations

import glob
import hashlib
import logging
import os
from typing import TYPE_CHECKING, Any

from mlforge.definitions.durations import format_duration
from mlforge.definitions.source import is_pattern
from mlforge.manifest import canonical_type, sha256_file, stable_hash

if TYPE_CHECKING:
    from mlforge.definitions.feature import Feature
    from mlforge.definitions.source import Source

__all__ = ["definition_hash", "fingerprints_content", "source_fingerprint", "stable_hash"]

log = logging.getLogger(__name__)


def definition_config(feature: Feature) -> dict[str, Any]:
    """Everything about a feature's declaration that shapes its stored table, or what its
    rows mean (``ttl``, rule O4: recorded only when set, so older hashes stay valid)."""
    config = {
        "keys": list(feature.keys),
        "timestamp": feature.timestamp_column,
        # the grid step, whatever its spelling ('1d', '24h', timedelta(days=1))
        "interval": None if feature.interval_seconds is None else format_duration(feature.interval_seconds),
        "metrics": [
            {"name": c.output_name, "field": c.field, "function": c.function, "window": c.window_seconds}
            for c in feature.metric_columns
        ],
        "timestamp_spec": None if feature.timestamp is None else [feature.timestamp.column, feature.timestamp.format, feature.timestamp.alias],
        "entities": [(e.name, e.join_key, list(e.from_columns or [])) for e in feature.entities],
        "validators": [(col, [v.describe() for v in vs]) for col, vs in feature.validators],
        "source": {"location": feature.source.location, "format": repr(feature.source.format)},
    }
    if feature.ttl is not None:
        config["ttl"] = feature.ttl_seconds
    return config


def definition_hash(feature: Feature, input_schema: Any) -> str:
    """Hash of the unbound function expression (pruned to what the build consumes) and the
    declaration; the same on every engine (see the module docstring)."""
    return stable_hash({"config": definition_config(feature), "expression": _expression_text(feature, input_schema)})


def _expression_text(feature: Feature, input_schema: Any) -> str:
    import ibis

    if feature.native_frame is None:
        try:
            schema = canonical_ibis_schema(input_schema)
            name = f"source_{feature.source.name}"
            result = feature.fn(ibis.table(schema, name=name))
            if not isinstance(result, ibis.Table):  # not a table: the build says so when it calls the function
                return _bytecode_text(feature.fn)
            consumed = consumed_output(feature, result)
        except Exception:  # the function needs real data: fall back to its bytecode
            return _bytecode_text(feature.fn)
        sql = ibis.to_sql(consumed, dialect="duckdb")
        try:
            return pruned_sql(sql, name, schema)
        except Exception:  # sqlglot cannot qualify this query: hash it as Ibis compiled it
            log.debug("feature %s: hashing the unpruned expression", feature.name, exc_info=True)
            return sql
    return _bytecode_text(feature.fn)


def canonical_ibis_schema(schema: Any) -> Any:
    """``schema`` with every type replaced by its canonical type (int32 -> int64, no
    nullability marks, ...), so the compiled expression does not depend on the engine
    that read the source.

    >>> import ibis
    >>> canonical_ibis_schema(ibis.schema({"a": "!int32", "b": "float32"}))
    ibis.Schema {
      a  int64
      b  float64
    }
    """
    import ibis
    import ibis.expr.datatypes as dt

    types = {}
    for name, dtype in schema.items():
        canonical = canonical_type(dtype)
        if canonical.startswith("timestamp["):
            zone = canonical[len("timestamp[") : -1]
            types[name] = dt.Timestamp(timezone=None if zone == "naive" else zone)
            continue
        try:
            types[name] = dt.dtype("boolean" if canonical == "bool" else canonical)
        except Exception:  # a type without a canonical spelling keeps its own, without nullability
            types[name] = dtype.copy(nullable=True)
    return ibis.schema(types)


def consumed_output(feature: Feature, output: Any) -> Any:
    """The columns of the function's output that a build consumes: all of them without
    metrics (they are stored); with metrics, the keys, timestamp, metric fields, validated
    columns and the columns of surrogate keys the output may still need."""
    if not feature.metrics:
        return output
    wanted = [*feature.keys, feature.timestamp_column, *(c.field for c in feature.metric_columns)]
    wanted += [column for column, _ in feature.validators]
    wanted += [c for e in feature.surrogate_entities for c in e.from_columns or ()]
    present = [c for c in dict.fromkeys(wanted) if c is not None and c in output.columns]
    return output.select(*present)


def pruned_sql(sql: str, table: str, schema: Any) -> str:
    """``sql`` with ``*`` expanded over ``schema`` and every column no outer query uses
    pruned, followed by the canonical types of the source columns it still reads.

    >>> import ibis
    >>> wide = ibis.schema({"k": "int64", "v": "float64", "unused": "string"})
    >>> print(pruned_sql("SELECT k, w FROM (SELECT *, v * 2 AS w FROM src)", "src", wide))
    SELECT "_0"."k" AS "k", "_0"."w" AS "w" FROM (SELECT "src"."k" AS "k", "src"."v" * 2 AS "w" FROM "src" AS "src") AS "_0"
    -- reads k int64, v float64
    """
    import sqlglot
    from ibis.backends.sql.datatypes import DuckDBType
    from sqlglot import exp
    from sqlglot.optimizer.pushdown_projections import pushdown_projections
    from sqlglot.optimizer.qualify import qualify

    tree = sqlglot.parse_one(sql, read="duckdb")
    tree = qualify(tree, schema={table: {n: DuckDBType.to_string(t) for n, t in schema.items()}}, dialect="duckdb")
    tree = pushdown_projections(tree)
    aliases = {t.alias_or_name for t in tree.find_all(exp.Table) if t.name == table}
    read = sorted({c.name for c in tree.find_all(exp.Column) if c.table in aliases and c.name in schema})
    columns = ", ".join(f"{n} {canonical_type(schema[n])}" for n in read)
    return f"{tree.sql(dialect='duckdb')}\n-- reads {columns}"


def _bytecode_text(fn: Any) -> str:
    code = getattr(fn, "__code__", None)
    if code is None:
        return repr(fn)
    consts = [c if not hasattr(c, "co_code") else _code_digest(c) for c in code.co_consts]
    return f"{_code_digest(code)}:{consts!r}:{code.co_names!r}"


def _code_digest(code: Any) -> str:
    return hashlib.sha256(code.co_code).hexdigest()


def fingerprints_content(source: Source) -> bool:
    """Whether :func:`source_fingerprint` hashes the source's content (local files), rather
    than standing for it by its location (remote and catalog sources)."""
    return not (source.is_table or source.is_remote)


def source_fingerprint(source: Source) -> str:
    """Content hash of a local source's files (names relative to the source); for remote or
    catalog sources, the location (they are re-read on every build)."""
    if not fingerprints_content(source):
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
        found = [p for p in glob.glob(os.path.join(glob.escape(location), "**", "*"), recursive=True) if os.path.isfile(p)]
    else:
        found = glob.glob(location) if is_pattern(location) else [location]
    return sorted(p for p in found if os.path.isfile(p))


#: Digests of this process's source files, by path, size and the file's modification and
#: change times: a rewrite that restores the size and the modification time (``touch -d``,
#: ``cp -p``, ``rsync -t``) still moves the change time, which no user call can set back.
_DIGESTS: dict[tuple[str, int, int, int, int], str] = {}


def _file_digest(path: str) -> str:
    stat = os.stat(path)
    key = (os.path.abspath(path), stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino)
    if key not in _DIGESTS:
        _DIGESTS[key] = sha256_file(path)
    return _DIGESTS[key]
