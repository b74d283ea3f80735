"""Reading sources that are not plain Parquet: Delta tables (through delta-rs) and CSV
options; and the early check that a local source exists. Shared by every engine."""

from __future__ import annotations

import glob
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlforge.definitions.names import UNREADABLE_PREFIX
from mlforge.definitions.source import is_pattern
from mlforge.errors import SourceError

if TYPE_CHECKING:
    import ibis.expr.types as ir
    import pyarrow as pa

    from mlforge.definitions.source import Source


def read_delta_arrow(table: Any) -> pa.Table:
    """A whole Delta table as Arrow, read by delta-rs's own (Rust) reader.

    Not ``DeltaTable.to_pyarrow_table()``: that scans through a Python filesystem object,
    and when Arrow's IO threads drop the last file handle while the interpreter is shutting
    down, the process aborts ("terminate called without an active exception").
    """
    import pyarrow as pa
    from deltalake import QueryBuilder

    result = pa.table(QueryBuilder().register("delta_table", table).execute("SELECT * FROM delta_table"))
    # delta-rs returns string views (and may put partition columns elsewhere); the table's
    # own schema says plain strings, in its column order.
    schema = pa.schema(table.schema())
    return result.select(schema.names).cast(schema)


def delta_dataset(table: Any) -> Any:
    """A lazy pyarrow dataset over a Delta table (projection and filter pushdown).

    Local tables are read through Arrow's native filesystem, never through a Python file
    object (see :func:`read_delta_arrow` for why).
    """
    from urllib.parse import unquote, urlparse

    uri = table.table_uri
    if uri.startswith("file://") or "://" not in uri:
        import pyarrow.fs as pafs

        root = unquote(urlparse(uri).path) if uri.startswith("file://") else uri
        return table.to_pyarrow_dataset(filesystem=pafs.SubTreeFileSystem(root, pafs.LocalFileSystem()))
    return table.to_pyarrow_dataset()


def names_itself(location: str) -> bool:
    """Whether a local ``location`` holds glob characters yet names an existing file or
    folder as it is: an engine that globs must be told to read it literally."""
    return "://" not in location and any(ch in location for ch in "*?[") and not is_pattern(location)


def engine_path(location: str) -> str:
    """``location`` as a glob-reading engine (DuckDB) takes it: one that :func:`names_itself`
    escaped (``[`` as ``[[]``), so it names itself only (a directory then as the pattern of
    its Parquet files, which is how DuckDB reads one); any other as it is."""
    if not names_itself(location):
        return location
    return os.path.join(glob.escape(location), "**", "*.parquet") if os.path.isdir(location) else glob.escape(location)


def check_source_exists(source: Source) -> None:
    """Fail early, before any compute, when a local source path does not exist."""
    if source.is_table or source.is_remote:
        return
    location = source.location
    if is_pattern(location):
        if not glob.glob(location):
            raise SourceError(f"no files match source {location!r}", fix="check the glob pattern and the working directory")
        return
    if not Path(location).exists():
        raise SourceError(
            f"source file {location!r} does not exist",
            where=f"working directory {Path.cwd()}",
            fix="check the path (relative paths are resolved from the project directory)",
        )


def csv_files(location: str) -> list[str]:
    """The files of a local CSV source: the file itself, a directory's ``*.csv`` files or a
    glob's matches, in name order (a remote location is passed through as it is)."""
    if "://" in location:
        return [location]
    if is_pattern(location):
        return sorted(glob.glob(location))
    if Path(location).is_dir():
        files = sorted(str(p) for p in Path(location).glob("*.csv"))
        if not files:
            raise SourceError(
                f"CSV source directory {location!r} holds no *.csv file",
                fix="point the source at a CSV file, or put the files in the directory",
            )
        return files
    return [location]


def is_fixed_offset(zone: str | None) -> bool:
    """Whether an Arrow time zone is a fixed offset (``+05:30``), which pandas writes for
    ISO texts with offsets and which Polars cannot read (it knows zone names only)."""
    return bool(zone) and zone[0] in "+-"


def fixed_offset_columns(location: str) -> list[str]:
    """The timestamp columns of a local Parquet source (its first file's footer) whose time
    zone is a fixed offset; remote sources are not inspected."""
    import pyarrow as pa

    schema = first_file_schema(location)
    if schema is None:
        return []
    return [f.name for f in schema if pa.types.is_timestamp(f.type) and is_fixed_offset(f.type.tz)]


def mark_unreadable_columns(location: str, table: ir.Table) -> ir.Table:
    """``table`` with the columns the engine read under other names renamed to
    :data:`~mlforge.definitions.names.UNREADABLE_PREFIX` + their own name.

    DuckDB resolves names without case and needs them non-empty and distinct: of ``amount``
    and ``Amount`` it reads the second as ``Amount_1``, an empty name as ``C3``. Stored so,
    a column would carry a name nobody gave (E5). Marked, an unused one is dropped like any
    other, and one that reaches a feature's output is refused before compute
    (:func:`~mlforge.definitions.names.check_column_name`). Remote sources are not inspected.
    """
    from collections import Counter

    schema = first_file_schema(location)
    if schema is None:
        return table
    columns = list(table.columns)
    present = Counter(columns)
    renames: dict[str, str] = {}
    for i, name in enumerate(schema.names):
        if present[name] > 0:
            present[name] -= 1
            continue
        read_as = columns[i] if i < len(columns) else None  # the engine keeps the file's column order
        if read_as is None or read_as in schema.names:
            raise SourceError(
                f"cannot tell under which name the engine read column {name!r} of source {location!r}",
                where=f"source {location!r}",
                fix="rename the source's columns so that no name is empty, repeated or the same as another but for case",
            )
        renames[UNREADABLE_PREFIX + name] = read_as
    return table.rename(renames) if renames else table


def mark_unreadable_names(table: pa.Table, *, fold_case: bool) -> pa.Table:
    """An Arrow table read by mlforge itself (a CSV source) with the names the engine cannot
    read as they are -- empty (pandas' ``to_csv`` writes its index under one), holding a
    NUL, or, for an engine that folds case (``fold_case``), the same as an earlier one but
    for case -- renamed to
    :data:`~mlforge.definitions.names.UNREADABLE_PREFIX` + the name (a NUL written ``\\0``),
    as :func:`mark_unreadable_columns` does for what an engine read. Unused, such a column is
    dropped like any other; in a feature's output it is refused before compute.
    """
    seen: set[str] = set()
    names = []
    for name in table.column_names:
        if not name or "\x00" in name or (fold_case and name.lower() in seen):
            name = UNREADABLE_PREFIX + name.replace("\x00", "\\0")
        seen.add(name.lower())
        names.append(name)
    return table.rename_columns(names) if names != table.column_names else table


def first_file_schema(location: str) -> pa.Schema | None:
    """The Arrow schema of a local Parquet source's first file; ``None`` for a remote one."""
    import pyarrow.parquet as pq

    if "://" in location:
        return None
    if is_pattern(location):
        matches = sorted(glob.glob(location))
        first = matches[0] if matches else None
    elif Path(location).is_dir():
        first = next(iter(sorted(str(p) for p in Path(location).rglob("*.parquet"))), None)
    else:
        first = location
    return None if first is None else pq.read_schema(first)


def arrow_csv_options(fmt: Any) -> dict[str, Any]:
    import pyarrow.csv as pacsv

    read = pacsv.ReadOptions(skip_rows=fmt.skip_rows, autogenerate_column_names=not fmt.has_header)
    parse = pacsv.ParseOptions(delimiter=fmt.delimiter, quote_char=fmt.quote_char or False)
    convert_kwargs: dict[str, Any] = {"strings_can_be_null": True}
    if fmt.null_values is not None:
        # The markers given are added to the empty field, which stays null: otherwise one
        # empty cell would turn a column of numbers into text.
        convert_kwargs["null_values"] = list(dict.fromkeys(["", *fmt.null_values]))
    convert = pacsv.ConvertOptions(**convert_kwargs)
    return {"read_options": read, "parse_options": parse, "convert_options": convert}
