"""``LocalStore``: versions as plain Parquet directories on a local filesystem.

Layout (see docs/storage.md)::

    <path>/<feature>/
        _latest.json                    {"version": "1.2.0"}   -- replaced atomically
        1.0.0/_metadata.json            written before the directory becomes visible
        1.0.0/data/part-*.parquet
        .staging-<token>/               a build in progress; never read
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlforge.definitions.names import check_name
from mlforge.errors import ConcurrentPublish, StoreError
from mlforge.offline.base import Staging, resolve_version
from mlforge.versioning import is_version, sort_versions

if TYPE_CHECKING:
    import ibis.expr.types as ir

    from mlforge.engines.base import Engine

LATEST = "_latest.json"
METADATA = "_metadata.json"
STAGING_PREFIX = ".staging-"
_STALE_STAGING_SECONDS = 6 * 3600


class LocalStore:
    """Feature versions under a local directory.

    >>> import tempfile
    >>> LocalStore(tempfile.mkdtemp()).list_features()
    []
    """

    kind = "local"

    def __init__(self, path: str | os.PathLike[str] = "feature_store"):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"LocalStore({str(self.path)!r})"

    def _feature_dir(self, feature: str) -> Path:
        return self.path / check_name(feature, kind="feature")

    # -- listing -------------------------------------------------------------------
    def list_features(self) -> list[str]:
        if not self.path.is_dir():
            return []
        return sorted(p.name for p in self.path.iterdir() if p.is_dir() and not p.name.startswith((".", "_")) and self.list_versions(p.name))

    def list_versions(self, feature: str) -> list[str]:
        root = self._feature_dir(feature)
        if not root.is_dir():
            return []
        return sort_versions([p.name for p in root.iterdir() if is_version(p.name) and (p / METADATA).is_file()])

    def latest_version(self, feature: str) -> str | None:
        pointer = self._feature_dir(feature) / LATEST
        try:
            version = json.loads(pointer.read_text())["version"]
        except FileNotFoundError:
            return None
        except (ValueError, KeyError) as exc:
            raise StoreError(f"the latest pointer {pointer} is unreadable: {exc}", fix="run `mlforge rollback` to a listed version") from exc
        return version if (self._feature_dir(feature) / version / METADATA).is_file() else None

    def read_metadata(self, feature: str, version: str | None = None) -> dict[str, Any]:
        version = resolve_version(self, feature, version)
        return json.loads((self._feature_dir(feature) / version / METADATA).read_text())

    def data_files(self, feature: str, version: str | None = None) -> list[str]:
        version = resolve_version(self, feature, version)
        return sorted(str(p) for p in (self._feature_dir(feature) / version / "data").glob("*.parquet"))

    def version_dir(self, feature: str, version: str) -> Path:
        return self._feature_dir(feature) / version

    # -- writing -------------------------------------------------------------------
    def stage(self, feature: str) -> Staging:
        root = self._feature_dir(feature)
        root.mkdir(parents=True, exist_ok=True)
        self._clean_stale_staging(root)
        token = uuid.uuid4().hex
        data_dir = root / f"{STAGING_PREFIX}{token}" / "data"
        data_dir.mkdir(parents=True)
        return Staging(feature=feature, data_dir=str(data_dir), token=token)

    def publish(self, staging: Staging, version: str, metadata: dict[str, Any]) -> None:
        """Make ``version`` visible (one rename), then move the latest pointer (one replace)."""
        root = self._feature_dir(staging.feature)
        staged = root / f"{STAGING_PREFIX}{staging.token}"
        _write_json_durably(staged / METADATA, metadata)
        _fsync_tree(staged)
        target = root / version
        try:
            os.rename(staged, target)  # atomic; fails if another build published this version
        except OSError as exc:
            self.discard(staging)
            raise ConcurrentPublish(
                f"version {version} of feature {staging.feature!r} was published by another build",
                fix="re-run the build; it will compare against the new latest version",
            ) from exc
        _fsync_dir(root)
        self.set_latest(staging.feature, version)

    def discard(self, staging: Staging) -> None:
        shutil.rmtree(self._feature_dir(staging.feature) / f"{STAGING_PREFIX}{staging.token}", ignore_errors=True)

    def set_latest(self, feature: str, version: str) -> None:
        root = self._feature_dir(feature)
        if not (root / version / METADATA).is_file():
            raise StoreError(f"feature {feature!r} has no complete version {version}", fix="use `mlforge list versions`")
        tmp = root / f".latest-{uuid.uuid4().hex}.tmp"
        _write_json_durably(tmp, {"version": version})
        os.replace(tmp, root / LATEST)
        _fsync_dir(root)

    # -- reading -------------------------------------------------------------------
    def read(self, feature: str, engine: Engine, version: str | None = None) -> ir.Table:
        version = resolve_version(self, feature, version)
        files = self.data_files(feature, version)
        if not files:
            return engine.from_arrow(_empty_table(self.read_metadata(feature, version)))
        return engine._read_parquet(str(self._feature_dir(feature) / version / "data" / "*.parquet"))

    def _clean_stale_staging(self, root: Path) -> None:
        now = time.time()
        for p in root.glob(f"{STAGING_PREFIX}*"):
            try:
                if now - p.stat().st_mtime > _STALE_STAGING_SECONDS:
                    shutil.rmtree(p, ignore_errors=True)
            except FileNotFoundError:
                pass


def _empty_table(metadata: dict[str, Any]) -> Any:
    import pyarrow as pa

    from mlforge.manifest import arrow_schema

    return pa.Table.from_pylist([], schema=arrow_schema(metadata["schema"]))


def _write_json_durably(path: Path, payload: dict[str, Any]) -> None:
    with open(path, "w") as fh:
        json.dump(payload, fh, indent=2, sort_keys=True, default=str)
        fh.flush()
        os.fsync(fh.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(path: Path) -> None:
    for p in path.rglob("*"):
        if p.is_file():
            with open(p, "rb") as fh:
                os.fsync(fh.fileno())
    for d in [path, *[p for p in path.rglob("*") if p.is_dir()]]:
        _fsync_dir(d)
