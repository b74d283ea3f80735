"""PySpark on a standalone cluster (issue 17): a master and two workers on loopback, each
its own JVM, the driver with ``spark.driver.maxResultSize=8m`` and broadcasts capped at
1 MB. Builds, validation, version checks, retrieval on a Spark frame of 400k labels and
an online publish all run on data far larger than 8 MB: any ``collect()``/``toArrow()``
of data rows on the way fails the test (see docs/spark.md). The parity properties run
here too, on executors that are not the driver's JVM.

Runs in ``nox -s spark_cluster`` (``-m cluster``), in a process of its own: one
SparkContext per process, and this one is not ``local[*]``.
"""

from __future__ import annotations

import os
import tempfile
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pytest
from hypothesis import given, note, settings

import mlforge as mlf
from mlforge.online.memory import MemoryStore
from spark_cluster import Cluster, driver_conf
from test_parity import PARTIAL_FUNCTIONS, cases, check_against_oracle

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(600)]

USERS = 20_000
EVENTS = 400_000
LABELS = 400_000
DAYS = 30
START = datetime(2024, 1, 1, tzinfo=UTC)
#: Examples per parity property on the cluster (each is a build over several JVMs).
CLUSTER_EXAMPLES = int(os.environ.get("MLFORGE_CLUSTER_EXAMPLES", "8"))


@pytest.fixture(scope="module")
def cluster_engine(tmp_path_factory):
    """The PySpark engine of a driver on a fresh loopback cluster; torn down even on failure."""
    from pyspark.sql import SparkSession

    from mlforge.engines.pyspark import PySparkEngine

    if SparkSession.getActiveSession() is not None:
        pytest.fail("a Spark session already runs in this process: run the cluster tests alone (nox -s spark_cluster)")
    cluster = Cluster(tmp_path_factory.mktemp("cluster"))
    engine = None
    # The driver's JVM (started by pyspark from this environment) binds loopback too.
    local_ip = os.environ.get("SPARK_LOCAL_IP")
    os.environ["SPARK_LOCAL_IP"] = "127.0.0.1"
    try:
        cluster.start(workers=2)
        engine = PySparkEngine(master=cluster.master_url, conf=driver_conf())
        session = engine.session
        assert session.sparkContext.master == cluster.master_url
        assert session.conf.get("spark.driver.maxResultSize") == "8m"
        yield engine
    finally:
        if engine is not None:
            engine.close()
        cluster.stop()
        if local_ip is None:
            os.environ.pop("SPARK_LOCAL_IP", None)
        else:
            os.environ["SPARK_LOCAL_IP"] = local_ip


@pytest.fixture(scope="module")
def big_project(cluster_engine, tmp_path_factory):
    """400k events of 20k users over 30 days, written by the executors; a feature of
    daily metrics over them. Wide enough that even what an online publish sends (the
    rows at or after the watermark, ~11 MB as Arrow) is past the driver's 8 MB."""
    from pyspark.sql import functions as F

    root = tmp_path_factory.mktemp("big")
    session = cluster_engine.session
    events = (
        session.range(EVENTS)
        .withColumn("user_id", (F.col("id") * 7919 % USERS).cast("long"))
        .withColumn("ts", (F.lit(int(START.timestamp())) + (F.col("id") * 104_729 % (DAYS * 86_400))).cast("timestamp"))
        .withColumn("amt", F.rand(seed=17) * 100)
        .drop("id")
    )
    source = str(root / "events")
    events.write.parquet(source)

    @mlf.feature(
        source=mlf.Source(source, format=mlf.ParquetFormat()), keys=["user_id"], timestamp="ts", interval="1d",
        metrics=[
            mlf.Sum("amt", windows=["1d", "7d"]), mlf.Count("amt", windows=["1d", "7d"]), mlf.Mean("amt", windows=["1d", "7d"]),
            mlf.Min("amt", windows=["7d"]), mlf.Max("amt", windows=["1d", "7d"]),
        ],
        validators={"amt": [mlf.not_null(), mlf.greater_than_or_equal(0)]},
    )
    def user_spend(t):
        return t

    defs = mlf.Definitions("cluster", [user_spend], offline_store=mlf.LocalStore(root / "store"), online_store=MemoryStore(), engine=cluster_engine)
    return defs, root


def test_the_cluster_is_two_workers_apart_from_the_driver(cluster_engine):
    """Executors run in JVMs of their own, never in the driver's."""
    import time

    session = cluster_engine.session
    deadline = time.monotonic() + 90  # executors register a moment after the session starts
    while (executors := session.sparkContext._jsc.sc().getExecutorMemoryStatus().size() - 1) < 2 and time.monotonic() < deadline:  # minus the driver
        time.sleep(0.5)
    assert executors == 2
    assert session.sparkContext.master.startswith("spark://127.0.0.1:")


def test_a_collect_of_data_rows_fails_on_this_driver(cluster_engine):
    """The guard the other tests rely on: 24 MB of rows do not fit the driver's results."""
    frame = cluster_engine.session.range(1_000_000).selectExpr("id", "rand(3) AS x", "rand(5) AS y")
    with pytest.raises(Exception, match="maxResultSize"):
        frame.toArrow()
    with pytest.raises(Exception, match="maxResultSize"):
        frame.collect()


def test_build_validation_and_version_checks_stay_in_spark(big_project):
    defs, _ = big_project
    result = defs.build()["user_spend"]
    assert (result.status, result.version) == ("built", "1.0.0"), result.error
    meta = defs.offline_store.read_metadata("user_spend")
    # the stored table is far too large for the driver's 8 MB of results
    assert meta["rows"] * len(meta["schema"]) * 8 > 4 * 8 * 1024 * 1024, meta["rows"]
    assert result.rows == meta["rows"]
    # unchanged definition and source: skipped without a rebuild (S2)
    assert defs.build()["user_spend"].status == "skipped"
    # a forced rebuild computes everything again and finds the data identical
    again = defs.build(force=True)["user_spend"]
    assert again.status == "built" and again.version == "1.0.1", again.error


def test_training_data_on_400k_spark_labels_stays_in_spark(big_project, cluster_engine):  # contract P1, P2
    from pyspark.sql import DataFrame
    from pyspark.sql import functions as F

    defs, _ = big_project
    assert defs.build()["user_spend"].status in {"built", "skipped"}
    labels = (
        cluster_engine.session.range(LABELS)
        .withColumn("user_id", (F.col("id") * 31 % (USERS + 50)).cast("long"))  # a few unknown users
        .withColumn("when", (F.lit(int(START.timestamp())) + (F.col("id") * 7_777 % ((DAYS + 10) * 86_400))).cast("timestamp"))
    )
    out = defs.get_training_data(["user_spend"], labels, timestamp="when")
    assert isinstance(out, DataFrame)
    assert out.count() == LABELS  # P1: the rows of entity_df, no more, no fewer
    # A few hundred rows, checked against DuckDB reading the same store.
    sample = out.filter(F.col("id") % 2_000 == 0).orderBy("id").toArrow()
    local_labels = sample.select(["id", "user_id", "when"])
    local = mlf.Definitions("cluster", list(defs.features.values()), offline_store=defs.offline_store, engine="duckdb")
    want = local.get_training_data(["user_spend"], local_labels, timestamp="when")
    assert sample.num_rows == LABELS // 2_000
    for column in want.column_names:
        got, expected = sample.column(column).to_pylist(), want.column(column).to_pylist()
        if column == "when":
            got, expected = [v.replace(tzinfo=None) for v in got], [v.replace(tzinfo=None) for v in expected]
        assert all(a == b or (isinstance(a, float) and abs(a - b) <= 1e-9 * max(1.0, abs(b))) for a, b in zip(got, expected, strict=True)), column


def test_online_publish_streams_from_the_executors(big_project):  # contract O1
    defs, _ = big_project
    published = defs.build(online=True, force=True)["user_spend"]
    assert published.status == "built", published.error
    meta = defs.offline_store.read_metadata("user_spend")
    watermark = datetime.fromtimestamp(meta["watermark"], tz=UTC)
    users = pa.table({"user_id": pa.array([0, 1, 2, 777, 19_999, USERS + 5], pa.int64())})
    at = watermark + timedelta(hours=5)
    online = defs.get_online_features(["user_spend"], users, at=at)
    local = mlf.Definitions("cluster", list(defs.features.values()), offline_store=defs.offline_store, engine="duckdb")
    labels = users.append_column("ts", pa.array([at] * users.num_rows, pa.timestamp("us", tz="UTC")))
    training = local.get_training_data(["user_spend"], labels, timestamp="ts").drop_columns(["ts"])
    assert online.column_names == training.column_names
    for got, want in zip(online.to_pylist(), training.to_pylist(), strict=True):
        assert got.keys() == want.keys()
        for column, value in want.items():
            other = got[column]
            assert other == value or (isinstance(value, float) and abs(other - value) <= 1e-9 * max(1.0, abs(value))), (column, got, want)


def test_parity_properties_on_the_cluster(cluster_engine):  # contract W1-W9 on several JVMs
    @settings(max_examples=CLUSTER_EXAMPLES, deadline=None)
    @given(case=cases())
    def every_function(case):
        note(f"interval={case.interval_text} tz={case.timezone} metrics={case.metrics}")
        check_against_oracle(case, cluster_engine)

    @settings(max_examples=CLUSTER_EXAMPLES, deadline=None)
    @given(case=cases(functions=PARTIAL_FUNCTIONS, max_span=40))
    def partial_functions(case):
        note(f"interval={case.interval_text} tz={case.timezone} metrics={case.metrics}")
        check_against_oracle(case, cluster_engine)

    every_function()
    partial_functions()


def test_scratch_files_are_removed(cluster_engine):
    """What the driver streams (an online publish) is written by the executors under the
    scratch directory and removed afterwards."""
    scratch = tempfile.gettempdir()
    before = {n for n in os.listdir(scratch) if n.startswith("mlforge-stream-")}
    table = cluster_engine.from_native(cluster_engine.session.range(50_000).selectExpr("id", "id * 2 AS twice"))
    rows = sum(batch.num_rows for batch in cluster_engine.arrow_batches(table.order_by("id"), 10_000))
    assert rows == 50_000
    assert {n for n in os.listdir(scratch) if n.startswith("mlforge-stream-")} == before
