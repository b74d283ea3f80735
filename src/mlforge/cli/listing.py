"""``mlforge list features|entities|sources|versions``."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from cyclopts import App

from mlforge.cli.common import (
    DEFAULT,
    Common,
    Format,
    check_known_feature,
    count,
    err,
    load,
    render,
    source_format,
)
from mlforge.errors import StoreError

app = App(name="list", help="List features, feature sets, entities, sources or the versions of a feature.", help_format="plaintext")


@app.command
def features(*, tags: str | None = None, schedule: str | None = None, format: Format = "table", common: Common = DEFAULT) -> int:
    """List features with their keys, schedule and latest version.

    Parameters
    ----------
    tags
        Only features with one of these comma-separated tags.
    schedule
        Only features with one of these schedules (contract I2), e.g. daily or daily,hourly.
    format
        table for people, json for machines.
    """
    defs = load(common)
    rows = []
    for name in defs.list_features(tags=tags, schedule=schedule):
        f = defs.features[name]
        rows.append([name, list(f.keys), f.timestamp_column, f.interval, f.schedule, list(f.tags), _latest(defs, name), f.description.splitlines()[0] if f.description else None])
    render(None, ["feature", "keys", "timestamp", "interval", "schedule", "tags", "latest", "description"], rows, format)
    return 0


@app.command
def feature_sets(*, format: Format = "table", common: Common = DEFAULT) -> int:
    """List feature sets with their features (name@version where pinned) and description.

    Parameters
    ----------
    format
        table for people, json for machines.
    """
    defs = load(common)
    rows = []
    for name in defs.list_feature_sets():
        feature_set = defs.feature_sets[name]
        members = [s.name if s.version is None else f"{s.name}@{s.version}" for s in feature_set.specs]
        rows.append([name, members, feature_set.description.splitlines()[0] if feature_set.description else None])
    if not rows and format == "table":  # an empty table reads as a failure to list
        err().print("no feature sets defined; declare one with mlf.FeatureSet(name, features=[...]) (docs: feature-sets.md)", highlight=False)
        return 0
    render(None, ["feature_set", "features", "description"], rows, format)
    return 0


@app.command
def entities(*, format: Format = "table", common: Common = DEFAULT) -> int:
    """List entities with their join keys and the features that use them.

    Parameters
    ----------
    format
        table for people, json for machines.
    """
    defs = load(common)
    return _with_users(
        defs, ["entity", "join_key", "from_columns"], defs.list_entities(),
        lambda e: [e.name, e.join_key, list(e.from_columns or ())], uses_entity, format,
    )


@app.command
def sources(*, format: Format = "table", common: Common = DEFAULT) -> int:
    """List sources with their format and the features that read them.

    Parameters
    ----------
    format
        table for people, json for machines.
    """
    defs = load(common)
    return _with_users(
        defs, ["source", "location", "format"], defs.list_sources(),
        lambda s: [s.name, s.location, source_format(s.format)], reads_source, format,
    )


@app.command
def versions(feature: str, /, *, format: Format = "table", common: Common = DEFAULT) -> int:
    """List the stored versions of a feature, newest last; * marks the latest.

    Parameters
    ----------
    feature
        Feature name.
    format
        table for people, json for machines.
    """
    defs = load(common)
    found = check_known_feature(defs, feature)
    try:
        latest = defs.offline_store.latest_version(feature)
    except StoreError as exc:  # listed anyway: the list is what mends the pointer (the store's fix says how)
        latest = None
        err().print(f"warning: {exc.what}\n  fix: {exc.fix or f'`mlforge rollback {feature} VERSION --yes`'}", markup=False, highlight=False)
    rows = []
    for version in found:
        record = defs.offline_store.read_record(feature, version)
        if format == "table":
            rows.append([version, "*" if version == latest else "", record.change, count(record.rows), record.created_at, record.reason])
        else:  # for machines: a boolean, a number
            rows.append([version, version == latest, record.change, record.rows, record.created_at, record.reason])
    render(f"{feature}" if format == "table" else None, ["version", "latest", "change", "rows", "created_at", "reason"], rows, format)
    return 0


def _latest(defs: Any, name: str) -> str | None:
    return defs.offline_store.latest_version(name)


# -- the features using an entity or a source (shared with `mlforge inspect`) ---------------
def uses_entity(feature: Any, entity: Any) -> bool:
    """Whether ``feature`` is keyed by ``entity`` (matched by name)."""
    return any(e.name == entity.name for e in feature.entities)


def reads_source(feature: Any, source: Any) -> bool:
    """Whether ``feature`` reads ``source`` (matched by location)."""
    return feature.source.location == source.location


def features_using(defs: Any, thing: Any, uses: Callable[[Any, Any], bool]) -> list[str]:
    """Sorted names of the features for which ``uses(feature, thing)`` holds."""
    return sorted(f.name for f in defs.features.values() if uses(f, thing))


def _with_users(defs: Any, columns: list[str], things: Iterable[Any], describe: Callable[[Any], list[Any]], uses: Callable[[Any, Any], bool], fmt: Format) -> int:
    """Render one row per thing, ``describe(thing)`` plus the features using it."""
    rows = [[*describe(thing), features_using(defs, thing, uses)] for thing in things]
    render(None, [*columns, "features"], rows, fmt)
    return 0
