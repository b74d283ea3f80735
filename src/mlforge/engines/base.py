"""The engine protocol: connect, read, a few portable primitives, and capabilities.

An engine wraps one Ibis backend. The compiler asks an engine for the handful of
operations whose spelling differs between backends (epoch seconds, SHA-256, string
timestamp parsing) and checks its capabilities; everything else is plain Ibis.
"""

from __future__ import annotations

import logging
from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar

from mlforge.errors import EngineError, SourceError

if TYPE_CHECKING:
    import ibis.expr.types as ir
    import pyarrow as pa

    from mlforge.definitions.source import Source

log = logging.getLogger(__name__)

#: Capabilities an engine may declare.
CAPABILITIES: dict[str, str] = {
    "window_functions": "over() window functions",
    "asof_join": "correct native as-of joins",
    "sha256": "SHA-256 hex digests in the engine (surrogate keys)",
    "native_frames": "feature functions annotated with the engine's native frame type",
    "delta_sources": "reading Delta Lake sources",
    "distributed": "scales past one machine",
}


class Engine:
    """Base class of the DuckDB, Polars and PySpark engines."""

    name: ClassVar[str] = "base"
    capabilities: ClassVar[frozenset[str]] = frozenset()
    native_frame: ClassVar[str | None] = None

    @cached_property
    def con(self) -> Any:
        """The Ibis backend connection, created on first use."""
        return self._connect()

    def _connect(self) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def supports(self, capability: str) -> bool:
        return capability in self.capabilities

    def is_interrupt(self, exc: BaseException) -> bool:
        """Whether ``exc`` is this engine's answer to Ctrl-C (SIGINT) during a query, which
        must stop the whole build rather than fail one feature."""
        return isinstance(exc, KeyboardInterrupt)

    # -- reading -----------------------------------------------------------------
    def read_source(self, source: Source) -> ir.Table:
        """Read a source as an Ibis table bound to this engine."""
        from mlforge.definitions.source import CSVFormat, DeltaFormat

        check_source_exists(source)
        fmt = source.format
        try:
            if source.is_table:
                return self._read_catalog_table(source.location)
            if isinstance(fmt, DeltaFormat):
                return self._read_delta(source.location, fmt.version)
            if isinstance(fmt, CSVFormat):
                return self._read_csv(source.location, fmt)
            table = self._read_parquet(source.location)
            if fmt is not None and fmt.columns:
                missing = [c for c in fmt.columns if c not in table.columns]
                if missing:
                    raise SourceError(f"source {source.location!r} has no columns {missing}", fix=f"available: {list(table.columns)}")
                table = table.select(*fmt.columns)
            return table
        except SourceError:
            raise
        except Exception as exc:
            raise SourceError(
                f"cannot read source {source.location!r}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
                fix="check the path, the format and that the file is not corrupt",
            ) from exc

    def _read_parquet(self, location: str) -> ir.Table:
        return self.con.read_parquet(location)

    def read_parquet_files(self, files: list[str]) -> ir.Table:
        """Read a list of Parquet files as one table."""
        return self.con.read_parquet(files)

    def _read_csv(self, location: str, fmt: Any) -> ir.Table:
        import pyarrow.csv as pacsv

        table = pacsv.read_csv(location, **arrow_csv_options(fmt))
        return self.from_arrow(table)

    def _read_delta(self, location: str, version: int | None) -> ir.Table:
        from deltalake import DeltaTable

        return self.from_arrow(read_delta_arrow(DeltaTable(location, version=version)))

    def _read_catalog_table(self, name: str) -> ir.Table:
        raise EngineError(
            f"engine {self.name!r} cannot read the catalog table {name!r}",
            fix="use engine='pyspark' with a Unity Catalog session, or point the Source at files",
        )

    def from_arrow(self, table: pa.Table, name: str | None = None) -> ir.Table:
        import ibis

        return self.con.create_table(name or _temp_name(), table, temp=True) if self._create_temp_tables else ibis.memtable(table)

    _create_temp_tables: ClassVar[bool] = True

    # -- portable primitives ------------------------------------------------------
    def epoch_seconds(self, col: ir.TimestampValue) -> ir.IntegerValue:
        """Whole seconds since the epoch as int64, floored (Ibis's own is int32)."""
        import ibis

        return col.delta(ibis.timestamp("1970-01-01 00:00:00"), unit="second").cast("int64")

    def sha256_hex(self, col: ir.StringValue) -> ir.StringValue:
        return col.hexdigest("sha256")

    def parse_timestamp(self, col: ir.StringValue, fmt: str) -> ir.TimestampValue:
        return col.as_timestamp(fmt)

    def to_utc_naive(self, col: ir.TimestampValue) -> ir.TimestampValue:
        """Convert a zoned timestamp to UTC wall time without zone (sessions run in UTC)."""
        return col.cast("timestamp")

    # -- native frames -------------------------------------------------------------
    def to_native(self, table: ir.Table) -> Any:
        raise EngineError(f"engine {self.name!r} has no native frame type", fix="annotate the feature function without a frame type")

    def from_native(self, frame: Any) -> ir.Table:
        raise EngineError(f"engine {self.name!r} has no native frame type", fix="return an Ibis table")

    # -- execution -----------------------------------------------------------------
    def to_arrow(self, expr: ir.Table) -> pa.Table:
        return expr.to_pyarrow()

    def write_parquet(self, expr: ir.Table, data_dir: str, partition_by: str | None = None) -> None:
        """Write ``expr`` as Parquet into ``data_dir``.

        With ``partition_by``, one file ``<value>.parquet`` per value of that column, which
        is not written into the files (see :func:`flatten_partitions`).
        """
        write_parquet_with_arrow(self, expr, data_dir, partition_by)

    def close(self) -> None:
        """Release engine resources (sessions, connections)."""


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


def _temp_name() -> str:
    import uuid

    return f"mlforge_{uuid.uuid4().hex[:12]}"


def check_source_exists(source: Source) -> None:
    """Fail early, before any compute, when a local source path does not exist."""
    import glob
    from pathlib import Path

    if source.is_table or source.is_remote:
        return
    location = source.location
    if any(ch in location for ch in "*?["):
        if not glob.glob(location):
            raise SourceError(f"no files match source {location!r}", fix="check the glob pattern and the working directory")
        return
    if not Path(location).exists():
        raise SourceError(
            f"source file {location!r} does not exist",
            where=f"working directory {Path.cwd()}",
            fix="check the path (relative paths are resolved from the project directory)",
        )


def arrow_csv_options(fmt: Any) -> dict[str, Any]:
    import pyarrow.csv as pacsv

    read = pacsv.ReadOptions(skip_rows=fmt.skip_rows, autogenerate_column_names=not fmt.has_header)
    parse = pacsv.ParseOptions(delimiter=fmt.delimiter, quote_char=fmt.quote_char or False)
    convert_kwargs: dict[str, Any] = {"strings_can_be_null": True}
    if fmt.null_values is not None:
        convert_kwargs["null_values"] = list(fmt.null_values)
    convert = pacsv.ConvertOptions(**convert_kwargs)
    return {"read_options": read, "parse_options": parse, "convert_options": convert}


def write_parquet_with_arrow(engine: Engine, expr: Any, data_dir: str, partition_by: str | None = None) -> None:
    """Write ``expr`` via Arrow (engines without a native partitioned writer)."""
    import pyarrow.parquet as pq

    table = engine.to_arrow(expr)
    if partition_by is None:
        pq.write_table(table, f"{data_dir}/part-00000.parquet", compression="zstd", row_group_size=ROW_GROUP_ROWS)
        return
    write_partitioned_batches(table.to_batches(), table.schema, data_dir, partition_by)


#: Rows per Parquet row group of a stored feature.
ROW_GROUP_ROWS = 1 << 20
#: Rows a partition buffers before it writes them as a row group: with one buffer per month
#: open at once, this bounds the writer's memory whatever the size of the result.
PARTITION_BUFFER_ROWS = 1 << 18


def write_partitioned_batches(batches: Any, schema: pa.Schema, data_dir: str, partition_by: str) -> None:
    """Write a stream of record batches as one file per value of ``partition_by``.

    Each file gets its rows in stream order (a sorted stream gives sorted files); the
    partition column is not written. Memory stays bounded: a partition's rows are written
    once ``PARTITION_BUFFER_ROWS`` of them have arrived, and at most
    ``_WRITES_IN_FLIGHT`` such writes wait for the writer thread.
    """
    from collections import deque
    from concurrent.futures import Future, ThreadPoolExecutor

    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    index = schema.get_field_index(partition_by)
    stored = schema.remove(index)
    writers: dict[Any, pq.ParquetWriter] = {}
    pending: dict[Any, list[pa.RecordBatch]] = {}
    pending_rows: dict[Any, int] = {}
    in_flight: deque[Future[None]] = deque()
    last_write: dict[Any, Future[None]] = {}
    # Writer threads compress and write (pyarrow releases the GIL) while this thread fetches
    # and splits the next batches; different files are written in parallel, and each write
    # of a file waits for the previous one, so every file keeps its rows in stream order.
    pool = ThreadPoolExecutor(max_workers=_WRITER_THREADS, thread_name_prefix="mlforge-writer")

    def write_after(previous: Future[None] | None, writer: pq.ParquetWriter, rows: pa.Table) -> None:
        if previous is not None:
            previous.result()
        writer.write_table(rows, row_group_size=ROW_GROUP_ROWS)

    def flush(value: Any) -> None:
        rows = pa.Table.from_batches(pending.pop(value), stored)
        pending_rows.pop(value)
        if value not in writers:
            writers[value] = pq.ParquetWriter(f"{data_dir}/{partition_file(value)}", stored, compression="zstd")
        # A queued write's predecessor was queued earlier, so it is running or done: no
        # worker ever waits for a write that no worker has picked up.
        last_write[value] = pool.submit(write_after, last_write.get(value), writers[value], rows)
        in_flight.append(last_write[value])
        while len(in_flight) > _WRITES_IN_FLIGHT:
            in_flight.popleft().result()

    try:
        for batch in batches:
            keys = batch.column(index)
            rest = batch.drop_columns([partition_by])
            values = pc.unique(keys).to_pylist()
            for value in values:
                part = rest if len(values) == 1 else rest.filter(pc.is_null(keys) if value is None else pc.equal(keys, value))
                pending.setdefault(value, []).append(part)
                pending_rows[value] = pending_rows.get(value, 0) + part.num_rows
                if pending_rows[value] >= PARTITION_BUFFER_ROWS:
                    flush(value)
        for value in list(pending):
            flush(value)
        while in_flight:
            in_flight.popleft().result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        for writer in writers.values():
            writer.close()


#: Threads compressing and writing partition files, and the writes queued for them before
#: the stream waits: together they bound the buffered rows to a few partition buffers.
_WRITER_THREADS = 2
_WRITES_IN_FLIGHT = 3


def partition_file(value: Any) -> str:
    """File name of one partition: ``2024-03.parquet``; rows without a timestamp go to
    ``untimed.parquet`` (not ``_...``: Spark and Hadoop readers skip such files)."""
    return f"{UNTIMED}.parquet" if value is None or value == "__HIVE_DEFAULT_PARTITION__" else f"{value}.parquet"


#: Name of the month file holding rows whose timestamp is null.
UNTIMED = "untimed"


def flatten_partitions(root: str, data_dir: str, column: str) -> None:
    """Move hive-style output ``root/<column>=<value>/*.parquet`` to ``data_dir/<value>.parquet``.

    Each partition directory must hold exactly one file (writers are asked for that).
    """
    import os
    from urllib.parse import unquote

    for entry in sorted(os.listdir(root)):
        if not entry.startswith(f"{column}="):
            continue
        value = unquote(entry.split("=", 1)[1])
        files = sorted(f for f in os.listdir(os.path.join(root, entry)) if f.endswith(".parquet"))
        if len(files) != 1:
            raise RuntimeError(f"expected one file in partition {entry}, found {files}")
        os.replace(os.path.join(root, entry, files[0]), os.path.join(data_dir, partition_file(None if value == "__HIVE_DEFAULT_PARTITION__" else value)))
