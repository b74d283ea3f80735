"""Verified reads (contract S7) and the typed version record, on Local, S3 (moto server) and
GCS (gcp-storage-emulator).

A version's record lists each data file with its size and row count; a missing, truncated
or replaced file makes ``read_feature``, ``get_training_data`` and ``sync`` fail with
:class:`CorruptVersion` naming the feature, version and file -- never fewer rows.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import shutil
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import mlforge as mlf
from mlforge.engines import get_engine
from mlforge.errors import CorruptVersion, StoreError
from mlforge.records import FORMAT_VERSION, DataFile, VersionRecord
from test_storage import STORES, gcs_endpoint, make_store, s3_endpoint, spend_feature  # noqa: F401  (the service fixtures)

DAMAGES = ["deleted", "truncated", "replaced by a bigger file", "replaced by a file of the same size"]


@pytest.fixture(params=STORES)
def store(request, tmp_path):
    return make_store(request.param, request, tmp_path)


@pytest.fixture(scope="module")
def duckdb():
    """One DuckDB connection for the module (a connection per build is slow)."""
    return get_engine("duckdb")


def write_two_months(path: Path) -> None:
    """Events in January and February 2024: a version of two month files."""
    start = dt.datetime(2024, 1, 20)
    rows = [
        {"user_id": u, "ts": start + dt.timedelta(days=i, hours=u), "amt": float(u * 10 + i)}
        for i in range(25) for u in range(1, 4)
    ]
    pq.write_table(pa.Table.from_pylist(rows), path)


def built(store, tmp_path, engine):
    source = tmp_path / "tx.parquet"
    write_two_months(source)
    feature = spend_feature(source)
    defs = mlf.Definitions("verified", [feature], offline_store=store, engine=engine)
    result = defs.build()["spend"]
    assert result.status == "built", result.error
    return defs


def data_keys(store, version="1.0.0"):
    return sorted(k for k in store.blobs.list(f"spend/{version}/data/") if k.endswith(".parquet"))


def damage(store, key: str, how: str, tmp_path: Path) -> None:
    """Damage one stored data file the way a careless copy, a full disk or a person would."""
    if how == "deleted":
        store.blobs.delete([key])
        return
    original = store.blobs.get(key)
    if how == "truncated":
        replacement = original[: len(original) // 2]
    else:
        table = pq.read_table(pa.BufferReader(original)).slice(0, 1)
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink)
        replacement = sink.getvalue().to_pybytes()
        if how == "replaced by a bigger file":
            replacement = _padded(replacement, len(original) + 100)
        else:
            assert len(replacement) < len(original)
            replacement = _padded(replacement, len(original))
    local = tmp_path / "damaged.parquet"
    local.write_bytes(replacement)
    store.blobs.upload(str(local), key)


def _padded(parquet: bytes, size: int) -> bytes:
    """The same Parquet file grown to ``size`` bytes: zeros between the data and the footer,
    which no reader looks at (the footer addresses the data by offset)."""
    footer = int.from_bytes(parquet[-8:-4], "little") + 8
    return parquet[:-footer] + b"\0" * (size - len(parquet)) + parquet[-footer:]


def labels() -> pd.DataFrame:
    return pd.DataFrame({"user_id": [1, 2], "ts": pd.to_datetime(["2024-01-25", "2024-02-05"])})


def cold_cache(store) -> None:
    """Forget downloaded copies, as a fresh machine would (object stores only)."""
    if store.kind != "local":
        shutil.rmtree(store.cache_dir, ignore_errors=True)


# -- every read fails on a damaged file --------------------------------------------------------
@pytest.mark.parametrize("how", DAMAGES)
def test_damaged_file_fails_every_read(store, tmp_path, how, duckdb):  # contract S7
    defs = built(store, tmp_path, duckdb)
    rows = defs.read_feature("spend").count().to_pyarrow().as_py()
    assert rows > 0 and len(data_keys(store)) >= 2  # month files, and the part from the watermark on
    key = data_keys(store)[0]
    name = key.rsplit("/", 1)[1]
    damage(store, key, how, tmp_path)
    if how == "replaced by a file of the same size":
        # Sizes match: the row count in the footer tells. Object stores check it on the
        # copy they download; a copy downloaded and checked before keeps being read.
        cold_cache(store)

    with pytest.raises(CorruptVersion) as read_error:
        defs.read_feature("spend").count().to_pyarrow()
    message = str(read_error.value)
    assert name in message and "spend 1.0.0" in message and "fix:" in message and "--force" in message

    cold_cache(store)
    with pytest.raises(CorruptVersion, match=re.escape(name)):
        defs.get_training_data(["spend"], labels(), timestamp="ts")

    cold_cache(store)
    with pytest.raises(CorruptVersion, match=re.escape(name)):
        store.data_files("spend")

    if how != "replaced by a file of the same size" or store.kind == "local":  # sync lists sizes
        [entry] = defs.sync()
        assert entry["status"] == "failed" and name in entry["error"] and entry["version"] == "1.0.0"
    assert store.latest_version("spend") == "1.0.0"  # nothing was changed by the reads


def test_sync_command_fails_on_a_damaged_version(in_tmp, capsys):  # contract S7
    """``mlforge sync`` exits 1 and names the file; it does not rebuild over damage."""
    from mlforge.cli.app import run
    from mlforge.cli.templates import write_project

    write_project(in_tmp, online=None, store="local", engine="duckdb")
    assert run(["build"]) == 0
    target = sorted((in_tmp / "feature_store" / "user_spend" / "1.0.0" / "data").glob("*.parquet"))[0]
    target.write_bytes(target.read_bytes()[:100])
    capsys.readouterr()
    assert run(["sync", "--format", "json"]) == 1
    entries = {e["feature"]: e for e in json.loads(capsys.readouterr().out)}
    assert entries["user_spend"]["status"] == "failed" and target.name in entries["user_spend"]["error"]
    assert all(e["status"] == "present" for name, e in entries.items() if name != "user_spend")


def test_the_fix_a_damaged_version_names_rebuilds_it(in_tmp, capsys):  # contract S7, E1
    """The rebuild command the error names works on the damaged latest version as it is
    (a plain `--force` build continued from the watermark, read the damaged version to keep
    its other labels, and failed again with the same advice)."""
    from mlforge.cli.app import run
    from mlforge.cli.templates import write_project

    write_project(in_tmp, online=None, store="local", engine="duckdb")
    assert run(["build"]) == 0
    target = sorted((in_tmp / "feature_store" / "user_spend" / "1.0.0" / "data").glob("*.parquet"))[0]
    target.write_bytes(target.read_bytes()[:100])
    capsys.readouterr()
    assert run(["inspect", "feature", "user_spend", "--stats"]) == 1
    command = re.search(r"`(mlforge build [^`]*)`", capsys.readouterr().err)
    assert command is not None
    code = run(command.group(1).split()[1:])
    assert code == 0, capsys.readouterr().err
    capsys.readouterr()
    assert run(["inspect", "feature", "user_spend", "--stats", "--format", "json"]) == 0
    out = capsys.readouterr().out
    assert json.loads(out)["stored"]["version"] == "1.0.1", out


@pytest.mark.parametrize("name", ["extra.parquet", ".extra.parquet", "._2024-01.parquet"])
def test_a_foreign_file_beside_a_local_version_fails(tmp_path, duckdb, name):  # contract S7
    # Hidden names too: the engines' *.parquet scans read them, Python's glob skipped them.
    store = make_store("local", None, tmp_path)
    defs = built(store, tmp_path, duckdb)
    stray = store.version_dir("spend", "1.0.0") / "data" / name
    pq.write_table(pa.table({"user_id": [99]}), stray)
    with pytest.raises(CorruptVersion, match=re.escape(name)):
        defs.read_feature("spend")


def test_a_damaged_cache_copy_is_downloaded_again(store, tmp_path, caplog, duckdb):  # contract S7
    if store.kind == "local":
        pytest.skip("local versions are read in place")
    defs = built(store, tmp_path, duckdb)
    rows = defs.read_feature("spend").to_pyarrow().num_rows
    [copy, *_] = sorted(store.cache_dir.rglob("*.parquet"))
    copy.write_bytes(copy.read_bytes()[:50])
    assert defs.read_feature("spend").to_pyarrow().num_rows == rows
    assert "downloading it again" in caplog.text


def test_all_data_left_out_is_rebuilt_by_sync(store, tmp_path, duckdb):
    """A clone that carries only the metadata is not damage: ``sync`` fills it in."""
    defs = built(store, tmp_path, duckdb)
    store.blobs.delete(data_keys(store))
    cold_cache(store)
    assert store.has_data("spend", "1.0.0") is False
    [entry] = defs.sync()
    assert entry["status"] == "rebuilt" and entry["data_hash_matches"] is True
    assert store.has_data("spend", "1.0.0")
    assert defs.read_feature("spend").count().to_pyarrow().as_py() == store.read_record("spend").rows


# -- damaged records ---------------------------------------------------------------------------
@pytest.mark.parametrize("edit", ["another version", "another feature", "emptied", "no rows"])
def test_a_record_that_is_not_its_versions_is_refused(store, tmp_path, duckdb, edit):  # contract S7, P4
    """A record naming another version would read that version's files, pinned or not; an
    emptied one would read as a format-1 record with nothing to check. Both are damage."""
    defs = built(store, tmp_path, duckdb)
    assert defs.build(force=True)["spend"].version == "1.0.1"
    key = "spend/1.0.1/_metadata.json"
    raw = json.loads(store.blobs.get(key))
    changed = {
        "another version": {**raw, "version": "1.0.0"},
        "another feature": {**raw, "name": "spent"},
        "emptied": {},
        "no rows": {k: v for k, v in raw.items() if k not in ("rows", "format_version", "data_files", "files")},
    }[edit]
    store.blobs.put(key, json.dumps(changed).encode())
    cold_cache(store)
    for read in (lambda: defs.read_feature("spend", version="1.0.1"), lambda: defs.get_training_data([("spend", "1.0.1")], labels(), timestamp="ts"), lambda: defs.get_training_data(["spend"], labels(), timestamp="ts")):
        with pytest.raises(CorruptVersion, match=r"the metadata of spend 1\.0\.1 is damaged: (it is the record of|it lacks)") as caught:
            read()
        assert "_metadata.json" in str(caught.value) and "rollback" in caught.value.fix


def test_parquet_files_in_a_folder_inside_data_are_refused(tmp_path, duckdb):  # contract S5, S7
    """mlforge reads data/*.parquet, plain readers of the folder (pandas, pyarrow datasets)
    read its subfolders too: a Parquet file there would give them rows mlforge does not read."""
    store = mlf.LocalStore(tmp_path / "store")
    defs = built(store, tmp_path, duckdb)
    data = tmp_path / "store" / "spend" / "1.0.0" / "data"
    (data / "extra").mkdir()
    shutil.copyfile(sorted(data.glob("*.parquet"))[0], data / "extra" / "more.parquet")
    with pytest.raises(CorruptVersion, match=r"'extra/more\.parquet' of spend 1\.0\.0 lies in a folder inside data/"):
        defs.read_feature("spend")


@pytest.mark.parametrize("what", ["_latest.json", "_metadata.json", "data"])
def test_a_file_replaced_by_a_directory_or_the_reverse_is_a_store_error(tmp_path, duckdb, what, capsys, monkeypatch):  # contract E1, S7
    store = mlf.LocalStore(tmp_path / "store")
    defs = built(store, tmp_path, duckdb)
    target = tmp_path / "store" / "spend" / ("1.0.0/" if what != "_latest.json" else "") / what
    if what == "data":
        shutil.rmtree(target)
        target.write_text("not a folder")
    else:
        target.unlink()
        target.mkdir()
    with pytest.raises(StoreError) as caught:
        defs.read_feature("spend", version="1.0.0" if what != "_latest.json" else None)
    assert str(target.name) in str(caught.value) and caught.value.fix
    if what == "_metadata.json":  # not a version: a build must not blame a concurrent one
        from mlforge.errors import ConcurrentPublish

        failed = defs.build(force=True, raise_on_error=False)["spend"]
        assert isinstance(failed.error, ConcurrentPublish) and "exists but holds no version" in str(failed.error)


# -- older records ---------------------------------------------------------------------------
def test_records_without_the_file_list_still_read(store, tmp_path, duckdb):
    """Record format 1 (no ``format_version``, no ``data_files``; local stores listed no
    files at all): still readable; object stores still check that the named files exist,
    local ones that the files add up to the record's rows."""
    defs = built(store, tmp_path, duckdb)
    key = "spend/1.0.0/_metadata.json"
    raw = json.loads(store.blobs.get(key))
    assert raw["format_version"] == FORMAT_VERSION and len(raw["data_files"]) == len(data_keys(store)) >= 2
    del raw["format_version"], raw["data_files"]
    if store.kind == "local":
        del raw["files"]
    store.blobs.put(key, json.dumps(raw).encode())
    cold_cache(store)
    record = store.read_record("spend")
    assert record.format_version == 1 and not record.verifiable
    rows = defs.read_feature("spend").count().to_pyarrow().as_py()
    assert rows == record.rows
    store.blobs.delete(data_keys(store)[:1])
    cold_cache(store)
    # local: no file list, but the files left no longer add up to the record's rows (S7)
    with pytest.raises(CorruptVersion, match=f"where the record says {rows}" if store.kind == "local" else "is missing"):
        defs.read_feature("spend")


def test_a_record_whose_rows_are_not_its_files_rows_is_refused(store, tmp_path, duckdb):  # contract S7, S3
    """The record's `rows` is what `list versions` shows and what a read must give: a record
    whose files add up to another count (hand-edited, damaged) is a damaged version."""
    defs = built(store, tmp_path, duckdb)
    key = "spend/1.0.0/_metadata.json"
    raw = json.loads(store.blobs.get(key))
    listed = sum(entry["rows"] for entry in raw["data_files"])
    assert listed == raw["rows"]
    raw["rows"] -= 1
    store.blobs.put(key, json.dumps(raw).encode())
    cold_cache(store)
    with pytest.raises(CorruptVersion, match=f"says {listed - 1} rows but lists files of {listed} rows"):
        defs.read_feature("spend")


# -- the record type ------------------------------------------------------------------------
def test_record_round_trips_and_reads_old_formats():
    record = VersionRecord(name="spend", version="1.0.0", keys=("user_id",), schema={"user_id": "int64"}, rows=3,
                           files=(DataFile("2024-01.parquet", 1234, 3),))
    assert VersionRecord.from_dict(json.loads(json.dumps(record.to_dict()))) == record
    out = record.to_dict()
    assert out["files"] == ["2024-01.parquet"]  # plain readers' list stays names (S5)
    assert out["data_files"] == [{"path": "2024-01.parquet", "size": 1234, "rows": 3}]
    old = VersionRecord.from_dict({"name": "spend", "version": "1.0.0", "keys": ["k"], "rows": 1, "format": "parquet", "table": "x"})
    assert (old.format_version, old.files, old.extra) == (1, None, {"table": "x"})
    assert old.to_dict()["table"] == "x"  # keys a store added survive a round trip
    names_only = VersionRecord.from_dict({"files": ["a.parquet"]})
    assert names_only.files == (DataFile("a.parquet"),) and not names_only.verifiable
    with pytest.raises(StoreError, match="upgrade mlforge"):
        VersionRecord.from_dict({"name": "spend", "format_version": FORMAT_VERSION + 1})


@pytest.mark.parametrize("merged", [False, True], ids=["parts-kept", "small-parts-merged"])
def test_continuations_on_every_store_keep_earlier_files_and_equal_a_full_build(store, tmp_path, duckdb, monkeypatch, merged):  # contract I1, S7
    """Object stores name their files with a build token; a continuation still finds the
    month parts it keeps (or merges) by their names, and what it stores reads as a full
    build does."""
    if not merged:
        monkeypatch.setattr("mlforge.materialize.MERGED_PART_ROWS", 0)  # keep even small parts apart
    source = tmp_path / "tx.parquet"
    write_two_months(source)
    events = pq.read_table(source)
    cut = lambda day: events.filter(pa.compute.less(events["ts"], pa.scalar(dt.datetime(2024, 2, day))))  # noqa: E731
    pq.write_table(cut(5), source)
    defs = mlf.Definitions("verified", [spend_feature(source)], offline_store=store, engine=duckdb)
    assert defs.build()["spend"].version == "1.0.0"
    for day, version in ((6, "1.0.1"), (7, "1.0.2")):
        pq.write_table(cut(day), source)
        cold_cache(store)
        result = defs.build()["spend"]
        assert (result.version, result.status) == (version, "built") and result.rows_written < result.rows, result
    names = [k.rsplit("/", 1)[1] for k in data_keys(store, "1.0.2")]
    # 1.0.2 kept 1.0.0's month file and 1.0.1's day, and wrote its own day and the part from
    # its watermark on; merged, the small parts before each continuation went into February's file
    parts = ["2024-01.parquet", "2024-02.parquet", "2024-02-07T000000.parquet"] + ([] if merged else ["2024-02-05T000000.parquet", "2024-02-06T000000.parquet"])
    local = [n if store.kind == "local" else n.partition("-")[2] for n in names]  # object names lead with the build's token
    assert sorted(local) == sorted(parts), names
    full = mlf.Definitions("full", [spend_feature(source)], offline_store=mlf.LocalStore(tmp_path / "full"), engine=duckdb)
    assert full.build().ok
    cold_cache(store)
    got = defs.read_feature("spend").to_pyarrow().sort_by([("user_id", "ascending"), ("ts", "ascending")])
    want = full.read_feature("spend").to_pyarrow().sort_by([("user_id", "ascending"), ("ts", "ascending")])
    assert got.equals(want)
