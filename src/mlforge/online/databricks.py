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

import logging
import re
import time
import warnings
from collections.abc import Callable, Iterable
from typing import Any, ClassVar

from mlforge.errors import ConfigError, OnlineStoreError, PublishOnlyError, missing_extra
from mlforge.online.base import (
    UNREADABLE,
    OnlineCapabilities,
    chunked,
    decode_row,
    encode_row,
    key_text,
    not_an_mlforge_row,
)
from mlforge.online.databricks_sync import SYNC_MODES as SYNC_MODES  # re-exported: the sync modes
from mlforge.online.databricks_sync import PipelinePublishing, sdk_error
from mlforge.online.lakebase import POOL_SIZE as POOL_SIZE  # re-exported: the pool's size
from mlforge.online.lakebase import LakebaseReader, NoOnlineStore, coerce_key
from mlforge.online.publication import PUBLICATIONS
from mlforge.records import VersionRecord

log = logging.getLogger(__name__)

_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_\-]*$")
#: The Unity Catalog table ``build --online`` publishes a feature's values from.
SERVING_TABLE = "_mlforge_online_{feature}"
KEY_COLUMN, VALUE_COLUMN = "mlforge_key", "mlforge_value"
ENTITY_PREFIX, RECORD_KEY = "e", "r"


def require_unity_catalog(offline_store: Any) -> None:
    """Databricks publishes online tables from Unity Catalog tables only."""
    if offline_store.kind != DatabricksOnlineStore.capabilities.fills_from_offline:
        raise ConfigError(
            f"DatabricksOnlineStore requires UnityCatalogStore as offline store, got {type(offline_store).__name__}",
            where="Definitions(offline_store=..., online_store=DatabricksOnlineStore(...))",
            fix="use offline_store=mlf.UnityCatalogStore('main') (KIND: unity-catalog in the profile), or another online store",
        )


class DatabricksOnlineStore(PipelinePublishing):
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
            record = VersionRecord.from_dict(offline_store.read_metadata(feature, version))
            timestamp = record.timestamp
            self._add_primary_key(source, f"{feature}_pk", list(record.keys), [timestamp] if timestamp else None)
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
                out[feature] = [None if (v := found[feature].get(t)) is None else self._decoded(v, feature) for t in wanted]
        if PUBLICATIONS in requests:
            out[PUBLICATIONS] = [None if (v := found.get(f, {}).get(RECORD_KEY)) is None else self._decoded(v, f) for f in records]
        return out

    def _decoded(self, text: str, feature: str) -> dict[str, Any]:
        try:
            return decode_row(text)
        except UNREADABLE as exc:
            raise not_an_mlforge_row(
                f"a stored value of {feature!r}", exc, where=self.where,
                fix="another program writes to this online table: give mlforge its own, and re-publish with `mlforge build --online`",
            ) from None

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
