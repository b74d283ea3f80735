"""Importing a v0.7 store into versions of this format (``mlforge migrate``).

mlforge 0.7 kept one Parquet file and one JSON record per version, on a local disk::

    <root>/<feature>/
        _latest.json                {"version": "1.0.1"}
        .gitignore                  ignores */data.parquet
        1.0.0/data.parquet
        1.0.0/.meta.json            name, keys, timestamp, interval, row_count, hashes,
                                    columns, features (metric columns), change_summary

:func:`migrate_v07` publishes each such version, under the same version number, into any
offline store of this format (month files, ``_metadata.json``), then points ``latest`` where
v0.7's ``_latest.json`` pointed. The rows are v0.7's rows unchanged; only the timestamp
column becomes UTC (v0.7 wrote naive timestamps, which mean UTC: rule T1). Nothing in the
v0.7 directory is changed. Re-running skips the versions already imported.

A v0.7 store on S3 or GCS is imported after copying it to a local directory
(``aws s3 sync s3://bucket/prefix ./feature_store_v07``).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlforge.definitions.names import check_name
from mlforge.engines.monthfiles import write_partitioned_batches
from mlforge.errors import ConcurrentPublish, ConfigError, DefinitionError, StoreError
from mlforge.manifest import canonical_schema, digests_hash, file_digests, stable_hash
from mlforge.operations import rollback
from mlforge.records import VersionRecord
from mlforge.versioning import is_version, sort_versions

if TYPE_CHECKING:
    import pyarrow as pa

    from mlforge.offline.base import OfflineStore

log = logging.getLogger(__name__)

V07_METADATA = ".meta.json"
V07_DATA = "data.parquet"
V07_LATEST = "_latest.json"
#: Marks versions this module made, in their metadata (``imported_from.format``).
V07_FORMAT = "mlforge 0.7"
_MONTH = "__mlforge_month"
_CHANGE_KINDS = {"initial": "MAJOR", "major": "MAJOR", "minor": "MINOR", "patch": "PATCH"}


@dataclass(frozen=True)
class ImportedVersion:
    """What :func:`migrate_v07` did with one v0.7 version.

    ``status`` is ``imported``, ``would import`` (dry run), ``present`` (imported before),
    ``missing data`` (v0.7 kept only the ``.meta.json``) or ``refused`` (the target holds
    versions of that feature built by this mlforge).
    """

    feature: str
    version: str
    status: str
    rows: int | None = None
    reason: str = ""


def migrate_v07(source: str | os.PathLike[str], store: OfflineStore, *, features: Sequence[str] | None = None, dry_run: bool = False) -> list[ImportedVersion]:
    """Import the v0.7 store at ``source`` into ``store``, keeping version numbers.

    Args:
        source: the directory of a v0.7 ``LocalStore`` (``./feature_store`` by default there).
        store: the offline store to import into; not ``source`` itself when it is local
            (move the v0.7 directory aside first).
        features: only these features (default: every feature under ``source``).
        dry_run: report what would be imported; write nothing.

    Returns:
        One :class:`ImportedVersion` per v0.7 version, features by name, versions in order.

    Raises:
        ConfigError: ``source`` is not a v0.7 store, or a requested feature is not in it.
        StoreError: a v0.7 record is unreadable, or the target already has a directory of
            the same version (an in-place migration of a local store).
    """
    root = Path(source).expanduser()
    found = _v07_features(root)
    wanted = sorted(found) if features is None else list(features)
    unknown = [name for name in wanted if name not in found]
    if unknown:
        raise ConfigError(f"the v0.7 store {root} has no feature(s) {unknown}", where="mlforge migrate", fix=f"features there: {', '.join(sorted(found))}")
    results: list[ImportedVersion] = []
    for name in wanted:
        results += _migrate_feature(root / name, found[name], store, dry_run)
    return results


def _v07_features(root: Path) -> dict[str, list[str]]:
    """Feature name -> its v0.7 versions (those with a ``.meta.json``), in version order."""
    if not root.is_dir():
        raise ConfigError(f"v0.7 store {root} is not a directory", where="mlforge migrate", fix="pass the folder of the v0.7 LocalStore, e.g. ./feature_store")
    found: dict[str, list[str]] = {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))):
        versions = [v.name for v in folder.iterdir() if is_version(v.name) and (v / V07_METADATA).is_file()]
        if versions:
            try:
                check_name(folder.name, kind="feature")
            except DefinitionError as exc:
                raise ConfigError(f"v0.7 feature folder {folder} is not a valid feature name: {exc.what}", where="mlforge migrate", fix="rename the folder") from exc
            found[folder.name] = sort_versions(versions)
    if not found:
        raise ConfigError(
            f"{root} holds no v0.7 versions (<feature>/<version>/{V07_METADATA})",
            where="mlforge migrate",
            fix="pass the folder a v0.7 LocalStore used; a store of this format needs no migration",
        )
    return found


def _migrate_feature(folder: Path, versions: list[str], store: OfflineStore, dry_run: bool) -> list[ImportedVersion]:
    name = folder.name
    imported = {v: _was_imported(store.read_record(name, v)) for v in store.list_versions(name)}
    built_here = [v for v, was_imported in imported.items() if not was_imported]
    results = []
    for version in versions:
        record = _read_record(folder / version / V07_METADATA)
        if imported.get(version):
            results.append(ImportedVersion(name, version, "present", record.get("row_count"), "already in the target store"))
        elif built_here:
            reason = f"the target store has versions of {name!r} built by this mlforge ({', '.join(built_here)}); import into a store without them"
            results.append(ImportedVersion(name, version, "refused", record.get("row_count"), reason))
        elif not (folder / version / V07_DATA).is_file():
            reason = f"v0.7 kept only {V07_METADATA} here (its .gitignore leaves {V07_DATA} out of git); rebuild with `mlforge build`"
            results.append(ImportedVersion(name, version, "missing data", record.get("row_count"), reason))
        elif dry_run:
            results.append(ImportedVersion(name, version, "would import", record.get("row_count")))
        else:
            rows = _import_version(folder / version, record, store)
            results.append(ImportedVersion(name, version, "imported", rows, _reason(record)))
    if not dry_run:
        _point_latest(folder, store, results)
    return results


def _was_imported(record: VersionRecord) -> bool:
    return (record.extra.get("imported_from") or {}).get("format") == V07_FORMAT


def _read_record(path: Path) -> dict[str, Any]:
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise StoreError(f"cannot read the v0.7 record {path}: {exc}", where="mlforge migrate", fix="restore the file from git or remove that version's folder") from exc
    if not isinstance(record, dict) or not isinstance(record.get("keys"), list):
        raise StoreError(f"the v0.7 record {path} has no 'keys' list", where="mlforge migrate", fix="restore the file from git or remove that version's folder")
    return record


def _import_version(folder: Path, record: dict[str, Any], store: OfflineStore) -> int:
    import pyarrow.parquet as pq

    feature, version = folder.parent.name, folder.name
    table = _as_utc(pq.ParquetFile(folder / V07_DATA).read(), record.get("timestamp"))
    staging = store.stage(feature)
    try:
        files = _write(table, record, staging.data_dir)
        metadata = _metadata(record, table, files, version, folder)
        store.publish(staging, version, metadata)
    except ConcurrentPublish as exc:
        raise StoreError(
            f"the target store already has a directory for {feature} {version}",
            where="mlforge migrate",
            fix="a local store cannot be migrated in place: move the v0.7 folder aside and import from there, "
            "e.g. `mv feature_store feature_store_v07 && mlforge migrate feature_store_v07`",
        ) from exc
    except BaseException:
        store.discard(staging)
        raise
    return table.num_rows


def _as_utc(table: pa.Table, ts: str | None) -> pa.Table:
    """v0.7's naive timestamp column as UTC instants (rule T1), in µs like every build's."""
    import pyarrow as pa

    if ts is None or ts not in table.column_names or not pa.types.is_timestamp(table.schema.field(ts).type):
        return table
    index = table.schema.get_field_index(ts)
    column = table.column(ts)
    if column.type.tz is None:
        column = column.cast(pa.timestamp(column.type.unit, tz="UTC"))
    return table.set_column(index, ts, column.cast(pa.timestamp("us", tz="UTC")))


def _write(table: pa.Table, record: dict[str, Any], data_dir: str) -> list[str]:
    """Files as a build writes them: sorted by keys and timestamp, one per month."""
    import pyarrow.compute

    pc: Any = pyarrow.compute  # functions generated at import time: no stubs to check
    import pyarrow.parquet as pq

    ts = record.get("timestamp")
    timed = ts is not None and ts in table.column_names
    order = [c for c in [*record["keys"], *([ts] if timed else [])] if c in table.column_names]
    table = table.sort_by([(c, "ascending") for c in order]) if order else table
    if timed:
        with_month = table.append_column(_MONTH, pc.strftime(table[ts], format="%Y-%m"))
        write_partitioned_batches(with_month.to_batches(), with_month.schema, data_dir, _MONTH)
    else:
        pq.write_table(table, os.path.join(data_dir, "part-00000.parquet"), compression="zstd")
    return sorted(str(p) for p in Path(data_dir).glob("*.parquet"))


def _metadata(record: dict[str, Any], table: pa.Table, files: list[str], version: str, folder: Path) -> VersionRecord:
    """The version record of this format for an imported v0.7 version."""
    import ibis

    schema = canonical_schema(ibis.Schema.from_pyarrow(table.schema))
    digests = file_digests(files)
    summary = record.get("change_summary") or {}
    metrics = [
        {"name": c.get("name"), "field": c.get("input"), "function": c.get("agg"), "window": c.get("window"), "description": None, "unit": None}
        for c in record.get("features") or []
    ]
    return VersionRecord.from_dict({
        "name": folder.parent.name,
        "version": version,
        "keys": list(record["keys"]),
        "entities": [],
        "timestamp": record.get("timestamp"),
        "interval": record.get("interval"),
        "schema": schema,
        "metrics": metrics,
        "tags": list(record.get("tags") or []),
        "description": record.get("description"),
        "rows": table.num_rows,
        "created_at": record.get("updated_at") or record.get("created_at"),
        # v0.7's hashes are over other things: they never equal this format's, so the first
        # build after the import publishes a new version (and computes from scratch).
        "definition_hash": f"v0.7:{record.get('config_hash', '')}",
        "schema_hash": stable_hash(schema),
        "data_hash": digests_hash(digests),
        "file_digests": digests,
        "source": record.get("source"),
        "source_fingerprint": f"v0.7:{record.get('source_hash', '')}",
        "build_range": {"since": None, "until": None},
        "watermark": None,
        "engine": V07_FORMAT,
        "format": "parquet",
        "change": _CHANGE_KINDS.get(summary.get("bump_type"), "PATCH"),
        "reason": _reason(record),
        "imported_from": {
            "format": V07_FORMAT,
            "path": str(folder.resolve()),
            "content_hash": record.get("content_hash"),
            "config_hash": record.get("config_hash"),
            "source_hash": record.get("source_hash"),
            "row_count": record.get("row_count"),
        },
    })


def _reason(record: dict[str, Any]) -> str:
    summary = record.get("change_summary") or {}
    why = summary.get("reason") or "unknown"
    details = summary.get("details") or []
    return f"imported from {V07_FORMAT} ({why}{': ' + ', '.join(map(str, details)) if details else ''})"


def _point_latest(folder: Path, store: OfflineStore, results: list[ImportedVersion]) -> None:
    """Point ``latest`` where v0.7 pointed, when this run imported that feature's versions
    (publishing moved it to the newest one; v0.7 may have been rolled back)."""
    if not any(r.status == "imported" for r in results):
        return
    pointer = folder / V07_LATEST
    try:
        target = json.loads(pointer.read_text())["version"]
    except (OSError, ValueError, KeyError, TypeError):
        log.warning("feature %s: no readable v0.7 %s; latest is the newest imported version", folder.name, pointer)
        return
    if target in store.list_versions(folder.name) and store.latest_version(folder.name) != target:
        rollback(store, folder.name, target)  # an explicit move back, as v0.7's rollback was


__all__ = ["ImportedVersion", "migrate_v07"]
