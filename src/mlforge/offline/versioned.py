"""The logic every file-based offline store shares (S1-S5), over a :class:`Blobs` layer.

Layout, identical on a local disk, S3 and GCS (see docs/storage.md)::

    <root>/<feature>/
        _latest.json                  {"version": "1.2.0"}     -- replaced atomically
        1.0.0/_metadata.json          the commit record: a version exists iff this exists
        1.0.0/data/*.parquet          plain Parquet

A build writes its data files into a local *staging* directory (engines write Parquet to
local disk). :meth:`publish` then makes the version visible in one atomic step
(:meth:`_commit`: a directory rename locally, a create-only put of ``_metadata.json`` on an
object store) and only afterwards replaces ``_latest.json``. A crash before the commit
leaves no version; a crash between the commit and the pointer leaves a complete version
that is not yet latest. Either way the previous latest is untouched (S1).
"""

from __future__ import annotations

import glob
import json
import logging
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from mlforge.definitions.names import check_name
from mlforge.errors import DefinitionError, StoreError
from mlforge.offline.base import Staging, StoreCapabilities, resolve_version
from mlforge.versioning import is_version, parse_version, sort_versions

if TYPE_CHECKING:
    import ibis.expr.types as ir

    from mlforge.engines.base import Engine
    from mlforge.offline.blobs import Blobs

log = logging.getLogger(__name__)

LATEST = "_latest.json"
METADATA = "_metadata.json"
DATA = "data"
STAGING_PREFIX = ".staging-"
_STALE_STAGING_SECONDS = 6 * 3600

#: Fault-injection hook for tests/test_fault_injection.py; unset in normal use.
FAULT_LOG_ENV = "MLFORGE_FAULT_LOG"
FAULT_PAUSE_ENV = "MLFORGE_FAULT_PAUSE"


def checkpoint(name: str) -> None:
    """Mark a named point of a publish. A no-op unless ``MLFORGE_FAULT_LOG`` is set: then the
    name is appended to that file, and if ``MLFORGE_FAULT_PAUSE`` is ``name`` (or
    ``name:seconds``) the process sleeps there, so a test can ``kill -9`` it at that point."""
    log_path = os.environ.get(FAULT_LOG_ENV)
    if not log_path:
        return
    with open(log_path, "a") as fh:
        fh.write(f"{name} {os.getpid()}\n")
    pause = os.environ.get(FAULT_PAUSE_ENV, "")
    point, _, seconds = pause.partition(":")
    if point == name:
        time.sleep(float(seconds or 30))


class VersionedStore:
    """Versions, the latest pointer, staging and reading, over ``self.blobs``.

    Subclasses choose the blob layer and implement :meth:`_commit` (make a staged version
    visible atomically) and :meth:`_local_data_dir` (a local directory holding a version's
    Parquet files, for engines to read).
    """

    kind: str = "base"
    capabilities: ClassVar[StoreCapabilities] = StoreCapabilities(month_files=True, restores_data=True)
    blobs: Blobs

    def use_engine(self, engine: Engine) -> None:
        """File stores read and write the same way for every engine."""

    # -- layout --------------------------------------------------------------------
    @staticmethod
    def _feature_key(feature: str) -> str:
        return check_name(feature, kind="feature")

    def _version_key(self, feature: str, version: str) -> str:
        parse_version(version)  # a version becomes a path segment too (E4)
        return f"{self._feature_key(feature)}/{version}"

    def _staging_root(self, feature: str) -> Path:  # pragma: no cover - abstract
        raise NotImplementedError

    # -- listing -------------------------------------------------------------------
    def list_features(self) -> list[str]:
        names = [c for c in self.blobs.children("") if not c.startswith((".", "_")) and _is_name(c)]
        return [n for n in names if self.list_versions(n)]

    def list_versions(self, feature: str) -> list[str]:
        """Complete versions only: those whose ``_metadata.json`` exists."""
        root = self._feature_key(feature)
        candidates = [c for c in self.blobs.children(root) if is_version(c)]
        return sort_versions([v for v in candidates if self.blobs.exists(f"{root}/{v}/{METADATA}")])

    def latest_version(self, feature: str) -> str | None:
        key = f"{self._feature_key(feature)}/{LATEST}"
        raw = self.blobs.get(key)
        if raw is None:
            return None
        try:
            version = json.loads(raw)["version"]
            parse_version(version)
        except (ValueError, KeyError, TypeError, DefinitionError) as exc:
            raise StoreError(f"the latest pointer {self.blobs.uri(key)} is unreadable: {exc}", where=f"feature {feature!r}", fix=f"point it at a listed version: `mlforge list versions {feature}`, then `mlforge rollback {feature} VERSION`") from exc
        return version if self.blobs.exists(f"{self._version_key(feature, version)}/{METADATA}") else None

    def read_metadata(self, feature: str, version: str | None = None) -> dict[str, Any]:
        if version is None or not is_version(version):
            version = resolve_version(self, feature, version)
        # One read: the metadata's existence is what makes the version exist.
        raw = self.blobs.get(f"{self._version_key(feature, version)}/{METADATA}")
        if raw is None:
            resolve_version(self, feature, version)  # raises VersionNotFound, listing versions
            raise StoreError(f"metadata of {feature} {version} disappeared while reading", where=f"feature {feature!r}", fix="retry")
        try:
            metadata = json.loads(raw)
        except ValueError as exc:
            raise StoreError(
                f"the metadata {self.blobs.uri(f'{self._version_key(feature, version)}/{METADATA}')} is not JSON: {exc}",
                where=f"feature {feature!r}, version {version}",
                fix=f"restore the file from a backup, or `mlforge rollback {feature} VERSION` to another version",
            ) from None
        if not isinstance(metadata, dict):
            raise StoreError(f"the metadata of {feature} {version} is not a JSON object", where=f"feature {feature!r}, version {version}", fix="restore the file from a backup")
        return metadata

    def _version_and_metadata(self, feature: str, version: str | None) -> tuple[str, dict[str, Any]]:
        if version is None:
            version = resolve_version(self, feature, None)
        return version, self.read_metadata(feature, version)

    def data_files(self, feature: str, version: str | None = None) -> list[str]:
        """Local paths of a version's Parquet files, for engines to read."""
        version, metadata = self._version_and_metadata(feature, version)
        local_dir = self._local_data_dir(feature, version, metadata)
        files = sorted(glob.glob(os.path.join(local_dir, "*.parquet")))
        check_data_files(feature, version, files)
        return files

    def data_uris(self, feature: str, version: str | None = None) -> list[str]:
        """Where a version's Parquet files are stored (paths, ``s3://`` or ``gs://`` URIs)."""
        version = resolve_version(self, feature, version)
        prefix = f"{self._version_key(feature, version)}/{DATA}/"
        listed = self.read_metadata(feature, version).get("files")
        if listed is not None:  # object stores: exactly the files the publisher committed
            return [self.blobs.uri(prefix + name) for name in sorted(listed)]
        return [self.blobs.uri(k) for k in self.blobs.list(prefix) if k.endswith(".parquet")]

    def has_data(self, feature: str, version: str) -> bool:
        """Whether a version's data files are present (they may be missing after a clone
        that carried only the metadata; see ``mlforge sync``)."""
        prefix = f"{self._version_key(feature, version)}/{DATA}/"
        present = {k[len(prefix):] for k in self.blobs.list(prefix) if k.endswith(".parquet")}
        metadata = self.read_metadata(feature, version)
        if metadata.get("files") is not None:
            return set(metadata["files"]) <= present
        return bool(present) or not metadata.get("rows")

    # -- writing -------------------------------------------------------------------
    def stage(self, feature: str) -> Staging:
        root = self._staging_root(feature)
        root.mkdir(parents=True, exist_ok=True)
        _clean_stale_staging(root)
        token = uuid.uuid4().hex
        data_dir = root / f"{STAGING_PREFIX}{token}" / DATA
        data_dir.mkdir(parents=True)
        checkpoint("staged")
        return Staging(feature=feature, data_dir=str(data_dir), token=token)

    def publish(self, staging: Staging, version: str, metadata: dict[str, Any]) -> None:
        """Make ``version`` visible in one atomic step, then move the latest pointer.

        Raises:
            ConcurrentPublish: another build published ``version`` first; nothing of this
                build stays behind.
        """
        self._version_key(staging.feature, version)
        checkpoint("commit")
        try:
            self._commit(staging, version, metadata)
        finally:
            self.discard(staging)
        checkpoint("visible")
        self.set_latest(staging.feature, version)
        checkpoint("done")

    def _commit(self, staging: Staging, version: str, metadata: dict[str, Any]) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def discard(self, staging: Staging) -> None:
        shutil.rmtree(self._staging_dir(staging), ignore_errors=True)

    def _staging_dir(self, staging: Staging) -> Path:
        return self._staging_root(staging.feature) / f"{STAGING_PREFIX}{staging.token}"

    def staging_dirs(self, feature: str) -> list[str]:
        """Builds of ``feature`` in progress (or killed) on this machine."""
        root = self._staging_root(feature)
        return sorted(str(p) for p in root.glob(f"{STAGING_PREFIX}*")) if root.is_dir() else []

    def set_latest(self, feature: str, version: str) -> None:
        """Point ``latest`` at a complete version (one atomic replace)."""
        key = self._version_key(feature, version)
        if not self.blobs.exists(f"{key}/{METADATA}"):
            raise StoreError(f"feature {feature!r} has no complete version {version}", fix="use `mlforge list versions`")
        checkpoint("pointer")
        self.blobs.put(f"{self._feature_key(feature)}/{LATEST}", json_bytes({"version": version}))

    # -- reading -------------------------------------------------------------------
    def read(self, feature: str, engine: Engine, version: str | None = None) -> ir.Table:
        version, metadata = self._version_and_metadata(feature, version)
        local_dir = self._local_data_dir(feature, version, metadata)
        files = glob.glob(os.path.join(local_dir, "*.parquet"))
        if not files:
            return engine.from_arrow(empty_table(metadata))
        check_data_files(feature, version, files)
        return engine._read_parquet(os.path.join(local_dir, "*.parquet"))

    def _local_data_dir(self, feature: str, version: str, metadata: dict[str, Any]) -> str:  # pragma: no cover - abstract
        raise NotImplementedError


def check_data_files(feature: str, version: str, files: list[str]) -> None:
    """Each data file of a version has a readable Parquet footer: a truncated or foreign
    file is an error naming the version and the file (S7), not an engine's "magic bytes"."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    for path in sorted(files):
        try:
            pq.read_metadata(path)
        except (OSError, ValueError, pa.ArrowException) as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise StoreError(
                f"data file {path} of {feature} {version} is damaged (truncated or not Parquet): {reason}",
                where=f"feature {feature!r}, version {version}",
                fix=f"restore the file from a backup, or `mlforge rollback {feature} VERSION` to an intact version and rebuild with `mlforge build --features {feature} --full-refresh`",
            ) from None


def _is_name(text: str) -> bool:
    try:
        check_name(text, kind="feature")
    except DefinitionError:
        return False
    return True


def json_bytes(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, indent=2, sort_keys=True, default=str).encode("utf-8")


def _clean_stale_staging(root: Path) -> None:
    """Remove staging directories (and pointer temp files) of builds killed long ago."""
    now = time.time()
    for p in [*root.glob(f"{STAGING_PREFIX}*"), *root.glob(".*.tmp")]:
        try:
            if now - p.stat().st_mtime <= _STALE_STAGING_SECONDS:
                continue
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink()
        except FileNotFoundError:
            pass


def empty_table(metadata: dict[str, Any]) -> Any:
    """A zero-row Arrow table with a version's schema."""
    import pyarrow as pa

    from mlforge.manifest import arrow_schema

    return pa.Table.from_pylist([], schema=arrow_schema(metadata["schema"]))
