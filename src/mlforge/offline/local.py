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
from pathlib import Path
from typing import Any

from mlforge.errors import ConcurrentPublish
from mlforge.offline.base import Staging
from mlforge.offline.blobs import LocalBlobs, fsync_dir
from mlforge.offline.versioned import (
    DATA,
    LATEST,
    METADATA,
    STAGING_PREFIX,
    VersionedStore,
    json_bytes,
)

__all__ = ["LATEST", "METADATA", "STAGING_PREFIX", "LocalStore"]


class LocalStore(VersionedStore):
    """Feature versions under a local directory.

    >>> import tempfile
    >>> LocalStore(tempfile.mkdtemp()).list_features()
    []
    """

    kind = "local"

    def __init__(self, path: str | os.PathLike[str] = "feature_store"):
        self.path = Path(path)
        self.blobs = LocalBlobs(self.path)

    def __repr__(self) -> str:
        return f"LocalStore({str(self.path)!r})"

    def version_dir(self, feature: str, version: str) -> Path:
        return self.path / self._version_key(feature, version)

    def _staging_root(self, feature: str) -> Path:
        # Staging lives beside the versions so that publishing is a same-filesystem rename.
        return self.path / self._feature_key(feature)

    def _commit(self, staging: Staging, version: str, metadata: dict[str, Any]) -> None:
        staged = self._staging_dir(staging)
        _write_durably(staged / METADATA, json_bytes(metadata))
        _fsync_tree(staged)
        target = self.version_dir(staging.feature, version)
        try:
            os.rename(staged, target)  # atomic; fails if another build published this version
        except OSError as exc:
            raise ConcurrentPublish(
                f"version {version} of feature {staging.feature!r} was published by another build",
                fix="re-run the build; it will compare against the new latest version",
            ) from exc
        fsync_dir(target.parent)

    def _local_data_dir(self, feature: str, version: str, metadata: dict[str, Any]) -> str:
        return str(self.version_dir(feature, version) / DATA)

    def restore_data(self, feature: str, version: str, files: list[str]) -> None:
        """Put rebuilt data files into an existing version that lacks them (``sync``)."""
        target = self.version_dir(feature, version) / DATA
        staging = self.stage(feature)
        try:
            for i, path in enumerate(sorted(files)):
                shutil.copyfile(path, Path(staging.data_dir) / f"part-{i:05d}.parquet")
            _fsync_tree(Path(staging.data_dir))
            if target.is_dir() and not any(target.iterdir()):
                target.rmdir()
            os.rename(staging.data_dir, target)  # atomic: the data appears complete or not at all
            fsync_dir(target.parent)
        finally:
            self.discard(staging)


def _write_durably(path: Path, payload: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(payload)
        fh.flush()
        os.fsync(fh.fileno())


def _fsync_tree(path: Path) -> None:
    for p in path.rglob("*"):
        if p.is_file():
            with open(p, "rb") as fh:
                os.fsync(fh.fileno())
    for d in [path, *[p for p in path.rglob("*") if p.is_dir()]]:
        fsync_dir(d)
