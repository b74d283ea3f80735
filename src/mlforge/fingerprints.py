"""Fingerprints of a feature's definition and of its source (S2, S3; STYLE 7).

The definition hash is taken over the feature function's *compiled, unbound* Ibis
expression plus the metric configuration, so reformatting a function does not change it.

For a Polars or PySpark function (and an Ibis one that needs real data) there is no
expression: the hash is taken over its bytecode and what that code reads in user code --
the module globals and closure cells it uses, and the code of the helper functions it calls,
followed recursively -- so a changed module constant or helper body is a new definition.
An Ibis expression names its Python UDFs by a per-process counter; they are named in the
hash by their code instead (:func:`code_text`).

The expression is the part of the function's output a build consumes (all of it for a
feature without metrics; the keys, timestamp, metric fields and validated columns for one
with metrics), compiled over the source's columns with engine-independent canonical types,
with ``*`` expanded and the columns nothing consumes pruned. So the hash covers the
function's logic and the source columns it actually uses: a new source column the feature
does not use (pandas' ``__index_level_0__``) changes nothing, on any engine.
"""

from __future__ import annotations

import dis
import enum
import functools
import glob
import hashlib
import logging
import os
import re
import sys
import sysconfig
import types
from datetime import date, time, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from mlforge.definitions.durations import format_duration
from mlforge.definitions.source import is_pattern
from mlforge.manifest import canonical_type, sha256_file, stable_hash

if TYPE_CHECKING:
    from mlforge.definitions.feature import Feature
    from mlforge.definitions.source import Source

__all__ = ["code_text", "definition_hash", "fingerprints_content", "source_fingerprint", "stable_hash"]

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
                return code_text(feature.fn)
            consumed = consumed_output(feature, result)
        except Exception:  # the function needs real data: fall back to its bytecode
            return code_text(feature.fn)
        sql = udfs_named_by_code(ibis.to_sql(consumed, dialect="duckdb"), consumed)
        try:
            return pruned_sql(sql, name, schema)
        except Exception:  # sqlglot cannot qualify this query: hash it as Ibis compiled it
            log.debug("feature %s: hashing the unpruned expression", feature.name, exc_info=True)
            return sql
    return code_text(feature.fn)


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


def udfs_named_by_code(sql: str, expression: Any) -> str:
    """``sql`` with each Python UDF of ``expression`` named by a digest of its code.

    Ibis names a UDF ``<function>_<n>``, counting definitions of that name in the process,
    and the SQL does not show its body: the name would change on a re-definition of the same
    code, and not on a change of the body. A builtin UDF keeps its name: it names the
    backend's function, and its Python body never runs.
    """
    from ibis.expr.operations.udf import AggUDF, InputType, ScalarUDF

    udfs = {type(op): op for op in expression.op().find((ScalarUDF, AggUDF))}
    for udf, op in udfs.items():
        if op.__input_type__ is InputType.BUILTIN:
            continue
        digest = hashlib.sha256(code_text(op.__func__).encode()).hexdigest()[:16]
        pattern = rf"(?<!\w){re.escape(udf.__name__)}(?!\w)"
        sql = re.sub(pattern, f"{op.__func_name__}_{digest}", sql, flags=re.IGNORECASE)
    return sql


#: How far helper functions are followed from a feature function (feature -> helper -> ...)
#: and values into containers; deeper ones are named, not hashed.
MAX_DEPTH = 8

#: Values hashed by their repr: it is stable and shows the whole value.
SIMPLE_VALUES = (type(None), bool, int, float, complex, str, bytes, date, time, timedelta, Decimal, enum.Enum)


def code_text(fn: Any) -> str:
    """The text the definition hash takes for a function: its bytecode, constants and names,
    followed -- only when there are any, so the hashes of self-contained functions stay as
    they were -- by what the code reads beyond itself (see :func:`reads`).

    >>> namespace = {}
    >>> exec("FACTOR = 2\\ndef scaled(x):\\n    return x * FACTOR", namespace)
    >>> before = code_text(namespace["scaled"])
    >>> namespace["FACTOR"] = 3
    >>> code_text(namespace["scaled"]) == before
    False
    """
    text = _bytecode_text(fn)
    function = fn.__func__ if isinstance(fn, types.MethodType) else fn
    if not isinstance(function, types.FunctionType):
        return text
    used = reads(function, depth=0, seen={function.__code__})
    return f"{text}\n-- reads {used!r}" if used else text


def reads(fn: types.FunctionType, depth: int, seen: set[types.CodeType]) -> dict[str, str]:
    """What ``fn``'s output depends on beyond its own bytecode: the module globals its code
    (and its lambdas and comprehensions) reads, its closure cells, each as :func:`value_text`,
    and the constants and names of its nested code.

    Modules are left out: the name a module is read by is in the bytecode's names already,
    and what is read from it is a library's (not hashed). So the hash of the usual Polars or
    PySpark function, which reads only ``pl`` or ``F``, stays what it was.
    """
    code = fn.__code__
    used = {
        name: value_text(fn.__globals__[name], depth + 1, seen)
        for name in sorted(_global_names(code))
        if name in fn.__globals__ and not isinstance(fn.__globals__[name], types.ModuleType)
    }
    for name, cell in zip(code.co_freevars, fn.__closure__ or (), strict=True):
        try:
            contents = cell.cell_contents
        except ValueError:  # a cell not assigned yet
            continue
        used[f"closure {name}"] = value_text(contents, depth + 1, seen)
    nested = [_nested_text(inner) for inner in _nested_code(code)]
    if any(nested):  # the bytecode digest of nested code leaves its constants and names out
        used["nested code"] = " | ".join(nested)
    return used


def value_text(value: Any, depth: int, seen: set[types.CodeType]) -> str:
    """A stable text for a value a feature function reads: simple values and containers of
    them by their repr, user functions by their code (recursively), anything else -- modules,
    classes, library functions, objects -- by its qualified name only."""
    if isinstance(value, enum.Enum):  # by its name: a member's value may print an address
        return f"{type(value).__qualname__}.{value.name}"
    if isinstance(value, SIMPLE_VALUES):
        return repr(value)
    if depth > MAX_DEPTH:
        return _qualified_name(value)
    if isinstance(value, (tuple, list)):
        return f"{type(value).__name__}[{', '.join(value_text(v, depth + 1, seen) for v in value)}]"
    if isinstance(value, (set, frozenset)):
        return f"{type(value).__name__}{{{', '.join(sorted(value_text(v, depth + 1, seen) for v in value))}}}"
    if isinstance(value, dict):
        # sorted: a dict built from a set (dict.fromkeys({...})) has that set's order, which
        # changes from one process to the next
        items = sorted(f"{value_text(k, depth + 1, seen)}: {value_text(v, depth + 1, seen)}" for k, v in value.items())
        return f"dict{{{', '.join(items)}}}"
    if isinstance(value, functools.partial):
        arguments = value_text((value.args, value.keywords), depth + 1, seen)
        return f"partial({value_text(value.func, depth + 1, seen)}, {arguments})"
    if isinstance(value, types.MethodType):  # the bound object by its type (or class) only
        return f"method({value_text(value.__func__, depth, seen)} of {_qualified_name(value.__self__)})"
    if isinstance(value, types.FunctionType) and is_user_code_file(value.__code__.co_filename):
        if value.__code__ in seen:  # recursion, or a helper already hashed above
            return f"def {value.__qualname__}"
        seen.add(value.__code__)
        used = reads(value, depth, seen)
        return f"def {value.__qualname__} {_bytecode_text(value)}" + (f" reads {used!r}" if used else "")
    return _qualified_name(value)


def is_user_code_file(filename: str) -> bool:
    """Whether a code file is the user's, not the standard library's, an installed package's
    or mlforge's own (those are named, never hashed: an upgrade must not change every hash)."""
    if filename.startswith("<"):  # exec, a REPL or a notebook cell; '<frozen ...>' is the stdlib
        return not filename.startswith("<frozen")
    path = os.path.realpath(filename)
    parts = path.split(os.sep)
    return not ("site-packages" in parts or "dist-packages" in parts or path.startswith(_library_dirs()))


@functools.cache
def _library_dirs() -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    dirs = {os.path.realpath(paths[key]) for key in ("stdlib", "platstdlib", "purelib", "platlib")}
    dirs.add(os.path.dirname(os.path.realpath(__file__)))
    return tuple(d + os.sep for d in sorted(dirs))


def _qualified_name(value: Any) -> str:
    """A library's object by its module and name; the user's by its name alone: the module
    a project's file is loaded as is ``__main__`` under ``python features.py`` and
    ``features`` under ``mlforge build``, and a notebook's is ``__main__`` too."""
    if isinstance(value, types.ModuleType):
        return f"module {value.__name__}"
    if isinstance(value, (type, types.FunctionType, types.BuiltinFunctionType)):
        return f"{_library_module(value.__module__)}{value.__qualname__}"
    return f"{_library_module(type(value).__module__)}{type(value).__qualname__} object"


def _library_module(name: str | None) -> str:
    """``name.`` for a module of the standard library or an installed package, else ''."""
    if name in (None, "__main__"):  # a script or a notebook: the user's
        return ""
    module = sys.modules.get(name)
    filename = module.__dict__.get("__file__") if module is not None else None
    if name in sys.builtin_module_names or (isinstance(filename, str) and not is_user_code_file(filename)):
        return f"{name}."
    return ""


def _global_names(code: types.CodeType) -> set[str]:
    return {str(i.argval) for c in (code, *_nested_code(code)) for i in dis.get_instructions(c) if i.opname in ("LOAD_GLOBAL", "LOAD_NAME")}


def _nested_code(code: types.CodeType) -> list[types.CodeType]:
    """The code objects inside ``code`` (lambdas, comprehensions, inner functions), nested ones too."""
    inner = [c for c in code.co_consts if isinstance(c, types.CodeType)]
    return [n for c in inner for n in (c, *_nested_code(c))]


def _nested_text(code: types.CodeType) -> str:
    consts = [_const_text(c) for c in code.co_consts if not isinstance(c, types.CodeType)]
    return f"[{', '.join(consts)}]:{code.co_names!r}" if consts or code.co_names else ""


def _bytecode_text(fn: Any) -> str:
    if isinstance(fn, types.MethodType):
        fn = fn.__func__
    if not isinstance(fn, types.FunctionType):
        return repr(fn)
    code = fn.__code__
    consts = [c if not isinstance(c, types.CodeType) else _code_digest(c) for c in code.co_consts]
    return f"{_code_digest(code)}:[{', '.join(_const_text(c) for c in consts)}]:{code.co_names!r}"


def _const_text(const: Any) -> str:
    """``repr(const)``, with a frozenset's items sorted: their order follows string hashing,
    which changes from one process to the next (``x in {"a", "b"}`` compiles to one)."""
    if isinstance(const, frozenset):
        return f"frozenset({{{', '.join(sorted(_const_text(c) for c in const))}}})" if const else "frozenset()"
    if isinstance(const, tuple) and len(const) != 1:
        return f"({', '.join(_const_text(c) for c in const)})"
    if isinstance(const, tuple):
        return f"({_const_text(const[0])},)"
    return repr(const)


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
