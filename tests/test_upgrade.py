"""Upgrading from v0.7: ``mlforge migrate`` imports a v0.7 store, and the deprecated
``Rolling`` warns where users see it."""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
import textwrap
from datetime import datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import mlforge as mlf
from mlforge.cli.app import run
from mlforge.engines import get_engine
from mlforge.errors import StoreError
from mlforge.migration import migrate_v07

FEATURES = textwrap.dedent(
    """
    import mlforge as mlf

    @mlf.feature(
        source="events.parquet", keys=["user_id"], timestamp="ts", interval="1d",
        metrics=[mlf.Rolling(windows=["2d"], aggregations={"amt": ["sum"]})],
    )
    def spend(t):
        return t
    """
)
DEFINITIONS = textwrap.dedent(
    """
    import mlforge as mlf
    import features

    defs = mlf.Definitions("upgrade", [features], offline_store=mlf.LocalStore("feature_store"))
    """
)


def rolling_project(root):
    root.mkdir(exist_ok=True)
    (root / "features.py").write_text(FEATURES)
    (root / "definitions.py").write_text(DEFINITIONS)
    pq.write_table(pa.table({"user_id": [1, 1, 2], "ts": [datetime(2026, 1, d) for d in (1, 2, 3)], "amt": [1.0, 2.0, 3.0]}), root / "events.parquet")
    return root


def default_filters_env():
    """The environment of a user's shell: Python's default warning filters, this checkout."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONWARNINGS", "MLFORGE_PROFILE", "MLFORGE_TARGET")}
    src = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
    return env


def test_rolling_warns_when_imported_from_a_module(tmp_path):
    """Python's default filters hide a plain DeprecationWarning raised in an imported module;
    mlforge's (a DeprecationWarning and a FutureWarning) shows, pointing at the user's line."""
    root = rolling_project(tmp_path / "project")
    done = subprocess.run([sys.executable, "-c", "import features"], cwd=root, env=default_filters_env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "MlforgeDeprecationWarning: mlforge.Rolling is deprecated" in done.stderr
    assert "features.py" in done.stderr and "mlf.Sum(" in done.stderr


def test_mlforge_build_shows_the_rolling_warning(tmp_path):
    root = rolling_project(tmp_path / "project")
    done = subprocess.run([sys.executable, "-m", "mlforge", "build"], cwd=root, env=default_filters_env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "MlforgeDeprecationWarning: mlforge.Rolling is deprecated" in done.stderr


# -- mlforge migrate: a v0.7 store into versions of this format -------------------------------
def v07_version(root, feature, version, table, *, timestamp=None, change="patch", data=True):
    """One version in the v0.7 layout (see mlforge.migration): data.parquet and .meta.json."""
    folder = root / feature / version
    folder.mkdir(parents=True)
    if data:
        pq.write_table(table, folder / "data.parquet")
    record = {
        "name": feature, "version": version, "path": f"feature_store/{feature}/{version}/data.parquet", "entity": "user_id",
        "keys": ["user_id"], "source": "tx.parquet", "row_count": table.num_rows, "created_at": "2026-01-01T00:00:00Z",
        "updated_at": "2026-01-02T00:00:00Z", "content_hash": "c0ffee", "schema_hash": "5c4e3a", "config_hash": "c0f1",
        "source_hash": "50e7", "change_summary": {"bump_type": change, "reason": "data_refresh", "details": []},
    }
    if timestamp:
        record.update(timestamp=timestamp, interval="1d")
    (folder / ".meta.json").write_text(json.dumps(record))


def v07_store(root, latest="1.0.1"):
    spend = pa.table({"user_id": ["u1", "u2"], "event_time": [datetime(2024, 1, 31), datetime(2024, 2, 1)], "users__amt__sum__1d__7d": [1.5, 2.5]})
    v07_version(root, "user_spend", "1.0.0", spend, timestamp="event_time", change="initial")
    v07_version(root, "user_spend", "1.0.1", spend.set_column(2, "users__amt__sum__1d__7d", pa.array([1.5, 9.0])), timestamp="event_time")
    (root / "user_spend" / "_latest.json").write_text(json.dumps({"version": latest}))
    return spend


def test_migrate_keeps_versions_rows_and_the_latest_pointer(tmp_path):
    spend = v07_store(tmp_path / "v07", latest="1.0.0")  # v0.7 was rolled back to 1.0.0
    target = mlf.LocalStore(tmp_path / "store")
    results = migrate_v07(tmp_path / "v07", target)
    assert [(r.version, r.status, r.rows) for r in results] == [("1.0.0", "imported", 2), ("1.0.1", "imported", 2)]
    assert target.list_versions("user_spend") == ["1.0.0", "1.0.1"]
    assert target.latest_version("user_spend") == "1.0.0"
    meta = target.read_metadata("user_spend", "1.0.0")
    assert meta["schema"] == {"user_id": "string", "event_time": "timestamp[UTC]", "users__amt__sum__1d__7d": "float64"}
    assert (meta["change"], meta["rows"], meta["imported_from"]["format"]) == ("MAJOR", 2, "mlforge 0.7")
    assert sorted(os.listdir(tmp_path / "store" / "user_spend" / "1.0.0" / "data")) == ["2024-01.parquet", "2024-02.parquet"]
    rows = target.read("user_spend", get_engine("duckdb"), "1.0.0").to_pyarrow()
    expected = spend.set_column(1, "event_time", spend["event_time"].cast(pa.timestamp("us", tz="UTC")))
    assert rows.sort_by("user_id").equals(expected)
    assert [r.status for r in migrate_v07(tmp_path / "v07", target)] == ["present", "present"]  # re-run: nothing to do


def test_migrate_reports_versions_without_data(tmp_path, capsys):
    root = tmp_path / "v07"
    v07_store(root)
    v07_version(root, "user_spend", "1.0.2", pa.table({"user_id": ["u1"]}), timestamp="event_time", data=False)
    code = run(["migrate", str(root), "--to", str(tmp_path / "store"), "--format", "json"])
    statuses = {r["version"]: r["status"] for r in json.loads(capsys.readouterr().out)}
    assert code == 1 and statuses == {"1.0.0": "imported", "1.0.1": "imported", "1.0.2": "missing data"}


def test_migrate_refuses_features_already_built_here(tmp_path):
    v07_store(tmp_path / "v07")
    events = tmp_path / "events.parquet"
    pq.write_table(pa.table({"user_id": ["u1"], "ts": [datetime(2024, 1, 1)], "amt": [1.0]}), events)

    @mlf.feature(source=str(events), keys=["user_id"], timestamp="ts")
    def user_spend(t):
        return t

    target = mlf.LocalStore(tmp_path / "store")
    assert mlf.Definitions("p", [user_spend], offline_store=target).build().ok
    results = migrate_v07(tmp_path / "v07", target)
    assert {r.status for r in results} == {"refused"} and "1.0.0" in results[0].reason
    assert target.read_metadata("user_spend", "1.0.0")["engine"] == "duckdb"  # untouched


def test_migrate_in_place_is_a_clear_error(tmp_path):
    v07_store(tmp_path / "feature_store")
    with pytest.raises(StoreError, match="in place") as caught:
        migrate_v07(tmp_path / "feature_store", mlf.LocalStore(tmp_path / "feature_store"))
    assert "mlforge migrate feature_store_v07" in caught.value.fix
    assert sorted(os.listdir(tmp_path / "feature_store" / "user_spend")) == ["1.0.0", "1.0.1", "_latest.json"]


@pytest.mark.parametrize("make", [lambda root: None, lambda root: root.mkdir()])
def test_migrate_needs_a_v07_store(tmp_path, capsys, make):
    make(tmp_path / "v07")
    assert run(["migrate", str(tmp_path / "v07"), "--to", str(tmp_path / "store")]) == 2
    assert "v0.7" in capsys.readouterr().err


# -- against a real v0.7 store, built by the public mlforge-sdk 0.7.0 ---------------------------
V07_VENV = Path(__file__).resolve().parent.parent / ".cache" / "mlforge-sdk-0.7.0"
#: 0.7.0 imports duckdb unconditionally but declares it only in the ``duckdb`` extra.
V07_REQUIREMENT = "mlforge-sdk[duckdb]==0.7.0"
V07_BUILD = textwrap.dedent(
    """
    import pathlib
    from datetime import datetime

    import polars as pl
    import mlforge as mlf
    from mlforge.version import rollback_version

    pl.DataFrame({
        "user_id": ["u1", "u1", "u2", "u2", "u3", "u1"],
        "event_time": [datetime(2024, 1, 1, 10), datetime(2024, 1, 2, 11), datetime(2024, 1, 1, 9),
                       datetime(2024, 1, 5, 12), datetime(2024, 2, 3), datetime(2024, 2, 9, 8)],
        "amount": [10.0, 20.5, 3.0, 4.0, 7.25, 1.125],
        "country": ["DE", "DE", "FR", "FR", "US", "DE"],
    }).write_parquet("tx.parquet")

    @mlf.feature(keys=["user_id"], source="tx.parquet", timestamp="event_time", interval="1d", tags=["users"],
                 metrics=[mlf.Rolling(windows=["7d"], aggregations={"amount": ["sum", "count"]})])
    def user_spend(df):
        return df.select(["user_id", "event_time", "amount"])

    @mlf.feature(keys=["user_id"], source="tx.parquet", description="country per user")
    def user_country(df):
        return df.group_by("user_id").agg(pl.col("country").first()).sort("user_id")

    store = mlf.LocalStore("feature_store")
    defs = mlf.Definitions(name="v07", features=[user_spend, user_country], offline_store=store)
    defs.build(preview=False)
    defs.build(preview=False, force=True)
    rollback_version(pathlib.Path("feature_store"), "user_country", "1.0.0")
    pathlib.Path("expected").mkdir()
    for name in ("user_spend", "user_country"):
        for version in store.list_versions(name):
            store.read(name, version).write_parquet(f"expected/{name}-{version}.parquet")
    """
)


def as_utc(table: pa.Table) -> pa.Table:
    """v0.7 wrote naive timestamps; they mean UTC (rule T1)."""
    for index, field in enumerate(table.schema):
        if pa.types.is_timestamp(field.type) and field.type.tz is None:
            table = table.set_column(index, field.name, table[field.name].cast(pa.timestamp("us")).cast(pa.timestamp("us", tz="UTC")))
    return table


def python_313() -> str | None:
    root = os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")
    found = sorted(glob.glob(os.path.join(root, "versions", "3.13*", "bin", "python3.13")))
    return found[-1] if found else shutil.which("python3.13")


@pytest.fixture(scope="session")
def v07_python() -> str:
    """A Python 3.13 venv with mlforge-sdk 0.7.0 (it requires 3.13), cached in .cache/."""
    python = V07_VENV / "bin" / "python"
    probe = [str(python), "-c", "import importlib.metadata as m; assert m.version('mlforge-sdk') == '0.7.0'; import duckdb"]
    if python.exists() and subprocess.run(probe, capture_output=True).returncode == 0:
        return str(python)
    base = python_313()
    if base is None:
        pytest.skip("Python 3.13 is not installed (e.g. `pyenv install 3.13`); mlforge-sdk 0.7.0 requires it")
    subprocess.run([base, "-m", "venv", "--clear", str(V07_VENV)], check=True)
    pip = subprocess.run([str(python), "-m", "pip", "install", "-q", V07_REQUIREMENT], capture_output=True, text=True, timeout=1200)
    if pip.returncode != 0:
        pytest.skip(f"cannot install {V07_REQUIREMENT} from the package index: {pip.stderr.strip()[-400:]}")
    return str(python)


@pytest.mark.slow
def test_migrate_a_store_built_by_mlforge_0_7(v07_python, tmp_path, capsys):
    """Build a store with the public mlforge-sdk 0.7.0, migrate it, read the same rows back."""
    project = tmp_path / "v07"
    project.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    built = subprocess.run([v07_python, "-c", V07_BUILD], cwd=project, env=env, capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stderr[-2000:]
    assert (project / "feature_store" / "user_spend" / "1.0.1" / ".meta.json").is_file()

    target = tmp_path / "store"
    assert run(["migrate", str(project / "feature_store"), "--to", str(target), "--format", "json"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert {(r["feature"], r["version"], r["status"]) for r in results} == {
        (name, version, "imported") for name in ("user_spend", "user_country") for version in ("1.0.0", "1.0.1")
    }
    store = mlf.LocalStore(target)
    assert store.latest_version("user_spend") == "1.0.1"
    assert store.latest_version("user_country") == "1.0.0"  # v0.7 was rolled back there
    engine = get_engine("duckdb")
    for expected_file in sorted((project / "expected").iterdir()):
        name, version = expected_file.stem.rsplit("-", 1)
        meta = store.read_metadata(name, version)
        order = [(c, "ascending") for c in (*meta["keys"], *([meta["timestamp"]] if meta["timestamp"] else []))]
        expected = as_utc(pq.read_table(expected_file)).sort_by(order)
        got = store.read(name, engine, version).to_pyarrow().sort_by(order)
        assert got.column_names == expected.column_names and meta["rows"] == expected.num_rows
        assert got.to_pylist() == expected.to_pylist(), (name, version)
    spend = store.read_metadata("user_spend", "1.0.1")
    assert [m["name"] for m in spend["metrics"]] == ["users__amount__sum__1d__7d", "users__amount__count__1d__7d"]
