"""One suite for every online store: memory, Redis, Valkey (client) and DynamoDB (moto).

Each case runs unchanged on every store (STYLE 9); only how a store is made, and how its
clock is moved past a TTL, differs per store.
"""

from __future__ import annotations

import math
import time
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pyarrow as pa
import pytest

from mlforge.errors import OnlineStoreError
from test_online_fixtures import free_port, moto_dynamodb, redis_server, unique  # noqa: F401

STORES = [
    "memory",
    pytest.param("redis", marks=pytest.mark.service),
    pytest.param("valkey", marks=pytest.mark.service),
    pytest.param("dynamodb", marks=pytest.mark.service),
]
REDIS_TTL = 0.3  # Redis expires for real: keep the sleep short


@pytest.fixture(params=STORES)
def make_store(request):
    """``make_store(ttl=None, down=False)`` -> a fresh, isolated store of the parametrised kind."""
    kind = request.param
    made = []

    def make(ttl=None, down=False):
        if kind == "memory":
            from mlforge.online.memory import MemoryStore

            if down:
                pytest.skip("an in-process MemoryStore cannot be unreachable")
            store = MemoryStore(ttl=ttl)
        elif kind in ("redis", "valkey"):
            from mlforge.online.redis import RedisStore, ValkeyStore

            cls = RedisStore if kind == "redis" else ValkeyStore
            if kind == "valkey":
                pytest.importorskip("valkey", reason="the valkey client is not installed (the valkey extra)")
            host, port = ("127.0.0.1", free_port()) if down else request.getfixturevalue("redis_server")
            store = cls(host=host, port=port, ttl=REDIS_TTL if ttl else None, prefix=unique("t"), socket_timeout=2)
        else:
            from mlforge.online.dynamodb import DynamoDBStore

            endpoint = f"http://127.0.0.1:{free_port()}" if down else request.getfixturevalue("moto_dynamodb")
            if down:
                import os

                for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}.items():
                    os.environ.setdefault(key, value)
            store = DynamoDBStore(unique("features-"), region="us-east-1", endpoint_url=endpoint, ttl_seconds=ttl)
        made.append(store)
        return store

    make.kind = kind
    yield make
    for store in made:
        store.close()


def pass_ttl(store, ttl: float) -> None:
    """Move ``store`` past ``ttl``: shift its clock where it has one, else really wait."""
    if hasattr(store, "_clock"):
        base = store._clock
        store._clock = lambda: base() + ttl + 1
    else:
        time.sleep(REDIS_TTL + 0.2)


def typed_table() -> pa.Table:
    return pa.table(
        {
            "user_id": pa.array([1, 2, 3], pa.int64()),
            "count_7d": pa.array([0, 5, None], pa.int64()),
            "whole_float": pa.array([1.0, 2.0, None], pa.float64()),
            "ratio": pa.array([0.1, float("nan"), float("inf")], pa.float64()),
            "flag": pa.array([True, False, None]),
            "name": pa.array(["ä", "", None]),
            "ts": pa.array([datetime(2024, 1, 2, 3, 4, 5, 6), datetime(2024, 1, 3), None], pa.timestamp("us")),
            "ts_utc": pa.array([datetime(2024, 1, 2, tzinfo=UTC)] * 3, pa.timestamp("us", tz="UTC")),
            "day": pa.array([date(2024, 1, 2), None, date(1999, 12, 31)], pa.date32()),
            "amount": pa.array([Decimal("1.10"), None, Decimal("-3.00")], pa.decimal128(10, 2)),
            "raw": pa.array([b"\x00\xff", None, b""], pa.binary()),
            "tags": pa.array([[1, 2], [], None], pa.list_(pa.int64())),
            "point": pa.array([{"x": 1, "y": 2.5}, None, {"x": None, "y": 0.0}]),
            "wait": pa.array([timedelta(seconds=90), None, timedelta(0)], pa.duration("us")),
            # a struct whose fields look like the codec's own tagged values: still a struct
            "lookalike": pa.array([{"$t": "ts", "v": "2024-01-02T00:00:00"}, None, {"$t": "map", "v": "x"}]),
            "stamps": pa.array([[datetime(2024, 1, 2)], [], [None, datetime(2024, 1, 3, 4)]], pa.list_(pa.timestamp("us"))),
        }
    )


def assert_same_typed(got, expected) -> None:
    assert got.keys() == expected.keys()
    for column, value in expected.items():
        if isinstance(value, float) and math.isnan(value):
            assert isinstance(got[column], float) and math.isnan(got[column]), column
            continue
        assert got[column] == value, column
        assert type(got[column]) is type(value), f"{column}: {type(got[column]).__name__} != {type(value).__name__}"


def test_values_round_trip_with_their_types(make_store):
    # contract O2: ints stay ints, floats stay floats, timestamps stay timestamps
    store = make_store()
    table = typed_table()
    assert store.write("typed", ["user_id"], table.to_batches(max_chunksize=2)) == 3
    rows = store.read("typed", [{"user_id": 1}, {"user_id": 2}, {"user_id": 3}])
    for got, expected in zip(rows, table.to_pylist(), strict=True):
        assert_same_typed(got, expected)
    assert type(rows[0]["whole_float"]) is float and type(rows[1]["count_7d"]) is int


def test_a_column_named_like_the_codec_tag_is_refused_before_anything_is_written(make_store):
    store = make_store()
    table = pa.table({"user_id": [1, 2], "$t": ["a", "b"]})
    with pytest.raises(OnlineStoreError, match=r"column named '\$t'") as caught:
        store.write("tagged", ["user_id"], [table])
    assert "rename the column" in caught.value.fix
    assert store.read("tagged", [{"user_id": 1}, {"user_id": 2}]) == [None, None]


def test_unknown_entities_are_none_not_errors(make_store):
    # contract O2: reads of unknown entities return nulls, never errors
    store = make_store()
    assert store.read("never_written", [{"user_id": 1}]) == [None]
    store.write("spend", ["user_id"], [pa.table({"user_id": [1], "total": [2.5]})])
    assert store.read("spend", [{"user_id": 2}, {"user_id": 1}, {"user_id": None}]) == [None, {"user_id": 1, "total": 2.5}, None]
    assert store.read("other_feature", [{"user_id": 1}]) == [None]  # features never share keys
    assert store.read("spend", []) == []


def test_batch_reads_keep_order_and_duplicates(make_store, monkeypatch):
    import mlforge.online.redis as redis_store

    # small Redis chunks, so a few hundred rows cross chunk edges on every store
    # (DynamoDB's limits are already 25 writes and 100 reads a request)
    monkeypatch.setattr(redis_store, "READ_BATCH", 100)
    monkeypatch.setattr(redis_store, "WRITE_BATCH", 70)
    store = make_store()
    n = 260
    table = pa.table({"user_id": list(range(n)), "value": [i * 0.5 for i in range(n)]})
    assert store.write("big", ["user_id"], table.to_batches(max_chunksize=90)) == n
    keys = [{"user_id": i} for i in reversed(range(-50, n))] + [{"user_id": 7}, {"user_id": 7}]
    rows = store.read("big", keys)
    assert len(rows) == len(keys)
    for key, row in zip(keys, rows, strict=True):
        assert row == (None if key["user_id"] < 0 else {"user_id": key["user_id"], "value": key["user_id"] * 0.5})


def test_newest_write_wins_and_composite_keys(make_store):
    store = make_store()
    first = pa.table({"origin": ["JFK", "JFK"], "dest": ["LAX", "SFO"], "n": [1, 2]})
    store.write("route", ["origin", "dest"], [first])
    store.write("route", ["origin", "dest"], [pa.table({"origin": ["JFK"], "dest": ["LAX"], "n": [10]})])
    # key dicts in any column order name the same entity; an int and its text too
    assert store.read("route", [{"dest": "LAX", "origin": "JFK"}, {"origin": "JFK", "dest": "SFO"}]) == [
        {"origin": "JFK", "dest": "LAX", "n": 10},
        {"origin": "JFK", "dest": "SFO", "n": 2},
    ]
    store.write("ids", ["user_id"], [pa.table({"user_id": [42], "n": [1]})])
    assert store.read("ids", [{"user_id": "42"}]) == [{"user_id": 42, "n": 1}]


def test_rows_expire_after_ttl(make_store):
    store = make_store(ttl=30)
    store.write("short", ["user_id"], [pa.table({"user_id": [1], "n": [1]})])
    assert store.read("short", [{"user_id": 1}]) == [{"user_id": 1, "n": 1}]
    pass_ttl(store, 30)
    assert store.read("short", [{"user_id": 1}]) == [None]  # contract O2: expired = unknown


def test_read_many_matches_read(make_store):
    from mlforge.online.base import read_many

    store = make_store()
    store.write("a", ["user_id"], [pa.table({"user_id": [1, 2], "x": [1, 2]})])
    store.write("b", ["user_id"], [pa.table({"user_id": [2], "y": [2.0]})])
    got = read_many(store, {"a": [{"user_id": 1}, {"user_id": 3}], "b": [{"user_id": 2}], "c": []})
    assert got == {"a": [{"user_id": 1, "x": 1}, None], "b": [{"user_id": 2, "y": 2.0}], "c": []}


def test_a_down_store_raises_a_clear_error_and_serve_answers_503(make_store):
    # contract O3: store down -> OnlineStoreError with a message; serve -> 503, no traceback
    store = make_store(down=True)
    started = time.monotonic()
    for action in (store.ping, lambda: store.read("spend", [{"user_id": 1}]), lambda: store.write("spend", ["user_id"], [pa.table({"user_id": [1]})])):
        with pytest.raises(OnlineStoreError) as info:
            action()
        message = str(info.value)
        assert "fix:" in message and ("unreachable" in message or "ConnectionError" in message), message
    assert time.monotonic() - started < 20, "a down store must fail fast"

    from fastapi.testclient import TestClient

    import mlforge as mlf
    from mlforge.serve import create_app

    @mlf.feature(source="unused.parquet", keys=["user_id"])
    def spend(t):
        return t

    client = TestClient(create_app(mlf.Definitions("down", [spend], offline_store=mlf.LocalStore("unused"), online_store=store)), raise_server_exceptions=False)
    health = client.get("/health")
    assert health.status_code == 503 and health.json()["status"] == "unavailable"
    answer = client.post("/features/online", json={"features": ["spend"], "entity": {"user_id": 1}})
    assert answer.status_code == 503
    assert "online store unavailable" in answer.json()["detail"] and "Traceback" not in answer.text


def test_delete_removes_entities_and_ignores_absent_ones(make_store):
    # build --online removes entities that no longer have a value (O1: nothing stale is served)
    store = make_store()
    store.write("gone", ["user_id"], [pa.table({"user_id": [1, 2, 3], "n": [1, 2, 3]})])
    assert store.delete("gone", [{"user_id": 1}, {"user_id": "3"}, {"user_id": 99}]) == 3
    assert store.read("gone", [{"user_id": 1}, {"user_id": 2}, {"user_id": 3}]) == [None, {"user_id": 2, "n": 2}, None]
    assert store.delete("never_written", [{"user_id": 1}]) == 1


def test_a_tail_round_trips_row_by_row_with_its_types(make_store):
    # contract O2 for published metric values: each tail row reads back equal and same-typed
    from mlforge.online.base import TAIL, Tail

    store = make_store()
    table = typed_table()
    columns = [c for c in table.column_names if c != "user_id"]
    rows = [[row[c] for c in columns] for row in table.to_pylist()]
    tail = Tail(86400, [0, 86400, 172800], columns, rows=rows)
    store.write("tails", ["user_id"], [{"user_id": 7, TAIL: tail}, {"user_id": 8, TAIL: Tail(86400, [], columns, rows=[])}])
    got, empty = store.read("tails", [{"user_id": 7}, {"user_id": 8}])
    assert got["user_id"] == 7 and got[TAIL].labels == [0, 86400, 172800]
    for index, expected in enumerate(table.to_pylist()):
        assert_same_typed({"user_id": expected["user_id"], **got[TAIL].row(index)}, expected)
    assert got[TAIL]["values"]["count_7d"] == [0, 5, None]
    assert empty[TAIL].labels == [] and empty[TAIL]["values"] == {c: [] for c in columns}


@pytest.mark.service
def test_a_damaged_tail_in_redis_is_refused_not_read_at_another_label(redis_server):  # noqa: F811
    import redis

    from mlforge.online.base import TAIL, Tail
    from mlforge.online.redis import RedisStore

    host, port = redis_server
    store = RedisStore(host=host, port=port, prefix=unique("damaged"))
    store.write("tails", ["user_id"], [{"user_id": 7, TAIL: Tail(86400, [0, 86400], ["n"], rows=[[1], [2]])}])
    key = store.key("tails", {"user_id": 7})
    raw = redis.Redis(host=host, port=port)
    raw.set(key, raw.get(key).replace(b"[1],\n", b""))  # a row lost: the labels no longer match
    with pytest.raises(OnlineStoreError, match=r"not an mlforge row .*a tail of 2 labels holds 1 rows"):
        store.read("tails", [{"user_id": 7}])


def test_a_damaged_tail_in_memory_is_refused_as_in_redis():  # contract O3: a store's failure is OnlineStoreError
    from mlforge.online.base import TAIL, Tail, key_text
    from mlforge.online.memory import MemoryStore

    store = MemoryStore()
    store.write("tails", ["user_id"], [{"user_id": 7, TAIL: Tail(86400, [0, 86400], ["n"], rows=[[1], [2]])}])
    text, expiry = store._rows["tails"][key_text({"user_id": 7})]
    store._rows["tails"][key_text({"user_id": 7})] = (text.replace("[1],\n", ""), expiry)  # a row lost
    with pytest.raises(OnlineStoreError, match=r"not an mlforge row .*a tail of 2 labels holds 1 rows"):
        store.read("tails", [{"user_id": 7}])


@pytest.mark.parametrize(
    "damaged",
    [
        "[1, 2, 3]",  # JSON, not an object
        '"text"',
        '{"user_id": 7, "__mlforge_tail": {"interval": 86400, "labels": "x", "columns": [], "rows": []}}',  # neither tail layout
        '{"user_id": 7, "__mlforge_tail": {"interval": 86400, "labels": [0], "values": [1]}}',
        '{"user_id": 7, "__mlforge_tail": {"interval": "day", "labels": [], "columns": [], "rows": [\n]}}',
    ],
)
def test_a_stored_value_that_is_no_mlforge_row_is_an_online_store_error(damaged):  # contract O3, E1
    """Another program's value under mlforge's keys is the store's error (REST: 503), from
    Python too: not an AttributeError or a KeyError when a lookup reads it."""
    from mlforge.online.base import TAIL, Tail, key_text
    from mlforge.online.memory import MemoryStore

    assert TAIL == "__mlforge_tail"
    store = MemoryStore()
    store.write("tails", ["user_id"], [{"user_id": 7, TAIL: Tail(86400, [0, 86400], ["n"], rows=[[1], [2]])}])
    expiry = store._rows["tails"][key_text({"user_id": 7})][1]
    store._rows["tails"][key_text({"user_id": 7})] = (damaged, expiry)
    with pytest.raises(OnlineStoreError, match="not an mlforge row"):
        store.read("tails", [{"user_id": 7}])


@pytest.mark.parametrize(
    "damaged",
    [
        '{"user_id": 7, "__mlforge_tail": {"interval": 86400, "labels": [0, 86400], "values": {"n": [1]}}}',  # values shorter than labels
        '{"user_id": 7, "__mlforge_tail": {"interval": 86400, "labels": ["a"], "values": {"n": [1]}}}',  # labels not numbers
        '{"user_id": 7, "__mlforge_tail": {"interval": 0, "labels": [0], "values": {"n": [1]}}}',
        '{"user_id": 7, "__mlforge_tail": {"interval": 86400, "labels": [0], "values": {"n": 1}}}',  # values not lists
    ],
)
def test_a_stored_tail_that_reads_but_is_no_mlforge_tail_is_an_online_store_error_at_lookup(damaged):  # contract O3, E1
    from datetime import UTC, datetime

    import mlforge as mlf
    from mlforge.online.base import TAIL, Tail, key_text
    from mlforge.online.memory import MemoryStore
    from mlforge.online.publication import Publication
    from mlforge.retrieval.online import lookup

    @mlf.feature(source="x.parquet", keys=["user_id"], timestamp="ts", interval="1d", metrics=[mlf.Count("n", windows=["1d"])])
    def tails(t):
        return t

    store = MemoryStore()
    store.write("tails", ["user_id"], [{"user_id": 7, TAIL: Tail(86400, [0, 86400], ["n"], rows=[[1], [2]])}])
    expiry = store._rows["tails"][key_text({"user_id": 7})][1]
    store._rows["tails"][key_text({"user_id": 7})] = (damaged, expiry)
    with pytest.raises(OnlineStoreError, match="a stored value of 'tails' is not an mlforge row"):
        lookup(store, {"tails": Publication.from_feature(tails)}, {"tails": [{"user_id": 7}]}, datetime(1970, 1, 2, 12, tzinfo=UTC))
