"""The single entry point for checks (STYLE 14): `nox -s tests`, `parity`, `lint`, `bench`, ...

Sessions reuse the project's virtualenv (`.venv`, made by `.ci/run` or the README's
commands) so nothing is installed twice; run `nox -s <name>`.
"""

from __future__ import annotations

import sys

import nox

# Tools run from the interpreter that runs nox (the project venv), never from PATH.
PY = sys.executable

nox.options.default_venv_backend = "none"
nox.options.sessions = ["lint", "tests"]


@nox.session
def tests(session: nox.Session) -> None:
    """Fast suite: DuckDB and Polars, no Spark, no slow tests (plain `pytest` does the same)."""
    session.run(PY, "-m", "pytest", "-q", "-p", "no:cacheprovider", *session.posargs)


@nox.session
def parity(session: nox.Session) -> None:
    """Cross-engine parity and property suites on DuckDB, Polars and PySpark, with more
    hypothesis examples than the fast run."""
    session.env["HYPOTHESIS_PROFILE"] = "parity"
    session.run(PY, "-m", "pytest", "-q", "-m", "parity and not spark and not live", "-p", "no:cacheprovider", *session.posargs)
    # A Spark job costs seconds, not milliseconds: the "spark" profile runs 25 examples per
    # property (issue 17), in one SparkSession for the whole run.
    session.env["HYPOTHESIS_PROFILE"] = "spark"
    session.run(PY, "-m", "pytest", "-q", "-m", "spark and not live and not cluster", "-p", "no:cacheprovider", *session.posargs)


@nox.session
def spark_connect(session: nox.Session) -> None:
    """The Spark suites of the Unity Catalog store and the engine contract once more, over
    Spark Connect (Spark's own local Connect server, as Databricks Connect is used)."""
    # Over Connect each job costs more again: the properties run the smaller
    # "spark-connect" profile here; `nox -s parity` runs them at full strength.
    session.env["HYPOTHESIS_PROFILE"] = "spark-connect"
    session.env["MLFORGE_SPARK_REMOTE"] = session.env.get("MLFORGE_SPARK_REMOTE") or "local[2]"
    files = ["tests/test_unity_catalog.py", "tests/test_parity.py", "tests/test_retrieval.py", "tests/test_incremental.py", "tests/test_spark_session.py"]
    session.run(PY, "-m", "pytest", "-q", "-m", "spark and not live and not cluster", "-p", "no:cacheprovider", *(session.posargs or files))


@nox.session
def spark_cluster(session: nox.Session) -> None:
    """Builds, retrieval, an online publish and the parity properties on a Spark standalone
    cluster on loopback (a master and two workers, each its own JVM), with the driver's
    spark.driver.maxResultSize at 8m: a collect of data rows fails the run (docs/spark.md)."""
    session.env["HYPOTHESIS_PROFILE"] = "spark"
    session.run(PY, "-m", "pytest", "-q", "-m", "cluster", "-p", "no:cacheprovider", *(session.posargs or ["tests/test_spark_cluster.py"]))


@nox.session
def slow(session: nox.Session) -> None:
    """Long-running property, fault-injection and service suites."""
    session.run(PY, "-m", "pytest", "-q", "-m", "slow and not spark", "-p", "no:cacheprovider", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """Ruff lint and the ty type checker (configured in pyproject.toml, [tool.ty])."""
    session.run(PY, "-m", "ruff", "check", "src", "tests", "benchmarks", "noxfile.py")
    session.run(PY, "-m", "ty", "check")


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks against hand-written baselines; figures go to benchmarks/README.md and
    benchmarks/results/*.json, and the chart of them to benchmarks/chart.png."""
    session.run(PY, "benchmarks/run_all.py", *session.posargs)
    session.run(PY, "benchmarks/chart.py")


@nox.session
def bench_peers(session: nox.Session) -> None:
    """mlforge against its peers in one run: the original mlforge-sdk 0.7.0 (build) and
    Feast 0.67's DuckDB offline store (point-in-time retrieval), each from its own venv under
    .cache/bench/ (made from PyPI on the first run); writes the Peers section of
    benchmarks/README.md and benchmarks/results/peers.json, then redraws the chart."""
    session.run(PY, "benchmarks/bench_peers.py", *session.posargs)
    session.run(PY, "benchmarks/chart.py")


@nox.session
def examples(session: nox.Session) -> None:
    """Run every example end to end."""
    session.run(PY, "-m", "pytest", "-q", "tests/test_examples.py", "tests/test_examples_extra.py", "-m", "not live", "-p", "no:cacheprovider", *session.posargs)


@nox.session
def docs(session: nox.Session) -> None:
    """The documentation site: regenerate the engine capability matrix and the figures, then
    build with mkdocs-material + mkdocstrings in strict mode (any warning fails)."""
    session.env.setdefault("NO_MKDOCS_2_WARNING", "1")  # material's end-of-life banner, not ours
    session.run(PY, "docs/gen_matrix.py")
    session.run(PY, "docs/gen_figures.py")
    session.run(PY, "-m", "mkdocs", "build", "--strict", *session.posargs)
