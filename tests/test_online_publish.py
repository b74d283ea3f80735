"""``build(online=True)`` publishes the newest row per entity of the built version (O1),
and the online modules stay light (STYLE 2)."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import mlforge as mlf
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


def newest_per_entity(defs, name):
    """The oracle: the offline version's rows, keeping the newest timestamp per entity."""
    newest = {}
    for row in defs.read_feature(name).to_pyarrow().to_pylist():
        if row["ts"].tzinfo is None:  # Spark returns stored UTC instants without a zone
            row["ts"] = row["ts"].replace(tzinfo=UTC)
        if row["user_id"] not in newest or row["ts"] > newest[row["user_id"]]["ts"]:
            newest[row["user_id"]] = row
    return newest


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.service)])
def online_store(request):
    if request.param == "memory":
        return MemoryStore()
    from mlforge.online.redis import RedisStore

    host, port = request.getfixturevalue("redis_server")
    return RedisStore(host=host, port=port, prefix=unique("o1"))


def test_build_online_writes_the_newest_row_per_entity(tmp_path, online_store, engine):
    # contract O1: the online store holds the newest grid label of each entity,
    # written from the built offline version
    defs = project(tmp_path, online_store, engine)
    result = defs.build(online=True)
    assert [f.status for f in result.features] == ["built", "built"], [f.error for f in result.features]
    rows = online_store.read("user_spend", [{"user_id": u} for u in "abcz"])
    assert rows[3] is None  # contract O2
    a = rows[0]
    # a's last event is Jan 3 05:00; its newest label is Jan 5 (window 2d): [Jan 3, Jan 5)
    assert a["ts"] == datetime(2024, 1, 5, tzinfo=UTC)
    assert a["spend_2d"] == 2 and type(a["spend_2d"]) is int and a["amt_count_1d"] == 0
    oracle = newest_per_entity(defs, "user_spend")
    assert rows[:3] == [oracle["a"], oracle["b"], oracle["c"]]
    raw = online_store.read("last_purchase", [{"user_id": "a"}, {"user_id": "b"}])
    assert raw == [{"user_id": "a", "ts": datetime(2024, 1, 3, 5, tzinfo=UTC), "amt": 2}, {"user_id": "b", "ts": datetime(2024, 1, 2, 1, tzinfo=UTC), "amt": 5}]


def test_a_new_version_replaces_the_online_rows(tmp_path, engine):
    # contract O1: after a rebuild the store serves the new version's newest rows
    store = MemoryStore()
    defs = project(tmp_path, store, engine)
    defs.build(online=True)
    more = {k: [*v] for k, v in EVENTS.items()}
    more["user_id"].append("a")
    more["ts"].append(datetime(2024, 1, 9, 12))
    more["amt"].append(40)
    pq.write_table(pa.table(more), tmp_path / "tx.parquet")
    result = defs.build(online=True)
    assert all(f.status == "built" for f in result.features), [f.error for f in result.features]
    row = store.read("user_spend", [{"user_id": "a"}])[0]
    assert row["ts"] == datetime(2024, 1, 11, tzinfo=UTC) and row["spend_2d"] == 40


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
    from mlforge.errors import install_hint

    with pytest.raises(EngineError) as raised:
        store.ping()
    assert raised.value.fix == install_hint(extra) and f"[{extra}]'" in install_hint(extra)
