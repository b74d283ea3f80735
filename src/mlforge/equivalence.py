"""Whether a rebuild's data is the data already stored (rule S2): canonical Arrow types and
a float tolerance.

Two builds of unchanged inputs can differ in their bytes without differing in their data.
Engines spell the same column type differently (Polars writes ``large_string`` where DuckDB
writes ``string``; timestamps in ns or µs; ``int32`` or ``int64``), and parallel float sums
differ in the last bits from run to run, engine to engine and plan to plan (up to 9.1e-13 in
426 rows was seen). So two tables are *equivalent* when, cast to canonical types and sorted
the same way, every value is equal, floats within :data:`FLOAT_RTOL` of the larger
magnitude (or :data:`FLOAT_ATOL` near zero) -- the tolerance engines must meet anyway (W8).
A real change of one value beyond that is a difference.

>>> import pyarrow as pa
>>> old = pa.table({"k": [1, 2], "v": [0.1 + 0.2, 1.0]})
>>> tables_equivalent(old, pa.table({"k": [2, 1], "v": [1.0, 0.3]}), ["k"])
True
>>> tables_equivalent(old, pa.table({"k": [1, 2], "v": [0.3, 1.001]}), ["k"])
False
"""

from __future__ import annotations

import os
from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING, Any

from mlforge.engines.monthfiles import UNTIMED, file_start

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["FLOAT_ATOL", "FLOAT_RTOL", "canonical_arrow_type", "files_equivalent", "tables_equivalent"]

#: Floats are equal when they differ by at most this fraction of the larger magnitude (W8).
FLOAT_RTOL = 1e-9
#: ... or by at most this much, for values near zero (a sum that cancels to ~1e-17).
FLOAT_ATOL = 1e-12


def canonical_arrow_type(dtype: pa.DataType) -> pa.DataType:
    """One spelling per kind of column, whatever engine wrote it.

    >>> import pyarrow as pa
    >>> canonical_arrow_type(pa.large_list(pa.dictionary(pa.int8(), pa.large_string())))
    ListType(list<item: string>)
    >>> canonical_arrow_type(pa.timestamp("ns", tz="UTC"))
    TimestampType(timestamp[us, tz=UTC])
    """
    import pyarrow as pa

    types = pa.types
    if types.is_dictionary(dtype):
        return canonical_arrow_type(dtype.value_type)
    if types.is_string(dtype) or types.is_large_string(dtype) or types.is_string_view(dtype):
        return pa.string()
    if types.is_binary(dtype) or types.is_large_binary(dtype) or types.is_binary_view(dtype):
        return pa.binary()
    if types.is_integer(dtype):
        return pa.int64()
    if types.is_floating(dtype):
        return pa.float64()
    if types.is_timestamp(dtype):
        return pa.timestamp("us", tz=dtype.tz)
    if types.is_date(dtype):
        return pa.date32()
    if types.is_time(dtype):
        return pa.time64("us")
    if types.is_list(dtype) or types.is_large_list(dtype) or types.is_list_view(dtype) or types.is_large_list_view(dtype):
        return pa.list_(canonical_arrow_type(dtype.value_type))
    if types.is_struct(dtype):
        return pa.struct([pa.field(f.name, canonical_arrow_type(f.type)) for f in dtype])
    if types.is_map(dtype):
        return pa.map_(canonical_arrow_type(dtype.key_type), canonical_arrow_type(dtype.item_type))
    return dtype


def canonical_table(table: pa.Table) -> pa.Table:
    """``table`` with every column cast to its canonical type (timestamps truncated to µs)."""
    import pyarrow as pa

    schema = pa.schema([pa.field(f.name, canonical_arrow_type(f.type)) for f in table.schema])
    return table.cast(schema, safe=False)


def tables_equivalent(old: pa.Table, new: pa.Table, order: Sequence[str]) -> bool:
    """Whether ``new`` holds the rows of ``old``, in any order, with canonical types and
    floats within the tolerance. ``order`` names the columns that identify a row (keys and
    timestamp); the other columns break ties."""
    if old.num_rows != new.num_rows or sorted(old.column_names) != sorted(new.column_names):
        return False
    old = canonical_table(old).select(new.column_names)
    new = canonical_table(new)
    if old.schema != new.schema:
        return False
    sort_keys = [(name, "ascending") for name in _sort_columns(new.schema, order)]
    old, new = old.sort_by(sort_keys), new.sort_by(sort_keys)
    return all(_columns_equivalent(old[name], new[name]) for name in new.column_names)


def files_equivalent(old_files: Sequence[str], new_files: Sequence[str], order: Sequence[str], *, identical: Collection[str] = ()) -> bool:
    """Whether two versions' Parquet files hold equivalent data (see :func:`tables_equivalent`).

    When both versions have the same file names (month files ``YYYY-MM.parquet``), files
    are compared pair by pair, so memory holds one month at a time; names in ``identical``
    (equal digests) are not read. Month files split into parts differently (an incremental
    build beside a full one) are compared month by month. Otherwise all rows are compared
    at once. Row counts from the Parquet footers decide first, without reading data.
    """
    if _row_count(old_files) != _row_count(new_files):
        return False
    old_by_name = {os.path.basename(p): p for p in old_files}
    new_by_name = {os.path.basename(p): p for p in new_files}
    old_months, new_months = _by_month(old_files), _by_month(new_files)
    if len(old_by_name) == len(old_files) and old_by_name.keys() == new_by_name.keys():
        groups = [([old_by_name[n]], [new_by_name[n]]) for n in sorted(new_by_name) if n not in identical]
    elif old_months is not None and new_months is not None and old_months.keys() == new_months.keys():
        groups = [(old_months[m], new_months[m]) for m in sorted(new_months)]
    else:
        groups = [(list(old_files), list(new_files))]
    for old_group, new_group in groups:
        if _row_count(old_group) != _row_count(new_group):
            return False
        if not tables_equivalent(_read(old_group), _read(new_group), order):
            return False
    return True


def _by_month(paths: Sequence[str]) -> dict[str, list[str]] | None:
    """A version's month files and parts grouped by month (``untimed`` on its own), or
    ``None`` when some file is neither."""
    months: dict[str, list[str]] = {}
    for path in paths:
        name = os.path.basename(path)
        if file_start(name) is None and name != f"{UNTIMED}.parquet":
            return None
        months.setdefault(name[:7], []).append(path)
    return months


def _sort_columns(schema: pa.Schema, order: Sequence[str]) -> list[str]:
    """``order`` first, then the other sortable columns, floats last (their noise must not
    decide the order of rows that tie on everything else)."""
    import pyarrow as pa

    sortable = [f for f in schema if not (pa.types.is_nested(f.type) or pa.types.is_null(f.type))]
    leading = [name for name in order if name in schema.names]
    rest = [f.name for f in sortable if f.name not in leading]
    floats = [name for name in rest if pa.types.is_floating(schema.field(name).type)]
    return leading + [name for name in rest if name not in floats] + floats


def _columns_equivalent(old: pa.ChunkedArray, new: pa.ChunkedArray) -> bool:
    import pyarrow as pa
    import pyarrow.compute

    pc: Any = pyarrow.compute  # functions generated at import time: no stubs to check

    if not pa.types.is_floating(new.type):
        return old.equals(new)
    if not pc.all(pc.equal(pc.is_valid(old), pc.is_valid(new))).as_py():
        return False
    scale = pc.max_element_wise(pc.abs(old), pc.abs(new))
    tolerance = pc.max_element_wise(pc.multiply(scale, FLOAT_RTOL), pa.scalar(FLOAT_ATOL))
    close = pc.less_equal(pc.abs(pc.subtract(old, new)), tolerance)
    close = pc.and_(close, pc.and_(pc.is_finite(old), pc.is_finite(new)))  # inf is only equal to itself
    same = pc.or_(pc.or_(pc.equal(old, new), close), pc.and_(pc.is_nan(old), pc.is_nan(new)))
    return pc.all(pc.fill_null(same, True)).as_py()


def _row_count(paths: Sequence[str]) -> int:
    import pyarrow.parquet as pq

    return sum(pq.ParquetFile(p).metadata.num_rows for p in paths)


def _read(paths: Sequence[str]) -> pa.Table:
    import pyarrow as pa
    import pyarrow.parquet as pq

    return pa.concat_tables([canonical_table(pq.ParquetFile(p).read()) for p in paths])
