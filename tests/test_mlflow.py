"""The MLflow integration against a real local tracking store (file backend under tmp_path):
what `autolog()` and `log_features_to_mlflow` record is read back and reproduces the
training set exactly."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime, timedelta

import pandas as pd
import polars as pl
import pytest

pytest.importorskip("mlflow")

import mlflow

import mlforge as mlf
from mlforge.errors import ConfigError, RetrievalError
from mlforge.integrations import mlflow as integration
from mlforge.retrieval import TRAINING_DATA_HOOKS

START = datetime(2024, 1, 1)


@pytest.fixture
def tracking(tracking):
    """conftest's fresh MLflow tracking store; autolog off after."""
    yield tracking
    integration.autolog(disable=True)


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A small built project in tmp_path: a metric feature and a non-metric one."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    rows = [{"user_id": f"u{i % 3}", "event_time": START + timedelta(hours=7 * i), "amount": float(i % 11 + 1)} for i in range(60)]
    pd.DataFrame(rows).to_parquet(tmp_path / "data" / "tx.parquet")
    (tmp_path / "definitions.py").write_text(
        "import mlforge as mlf\n"
        "tx = mlf.Source('data/tx.parquet')\n"
        "user = mlf.Entity(name='user', join_key='user_id')\n"
        "@mlf.feature(source=tx, entities=[user], timestamp='event_time', interval='1d',\n"
        "             metrics=[mlf.Sum('amount', windows=['2d', '4d'], name='spend')])\n"
        "def user_spend(t):\n"
        "    return t.select('user_id', 'event_time', 'amount')\n"
        "@mlf.feature(source=tx, keys=['user_id'], timestamp='event_time')\n"
        "def last_amount(t):\n"
        "    return t.select('user_id', 'event_time', t.amount.name('last_amount'))\n"
        "defs = mlf.Definitions('shop', features=[user_spend, last_amount], offline_store=mlf.LocalStore('feature_store'))\n"
    )
    from mlforge.loader import load_definitions

    defs = load_definitions(tmp_path / "definitions.py")
    assert defs.build().ok
    return defs


@pytest.fixture
def labels():
    return pd.DataFrame({
        "user_id": ["u0", "u1", "u2", "u1"],
        "label_time": pd.to_datetime(["2024-01-05 12:00", "2024-01-07 00:00", "2024-01-10 03:00", "2024-01-12 00:00"]),
        "target": [1, 0, 1, 0],
    })


def test_autolog_records_every_retrieval_in_a_run(tracking, project, labels):
    mlf.mlflow.autolog()
    with mlflow.start_run() as run:
        training = project.get_training_data(["user_spend", "last_amount"], labels, timestamp="label_time")
    logged = mlflow.MlflowClient().get_run(run.info.run_id).data
    meta = project.offline_store.read_metadata("user_spend")
    assert logged.params["mlforge.user_spend.version"] == "1.0.0"
    assert logged.params["mlforge.last_amount.version"] == "1.0.0"
    assert logged.params["mlforge.timestamp"] == "label_time"
    assert logged.params["mlforge.entity_df.rows"] == "4"
    assert logged.params["mlforge.entity_df.columns"] == "user_id,label_time,target"
    assert logged.tags["mlforge.user_spend.definition_hash"] == meta["definition_hash"]
    assert logged.tags["mlforge.user_spend.data_hash"] == meta["data_hash"]
    assert logged.tags["mlforge.features"] == "user_spend@1.0.0,last_amount@1.0.0"
    assert logged.tags["mlforge.retrievals"] == "1"

    record = integration.load_logged_features(run.info.run_id)
    assert record["retrieval"]["features"] == [["user_spend", "1.0.0"], ["last_amount", "1.0.0"]]
    assert record["retrieval"]["timestamp"] == "label_time"
    described = record["retrieval"]["entity_df"]
    assert described["rows"] == 4 and described["columns"] == ["user_id", "label_time", "target"]
    assert described["kind"] == "pandas" and len(described["sha256"]) == 64
    spend = record["features"][0]
    assert spend["schema"] == meta["schema"] and spend["schema_hash"] == meta["schema_hash"]
    assert spend["keys"] == ["user_id"] and spend["interval"] == "1d"
    assert record["reproduce"] == "defs.get_training_data([('user_spend', '1.0.0'), ('last_amount', '1.0.0')], entity_df, timestamp='label_time')"

    # The record reproduces the training set, even after a newer version is published.
    assert project.build(["user_spend"], force=True).ok
    again = project.get_training_data(integration.pinned_features(record), labels, timestamp="label_time")
    pd.testing.assert_frame_equal(again, training)


def test_autolog_logs_nothing_outside_a_run_and_can_be_disabled(tracking, project, labels):
    mlf.mlflow.autolog()
    mlf.mlflow.autolog()
    assert TRAINING_DATA_HOOKS.count(integration._autolog_hook) == 1
    project.get_training_data(["user_spend"], labels, timestamp="label_time")  # no run: no error
    mlf.mlflow.autolog(disable=True)
    assert integration._autolog_hook not in TRAINING_DATA_HOOKS
    with mlflow.start_run() as run:
        project.get_training_data(["user_spend"], labels, timestamp="label_time")
    assert "mlforge.retrievals" not in mlflow.MlflowClient().get_run(run.info.run_id).data.tags


def test_module_function_and_repeated_retrievals_number_their_records(tracking, project, labels):
    mlf.mlflow.autolog()
    with mlflow.start_run() as run:
        mlf.get_training_data(["user_spend"], labels, timestamp="label_time", definitions=project)
        lazy = pl.from_pandas(labels.head(2)).lazy()
        mlf.get_training_data([mlf.FeatureSpec("last_amount", columns=["last_amount"])], lazy, definitions=project)
    tags = mlflow.MlflowClient().get_run(run.info.run_id).data.tags
    assert tags["mlforge.retrievals"] == "2"
    first = integration.load_logged_features(run.info.run_id, number=1)
    second = integration.load_logged_features(run.info.run_id)
    assert first["retrieval"]["features"] == [["user_spend", "1.0.0"]]
    assert second["retrieval"] == {
        "features": [{"name": "last_amount", "version": "1.0.0", "columns": ["last_amount"]}],
        "timestamp": None,
        "entity_df": second["retrieval"]["entity_df"],
    }
    assert second["retrieval"]["entity_df"]["rows"] == 2  # a LazyFrame is not hashed (not executed twice)
    assert second["retrieval"]["entity_df"]["kind"] == "polars" and "sha256" not in second["retrieval"]["entity_df"]
    with mlflow.start_run(run_id=run.info.run_id):
        import ibis

        project.get_training_data(["user_spend"], ibis.memtable(labels), timestamp="label_time")
    third = integration.load_logged_features(run.info.run_id)
    assert third["retrieval"]["entity_df"]["kind"] == "ibis" and third["retrieval"]["entity_df"]["rows"] == 4
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id, "mlforge")}
    assert artifacts == {"mlforge/retrieval_001.json", "mlforge/retrieval_002.json", "mlforge/retrieval_003.json"}


def test_log_features_to_a_run_by_id_without_an_active_run(tracking, project):
    run = mlflow.MlflowClient().create_run(experiment_id="0")
    record = mlf.log_features_to_mlflow([("user_spend", "1.0.0")], run_id=run.info.run_id, definitions=project)
    assert record["features"][0]["version"] == "1.0.0"
    assert "entity_df" not in record["retrieval"]
    data = mlflow.MlflowClient().get_run(run.info.run_id).data
    assert data.params == {"mlforge.user_spend.version": "1.0.0"}
    assert integration.load_logged_features(run.info.run_id)["features"] == record["features"]


def test_a_newer_version_updates_tags_and_keeps_the_first_param(tracking, project, tmp_path):
    run = mlflow.MlflowClient().create_run(experiment_id="0")
    mlf.log_features_to_mlflow(["user_spend"], run_id=run.info.run_id, definitions=project)
    assert project.build(["user_spend"], force=True).ok
    newer = project.offline_store.latest_version("user_spend")
    assert newer != "1.0.0"
    mlf.log_features_to_mlflow(["user_spend"], run_id=run.info.run_id, definitions=project)
    data = mlflow.MlflowClient().get_run(run.info.run_id).data
    assert data.params["mlforge.user_spend.version"] == "1.0.0"
    assert data.tags["mlforge.user_spend.version"] == newer
    assert integration.load_logged_features(run.info.run_id)["features"][0]["version"] == newer


def test_errors_name_the_fix(tracking, project):
    with pytest.raises(ConfigError, match="no MLflow run"):
        mlf.log_features_to_mlflow(["user_spend"], definitions=project)
    run = mlflow.MlflowClient().create_run(experiment_id="0")
    with pytest.raises(RetrievalError, match="nope"):
        mlf.log_features_to_mlflow(["nope"], run_id=run.info.run_id, definitions=project)
    with pytest.raises(RetrievalError, match=r"no version 9\.9\.9"):
        mlf.log_features_to_mlflow([("user_spend", "9.9.9")], run_id=run.info.run_id, definitions=project)
    with pytest.raises(ConfigError, match="no mlforge record"):
        integration.load_logged_features(run.info.run_id)
    unknown = "0123456789abcdef0123456789abcdef"  # a raw MlflowException before (E1)
    with pytest.raises(ConfigError, match=f"MLflow run '{unknown}' cannot be read") as caught:
        mlf.log_features_to_mlflow(["user_spend"], run_id=unknown, definitions=project)
    assert "run id" in caught.value.fix
    with pytest.raises(ConfigError, match="cannot be read"):
        integration.load_logged_features(unknown)


def test_cli_log_mlflow(tracking, project, capsys):
    from mlforge.cli.app import run as cli

    run = mlflow.MlflowClient().create_run(experiment_id="0")
    assert cli(["log", "mlflow", "--run-id", run.info.run_id, "--features", "user_spend@1.0.0", "--format", "json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert [f["name"] for f in printed["features"]] == ["user_spend"]
    assert cli(["log", "mlflow", "--run-id", run.info.run_id]) == 0  # every built feature
    assert "last_amount" in capsys.readouterr().out
    data = mlflow.MlflowClient().get_run(run.info.run_id).data
    assert data.tags["mlforge.features"] == "last_amount@1.0.0,user_spend@1.0.0"
    assert cli(["log", "mlflow", "--run-id", run.info.run_id, "--features", "nope"]) == 2
    assert cli(["log", "mlflow", "--run-id", run.info.run_id, "--features", " , "]) == 2  # names nothing: never "all"
    err = capsys.readouterr().err
    assert "unknown feature 'nope'" in err and "build --features nope" not in err  # its fix was a build that fails
    assert cli(["log", "mlflow"]) == 2  # --run-id is required


def test_import_mlforge_does_not_import_mlflow():
    code = (
        "import sys, mlforge as mlf\n"
        "mlf.mlflow; mlf.log_features_to_mlflow\n"
        "import mlforge.retrieval, mlforge.cli.log\n"
        "assert 'mlflow' not in sys.modules, 'mlflow imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
