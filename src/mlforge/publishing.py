"""``publish_latest``: put what a read at or after a version's watermark needs online (O1).

Nothing is recomputed: the rows come from the offline store's stored version. Per entity
(see :mod:`mlforge.online.publication` for the layout):

* a metric feature stores its *tail*: its grid rows labelled at or after the watermark,
  as one value (at most ``max_window / interval`` rows);
* another feature stores its newest row, unless that row is already older than
  ``watermark - ttl`` (it could never be read, rule O4); its watermark is the newest
  stored timestamp (:func:`served_from`).

The rows are reduced in the engine, streamed in bounded Arrow batches and grouped per
entity (the engine orders them by key). Then the entities the previously published
versions held and this one does not (gone from the source, or whose windows have all
emptied) are removed, so nothing stale is served, and the publication record is written.
The record goes first (with both versions listed as present) and again last (with this
version only): a publish that dies half-way leaves a record from which the next publish
still removes every left-over entity.

A store whose platform copies tables itself (``DatabricksOnlineStore``) declares
``fills_from_offline``; it is handed the same per-entity values and the record, and
publishes them as one table (``publish_values``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, cast

from mlforge.engines.base import UNITS_PER_SECOND, Capability, utc_literal
from mlforge.errors import ConfigError, MlforgeError, OnlineStoreError
from mlforge.online.base import check_storable, chunked, key_text
from mlforge.online.publication import PUBLICATIONS, Publication, tail_value
from mlforge.versioning import sort_versions

if TYPE_CHECKING:
    import ibis.expr.types as ir

    from mlforge.definitions.feature import Feature
    from mlforge.engines.base import Engine
    from mlforge.offline.base import OfflineStore
    from mlforge.online.base import OnlineStore, PlatformPublisher
    from mlforge.workspace import Workspace

log = logging.getLogger(__name__)

BATCH_ROWS = 10_000
#: Entities per ``write`` / ``delete`` call.
ENTITY_BATCH = 2_000
_NEWEST = "__mlforge_newest"


@dataclass(frozen=True)
class OnlinePublish:
    """What one publish did.

    Attributes:
        feature, version: what was published.
        written: entities written (each with its tail or newest row).
        removed: entities removed: held by an earlier publish, absent from this one.
        seconds: wall time of the publish.
    """

    feature: str
    version: str
    written: int
    removed: int
    seconds: float


def publish_latest(workspace: Workspace, feature: Feature, version: str | None = None, *, batch_rows: int = BATCH_ROWS, engine: Engine | None = None) -> OnlinePublish:
    """Publish ``feature`` at ``version`` (default: latest) to the online store.

    Args:
        workspace: the project's stores and engines.
        feature: the feature.
        version: the offline version to publish (default: latest).
        batch_rows: rows per Arrow batch read from the engine.
        engine: the engine that reads the version (default: the feature's, else the project's).

    Returns:
        An :class:`OnlinePublish` with the entities written and removed.
    """
    store = workspace.online_store
    if store is None:
        raise ConfigError("publishing online needs an online store", fix="set online_store= in Definitions or in the profile")
    platform = store.capabilities.fills_from_offline
    _check_pair(store, workspace.offline_store, f"publishing {feature.name!r} online")
    started = time.perf_counter()
    record = workspace.offline_store.read_record(feature.name, version)
    version = str(record.version)  # a stored record always names its version
    engine = engine if engine is not None else workspace.engine_for(feature)
    try:
        previous = read_publication(store, feature.name)
        publication = Publication.from_record(record, present=(version,))
        check_storable((*publication.keys, *([publication.timestamp] if publication.timestamp else []), *publication.columns))  # before anything is written (E3)
        tied = record.tied_rows != 0  # unknown (an older record) or some: pick by value
        if platform is not None:
            written, removed = _publish_on_platform(workspace, store, publication, previous, engine, batch_rows, tied)
        else:
            written, removed = _publish_rows(workspace, store, publication, previous, engine, batch_rows, tied)
    except MlforgeError:
        raise
    except Exception as exc:  # a client or engine error the store did not translate
        raise OnlineStoreError(f"publishing {feature.name!r} to {store!r} failed: {type(exc).__name__}: {exc}", fix="check the online store settings and that it is reachable") from exc
    seconds = time.perf_counter() - started
    log.info("published %s %s online: %d entities written, %d removed, in %.2fs", feature.name, version, written, removed, seconds)
    return OnlinePublish(feature.name, version, written, removed, round(seconds, 3))


def check_publishable(workspace: Workspace, where: str = "build --online") -> None:
    """Fail before any compute (E3) when the online store cannot be filled from this
    offline store (a store whose platform copies offline tables, ``fills_from_offline``,
    needs an offline store of that kind), or does not answer (``ping``)."""
    store = workspace.online_store
    if store is None:
        raise ConfigError("--online needs an online store", where=where, fix="set online_store= in Definitions or an online_store block in the profile")
    _check_pair(store, workspace.offline_store, where)
    # E3: a store that does not answer now would fail the publish after the offline version
    # is out; say so before anything is computed or written. (A store the platform fills
    # creates itself on its first publish: there is nothing to ask yet.)
    if store.capabilities.fills_from_offline is None:
        store.ping()


def _check_pair(store: OnlineStore, offline_store: OfflineStore, where: str) -> None:
    wanted = store.capabilities.fills_from_offline
    if wanted is not None and offline_store.kind != wanted:
        raise ConfigError(
            f"{type(store).__name__} requires UnityCatalogStore as offline store, got {type(offline_store).__name__}",
            where=where,
            fix="use offline_store=mlf.UnityCatalogStore('main') (KIND: unity-catalog in the profile), or another online store",
        )


def read_publication(store: OnlineStore, feature: str) -> Publication | None:
    """The record of the last publish of ``feature`` in ``store``, if any."""
    (row,) = store.read(PUBLICATIONS, [{"feature": feature}])
    return None if row is None else Publication.from_row(row)


def _publish_rows(workspace: Workspace, store: OnlineStore, publication: Publication, previous: Publication | None, engine: Engine, batch_rows: int, tied: bool) -> tuple[int, int]:
    name, version = publication.feature, str(publication.version)  # built from a stored record
    earlier = _earlier_versions(workspace, store, name, version, previous)
    table = workspace.offline_store.read(name, engine, version)  # a damaged version fails here, before any write (S7, E3)
    publication = served_from(publication, table, engine)
    _write_record(store, publication, present=(*earlier, version))  # a crash from here on leaves all of them listed
    written, writing = 0, False
    try:
        for chunk in chunked(entity_values(tail_rows(table, publication, engine, tied=tied), publication, batch_rows, engine), ENTITY_BATCH):
            writing = True  # from here on a failed write may have stored part of the chunk
            store.write(name, list(publication.keys), [value for _, value in chunk])
            written += len(chunk)
    except Exception:
        if not writing:  # nothing of this version is in the store: reads go on as before (E3)
            _restore_record(store, name, previous)
        elif previous is not None:  # reads go on as before; the next publish removes what got in
            _restore_record(store, name, replace(previous, present=(*earlier, version)))
        raise
    removed = 0
    current = _published_keys(table, publication, engine)
    for chunk in chunked(_left_entities(workspace, earlier, current, name, engine, batch_rows), ENTITY_BATCH):
        store.delete(name, chunk)
        removed += len(chunk)
    _write_record(store, publication, present=(version,))
    return written, removed


def _publish_on_platform(workspace: Workspace, store: OnlineStore, publication: Publication, previous: Publication | None, engine: Engine, batch_rows: int, tied: bool) -> tuple[int, int]:
    """The platform replaces the online table with this one: nothing to delete, only to count."""
    offline = workspace.offline_store
    name, version = publication.feature, str(publication.version)  # built from a stored record
    table = offline.read(name, engine, version)
    publication = served_from(publication, table, engine)
    written = 0

    def values() -> Iterator[dict[str, Any]]:
        nonlocal written
        for _, value in entity_values(tail_rows(table, publication, engine, tied=tied), publication, batch_rows, engine):
            written += 1
            yield value

    platform = cast("PlatformPublisher", store)  # declared by fills_from_offline
    platform.publish_values(offline, name, list(publication.keys), values(), _record(publication, present=(version,)))
    earlier = _earlier_versions(workspace, store, name, version, previous)
    current = _published_keys(table, publication, engine)
    removed = sum(1 for _ in _left_entities(workspace, earlier, current, name, engine, batch_rows))
    return written, removed


def _record(publication: Publication, present: tuple[str, ...]) -> dict[str, Any]:
    return replace(publication, present=tuple(dict.fromkeys(present)), published_at=datetime.now(tz=UTC).isoformat()).to_row()


def _write_record(store: OnlineStore, publication: Publication, present: tuple[str, ...]) -> None:
    store.write(PUBLICATIONS, ["feature"], [_record(publication, present)])


def _restore_record(store: OnlineStore, name: str, previous: Publication | None) -> None:
    """Put back the record a failed publish replaced (none: remove it). One whose write may
    have stored some entities comes back listing this version among ``present``, so the
    next publish removes them; without a previous record the new one stays (it lists both)."""
    try:
        if previous is None:
            store.delete(PUBLICATIONS, [{"feature": name}])
        else:
            store.write(PUBLICATIONS, ["feature"], [previous.to_row()])
    except Exception:  # the store is failing: the publish's own error is the one to report
        log.warning("feature %s: could not put back its online publication record after a failed publish", name, exc_info=True)


def _earlier_versions(workspace: Workspace, store: OnlineStore, name: str, version: str, previous: Publication | None) -> tuple[str, ...]:
    """Versions whose entities the store may hold besides ``version``.

    From the last record; without one, every stored version before this one (a store
    filled by an older mlforge), except in a store that starts empty with its process.
    """
    if previous is not None:
        return tuple(v for v in dict.fromkeys((*previous.present, *([previous.version] if previous.version else []))) if v != version)
    if store.capabilities.in_process:
        return ()
    versions = sort_versions(workspace.offline_store.list_versions(name))
    return tuple(versions[: versions.index(version)]) if version in versions else tuple(versions)


def _published_keys(table: ir.Table, publication: Publication, engine: Engine) -> ir.Table:
    """The distinct keys a version publishes, as a table in the engine."""
    return tail_rows(table, publication, engine, ordered=False, tied=False).select(*publication.keys).distinct()


def _left_entities(workspace: Workspace, versions: Iterable[str], current: ir.Table, name: str, engine: Engine, batch_rows: int) -> Iterator[dict[str, Any]]:
    """Key dicts of the entities ``versions`` published that ``current`` (the keys of this
    publish) lacks. The difference is an anti-join in the engine: the driver holds one
    batch of left-over keys at a time, never the set of every entity."""
    offline = workspace.offline_store
    left: dict[tuple[tuple[str, str], ...], ir.Table] = {}  # one union per key schema
    for version in versions:
        try:
            earlier_record = offline.read_record(name, version)
            table = offline.read(name, engine, version)
        except MlforgeError as exc:
            log.warning("cannot read %s %s to find the entities it published (%s); they stay online until overwritten", name, version, exc)
            continue
        keys = _published_keys(table, served_from(Publication.from_record(earlier_record), table, engine), engine)
        schema = tuple((column, str(dtype)) for column, dtype in keys.schema().items())
        if keys.schema() == current.schema():
            keys = keys.anti_join(current, list(current.columns))
        left[schema] = keys if schema not in left else left[schema].union(keys, distinct=True)
    for keys in left.values():
        for batch in _batches(keys, batch_rows, engine):
            yield from batch.to_pylist()


def served_from(publication: Publication, table: ir.Table, engine: Engine) -> Publication:
    """``publication`` answering from its newest stored row on, for a feature without metrics.

    Such a feature is served from the newest timestamp (``docs/serving.md``), but its record's
    watermark is whole seconds, cut down, and lags behind the rows a range build stored past
    it (after missed runs the watermark stays back so the next build fills the gap). Capped
    there, the newest rows were left out of the publish and reads at ``T`` after them served
    older values than training (O1). The bound is the newest timestamp of a publishable row,
    rounded up to the second: from there on, the newest row of each entity is the one a read
    at ``T`` takes, as training does; a read before it is refused as before a watermark.
    """
    import pyarrow as pa

    ts = publication.timestamp
    if publication.is_metric or ts is None or ts not in table.columns:
        return publication
    rows = table.filter(*[table[k].notnull() for k in publication.keys])
    # As Arrow's stored integer: a zoned timestamp made a Python value needs pytz on DuckDB.
    newest = engine.to_arrow(rows.aggregate(rows[ts].max().name(_NEWEST))).column(0)
    ticks = newest.cast(pa.int64())[0].as_py()
    if ticks is None:
        return publication
    per_second = UNITS_PER_SECOND[newest.type.unit]
    bound = -(-ticks // per_second)
    if publication.watermark is not None and bound <= publication.watermark:
        return publication
    return replace(publication, watermark=bound)


# -- the rows a version publishes -------------------------------------------------------------
def tail_rows(table: ir.Table, publication: Publication, engine: Engine, *, ordered: bool = True, tied: bool = True) -> ir.Table:
    """The rows whose values a read at or after the watermark can take (O1, O4).

    Metric features: every grid row labelled at or after the watermark, ordered by entity
    and label. Others: the newest row per entity at or before the watermark, not older
    than ``watermark - ttl``; of rows sharing keys and timestamp (``tied``, as the
    version's record counts them), the one whose values sort last, as training takes it.
    Rows with a null key are never published.
    """
    internal = [c for c in table.columns if c.startswith("__mlforge")]  # storage bookkeeping
    table = table.drop(*internal) if internal else table
    keys = list(publication.keys)
    table = table.filter(*[table[k].notnull() for k in keys])
    ts = publication.timestamp
    if ts is None or ts not in table.columns:
        return engine.last_per_group(table, keys) if tied and not publication.is_metric else table
    table = table.filter(table[ts].notnull())
    watermark = publication.watermark
    label = engine.to_utc_naive(table[ts]) if table[ts].type().timezone else table[ts]
    if publication.is_metric:
        if watermark is not None:
            table = table.filter(label >= utc_literal(watermark))
        return table.order_by([*keys, ts]) if ordered else table
    if watermark is not None:
        table = table.filter(label <= utc_literal(watermark))
        if publication.ttl is not None:
            table = table.filter(label >= utc_literal(watermark - publication.ttl))
    if tied:
        table = engine.last_per_group(table, [*keys, ts])
    return latest_rows(table, keys, ts, engine)


def entity_values(rows: ir.Table, publication: Publication, batch_rows: int, engine: Engine) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(key_text, stored value)`` per entity, from :func:`tail_rows`, streamed from the
    engine one batch at a time (:meth:`Engine.arrow_batches`)."""
    keys = publication.keys
    if not publication.is_metric:
        for batch in _batches(rows, batch_rows, engine):
            for row in batch.to_pylist():
                yield key_text({k: row[k] for k in keys}), row
        return
    current: tuple[Any, ...] | None = None
    tail: list[dict[str, Any]] = []
    for batch in _batches(rows, batch_rows, engine):
        for row in batch.to_pylist():
            entity = tuple(row[k] for k in keys)
            if entity != current:
                if tail:
                    yield _tail_entry(current, tail, publication)
                # The engine orders by key, so an entity's rows come together; checking the
                # order against the previous entity only keeps the driver's memory bounded.
                if current is not None and entity < current:
                    raise OnlineStoreError(f"the rows of {publication.feature!r} came back out of key order", fix="this is a bug in mlforge; please report it")
                current, tail = entity, []
            tail.append(row)
    if tail:
        yield _tail_entry(current, tail, publication)


def _tail_entry(entity: tuple[Any, ...] | None, rows: list[dict[str, Any]], publication: Publication) -> tuple[str, dict[str, Any]]:
    key = dict(zip(publication.keys, entity or (), strict=True))
    value = tail_value(key, rows, publication.timestamp or "", publication.columns, publication.interval or 0)
    return key_text(key), value


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


def _batches(expr: ir.Table, batch_rows: int, engine: Engine) -> Iterator[Any]:
    for batch in engine.arrow_batches(expr, batch_rows):
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
