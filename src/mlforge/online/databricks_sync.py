"""How :class:`~mlforge.online.databricks.DatabricksOnlineStore` publishes: the online store,
the primary-key constraint of a source table, ``feature_store.publish_table`` and waiting for
the sync pipeline (see that module's docstring for the whole story).

``PipelinePublishing`` is a mixin: it needs ``client``, ``_sdk``, ``online_store``,
``capacity``, ``sync_mode``, ``sync_timeout``, ``poll_interval`` and ``where`` from the store.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Any

from mlforge.errors import OnlineStoreError
from mlforge.records import VersionRecord

log = logging.getLogger(__name__)

SYNC_MODES = {"snapshot": "SNAPSHOT", "triggered": "TRIGGERED", "continuous": "CONTINUOUS"}
_DONE = {"COMPLETED"}
_BROKEN = {"FAILED", "CANCELED"}
_CONTINUOUS_READY = {"SYNCED_TABLE_ONLINE", "SYNCED_TABLE_ONLINE_CONTINUOUS_UPDATE", "SYNCED_TABLE_ONLINE_NO_PENDING_UPDATE"}


class PipelinePublishing:
    """Publishing a Unity Catalog table to a Lakebase online table and waiting for its sync."""

    online_store: str
    capacity: str
    sync_mode: str
    sync_timeout: float
    poll_interval: float

    @property
    def client(self) -> Any:  # provided by the store
        raise NotImplementedError

    @property
    def where(self) -> str:  # provided by the store
        raise NotImplementedError

    def _sdk(self, action: str, call: Any) -> Any:  # provided by the store
        raise NotImplementedError

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
            if existed and "FAILED" in pipeline_state(synced):  # a stopped continuous pipeline: restart it
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

    def _wait_latest_update(self, online_name: str, pipeline_id: str) -> None:
        pipeline = self._sdk(f"get pipeline {pipeline_id}", lambda: self.client.pipelines.get(pipeline_id))
        if pipeline.latest_updates and pipeline.latest_updates[0].update_id:
            self._wait_update(online_name, pipeline_id, pipeline.latest_updates[0].update_id)

    def _wait_continuous(self, online_name: str, pipeline_id: str) -> None:
        deadline = time.monotonic() + self.sync_timeout
        while True:
            state = pipeline_state(self._synced_table(online_name))
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

        record = VersionRecord.from_dict(offline_store.read_metadata(feature, version))
        schedule: dict[str, Any] = {"run_continuously": OnlineTableSpecContinuousSchedulingPolicy()} if self.sync_mode == "continuous" else {"run_triggered": OnlineTableSpecTriggeredSchedulingPolicy()}
        spec = OnlineTableSpec(source_table_full_name=source, primary_key_columns=list(record.keys), timeseries_key=record.timestamp, perform_full_copy=self.sync_mode == "snapshot", **schedule)
        try:
            created = self._sdk(f"create legacy online table {online_name}", lambda: self.client.online_tables.create(OnlineTable(name=online_name, spec=spec)).result())
        except OnlineStoreError as exc:
            if not isinstance(exc.__cause__, ResourceConflict):
                raise
        else:
            # ACTIVE means provisioned, not synced: wait for the initial snapshot's update.
            if self.sync_mode != "continuous" and created.spec is not None and created.spec.pipeline_id:
                self._wait_latest_update(online_name, created.spec.pipeline_id)
            return
        table = self._sdk(f"get legacy online table {online_name}", lambda: self.client.online_tables.get(online_name))
        pipeline_id = table.spec.pipeline_id
        if self.sync_mode != "continuous":
            update_id = self._sdk(f"refresh {online_name}", lambda: self.client.pipelines.start_update(pipeline_id)).update_id
            self._wait_update(online_name, pipeline_id, update_id)


# -- helpers ------------------------------------------------------------------------------
def pipeline_state(synced: Any) -> str:
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
