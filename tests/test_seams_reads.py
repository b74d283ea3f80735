"""Seams of reads a second black-box review found (2026-12-07): values pandas rounded,
engines that disagreed on NaN, zones and names Polars or Ibis could not take, raw errors for
odd entity frames, and REST keys, read times, limits and tokens the server misread.

Each test names its rule; each fails on the code before its fix."""

from __future__ import annotations

import socket
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import mlforge as mlf
from mlforge.errors import ConfigError, DefinitionError, RetrievalError
from mlforge.online.memory import MemoryStore
from test_serve import Live

BIG = 2**53 + 1  # the first integer float64 rounds


def _defs(tmp_path: Path, features, engine="duckdb", **extra) -> mlf.Definitions:
    return mlf.Definitions("seams", features, offline_store=mlf.LocalStore(str(tmp_path / f"store-{engine}")), engine=engine, **extra)


@pytest.mark.parametrize("engine", ["duckdb", "polars"])
def test_pandas_results_keep_integers_past_2_53_exact_when_some_rows_are_unknown(tmp_path, engine):  # contract W5, P1
    pd.DataFrame({"k": ["a"], "ts": pd.to_datetime(["2024-01-01 01:00"]), "x": [BIG]}).to_parquet(tmp_path / "e.parquet", index=False)

    @mlf.feature(source=str(tmp_path / "e.parquet"), keys=["k"], timestamp="ts", interval="1d", metrics=[mlf.Max("x", windows=["1d"], name="mx")])
    def f(t):
        return t

    defs = _defs(tmp_path, [f], engine)
    defs.build()
    out = defs.get_training_data(["f"], pd.DataFrame({"k": ["a", "unknown"], "L": pd.to_datetime(["2024-01-02", "2024-01-02"])}), timestamp="L")
    assert int(out["mx_1d"].iloc[0]) == BIG  # float64 made it 2**53
    assert pd.isna(out["mx_1d"].iloc[1])


@pytest.mark.parametrize("function", ["max", "min", "sum", "mean", "std", "median", "count"])
def test_a_nan_in_a_field_is_a_missing_value_on_every_engine(tmp_path, function):  # contract W5, W8
    pq.write_table(pa.table({"k": ["a"] * 4, "ts": pa.array([datetime(2024, 1, 1, h) for h in range(4)], pa.timestamp("us")), "x": [1.0, float("nan"), 2.0, 3.0]}), tmp_path / "e.parquet")
    expected = {"max": 3.0, "min": 1.0, "sum": 6.0, "mean": 2.0, "std": 1.0, "median": 2.0, "count": 3}[function]
    for engine in ("duckdb", "polars"):

        @mlf.feature(source=str(tmp_path / "e.parquet"), keys=["k"], timestamp="ts", interval="1d", metrics=[mlf.Aggregate("x", function, windows=["1d"], name="m")])
        def f(t):
            return t

        defs = _defs(tmp_path, [f], engine)
        defs.build()  # DuckDB's std of a NaN failed: "STDDEV_SAMP is out of range"
        assert defs.read_feature("f").to_pyarrow().column("m_1d").to_pylist() == [expected], engine


@pytest.mark.parametrize("engine", ["duckdb", "polars"])
def test_fixed_offset_zones_in_sources_and_labels_read_as_their_instants(tmp_path, engine):  # contract T1, W8
    # 05:29 and 05:30 at +05:30 are 23:59 on Dec 31 and midnight on Jan 1 in UTC
    stamps = pd.to_datetime(["2024-01-01T05:29:00+05:30", "2024-01-01T05:30:00+05:30"])
    pq.write_table(pa.table({"k": ["a", "a"], "ts": pa.array(stamps), "x": [1.0, 2.0]}), tmp_path / "e.parquet")

    @mlf.feature(source=str(tmp_path / "e.parquet"), keys=["k"], timestamp="ts", interval="1d", metrics=[mlf.Sum("x", windows=["1d"], name="s")])
    def f(t):
        return t

    defs = _defs(tmp_path, [f], engine)
    defs.build()  # Polars' scan panicked on the zone "+05:30"
    labels = pd.DataFrame({"k": ["a", "a"], "L": pd.to_datetime(["2024-01-01T05:30:00+05:30", "2024-01-02T05:30:00+05:30"])})
    out = defs.get_training_data(["f"], labels, timestamp="L")  # Polars raised a raw ComputeError
    assert out["s_1d"].tolist() == [1.0, 2.0]


def test_a_column_named_self_is_refused_before_compute(tmp_path):  # contract E5
    pd.DataFrame({"k": ["a"], "ts": pd.to_datetime(["2024-01-01"]), "v": [1.0]}).to_parquet(tmp_path / "e.parquet", index=False)

    @mlf.feature(source=str(tmp_path / "e.parquet"), keys=["k"], timestamp="ts")
    def g(t):
        return t.select("k", "ts", self=t.v)

    with pytest.raises(mlf.errors.BuildError, match="'self'"):
        _defs(tmp_path, [g]).build()  # it built, and then no retrieval could read it
    with pytest.raises(DefinitionError, match="'self'"):

        @mlf.feature(source=str(tmp_path / "e.parquet"), keys=["k"], timestamp="ts", interval="1d", metrics=[mlf.Sum("self", windows=["1d"])])
        def h(t):
            return t


@pytest.fixture
def plain(tmp_path):
    pd.DataFrame({"uid": [1], "ts": pd.to_datetime(["2024-01-01"]), "v": [1.0]}).to_parquet(tmp_path / "e.parquet", index=False)

    @mlf.feature(source=str(tmp_path / "e.parquet"), keys=["uid"], timestamp="ts")
    def g(t):
        return t

    defs = _defs(tmp_path, [g])
    defs.build()
    return defs


@pytest.mark.parametrize(
    ("entity_df", "timestamp", "message"),
    [
        (pd.DataFrame({"uid": [1], "UID": pd.to_datetime(["2024-01-02"])}), "UID", "differ only by case"),  # DuckDB: CatalogException
        (pd.DataFrame([[1, pd.Timestamp("2024-01-02"), 1]], columns=["uid", "L", "uid"]), "L", "more than once"),  # pandas: ValueError
        (pd.Series([1], name="uid"), None, "is a Series"),  # AttributeError
    ],
)
def test_odd_entity_frames_are_retrieval_errors(plain, entity_df, timestamp, message):  # contract E1
    with pytest.raises(RetrievalError, match=message):
        plain.get_training_data(["g"], entity_df, timestamp=timestamp)


# -- REST (O3, K2) ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from mlforge.serve import create_app

    folder = tmp_path_factory.mktemp("served")
    pd.DataFrame({"user_id": [3], "ts": pd.to_datetime(["2024-01-01 05:00"]), "x": [2.5]}).to_parquet(folder / "e.parquet", index=False)

    @mlf.feature(source=str(folder / "e.parquet"), keys=["user_id"], timestamp="ts", interval="1d", metrics=[mlf.Sum("x", windows=["3d"], name="s")])
    def spend(t):
        return t

    defs = mlf.Definitions("served", [spend], offline_store=mlf.LocalStore(str(folder / "store")), online_store=MemoryStore())
    assert defs.build(online=True).ok
    with Live(create_app(defs, token="s3crét")) as http:
        yield http


AUTH = {"Authorization": "Bearer s3crét".encode()}  # the token's UTF-8 bytes, as a client sends them


def test_a_utf8_token_is_accepted(served):  # contract O3
    assert served.get("/features", headers=AUTH).status_code == 200  # was 401 for every client
    assert served.get("/features", headers={"Authorization": "Bearer s3cret"}).status_code == 401


@pytest.mark.parametrize("key", [3, "3", 3.0])
def test_a_json_number_names_the_same_entity_with_or_without_a_fraction_part(served, key):  # contract K2, O3
    body = {"features": ["spend"], "entity": {"user_id": key}, "at": "2024-01-02T00:00:00Z"}
    answer = served.post("/features/online", json=body, headers=AUTH)
    assert answer.status_code == 200
    assert answer.json()["features"]["spend"]["s_3d"] == 2.5 and answer.json()["metadata"]["spend"]["known"] is True


def test_a_float_key_without_a_fraction_is_found_over_rest(tmp_path):  # contract K2, O1, O3
    # JSON has one kind of number, so REST reads 3.0 as 3: a float key 3.0 was stored as
    # "3.0" and every REST lookup of it answered an unknown entity.
    from mlforge.serve import create_app

    pd.DataFrame({"fk": [3.0, 1.5, -0.0], "ts": pd.to_datetime(["2024-01-01"] * 3), "v": [7, 8, 9]}).to_parquet(tmp_path / "s.parquet", index=False)

    @mlf.feature(source=str(tmp_path / "s.parquet"), keys=["fk"], timestamp="ts")
    def by_float(t):
        return t

    defs = mlf.Definitions("floatkey", [by_float], offline_store=mlf.LocalStore(str(tmp_path / "store")), online_store=MemoryStore())
    assert defs.build(online=True).ok
    at = datetime(2024, 1, 2, tzinfo=UTC)
    python = defs.get_online_features(["by_float"], pd.DataFrame({"fk": [3.0, 1.5, 0.0]}), at=at)
    assert python["v"].tolist() == [7, 8, 9]
    with Live(create_app(defs)) as http:
        for key, value in [(3.0, 7), (3, 7), (1.5, 8), (0, 9), (0.0, 9)]:
            answer = http.post("/features/online", json={"features": ["by_float"], "entity": {"fk": key}, "at": at.isoformat()}).json()
            assert answer["metadata"]["by_float"]["known"] is True, key
            assert answer["features"]["by_float"]["v"] == value


def test_a_boolean_key_is_refused(served):  # contract O3
    body = {"features": ["spend"], "entity": {"user_id": True}, "at": "2024-01-02T00:00:00Z"}
    assert served.post("/features/online", json=body, headers=AUTH).status_code == 422  # read as an unknown entity


@pytest.mark.parametrize("at", ["9999-12-31T23:59:59-05:00", "0001-01-01T00:00:00+05:00", "9999-12-31T23:59:59.999999Z"])
def test_read_times_at_the_ends_of_the_calendar_are_422_never_500_or_503(served, at):  # contract O3, E1
    body = {"features": ["spend"], "entity": {"user_id": 3}, "at": at}
    answer = served.post("/features/online", json=body, headers=AUTH)
    assert answer.status_code == 422, answer.text
    assert "out of range" in answer.json()["detail"]


@pytest.mark.parametrize("value", ["abc", "0", "-1"])
def test_serving_limits_from_the_environment_are_checked_like_the_flags(plain, monkeypatch, value):  # contract E2
    from mlforge.serve import MAX_BATCH_ENV, create_app

    monkeypatch.setenv(MAX_BATCH_ENV, value)
    with pytest.raises(ConfigError, match="max_batch"):
        create_app(mlf.Definitions("p", [], offline_store=mlf.LocalStore("unused"), online_store=MemoryStore()))


def test_serving_on_a_port_in_use_is_a_config_error(plain):  # contract E2
    from mlforge.serve import run

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match="cannot listen"):
            run(mlf.Definitions("p", [], offline_store=mlf.LocalStore("unused"), online_store=MemoryStore()), port=port)


def test_get_online_features_refuses_a_read_time_out_of_range(plain):  # contract E1
    defs = mlf.Definitions("p", list(plain.features.values()), offline_store=plain.offline_store, online_store=MemoryStore())
    with pytest.raises(RetrievalError, match="out of range"):  # was a raw OverflowError
        defs.get_online_features(["g"], pd.DataFrame({"uid": [1]}), at=datetime(9999, 12, 31, 23, 59, tzinfo=UTC))


def test_an_unpublished_float_sum_reads_as_a_float_zero_over_rest(tmp_path):  # contract O2, W4
    from mlforge.serve import create_app

    pd.DataFrame({"user_id": [3], "ts": pd.to_datetime(["2024-01-01 05:00"]), "x": [2.5]}).to_parquet(tmp_path / "e.parquet", index=False)

    @mlf.feature(source=str(tmp_path / "e.parquet"), keys=["user_id"], timestamp="ts", interval="1d", metrics=[mlf.Sum("x", windows=["3d"], name="s")])
    def spend(t):
        return t

    defs = mlf.Definitions("unpublished", [spend], offline_store=mlf.LocalStore(str(tmp_path / "store")), online_store=MemoryStore())
    defs.build()  # offline only: the online store holds no publication record
    with Live(create_app(defs)) as http:
        answer = http.post("/features/online", json={"features": ["spend"], "entity": {"user_id": 3}})
    value = answer.json()["features"]["spend"]["s_3d"]
    assert value == 0 and isinstance(value, float)  # was the integer 0


def test_a_body_with_a_number_past_python_digits_is_422(served):  # contract O3
    body = '{"features": ["spend"], "entity": {"user_id": ' + "9" * 5000 + "}}"
    answer = served.post("/features/online", content=body, headers={**AUTH, "Content-Type": "application/json"})
    assert answer.status_code == 422  # was a 400 the docs do not list
    assert "4300 digits" in answer.json()["fix"]


def test_a_body_that_is_not_utf8_is_422_saying_so(served):  # contract O3, E1
    body = '{"features": ["spend"], "entity": {"user_id": "caf\xe9"}}'.encode("latin-1")
    answer = served.post("/features/online", content=body, headers={**AUTH, "Content-Type": "application/json"})
    assert answer.status_code == 422 and "UTF-8" in answer.json()["fix"]  # the fix spoke of digits alone


@pytest.mark.parametrize("engine", ["duckdb", "polars"])
def test_a_nanosecond_label_before_1970_never_sees_a_later_event(tmp_path, engine):  # contract P2
    frame = pd.DataFrame({"k": ["a", "a"], "ts": pd.to_datetime(["1969-12-31 23:59:59.5", "1970-01-01 00:00:00"], format="ISO8601"), "x": [1.0, 2.0]})
    frame.to_parquet(tmp_path / "e.parquet", index=False)

    @mlf.feature(source=str(tmp_path / "e.parquet"), keys=["k"], timestamp="ts")
    def g(t):
        return t.select("k", "ts", y=t.x)

    defs = _defs(tmp_path, [g], engine)
    defs.build()
    label = pd.Series(pd.to_datetime(["1970-01-01"])).astype("datetime64[ns]") - pd.Timedelta(nanoseconds=100)
    out = defs.get_training_data(["g"], pd.DataFrame({"k": ["a"], "L": label}), timestamp="L")
    assert out["y"].tolist() == [1.0]  # DuckDB rounded the label up to the epoch and read 2.0


def test_a_null_label_reads_nothing_beside_a_metric_feature(tmp_path):  # contract P2
    import numpy as np

    rng = np.random.default_rng(33)
    start = pd.Timestamp("1969-12-29", tz="UTC")
    events = [start + pd.Timedelta(days=d) + pd.Timedelta(microseconds=u) for d in range(6) for u in (-1, 0, 1, 7 * 3_600_000_000 + 3)]
    events += [start + pd.Timedelta(hours=int(h), seconds=int(s)) for h, s in zip(rng.integers(0, 140, 60), rng.integers(0, 3600, 60), strict=True)]
    n = len(events)
    pq.write_table(pa.table({
        "uid": pa.array([None if i % 13 == 5 else int(v) for i, v in enumerate(rng.integers(1, 4, n))], pa.int64()),
        "shop": pa.array([None if i % 17 == 3 else ["s1", "s2"][i % 2] for i in range(n)], pa.string()),
        "ts": pa.array([e.to_pydatetime() for e in events], pa.timestamp("us", tz="UTC")),
        "v": pa.array(rng.normal(0, 1, n).round(3), pa.float64()),
    }), tmp_path / "e.parquet")
    source = mlf.Source(str(tmp_path / "e.parquet"), timestamp="ts")

    @mlf.feature(source=source, keys=["uid", "shop"], timestamp="ts", interval="1d", metrics=[mlf.Sum("v", windows=["1d"])])
    def daily(t):
        return t

    @mlf.feature(source=source, keys=["uid", "shop"], timestamp="ts", ttl="1d")
    def last_v(t):
        return t.select("uid", "shop", "ts", "v")

    defs = _defs(tmp_path, [daily, last_v])
    defs.build()
    labels = pd.DataFrame({"uid": pd.array([2], dtype="Int64"), "shop": ["s2"], "lt": pd.to_datetime([pd.NaT], utc=True)})
    out = defs.get_training_data(["daily", "last_v"], labels, timestamp="lt")
    assert out["v"].isna().all()  # DuckDB's ASOF gave the newest row of the key


def test_a_failed_online_publish_leaves_what_online_reads_answer(tmp_path):  # contract E3, O1
    from mlforge.publishing import read_publication

    frame = pd.DataFrame({"k": ["a", "b"], "ts": pd.to_datetime(["2024-01-01", "2024-01-02"]), "x": [1.0, 2.0], "$t": ["p", "q"]})
    frame.to_parquet(tmp_path / "e.parquet", index=False)
    store = MemoryStore()
    entities = pd.DataFrame({"k": ["a", "b"]})

    def defs_with(columns):
        @mlf.feature(source=str(tmp_path / "e.parquet"), keys=["k"], timestamp="ts")
        def g(t):
            return t.select("k", "ts", *columns)

        return _defs(tmp_path, [g], online_store=store)

    defs_with(["x"]).build(online=True)
    before = read_publication(store, "g")
    answer = defs_with(["x"]).get_online_features(["g"], entities)["x"].tolist()

    frame.assign(x=[3.0, 4.0]).to_parquet(tmp_path / "e.parquet", index=False)  # new data: 1.0.1, offline only
    assert defs_with(["x"]).build()["g"].version == "1.0.1"
    (victim,) = (tmp_path / "store-duckdb" / "g" / "1.0.1" / "data").glob("*.parquet")
    victim.write_bytes(victim.read_bytes()[:-100])  # damaged: its publish fails (S7)
    assert defs_with(["x"]).build(online=True, raise_on_error=False)["g"].status == "failed"
    assert read_publication(store, "g") == before  # was 1.0.1's record, its later watermark refusing reads

    versions = defs_with(["x"]).offline_store.list_versions("g")
    failed = defs_with(["x", "$t"]).build(online=True, raise_on_error=False)["g"]  # '$t' cannot be stored online
    assert failed.status == "failed" and "'$t'" in str(failed.error) and "rename the column" in failed.error.fix
    assert defs_with(["x"]).offline_store.list_versions("g") == versions  # E3: refused before the offline write too
    assert read_publication(store, "g") == before
    assert defs_with(["x"]).get_online_features(["g"], entities)["x"].tolist() == answer
    assert defs_with(["x", "$t"]).build(raise_on_error=False)["g"].status == "built"  # offline alone may hold it


class _FlakyStore(MemoryStore):
    """Writes entities one request at a time, as DynamoDB's batches and Redis' pipelines may
    land, and fails after ``limit`` of them."""

    limit: int | None = None

    def write(self, feature, key_columns, batches):
        from mlforge.online.base import keyed_rows
        from mlforge.online.publication import PUBLICATIONS

        if feature == PUBLICATIONS or self.limit is None:
            return super().write(feature, key_columns, batches)
        done = 0
        for _, row in keyed_rows(key_columns, batches):
            if done >= self.limit:
                raise ConnectionError("the store went away mid-batch")
            super().write(feature, key_columns, [row])
            done += 1
        return done


def test_entities_a_failed_publish_wrote_are_removed_by_the_next_one(tmp_path):  # contract E3, O1
    store = _FlakyStore()

    @mlf.feature(source=str(tmp_path / "e.parquet"), keys=["k"], timestamp="ts")
    def f(t):
        return t

    def write(rows):
        pd.DataFrame({"k": [k for k, _ in rows], "ts": pd.Timestamp("2024-01-01"), "v": [v for _, v in rows]}).to_parquet(tmp_path / "e.parquet", index=False)

    defs = _defs(tmp_path, [f], online_store=store)
    entities = pd.DataFrame({"k": ["a", "b", "c", "d"]})
    write([("a", 1.0), ("b", 2.0)])
    defs.build(online=True)
    write([("c", 30.0), ("d", 40.0)])
    store.limit = 1  # the publish stores one new entity, then fails
    assert defs.build(online=True, raise_on_error=False)["f"].status == "failed"
    store.limit = None
    write([("b", 5.0)])
    defs.build(online=True)
    online = defs.get_online_features(["f"], entities)["v"].tolist()
    training = defs.get_training_data(["f"], entities)["v"].tolist()
    assert online[1] == training[1] == 5.0
    assert [pd.isna(v) for i, v in enumerate(online) if i != 1] == [True] * 3  # c or d was served forever


@pytest.mark.parametrize("engine", ["duckdb", "polars"])
def test_a_value_column_differing_from_the_label_only_by_case_is_named(tmp_path, engine):  # contract E5, E1
    pd.DataFrame({"k": ["a"], "ts": pd.to_datetime(["2024-03-01 10:00"]), "l": [1.5]}).to_parquet(tmp_path / "e.parquet", index=False)

    @mlf.feature(source=str(tmp_path / "e.parquet"), keys=["k"], timestamp="ts")
    def f(t):
        return t

    defs = _defs(tmp_path, [f], engine)
    defs.build()
    with pytest.raises(RetrievalError, match=r"'l'.*only by case.*'L'"):  # was DuckDB's raw BinderException
        defs.get_training_data(["f"], pd.DataFrame({"k": ["a"], "L": pd.to_datetime(["2024-03-02"])}), timestamp="L")
    assert defs.get_training_data(["f"], pd.DataFrame({"k": ["a"], "when": pd.to_datetime(["2024-03-02"])}), timestamp="when")["l"].tolist() == [1.5]


def test_online_reads_give_the_stored_types(tmp_path):  # contract O1, O2, E1
    # Online values were cast to the record's canonical types: int32/uint8 came back int64,
    # float32 as double, binary as text, and a map column raised a raw Arrow error.
    from decimal import Decimal

    # A struct field Ibis's type parser cannot read back ('first name') is left out of 'types'.
    types = {"i8": pa.int8(), "i32": pa.int32(), "u8": pa.uint8(), "f32": pa.float32(), "raw": pa.binary(), "attrs": pa.map_(pa.string(), pa.int64()), "price": pa.decimal128(19, 2), "who": pa.struct([("first name", pa.string())])}
    values = {"i8": [-3, 4], "i32": [7, None], "u8": [255, 0], "f32": [1.5, -2.25], "raw": [b"\x00\x01", b"ab"], "attrs": [[("x", 1)], None], "price": [Decimal("1.10"), Decimal("-3.00")], "who": [{"first name": "Ada"}, {"first name": "Bob"}]}
    table = pa.table({"k": [1, 2], "ts": [datetime(2024, 1, 1, 5), datetime(2024, 1, 1, 6)], **{c: pa.array(values[c], types[c]) for c in types}})
    pq.write_table(table, tmp_path / "typed.parquet")

    @mlf.feature(source=str(tmp_path / "typed.parquet"), keys=["k"], timestamp="ts")
    def typed(t):
        return t

    defs = _defs(tmp_path, [typed], online_store=MemoryStore())
    assert defs.build(online=True).ok
    labels = pa.table({"k": [1, 2], "at": [datetime(2024, 1, 2)] * 2})
    training = defs.get_training_data(["typed"], labels, timestamp="at")
    online = defs.get_online_features(["typed"], labels.select(["k"]), at=datetime(2024, 1, 2, tzinfo=UTC))
    for column, arrow_type in types.items():
        assert online.schema.field(column).type == arrow_type == training.schema.field(column).type, column
        assert online.column(column).to_pylist() == training.column(column).to_pylist() == values[column], column



def test_a_column_the_published_version_lacks_is_named_not_read_as_null(tmp_path):  # contract O1, W4, E1
    # 1.1.0 adds a count and is built offline only: online read it as null (a count is never
    # null) while training gave 1; now the read says which version is served and how to publish.
    pd.DataFrame({"k": [1, 2], "ts": pd.to_datetime(["2024-01-01 05:00", "2024-01-01 06:00"]), "v": [1, 2]}).to_parquet(tmp_path / "e.parquet", index=False)
    store = MemoryStore()

    def project(metrics):
        @mlf.feature(source=str(tmp_path / "e.parquet"), keys=["k"], timestamp="ts", interval="1d", metrics=metrics)
        def spend(t):
            return t

        return _defs(tmp_path, [spend], online_store=store)

    assert project([mlf.Sum("v", windows=["2d"], name="s")]).build(online=True).ok
    defs = project([mlf.Sum("v", windows=["2d"], name="s"), mlf.Count("v", windows=["2d"], name="n")])
    assert defs.build()["spend"].version == "1.1.0"
    at, entities = datetime(2024, 1, 2, tzinfo=UTC), pd.DataFrame({"k": [1, 2]})
    with pytest.raises(RetrievalError, match=r"version 1\.0\.0, which has no column\(s\) \['n_2d'\]") as caught:
        defs.get_online_features(["spend"], entities, at=at)
    assert "--online" in caught.value.fix
    assert defs.get_online_features([mlf.FeatureSpec("spend", columns=["s_2d"])], entities, at=at)["s_2d"].tolist() == [1, 2]
    assert defs.build(online=True).ok
    training = defs.get_training_data(["spend"], entities.assign(at=pd.Timestamp("2024-01-02")), timestamp="at")
    assert defs.get_online_features(["spend"], entities, at=at)["n_2d"].tolist() == training["n_2d"].tolist() == [1, 1]


def test_a_feature_without_metrics_is_served_from_its_newest_row(tmp_path):  # contract O1
    # Its record's watermark is whole seconds, cut down, and stays back after a range build
    # that starts past it: publishing capped at it left the newest rows out, and online reads
    # after them served older values than training.
    path = tmp_path / "e.parquet"

    def write(rows):
        pd.DataFrame(rows, columns=["k", "ts", "v"]).assign(ts=lambda d: pd.to_datetime(d.ts, format="ISO8601")).to_parquet(path, index=False)

    rows = [(1, "2024-01-01T05:00:00", 1), (2, "2024-01-02T06:00:00.500", 2)]
    write(rows)

    @mlf.feature(source=str(path), keys=["k"], timestamp="ts")
    def last_v(t):
        return t

    defs = _defs(tmp_path, [last_v], online_store=MemoryStore())
    assert defs.build(online=True).ok

    def agree(at: datetime, keys: list[int]) -> list:
        entities = pd.DataFrame({"k": keys})
        training = defs.get_training_data(["last_v"], entities.assign(at=pd.Timestamp(at.replace(tzinfo=None))), timestamp="at")["v"].tolist()
        assert defs.get_online_features(["last_v"], entities, at=at)["v"].tolist() == training
        return training

    assert agree(datetime(2024, 1, 3, tzinfo=UTC), [1, 2]) == [1, 2]  # the newest row, 0.5 s past a whole second
    with pytest.raises(RetrievalError, match="watermark"):  # before the newest row: not answerable from one row
        defs.get_online_features(["last_v"], pd.DataFrame({"k": [2]}), at=datetime(2024, 1, 2, 6, 0, 0, 200000, tzinfo=UTC))

    write([*rows, (1, "2024-01-10T05:00:00", 10), (4, "2024-01-10T07:00:00", 40)])
    assert defs.build(online=True, since="2024-01-09")["last_v"].version == "1.0.1"  # a range past the watermark
    assert agree(datetime(2024, 1, 11, tzinfo=UTC), [1, 2, 4]) == [10, 2, 40]  # was [1, 2, unknown]


def test_natural_columns_a_feature_stores_are_not_added_again(tmp_path):  # contract K1, K2, P1
    # The function returns the entity's natural columns (K1 adds the join key): retrieval by
    # those columns failed with "adds column 'origin', which entity_df already has".
    pd.DataFrame({"origin": ["JFK", "LAX"], "dest": ["LAX", "JFK"], "ts": pd.to_datetime(["2024-01-01 01:00", "2024-01-01 02:00"]), "delay": [10, 20]}).to_parquet(
        tmp_path / "f.parquet", index=False
    )
    route = mlf.Entity("route", join_key="route_id", from_columns=["origin", "dest"])

    @mlf.feature(source=str(tmp_path / "f.parquet"), entities=[route], timestamp="ts")
    def last_delay(t):
        return t.select("origin", "dest", "ts", "delay")

    defs = _defs(tmp_path, [last_delay], online_store=MemoryStore())
    assert defs.build(online=True).ok
    natural = pd.DataFrame({"origin": ["JFK", "SFO"], "dest": ["LAX", "JFK"]})
    training = defs.get_training_data(["last_delay"], natural.assign(at=pd.Timestamp("2024-01-02")), timestamp="at")
    online = defs.get_online_features(["last_delay"], natural, at=datetime(2024, 1, 2, tzinfo=UTC))
    for frame in (training, online):
        assert frame["delay"].tolist()[0] == 10 and pd.isna(frame["delay"].tolist()[1])
        assert frame["origin"].tolist() == ["JFK", "SFO"] and "route_id" not in frame.columns
    with pytest.raises(RetrievalError, match="adds column 'origin'"):  # asked for by name: the stored values may differ
        defs.get_training_data([mlf.FeatureSpec("last_delay", columns=["origin", "delay"])], natural.assign(at=pd.Timestamp("2024-01-02")), timestamp="at")
    by_key = pd.DataFrame({"route_id": [mlf.surrogate_key("JFK", "LAX")]})
    assert defs.get_online_features(["last_delay"], by_key, at=datetime(2024, 1, 2, tzinfo=UTC))[["origin", "dest", "delay"]].values.tolist() == [["JFK", "LAX", 10]]


def test_the_build_engine_publishes_what_it_built(tmp_path, monkeypatch):  # contract O1, E2 (--engine first)
    # build(engine=...) computed on that engine but published through the project's: with
    # a PySpark profile and --engine duckdb, the publish needed Spark and failed.
    import mlforge.publishing as publishing

    pd.DataFrame({"k": [1], "ts": pd.to_datetime(["2024-01-01"]), "v": [1.0]}).to_parquet(tmp_path / "e.parquet", index=False)

    @mlf.feature(source=str(tmp_path / "e.parquet"), keys=["k"], timestamp="ts")
    def plain(t):
        return t

    seen: list[str] = []
    tail_rows = publishing.tail_rows
    monkeypatch.setattr(publishing, "tail_rows", lambda table, publication, engine, **kw: seen.append(engine.name) or tail_rows(table, publication, engine, **kw))
    defs = _defs(tmp_path, [plain], engine="polars", online_store=MemoryStore())
    assert defs.build(online=True, engine="duckdb").ok
    assert seen and set(seen) == {"duckdb"}


@pytest.mark.parametrize("engine", ["duckdb", "polars"])
def test_categorical_zoned_and_unsigned_columns_read_alike_everywhere(tmp_path, engine):  # contract T1, W7, W8, P1, O2
    # Polars stored a categorical key as an Arrow dictionary (training then failed on a
    # categorical-vs-text join) and kept a column's zone (DuckDB gives UTC); a uint64 past
    # 2**63 beside a null failed to become pandas (OverflowError).
    paris = pa.array([datetime(2024, 1, 1, 9, tzinfo=UTC)] * 2, pa.timestamp("us", "Europe/Paris"))
    table = pa.table({
        "k": pa.array(["a", "b"]).dictionary_encode(), "ts": [datetime(2024, 1, 1, 5), datetime(2024, 1, 1, 6)],
        "seen": paris, "u": pa.array([2**64 - 1, None], pa.uint64()),
    })
    pq.write_table(table, tmp_path / "e.parquet")

    @mlf.feature(source=str(tmp_path / "e.parquet"), keys=["k"], timestamp="ts")
    def odd(t):
        return t

    defs = _defs(tmp_path, [odd], engine=engine, online_store=MemoryStore())
    assert defs.build(online=True).ok
    stored = defs.read_feature("odd").to_pyarrow().schema
    assert stored.field("k").type == pa.string() and stored.field("seen").type == pa.timestamp("us", "UTC")
    labels = pd.DataFrame({"k": ["a", "b", "zz"], "at": pd.Timestamp("2024-01-02")})
    training = defs.get_training_data(["odd"], labels, timestamp="at")
    online = defs.get_online_features(["odd"], labels[["k"]], at=datetime(2024, 1, 2, tzinfo=UTC))
    for frame in (training, online):
        assert frame["u"].tolist()[0] == 2**64 - 1 and pd.isna(frame["u"].tolist()[1])
        assert frame["seen"].tolist()[0] == pd.Timestamp("2024-01-01 09:00", tz="UTC")


def test_polars_training_gives_the_stored_types(tmp_path):  # contract W8, P1
    # Polars returned large_string, large_binary and large_list where the files, DuckDB and
    # the online store give string, binary and list.
    types = {"s": pa.string(), "b": pa.binary(), "l": pa.list_(pa.int64())}
    pq.write_table(pa.table({"k": ["a"], "ts": [datetime(2024, 1, 1)], "s": ["x"], "b": [b"\x00"], "l": [[1, 2]]}), tmp_path / "e.parquet")

    @mlf.feature(source=str(tmp_path / "e.parquet"), keys=["k"], timestamp="ts")
    def texts(t):
        return t

    defs = _defs(tmp_path, [texts], engine="polars")
    assert defs.build().ok
    training = defs.get_training_data(["texts"], pa.table({"k": ["a"], "at": [datetime(2024, 1, 2)]}), timestamp="at")
    assert {c: training.schema.field(c).type for c in types} == types


def test_polars_reads_a_source_holding_a_map_column(tmp_path):  # contract W8, S2
    # Polars 2 reads a Parquet map as its own Map type, which Ibis cannot name: no feature of
    # such a source could be built on Polars, even one leaving the column out.
    attrs = pa.array([[("a", 1)], [("b", 2)]], pa.map_(pa.string(), pa.int64()))
    pq.write_table(pa.table({"k": [1, 2], "ts": [datetime(2024, 1, 1)] * 2, "v": [1.5, 2.5], "attrs": attrs}), tmp_path / "e.parquet")

    @mlf.feature(source=str(tmp_path / "e.parquet"), keys=["k"], timestamp="ts")
    def plain(t):
        return t.select("k", "ts", "v")

    defs = _defs(tmp_path, [plain], engine="polars")
    assert defs.build().ok
    assert sorted(defs.read_feature("plain").to_pyarrow().column("v").to_pylist()) == [1.5, 2.5]


def test_polars_continues_a_feature_with_a_categorical_key(tmp_path):  # contract I1, W8
    # Stored as text, computed as Polars categorical: the union of stored and fresh rows of an
    # incremental build failed ("inputs should all have the same schema").
    def write(days: int) -> None:
        keys = pa.array(["a", "b"] * days).dictionary_encode()
        times = [datetime(2024, 1, 1 + d, 5 + i) for d in range(days) for i in range(2)]
        pq.write_table(pa.table({"k": keys, "ts": times, "v": [1.0] * (2 * days)}), tmp_path / "e.parquet")

    @mlf.feature(source=str(tmp_path / "e.parquet"), keys=["k"], timestamp="ts", interval="1d", metrics=[mlf.Count("v", windows=["2d"])])
    def counts(t):
        return t

    write(3)
    defs = _defs(tmp_path, [counts], engine="polars")
    assert defs.build().ok
    write(5)
    assert defs.build()["counts"].build_range.startswith("[2024-01-04")
    full = mlf.Definitions("full", [counts], offline_store=mlf.LocalStore(str(tmp_path / "full")), engine="polars")
    assert full.build().ok
    rows = sorted(defs.read_feature("counts").to_pyarrow().to_pylist(), key=lambda r: (r["k"], r["ts"]))
    assert rows == sorted(full.read_feature("counts").to_pyarrow().to_pylist(), key=lambda r: (r["k"], r["ts"]))


def test_build_online_with_a_store_that_does_not_answer_writes_nothing(tmp_path):  # contract E3
    # The offline version was published (and latest moved) before the publish found the
    # store down; the store is now asked first.
    from mlforge.errors import OnlineStoreError
    from test_online_fixtures import free_port

    pd.DataFrame({"k": [1], "ts": pd.to_datetime(["2024-01-01"]), "v": [1.0]}).to_parquet(tmp_path / "e.parquet", index=False)

    @mlf.feature(source=str(tmp_path / "e.parquet"), keys=["k"], timestamp="ts")
    def plain(t):
        return t

    defs = _defs(tmp_path, [plain], online_store=mlf.RedisStore(host="127.0.0.1", port=free_port()))
    with pytest.raises(OnlineStoreError):
        defs.build(online=True)
    assert defs.offline_store.list_versions("plain") == []
