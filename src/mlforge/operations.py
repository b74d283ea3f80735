"""Version operations behind ``mlforge diff``, ``rollback``, ``manifest`` and ``sync``.

Each works on any offline store of the protocol (local, S3, GCS); ``build_manifest`` and
``sync`` take the project's :class:`~mlforge.workspace.Workspace` and its features. None
prints.

>>> import tempfile
>>> from mlforge.offline.local import LocalStore
>>> rollback(LocalStore(tempfile.mkdtemp()), "user_spend", "1.0.0")
Traceback (most recent call last):
...
mlforge.errors.VersionNotFound: feature 'user_spend' has no version 1.0.0 (in the offline store, feature 'user_spend')
  fix: available versions: none
"""

from __future__ import annotations

import logging
import tempfile
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from mlforge.definitions.names import check_name
from mlforge.equivalence import FLOAT_RTOL
from mlforge.errors import ConfigError, CorruptVersion, MlforgeError, StoreError, VersionNotFound
from mlforge.manifest import files_hash
from mlforge.materialize import BuildOptions, build_feature, rows_equivalent
from mlforge.offline.base import resolve_version
from mlforge.offline.local import LocalStore
from mlforge.records import VersionRecord
from mlforge.versioning import NEW_DATA, Change, ChangeKind, classify, schema_changes, sort_versions

if TYPE_CHECKING:
    from collections.abc import Mapping

    from mlforge.definitions.feature import Feature
    from mlforge.offline.base import OfflineStore
    from mlforge.workspace import Workspace

log = logging.getLogger(__name__)

#: ``diff`` exit code for an error (contract S4); 0-3 are the change kinds.
DIFF_ERROR = 4
_COMPARED = ("keys", "timestamp", "interval", "rows", "definition_hash", "schema_hash", "data_hash", "source_fingerprint", "watermark")


def diff_versions(store: OfflineStore, feature: str, v1: str | None = None, v2: str | None = None) -> dict[str, Any]:
    """How version ``v2`` differs from ``v1`` (contract S4).

    ``v2`` defaults to the latest version and ``v1`` to the version listed just before
    ``v2``. The result holds ``feature``, ``from``, ``to``, ``kind`` (a
    :class:`~mlforge.versioning.ChangeKind`), ``exit_code`` (0 identical, 1 PATCH, 2 MINOR,
    3 MAJOR), ``reason``, ``schema_changes`` (added / removed / retyped columns) and
    ``changes`` (other metadata fields that differ, as ``[old, new]``).

    Raises:
        CorruptVersion: the rows are compared (same definition, new data) and a file of
            either version differs from its record (S7).
        MlforgeError: unknown feature or version, or nothing to compare with; the CLI
            turns any error into exit code 4.
    """
    check_name(feature, kind="feature")
    to_version = resolve_version(store, feature, v2)
    if v1 is None:
        versions = store.list_versions(feature)
        earlier = [v for v in versions if _older(v, to_version)]
        if not earlier:
            newer = [v for v in versions if _older(to_version, v)]
            fix = f"pass two versions, e.g. the newest: `mlforge diff {feature} {to_version} {newer[-1]}`" if newer else "pass two versions: `mlforge diff FEATURE V1 V2`"
            raise VersionNotFound(f"feature {feature!r} has no version before {to_version} to compare with", fix=fix)
        v1 = earlier[-1]
    from_version = resolve_version(store, feature, v1)
    old = store.read_record(feature, from_version)
    new = store.read_record(feature, to_version)
    change = classify(old, new)
    if change.reason == NEW_DATA:
        # The rows are compared, so both versions' files are checked first (S7):
        # rows_equivalent reads a damaged version as "not equal", which would say PATCH.
        store.data_files(feature, from_version)
        if rows_equivalent(store, new, from_version, old, store.data_files(feature, to_version)):
            # Same rows written again (a forced rebuild): float noise is no change (S2), so identical.
            change = Change(
                ChangeKind.NONE,
                f"the same rows (canonical types, floats within {FLOAT_RTOL:g} relative) in other file bytes",
            )
    before, after = old.to_dict(), new.to_dict()  # the fields compared, as shown
    return {
        "feature": feature,
        "from": from_version,
        "to": to_version,
        "kind": change.kind,
        "exit_code": int(change.kind),
        "reason": change.reason,
        "schema_changes": schema_changes(dict(old.schema), dict(new.schema)),
        "changes": {f: [before[f], after[f]] for f in _COMPARED if before[f] != after[f]},
    }


def rollback(store: OfflineStore, feature: str, version: str | None = None, previous: bool = False, dry_run: bool = False) -> tuple[str | None, str]:
    """Point ``latest`` at ``version`` (or, with ``previous``, at the version before the
    current latest). Only the pointer moves; no version is written or deleted (S4).

    Returns:
        ``(latest before, latest after)``; with ``dry_run`` nothing changes.
    """
    check_name(feature, kind="feature")
    if (version is None) == (not previous):
        raise ConfigError("rollback needs exactly one of a version or previous=True", where=f"feature {feature!r}", fix="e.g. rollback(store, 'user_spend', '1.0.0')")
    try:
        current = store.latest_version(feature)
    except StoreError:
        if previous:  # "the version before latest" needs a readable latest
            raise
        current = None  # an unreadable pointer: a rollback to a named version is how it is mended
    if previous:
        if current is None:
            raise VersionNotFound(f"feature {feature!r} has no latest version", fix=f"run `mlforge build --features {feature}`")
        earlier = [v for v in store.list_versions(feature) if _older(v, current)]
        if not earlier:
            raise VersionNotFound(f"feature {feature!r} has no version before {current}", fix=f"see `mlforge list versions {feature}`")
        target = earlier[-1]
    else:
        target = resolve_version(store, feature, version)
    if not dry_run:  # also onto the version latest names: the pointer then records what it hides (S8)
        store.set_latest(feature, target)
    return current, target


def build_manifest(workspace: Workspace, defined: Mapping[str, Feature], project: str) -> dict[str, Any]:
    """One JSON-ready record of a project: every feature defined or stored, its latest
    version and each version's metadata."""
    store = workspace.offline_store
    names = sorted(set(defined) | set(store.list_features()))
    features: dict[str, Any] = {}
    for name in names:
        versions = store.list_versions(name)
        features[name] = {
            "defined": name in defined,
            "latest": store.latest_version(name),
            "versions": {v: store.read_metadata(name, v) for v in versions},
        }
    return {
        "project": project,
        "offline_store": repr(store),
        "generated_at": datetime.now(tz=UTC).isoformat(),
        "features": features,
    }


def sync(workspace: Workspace, features: Mapping[str, Feature], force: bool = False) -> list[dict[str, Any]]:
    """Rebuild the data files of versions whose ``_metadata.json`` is present but whose
    data is not (e.g. after cloning a repository that commits only the metadata).

    A version is rebuilt from the current definition and source into the version's own
    ``data/`` directory; its metadata is kept. It is refused (status ``refused``) when the
    source fingerprint or the definition hash differs from the recorded one, because the
    rebuilt data would not be that version's data; ``force=True`` rebuilds anyway when
    the schema still matches. Each entry: ``feature``, ``version``, ``status``
    (``present`` / ``rebuilt`` / ``refused`` / ``failed``), ``reason`` and, when the data
    was rebuilt, ``data_hash_matches``. A version whose files are present but differ from
    its record (missing, truncated, replaced: S7) is ``failed``, with the
    :class:`~mlforge.errors.CorruptVersion` message; sync rebuilds data that was left out,
    not data that was damaged.
    """
    store = workspace.offline_store
    if not store.capabilities.restores_data:
        raise ConfigError(f"sync needs a file-based offline store (local, S3 or GCS), not {store!r}", fix="Unity Catalog tables are rebuilt with `mlforge build --full-refresh`")
    entries: list[dict[str, Any]] = []
    for name in sorted(features):
        missing, damaged = _missing_data(store, name)
        entries += damaged
        if missing:
            entries += _sync_feature(workspace, features[name], missing, force)
        elif not damaged and (latest := store.latest_version(name)) is not None:
            entries.append({"feature": name, "version": latest, "status": "present", "reason": "data present"})
        elif not damaged and store.list_versions(name):  # versions, but the latest pointer is broken
            try:
                resolve_version(store, name, None)
            except VersionNotFound as exc:
                entries.append({"feature": name, "version": None, "status": "failed", "reason": str(exc), "error": str(exc)})
    return entries


def _missing_data(store: OfflineStore, name: str) -> tuple[list[str], list[dict[str, Any]]]:
    """The versions without data files, and a ``failed`` entry per version whose files are
    there but damaged: sync rebuilds what was left out, never what was changed (S7)."""
    missing, damaged = [], []
    for version in store.list_versions(name):
        try:
            if not store.has_data(name, version):
                missing.append(version)
        except CorruptVersion as exc:
            damaged.append({"feature": name, "version": version, "status": "failed", "reason": str(exc), "error": str(exc)})
    return missing, damaged


def _sync_feature(workspace: Workspace, feature: Feature, versions: list[str], force: bool) -> list[dict[str, Any]]:
    store = workspace.offline_store
    with tempfile.TemporaryDirectory(prefix="mlforge-sync-") as scratch_dir:
        # The one orchestrator builds into a scratch store; its files then fill the gaps.
        scratch = LocalStore(scratch_dir)
        outcome = build_feature(feature, workspace.engine_for(feature), scratch, BuildOptions())
        if outcome.status != "built":
            error = outcome.error or MlforgeError("the rebuild produced no version")
            return [{"feature": feature.name, "version": v, "status": "failed", "reason": str(error), "error": str(error)} for v in versions]
        built = scratch.read_record(feature.name)
        files = scratch.data_files(feature.name)
        entries = []
        for version in versions:
            recorded = store.read_record(feature.name, version)
            refusal = _refusal(recorded, built, force)
            if refusal:
                entries.append({"feature": feature.name, "version": version, "status": "refused", "reason": refusal, "error": refusal})
                continue
            try:
                store.restore_data(feature.name, version, files)
            except MlforgeError as exc:
                entries.append({"feature": feature.name, "version": version, "status": "failed", "reason": str(exc), "error": str(exc)})
                continue
            matches = files_hash(files) == recorded.data_hash
            entries.append({
                "feature": feature.name, "version": version, "status": "rebuilt", "rows": built.rows,
                "reason": "rebuilt from the current definition and source" + ("" if matches else " (same rows expected; file bytes differ from the original build)"),
                "data_hash_matches": matches,
            })
    return entries


def _refusal(recorded: VersionRecord, built: VersionRecord, force: bool) -> str | None:
    """Why the rebuilt data may not stand in for a recorded version, or ``None``."""
    if recorded.schema != built.schema:
        return f"the current definition produces a different schema than version {recorded.version}; build a new version instead"
    problems = []
    if recorded.source_fingerprint != built.source_fingerprint:
        problems.append("the source changed since this version was built")
    if recorded.definition_hash != built.definition_hash:
        problems.append("the feature definition changed since this version was built")
    if problems and not force:
        return "; ".join(problems) + " (use force=True / --force to rebuild it anyway)"
    return None


def _older(version: str, than: str) -> bool:
    return sort_versions([version, than])[0] == version and version != than


__all__ = ["DIFF_ERROR", "ChangeKind", "build_manifest", "diff_versions", "rollback", "sync"]
