"""Pure version logic: semver values, change kinds, bumping (contract S2, E4)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mlforge.errors import DefinitionError
from mlforge.versioning import (
    FIRST_VERSION,
    ChangeKind,
    bump,
    classify,
    is_version,
    next_version,
    parse_version,
    schema_changes,
    sort_versions,
)

BASE = {
    "keys": ["user_id"],
    "timestamp": "ts",
    "interval": "1d",
    "schema": {"user_id": "int64", "ts": "timestamp[UTC]", "amt_sum_7d": "float64"},
    "definition_hash": "d1",
    "data_hash": "h1",
}


def changed(**fields):
    return {**BASE, **fields}


@pytest.mark.parametrize(
    ("current", "kind", "reason"),
    [
        (BASE, ChangeKind.NONE, "unchanged"),
        (changed(data_hash="h2"), ChangeKind.PATCH, "new data"),
        (changed(definition_hash="d2"), ChangeKind.PATCH, "definition changed"),
        (changed(schema={**BASE["schema"], "amt_count_7d": "int64"}), ChangeKind.MINOR, "columns added"),
        (changed(schema={"user_id": "int64", "ts": "timestamp[UTC]"}), ChangeKind.MAJOR, "columns removed"),
        (changed(schema={**BASE["schema"], "amt_sum_7d": "int64"}), ChangeKind.MAJOR, "columns retyped"),
        (changed(keys=["user_id", "country"]), ChangeKind.MAJOR, "keys changed"),
        (changed(interval="1h"), ChangeKind.MAJOR, "interval changed"),
        (changed(timestamp="event_time"), ChangeKind.MAJOR, "timestamp column changed"),
    ],
)
def test_classify(current, kind, reason):
    """contract S2: each kind of change, with its reason."""
    change = classify(BASE, current)
    assert change.kind is kind
    assert change.reason.startswith(reason)


def test_first_build_is_1_0_0():
    """contract S2: first build -> 1.0.0."""
    assert classify(None, BASE).reason == "first build"
    assert next_version([], None, ChangeKind.MAJOR) == FIRST_VERSION == "1.0.0"


def test_major_wins_over_minor():
    """A removed column and an added one at once is MAJOR."""
    schema = {"user_id": "int64", "ts": "timestamp[UTC]", "amt_mean_7d": "float64"}
    assert classify(BASE, changed(schema=schema)).kind is ChangeKind.MAJOR


@pytest.mark.parametrize(
    ("version", "kind", "expected"),
    [("1.2.3", ChangeKind.PATCH, "1.2.4"), ("1.2.3", ChangeKind.MINOR, "1.3.0"), ("1.2.3", ChangeKind.MAJOR, "2.0.0"), ("1.2.3", ChangeKind.NONE, "1.2.3")],
)
def test_bump(version, kind, expected):
    assert bump(version, kind) == expected


def test_next_version_after_rollback_goes_past_every_version():
    """After a rollback to 1.0.0 the next PATCH may not reuse 1.0.1."""
    existing = ["1.0.0", "1.0.1", "1.1.0", "2.0.0"]
    assert next_version(existing, "1.0.0", ChangeKind.PATCH) == "2.0.1"
    assert next_version(existing, "1.0.0", ChangeKind.MINOR) == "2.1.0"
    assert next_version(existing, "2.0.0", ChangeKind.PATCH) == "2.0.1"


@pytest.mark.parametrize("text", ["1.0", "1.0.0.0", "01.0.0", "1.0.0\n", "../1.0.0", "1.0.0/..", "", "v1.0.0", " 1.0.0"])
def test_bad_versions_rejected(text):
    """contract E4: a version becomes a path segment; only plain MAJOR.MINOR.PATCH passes."""
    assert not is_version(text)
    with pytest.raises(DefinitionError):
        parse_version(text)


def test_sort_is_numeric():
    assert sort_versions(["1.10.0", "1.2.0", "10.0.0", "2.0.0"]) == ["1.2.0", "1.10.0", "2.0.0", "10.0.0"]


def test_schema_changes():
    assert schema_changes({"a": "int64", "b": "string"}, {"a": "float64", "c": "bool"}) == {
        "added": {"c": "bool"},
        "removed": {"b": "string"},
        "retyped": {"a": ["int64", "float64"]},
    }


versions = st.tuples(st.integers(0, 50), st.integers(0, 50), st.integers(0, 50)).map(lambda t: ".".join(map(str, t)))


@given(st.lists(versions, min_size=1, max_size=8, unique=True), st.sampled_from([ChangeKind.PATCH, ChangeKind.MINOR, ChangeKind.MAJOR]), st.data())
def test_next_version_is_new_and_highest(existing, kind, data):
    """Whatever the pointer, a new version never collides and sorts last."""
    base = data.draw(st.sampled_from(existing))
    new = next_version(existing, base, kind)
    assert new not in existing
    assert sort_versions([*existing, new])[-1] == new
