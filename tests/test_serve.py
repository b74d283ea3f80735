"""The online feature server, over real HTTP (contract O3, K2).

The app runs in uvicorn on a free loopback port; one test starts ``mlforge.serve.run``
with two worker processes against a private Redis.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
from datetime import datetime

import httpx
import pyarrow as pa
import pytest

import mlforge as mlf
from mlforge.online.memory import MemoryStore
from mlforge.prepare import surrogate_key_value
from test_online_fixtures import free_port, redis_server, unique, wait_for_port  # noqa: F401

pytestmark = pytest.mark.service
TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ROUTE = mlf.Entity("route", join_key="route_id", from_columns=["origin", "dest"])


@mlf.feature(source="unused.parquet", keys=["user_id"], timestamp="ts")
def user_spend(t):
    return t


@mlf.feature(source="unused.parquet", entities=[ROUTE], timestamp="ts")
def route_delay(t):
    return t


def filled_store(store):
    store.write("user_spend", ["user_id"], [pa.table({"user_id": ["u1", "u2"], "ts": [datetime(2024, 1, 2)] * 2, "spend_7d": [12.5, 3.0], "n_7d": [4, 1]})])
    jfk_lax = surrogate_key_value("JFK", "LAX")
    store.write("route_delay", ["route_id"], [pa.table({"route_id": [jfk_lax], "ts": [datetime(2024, 1, 2)], "delay_mean_7d": [7.25]})])
    return store


class Live:
    """A uvicorn server in a thread; ``url`` once it listens."""

    def __init__(self, app):
        import uvicorn

        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.url = f"http://127.0.0.1:{self.port}"

    def __enter__(self):
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.01)
        return httpx.Client(base_url=self.url, timeout=10)

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture(scope="module")
def client():
    from mlforge.serve import create_app

    defs = mlf.Definitions("serve", [user_spend, route_delay], offline_store=mlf.LocalStore("unused-store"), online_store=filled_store(MemoryStore()))
    with Live(create_app(defs, token=TOKEN, max_batch=50)) as http:
        yield http


def test_health_needs_no_token(client):
    answer = client.get("/health")
    assert answer.status_code == 200 and answer.json()["status"] == "ok"


@pytest.mark.parametrize("path", ["/features", "/features/user_spend", "/metrics"])
def test_routes_need_the_bearer_token(client, path):
    # contract O3: optional bearer-token auth
    assert client.get(path).status_code == 401
    assert client.get(path, headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.get(path, headers=AUTH).status_code == 200
    assert client.post("/features/online", json={"features": ["user_spend"], "entity": {"user_id": "u1"}}).status_code == 401


def test_feature_list_and_detail(client):
    listed = client.get("/features", headers=AUTH).json()["features"]
    assert [f["name"] for f in listed] == ["route_delay", "user_spend"]
    detail = client.get("/features/route_delay", headers=AUTH).json()
    assert detail["keys"] == ["route_id"] and detail["entities"][0]["from_columns"] == ["origin", "dest"]
    assert detail["version"] is None  # not built offline: still servable


def test_integer_natural_key_columns_take_json_numbers_as_plain_keys_do(tmp_path):
    # contract K1, K2 over REST: JSON has one kind of number, so 1.0 names the entity 1 in the
    # natural columns of a surrogate key too (it was a 422 there); a fraction is no integer
    from mlforge.serve import create_app

    gate = mlf.Entity("gate", join_key="gate_id", from_columns=["terminal", "number"])

    @mlf.feature(source="unused.parquet", entities=[gate], timestamp="ts")
    def gate_delay(t):
        return t

    store = MemoryStore()
    store.write("gate_delay", ["gate_id"], [pa.table({"gate_id": [surrogate_key_value(1, 7)], "ts": [datetime(2024, 1, 2)], "delay": [4.5]})])
    defs = mlf.Definitions("gates", [gate_delay], offline_store=mlf.LocalStore(str(tmp_path / "s")), online_store=store)
    with Live(create_app(defs, token="")) as http:
        answers = [http.post("/features/online", json={"features": ["gate_delay"], "entity": entity}) for entity in ({"terminal": 1, "number": 7}, {"terminal": 1.0, "number": 7.0})]
        assert [a.status_code for a in answers] == [200, 200], answers[1].text
        assert answers[0].json()["features"] == answers[1].json()["features"] and answers[0].json()["features"]["gate_delay"]["delay"] == 4.5
        fraction = http.post("/features/online", json={"features": ["gate_delay"], "entity": {"terminal": 1.5, "number": 7}})
        assert fraction.status_code == 422 and "1.5" in fraction.json()["detail"]


def test_single_lookup_returns_typed_json(client):
    answer = client.post("/features/online", headers=AUTH, json={"features": ["user_spend"], "entity": {"user_id": "u1"}})
    assert answer.status_code == 200
    row = answer.json()["features"]["user_spend"]
    assert row == {"user_id": "u1", "ts": "2024-01-02T00:00:00+00:00", "spend_7d": 12.5, "n_7d": 4}


def test_natural_and_join_keys_give_the_same_answer(client):
    # contract K2: natural columns or the join key, computed as in K1
    natural = client.post("/features/online", headers=AUTH, json={"features": ["route_delay"], "entity": {"origin": "JFK", "dest": "LAX"}})
    joined = client.post("/features/online", headers=AUTH, json={"features": ["route_delay"], "entity": {"route_id": surrogate_key_value("JFK", "LAX")}})
    assert natural.status_code == joined.status_code == 200
    assert natural.json()["features"] == joined.json()["features"]
    assert natural.json()["features"]["route_delay"]["delay_mean_7d"] == 7.25


def test_unknown_entity_is_null(client):
    # contract O2 through the API; these features are written to the store directly, with no
    # stored version: a read that finds none of its entities is of an unknown feature (404)
    answer = client.post("/features/batch", headers=AUTH, json={"features": ["user_spend"], "entities": [{"user_id": "nobody"}, {"user_id": "u1"}]})
    assert answer.status_code == 200 and answer.json()["results"][0]["features"] == {"user_spend": None}
    alone = client.post("/features/online", headers=AUTH, json={"features": ["user_spend", "route_delay"], "entity": {"user_id": "nobody", "route_id": "0" * 32}})
    assert alone.status_code == 404 and "unknown feature 'user_spend': it has no stored version" in alone.json()["detail"]


def test_batch_lookup_keeps_order(client):
    entities = [{"user_id": "u2"}, {"user_id": "nobody"}, {"user_id": "u1"}]
    answer = client.post("/features/batch", headers=AUTH, json={"features": ["user_spend"], "entities": entities})
    assert answer.status_code == 200
    results = answer.json()["results"]
    assert [r["entity"] for r in results] == entities
    assert [r["features"]["user_spend"] and r["features"]["user_spend"]["n_7d"] for r in results] == [1, None, 4]


def test_v07_body_is_accepted_with_a_deprecation_header(client):
    """The v0.7 body names entities ``entity_keys``; 0.8.x answers it, marked deprecated."""
    single = client.post("/features/online", headers=AUTH, json={"features": ["user_spend"], "entity_keys": {"user_id": "u1"}})
    current = client.post("/features/online", headers=AUTH, json={"features": ["user_spend"], "entity": {"user_id": "u1"}})
    assert single.status_code == 200 and single.json()["features"] == current.json()["features"]
    assert single.json()["entity_keys"] == {"user_id": "u1"}
    assert single.headers["Deprecation"] == "true" and "entities" in single.headers["Warning"]
    assert "Deprecation" not in current.headers
    entities = [{"user_id": "u2"}, {"user_id": "u1"}]
    batch = client.post("/features/batch", headers=AUTH, json={"features": ["user_spend"], "entity_keys": entities})
    assert batch.status_code == 200 and batch.headers["Deprecation"] == "true"
    assert [r["entity_keys"] for r in batch.json()["results"]] == entities
    assert [r["features"]["user_spend"]["n_7d"] for r in batch.json()["results"]] == [1, 4]


@pytest.mark.parametrize(
    "path, body, status",
    [
        ("/features/online", b"{not json", 422),
        ("/features/online", b'{"features": ["user_spend"]}', 422),
        ("/features/online", b'{"features": ["user_spend"], "entity": {"user_id": "u1"}, "entity_keys": {"user_id": "u1"}}', 422),
        ("/features/batch", b'{"features": ["user_spend"], "entities": [{"user_id": "u1"}], "entity_keys": [{"user_id": "u1"}]}', 422),
        ("/features/batch", b'{"features": ["user_spend"], "entity_keys": []}', 422),
        ("/features/online", b'{"features": "user_spend"}', 422),
        ("/features/online", b'{"features": [], "entity": {"user_id": "u1"}}', 422),
        ("/features/online", b'{"features": ["user_spend"], "entity": {"user_id": "u1"}, "extra": 1}', 422),
        ("/features/online", b'{"features": ["user_spend"], "entity": {"other": "u1"}}', 422),
        ("/features/online", b'{"features": ["route_delay"], "entity": {"origin": "JFK"}}', 422),
        ("/features/online", b'{"features": ["user_spend"], "entity": {"user_id": "\\ud800"}}', 422),  # a lone surrogate: valid JSON, no UTF-8 text
        ("/features/online", b'{"features": ["route_delay"], "entity": {"origin": "\\udfff", "dest": "x"}}', 422),
        ("/features/online", b'{"features": ["nope"], "entity": {"user_id": "u1"}}', 404),
        ("/features/batch", b'{"features": ["user_spend"], "entities": []}', 422),
        ("/features/batch", b'{"features": ["user_spend"], "entities": [' + b",".join([b'{"user_id": "u1"}'] * 51) + b"]}", 413),  # over max_batch (issue 16)
    ],
)
def test_bad_requests_get_clean_errors(client, path, body, status):
    # contract O3: bad JSON -> 422, unknown feature -> 404, never a 500 with a traceback
    answer = client.post(path, headers={**AUTH, "content-type": "application/json"}, content=body)
    assert answer.status_code == status, answer.text
    assert isinstance(answer.json()["detail"], str) and answer.json()["fix"] and "Traceback" not in answer.text  # {"detail": "...", "fix": "..."}


def test_a_422_names_each_field_once_as_the_caller_spelt_it(client):
    # a key value fitting no key type is one problem per type for pydantic; a field named
    # like a type ("int") is still named
    answer = client.post("/features/online", headers=AUTH, json={"features": ["user_spend"], "entity": {"int": [1]}})
    assert answer.status_code == 422
    assert [e["loc"] for e in answer.json()["errors"]] == [["body", "entity", "int"]] and "body > entity > int:" in answer.json()["detail"]


def test_head_answers_where_get_does(client):
    # RFC 9110: HEAD wherever GET is supported; load balancers probe health with it
    assert client.head("/health").status_code == 200
    assert client.head("/features", headers=AUTH).status_code == 200


def test_unknown_feature_detail_is_404(client):
    assert client.get("/features/nope", headers=AUTH).status_code == 404


def test_metrics_count_requests_and_lookups_per_feature(client):
    client.post("/features/online", headers=AUTH, json={"features": ["user_spend"], "entity": {"user_id": "u1"}})
    client.post("/features/online", headers=AUTH, json={"features": ["user_spend"], "entity": {"user_id": "nobody"}})
    text = client.get("/metrics", headers=AUTH).text
    assert 'mlforge_serve_feature_lookups_total{feature="user_spend",status="hit"}' in text
    assert 'mlforge_serve_feature_lookups_total{feature="user_spend",status="miss"}' in text
    assert 'mlforge_serve_request_seconds_bucket{le="0.005",route="/features/online"}' in text
    assert 'mlforge_serve_requests_total{route="/features/online",status="200"}' in text
    assert 'mlforge_serve_store_read_seconds_count{feature="user_spend"}' in text


def test_any_store_client_failure_is_503_without_its_internals():  # contract O3, issue 16
    from mlforge.serve import create_app

    class Broken(MemoryStore):
        def read(self, feature, keys):  # e.g. redis-py's AttributeError in a handshake
            raise AttributeError("'NoneType' object has no attribute 'secret internals'")

        def ping(self):
            raise RuntimeError("secret internals")

    defs = mlf.Definitions("broken", [user_spend], offline_store=mlf.LocalStore("unused-store"), online_store=Broken())
    with Live(create_app(defs, token="")) as http:
        answer = http.post("/features/online", json={"features": ["user_spend"], "entity": {"user_id": "u1"}})
        health = http.get("/health")
    assert answer.status_code == 503 and "AttributeError" in answer.json()["detail"]
    assert health.status_code == 503
    assert "secret internals" not in answer.text + health.text


def test_an_awaited_store_read_is_read_on_the_loop_and_its_failure_is_503():  # contract O3
    from dataclasses import replace

    from mlforge.serve import create_app

    class Awaited(MemoryStore):
        capabilities = replace(MemoryStore.capabilities, async_reads=True)
        awaited = 0

        def read(self, feature, keys):
            raise AssertionError("a store that declares async_reads is awaited, not read on a thread")

        async def read_many_async(self, requests):
            Awaited.awaited += 1
            if any(k.get("user_id") == "boom" for keys in requests.values() for k in keys):
                raise ConnectionResetError("secret internals")
            return {feature: MemoryStore.read(self, feature, keys) for feature, keys in requests.items()}

    store = Awaited()
    store.write("user_spend", ["user_id"], [{"user_id": "u1", "n_7d": 3}])
    defs = mlf.Definitions("awaited", [user_spend], offline_store=mlf.LocalStore("unused-store"), online_store=store)
    with Live(create_app(defs, token="")) as http:
        answer = http.post("/features/online", json={"features": ["user_spend"], "entity": {"user_id": "u1"}})
        failed = http.post("/features/online", json={"features": ["user_spend"], "entity": {"user_id": "boom"}})
    assert answer.status_code == 200 and answer.json()["features"]["user_spend"]["n_7d"] == 3
    assert failed.status_code == 503 and "ConnectionResetError" in failed.json()["detail"] and "secret" not in failed.text
    assert Awaited.awaited == 2


def test_an_unexpected_error_is_a_bare_500(monkeypatch):
    import mlforge.serve
    from mlforge.serve import create_app

    def broken(value):
        raise RuntimeError("secret internals")

    monkeypatch.setattr(mlforge.serve, "render_json", broken)
    store = MemoryStore()
    store.write("user_spend", ["user_id"], [{"user_id": "u1", "n_7d": 1}])
    defs = mlf.Definitions("broken", [user_spend], offline_store=mlf.LocalStore("unused-store"), online_store=store)
    with Live(create_app(defs, token="")) as http:
        answer = http.post("/features/online", json={"features": ["user_spend"], "entity": {"user_id": "u1"}})
    assert answer.status_code == 500
    assert answer.json()["detail"] == "internal error (RuntimeError); see the server log" and "secret" not in answer.text


def test_token_from_the_environment(monkeypatch):
    from fastapi.testclient import TestClient

    from mlforge.serve import create_app

    monkeypatch.setenv("MLFORGE_SERVE_TOKEN", "from-env")
    defs = mlf.Definitions("env", [user_spend], offline_store=mlf.LocalStore("unused-store"), online_store=MemoryStore())
    http = TestClient(create_app(defs))
    assert http.get("/features").status_code == 401
    assert http.get("/features", headers={"Authorization": "Bearer from-env"}).status_code == 200


def test_run_serves_with_two_worker_processes(tmp_path, request):
    # `mlforge serve --workers 2`: each worker loads definitions.py itself; metrics are summed
    psutil = pytest.importorskip("psutil")
    from mlforge.online.redis import RedisStore

    host, port = request.getfixturevalue("redis_server")
    prefix = unique("w")
    filled_store(RedisStore(host=host, port=port, prefix=prefix))
    (tmp_path / "definitions.py").write_text(
        textwrap.dedent(
            f"""
            import mlforge as mlf
            from mlforge.online.redis import RedisStore

            @mlf.feature(source="unused.parquet", keys=["user_id"], timestamp="ts")
            def user_spend(t):
                return t

            defs = mlf.Definitions("workers", [user_spend], offline_store=mlf.LocalStore("store"),
                                   online_store=RedisStore(host={host!r}, port={port}, prefix={prefix!r}))
            """
        )
    )
    http_port = free_port()
    code = f"from mlforge.serve import run; run(None, host='127.0.0.1', port={http_port}, workers=2, token={TOKEN!r}, target={str(tmp_path)!r}, log_level='warning')"
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for_port(http_port, timeout=30)
        deadline = time.monotonic() + 20
        workers = []
        while time.monotonic() < deadline and len(workers) < 2:
            workers = [p for p in psutil.Process(proc.pid).children() if "spawn_main" in " ".join(p.cmdline())]
            time.sleep(0.1)
        assert len(workers) == 2
        n = 40
        for i in range(n):  # a fresh connection each time, so both workers get some
            answer = httpx.post(f"http://127.0.0.1:{http_port}/features/online", headers=AUTH, json={"features": ["user_spend"], "entity": {"user_id": "u1" if i % 2 else "u2"}}, timeout=10)
            assert answer.status_code == 200, answer.text
        metrics = httpx.get(f"http://127.0.0.1:{http_port}/metrics", headers=AUTH, timeout=10).text
        hits = [line for line in metrics.splitlines() if line.startswith('mlforge_serve_feature_lookups_total{feature="user_spend",status="hit"}')]
        assert hits and float(hits[0].split()[-1]) == n  # summed over both workers
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
        stderr = proc.stderr.read().decode() if proc.stderr else ""
    assert "Traceback" not in stderr, stderr
