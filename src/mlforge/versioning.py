"""Pure version logic: semver values, change kinds, and how a change bumps a version (S2).

>>> bump("1.2.3", ChangeKind.MINOR)
'1.3.0'
>>> classify(None, {"keys": ["k"]}).kind
<ChangeKind.MAJOR: 3>
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mlforge.definitions.durations import parse_duration
from mlforge.errors import DefinitionError
from mlforge.records import VersionRecord

FIRST_VERSION = "1.0.0"
#: The reason :func:`classify` gives when only the data hash differs; the orchestrator then
#: compares the data itself (canonical types, float tolerance) before calling it new.
NEW_DATA = "new data"
_SEMVER = re.compile(r"(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)")


class ChangeKind(enum.IntEnum):
    """How much a new build differs from the latest version; ordered."""

    NONE = 0
    PATCH = 1
    MINOR = 2
    MAJOR = 3


@dataclass(frozen=True)
class Change:
    kind: ChangeKind
    reason: str


def parse_version(text: str) -> tuple[int, int, int]:
    """``"1.2.3"`` -> ``(1, 2, 3)``; anything else is an error (names become paths, E4)."""
    match = _SEMVER.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise DefinitionError(f"version {text!r} is not a semantic version like '1.2.0'", fix="use MAJOR.MINOR.PATCH")
    return int(match.group(1)), int(match.group(2)), int(match.group(3))


def is_version(text: str) -> bool:
    return isinstance(text, str) and bool(_SEMVER.fullmatch(text))


def sort_versions(versions: list[str]) -> list[str]:
    return sorted(versions, key=parse_version)


def bump(version: str, kind: ChangeKind) -> str:
    major, minor, patch = parse_version(version)
    if kind is ChangeKind.MAJOR:
        return f"{major + 1}.0.0"
    if kind is ChangeKind.MINOR:
        return f"{major}.{minor + 1}.0"
    if kind is ChangeKind.PATCH:
        return f"{major}.{minor}.{patch + 1}"
    return version


def next_version(existing: list[str], base: str | None, kind: ChangeKind) -> str:
    """The version a build publishes: ``base`` bumped by ``kind``, above every existing one.

    After a rollback, ``base`` (the latest pointer) may be older than other versions; the
    new version then continues past the highest one of the same change kind. Without a
    ``base`` (no latest pointer) it continues past the highest existing version.
    """
    if not existing:
        return FIRST_VERSION
    highest = sort_versions(existing)[-1]
    candidate = bump(highest if base is None else base, kind)  # no base: latest names no version (its pointer was removed)
    if parse_version(candidate) <= parse_version(highest):
        candidate = bump(highest, kind)
    return candidate


def classify(previous: VersionRecord | Mapping[str, Any] | None, current: VersionRecord | Mapping[str, Any]) -> Change:
    """Compare the record of the latest version with a new build's (S2). Plain mappings
    (the JSON form) are read as records."""
    if previous is None:
        return Change(ChangeKind.MAJOR, "first build")
    old, new = _as_record(previous), _as_record(current)
    fixed = (
        ("keys", list(old.keys), list(new.keys), list(old.keys) == list(new.keys)),
        ("interval", old.interval, new.interval, _same_step(old.interval, new.interval)),
        ("timestamp column", old.timestamp, new.timestamp, old.timestamp == new.timestamp),
    )
    for label, before, after, same in fixed:
        if not same:
            return Change(ChangeKind.MAJOR, f"{label} changed from {before!r} to {after!r}")
    old_schema, new_schema = old.schema, new.schema
    removed = sorted(set(old_schema) - set(new_schema))
    if removed:
        return Change(ChangeKind.MAJOR, f"columns removed: {removed}")
    retyped = sorted(c for c in old_schema if c in new_schema and old_schema[c] != new_schema[c])
    if retyped:
        return Change(ChangeKind.MAJOR, f"columns retyped: {[f'{c}: {old_schema[c]} -> {new_schema[c]}' for c in retyped]}")
    added = sorted(set(new_schema) - set(old_schema))
    if added:
        return Change(ChangeKind.MINOR, f"columns added: {added}")
    if old.ttl != new.ttl:
        return Change(ChangeKind.PATCH, f"ttl changed from {old.ttl!r} to {new.ttl!r}")
    if old.definition_hash != new.definition_hash:
        return Change(ChangeKind.PATCH, "definition changed, same schema")
    if old.data_hash != new.data_hash:
        return Change(ChangeKind.PATCH, NEW_DATA)
    return Change(ChangeKind.NONE, "unchanged")


def _same_step(before: str | None, after: str | None) -> bool:
    """Whether two interval texts name the same grid step ('1d' and '24h' do).

    >>> _same_step("1d", "24h"), _same_step("1h", "3600s"), _same_step("1d", "1h"), _same_step(None, "1d"), _same_step(None, None)
    (True, True, False, False, True)
    """
    if before == after:
        return True
    if before is None or after is None:
        return False
    try:
        return parse_duration(before) == parse_duration(after)
    except DefinitionError:  # a record written by hand: its text is all there is
        return False


def _as_record(record: VersionRecord | Mapping[str, Any]) -> VersionRecord:
    return record if isinstance(record, VersionRecord) else VersionRecord.from_dict(record)


def schema_changes(old: dict[str, str], new: dict[str, str]) -> dict[str, Any]:
    """Columns added, removed and retyped between two canonical schemas.

    >>> schema_changes({"a": "int64", "b": "string"}, {"a": "float64", "c": "bool"})
    {'added': {'c': 'bool'}, 'removed': {'b': 'string'}, 'retyped': {'a': ['int64', 'float64']}}
    """
    return {
        "added": {c: new[c] for c in sorted(set(new) - set(old))},
        "removed": {c: old[c] for c in sorted(set(old) - set(new))},
        "retyped": {c: [old[c], new[c]] for c in sorted(set(old) & set(new)) if old[c] != new[c]},
    }
