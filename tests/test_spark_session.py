"""The Spark sessions the PySpark engine accepts (issue 17, part 5), and what a Spark
``entity_df`` may bring to the driver when the work cannot run in Spark (part 1).

``databricks-connect`` ships its own pyspark and cannot share a venv with ``pyspark``, so
its ``DatabricksSession`` is checked with a stand-in module; the real code path of a
Connect session is run by ``nox -s spark_connect``, where the shared session is the Spark
Connect ``SparkSession`` of Spark's local Connect server (the class Databricks Connect's
builder returns).
"""

from __future__ import annotations

import os
import sys
import types
from typing import ClassVar

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import mlforge as mlf
from mlforge.engines import get_engine
from mlforge.engines.pyspark import DATABRICKS_REMOTE, PySparkEngine, spark_session_types
from mlforge.errors import EngineError, RetrievalError


@pytest.fixture
def fake_databricks_connect(monkeypatch):
    """A ``databricks.connect`` module whose ``DatabricksSession.builder`` hands out one session."""

    class DatabricksSession:
        made: ClassVar[list[DatabricksSession]] = []

        class builder:  # spelled as databricks-connect spells it
            @staticmethod
            def getOrCreate():
                session = DatabricksSession()
                DatabricksSession.made.append(session)
                return session

    databricks = types.ModuleType("databricks")
    connect = types.ModuleType("databricks.connect")
    connect.DatabricksSession = DatabricksSession  # ty: ignore[unresolved-attribute]
    databricks.connect = connect  # ty: ignore[unresolved-attribute]
    monkeypatch.setitem(sys.modules, "databricks.connect", connect)
    if "databricks" not in sys.modules:
        monkeypatch.setitem(sys.modules, "databricks", databricks)
    return DatabricksSession


def test_a_databricks_session_is_accepted_when_databricks_connect_is_installed(fake_databricks_connect):
    session = fake_databricks_connect()
    assert fake_databricks_connect in spark_session_types()
    engine = get_engine(session)
    assert isinstance(engine, PySparkEngine) and engine.session is session


def test_databricks_remote_builds_a_databricks_session(fake_databricks_connect):
    engine = PySparkEngine(remote=DATABRICKS_REMOTE)
    assert engine.session is fake_databricks_connect.made[-1]


def test_databricks_remote_without_databricks_connect_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "databricks.connect", None)  # import fails
    from pyspark.sql import SparkSession

    if SparkSession.getActiveSession() is not None:
        pytest.skip("an active session is used before any remote")
    with pytest.raises(EngineError, match="databricks-connect") as error:
        PySparkEngine(remote=DATABRICKS_REMOTE).session  # noqa: B018
    assert "sc://" in str(error.value)


def test_something_else_is_not_a_session():
    with pytest.raises(EngineError, match="not a Spark session"):
        PySparkEngine(session=object())
    with pytest.raises(EngineError, match="unknown engine"):
        get_engine(object())


# -- with a real session (classic in `nox -s parity`, Spark Connect in `nox -s spark_connect`) --
def _project(tmp_path, engine):
    path = tmp_path / "tx.parquet"
    pq.write_table(pa.table({"user_id": [1, 1, 2], "ts": pa.array([0, 3_600_000_000, 7_200_000_000], pa.timestamp("us")), "amt": [1.0, 2.0, 3.0]}), path)

    @mlf.feature(source=str(path), keys=["user_id"], timestamp="ts", interval="1h", metrics=[mlf.Sum("amt", windows=["2h"])])
    def spend(t):
        return t

    return mlf.Definitions("session", [spend], offline_store=mlf.LocalStore(tmp_path / "store"), engine=engine)


@pytest.mark.spark
def test_the_session_object_itself_is_an_engine(spark_engine, tmp_path):
    """The factory path a Databricks Connect user takes: ``engine=<session>``. Under
    MLFORGE_SPARK_REMOTE the session is Spark Connect's own class."""
    session = spark_engine.session
    if os.environ.get("MLFORGE_SPARK_REMOTE"):
        from pyspark.sql.connect.session import SparkSession as ConnectSession

        assert isinstance(session, ConnectSession)
    defs = _project(tmp_path, session)
    assert defs.build()["spend"].status == "built"
    assert defs.read_feature("spend").count().to_pyarrow().as_py() == 5  # user 1: 1h, 2h, 3h; user 2: 3h, 4h


@pytest.mark.spark
def test_spark_labels_on_another_engine_are_bounded(spark_engine, tmp_path, monkeypatch):  # issue 17, part 1
    """engine='duckdb' with a Spark entity_df collects the labels: within the limit it
    works (and returns a Spark frame), past it a RetrievalError says how to stay in Spark."""
    defs = _project(tmp_path, "duckdb")
    assert defs.build().ok
    labels = spark_engine.session.createDataFrame(pa.table({"user_id": [1, 2, 3], "ts": pa.array([7_200_000_000] * 3, pa.timestamp("us"))}).to_pandas())
    monkeypatch.setenv("MLFORGE_SPARK_DRIVER_ROWS", "3")
    out = defs.get_training_data(["spend"], labels, timestamp="ts", engine="duckdb")
    assert out.count() == 3 and "amt_sum_2h" in out.columns
    monkeypatch.setenv("MLFORGE_SPARK_DRIVER_ROWS", "2")
    with pytest.raises(RetrievalError, match="more than 2 rows") as error:
        defs.get_training_data(["spend"], labels, timestamp="ts", engine="duckdb")
    assert "engine='pyspark'" in str(error.value)
    # unset, the Spark frame stays in Spark: no limit applies
    assert defs.get_training_data(["spend"], labels, timestamp="ts").count() == 3
