"""The REST server refuses before it reads: the token and the body size are checked on the
headers, so a large untokened or oversized request costs the server neither time nor memory
(issue: hardening). Keys that are NaN or Infinity are 422; GET on a POST route is 405.

The server runs as a real uvicorn process on loopback so that its memory is measured apart
from the client's.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import httpx
import pytest

from test_online_fixtures import free_port, wait_for_port

pytestmark = pytest.mark.service
TOKEN = "guard-token"
BODY_LIMIT = 1 << 20

SERVER = """
import sys
import pyarrow as pa
import uvicorn
import mlforge as mlf
from mlforge.online.memory import MemoryStore
from mlforge.serve import create_app

@mlf.feature(source="unused.parquet", keys=["user_id"], timestamp="ts")
def user_spend(t):
    return t

store = MemoryStore()
store.write("user_spend", ["user_id"], [pa.table({"user_id": [1], "ts": pa.array([0], pa.timestamp("us", tz="UTC")), "spend_7d": [2.5]})])
defs = mlf.Definitions("guard", [user_spend], offline_store=mlf.LocalStore("unused"), online_store=store)
token = sys.argv[2] or None
uvicorn.run(create_app(defs, token=token, max_body_bytes=int(sys.argv[3])), host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
"""


def _serve(tmp_path, token: str) -> tuple[subprocess.Popen, int]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", SERVER, str(port), token, str(BODY_LIMIT)], cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wait_for_port(port, timeout=30)
    return proc, port


@pytest.fixture
def guarded(tmp_path):
    proc, port = _serve(tmp_path, TOKEN)
    yield proc, port
    proc.terminate()
    proc.wait(timeout=10)


def _post_huge(port: int, size: int, headers: str) -> tuple[int, float]:
    """Send the headers of a ``size``-byte POST, then stream the body until the server
    answers; returns the status and the seconds from the end of the headers to the answer."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        sock.sendall(f"POST /features/online HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {size}\r\n{headers}\r\n".encode())
        sent_headers = time.perf_counter()
        sock.setblocking(False)
        chunk = b"x" * (1 << 16)
        answer = b""
        deadline = time.monotonic() + 10
        sent = 0
        while b"\r\n" not in answer and time.monotonic() < deadline:
            try:
                answer += sock.recv(4096)
                break
            except BlockingIOError:
                pass
            if sent < size:
                try:
                    sent += sock.send(chunk)
                except (BlockingIOError, BrokenPipeError, ConnectionResetError):
                    time.sleep(0.001)
        elapsed = time.perf_counter() - sent_headers
        sock.setblocking(True)
        while b"\r\n" not in answer:
            answer += sock.recv(4096)
        return int(answer.split(b" ", 2)[1]), elapsed
    finally:
        sock.close()


def test_untokened_huge_post_is_refused_at_once_without_growing_the_server(guarded):
    psutil = pytest.importorskip("psutil")
    proc, port = guarded
    server = psutil.Process(proc.pid)
    before = server.memory_info().rss
    status, seconds = _post_huge(port, 200 * 2**20, "")
    grown = server.memory_info().rss - before
    assert status == 401
    assert seconds < 0.05, f"401 after {seconds:.3f}s"
    assert grown < 20 * 2**20, f"server RSS grew by {grown / 2**20:.1f} MiB"


def test_tokened_oversized_bodies_are_413(guarded):
    _proc, port = guarded
    status, seconds = _post_huge(port, 200 * 2**20, f"Authorization: Bearer {TOKEN}\r\n")
    assert status == 413 and seconds < 0.05
    # A chunked body declares no length: it is counted while read and refused past the limit.
    big = b'{"features": ["user_spend"], "entity": {"user_id": "' + b"u" * (2 * BODY_LIMIT) + b'"}}'
    answer = httpx.post(f"http://127.0.0.1:{port}/features/online", content=iter([big[i:i + 65536] for i in range(0, len(big), 65536)]), headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}, timeout=10)
    assert answer.status_code == 413
    assert "over the limit" in answer.json()["detail"]
    # The server still serves normal requests afterwards.
    ok = httpx.post(f"http://127.0.0.1:{port}/features/online", json={"features": ["user_spend"], "entity": {"user_id": 1}}, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
    assert ok.status_code == 200 and ok.json()["features"]["user_spend"]["spend_7d"] == 2.5


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_keys_are_422(guarded, literal):
    _proc, port = guarded
    body = f'{{"features": ["user_spend"], "entity": {{"user_id": {literal}}}}}'
    answer = httpx.post(f"http://127.0.0.1:{port}/features/online", content=body, headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}, timeout=10)
    assert answer.status_code == 422, answer.text
    batch = f'{{"features": ["user_spend"], "entities": [{{"user_id": 1}}, {{"user_id": {literal}}}]}}'
    answer = httpx.post(f"http://127.0.0.1:{port}/features/batch", content=batch, headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}, timeout=10)
    assert answer.status_code == 422, answer.text


def test_get_on_post_routes_names_the_method(guarded):
    _proc, port = guarded
    for route in ("online", "batch"):
        answer = httpx.get(f"http://127.0.0.1:{port}/features/{route}", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
        assert answer.status_code == 405
        assert answer.headers["allow"] == "POST" and f"/features/{route} takes POST" in answer.json()["detail"]


def test_an_empty_token_variable_beside_a_token_file_reads_the_file(tmp_path, monkeypatch):
    # a compose file's `MLFORGE_SERVE_TOKEN: ${TOKEN:-}` next to a mounted secret: auth on
    from fastapi.testclient import TestClient

    import mlforge as mlf
    from mlforge.online.memory import MemoryStore
    from mlforge.serve import create_app

    secret = tmp_path / "token"
    secret.write_text("from-file\n")
    monkeypatch.setenv("MLFORGE_SERVE_TOKEN", "")
    monkeypatch.setenv("MLFORGE_SERVE_TOKEN_FILE", str(secret))
    defs = mlf.Definitions("file", [], offline_store=mlf.LocalStore(str(tmp_path / "s")), online_store=MemoryStore())
    http = TestClient(create_app(defs))
    assert http.get("/features").status_code == 401
    assert http.get("/features", headers={"Authorization": "Bearer from-file"}).status_code == 200


def test_token_from_a_file(tmp_path, monkeypatch):
    from fastapi.testclient import TestClient

    import mlforge as mlf
    from mlforge.online.memory import MemoryStore
    from mlforge.serve import create_app

    secret = tmp_path / "token"
    secret.write_text("from-file\n")
    monkeypatch.delenv("MLFORGE_SERVE_TOKEN", raising=False)
    monkeypatch.setenv("MLFORGE_SERVE_TOKEN_FILE", str(secret))
    defs = mlf.Definitions("file", [], offline_store=mlf.LocalStore(str(tmp_path / "s")), online_store=MemoryStore())
    http = TestClient(create_app(defs))
    assert http.get("/features").status_code == 401
    assert http.get("/features", headers={"Authorization": "Bearer from-file"}).status_code == 200
    assert http.get("/health").status_code == 200
