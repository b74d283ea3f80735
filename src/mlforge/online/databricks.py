"""``DatabricksOnlineStore``: features served from Databricks' Lakebase-backed online feature store.

Databricks retired legacy Online Tables on 2026-01-15; their successor is the online feature
store: an *online store* (a Lakebase PostgreSQL instance) into which Unity Catalog tables are
*published* by a managed sync pipeline. So this store is not written row by row. On
``build --online`` the publisher calls :meth:`DatabricksOnlineStore.publish_table`, which

1. gives the source table its ``PRIMARY KEY (keys, timestamp TIMESERIES)`` constraint if it
   has none (``table_constraints.create``), creates the online store
   (``feature_store.create_online_store``) or reuses it (409),
2. publishes the offline Unity Catalog table ``catalog.schema.feature`` of the
   :class:`~mlforge.offline.unity_catalog.UnityCatalogStore` to the online table
   ``{catalog}.{schema}.{feature}`` (``feature_store.publish_table`` with ``PublishSpec``;
   ``sync_mode`` snapshot / triggered / continuous is the publish mode), and
3. on a re-publish of an existing online table starts a refresh
   (``pipelines.start_update``) and waits, bounded by ``sync_timeout``, until the sync
   pipeline COMPLETES (a FAILED update is an :class:`~mlforge.errors.OnlineStoreError`; the
   online table keeps serving its previous rows). A continuous pipeline follows the source by
   itself: mlforge waits only for its initial snapshot.

The pipeline keeps the newest row per primary key (the feature's keys; the timestamp column
is the time-series key).

**What ``build --online`` publishes (rule O1).** The newest row per key of the offline table
is not the value a read at ``T`` needs (it lies up to a window after the entity's last
event). So ``build --online`` calls :meth:`DatabricksOnlineStore.publish_values` instead: the
per-entity values of :mod:`mlforge.online.publication` (a metric feature's tail of grid
rows, another feature's newest row) and the publication record become the rows of a plain
Unity Catalog Delta table ``{offline catalog}.{offline schema}._mlforge_online_{feature}``
with two text columns, ``mlforge_key`` (``e`` + the entity's key text of
:func:`~mlforge.online.base.key_text`, or ``r`` for the record; the PRIMARY KEY) and
``mlforge_value`` (the shared JSON codec), written in full on every publish (an overwrite:
entities that left are deleted by the sync too). That table is published as the online
table ``{catalog}.{schema}.{feature}``; an online table that synced from another source
(the offline table, published by an older mlforge) is deleted and re-created first.

Reads are batched point lookups over PostgreSQL (psycopg) against ``"{schema}"."{feature}"``
in database ``pg_database`` of the instance's ``read_write_dns``, as the workspace user with
a short-lived token from ``database.generate_database_credential``: for published values, one
``SELECT ... UNION ALL ...`` for every requested feature, its keys and its record; for a
table published with :meth:`publish_table` (plain columns), one ``SELECT`` per feature. An
expired token is refreshed once, transparently; that side lives in
:mod:`mlforge.online.lakebase`. ``databricks-sdk`` and ``psycopg`` are imported on first use.
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
import warnings
from collections.abc import Callable, Iterable
from typing import Any, ClassVar

from mlforge.errors import ConfigError, OnlineStoreError, PublishOnlyError, missing_extra
from mlforge.online.base import OnlineCapabilities, chunked, decode_row, encode_row, key_text
from mlforge.online.lakebase import POOL_SIZE as POOL_SIZE  # re-exported: the pool's size
from mlforge.online.lakebase import LakebaseReader, NoOnlineStore, coerce_key
from mlforge.online.publication import PUBLICATIONS

log = logging.getLogger(__name__)

SYNC_MODES = {"snapshot": "SNAPSHOT", "triggered": "TRIGGERED", "continuous": "CONTINUOUS"}
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_\-]*$")
_DONE = {"COMPLETED"}
_BROKEN = {"FAILED", "CANCELED"}
#: The Unity Catalog table ``build --online`` publishes a feature's values from.
SERVING_TABLE = "_mlforge_online_{feature}"
KEY_COLUMN, VALUE_COLUMN = "mlforge_key", "mlforge_value"
ENTITY_PREFIX, RECORD_KEY = "e", "r"
_CONTINUOUS_READY = {"SYNCED_TABLE_ONLINE", "SYNCED_TABLE_ONLINE_CONTINUOUS_UPDATE", "SYNCED_TABLE_ONLINE_NO_PENDING_UPDATE"}


def require_unity_catalog(offline_store: Any) -> None:
    """Databricks publishes online tables from Unity Catalog tables only."""
    if offline_store.kind != DatabricksOnlineStore.capabilities.fills_from_offline:
        raise ConfigError(
            f"DatabricksOnlineStore requires UnityCatalogStore as offline store, got {type(offline_store).__name__}",
            where="Definitions(offline_store=..., online_store=DatabricksOnlineStore(...))",
            fix="use offline_store=mlf.UnityCatalogStore('main') (KIND: unity-catalog in the profile), or another online store",
        )


class DatabricksOnlineStore:
    """Latest feature rows in a Databricks online feature store (Lakebase PostgreSQL).

    Args:
        catalog, schema: where the online tables are registered: ``catalog.schema.feature``.
        sync_mode: ``"snapshot"`` (copy once per publish), ``"triggered"`` (incremental refresh
            on each publish) or ``"continuous"`` (the pipeline follows the source).
        online_store: name of the online store (= its database instance); created if missing.
        capacity: its size when created (``CU_1``, ``CU_2``, ``CU_4``, ``CU_8``).
        client: a ``databricks.sdk.WorkspaceClient``; default: the SDK's auth chain (env,
            ``~/.databrickscfg`` profile ``profile``, notebook context).
        pg_port, pg_database, pg_sslmode: how to reach PostgreSQL on the instance.
        sync_timeout, poll_interval: how long to wait for a sync pipeline, and how often to look.
        legacy_online_tables: publish through the retired ``online_tables`` API instead (deprecated).

    Example:
        >>> store = DatabricksOnlineStore("main", sync_mode="continuous")
        >>> store.table_name("user_spend")
        'main.features_online.user_spend'
    """

    capabilities: ClassVar[OnlineCapabilities] = OnlineCapabilities(batched_reads=True, fills_from_offline="unity-catalog")

    kind = "databricks"

    def __init__(
        self,
        catalog: str,
        schema: str = "features_online",
        sync_mode: str = "triggered",
        *,
        online_store: str = "mlforge-online",
        capacity: str = "CU_1",
        client: Any = None,
        profile: str | None = None,
        pg_port: int = 5432,
        pg_database: str = "databricks_postgres",
        pg_sslmode: str = "prefer",
        connect_timeout: float = 10.0,
        sync_timeout: float = 1800.0,
        poll_interval: float = 5.0,
        legacy_online_tables: bool = False,
    ):
        for label, value in (("catalog", catalog), ("schema", schema), ("online_store", online_store)):
            if not isinstance(value, str) or not _NAME.match(value):
                raise ConfigError(f"DatabricksOnlineStore {label} {value!r} is not a valid name", where="DatabricksOnlineStore", fix="use letters, digits, '_' (and '-' for online_store), e.g. DatabricksOnlineStore('main')")
        mode = str(sync_mode).lower()
        if mode not in SYNC_MODES:
            raise ConfigError(f"unknown sync_mode {sync_mode!r}", where="DatabricksOnlineStore", fix=f"use one of {', '.join(SYNC_MODES)}")
        if legacy_online_tables:
            warnings.warn(
                "legacy Databricks Online Tables were retired on 2026-01-15; legacy_online_tables=True publishes through the "
                "deprecated online_tables API. Drop the option to use the Lakebase-backed online feature store.",
                DeprecationWarning,
                stacklevel=2,
            )
        self.catalog, self.schema, self.sync_mode = catalog, schema, mode
        self.online_store, self.capacity = online_store, capacity
        self.profile = profile
        self.pg_port, self.pg_database, self.pg_sslmode = int(pg_port), pg_database, pg_sslmode
        self.connect_timeout, self.sync_timeout, self.poll_interval = connect_timeout, float(sync_timeout), float(poll_interval)
        self.legacy_online_tables = legacy_online_tables
        self._client = client
        self._lakebase = LakebaseReader(
            online_store, schema, api=self._api, where=lambda: self.where,
            port=self.pg_port, database=pg_database, sslmode=pg_sslmode, connect_timeout=connect_timeout,
        )

    def __repr__(self) -> str:
        return f"DatabricksOnlineStore(catalog={self.catalog!r}, schema={self.schema!r}, sync_mode={self.sync_mode!r}, online_store={self.online_store!r})"

    @property
    def where(self) -> str:
        host = getattr(getattr(self._client, "config", None), "host", None) or "the default Databricks workspace"
        return f"online store {self.online_store!r} of {host}"

    def table_name(self, feature: str) -> str:
        return f"{self.catalog}.{self.schema}.{feature}"

    # -- SDK ----------------------------------------------------------------------------
    @property
    def client(self) -> Any:
        if self._client is None:
            try:
                from databricks.sdk import WorkspaceClient
            except ImportError:
                raise missing_extra("databricks-sdk", "databricks") from None
            try:
                self._client = WorkspaceClient(profile=self.profile)
            except ValueError as exc:  # the SDK's "cannot configure default credentials"
                raise OnlineStoreError(
                    f"cannot connect to a Databricks workspace: {exc}".splitlines()[0],
                    where=repr(self),
                    fix="set DATABRICKS_HOST and DATABRICKS_TOKEN (or another SDK auth), pass profile= for a ~/.databrickscfg profile, or client=WorkspaceClient(...)",
                ) from exc
        return self._client

    def _sdk(self, action: str, call: Callable[[], Any]) -> Any:
        try:
            return call()
        except OnlineStoreError:
            raise
        except Exception as exc:
            raise sdk_error(action, exc, self.where) from exc

    def _api(self, action: str, call: Callable[[Any], Any]) -> Any:
        """``call(client)`` for the Lakebase reader, with this store's SDK error handling."""
        return self._sdk(action, lambda: call(self.client))

    # Kept for callers (and tests) that reach into the store's PostgreSQL side.
    @property
    def _query(self) -> Callable[..., list[tuple]]:
        return self._lakebase.query

    @_query.setter
    def _query(self, run: Callable[..., list[tuple]]) -> None:
        self._lakebase.query = run  # type: ignore[method-assign]  # wraps every statement of the reader

    @property
    def _idle(self) -> list[Any]:
        return self._lakebase.idle

    # -- publishing ---------------------------------------------------------------------
    def publish_table(self, offline_store: Any, feature: str, version: str | None = None) -> int:
        """Publish the Unity Catalog table of ``feature`` to its online table; returns its row count.

        The sync copies the table's current Delta version, i.e. the version the last build
        wrote (``version`` is logged, not selected: Databricks publishes tables, not snapshots).
        """
        require_unity_catalog(offline_store)
        source, online_name = offline_store.table_name(feature), self.table_name(feature)
        started = time.perf_counter()
        if self.legacy_online_tables:
            self._publish_legacy(offline_store, feature, version, source, online_name)
            log.info("published %s to legacy online table %s (row count not available)", source, online_name)
            return 0
        if not self._has_primary_key(source):
            metadata = offline_store.read_metadata(feature, version)
            timestamp = metadata.get("timestamp")
            self._add_primary_key(source, f"{feature}_pk", list(metadata["keys"]), [timestamp] if timestamp else None)
        self._ensure_online_store()
        self._publish(source, online_name)
        self._lakebase.forget(feature)
        count = self._lakebase.count(feature)
        log.info("published %s (%s) to %s as %s: %d rows in %.1fs", source, version or "latest", self.online_store, online_name, count, time.perf_counter() - started)
        return count

    def publish_values(self, offline_store: Any, feature: str, key_columns: list[str], values: Iterable[dict[str, Any]], record: dict[str, Any]) -> int:
        """Publish one stored value per entity and the publication ``record`` of ``feature``
        (see the module docstring); returns the number of entities published.

        The values become the whole content of the Unity Catalog table
        ``_mlforge_online_{feature}`` beside the offline table, which is then published as
        the online table ``catalog.schema.feature``.
        """
        import pyarrow as pa

        require_unity_catalog(offline_store)
        if self.legacy_online_tables:
            raise ConfigError("legacy Databricks Online Tables cannot serve mlforge's published values", where=repr(self), fix="drop legacy_online_tables=True and publish to the online feature store")
        started = time.perf_counter()
        schema = pa.schema([pa.field(KEY_COLUMN, pa.string(), nullable=False), pa.field(VALUE_COLUMN, pa.string())])
        entities = 0

        def batches() -> Any:
            nonlocal entities
            yield pa.record_batch([pa.array([RECORD_KEY]), pa.array([encode_row(record)])], schema=schema)
            for chunk in chunked(values, 5_000):
                texts = [ENTITY_PREFIX + key_text({k: value[k] for k in key_columns}) for value in chunk]
                yield pa.record_batch([pa.array(texts), pa.array([encode_row(value) for value in chunk])], schema=schema)
                entities += len(chunk)

        source = offline_store.replace_table(SERVING_TABLE.format(feature=feature), batches(), schema, keys=[KEY_COLUMN])
        if not self._has_primary_key(source):
            self._add_primary_key(source, f"{feature}_online_pk", [KEY_COLUMN], None)
        self._ensure_online_store()
        self._publish(source, self.table_name(feature))
        self._lakebase.forget(feature)
        log.info("published %d entities of %s from %s to %s in %.1fs", entities, feature, source, self.table_name(feature), time.perf_counter() - started)
        return entities

    def _has_primary_key(self, source: str) -> bool:
        info = self._sdk(f"look up the source table {source}", lambda: self.client.tables.get(source))
        return any(c.primary_key_constraint is not None for c in info.table_constraints or [])

    def _add_primary_key(self, source: str, name: str, keys: list[str], timeseries: list[str] | None) -> None:
        """Databricks finds the entity and time-series columns of a published table in its
        ``PRIMARY KEY (keys, timestamp TIMESERIES)`` constraint."""
        from databricks.sdk.errors import ResourceConflict
        from databricks.sdk.service.catalog import PrimaryKeyConstraint, TableConstraint

        primary = PrimaryKeyConstraint(name=name, child_columns=keys, timeseries_columns=timeseries)
        try:
            self._sdk(f"add the primary key of {source}", lambda: self.client.table_constraints.create(full_name_arg=source, constraint=TableConstraint(primary_key_constraint=primary)))
        except OnlineStoreError as exc:
            if not isinstance(exc.__cause__, ResourceConflict):
                raise

    def _ensure_online_store(self) -> None:
        from databricks.sdk.errors import ResourceConflict
        from databricks.sdk.service.ml import OnlineStore

        try:
            self._sdk(f"create online store {self.online_store!r}", lambda: self.client.feature_store.create_online_store(OnlineStore(name=self.online_store, capacity=self.capacity)))
            log.info("created online store %s (%s)", self.online_store, self.capacity)
        except OnlineStoreError as exc:
            if not isinstance(exc.__cause__, ResourceConflict):
                raise
            log.debug("online store %s exists; reusing it", self.online_store)
        deadline = time.monotonic() + self.sync_timeout
        while True:
            state = self._sdk(f"get online store {self.online_store!r}", lambda: self.client.feature_store.get_online_store(self.online_store)).state
            if state is None or state.value == "AVAILABLE":
                return
            if time.monotonic() > deadline:
                raise OnlineStoreError(f"online store {self.online_store!r} is {state.value}, not AVAILABLE, after {self.sync_timeout:.0f}s", where=self.where, fix="check the online store in the workspace (Compute > Lakebase), or raise sync_timeout")
            time.sleep(self.poll_interval)

    def _publish(self, source: str, online_name: str) -> None:
        from databricks.sdk.service.ml import PublishSpec, PublishSpecPublishMode

        synced = self._synced_table(online_name)
        if synced is not None and synced.spec is not None and synced.spec.source_table_full_name not in (None, source):
            # Published from another table (an older mlforge published the offline table):
            # an online table syncs from one source, so make it anew from this one.
            log.info("online table %s syncs from %s; re-creating it from %s", online_name, synced.spec.source_table_full_name, source)
            self._sdk(f"delete online table {online_name}", lambda: self.client.feature_store.delete_online_table(online_name))
            synced = None
        existed = synced is not None
        spec = PublishSpec(online_store=self.online_store, online_table_name=online_name, publish_mode=PublishSpecPublishMode(SYNC_MODES[self.sync_mode]))
        published = self._sdk(f"publish {source} to {online_name}", lambda: self.client.feature_store.publish_table(source_table_name=source, publish_spec=spec))
        pipeline_id = published.pipeline_id
        if self.sync_mode == "continuous":
            if existed and "FAILED" in _state(synced):  # a stopped continuous pipeline: restart it
                self._sdk(f"restart {online_name}", lambda: self.client.pipelines.start_update(pipeline_id))
            self._wait_continuous(online_name, pipeline_id)
            return
        update_id = self._refresh(online_name, pipeline_id) if existed else self._latest_update(pipeline_id)
        if update_id is not None:
            self._wait_update(online_name, pipeline_id, update_id)

    def _latest_update(self, pipeline_id: str) -> str | None:
        latest = self._sdk(f"get sync pipeline {pipeline_id}", lambda: self.client.pipelines.get(pipeline_id)).latest_updates or []
        return latest[0].update_id if latest else None

    def _refresh(self, online_name: str, pipeline_id: str) -> str:
        """Start an update; when one is already running (409), let it finish and start again,
        so the refresh surely reads the version this build wrote."""
        from databricks.sdk.errors import ResourceConflict

        try:
            return self._sdk(f"refresh {online_name}", lambda: self.client.pipelines.start_update(pipeline_id)).update_id
        except OnlineStoreError as exc:
            running = self._latest_update(pipeline_id) if isinstance(exc.__cause__, ResourceConflict) else None
            if running is None:
                raise
        log.info("an update of %s is running; waiting for it before refreshing", online_name)
        with contextlib.suppress(OnlineStoreError):  # its failure is not ours: the new update decides
            self._wait_update(online_name, pipeline_id, running)
        return self._sdk(f"refresh {online_name}", lambda: self.client.pipelines.start_update(pipeline_id)).update_id

    def _synced_table(self, online_name: str) -> Any:
        from databricks.sdk.errors import NotFound

        try:
            return self.client.database.get_synced_database_table(online_name)
        except NotFound:
            return None
        except Exception as exc:
            raise sdk_error(f"look up online table {online_name}", exc, self.where) from exc

    def _wait_update(self, online_name: str, pipeline_id: str, update_id: str) -> None:
        deadline = time.monotonic() + self.sync_timeout
        while True:
            update = self._sdk(f"get sync update {update_id}", lambda: self.client.pipelines.get_update(pipeline_id, update_id)).update
            state = update.state.value if update is not None and update.state is not None else "UNKNOWN"
            if state in _DONE:
                return
            if state in _BROKEN:
                raise self._sync_failed(online_name, pipeline_id, state)
            if time.monotonic() > deadline:
                raise OnlineStoreError(f"the sync of {online_name} (pipeline {pipeline_id}) is still {state} after {self.sync_timeout:.0f}s", where=self.where, fix="wait for the pipeline in the workspace, or raise sync_timeout=")
            time.sleep(self.poll_interval)

    def _wait_continuous(self, online_name: str, pipeline_id: str) -> None:
        deadline = time.monotonic() + self.sync_timeout
        while True:
            state = _state(self._synced_table(online_name))
            if state in _CONTINUOUS_READY:
                return
            if "FAILED" in state:
                raise self._sync_failed(online_name, pipeline_id, state)
            if time.monotonic() > deadline:
                raise OnlineStoreError(f"the continuous sync of {online_name} is still {state} after {self.sync_timeout:.0f}s", where=self.where, fix="wait for the pipeline in the workspace, or raise sync_timeout=")
            time.sleep(self.poll_interval)

    def _sync_failed(self, online_name: str, pipeline_id: str, state: str) -> OnlineStoreError:
        synced = self._synced_table(online_name)
        status = getattr(synced, "data_synchronization_status", None)
        detail = f": {status.message}" if status is not None and status.message else ""
        return OnlineStoreError(
            f"the sync pipeline {pipeline_id} of online table {online_name} {state}{detail}; the online table still serves its previous rows",
            where=self.where,
            fix="open the pipeline's event log in the workspace (Jobs & Pipelines), fix the cause, then run `mlforge build --online` again",
        )

    def _publish_legacy(self, offline_store: Any, feature: str, version: str | None, source: str, online_name: str) -> None:
        from databricks.sdk.errors import ResourceConflict
        from databricks.sdk.service.catalog import (
            OnlineTable,
            OnlineTableSpec,
            OnlineTableSpecContinuousSchedulingPolicy,
            OnlineTableSpecTriggeredSchedulingPolicy,
        )

        metadata = offline_store.read_metadata(feature, version)
        schedule = {"run_continuously": OnlineTableSpecContinuousSchedulingPolicy()} if self.sync_mode == "continuous" else {"run_triggered": OnlineTableSpecTriggeredSchedulingPolicy()}
        spec = OnlineTableSpec(source_table_full_name=source, primary_key_columns=list(metadata["keys"]), timeseries_key=metadata.get("timestamp"), perform_full_copy=self.sync_mode == "snapshot", **schedule)
        try:
            self._sdk(f"create legacy online table {online_name}", lambda: self.client.online_tables.create(OnlineTable(name=online_name, spec=spec)).result())
            return
        except OnlineStoreError as exc:
            if not isinstance(exc.__cause__, ResourceConflict):
                raise
        table = self._sdk(f"get legacy online table {online_name}", lambda: self.client.online_tables.get(online_name))
        pipeline_id = table.spec.pipeline_id
        if self.sync_mode != "continuous":
            update_id = self._sdk(f"refresh {online_name}", lambda: self.client.pipelines.start_update(pipeline_id)).update_id
            self._wait_update(online_name, pipeline_id, update_id)

    # -- protocol -----------------------------------------------------------------------
    def write(self, feature: str, key_columns: list[str], batches: Iterable[Any]) -> int:
        raise PublishOnlyError(
            f"DatabricksOnlineStore does not take rows: {feature!r} is published from a Unity Catalog table by a Databricks sync pipeline",
            where=repr(self),
            fix="run `mlforge build --online` (or Definitions.build(online=True)) with a UnityCatalogStore offline store",
        )

    def delete(self, feature: str, keys: list[dict[str, Any]]) -> int:
        raise PublishOnlyError(
            f"DatabricksOnlineStore does not delete rows: {feature!r} is replaced as a whole on each publish",
            where=repr(self),
            fix="run `mlforge build --online` (or Definitions.build(online=True)) with a UnityCatalogStore offline store",
        )

    def read(self, feature: str, keys: list[dict[str, Any]]) -> list[dict[str, Any] | None]:
        return self.read_many({feature: keys})[feature]

    def read_many(self, requests: dict[str, list[dict[str, Any]]]) -> dict[str, list[dict[str, Any] | None]]:
        """Published values (and records) of every requested feature in one statement;
        tables published with :meth:`publish_table` one ``SELECT`` each."""
        if self.legacy_online_tables:
            raise OnlineStoreError(
                f"legacy Databricks Online Tables cannot be read over PostgreSQL (features {', '.join(requests)})",
                where=repr(self),
                fix="serve legacy online tables through a Databricks Feature Serving endpoint, or drop legacy_online_tables=True and re-publish to the online feature store",
            )
        records = [k["feature"] for k in requests.get(PUBLICATIONS, [])]
        texts: dict[str, list[str]] = {}
        out: dict[str, list[dict[str, Any] | None]] = {}
        for feature, keys in requests.items():
            if feature == PUBLICATIONS:
                continue
            columns = self._columns(feature)
            if VALUE_COLUMN in columns:
                texts[feature] = [ENTITY_PREFIX + key_text(k) for k in keys]
            else:
                out[feature] = self._read_plain(feature, keys, columns)
        for feature in records:
            if feature not in texts and VALUE_COLUMN in self._columns(feature):
                texts[feature] = []
        asked = {f: (KEY_COLUMN, VALUE_COLUMN, [*t, *([RECORD_KEY] if f in records else [])]) for f, t in texts.items()}
        found = self._lakebase.lookup_texts(asked) if asked else {}
        for feature, wanted in texts.items():
            if feature in requests:
                out[feature] = [None if (v := found[feature].get(t)) is None else decode_row(v) for t in wanted]
        if PUBLICATIONS in requests:
            out[PUBLICATIONS] = [None if (v := found.get(f, {}).get(RECORD_KEY)) is None else decode_row(v) for f in records]
        return out

    def _columns(self, feature: str) -> dict[str, str]:
        try:
            return self._lakebase.table_columns(feature)
        except NoOnlineStore:
            return {}

    def _read_plain(self, feature: str, keys: list[dict[str, Any]], columns: dict[str, str]) -> list[dict[str, Any] | None]:
        """A table published with :meth:`publish_table`: rows as stored, keys coerced to the column types."""
        if not keys:
            return []
        names = sorted(keys[0])
        if not names or any(sorted(k) != names for k in keys):
            raise OnlineStoreError(f"every key of a lookup of {feature!r} needs the same key columns, got {keys[0]!r}", fix="pass the feature's key columns in every key dict, e.g. {'user_id': 1}")
        if not columns:
            return [None] * len(keys)  # O2: nothing published yet: every entity is unknown
        if any(name not in columns for name in names):
            raise OnlineStoreError(f"online table {self.table_name(feature)} has no key column(s) {[n for n in names if n not in columns]}", fix=f"its columns are {list(columns)}")
        wanted = [coerce_key(key, names, columns) for key in keys]
        found = self._lakebase.lookup(feature, names, [w for w in wanted if w is not None], columns)
        return [None if w is None else found.get(w) for w in wanted]

    def ping(self) -> None:
        self._lakebase.query("ping", "SELECT 1")

    def close(self) -> None:
        self._lakebase.close()


# -- helpers ------------------------------------------------------------------------------
def _state(synced: Any) -> str:
    """The detailed state of a synced table (``SYNCED_TABLE_ONLINE``...), or ``UNKNOWN``."""
    status = getattr(synced, "data_synchronization_status", None)
    return status.detailed_state.value if status is not None and status.detailed_state is not None else "UNKNOWN"


def sdk_error(action: str, exc: BaseException, where: str) -> OnlineStoreError:
    """An SDK error as an ``OnlineStoreError`` that says what, where and how to fix it."""
    from databricks.sdk import errors

    retried = ""
    cause = exc
    if isinstance(exc, (TimeoutError, RuntimeError)) and isinstance(exc.__cause__, errors.DatabricksError):
        cause, retried = exc.__cause__, " (the SDK retried until its retry_timeout_seconds ran out)"
    fixes = [
        (errors.NotFound, "check the name: the source table must exist in Unity Catalog (build it first with a UnityCatalogStore), and the online store / catalog / schema must exist"),
        ((errors.PermissionDenied, errors.Unauthenticated), "check Databricks auth (DATABRICKS_HOST/DATABRICKS_TOKEN or the ~/.databrickscfg profile) and grants: USE CATALOG/USE SCHEMA/SELECT on the source, CREATE TABLE on the online schema, CAN MANAGE on the online store"),
        (errors.ResourceConflict, "another resource already has this name: pick another online_store/schema, or remove the conflicting online table (feature_store.delete_online_table)"),
        ((errors.TooManyRequests, errors.TemporarilyUnavailable), "the workspace is throttling or temporarily unavailable: retry later, or raise the SDK's retry_timeout_seconds"),
    ]
    for kinds, fix in fixes:
        if isinstance(cause, kinds):
            return OnlineStoreError(f"cannot {action}: Databricks answered {type(cause).__name__}: {cause}{retried}", where=where, fix=fix)
    return OnlineStoreError(f"cannot {action}: {type(cause).__name__}: {cause}{retried}", where=where, fix="check that the Databricks workspace is reachable and the online store settings are right")
