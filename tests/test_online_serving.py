"""Serving what training sees (contract O1) through REST and the CLI, on the project
``mlforge init`` makes: the issue's shop scenario on Redis, ``mlforge serve`` with an
in-process memory store, and what ``build --online`` reports."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pytest

import mlforge as mlf
from mlforge.cli.app import run
from mlforge.cli.templates import write_project
from mlforge.errors import ConfigError
from mlforge.loader import load_definitions
from test_online_fixtures import redis_server, unique  # noqa: F401

FEATURES = ["user_spend", "user_profile"]


def shop(tmp_path, online_block: str):
    """The ``mlforge init shop`` project with a ``served`` profile using ``online_block``."""
    root = tmp_path / "shop"
    write_project(root, online=None, store="local", engine="duckdb")
    config = root / "mlforge.yaml"
    config.write_text(config.read_text() + "  served:\n    offline_store: {KIND: local, path: ./feature_store}\n" + online_block)
    return root


def rest(defs):
    from fastapi.testclient import TestClient

    from mlforge.serve import create_app

    return TestClient(create_app(defs, token=""))


def training_row(defs, user: str, at: datetime) -> dict:
    labels = pa.table({"user_id": [user], "ts": pa.array([at], pa.timestamp("us", tz="UTC"))})
    return defs.get_training_data(["user_spend"], labels, timestamp="ts").drop_columns(["user_id", "ts"]).to_pylist()[0]


@pytest.mark.service
def test_the_shop_scenario_serves_what_training_sees(tmp_path, monkeypatch, request):
    # contract O1, the scenario: `mlforge init shop`, a Redis profile,
    # `mlforge build --online`, `mlforge serve`: the same values online and in training
    host, port = request.getfixturevalue("redis_server")
    root = shop(tmp_path, f"    online_store: {{KIND: redis, host: {host}, port: {port}, prefix: {unique('shop')}}}\n")
    monkeypatch.chdir(root)
    assert run(["build", "--online", "--profile", "served", "--format", "json"]) == 0
    defs = load_definitions(root, profile="served")
    events = defs.read_feature("user_spend").to_pyarrow()
    watermark = datetime.fromtimestamp(defs.offline_store.read_metadata("user_spend")["watermark"], tz=UTC)
    http = rest(defs)
    users = sorted(set(events.column("user_id").to_pylist()))[:5]
    for at in (watermark, watermark + timedelta(days=3, hours=5), watermark + timedelta(days=29), watermark + timedelta(days=40)):
        answer = http.post("/features/batch", json={"features": ["user_spend"], "entities": [{"user_id": u} for u in users], "at": at.isoformat()})
        assert answer.status_code == 200, answer.text
        for user, result in zip(users, answer.json()["results"], strict=True):
            served = {k: v for k, v in result["features"]["user_spend"].items() if k not in ("user_id", "event_time")}
            assert served == pytest.approx(training_row(defs, user, at)), (user, at)
            label = datetime.fromtimestamp(at.timestamp() // 86400 * 86400, tz=UTC)
            assert result["metadata"]["user_spend"] == {"label_time": label.isoformat(), "known": True}
            assert result["features"]["user_spend"]["event_time"] == label.isoformat()
    # after every window, every value is the empty-window value, exactly as in training
    late = http.post("/features/online", json={"features": ["user_spend"], "entity": {"user_id": users[0]}, "at": (watermark + timedelta(days=40)).isoformat()}).json()
    assert late["features"]["user_spend"]["total_spend_30d"] == 0 and late["features"]["user_spend"]["avg_amount_7d"] is None


def test_rest_says_label_time_and_known_and_refuses_reads_before_the_watermark(tmp_path, monkeypatch):
    # contract O1 (label time, known) and O2 (unknown entities read training's values) over REST
    root = shop(tmp_path, "    online_store: {KIND: memory}\n")
    monkeypatch.chdir(root)
    defs = load_definitions(root, profile="served")
    defs.build(FEATURES, online=True)
    watermark = datetime.fromtimestamp(defs.offline_store.read_metadata("user_spend")["watermark"], tz=UTC)
    http = rest(defs)
    body = http.post("/features/online", json={"features": FEATURES, "entity": {"user_id": "nobody"}, "at": watermark.isoformat()}).json()
    assert body["at"] == watermark.isoformat()
    assert body["metadata"] == {"user_spend": {"label_time": watermark.isoformat(), "known": False}, "user_profile": {"label_time": None, "known": False}}
    spend = body["features"]["user_spend"]
    assert spend["total_spend_7d"] == 0 and spend["txn_count_30d"] == 0 and spend["avg_amount_7d"] is None
    assert body["features"]["user_profile"] is None
    early = http.post("/features/online", json={"features": ["user_spend"], "entity": {"user_id": "u001"}, "at": (watermark - timedelta(seconds=1)).isoformat()})
    assert early.status_code == 422 and "watermark" in early.json()["detail"]
    naive = http.post("/features/online", json={"features": ["user_spend"], "entity": {"user_id": "u001"}, "at": watermark.replace(tzinfo=None).isoformat()})
    assert naive.status_code == 200 and naive.json()["at"] == watermark.isoformat()  # naive = UTC (T1)
    assert http.post("/features/online", json={"features": ["user_spend"], "entity": {"user_id": "u001"}, "at": "yesterday"}).status_code == 422


def test_rest_reads_of_a_feature_never_built_are_unknown_feature_as_in_python(tmp_path, monkeypatch):
    # contract O1, O3: a defined feature with no version offline and nothing online is what
    # Python's online and training reads call an unknown feature (404 over REST), not zeros
    # for every entity; once built (while the server runs) it is read as any other
    root = shop(tmp_path, "    online_store: {KIND: memory}\n")
    monkeypatch.chdir(root)
    defs = load_definitions(root, profile="served")
    defs.build(["user_profile"], online=True)
    http = rest(defs)
    single = http.post("/features/online", json={"features": ["user_profile", "user_spend"], "entity": {"user_id": "u001"}})
    assert single.status_code == 404, single.text
    assert "unknown feature 'user_spend'" in single.json()["detail"] and "mlforge build --features user_spend --online" in single.json()["fix"]
    assert http.post("/features/batch", json={"features": ["user_spend"], "entities": [{"user_id": "u001"}]}).status_code == 404
    with pytest.raises(mlf.errors.RetrievalError, match="unknown feature 'user_spend'"):
        defs.get_online_features(["user_spend"], pa.table({"user_id": ["u001"]}))
    defs.build(["user_spend"], online=True)
    watermark = datetime.fromtimestamp(defs.offline_store.read_metadata("user_spend")["watermark"], tz=UTC)
    built = http.post("/features/online", json={"features": ["user_spend"], "entity": {"user_id": "u001"}, "at": watermark.isoformat()})
    assert built.status_code == 200, built.text
    assert built.json()["features"]["user_spend"] == {"user_id": "u001", "event_time": watermark.isoformat(), **training_row(defs, "u001", watermark)}


def test_serve_loads_a_memory_store_at_start_and_says_so(tmp_path, monkeypatch):
    # `mlforge serve` with `online_store: {KIND: memory}` used to answer nulls while /health said ok
    from mlforge.serve import start_up

    root = shop(tmp_path, "    online_store: {KIND: memory}\n")
    monkeypatch.chdir(root)
    assert run(["build", "--profile", "served", "--format", "json"]) == 0
    defs = load_definitions(root, profile="served")  # a fresh process: an empty memory store
    line = start_up(defs, workers=1)
    assert "loaded the latest versions into this process" in line and "user_spend 1.0.0 (" in line and "entities)" in line
    http = rest(defs)
    answer = http.post("/features/online", json={"features": ["user_profile"], "entity": {"user_id": "u001"}}).json()
    assert answer["metadata"]["user_profile"]["known"] is True and answer["features"]["user_profile"]["country"]
    with pytest.raises(ConfigError, match="keeps its values inside one process; 2 workers") as info:
        start_up(defs, workers=2)
    assert "--workers 1" in info.value.fix


def test_cli_serve_refuses_several_workers_with_a_memory_store(tmp_path, monkeypatch, capsys):
    root = shop(tmp_path, "    online_store: {KIND: memory}\n")
    monkeypatch.chdir(root)
    assert run(["serve", "--profile", "served", "--workers", "2"]) == 2
    assert "keeps its values inside one process" in capsys.readouterr().err


def test_cli_serve_prints_its_start_up_line(tmp_path, monkeypatch, capsys):
    import uvicorn

    root = shop(tmp_path, "    online_store: {KIND: memory}\n")
    monkeypatch.chdir(root)
    assert run(["build", "--profile", "served", "--format", "json"]) == 0
    served = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: served.append(kwargs))
    capsys.readouterr()
    assert run(["serve", "--profile", "served", "--port", "8765"]) == 0
    err = capsys.readouterr().err
    assert "mlforge serve: serving 3 feature(s) of project 'shop' from MemoryStore: loaded the latest versions" in err
    assert "on http://127.0.0.1:8765 with 1 worker(s)" in err and served[0]["port"] == 8765


def test_build_online_reports_entities_written_and_removed(tmp_path, monkeypatch, capsys):
    root = shop(tmp_path, "    online_store: {KIND: memory}\n")
    monkeypatch.chdir(root)
    capsys.readouterr()
    assert run(["build", "--online", "--profile", "served", "--features", "user_spend,user_profile", "--format", "json"]) == 0
    report = {f["name"]: f for f in json.loads(capsys.readouterr().out)["features"]}
    assert report["user_profile"]["online_written"] == 50 and report["user_profile"]["online_removed"] == 0
    assert 0 < report["user_spend"]["online_written"] <= 50
    assert run(["build", "--online", "--profile", "served", "--features", "user_profile"]) == 0
    out = capsys.readouterr().out
    assert "online written" in out and "online removed" in out


@pytest.mark.service
def test_a_rollback_with_online_serves_what_training_reads(tmp_path, monkeypatch, request, capsys):
    # contract O1, S4, S8: after `rollback --online` the online store serves the version
    # training reads; without it, the rollback says how to publish, and a pinned read's
    # fix names a command that does not undo the rollback
    import pyarrow.parquet as pq

    from mlforge.errors import RetrievalError

    host, port = request.getfixturevalue("redis_server")
    root = shop(tmp_path, f"    online_store: {{KIND: redis, host: {host}, port: {port}, prefix: {unique('rb')}}}\n")
    monkeypatch.chdir(root)
    events = root / "data" / "transactions.parquet"
    everything = pq.read_table(events)
    newest = max(everything.column("event_time").to_pylist())
    pq.write_table(everything.filter(pa.compute.less(everything["event_time"], pa.scalar(newest - timedelta(days=3), everything.schema.field("event_time").type))), events)
    assert run(["build", "--online", "--profile", "served", "--features", "user_spend"]) == 0
    pq.write_table(everything, events)
    assert run(["build", "--online", "--profile", "served", "--features", "user_spend"]) == 0
    capsys.readouterr()

    assert run(["rollback", "user_spend", "1.0.0", "--yes", "--profile", "served"]) == 0
    assert "`mlforge rollback user_spend 1.0.0 --online --yes --profile served`" in capsys.readouterr().err  # the note: online still serves 1.0.1
    defs = load_definitions(root, profile="served")
    with pytest.raises(RetrievalError) as pinned:
        defs.get_online_features([("user_spend", "1.0.0")], pa.table({"user_id": ["u1"]}))
    assert "mlforge rollback user_spend 1.0.0 --online --yes" in pinned.value.fix
    shown = rest(defs).get("/features/user_spend").json()
    assert (shown["version"], shown["served_version"]) == ("1.0.0", "1.0.1")  # what lookups answer from, said

    assert run(["rollback", "user_spend", "1.0.0", "--yes", "--online", "--profile", "served"]) == 0
    assert "published user_spend 1.0.0 online" in capsys.readouterr().out
    defs = load_definitions(root, profile="served")
    assert defs.offline_store.latest_version("user_spend") == "1.0.0" and defs.offline_store.list_versions("user_spend") == ["1.0.0", "1.0.1"]
    watermark = datetime.fromtimestamp(defs.offline_store.read_metadata("user_spend", "1.0.0")["watermark"], tz=UTC)
    users = sorted(set(defs.read_feature("user_spend").to_pyarrow().column("user_id").to_pylist()))
    http = rest(defs)
    assert http.get("/features/user_spend").json()["served_version"] == "1.0.0"
    for at in (watermark, watermark + timedelta(days=2, hours=3)):
        answer = http.post("/features/batch", json={"features": ["user_spend"], "entities": [{"user_id": u} for u in users], "at": at.isoformat()})
        assert answer.status_code == 200, answer.text
        for user, result in zip(users, answer.json()["results"], strict=True):
            served = {k: v for k, v in result["features"]["user_spend"].items() if k not in ("user_id", "event_time")}
            assert served == pytest.approx(training_row(defs, user, at)), (user, at)
    assert defs.get_online_features([("user_spend", "1.0.0")], pa.table({"user_id": users[:1]})) is not None  # the pin is served now


def test_entity_rows_as_dicts_read_what_a_frame_reads(tmp_path, monkeypatch):
    # contract O1, O2 through Feast's spelling: a list of dicts in, a list of dicts out, in order
    from mlforge.errors import RetrievalError

    root = shop(tmp_path, "    online_store: {KIND: memory}\n")
    monkeypatch.chdir(root)
    defs = load_definitions(root, profile="served")
    defs.build(FEATURES, online=True)
    at = datetime.fromtimestamp(defs.offline_store.read_metadata("user_spend")["watermark"], tz=UTC) + timedelta(days=2)
    rows = [{"user_id": "u003"}, {"user_id": "nobody"}, {"user_id": "u001"}]
    answered = defs.get_online_features(FEATURES, rows, at=at, with_metadata=True)
    framed = defs.get_online_features(FEATURES, pa.Table.from_pylist(rows), at=at, with_metadata=True).to_pylist()
    assert answered == framed and [r["user_id"] for r in answered] == ["u003", "nobody", "u001"]
    assert answered[1]["user_spend__known"] is False and answered[0]["user_spend__known"] is True
    with pytest.raises(RetrievalError, match="the entity rows do not make a table"):
        defs.get_online_features(FEATURES, [{"user_id": "u001"}, {"user_id": 3}], at=at)
