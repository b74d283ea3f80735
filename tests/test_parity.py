"""Cross-engine parity: every engine's build equals the contract oracle (W1-W9, STYLE 9-10).

Hypothesis draws event tables with ties on timestamps, nulls in values and keys, events
exactly on grid points (which are also window edges) and one microsecond either side,
sparse and dense entities, one or two key columns of string or integer type, int and
float fields, naive and zoned timestamps, several windows and all seven aggregations.
Each table is built through the public API and read back with ``read_feature``.
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, note, settings
from hypothesis import strategies as st

import mlforge as mlf
from oracle import OracleMetric, expected_rows, from_micros, values_match

pytestmark = pytest.mark.parity

FUNCTIONS = ("count", "sum", "mean", "min", "max", "std", "median")
SHORTHANDS = {"count": "Count", "sum": "Sum", "mean": "Mean", "min": "Min", "max": "Max", "std": "Std", "median": "Median"}
#: (spelling amount, unit, seconds): 5h and 1w are not divisors of a day, so their grid
#: (epoch-aligned, W1) does not line up with midnights.
INTERVALS = ((15, "m", 900), (1, "h", 3600), (5, "h", 18000), (1, "d", 86400), (1, "w", 604800))
KEY_POOLS = {"string": ["a", "b", "c", "ü-1"], "int64": [-3, 0, 7, 2**40]}
#: 2024-01-01 and a day before the epoch (floor division of negative instants).
BASES = (1_704_067_200, -86_400)
MICROS = 1_000_000
#: Every example's work directory lives under this one, removed when the test process ends.
SCRATCH = tempfile.TemporaryDirectory(prefix="mlforge-parity-")


@dataclass
class Case:
    """One drawn feature: its events, keys, grid and metrics."""

    events: list[dict]
    key_types: dict[str, str]
    interval: tuple[int, str, int]
    metrics: list[tuple[str, str, tuple[int, ...], str | None]]  # field, function, window multiples, name
    timezone: str | None

    @property
    def interval_text(self) -> str:
        amount, unit, _ = self.interval
        return f"{amount}{unit}"

    def window_text(self, multiple: int) -> str:
        amount, unit, _ = self.interval
        return f"{amount * multiple}{unit}"


@st.composite
def cases(draw, functions: tuple[str, ...] = FUNCTIONS, max_span: int = 12) -> Case:
    interval = draw(st.sampled_from(INTERVALS))
    step = interval[2] * MICROS
    key_names = draw(st.sampled_from([["user"], ["user", "store"]]))
    key_types = {k: draw(st.sampled_from(sorted(KEY_POOLS))) for k in key_names}
    # A pool of one or two values per key makes dense entities, four makes sparse ones.
    pools = {k: draw(st.lists(st.sampled_from(KEY_POOLS[t]), min_size=1, max_size=4, unique=True)) for k, t in key_types.items()}
    first_grid = BASES[draw(st.integers(0, len(BASES) - 1))] * MICROS // step
    span = draw(st.integers(1, max_span))
    jitter = st.one_of(st.just(0), st.just(1), st.just(-1), st.integers(0, step - 1))

    def key_value(name: str):
        return st.one_of(st.sampled_from(pools[name]), st.none()) if draw(st.booleans()) else st.sampled_from(pools[name])

    event = st.fixed_dictionaries(
        {
            **{k: key_value(k) for k in key_names},
            "grid": st.integers(first_grid, first_grid + span),
            "jitter": jitter,
            "ts_null": st.integers(0, 15).map(lambda n: n == 0),
            "amt": st.one_of(st.none(), st.floats(-1000, 1000, allow_nan=False, allow_infinity=False).map(lambda x: round(x, 3))),
            "qty": st.one_of(st.none(), st.integers(-1000, 1000)),
        }
    )
    raw_events = draw(st.lists(event, min_size=1, max_size=30))
    events = []
    for e in raw_events:
        micros = e["grid"] * step + e["jitter"]
        events.append({**{k: e[k] for k in key_names}, "ts": None if e["ts_null"] else micros, "amt": e["amt"], "qty": e["qty"]})
    # Repeat some events verbatim: exact ties on key and timestamp.
    events += draw(st.lists(st.sampled_from(events), max_size=3))

    multiples = draw(st.lists(st.integers(1, 5), min_size=1, max_size=3, unique=True))
    chosen = draw(st.lists(st.tuples(st.sampled_from(["amt", "qty"]), st.sampled_from(functions)), min_size=1, max_size=6, unique=True))
    metrics = []
    for i, (field, function) in enumerate(chosen):
        windows = tuple(draw(st.lists(st.sampled_from(multiples), min_size=1, unique=True)))
        name = f"m{i}" if draw(st.integers(0, 3)) == 0 else None
        metrics.append((field, function, windows, name))
    timezone = draw(st.sampled_from([None, "UTC", "Asia/Kolkata"]))
    return Case(events, key_types, interval, metrics, timezone)


def write_source(case: Case, path: str) -> None:
    columns = {k: pa.array([e[k] for e in case.events], type=getattr(pa, t)()) for k, t in case.key_types.items()}
    columns["ts"] = pa.array([e["ts"] for e in case.events], type=pa.timestamp("us", tz=case.timezone))
    columns["amt"] = pa.array([e["amt"] for e in case.events], type=pa.float64())
    columns["qty"] = pa.array([e["qty"] for e in case.events], type=pa.int64())
    pq.write_table(pa.table(columns), path)


def declared_metrics(case: Case) -> list:
    out = []
    for i, (field, function, multiples, name) in enumerate(case.metrics):
        windows = [case.window_text(m) for m in multiples]
        if i % 2:
            out.append(getattr(mlf, SHORTHANDS[function])(field, windows=windows, name=name))
        else:
            out.append(mlf.Aggregate(field, function, windows, name=name))
    return out


def oracle_metrics(case: Case) -> list[OracleMetric]:
    out = []
    for field, function, multiples, name in case.metrics:
        for m in multiples:
            window = case.window_text(m)
            # contract W6: {name}_{window} with a name, {field}_{function}_{window} without.
            column = f"{name}_{window}" if name else f"{field}_{function}_{window}"
            out.append(OracleMetric(column, field, function, m * case.interval[2]))
    return out


def build_case(case: Case, engine, store_factory=None) -> tuple[pa.Table, object]:
    """Build ``case`` through the public API (a LocalStore unless ``store_factory(dir)``)."""
    workdir = tempfile.mkdtemp(prefix="build-", dir=SCRATCH.name)
    source = f"{workdir}/events.parquet"
    write_source(case, source)

    @mlf.feature(
        source=source,
        keys=list(case.key_types),
        timestamp="ts",
        interval=case.interval_text,
        metrics=declared_metrics(case),
    )
    def parity_feature(t):
        return t

    store = store_factory(workdir) if store_factory else mlf.LocalStore(f"{workdir}/store")
    defs = mlf.Definitions("parity", [parity_feature], offline_store=store, engine=engine)
    result = defs.build()
    assert result.ok, str(result.failed[0].error)
    return defs.read_feature("parity_feature").to_pyarrow(), result["parity_feature"]


def check_against_oracle(case: Case, engine, store_factory=None) -> None:
    keys = list(case.key_types)
    metrics = oracle_metrics(case)
    events = [{**e, "ts": None if e["ts"] is None else from_micros(e["ts"])} for e in case.events]
    expected = expected_rows(events, keys=keys, timestamp="ts", interval=case.interval[2], metrics=metrics)
    table, outcome = build_case(case, engine, store_factory)

    # contract W9: events with a null key or timestamp are dropped, and counted.
    dropped = sum(1 for e in case.events if e["ts"] is None or any(e[k] is None for k in keys))
    assert outcome.dropped_rows == dropped

    # contract W6, W7: key columns keep name and type; the timestamp holds the grid label.
    assert set(table.column_names) == {*keys, "ts", *(m.name for m in metrics)}
    for k, t in case.key_types.items():
        actual_type = table.schema.field(k).type
        assert (pa.types.is_string(actual_type) or pa.types.is_large_string(actual_type)) if t == "string" else actual_type == pa.int64()
    assert pa.types.is_timestamp(table.schema.field("ts").type)

    actual = sorted(table.to_pylist(), key=lambda r: (*(r[k] for k in keys), _as_utc(r["ts"])))
    # contract W3: exactly the grid labels with a non-empty window, per entity.
    expected_labels = [(*(r[k] for k in keys), r["ts"]) for r in expected]
    actual_labels = [(*(r[k] for k in keys), _as_utc(r["ts"])) for r in actual]
    assert expected_labels == actual_labels, f"{engine.name}: grid rows differ from the oracle"
    for want, got in zip(expected, actual, strict=True):
        for m in metrics:
            # contract W1, W4, W5, W8: the same values on every engine, floats within 1e-9.
            assert values_match(want[m.name], got[m.name]), f"{engine.name} {m}: expected {want}, got {got}"


def _as_utc(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def test_engine_matches_oracle(engine):  # contract W1-W9
    # The number of examples comes from the hypothesis profile: nox's parity session runs
    # Spark with its own smaller "spark" profile.
    @given(case=cases())
    def check(case: Case) -> None:
        note(f"engine={engine.name} interval={case.interval_text} tz={case.timezone} metrics={case.metrics}")
        check_against_oracle(case, engine)

    check()


@pytest.mark.spark
def test_engines_agree_with_each_other(spark_engine):  # contract W8
    """DuckDB, Polars and PySpark build the same case; their stored tables are compared
    with each other directly (same columns and types, same rows, floats within 1e-9),
    not only each with the oracle: a difference the oracle does not pin down (a value
    column's type, a float that differs in the last bits) shows here."""
    from mlforge.engines import get_engine

    engines = [get_engine("duckdb"), get_engine("polars"), spark_engine]

    @given(case=cases())
    def check(case: Case) -> None:
        note(f"interval={case.interval_text} tz={case.timezone} metrics={case.metrics}")
        keys = list(case.key_types)
        tables = {engine.name: build_case(case, engine)[0] for engine in engines}
        reference_name, reference = next(iter(tables.items()))
        for name, table in tables.items():
            assert table.schema.names and set(table.column_names) == set(reference.column_names), (name, table.column_names)
            for column in reference.column_names:
                a, b = reference.schema.field(column).type, table.schema.field(column).type
                assert _same_kind(a, b), f"{name} stores {column} as {b}, {reference_name} as {a}"
        ordered = {name: sorted(t.to_pylist(), key=lambda r: (*(r[k] for k in keys), _as_utc(r["ts"]))) for name, t in tables.items()}
        for name, rows in ordered.items():
            assert len(rows) == len(ordered[reference_name]), f"{name}: {len(rows)} rows, {reference_name}: {len(ordered[reference_name])}"
            for mine, theirs in zip(rows, ordered[reference_name], strict=True):
                for column, value in theirs.items():
                    other = mine[column]
                    if isinstance(value, datetime):
                        value, other = _as_utc(value), _as_utc(other)
                    assert values_match(value, other), f"{name} vs {reference_name}, {column}: {other!r} != {value!r} in {mine}"

    check()


def _same_kind(a: pa.DataType, b: pa.DataType) -> bool:
    """The same logical type: string and large_string are one; timestamps are instants in
    any unit or zone spelling (the values are compared as UTC)."""
    def kind(t: pa.DataType) -> str:
        if pa.types.is_string(t) or pa.types.is_large_string(t):
            return "string"
        if pa.types.is_timestamp(t):
            return "timestamp"
        return str(t)

    return kind(a) == kind(b)


#: Aggregations made of partial aggregates: on engines with window functions these run the
#: compiler's window plan (islands of buckets, RANGE frames) instead of the spread plan.
PARTIAL_FUNCTIONS = ("count", "sum", "mean", "min", "max")


def test_partial_metrics_match_oracle(engine):  # contract W1, W3, W4, W8
    # Spans up to 40 grid steps against windows of at most 5: entities with several
    # islands of events, separated by gaps longer than the largest window.
    @given(case=cases(functions=PARTIAL_FUNCTIONS, max_span=40))
    def check(case: Case) -> None:
        note(f"engine={engine.name} interval={case.interval_text} tz={case.timezone} metrics={case.metrics}")
        check_against_oracle(case, engine)

    check()


@pytest.mark.parametrize(("engine_name", "fast_plan"), [("duckdb", "window"), ("polars", "rolling")])
def test_metric_plans_agree(engine_name, fast_plan):  # contract W8, I1
    """The spread plan and the engine's faster plan (DuckDB: window functions; Polars:
    native rolling frames) give identical rows for the same partial metrics, for every
    label and for the labels of a range (an incremental build's trimmed frames)."""
    from mlforge.compiler import LabelRange, compile_metrics
    from mlforge.engines import get_engine
    from mlforge.prepare import prepare_input, run_function

    engine = get_engine(engine_name)

    @settings(max_examples=max(settings().max_examples, 80))
    @given(case=cases(functions=PARTIAL_FUNCTIONS, max_span=40), data=st.data())
    def check(case: Case, data) -> None:
        workdir = tempfile.mkdtemp(prefix="plans-", dir=SCRATCH.name)
        source = f"{workdir}/events.parquet"
        write_source(case, source)

        @mlf.feature(source=source, keys=list(case.key_types), timestamp="ts", interval=case.interval_text, metrics=declared_metrics(case))
        def plans(t):
            return t

        feature = plans
        output = run_function(feature, prepare_input(feature, engine), engine)
        order = [*case.key_types, "ts"]
        labels = None
        stamps = [e["ts"] // MICROS for e in case.events if e["ts"] is not None]
        if stamps and data.draw(st.booleans(), label="range"):
            step = case.interval[2]
            # from a few steps before the first event to past the last window, or just after
            # an event's step; mostly on the grid or one second off it, where an off-by-one
            # frame or island bound would show
            buckets = sorted({t // step for t in stamps})
            grid = st.one_of(st.integers(buckets[0] - 3, buckets[-1] + 8), st.sampled_from(buckets).flatmap(lambda b: st.integers(b, b + 7)))
            bound = st.builds(lambda k, off: k * step + off, grid, st.sampled_from([0, 0, 1, -1, step // 2]))
            start = data.draw(bound, label="since")
            end = data.draw(st.one_of(st.none(), bound.filter(lambda e: e > start)), label="until")
            labels = LabelRange(start, end)
        spread, window = (compile_metrics(feature, output, engine, labels, plan=plan).order_by(order).to_pyarrow().to_pylist() for plan in ("spread", fast_plan))
        assert len(spread) == len(window)
        for a, b in zip(spread, window, strict=True):
            assert a.keys() == b.keys() and all(values_match(a[k], b[k]) for k in a), (a, b)

    check()


@st.composite
def dense_events(draw):
    """Events of one to three entities on a daily grid, dense enough that every range
    boundary has events right before it: where an off-by-one frame or island shows."""
    buckets = st.integers(0, 60)  # with windows of at most 6 days: often several islands
    rows = draw(st.lists(st.tuples(st.integers(1, 3), buckets, st.integers(0, 86_399), st.integers(-50, 50)), min_size=1, max_size=40))
    return [{"user": u, "ts": (b * 86_400 + s) * MICROS, "qty": q} for u, b, s, q in rows]


@settings(max_examples=max(settings().max_examples, 100))
@given(events=dense_events(), windows=st.lists(st.integers(1, 6), min_size=1, max_size=3, unique=True), data=st.data())
def test_a_label_range_computes_the_same_rows_as_everything(tmp_path_factory, events, windows, data):  # contract I1
    """The window plan of an incremental build (the labels of a range, trimmed frames)
    gives exactly the rows of the full computation that fall in the range."""
    from mlforge.engines import get_engine

    check_label_range(get_engine("duckdb"), tmp_path_factory, events, windows, data)


@pytest.mark.spark
@given(events=dense_events(), windows=st.lists(st.integers(1, 6), min_size=1, max_size=3, unique=True), data=st.data())
def test_a_label_range_computes_the_same_rows_on_spark(spark_engine, tmp_path_factory, events, windows, data):  # contract I1, W8
    """The same on PySpark, whose builds use the window plan too (the "spark" profile's
    examples: a Spark job costs seconds)."""
    check_label_range(spark_engine, tmp_path_factory, events, windows, data)


def check_label_range(engine, tmp_path_factory, events, windows, data) -> None:
    from mlforge.compiler import LabelRange, compile_metrics
    from mlforge.prepare import prepare_input, run_function

    source = tmp_path_factory.mktemp("range") / "events.parquet"
    pq.write_table(pa.table({"user": [e["user"] for e in events], "ts": pa.array([e["ts"] for e in events], pa.timestamp("us")), "qty": [e["qty"] for e in events]}), source)
    metrics = [mlf.Sum("qty", windows=[f"{w}d" for w in windows]), mlf.Count("qty", windows=[f"{w}d" for w in windows]), mlf.Max("qty", windows=[f"{max(windows)}d"])]

    @mlf.feature(source=str(source), keys=["user"], timestamp="ts", interval="1d", metrics=metrics)
    def ranged(t):
        return t

    output = run_function(ranged, prepare_input(ranged, engine), engine)
    buckets = sorted({e["ts"] // MICROS // 86_400 for e in events})
    # a few days around an event (where its frames and its island begin and end), or any
    # day; the range is short, so an end bound cut one day off shows
    near = data.draw(st.sampled_from(buckets), label="event day")
    first = data.draw(st.one_of(st.integers(near - 7, near + 7), st.integers(-1, 70)), label="since day")
    last = data.draw(st.one_of(st.none(), st.integers(first + 1, first + 8)), label="until day")
    start, end = first * 86_400, None if last is None else last * 86_400
    order = ["user", "ts"]
    everything = compile_metrics(ranged, output, engine, plan="window").order_by(order).to_pyarrow().to_pylist()
    want = [r for r in everything if r["ts"].timestamp() >= start and (end is None or r["ts"].timestamp() < end)]
    got = compile_metrics(ranged, output, engine, LabelRange(start, end), plan="window").order_by(order).to_pyarrow().to_pylist()
    assert got == want


# A fixed case that a reader can check by hand: all seven functions on an int and a float
# field, a tie, a null value, a null key, and events on and just before grid points.
HAND_CASE = Case(
    events=[
        {"user": "a", "ts": 1_704_067_200 * MICROS, "amt": 1.5, "qty": 2},  # exactly on 2024-01-01
        {"user": "a", "ts": 1_704_067_200 * MICROS, "amt": 2.5, "qty": 4},  # a tie
        {"user": "a", "ts": (1_704_153_600 * MICROS) - 1, "amt": None, "qty": 5},  # 1 µs before 01-02
        {"user": "b", "ts": 1_704_153_600 * MICROS, "amt": -1.0, "qty": None},
        {"user": None, "ts": 1_704_153_600 * MICROS, "amt": 9.0, "qty": 9},
    ],
    key_types={"user": "string"},
    interval=(1, "d", 86400),
    metrics=[(field, function, (1, 2), None) for field in ("amt", "qty") for function in FUNCTIONS],
    timezone=None,
)


# Instants just before the epoch: buckets must floor (-0.5 s is in second -1), which
# truncating engines get wrong.
EPOCH_CASE = Case(
    events=[
        {"user": 1, "ts": -1, "amt": 1.0, "qty": 1},
        {"user": 1, "ts": -500_000, "amt": 2.0, "qty": 2},
        {"user": 1, "ts": -3_600 * MICROS, "amt": 4.0, "qty": 4},
        {"user": 2, "ts": 0, "amt": 8.0, "qty": 8},
        {"user": 2, "ts": 1, "amt": 16.0, "qty": 16},
    ],
    key_types={"user": "int64"},
    interval=(1, "h", 3600),
    metrics=[("qty", "sum", (1, 2), None), ("amt", "max", (1,), "top")],
    timezone=None,
)


@pytest.mark.parametrize("case", [HAND_CASE, EPOCH_CASE], ids=["hand", "epoch"])
def test_fixed_cases_match_oracle(engine, case):  # contract W1, W3, W4, W5
    check_against_oracle(case, engine)


def test_hand_case_values():  # contract W1, W3, W4, W5
    rows = expected_rows(
        [{**e, "ts": from_micros(e["ts"])} for e in HAND_CASE.events],
        keys=["user"],
        timestamp="ts",
        interval=86400,
        metrics=oracle_metrics(HAND_CASE),
    )
    labels = [(r["user"], r["ts"].date().isoformat()) for r in rows]
    # a: events on 01-01 00:00 and 01-01 23:59:59.999999 -> labels 01-02, 01-03; b: 01-03, 01-04.
    assert labels == [("a", "2024-01-02"), ("a", "2024-01-03"), ("b", "2024-01-03"), ("b", "2024-01-04")]
    a_first = rows[0]
    assert a_first["qty_sum_1d"] == 11 and a_first["qty_count_1d"] == 3
    assert a_first["amt_count_1d"] == 2 and a_first["amt_mean_1d"] == 2.0 and a_first["amt_median_1d"] == 2.0
    assert a_first["qty_median_1d"] == 4.0 and math.isclose(a_first["qty_std_1d"], math.sqrt(7 / 3))
    a_second = rows[1]
    assert a_second["qty_sum_1d"] == 0 and a_second["qty_min_1d"] is None and a_second["qty_sum_2d"] == 11
    b_first = rows[2]
    assert b_first["amt_std_1d"] is None and b_first["qty_count_1d"] == 0 and b_first["amt_min_1d"] == -1.0
