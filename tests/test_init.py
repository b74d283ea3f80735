"""``mlforge init demo && cd demo && mlforge build`` works at once, through the real entry
point in subprocesses (what a new user types)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from mlforge.cli.templates import config_text


def mlforge(*args: str, cwd) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFORGE_")}
    return subprocess.run([sys.executable, "-m", "mlforge", *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=300)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("init")
    done = mlforge("init", "demo", cwd=root)
    assert done.returncode == 0, done.stderr
    return root / "demo"


def test_init_writes_a_project(demo):
    for rel in ("definitions.py", "features.py", "mlforge.yaml", "README.md", "data/transactions.parquet", "data/users.parquet"):
        assert (demo / rel).is_file(), rel


def test_init_then_build_list_inspect(demo):
    done = mlforge("build", cwd=demo)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "3 built, 0 skipped, 0 failed" in done.stdout
    done = mlforge("list", "features", cwd=demo)
    assert done.returncode == 0 and "user_spend" in done.stdout and "1.0.0" in done.stdout
    done = mlforge("inspect", "feature", "user_spend", "--format", "json", cwd=demo)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["stored"]["version"] == "1.0.0"


@pytest.mark.parametrize(
    ("online", "store", "engine", "expected"),
    [
        ("redis", "s3", "duckdb", ["KIND: redis", "KIND: s3", "${oc.env:MLFORGE_S3_BUCKET}"]),
        ("valkey", "gcs", "polars", ["KIND: valkey", "KIND: gcs", "engine: polars"]),
        ("dynamodb", "local", "duckdb", ["KIND: dynamodb"]),
        ("databricks", "unity-catalog", "pyspark", ["KIND: databricks-online-tables", "KIND: unity-catalog", "engine: pyspark"]),
    ],
)
def test_init_options_fill_the_prod_profile(online, store, engine, expected, tmp_path, monkeypatch):
    import yaml

    text = config_text("demo", online=online, store=store, engine=engine)
    for fragment in expected:
        assert fragment in text
    data = yaml.safe_load(text)
    assert data["profiles"]["dev"]["offline_store"]["KIND"] == "local"  # dev always builds locally
    assert data["default_profile"] == "dev"


def test_init_dev_profile_loads(tmp_path, monkeypatch):
    from mlforge.config import resolve_profile

    monkeypatch.chdir(tmp_path)
    (tmp_path / "mlforge.yaml").write_text(config_text("demo", online="redis", store="s3", engine="polars"))
    for var in ("MLFORGE_PROFILE", "MLFORGE_ENGINE", "MLFORGE_CONFIG"):
        monkeypatch.delenv(var, raising=False)
    resolved = resolve_profile()
    assert (resolved.name, resolved.engine) == ("dev", "polars")


def test_a_new_project_serves_what_its_readme_reads(demo):
    """`mlforge init` then `mlforge serve` works (the dev profile's in-process online store
    is filled at start-up), and the README's request at the watermark reads the sample
    data's windows, not emptied ones (O1)."""
    from fastapi.testclient import TestClient

    from mlforge.loader import load_definitions
    from mlforge.serve import create_app, fill_in_process_store

    assert mlforge("build", "-q", cwd=demo).returncode == 0
    readme = (demo / "README.md").read_text()
    body = json.loads(readme.split("-d '", 1)[1].split("'", 1)[0])
    cwd = os.getcwd()
    os.chdir(demo)
    try:
        defs = load_definitions(demo / "definitions.py")
        loaded = fill_in_process_store(defs)
        assert {p.feature for p in loaded} == {"user_spend", "merchant_activity", "user_profile"}
        answer = TestClient(create_app(defs)).post("/features/online", json=body)
    finally:
        os.chdir(cwd)
    assert answer.status_code == 200, answer.text
    values = answer.json()["features"]["user_spend"]
    assert values["txn_count_30d"] > 0 and answer.json()["metadata"]["user_spend"]["known"] is True


@pytest.mark.parametrize(("name", "message"), [("", "the project name is empty"), ("x" * 300, "longer than 200 characters"), ("afile", "already exists and is a file")])
def test_init_refuses_a_name_it_cannot_use(name, message, tmp_path, monkeypatch, capsys):  # contract E2, E4
    from mlforge.cli.app import run

    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("")
    assert run(["init", name]) == 2
    assert message in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]  # nothing made
