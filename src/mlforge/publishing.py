"""``publish_latest``: copy the newest row per entity of a built version to the online store (O1).

Nothing is recomputed: the rows come from the offline store's stored version, reduced to
one per entity in the engine (the newest timestamp, i.e. the newest grid label for metric
features), and streamed to the online store in bounded Arrow batches, so memory stays
flat whatever the number of entities.

A store whose platform copies the rows itself (``DatabricksOnlineStore``: a Databricks sync
pipeline publishes the Unity Catalog table) declares ``fills_from_offline`` (the offline
store kind it copies from) in its capabilities; its ``publish_table`` is called instead.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from mlforge.engines.base import Capability
from mlforge.errors import ConfigError, MlforgeError, OnlineStoreError

if TYPE_CHECKING:
    import ibis.expr.types as ir

    from mlforge.definitions.feature import Feature
    from mlforge.engines.base import Engine
    from mlforge.offline.base import OfflineStore
    from mlforge.online.base import OnlineStore
    from mlforge.workspace import Workspace

log = logging.getLogger(__name__)

BATCH_ROWS = 10_000
_NEWEST = "__mlforge_newest"


def publish_latest(workspace: Workspace, feature: Feature, version: str | None = None, *, batch_rows: int = BATCH_ROWS) -> int:
    """Write the newest row of each entity of ``feature`` at ``version`` to the online store.

    Args:
        workspace: the project's stores and engines.
        feature: the feature.
        version: the offline version to publish (default: latest).
        batch_rows: rows per Arrow batch handed to the online store.

    Returns:
        The number of entities written.
    """
    store = workspace.online_store
    if store is None:
        raise ConfigError("publishing online needs an online store", fix="set online_store= in Definitions or in the profile")
    name = feature.name
    if store.capabilities.fills_from_offline is not None:  # its platform copies the offline table (Databricks)
        return _publish_table(store, workspace.offline_store, name, version)
    metadata = workspace.offline_store.read_metadata(name, version)
    keys = list(metadata["keys"])
    engine = workspace.engine_for(feature)
    table = workspace.offline_store.read(name, engine, metadata.get("version", version))
    latest = latest_rows(table, keys, metadata.get("timestamp"), engine)
    started = time.perf_counter()
    try:
        written = store.write(name, keys, _batches(latest, batch_rows))
    except MlforgeError:
        raise
    except Exception as exc:  # a client error the store did not translate
        raise OnlineStoreError(f"publishing {name!r} to {store!r} failed: {type(exc).__name__}: {exc}", fix="check the online store settings and that it is reachable") from exc
    log.info("published %d entities of %s %s online in %.2fs", written, name, metadata.get("version", version), time.perf_counter() - started)
    return written


def check_publishable(workspace: Workspace) -> None:
    """Fail before any compute (E3) when the online store cannot be filled from this
    offline store: a store whose platform copies offline tables (``fills_from_offline``)
    needs an offline store of that kind."""
    store = workspace.online_store
    if store is None:
        raise ConfigError("--online needs an online store", where="build --online", fix="set online_store= in Definitions or an online_store block in the profile")
    _check_pair(store, workspace.offline_store, "build --online")


def _check_pair(store: OnlineStore, offline_store: OfflineStore, where: str) -> None:
    wanted = store.capabilities.fills_from_offline
    if wanted is not None and offline_store.kind != wanted:
        raise ConfigError(
            f"{type(store).__name__} requires UnityCatalogStore as offline store, got {type(offline_store).__name__}",
            where=where,
            fix="use offline_store=mlf.UnityCatalogStore('main') (KIND: unity-catalog in the profile), or another online store",
        )


def _publish_table(store: OnlineStore, offline_store: OfflineStore, name: str, version: str | None) -> int:
    """Let the platform copy the newest row per entity of the offline table (no rows stream here)."""
    _check_pair(store, offline_store, f"publishing {name!r} online")
    started = time.perf_counter()
    try:
        published = store.publish_table(offline_store, name, version)
    except MlforgeError:
        raise
    except Exception as exc:
        raise OnlineStoreError(f"publishing {name!r} to {store!r} failed: {type(exc).__name__}: {exc}", fix="check the online store settings and that it is reachable") from exc
    log.info("published %s %s online (%d rows) in %.2fs", name, version or "latest", published, time.perf_counter() - started)
    return published


def latest_rows(table: ir.Table, keys: list[str], timestamp: str | None, engine: Engine) -> ir.Table:
    """One row per entity: the row with the newest ``timestamp`` (all rows without one).

    Uses a window function where the engine has them and an aggregate + equi-join
    otherwise (STYLE 1); exact ties on the timestamp are left to the store, where the
    last write wins.
    """
    import ibis

    internal = [c for c in table.columns if c.startswith("__mlforge")]  # storage bookkeeping
    table = table.drop(*internal) if internal else table
    table = table.filter(*[table[k].notnull() for k in keys])
    if timestamp is None:
        return table
    table = table.filter(table[timestamp].notnull())
    if engine.supports(Capability.WINDOW_FUNCTIONS):
        rank = ibis.row_number().over(group_by=[table[k] for k in keys], order_by=ibis.desc(table[timestamp]))
        return table.mutate(**{_NEWEST: rank}).filter(ibis._[_NEWEST] == 0).drop(_NEWEST)
    newest = table.group_by(keys).aggregate(**{_NEWEST: table[timestamp].max()})
    joined = table.inner_join(newest, [*keys, table[timestamp] == newest[_NEWEST]])
    return joined.select(*table.columns)


def _batches(expr: ir.Table, batch_rows: int) -> Any:
    try:
        batches = expr.to_pyarrow_batches(chunk_size=batch_rows)
    except NotImplementedError:  # a backend without streaming: bounded by the entity count
        batches = expr.to_pyarrow().to_batches(max_chunksize=batch_rows)
    for batch in batches:
        yield _as_utc(batch)


def _as_utc(batch: Any) -> Any:
    """Stored timestamps are UTC instants (T1); Spark hands them back without a zone."""
    import pyarrow as pa

    fields = list(batch.schema)
    if not any(pa.types.is_timestamp(f.type) and f.type.tz is None for f in fields):
        return batch
    columns = [
        col.cast(pa.timestamp(f.type.unit, tz="UTC")) if pa.types.is_timestamp(f.type) and f.type.tz is None else col
        for f, col in zip(fields, batch.columns, strict=True)
    ]
    return pa.RecordBatch.from_arrays(columns, names=[f.name for f in fields])
