"""One value everywhere: an online read at ``T`` equals ``get_training_data`` for a label at
``T`` (contract O1), ttl included (O4), unknown entities included (O2), on every online
store that runs here and on every engine's build.

Hypothesis draws events (several entities, ties of entities and times, null amounts,
sparse and dense histories), a ttl or none, and read times ``T`` from the watermark to past
every entity's windows: for each entity ``T`` lands inside its windows (its last events
still count), on an emptied window (W4 values), or after all of them; "before" an entity's
first event is the unknown entity ``zz``, and a ``T`` before the watermark is refused (the
tail cannot answer it; ``test_online_publish``). One build per example on the
parametrised engine, published with ``build(online=True)`` to the parametrised store.
"""

from __future__ import annotations

import math
import os
import tempfile
import uuid
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

import mlforge as mlf
from fake_databricks import databricks_workspace, postgres  # noqa: F401
from mlforge.errors import DefinitionError
from mlforge.online.memory import MemoryStore
from test_online_fixtures import moto_dynamodb, redis_server, unique, valkey_server  # noqa: F401

PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "default")
#: Few examples in the default run (each is a build); many more in `nox -s parity`.
EXAMPLES = {"default": 4, "parity": 30}.get(PROFILE, 4)
SPARK_EXAMPLES = 2
START = datetime(2024, 3, 1, tzinfo=UTC)
DAY = timedelta(days=1)
USERS = ["a", "b", "c", "d"]
ENGINES = ["duckdb", "polars", pytest.param("pyspark", marks=pytest.mark.spark)]
STORES = [
    "memory",
    pytest.param("redis", marks=pytest.mark.service),
    pytest.param("valkey", marks=pytest.mark.service),
    pytest.param("dynamodb", marks=pytest.mark.service),
]


@st.composite
def scenarios(draw):
    """Events, a ttl for the non-metric feature, and read offsets from the watermark."""
    event = st.tuples(
        st.sampled_from(USERS),
        st.integers(0, 12 * 24 - 1),  # hour of a 12-day span
        st.one_of(st.none(), st.integers(-50, 500)),
    )
    events = draw(st.lists(event, min_size=1, max_size=14))
    ttl = draw(st.sampled_from([None, "1d", "2d", "30h"]))
    # hours after the watermark: on it, inside the 1d/3d windows, at and past their ends
    offsets = draw(st.lists(st.sampled_from([0, 1, 13, 24, 25, 47, 48, 71, 72, 73, 30 * 24]), min_size=2, max_size=4, unique=True))
    return events, ttl, offsets


def write_project(folder: str, events: list[tuple], ttl: str | None, engine, online_store, offline_store=None):
    users = [u for u, _, _ in events]
    stamps = [START + timedelta(hours=h) for _, h, _ in events]
    pq.write_table(pa.table({"user_id": users, "ts": pa.array(stamps, pa.timestamp("us", tz="UTC")), "amt": pa.array([a for _, _, a in events], pa.int64())}), f"{folder}/tx.parquet")

    @mlf.feature(
        source=f"{folder}/tx.parquet", keys=["user_id"], timestamp="ts", interval="1d",
        metrics=[mlf.Sum("amt", windows=["1d", "3d"], name="spend"), mlf.Count("amt", windows=["3d"]), mlf.Mean("amt", windows=["3d"]), mlf.Max("amt", windows=["1d"])],
    )
    def user_spend(t):
        return t

    @mlf.feature(source=f"{folder}/tx.parquet", keys=["user_id"], timestamp="ts", ttl=ttl)
    def last_amt(t):
        return t.select("user_id", "ts", "amt")

    return mlf.Definitions("o1", [user_spend, last_amt], offline_store=offline_store or mlf.LocalStore(f"{folder}/store"), online_store=online_store, engine=engine)


def unique_times(events: list[tuple]) -> list[tuple]:
    """One event per (user, hour): the as-of join and the publish pick one of tied rows
    each, and nothing says they pick the same one."""
    seen: dict[tuple, tuple] = {}
    for user, hour, amt in events:
        seen.setdefault((user, hour), (user, hour, amt))
    return list(seen.values())


def same(online: list[dict], training: list[dict]) -> bool:
    if len(online) != len(training):
        return False
    for got, want in zip(online, training, strict=True):
        if got.keys() != want.keys():
            return False
        for column, value in want.items():
            other = got[column]
            if isinstance(value, float) or isinstance(other, float):
                if value is None or other is None or not math.isclose(value, other, rel_tol=1e-9, abs_tol=1e-9):
                    return False
            elif value != other or type(value) is not type(other):
                return False
    return True


def check_reads_equal_training(defs, events: list[tuple], offsets: list[int]) -> None:
    """For every read time: online (with metadata) == training at that label time."""
    watermark = datetime.fromtimestamp(defs.offline_store.read_metadata("user_spend")["watermark"], tz=UTC)
    last_watermark = datetime.fromtimestamp(defs.offline_store.read_metadata("last_amt")["watermark"], tz=UTC)
    entities = pa.table({"user_id": [*sorted({u for u, _, _ in events}), "zz"]})
    n = entities.num_rows
    for offset in offsets:
        at = max(watermark, last_watermark) + timedelta(hours=offset, minutes=7 if offset % 2 else 0)
        note(f"read at {at.isoformat()} (watermark {watermark.isoformat()})")
        online = defs.get_online_features(["user_spend", "last_amt"], entities, at=at, with_metadata=True)
        labels = entities.append_column("ts", pa.array([at] * n, pa.timestamp("us", tz="UTC")))
        training = defs.get_training_data(["user_spend", "last_amt"], labels, timestamp="ts").drop_columns(["ts"])
        meta = [c for c in online.column_names if c.endswith(("__label_time", "__known"))]
        assert same(online.drop_columns(meta).to_pylist(), training.to_pylist()), (at, online.to_pylist(), training.to_pylist())
        rows = online.to_pylist()
        label = datetime.fromtimestamp(at.timestamp() // 86400 * 86400, tz=UTC)
        assert all(r["user_spend__label_time"] == label for r in rows)  # metric: the grid label of T
        assert rows[-1]["user_spend__known"] is False and rows[-1]["last_amt__known"] is False  # O2: zz
        assert all(r["amt"] is None for r in rows if r["last_amt__label_time"] is None)  # no row counts: nulls
        check_rest_answers_the_same(defs, entities.column("user_id").to_pylist(), at, rows)


def check_rest_answers_the_same(defs, users: list[str], at: datetime, rows: list[dict]) -> None:
    """`mlforge serve` answers what the Python API read (O3 over O1): on Redis and Valkey
    through the asyncio read path, on the other stores through a worker thread."""
    from fastapi.testclient import TestClient

    from mlforge.serve import create_app

    with TestClient(create_app(defs, token="")) as http:
        answer = http.post("/features/batch", json={"features": ["user_spend", "last_amt"], "entities": [{"user_id": u} for u in users], "at": at.isoformat()})
    assert answer.status_code == 200, answer.text
    for result, row in zip(answer.json()["results"], rows, strict=True):
        for name in ("user_spend", "last_amt"):
            meta = result["metadata"][name]
            label = row[f"{name}__label_time"]
            assert meta == {"label_time": None if label is None else label.isoformat(), "known": row[f"{name}__known"]}
            served = result["features"][name]
            if served is None:
                continue
            values = {c: v for c, v in served.items() if c not in ("user_id", "ts")}
            assert same([values], [{c: row[c] for c in values}]), (name, served, row)


# -- every row store ------------------------------------------------------------------------
@pytest.fixture(params=STORES)
def make_store(request):
    """A fresh, isolated store of the parametrised kind per call."""
    kind = request.param
    made = []

    def make():
        if kind == "memory":
            store = MemoryStore()
        elif kind in ("redis", "valkey"):
            from mlforge.online.redis import RedisStore, ValkeyStore

            host, port = request.getfixturevalue("redis_server" if kind == "redis" else "valkey_server")
            store = (RedisStore if kind == "redis" else ValkeyStore)(host=host, port=port, prefix=unique("o1"))
        else:
            from mlforge.online.dynamodb import DynamoDBStore

            store = DynamoDBStore(unique("o1-"), region="us-east-1", endpoint_url=request.getfixturevalue("moto_dynamodb"))
        made.append(store)
        return store

    yield make
    for store in made:
        store.close()


@pytest.mark.parametrize("engine_name", ENGINES)
def test_online_reads_equal_training_at_read_time(make_store, engine_name, request, tmp_path):
    # contract O1 (with O2 for the unknown entity and O4 for the ttl)
    engine = request.getfixturevalue("spark_engine") if engine_name == "pyspark" else engine_name
    examples = SPARK_EXAMPLES if engine_name == "pyspark" else EXAMPLES

    @settings(max_examples=examples, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
    @given(scenario=scenarios())
    def check(scenario):
        events, ttl, offsets = scenario
        events = unique_times(events)
        folder = tempfile.mkdtemp(prefix="mlforge-o1-", dir=tmp_path)  # one per example, removed with tmp_path
        defs = write_project(folder, events, ttl, engine, make_store())
        result = defs.build(online=True)
        assert all(f.status == "built" for f in result.features), [f.error for f in result.features]
        check_reads_equal_training(defs, events, offsets)

    check()


# -- the Databricks store, against the loopback workspace ------------------------------------
@pytest.mark.service
@pytest.mark.parametrize("engine_name", ENGINES)
def test_databricks_reads_equal_training_at_read_time(databricks_workspace, engine_name, request, tmp_path):  # noqa: F811
    # contract O1 on DatabricksOnlineStore: build --online publishes the tail table through
    # Unity Catalog and the sync pipeline; reads go to the loopback workspace's PostgreSQL
    from mlforge.offline.unity_catalog import UnityCatalogStore
    from mlforge.online.databricks import DatabricksOnlineStore

    if engine_name == "pyspark":
        jars = os.environ.get("MLFORGE_SPARK_JARS") or ""
        if "delta" not in jars and not any("delta-spark" in f for f in (os.listdir(jars) if os.path.isdir(jars) else [])):
            pytest.skip("a PySpark build into Unity Catalog writes Delta through Spark: needs the delta-spark jars (MLFORGE_SPARK_JARS, fetched by .ci/run)")
        engine = request.getfixturevalue("spark_engine")
    else:
        engine = engine_name
    ws = databricks_workspace
    examples = SPARK_EXAMPLES if engine_name == "pyspark" else 2

    @settings(max_examples=examples, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
    @given(scenario=scenarios())
    def check(scenario):
        events, ttl, offsets = scenario
        events = unique_times(events)
        folder = tempfile.mkdtemp(prefix="mlforge-o1-uc-", dir=tmp_path)
        schema = f"s{uuid.uuid4().hex[:8]}"
        offline = UnityCatalogStore("main", schema, client=ws.client(), storage_root=ws.storage_root)
        online = DatabricksOnlineStore("main", schema=f"online_{schema}", sync_mode="snapshot", client=ws.client(), pg_port=ws.postgres.port, poll_interval=0.02, sync_timeout=20)
        try:
            defs = write_project(folder, events, ttl, engine, online, offline)
            result = defs.build(online=True)
            assert all(f.status == "built" for f in result.features), [f.error for f in result.features]
            check_reads_equal_training(defs, events, offsets)
        finally:
            online.close()

    check()


# -- contract O4 and O2, by example ----------------------------------------------------------
def test_ttl_is_the_same_in_training_and_online(tmp_path):
    # contract O4: training ignores rows older than L - ttl, online reads rows older than T - ttl
    events = [("a", 0, 1), ("a", 30, 2), ("b", 10, 3), ("c", 40, 4)]
    defs = write_project(str(tmp_path), events, "1d", "duckdb", MemoryStore())
    defs.build(online=True)
    watermark = datetime.fromtimestamp(defs.offline_store.read_metadata("last_amt")["watermark"], tz=UTC)
    assert watermark == START + timedelta(hours=40)
    users = pa.table({"user_id": ["a", "b", "c"]})
    cases = {  # read time -> amt per user: a's newest row is 30 h, b's 10 h, c's 40 h after START
        watermark: [2, None, 4],  # b's row is 30 h old at the watermark: past its 1 d ttl
        START + timedelta(hours=54): [2, None, 4],  # a's row exactly 24 h old still counts
        START + timedelta(hours=54, seconds=1): [None, None, 4],
        START + timedelta(hours=64, seconds=1): [None, None, None],
    }
    for at, expected in cases.items():
        online = defs.get_online_features(["last_amt"], users, at=at).column("amt").to_pylist()
        labels = users.append_column("ts", pa.array([at] * 3, pa.timestamp("us", tz="UTC")))
        training = defs.get_training_data(["last_amt"], labels, timestamp="ts").column("amt").to_pylist()
        assert online == training == expected, at
    # b's row could never be read at or after the watermark: it is not published at all
    assert defs.online_store.read("last_amt", [{"user_id": "b"}]) == [None]


def test_ttl_is_rejected_on_metric_features_and_without_a_timestamp():
    # contract O4: metric features bound time with their windows
    with pytest.raises(DefinitionError, match="not allowed on a feature with metrics") as info:

        @mlf.feature(source="x.parquet", keys=["k"], timestamp="ts", interval="1d", metrics=[mlf.Sum("v", windows=["7d"])], ttl="7d")
        def spend(t):
            return t

    assert "ttl" in info.value.where and "spend" in info.value.where
    with pytest.raises(DefinitionError, match="needs a timestamp column"):

        @mlf.feature(source="x.parquet", keys=["k"], ttl="7d")
        def profile(t):
            return t

    with pytest.raises(DefinitionError, match="months or years"):

        @mlf.feature(source="x.parquet", keys=["k"], timestamp="ts", ttl="1mo")
        def late(t):
            return t

    @mlf.feature(source="x.parquet", keys=["k"], timestamp="ts", ttl=timedelta(hours=36))
    def fine(t):
        return t

    assert fine.ttl == "36h" and fine.ttl_seconds == 36 * 3600


def test_unknown_entities_read_what_training_gives_an_entity_without_rows(tmp_path):
    # contract O2: W4 values for metric features (sum and count 0, others null), nulls for
    # others, marked unknown; never an error
    defs = write_project(str(tmp_path), [("a", 5, 10)], None, "duckdb", MemoryStore())
    defs.build(online=True)
    at = START + timedelta(days=2)
    entities = pa.table({"user_id": ["nobody", None]})
    online = defs.get_online_features(["user_spend", "last_amt"], entities, at=at, with_metadata=True).to_pylist()
    labels = entities.append_column("ts", pa.array([at] * 2, pa.timestamp("us", tz="UTC")))
    training = defs.get_training_data(["user_spend", "last_amt"], labels, timestamp="ts").drop_columns(["ts"]).to_pylist()
    expected = {"spend_1d": 0, "spend_3d": 0, "amt_count_3d": 0, "amt_mean_3d": None, "amt_max_1d": None, "amt": None}
    for got, want, user in zip(online, training, ["nobody", None], strict=True):
        assert {k: got[k] for k in want} == want == {"user_id": user, **expected}
        assert (got["user_spend__known"], got["last_amt__known"], got["last_amt__label_time"]) == (False, False, None)
        assert got["user_spend__label_time"] == START + timedelta(days=2)
