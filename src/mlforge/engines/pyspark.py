"""PySpark: the engine for data past one machine, through Ibis's PySpark backend.

Works with a session it creates (``local[*]``), an existing session (a Databricks
notebook or job) or a Spark Connect session.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar, cast

from mlforge.engines.base import Capability, Engine, ordered, temp_table_name
from mlforge.engines.monthfiles import flatten_partitions
from mlforge.engines.sources import first_file_schema, names_itself
from mlforge.errors import EngineError, missing_extra

if TYPE_CHECKING:
    from collections.abc import Iterator

    import ibis.expr.types as ir

log = logging.getLogger(__name__)


class PySparkEngine(Engine):
    """Runs Ibis expressions on Spark; results are computed by Spark itself."""

    name: ClassVar[str] = "pyspark"
    capabilities: ClassVar[frozenset[Capability]] = frozenset({Capability.WINDOW_FUNCTIONS, Capability.SHA256, Capability.NATIVE_FRAMES, Capability.DELTA_SOURCES, Capability.CATALOG_TABLES, Capability.DISTRIBUTED})
    native_frame: ClassVar[str | None] = "pyspark"
    requires: ClassVar[tuple[str, ...]] = ("pyspark",)
    extra: ClassVar[str | None] = "pyspark"

    def __init__(self, session: Any = None, master: str | None = None, remote: str | None = None, conf: dict[str, str] | None = None, scratch_dir: str | None = None):
        if session is not None and not self.wraps(session):
            raise EngineError(
                f"PySparkEngine(session=...) got a {type(session).__module__}.{type(session).__name__}, not a Spark session",
                fix="pass a pyspark.sql.SparkSession (classic or Spark Connect) or a databricks.connect.DatabricksSession session",
            )
        self._session = session
        self.master = master or os.environ.get("MLFORGE_SPARK_MASTER", "local[2]")
        self.remote = remote or os.environ.get("MLFORGE_SPARK_REMOTE")
        self.conf = dict(conf or {})
        #: Where Spark writes results the driver then streams (an online publish): it must
        #: be a path the executors and the driver share (a Volume or DBFS on Databricks).
        self.scratch_dir = scratch_dir or os.environ.get("MLFORGE_SPARK_SCRATCH_DIR")
        self._owns_session = False

    @classmethod
    def wraps(cls, obj: Any) -> bool:
        """A classic or Spark Connect ``SparkSession``, or Databricks Connect's session."""
        return isinstance(obj, spark_session_types())

    @property
    def session(self) -> Any:
        if self._session is None:
            self._session = self._make_session()
        return self._session

    def _make_session(self) -> Any:
        try:
            from pyspark.sql import SparkSession
        except ImportError:
            if self.remote == DATABRICKS_REMOTE:
                return databricks_session()
            raise missing_extra("pyspark", "pyspark", where="engine 'pyspark'") from None
        active = SparkSession.getActiveSession()
        if active is not None:
            return active
        if self.remote == DATABRICKS_REMOTE:
            self._owns_session = True
            return databricks_session()
        builder = SparkSession.builder.appName("mlforge")
        builder = builder.remote(self.remote) if self.remote else builder.master(self.master)
        if not self.remote or self.remote.startswith("local"):
            # A JVM this process starts (classic, or Spark Connect's own local server).
            builder = builder.config("spark.ui.enabled", "false").config("spark.sql.shuffle.partitions", "8")
            builder = builder.config("spark.ui.showConsoleProgress", "false")
            builder = builder.config("spark.driver.memory", os.environ.get("MLFORGE_SPARK_DRIVER_MEMORY", "4g"))
            jars = spark_jars(os.environ.get("MLFORGE_SPARK_JARS"))
            if jars:
                builder = builder.config("spark.jars", ",".join(jars))
            if any(os.path.basename(j).startswith("delta-spark") for j in jars):
                builder = builder.config("spark.sql.extensions", "io.delta.sql.DeltaSparkSessionExtension")
                builder = builder.config("spark.sql.catalog.spark_catalog", "org.apache.spark.sql.delta.catalog.DeltaCatalog")
        builder = builder.config("spark.sql.session.timeZone", "UTC")
        builder = builder.config("spark.sql.execution.arrow.pyspark.enabled", "true")
        builder = builder.config("spark.sql.parquet.outputTimestampType", "TIMESTAMP_MICROS")
        for key, value in self.conf.items():
            builder = builder.config(key, value)
        self._owns_session = True
        session = builder.getOrCreate()
        if not self.remote:
            session.sparkContext.setLogLevel("ERROR")
        return session

    def _connect(self) -> Any:
        import ibis

        session = self.session
        # The contract reads naive timestamps as UTC; an existing session may run elsewhere.
        session.conf.set("spark.sql.session.timeZone", "UTC")
        session.conf.set("spark.sql.parquet.outputTimestampType", "TIMESTAMP_MICROS")
        return ibis.pyspark.connect(session)

    def _read_catalog_table(self, name: str) -> ir.Table:
        view = temp_table_name()
        self.session.table(name).createOrReplaceTempView(view)
        return self.con.table(view)

    def _read_parquet(self, location: str) -> ir.Table:
        absolute = _absolute(location)
        nanos = _nanosecond_columns(absolute)
        # a path with glob characters that names a file or directory as it is: that alone
        path = _hadoop_literal(absolute) if names_itself(location) else absolute
        if not nanos:
            return self.con.read_parquet(path)
        # Spark refuses TIMESTAMP(NANOS) (what pandas writes by default); read those columns
        # as their integer nanoseconds and floor them to microseconds, as DuckDB and Polars
        # read them: the same instants to the microsecond (W8).
        from pyspark.sql import functions as F

        self.session.conf.set("spark.sql.legacy.parquet.nanosAsLong", "true")
        frame = self.session.read.parquet(path)
        for name in nanos:
            quoted = "`" + name.replace("`", "``") + "`"  # a dot is a name, not a struct field
            ticks = F.col(quoted).cast("decimal(20,0)")  # exact: a double would round 2**60 ns
            floored = ((ticks - F.pmod(ticks, F.lit(1000))) / F.lit(1000)).cast("long")
            frame = frame.withColumn(name, F.timestamp_micros(floored).cast("timestamp"))
        return self.from_native(frame)

    def _read_delta(self, location: str, version: int | None) -> ir.Table:
        location = _absolute(location)
        reader = self.session.read.format("delta")
        if version is not None:
            reader = reader.option("versionAsOf", version)
        try:
            frame = reader.load(location)
        except Exception:
            # No delta-spark on the classpath: read the table's current files with delta-rs.
            return super()._read_delta(location, version)
        return self.from_native(frame)

    def read_parquet_files(self, files: list[str]) -> ir.Table:
        return self.from_native(self.session.read.parquet(*(_hadoop_literal(_absolute(f)) for f in files)))

    def epoch_seconds(self, col: ir.TimestampValue) -> ir.IntegerValue:
        # timestampdiff(SECOND) truncates toward zero, so 0.5 s before 1970 would land in
        # second 0, not -1; floor the microseconds instead (W1 grid buckets).
        import ibis

        micros = col.delta(ibis.timestamp("1970-01-01 00:00:00"), unit="microsecond")
        return cast("ir.IntegerValue", (micros // 1_000_000).cast("int64"))

    def from_epoch_seconds(self, col: ir.IntegerValue) -> ir.TimestampValue:
        # Ibis spells it TO_TIMESTAMP(FROM_UNIXTIME(...)): a string formatted and parsed back
        # for every output row; timestamp_seconds is arithmetic.
        import ibis
        import ibis.expr.datatypes as dt

        @ibis.udf.scalar.builtin(name="timestamp_seconds", signature=((dt.int64,), dt.timestamp))
        def timestamp_seconds(seconds):  # type: ignore[empty-body]
            ...

        return cast("ir.TimestampValue", timestamp_seconds(col))

    def parse_timestamp(self, col: ir.StringValue, fmt: str) -> ir.TimestampValue:
        # Ibis's own translation leaves letters such as the ISO 'T' unquoted and turns %z
        # into 'Z', which rejects "+05:30"; translate the strftime codes here instead.
        import ibis
        import ibis.expr.datatypes as dt

        @ibis.udf.scalar.builtin(name="to_timestamp", signature=((dt.string, dt.string), dt.timestamp))
        def to_timestamp(value, pattern):  # type: ignore[empty-body]
            ...

        return cast("ir.TimestampValue", to_timestamp(col, java_datetime_pattern(fmt)))

    def from_arrow(self, table: Any, name: str | None = None) -> ir.Table:
        table = _signed(table)
        if table.num_rows == 0:  # Spark Connect cannot infer a schema from no rows
            from pyspark.sql.pandas.types import from_arrow_schema

            frame = self.session.createDataFrame([], schema=from_arrow_schema(table.schema))
        else:
            frame = self.session.createDataFrame(table)
        return self.from_native(frame, name)

    def to_native(self, table: ir.Table) -> Any:
        # Ibis registers in-memory tables (e.g. the compiler's offsets) only when it runs
        # an expression itself; do the same before handing the SQL to Spark.
        self.con._run_pre_execute_hooks(table)
        return self.session.sql(self.con.compile(table))

    def from_native(self, frame: Any, name: str | None = None) -> ir.Table:
        view = name or temp_table_name()
        frame.createOrReplaceTempView(view)
        return self.con.table(view)

    def to_arrow(self, expr: ir.Table) -> Any:
        return self.to_native(expr).toArrow()

    def arrow_batches(self, expr: ir.Table, batch_rows: int) -> Iterator[Any]:
        """Spark writes the rows as Parquet under ``scratch_dir`` (one file per partition of
        the ordered result, so reading the files in partition order keeps the order); the
        driver streams them back ``batch_rows`` at a time. Nothing goes through a collect,
        so ``spark.driver.maxResultSize`` never sees the rows."""
        import shutil
        import tempfile

        import pyarrow.parquet as pq

        parent = self.scratch_dir or tempfile.gettempdir()
        os.makedirs(parent, exist_ok=True)
        root = tempfile.mkdtemp(prefix="mlforge-stream-", dir=parent)
        try:
            self.to_native(expr).write.mode("overwrite").parquet(_absolute(root))
            for name in sorted((f for f in os.listdir(root) if f.endswith(".parquet")), key=_partition_index):
                yield from pq.ParquetFile(os.path.join(root, name)).iter_batches(batch_size=batch_rows)
        finally:
            shutil.rmtree(root, ignore_errors=True)

    def spark_session(self) -> Any:
        return self.session

    def close(self) -> None:
        if self._owns_session and self._session is not None:
            self._session.stop()
            self._session = None

    def write_parquet(self, expr: ir.Table, data_dir: str, partition_by: str | None = None, order: Sequence[str] = ()) -> None:
        # Spark writes its own files: nothing is collected to the driver.
        frame = self.to_native(ordered(expr, order))
        if partition_by is None:
            frame.write.mode("overwrite").parquet(data_dir)
            return
        import os
        import shutil
        import tempfile

        root = tempfile.mkdtemp(prefix=".parts-", dir=os.path.dirname(data_dir))
        try:
            # One task per partition value gives one (sorted) file per partition.
            # Names are backtick-quoted (rule E5): Spark would otherwise parse dots in them.
            order = [spark_column_reference(c) for c in frame.columns if c != partition_by]
            frame.repartition(partition_by).sortWithinPartitions(*order).write.mode(
                "overwrite"
            ).partitionBy(partition_by).parquet(root)
            flatten_partitions(root, data_dir, partition_by)
        finally:
            shutil.rmtree(root, ignore_errors=True)


def _signed(table: Any) -> Any:
    """``table`` with its unsigned integer columns as the signed type that holds every value
    (uint8 -> int16, uint16 -> int32, uint32 -> int64, uint64 -> int64 or decimal(20, 0)
    when a value passes 2**63 - 1): Spark has no unsigned types, and its Arrow conversion
    refused them outright, where DuckDB and Polars compare them by value.

    >>> import pyarrow as pa
    >>> _signed(pa.table({"a": pa.array([1], pa.uint8()), "b": pa.array([2**64 - 1], pa.uint64())})).schema.types
    [DataType(int16), Decimal128Type(decimal128(20, 0))]
    """
    import pyarrow as pa
    import pyarrow.compute

    pc: Any = pyarrow.compute  # functions generated at import time: no stubs to check
    wider = {pa.uint8(): pa.int16(), pa.uint16(): pa.int32(), pa.uint32(): pa.int64()}
    for index, field in enumerate(table.schema):
        if not pa.types.is_unsigned_integer(field.type):
            continue
        target = wider.get(field.type)
        if target is None:  # uint64
            top = pc.max(table.column(index)).as_py()
            target = pa.int64() if top is None or top < 2**63 else pa.decimal128(20, 0)
        table = table.set_column(index, pa.field(field.name, target, field.nullable, field.metadata), table.column(index).cast(target))
    return table


#: The class the engine registry (:mod:`mlforge.engines`) builds for 'pyspark'.
ENGINE = PySparkEngine


def spark_column_reference(name: str) -> str:
    """A column name as Spark parses it back exactly: backtick-quoted, backticks doubled.

    >>> spark_column_reference("a.b`c")
    '`a.b``c`'
    """
    return "`" + name.replace("`", "``") + "`"


#: strftime codes and their Spark (java.time) pattern letters; %z takes "+05:30" and "+0530".
_JAVA_CODES = {
    "Y": "yyyy", "y": "yy", "m": "MM", "d": "dd", "H": "HH", "I": "hh", "M": "mm", "S": "ss",
    "f": "SSSSSS", "z": "[XXX][XX]", "p": "a", "b": "MMM", "B": "MMMM", "a": "EEE", "A": "EEEE", "j": "DDD",
}


def java_datetime_pattern(fmt: str) -> str:
    """Spark's pattern for a strftime format; literal text other than separators is quoted.

    >>> java_datetime_pattern("%Y-%m-%dT%H:%M:%S.%f%z")
    "yyyy-MM-dd'T'HH:mm:ss.SSSSSS[XXX][XX]"
    >>> java_datetime_pattern("%H h o'clock")
    "HH' h o''clock'"
    """
    out: list[str] = []
    literal: list[str] = []

    def flush() -> None:
        text = "".join(literal)
        literal.clear()
        if text and not set(text) <= set(" -:/.,"):
            text = "'" + text.replace("'", "''") + "'"
        out.append(text)

    i = 0
    while i < len(fmt):
        if fmt[i] != "%" or i + 1 == len(fmt):
            literal.append(fmt[i])
            i += 1
            continue
        code = fmt[i + 1]
        i += 2
        if code == "%":
            literal.append("%")
            continue
        if code not in _JAVA_CODES:
            raise EngineError(
                f"engine 'pyspark' cannot parse timestamps with the strftime code %{code}",
                fix=f"use one of {', '.join('%' + c for c in _JAVA_CODES)}, or parse the column in the feature function",
            )
        flush()
        out.append(_JAVA_CODES[code])
    flush()
    return "".join(out)


#: ``MLFORGE_SPARK_REMOTE`` (or ``remote=``) value for a Databricks Connect session, made
#: by ``DatabricksSession.builder.getOrCreate()`` from the SDK's configuration
#: (``DATABRICKS_HOST``/``DATABRICKS_CLUSTER_ID``..., or ``~/.databrickscfg``).
DATABRICKS_REMOTE = "databricks"


def spark_session_types() -> tuple[type, ...]:
    """The session classes the engine accepts: pyspark's classic and Spark Connect
    ``SparkSession``, and ``databricks.connect.DatabricksSession`` when databricks-connect
    is installed (it ships its own pyspark, whose Connect ``SparkSession`` its builder
    returns). Each is imported only if present."""
    types: list[type] = []
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        return ()
    types.append(SparkSession)
    try:
        from pyspark.sql.connect.session import SparkSession as ConnectSession
    except ImportError:  # pyspark without its [connect] dependencies
        pass
    else:
        types.append(ConnectSession)
    try:
        from databricks.connect import DatabricksSession  # ty: ignore[import-not-found] - optional, never beside pyspark here
    except ImportError:
        pass
    else:
        types.append(DatabricksSession)
    return tuple(types)


def databricks_session() -> Any:
    """A Databricks Connect session from the SDK's configuration."""
    try:
        from databricks.connect import DatabricksSession  # ty: ignore[import-not-found] - optional, never beside pyspark here
    except ImportError:
        raise EngineError(
            f"MLFORGE_SPARK_REMOTE={DATABRICKS_REMOTE!r} needs databricks-connect, which is not installed",
            fix="pip install databricks-connect in an environment without pyspark (it ships its own), "
            "or set MLFORGE_SPARK_REMOTE to a Spark Connect URL (sc://host:15002)",
        ) from None
    return DatabricksSession.builder.getOrCreate()


#: The Maven coordinates of Delta Lake for the pinned Spark (pyspark 4.0 pairs with
#: delta-spark 4.0); ``.ci/run`` fetches the same two jars into ``.jars/``.
DELTA_MAVEN_COORDINATES = ("io.delta:delta-spark_2.13:4.0.0", "io.delta:delta-storage:4.0.0")


def delta_jars_hint() -> str:
    """How to give a Spark session Delta Lake: the fix of every "no Delta" error."""
    return (
        "put the delta-spark and delta-storage jars on Spark's classpath: set MLFORGE_SPARK_JARS to their files "
        f"or their directory (Maven coordinates {' and '.join(DELTA_MAVEN_COORDINATES)}; e.g. "
        f"`mvn dependency:copy -Dartifact={DELTA_MAVEN_COORDINATES[0]} -DoutputDirectory=.jars`), "
        "or create the session with spark.jars.packages set to those coordinates"
    )


def spark_jars(value: str | None) -> list[str]:
    """Jars from ``MLFORGE_SPARK_JARS``: a comma-separated list of files or directories of jars."""
    jars: list[str] = []
    for part in (value or "").split(","):
        part = part.strip()
        if os.path.isdir(part):
            jars.extend(sorted(os.path.join(part, f) for f in os.listdir(part) if f.endswith(".jar")))
        elif part:
            jars.append(part)
    return jars


def _partition_index(file_name: str) -> tuple[int, str]:
    """``part-00012-<uuid>-c000.snappy.parquet`` -> 12: the order Spark's partitions came in."""
    parts = file_name.split("-")
    return (int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else -1, file_name)


def _nanosecond_columns(path: str) -> list[str]:
    """The nanosecond timestamp columns of a local Parquet source (read from one file's
    footer); none for remote paths, whose reads Spark checks itself."""
    import pyarrow as pa

    try:
        schema = first_file_schema(path)
    except (OSError, pa.ArrowException):  # not Parquet: Spark's own read says what is wrong
        return []
    return [] if schema is None else [f.name for f in schema if pa.types.is_timestamp(f.type) and f.type.unit == "ns"]


def _absolute(location: str) -> str:
    """Spark resolves a relative path against its JVM's start directory, not Python's."""
    return location if "://" in location or os.path.isabs(location) else os.path.abspath(location)


def _hadoop_literal(path: str) -> str:
    """``path`` with Hadoop's glob characters escaped, so Spark reads the file or directory
    of that very name (``events[1].parquet``, not ``events1.parquet``)."""
    import re

    return re.sub(r"([\\{}\[\]*?])", r"\\\1", path)
