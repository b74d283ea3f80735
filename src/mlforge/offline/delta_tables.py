"""Two ways to write and read the Delta tables of a :class:`UnityCatalogStore`.

* :class:`SparkTables` - Spark does the work (``writeTo``/``createOrReplace``, partial
  ``overwrite`` for ranges, ``MERGE``-free metadata upserts through Delta's API, time
  travel with ``versionAsOf``). Tables are addressed by name when the session knows the
  catalog (Databricks), else by storage location (a local stack).
* :class:`RustTables` - ``deltalake`` (delta-rs) writes and reads by storage location,
  with credentials vended by Unity Catalog; nothing needs a JVM.

Both write the staged Parquet files of a build without collecting them on the driver:
Spark reads the staging directory itself, delta-rs streams record batches.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from mlforge.engines.base import quote_identifier
from mlforge.engines.pyspark import delta_jars_hint
from mlforge.engines.sources import read_delta_arrow
from mlforge.errors import StoreError
from mlforge.offline.verify import parquet_files
from mlforge.records import record_json

if TYPE_CHECKING:
    import ibis.expr.types as ir

    from mlforge.engines.base import Engine

#: Properties every feature table gets: the change feed for downstream consumers (and
#: the online store's sync), no deletion vectors so the files are plain Parquet.
TABLE_PROPERTIES = {"delta.enableChangeDataFeed": "true", "delta.enableDeletionVectors": "false"}
#: Columns of ``_mlforge_metadata``: one ``version`` row per published version and one
#: ``latest`` row per feature (its pointer).
METADATA_COLUMNS = ("feature", "kind", "version", "delta_version", "metadata", "token", "recorded_at")


def _spark_name(name: str) -> str:
    """A dotted table or schema name with each part quoted for Spark (E5): a feature named
    ``a-b`` is a valid table name that Spark's parser refused unquoted.

    >>> _spark_name("main.s1.a-b")
    '`main`.`s1`.`a-b`'
    """
    return ".".join(quote_identifier(part, "spark") for part in name.split("."))


@dataclass(frozen=True)
class TableRef:
    """A feature's table: its three-part name and, when addressed by path, its location."""

    name: str
    location: str | None = None
    storage_options: dict[str, str] | None = None


#: Delta operations that change no rows (table properties, file compaction, vacuum,
#: protocol and constraint changes): a range build may replace its rows over them.
ROWS_KEPT_OPERATIONS = frozenset({
    "SET TBLPROPERTIES", "UNSET TBLPROPERTIES", "OPTIMIZE", "VACUUM START", "VACUUM END",
    "UPGRADE PROTOCOL", "ADD CONSTRAINT", "DROP CONSTRAINT", "CHANGE COLUMN", "SET COLUMN COMMENT",
})


#: The ``userMetadata`` key of the restore that takes back a build's commit when the build
#: fails after it (E3); its value is the Delta version the restore goes back to.
UNDO_KEY = "mlforge_undo_to"


@dataclass(frozen=True)
class Commit:
    """One Delta commit: its version, operation (``WRITE``, ``RESTORE``, ...) and ``userMetadata``."""

    version: int
    operation: str
    user_metadata: str | None = None

    def undone_to(self) -> int | None:
        """The Delta version this commit restores the table to, when it is mlforge's undo of a failed build's commit."""
        if self.operation.upper() != "RESTORE" or not self.user_metadata:
            return None
        try:
            target = json.loads(self.user_metadata).get(UNDO_KEY)
        except (ValueError, AttributeError):
            return None
        return target if isinstance(target, int) else None


def undo_metadata(version: int) -> str:
    """The ``userMetadata`` of the restore that takes back Delta version ``version``."""
    return json.dumps({UNDO_KEY: version - 1, "undoes": version})


def holds_rows_of(commits: list[Commit], version: int) -> bool:
    """Whether a table whose commits after Delta version ``version`` are ``commits`` still
    holds the rows it held at ``version``: every commit since changes no rows, or is
    mlforge's undo back onto a Delta version that held them."""
    same = {version}
    for commit in sorted(commits, key=lambda c: c.version):
        if commit.operation.upper() in ROWS_KEPT_OPERATIONS:
            if commit.version - 1 in same:
                same.add(commit.version)
        elif commit.undone_to() in same:
            same.add(commit.version)
    return max([version, *(c.version for c in commits)]) in same


@dataclass(frozen=True)
class RangeFilter:
    """Rows ``since <= column < until`` (epoch seconds; ``None`` = open), and, with
    ``with_nulls``, the rows whose ``column`` is null (a feature without metrics keeps rows
    without a timestamp; they lie in no range, so every range build replaces them)."""

    column: str
    since: int | None
    until: int | None
    with_nulls: bool = False

    def sql(self, dialect: str = "spark") -> str:
        """The condition in Spark SQL, or in delta-rs's (DataFusion) SQL. The column name
        is quoted and escaped by sqlglot (E5): these APIs take a predicate as text."""
        column = quote_identifier(self.column, "spark" if dialect == "spark" else "postgres")
        parts = []
        for op, bound in ((">=", self.since), ("<", self.until)):
            if bound is None:
                continue
            instant = datetime.fromtimestamp(bound, tz=UTC)
            if dialect == "spark":
                parts.append(f"{column} {op} TIMESTAMP '{instant:%Y-%m-%d %H:%M:%S}+00:00'")
            else:  # a string literal is cast to the column's zoned type; TIMESTAMP '...' is not
                parts.append(f"{column} {op} '{instant:%Y-%m-%dT%H:%M:%S}Z'")
        condition = " AND ".join(parts) or "TRUE"
        if not self.with_nulls or not parts:
            return condition
        return f"(({condition}) OR {column} IS NULL)"


def metadata_row(feature: str, kind: str, version: str, delta_version: int | None, metadata: dict[str, Any] | None, token: str) -> dict[str, Any]:
    return {
        "feature": feature, "kind": kind, "version": version, "delta_version": delta_version,
        "metadata": record_json(metadata) if metadata is not None else None,
        "token": token, "recorded_at": datetime.now(tz=UTC),
    }


def _metadata_arrow(rows: list[dict[str, Any]]) -> Any:
    import pyarrow as pa

    schema = pa.schema([
        ("feature", pa.string()), ("kind", pa.string()), ("version", pa.string()), ("delta_version", pa.int64()),
        ("metadata", pa.string()), ("token", pa.string()), ("recorded_at", pa.timestamp("us", tz="UTC")),
    ])
    return pa.Table.from_pylist(rows, schema=schema)


class RustTables:
    """Delta tables through delta-rs, by storage location."""

    def exists(self, ref: TableRef) -> bool:
        from deltalake import DeltaTable

        return DeltaTable.is_deltatable(_uri(ref), storage_options=ref.storage_options)

    def _table(self, ref: TableRef, version: int | None = None) -> Any:
        from deltalake import DeltaTable

        return DeltaTable(_uri(ref), version=version, storage_options=ref.storage_options)

    def write(self, ref: TableRef, staging_dir: str, *, schema: Any, properties: dict[str, str], rows: RangeFilter | None, user_metadata: str) -> int:
        from deltalake import CommitProperties, DeltaTable, write_deltalake

        data = _staged(staging_dir, schema)
        if not self.exists(ref):
            DeltaTable.create(_uri(ref), schema=data.schema, configuration=TABLE_PROPERTIES, storage_options=ref.storage_options)
            self._table(ref).alter.set_table_properties(properties, raise_if_not_exists=False)
        commit = CommitProperties(custom_metadata={"userMetadata": user_metadata})
        if rows is None:
            write_deltalake(
                _uri(ref), data.scanner().to_reader(), mode="overwrite", schema_mode="overwrite",
                storage_options=ref.storage_options, commit_properties=commit,
            )
        else:
            condition = _arrow_range(rows)
            write_deltalake(
                _uri(ref), data.scanner(filter=condition).to_reader(), mode="overwrite", predicate=rows.sql("delta-rs"),
                storage_options=ref.storage_options, commit_properties=commit,
            )
        return self._committed_version(ref, user_metadata)

    def _committed_version(self, ref: TableRef, user_metadata: str) -> int:
        for entry in self._table(ref).history(20):
            if entry.get("userMetadata") == user_metadata:
                return int(entry["version"])
        raise StoreError(f"the commit of {ref.name} is not in its history", fix="retry the build; another writer may have raced this one")

    def files(self, ref: TableRef, version: int) -> list[str]:
        return _files_of(self._table(ref, version))

    def read(self, ref: TableRef, version: int, engine: Engine) -> ir.Table:
        table = self._table(ref, version)
        files = _files_of(table)
        if files and all("://" not in f for f in files):  # files at hand: checked against the log first (S7)
            _check_files(table, _uri(ref))
            return engine.read_parquet_files(files)
        return engine.from_arrow(read_delta_arrow(table))

    def current_version(self, ref: TableRef) -> int:
        """The table's newest Delta version."""
        return int(self._table(ref).version())

    def commits_after(self, ref: TableRef, version: int) -> list[Commit]:
        """The commits after Delta version ``version``."""
        return [
            Commit(int(e["version"]), str(e.get("operation")), e.get("userMetadata"))
            for e in self._table(ref).history() if int(e.get("version", -1)) > version
        ]

    def restore(self, ref: TableRef, version: int, user_metadata: str) -> None:
        from deltalake import CommitProperties

        self._table(ref).restore(version, commit_properties=CommitProperties(custom_metadata={"userMetadata": user_metadata}))

    def undo(self, ref: TableRef, version: int) -> bool:
        """Restore the table to the Delta version before ``version`` if ``version`` is still
        its newest, from one snapshot and without retrying over a commit that lands meanwhile
        (that commit is another writer's: it stays). Whether the undo was made."""
        from deltalake import CommitProperties

        table = self._table(ref)
        if int(table.version()) != version:
            return False
        table.restore(version - 1, commit_properties=CommitProperties(custom_metadata={"userMetadata": undo_metadata(version)}, max_commit_retries=0))
        return True

    def commit_time(self, ref: TableRef, version: int) -> datetime | None:
        for entry in self._table(ref).history():
            if int(entry.get("version", -1)) == version and entry.get("timestamp") is not None:
                return datetime.fromtimestamp(int(entry["timestamp"]) / 1000, tz=UTC)
        return None

    def properties(self, ref: TableRef) -> dict[str, str]:
        return dict(self._table(ref).metadata().configuration)

    # -- _mlforge_metadata ---------------------------------------------------------
    def metadata_rows(self, ref: TableRef) -> list[dict[str, Any]]:
        if not self.exists(ref):
            return []
        return read_delta_arrow(self._table(ref)).to_pylist()

    def upsert_metadata(self, ref: TableRef, row: dict[str, Any], *, replace: bool) -> None:
        from deltalake import DeltaTable, write_deltalake

        source = _metadata_arrow([row])
        if not self.exists(ref):
            try:
                write_deltalake(_uri(ref), source.slice(0, 0), mode="error", storage_options=ref.storage_options)
            except Exception:
                if not self.exists(ref):
                    raise
        table = DeltaTable(_uri(ref), storage_options=ref.storage_options)
        merge = table.merge(
            source, "t.feature = s.feature AND t.kind = s.kind" + ("" if replace else " AND t.version = s.version"),
            source_alias="s", target_alias="t",
        )
        if replace:
            merge = merge.when_matched_update_all()
        merge.when_not_matched_insert_all().execute()


class SparkTables:
    """Delta tables through a Spark session (classic or Spark Connect)."""

    def __init__(self, session: Any):
        self.session = session

    def _reader(self, ref: TableRef, version: int | None = None) -> Any:
        reader = self.session.read.format("delta")
        if version is not None:
            reader = reader.option("versionAsOf", version)
        return reader.load(ref.location) if ref.location else reader.table(_spark_name(ref.name))

    def _target(self, ref: TableRef) -> str:
        return f"delta.{quote_identifier(ref.location, 'spark')}" if ref.location else _spark_name(ref.name)

    def exists(self, ref: TableRef) -> bool:
        if ref.location:
            return os.path.isdir(os.path.join(_local(ref.location), "_delta_log")) if "://" not in ref.location or ref.location.startswith("file:") else _spark_path_exists(self.session, ref.location)
        return bool(self.session.catalog.tableExists(_spark_name(ref.name)))

    def write(self, ref: TableRef, staging_dir: str, *, schema: Any, properties: dict[str, str], rows: RangeFilter | None, user_metadata: str) -> int:
        from pyspark.sql import functions as F

        if _staged(staging_dir, schema).count_rows() == 0:  # Spark cannot read an empty directory
            from pyspark.sql.pandas.types import from_arrow_schema

            frame = self.session.createDataFrame([], schema=from_arrow_schema(schema))
        else:
            frame = self.session.read.parquet(os.path.abspath(staging_dir))
        key = "spark.databricks.delta.commitInfo.userMetadata"
        self.session.conf.set(key, user_metadata)
        try:
            if not self.exists(ref):
                self._create(ref, frame, {**TABLE_PROPERTIES, **properties})
            if rows is None:
                writer = frame.write.format("delta").mode("overwrite").option("overwriteSchema", "true")
                writer.save(ref.location) if ref.location else writer.saveAsTable(_spark_name(ref.name))
            else:
                condition = rows.sql()
                writer = frame.filter(F.expr(condition)).write.format("delta").mode("overwrite").option("replaceWhere", condition)
                writer.save(ref.location) if ref.location else writer.saveAsTable(_spark_name(ref.name))
        finally:
            self.session.conf.unset(key)
        history = self.session.sql(f"DESCRIBE HISTORY {self._target(ref)} LIMIT 20").select("version", "userMetadata").collect()
        for entry in history:
            if entry["userMetadata"] == user_metadata:
                return int(entry["version"])
        raise StoreError(f"the commit of {ref.name} is not in its history", fix="retry the build; another writer may have raced this one")

    def _create(self, ref: TableRef, frame: Any, properties: dict[str, str]) -> None:
        columns = ", ".join(f"{quote_identifier(f.name, 'spark')} {f.dataType.simpleString()}" for f in frame.schema.fields)
        props = ", ".join(f"'{k}' = '{v}'" for k, v in sorted(properties.items()))
        tail = f" TBLPROPERTIES ({props})" if props else ""
        if not ref.location:
            self.session.sql(f"CREATE SCHEMA IF NOT EXISTS {_spark_name(ref.name.rsplit('.', 1)[0])}")
        self.session.sql(f"CREATE TABLE IF NOT EXISTS {self._target(ref)} ({columns}) USING DELTA{tail}")

    def read(self, ref: TableRef, version: int, engine: Engine) -> ir.Table:
        return engine.from_native(self._reader(ref, version))

    def files(self, ref: TableRef, version: int) -> list[str]:
        raise StoreError("Spark-managed tables are read through Spark", fix="read with engine='pyspark'")

    def current_version(self, ref: TableRef) -> int:
        """The table's newest Delta version."""
        return int(self.session.sql(f"DESCRIBE HISTORY {self._target(ref)} LIMIT 1").collect()[0]["version"])

    def commits_after(self, ref: TableRef, version: int) -> list[Commit]:
        """The commits after Delta version ``version``."""
        history = self.session.sql(f"DESCRIBE HISTORY {self._target(ref)}").filter(f"version > {int(version)}")
        return [Commit(int(r["version"]), str(r["operation"]), r["userMetadata"]) for r in history.select("version", "operation", "userMetadata").collect()]

    def undo(self, ref: TableRef, version: int) -> bool:
        """Restore the table to the Delta version before ``version`` if ``version`` is still
        its newest (Delta's optimistic concurrency fails the restore over a commit that lands
        meanwhile). Whether the undo was made."""
        if self.current_version(ref) != version:
            return False
        self.restore(ref, version - 1, undo_metadata(version))
        return True

    def restore(self, ref: TableRef, version: int, user_metadata: str) -> None:
        key = "spark.databricks.delta.commitInfo.userMetadata"
        self.session.conf.set(key, user_metadata)
        try:
            self.session.sql(f"RESTORE TABLE {self._target(ref)} TO VERSION AS OF {int(version)}")
        finally:
            self.session.conf.unset(key)

    def commit_time(self, ref: TableRef, version: int) -> datetime | None:
        rows = self.session.sql(f"DESCRIBE HISTORY {self._target(ref)}").filter(f"version = {int(version)}").select("timestamp").collect()
        if not rows:
            return None
        stamp = rows[0]["timestamp"]
        return stamp.replace(tzinfo=UTC) if stamp.tzinfo is None else stamp

    def properties(self, ref: TableRef) -> dict[str, str]:
        rows = self.session.sql(f"SHOW TBLPROPERTIES {self._target(ref)}").collect()
        return {r["key"]: r["value"] for r in rows}

    # -- _mlforge_metadata ---------------------------------------------------------
    def metadata_rows(self, ref: TableRef) -> list[dict[str, Any]]:
        if not self.exists(ref):
            return []
        return [r.asDict() for r in self._reader(ref).collect()]

    def upsert_metadata(self, ref: TableRef, row: dict[str, Any], *, replace: bool) -> None:
        source = self._row_frame(row)
        if not self.exists(ref):
            self._create(ref, source, {})
        view = f"mlforge_meta_{row['token']}"
        source.createOrReplaceTempView(view)
        on = "t.feature = s.feature AND t.kind = s.kind" + ("" if replace else " AND t.version = s.version")
        matched = " WHEN MATCHED THEN UPDATE SET *" if replace else ""
        self.session.sql(f"MERGE INTO {self._target(ref)} t USING {view} s ON {on}{matched} WHEN NOT MATCHED THEN INSERT *")

    def _row_frame(self, row: dict[str, Any]) -> Any:
        schema = "feature string, kind string, version string, delta_version bigint, metadata string, token string, recorded_at timestamp"
        return self.session.createDataFrame([tuple(row[c] for c in METADATA_COLUMNS)], schema)


def _staged(staging_dir: str, schema: Any) -> Any:
    """The staged Parquet files as a dataset; with no files, an empty one of ``schema``."""
    import pyarrow.dataset as ds

    files = parquet_files(staging_dir)
    return ds.dataset(files, format="parquet") if files else ds.dataset([], schema=schema)


def _arrow_range(rows: RangeFilter) -> Any:
    import pyarrow as pa
    import pyarrow.dataset as ds

    condition = None
    for op, bound in ((">=", rows.since), ("<", rows.until)):
        if bound is None:
            continue
        value = pa.scalar(datetime.fromtimestamp(bound, tz=UTC), type=pa.timestamp("us", tz="UTC"))
        part = ds.field(rows.column) >= value if op == ">=" else ds.field(rows.column) < value
        condition = part if condition is None else condition & part
    if rows.with_nulls and condition is not None:
        condition = condition | ds.field(rows.column).is_null()
    return condition


def _files_of(table: Any) -> list[str]:
    """A Delta version's data files: local paths, or URIs of remote storage."""
    return [_local(u) for u in table.file_uris()]


def _check_files(table: Any, root: str) -> None:
    """Check a Delta version's local data files against its log, as verified reads check a
    version's files against its record (S7): each file the log adds is present, of the size
    and (where the log has statistics) the row count it recorded.

    Raises:
        DamagedFile: the first file that is not as recorded.
    """
    from urllib.parse import unquote

    import pyarrow as pa
    import pyarrow.parquet as pq

    for action in pa.table(table.get_add_actions(flatten=True)).to_pylist():
        name = unquote(action["path"])
        path = os.path.join(root, name)
        try:
            size = os.path.getsize(path)
        except OSError:
            raise DamagedFile(name, "is missing") from None
        if action.get("size_bytes") is not None and size != action["size_bytes"]:
            raise DamagedFile(name, f"has {size} bytes where the Delta log says {action['size_bytes']}")
        recorded = action.get("num_records")
        if recorded is not None:
            try:
                rows = pq.read_metadata(path).num_rows
            except (OSError, pa.ArrowException) as exc:
                raise DamagedFile(name, f"is not a readable Parquet file ({exc})") from None
            if rows != recorded:
                raise DamagedFile(name, f"has {rows} rows where the Delta log says {recorded} (replaced by another file)")


class DamagedFile(Exception):
    """A data file of a Delta version that differs from its log (turned into
    :class:`~mlforge.errors.CorruptVersion`, with the feature and version, by the store)."""

    def __init__(self, name: str, problem: str):
        super().__init__(f"data file {name!r} {problem}")
        self.name, self.problem = name, problem


def _uri(ref: TableRef) -> str:
    if not ref.location:
        raise StoreError(f"table {ref.name} has no storage location", fix="give UnityCatalogStore a storage_root or use engine='pyspark'")
    return _local(ref.location)


def _local(uri: str) -> str:
    return uri[len("file://"):] if uri.startswith("file://") else uri


def spark_has_delta(session: Any) -> bool:
    """Whether ``session`` can read and write Delta tables.

    Resolving the ``delta`` data source of a path that does not exist costs no job: with
    Delta on the classpath Spark says the path is missing (or not a Delta table), without
    it ``DATA_SOURCE_NOT_FOUND``.
    """
    try:
        session.read.format("delta").load("/nonexistent/mlforge-delta-probe").schema  # noqa: B018 - analysis only
    except Exception as exc:
        text = str(exc)
        return not ("DATA_SOURCE_NOT_FOUND" in text or "Failed to find the data source: delta" in text)
    return True


def delta_missing(where: str) -> StoreError:
    """The error for a Spark session without Delta Lake (instead of Py4J's own)."""
    return StoreError(
        "the Spark session has no Delta Lake (DATA_SOURCE_NOT_FOUND: delta): the Unity Catalog store writes Delta tables through Spark",
        where=where,
        fix=delta_jars_hint(),
    )


def _spark_path_exists(session: Any, location: str) -> bool:
    try:
        session.read.format("delta").load(location).limit(0).collect()
    except Exception:
        return False
    return True
