"""Shared fixtures: the cross-engine ``engine`` fixture (STYLE 9) and a temporary project."""

from __future__ import annotations

import os

import pytest

ENGINES = ["duckdb", "polars", pytest.param("pyspark", marks=pytest.mark.spark)]


@pytest.fixture(scope="session")
def spark_engine():
    from mlforge.engines.pyspark import PySparkEngine

    engine = PySparkEngine(master="local[2]", conf={"spark.sql.shuffle.partitions": "2", "spark.default.parallelism": "2"})
    yield engine
    engine.close()


@pytest.fixture(scope="session")
def delta_spark_engine(spark_engine):
    """The Spark engine, once its session is known to have Delta Lake; without the jars
    the tests that need them skip with the reason (CI fetches them, so there it fails)."""
    from mlforge.engines.pyspark import delta_jars_hint
    from mlforge.offline.delta_tables import spark_has_delta

    if not spark_has_delta(spark_engine.session):
        reason = f"the Spark session has no Delta Lake jars; {delta_jars_hint()}"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return spark_engine


@pytest.fixture(params=ENGINES)
def engine(request):
    """Every engine, by object: DuckDB and Polars fresh per test, one Spark session per run."""
    from mlforge.engines import get_engine

    if request.param == "pyspark":
        return request.getfixturevalue("spark_engine")
    return get_engine(request.param)


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    """Run the test inside a fresh temporary directory."""
    monkeypatch.chdir(tmp_path)
    for var in ("MLFORGE_PROFILE", "MLFORGE_ENGINE"):
        monkeypatch.delenv(var, raising=False)
    return tmp_path


#: The variables that choose a project, profile or engine for the command line.
CLI_ENV = ("MLFORGE_PROFILE", "MLFORGE_ENGINE", "MLFORGE_TARGET", "MLFORGE_CONFIG")


@pytest.fixture
def run_cli(monkeypatch, capsys):
    """``run_cli(*tokens)`` runs the mlforge command line in the current directory (without
    the ``CLI_ENV`` variables) and gives ``(exit code, stdout, stderr)``."""
    from mlforge.cli.app import run

    for var in CLI_ENV:
        monkeypatch.delenv(var, raising=False)

    def invoke(*tokens: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = run(list(tokens))
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return invoke


@pytest.fixture
def tracking(tmp_path, monkeypatch):
    """A fresh file-backed MLflow tracking store; no run left open."""
    import mlflow

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 refuses the file backend unless asked
    uri = (tmp_path / "mlruns").as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    yield uri
    while mlflow.active_run():
        mlflow.end_run()


def pytest_configure(config):
    os.environ.setdefault("PYSPARK_PYTHON", os.sys.executable)
    # Delta Lake jars fetched by .ci/run (mvn): Spark sessions of the tests get Delta.
    jars = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), ".jars")
    if os.path.isdir(jars):
        os.environ.setdefault("MLFORGE_SPARK_JARS", jars)


def _hypothesis_profiles() -> None:
    from hypothesis import HealthCheck, settings

    common = {"deadline": None, "suppress_health_check": [HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large]}
    settings.register_profile("default", max_examples=25, **common)
    settings.register_profile("parity", max_examples=60, **common)
    # Spark: 25 examples per property in `nox -s parity` (issue 17); fewer over Connect.
    settings.register_profile("spark", max_examples=25, **common)
    settings.register_profile("spark-connect", max_examples=6, **common)
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


_hypothesis_profiles()
