"""Online lookups at a read time: one store round trip, then the values at ``T`` (O1, O2, O4).

``lookup`` asks the store for every requested entity of every feature *and* the features'
publication records in one ``read_many`` call (one round trip on stores with batched
reads), then reads each entity's value at ``T`` with
:func:`mlforge.online.publication.values_at`. Both the Python API
(:func:`mlforge.retrieval.online_features`) and ``mlforge serve`` go through it;
``mlforge serve`` awaits ``lookup_async`` instead where the store declares
``async_reads`` (same requests, same readings).
"""

from __future__ import annotations

import warnings
from collections.abc import Collection, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from mlforge.errors import RetrievalError, UnpublishedFeature, VersionNotFound, caller_stacklevel
from mlforge.online.base import not_an_mlforge_row, read_many
from mlforge.online.publication import (
    PUBLICATIONS,
    Publication,
    Reading,
    check_read_time,
    values_at,
)

if TYPE_CHECKING:
    from mlforge.online.base import AsyncReader, OnlineStore


def lookup(
    store: OnlineStore, stand_ins: Mapping[str, Publication], requests: Mapping[str, Sequence[dict[str, Any] | None]], at: datetime,
    versions: Mapping[str, str] | None = None, columns: Mapping[str, Sequence[str]] | None = None, unbuilt: Collection[str] = (),
) -> dict[str, list[Reading]]:
    """``{feature: [reading per key]}`` at read time ``at``.

    Args:
        store: the online store.
        stand_ins: per feature, how to read it when the store holds no publication record
            (rows written directly): from its stored metadata, or its definition.
        requests: per feature, one key dict per entity; ``None`` (a null key) reads as an
            unknown entity.
        at: the read time, aware UTC.
        versions: per feature, the version the caller pinned (a feature set, a logged
            model); the store must serve exactly that version.
        columns: per feature, the value columns the caller answers with; the published
            version must have each (``None``: whatever it has, as REST answers).
        unbuilt: features the offline store has no version of: without a publication
            record or a stored row of any entity asked for, they are unknown features, not
            features of unknown entities.

    Raises:
        RetrievalError: ``at`` is before a published version's watermark (O1 holds from there
            on), the store serves another version than the one pinned, or one without a
            column asked for (a newer version not yet published).
        VersionNotFound: a feature of ``unbuilt`` has nothing published either.
    """
    found = read_many(store, store_requests(requests))
    return readings(found, stand_ins, requests, at, versions, columns, warn_unpublished=store.capabilities.fills_from_offline is None, unbuilt=unbuilt)


async def lookup_async(
    store: AsyncReader, stand_ins: Mapping[str, Publication], requests: Mapping[str, Sequence[dict[str, Any] | None]], at: datetime,
    versions: Mapping[str, str] | None = None, unbuilt: Collection[str] = (),
) -> dict[str, list[Reading]]:
    """:func:`lookup` on the running event loop, for a store that declares ``async_reads``."""
    return readings(await store.read_many_async(store_requests(requests)), stand_ins, requests, at, versions, unbuilt=unbuilt)


def store_requests(requests: Mapping[str, Sequence[dict[str, Any] | None]]) -> dict[str, list[dict[str, Any]]]:
    """What to ask the store: the non-null keys of each feature, and the features' records."""
    wanted = {name: [k for k in keys if k is not None] for name, keys in requests.items()}
    return {**wanted, PUBLICATIONS: [{"feature": name} for name in requests]}


def readings(
    found: Mapping[str, list[dict[str, Any] | None]], stand_ins: Mapping[str, Publication], requests: Mapping[str, Sequence[dict[str, Any] | None]], at: datetime,
    versions: Mapping[str, str] | None, columns: Mapping[str, Sequence[str]] | None = None, *, warn_unpublished: bool = True, unbuilt: Collection[str] = (),
) -> dict[str, list[Reading]]:
    """The values at ``at`` from what the store answered to :func:`store_requests`;
    ``warn_unpublished``: warn of a built feature of which the store answered nothing (not
    for a store its platform fills, whose tables may be served without a record)."""
    records = dict(zip(requests, found.get(PUBLICATIONS) or [None] * len(requests), strict=True))
    out: dict[str, list[Reading]] = {}
    for name, keys in requests.items():
        record = records[name]
        pinned = (versions or {}).get(name)
        publication = Publication.from_row(record) if record is not None else stand_ins[name]
        if record is not None:
            check_read_time(publication, at)
            check_served_version(publication, pinned)
            check_served_columns(publication, (columns or {}).get(name, ()))
        elif name in unbuilt and not any(found.get(name) or []):  # as get_training_data says it (rows written directly are served)
            raise VersionNotFound(f"unknown feature {name!r}: it has no stored version, and nothing of it is published online", fix=f"build and publish it: `mlforge build --features {name} --online`")
        elif pinned is not None:
            raise RetrievalError(
                f"feature {name!r} has no version published online, but version {pinned} was asked for",
                where=f"online store, feature {name!r}", fix=publish_fix(name, pinned),
            )
        elif warn_unpublished and publication.version is not None and not any(found.get(name) or []):
            # built (the stand-in is its latest version) but neither a record nor a row online:
            # every entity reads as unknown (O2), which is not what training reads for the
            # entities it holds; say so where a notebook or a server log shows it
            warnings.warn(
                f"feature {name!r} has no version published online (no publication record, and none of the entities asked for is stored; "
                f"its latest version, {publication.version}, is offline): online reads answer every entity as unknown, with empty-window values; "
                f"publish it: `mlforge build --features {name} --online`; or, to publish {publication.version} as it is (after a rollback a build makes a new version), "
                f"`mlforge rollback {name} {publication.version} --online --yes`",
                UnpublishedFeature, stacklevel=caller_stacklevel(),
            )
        rows = iter(found.get(name) or [])
        stored = [None if key is None else next(rows) for key in keys]
        try:
            out[name] = values_at(publication, [key or {} for key in keys], stored, at, published=record is not None)
        except (IndexError, TypeError, ZeroDivisionError, KeyError, AttributeError) as exc:
            # a value that decodes but is not what a publish writes (labels that are not
            # numbers, values shorter than the labels): another program's, under our keys
            raise not_an_mlforge_row(
                f"a stored value of {name!r}", exc,
                fix="re-publish it with `mlforge build --online`; if another program writes under the same keys, give mlforge its own prefix, table or schema",
            ) from None
    return out


def check_served_version(publication: Publication, pinned: str | None) -> None:
    """A pinned version is served only if it is the published one: values of another
    version would differ from what training read (the skew O1 rules out)."""
    if pinned is None or publication.version is None or publication.version == pinned:
        return
    name = publication.feature
    raise RetrievalError(
        f"feature {name!r} is served online at version {publication.version}, but version {pinned} was asked for",
        where=f"online store, feature {name!r}",
        fix=f"pin ({name!r}, {publication.version!r}) and retrain on it, or {publish_fix(name, pinned)}",
    )


def publish_fix(name: str, version: str) -> str:
    """How to publish one stored version of a feature online."""
    return (
        f"serve {version} online: `mlforge rollback {name} {version} --online --yes` makes it the latest version and publishes it "
        f"(`mlforge build --features {name} --online` publishes the latest version, and after a rollback a build makes a new one); "
        f"or publish it without moving latest, from Python: "
        f"`mlforge.publishing.publish_latest(defs.workspace, defs.features[{name!r}], {version!r})`"
    )


def check_served_columns(publication: Publication, wanted: Sequence[str]) -> None:
    """The published version has every column asked for: a column of a newer version that
    was built but not published would read as null, even a count (W4)."""
    missing = [c for c in wanted if c not in publication.columns]
    if not missing:
        return
    name = publication.feature
    raise RetrievalError(
        f"feature {name!r} is served online at version {publication.version}, which has no column(s) {missing}",
        where=f"online store, feature {name!r}",
        fix=f"publish the version that has them: `mlforge build --features {name} --online` (an unchanged build is skipped and publishes the latest)",
    )


def metadata_columns(name: str) -> tuple[str, str]:
    """The opt-in columns ``get_online_features(..., with_metadata=True)`` adds per feature."""
    return f"{name}__label_time", f"{name}__known"


def check_metadata_columns(names: Sequence[str], taken: Sequence[str]) -> None:
    clash = [c for name in names for c in metadata_columns(name) if c in taken]
    if clash:
        raise RetrievalError(f"entity_df already has the column(s) {clash} that with_metadata=True adds", fix="rename those columns, or leave with_metadata off")
