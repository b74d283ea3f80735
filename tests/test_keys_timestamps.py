"""Keys and time on every engine: surrogate keys (K1), timestamps (T1), native frames,
dropped events (W9), output types (W7) and errors raised before compute (W8, E1).

This module has no ``from __future__ import annotations`` on purpose: the native-frame
tests need real annotation objects as well as strings.
"""

import hashlib
from datetime import UTC, date, datetime, timedelta

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import mlforge as mlf
from mlforge.definitions.source import TIMESTAMP_FORMATS
from mlforge.engines import get_engine
from mlforge.errors import DefinitionError, EngineError, SourceError

SEPARATOR = "\x1f"


def reference_key(*values) -> str:
    """Rule K1 written out with hashlib: 16 bytes of SHA-256 over ``v1 ␟ v2 ...``, nulls as ``\\N``."""
    parts = ["\\N" if v is None else v.isoformat() if isinstance(v, date) else str(v) for v in values]
    return hashlib.sha256(SEPARATOR.join(parts).encode("utf-8")).hexdigest()[:32]


def build(tmp_path, engine, *features):
    defs = mlf.Definitions("p", list(features), offline_store=mlf.LocalStore(tmp_path / "store"), engine=engine)
    return defs, defs.build(raise_on_error=False)  # the tests read each feature's outcome


def rows(defs, name, order=None):
    table = defs.read_feature(name).to_pyarrow()
    records = table.to_pylist()
    return sorted(records, key=lambda r: tuple(str(r[c]) for c in order)) if order else records


def utc(value):
    return value if value is None or value.tzinfo is not None else value.replace(tzinfo=UTC)


# -- K1 surrogate keys ----------------------------------------------------------------------

ROUTES = {
    "origin": ["JFK", "JFK", None, "Zürich", "", "a\x1fb"],
    "dest_id": pa.array([1, -7, 2**62, None, 0, 5], type=pa.int64()),
    "day": pa.array([date(2024, 2, 29), None, date(1999, 12, 31), date(2024, 1, 1), date(1970, 1, 1), date(2024, 1, 2)], type=pa.date32()),
    "gate": pa.array([3, 3, None, -1, 0, 12], type=pa.int32()),
    "ts": pa.array([datetime(2024, 1, 1, h) for h in range(6)], type=pa.timestamp("us")),
    "amt": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
}
ROUTE_COLUMNS = ["origin", "dest_id", "day", "gate"]


@pytest.fixture
def routes_path(tmp_path):
    path = tmp_path / "routes.parquet"
    pq.write_table(pa.table(ROUTES), path)
    return str(path)


def test_reference_key_is_the_contract_text():  # contract K1
    expected = hashlib.sha256(b"JFK\x1f1\x1f2024-02-29\x1f\\N").hexdigest()[:32]
    assert reference_key("JFK", 1, date(2024, 2, 29), None) == expected
    assert len(expected) == 32 and expected == expected.lower()


def test_surrogate_key_helper_matches_reference():  # contract K1, K2
    for row in pa.table(ROUTES).select(ROUTE_COLUMNS).to_pylist():
        values = [row[c] for c in ROUTE_COLUMNS]
        assert mlf.surrogate_key(*values) == reference_key(*values)
    for bad in (1.5, True, datetime(2024, 1, 1)):
        with pytest.raises(DefinitionError):
            mlf.surrogate_key("x", bad)


def test_surrogate_keys_equal_reference_on_every_engine(routes_path, tmp_path, engine):  # contract K1, K2
    route = mlf.Entity(name="route", join_key="route_id", from_columns=ROUTE_COLUMNS)
    origin = mlf.Entity(name="origin", join_key="origin_id", from_columns=["origin"])

    @mlf.feature(routes_path, entities=[route, origin], timestamp="ts")
    def route_rows(t):
        return t

    @mlf.feature(routes_path, entities=[route])
    def dropped_key(t):
        # The output lacks route_id but has the natural columns: K1 adds it back.
        return t.drop("route_id").select(*ROUTE_COLUMNS, "amt")

    @mlf.feature(routes_path, entities=[route], timestamp="ts", interval="1d", metrics=[mlf.Sum("amt", ["1d"])])
    def route_spend(t):
        return t

    defs, result = build(tmp_path, engine, route_rows, dropped_key, route_spend)
    assert result.ok, [str(f.error) for f in result.failed]
    for name in ("route_rows", "dropped_key"):
        stored = rows(defs, name)
        assert len(stored) == len(ROUTES["amt"])
        for row in stored:
            assert row["route_id"] == reference_key(*(row[c] for c in ROUTE_COLUMNS)), (name, row)
    for row in rows(defs, "route_rows"):
        assert row["origin_id"] == reference_key(row["origin"])
    natural = pa.table(ROUTES).to_pylist()
    by_key = {reference_key(*(r[c] for c in ROUTE_COLUMNS)): r["amt"] for r in natural}
    spend = {r["route_id"]: r["amt_sum_1d"] for r in rows(defs, "route_spend")}
    assert spend == by_key


@pytest.mark.parametrize(
    ("column", "values"),
    [
        ("price", pa.array([1.5, 2.5], type=pa.float64())),
        ("flag", pa.array([True, False])),
        ("seen_at", pa.array([datetime(2024, 1, 1), datetime(2024, 1, 2)], type=pa.timestamp("us"))),
    ],
)
def test_surrogate_key_column_types_rejected(tmp_path, column, values):  # contract K1
    path = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"origin": ["a", "b"], column: values}), path)
    entity = mlf.Entity(name="thing", join_key="thing_id", from_columns=["origin", column])

    @mlf.feature(str(path), entities=[entity])
    def things(t):
        return t

    defs, result = build(tmp_path, "duckdb", things)
    error = result["things"].error
    assert isinstance(error, DefinitionError)
    assert repr(column) in str(error) and "'thing'" in str(error) and "things" in str(error)
    assert defs.offline_store.list_versions("things") == []


# -- T1 timestamps ----------------------------------------------------------------------------

#: One event per source, written in different ways; all mean the instants below (UTC).
ZONED_EVENTS = {
    "naive_utc": (pa.timestamp("us"), datetime(2024, 1, 1, 23, 30), datetime(2024, 1, 1, 23, 30, tzinfo=UTC)),
    "naive_ms": (pa.timestamp("ms"), datetime(2024, 1, 1, 23, 30), datetime(2024, 1, 1, 23, 30, tzinfo=UTC)),
    "new_york": (pa.timestamp("us", tz="America/New_York"), datetime(2024, 1, 2, 3, 0, tzinfo=UTC), datetime(2024, 1, 2, 3, 0, tzinfo=UTC)),
    "kolkata": (pa.timestamp("us", tz="Asia/Kolkata"), datetime(2024, 1, 1, 20, 0, tzinfo=UTC), datetime(2024, 1, 1, 20, 0, tzinfo=UTC)),
}


def test_naive_is_utc_and_zoned_is_converted(tmp_path, engine):  # contract T1, W1
    features = []
    for name, (arrow_type, value, _) in ZONED_EVENTS.items():
        path = tmp_path / f"{name}.parquet"
        pq.write_table(pa.table({"user": ["a"], "ts": pa.array([value], type=arrow_type), "amt": [2.0]}), path)

        def as_is(t):
            return t

        as_is.__name__ = f"{name}_events"
        features.append(mlf.feature(str(path), keys=["user"], timestamp="ts")(as_is))

        def daily(t):
            return t

        daily.__name__ = f"{name}_daily"
        features.append(mlf.feature(str(path), keys=["user"], timestamp="ts", interval="1d", metrics=[mlf.Count("amt", ["1d"])])(daily))
    defs, result = build(tmp_path, engine, *features)
    assert result.ok, [str(f.error) for f in result.failed]
    for name, (_, _, instant) in ZONED_EVENTS.items():
        (stored,) = rows(defs, f"{name}_events")
        assert utc(stored["ts"]) == instant, name
        (label,) = rows(defs, f"{name}_daily")
        # W1: the one label is the first UTC midnight after the instant.
        next_midnight = datetime(instant.year, instant.month, instant.day, tzinfo=UTC) + timedelta(days=1)
        assert utc(label["ts"]) == next_midnight, name


def test_date_timestamps_are_midnight_utc_on_every_engine(tmp_path, engine):  # contract T1, W1, W7, W8
    # Polars cast a date to nanoseconds that Ibis typed without a scale: the labels came out
    # 1000x too late (year ~55970) and the windows wrong, with no error.
    parquet, csv = tmp_path / "dates.parquet", tmp_path / "dates.csv"
    pq.write_table(pa.table({"k": ["a", "a"], "ts": pa.array([date(2024, 1, 1), date(2024, 1, 3)], pa.date32()), "v": [1.0, 2.0]}), parquet)
    csv.write_text("k,ts,v\na,2024-01-01,1.0\na,2024-01-03,2.0\n")  # Arrow's CSV reader types these as dates
    features = []
    for name, path, fn in [("date_column", parquet, lambda t: t), ("csv_dates", csv, lambda t: t), ("made_date", parquet, lambda t: t.mutate(ts=t.ts.cast("timestamp").date()))]:
        fn.__name__ = name
        features.append(mlf.feature(str(path), keys=["k"], timestamp="ts", interval="1d", metrics=[mlf.Sum("v", windows=["3d"])])(fn))
    defs, result = build(tmp_path, engine, *features)
    assert result.ok, [str(f.error) for f in result.failed]
    expected = [(datetime(2024, 1, d, tzinfo=UTC), total) for d, total in [(2, 1.0), (3, 1.0), (4, 3.0), (5, 2.0), (6, 2.0)]]
    for name in ("date_column", "csv_dates", "made_date"):
        assert [(utc(r["ts"]), r["v_sum_3d"]) for r in rows(defs, name, order=["ts"])] == expected, name


STRING_TIMESTAMPS = [
    ("2024-01-01 23:30:00", datetime(2024, 1, 1, 23, 30)),
    ("2024-01-01T23:30:00", datetime(2024, 1, 1, 23, 30)),
    ("2024-01-01 23:30:00.250000", datetime(2024, 1, 1, 23, 30, 0, 250000)),
    ("2024-01-01T23:30:00Z", datetime(2024, 1, 1, 23, 30)),
    ("2024-01-01T22:00:00-05:00", datetime(2024, 1, 2, 3, 0)),
    ("2024-01-02 01:30:00+05:30", datetime(2024, 1, 1, 20, 0)),
    ("2024/01/01 23:30:00", datetime(2024, 1, 1, 23, 30)),
    ("2024-01-01", datetime(2024, 1, 1)),
]


def test_string_timestamps_detected(tmp_path, engine):  # contract T1
    features = []
    for i, (text, _) in enumerate(STRING_TIMESTAMPS):
        path = tmp_path / f"strings_{i}.parquet"
        pq.write_table(pa.table({"user": ["a", "b"], "ts": [text, None], "amt": [1.0, 2.0]}), path)

        def fn(t):
            return t

        fn.__name__ = f"strings_{i}"
        features.append(mlf.feature(str(path), keys=["user"], timestamp="ts")(fn))
    defs, result = build(tmp_path, engine, *features)
    assert result.ok, [str(f.error) for f in result.failed]
    for i, (text, instant) in enumerate(STRING_TIMESTAMPS):
        parsed = {r["user"]: r["ts"] for r in rows(defs, f"strings_{i}")}
        assert utc(parsed["a"]) == instant.replace(tzinfo=UTC), text


@pytest.mark.parametrize(
    "texts",
    [
        ["2024-01-01T10:00:00", "2024-01-01T10:59:59.999999", "2024-01-01T11:00:00.250000"],  # datetime.isoformat()
        ["2024-01-01 10:00:00", "2024-01-01 10:59:59.999999", "2024-01-01 11:00:00.250000"],
        ["2024-01-01T12:00:00+02:00", "2024-01-01T10:59:59.999999Z", "2024-01-01T11:00:00.250000+00:00"],
    ],
    ids=["T", "space", "zoned"],
)
def test_iso_strings_with_a_fraction_only_when_not_zero(tmp_path, engine, texts):  # contract T1
    """What datetime.isoformat() writes: a fraction only when it is not zero. Every value is
    its own instant, the ones without a fraction at .000000."""
    path = tmp_path / "iso.parquet"
    pq.write_table(pa.table({"user": ["a", "b", "c"], "ts": texts, "amt": [1.0, 2.0, 4.0]}), path)

    @mlf.feature(str(path), keys=["user"], timestamp="ts")
    def iso_times(t):
        return t

    defs, result = build(tmp_path, engine, iso_times)
    assert result.ok, [str(f.error) for f in result.failed]
    parsed = {r["user"]: utc(r["ts"]) for r in rows(defs, "iso_times")}
    assert parsed == {
        "a": datetime(2024, 1, 1, 10, tzinfo=UTC),
        "b": datetime(2024, 1, 1, 10, 59, 59, 999999, tzinfo=UTC),
        "c": datetime(2024, 1, 1, 11, 0, 0, 250000, tzinfo=UTC),
    }


@pytest.mark.parametrize("engine_name", ["duckdb", "polars"])
def test_iso_strings_not_zero_padded_with_a_fraction_still_read(tmp_path, engine_name):  # contract T1
    """Every value with a fraction, month and day not zero-padded (strptime reads them; Spark's
    parser does not): the fraction handling must leave them as they are."""
    path = tmp_path / "loose.parquet"
    pq.write_table(pa.table({"user": ["a", "b"], "ts": ["2024-1-5T10:00:00.250000", "2024-1-6T11:00:00.500000"], "amt": [1.0, 2.0]}), path)

    @mlf.feature(str(path), keys=["user"], timestamp="ts")
    def loose_times(t):
        return t

    defs, result = build(tmp_path, engine_name, loose_times)
    assert result.ok, [str(f.error) for f in result.failed]
    assert {r["user"]: utc(r["ts"]) for r in rows(defs, "loose_times")} == {
        "a": datetime(2024, 1, 5, 10, 0, 0, 250000, tzinfo=UTC),
        "b": datetime(2024, 1, 6, 11, 0, 0, 500000, tzinfo=UTC),
    }


def test_string_timestamps_with_explicit_format(tmp_path, engine):  # contract T1
    path = tmp_path / "dotted.csv"
    path.write_text("user,when,amt\na,01.01.2024 23:30,1.5\nb,02.01.2024 00:00,2.5\n")

    @mlf.feature(
        mlf.Source(str(path), timestamp=mlf.Timestamp("when", format="%d.%m.%Y %H:%M", alias="ts")),
        keys=["user"],
        interval="1d",
        metrics=[mlf.Sum("amt", ["1d"])],
    )
    def dotted(t):
        return t

    defs, result = build(tmp_path, engine, dotted)
    assert result.ok, [str(f.error) for f in result.failed]
    stored = [(r["user"], utc(r["ts"]), r["amt_sum_1d"]) for r in rows(defs, "dotted", order=["user", "ts"])]
    assert stored == [("a", datetime(2024, 1, 2, tzinfo=UTC), 1.5), ("b", datetime(2024, 1, 3, tzinfo=UTC), 2.5)]


def test_unparseable_timestamps_fail_listing_formats_and_values(tmp_path, engine, monkeypatch):  # contract T1, W8
    path = tmp_path / "junk.parquet"
    bad = ["yesterday", "2024-13-45 00:00:00", "not a date", "31.12.2024"]
    pq.write_table(pa.table({"user": ["a", "b", "c", "d", "e"], "ts": ["2024-01-01 10:00:00", *bad], "amt": [1.0] * 5}), path)

    @mlf.feature(str(path), keys=["user"], timestamp="ts", interval="1d", metrics=[mlf.Count("amt", ["1d"])])
    def junk(t):
        return t

    writes = forbid_compute(monkeypatch, engine)
    _, result = build(tmp_path, engine, junk)
    assert writes == []
    error = result["junk"].error
    assert isinstance(error, SourceError)
    message = str(error)
    assert all(fmt in message for fmt in TIMESTAMP_FORMATS)
    assert sum(value in message for value in bad) == 3
    assert "'ts'" in message and "junk" in message


def test_explicit_format_mismatch_lists_values(tmp_path, engine):  # contract T1
    path = tmp_path / "mismatch.parquet"
    pq.write_table(pa.table({"user": ["a", "b"], "ts": ["2024-01-01 10:00", "2024-01-02 11:00"]}), path)

    @mlf.feature(str(path), keys=["user"], timestamp=mlf.Timestamp("ts", format="%Y-%m-%d"))
    def mismatch(t):
        return t

    _, result = build(tmp_path, engine, mismatch)
    error = result["mismatch"].error
    assert isinstance(error, SourceError) and "'%Y-%m-%d'" in str(error) and "2024-01-01 10:00" in str(error)


def test_spark_timestamp_patterns():  # contract T1, W8
    from mlforge.engines.pyspark import java_datetime_pattern

    assert java_datetime_pattern("%Y-%m-%dT%H:%M:%S.%f%z") == "yyyy-MM-dd'T'HH:mm:ss.SSSSSS[XXX][XX]"
    assert java_datetime_pattern("%d.%m.%Y %H:%M") == "dd.MM.yyyy HH:mm"
    # A code Spark cannot parse fails while the build is planned, naming engine and code.
    with pytest.raises(EngineError, match=r"'pyspark'.*%U"):
        java_datetime_pattern("%Y week %U")


# -- native frames (section 1) ----------------------------------------------------------------


@pytest.fixture
def small_path(tmp_path):
    path = tmp_path / "small.parquet"
    pq.write_table(pa.table({"user": ["a", "b"], "ts": pa.array([datetime(2024, 1, 1), datetime(2024, 1, 2)], type=pa.timestamp("us")), "amt": [1.0, 2.0]}), path)
    return str(path)


def test_polars_frame_function_runs_on_polars(small_path, tmp_path):
    @mlf.feature(small_path, keys=["user"], timestamp="ts")
    def doubled(df: pl.DataFrame) -> pl.DataFrame:
        assert isinstance(df, pl.DataFrame)
        return df.with_columns(amt2=pl.col("amt") * 2)

    @mlf.feature(small_path, keys=["user"], timestamp="ts")
    def lazy_doubled(df: "pl.LazyFrame"):
        assert isinstance(df, pl.LazyFrame)
        return df.with_columns(amt2=pl.col("amt") * 2)

    defs, result = build(tmp_path, "polars", doubled, lazy_doubled)
    assert result.ok, [str(f.error) for f in result.failed]
    for name in ("doubled", "lazy_doubled"):
        assert [r["amt2"] for r in rows(defs, name, order=["user"])] == [2.0, 4.0]


@pytest.mark.parametrize(("annotation", "wants"), [(pl.DataFrame, "polars"), ("pl.LazyFrame", "polars"), ("pyspark.sql.DataFrame", "pyspark")])
def test_native_frame_function_fails_on_other_engine(small_path, tmp_path, annotation, wants, monkeypatch):
    def native(df):
        return df

    native.__annotations__ = {"df": annotation}
    feat = mlf.feature(small_path, keys=["user"], timestamp="ts")(native)
    assert feat.native_frame == wants
    engine = get_engine("duckdb")
    writes = forbid_compute(monkeypatch, engine)
    defs, result = build(tmp_path, engine, feat)
    assert writes == []
    error = result["native"].error
    assert isinstance(error, EngineError)
    assert wants in str(error) and "duckdb" in str(error)
    assert defs.offline_store.list_versions("native") == []


@pytest.mark.spark
def test_spark_frame_function_runs_on_spark(small_path, tmp_path, spark_engine):
    def spark_doubled(df: "pyspark.sql.DataFrame"):  # noqa: F821 - a string annotation on purpose
        return df.withColumn("amt2", df["amt"] * 2)

    feat = mlf.feature(small_path, keys=["user"], timestamp="ts")(spark_doubled)
    defs, result = build(tmp_path, spark_engine, feat)
    assert result.ok, [str(f.error) for f in result.failed]
    assert [r["amt2"] for r in rows(defs, "spark_doubled", order=["user"])] == [2.0, 4.0]


@pytest.mark.spark
def test_relative_source_path_follows_python_cwd_on_spark(small_path, tmp_path, monkeypatch, spark_engine):
    """A relative Source path means the same file on Spark, whose JVM started elsewhere."""
    monkeypatch.chdir(tmp_path)

    @mlf.feature("small.parquet", keys=["user"], timestamp="ts")
    def relative(df):
        return df

    defs, result = build(tmp_path, spark_engine, relative)
    assert result.ok, [str(f.error) for f in result.failed]
    assert [r["amt"] for r in rows(defs, "relative", order=["user"])] == [1.0, 2.0]


def test_spark_frame_function_fails_on_polars(small_path, tmp_path):
    def spark_only(df: "pyspark.sql.DataFrame"):  # noqa: F821
        return df

    feat = mlf.feature(small_path, keys=["user"], timestamp="ts")(spark_only)
    _, result = build(tmp_path, "polars", feat)
    error = result["spark_only"].error
    assert isinstance(error, EngineError) and "pyspark" in str(error) and "polars" in str(error)


# -- W9 dropped events --------------------------------------------------------------------------


def test_dropped_events_are_counted(tmp_path, engine):  # contract W9
    path = tmp_path / "nulls.parquet"
    stamp = datetime(2024, 1, 1, 12)
    table = pa.table(
        {
            "user": ["a", None, "b", None, "a"],
            "store": [1, 1, None, 2, 2],
            "ts": pa.array([stamp, stamp, stamp, None, None], type=pa.timestamp("us")),
            "amt": [1.0, 2.0, 3.0, 4.0, None],
        }
    )
    pq.write_table(table, path)

    @mlf.feature(str(path), keys=["user", "store"], timestamp="ts", interval="1d", metrics=[mlf.Sum("amt", ["1d"]), mlf.Count("amt", ["1d"])])
    def with_nulls(t):
        return t

    defs, result = build(tmp_path, engine, with_nulls)
    assert result["with_nulls"].dropped_rows == 4
    assert [(r["user"], r["store"], r["amt_sum_1d"], r["amt_count_1d"]) for r in rows(defs, "with_nulls")] == [("a", 1, 1.0, 1)]


# -- W7 output types ------------------------------------------------------------------------------


@pytest.fixture
def typed_path(tmp_path):
    path = tmp_path / "typed.parquet"
    table = pa.table(
        {
            "user_id": pa.array([1, 1, 2], type=pa.int32()),
            "ts": pa.array([datetime(2024, 1, 1), datetime(2024, 1, 1, 6), datetime(2024, 1, 2)], type=pa.timestamp("us")),
            "small": pa.array([1, 2, None], type=pa.int32()),
            "big": pa.array([10, None, 30], type=pa.int64()),
            "ratio": pa.array([0.5, 0.25, 1.0], type=pa.float32()),
            "amt": pa.array([1.5, 2.5, None], type=pa.float64()),
            "code": ["b", "a", "c"],
        }
    )
    pq.write_table(table, path)
    return str(path)


NUMERIC = {"small": pa.int32(), "big": pa.int64(), "ratio": pa.float32(), "amt": pa.float64()}


def expected_type(function: str, field_type: pa.DataType) -> pa.DataType:
    """Rule W5/W7 as a table: count int64, sum of ints int64, mean/std/median float64,
    min/max the input type; a sum of floats is float64."""
    if function == "count":
        return pa.int64()
    if function == "sum":
        return pa.int64() if pa.types.is_integer(field_type) else pa.float64()
    if function in ("mean", "std", "median"):
        return pa.float64()
    return field_type


def test_metric_output_types(typed_path, tmp_path, engine):  # contract W5, W7
    functions = ("count", "sum", "mean", "min", "max", "std", "median")
    metrics = [mlf.Aggregate(field, function, ["1d"]) for field in NUMERIC for function in functions]
    metrics += [mlf.Min("code", ["1d"]), mlf.Max("code", ["1d"]), mlf.Count("code", ["1d"])]

    @mlf.feature(typed_path, keys=["user_id"], timestamp="ts", interval="1d", metrics=metrics)
    def typed(t):
        return t

    defs, result = build(tmp_path, engine, typed)
    assert result.ok, [str(f.error) for f in result.failed]
    schema = defs.read_feature("typed").to_pyarrow().schema
    assert schema.field("user_id").type == pa.int32()  # W7: keys keep their type
    assert pa.types.is_timestamp(schema.field("ts").type)
    wrong = {
        f"{field}_{function}_1d": (str(schema.field(f"{field}_{function}_1d").type), str(expected_type(function, field_type)))
        for field, field_type in NUMERIC.items()
        for function in functions
        if schema.field(f"{field}_{function}_1d").type != expected_type(function, field_type)
    }
    assert wrong == {}
    assert pa.types.is_string(schema.field("code_min_1d").type) or pa.types.is_large_string(schema.field("code_min_1d").type)
    first = rows(defs, "typed", order=["user_id", "ts"])[0]
    assert (first["code_min_1d"], first["code_max_1d"], first["code_count_1d"]) == ("a", "b", 2)
    assert (first["small_sum_1d"], first["big_sum_1d"], first["ratio_max_1d"]) == (3, 10, 0.5)


@pytest.mark.parametrize("with_median", [False, True], ids=["partials", "raw events"])
def test_the_mean_of_integers_past_2_53_is_their_exact_sum_over_the_count(tmp_path, engine, with_median):  # contract W5, W8
    """Each integer rounded to float first made 2^53+1 and -2^53 average 0.0 where their
    sum is 1; both plans (partials, and the raw events a median needs) give 0.5."""
    path = tmp_path / "big.parquet"
    pq.write_table(pa.table({
        "k": pa.array([1, 1, 2], pa.int64()),
        "ts": pa.array([datetime(2024, 1, 1, 10), datetime(2024, 1, 1, 11), datetime(2024, 1, 1, 12)], pa.timestamp("us")),
        "b": pa.array([2**53 + 1, -(2**53), 2**62 + 3], pa.int64()),
    }), path)
    metrics = [mlf.Mean("b", windows=["1d"]), mlf.Sum("b", windows=["1d"])] + ([mlf.Median("b", windows=["1d"])] if with_median else [])

    @mlf.feature(str(path), keys=["k"], timestamp="ts", interval="1d", metrics=metrics)
    def big(t):
        return t

    defs, result = build(tmp_path, engine, big)
    assert result.ok, [str(f.error) for f in result.failed]
    first = {r["k"]: r for r in rows(defs, "big", order=["k", "ts"])}
    assert (first[1]["b_sum_1d"], first[1]["b_mean_1d"]) == (1, 0.5)
    assert first[2]["b_mean_1d"] == float(2**62 + 3)


def test_non_metric_output_stored_as_returned(typed_path, tmp_path, engine):  # contract W7
    @mlf.feature(typed_path, keys=["user_id"], timestamp="ts")
    def picked(t):
        return t.select("user_id", "ts", "small", "ratio", "code").mutate(doubled=t.small * 2)

    defs, result = build(tmp_path, engine, picked)
    assert result.ok, [str(f.error) for f in result.failed]
    table = defs.read_feature("picked").to_pyarrow()
    assert table.column_names == ["user_id", "ts", "small", "ratio", "code", "doubled"]
    assert [table.schema.field(c).type for c in ("user_id", "small", "ratio")] == [pa.int32(), pa.int32(), pa.float32()]
    assert table.num_rows == 3


def test_non_metric_rows_without_timestamp_kept(tmp_path, engine):  # contract W7
    # Rows with a null timestamp go to the month file "untimed.parquet"; Spark skips files
    # whose name starts with "_", so that name must never be used.
    path = tmp_path / "gaps.parquet"
    pq.write_table(pa.table({"user": ["a", "b"], "ts": pa.array([datetime(2024, 1, 1), None], type=pa.timestamp("us"))}), path)

    @mlf.feature(str(path), keys=["user"], timestamp="ts")
    def gaps(t):
        return t

    defs, result = build(tmp_path, engine, gaps)
    assert result.ok, [str(f.error) for f in result.failed]
    assert [(r["user"], utc(r["ts"])) for r in rows(defs, "gaps", order=["user"])] == [("a", datetime(2024, 1, 1, tzinfo=UTC)), ("b", None)]


# -- errors before compute (W8, E1) ----------------------------------------------------------------


def forbid_compute(monkeypatch, engine) -> list:
    """Record (and refuse) any write of output: the error must come before compute."""
    calls = []

    def refuse(*args, **kwargs):
        calls.append(args)
        raise RuntimeError("the build reached compute")

    monkeypatch.setattr(engine, "write_parquet", refuse)
    return calls


def test_missing_source_file_names_feature(tmp_path, engine, monkeypatch):  # contract E1, W8
    @mlf.feature(str(tmp_path / "nowhere.parquet"), keys=["user"], timestamp="ts")
    def lost(t):
        return t

    writes = forbid_compute(monkeypatch, engine)
    defs, result = build(tmp_path, engine, lost)
    assert writes == []
    error = result["lost"].error
    assert isinstance(error, SourceError)
    assert "lost" in str(error) and "nowhere.parquet" in str(error)
    assert defs.offline_store.list_versions("lost") == []


@pytest.mark.parametrize(
    ("kwargs", "column"),
    [
        ({"keys": ["user"], "timestamp": "ts", "interval": "1d", "metrics": [mlf.Sum("nope", ["1d"])]}, "nope"),
        ({"keys": ["nokey"], "timestamp": "ts", "interval": "1d", "metrics": [mlf.Sum("amt", ["1d"])]}, "nokey"),
        ({"keys": ["user"], "timestamp": "when", "interval": "1d", "metrics": [mlf.Sum("amt", ["1d"])]}, "when"),
        ({"keys": ["nokey"]}, "nokey"),
        ({"keys": ["user"], "timestamp": "ts", "interval": "1d", "metrics": [mlf.Mean("ts", ["1d"])]}, "ts"),  # not numeric (a key field is refused when declared)
    ],
)
def test_unknown_column_fails_before_compute(small_path, tmp_path, engine, monkeypatch, kwargs, column):  # contract E1, W8
    def broken(t):
        return t

    feat = mlf.feature(small_path, **kwargs)(broken)
    writes = forbid_compute(monkeypatch, engine)
    defs, result = build(tmp_path, engine, feat)
    assert writes == []
    error = result["broken"].error
    assert isinstance(error, (DefinitionError, SourceError))
    assert repr(column) in str(error) and "broken" in str(error)
    assert defs.offline_store.list_versions("broken") == []
