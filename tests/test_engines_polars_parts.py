"""The Polars engine's key ranges (``key_ranges``): how a large build result is split into
parts that are collected one at a time. Which rows a part holds never changes what is
written (``test_storage``); these check that the parts cover every row once, in order."""

from __future__ import annotations

import hashlib
import itertools
from types import SimpleNamespace

import pytest

pl = pytest.importorskip("polars")

from mlforge.engines import polars as polars_engine  # noqa: E402


def frame(keys):
    """One row per element of ``keys`` (a key repeated n times has n rows)."""
    return pl.LazyFrame({"k": keys, "v": list(range(len(keys)))})


def split(lazy, key="k"):
    parts = polars_engine.key_ranges(lazy, key)
    return parts, [lazy.collect() if part is None else lazy.filter(part).collect() for part in parts]


@pytest.mark.parametrize("sampled", [True, False], ids=["sampled keys", "every key counted"])
def test_parts_cover_every_row_once_in_key_order(monkeypatch, sampled):
    monkeypatch.setattr(polars_engine, "PART_ROWS", 500)
    count = 3000 if sampled else 40  # the sample of 3000 keys holds ~190 (>= 64); of 40, a few
    keys = [f"key{i:05d}" for i in range(count) for _ in range(1 + i % 3)] + [None, None]
    lazy = frame(keys)
    parts, taken = split(lazy)
    total = len(keys)
    assert len(parts) >= total // 500  # about PART_ROWS rows each
    assert sum(part.height for part in taken) == total
    assert sorted(v for part in taken for v in part.get_column("v").to_list()) == list(range(total))
    # Parts follow each other in key order; the null keys are in the last one.
    ranges = [(part.get_column("k").drop_nulls().min(), part.get_column("k").drop_nulls().max()) for part in taken]
    assert all(high < low for (_, high), (low, _) in itertools.pairwise(ranges))
    assert taken[-1].get_column("k").null_count() == 2
    assert all(part.height <= 3 * 500 for part in taken)


def test_small_results_are_one_part_without_a_filter():
    assert polars_engine.key_ranges(frame(["a", "b", None]), "k") == [None]


def test_integer_keys_are_split_and_float_keys_are_not(monkeypatch):
    monkeypatch.setattr(polars_engine, "PART_ROWS", 10)
    ints = pl.LazyFrame({"k": [i // 2 for i in range(100)]})
    parts, taken = split(ints)
    assert len(parts) >= 5
    assert [v for part in taken for v in part.get_column("k").to_list()] == sorted(i // 2 for i in range(100))
    floats = pl.LazyFrame({"k": [float(i) for i in range(100)] + [float("nan")]})
    assert polars_engine.key_ranges(floats, "k") == [None]


def test_a_surrogate_key_is_not_hashed_again_per_range(tmp_path, monkeypatch):  # contract K1
    """A surrogate key is computed by a Python function, which a range filter cannot pass:
    a result keyed by one is written as one range, so a result that would be split hashes
    no more source rows than one that is not, and writes the same files."""
    from datetime import UTC, datetime, timedelta

    import pyarrow as pa
    import pyarrow.parquet as pq

    import mlforge as mlf

    start = datetime(2024, 1, 1, tzinfo=UTC)
    count = 60
    source = tmp_path / "trips.parquet"
    pq.write_table(
        pa.table(
            {
                "origin": [f"o{i % 5}" for i in range(count)],
                "dest": [f"d{i % 3}" for i in range(count)],
                "ts": pa.array([start + timedelta(hours=7 * i) for i in range(count)], pa.timestamp("us", tz="UTC")),
                "amt": list(range(count)),
            }
        ),
        source,
    )
    route = mlf.Entity(name="route", join_key="route_id", from_columns=["origin", "dest"])

    @mlf.feature(str(source), entities=[route], timestamp="ts", interval="1d", metrics=[mlf.Sum("amt", ["2d"])])
    def route_spend(t):
        return t

    sha256 = hashlib.sha256
    hashed: dict[str, int] = {}
    stored = {}
    for run, engine, part_rows in (("one range", "polars", polars_engine.PART_ROWS), ("a range per row", "polars", 1), ("duckdb", "duckdb", 1)):
        monkeypatch.setattr(polars_engine, "PART_ROWS", part_rows)
        calls: list[bytes] = []
        monkeypatch.setattr(polars_engine, "hashlib", SimpleNamespace(sha256=lambda data, calls=calls: calls.append(data) or sha256(data)))
        defs = mlf.Definitions("keys", [route_spend], offline_store=mlf.LocalStore(str(tmp_path / run)), engine=engine)
        assert defs.build().ok
        hashed[run] = len(calls)
        stored[run] = {p.name: pq.read_table(p).to_pylist() for p in sorted((tmp_path / run).glob("route_spend/**/*.parquet"))}
    assert hashed["one range"] >= count
    assert hashed["a range per row"] == hashed["one range"]
    assert stored["a range per row"] == stored["one range"] == stored["duckdb"]
    assert sum(len(rows) for rows in stored["duckdb"].values()) > count
