"""``UnityCatalogStore``: every feature is a Delta table ``catalog.schema.feature`` (S6).

Semver versions map to Delta versions in one table, ``catalog.schema._mlforge_metadata``:
a ``version`` row per published version (its Delta version and mlforge metadata) and a
``latest`` row per feature. Every data commit also carries
``{"mlforge_version": ..., "token": ...}`` as its Delta ``userMetadata``, so
``DESCRIBE HISTORY`` shows which build wrote it. Reading a pinned version is Delta time
travel (``versionAsOf``); rollback restores the table to that version's Delta version.

Two data paths behind the one store (see docs/databricks.md):

* **Spark**, when the build's engine is PySpark: by table name when the session knows
  the catalog (a Databricks cluster or Databricks Connect), else by storage location.
* **delta-rs**, with any other engine: by storage location, with short-lived credentials
  that Unity Catalog vends through ``databricks-sdk`` (``temporary_table_credentials``);
  new tables go under ``storage_root`` and are registered as external tables.

A build stages its Parquet files first (locally, or under ``staging_dir``, e.g. a
``/Volumes/...`` path on a cluster); only then is the Delta commit made, so a failed
build leaves the table and its metadata untouched (E3). A retried publish of the same
build finds its own metadata row (matched on feature, kind and version) and adds none.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
import uuid
import warnings
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from mlforge.errors import (
    ConcurrentPublish,
    ConfigError,
    CorruptVersion,
    DefinitionError,
    MlforgeError,
    StoreError,
)
from mlforge.offline.base import Staging, StoreCapabilities, resolve_version
from mlforge.offline.delta_tables import (
    ROWS_KEPT_OPERATIONS,
    DamagedFile,
    RangeFilter,
    RustTables,
    SparkTables,
    TableRef,
    delta_missing,
    holds_rows_of,
    metadata_row,
    spark_has_delta,
)
from mlforge.records import VersionRecord
from mlforge.versioning import sort_versions

if TYPE_CHECKING:
    from collections.abc import Iterable

    import ibis.expr.schema as sch
    import ibis.expr.types as ir
    import pyarrow as pa

    from mlforge.engines.base import Engine

log = logging.getLogger(__name__)

METADATA_TABLE = "_mlforge_metadata"
METADATA_SCHEMA = {"feature": "string", "kind": "string", "version": "string", "delta_version": "int64", "metadata": "string", "token": "string", "recorded_at": "timestamp[UTC]"}
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")
#: Characters Spark's Delta writer refuses in column names of a table without column mapping
#: (``DELTA_INVALID_CHARACTERS_IN_COLUMN_NAMES``); delta-rs stores them.
SPARK_REFUSED_CHARACTERS = " ,;{}()\n\t="
#: Delta's defaults: files of removed rows are kept 7 days, the log 30 days.
DEFAULT_RETENTION = {"delta.deletedFileRetentionDuration": "interval 7 days", "delta.logRetentionDuration": "interval 30 days"}


class RetentionWarning(UserWarning):
    """A pinned version is older than its table's retention: VACUUM may have removed it."""


class UnityCatalogStore:
    """Feature versions as Delta tables in Unity Catalog.

    Args:
        catalog: the Unity Catalog catalog (``main``; ``spark_catalog`` for a local Spark).
        schema: the schema holding one table per feature and ``_mlforge_metadata``.
        storage_root: where new external tables go when not written by name
            (``{storage_root}/{catalog}/{schema}/{feature}``)
            (``s3://bucket/features``, ``abfss://...``, ``file:///tmp/uc``).
        client: a ``databricks.sdk.WorkspaceClient``; default: the SDK's own auth chain
            (``DATABRICKS_HOST``/``DATABRICKS_TOKEN``, ``~/.databrickscfg``) when it is set up.
        staging_dir: where builds stage Parquet files (must be visible to Spark's executors
            on a cluster, e.g. ``/Volumes/main/features/staging``); default: a local temp dir.
    """

    kind = "unity-catalog"
    #: A table store: an incremental build reads the previous version as a table and the
    #: store replaces the range; Delta's own history keeps the files, so ``sync`` has
    #: nothing to restore.
    capabilities: ClassVar[StoreCapabilities] = StoreCapabilities(month_files=False, restores_data=False)

    def __init__(self, catalog: str, schema: str = "features", *, storage_root: str | None = None, client: Any = None, staging_dir: str | None = None, profile: str | None = None):
        for label, value in (("catalog", catalog), ("schema", schema)):
            if not isinstance(value, str) or not _IDENTIFIER.match(value):
                raise ConfigError(f"UnityCatalogStore {label} {value!r} is not a valid identifier", fix="use letters, digits and underscores, e.g. catalog='main', schema='features'")
        self.catalog, self.schema = catalog, schema
        self.storage_root = storage_root.rstrip("/") if storage_root else None
        self.staging_dir = staging_dir
        self.profile = profile
        self._client = client
        self._engine: Engine | None = None
        self._catalogs: dict[int, set[str]] = {}
        self._delta: dict[int, bool] = {}
        self._registered: set[str] = set()

    def __repr__(self) -> str:
        return f"UnityCatalogStore(catalog={self.catalog!r}, schema={self.schema!r})"

    # -- addressing ----------------------------------------------------------------
    def table_name(self, feature: str) -> str:
        return f"{self.catalog}.{self.schema}.{feature}"

    def use_engine(self, engine: Engine) -> None:
        """Builds and reads call this with their engine: PySpark selects the Spark path."""
        self._engine = engine

    def check_columns(self, feature: str, schema: sch.Schema) -> None:
        """Delta has no unsigned integer types, and Spark's Delta writer refuses some
        characters in column names: both are refused here, before the build computes
        anything, rather than by the writer after it (E5)."""
        where = f"the output of feature {feature!r} ({self.table_name(feature)})"
        for name, dtype in schema.items():
            if dtype.is_unsigned_integer():
                raise DefinitionError(
                    f"column {name!r} is {dtype} and Delta tables have no unsigned integer types",
                    where=where,
                    fix=f"cast it to a signed type in the feature function, e.g. t.mutate({name}=t[{name!r}].cast('int64')) (a LocalStore keeps unsigned columns)",
                )
        if self._session() is None:
            return  # delta-rs stores every name
        for name in schema:
            refused = sorted({c for c in name if c in SPARK_REFUSED_CHARACTERS})
            if refused:
                raise DefinitionError(
                    f"column name {name!r} contains {', '.join(map(repr, refused))}, which Spark's Delta writer refuses in column names",
                    where=where,
                    fix="rename the column in the feature function (e.g. t.rename(amount_usd='amount (usd)')), or build with engine='duckdb' or 'polars', whose Delta writer keeps the name",
                )

    def _session(self) -> Any:
        if self._engine is not None:
            return self._engine.spark_session()
        if self.storage_root or self._client is not None or os.environ.get("DATABRICKS_HOST"):
            return None
        try:  # a Databricks notebook: the active session knows the catalog
            from pyspark.sql import SparkSession
        except ImportError:
            return None
        return SparkSession.getActiveSession()

    def _by_name(self, session: Any) -> bool:
        if session is None:
            return False
        key = id(session)
        if key not in self._catalogs:
            try:
                self._catalogs[key] = {c.name for c in session.catalog.listCatalogs()}
            except Exception:  # an old Spark without listCatalogs
                self._catalogs[key] = {"spark_catalog"}
        return self.catalog in self._catalogs[key]

    @property
    def client(self) -> Any:
        if self._client is None:
            if not (os.environ.get("DATABRICKS_HOST") or self.profile or os.path.exists(os.path.expanduser("~/.databrickscfg"))):
                return None
            try:
                from databricks.sdk import WorkspaceClient
            except ImportError:
                from mlforge.errors import missing_extra

                raise missing_extra("databricks.sdk", "databricks") from None
            self._client = WorkspaceClient(profile=self.profile) if self.profile else WorkspaceClient()
        return self._client

    def _ref(self, table: str, *, for_engine: bool) -> tuple[Any, TableRef]:
        """The backend and address of ``table``: Spark by name, else by location."""
        session = self._session()
        full = self.table_name(table)
        if self._by_name(session):
            return self._spark(session, full), TableRef(full)
        location, options = self._location(table)
        if session is not None and for_engine:
            return self._spark(session, full), TableRef(full, location)
        return RustTables(), TableRef(full, location, options)

    def _spark(self, session: Any, table: str) -> SparkTables:
        """Spark's tables, once the session is known to have Delta Lake (else a clear error,
        not Py4J's ``DATA_SOURCE_NOT_FOUND`` half-way through a publish)."""
        key = id(session)
        if key not in self._delta:
            self._delta[key] = spark_has_delta(session)
        if not self._delta[key]:
            raise delta_missing(f"Delta table {table}")
        return SparkTables(session)

    def _location(self, table: str) -> tuple[str, dict[str, str] | None]:
        from mlforge.offline import uc_catalog

        full = self.table_name(table)
        client = self.client
        info = uc_catalog.get_table(client, full) if client is not None else None
        if info is not None and info.storage_location:
            return info.storage_location, uc_catalog.table_credentials(client, info)
        if self.storage_root is None:
            raise StoreError(
                f"cannot locate the Delta table {full}",
                fix="build with engine='pyspark' on a workspace where the catalog exists, or give UnityCatalogStore a storage_root for new external tables",
            )
        # The catalog is part of the path: two catalogs (dev, prod) sharing a storage root
        # must not read and write each other's tables (S6: a table is catalog.schema.feature).
        location = f"{self.storage_root}/{self.catalog}/{self.schema}/{table}"
        return location, uc_catalog.path_credentials(client, location) if client is not None else None

    def _register(self, feature: str, ref: TableRef, schema: Mapping[str, str], properties: dict[str, str]) -> None:
        if ref.location is None or self.client is None or feature in self._registered:
            return
        self._registered.add(feature)
        from mlforge.offline import uc_catalog

        uc_catalog.register_table(self.client, self.catalog, self.schema, feature, ref.location, schema, properties)

    # -- metadata ------------------------------------------------------------------
    def _rows(self) -> list[dict[str, Any]]:
        tables, ref = self._ref(METADATA_TABLE, for_engine=False)
        try:
            return tables.metadata_rows(ref)
        except _read_errors() as exc:  # its files removed or damaged: E1, not a raw library error
            raise StoreError(
                f"{self.table_name(METADATA_TABLE)}, the store's record of versions and latest pointers, cannot be read ({type(exc).__name__}: {exc})",
                where=f"schema {self.catalog}.{self.schema}",
                fix=f"restore it from its Delta history (`RESTORE TABLE {self.table_name(METADATA_TABLE)} TO VERSION AS OF N`, N from `DESCRIBE HISTORY`); "
                "the feature tables are intact and keep their own history",
            ) from exc

    def _version_rows(self, feature: str) -> dict[str, dict[str, Any]]:
        return {r["version"]: r for r in self._rows() if r["feature"] == feature and r["kind"] == "version"}

    def list_features(self) -> list[str]:
        return sorted({r["feature"] for r in self._rows() if r["kind"] == "version"})

    def list_versions(self, feature: str) -> list[str]:
        return sort_versions(list(self._version_rows(feature)))

    def latest_version(self, feature: str) -> str | None:
        for r in self._rows():
            if r["feature"] == feature and r["kind"] == "latest":
                return r["version"]
        return None

    def read_record(self, feature: str, version: str | None = None) -> VersionRecord:
        version = resolve_version(self, feature, version)
        row = self._version_rows(feature)[version]
        return VersionRecord.from_dict(json.loads(row["metadata"]))

    def read_metadata(self, feature: str, version: str | None = None) -> dict[str, Any]:
        """The record in its JSON form, with the Delta table and its Delta version."""
        return self.read_record(feature, version).to_dict()

    # -- writing -------------------------------------------------------------------
    def stage(self, feature: str) -> Staging:
        root = Path(self.staging_dir or Path(tempfile.gettempdir()) / "mlforge-uc-staging") / f"{self.catalog}.{self.schema}" / feature
        token = uuid.uuid4().hex
        data_dir = root / f".staging-{token}" / "data"
        data_dir.mkdir(parents=True)
        return Staging(feature=feature, data_dir=str(data_dir), token=token)

    def discard(self, staging: Staging) -> None:
        shutil.rmtree(Path(staging.data_dir).parent, ignore_errors=True)

    def publish(self, staging: Staging, version: str, record: VersionRecord | Mapping[str, Any]) -> str:
        """Commit the staged files as one Delta version, record it, then move ``latest``;
        returns ``version``.

        Raises:
            ConcurrentPublish: another build recorded ``version`` first.
        """
        feature = staging.feature
        if not isinstance(record, VersionRecord):
            record = VersionRecord.from_dict(record)
        try:
            existing = self._version_rows(feature).get(version)
            if existing is not None and existing["token"] != staging.token:
                raise ConcurrentPublish(f"version {version} of {feature!r} was published by another build", where=self.table_name(feature), fix="rebuild: the next build gets the next version")
            delta_version = None if existing is None else existing["delta_version"]  # a retried publish: already committed
            if existing is None:
                tables, ref = self._ref(feature, for_engine=True)
                user_metadata = json.dumps({"mlforge_version": version, "token": staging.token}, sort_keys=True)
                rows = _range(record) if tables.exists(ref) else None
                if rows is not None:
                    self._check_range_base(feature, tables, ref)
                from mlforge.manifest import arrow_schema

                schema = arrow_schema(dict(record.schema))
                delta_version = tables.write(ref, staging.data_dir, schema=schema, properties=_properties(record), rows=rows, user_metadata=user_metadata)
                try:
                    self._record(feature, ref, version, record, delta_version, staging.token)
                except BaseException as exc:
                    self._undo(feature, tables, ref, delta_version, exc)
                    raise
        finally:
            self.discard(staging)
        self._point(feature, version, staging.token, delta_version)
        return version

    def _record(self, feature: str, ref: TableRef, version: str, record: VersionRecord, delta_version: int, token: str) -> None:
        """Register the table and record ``version`` at ``delta_version`` in ``_mlforge_metadata``."""
        self._register(feature, ref, record.schema, _properties(record))
        recorded = record.with_changes(format="delta", extra={**record.extra, "table": self.table_name(feature), "delta_version": delta_version})
        meta_tables, meta_ref = self._ref(METADATA_TABLE, for_engine=False)
        meta_tables.upsert_metadata(meta_ref, metadata_row(feature, "version", version, delta_version, recorded.to_dict(), token), replace=False)
        self._register(METADATA_TABLE, meta_ref, METADATA_SCHEMA, {})
        if self._version_rows(feature)[version]["token"] != token:
            raise ConcurrentPublish(f"version {version} of {feature!r} was recorded by another build", where=self.table_name(feature), fix="rebuild: the next build gets the next version")

    def _undo(self, feature: str, tables: Any, ref: TableRef, delta_version: int, failure: BaseException) -> None:
        """Take back a failed build's Delta commit, so plain readers of the table see what
        they saw before it (E3): restore the table to the Delta version before the commit,
        unless another writer has committed since (then the commit stays, and range builds
        refuse to go on over it). A commit that stays is said on ``failure``."""
        try:
            undone = tables.undo(ref, delta_version)
            problem = None if undone else "another commit followed it"
        except Exception as exc:  # the workspace that failed the build may be down still; or a commit landed meanwhile
            problem = f"taking it back failed: {exc}"
        if problem is None:
            return
        more = f"its Delta version {delta_version} stays in {self.table_name(feature)} ({problem}): plain readers see its rows, and range builds refuse to go on over it"
        fix = f"rewrite the table: `mlforge build --features {feature} --full-refresh --force` (a rebuild of unchanged inputs is skipped otherwise); or restore latest's rows: `mlforge rollback {feature} VERSION --yes` with latest's VERSION"
        if isinstance(failure, MlforgeError):
            failure.amend(more, fix)
        else:
            failure.add_note(f"mlforge: {more}; {fix}")

    def _check_range_base(self, feature: str, tables: Any, ref: Any) -> None:
        """A range build replaces its rows in the table as it is now: refuse when the table
        holds commits past the Delta version ``latest`` names that changed its rows (another
        writer's, or a failed build's that could not be taken back), which the new version
        would otherwise carry (I1, S7)."""
        rows = [r for r in self._rows() if r["feature"] == feature]
        pointer = next((r for r in rows if r["kind"] == "latest"), None)
        if pointer is None:
            return
        latest, expected = pointer["version"], pointer.get("delta_version")
        if expected is None:  # written before pointers recorded it (a rollback's RESTORE is unknown): nothing to check against
            return
        commits = tables.commits_after(ref, int(expected))
        if not holds_rows_of(commits, int(expected)):
            changed = [c.operation for c in commits if c.operation.upper() not in ROWS_KEPT_OPERATIONS]
            raise StoreError(
                f"the table {self.table_name(feature)} is at Delta version {tables.current_version(ref)}, but latest ({latest}) is Delta version {expected}: "
                f"it holds commits mlforge did not record ({', '.join(dict.fromkeys(changed))}: another writer's, or a failed build's that could not be taken back), "
                "which a range build would carry into the new version",
                where=self.table_name(feature),
                fix=f"rewrite the table from the source: `mlforge build --features {feature} --full-refresh --force` (a rebuild of unchanged inputs is skipped otherwise); or restore it to {latest}: `mlforge rollback {feature} {latest} --yes`",
            )

    def adopt_commit(self, feature: str, version: str) -> str | None:
        """``None``: the catalog's pointer rows do not say whether a rollback hid a version,
        so a build equal to a version above latest publishes its rows again (S2, S8)."""
        return None

    def set_latest(self, feature: str, version: str) -> None:
        """Point ``latest`` at ``version`` and restore the table to its Delta version, so
        plain readers of ``catalog.schema.feature`` see the same rows as mlforge."""
        row = self._version_rows(feature).get(version)
        if row is None:
            raise StoreError(f"feature {feature!r} has no version {version}", fix="use `mlforge list versions`")
        tables, ref = self._ref(feature, for_engine=True)
        target, now = int(row["delta_version"]), tables.current_version(ref)
        if now != target:  # Delta refuses a restore onto the current version
            tables.restore(ref, target, json.dumps({"mlforge_rollback_to": version}))
            now = tables.current_version(ref)
        self._point(feature, version, uuid.uuid4().hex, now)

    def _point(self, feature: str, version: str, token: str, delta_version: int | None) -> None:
        """Move ``latest`` to ``version``, recording the Delta version of the table that
        holds its rows (the version's own commit, or the restore of a rollback)."""
        meta_tables, meta_ref = self._ref(METADATA_TABLE, for_engine=False)
        meta_tables.upsert_metadata(meta_ref, metadata_row(feature, "latest", version, delta_version, None, token), replace=True)

    def replace_table(self, table: str, batches: Iterable[pa.RecordBatch], schema: pa.Schema, *, keys: list[str]) -> str:
        """Make ``batches`` the whole content of the plain (unversioned) Delta table
        ``catalog.schema.table`` -- e.g. what an online store publishes -- and return its name.

        The batches are staged as Parquet first, so a failure leaves the table as it was.
        """
        import ibis
        import pyarrow.parquet as pq

        from mlforge.manifest import canonical_schema

        staging = self.stage(table)
        try:
            with pq.ParquetWriter(f"{staging.data_dir}/part-0.parquet", schema) as writer:
                for batch in batches:
                    writer.write_batch(batch)
            tables, ref = self._ref(table, for_engine=False)
            user_metadata = json.dumps({"mlforge_table": table, "token": staging.token}, sort_keys=True)
            properties = {"mlforge.keys": ",".join(keys), "mlforge.timestamp": ""}
            tables.write(ref, staging.data_dir, schema=schema, properties=properties, rows=None, user_metadata=user_metadata)
            self._register(table, ref, canonical_schema(ibis.Schema.from_pyarrow(schema)), properties)
        finally:
            self.discard(staging)
        return self.table_name(table)

    # -- reading -------------------------------------------------------------------
    def read(self, feature: str, engine: Engine, version: str | None = None) -> ir.Table:
        pinned = version is not None
        version = resolve_version(self, feature, version)
        delta_version = int(self._version_rows(feature)[version]["delta_version"])
        previous, self._engine = self._engine, engine
        try:
            tables, ref = self._ref(feature, for_engine=True)
            if pinned:
                self._check_retention(tables, ref, feature, version, delta_version)
            try:
                return tables.read(ref, delta_version, engine)
            except DamagedFile as exc:
                problem = str(exc)
            except _read_errors() as exc:  # the Delta log itself (a removed commit, vacuumed files): E1, not a raw library error
                problem = f"cannot be read ({type(exc).__name__}: {exc})"
            raise CorruptVersion(
                f"{self.table_name(feature)} at Delta version {delta_version} (version {version}): {problem}; mlforge will not read a damaged version",
                where=f"feature {feature!r}, version {version}",
                fix=f"rebuild the feature (`mlforge build --features {feature} --full-refresh --force` writes a new, complete version) "
                f"or point latest at an intact version (`mlforge rollback {feature} VERSION`)",
            )
        finally:
            self._engine = previous

    def data_files(self, feature: str, version: str | None = None) -> list[str]:
        version = resolve_version(self, feature, version)
        tables, ref = self._ref(feature, for_engine=False)
        return tables.files(ref, int(self._version_rows(feature)[version]["delta_version"]))

    def _check_retention(self, tables: Any, ref: TableRef, feature: str, version: str, delta_version: int) -> None:
        committed = tables.commit_time(ref, delta_version)
        if committed is None:
            return
        props = {**DEFAULT_RETENTION, **tables.properties(ref)}
        keep = min(_interval_seconds(props[k]) for k in DEFAULT_RETENTION)
        age = (datetime.now(tz=UTC) - committed).total_seconds()
        if age > keep:
            message = (
                f"{feature} {version} (Delta version {delta_version}, {age / 86400:.1f} days old) is older than "
                f"the retention of {ref.name} ({keep / 86400:g} days): VACUUM may have removed its files"
            )
            log.warning(message)
            warnings.warn(message, RetentionWarning, stacklevel=3)


def _read_errors() -> tuple[type[BaseException], ...]:
    """What reading a damaged Delta table raises in delta-rs and pyarrow (not mlforge's own
    errors, nor its bugs)."""
    import pyarrow as pa
    from deltalake.exceptions import DeltaError

    return (OSError, pa.ArrowException, DeltaError)


def _properties(record: VersionRecord) -> dict[str, str]:
    return {"mlforge.keys": ",".join(record.keys), "mlforge.timestamp": record.timestamp or ""}


def _range(record: VersionRecord) -> RangeFilter | None:
    """The rows an incremental build replaces; ``None`` for a full build."""
    built, ts = record.build_range, record.timestamp
    if ts is None or (built.since is None and built.until is None):
        return None
    return RangeFilter(ts, built.since, built.until, with_nulls=not record.metrics)


def _interval_seconds(text: str) -> float:
    """Seconds of a Delta interval property (``interval 7 days``, ``30 days``)."""
    units = {"second": 1, "minute": 60, "hour": 3600, "day": 86400, "week": 604800}
    match = re.search(r"(\d+)\s*(second|minute|hour|day|week)s?", text.lower())
    if match is None:
        return float("inf")
    return int(match.group(1)) * units[match.group(2)]
