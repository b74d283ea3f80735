"""Point-in-time retrieval (contract P1-P4, K2) on every engine, plus a parity property test."""

from __future__ import annotations

import os
import re
import warnings
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import mlforge as mlf
from mlforge.errors import MlforgeError, RetrievalError
from mlforge.retrieval import FeatureSpec

DAY = timedelta(days=1)
JAN = datetime(2024, 1, 1)


def _ts(text: str) -> datetime:
    return datetime.fromisoformat(text)


def _events(amount_scale: float) -> pa.Table:
    rows = [
        ("u1", "JFK", "LAX", "2024-01-01 10:00", 1.0),
        ("u1", "JFK", "LAX", "2024-01-02 00:00", 2.0),  # exactly on the grid
        ("u1", "SFO", "LAX", "2024-01-03 05:00", 4.0),
        ("u2", "JFK", "LAX", "2024-01-02 12:00", 8.0),
    ]
    return pa.table({
        "user_id": [r[0] for r in rows],
        "origin": [r[1] for r in rows],
        "dest": [r[2] for r in rows],
        "ts": pa.array([_ts(r[3]) for r in rows], pa.timestamp("us")),
        "amt": [r[4] * amount_scale for r in rows],
    })


def _definitions(source: str, store: Path) -> mlf.Definitions:
    route = mlf.Entity("route", join_key="route_id", from_columns=["origin", "dest"])

    @mlf.feature(source=source, keys=["user_id"], timestamp="ts", interval="1d",
                 metrics=[mlf.Sum("amt", windows=["2d"], name="spend"), mlf.Count("amt", windows=["2d"], name="n"),
                          mlf.Mean("amt", windows=["2d"], name="avg")])
    def spend(t):
        return t.select("user_id", "ts", "amt")

    @mlf.feature(source=source, keys=["user_id"], timestamp="ts")
    def last_amt(t):
        return t.select("user_id", "ts", "amt", "origin")

    @mlf.feature(source=source, entities=[route], timestamp="ts", interval="1d",
                 metrics=[mlf.Count("amt", windows=["2d"], name="trips")])
    def route_trips(t):
        return t.select("route_id", "ts", "amt")

    return mlf.Definitions("retrieval-tests", [spend, last_amt, route_trips], offline_store=mlf.LocalStore(store), engine="duckdb")


def _publish(store: mlf.LocalStore, name: str, table: pa.Table, metadata: dict, version: str = "1.0.0") -> None:
    """Store a version directly, in the Parquet layout and metadata a build writes."""
    import ibis

    from mlforge.manifest import canonical_schema

    staging = store.stage(name)
    pq.write_table(table, f"{staging.data_dir}/part-00000.parquet")
    schema = canonical_schema(ibis.memtable(table).schema())
    store.publish(staging, version, {"name": name, "version": version, "schema": schema, "entities": [], **metadata})


def _utc(values: list[datetime]) -> pa.Array:
    return pa.array([v.replace(tzinfo=UTC) for v in values], pa.timestamp("us", tz="UTC"))


def _grid_rows(keys: list[str], times: list[datetime], amounts: list[float], windows: int = 2) -> dict:
    """What the metric compiler stores for a 1d grid and ``windows``-day windows (W1, W3)."""
    rows: dict[tuple, list[float]] = {}
    for key, ts, amount in zip(keys, times, amounts, strict=True):
        bucket = datetime(ts.year, ts.month, ts.day)
        for offset in range(1, windows + 1):
            rows.setdefault((key, bucket + offset * DAY), []).append(amount)
    return dict(sorted(rows.items()))


def _metric(name: str, function: str) -> dict:
    return {"name": name, "field": "amt", "function": function, "window": "2d", "description": None, "unit": None}


def _store_versions(store: mlf.LocalStore, scale: float, version: str) -> None:
    events = _events(scale).to_pydict()
    users, times, amounts = events["user_id"], events["ts"], events["amt"]
    spend = _grid_rows(users, times, amounts)
    _publish(store, "spend", pa.table({
        "user_id": [k for k, _ in spend], "ts": _utc([t for _, t in spend]),
        "spend_2d": [sum(v) for v in spend.values()], "n_2d": pa.array([len(v) for v in spend.values()], pa.int64()),
        "avg_2d": [sum(v) / len(v) for v in spend.values()],
    }), {"keys": ["user_id"], "timestamp": "ts", "interval": "1d", "metrics": [_metric("spend_2d", "sum"), _metric("n_2d", "count"), _metric("avg_2d", "mean")]}, version)
    _publish(store, "last_amt", pa.table({"user_id": users, "ts": _utc(times), "amt": amounts, "origin": events["origin"]}),
             {"keys": ["user_id"], "timestamp": "ts", "interval": None, "metrics": []}, version)
    routes = [mlf.surrogate_key(o, d) for o, d in zip(events["origin"], events["dest"], strict=True)]
    trips = _grid_rows(routes, times, amounts)
    _publish(store, "route_trips", pa.table({
        "route_id": [k for k, _ in trips], "ts": _utc([t for _, t in trips]), "trips_2d": pa.array([len(v) for v in trips.values()], pa.int64()),
    }), {"keys": ["route_id"], "timestamp": "ts", "interval": "1d", "metrics": [_metric("trips_2d", "count")],
         "entities": [{"name": "route", "join_key": "route_id", "from_columns": ["origin", "dest"]}]}, version)


@pytest.fixture(scope="module")
def defs(tmp_path_factory):
    """Three stored features in two versions: 1.0.0 with amounts x1, 1.0.1 (latest) with x10.

    Versions are written directly in the build's layout, so these tests check retrieval
    alone; ``test_end_to_end_with_a_real_build`` goes through ``Definitions.build``.
    """
    store = mlf.LocalStore(tmp_path_factory.mktemp("retrieval") / "store")
    _store_versions(store, 1.0, "1.0.0")
    _store_versions(store, 10.0, "1.0.1")
    project = mlf.Definitions("retrieval-tests", [], offline_store=store, engine="duckdb")
    yield project
    project.close()


def _labels(rows: list[tuple]) -> pd.DataFrame:
    return pd.DataFrame({"user_id": [r[0] for r in rows], "ts": pd.to_datetime([r[1] for r in rows])})


def _rows(frame: pd.DataFrame, columns: list[str]) -> list[tuple]:
    return [tuple(None if pd.isna(v) else v for v in row) for row in frame[columns].itertuples(index=False)]


# -- P1 ------------------------------------------------------------------------------------
def test_rows_order_and_columns_are_kept(defs, engine):  # contract P1
    labels = pd.DataFrame(
        {
            "label": [1, 0, 1, 1],
            "user_id": ["u2", "u1", "u1", "u2"],
            "ts": pd.to_datetime(["2024-01-03", "2024-01-04", "2024-01-04", "2024-01-03"]),
            "note": ["d", "b", "b", "d"],  # rows 2/3 duplicate rows 1/0 in values
        },
        index=[7, 3, 3, 9],
    )
    out = defs.get_training_data(["spend", "last_amt"], labels, timestamp="ts", engine=engine)
    assert isinstance(out, pd.DataFrame)
    assert list(out.columns) == ["label", "user_id", "ts", "note", "spend_2d", "n_2d", "avg_2d", "amt", "origin"]
    assert list(out.index) == [7, 3, 3, 9]
    pd.testing.assert_frame_equal(out[labels.columns], labels)
    assert _rows(out, ["user_id", "spend_2d", "amt"]) == [("u2", 80.0, 80.0), ("u1", 60.0, 40.0), ("u1", 60.0, 40.0), ("u2", 80.0, 80.0)]


def test_empty_null_and_categorical_entity_columns(defs, engine):  # contract P1
    empty = pd.DataFrame({"user_id": pd.Series([], dtype=object), "ts": pd.Series([], dtype="datetime64[ns]")})
    out = defs.get_training_data(["spend", "last_amt"], empty, timestamp="ts", engine=engine)
    assert len(out) == 0 and list(out.columns) == ["user_id", "ts", "spend_2d", "n_2d", "avg_2d", "amt", "origin"]
    nulls = pd.DataFrame({"user_id": [None, None], "ts": pd.to_datetime([None, "2024-01-03"])})
    out = defs.get_training_data(["spend", "last_amt"], nulls, timestamp="ts", engine=engine)
    assert _rows(out, ["spend_2d", "n_2d", "amt"]) == [(None, None, None), (0.0, 0, None)]  # null label: nothing known
    categorical = pd.DataFrame({"user_id": pd.Categorical(["u2", "u1"]), "ts": pd.to_datetime(["2024-01-04"] * 2)})
    out = defs.get_training_data(["spend"], categorical, timestamp="ts", engine=engine)
    assert _rows(out, ["spend_2d"]) == [(80.0,), (60.0,)]


@pytest.mark.parametrize("kind", ["polars", "arrow", "ibis"])
def test_result_is_the_same_kind_of_frame(defs, engine, kind):  # contract P1
    import ibis
    import polars as pl

    arrow = pa.table({"user_id": ["u1", "u9"], "ts": pa.array([_ts("2024-01-03 00:00"), _ts("2024-01-03 00:00")], pa.timestamp("us"))})
    frame = {"polars": pl.from_arrow(arrow), "arrow": arrow, "ibis": ibis.memtable(arrow)}[kind]
    out = defs.get_training_data(["spend"], frame, timestamp="ts", engine=engine)
    expected_type = {"polars": pl.DataFrame, "arrow": pa.Table, "ibis": ibis.expr.types.Table}[kind]
    assert isinstance(out, expected_type)
    table = out.to_pyarrow() if kind == "ibis" else out.to_arrow() if kind == "polars" else out
    assert table.column_names == ["user_id", "ts", "spend_2d", "n_2d", "avg_2d"]
    assert table.column("spend_2d").to_pylist() == [30.0, 0.0]
    assert table.column("n_2d").to_pylist() == [2, 0]


# -- P2 ------------------------------------------------------------------------------------
P2_CASES = [
    # (user, label time, spend_2d, n_2d, avg_2d, amt) -- latest version: amounts x10
    ("u1", "2024-01-01 09:00", 0.0, 0, None, None),  # before any event: no grid row, no event
    ("u1", "2024-01-01 23:59", 0.0, 0, None, 10.0),  # grid row 01-01 absent -> empty windows
    ("u1", "2024-01-02 00:00", 10.0, 1, 10.0, 20.0),  # exact grid hit; as-of tie counts
    ("u1", "2024-01-02 23:59", 10.0, 1, 10.0, 20.0),  # event at 01-02 00:00 is not in row 01-02
    ("u1", "2024-01-03 00:00", 30.0, 2, 15.0, 20.0),
    ("u1", "2024-01-05 12:00", 40.0, 1, 40.0, 40.0),
    ("u1", "2024-01-09 00:00", 0.0, 0, None, 40.0),  # after the last grid row
    ("u3", "2024-01-03 00:00", 0.0, 0, None, None),  # unknown entity
]


def test_labels_take_the_grid_row_at_or_before_them(defs, engine):  # contract P2
    labels = _labels([(u, t) for u, t, *_ in P2_CASES])
    out = defs.get_training_data(["spend", "last_amt"], labels, timestamp="ts", engine=engine)
    assert _rows(out, ["user_id", "spend_2d", "n_2d", "avg_2d", "amt"]) == [(u, *vals) for u, _, *vals in P2_CASES]


def test_zoned_labels_are_converted_to_utc(defs, engine):  # contract P2 (T1)
    labels = pd.DataFrame({"user_id": ["u1", "u1"], "ts": pd.to_datetime(["2024-01-02 00:59", "2024-01-02 01:00"]).tz_localize("Europe/Paris")})
    out = defs.get_training_data(["spend", "last_amt"], labels, timestamp="ts", engine=engine)
    # 01:00 Paris is 00:00 UTC: the grid row 01-02 and, as a tie, the event at 00:00.
    assert _rows(out, ["spend_2d", "amt"]) == [(0.0, 10.0), (10.0, 20.0)]


def test_without_a_timestamp_each_key_gets_its_latest_row(defs, engine):  # contract P2
    labels = pd.DataFrame({"user_id": ["u2", "u1", "u3"]})
    out = defs.get_training_data(["spend", "last_amt"], labels, engine=engine)
    # latest spend rows: u1 at 01-05 (the 01-03 event), u2 at 01-04 (the 01-02 event)
    assert _rows(out, ["user_id", "spend_2d", "amt", "origin"]) == [("u2", 80.0, 80.0, "JFK"), ("u1", 40.0, 40.0, "SFO"), ("u3", None, None, None)]


@pytest.mark.parametrize("kind", ["pandas", "polars", "lazy", "arrow", "ibis"])
def test_no_timestamp_with_one_datetime_column_warns_naming_it(defs, kind):  # contract P2
    import ibis
    import polars as pl

    arrow = pa.table({"user_id": ["u1"], "label_time": pa.array([_ts("2024-01-03 00:00")], pa.timestamp("us"))})
    frame = {"pandas": arrow.to_pandas(), "polars": pl.from_arrow(arrow), "lazy": pl.from_arrow(arrow).lazy(), "arrow": arrow, "ibis": ibis.memtable(arrow)}[kind]
    with pytest.warns(UserWarning, match=r"no timestamp=.*the datetime column 'label_time'; pass timestamp='label_time'") as caught:
        defs.get_training_data(["spend"], frame)
    assert caught[0].filename == __file__  # points at the caller's line
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        defs.get_training_data(["spend"], frame, timestamp="label_time")  # given: no warning
        two = arrow.append_column("seen_at", arrow.column("label_time"))
        defs.get_training_data(["spend"], two)  # two datetime columns: which one is meant is not ours to guess
        defs.get_training_data(["spend"], pa.table({"user_id": ["u1"]}))


# -- P3 ------------------------------------------------------------------------------------
def test_joins_use_declared_keys_only(defs, engine):  # contract P3
    # entity_df shares the column "origin" with last_amt; it must not take part in the join
    labels = _labels([("u1", "2024-01-04"), ("u2", "2024-01-04")]).assign(origin=["nowhere", "JFK"])
    out = defs.get_training_data([FeatureSpec("last_amt", columns=["amt"]), "spend"], labels, timestamp="ts", engine=engine)
    assert _rows(out, ["user_id", "origin", "amt", "spend_2d"]) == [("u1", "nowhere", 40.0, 60.0), ("u2", "JFK", 80.0, 80.0)]


def test_same_output_column_fails_unless_columns_are_selected(defs, engine):  # contract P3
    labels = _labels([("u1", "2024-01-04")])
    with pytest.raises(RetrievalError, match="both produce column 'spend_2d'"):
        defs.get_training_data(["spend", ("spend", "1.0.0")], labels, timestamp="ts", engine=engine)
    with pytest.raises(RetrievalError, match="entity_df already has"):
        defs.get_training_data(["last_amt"], labels.assign(amt=1.0), timestamp="ts", engine=engine)
    out = defs.get_training_data([FeatureSpec("spend", columns=["spend_2d"]), FeatureSpec("spend", columns=["n_2d"], version="1.0.0")], labels, timestamp="ts", engine=engine)
    assert _rows(out, ["spend_2d", "n_2d"]) == [(60.0, 2)]


# -- P4 ------------------------------------------------------------------------------------
def test_pinned_versions_read_exactly_that_version(defs, engine):  # contract P4
    labels = _labels([("u1", "2024-01-04"), ("u2", "2024-01-04")])
    latest = defs.get_training_data(["spend"], labels, timestamp="ts", engine=engine)
    pinned_tuple = defs.get_training_data([("spend", "1.0.0")], labels, timestamp="ts", engine=engine)
    pinned_spec = defs.get_training_data([FeatureSpec("spend", version="1.0.0")], labels, timestamp="ts", engine=engine)
    explicit_latest = defs.get_training_data([("spend", "1.0.1")], labels, timestamp="ts", engine=engine)
    assert _rows(latest, ["spend_2d"]) == [(60.0,), (80.0,)] == _rows(explicit_latest, ["spend_2d"])
    assert _rows(pinned_tuple, ["spend_2d"]) == [(6.0,), (8.0,)] == _rows(pinned_spec, ["spend_2d"])
    with pytest.raises(RetrievalError, match=r"no version 9\.9\.9"):
        defs.get_training_data([("spend", "9.9.9")], labels, timestamp="ts", engine=engine)


def test_integer_keys_of_other_widths_match(engine, tmp_path):  # contract P3
    store = mlf.LocalStore(tmp_path)
    _publish(store, "by_id", pa.table({"id": pa.array([1, 2**40], pa.int64()), "score": [0.5, 0.9]}), {"keys": ["id"], "timestamp": None, "interval": None, "metrics": []})
    project = mlf.Definitions("ints", [], offline_store=store, engine="duckdb")
    out = project.get_training_data(["by_id"], pa.table({"id": pa.array([1, 3, None], pa.int32())}), engine=engine)
    assert out.column("score").to_pylist() == [0.5, None, None]
    # unsigned keys too, though Spark has no unsigned types (its Arrow conversion refused them)
    for unsigned in (pa.uint8(), pa.uint16(), pa.uint32()):
        out = project.get_training_data(["by_id"], pa.table({"id": pa.array([1, 3, None], unsigned)}), engine=engine)
        assert out.column("score").to_pylist() == [0.5, None, None], unsigned
    out = project.get_training_data(["by_id"], pa.table({"id": pa.array([2**40, 2**63 - 1, 1], pa.uint64())}), engine=engine)
    assert out.column("score").to_pylist() == [0.9, None, 0.5]


# -- K2 ------------------------------------------------------------------------------------
def test_natural_columns_stand_in_for_the_surrogate_key(defs, engine):  # contract K2
    natural = pd.DataFrame({"origin": ["JFK", "SFO", "ORD"], "dest": ["LAX", "LAX", "LAX"], "ts": pd.to_datetime(["2024-01-03"] * 3)})
    keyed = natural.assign(route_id=[mlf.surrogate_key(o, d) for o, d in zip(natural.origin, natural.dest, strict=True)])
    by_natural = defs.get_training_data(["route_trips"], natural, timestamp="ts", engine=engine)
    by_key = defs.get_training_data(["route_trips"], keyed, timestamp="ts", engine=engine)
    assert list(by_natural.columns) == ["origin", "dest", "ts", "trips_2d"]
    assert _rows(by_natural, ["trips_2d"]) == _rows(by_key, ["trips_2d"]) == [(3,), (0,), (0,)]
    with pytest.raises(RetrievalError, match=r"lacks the key column 'route_id' \(or its natural columns \['origin', 'dest'\]\)"):
        defs.get_training_data(["route_trips"], natural.drop(columns="dest"), timestamp="ts", engine=engine)


def test_natural_columns_are_value_columns_when_read_by_the_join_key(tmp_path):  # contract K2, P3
    """A feature storing its entity's natural columns beside the join key: given all of them,
    entity_df names the entity by them and they are not added again; read by the join key
    alone they are values, and an entity_df holding some of them clashes, never silently
    standing in for the stored value."""
    source = tmp_path / "events.parquet"
    pq.write_table(_events(1.0), source)
    route = mlf.Entity("route", join_key="route_id", from_columns=["origin", "dest"])

    @mlf.feature(source=str(source), entities=[route], timestamp="ts")
    def last_route_trip(t):
        return t.select("route_id", "origin", "dest", "ts", "amt")

    defs = mlf.Definitions("natural", [last_route_trip], offline_store=mlf.LocalStore(tmp_path / "store"))
    defs.build()
    when = pd.to_datetime(["2024-01-04"])
    by_natural = defs.get_training_data(["last_route_trip"], pd.DataFrame({"origin": ["SFO"], "dest": ["LAX"], "ts": when}), timestamp="ts")
    assert list(by_natural.columns) == ["origin", "dest", "ts", "amt"]
    assert by_natural["amt"].tolist() == [4.0]
    key = mlf.surrogate_key("SFO", "LAX")
    by_key = defs.get_training_data(["last_route_trip"], pd.DataFrame({"route_id": [key], "ts": when}), timestamp="ts")
    assert by_key[["origin", "dest", "amt"]].values.tolist() == [["SFO", "LAX", 4.0]]
    with pytest.raises(RetrievalError, match="adds column 'origin', which entity_df already has"):
        defs.get_training_data(["last_route_trip"], pd.DataFrame({"route_id": [key], "origin": ["JFK"], "ts": when}), timestamp="ts")
    # the key beside all its natural columns (a label table kept whole): they are not added again
    whole = defs.get_training_data(["last_route_trip"], pd.DataFrame({"route_id": [key], "origin": ["SFO"], "dest": ["LAX"], "ts": when}), timestamp="ts")
    assert list(whole.columns) == ["route_id", "origin", "dest", "ts", "amt"]
    assert whole["amt"].tolist() == [4.0]


@pytest.mark.spark
def test_a_spark_entity_df_with_a_case_twin_or_the_row_column_is_a_retrieval_error(defs, spark_engine):  # contract E1, E5
    """A Spark entity_df goes into the query whole: a column differing only by case from a
    key or label column, or one named as mlforge's row number, is named, not a raw Spark or
    Ibis error."""
    from pyspark.sql import types as T

    schema = T.StructType([T.StructField("user_id", T.StringType()), T.StructField("ts", T.TimestampNTZType()), T.StructField("extra", T.LongType())])
    session = spark_engine.session
    rows = [("u1", datetime(2024, 1, 3), 7)]
    kept = defs.get_training_data(["spend"], session.createDataFrame(rows, schema), timestamp="ts", engine=spark_engine).toPandas()
    assert kept["extra"].tolist() == [7]
    for other, message in [("User_Id", "differs only by case from its column 'User_Id'"), ("TS", "differs only by case from its column 'TS'"),
                           ("__mlforge_row", "the name of the row number mlforge adds on Spark")]:
        frame = session.createDataFrame(rows, schema).withColumnRenamed("extra", other)
        with pytest.raises(RetrievalError, match=re.escape(message)):
            defs.get_training_data(["spend"], frame, timestamp="ts", engine=spark_engine)


# -- errors (E1) ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("features", "frame", "timestamp", "message"),
    [
        (["nope"], {"user_id": ["u1"], "ts": [JAN]}, "ts", "unknown feature 'nope'"),
        ([FeatureSpec("spend", columns=["spend_9d"])], {"user_id": ["u1"], "ts": [JAN]}, "ts", r"no value column\(s\) \['spend_9d'\]"),
        ([FeatureSpec("spend", columns=["user_id"])], {"user_id": ["u1"], "ts": [JAN]}, "ts", "key and timestamp columns are not feature values"),
        (["spend"], {"customer": ["u1"], "ts": [JAN]}, "ts", "lacks the key column 'user_id'"),
        (["spend"], {"user_id": ["u1"]}, "ts", "timestamp column 'ts' is not in entity_df"),
        (["spend"], {"user_id": ["u1"], "ts": ["2024-01-01"]}, "ts", "has type string, not a timestamp"),
        (["spend"], {"user_id": [1], "ts": [JAN]}, "ts", "key column 'user_id' is int64 in entity_df but string"),
        ([], {"user_id": ["u1"], "ts": [JAN]}, "ts", "no features requested"),
        # label-time columns no engine carries alike (E5): raw engine errors, or mlforge's own row number taking their place
        (["spend"], {"user_id": ["u1"], "__mlforge_row": [JAN]}, "__mlforge_row", "starts with '__mlforge'"),
        (["spend"], {"user_id": ["u1"], "*": [JAN]}, "*", "what Polars reads as a pattern"),
        (["spend"], {"user_id": ["u1"], "a\x00b": [JAN]}, "a\x00b", "NUL"),
    ],
)
def test_bad_requests_fail_with_retrieval_errors(defs, features, frame, timestamp, message):
    with pytest.raises(RetrievalError, match=message) as info:
        defs.get_training_data(features, pd.DataFrame(frame), timestamp=timestamp)
    assert isinstance(info.value, MlforgeError) and info.value.fix


def test_a_label_time_column_named_self_is_read(defs):  # contract P1, E5
    # mlforge's name checks for columns it carries through Ibis methods do not reach
    # entity_df's label column, which goes into the engine as a column of its own
    labels = _labels([("u1", "2024-01-04")]).rename(columns={"ts": "self"})
    out = defs.get_training_data(["spend"], labels, timestamp="self")
    assert list(out.columns)[:2] == ["user_id", "self"] and _rows(out, ["spend_2d"]) == [(60.0,)]


def test_module_function_takes_definitions_or_a_store(defs):
    labels = _labels([("u1", "2024-01-04")])
    via_defs = mlf.get_training_data(["spend"], labels, timestamp="ts", definitions=defs)
    via_store = mlf.get_training_data(["spend"], labels, timestamp="ts", store=defs.offline_store)
    assert _rows(via_defs, ["spend_2d"]) == _rows(via_store, ["spend_2d"]) == [(60.0,)]
    with pytest.raises(RetrievalError, match="needs definitions="):
        mlf.get_training_data(["spend"], labels)


@pytest.mark.spark
def test_spark_dataframes_stay_in_spark(defs, spark_engine):  # contract P1
    labels = _labels([(u, t) for u, t, *_ in P2_CASES])
    frame = spark_engine.session.createDataFrame(labels)
    out = defs.get_training_data(["spend", "last_amt"], frame, timestamp="ts", engine=spark_engine)
    assert type(out).__name__ == "DataFrame" and "pyspark" in type(out).__module__
    got = out.toPandas()
    assert _rows(got, ["user_id", "spend_2d", "n_2d", "avg_2d", "amt"]) == [(u, *vals) for u, _, *vals in P2_CASES]
    with pytest.warns(UserWarning, match="the datetime column 'ts'"):
        defs.get_training_data(["spend"], frame, engine=spark_engine)


# -- online lookups ------------------------------------------------------------------------
class DictOnlineStore:
    """The online store protocol, in a dict: ``read(feature, keys) -> [row | None]``."""

    from mlforge.online.base import OnlineCapabilities

    capabilities = OnlineCapabilities()

    def __init__(self, rows: dict[str, dict[tuple, dict]]):
        self.rows = rows
        self.calls: list[tuple[str, list[dict]]] = []

    def read(self, feature: str, keys: list[dict]) -> list[dict | None]:
        self.calls.append((feature, keys))
        return [self.rows.get(feature, {}).get(tuple(k.values())) for k in keys]


def test_online_features_with_join_or_natural_keys(defs):  # contract K2 (O2)
    route = mlf.surrogate_key("JFK", "LAX")
    online = DictOnlineStore({
        "spend": {("u1",): {"user_id": "u1", "ts": JAN, "spend_2d": 40.0, "n_2d": 1, "avg_2d": 40.0}},
        "route_trips": {(route,): {"route_id": route, "trips_2d": 3}},
    })
    serving = mlf.Definitions("online", [], offline_store=defs.offline_store, online_store=online, engine="duckdb")
    entity = pd.DataFrame({"user_id": ["u1", "u9", None], "origin": ["JFK", "JFK", "SFO"], "dest": ["LAX", "LAX", "LAX"]})
    out = serving.get_online_features(["spend", "route_trips"], entity)
    assert list(out.columns) == ["user_id", "origin", "dest", "spend_2d", "n_2d", "avg_2d", "trips_2d"]
    # contract O2: an unknown entity (or a null key) reads what training gives an entity
    # without rows: the W4 empty-window values (sum and count 0), not nulls
    assert _rows(out, ["spend_2d", "n_2d", "trips_2d"]) == [(40.0, 1, 3), (0.0, 0, 3), (0.0, 0, 0)]
    assert online.calls[0] == ("spend", [{"user_id": "u1"}, {"user_id": "u9"}])  # null keys are not looked up


def test_online_features_from_the_memory_store(defs):  # contract K2 (O1, O2)
    from mlforge.online.memory import MemoryStore

    online = MemoryStore()
    online.write("last_amt", ["user_id"], [pa.table({"user_id": ["u1"], "ts": _utc([JAN]), "amt": [4.0], "origin": ["SFO"]})])
    serving = mlf.Definitions("online", [], offline_store=defs.offline_store, online_store=online, engine="duckdb")
    out = mlf.get_online_features(["last_amt"], pa.table({"user_id": ["u9", "u1"]}), definitions=serving)
    assert out.to_pydict() == {"user_id": ["u9", "u1"], "amt": [None, 4.0], "origin": [None, "SFO"]}


# -- parity: every engine against a pure-Python oracle ---------------------------------------
def _oracle(labels: list[tuple], grid_rows: dict, events: dict, interval: int) -> list[tuple]:
    """P2 in a few lines: floor to the grid for metrics, newest ts <= L otherwise."""
    out = []
    for key, label in labels:
        if label is None:
            out.append((None, None, None, None))
            continue
        grid = JAN + timedelta(seconds=((label - JAN).total_seconds() // interval) * interval)
        count, total, mean = grid_rows.get((key, grid), (0, 0.0, None))
        known = [ts for (k, ts) in events if k == key and ts <= label]
        out.append((count, total, mean, events[(key, max(known))] if known else None))
    return out


def _parity_case():
    from hypothesis import strategies as st

    interval = st.sampled_from([3600, 86400])
    keys = st.sampled_from(["a", "b", "c"])
    quarter = st.integers(min_value=-4, max_value=40)  # quarter-intervals from JAN: exact grid hits are common

    @st.composite
    def case(draw):
        step = draw(interval)
        at = lambda q: JAN + timedelta(seconds=q * step // 4)  # noqa: E731
        grid = draw(st.dictionaries(st.tuples(keys, st.integers(0, 10)), st.tuples(st.integers(1, 5), st.floats(-1e6, 1e6, allow_nan=False), st.one_of(st.none(), st.floats(-1e3, 1e3, allow_nan=False))), max_size=12))
        grid_rows = {(k, JAN + timedelta(seconds=g * step)): v for (k, g), v in grid.items()}
        events = {(k, at(q)): v for (k, q), v in draw(st.dictionaries(st.tuples(keys, quarter), st.integers(-100, 100), max_size=12)).items()}
        label = st.tuples(st.sampled_from(["a", "b", "c", "unknown"]), st.one_of(quarter.map(at), st.none()))
        labels = draw(st.lists(label, min_size=1, max_size=15))
        labels = labels + labels[: draw(st.integers(0, 3))]  # duplicate label rows
        return step, grid_rows, events, labels

    return case()


@pytest.mark.parity
def test_every_engine_matches_the_oracle(engine, tmp_path_factory):  # contract P2
    from hypothesis import given, settings

    # The fast run keeps a dozen examples per engine; `nox -s parity` uses its profile.
    fast = os.environ.get("HYPOTHESIS_PROFILE", "default") == "default"

    @settings(max_examples=12 if fast else settings().max_examples)
    @given(_parity_case())
    def check(case):
        step, grid_rows, events, labels = case
        root = tmp_path_factory.mktemp("parity")
        store = mlf.LocalStore(root)
        metrics = [{"name": n, "field": "v", "function": f, "window": "2h", "description": None, "unit": None} for n, f in (("n", "count"), ("total", "sum"), ("avg", "mean"))]
        grid_table = pa.table({
            "k": pa.array([k for k, _ in grid_rows], pa.string()), "t": _utc([g for _, g in grid_rows]),
            "n": pa.array([v[0] for v in grid_rows.values()], pa.int64()), "total": pa.array([v[1] for v in grid_rows.values()], pa.float64()),
            "avg": pa.array([v[2] for v in grid_rows.values()], pa.float64()),
        })
        _publish(store, "grid", grid_table, {"keys": ["k"], "timestamp": "t", "interval": f"{step}s", "metrics": metrics})
        event_table = pa.table({
            "k": pa.array([k for k, _ in events], pa.string()), "ets": _utc([t for _, t in events]),
            "val": pa.array(list(events.values()), pa.int64()),
        })
        _publish(store, "ev", event_table, {"keys": ["k"], "timestamp": "ets", "interval": None, "metrics": []})
        project = mlf.Definitions("parity", [], offline_store=store, engine=engine)
        entity = pa.table({"k": pa.array([k for k, _ in labels], pa.string()), "L": pa.array([t for _, t in labels], pa.timestamp("us"))})
        out = project.get_training_data(["grid", "ev"], entity, timestamp="L")
        got = list(zip(*(out.column(c).to_pylist() for c in ("n", "total", "avg", "val")), strict=True))
        assert out.column("k").to_pylist() == entity.column("k").to_pylist()
        assert got == _oracle(labels, grid_rows, events, step)

    check()


def test_spec_accepts_tuples_and_features():
    assert FeatureSpec.of(("f", "1.2.0")) == FeatureSpec("f", version="1.2.0")
    assert FeatureSpec.of("f") == FeatureSpec("f")
    assert FeatureSpec("f", columns="a").columns == ("a",)
    with pytest.raises(RetrievalError):
        FeatureSpec.of(42)


def test_end_to_end_with_a_real_build(tmp_path):  # contract P2, through Definitions.build
    source = tmp_path / "events.parquet"
    pq.write_table(_events(10.0), source)
    project = _definitions(str(source), tmp_path / "store")
    result = project.build()
    assert result.ok, [str(f.error) for f in result.failed]
    labels = _labels([(u, t) for u, t, *_ in P2_CASES])
    out = project.get_training_data(["spend", "last_amt"], labels, timestamp="ts")
    assert _rows(out, ["user_id", "spend_2d", "n_2d", "avg_2d", "amt"]) == [(u, *vals) for u, _, *vals in P2_CASES]


def test_feast_style_inputs_say_the_mlforge_spelling(defs):  # contract E1
    """A "view:feature" reference and entity rows as dicts, as Feast users write them."""
    labels = _labels([("u1", "2024-01-03")])
    with pytest.raises(RetrievalError, match="the way Feast does") as caught:
        defs.get_training_data(["user_spend:spend_2d"], labels, timestamp="ts")
    assert "FeatureSpec('user_spend', columns=['spend_2d'])" in caught.value.fix
    with pytest.raises(RetrievalError, match="entity_df is a list") as rows:
        defs.get_training_data(["user_spend"], [{"user_id": "u1", "ts": datetime(2024, 1, 3)}], timestamp="ts")
    assert "pyarrow.Table.from_pylist(rows)" in rows.value.fix
