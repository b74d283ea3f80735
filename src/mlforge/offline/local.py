"""``LocalStore``: versions as plain Parquet directories on a local filesystem.

Layout (see docs/storage.md)::

    <path>/<feature>/
        _latest.json                    {"version": "1.2.0"}   -- replaced atomically
        1.0.0/_metadata.json            written before the directory becomes visible
        1.0.0/data/part-*.parquet
        .staging-<token>/               a build in progress; never read

A version becomes visible by one ``rename(2)`` of its staging directory, which already
holds the data and ``_metadata.json``; the rename fails if the version exists.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from pathlib import Path

from mlforge.errors import ConcurrentPublish, ConfigError, StoreError
from mlforge.offline.base import Staging
from mlforge.offline.blobs import LocalBlobs, fsync_dir
from mlforge.offline.verify import describe_files, verified_files
from mlforge.offline.versioned import (
    DATA,
    LATEST,
    METADATA,
    STAGING_PREFIX,
    VersionedStore,
    record_bytes,
)
from mlforge.records import VersionRecord

__all__ = ["LATEST", "METADATA", "STAGING_PREFIX", "LocalStore"]


class LocalStore(VersionedStore):
    """Feature versions under a local directory.

    >>> import tempfile
    >>> LocalStore(tempfile.mkdtemp()).list_features()
    []
    """

    kind = "local"

    def __init__(self, path: str | os.PathLike[str] = "feature_store"):
        if not isinstance(path, (str, os.PathLike)) or not os.fspath(path).strip():
            # "" would make the project folder itself the store, a feature named `data` its source folder
            raise ConfigError(f"LocalStore needs a folder path, got {path!r}", where="LocalStore(path=...) / offline_store.path", fix="name a folder of its own, e.g. ./feature_store")
        self.path = Path(path)
        self.blobs = LocalBlobs(self.path)

    def __repr__(self) -> str:
        return f"LocalStore({str(self.path)!r})"

    def version_dir(self, feature: str, version: str) -> Path:
        return self.path / self._version_key(feature, version)

    def _staging_root(self, feature: str) -> Path:
        # Staging lives beside the versions so that publishing is a same-filesystem rename.
        return self.path / self._feature_key(feature)

    def _commit(self, staging: Staging, version: str, record: VersionRecord) -> None:
        staged = self._staging_dir(staging)
        _write_durably(staged / METADATA, record_bytes(record))
        _fsync_tree(staged)
        target = self.version_dir(staging.feature, version)
        try:
            os.rename(staged, target)  # atomic; fails if another build published this version
        except OSError as exc:
            if target.is_dir() and not (target / METADATA).is_file():  # a publish conflict, but with no build behind it
                raise ConcurrentPublish(
                    f"cannot publish version {version} of feature {staging.feature!r}: the directory {target} exists but holds no version (it has no {METADATA} file)",
                    where=f"feature {staging.feature!r}",
                    fix=f"move {target} aside (it may be a damaged version), then build again",
                ) from exc
            raise ConcurrentPublish(
                f"version {version} of feature {staging.feature!r} was published by another build",
                fix="re-run the build; it will compare against the new latest version",
            ) from exc
        fsync_dir(target.parent)

    def _verified_local_files(self, feature: str, version: str, record: VersionRecord) -> list[str]:
        return verified_files(feature, version, record, str(self.version_dir(feature, version) / DATA))

    def _check_stored(self, feature: str, version: str, record: VersionRecord, stored: Mapping[str, int]) -> None:
        # Local files are at hand: check row counts and foreign files too, as a read does.
        self._verified_local_files(feature, version, record)

    def restore_data(self, feature: str, version: str, files: list[str]) -> None:
        """Put rebuilt data files into an existing version that lacks them (``sync``), and
        record their sizes and row counts if they differ from the recorded ones."""
        target = self.version_dir(feature, version) / DATA
        record = self.read_record(feature, version)
        staging = self.stage(feature)
        try:
            for path in sorted(files):
                shutil.copyfile(path, Path(staging.data_dir) / os.path.basename(path))
            _fsync_tree(Path(staging.data_dir))
            restored = describe_files(staging.data_dir)
            if target.is_dir() and not any(target.iterdir()):
                target.rmdir()
            try:
                os.rename(staging.data_dir, target)  # atomic: the data appears complete or not at all
            except OSError as exc:
                raise StoreError(f"{feature} {version} already has data files in {target}", fix="remove that data/ directory first, then run `mlforge sync` again") from exc
            fsync_dir(target.parent)
        finally:
            self.discard(staging)
        restored_record = record.with_files(restored)  # a forced sync may restore other rows
        if restored_record != record:
            self.blobs.put(f"{self._version_key(feature, version)}/{METADATA}", record_bytes(restored_record))


def _write_durably(path: Path, payload: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(payload)
        fh.flush()
        os.fsync(fh.fileno())


def _fsync_tree(path: Path) -> None:
    for p in path.rglob("*"):
        # A file with another link is a month file an incremental build took over from the
        # previous version, durable since that version's commit: its new name is made
        # durable by the directory's fsync below.
        if p.is_file() and p.stat().st_nlink == 1:
            with open(p, "rb") as fh:
                os.fsync(fh.fileno())
    for d in [path, *[p for p in path.rglob("*") if p.is_dir()]]:
        fsync_dir(d)
