"""The offline store protocol: versioned, immutable feature tables (S1-S5).

A store keeps, per feature, a set of complete versions, each with its
:class:`~mlforge.records.VersionRecord`, and a ``latest`` pointer. A build writes into a
private *staging* area, then :meth:`OfflineStore.publish` makes the version visible in one
atomic step and afterwards moves the pointer in another; a crash between or before them
leaves the previous latest untouched (S1).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from mlforge.errors import VersionNotFound
from mlforge.records import VersionRecord
from mlforge.versioning import is_version

if TYPE_CHECKING:
    import ibis.expr.schema as sch
    import ibis.expr.types as ir

    from mlforge.engines.base import Engine


@dataclass
class Staging:
    """A private place to write one version's data files before publishing."""

    feature: str
    data_dir: str
    token: str


@dataclass(frozen=True)
class StoreCapabilities:
    """What an offline store declares it can do (read by the services, never probed).

    Attributes:
        month_files: a version's data is Parquet month files (``2024-03.parquet``) that
            ``data_files`` hands out as local paths, so a range build rewrites only the
            months it touches and reuses the others as they are; otherwise the store is a
            table store and replaces the range itself.
        restores_data: ``has_data`` / ``restore_data`` work, so ``mlforge sync`` can refill
            the data files of versions whose metadata alone is present.
    """

    month_files: bool = True
    restores_data: bool = True


class OfflineStore(Protocol):
    """What every offline store provides."""

    kind: str
    capabilities: ClassVar[StoreCapabilities]

    def list_features(self) -> list[str]: ...

    def list_versions(self, feature: str) -> list[str]: ...

    def latest_version(self, feature: str) -> str | None: ...

    def read_record(self, feature: str, version: str | None = None) -> VersionRecord: ...

    def read_metadata(self, feature: str, version: str | None = None) -> dict[str, Any]:
        """The record in its JSON form (``read_record(...).to_dict()``), for people and tools."""

    def data_files(self, feature: str, version: str | None = None) -> list[str]:
        """Local paths of a version's Parquet files (object stores download them first),
        checked against the record (S7)."""

    def stage(self, feature: str) -> Staging: ...

    def publish(self, staging: Staging, version: str, record: VersionRecord | Mapping[str, Any]) -> str:
        """Make ``version`` visible, then move ``latest`` forward to it (S1, S8); returns the
        version ``latest`` names afterwards."""

    def discard(self, staging: Staging) -> None: ...

    def set_latest(self, feature: str, version: str) -> None:
        """Point ``latest`` at ``version``, backwards too: ``rollback`` (S4)."""

    def adopt_commit(self, feature: str, version: str) -> str | None:
        """Move ``latest`` forward to ``version``, a complete version newer than it, when no
        rollback put ``latest`` below it: the commit of a build whose pointer move is still
        to come (or never came). Returns what ``latest`` names afterwards, or ``None`` when
        a rollback hid ``version`` (or the store cannot tell), leaving the pointer alone."""

    def read(self, feature: str, engine: Engine, version: str | None = None) -> ir.Table:
        """A version's rows; a version whose files differ from its record raises
        :class:`~mlforge.errors.CorruptVersion` (S7)."""

    def use_engine(self, engine: Engine) -> None:
        """Called by builds and reads with their engine (a table store may write through it)."""

    def check_columns(self, feature: str, schema: sch.Schema) -> None:
        """Refuse, before anything is computed, a version whose columns this store cannot
        hold as they are (E5: a name either round-trips exactly or is rejected before
        compute); the error names the column and how to change it."""

    # Used by ``mlforge sync`` (operations.py) where ``capabilities.restores_data``:
    def has_data(self, feature: str, version: str) -> bool: ...

    def restore_data(self, feature: str, version: str, files: list[str]) -> None: ...


class ListsVersions(Protocol):
    """The part of a store that resolving a version needs."""

    def list_versions(self, feature: str) -> list[str]: ...

    def latest_version(self, feature: str) -> str | None: ...


def resolve_version(store: ListsVersions, feature: str, version: str | None) -> str:
    """The version to read: ``version`` if it exists, else the latest."""
    if version is None:
        latest = store.latest_version(feature)
        if latest is None:
            listed = store.list_versions(feature)
            if listed:  # versions exist, but the pointer is gone or names a version without metadata
                raise VersionNotFound(
                    f"feature {feature!r} has versions ({', '.join(listed)}) but no latest one: its latest pointer is missing or names a version that does not exist",
                    where=f"the offline store, feature {feature!r}",
                    fix=f"point it at a version: `mlforge rollback {feature} {listed[-1]}`, or read a version by pinning it; the next build also sets it",
                )
            raise VersionNotFound(
                f"feature {feature!r} has not been built yet",
                where=f"the offline store, feature {feature!r}",
                fix=f"run `mlforge build --features {feature}`",
            )
        return latest
    if not is_version(version):
        raise VersionNotFound(f"{version!r} is not a version like '1.0.0'", where=f"feature {feature!r}", fix="use `mlforge list versions` to see versions")
    if version not in store.list_versions(feature):
        available = store.list_versions(feature)
        raise VersionNotFound(
            f"feature {feature!r} has no version {version}",
            where=f"the offline store, feature {feature!r}",
            fix=f"available versions: {', '.join(available) or 'none'}",
        )
    return version
