"""The latest pointer never moves backwards (contract S8), on Local, S3 (moto server) and GCS
(gcp-storage-emulator).

A build process is paused at the ``pointer`` checkpoint (``MLFORGE_FAULT_PAUSE``, see
``mlforge.offline.versioned.checkpoint``) after it read the pointer and before it moves it;
meanwhile a second build publishes a newer version and moves the pointer there; then the
first build resumes. Its compare-and-swap fails, it reads the pointer again, finds a newer
version and leaves it: ``latest`` is the newer version, the older one stays published.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import mlforge as mlf
from mlforge.engines import get_engine
from mlforge.offline.versioned import FAULT_LOG_ENV, FAULT_PAUSE_ENV, FAULT_RESUME_ENV
from mlforge.operations import rollback
from test_storage import (  # noqa: F401  (the service fixtures)
    BUCKET,
    STORES,
    gcs_endpoint,
    make_store,
    s3_endpoint,
    spend_feature,
    write_source,
)

BUILDER = textwrap.dedent(
    """
    import json, sys
    import mlforge as mlf

    source, kind, options = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    window = sys.argv[4] if len(sys.argv) > 4 else "2d"
    if kind == "local":
        store = mlf.LocalStore(options["path"])
    elif kind == "s3":
        from mlforge.offline.s3 import S3Store
        store = S3Store(**options)
    else:
        from mlforge.offline.gcs import GCSStore
        store = GCSStore(**options)

    @mlf.feature(source=source, keys=["user_id"], timestamp="ts", interval="1d", metrics=[mlf.Sum("amt", windows=[window])])
    def spend(t):
        return t.select("user_id", "ts", "amt")

    result = mlf.Definitions("pointer", [spend], offline_store=store, engine="duckdb").build()["spend"]
    print(json.dumps({"status": result.status, "version": result.version, "error": str(result.error)}), flush=True)
    """
)


@pytest.fixture(params=STORES)
def store(request, tmp_path):
    return make_store(request.param, request, tmp_path)


@pytest.fixture(scope="module")
def duckdb():
    """One DuckDB connection for the module (a connection per build is slow)."""
    return get_engine("duckdb")


def store_options(store, tmp_path: Path) -> dict:
    """How the subprocess opens the same store (its own cache and staging directories)."""
    if store.kind == "local":
        return {"path": str(store.path)}
    local = {"cache_dir": str(tmp_path / "cache-a"), "staging_dir": str(tmp_path / "staging-a")}
    return {"bucket": BUCKET, "prefix": store.prefix, "endpoint_url": store.blobs.endpoint_url, **local}


def test_an_older_build_never_moves_latest_back(store, tmp_path, duckdb):  # contract S8
    """Build A (1.0.1) pauses at the pointer move; build B publishes 1.0.2 and moves latest
    there; A resumes and leaves latest at 1.0.2. Both versions stay published and readable;
    ``rollback`` still moves the pointer back explicitly."""
    source = tmp_path / "tx.parquet"
    write_source(source, days=4)
    feature = spend_feature(source)
    defs = mlf.Definitions("pointer", [feature], offline_store=store, engine=duckdb)
    assert defs.build()["spend"].version == "1.0.0"

    write_source(source, days=5)  # new data: A builds a PATCH, 1.0.1
    a, resume = paused_at_pointer(store, tmp_path, source)
    try:
        assert store.list_versions("spend") == ["1.0.0", "1.0.1"]  # A's version is committed...
        assert store.latest_version("spend") == "1.0.0"  # ...and not yet latest

        write_source(source, days=6)  # B: newer data, published past every version
        b = defs.build()["spend"]
        assert (b.status, b.version) == ("built", "1.0.2"), b.error
        assert store.latest_version("spend") == "1.0.2"
    finally:
        resume.touch()
        out, err = a.communicate(timeout=120)
    assert a.returncode == 0, err
    assert json.loads(out.splitlines()[-1]) == {"status": "built", "version": "1.0.1", "error": "None"}
    assert "version 1.0.1 is published, but latest stays at 1.0.2" in err  # reported, not silent

    assert store.latest_version("spend") == "1.0.2"  # contract S8: never moved backwards
    assert store.list_versions("spend") == ["1.0.0", "1.0.1", "1.0.2"]  # nothing lost
    assert defs.read_feature("spend", version="1.0.1").count().to_pyarrow().as_py() == store.read_record("spend", "1.0.1").rows
    assert rollback(store, "spend", "1.0.1") == ("1.0.2", "1.0.1")  # explicit: backwards is allowed
    assert store.latest_version("spend") == "1.0.1"


def test_a_build_beside_a_committed_version_is_labelled_from_it(store, tmp_path, duckdb):  # contract S2, S8
    """Build A (the window 2d -> 4d: MAJOR, 2.0.0) has committed its version and pauses
    before its pointer move; build B (the 2d definition, new data) runs meanwhile. B is
    numbered past 2.0.0 and labelled as the step from it: 3.0.0, MAJOR, "columns removed" --
    before, it published 2.0.1 labelled PATCH without 2.0.0's column, and `diff 2.0.0
    2.0.1` said MAJOR."""
    source = tmp_path / "tx.parquet"
    write_source(source, days=4)
    defs = mlf.Definitions("pointer", [spend_feature(source)], offline_store=store, engine=duckdb)
    assert defs.build()["spend"].version == "1.0.0"
    a, resume = paused_at_pointer(store, tmp_path, source, "4d")
    try:
        assert store.list_versions("spend") == ["1.0.0", "2.0.0"] and store.latest_version("spend") == "1.0.0"
        write_source(source, days=5)
        b = defs.build()["spend"]
        assert (b.status, b.version, b.change) == ("built", "3.0.0", "MAJOR"), (b.version, b.change, b.reason, b.error)
        assert "amt_sum_4d" in str(b.reason)
    finally:
        resume.touch()
        out, err = a.communicate(timeout=120)
    assert a.returncode == 0, err
    assert json.loads(out.splitlines()[-1])["version"] == "2.0.0"
    assert store.latest_version("spend") == "3.0.0"  # S8: never moved back to A's 2.0.0
    assert "amt_sum_2d" in store.read_record("spend", "3.0.0").schema


def test_a_build_equal_to_a_commit_beside_it_adopts_it(store, tmp_path, duckdb):  # contract S2, S8
    """Two builds of the same inputs at once: A has committed 1.0.1 and pauses before its
    pointer move; B, equal to it, moves latest to 1.0.1 and publishes nothing (before, it
    published the same rows again as 1.0.2). A then finds latest already at its version."""
    source = tmp_path / "tx.parquet"
    write_source(source, days=4)
    defs = mlf.Definitions("pointer", [spend_feature(source)], offline_store=store, engine=duckdb)
    assert defs.build()["spend"].version == "1.0.0"
    write_source(source, days=5)  # the new data both builds read
    a, resume = paused_at_pointer(store, tmp_path, source)
    try:
        assert store.list_versions("spend") == ["1.0.0", "1.0.1"] and store.latest_version("spend") == "1.0.0"
        b = defs.build()["spend"]
        assert (b.status, b.version) == ("skipped", "1.0.1"), (b.status, b.version, b.reason, b.error)
        assert "published but not latest" in b.reason
        assert store.latest_version("spend") == "1.0.1"
    finally:
        resume.touch()
        out, err = a.communicate(timeout=120)
    assert a.returncode == 0, err
    assert json.loads(out.splitlines()[-1])["version"] == "1.0.1"
    assert store.list_versions("spend") == ["1.0.0", "1.0.1"] and store.latest_version("spend") == "1.0.1"


def test_after_a_rollback_a_build_equal_to_a_hidden_version_publishes_it_again(store, tmp_path, duckdb):  # contract S2, S4, S8
    """A rollback hides the versions above it on purpose: a build equal to one of them is
    a new PATCH past them (latest moves forward, S8), not a move back onto the hidden one."""
    defs = two_versions(store, tmp_path, duckdb)
    assert rollback(store, "spend", "1.0.0") == ("1.0.1", "1.0.0")
    store.blobs.put("spend/_latest.json", b'{"version": "1.0.0"}')  # as a rollback before "hides" wrote it...
    assert rollback(store, "spend", "1.0.0") == ("1.0.0", "1.0.0")  # ...mended by rolling back onto it again
    assert json.loads(store.blobs.get("spend/_latest.json")) == {"version": "1.0.0", "hides": "1.0.1"}
    again = defs.build()["spend"]
    assert (again.status, again.version, again.change, again.reason) == ("built", "1.0.2", "PATCH", "the rows of 1.0.1, published again")
    assert store.latest_version("spend") == "1.0.2"
    assert defs.build()["spend"].status == "skipped"  # and then unchanged is unchanged


def paused_at_pointer(store, tmp_path: Path, source: Path, *window: str) -> tuple[subprocess.Popen, Path]:
    """Build A in a process of its own, paused at its pointer move (its version committed):
    the process and the file whose creation resumes it."""
    script = tmp_path / "builder.py"
    script.write_text(BUILDER)
    checkpoints, resume = tmp_path / "checkpoints.log", tmp_path / "resume"
    env = {**os.environ, FAULT_LOG_ENV: str(checkpoints), FAULT_PAUSE_ENV: "pointer:120", FAULT_RESUME_ENV: str(resume)}
    a = subprocess.Popen(
        [sys.executable, str(script), str(source), store.kind, json.dumps(store_options(store, tmp_path)), *window],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    try:
        _wait_for(checkpoints, f"pointer {a.pid}", a)
    except BaseException:
        a.kill()
        raise
    return a, resume


def two_versions(store, tmp_path: Path, engine) -> mlf.Definitions:
    """The project of these tests with versions 1.0.0 and 1.0.1 (new data) built."""
    source = tmp_path / "tx.parquet"
    write_source(source, days=4)
    defs = mlf.Definitions("pointer", [spend_feature(source)], offline_store=store, engine=engine)
    assert defs.build()["spend"].version == "1.0.0"
    write_source(source, days=5)
    assert defs.build()["spend"].version == "1.0.1"
    return defs


def _wait_for(log: Path, line: str, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if log.exists() and line in log.read_text():
            return
        if process.poll() is not None:
            raise AssertionError(f"the build ended before {line!r}: {process.communicate()}")
        time.sleep(0.02)
    raise AssertionError(f"the build never reached {line!r}")


def test_publishing_an_older_version_leaves_a_newer_latest(store, tmp_path, caplog, duckdb):  # contract S8
    """The same rule without processes: a publish of a version older than ``latest``
    commits it and leaves the pointer; a newer one moves it."""
    two_versions(store, tmp_path, duckdb)
    record = store.read_record("spend", "1.0.1")
    staging = store.stage("spend")
    for path in store.data_files("spend", "1.0.1"):
        Path(staging.data_dir, Path(path).name).write_bytes(Path(path).read_bytes())
    assert store.publish(staging, "0.9.0", record) == "1.0.1"
    assert store.latest_version("spend") == "1.0.1" and "0.9.0" in store.list_versions("spend")
    assert "latest stays at 1.0.1" in caplog.text


def test_pointer_compare_and_swap_refuses_a_stale_tag(store):  # contract S8
    """The mechanism underneath, per backend: S3 If-Match/If-None-Match on the ETag, GCS
    ifGenerationMatch, local compare under an flock'd lock file."""
    blobs = store.blobs
    key = "cas/_latest.json"
    assert blobs.get_with_tag(key) is None
    assert blobs.put_if_tag(key, b'{"version": "1.0.0"}', None)
    assert not blobs.put_if_tag(key, b'{"version": "9.9.9"}', None)  # exists already
    first = blobs.get_with_tag(key)
    assert blobs.put_if_tag(key, b'{"version": "1.0.1"}', first.tag)
    assert not blobs.put_if_tag(key, b'{"version": "1.0.0"}', first.tag)  # stale: someone moved it
    assert blobs.get(key) == b'{"version": "1.0.1"}'


def test_an_unreadable_pointer_is_mended_by_rollback(store, tmp_path, duckdb):  # contract S8, E1
    """A damaged ``_latest.json`` stops builds and latest reads with a fix that names
    rollback; that rollback (to a named version) works, and so do listings of versions."""
    from mlforge.errors import StoreError

    source = tmp_path / "tx.parquet"
    write_source(source)
    defs = mlf.Definitions("pointer", [spend_feature(source)], offline_store=store, engine=duckdb)
    assert defs.build()["spend"].version == "1.0.0"
    store.blobs.put("spend/_latest.json", b"{not json")
    with pytest.raises(StoreError, match="unreadable") as caught:
        store.latest_version("spend")
    assert "rollback spend VERSION" in caught.value.fix
    assert store.list_versions("spend") == ["1.0.0"]
    with pytest.raises(StoreError, match="unreadable"):
        rollback(store, "spend", previous=True)  # "before latest" needs a latest
    assert rollback(store, "spend", "1.0.0") == (None, "1.0.0")
    assert store.latest_version("spend") == "1.0.0" and defs.build()["spend"].status == "skipped"


def test_list_versions_shows_the_versions_beside_an_unreadable_pointer(tmp_path, monkeypatch, run_cli):  # contract E1
    monkeypatch.chdir(tmp_path)
    source = tmp_path / "tx.parquet"
    write_source(source)
    (tmp_path / "definitions.py").write_text(textwrap.dedent(f"""
        import mlforge as mlf
        @mlf.feature(source={str(source)!r}, keys=["user_id"], timestamp="ts", interval="1d", metrics=[mlf.Sum("amt", windows=["2d"])])
        def spend(t):
            return t.select("user_id", "ts", "amt")
        defs = mlf.Definitions("pointer", [spend], offline_store=mlf.LocalStore("store"))
    """))
    assert run_cli("build", "-q")[0] == 0
    (tmp_path / "store" / "spend" / "_latest.json").write_text("{not json")
    code, out, err = run_cli("list", "versions", "spend", "--format", "json")
    assert code == 0 and [r["version"] for r in json.loads(out)] == ["1.0.0"] and "unreadable" in err and "rollback spend" in err
    assert run_cli("rollback", "spend", "1.0.0", "--yes")[0] == 0
    assert run_cli("build", "-q")[0] == 0
