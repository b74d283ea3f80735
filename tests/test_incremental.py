"""Incremental builds and schedules (contract I1, I2)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given
from hypothesis import strategies as st

import mlforge as mlf
from mlforge.engines.monthfiles import (
    file_spans,
    file_start,
    is_month_start,
    month_end,
    month_start,
    part_key,
    partition_file,
)
from mlforge.errors import ConfigError, DefinitionError
from mlforge.incremental import (
    BuildRange,
    align_down,
    align_up,
    next_watermark,
    plan_range,
    to_instant,
)

DAY = 86_400
BASE = datetime(2024, 3, 1)


# -- pure interval arithmetic -------------------------------------------------------------
@given(st.integers(-10**10, 10**10), st.integers(1, 10**6))
def test_alignment_brackets_the_instant(instant, interval):  # contract I1
    lo, hi = align_down(instant, interval), align_up(instant, interval)
    assert lo % interval == 0 and hi % interval == 0
    assert lo <= instant <= hi and hi - lo in (0, interval)
    assert (lo == hi) == (instant % interval == 0)


@given(st.integers(0, 10**9), st.integers(1, 10**7), st.integers(1, 3 * 10**5))
def test_since_until_widen_to_whole_grid_steps(since, span, interval):  # contract I1
    planned = plan_range(since=since, until=since + span, interval=interval)
    assert planned.since <= since and planned.until >= since + span
    assert planned.since % interval == 0 and planned.until % interval == 0
    assert planned.since < planned.until


@given(st.integers(0, 10**9), st.integers(1, 400), st.sampled_from([3600, DAY]))
def test_last_is_now_minus_span_aligned_down(now, days, interval):  # contract I1
    planned = plan_range(last=f"{days}d", now=now, interval=interval)
    assert planned.since == align_down(now - days * DAY, interval)
    assert planned.until is None


def test_no_range_continues_from_watermark():  # contract I1
    assert plan_range(watermark=10 * DAY + 5, interval=DAY) == BuildRange(since=10 * DAY)
    assert plan_range(interval=DAY).is_full
    assert plan_range(full_refresh=True, watermark=10 * DAY, interval=DAY).is_full


def test_read_range_reaches_back_one_max_window():  # contract I1
    assert BuildRange(since=30 * DAY, until=31 * DAY).read_range(7 * DAY) == (23 * DAY, 31 * DAY)


@given(st.one_of(st.none(), st.integers(0, 10**6)), st.integers(0, 10**6), st.one_of(st.none(), st.integers(0, 10**6)))
def test_watermark_never_moves_backwards(previous, until, newest):
    after = next_watermark(previous, BuildRange(since=0, until=until), newest)
    if previous is not None:
        assert after >= previous
    assert after is None or after <= max(v for v in (previous, until, newest) if v is not None)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"since": "2024-02-01", "until": "2024-01-01"}, "is not before"),
        ({"since": "2024-01-01", "until": "2024-01-01"}, "is not before"),
        ({"last": "7d", "since": "2024-01-01"}, "cannot be combined"),
        ({"full_refresh": True, "since": "2024-01-01"}, "cannot be combined"),
        ({"since": "yesterday"}, "cannot parse"),
        ({"until": "2024-13-45"}, "cannot parse"),
    ],
)
def test_bad_ranges_are_config_errors(kwargs, message):  # contract I1
    with pytest.raises(ConfigError, match=message):
        plan_range(interval=DAY, **kwargs)


def test_bad_last_duration_is_rejected():
    with pytest.raises(DefinitionError, match="days"):
        plan_range(last="1mo", interval=DAY)


def test_instants_read_naive_as_utc():
    assert to_instant("1970-01-02", name="since") == DAY
    assert to_instant("1970-01-02T01:00:00+01:00", name="since") == DAY
    assert to_instant(datetime(1970, 1, 2), name="since") == DAY


# -- builds ----------------------------------------------------------------------------------
def _events(rng_seed: int, n: int, days: int, users: int) -> pa.Table:
    import random

    rng = random.Random(rng_seed)
    rows = []
    for _ in range(n):
        rows.append(
            {
                "user_id": rng.randrange(users) if rng.random() > 0.05 else None,
                "ts": BASE + timedelta(seconds=rng.randrange(days * DAY)) if rng.random() > 0.03 else None,
                "amt": round(rng.uniform(-5, 50), 2) if rng.random() > 0.1 else None,
                "qty": rng.randrange(0, 9),
            }
        )
    schema = pa.schema([("user_id", pa.int64()), ("ts", pa.timestamp("us")), ("amt", pa.float64()), ("qty", pa.int64())])
    return pa.Table.from_pylist(rows, schema=schema)


def _feature(path: str, with_median: bool = False):
    metrics = [
        mlf.Sum("amt", windows=["1d", "3d"], name="spend"),
        mlf.Count("amt", windows=["3d"]),
        mlf.Max("qty", windows=["2d"]),
        mlf.Mean("amt", windows=["2d"]),
    ]
    if with_median:
        metrics += [mlf.Median("amt", windows=["3d"]), mlf.Std("qty", windows=["3d"])]

    @mlf.feature(source=path, keys=["user_id"], timestamp="ts", interval="1d", metrics=metrics, tags=["daily"])
    def spend(t):
        return t.select("user_id", "ts", "amt", "qty")

    return spend


def _stored(defs: mlf.Definitions, name: str) -> list[dict]:
    rows = defs.read_feature(name).to_pyarrow().to_pylist()
    return sorted(rows, key=lambda r: (r["user_id"], r["ts"]))


def _assert_same_rows(left: list[dict], right: list[dict]) -> None:
    assert len(left) == len(right)
    for a, b in zip(left, right, strict=True):
        assert a.keys() == b.keys()
        for key in a:
            if isinstance(a[key], float) and isinstance(b[key], float):
                assert a[key] == pytest.approx(b[key], rel=1e-9, abs=1e-12), key
            else:
                assert a[key] == b[key], key


def _build_by_ranges(engine, path, store_path, splits, with_median=False):
    defs = mlf.Definitions("inc", [_feature(path, with_median)], offline_store=mlf.LocalStore(store_path), engine=engine)
    edges = [None, *splits, None]
    for since, until in itertools.pairwise(edges):
        result = defs.build(since=since, until=until)
        assert result.ok, [str(f.error) for f in result.failed]
    return defs


@pytest.mark.parity
@given(
    seed=st.integers(0, 10_000),
    cut_days=st.lists(st.integers(1, 13), min_size=1, max_size=3, unique=True),
    cut_hours=st.integers(0, 23),
    with_median=st.booleans(),
)
def test_range_by_range_equals_full_build(engine, tmp_path_factory, seed, cut_days, cut_hours, with_median):  # contract I1
    # Without a median the metrics are partial aggregates: on DuckDB and PySpark each range
    # then runs the window plan with trimmed frames; with one, every engine spreads.
    tmp = tmp_path_factory.mktemp("inc")
    path = str(tmp / "events.parquet")
    pq.write_table(_events(seed, 120, 12, 4), path)
    splits = [(BASE + timedelta(days=d, hours=cut_hours)).isoformat() for d in sorted(cut_days)]
    full = mlf.Definitions("full", [_feature(path, with_median)], offline_store=mlf.LocalStore(tmp / "full"), engine=engine)
    assert full.build().ok
    pieces = _build_by_ranges(engine, path, tmp / "pieces", splits, with_median=with_median)
    _assert_same_rows(_stored(pieces, "spend"), _stored(full, "spend"))


@pytest.mark.parity
def test_continuing_from_the_watermark_equals_full_build(engine, tmp_path):  # contract I1
    path = str(tmp_path / "events.parquet")
    events = _events(3, 300, 20, 5).sort_by([("ts", "ascending")])
    valid = events.filter(pa.compute.is_valid(events["ts"]))
    first, later = valid.slice(0, 200), valid.slice(200)
    pq.write_table(first, path)
    incremental = mlf.Definitions("inc", [_feature(path)], offline_store=mlf.LocalStore(tmp_path / "inc"), engine=engine)
    first_result = incremental.build()
    assert first_result["spend"].version == "1.0.0"
    pq.write_table(pa.concat_tables([first, later]), path)  # new events arrive after the watermark
    second = incremental.build()
    assert second["spend"].status == "built"
    assert second["spend"].build_range != "full"
    assert second["spend"].version == "1.0.1"  # same definition, new data -> PATCH (S2)
    full = mlf.Definitions("full", [_feature(path)], offline_store=mlf.LocalStore(tmp_path / "full"), engine=engine)
    assert full.build().ok
    _assert_same_rows(_stored(incremental, "spend"), _stored(full, "spend"))


@pytest.mark.parametrize("engine_name", ["duckdb", "polars"])
def test_continuation_picks_up_late_events_of_the_newest_step(tmp_path, engine_name):  # contract I1
    """The watermark is the grid step after the newest event's: events that arrive later
    but fall in the newest event's step (before it) are still picked up, exactly."""
    path = str(tmp_path / "events.parquet")
    schema = pa.schema([("user_id", pa.int64()), ("ts", pa.timestamp("us")), ("amt", pa.float64()), ("qty", pa.int64())])
    first = [
        {"user_id": 1, "ts": BASE + timedelta(days=2, hours=10), "amt": 1.0, "qty": 1},
        {"user_id": 1, "ts": BASE + timedelta(days=5, hours=20), "amt": 2.0, "qty": 2},  # the newest event
        {"user_id": 2, "ts": BASE + timedelta(days=4), "amt": 4.0, "qty": 3},
    ]
    late = [
        {"user_id": 2, "ts": BASE + timedelta(days=5, hours=1), "amt": 8.0, "qty": 4},  # same day, earlier
        {"user_id": 3, "ts": BASE + timedelta(days=5), "amt": 16.0, "qty": 5},  # on the step's start
        {"user_id": 1, "ts": BASE + timedelta(days=6, hours=3), "amt": 32.0, "qty": 6},  # after it
    ]
    pq.write_table(pa.Table.from_pylist(first, schema=schema), path)
    defs = mlf.Definitions("inc", [_feature(path)], offline_store=mlf.LocalStore(tmp_path / "inc"), engine=engine_name)
    assert defs.build().ok
    assert defs.offline_store.read_metadata("spend")["watermark"] == int((BASE + timedelta(days=6)).replace(tzinfo=UTC).timestamp())
    pq.write_table(pa.Table.from_pylist(first + late, schema=schema), path)
    second = defs.build()
    assert second["spend"].status == "built" and second["spend"].build_range.startswith("[2024-03-07")
    full = mlf.Definitions("full", [_feature(path)], offline_store=mlf.LocalStore(tmp_path / "full"), engine=engine_name)
    assert full.build().ok
    _assert_same_rows(_stored(defs, "spend"), _stored(full, "spend"))


@pytest.mark.parametrize("year", [1650, 2300])
@pytest.mark.parametrize("engine_name", ["duckdb", "polars"])
def test_continuation_of_events_outside_the_nanosecond_range(tmp_path, engine_name, year):  # contract I1, W8
    # Polars made the range filter's literal nanoseconds, which end in 2262 and begin in
    # 1677: the full build ran, the next one failed on converting the literal.
    path = str(tmp_path / "events.parquet")
    schema = pa.schema([("user_id", pa.int64()), ("ts", pa.timestamp("us")), ("amt", pa.float64()), ("qty", pa.int64())])
    start = datetime(year, 6, 1, 12)
    events = [{"user_id": 1, "ts": start + timedelta(days=d), "amt": float(d), "qty": d} for d in range(10)]
    pq.write_table(pa.Table.from_pylist(events[:5], schema=schema), path)
    defs = mlf.Definitions("inc", [_feature(path)], offline_store=mlf.LocalStore(tmp_path / "inc"), engine=engine_name)
    assert defs.build().ok
    pq.write_table(pa.Table.from_pylist(events, schema=schema), path)
    assert defs.build()["spend"].build_range.startswith(f"[{year}-06-06")
    full = mlf.Definitions("full", [_feature(path)], offline_store=mlf.LocalStore(tmp_path / "full"), engine=engine_name)
    assert full.build().ok
    _assert_same_rows(_stored(defs, "spend"), _stored(full, "spend"))


def test_incremental_version_hash_covers_reused_files(tmp_path):  # contract S3, I1
    """An incremental build takes over untouched month files (hard links) with their
    recorded digests; the version's data hash still equals a fresh hash of all its files."""
    import os

    from mlforge.manifest import file_digests, files_hash

    path = str(tmp_path / "events.parquet")
    events = _events(11, 400, 90, 5).sort_by([("ts", "ascending")])
    valid = events.filter(pa.compute.is_valid(events["ts"]))
    first, later = valid.slice(0, 390), valid.slice(390)
    pq.write_table(first, path)
    defs = mlf.Definitions("inc", [_feature(path)], offline_store=mlf.LocalStore(tmp_path / "s"), engine="duckdb")
    assert defs.build()["spend"].version == "1.0.0"
    pq.write_table(pa.concat_tables([first, later]), path)
    assert defs.build()["spend"].version == "1.0.1"

    store = defs.offline_store
    before = {os.path.basename(f): f for f in store.data_files("spend", "1.0.0")}
    after = store.data_files("spend", "1.0.1")
    reused = [f for f in after if os.path.basename(f) in before and os.path.samefile(f, before[os.path.basename(f)])]
    assert reused and len(reused) < len(after)  # some months taken over, some rewritten
    meta = store.read_metadata("spend", "1.0.1")
    assert meta["file_digests"] == file_digests(after)
    assert meta["data_hash"] == files_hash(after)


def test_incremental_build_reads_only_the_needed_events(tmp_path):  # contract I1
    """The range filter sits on the source scan: DuckDB's plan filters the parquet scan."""
    from mlforge.engines import get_engine
    from mlforge.materialize import _in_range
    from mlforge.prepare import prepare_input

    path = str(tmp_path / "events.parquet")
    pq.write_table(_events(1, 200, 30, 5), path)
    feature = _feature(path)
    engine = get_engine("duckdb")
    table = prepare_input(feature, engine)
    build_range = plan_range(since="2024-03-20", until="2024-03-22", interval=DAY)
    filtered = _in_range(feature, table, build_range)
    plan = "\n".join(str(row) for row in engine.con.raw_sql(f"EXPLAIN {engine.con.compile(filtered)}").fetchall())
    assert "PARQUET_SCAN" in plan.upper() or "READ_PARQUET" in plan.upper()
    assert "Filters" in plan or "FILTER" in plan.upper()
    rows = filtered.to_pyarrow()
    low = datetime(2024, 3, 20) - timedelta(days=3)  # since - max_window
    assert all(low <= ts < datetime(2024, 3, 22) for ts in rows.column("ts").to_pylist())
    assert rows.num_rows < table.count().to_pyarrow().as_py()


def test_range_build_replaces_only_its_labels(tmp_path):  # contract I1
    path = str(tmp_path / "events.parquet")
    pq.write_table(_events(5, 200, 14, 3), path)
    defs = mlf.Definitions("inc", [_feature(path)], offline_store=mlf.LocalStore(tmp_path / "s"), engine="duckdb")
    assert defs.build().ok
    before = _stored(defs, "spend")
    result = defs.build(since="2024-03-05", until="2024-03-07", force=True)
    assert result.ok and result["spend"].build_range.startswith("[2024-03-05")
    _assert_same_rows(_stored(defs, "spend"), before)


def test_last_counts_back_from_the_data_when_it_ended_before_now():
    data_end, now = 40 * DAY + 3600, 400 * DAY
    planned = plan_range(last="7d", now=now, interval=DAY, data_end=data_end)
    assert planned == BuildRange(since=33 * DAY) and planned.counted_from == data_end
    assert "counted back from the newest event, 1970-02-10T01:00:00Z" in planned.explain()
    current = plan_range(last="7d", now=now, interval=DAY, data_end=now + DAY)  # data newer than now: the clock wins
    assert current == BuildRange(since=393 * DAY) and current.counted_from is None and current.explain() == current.describe()


def test_last_on_old_data_recomputes_its_last_days(tmp_path):
    """`--last 3d` on events that ended long before today rebuilds the data's last 3 days,
    not an empty stretch after them (which would report "identical")."""
    path = str(tmp_path / "events.parquet")
    pq.write_table(_events(5, 300, 45, 3), path)  # March and half of April
    defs = mlf.Definitions("inc", [_feature(path)], offline_store=mlf.LocalStore(tmp_path / "s"), engine="duckdb")
    assert defs.build().ok
    newest = max(t for t in pq.read_table(path).column("ts").to_pylist() if t is not None)
    seen = []
    result = defs.build(last="3d", force=True, progress=seen.append)["spend"]
    expected_since = (newest - timedelta(days=3)).replace(hour=0, minute=0, second=0, microsecond=0)
    assert result.build_range == f"[{expected_since:%Y-%m-%dT%H:%M:%SZ}, ∞)"
    compute = next(e for e in seen if getattr(e, "stage", None) == "compute" and e.done)
    assert "counted back from the newest event" in compute.detail
    assert 0 < result.rows_written < result.rows  # untouched month files were reused


def test_bad_range_writes_nothing(tmp_path):  # contract I1
    path = str(tmp_path / "events.parquet")
    pq.write_table(_events(5, 50, 5, 3), path)
    store = mlf.LocalStore(tmp_path / "s")
    defs = mlf.Definitions("inc", [_feature(path)], offline_store=store, engine="duckdb")
    with pytest.raises(ConfigError):
        defs.build(since="2024-03-05", until="2024-03-01")
    with pytest.raises(ConfigError):
        defs.build(last="7d", since="2024-03-01")
    assert store.list_features() == []


# -- schedules (I2) -------------------------------------------------------------------------
def _scheduled_project(tmp_path):
    path = str(tmp_path / "events.parquet")
    pq.write_table(_events(5, 50, 5, 3), path)

    @mlf.feature(source=path, keys=["user_id"], timestamp="ts", tags=["users", "daily"])
    def daily_feature(t):
        return t.select("user_id", "ts", "amt")

    @mlf.feature(source=path, keys=["user_id"], timestamp="ts", tags=["hourly"])
    def hourly_feature(t):
        return t.select("user_id", "ts", "qty")

    @mlf.feature(source=path, keys=["user_id"], timestamp="ts", tags=["users"])
    def unscheduled(t):
        return t.select("user_id", "ts")

    return mlf.Definitions("sched", [daily_feature, hourly_feature, unscheduled], offline_store=mlf.LocalStore(tmp_path / "s"))


def test_schedules_select_features(tmp_path):  # contract I2
    defs = _scheduled_project(tmp_path)
    assert defs.list_features(schedule="daily") == ["daily_feature"]
    assert sorted(defs.list_features(schedule="daily,hourly")) == ["daily_feature", "hourly_feature"]
    assert defs.features["daily_feature"].schedule == "daily"
    assert defs.features["unscheduled"].schedule is None
    result = defs.build(schedule=["hourly"])
    assert [f.name for f in result.features] == ["hourly_feature"]


def test_unknown_schedule_lists_the_known_ones(tmp_path):  # contract I2
    defs = _scheduled_project(tmp_path)
    with pytest.raises(ConfigError) as info:
        defs.build(schedule="fortnightly")
    for known in ("realtime", "hourly", "daily", "weekly", "monthly", "on-demand"):
        assert known in str(info.value)


def test_two_schedule_tags_are_a_definition_error(tmp_path):  # contract I2
    with pytest.raises(DefinitionError, match="two schedule tags"):

        @mlf.feature(source=str(tmp_path / "x.parquet"), keys=["k"], tags=["daily", "hourly"])
        def twice(t):
            return t


@pytest.mark.spark
def test_incremental_filter_reaches_the_spark_scan(tmp_path, spark_engine):  # contract I1
    """On PySpark the range filter is pushed into the Parquet scan (PushedFilters)."""
    from mlforge.materialize import _in_range
    from mlforge.prepare import prepare_input

    path = str(tmp_path / "events.parquet")
    pq.write_table(_events(1, 200, 30, 5), path)
    feature = _feature(path)
    table = prepare_input(feature, spark_engine)
    build_range = plan_range(since="2024-03-20", until="2024-03-22", interval=DAY)
    frame = spark_engine.to_native(_in_range(feature, table, build_range))
    if not hasattr(frame, "_jdf"):  # Spark Connect: the plan comes back as explain() text
        import contextlib
        import io

        buffer = io.StringIO()
        with contextlib.redirect_stdout(buffer):
            frame.explain()
        plan = buffer.getvalue()
    else:
        plan = frame._jdf.queryExecution().executedPlan().toString()
    scan = next(line for line in plan.splitlines() if "FileScan parquet" in line or "Scan parquet" in line)
    assert "PushedFilters" in scan and "GreaterThanOrEqual(ts" in scan and "LessThan(ts" in scan, scan
    low = datetime(2024, 3, 20) - timedelta(days=3)
    assert all(low <= r["ts"] < datetime(2024, 3, 22) for r in frame.collect())


def test_a_range_without_a_start_reads_as_every_label_before_its_end():  # contract I1
    # `build --until 2026-02-01` reported the range "[∞, 2026-02-01T00:00:00Z)", an empty interval.
    assert BuildRange(until=86_400).describe() == "(-∞, 1970-01-02T00:00:00Z)"
    assert BuildRange(since=0).describe() == "[1970-01-01T00:00:00Z, ∞)"


def _continued_day_by_day(engine, tmp_path, days: range) -> tuple[mlf.Definitions, list, str]:
    """A full build of the events before ``days[0]``, then one continuation per day of
    ``days`` as that day's events arrive; returns the definitions, each continuation's
    result with the instant it continued from, and the source path."""
    path = str(tmp_path / "events.parquet")
    events = _events(5, 400, 12, 5)
    events = events.filter(pa.compute.is_valid(events["ts"])).sort_by([("ts", "ascending")])
    before = lambda day: events.filter(pa.compute.less(events["ts"], pa.scalar(BASE + timedelta(days=day), pa.timestamp("us"))))  # noqa: E731
    pq.write_table(before(days[0]), path)
    defs = mlf.Definitions("inc", [_feature(path)], offline_store=mlf.LocalStore(tmp_path / "store"), engine=engine)
    assert defs.build()["spend"].version == "1.0.0"
    continued = []
    for day in days:
        pq.write_table(before(day + 1), path)
        result = defs.build()["spend"]
        assert result.status == "built" and result.build_range.startswith(f"[{(BASE + timedelta(days=day)).date()}T00:00:00Z"), result.build_range
        continued.append((result, BASE.replace(tzinfo=UTC) + timedelta(days=day)))
    return defs, continued, path


@pytest.mark.parity
def test_a_continuation_rewrites_only_the_labels_from_its_start_on(engine, tmp_path, monkeypatch):  # contract I1, issue 20
    """A month's rows before the watermark stay in their own file, which the next
    continuation keeps as it is: it writes only the labels from where it starts."""
    monkeypatch.setattr("mlforge.materialize.MERGED_PART_ROWS", 0)  # keep even small parts apart
    defs, continued, path = _continued_day_by_day(engine, tmp_path, range(5, 9))
    stored = pa.Table.from_pylist(_stored(defs, "spend"))
    for result, since in continued:
        start = pa.scalar(since if stored["ts"].type.tz else since.replace(tzinfo=None), stored["ts"].type)  # PySpark reads naive UTC
        from_since = int(pa.compute.sum(pa.compute.greater_equal(stored["ts"], start)).as_py())
        assert result.rows_written < result.rows
        if result is continued[-1][0]:
            assert result.rows_written == from_since  # the newest version: nothing before its start rewritten
    full = mlf.Definitions("full", [_feature(path)], offline_store=mlf.LocalStore(tmp_path / "full"), engine=engine)
    assert full.build().ok
    _assert_same_rows(_stored(defs, "spend"), _stored(full, "spend"))


@pytest.mark.parity
def test_daily_continuations_keep_a_few_files_a_month(engine, tmp_path):  # contract I1, S5
    """Small parts before a continuation's start are merged into what it writes: a month
    of daily builds holds its month file, one part and the part from the watermark on."""
    defs, _, path = _continued_day_by_day(engine, tmp_path, range(3, 11))
    data = sorted(p.name for p in (tmp_path / "store" / "spend" / "1.0.8" / "data").glob("*.parquet"))
    assert "2024-03.parquet" in data and len(data) <= 3, data
    assert all(n.startswith("2024-03") or n.startswith("2024-04") for n in data), data
    full = mlf.Definitions("full", [_feature(path)], offline_store=mlf.LocalStore(tmp_path / "full"), engine=engine)
    assert full.build().ok
    _assert_same_rows(_stored(defs, "spend"), _stored(full, "spend"))
    plain = pa.concat_tables([pq.read_table(tmp_path / "store" / "spend" / "1.0.8" / "data" / n) for n in data])  # S5: plain Parquet
    assert plain.num_rows == len(_stored(full, "spend"))


@pytest.mark.parametrize("engine_name", ["duckdb", "polars"])
def test_rows_without_a_timestamp_are_recomputed_by_every_range_build(tmp_path, engine_name):  # contract I1
    """A feature without metrics stores rows with a null timestamp (``untimed.parquet``);
    they lie in no range, so a range build recomputes them as a full refresh would."""
    path = str(tmp_path / "events.parquet")
    schema = pa.schema([("user_id", pa.int64()), ("ts", pa.timestamp("us")), ("amt", pa.float64())])
    rows = [{"user_id": 1, "ts": BASE, "amt": 1.0}, {"user_id": 2, "ts": None, "amt": 2.0}]

    def plain(source):
        @mlf.feature(source=source, keys=["user_id"], timestamp="ts")
        def raw(t):
            return t.select("user_id", "ts", "amt")

        return raw

    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)
    defs = mlf.Definitions("inc", [plain(path)], offline_store=mlf.LocalStore(tmp_path / "inc"), engine=engine_name)
    assert defs.build()["raw"].version == "1.0.0"
    rows += [{"user_id": 3, "ts": None, "amt": 3.0}, {"user_id": 1, "ts": BASE + timedelta(days=40), "amt": 4.0}]
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)
    key = lambda r: (r["user_id"], r["ts"] is None, r["ts"] or BASE)  # noqa: E731
    for build in ({}, {"since": "2024-02-01"}, {"since": "2024-01-01", "until": "2024-02-01"}):
        result = defs.build(**build)["raw"]
        assert result.status in ("built", "skipped") and result.build_range != "full", result
        stored = sorted(defs.read_feature("raw").to_pyarrow().to_pylist(), key=key)
        assert [r["amt"] for r in stored if r["ts"] is None] == [2.0, 3.0], (build, stored)
        assert len(stored) == 4


@pytest.mark.parametrize("engine_name", ["duckdb", "polars"])
def test_a_row_in_december_9999_does_not_stop_range_builds(tmp_path, engine_name):  # contract I1
    """``9999-12-31`` is a common "valid until" placeholder: its month ends past the last
    datetime, and the stored file of that month must still be judged by its span."""
    path = str(tmp_path / "events.parquet")
    schema = pa.schema([("user_id", pa.int64()), ("ts", pa.timestamp("us")), ("amt", pa.float64())])
    rows = [{"user_id": 1, "ts": BASE, "amt": 1.0}, {"user_id": 2, "ts": datetime(9999, 12, 31, 12), "amt": 2.0}]
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)

    @mlf.feature(source=path, keys=["user_id"], timestamp="ts")
    def raw(t):
        return t.select("user_id", "ts", "amt")

    defs = mlf.Definitions("inc", [raw], offline_store=mlf.LocalStore(tmp_path / "inc"), engine=engine_name)
    assert defs.build()["raw"].version == "1.0.0"
    rows.append({"user_id": 3, "ts": BASE + timedelta(days=4), "amt": 3.0})
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)
    for since in ("2024-03-02", "9999-12-31"):
        result = defs.build(since=since)["raw"]
        assert result.status in ("built", "skipped") and result.error is None, result
    assert sorted(r["amt"] for r in defs.read_feature("raw").to_pyarrow().to_pylist()) == [1.0, 2.0, 3.0]


# -- month files and parts: names and spans (the layout a range build reads, I1) ----------------
_INSTANTS = st.integers(-2_208_988_800, 253_402_300_799)  # 1900-01-01 .. 9999-12-31 23:59:59


@given(_INSTANTS)
def test_a_part_name_gives_back_its_start(instant):
    name = partition_file(part_key(instant))
    assert file_start(name) == instant
    assert month_start(instant) <= instant < month_end(instant) and is_month_start(month_start(instant))
    assert file_start(name[:7] + ".parquet") == month_start(instant)  # the month file of the same month


@given(st.lists(_INSTANTS, min_size=1, max_size=12))
def test_spans_of_a_versions_files_tile_their_months(instants):
    # as a writer names them: each month's file, and a part from each split inside a month
    months = {partition_file(part_key(i) // 100_000_000) for i in instants}
    names = months | {partition_file(part_key(i)) for i in instants if not is_month_start(i)}
    spans = file_spans(sorted(names))
    assert set(spans) == names
    for start, end in spans.values():
        assert start < end <= month_end(start)
        later = [s for s, _ in spans.values() if start < s < month_end(start)]
        assert end == min(later, default=month_end(start))  # up to the next part of its month
    for i in instants:  # every instant lies in exactly one file's span
        assert sum(start <= i < end for start, end in spans.values()) == 1


@pytest.mark.parametrize("engine", ["duckdb", "polars"])
def test_a_continuation_after_the_source_types_narrow_keeps_one_type_per_column(tmp_path, engine):  # contract I1, S2, S5
    """The source's key goes int64 -> int32 (the same canonical type: new data is a PATCH).
    The continuation's new files are int32; the files it kept from the previous version
    were int64, and Polars could not read the mix. Kept files are rewritten in the new types."""
    import glob

    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "tx.parquet"

    def write(days: int, key_type: pa.DataType) -> None:
        ts = [datetime(2026, 1, 1, 12, tzinfo=UTC) + timedelta(days=d) for d in range(days) for _ in range(2)]
        pq.write_table(pa.table({"k": pa.array([i % 2 for i in range(len(ts))], key_type), "ts": ts, "v": [float(i) for i in range(len(ts))]}), path)

    @mlf.feature(source=str(path), keys=["k"], timestamp="ts")
    def last_v(t):
        return t.select("k", "ts", "v")

    write(70, pa.int64())
    defs = mlf.Definitions("narrow", [last_v], offline_store=mlf.LocalStore(tmp_path / "store"), engine=engine)
    assert defs.build()["last_v"].version == "1.0.0"
    write(75, pa.int32())
    result = defs.build()["last_v"]
    assert (result.status, result.version, result.change) == ("built", "1.0.1", "PATCH"), result
    files = glob.glob(str(tmp_path / "store" / "last_v" / "1.0.1" / "data" / "*.parquet"))
    assert len(files) >= 3 and {str(pq.read_schema(f).field("k").type) for f in files} == {"int32"}
    full = mlf.Definitions("narrow", [last_v], offline_store=mlf.LocalStore(tmp_path / "full"), engine=engine)
    assert full.build()["last_v"].status == "built"
    order = ["k", "ts"]
    assert defs.read_feature("last_v").order_by(order).to_pyarrow().to_pylist() == full.read_feature("last_v").order_by(order).to_pyarrow().to_pylist()


def test_a_continuation_skipped_over_a_changed_past_says_how_to_take_it_in(tmp_path):  # contract I1, S2, E1
    """A corrected old event lies before the watermark: the continuation recomputes nothing
    it touches and is skipped; its reason says so and names --since / --full-refresh."""
    path = tmp_path / "events.parquet"
    events = _events(11, 120, 10, 3)
    pq.write_table(events, path)
    defs = mlf.Definitions("late", [_feature(str(path))], offline_store=mlf.LocalStore(tmp_path / "store"), engine="duckdb")
    assert defs.build()["spend"].version == "1.0.0"
    amounts, stamps, users = events.column("amt").to_pylist(), events.column("ts").to_pylist(), events.column("user_id").to_pylist()
    oldest = min((t, i) for i, t in enumerate(stamps) if t is not None and users[i] is not None)[1]
    amounts[oldest] = (amounts[oldest] or 0) + 1000.0  # the oldest event, days before the watermark
    pq.write_table(events.set_column(events.schema.get_field_index("amt"), "amt", pa.array(amounts, events.schema.field("amt").type)), path)
    skipped = defs.build()["spend"]
    assert skipped.status == "skipped" and "the source changed since, but this build recomputes only" in skipped.reason
    assert "--since DATE" in skipped.reason and "--full-refresh" in skipped.reason
    assert defs.build(full_refresh=True)["spend"].version == "1.0.1"  # the way named takes it in


def _moved(t):
    """Events become usable two days after they happen: the function moves event times."""
    import ibis

    return t.select("user_id", "amt", "qty", ts=t.ts + ibis.interval(days=2))


def _moved_back(t):
    import ibis

    return t.select("user_id", "amt", "qty", ts=t.ts - ibis.interval(hours=30))


def _above_mean(t):
    """A filter by a mean over every event: new events move the mean, and rows before any range with it."""
    import ibis

    with_mean = t.mutate(mean=t.amt.mean().over(ibis.window()))
    return with_mean.filter(with_mean.amt >= with_mean.mean).select("user_id", "ts", "amt", "qty")


def _first_seen(t):
    """A column from a window over each user's whole history."""
    import ibis

    first = t.ts.min().over(ibis.window(group_by=t.user_id))
    return t.select("user_id", "ts", "qty", amt=(t.ts.epoch_seconds() - first.epoch_seconds()).cast("float64"))


@pytest.mark.parametrize(
    ("engine_name", "function", "recomputes"),
    # Ibis's Polars backend has no window functions: those two run on DuckDB only
    [(e, f, "range") for e in ("duckdb", "polars") for f in (_moved, _moved_back)] + [("duckdb", _above_mean, "full"), ("duckdb", _first_seen, "full")],
    ids=lambda v: getattr(v, "__name__", v),
)
def test_range_builds_of_functions_that_move_times_or_read_every_event_equal_a_full_refresh(tmp_path, engine_name, function, recomputes):  # contract I1
    """A range build may filter the source before the function only when the function keeps
    event times as they are and makes each row from its own event. A function that moves
    them (a delay) gets its own rows filtered instead; one that makes a row from other
    events too (a mean, a window over history) is recomputed in full, since new events can
    change its rows before any range. A continuation and a `since` build then store what a
    full refresh does (before, the source was filtered by the raw times: moved events were
    lost, and rows came from a range's events alone)."""
    metrics = [mlf.Sum("amt", windows=["1d", "3d"], name="spend"), mlf.Count("amt", windows=["3d"]), mlf.Max("qty", windows=["2d"])]

    def define(store: str) -> mlf.Definitions:
        feature = mlf.feature(source=path, keys=["user_id"], timestamp="ts", interval="1d", metrics=metrics)(function)
        return mlf.Definitions(store, [feature], offline_store=mlf.LocalStore(tmp_path / store), engine=engine_name)

    path = str(tmp_path / "events.parquet")
    events = _events(5, 400, 20, 4).sort_by([("ts", "ascending")])
    pq.write_table(events.slice(0, 250), path)
    incremental = define("inc")
    assert incremental.build().ok
    pq.write_table(events, path)
    result = incremental.build()[function.__name__]
    assert (result.status, result.build_range == "full") == ("built", recomputes == "full"), result
    full = define("full")
    assert full.build().ok
    _assert_same_rows(_stored(incremental, function.__name__), _stored(full, function.__name__))
    pq.write_table(events.slice(0, 330), path)  # a correction: the newest events are taken back
    again = incremental.build(since=(BASE + timedelta(days=6)).isoformat())[function.__name__]
    assert (again.status, again.build_range == "full") == ("built", recomputes == "full"), again
    corrected = define("corrected")
    assert corrected.build().ok
    _assert_same_rows(_stored(incremental, function.__name__), _stored(corrected, function.__name__))


@pytest.mark.parametrize(
    ("function", "expected"),
    [
        (lambda t: t, "source"),
        (lambda t: t.select("user_id", "ts", "amt"), "source"),
        (lambda t: t.filter(t.amt > 0).mutate(double=t.amt * 2).order_by("ts"), "source"),
        (lambda t: t.drop("qty").distinct().drop_null(["amt"]), "source"),
        (lambda t: t.left_join(_dimension(), "user_id").select("user_id", "ts", "amt", "tier"), "source"),
        (lambda t: t.rename(when="ts").rename(ts="when"), "source"),
        (_moved, "output"),
        (lambda t: t.rename(ts="qty", qty="ts"), "output"),  # another column as the event time
        (_above_mean, "none"),
        (_first_seen, "none"),
        (lambda t: t.limit(10), "none"),
        (lambda t: t.join(t.group_by("user_id").agg(n=t.amt.count()), "user_id"), "none"),  # a join on the source itself
        (lambda t: _dimension().join(t, "user_id"), "none"),  # the events joined onto another table: not looked into
    ],
)
def test_where_a_range_filter_may_go(function, expected):  # contract I1
    import ibis

    from mlforge.prepare import range_filter_place

    source = ibis.table({"user_id": "int64", "ts": "timestamp", "amt": "float64", "qty": "int64"}, name="events")
    assert range_filter_place(function(source), source, "ts") == expected


def _dimension():
    import ibis

    return ibis.table({"user_id": "int64", "tier": "string"}, name="users")


@pytest.mark.parametrize("engine_name", ["duckdb", "polars"])
def test_a_full_refresh_sets_the_watermark_from_what_it_read(tmp_path, engine_name):  # contract I1, S3
    """A mistyped event in 2099 put the watermark in 2099. Once the event is taken out of the
    source, a full refresh records the watermark of the events it read, so the next plain
    build takes in new events (before, the watermark never moved back: every later build was
    skipped as unchanged, and online reads were refused until 2099)."""
    path = str(tmp_path / "events.parquet")
    schema = pa.schema([("user_id", pa.int64()), ("ts", pa.timestamp("us")), ("amt", pa.float64()), ("qty", pa.int64())])
    good = [{"user_id": u, "ts": BASE + timedelta(days=d, hours=u), "amt": float(d), "qty": 1} for u in (1, 2) for d in range(10)]
    pq.write_table(pa.Table.from_pylist([*good, {"user_id": 1, "ts": datetime(2099, 1, 1), "amt": 1.0, "qty": 1}], schema=schema), path)
    defs = mlf.Definitions("wm", [_feature(path)], offline_store=mlf.LocalStore(tmp_path / "store"), engine=engine_name)
    assert defs.build().ok
    assert defs.offline_store.read_record("spend").watermark == int(datetime(2099, 1, 2, tzinfo=UTC).timestamp())
    pq.write_table(pa.Table.from_pylist(good, schema=schema), path)
    assert defs.build(full_refresh=True)["spend"].status == "built"
    newest_step = BASE + timedelta(days=10)  # the step after the newest good event (day 9, 02:00)
    assert defs.offline_store.read_record("spend").watermark == int(newest_step.replace(tzinfo=UTC).timestamp())
    later = [{"user_id": 1, "ts": BASE + timedelta(days=12), "amt": 7.0, "qty": 1}]
    pq.write_table(pa.Table.from_pylist(good + later, schema=schema), path)
    result = defs.build()["spend"]
    assert (result.status, result.build_range != "full") == ("built", True), result
    full = mlf.Definitions("full", [_feature(path)], offline_store=mlf.LocalStore(tmp_path / "full"), engine=engine_name)
    assert full.build().ok
    _assert_same_rows(_stored(defs, "spend"), _stored(full, "spend"))


def test_a_range_builds_watermark_is_the_step_after_the_newest_event_it_read(tmp_path):  # contract I1, S3
    """A `since`/`until` build that reads an event past the stored watermark records the step
    after that event (capped at `until`), not one derived from the newest stored label, which
    after a range build can be a label kept from the version before."""
    path = str(tmp_path / "events.parquet")
    schema = pa.schema([("user_id", pa.int64()), ("ts", pa.timestamp("us")), ("amt", pa.float64()), ("qty", pa.int64())])
    rows = [{"user_id": 1, "ts": BASE + timedelta(days=d, hours=13), "amt": 1.0, "qty": 1} for d in (0, 3)]
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)
    defs = mlf.Definitions("wm", [_feature(path)], offline_store=mlf.LocalStore(tmp_path / "store"), engine="duckdb")
    assert defs.build().ok
    step = lambda days: int((BASE + timedelta(days=days)).replace(tzinfo=UTC).timestamp())  # noqa: E731
    assert defs.offline_store.read_record("spend").watermark == step(4)
    pq.write_table(pa.Table.from_pylist([*rows, {"user_id": 1, "ts": BASE + timedelta(days=4, hours=11), "amt": 5.0, "qty": 1}], schema=schema), path)
    # labels from day 6 on are kept from 1.0.0 (the newest, day 6, was its event's last)
    assert defs.build(since=(BASE + timedelta(days=3)).isoformat(), until=(BASE + timedelta(days=6)).isoformat()).ok
    assert defs.offline_store.read_record("spend").watermark == step(5)
    assert defs.build(since=(BASE + timedelta(days=1)).isoformat(), until=(BASE + timedelta(days=2)).isoformat()).ok
    assert defs.offline_store.read_record("spend").watermark == step(5)  # a range never moves it back
    assert defs.build().ok  # and the continuation from there stores what a full refresh does
    full = mlf.Definitions("full", [_feature(path)], offline_store=mlf.LocalStore(tmp_path / "full"), engine="duckdb")
    assert full.build().ok
    _assert_same_rows(_stored(defs, "spend"), _stored(full, "spend"))


def test_a_range_that_reads_no_event_leaves_the_watermark(tmp_path):  # contract I1, S3
    """After a correction took the newest events out, a range past the data reads no event:
    the watermark stays where it was (it had moved to the range's `until`, and every later
    continuation skipped the events that arrived before it)."""
    path = str(tmp_path / "events.parquet")
    schema = pa.schema([("user_id", pa.int64()), ("ts", pa.timestamp("us")), ("amt", pa.float64()), ("qty", pa.int64())])
    rows = [{"user_id": u, "ts": BASE + timedelta(days=d, hours=5 + u), "amt": float(d), "qty": 1} for u in (1, 2) for d in range(6)]
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)
    defs = mlf.Definitions("wm", [_feature(path)], offline_store=mlf.LocalStore(tmp_path / "store"), engine="duckdb")
    assert defs.build().ok
    watermark = defs.offline_store.read_record("spend").watermark
    rows = [r for r in rows if r["ts"] < BASE + timedelta(days=3)]  # wrongly dated: taken out
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)
    assert defs.build(since=(BASE + timedelta(days=6)).isoformat(), until=(BASE + timedelta(days=30)).isoformat()).ok
    assert defs.offline_store.read_record("spend").watermark == watermark
    rows += [{"user_id": 1, "ts": BASE + timedelta(days=d, hours=1), "amt": 10.0, "qty": 2} for d in (10, 12, 15)]
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)
    assert defs.build()["spend"].status == "built"
    assert defs.build(since=BASE.isoformat()).ok  # the correction before the range, taken in
    full = mlf.Definitions("full", [_feature(path)], offline_store=mlf.LocalStore(tmp_path / "full"), engine="duckdb")
    assert full.build().ok
    _assert_same_rows(_stored(defs, "spend"), _stored(full, "spend"))
