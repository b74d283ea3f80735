"""The engine protocol: connect, read, a few portable primitives, and capabilities.

An engine wraps one Ibis backend. The compiler asks an engine for the handful of
operations whose spelling differs between backends (epoch seconds, SHA-256, string
timestamp parsing) and checks its capabilities; everything else is plain Ibis.
"""

from __future__ import annotations

import glob
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar, cast

from mlforge.definitions.names import RESERVED_PREFIX
from mlforge.definitions.source import CSVFormat, DeltaFormat
from mlforge.engines import asof
from mlforge.engines.asof import AsofJoin
from mlforge.engines.monthfiles import write_arrow_table
from mlforge.engines.sources import (
    arrow_csv_options,
    check_source_exists,
    csv_files,
    engine_path,
    mark_unreadable_columns,
    mark_unreadable_names,
    read_delta_arrow,
)
from mlforge.errors import EngineError, MlforgeError, SourceError, missing_extra

if TYPE_CHECKING:
    from collections.abc import Iterator

    import ibis.expr.types as ir
    import pyarrow as pa

    from mlforge.definitions.source import Source

log = logging.getLogger(__name__)

class Capability(StrEnum):
    """What an engine may declare it can do; the compiler and the services read these flags
    and never probe an engine's methods. The value is the name used in docs and errors."""

    WINDOW_FUNCTIONS = "window_functions"
    ROLLING_FRAMES = "rolling_frames"
    ASOF_JOIN = "asof_join"
    SHA256 = "sha256"
    NATIVE_FRAMES = "native_frames"
    DELTA_SOURCES = "delta_sources"
    CATALOG_TABLES = "catalog_tables"
    DISTRIBUTED = "distributed"
    CASE_SENSITIVE_NAMES = "case_sensitive_names"

    @property
    def description(self) -> str:
        return _DESCRIPTIONS[self]


_DESCRIPTIONS: dict[Capability, str] = {
    Capability.WINDOW_FUNCTIONS: "over() window functions",
    Capability.ROLLING_FRAMES: "the metric frames rolled natively over the grid labels (`Engine.rolling_frames`)",
    Capability.ASOF_JOIN: "correct native as-of joins",
    Capability.SHA256: "SHA-256 hex digests in the engine (surrogate keys)",
    Capability.NATIVE_FRAMES: "feature functions annotated with the engine's native frame type",
    Capability.DELTA_SOURCES: "reading Delta Lake sources",
    Capability.CATALOG_TABLES: "reading Unity Catalog tables (`catalog.schema.table` sources)",
    Capability.DISTRIBUTED: "scales past one machine; frames of its own kind stay in the engine",
    Capability.CASE_SENSITIVE_NAMES: "source columns that differ only by case (`Amount`, `amount`) are two columns, each read under its own name",
}

#: Capability names and what they mean (the engine matrix in the docs is generated from it).
CAPABILITIES: dict[str, str] = {c.value: c.description for c in Capability}


@dataclass(frozen=True)
class RollingFrame:
    """One frame of :meth:`Engine.rolling_frames`: ``rolls_with`` (``sum``, ``min`` or
    ``max``) of ``column`` over the last ``steps`` grid labels, into ``name``."""

    name: str
    column: str
    rolls_with: str
    steps: int


def ordered(expr: ir.Table, order: Sequence[str]) -> ir.Table:
    """``expr`` ordered by ``order`` (unchanged when there is none)."""
    return expr.order_by(list(order)) if order else expr


#: Stored integers per second of each Arrow timestamp unit.
UNITS_PER_SECOND = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}


def utc_literal(instant: int, *, zoned: bool = False) -> Any:
    """Epoch seconds as a UTC timestamp literal in microseconds, naive (for source columns)
    or ``zoned`` (for stored labels, which Polars will not compare with a naive one). Without
    the scale Polars makes a literal nanoseconds, which end in 2262 (a range build of later
    events failed on the conversion)."""
    import ibis

    moment = datetime.fromtimestamp(instant, tz=UTC)
    return ibis.literal(moment, type="timestamp('UTC', 6)") if zoned else ibis.literal(moment.replace(tzinfo=None), type="timestamp(6)")


def temp_table_name() -> str:
    """A fresh name for an engine-side temporary table."""
    return f"mlforge_{uuid.uuid4().hex[:12]}"


def orderable(table: ir.Table, by: Sequence[str], order: Sequence[str] | None) -> list[str]:
    """The columns of ``order`` (default: those of ``table`` not in ``by`` nor mlforge's
    own) every engine can sort by: not structs, arrays or maps."""
    columns = order if order is not None else [c for c in table.columns if c not in by and not c.lower().startswith(RESERVED_PREFIX)]
    return [c for c in columns if not table[c].type().is_nested()]


def catalog_table_error(engine: str, table: str, feature: str | None = None) -> EngineError:
    """The error for a ``catalog.schema.table`` source on an engine that reads only files."""
    return EngineError(
        f"source {table!r} is a Unity Catalog table, and engine {engine!r} reads only files (Parquet, CSV, Delta)",
        where=f"feature {feature!r}" if feature else f"engine {engine!r}",
        fix="run the feature on pyspark with a Unity Catalog session (@mlf.feature(engine='pyspark') or --engine pyspark), or point the Source at the table's files",
    )


class Engine:
    """Base class of the DuckDB, Polars and PySpark engines."""

    name: ClassVar[str] = "base"
    capabilities: ClassVar[frozenset[Capability]] = frozenset()
    native_frame: ClassVar[str | None] = None
    #: Optional packages the engine imports, and the extra that installs them.
    requires: ClassVar[tuple[str, ...]] = ()
    extra: ClassVar[str | None] = None

    def check_available(self) -> None:
        """Raise one :class:`EngineError` naming the ``pip install`` line when a package
        this engine needs is not installed; called before any compute."""
        import importlib.util

        for module in self.requires:
            try:
                found = importlib.util.find_spec(module) is not None
            except (ImportError, ValueError):
                found = False
            if not found:
                raise missing_extra(module, self.extra or self.name, where=f"engine {self.name!r}")

    @cached_property
    def con(self) -> Any:
        """The Ibis backend connection, created on first use."""
        return self._connect()

    def _connect(self) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    @classmethod
    def wraps(cls, obj: Any) -> bool:
        """Whether ``obj`` is a session of this engine's own (e.g. a SparkSession) that
        :func:`mlforge.engines.get_engine` wraps in this engine class; none by default."""
        return False

    def supports(self, capability: Capability | str) -> bool:
        """Whether this engine declares ``capability``; an unknown name is an error, so a
        typo never silently answers False."""
        try:
            return Capability(capability) in self.capabilities
        except ValueError:
            raise EngineError(f"unknown engine capability {capability!r}", fix=f"use one of {', '.join(c.value for c in Capability)}") from None

    def spark_session(self) -> Any | None:
        """The engine's SparkSession, for stores that write through Spark (``None`` here)."""
        return None

    def is_interrupt(self, exc: BaseException) -> bool:
        """Whether ``exc`` is this engine's answer to Ctrl-C (SIGINT) during a query, which
        must stop the whole build rather than fail one feature."""
        return isinstance(exc, KeyboardInterrupt)

    # -- reading -----------------------------------------------------------------
    def read_source(self, source: Source) -> ir.Table:
        """Read a source as an Ibis table bound to this engine."""
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
            table = mark_unreadable_columns(source.location, table)
            if fmt is not None and fmt.columns:
                missing = [c for c in fmt.columns if c not in table.columns]
                if missing:
                    raise SourceError(f"source {source.location!r} has no columns {missing}", fix=f"available: {list(table.columns)}")
                table = table.select(*fmt.columns)
            return table
        except MlforgeError:
            raise
        except ImportError as exc:  # an optional package is missing: not a problem of the source
            raise missing_extra(exc.name or str(exc), self.extra or "all", where=f"engine {self.name!r}") from None
        except Exception as exc:
            raise SourceError(
                f"cannot read source {source.location!r}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
                fix="check the path, the format and that the file is not corrupt",
            ) from exc

    def _read_parquet(self, location: str) -> ir.Table:
        return self.con.read_parquet(engine_path(location))

    def read_parquet_files(self, files: list[str]) -> ir.Table:
        """Read a list of Parquet files as one table (each named as it is: a store under a
        folder called ``features[v2]`` is not a pattern)."""
        return self.con.read_parquet([glob.escape(f) for f in files])

    def _read_csv(self, location: str, fmt: Any) -> ir.Table:
        import pyarrow as pa
        import pyarrow.csv as pacsv

        options = arrow_csv_options(fmt)
        parts = [pacsv.read_csv(f, **options) for f in csv_files(location)]
        table = parts[0] if len(parts) == 1 else pa.concat_tables(parts, promote_options="permissive")
        return self.from_arrow(mark_unreadable_names(table, fold_case=Capability.CASE_SENSITIVE_NAMES not in self.capabilities))

    def _read_delta(self, location: str, version: int | None) -> ir.Table:
        from deltalake import DeltaTable

        return self.from_arrow(read_delta_arrow(DeltaTable(location, version=version)))

    def _read_catalog_table(self, name: str) -> ir.Table:
        raise catalog_table_error(self.name, name)

    def from_arrow(self, table: pa.Table, name: str | None = None) -> ir.Table:
        return self.con.create_table(name or temp_table_name(), table, temp=True)

    # -- portable primitives ------------------------------------------------------
    def epoch_seconds(self, col: ir.TimestampValue) -> ir.IntegerValue:
        """Whole seconds since the epoch as int64, floored (Ibis's own is int32)."""
        import ibis

        return cast("ir.IntegerValue", col.delta(ibis.timestamp("1970-01-01 00:00:00"), unit="second").cast("int64"))

    def from_epoch_seconds(self, col: ir.IntegerValue) -> ir.TimestampValue:
        """The instant ``col`` whole seconds after the epoch (grid labels, W7)."""
        return col.as_timestamp("s")

    def sha256_hex(self, col: ir.StringValue) -> ir.StringValue:
        return col.hexdigest("sha256")

    def add_hex_digest_column(self, table: ir.Table, text: ir.StringValue, out: str) -> ir.Table:
        """Add ``out`` = the first 32 hex characters of SHA-256 of ``text`` (rule K1)."""
        if not self.supports(Capability.SHA256):
            raise EngineError(f"engine {self.name!r} cannot compute SHA-256 surrogate keys", fix="use the duckdb engine")
        return table.mutate(**{out: self.sha256_hex(text).substr(0, 32)})

    def parse_timestamp(self, col: ir.StringValue, fmt: str) -> ir.TimestampValue:
        return col.as_timestamp(fmt)

    def month_key(self, col: ir.TimestampValue) -> ir.IntegerValue:
        """``year * 100 + month`` of a UTC timestamp: the month file a stored row goes to
        (``202503`` -> ``2025-03.parquet``, see :func:`~mlforge.engines.monthfiles.partition_file`)."""
        return cast("ir.IntegerValue", col.year() * 100 + col.month())

    def to_utc_naive(self, col: ir.TimestampValue) -> ir.TimestampValue:
        """Convert a zoned timestamp to UTC wall time without zone (sessions run in UTC)."""
        return cast("ir.TimestampValue", col.cast("timestamp"))

    # -- native frames -------------------------------------------------------------
    def to_native(self, table: ir.Table) -> Any:
        raise EngineError(f"engine {self.name!r} has no native frame type", fix="annotate the feature function without a frame type")

    def native_input(self, table: ir.Table, *, eager: bool) -> Any:
        """``table`` as the frame a feature function annotated with this engine's native
        type receives; ``eager`` when it asks for an executed frame rather than a lazy one."""
        return self.to_native(table)

    def from_native(self, frame: Any) -> ir.Table:
        raise EngineError(f"engine {self.name!r} has no native frame type", fix="return an Ibis table")

    # -- metric frames -------------------------------------------------------------
    def rolling_frames(self, partials: ir.Table, keys: Sequence[str], label: str, frames: Sequence[RollingFrame], max_steps: int) -> ir.Table:
        """The compiler's ``rolling`` plan, for engines with :attr:`Capability.ROLLING_FRAMES`.

        ``partials`` has one row per ``(keys, label)`` (integer grid labels). The result has,
        for each key, one row per label ``k`` that has a ``partials`` row at a label in
        ``[k - max_steps + 1, k]`` (and no other), with the columns ``keys``, ``label`` and
        one column per frame: ``frame.rolls_with`` of ``frame.column`` over the ``partials``
        rows at labels ``[k - frame.steps + 1, k]`` (nulls ignored; a sum of only nulls may
        be 0 or null, a min or max is null).
        """
        raise EngineError(f"engine {self.name!r} does not roll metric frames natively", fix="this is a bug in mlforge's plan choice; please report it")

    # -- joins ---------------------------------------------------------------------
    def asof_backward(self, base: ir.Table, right: ir.Table, join: AsofJoin) -> ir.Table:
        """``base`` with the values of the newest ``right`` row at or before each label
        (ties included), by the fastest plan this engine runs correctly."""
        if self.supports(Capability.ASOF_JOIN):
            return asof.native(base, right, join)
        if self.supports(Capability.WINDOW_FUNCTIONS):
            return asof.window(base, right, join)
        return asof.pairwise(base, right, join)

    def last_per_group(self, table: ir.Table, by: Sequence[str], order: Sequence[str] | None = None) -> ir.Table:
        """One row per distinct ``by``: the row that sorts last by ``order`` (default: every
        other column in table order but mlforge's own; compared in turn, ascending, nulls
        lowest, NaN highest), whole -- never values mixed from
        several rows, as Ibis's ``distinct(keep=...)`` takes them. Columns of nested types
        (structs, arrays, maps) do not order; rows equal in every ordered column may come
        back either way."""
        import ibis

        if not self.supports(Capability.WINDOW_FUNCTIONS):
            raise EngineError(f"engine {self.name!r} picks no row per group", fix="this is a bug in mlforge's plan choice; please report it")
        rank = "__mlforge_rank"
        newest_first = [table[c].desc(nulls_first=False) for c in orderable(table, by, order)]
        ranked = table.mutate(**{rank: ibis.row_number().over(group_by=[table[c] for c in by], order_by=newest_first)})
        return ranked.filter(ranked[rank] == 0).drop(rank)

    # -- execution -----------------------------------------------------------------
    def to_arrow(self, expr: ir.Table) -> pa.Table:
        return expr.to_pyarrow()

    def arrow_batches(self, expr: ir.Table, batch_rows: int) -> Iterator[pa.RecordBatch]:
        """The rows of ``expr`` in its order, as Arrow batches of at most ``batch_rows``:
        the caller holds one batch at a time, never the whole result."""
        try:
            batches = expr.to_pyarrow_batches(chunk_size=batch_rows)
        except NotImplementedError:  # a backend without streaming: bounded by the result
            batches = expr.to_pyarrow().to_batches(max_chunksize=batch_rows)
        yield from batches

    def fetch_scalar(self, expr: ir.Scalar) -> Any:
        """The Python value of a scalar expression (a count, a maximum)."""
        return expr.to_pyarrow().as_py()

    def write_parquet(self, expr: ir.Table, data_dir: str, partition_by: str | None = None, order: Sequence[str] = ()) -> None:
        """Write ``expr`` as Parquet into ``data_dir``, its rows ordered by ``order`` (as
        Ibis's ``order_by`` orders them) within each file.

        With ``partition_by``, one file ``<value>.parquet`` per value of that column, which
        is not written into the files (see :func:`flatten_partitions`).
        """
        write_arrow_table(self.to_arrow(ordered(expr, order)), data_dir, partition_by)

    def close(self) -> None:
        """Release engine resources (sessions, connections)."""


def quote_identifier(name: str, dialect: str = "duckdb") -> str:
    """``name`` as a quoted identifier of ``dialect`` (a sqlglot dialect: ``duckdb``,
    ``spark``; ``postgres`` for the double quotes of delta-rs's DataFusion SQL), escaped by
    sqlglot, which writes Ibis's SQL: the one way a name reaches SQL text (rule E5).

    >>> quote_identifier('a" AS "b')
    '"a"" AS ""b"'
    >>> quote_identifier("a` OR `b", "spark")
    '`a`` OR ``b`'
    """
    import sqlglot.expressions as sge

    return sge.to_identifier(name, quoted=True).sql(dialect=dialect)
