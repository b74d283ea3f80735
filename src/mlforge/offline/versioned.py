"""The logic every file-based offline store shares (S1-S5), over a :class:`Blobs` layer.

Layout, identical on a local disk, S3 and GCS (see docs/storage.md)::

    <root>/<feature>/
        _latest.json                  {"version": "1.2.0"}     -- replaced atomically
        1.0.0/_metadata.json          the commit record: a version exists iff this exists
        1.0.0/data/*.parquet          plain Parquet

A build writes its data files into a local *staging* directory (engines write Parquet to
local disk). :meth:`publish` then makes the version visible in one atomic step
(:meth:`_commit`: a directory rename locally, a create-only put of ``_metadata.json`` on an
object store) and only afterwards moves ``_latest.json``. A crash before the commit
leaves no version; a crash between the commit and the pointer leaves a complete version
that is not yet latest. Either way the previous latest is untouched (S1).

The record lists every data file with its size and row count, and every read checks the
files against it (S7, :mod:`mlforge.offline.verify`). A publish moves the pointer only
forward in version order, by compare-and-swap (:meth:`Blobs.put_if_tag`): when a
concurrent build already pointed ``latest`` at a newer version, the pointer stays there and
the older version is published without becoming latest (S8). Only :meth:`set_latest`
(``rollback``) moves it backwards.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from mlforge.definitions.names import check_name
from mlforge.errors import ConcurrentPublish, CorruptVersion, DefinitionError, StoreError
from mlforge.offline.base import Staging, StoreCapabilities, resolve_version
from mlforge.offline.verify import check_sizes, describe_files
from mlforge.records import VersionRecord, record_json
from mlforge.versioning import is_version, parse_version, sort_versions

if TYPE_CHECKING:
    import ibis.expr.schema as sch
    import ibis.expr.types as ir

    from mlforge.engines.base import Engine
    from mlforge.offline.blobs import Blobs

log = logging.getLogger(__name__)

LATEST = "_latest.json"
METADATA = "_metadata.json"
DATA = "data"
STAGING_PREFIX = ".staging-"
_STALE_STAGING_SECONDS = 6 * 3600
#: Compare-and-swap attempts of one pointer move before giving up (each loses only to
#: another writer's successful move, so more than a few means a storm of builds).
_POINTER_ATTEMPTS = 20

#: Fault-injection hook for tests/test_fault_injection.py; unset in normal use.
FAULT_LOG_ENV = "MLFORGE_FAULT_LOG"
FAULT_PAUSE_ENV = "MLFORGE_FAULT_PAUSE"
#: A file whose appearance ends a pause early (a test resumes a paused build with it).
FAULT_RESUME_ENV = "MLFORGE_FAULT_RESUME"


def checkpoint(name: str) -> None:
    """Mark a named point of a publish. A no-op unless ``MLFORGE_FAULT_LOG`` is set: then the
    name is appended to that file, and if ``MLFORGE_FAULT_PAUSE`` is ``name`` (or
    ``name:seconds``) the process sleeps there, so a test can ``kill -9`` it at that point
    or, by creating the file ``MLFORGE_FAULT_RESUME`` names, let it go on."""
    log_path = os.environ.get(FAULT_LOG_ENV)
    if not log_path:
        return
    with open(log_path, "a") as fh:
        fh.write(f"{name} {os.getpid()}\n")
    pause = os.environ.get(FAULT_PAUSE_ENV, "")
    point, _, seconds = pause.partition(":")
    if point != name:
        return
    deadline = time.monotonic() + float(seconds or 30)
    resume = os.environ.get(FAULT_RESUME_ENV)
    while time.monotonic() < deadline and not (resume and os.path.exists(resume)):
        time.sleep(0.01 if resume else deadline - time.monotonic())


class VersionedStore:
    """Versions, the latest pointer, staging and reading, over ``self.blobs``.

    Subclasses choose the blob layer and implement :meth:`_commit` (make a staged version
    visible atomically) and :meth:`_verified_local_files` (local paths of a version's
    Parquet files, checked against its record, for engines to read).
    """

    kind: str = "base"
    capabilities: ClassVar[StoreCapabilities] = StoreCapabilities(month_files=True, restores_data=True)
    blobs: Blobs

    def use_engine(self, engine: Engine) -> None:
        """File stores read and write the same way for every engine."""

    def check_columns(self, feature: str, schema: sch.Schema) -> None:
        """Parquet files hold every name and type a build's engines produce."""

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

    def read_record(self, feature: str, version: str | None = None) -> VersionRecord:
        """The record of ``version`` (default: the latest)."""
        version = self._resolved(feature, version)
        # One read: the metadata's existence is what makes the version exist.
        key = f"{self._version_key(feature, version)}/{METADATA}"
        raw = self.blobs.get(key)
        if raw is None:
            resolve_version(self, feature, version)  # raises VersionNotFound, listing versions
            raise StoreError(f"metadata of {feature} {version} disappeared while reading", where=f"feature {feature!r}", fix="retry")
        try:
            raw_record = json.loads(raw)
        except ValueError as exc:
            raise StoreError(
                f"the metadata {self.blobs.uri(key)} is not JSON: {exc}",
                where=f"feature {feature!r}, version {version}",
                fix=f"restore the file from a backup, or `mlforge rollback {feature} VERSION` to another version",
            ) from None
        if not isinstance(raw_record, dict):
            raise StoreError(f"the metadata of {feature} {version} is not a JSON object", where=f"feature {feature!r}, version {version}", fix="restore the file from a backup")
        try:
            record = VersionRecord.from_dict(raw_record)
        except StoreError as exc:  # damaged or newer: say which file
            raise StoreError(exc.what, where=self.blobs.uri(key), fix=exc.fix) from None
        problem = _identity_problem(raw_record, feature, version)
        if problem:  # read as it is, it would name another version's files, or none (S7, P4)
            raise CorruptVersion(
                f"the metadata of {feature} {version} is damaged: {problem}; mlforge will not read a damaged version",
                where=self.blobs.uri(key),
                fix=f"restore the file from a backup, or point latest at an intact version (`mlforge rollback {feature} VERSION`)",
            )
        return record

    def _resolved(self, feature: str, version: str | None) -> str:
        """``version`` when it looks like one (reading its record proves it exists), else
        the latest."""
        return version if version is not None and is_version(version) else resolve_version(self, feature, version)

    def read_metadata(self, feature: str, version: str | None = None) -> dict[str, Any]:
        """The record of ``version`` in its JSON form (what ``_metadata.json`` holds)."""
        return self.read_record(feature, version).to_dict()

    def data_files(self, feature: str, version: str | None = None) -> list[str]:
        """Local paths of a version's Parquet files, for engines to read, each checked
        against the record (S7)."""
        version = self._resolved(feature, version)
        return self._verified_local_files(feature, version, self.read_record(feature, version))

    def data_uris(self, feature: str, version: str | None = None) -> list[str]:
        """Where a version's Parquet files are stored (paths, ``s3://`` or ``gs://`` URIs)."""
        version = resolve_version(self, feature, version)
        prefix = f"{self._version_key(feature, version)}/{DATA}/"
        listed = self.read_record(feature, version).files
        if listed is not None:  # exactly the files the publisher committed
            return [self.blobs.uri(prefix + f.path) for f in sorted(listed, key=lambda f: f.path)]
        return [self.blobs.uri(k) for k in self.blobs.list(prefix) if k.endswith(".parquet")]

    def has_data(self, feature: str, version: str) -> bool:
        """Whether a version's data files are present. ``False`` when none is (a clone that
        carried only the metadata; see ``mlforge sync``).

        Raises:
            CorruptVersion: some files are present but one is missing, truncated or
                replaced (S7): the data was damaged, not left out.
        """
        record = self.read_record(feature, version)
        prefix = f"{self._version_key(feature, version)}/{DATA}/"
        stored = {k[len(prefix):]: size for k, size in self.blobs.sizes(prefix).items() if k.endswith(".parquet")}
        if record.files is None:  # format 1, local: presence is all there is to check
            return bool(stored) or not record.rows
        if record.files and not any(f.path in stored for f in record.files):
            return False
        self._check_stored(feature, version, record, stored)
        return True

    def _check_stored(self, feature: str, version: str, record: VersionRecord, stored: Mapping[str, int]) -> None:
        """Check a version's stored files (name -> size) against its record (S7)."""
        check_sizes(feature, version, record, stored)

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

    def publish(self, staging: Staging, version: str, record: VersionRecord | Mapping[str, Any]) -> str:
        """Make ``version`` visible in one atomic step, then move the latest pointer forward
        to it. The record gets the staged files' names, sizes and row counts, and their
        total as its ``rows`` (S7).

        Returns:
            The version ``latest`` names afterwards: ``version``, or a newer one that a
            concurrent build published meanwhile (S8; logged as a warning).

        Raises:
            ConcurrentPublish: another build published ``version`` first; nothing of this
                build stays behind.
        """
        self._version_key(staging.feature, version)
        if not isinstance(record, VersionRecord):
            record = VersionRecord.from_dict(record)
        record = record.with_files(describe_files(staging.data_dir), version=version)
        checkpoint("commit")
        try:
            self._commit(staging, version, record)
        finally:
            self.discard(staging)
        checkpoint("visible")
        latest = self.advance_latest(staging.feature, version)
        checkpoint("done")
        return latest

    def _commit(self, staging: Staging, version: str, record: VersionRecord) -> None:  # pragma: no cover - abstract
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
        """Point ``latest`` at a complete version, older or newer than the current one: the
        explicit move of ``rollback`` (S4, S8). A pointer moved below other versions names
        the newest of them (``hides``): a later build equal to one of those publishes its
        rows again rather than adopting it (:meth:`adopt_commit`)."""
        self._require_complete(feature, version)
        newest = sort_versions(self.list_versions(feature))[-1]
        self._move_latest(feature, version, forward_only=False, hides=newest if newest != version else None)

    def adopt_commit(self, feature: str, version: str) -> str | None:
        raw = self.blobs.get(f"{self._feature_key(feature)}/{LATEST}")
        hides = _pointer_field(raw, "hides") if raw is not None else None
        if hides is not None and parse_version(version) <= parse_version(hides):
            return None
        return self.advance_latest(feature, version)

    def advance_latest(self, feature: str, version: str) -> str:
        """Point ``latest`` at ``version`` unless it already names a newer complete version
        (S8). Returns the version ``latest`` names afterwards."""
        self._require_complete(feature, version)
        return self._move_latest(feature, version, forward_only=True)

    def _require_complete(self, feature: str, version: str) -> None:
        if not self._is_complete(feature, version):
            raise StoreError(f"feature {feature!r} has no complete version {version}", fix="use `mlforge list versions`")

    def _move_latest(self, feature: str, version: str, *, forward_only: bool, hides: str | None = None) -> str:
        """Compare-and-swap the pointer: read it, decide, write only if it is unchanged."""
        key = f"{self._feature_key(feature)}/{LATEST}"
        payload = _json_bytes({"version": version, **({"hides": hides} if hides else {})})
        for attempt in range(_POINTER_ATTEMPTS):
            current = self.blobs.get_with_tag(key)
            named = _pointer_version(current.data) if current is not None else None
            if named == version and (forward_only or current is None or current.data == payload):
                return version  # a rollback to the version latest names still records what it hides
            if forward_only and named is not None and parse_version(named) > parse_version(version) and self._is_complete(feature, named):
                log.warning(
                    "feature %s: version %s is published, but latest stays at %s, which a concurrent build "
                    "published meanwhile; read %s by pinning it, or `mlforge rollback %s %s`",
                    feature, version, named, version, feature, version,
                )
                return named
            if attempt == 0:
                checkpoint("pointer")
            if self.blobs.put_if_tag(key, payload, current.tag if current is not None else None):
                return version
        raise ConcurrentPublish(
            f"the latest pointer of {feature!r} changed {_POINTER_ATTEMPTS} times while moving it to {version}",
            where=self.blobs.uri(key),
            fix=f"{version} is published; retry, or `mlforge rollback {feature} {version}`",
        )

    def _is_complete(self, feature: str, version: str) -> bool:
        return self.blobs.exists(f"{self._version_key(feature, version)}/{METADATA}")

    # -- reading -------------------------------------------------------------------
    def read(self, feature: str, engine: Engine, version: str | None = None) -> ir.Table:
        """A version as a table, after checking its files against the record (S7)."""
        version = self._resolved(feature, version)
        record = self.read_record(feature, version)
        paths = self._verified_local_files(feature, version, record)
        if not paths:
            return engine.from_arrow(empty_table(record))
        return engine.read_parquet_files(paths)  # each by its name: a store's folder may hold glob characters

    def _verified_local_files(self, feature: str, version: str, record: VersionRecord) -> list[str]:  # pragma: no cover - abstract
        """Local paths of a version's Parquet files (object stores download them first),
        checked against the record (S7)."""
        raise NotImplementedError


#: What every record mlforge has written holds, in every format.
_IDENTITY = ("name", "version", "keys", "rows", "schema")


def _identity_problem(raw: Mapping[str, Any], feature: str, version: str) -> str | None:
    """Why a record cannot be the record of ``feature`` ``version``, or ``None``: a field
    every record holds is missing, or it names another feature or version (a record
    edited, or a version directory copied under another number)."""
    missing = [f for f in _IDENTITY if f not in raw]
    if missing:
        return f"it lacks {', '.join(missing)}"
    if raw["name"] != feature or raw["version"] != version:
        return f"it is the record of {raw['name']} {raw['version']}"
    return None


def _is_name(text: str) -> bool:
    try:
        check_name(text, kind="feature")
    except DefinitionError:
        return False
    return True


def _pointer_version(raw: bytes) -> str | None:
    """The version a pointer names; ``None`` for an unreadable pointer, which any move
    may replace (``latest_version`` reports it)."""
    return _pointer_field(raw, "version")


def _pointer_field(raw: bytes, field: str) -> str | None:
    """A version a pointer holds (``version``; ``hides`` after a rollback), or ``None``."""
    try:
        version = json.loads(raw)[field]
        parse_version(version)
    except (ValueError, KeyError, TypeError, DefinitionError):
        return None
    return str(version)


def _json_bytes(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, indent=2, sort_keys=True, default=str).encode("utf-8")


def record_bytes(record: VersionRecord) -> bytes:
    """A version record as the bytes of ``_metadata.json``."""
    return record_json(record.to_dict(), indent=2).encode("utf-8")


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


def empty_table(record: VersionRecord) -> Any:
    """A zero-row Arrow table with a version's schema."""
    import pyarrow as pa

    from mlforge.manifest import arrow_schema

    return pa.Table.from_pylist([], schema=arrow_schema(dict(record.schema)))
