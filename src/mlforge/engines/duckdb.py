"""DuckDB: the embedded default engine."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar, cast

from mlforge.engines.base import Capability, Engine, ordered, quote_identifier, temp_table_name
from mlforge.engines.monthfiles import ROW_GROUP_ROWS, write_partitioned_batches
from mlforge.engines.sources import delta_dataset

if TYPE_CHECKING:
    import ibis.expr.types as ir


class DuckDBEngine(Engine):
    """Runs Ibis expressions in an in-process DuckDB database.

    >>> DuckDBEngine().supports("window_functions")
    True
    """

    name: ClassVar[str] = "duckdb"
    capabilities: ClassVar[frozenset[Capability]] = frozenset({Capability.WINDOW_FUNCTIONS, Capability.ASOF_JOIN, Capability.SHA256, Capability.DELTA_SOURCES})

    def __init__(
        self,
        database: str = ":memory:",
        threads: int | None = None,
        memory_limit: str | None = None,
        temp_directory: str | None = None,
    ):
        self.database = database
        self.threads = threads or _env_int("MLFORGE_DUCKDB_THREADS")
        self.memory_limit = memory_limit or os.environ.get("MLFORGE_DUCKDB_MEMORY_LIMIT") or default_memory_limit()
        self.temp_directory = temp_directory or os.environ.get("MLFORGE_DUCKDB_TEMP_DIRECTORY")
        self._own_temp: str | None = None

    def _connect(self) -> Any:
        import ibis

        con = ibis.duckdb.connect(self.database)
        # Naive timestamps mean UTC (rule T1); never let the host's zone leak in.
        con.raw_sql("SET TimeZone = 'UTC'")
        # Nothing may be downloaded at run time.
        con.raw_sql("SET autoinstall_known_extensions = false")
        if self.threads:
            con.raw_sql(f"SET threads = {int(self.threads)}")
        # A build's large aggregates and sorts spill to disk past the limit instead of
        # growing to DuckDB's default of 80% of RAM; spill files go to a private temporary
        # directory, never to a ``.tmp`` in the user's project. DuckDB creates that directory
        # only when it first spills and removes it when the connection closes, so a build that
        # never spills, or a process that never calls close(), leaves nothing behind.
        spill = self.temp_directory
        if spill is None:
            spill = self._own_temp = os.path.join(tempfile.gettempdir(), f"mlforge-duckdb-{uuid.uuid4().hex[:16]}")
        con.raw_sql(f"SET temp_directory = '{_quote(spill)}'")
        con.raw_sql(f"SET memory_limit = '{_quote(self.memory_limit)}'")
        return con

    def is_interrupt(self, exc: BaseException) -> bool:
        import duckdb

        # DuckDB turns a SIGINT during a query into "Query interrupted": an
        # InterruptException, or a RuntimeError when the query streams Arrow batches.
        if isinstance(exc, (KeyboardInterrupt, duckdb.InterruptException)):
            return True
        return isinstance(exc, RuntimeError) and str(exc).startswith("Query interrupted")

    def close(self) -> None:
        if self._own_temp is not None:
            shutil.rmtree(self._own_temp, ignore_errors=True)
            self._own_temp = None

    def _read_delta(self, location: str, version: int | None) -> ir.Table:
        # DuckDB's delta extension downloads itself; a pyarrow dataset keeps scans lazy
        # (projection and filter pushdown) and needs nothing from the network.
        from deltalake import DeltaTable

        dataset = delta_dataset(DeltaTable(location, version=version))
        name = temp_table_name()
        self.con.con.register(name, dataset)
        return self.con.table(name)

    def fetch_scalar(self, expr: ir.Scalar) -> Any:
        # Ibis's DuckDB to_pyarrow imports pandas for its result converter (~0.6-1.2 s of a
        # build's wall time when nothing else needs pandas); one value needs no converter.
        self.con._run_pre_execute_hooks(expr)
        row = self.con.raw_sql(self.con.compile(expr)).fetchone()
        return None if row is None else row[0]

    def to_utc_naive(self, col: ir.TimestampValue) -> ir.TimestampValue:
        # DuckDB runs a cast from TIMESTAMPTZ to TIMESTAMP, and calendar parts of a
        # TIMESTAMPTZ, through ICU's time zone code. Casting 10M stored timestamps in a
        # point-in-time join cost ~1.9 s of CPU, and EXTRACT on the 7.5M labels of the
        # 1M-event build ~4.5 s; through the epoch each is ~0.1-0.2 s.
        return _naive_utc(col)

    def month_key(self, col: ir.TimestampValue) -> ir.IntegerValue:
        naive = self.to_utc_naive(col)  # the calendar parts of a naive timestamp skip ICU
        return cast("ir.IntegerValue", naive.year() * 100 + naive.month())

    def write_parquet(self, expr: ir.Table, data_dir: str, partition_by: str | None = None, order: Sequence[str] = ()) -> None:
        from ibis.backends.sql.datatypes import DuckDBType

        # Month files: the month leads the sort, so the stream arrives one month after
        # another and each batch splits into at most a few runs without a sort of its own
        # (at 1M events, ~0.7 s less wall time than splitting an entity-ordered stream).
        # Each file's rows keep the ``order`` asked for.
        expr = ordered(expr, [partition_by, *order] if partition_by is not None and order else order)
        self.con._run_pre_execute_hooks(expr)
        # SUM over BIGINT is HUGEINT in DuckDB while Ibis types it int64 and elides the
        # cast, so integer columns are cast explicitly -- to the declared type, not always
        # BIGINT: an int32 key or min/max keeps int32 (W7).
        # Identifiers go through sqlglot's DuckDB quoting (rule E5): a column name holding
        # a double quote is escaped, never spliced into the query as SQL.
        columns = ", ".join(
            f"CAST({quote_identifier(name)} AS {DuckDBType.to_string(dtype)}) AS {quote_identifier(name)}" if dtype.is_integer() else quote_identifier(name)
            for name, dtype in expr.schema().items()
        )
        query = f"SELECT {columns} FROM ({self.con.compile(expr)})"
        if partition_by is None:
            # DuckDB streams the result to Parquet itself: nothing is held in Python memory.
            target = f"{data_dir}/part-00000.parquet".replace("'", "''")
            self.con.raw_sql(f"COPY ({query}) TO '{target}' (FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE {ROW_GROUP_ROWS})")
            return
        # Month files from the ordered result streamed as Arrow batches. DuckDB's own
        # ``COPY ... PARTITION_BY`` cost ~40% more CPU than the whole query at 1M events
        # and did not keep the ORDER BY inside a file.
        result = self.con.raw_sql(query)
        reader = result.to_arrow_reader(_BATCH_ROWS)
        write_partitioned_batches(reader, reader.schema, data_dir, partition_by)


def _naive_utc(col: ir.TimestampValue) -> ir.TimestampValue:
    """A timestamp with time zone as the naive timestamp of its UTC wall time, through its
    microseconds since the epoch (``make_timestamp(epoch_us(ts))``): no time zone lookup."""
    import ibis

    @ibis.udf.scalar.builtin(signature=(("timestamp('UTC', 6)",), "int64"))
    def epoch_us(value):  # DuckDB's microseconds since the epoch
        ...

    @ibis.udf.scalar.builtin(signature=(("int64",), "timestamp(6)"))
    def make_timestamp(micros):  # DuckDB's naive timestamp from microseconds since the epoch
        ...

    return cast("ir.TimestampValue", make_timestamp(epoch_us(col)))


#: The class the engine registry (:mod:`mlforge.engines`) builds for 'duckdb'.
ENGINE = DuckDBEngine


#: Rows per Arrow batch fetched from DuckDB.
_BATCH_ROWS = 1 << 17


#: The default cap on DuckDB's buffer memory. Builds stay well under it or spill; the
#: process's peak RSS ends up a little above it (Python, Arrow and allocator overhead).
DEFAULT_MEMORY_LIMIT_BYTES = 3 * 2**30


def default_memory_limit() -> str:
    """``3GiB``, or 80% of physical memory on a smaller machine (DuckDB's own default).

    >>> default_memory_limit().endswith("MiB")
    True
    """
    limit = DEFAULT_MEMORY_LIMIT_BYTES
    try:
        physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        limit = min(limit, int(physical * 0.8))
    except (ValueError, OSError, AttributeError):  # not POSIX: keep the cap
        pass
    return f"{limit // 2**20}MiB"


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    return int(value) if value else None


def _quote(text: str) -> str:
    return str(text).replace("'", "''")
