"""``build(online=True)`` publishes what reads at or after the watermark need (O1): each
entity's tail of grid rows (metric features) or newest row (others), removes entities that
have no value any more, and the online modules stay light (STYLE 2)."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import mlforge as mlf
from mlforge.errors import OnlineStoreError, RetrievalError
from mlforge.online.memory import MemoryStore
from test_online_fixtures import redis_server, unique  # noqa: F401

EVENTS = {
    "user_id": ["a", "a", "b", "c"],
    "ts": [datetime(2024, 1, 1, 5), datetime(2024, 1, 3, 5), datetime(2024, 1, 2, 1), datetime(2024, 1, 2, 1)],
    "amt": [1, 2, 5, 7],
}


def project(tmp_path, online_store, engine, events=EVENTS):
    source = tmp_path / "tx.parquet"
    pq.write_table(pa.table(events), source)

    @mlf.feature(source=str(source), keys=["user_id"], timestamp="ts", interval="1d", metrics=[mlf.Sum("amt", windows=["2d"], name="spend"), mlf.Count("amt", windows=["1d"])])
    def user_spend(t):
        return t

    @mlf.feature(source=str(source), keys=["user_id"], timestamp="ts")
    def last_purchase(t):
        return t.select("user_id", "ts", "amt")

    return mlf.Definitions("o1", [user_spend, last_purchase], offline_store=mlf.LocalStore(tmp_path / "store"), online_store=online_store, engine=engine)


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.service)])
def online_store(request):
    if request.param == "memory":
        return MemoryStore()
    from mlforge.online.redis import RedisStore

    host, port = request.getfixturevalue("redis_server")
    return RedisStore(host=host, port=port, prefix=unique("o1"))


def at(day: int, hour: int = 0) -> datetime:
    return datetime(2024, 1, day, hour, tzinfo=UTC)


def test_build_online_publishes_each_entitys_tail(tmp_path, online_store, engine):
    # contract O1: per entity, the grid rows labelled at or after the watermark, from the
    # built offline version; a read at T takes the row labelled floor(T)
    defs = project(tmp_path, online_store, engine)
    result = defs.build(online=True)
    assert [f.status for f in result.features] == ["built", "built"], [f.error for f in result.features]
    assert [(f.online_written, f.online_removed) for f in result.features] == [(3, 0), (3, 0)]
    # the newest event is Jan 3 05:00, so the watermark is the label Jan 4
    assert defs.offline_store.read_metadata("user_spend")["watermark"] == at(4).timestamp()
    a, b, _c, z = online_store.read("user_spend", [{"user_id": u} for u in "abcz"])
    assert z is None
    # a's last event (Jan 3 05:00) is in the 2d window of the labels Jan 4 and Jan 5
    assert a["__mlforge_tail"]["labels"] == [at(4).timestamp(), at(5).timestamp()]
    assert a["__mlforge_tail"]["values"] == {"spend_2d": [2, 2], "amt_count_1d": [1, 0]}
    assert b["__mlforge_tail"]["labels"] == [at(4).timestamp()]
    raw = online_store.read("last_purchase", [{"user_id": "a"}, {"user_id": "b"}])
    assert raw == [{"user_id": "a", "ts": datetime(2024, 1, 3, 5, tzinfo=UTC), "amt": 2}, {"user_id": "b", "ts": datetime(2024, 1, 2, 1, tzinfo=UTC), "amt": 5}]


def test_a_read_at_T_equals_training_at_T(tmp_path, online_store, engine):
    # contract O1 (the example of the rule; the property test covers many more cases)
    defs = project(tmp_path, online_store, engine)
    defs.build(online=True)
    users = ["a", "b", "c", "z"]
    for when in (at(4), at(4, 17), at(5), at(6), at(30)):
        online = defs.get_online_features(["user_spend", "last_purchase"], pa.table({"user_id": users}), at=when).to_pylist()
        labels = pa.table({"user_id": users, "ts": pa.array([when] * 4, pa.timestamp("us", tz="UTC"))})
        training = defs.get_training_data(["user_spend", "last_purchase"], labels, timestamp="ts").drop_columns(["ts"]).to_pylist()
        assert online == training, when


def test_metadata_says_the_label_time_and_whether_the_entity_is_known(tmp_path, engine):
    # contract O1 (every response says the label time) and O2 (unknown = training's values, flagged)
    defs = project(tmp_path, MemoryStore(), engine)
    defs.build(online=True)
    out = defs.get_online_features(["user_spend", "last_purchase"], pa.table({"user_id": ["a", "z"]}), at=at(4, 17), with_metadata=True).to_pylist()
    assert out[0]["user_spend__label_time"] == at(4) and out[0]["user_spend__known"] is True
    assert out[0]["last_purchase__label_time"] == datetime(2024, 1, 3, 5, tzinfo=UTC) and out[0]["last_purchase__known"] is True
    assert out[1] == {
        "user_id": "z", "spend_2d": 0, "amt_count_1d": 0, "user_spend__label_time": at(4), "user_spend__known": False,
        "amt": None, "last_purchase__label_time": None, "last_purchase__known": False,
    }
    plain = defs.get_online_features(["user_spend"], pa.table({"user_id": ["a"]}), at=at(4))
    assert plain.column_names == ["user_id", "spend_2d", "amt_count_1d"]  # opt-in: no extra columns by default


def test_a_read_before_the_watermark_is_refused(tmp_path, engine):
    # contract O1 holds from the watermark on; before it the tail cannot answer
    defs = project(tmp_path, MemoryStore(), engine)
    defs.build(online=True)
    with pytest.raises(RetrievalError, match="before 2024-01-04T00:00:00\\+00:00, the watermark") as info:
        defs.get_online_features(["user_spend"], pa.table({"user_id": ["a"]}), at=at(3, 23))
    assert "get_training_data" in info.value.fix


def test_a_new_version_replaces_the_online_rows_and_removes_stale_entities(tmp_path, engine):
    # contract O1: after a rebuild the store serves the new version; entities whose windows
    # have all emptied, or that left the source, are removed, not served stale
    store = MemoryStore()
    defs = project(tmp_path, store, engine)
    defs.build(online=True)
    later = {"user_id": ["a", "a", "c"], "ts": [datetime(2024, 1, 1, 5), datetime(2024, 1, 9, 12), datetime(2024, 1, 2, 1)], "amt": [1, 40, 7]}
    pq.write_table(pa.table(later), tmp_path / "tx.parquet")
    result = defs.build(online=True, full_refresh=True)  # b's old rows leave the version too
    assert all(f.status == "built" for f in result.features), [f.error for f in result.features]
    spend, last = result.features
    # b left the source; c's windows emptied before the new watermark (Jan 10)
    assert (spend.online_written, spend.online_removed) == (1, 2)
    assert (last.online_written, last.online_removed) == (2, 1)  # b left; c keeps its newest row
    assert store.read("user_spend", [{"user_id": u} for u in "abc"])[1:] == [None, None]
    assert store.read("last_purchase", [{"user_id": "b"}]) == [None]
    row = defs.get_online_features(["user_spend"], pa.table({"user_id": ["a", "c"]}), at=at(10)).to_pylist()
    assert row == [{"user_id": "a", "spend_2d": 40, "amt_count_1d": 1}, {"user_id": "c", "spend_2d": 0, "amt_count_1d": 0}]


def test_an_interrupted_publish_is_cleaned_up_by_the_next(tmp_path, engine):
    # a publish that dies after writing some entities leaves both versions listed in the
    # record, so the next publish still removes every left-over entity
    class Failing(MemoryStore):
        fail = False

        def delete(self, feature, keys):
            if self.fail:
                raise OnlineStoreError("store went away", fix="retry")
            return super().delete(feature, keys)

    store = Failing()
    defs = project(tmp_path, store, engine)
    defs.build(online=True)
    pq.write_table(pa.table({"user_id": ["a"], "ts": [datetime(2024, 1, 9, 12)], "amt": [40]}), tmp_path / "tx.parquet")
    store.fail = True
    failed = defs.build(["user_spend"], online=True, raise_on_error=False).features[0]
    assert failed.status == "failed" and isinstance(failed.error, OnlineStoreError)
    assert store.read("mlforge.publications", [{"feature": "user_spend"}])[0]["present"] == ["1.0.0", "1.0.1"]
    store.fail = False
    again = defs.build(["user_spend"], online=True).features[0]
    assert again.status == "skipped" and again.online_removed == 2  # b and c, written by 1.0.0
    assert store.read("user_spend", [{"user_id": u} for u in "bc"]) == [None, None]
    assert store.read("mlforge.publications", [{"feature": "user_spend"}])[0]["present"] == ["1.0.1"]


def test_publish_without_window_functions_gives_the_same_rows(tmp_path):
    # STYLE 1: the portable aggregate + join plan equals the window plan
    import ibis

    from mlforge.publishing import latest_rows

    class NoWindows:
        def supports(self, capability):
            return False

    class Windows:
        def supports(self, capability):
            return True

    table = ibis.memtable({"k": [1, 1, 2, 2, None], "ts": [1, 3, 2, 2, 9], "v": [10, 30, 20, 21, 90]})
    windowed = sorted(latest_rows(table, ["k"], "ts", Windows()).to_pyarrow().to_pylist(), key=lambda r: (r["k"], r["v"]))
    portable = sorted(latest_rows(table, ["k"], "ts", NoWindows()).to_pyarrow().to_pylist(), key=lambda r: (r["k"], r["v"]))
    assert windowed[0] == portable[0] == {"k": 1, "ts": 3, "v": 30}
    assert {r["v"] for r in portable[1:]} == {20, 21} and windowed[1]["v"] in {20, 21}  # ties: the store keeps one


def test_online_modules_import_no_clients():
    # STYLE 2: clients are imported where used
    code = (
        "import sys, mlforge, mlforge.online.base, mlforge.online.memory, mlforge.online.redis, "
        "mlforge.online.dynamodb, mlforge.publishing, mlforge.serve\n"
        "print(sorted(m for m in ('redis', 'valkey', 'boto3', 'fastapi', 'uvicorn', 'prometheus_client') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"


@pytest.mark.parametrize("module, cls, extra", [("redis", "RedisStore", "redis"), ("valkey", "ValkeyStore", "valkey"), ("boto3", "DynamoDBStore", "dynamodb")])
def test_a_missing_client_names_the_extra(monkeypatch, module, cls, extra):
    import importlib

    from mlforge.errors import EngineError

    monkeypatch.setitem(sys.modules, module, None)  # makes `import module` fail
    store_module = importlib.import_module("mlforge.online.dynamodb" if module == "boto3" else "mlforge.online.redis")
    store = getattr(store_module, cls)("t") if module == "boto3" else getattr(store_module, cls)()
    from mlforge.errors import install_command

    with pytest.raises(EngineError) as raised:
        store.ping()
    assert raised.value.fix == install_command(extra) and f"[{extra}]'" in install_command(extra)
