"""Caller frames: which kind a frame is, its columns as Arrow, and results in the same kind (P1)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from mlforge.engines.sources import is_fixed_offset
from mlforge.errors import RetrievalError
from mlforge.retrieval.specs import missing_key

if TYPE_CHECKING:
    import pyarrow as pa

    from mlforge.engines.base import Engine
    from mlforge.retrieval.specs import Plan


def is_entity_rows(frame: Any) -> bool:
    """Entity rows as Feast users pass them to online reads: a non-empty list of dicts."""
    return isinstance(frame, list) and bool(frame) and all(isinstance(row, dict) for row in frame)


def entity_rows_table(rows: list[dict[str, Any]]) -> pa.Table:
    """Entity rows as a PyArrow table, each column typed from its values."""
    import pyarrow as pa

    try:
        return pa.Table.from_pylist(rows)
    except (pa.ArrowException, TypeError, ValueError) as exc:
        raise RetrievalError(f"the entity rows do not make a table: {exc}", fix="give each key the same type in every row (e.g. all user_id ints), or pass a frame") from None


def frame_kind(frame: Any) -> str:
    module = type(frame).__module__.split(".")[0]
    kinds = {"pandas": "pandas", "polars": "polars", "pyarrow": "arrow", "ibis": "ibis", "pyspark": "spark"}
    if module in kinds and type(frame).__name__ in _FRAME_CLASSES[module]:
        return kinds[module]
    fix = "pass a pandas, Polars or PyArrow frame, an Ibis table or a Spark DataFrame"
    if isinstance(frame, list | dict):  # Feast's entity_rows
        fix += "; rows as dicts become one with `pyarrow.Table.from_pylist(rows)` (columns as lists: `pyarrow.table(columns)`), or pandas.DataFrame(...) (get_online_features takes a non-empty list of dicts as it is)"
    raise RetrievalError(f"entity_df is a {type(frame).__name__}, not a frame mlforge reads", fix=fix)


#: The frame classes each library's entity_df may be (a pandas Series or a Polars Series is not one).
_FRAME_CLASSES = {
    "pandas": {"DataFrame"},
    "polars": {"DataFrame", "LazyFrame"},
    "pyarrow": {"Table", "RecordBatch"},
    "ibis": {"Table"},
    "pyspark": {"DataFrame"},
}


def bound_to(frame: Any, engine: Engine, kind: str) -> bool:
    if kind == "spark":
        return True
    try:
        return frame._find_backend() is engine.con
    except Exception:  # an unbound memtable runs anywhere
        return False


def materialize_columns(frame: Any, kind: str, columns: Sequence[str] | None = None) -> pa.Table:
    """Some (or all) columns of a local frame as a PyArrow table."""
    import pyarrow as pa

    if kind == "pandas":
        try:
            return pa.Table.from_pandas(frame if columns is None else frame[list(columns)], preserve_index=False)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:  # e.g. an object column holding ints and texts
            raise RetrievalError(
                f"entity_df has a column whose values are not of one type: {exc}",
                where="entity_df",
                fix="give each column one type, e.g. df['user_id'] = df['user_id'].astype(str)",
            ) from None
        except ValueError:  # pandas refuses a frame with a column twice
            if not frame.columns.is_unique:
                twice = sorted({str(c) for c in frame.columns[frame.columns.duplicated()]})
                raise RetrievalError(
                    f"entity_df has the column(s) {twice} more than once",
                    where="entity_df",
                    fix="keep one column of each name",
                ) from None
            raise
    if kind == "polars":
        return (frame if columns is None else frame.select(list(columns))).to_arrow()
    return frame if columns is None else frame.select(list(columns))


def arrow_schema(frame: Any, kind: str) -> pa.Schema:
    """A frame's columns as an Arrow schema, without reading its rows (a lazy or engine
    frame is not run)."""
    import pyarrow as pa

    if kind == "arrow":
        return frame.schema
    if kind == "pandas":
        return materialize_columns(frame.head(0), kind).schema
    if kind == "polars":
        return (frame.head(0).collect() if type(frame).__name__ == "LazyFrame" else frame.head(0)).to_arrow().schema
    if kind == "ibis":
        return frame.schema().to_pyarrow()
    from pyspark.sql.pandas.types import to_arrow_schema

    return pa.schema(to_arrow_schema(frame.schema))


#: Rows of a Spark ``entity_df`` that may be brought to the driver when the work cannot
#: run in Spark (another engine was asked for, or an online lookup); past it, an error.
#: ``MLFORGE_SPARK_DRIVER_ROWS`` overrides it.
SPARK_DRIVER_ROWS = 1_000_000


def spark_driver_rows() -> int:
    """The limit in force: ``MLFORGE_SPARK_DRIVER_ROWS`` or :data:`SPARK_DRIVER_ROWS`."""
    value = os.environ.get("MLFORGE_SPARK_DRIVER_ROWS")
    if value is None:
        return SPARK_DRIVER_ROWS
    try:
        return int(value)
    except ValueError:
        raise RetrievalError(f"MLFORGE_SPARK_DRIVER_ROWS={value!r} is not a number of rows", fix="set it to an integer, e.g. 1000000") from None


def spark_to_arrow(frame: Any) -> pa.Table:
    """A Spark ``entity_df`` on the driver, as Arrow: a documented choice, bounded.

    Counting ``limit + 1`` rows is one Spark job that returns a number; only a frame within
    the limit is collected (``toArrow()``), so the driver never receives an unbounded result.
    """
    limit = spark_driver_rows()
    rows = frame.limit(limit + 1).count()
    if rows > limit:
        raise RetrievalError(
            f"entity_df is a Spark DataFrame of more than {limit:,} rows: running this outside Spark would collect them to the driver",
            fix="run it in Spark: use engine='pyspark' (or leave engine unset so Spark labels stay in Spark); "
            "for online lookups, look up fewer entities at a time; or raise MLFORGE_SPARK_DRIVER_ROWS",
        )
    return frame.toArrow()


def local_view(frame: Any, kind: str) -> tuple[Any, str, Any]:
    """A frame that is executed once, its kind, and how to turn a result back into ``kind``.

    Lazy inputs (Ibis, Spark, Polars LazyFrame) are executed here exactly once, so the
    feature columns are appended to the very rows they were computed for. A Spark frame
    comes here only when the work cannot run in Spark, and then within
    :func:`spark_driver_rows` (see docs/spark.md).
    """
    if kind == "ibis":
        import ibis

        return frame.to_pyarrow(), "arrow", ibis.memtable
    if kind == "spark":
        session = frame.sparkSession
        return spark_to_arrow(frame), "arrow", session.createDataFrame
    if kind == "polars" and not hasattr(frame, "to_arrow"):
        return frame.collect(), "polars", lambda out: out.lazy()
    return frame, kind, lambda out: out


def datetime_columns(frame: Any, kind: str) -> list[str]:
    """The columns of a caller's frame holding datetimes or dates, read from its schema."""
    if kind == "pandas":
        import pandas as pd

        return [str(c) for c, dtype in frame.dtypes.items() if pd.api.types.is_datetime64_any_dtype(dtype)]
    if kind == "polars":
        schema = frame.collect_schema() if hasattr(frame, "collect_schema") else frame.schema
        return [c for c, dtype in schema.items() if str(dtype).startswith(("Datetime", "Date"))]
    if kind == "arrow":
        import pyarrow as pa

        return [f.name for f in frame.schema if pa.types.is_timestamp(f.type) or pa.types.is_date(f.type)]
    if kind == "ibis":
        return [c for c, dtype in frame.schema().items() if dtype.is_timestamp() or dtype.is_date()]
    if kind == "spark":
        return [c for c, dtype in frame.dtypes if dtype.startswith(("timestamp", "date"))]
    return []


def frame_columns(frame: Any, kind: str) -> list[str]:
    if kind == "arrow":
        return list(frame.column_names)
    return list(frame.columns)


def finish(frame: Any, kind: str, features: pa.Table) -> Any:
    """A local ``frame`` with the feature columns appended, as the same kind of frame."""
    if kind == "pandas":
        import pyarrow as pa

        values = features.to_pandas()
        arrays = {c: values[c].array for c in features.column_names}
        for name in _inexact_as_float(features):
            import pandas as pd

            wide = "UInt64" if pa.types.is_unsigned_integer(features.column(name).type) else "Int64"  # 2**63 and past: unsigned
            arrays[name] = pd.array(features.column(name).to_pylist(), dtype=wide)
        return frame.assign(**arrays)
    if kind == "polars":
        import polars as pl

        return frame.hstack(pl.DataFrame(features).get_columns()) if features.num_columns else frame
    for name in features.column_names:
        frame = frame.append_column(name, features.column(name))
    return frame


#: The largest integer every float64 holds exactly.
_FLOAT_EXACT = 2**53


def _inexact_as_float(features: pa.Table) -> list[str]:
    """Integer columns with nulls (which pandas turns into float64) holding a value past
    2**53, which float64 would round: those come back as pandas' nullable Int64 (UInt64 for
    an unsigned column) instead."""
    import pyarrow as pa
    import pyarrow.compute

    pc: Any = pyarrow.compute  # functions generated at import time: no stubs to check

    names = []
    for name, column in zip(features.column_names, features.columns, strict=True):
        if pa.types.is_integer(column.type) and column.null_count:
            low, high = pc.min(column).as_py(), pc.max(column).as_py()
            if low is not None and max(-low, high) > _FLOAT_EXACT:
                names.append(name)
    return names


def _floor_to_micros(column: Any) -> Any:
    """Nanosecond timestamps as microseconds, rounded down: an instant 100 ns before the
    epoch is 1 µs before it, never the epoch itself (DuckDB's own cast rounds negative
    instants toward zero, and a label would then see an event after it, P2). Done in Arrow,
    before the labels reach the engine: DuckDB truncates a zoned nanosecond column as it
    takes it in, where no expression can floor it (sources: ``prepare.floor_to_micros``)."""
    import numpy
    import pyarrow as pa
    import pyarrow.compute

    pc: Any = pyarrow.compute  # functions generated at import time: no stubs to check
    ticks = pc.cast(column, pa.int64())
    lowest = pc.min(ticks).as_py()
    if lowest is None or lowest >= 0:  # after 1970 truncation is rounding down
        return column
    valid = pc.is_valid(ticks).to_numpy(zero_copy_only=False)
    floored = numpy.floor_divide(pc.fill_null(ticks, 0).to_numpy(zero_copy_only=False), 1000)
    return pa.array(floored, pa.int64(), mask=~valid).cast(pa.timestamp("us", tz=column.type.tz))


def plain_columns(arrow: pa.Table, plans: list[Plan], timestamp: str | None) -> pa.Table:
    """Decode dictionary (categorical) columns and type all-null ones (an empty or all-None
    pandas column), so every engine can join them with the stored keys."""
    import pyarrow as pa

    stored = {k: p.table[k].type().to_pyarrow() for p in plans for k in p.keys}
    for i, column in enumerate(arrow.columns):
        name, dtype = arrow.column_names[i], column.type
        if pa.types.is_dictionary(dtype):
            arrow = arrow.set_column(i, name, column.cast(dtype.value_type))
        elif pa.types.is_timestamp(dtype) and is_fixed_offset(dtype.tz):  # the same instants, in a zone Polars knows
            arrow = arrow.set_column(i, name, column.cast(pa.timestamp(dtype.unit, tz="UTC")))
            column, dtype = arrow.column(i), arrow.schema.field(i).type
        if pa.types.is_timestamp(dtype) and dtype.unit == "ns":
            arrow = arrow.set_column(i, name, _floor_to_micros(column))
        elif pa.types.is_null(dtype):
            target = pa.timestamp("us") if name == timestamp else stored.get(name, pa.string())
            arrow = arrow.set_column(i, name, column.cast(target))
    return arrow


# -- online lookups -----------------------------------------------------------------------
def online_key(row: dict[str, Any], plan: Plan) -> dict[str, Any] | None:
    from mlforge.prepare import surrogate_key_value

    key: dict[str, Any] = {}
    for name in plan.keys:
        if name in row:
            key[name] = row[name]
            continue
        entity = next((e for e in plan.entities if e.join_key == name and e.from_columns and all(c in row for c in e.from_columns)), None)
        if entity is None:
            raise missing_key(plan, name, list(row))
        key[name] = surrogate_key_value(*[row[c] for c in entity.from_columns or ()])
    return None if any(v is None for v in key.values()) else key


def check_online_key_types(plans: Sequence[Plan], schema: pa.Schema) -> None:
    """An online lookup refuses the key columns a point-in-time join refuses (P1, O1):
    of another kind than the stored key (a float column for an integer key, as pandas makes
    of an integer column with a gap), not merely another width or time zone."""
    import ibis.expr.datatypes as dt
    import pyarrow as pa

    from mlforge.manifest import canonical_type

    for plan in plans:
        for key in plan.keys:
            stored = plan.metadata.schema.get(key)
            if stored is None or key not in schema.names or pa.types.is_null(schema.field(key).type):
                continue
            given = canonical_type(dt.dtype(schema.field(key).type))
            if _key_kind(given) != _key_kind(stored):
                raise RetrievalError(f"key column {key!r} is {given} in entity_df but {stored} in feature {plan.name!r}", fix=f"cast entity_df[{key!r}] to {stored}")


def _key_kind(canonical: str) -> str:
    """A canonical type without the width or time zone that do not change a key's value."""
    return "integer" if canonical.startswith(("int", "uint")) else canonical.split("[", 1)[0]


def typed_array(values: list[Any], canonical: str | None, exact: str | None = None, *, column: str = "") -> pa.Array:
    """Online values as an Arrow column of the stored type (O2): ``exact``, the type in the
    version's files (a record's ``types``), else the ``canonical`` one; a map's entries
    arrive as ``[key, value]`` lists and become the pairs Arrow takes."""
    import pyarrow as pa

    from mlforge.manifest import arrow_schema, exact_arrow_type

    wanted = [exact_arrow_type(exact) if exact else None, arrow_schema({"v": canonical}).field("v").type if canonical is not None else None]
    for arrow_type in (t for t in wanted if t is not None):
        try:
            return pa.array(_map_pairs(values) if pa.types.is_map(arrow_type) else values, type=arrow_type)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):  # values that do not fit it: the next one
            continue
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
        raise RetrievalError(
            f"the online values of column {column!r} cannot be read back as its stored type {exact or canonical}: {exc}",
            fix="publish the feature again (`mlforge build --online`); if that does not help, please report it",
        ) from None


def _map_pairs(values: list[Any]) -> list[Any]:
    return [None if v is None else list(v.items()) if isinstance(v, dict) else [tuple(entry) for entry in v] for v in values]


def arrow_table(columns: dict[str, pa.Array], rows: int) -> pa.Table:
    import pyarrow as pa

    return pa.table(columns) if columns else pa.table({}).slice(0, rows)
