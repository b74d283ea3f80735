"""Local services for the online-store and serving tests, started on loopback only.

``redis_server`` / ``valkey_server``: a throw-away ``redis-server`` / ``valkey-server``
subprocess (no persistence) on a free port;
``moto_dynamodb``: moto's threaded server speaking the DynamoDB API. Both are session
fixtures; a missing binary or package skips the tests that need it, naming the reason.
Test modules import these fixtures from here.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import uuid

import pytest


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.02)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


@pytest.fixture(scope="session")
def redis_server():
    """``(host, port)`` of a private redis-server, or a skip if none is installed."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    pytest.importorskip("redis", reason="the redis client is not installed (the redis extra)")
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port)
        yield ("127.0.0.1", port)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture(scope="session")
def valkey_server():
    """``(host, port)`` of a private valkey-server, or a skip if none is installed."""
    binary = shutil.which("valkey-server")
    if binary is None:
        pytest.skip("valkey-server is not installed (the ValkeyStore client is tested against redis-server in test_online_stores.py)")
    pytest.importorskip("valkey", reason="the valkey client is not installed (pip install 'mlforge[valkey]')")
    port = free_port()
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port)
        yield ("127.0.0.1", port)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture(scope="session")
def moto_dynamodb():
    """The endpoint URL of a moto server for DynamoDB, with dummy AWS credentials."""
    pytest.importorskip("boto3", reason="boto3 is not installed (the dynamodb extra)")
    server_mod = pytest.importorskip("moto.server", reason="moto is not installed (pip install 'moto[server]')")
    saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")}
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1")
    server = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


@pytest.mark.service
def test_redis_fixture_answers(redis_server):
    import redis

    host, port = redis_server
    assert redis.Redis(host=host, port=port).ping()
