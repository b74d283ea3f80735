"""One suite over every file-based offline store: Local, S3 (moto server) and GCS (emulator).

Contract S1-S5, E3, E4. The S3 and GCS services run in-process on loopback with real
clients (boto3, google-cloud-storage); the tests skip when those packages are missing.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import socket
import threading
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import mlforge as mlf
from mlforge.errors import ConcurrentPublish, DefinitionError, MlforgeError, VersionNotFound
from mlforge.offline.local import LocalStore
from mlforge.operations import diff_versions, rollback
from mlforge.versioning import ChangeKind

BUCKET = "mlforge-test"
STORES = ["local", pytest.param("s3", marks=pytest.mark.service), pytest.param("gcs", marks=pytest.mark.service)]
DOC = Path(__file__).resolve().parent.parent / "docs" / "storage.md"


# -- services ----------------------------------------------------------------------------
@pytest.fixture(scope="session")
def s3_endpoint():
    """A moto S3 server on loopback, with a bucket; credentials are dummies."""
    pytest.importorskip("boto3")
    server_module = pytest.importorskip("moto.server")
    for var, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        os.environ.setdefault(var, value)
    server = server_module.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    import boto3

    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket=BUCKET)
    yield endpoint
    server.stop()


@pytest.fixture(scope="session")
def gcs_endpoint(tmp_path_factory):
    """gcp-storage-emulator on loopback, in memory, with a bucket."""
    pytest.importorskip("google.cloud.storage")
    # The emulator resolves its base directory at import; never let that be a vanished cwd.
    os.environ.setdefault("STORAGE_BASE", str(tmp_path_factory.mktemp("gcs-emulator")))
    emulator = pytest.importorskip("gcp_storage_emulator.server")
    _honour_if_generation_match()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = emulator.create_server("127.0.0.1", port, in_memory=True, default_bucket=BUCKET)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


def _honour_if_generation_match() -> None:
    """The emulator ignores ``ifGenerationMatch``; real GCS answers 412 when the object's
    generation differs (``0``: when it exists). Teach it that precondition, which
    GCSStore's commit (``0``) and its latest pointer's compare-and-swap (S8) rely on."""
    from http import HTTPStatus

    from gcp_storage_emulator.exceptions import NotFound
    from gcp_storage_emulator.handlers import objects

    if getattr(objects, "_mlforge_patched", False):
        return
    lock = threading.Lock()

    def guarded(upload):
        def handler(request, response, storage):
            match = request.query.get("ifGenerationMatch")
            if not match:
                return upload(request, response, storage)
            name = request.query.get("name", [None])[0]
            if name is None and isinstance(request.data, dict):
                name = request.data.get("meta", {}).get("name")
            with lock:
                try:
                    generation = str(storage.get_file_obj(request.params["bucket_name"], name).get("generation"))
                except NotFound:
                    generation = "0"
                if generation == match[0]:
                    return upload(request, response, storage)
                response.status = HTTPStatus.PRECONDITION_FAILED
                response.json({"error": {"code": 412, "message": "conditionNotMet", "errors": [{"reason": "conditionNotMet", "message": "conditionNotMet"}]}})
                return None

        return handler

    objects._media_upload = guarded(objects._media_upload)
    objects._multipart_upload = guarded(objects._multipart_upload)
    objects._mlforge_patched = True


def make_store(kind: str, request, tmp_path: Path):
    """A fresh, empty store of ``kind`` (its own prefix in the shared bucket)."""
    prefix = f"t-{uuid.uuid4().hex[:10]}"
    local = {"cache_dir": tmp_path / "cache", "staging_dir": tmp_path / "staging"}
    if kind == "local":
        return LocalStore(tmp_path / "feature_store")
    if kind == "s3":
        from mlforge.offline.s3 import S3Store

        return S3Store(BUCKET, prefix=prefix, region="us-east-1", endpoint_url=request.getfixturevalue("s3_endpoint"), **local)
    from mlforge.offline.gcs import GCSStore

    return GCSStore(BUCKET, prefix=prefix, endpoint_url=request.getfixturevalue("gcs_endpoint"), **local)


@pytest.fixture(params=STORES)
def store(request, tmp_path):
    return make_store(request.param, request, tmp_path)


# -- definitions -------------------------------------------------------------------------
DAY = dt.timedelta(days=1)
START = dt.datetime(2024, 1, 1)


def write_source(path: Path, days: int = 6, users: int = 3) -> None:
    rows = [
        {"user_id": u, "country": "DE" if u % 2 else "FR", "ts": START + i * DAY + dt.timedelta(hours=u), "ts2": START + i * DAY, "amt": float(u * 10 + i)}
        for i in range(days) for u in range(1, users + 1)
    ]
    pq.write_table(pa.Table.from_pylist(rows), path)


def spend_feature(source: Path, *, keys=("user_id",), interval="1d", timestamp="ts", windows=("2d",), count=False, validators=None, boom=False):
    """``spend`` in several variants; each variant is what a user would edit in place."""
    metrics = [mlf.Sum("amt", windows=list(windows))]
    if count:
        metrics.append(mlf.Count("amt", windows=["2d"]))

    def spend(t):
        if boom:
            raise RuntimeError("feature function exploded")
        return t.select(*keys, timestamp, "amt")

    return mlf.feature(source=str(source), keys=list(keys), timestamp=timestamp, interval=interval, metrics=metrics, validators=validators)(spend)


_ENGINE = None


def _duckdb():
    """One DuckDB engine for the single-threaded tests (a connection per build is slow)."""
    global _ENGINE
    if _ENGINE is None:
        from mlforge.engines import get_engine

        _ENGINE = get_engine("duckdb")
    return _ENGINE


def build(store, feature, *, engine=None, **kwargs):
    defs = mlf.Definitions("storage-test", [feature], offline_store=store, engine=engine or _duckdb())
    return defs.build(raise_on_error=False, **kwargs)["spend"]


def read_rows(store, version=None, engine=None):
    engine = engine or _duckdb()
    table = store.read("spend", engine, version).to_pyarrow()
    return table.sort_by([(c, "ascending") for c in table.column_names]).to_pylist()


def assert_complete(store, feature="spend"):
    """Every listed version has metadata and readable data whose row count matches (S1)."""
    from mlforge.manifest import files_hash

    for version in store.list_versions(feature):
        meta = store.read_metadata(feature, version)
        files = store.data_files(feature, version)
        assert sum(pq.read_metadata(f).num_rows for f in files) == meta["rows"], version
        assert files_hash(files) == meta["data_hash"], version
    latest = store.latest_version(feature)
    assert latest is None or latest in store.list_versions(feature)


# -- S2, S3, P4, S4: one history of builds per store --------------------------------------
def test_version_history(store, tmp_path):
    """contract S2 (every change kind), S3 (metadata), P4 (pinned reads), S4 (diff, rollback)."""
    source = tmp_path / "tx.parquet"
    write_source(source)
    steps = []

    def step(feature, expected_status, expected_version, kind=None, reason=None):
        result = build(store, feature)
        assert result.status == expected_status, result.error
        assert result.version == expected_version
        if kind:
            assert result.change == kind
            meta = store.read_metadata("spend", expected_version)
            assert meta["change"] == kind and meta["reason"] == result.reason  # contract S2: reason stored
            assert re.search(reason, meta["reason"]), meta["reason"]
        steps.append(expected_version)

    step(spend_feature(source), "built", "1.0.0", "MAJOR", "first build")  # contract S2
    first_rows = read_rows(store)
    step(spend_feature(source), "skipped", "1.0.0")  # contract S2: unchanged -> no version
    write_source(source, days=7)
    step(spend_feature(source), "built", "1.0.1", "PATCH", "new data")  # contract S2
    step(spend_feature(source, count=True), "built", "1.1.0", "MINOR", "columns added")
    step(spend_feature(source), "built", "2.0.0", "MAJOR", "columns removed")
    step(spend_feature(source, keys=("user_id", "country")), "built", "3.0.0", "MAJOR", "keys changed")
    step(spend_feature(source, keys=("user_id", "country"), interval="2d", windows=("2d",)), "built", "4.0.0", "MAJOR", "interval changed")
    step(spend_feature(source, keys=("user_id", "country"), interval="2d", timestamp="ts2"), "built", "5.0.0", "MAJOR", "timestamp column changed")
    assert store.list_versions("spend") == ["1.0.0", "1.0.1", "1.1.0", "2.0.0", "3.0.0", "4.0.0", "5.0.0"]
    assert store.latest_version("spend") == "5.0.0"
    assert store.list_features() == ["spend"]

    # contract S3: the metadata record
    meta = store.read_metadata("spend", "1.1.0")
    for field in ("name", "version", "keys", "timestamp", "interval", "schema", "metrics", "rows", "created_at",
                  "definition_hash", "schema_hash", "data_hash", "source_fingerprint", "build_range", "watermark"):
        assert field in meta, field
    assert meta["schema"] == {"user_id": "int64", "ts": "timestamp[UTC]", "amt_sum_2d": "float64", "amt_count_2d": "int64"}
    assert [m["name"] for m in meta["metrics"]] == ["amt_sum_2d", "amt_count_2d"]

    # contract P4: a pinned version reads exactly that version
    assert read_rows(store, "1.0.0") == first_rows
    assert "amt_count_2d" in store.read("spend", _duckdb(), "1.1.0").columns
    assert len(read_rows(store, "1.0.1")) > len(first_rows)
    with pytest.raises(VersionNotFound):
        store.read("spend", _duckdb(), "9.9.9")

    # contract S4: diff exit codes
    assert diff_versions(store, "spend", "1.0.0", "1.0.0")["exit_code"] == 0
    assert diff_versions(store, "spend", "1.0.0", "1.0.1")["exit_code"] == 1
    minor = diff_versions(store, "spend", "1.0.1", "1.1.0")
    assert (minor["exit_code"], minor["kind"]) == (2, ChangeKind.MINOR)
    assert minor["schema_changes"]["added"] == {"amt_count_2d": "int64"}
    assert diff_versions(store, "spend", "1.1.0", "2.0.0")["exit_code"] == 3
    default = diff_versions(store, "spend")  # v2 = latest, v1 = the one before
    assert (default["from"], default["to"], default["exit_code"]) == ("4.0.0", "5.0.0", 3)
    with pytest.raises(MlforgeError):  # the CLI maps any error to exit code 4
        diff_versions(store, "spend", "1.0.0", "8.0.0")

    # contract S4: rollback only moves the pointer
    before = {v: store.read_metadata("spend", v) for v in store.list_versions("spend")}
    assert rollback(store, "spend", "1.0.1", dry_run=True) == ("5.0.0", "1.0.1")
    assert store.latest_version("spend") == "5.0.0"
    assert rollback(store, "spend", previous=True) == ("5.0.0", "4.0.0")
    assert rollback(store, "spend", "1.0.0") == ("4.0.0", "1.0.0")
    assert store.latest_version("spend") == "1.0.0"
    assert read_rows(store) == first_rows
    assert {v: store.read_metadata("spend", v) for v in store.list_versions("spend")} == before
    # ... and a rebuild after the rollback is numbered past every version, its label the
    # step from the highest (5.0.0 had other keys), never a PATCH without 5.0.0's columns
    step(spend_feature(source), "built", "6.0.0", "MAJOR", "keys changed")
    assert store.latest_version("spend") == "6.0.0"
    assert_complete(store)


def test_reads_on_every_engine(store, tmp_path):
    """contract S5 via mlforge: a stored version reads the same on DuckDB and Polars."""
    pytest.importorskip("polars")
    from mlforge.engines import get_engine

    source = tmp_path / "tx.parquet"
    write_source(source)
    assert build(store, spend_feature(source)).status == "built"
    assert read_rows(store, engine=get_engine("polars")) == read_rows(store)


# -- E3: a failed build writes nothing visible ---------------------------------------------
def _visible_state(store):
    versions = store.list_versions("spend")
    return versions, store.latest_version("spend"), {v: store.read_metadata("spend", v) for v in versions}


def _stored_keys(store):
    return sorted(store.blobs.list("spend/"))


@pytest.mark.parametrize("failure", ["validation", "function raises", "publish raises"])
def test_failed_build_leaves_nothing(store, tmp_path, monkeypatch, failure):
    """contract E3: no version, no pointer move, no staging trace."""
    source = tmp_path / "tx.parquet"
    write_source(source)
    assert build(store, spend_feature(source)).version == "1.0.0"
    state, keys = _visible_state(store), _stored_keys(store)
    write_source(source, days=8)  # would be a PATCH
    if failure == "validation":
        feature = spend_feature(source, validators={"amt": mlf.less_than(5)})
    elif failure == "function raises":
        feature = spend_feature(source, boom=True)
    else:
        feature = spend_feature(source)
        target = "put_if_absent" if hasattr(store, "location") else None

        def explode(*args, **kwargs):
            raise OSError("disk on fire")

        if target:
            monkeypatch.setattr(store.blobs, target, explode)
        else:
            monkeypatch.setattr(os, "rename", explode)
    result = build(store, feature)
    monkeypatch.undo()
    assert result.status == "failed"
    assert _visible_state(store) == state
    assert _stored_keys(store) == keys
    assert store.staging_dirs("spend") == []
    assert_complete(store)


# -- S1 under concurrency --------------------------------------------------------------------
def test_concurrent_publish_of_one_version(store, tmp_path):
    """contract S1: two publishers of the same version; exactly one wins, the other gets
    ConcurrentPublish and leaves nothing behind."""
    source = tmp_path / "tx.parquet"
    write_source(source)
    assert build(store, spend_feature(source)).version == "1.0.0"
    metadata = store.read_metadata("spend", "1.0.0")
    stagings = [store.stage("spend") for _ in range(2)]
    for i, staging in enumerate(stagings):
        pq.write_table(pa.table({"user_id": [i], "ts": pa.array([START], pa.timestamp("us", tz="UTC")), "amt_sum_2d": [float(i)]}), f"{staging.data_dir}/part-00000.parquet")
    outcomes: list[object] = [None, None]

    def publish(i):
        try:
            store.publish(stagings[i], "1.0.1", {**metadata, "version": "1.0.1", "rows": 1, "data_hash": _hash(stagings[i])})
            outcomes[i] = "won"
        except ConcurrentPublish:
            outcomes[i] = "lost"

    threads = [threading.Thread(target=publish, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["lost", "won"]
    winner = outcomes.index("won")
    assert read_rows(store, "1.0.1") == [{"user_id": winner, "ts": dt.datetime(2024, 1, 1, tzinfo=dt.UTC), "amt_sum_2d": float(winner)}]
    assert len([k for k in store.blobs.list("spend/1.0.1/data/") if k.endswith(".parquet")]) == 1
    assert store.staging_dirs("spend") == []
    assert_complete(store)


def test_debris_of_a_killed_publisher_is_never_read(store, tmp_path):
    """contract S1 on object stores: data objects a killed build uploaded for a version it
    never committed are not part of that version when another build commits it."""
    if not hasattr(store, "location"):
        pytest.skip("a local version appears by one rename; there is no debris")
    source = tmp_path / "tx.parquet"
    write_source(source)
    stray = tmp_path / "stray.parquet"
    pq.write_table(pa.table({"user_id": [999]}), stray)
    store.blobs.upload(str(stray), "spend/1.0.0/data/0123456789abcdef-part-00000.parquet")
    assert store.list_versions("spend") == []  # contract S1: no metadata, no version
    assert build(store, spend_feature(source)).version == "1.0.0"
    assert 999 not in {row["user_id"] for row in read_rows(store)}
    committed = store.read_metadata("spend")["files"]
    assert sorted(k.rsplit("/", 1)[1] for k in store.blobs.list("spend/1.0.0/data/")) == sorted(committed)
    assert_complete(store)


def _hash(staging):
    import glob

    from mlforge.manifest import files_hash

    return files_hash(glob.glob(f"{staging.data_dir}/*.parquet"))


def test_concurrent_builds_never_corrupt(store, tmp_path):
    """contract S1: two builds of the same feature at once; one may fail with
    ConcurrentPublish, nothing is ever corrupt."""
    source = tmp_path / "tx.parquet"
    write_source(source)
    assert build(store, spend_feature(source)).version == "1.0.0"
    write_source(source, days=9)
    results = [None, None]

    from mlforge.engines import get_engine

    engines = [get_engine("duckdb") for _ in range(2)]  # one connection per thread

    def run(i):
        results[i] = build(store, spend_feature(source), engine=engines[i])

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    statuses = sorted(r.status for r in results)
    assert "built" in statuses
    for r in results:
        assert r.status == "built" or isinstance(r.error, ConcurrentPublish) or r.status == "skipped", r.error
    assert store.latest_version("spend") in {r.version for r in results if r.status == "built"}
    assert store.staging_dirs("spend") == []
    assert_complete(store)


# -- E4 --------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["../x", "a/b", "", "x\x00y", "x\ny", ".hidden"])
def test_bad_names_rejected(store, name):
    """contract E4: names that become paths are validated before any I/O."""
    with pytest.raises(DefinitionError):
        store.list_versions(name)
    with pytest.raises(DefinitionError):
        store.stage(name)
    with pytest.raises(MlforgeError):
        rollback(store, name, "1.0.0")
    with pytest.raises(MlforgeError):
        diff_versions(store, name)


@pytest.mark.parametrize("version", ["../1.0.0", "1.0", "1.0.0/..", "01.0.0", "1.0.0\n"])
def test_bad_versions_rejected(store, tmp_path, version):
    """contract E4: versions are path segments too."""
    staging = store.stage("spend")
    with pytest.raises(MlforgeError):
        store.publish(staging, version, {"rows": 0})
    with pytest.raises(MlforgeError):
        store.set_latest("spend", version)
    with pytest.raises(MlforgeError):
        store.read_metadata("spend", version)
    store.discard(staging)
    assert store.list_versions("spend") == []


# -- operations: manifest and sync -----------------------------------------------------------
def test_manifest_lists_every_version(store, tmp_path):
    source = tmp_path / "tx.parquet"
    write_source(source)
    feature = spend_feature(source)
    build(store, feature)
    write_source(source, days=7)
    build(store, feature)
    defs = mlf.Definitions("manifest-test", [feature], offline_store=store, engine=_duckdb())
    manifest = defs.manifest()
    json.dumps(manifest)  # JSON-ready
    entry = manifest["features"]["spend"]
    assert entry["latest"] == "1.0.1" and entry["defined"] is True
    assert sorted(entry["versions"]) == ["1.0.0", "1.0.1"]
    assert entry["versions"]["1.0.1"]["reason"] == "new data"


def _drop_data(store, version):
    """What a clone that carries only the committed metadata looks like."""
    prefix = f"spend/{version}/data/"
    keys = store.blobs.list(prefix)
    store.blobs.delete(keys)
    if hasattr(store, "cache_dir"):
        import shutil

        shutil.rmtree(store.cache_dir, ignore_errors=True)
    return keys


def test_sync_rebuilds_missing_data(store, tmp_path):
    """``sync``: metadata present, data absent -> rebuilt from the same definition and
    source; refused when the source changed unless forced."""
    source = tmp_path / "tx.parquet"
    write_source(source)
    feature = spend_feature(source)
    assert build(store, feature).version == "1.0.0"
    rows = read_rows(store)
    meta = store.read_metadata("spend", "1.0.0")
    _drop_data(store, "1.0.0")
    assert not store.has_data("spend", "1.0.0")
    defs = mlf.Definitions("sync-test", [feature], offline_store=store, engine=_duckdb())
    [entry] = defs.sync()
    assert (entry["version"], entry["status"]) == ("1.0.0", "rebuilt"), entry
    assert store.has_data("spend", "1.0.0")
    assert read_rows(store) == rows
    assert store.read_metadata("spend", "1.0.0")["data_hash"] == meta["data_hash"]
    assert defs.sync()[0]["status"] == "present"

    _drop_data(store, "1.0.0")
    write_source(source, days=9)  # the source moved on: the rebuild would not be 1.0.0
    [refused] = defs.sync()
    assert refused["status"] == "refused" and "source changed" in refused["reason"]
    assert not store.has_data("spend", "1.0.0")
    [forced] = defs.sync(force=True)
    assert forced["status"] == "rebuilt" and forced["data_hash_matches"] is False
    assert store.has_data("spend", "1.0.0")


# -- S5: the documented snippets run --------------------------------------------------------
def _doc_snippets() -> dict[str, str]:
    """Code blocks of docs/storage.md preceded by ``<!-- test: NAME -->``."""
    text = DOC.read_text()
    found = re.findall(r"<!-- test: ([\w-]+) -->\s*```python\n(.*?)```", text, flags=re.S)
    return dict(found)


@pytest.mark.parametrize("tool", ["duckdb", "polars", "pyarrow", "pandas", pytest.param("spark", marks=pytest.mark.spark)])
def test_doc_snippets_read_a_version(in_tmp, tool, request):
    """contract S5: the docs' plain-tool reading snippets run on a store built by mlforge."""
    if tool == "polars":
        pytest.importorskip("polars")
    snippets = _doc_snippets()
    assert tool in snippets, f"docs/storage.md has no tested {tool} snippet"
    source = in_tmp / "tx.parquet"
    write_source(source)
    store = LocalStore("feature_store")
    feature = spend_feature(source)
    assert build(store, feature).status == "built"
    expected = store.read_metadata("spend")["rows"]
    # The docs read a feature called user_spend; give them one.
    os.rename("feature_store/spend", "feature_store/user_spend")
    namespace: dict[str, object] = {}
    if tool == "spark":
        namespace["spark"] = request.getfixturevalue("spark_engine").session
    exec(compile(snippets[tool], f"docs/storage.md[{tool}]", "exec"), namespace)
    assert namespace["rows"] == expected


@pytest.mark.service
def test_doc_s3_snippet_reads_a_version(request, tmp_path, monkeypatch):
    """contract S5 on S3: the docs' PyArrow snippet reads a version mlforge wrote (moto)."""
    import functools

    from pyarrow import fs

    from mlforge.offline.s3 import S3Store

    endpoint = request.getfixturevalue("s3_endpoint")
    prefix = f"doc-{uuid.uuid4().hex[:8]}"
    store = S3Store(BUCKET, prefix=prefix, region="us-east-1", endpoint_url=endpoint, cache_dir=tmp_path / "cache", staging_dir=tmp_path / "staging")
    source = tmp_path / "tx.parquet"
    write_source(source)
    assert build(store, spend_feature(source)).version == "1.0.0"
    for key in store.blobs.list("spend/"):  # the docs read a feature called user_spend
        local = tmp_path / "copy"
        store.blobs.download(key, str(local))
        store.blobs.upload(str(local), "user_spend/" + key.split("/", 1)[1])
    expected = store.read_metadata("spend")["rows"]
    host = endpoint.split("://", 1)[1]
    monkeypatch.setattr(fs, "S3FileSystem", functools.partial(fs.S3FileSystem, endpoint_override=host, scheme="http", access_key="testing", secret_key="testing"))
    snippet = _doc_snippets()["pyarrow-s3"].replace("my-bucket/features", f"{BUCKET}/{prefix}")
    namespace: dict[str, object] = {}
    exec(compile(snippet, "docs/storage.md[pyarrow-s3]", "exec"), namespace)
    assert namespace["rows"] == expected


# -- optional dependencies -------------------------------------------------------------------
def test_cloud_clients_are_imported_lazily():
    """STYLE 2: importing the stores does not import boto3 or google-cloud-storage."""
    import subprocess
    import sys

    code = "import sys, mlforge.offline, mlforge.offline.s3, mlforge.offline.gcs, mlforge.operations; print(sorted(m for m in ('boto3', 'google.cloud.storage') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize(("kind", "module", "extra"), [("s3", "boto3", "s3"), ("gcs", "google.cloud", "gcs")])
def test_missing_client_names_the_extra(monkeypatch, kind, module, extra):
    """E1: a missing client library fails with the extra to install."""
    from mlforge.errors import EngineError, install_command
    from mlforge.offline.gcs import GCSStore
    from mlforge.offline.s3 import S3Store

    monkeypatch.setitem(__import__("sys").modules, module, None)
    store = S3Store(BUCKET) if kind == "s3" else GCSStore(BUCKET)
    with pytest.raises(EngineError) as raised:
        store.list_features()
    assert raised.value.fix == install_command(extra) and f"[{extra}]'" in raised.value.fix


def test_month_files_are_the_same_whatever_the_row_order_of_the_table(tmp_path):  # contract S5
    """A table sorted by month and a shuffled one give the same plain Parquet file per month
    (``YYYY-MM.parquet``, ``untimed.parquet``), rows in table order per month."""
    from mlforge.engines.monthfiles import write_arrow_table

    months = [202401, 202401, 202402, 202403, 202403, None]
    table = pa.table({"k": [1, 2, 1, 1, 2, 3], "v": [0.5, 1.5, 2.5, 3.5, 4.5, 5.5], "__month": months})
    shuffled = table.take([3, 0, 5, 2, 4, 1])
    for name, rows in (("sorted", table), ("shuffled", shuffled)):
        out = tmp_path / name
        out.mkdir()
        write_arrow_table(rows, str(out), "__month")
        files = {p.name: pq.read_table(p).to_pydict() for p in sorted(out.glob("*.parquet"))}
        assert sorted(files) == ["2024-01.parquet", "2024-02.parquet", "2024-03.parquet", "untimed.parquet"], name
        assert all("__month" not in columns for columns in files.values())
        assert files["2024-03.parquet"] == {"k": [1, 2], "v": [3.5, 4.5]}  # both tables hold them in this order
        assert files["untimed.parquet"] == {"k": [3], "v": [5.5]}
        assert sorted(files["2024-01.parquet"]["k"]) == [1, 2]


@pytest.mark.parametrize("parts", ["one part", "a part per key"])
@pytest.mark.parametrize("metric", [True, False], ids=["metric", "plain"])
def test_every_engine_writes_month_files_sorted_by_key_and_time(tmp_path, monkeypatch, metric, parts):  # contract S5
    """DuckDB and Polars write the same month files, each holding its rows by (key, time):
    Polars skips its sort only when its result already comes out that way (the metric
    feature's rolling plan) and sorts otherwise (a plain feature from shuffled events).
    Polars takes a large result out in key ranges; made to take ~one key at a time, it
    still writes the same files."""
    import random

    import mlforge.engines.polars as polars_engine

    taken = []
    if parts == "a part per key":
        monkeypatch.setattr(polars_engine, "PART_ROWS", 30)
        split = polars_engine.key_ranges
        monkeypatch.setattr(polars_engine, "key_ranges", lambda lazy, key: taken.append(split(lazy, key)) or taken[-1])
    from datetime import UTC, datetime, timedelta

    import mlforge as mlf

    rng = random.Random(5)
    start = datetime(2024, 1, 20, tzinfo=UTC)
    picked = {(f"u{rng.randrange(7)}", rng.randrange(24 * 70)) for _ in range(400)}  # no ties: their order is free
    rows = [(user, start + timedelta(hours=hour), rng.randrange(100)) for user, hour in sorted(picked)]
    rng.shuffle(rows)
    source = tmp_path / "events.parquet"
    pq.write_table(pa.table({"user_id": [r[0] for r in rows], "ts": pa.array([r[1] for r in rows], pa.timestamp("us", tz="UTC")), "amt": [r[2] for r in rows]}), source)
    options = {"interval": "1d", "metrics": [mlf.Sum("amt", windows=["3d", "10d"]), mlf.Count("amt", windows=["3d"])]} if metric else {}

    @mlf.feature(source=str(source), keys=["user_id"], timestamp="ts", **options)
    def spend(t):
        return t

    files = {}
    for engine in ("duckdb", "polars"):
        defs = mlf.Definitions("order", [spend], offline_store=mlf.LocalStore(str(tmp_path / engine)), engine=engine)
        assert defs.build().ok
        data = sorted((tmp_path / engine).glob("spend/**/*.parquet"))
        assert len(data) >= 3  # three months or more
        files[engine] = {p.name: pq.read_table(p) for p in data}
        for name, table in files[engine].items():
            keys = list(zip(table.column("user_id").to_pylist(), table.column("ts").to_pylist(), strict=True))
            assert keys == sorted(keys), (engine, name)
    assert files["duckdb"].keys() == files["polars"].keys()
    for name, table in files["duckdb"].items():
        assert files["polars"][name].select(table.column_names).to_pylist() == table.to_pylist(), name  # string vs large_string aside
    if parts == "a part per key":
        assert [len(ranges) for ranges in taken] == [7]  # seven users, ~70 rows each
