"""UnityCatalogStore (contract S6, and W/P/S/I/E through it) on the local stack.

Four ways to reach the same store, each a ``stack``:

* ``delta-rs``: DuckDB builds, delta-rs writes Delta tables under a ``file://`` root;
* ``workspace``: the same through the real ``databricks-sdk`` against the loopback fake
  workspace (tables registered in Unity Catalog, storage credentials vended per table);
* ``spark``: PySpark with Delta Lake writes tables by name (``spark_catalog.<schema>``),
  as on a Databricks cluster where the session knows the catalog;
* ``spark-path``: PySpark writing by storage location (a catalog the session lacks).

Spark stacks run under ``-m spark`` (``nox -s parity``), and over Spark Connect when
``MLFORGE_SPARK_REMOTE`` is set (``nox -s spark_connect``).
"""

from __future__ import annotations

import itertools
import json
import os
import re
import uuid
import warnings
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable, QueryBuilder
from hypothesis import given, settings

import mlforge as mlf
from fake_databricks import databricks_workspace, postgres  # noqa: F401 - fixtures
from mlforge.errors import (
    BuildError,
    ConcurrentPublish,
    ConfigError,
    CorruptVersion,
    DefinitionError,
    StoreError,
    ValidationFailed,
)
from mlforge.offline.unity_catalog import RetentionWarning, UnityCatalogStore
from mlforge.operations import diff_versions, rollback
from test_incremental import BASE, _assert_same_rows, _events, _feature, _stored
from test_parity import cases, check_against_oracle

pytest.importorskip("deltalake")


@dataclass
class Stack:
    name: str
    engine: Any
    make: Any  # (root dir) -> UnityCatalogStore

    def store(self, root) -> UnityCatalogStore:
        return self.make(str(root))


def _delta_rs(root: str) -> UnityCatalogStore:
    return UnityCatalogStore("main", f"s{uuid.uuid4().hex[:8]}", storage_root=f"file://{root}/uc")


@pytest.fixture(params=["delta-rs", pytest.param("workspace", marks=pytest.mark.service), pytest.param("spark", marks=pytest.mark.spark), pytest.param("spark-path", marks=pytest.mark.spark)])
def stack(request, monkeypatch) -> Stack:
    from mlforge.engines import get_engine

    monkeypatch.delenv("DATABRICKS_HOST", raising=False)
    if request.param == "delta-rs":
        return Stack("delta-rs", get_engine("duckdb"), _delta_rs)
    if request.param == "workspace":
        ws = request.getfixturevalue("databricks_workspace")
        client = ws.client()
        return Stack("workspace", get_engine("duckdb"), lambda root: UnityCatalogStore("main", f"s{uuid.uuid4().hex[:8]}", client=client, storage_root=ws.storage_root))
    spark = request.getfixturevalue("delta_spark_engine")  # skips, with the reason, without the jars
    if request.param == "spark":
        return Stack("spark", spark, lambda root: UnityCatalogStore("spark_catalog", f"s{uuid.uuid4().hex[:8]}"))
    return Stack("spark-path", spark, lambda root: UnityCatalogStore("lake", f"s{uuid.uuid4().hex[:8]}", storage_root=f"file://{root}/uc"))


def _source(tmp_path, seed=1, n=200, days=12, users=4) -> str:
    path = str(tmp_path / "events.parquet")
    pq.write_table(_events(seed, n, days, users), path)
    return path


def _defs(stack: Stack, store, path: str, **kwargs) -> mlf.Definitions:
    return mlf.Definitions("uc", [_feature(path, **kwargs)], offline_store=store, engine=stack.engine)


def _delta_history(stack: Stack, store: UnityCatalogStore, feature: str) -> list[dict]:
    """The table's Delta history, newest first, read with the stack's own tools."""
    _, ref = store._ref(feature, for_engine=True)
    if ref.location is None:
        rows = stack.engine.session.sql(f"DESCRIBE HISTORY {ref.name}").select("version", "operation", "userMetadata").collect()
        return [r.asDict() for r in rows]
    return [{"version": h["version"], "operation": h.get("operation"), "userMetadata": h.get("userMetadata")} for h in DeltaTable(ref.location.removeprefix("file://")).history()]


def _plain_rows(stack: Stack, store: UnityCatalogStore, feature: str, ts: str = "ts") -> list[dict]:
    """The table's current rows as any Delta reader sees them (no mlforge)."""
    _, ref = store._ref(feature, for_engine=True)
    if ref.location is None:
        frame = stack.engine.session.table(ref.name)
        rows = [r.asDict() for r in frame.collect()]
    else:
        table = DeltaTable(ref.location.removeprefix("file://"))
        rows = pa.table(QueryBuilder().register("feature", table).execute("SELECT * FROM feature")).to_pylist()
    return sorted(rows, key=lambda r: (r["user_id"], r[ts] is None, r[ts].replace(tzinfo=None) if r[ts] else datetime.min))


def _canonical(rows):
    return sorted(({k: (v.replace(tzinfo=None) if isinstance(v, datetime) else v) for k, v in r.items()} for r in rows), key=lambda r: (r["user_id"], r["ts"]))


# -- W1-W9 through the store ------------------------------------------------------------------
@pytest.mark.parity
def test_builds_match_the_oracle(stack):  # contract W1-W9, S6
    # A build on Spark is a dozen Spark jobs: a few examples there, the profile's elsewhere.
    fast = os.environ.get("HYPOTHESIS_PROFILE", "default") == "default"
    examples = {"spark": 3, "spark-path": 2}.get(stack.name, 8 if fast else settings().max_examples)

    @settings(max_examples=examples, deadline=None)
    @given(case=cases())
    def check(case):
        check_against_oracle(case, stack.engine, store_factory=stack.store)

    check()


# -- S6: the table, its metadata and time travel ----------------------------------------------
def test_versions_are_delta_versions_with_time_travel(stack, tmp_path):  # contract S6, S2, S3, P4
    path = _source(tmp_path)
    store = stack.store(tmp_path)
    defs = _defs(stack, store, path)
    first = defs.build()["spend"]
    assert (first.status, first.version) == ("built", "1.0.0"), first.error
    v1_rows = _stored(defs, "spend")

    meta = store.read_metadata("spend")
    assert meta["table"] == store.table_name("spend") and meta["format"] == "delta"
    assert meta["keys"] == ["user_id"] and meta["rows"] == len(v1_rows)
    history = _delta_history(stack, store, "spend")
    commit = next(h for h in history if h["version"] == meta["delta_version"])
    assert json.loads(commit["userMetadata"])["mlforge_version"] == "1.0.0"
    tables, ref = store._ref("spend", for_engine=True)
    props = tables.properties(ref)
    assert props["delta.enableChangeDataFeed"] == "true" and props["mlforge.keys"] == "user_id" and props["mlforge.timestamp"] == "ts"

    # S2: an unchanged rebuild publishes nothing (no Delta commit, no metadata row)
    rows_before = len(store._rows())
    assert defs.build()["spend"].status == "skipped"
    assert len(store._rows()) == rows_before and len(_delta_history(stack, store, "spend")) == len(history)

    # new data -> PATCH, a new Delta version; the old semver still reads by time travel
    pq.write_table(_events(2, 220, 12, 4), path)
    second = defs.build(full_refresh=True)["spend"]
    assert (second.status, second.version) == ("built", "1.0.1"), second.error
    assert store.read_metadata("spend", "1.0.1")["delta_version"] > meta["delta_version"]
    assert store.list_versions("spend") == ["1.0.0", "1.0.1"] and store.latest_version("spend") == "1.0.1"
    pinned = sorted(defs.read_feature("spend", version="1.0.0").to_pyarrow().to_pylist(), key=lambda r: (r["user_id"], r["ts"]))
    _assert_same_rows(pinned, v1_rows)
    assert _canonical(_plain_rows(stack, store, "spend")) == _canonical(_stored(defs, "spend"))

    # a MINOR change (a metric added) is a new Delta version with a new schema
    third = mlf.Definitions("uc", [_feature(path, with_median=True)], offline_store=store, engine=stack.engine).build()["spend"]
    assert (third.status, third.version, third.change) == ("built", "1.1.0", "MINOR"), third.error
    assert diff_versions(store, "spend", "1.0.1", "1.1.0")["exit_code"] == 2  # S4: MINOR
    assert "amt_median_3d" not in defs.read_feature("spend", version="1.0.1").columns

    # rollback: latest moves back and the table itself is restored for plain readers
    assert rollback(store, "spend", "1.0.0") == ("1.1.0", "1.0.0")
    assert store.latest_version("spend") == "1.0.0"
    assert _canonical(_plain_rows(stack, store, "spend")) == _canonical(v1_rows)
    assert _canonical(_stored(defs, "spend")) == _canonical(v1_rows)
    # one row per version plus one pointer row: nothing duplicated
    assert sorted((r["kind"], r["version"]) for r in store._rows()) == [("latest", "1.0.0"), ("version", "1.0.0"), ("version", "1.0.1"), ("version", "1.1.0")]


def test_retried_publish_adds_no_metadata_rows(stack, tmp_path):  # contract S6
    path = _source(tmp_path)
    store = stack.store(tmp_path)
    assert _defs(stack, store, path).build().ok
    meta = store.read_metadata("spend")
    token = next(r["token"] for r in store._rows() if r["kind"] == "version")
    staging = store.stage("spend")
    pq.write_table(_events(1, 5, 1, 1), f"{staging.data_dir}/part.parquet")
    retried = type(staging)(feature="spend", data_dir=staging.data_dir, token=token)
    commits = len(_delta_history(stack, store, "spend"))
    store.publish(retried, "1.0.0", meta)  # the same build, published again
    assert len(_delta_history(stack, store, "spend")) == commits
    assert sorted((r["kind"], r["version"]) for r in store._rows()) == [("latest", "1.0.0"), ("version", "1.0.0")]
    other = store.stage("spend")
    pq.write_table(_events(1, 5, 1, 1), f"{other.data_dir}/part.parquet")
    with pytest.raises(ConcurrentPublish):
        store.publish(other, "1.0.0", meta)  # another build claiming the same version


def test_failed_build_leaves_the_table_and_metadata_intact(stack, tmp_path):  # contract E3, S1
    path = _source(tmp_path)
    store = stack.store(tmp_path)
    defs = _defs(stack, store, path)
    assert defs.build().ok
    before_rows, before_meta, before_history = _stored(defs, "spend"), store._rows(), _delta_history(stack, store, "spend")

    @mlf.feature(source=path, keys=["user_id"], timestamp="ts", interval="1d", metrics=[mlf.Sum("amt", windows=["1d"])], validators={"amt": [mlf.not_null()]})
    def spend(t):
        return t

    failed = mlf.Definitions("uc", [spend], offline_store=store, engine=stack.engine).build(raise_on_error=False)["spend"]
    assert failed.status == "failed" and isinstance(failed.error, ValidationFailed)
    assert store._rows() == before_meta and _delta_history(stack, store, "spend") == before_history
    assert _stored(defs, "spend") == before_rows


# -- I1: incremental builds replace only their range --------------------------------------
@pytest.mark.parity
def test_range_builds_equal_a_full_build_and_touch_only_their_range(stack, tmp_path):  # contract I1, S6
    path = _source(tmp_path, seed=5, n=240)
    full = mlf.Definitions("full", [_feature(path)], offline_store=mlf.LocalStore(tmp_path / "full"), engine="duckdb")
    assert full.build().ok
    store = stack.store(tmp_path)
    pieces = _defs(stack, store, path)
    splits = [(BASE + timedelta(days=d)).isoformat() for d in (4, 9)]
    for since, until in itertools.pairwise([None, *splits, None]):
        result = pieces.build(since=since, until=until)["spend"]
        assert result.status in {"built", "skipped"}, result.error
    _assert_same_rows(_canonical(_stored(pieces, "spend")), _canonical(_stored(full, "spend")))

    if stack.name in {"delta-rs", "workspace"}:
        # the change feed of the last range build only has rows inside its range
        table = DeltaTable(store._ref("spend", for_engine=True)[1].location.removeprefix("file://"))
        last = store.read_metadata("spend")
        changes = pa.table(table.load_cdf(starting_version=last["delta_version"], ending_version=last["delta_version"]).read_all()).to_pylist()
        since = datetime.fromisoformat(splits[-1]).replace(tzinfo=UTC)
        assert changes and all(c["ts"] >= since for c in changes)


def _first_range_version(stack: Stack, tmp_path) -> tuple[UnityCatalogStore, mlf.Definitions]:
    """A store whose ``spend`` 1.0.0 holds the labels before day 4 (range builds follow);
    the commits the tests add beside mlforge's are made with delta-rs."""
    if stack.name not in {"delta-rs", "workspace"}:
        pytest.skip("the commits beside mlforge's are made with delta-rs")
    store = stack.store(tmp_path)
    defs = _defs(stack, store, _source(tmp_path, seed=5, n=240))
    assert defs.build(until=(BASE + timedelta(days=4)).isoformat())["spend"].version == "1.0.0"
    return store, defs


def test_a_range_build_over_commits_mlforge_did_not_record_is_refused(stack, tmp_path):  # contract I1, S7, S6
    """Another writer's commit (or a failed build's that could not be taken back) would ride into
    the next range build's version; the build refuses and names the two ways out. A
    rollback's restore is recorded, so range builds after it go on."""
    from deltalake import write_deltalake

    store, defs = _first_range_version(stack, tmp_path)
    assert defs.build(until=(BASE + timedelta(days=8)).isoformat())["spend"].version == "1.0.1"
    assert rollback(store, "spend", "1.0.0") == ("1.0.1", "1.0.0")  # a restore commit, recorded
    assert defs.build(until=(BASE + timedelta(days=6)).isoformat())["spend"].version == "1.0.2"
    uri = store._ref("spend", for_engine=True)[1].location
    foreign = pa.table(DeltaTable(uri.removeprefix("file://")).to_pyarrow_table().slice(0, 1))
    write_deltalake(uri, foreign, mode="append")  # a writer mlforge does not know of
    failed = defs.build(raise_on_error=False)["spend"]
    assert failed.status == "failed" and "commits mlforge did not record" in str(failed.error)
    assert "--full-refresh --force" in failed.error.fix and store.latest_version("spend") == "1.0.2"
    assert defs.build(full_refresh=True, force=True)["spend"].status == "built"  # the fix as named: unforced, unchanged inputs skip
    assert len(_plain_rows(stack, store, "spend")) == store.read_record("spend").rows


def test_a_build_failing_after_its_commit_takes_the_commit_back(stack, tmp_path, monkeypatch):  # contract E3, I1, S6
    """The metadata upsert fails after the Delta commit: the table goes back to latest's
    rows for plain readers (a restore mlforge marks as its undo), latest stays, and the
    next range build goes on over the undone commit and equals a full refresh."""
    store = stack.store(tmp_path)
    defs = _defs(stack, store, _source(tmp_path, seed=5, n=240))
    assert defs.build(until=(BASE + timedelta(days=4)).isoformat())["spend"].version == "1.0.0"
    before = _plain_rows(stack, store, "spend")
    tables_kind = type(store._ref("_mlforge_metadata", for_engine=False)[0])
    real = tables_kind.upsert_metadata

    def failing(self, ref, row, *, replace):
        if row["kind"] == "version":
            raise StoreError("the metadata table is unavailable", fix="retry")
        return real(self, ref, row, replace=replace)

    monkeypatch.setattr(tables_kind, "upsert_metadata", failing)
    failed = defs.build(until=(BASE + timedelta(days=8)).isoformat(), raise_on_error=False)["spend"]
    assert failed.status == "failed" and "unavailable" in str(failed.error)
    monkeypatch.setattr(tables_kind, "upsert_metadata", real)
    assert store.list_versions("spend") == ["1.0.0"] and store.latest_version("spend") == "1.0.0"
    assert _plain_rows(stack, store, "spend") == before  # the failed build's rows are gone for plain readers
    assert [h["operation"] for h in _delta_history(stack, store, "spend")][:2] == ["RESTORE", "WRITE"]
    ranged = defs.build(until=(BASE + timedelta(days=8)).isoformat())["spend"]
    assert ranged.version == "1.0.1"
    ranged_rows = _plain_rows(stack, store, "spend")
    assert len(ranged_rows) == store.read_record("spend").rows
    full_store = stack.store(tmp_path / "full")
    _defs(stack, full_store, _source(tmp_path, seed=5, n=240)).build(until=(BASE + timedelta(days=8)).isoformat())
    assert _canonical(ranged_rows) == _canonical(_plain_rows(stack, full_store, "spend"))


def _first_version_read_by_delta_rs(stack: Stack, tmp_path, *, seed: int, n: int) -> tuple[UnityCatalogStore, mlf.Definitions]:
    """1.0.0 of ``spend`` on a stack whose tables mlforge reads with delta-rs (Spark reads
    them through Delta itself, so damage tests skip it)."""
    if stack.name not in {"delta-rs", "workspace"}:
        pytest.skip("Spark reads the table through Delta itself")
    store = stack.store(tmp_path)
    defs = _defs(stack, store, _source(tmp_path, seed=seed, n=n))
    assert defs.build()["spend"].version == "1.0.0"
    return store, defs


@pytest.mark.parametrize("how", ["fewer rows, same name", "deleted", "truncated"])
def test_a_damaged_data_file_of_a_delta_version_is_refused(stack, tmp_path, how):  # contract S7, E1
    """A Delta version's files are checked against its log before they are read: a file
    rewritten with fewer rows read as fewer rows, a missing or truncated one raised
    pyarrow's or DuckDB's own error."""
    store, defs = _first_version_read_by_delta_rs(stack, tmp_path, seed=3, n=120)
    table = DeltaTable(store._ref("spend", for_engine=True)[1].location.removeprefix("file://"))
    victim = table.file_uris()[0].removeprefix("file://")
    if how == "deleted":
        os.remove(victim)
    elif how == "truncated":
        os.truncate(victim, os.path.getsize(victim) // 2)
    else:
        pq.write_table(pq.read_table(victim).slice(0, 1), victim)
    for read in (lambda: defs.read_feature("spend").to_pyarrow(), lambda: defs.get_training_data(["spend"], pa.table({"user_id": [0, 1]}))):
        with pytest.raises(CorruptVersion, match=re.escape(os.path.basename(victim))) as caught:
            read()
        assert "version 1.0.0" in str(caught.value) and "--full-refresh" in caught.value.fix


def test_a_damaged_metadata_table_is_a_store_error_naming_the_repair(stack, tmp_path):  # contract E1
    """The metadata table's files removed under it: listing versions and building say which
    table, and how to restore it, instead of raising pyarrow's own error."""
    store, defs = _first_version_read_by_delta_rs(stack, tmp_path, seed=4, n=60)
    metadata = DeltaTable(store._ref("_mlforge_metadata", for_engine=False)[1].location.removeprefix("file://"))
    for uri in metadata.file_uris():
        os.remove(uri.removeprefix("file://"))
    with pytest.raises(StoreError, match="_mlforge_metadata, the store's record of versions") as caught:
        store.list_versions("spend")
    assert "RESTORE TABLE" in caught.value.fix
    failed = defs.build(raise_on_error=False)["spend"]
    assert failed.status == "failed" and isinstance(failed.error, StoreError)


def test_commits_that_change_no_rows_do_not_stop_range_builds(stack, tmp_path):  # contract I1, S4
    """Table properties (raising the retention, as the docs advise), OPTIMIZE or VACUUM add
    Delta commits that change no rows; a rollback onto the version latest names already is
    harmless. Range builds go on over all of them."""
    store, defs = _first_range_version(stack, tmp_path)
    assert rollback(store, "spend", "1.0.0") == ("1.0.0", "1.0.0")
    uri = store._ref("spend", for_engine=True)[1].location.removeprefix("file://")
    DeltaTable(uri).alter.set_table_properties({"delta.logRetentionDuration": "interval 90 days"})
    DeltaTable(uri).optimize.compact()
    result = defs.build(until=(BASE + timedelta(days=8)).isoformat())["spend"]
    assert (result.status, result.version) == ("built", "1.0.1"), result.error
    assert len(_plain_rows(stack, store, "spend")) == store.read_record("spend").rows


def test_range_builds_replace_the_rows_without_a_timestamp(stack, tmp_path):  # contract I1, S3, S6
    """A feature without metrics keeps rows with a null timestamp; a range build of the
    Delta table replaces them with the source's, as a full refresh would."""
    path = str(tmp_path / "plain.parquet")
    schema = pa.schema([("user_id", pa.int64()), ("ts", pa.timestamp("us")), ("amt", pa.float64())])
    rows = [{"user_id": 1, "ts": BASE, "amt": 1.0}, {"user_id": 2, "ts": None, "amt": 2.0}]
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)

    @mlf.feature(source=path, keys=["user_id"], timestamp="ts")
    def raw(t):
        return t.select("user_id", "ts", "amt")

    store = stack.store(tmp_path)
    defs = mlf.Definitions("uc", [raw], offline_store=store, engine=stack.engine)
    assert defs.build()["raw"].status == "built"
    rows += [{"user_id": 3, "ts": None, "amt": 3.0}, {"user_id": 1, "ts": BASE + timedelta(days=40), "amt": 4.0}]
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)
    result = defs.build()["raw"]
    assert result.status == "built" and result.build_range != "full", result
    stored = _plain_rows(stack, store, "raw")
    assert sorted(r["amt"] for r in stored if r["ts"] is None) == [2.0, 3.0] and len(stored) == 4 == store.read_record("raw").rows


@pytest.mark.parametrize("ts", ['t"s', 'when" IS NOT NULL OR "when', "a` OR `b"])
def test_range_builds_quote_a_hostile_timestamp_name(stack, tmp_path, ts):  # contract E5, I1
    """A range build replaces its rows by a predicate given to Delta as SQL text: the
    timestamp column's name is quoted and escaped there, so it round-trips and the stored
    table equals a full refresh (unescaped, `when" IS NOT NULL OR "when` replaced every row
    with the range's)."""
    path = str(tmp_path / "hostile.parquet")
    schema = pa.schema([("user_id", pa.int64()), (ts, pa.timestamp("us")), ("when", pa.timestamp("us")), ("amt", pa.float64())])
    rows = [{"user_id": u, ts: BASE + timedelta(days=d), "when": BASE, "amt": float(d)} for u in (1, 2) for d in range(5)]
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)

    @mlf.feature(source=path, keys=["user_id"], timestamp=ts)
    def hostile(t):
        return t

    store = stack.store(tmp_path)
    defs = mlf.Definitions("uc", [hostile], offline_store=store, engine=stack.engine)
    if stack.name.startswith("spark") and " " in ts:
        # Spark's Delta writer refuses ' ,;{}()=' in column names: refused before compute (E5)
        with pytest.raises(BuildError, match="Spark's Delta writer refuses") as caught:
            defs.build()
        assert "rename the column" in str(caught.value) and store.list_versions("hostile") == []
        return
    assert defs.build()["hostile"].status == "built"
    rows += [{"user_id": u, ts: BASE + timedelta(days=d), "when": BASE, "amt": float(d)} for u in (1, 2) for d in range(5, 8)]
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)
    result = defs.build()["hostile"]
    assert (result.status, result.build_range != "full") == ("built", True), result
    stored = _plain_rows(stack, store, "hostile", ts)
    assert len(stored) == len(rows) == store.read_record("hostile").rows
    assert sorted((r["user_id"], r[ts].replace(tzinfo=None)) for r in stored) == sorted((r["user_id"], r[ts]) for r in rows)


def test_columns_a_delta_table_cannot_hold_are_refused_before_compute(stack, tmp_path, monkeypatch):  # contract E1, E3, E5
    """Delta has no unsigned integers (Spark reads them as wider signed types; DuckDB and
    Polars keep them), and Spark's Delta writer refuses ' ,;{}()=', a tab or a newline in
    column names. Such a build fails with a definition error that names the column
    and how to change it, before the engine computes anything, and writes nothing; on the
    delta-rs path those names are stored as they are."""
    path = str(tmp_path / "events.parquet")
    rows = [{"user_id": u, "ts": BASE + timedelta(days=d), "amt": float(d), "n": d} for u in (1, 2) for d in range(3)]
    schema = pa.schema([("user_id", pa.int64()), ("ts", pa.timestamp("us")), ("amt", pa.float64()), ("n", pa.uint32())])
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)

    @mlf.feature(source=path, keys=["user_id"], timestamp="ts")
    def unsigned(t):
        return t

    @mlf.feature(source=path, keys=["user_id"], timestamp="ts")
    def spaced(t):
        return t.select("user_id", "ts", **{"amount (usd)": t.amt})

    def no_compute(*args, **kwargs):
        raise AssertionError("the engine computed for a build that had to be refused first")

    store = stack.store(tmp_path)
    defs = mlf.Definitions("uc", [unsigned, spaced], offline_store=store, engine=stack.engine)
    if stack.name.startswith("spark"):
        assert defs.build(["unsigned"]).ok  # Spark reads an unsigned column as a wider signed type (docs/spark.md)
    else:
        with monkeypatch.context() as patch:
            patch.setattr(type(stack.engine), "write_parquet", no_compute)
            patch.setattr(type(stack.engine), "to_arrow", no_compute)  # the counts and checks run before the write
            result = defs.build(["unsigned"], raise_on_error=False)["unsigned"]
        assert result.status == "failed" and "'n' is uint32 and Delta tables have no unsigned integer types" in str(result.error), result.error
        assert "cast it to a signed type" in str(result.error) and store.list_versions("unsigned") == [] and isinstance(result.error, DefinitionError)
    if stack.name.startswith("spark"):
        with monkeypatch.context() as patch:
            patch.setattr(type(stack.engine), "write_parquet", no_compute)
            patch.setattr(type(stack.engine), "to_arrow", no_compute)  # the counts and checks run before the write
            result = defs.build(["spaced"], raise_on_error=False)["spaced"]
        assert result.status == "failed" and "column name 'amount (usd)' contains ' ', '(', ')'" in str(result.error), result.error
        assert "rename the column" in str(result.error) and store.list_versions("spaced") == []
    else:
        assert defs.build(["spaced"]).ok
        assert sorted(r["amount (usd)"] for r in _plain_rows(stack, store, "spaced")) == sorted(r["amt"] for r in rows)


# -- P1-P4 through the store ------------------------------------------------------------------
def test_training_data_equals_the_local_store(stack, tmp_path):  # contract P1, P2, P4
    path = _source(tmp_path, seed=9)
    local = mlf.Definitions("local", [_feature(path)], offline_store=mlf.LocalStore(tmp_path / "local"), engine="duckdb")
    assert local.build().ok
    store = stack.store(tmp_path)
    uc = _defs(stack, store, path)
    assert uc.build().ok
    labels = pa.table({
        "user_id": pa.array([0, 1, 2, 3, 7, None, 1], pa.int64()),
        "when": pa.array([BASE + timedelta(hours=h) for h in (0, 30, 99, 240, 50, 10, 30)], pa.timestamp("us")),
    })
    want = local.get_training_data(["spend"], labels, timestamp="when")
    got = uc.get_training_data(["spend"], labels, timestamp="when")
    assert got.column_names == want.column_names
    assert got.to_pylist() == want.to_pylist()


# -- retention, errors, Unity Catalog registration ----------------------------------------------
def test_pinned_version_older_than_retention_warns(tmp_path):  # contract S6
    from mlforge.engines import get_engine

    stack = Stack("delta-rs", get_engine("duckdb"), _delta_rs)
    path = _source(tmp_path)
    store = stack.store(tmp_path)
    defs = _defs(stack, store, path)
    assert defs.build().ok
    location = store._ref("spend", for_engine=True)[1].location.removeprefix("file://")
    DeltaTable(location).alter.set_table_properties({"delta.deletedFileRetentionDuration": "interval 0 seconds"})
    with pytest.warns(RetentionWarning, match="older than the retention"):
        defs.read_feature("spend", version="1.0.0")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        defs.read_feature("spend")  # latest is never warned about


def test_bad_configuration_is_a_clear_error(tmp_path, monkeypatch):  # contract E1
    monkeypatch.delenv("DATABRICKS_HOST", raising=False)
    with pytest.raises(ConfigError, match="not a valid identifier"):
        UnityCatalogStore("main", "bad schema")
    store = UnityCatalogStore("main", "features")
    path = _source(tmp_path)
    result = mlf.Definitions("uc", [_feature(path)], offline_store=store, engine="duckdb").build(raise_on_error=False)["spend"]
    assert result.status == "failed" and isinstance(result.error, StoreError)
    assert "storage_root" in str(result.error)


@pytest.mark.service
def test_workspace_registers_tables_and_vends_credentials(request, tmp_path):  # contract S6
    ws = request.getfixturevalue("databricks_workspace")
    client = ws.client()
    store = UnityCatalogStore("main", "features", client=client, storage_root=ws.storage_root)
    path = _source(tmp_path)
    defs = mlf.Definitions("uc", [_feature(path)], offline_store=store, engine="duckdb")
    assert defs.build().ok
    info = client.tables.get("main.features.spend")
    assert info.storage_location.startswith(ws.storage_root) and info.properties["mlforge.keys"] == "user_id"
    assert client.tables.get("main.features._mlforge_metadata").storage_location
    assert any("temporary-table-credentials" in p for _, p in ws.calls) and any("temporary-path-credentials" in p for _, p in ws.calls)

    # expired credentials once: asked for again, the read works
    ws.expire_storage_credentials(times=1)
    assert defs.read_feature("spend").count().to_pyarrow().as_py() == store.read_metadata("spend")["rows"]
    # always expired: a clear error
    ws.expire_storage_credentials(times=None)
    with pytest.raises(StoreError, match="expired storage credentials"):
        store.list_versions("spend")
    ws.expire_storage_credentials(times=0)
    # permission denied on the lookup: says which grants are missing
    ws.fail("/api/2.1/unity-catalog/tables/main.features._mlforge_metadata", 403, times=1, error_code="PERMISSION_DENIED")
    with pytest.raises(StoreError, match="grant"):
        store.list_versions("spend")


def test_catalogs_sharing_a_storage_root_keep_their_own_tables(tmp_path):  # contract S6
    # New tables went to {root}/{schema}/{feature}: prod found dev's table there, listed its
    # versions and skipped its own first build as unchanged.
    path = _source(tmp_path)
    dev, prod = (UnityCatalogStore(catalog, "features", storage_root=f"file://{tmp_path}/uc") for catalog in ("dev", "prod"))
    assert mlf.Definitions("uc", [_feature(path)], offline_store=dev, engine="duckdb").build()["spend"].version == "1.0.0"
    assert prod.list_versions("spend") == []
    built = mlf.Definitions("uc", [_feature(path)], offline_store=prod, engine="duckdb").build()["spend"]
    assert (built.status, built.version) == ("built", "1.0.0")
    assert dev.list_versions("spend") == ["1.0.0"] == prod.list_versions("spend")


@pytest.mark.spark
def test_spark_reads_stay_in_spark(stack, tmp_path):  # contract P1 (nothing collected on the build path)
    if stack.engine.name != "pyspark":
        pytest.skip("a Spark stack")
    path = _source(tmp_path)
    store = stack.store(tmp_path)
    defs = _defs(stack, store, path)
    assert defs.build().ok
    frame = stack.engine.to_native(defs.read_feature("spend", version="1.0.0"))
    assert type(frame).__name__ == "DataFrame" and frame.count() == store.read_metadata("spend")["rows"]


@pytest.mark.spark
@pytest.mark.parametrize("catalog", ["spark_catalog", "lake"], ids=["by-name", "by-path"])
def test_spark_without_delta_jars_is_a_clear_error(tmp_path, catalog):  # contract E1; issue 17 part 4
    """A Spark session without the Delta jars: a StoreError naming MLFORGE_SPARK_JARS and
    the Maven coordinates, not Py4J's DATA_SOURCE_NOT_FOUND (a JVM of its own, no jars)."""
    import subprocess
    import sys

    path = _source(tmp_path)
    script = f"""
import json, mlforge as mlf
from test_incremental import _feature
store = mlf.UnityCatalogStore({catalog!r}, "nodelta", storage_root="file://{tmp_path}/uc")
result = mlf.Definitions("uc", [_feature({path!r})], offline_store=store, engine="pyspark").build(raise_on_error=False)["spend"]
print(json.dumps({{"status": result.status, "error": type(result.error).__name__, "message": str(result.error)}}))
"""
    env = {**os.environ, "MLFORGE_SPARK_JARS": "", "MLFORGE_SPARK_DRIVER_MEMORY": "512m", "PYTHONPATH": os.pathsep.join([os.path.dirname(__file__), os.environ.get("PYTHONPATH", "")])}
    env.pop("MLFORGE_SPARK_REMOTE", None)
    for name in [n for n in env if n.startswith("SPARK_") and n != "SPARK_HOME"]:
        env.pop(name)  # a Spark Connect run marks its process (SPARK_CONNECT_MODE_ENABLED...): a classic JVM here
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    outcome = json.loads(done.stdout.strip().splitlines()[-1])
    assert (outcome["status"], outcome["error"]) == ("failed", "StoreError"), outcome
    message = outcome["message"]
    assert "MLFORGE_SPARK_JARS" in message and "io.delta:delta-spark_2.13:4.0.0" in message and "io.delta:delta-storage:4.0.0" in message
    assert "Py4J" not in message and "Traceback" not in message


def test_profile_kind_builds_the_store(tmp_path, monkeypatch):  # issue 8: profiles
    from mlforge.config import resolve_profile

    monkeypatch.delenv("DATABRICKS_HOST", raising=False)
    (tmp_path / "mlforge.yaml").write_text(
        "profiles:\n  databricks-dev:\n    offline_store:\n      KIND: unity-catalog\n      catalog: dev\n"
        "      schema: features\n      storage_root: file:///tmp/uc\n    engine: pyspark\n"
    )
    profile = resolve_profile("databricks-dev", path=tmp_path / "mlforge.yaml")
    store = profile.offline_store
    assert isinstance(store, UnityCatalogStore) and store.table_name("x") == "dev.features.x" and profile.engine == "pyspark"



def test_a_commit_that_cannot_be_taken_back_is_said_in_the_error(stack, tmp_path, monkeypatch):  # contract E1, E3
    """The metadata upsert fails and so does the restore (the workspace is down): the
    build's error says the commit stays and names the ways out."""
    store = stack.store(tmp_path)
    defs = _defs(stack, store, _source(tmp_path, seed=6, n=120))
    assert defs.build(until=(BASE + timedelta(days=4)).isoformat())["spend"].version == "1.0.0"
    meta_kind, data_kind = type(store._ref("_mlforge_metadata", for_engine=False)[0]), type(store._ref("spend", for_engine=True)[0])
    real = meta_kind.upsert_metadata

    def failing(self, ref, row, *, replace):
        if row["kind"] == "version":
            raise StoreError("the metadata table is unavailable", fix="retry")
        return real(self, ref, row, replace=replace)

    def down(self, ref, version):
        raise OSError("the workspace does not answer")

    monkeypatch.setattr(meta_kind, "upsert_metadata", failing)
    monkeypatch.setattr(data_kind, "undo", down)
    failed = defs.build(until=(BASE + timedelta(days=8)).isoformat(), raise_on_error=False)["spend"]
    assert failed.status == "failed" and "unavailable" in str(failed.error)
    assert "stays in" in str(failed.error) and "the workspace does not answer" in str(failed.error)
    assert "--full-refresh" in failed.error.fix and "rollback" in failed.error.fix


@pytest.mark.parametrize(("commits", "held"), [
    ([], True),
    ([(6, "OPTIMIZE", None)], True),
    ([(6, "WRITE", None)], False),  # another writer's rows
    ([(6, "WRITE", None), (7, "RESTORE", '{"mlforge_undo_to": 5, "undoes": 6}')], True),
    ([(6, "WRITE", None), (7, "RESTORE", '{"mlforge_undo_to": 5, "undoes": 6}'), (8, "OPTIMIZE", None)], True),
    ([(7, "RESTORE", '{"mlforge_undo_to": 5, "undoes": 6}'), (6, "WRITE", None)], True),  # history in any order
    ([(6, "WRITE", None), (7, "WRITE", None), (8, "RESTORE", '{"mlforge_undo_to": 6, "undoes": 7}')], False),  # undoes only the second
    ([(6, "WRITE", None), (7, "RESTORE", '{"mlforge_undo_to": 5, "undoes": 6}'), (8, "WRITE", None)], False),
    ([(6, "RESTORE", '{"mlforge_rollback_to": "1.0.0"}')], False),  # a restore that is not mlforge's undo
    ([(6, "RESTORE", "not json")], False),
])
def test_a_table_holds_latests_rows_only_over_commits_that_keep_them(commits, held):  # contract I1, E3
    from mlforge.offline.delta_tables import Commit, holds_rows_of

    assert holds_rows_of([Commit(*c) for c in commits], 5) is held
