"""Offline stores on object stores (S3, GCS): same layout and protocol as ``LocalStore``.

Object stores have no rename, so a version is published in three steps:

1. upload the staged data files to ``<feature>/<version>/data/``, each named with the
   build's token so that two builds never overwrite each other's objects;
2. create ``<feature>/<version>/_metadata.json`` with a create-only put (S3
   ``If-None-Match: *``, GCS ``ifGenerationMatch=0``). This is the commit: the version
   exists from this moment, complete; a second publisher of the same version fails here
   with :class:`~mlforge.errors.ConcurrentPublish` and deletes its own uploads;
3. replace ``<feature>/_latest.json``.

The record lists the committed files (names, sizes, row counts), and mlforge reads exactly
those. After a commit, objects under ``data/`` that are not listed (left by a killed or
losing publisher of the same version) are deleted, so plain ``data/*.parquet`` globs stay
exact.

Engines read a version from a local cache: its files are downloaded once into
``<cache_dir>/<store>/<feature>/<version>-<data hash>/`` (versions are immutable), which
works the same on every engine and needs no cloud credentials inside the engine. Every read
first lists the version's objects (one request) and checks their sizes against the record,
and checks the local copies' sizes and row counts (S7); a damaged cache entry is downloaded
again.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path

from mlforge.errors import ConcurrentPublish, CorruptVersion
from mlforge.offline.base import Staging
from mlforge.offline.verify import check_sizes, describe_file, parquet_files, verified_files
from mlforge.offline.versioned import DATA, METADATA, VersionedStore, checkpoint, record_bytes
from mlforge.records import DataFile, VersionRecord
from mlforge.versioning import is_version, sort_versions

log = logging.getLogger(__name__)

CACHE_ENV = "MLFORGE_CACHE_DIR"
_COMPLETE = ".complete"
_TOKEN_LEN = 16


def default_cache_dir() -> Path:
    """``$MLFORGE_CACHE_DIR``, else ``$XDG_CACHE_HOME/mlforge``, else ``~/.cache/mlforge``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "mlforge"


class ObjectStore(VersionedStore):
    """Common part of :class:`~mlforge.offline.s3.S3Store` and
    :class:`~mlforge.offline.gcs.GCSStore`; subclasses only create ``self.blobs``."""

    def __init__(self, *, location: str, cache_dir: str | os.PathLike[str] | None = None, staging_dir: str | os.PathLike[str] | None = None):
        self.location = location
        self._cache_dir = Path(cache_dir) if cache_dir is not None else None
        self._staging_base = Path(staging_dir) if staging_dir is not None else None

    @property
    def cache_dir(self) -> Path:
        return (self._cache_dir or default_cache_dir()) / "offline" / self._store_id

    @property
    def _store_id(self) -> str:
        return hashlib.sha256(self.location.encode()).hexdigest()[:16]

    def _staging_root(self, feature: str) -> Path:
        base = self._staging_base or Path(tempfile.gettempdir()) / "mlforge-staging"
        return base / self._store_id / self._feature_key(feature)

    def list_versions(self, feature: str) -> list[str]:
        """Complete versions, from one listing (a request per version would be slow)."""
        root = self._feature_key(feature)
        committed = [k.split("/")[1] for k in self.blobs.list(f"{root}/") if k.count("/") == 2 and k.endswith(f"/{METADATA}")]
        return sort_versions([v for v in committed if is_version(v)])

    # -- publishing ----------------------------------------------------------------
    def _commit(self, staging: Staging, version: str, record: VersionRecord) -> None:
        version_key = self._version_key(staging.feature, version)
        metadata_key = f"{version_key}/{METADATA}"
        if self.blobs.exists(metadata_key):
            raise _concurrent(staging.feature, version)
        names = self._upload_staged(staging, version_key)
        # The objects carry the build's token in their names; sizes and rows are the staged files'.
        by_local_name = {_local_name(n): n for n in names}
        committed = tuple(DataFile(by_local_name[f.path], f.size, f.rows) for f in record.files or ())
        checkpoint("metadata")
        try:
            created = self.blobs.put_if_absent(metadata_key, record_bytes(record.with_changes(files=committed)))
        except BaseException:
            self._delete_quietly([f"{version_key}/{DATA}/{n}" for n in names])
            raise
        if not created:
            self._delete_quietly([f"{version_key}/{DATA}/{n}" for n in names])
            raise _concurrent(staging.feature, version)
        self._remove_unlisted(version_key, names)

    def _upload_staged(self, staging: Staging, version_key: str) -> list[str]:
        """Upload the staged files under names unique to this build; on failure remove them."""
        uploaded: list[str] = []
        try:
            for path in parquet_files(staging.data_dir):
                name = f"{staging.token[:_TOKEN_LEN]}-{os.path.basename(path)}"
                checkpoint("upload")
                self.blobs.upload(path, f"{version_key}/{DATA}/{name}")
                uploaded.append(name)
        except BaseException:
            self._delete_quietly([f"{version_key}/{DATA}/{n}" for n in uploaded])
            raise
        return uploaded

    def _remove_unlisted(self, version_key: str, names: list[str]) -> None:
        """After a commit no other publisher of this version can succeed, so any data object
        not listed in the metadata is debris of a killed or losing build."""
        prefix = f"{version_key}/{DATA}/"
        keep = {prefix + n for n in names}
        self._delete_quietly([k for k in self.blobs.list(prefix) if k not in keep])

    def _delete_quietly(self, keys: list[str]) -> None:
        if not keys:
            return
        try:
            self.blobs.delete(keys)
        except Exception:  # cleanup is best effort; readers only follow the metadata
            log.warning("could not delete %d leftover object(s) under %s", len(keys), self.location, exc_info=True)

    def restore_data(self, feature: str, version: str, files: list[str]) -> None:
        """Upload rebuilt data files into an existing version that lacks them (``sync``),
        then rewrite its record's file list."""
        version_key = self._version_key(feature, version)
        record = self.read_record(feature, version)
        token = uuid.uuid4().hex[:_TOKEN_LEN]
        restored = []
        for path in sorted(files):
            described = describe_file(path)
            name = f"{token}-{described.path}"
            self.blobs.upload(path, f"{version_key}/{DATA}/{name}")
            restored.append(DataFile(name, described.size, described.rows))
        names = [f.path for f in restored]
        self.blobs.put(f"{version_key}/{METADATA}", record_bytes(record.with_files(restored)))
        self._remove_unlisted(version_key, names)

    # -- reading -------------------------------------------------------------------
    def _verified_local_files(self, feature: str, version: str, record: VersionRecord) -> list[str]:
        """Check the stored objects' sizes (one listing), then return the local copies from
        the cache, downloading them once; the copies' sizes and row counts are checked too."""
        prefix = f"{self._version_key(feature, version)}/{DATA}/"
        stored = {k[len(prefix):]: size for k, size in self.blobs.sizes(prefix).items() if k.endswith(".parquet")}
        check_sizes(feature, version, record, stored)
        entry = self.cache_dir / self._feature_key(feature) / f"{version}-{str(record.data_hash or 'nohash')[:16]}"
        if (entry / _COMPLETE).is_file():
            try:
                return verified_files(feature, version, record, str(entry / DATA), _local_name)
            except CorruptVersion:
                log.warning("the cached copy of %s %s in %s is damaged; downloading it again", feature, version, entry)
                shutil.rmtree(entry, ignore_errors=True)
        names = [f.path for f in record.files] if record.files is not None else sorted(stored)
        self._download(prefix, names, entry, lambda directory: verified_files(feature, version, record, directory, _local_name))
        return verified_files(feature, version, record, str(entry / DATA), _local_name)

    def _download(self, prefix: str, names: list[str], entry: Path, check: Callable[[str], object]) -> None:
        """Download objects into a cache entry, which appears by one rename once ``check``
        accepted the downloaded files."""
        entry.parent.mkdir(parents=True, exist_ok=True)
        tmp = entry.parent / f".download-{uuid.uuid4().hex}"
        try:
            (tmp / DATA).mkdir(parents=True)
            for name in sorted(names):
                self.blobs.download(prefix + name, str(tmp / DATA / _local_name(name)))
            check(str(tmp / DATA))
            (tmp / _COMPLETE).touch()
            with contextlib.suppress(OSError):  # another reader filled the cache first: same files
                os.rename(tmp, entry)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def _local_name(object_name: str) -> str:
    """A data object's name without its build token: the name the engine wrote (e.g.
    ``2024-03.parquet``). One version's objects all carry one token, so names stay unique."""
    token, sep, rest = object_name.partition("-")
    return rest if sep and len(token) == _TOKEN_LEN else object_name


def _concurrent(feature: str, version: str) -> ConcurrentPublish:
    return ConcurrentPublish(
        f"version {version} of feature {feature!r} was published by another build",
        fix="re-run the build; it will compare against the new latest version",
    )
