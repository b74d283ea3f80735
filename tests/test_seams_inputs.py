"""Seams of a build's inputs and ranges a second black-box review found (2026-12-07): integer
sums that one engine wraps and another widens, a source's declared timestamp format that the
feature's own ``timestamp=`` dropped, digits a CSV reader took for a number, CSV null markers
and directories, online column order, ``unique()`` checked on a range's rows only, a watermark
that jumped past labels no build had recomputed, and ``diff`` calling float noise new data."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import mlforge as mlf
from mlforge.errors import BuildError, SourceError
from mlforge.operations import diff_versions


def _store(tmp_path: Path, name: str) -> mlf.LocalStore:
    return mlf.LocalStore(str(tmp_path / name))


def _build_error(tmp_path: Path, engine: str, source: Path, metric: mlf.Aggregate) -> str:
    """Build one metric feature over ``source`` that must fail; its message, after checking
    that nothing was published (E3)."""

    @mlf.feature(source=str(source), keys=["k"], timestamp="ts", interval="1d", metrics=[metric])
    def f(t):
        return t

    defs = mlf.Definitions("p", [f], offline_store=_store(tmp_path, "store"), engine=engine)
    with pytest.raises(BuildError) as caught:
        defs.build()
    assert not list((tmp_path / "store").rglob("_metadata.json"))
    return str(caught.value)


@pytest.mark.parametrize("engine", ["duckdb", "polars"])
def test_integer_sums_that_could_pass_int64_fail_before_compute_on_every_engine(tmp_path, engine):  # contract W5, W8, E1
    big = 2**62
    frame = pd.DataFrame({
        "k": [1, 1, 1, 2],
        "ts": pd.to_datetime(["2024-01-01 01:00", "2024-01-01 02:00", "2024-01-01 03:00", "2024-01-01 01:00"]),
        "v": [big, big, big, 5],
    })
    frame.to_parquet(tmp_path / "e.parquet", index=False)
    message = _build_error(tmp_path, engine, tmp_path / "e.parquet", mlf.Mean("v", windows=["1d"]))
    # Polars used to store a wrapped mean (-1.5e18) silently; the error names column, key and remedy
    assert "'v'" in message and "{'k': 1}" in message and "int64" in message
    assert "cast 'v' to float64" in message


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


def _stored_times(tmp_path: Path, engine: str, csv: str, stamp: mlf.Timestamp) -> list[datetime]:
    """Build a feature over ``csv`` whose source declares ``stamp`` and whose ``timestamp=``
    names that column; the stored timestamps, in key order."""
    (tmp_path / "e.csv").write_text(csv)

    @mlf.feature(source=mlf.Source(str(tmp_path / "e.csv"), timestamp=stamp), keys=["k"], timestamp=stamp.column)
    def g(t):
        return t

    defs = mlf.Definitions("p", [g], offline_store=_store(tmp_path, "store"), engine=engine)
    defs.build()
    return [r[stamp.column] for r in sorted(defs.read_feature("g").to_pyarrow().to_pylist(), key=lambda r: r["k"])]


@pytest.mark.parametrize("engine", ["duckdb", "polars"])
def test_the_sources_declared_timestamp_format_holds_when_the_feature_names_that_column(tmp_path, engine):  # contract T1
    # 01/02/2024 is the 1st of February by the declared format, the 2nd of January by %m/%d
    times = _stored_times(tmp_path, engine, "k,when,v\n1,01/02/2024,1.5\n2,13/02/2024,2.5\n", mlf.Timestamp("when", format="%d/%m/%Y"))
    assert times == [datetime(2024, 2, 1, tzinfo=UTC), datetime(2024, 2, 13, tzinfo=UTC)]


def test_dates_two_listed_formats_read_differently_are_refused(tmp_path):  # contract T1, E1
    # 03/04/2024 10:00:00 is 3 April by %d/%m/%Y (listed first) and 4 March by %m/%d/%Y: US
    # dates whose days were all 12 or less were misread without a word.
    path = tmp_path / "e.parquet"
    pq.write_table(pa.table({"k": [1, 2], "ts": ["03/04/2024 10:00:00", "01/02/2024 11:00:00"], "v": [1.0, 2.0]}), path)

    @mlf.feature(source=str(path), keys=["k"], timestamp="ts")
    def g(t):
        return t

    defs = mlf.Definitions("p", [g], offline_store=_store(tmp_path, "store"))
    [failed] = defs.build(raise_on_error=False).failed
    assert isinstance(failed.error, SourceError) and "ambiguous" in str(failed.error) and "'03/04/2024 10:00:00'" in str(failed.error)
    pq.write_table(pa.table({"k": [1, 2], "ts": ["03/04/2024 10:00:00", "25/02/2024 11:00:00"], "v": [1.0, 2.0]}), path)
    assert defs.build().ok  # a day past 12 settles it: %d/%m/%Y
    stored = sorted(defs.read_feature("g").to_pyarrow().to_pylist(), key=lambda r: r["k"])
    assert [r["ts"] for r in stored] == [datetime(2024, 4, 3, 10, tzinfo=UTC), datetime(2024, 2, 25, 11, tzinfo=UTC)]


@pytest.mark.parametrize("engine", ["duckdb", "polars"])
def test_digit_timestamps_with_a_format_parse_though_the_reader_saw_numbers(tmp_path, engine):  # contract T1
    times = _stored_times(tmp_path, engine, "k,ts,v\n1,20240101,1.5\n2,20240215,2.5\n", mlf.Timestamp("ts", format="%Y%m%d"))
    assert times == [datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 2, 15, tzinfo=UTC)]


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


@pytest.mark.parametrize("engine", ["duckdb", "polars"])
def test_unique_holds_over_all_rows_in_an_incremental_build_as_in_a_full_refresh(tmp_path, engine):  # contract I1, E3
    path = tmp_path / "orders.parquet"
    rows = [("o1", "2026-01-01 10:00", 5.0), ("o2", "2026-01-02 10:00", 6.0)]

    def write(data):
        frame = pd.DataFrame(data, columns=["order_id", "ts", "amount"])
        frame["ts"] = pd.to_datetime(frame["ts"])
        frame.to_parquet(path, index=False)

    write(rows)

    @mlf.feature(source=str(path), keys=["order_id"], timestamp="ts", validators={"order_id": [mlf.unique()]})
    def orders(t):
        return t

    defs = mlf.Definitions("p", [orders], offline_store=_store(tmp_path, "store"), engine=engine)
    assert defs.build()["orders"].version == "1.0.0"
    write([*rows, ("o1", "2026-01-05 10:00", 8.0)])  # after the watermark: in the continuation's range
    result = defs.build(raise_on_error=False)["orders"]
    assert result.status == "failed" and "unique() failed for 1 row(s)" in str(result.error)
    assert defs.read_feature("orders").to_pyarrow().num_rows == 2  # nothing new published (E3)


def _daily_sums(path: Path):
    @mlf.feature(source=str(path), keys=["u"], timestamp="ts", interval="1d", metrics=[mlf.Sum("x", windows=["7d"], name="s")])
    def spend(t):
        return t

    return spend


def _stored(defs: mlf.Definitions) -> list[dict]:
    return sorted(defs.read_feature("spend").to_pyarrow().to_pylist(), key=lambda r: (r["u"], r["ts"]))


def test_a_range_after_missed_runs_keeps_the_watermark_so_the_next_build_catches_up(tmp_path):  # contract I1
    path = tmp_path / "e.parquet"
    days = pd.date_range("2026-01-01 06:00", periods=60, freq="D")
    frame = pd.DataFrame({"u": ["a", "b"] * 30, "ts": days, "x": [float(i) for i in range(60)]})
    frame[frame.ts < "2026-01-20"].to_parquet(path, index=False)
    defs = mlf.Definitions("p", [_daily_sums(path)], offline_store=_store(tmp_path, "store"))
    defs.build()
    frame.to_parquet(path, index=False)  # five weeks arrive while the daily runs were missed
    ranged = defs.build(last="7d")["spend"]
    assert ranged.build_range.startswith("[2026-02-2")
    caught_up = defs.build()["spend"]  # continues from the watermark of the first build
    assert caught_up.status == "built" and caught_up.build_range.startswith("[2026-01-20")
    full = mlf.Definitions("q", [_daily_sums(path)], offline_store=_store(tmp_path, "full"))
    full.build()
    assert _stored(defs) == _stored(full)


@pytest.mark.parametrize("engine", ["duckdb", "polars"])
def test_csv_null_markers_add_to_the_empty_field_and_a_csv_directory_reads_its_files(tmp_path, engine):  # contract T1
    folder = tmp_path / "events"
    folder.mkdir()
    (folder / "a.csv").write_text("k,ts,amount\n1,2024-01-01 00:00:00,NA\n2,2024-01-01 00:00:00,2.5\n")
    (folder / "b.csv").write_text("k,ts,amount\n3,2024-01-02 00:00:00,\n")
    source = mlf.Source(str(folder), format=mlf.CSVFormat(null_values=["NA"]))

    @mlf.feature(source=source, keys=["k"], timestamp="ts")
    def g(t):
        return t

    defs = mlf.Definitions("p", [g], offline_store=_store(tmp_path, "store"), engine=engine)
    defs.build()
    table = defs.read_feature("g").to_pyarrow()
    assert str(table.schema.field("amount").type) == "double"  # an empty cell used to make it text
    assert sorted(table.to_pylist(), key=lambda r: r["k"])[0]["amount"] is None
    assert sorted(r["amount"] for r in table.to_pylist() if r["amount"] is not None) == [2.5]
    assert table.num_rows == 3


def test_diff_calls_a_rebuild_with_the_same_rows_identical_whatever_its_bytes(tmp_path):  # contract S4, S2
    frame = pd.DataFrame({"u": ["a", "b", "a"], "ts": pd.to_datetime(["2026-01-01", "2026-01-02", "2026-01-03"]), "x": [0.1, 0.2, 0.7]})
    frame.to_parquet(tmp_path / "e.parquet", index=False)
    store = _store(tmp_path, "store")
    mlf.Definitions("p", [_daily_sums(tmp_path / "e.parquet")], offline_store=store, engine="duckdb").build()
    rebuilt = mlf.Definitions("p", [_daily_sums(tmp_path / "e.parquet")], offline_store=store, engine="polars").build(force=True)["spend"]
    assert rebuilt.version == "1.0.1"  # another writer: other bytes, the same rows
    assert store.read_record("spend", "1.0.0").data_hash != store.read_record("spend", "1.0.1").data_hash
    result = diff_versions(store, "spend")
    assert result["exit_code"] == 0, result["reason"]


@pytest.mark.parametrize("engine", ["duckdb", "polars"])
def test_text_timestamps_that_fail_past_the_sample_are_named_with_their_format(tmp_path, engine):  # contract T1, E1
    rows = 2500  # the format is detected on the first 2000 values
    stamps = [f"2024-01-01 {i % 24:02d}:00:00" for i in range(rows)]
    stamps[-1], stamps[-7] = "not a time", "2024-13-45 99:00:00"
    pd.DataFrame({"k": ["a"] * rows, "ts": stamps, "x": [1.0] * rows}).to_csv(tmp_path / "e.csv", index=False)
    message = _build_error(tmp_path, engine, tmp_path / "e.csv", mlf.Count("x", windows=["1d"], name="n"))
    # was the engine's own parse error, naming one value (DuckDB) and no format
    assert "'%Y-%m-%d %H:%M:%S'" in message and "'2024-13-45 99:00:00'" in message and "'not a time'" in message
    assert "Timestamp(column, format=" in message


def test_rolled_float_sums_keep_no_residue_of_values_that_left_the_window(tmp_path):  # contract W8, W1
    import numpy as np

    rng = np.random.default_rng(0)
    n = 40_000
    # Heavy-tailed amounts over a year of hourly labels: Polars rolled sums by adding what
    # enters a frame and subtracting what leaves it, and drifted up to 1e-8 from DuckDB.
    frame = pd.DataFrame({
        "k": rng.integers(0, 10, n),
        "ts": pd.Timestamp("2024-01-01") + pd.to_timedelta(rng.integers(0, 365 * 86400, n), unit="s"),
        "x": rng.lognormal(3, 3, n),
    })
    frame.loc[0, ["k", "ts", "x"]] = [0, pd.Timestamp("2024-03-01 00:30"), 1e15]  # then small values
    frame.loc[1, ["k", "ts", "x"]] = [99, pd.Timestamp("2024-03-01 00:30"), 1e20]  # another key's huge value
    frame.to_parquet(tmp_path / "e.parquet", index=False)
    frame.astype({"x": "float32"}).to_parquet(tmp_path / "e32.parquet", index=False)

    @mlf.feature(source=str(tmp_path / "e.parquet"), keys=["k"], timestamp="ts", interval="1h", metrics=[mlf.Sum("x", windows=["1d", "7d", "30d"], name="s")])
    def f(t):
        return t

    # float32 amounts are summed in float64, as their sum is stored (W5): Polars summed them in float32
    @mlf.feature(source=str(tmp_path / "e32.parquet"), keys=["k"], timestamp="ts", interval="1h", metrics=[mlf.Sum("x", windows=["1d", "7d", "30d"], name="s")])
    def f32(t):
        return t

    for name in ("f", "f32"):
        stored = {}
        for engine in ("duckdb", "polars"):
            defs = mlf.Definitions("p", [f, f32], offline_store=_store(tmp_path, f"store-{engine}"), engine=engine)
            defs.build()
            stored[engine] = defs.read_feature(name).to_pandas().sort_values(["k", "ts"]).reset_index(drop=True)
        duck, polars = stored["duckdb"], stored["polars"]
        assert len(duck) == len(polars)
        for column in ("s_1d", "s_7d", "s_30d"):
            a, b = duck[column].to_numpy(), polars[column].to_numpy()
            worst = np.max(np.abs(a - b) / np.maximum(np.abs(a), np.finfo(float).tiny))
            assert worst <= 1e-12, (name, column, worst)


@pytest.mark.parametrize("engine", ["duckdb", "polars", pytest.param("pyspark", marks=pytest.mark.spark)])
def test_nanosecond_parquet_timestamps_read_on_every_engine(tmp_path, engine):  # contract W8, T1
    # what pandas' to_parquet writes: Spark refused TIMESTAMP(NANOS) outright
    stamps = pd.to_datetime(["2024-01-01 10:00:00.000000999", "2024-01-02 00:00:00", "2024-01-02 23:59:59.999999999"], format="ISO8601").as_unit("ns")
    pd.DataFrame({"k": ["a", "a", "b"], "event.ts": stamps, "x": [10.0, 20.0, 80.0]}).to_parquet(tmp_path / "e.parquet", index=False)

    @mlf.feature(source=str(tmp_path / "e.parquet"), keys=["k"], timestamp="event.ts", interval="1d", metrics=[mlf.Sum("x", windows=["2d"], name="s")])
    def daily(t):
        return t

    @mlf.feature(source=str(tmp_path / "e.parquet"), keys=["k"], timestamp="event.ts")
    def last(t):
        return t

    defs = mlf.Definitions("p", [daily, last], offline_store=_store(tmp_path, "store"), engine=engine)
    defs.build()

    def utc(value: datetime) -> datetime:  # PySpark's reads come back naive (in UTC)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value

    sums = sorted((r["k"], utc(r["event.ts"]), r["s_2d"]) for r in defs.read_feature("daily").to_pyarrow().to_pylist())
    day = lambda d: datetime(2024, 1, d, tzinfo=UTC)  # noqa: E731
    assert sums == [("a", day(2), 10.0), ("a", day(3), 30.0), ("a", day(4), 20.0), ("b", day(3), 80.0), ("b", day(4), 80.0)]
    times = sorted(utc(r["event.ts"]) for r in defs.read_feature("last").to_pyarrow().to_pylist())
    assert times[0] == datetime(2024, 1, 1, 10, 0, 0, 0, tzinfo=UTC) and times[-1] == datetime(2024, 1, 2, 23, 59, 59, 999999, tzinfo=UTC)


@pytest.mark.parametrize("engine", ["duckdb", "polars", pytest.param("pyspark", marks=pytest.mark.spark)])
def test_std_of_a_window_holding_an_infinity_is_nan_on_every_engine(tmp_path, engine):  # contract W5, W8
    import math

    # day 1: 1, inf, 2 (NaN); day 2: inf alone (fewer than two values: null); day 3: 1, 3
    stamps = ["2024-01-01 01:00", "2024-01-01 02:00", "2024-01-01 03:00", "2024-01-02 01:00", "2024-01-03 01:00", "2024-01-03 02:00"]
    pd.DataFrame({"k": ["a"] * 6, "ts": pd.to_datetime(stamps), "x": [1.0, math.inf, 2.0, math.inf, 1.0, 3.0]}).to_parquet(tmp_path / "e.parquet", index=False)

    @mlf.feature(source=str(tmp_path / "e.parquet"), keys=["k"], timestamp="ts", interval="1d", metrics=[mlf.Std("x", windows=["1d"], name="sd")])
    def f(t):
        return t

    defs = mlf.Definitions("p", [f], offline_store=_store(tmp_path, "store"), engine=engine)
    assert defs.build(raise_on_error=False)["f"].status == "built"  # DuckDB stopped: "STDDEV_SAMP is out of range"
    stored = defs.read_feature("f", engine="duckdb")  # PySpark's own reads turn NaN into null (docs/spark.md)
    rows = sorted((r["ts"].day, r["sd_1d"]) for r in stored.to_pyarrow().to_pylist())
    assert math.isnan(rows[0][1]) and rows[1][1] is None and rows[2][1] == pytest.approx(math.sqrt(2))


@pytest.mark.parametrize("engine", ["duckdb", "polars"])
def test_nanosecond_events_before_1970_are_floored_to_the_microsecond(tmp_path, engine):  # contract W1, W8
    stamps = pd.to_datetime(["1969-12-31 23:59:59.999999999", "1969-12-31 12:00:00.0000005"], format="ISO8601").as_unit("ns")
    pd.DataFrame({"k": ["a", "a"], "ts": stamps, "x": [1.0, 2.0]}).to_parquet(tmp_path / "e.parquet", index=False)

    @mlf.feature(source=str(tmp_path / "e.parquet"), keys=["k"], timestamp="ts")
    def plain(t):
        return t

    @mlf.feature(source=str(tmp_path / "e.parquet"), keys=["k"], timestamp="ts", interval="1s", metrics=[mlf.Sum("x", windows=["1s"], name="s")])
    def per_second(t):
        return t

    defs = mlf.Definitions("p", [plain, per_second], offline_store=_store(tmp_path, "store"), engine=engine)
    defs.build()
    stored = sorted(r["ts"] for r in defs.read_feature("plain").to_pyarrow().to_pylist())
    # DuckDB rounded these toward zero: 12:00:00.000001, and 1970-01-01 00:00:00 -- after the event
    assert stored == [datetime(1969, 12, 31, 12, 0, 0, 0, tzinfo=UTC), datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)]
    labels = {r["ts"]: r["s_1s"] for r in defs.read_feature("per_second").to_pyarrow().to_pylist()}
    assert labels[datetime(1970, 1, 1, tzinfo=UTC)] == 1.0  # the event 1 ns before the label is known at it (W1)


@pytest.mark.parametrize("arrow_type", [pa.int8(), pa.int32(), pa.uint32()], ids=str)
@pytest.mark.parametrize("same_day", [True, False], ids=["same-day", "two-days"])
def test_narrow_integer_sums_are_exact_int64_on_every_engine(tmp_path, arrow_type, same_day):  # contract W5, W8
    # Polars summed an int32 field in int32: two 2^31 - 1 on one day read -2, with no error.
    import numpy as np

    top = int(np.iinfo(arrow_type.to_pandas_dtype()).max)
    days = [datetime(2024, 1, 1, 5), datetime(2024, 1, 1 if same_day else 2, 6)]
    pq.write_table(pa.table({"k": [1, 1], "ts": days, "v": pa.array([top, top], arrow_type)}), tmp_path / "e.parquet")

    @mlf.feature(source=str(tmp_path / "e.parquet"), keys=["k"], timestamp="ts", interval="1d", metrics=[mlf.Sum("v", windows=["2d"]), mlf.Mean("v", windows=["2d"])])
    def totals(t):
        return t

    for engine in ("duckdb", "polars"):
        defs = mlf.Definitions("p", [totals], offline_store=_store(tmp_path, engine), engine=engine)
        assert defs.build().ok
        stored = defs.read_feature("totals").to_pyarrow()
        assert stored.schema.field("v_sum_2d").type == pa.int64(), engine
        assert max(stored.column("v_sum_2d").to_pylist()) == 2 * top, engine
        assert max(stored.column("v_mean_2d").to_pylist()) == float(top), engine


@pytest.mark.parametrize("engine", ["duckdb", "polars"])
@pytest.mark.parametrize("kind", ["parquet", "csv", "directory"])
def test_a_source_named_with_glob_characters_reads_itself_not_a_neighbour(tmp_path, engine, kind):  # contract S2, E1
    """`events[1].parquet` that exists is that file: it was read as the pattern `events1`
    (a neighbour's rows, silently), or failed as a pattern matching nothing; a pattern that
    names no file is still a pattern."""
    def events(amount: float) -> pd.DataFrame:
        return pd.DataFrame({"user_id": ["a"], "ts": pd.to_datetime(["2026-01-01 01:00"]), "amount": [amount]})

    def write(frame: pd.DataFrame, path: Path) -> None:
        frame.to_csv(path, index=False) if kind == "csv" else frame.to_parquet(path, index=False)

    suffix = ".csv" if kind == "csv" else ".parquet"
    if kind == "directory":
        (tmp_path / "events[1]").mkdir()
        (tmp_path / "events1").mkdir()
        write(events(1.0), tmp_path / "events[1]" / "part.parquet")
        write(events(999.0), tmp_path / "events1" / "part.parquet")
        named = tmp_path / "events[1]"
    else:
        write(events(1.0), tmp_path / f"events[1]{suffix}")
        write(events(999.0), tmp_path / f"events1{suffix}")
        named = tmp_path / f"events[1]{suffix}"

    def amounts(location: Path, store: str) -> list[float]:
        @mlf.feature(source=mlf.Source(str(location), timestamp="ts"), keys=["user_id"], timestamp="ts")
        def spend(t):
            return t.select("user_id", "ts", "amount")

        defs = mlf.Definitions("p", [spend], offline_store=_store(tmp_path, store), engine=engine)
        assert defs.build().ok
        return defs.read_feature("spend").to_pyarrow().column("amount").to_pylist()

    assert amounts(named, "literal") == [1.0]
    if kind != "directory":
        assert sorted(amounts(tmp_path / f"events?{suffix}", "pattern")) == [999.0]  # `?` matches one character: `1`, not `[1]`


@pytest.mark.parametrize("engine", ["duckdb", "polars"])
def test_a_csv_pandas_wrote_with_its_index_builds(tmp_path, engine):  # contract E5, W8
    """`df.to_csv(path)` heads the index column with an empty name: unused, it is dropped
    like any other column on every engine (DuckDB's SQL stopped at the empty identifier)."""
    path = tmp_path / "events.csv"
    pd.DataFrame({"user_id": ["a", "b"], "ts": ["2026-01-01 01:00:00", "2026-01-01 02:00:00"], "amount": [1.0, 2.0]}).to_csv(path)
    assert path.read_text().startswith(",user_id")

    @mlf.feature(source=mlf.Source(str(path), timestamp="ts"), keys=["user_id"], timestamp="ts")
    def spend(t):
        return t.select("user_id", "ts", "amount")

    defs = mlf.Definitions("p", [spend], offline_store=_store(tmp_path, engine), engine=engine)
    assert defs.build().ok
    assert sorted(defs.read_feature("spend").to_pyarrow().column("amount").to_pylist()) == [1.0, 2.0]


def test_a_source_column_duckdb_reads_under_another_name_is_named_when_the_function_asks_for_it(tmp_path):  # contract E1, E5
    """`Amount` beside `amount`: DuckDB reads one of them under another name. A function that
    selects it gets the definition error that says so, not Ibis's "column not found" listing
    mlforge's internal name and blaming the function."""
    path = tmp_path / "events.parquet"
    pq.write_table(pa.table({"user_id": ["a"], "ts": [datetime(2026, 1, 1, 1)], "Amount": [1.0], "amount": [2.0]}), path)

    @mlf.feature(source=str(path), keys=["user_id"], timestamp="ts")
    def spend(t):
        return t.select("user_id", "ts", "amount")

    defs = mlf.Definitions("p", [spend], offline_store=_store(tmp_path, "case"), engine="duckdb")
    result = defs.build(raise_on_error=False)["spend"]
    assert result.status == "failed" and "source column 'amount' cannot be read under its own name" in str(result.error), result.error
    assert "engine='polars'" in result.error.fix and "__mlforge" not in str(result.error)


def test_a_function_error_quoting_an_empty_text_is_the_functions_error(tmp_path):  # contract E1, E2
    """Beside pandas' empty index header, a function that fails on its own (here `int('')`)
    keeps its own error and exit code (1), not a definition error about the empty column."""
    path = tmp_path / "events.csv"
    pd.DataFrame({"user_id": ["a"], "ts": ["2026-01-01 01:00:00"], "amount": [1.0]}).to_csv(path)

    @mlf.feature(source=mlf.Source(str(path), timestamp="ts"), keys=["user_id"], timestamp="ts")
    def spend(t):
        return t.select("user_id", "ts", amount=t.amount * int(""))

    result = mlf.Definitions("p", [spend], offline_store=_store(tmp_path, "s"), engine="duckdb").build(raise_on_error=False)["spend"]
    assert type(result.error) is BuildError and "raised ValueError" in str(result.error), result.error


@pytest.mark.parametrize("engine", ["duckdb", "polars"])
def test_a_local_store_under_a_folder_with_glob_characters_keeps_its_rows(tmp_path, engine):  # contract S3, S7, P1
    """A store at `features[v2]/` (beside a `features2/`): its files were listed by a glob
    that read the folder's name as a pattern, so a build recorded 0 rows and reads gave none."""
    (tmp_path / "features2").mkdir()
    path = tmp_path / "events.parquet"
    pd.DataFrame({"user_id": ["a", "b"], "ts": pd.to_datetime(["2026-01-01 01:00", "2026-01-02 01:00"]), "amount": [1.0, 2.0]}).to_parquet(path, index=False)

    @mlf.feature(source=mlf.Source(str(path), timestamp="ts"), keys=["user_id"], timestamp="ts", interval="1d", metrics=[mlf.Sum("amount", windows=["2d"])])
    def spend(t):
        return t.select("user_id", "ts", "amount")

    defs = mlf.Definitions("p", [spend], offline_store=mlf.LocalStore(str(tmp_path / "features[v2]")), engine=engine)
    assert defs.build()["spend"].rows == 4
    assert defs.read_feature("spend").count().to_pyarrow().as_py() == 4
    labels = pd.DataFrame({"user_id": ["a", "b"], "ts": pd.to_datetime(["2026-01-02", "2026-01-03"])})
    assert defs.get_training_data(["spend"], labels, timestamp="ts")["amount_sum_2d"].tolist() == [1.0, 2.0]


@pytest.mark.spark
def test_pyspark_reads_a_source_named_with_glob_characters_as_itself(tmp_path, spark_engine):  # contract W8
    frame = pd.DataFrame({"user_id": ["a"], "ts": pd.to_datetime(["2026-01-01 01:00"]), "amount": [1.0]})
    frame.to_parquet(tmp_path / "events[1].parquet", index=False)
    frame.assign(amount=999.0).to_parquet(tmp_path / "events1.parquet", index=False)

    @mlf.feature(source=mlf.Source(str(tmp_path / "events[1].parquet"), timestamp="ts"), keys=["user_id"], timestamp="ts")
    def spend(t):
        return t.select("user_id", "ts", "amount")

    defs = mlf.Definitions("p", [spend], offline_store=mlf.LocalStore(str(tmp_path / "store[1]")), engine=spark_engine)
    assert defs.build().ok
    assert defs.read_feature("spend").to_pyarrow().column("amount").to_pylist() == [1.0]


@pytest.mark.parametrize("engine", ["duckdb", "polars"])
def test_csv_columns_that_differ_only_by_case_are_read_where_the_engine_keeps_them_apart(tmp_path, engine):  # contract E5, E1
    """Polars keeps `Amount` and `amount` apart: both read. DuckDB folds case: the second is
    marked unreadable, and asking for it says so (before, DuckDB failed with a raw error)."""
    path = tmp_path / "events.csv"
    path.write_text("user_id,ts,Amount,amount\na,2026-01-01 01:00:00,1.0,2.0\n")

    @mlf.feature(source=mlf.Source(str(path), timestamp="ts"), keys=["user_id"], timestamp="ts")
    def spend(t):
        return t.select("user_id", "ts", "amount")

    defs = mlf.Definitions("p", [spend], offline_store=_store(tmp_path, engine), engine=engine)
    result = defs.build(raise_on_error=False)["spend"]
    if engine == "polars":
        assert result.status == "built" and defs.read_feature("spend").to_pyarrow().column("amount").to_pylist() == [2.0]
    else:
        assert result.status == "failed" and "source column 'amount' cannot be read under its own name" in str(result.error), result.error


def test_an_empty_source_builds_an_empty_version_on_every_engine(tmp_path, engine):  # contract W8, W9, E1
    """A source with its columns and no rows: an empty version with 0 dropped events (on
    PySpark a conditional count over no rows is null, which failed the build)."""
    pq.write_table(pa.table({"k": pa.array([], pa.string()), "ts": pa.array([], pa.timestamp("us", tz="UTC")), "x": pa.array([], pa.float64())}), tmp_path / "s.parquet")

    @mlf.feature(source=str(tmp_path / "s.parquet"), keys=["k"], timestamp="ts", interval="1d", metrics=[mlf.Sum("x", windows=["1d"])])
    def nothing_yet(t):
        return t

    result = mlf.Definitions("empty", [nothing_yet], offline_store=mlf.LocalStore(tmp_path / "store"), engine=engine).build()["nothing_yet"]
    assert (result.status, result.version, result.rows, result.dropped_rows) == ("built", "1.0.0", 0, 0)


def test_std_of_values_far_from_zero_keeps_its_digits(tmp_path, engine):  # contract W5, W8
    """std of 2**40 + (0, 1, 3) and of 1e9 + small steps: DuckDB's and Polars' own std lost
    ~2e-5 relative to cancellation (Spark's did not); read from values less a per-key
    reference, every engine gives the exact sample deviation."""
    import statistics
    from fractions import Fraction

    big = [2**40, 2**40 + 1, 2**40 + 3]
    near = [1e9 + 0.25, 1e9 + 1.5, 1e9 - 0.75, 1e9 + 2.0]
    pq.write_table(pa.table({  # "big" also had a 0 a month before: outside the window it is no reference
        "k": ["big"] * 3 + ["near"] * 4 + ["inf"] * 2 + ["big"],
        "ts": [datetime(2024, 1, 1, h, tzinfo=UTC) for h in range(9)] + [datetime(2023, 12, 1, tzinfo=UTC)],
        "x": [float(v) for v in big] + near + [float("inf"), 1.0, 0.0],
    }), tmp_path / "s.parquet")

    @mlf.feature(source=str(tmp_path / "s.parquet"), keys=["k"], timestamp="ts", interval="1d", metrics=[mlf.Std("x", windows=["1d"])])
    def spread_of_x(t):
        return t

    defs = mlf.Definitions("std", [spread_of_x], offline_store=mlf.LocalStore(tmp_path / "store"), engine=engine)
    assert defs.build()["spread_of_x"].status == "built"
    stored = defs.read_feature("spread_of_x", engine="duckdb").to_pyarrow().to_pylist()
    got = {r["k"]: r["x_std_1d"] for r in stored if r["ts"].date() == date(2024, 1, 2)}
    # a range build reads only the events of its windows: the same values (I1)
    ranged = mlf.Definitions("std", [spread_of_x], offline_store=mlf.LocalStore(tmp_path / "ranged"), engine=engine)
    ranged.build(since="2024-01-02", until="2024-01-03")
    assert {r["k"]: r["x_std_1d"] for r in ranged.read_feature("spread_of_x", engine="duckdb").to_pyarrow().to_pylist()} == pytest.approx(got, rel=1e-12, nan_ok=True)
    for key, values in (("big", big), ("near", near)):
        exact = float(statistics.stdev([Fraction(v) for v in values]))
        assert abs(got[key] - exact) <= 1e-12 * exact, (key, got[key], exact)
    assert got["inf"] != got["inf"]  # an infinity among two values: NaN, as before
