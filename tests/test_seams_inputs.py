"""Seams of a build's inputs a review found (2026-12-07, second pass): integer sums that one
engine wraps and another widens, a source's declared timestamp format that the feature's own
``timestamp=`` dropped, and digits a CSV reader took for a number."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest

import mlforge as mlf
from mlforge.errors import BuildError


def _store(tmp_path: Path, name: str) -> mlf.LocalStore:
    return mlf.LocalStore(str(tmp_path / name))


@pytest.mark.parametrize("engine", ["duckdb", "polars"])
def test_integer_sums_that_could_pass_int64_fail_before_compute_on_every_engine(tmp_path, engine):  # contract W5, W8, E1
    big = 2**62
    frame = pd.DataFrame({
        "k": [1, 1, 1, 2],
        "ts": pd.to_datetime(["2024-01-01 01:00", "2024-01-01 02:00", "2024-01-01 03:00", "2024-01-01 01:00"]),
        "v": [big, big, big, 5],
    })
    frame.to_parquet(tmp_path / "e.parquet", index=False)

    @mlf.feature(source=str(tmp_path / "e.parquet"), keys=["k"], timestamp="ts", interval="1d", metrics=[mlf.Mean("v", windows=["1d"])])
    def f(t):
        return t

    defs = mlf.Definitions("p", [f], offline_store=_store(tmp_path, "store"), engine=engine)
    with pytest.raises(BuildError) as caught:
        defs.build()
    message = str(caught.value)
    # Polars used to store a wrapped mean (-1.5e18) silently; the error names column, key and remedy
    assert "'v'" in message and "{'k': 1}" in message and "int64" in message
    assert "cast 'v' to float64" in message
    assert not (tmp_path / "store" / "f").exists() or not list((tmp_path / "store" / "f").glob("[0-9]*"))


@pytest.mark.parametrize("engine", ["duckdb", "polars"])
def test_integer_sums_below_int64_are_exact_on_every_engine(tmp_path, engine):  # contract W5, W8
    big = 2**61
    frame = pd.DataFrame({
        "k": [1, 1, 1],
        "ts": pd.to_datetime(["2024-01-01 01:00", "2024-01-01 02:00", "2024-01-01 03:00"]),
        "v": [big, big, big + 7],
    })
    frame.to_parquet(tmp_path / "e.parquet", index=False)

    @mlf.feature(source=str(tmp_path / "e.parquet"), keys=["k"], timestamp="ts", interval="1d", metrics=[mlf.Sum("v", windows=["1d"])])
    def f(t):
        return t

    defs = mlf.Definitions("p", [f], offline_store=_store(tmp_path, "store"), engine=engine)
    defs.build()
    rows = defs.read_feature("f").to_pyarrow().to_pylist()
    assert [r["v_sum_1d"] for r in rows] == [3 * big + 7]


@pytest.mark.parametrize("engine", ["duckdb", "polars"])
def test_the_sources_declared_timestamp_format_holds_when_the_feature_names_that_column(tmp_path, engine):  # contract T1
    # 01/02/2024 is the 1st of February by the declared format, the 2nd of January by %m/%d
    (tmp_path / "e.csv").write_text("k,when,v\n1,01/02/2024,1.5\n2,13/02/2024,2.5\n")
    source = mlf.Source(str(tmp_path / "e.csv"), timestamp=mlf.Timestamp("when", format="%d/%m/%Y"))

    @mlf.feature(source=source, keys=["k"], timestamp="when")
    def g(t):
        return t

    defs = mlf.Definitions("p", [g], offline_store=_store(tmp_path, "store"), engine=engine)
    defs.build()
    rows = sorted(defs.read_feature("g").to_pyarrow().to_pylist(), key=lambda r: r["k"])
    assert [r["when"] for r in rows] == [datetime(2024, 2, 1, tzinfo=UTC), datetime(2024, 2, 13, tzinfo=UTC)]


@pytest.mark.parametrize("engine", ["duckdb", "polars"])
def test_digit_timestamps_with_a_format_parse_though_the_reader_saw_numbers(tmp_path, engine):  # contract T1
    (tmp_path / "e.csv").write_text("k,ts,v\n1,20240101,1.5\n2,20240215,2.5\n")
    source = mlf.Source(str(tmp_path / "e.csv"), timestamp=mlf.Timestamp("ts", format="%Y%m%d"))

    @mlf.feature(source=source, keys=["k"], timestamp="ts")
    def g(t):
        return t

    defs = mlf.Definitions("p", [g], offline_store=_store(tmp_path, "store"), engine=engine)
    defs.build()
    rows = sorted(defs.read_feature("g").to_pyarrow().to_pylist(), key=lambda r: r["k"])
    assert [r["ts"] for r in rows] == [datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 2, 15, tzinfo=UTC)]


def test_online_values_come_in_the_stored_column_order_as_in_training(tmp_path):  # contract O1, P1
    frame = pd.DataFrame({
        "k": [1, 2], "ts": pd.to_datetime(["2024-01-01", "2024-01-02"]),
        "zeta": [1.0, 2.0], "alpha": [1.5, 2.5], "mid": ["a", "b"],
    })
    frame.to_parquet(tmp_path / "e.parquet", index=False)

    @mlf.feature(source=str(tmp_path / "e.parquet"), keys=["k"], timestamp="ts")
    def g(t):
        return t

    defs = mlf.Definitions("p", [g], offline_store=_store(tmp_path, "store"), online_store=mlf.MemoryStore())
    assert defs.build(online=True).ok
    labels = pd.DataFrame({"k": [1, 2, 3], "ts": pd.to_datetime(["2024-01-05"] * 3)})
    training = defs.get_training_data(["g"], labels, timestamp="ts")
    online = defs.get_online_features(["g"], labels[["k"]], at=datetime(2024, 1, 5, tzinfo=UTC))
    assert list(training.columns) == ["k", "ts", "zeta", "alpha", "mid"]
    assert list(online.columns) == ["k", "zeta", "alpha", "mid"]  # used to come by name: alpha, mid, zeta
    pd.testing.assert_frame_equal(online, training.drop(columns="ts"))
