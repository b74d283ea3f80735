"""Column statistics of a stored version (``mlforge inspect feature X --stats``): every engine
computes them as Ibis aggregates and every engine's figures equal a pure-Python oracle."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import mlforge as mlf
from mlforge.stats import table_stats

ENGINES = ["duckdb", "polars", pytest.param("pyspark", marks=pytest.mark.spark)]
DEFINITIONS = '''
import mlforge as mlf

@mlf.feature(source="events.parquet", keys=["user"], timestamp="ts", interval="1d",
             metrics=[mlf.Sum("amt", windows=["2d"], name="spend"), mlf.Count("amt", windows=["2d"]), mlf.Mean("amt", windows=["2d"])])
def spend(t):
    return t

defs = mlf.Definitions("stats", [spend], offline_store=mlf.LocalStore("store"))
'''


def events() -> pa.Table:
    base = datetime(2024, 1, 1)
    users = ["a", "b", "c", "d", None]
    rows = [(users[i % 5], base + timedelta(hours=7 * i), None if i % 6 == 0 else round(1.5 * (i % 11) - 2, 2)) for i in range(60)]
    return pa.table({"user": [r[0] for r in rows], "ts": pa.array([r[1] for r in rows], pa.timestamp("us")), "amt": [r[2] for r in rows]})


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("stats")
    pq.write_table(events(), root / "events.parquet")
    (root / "definitions.py").write_text(DEFINITIONS)
    done = subprocess.run([sys.executable, "-m", "mlforge", "build", "--quiet"], cwd=root, capture_output=True, text=True, env=_env("duckdb"))
    assert done.returncode == 0, done.stderr
    return root


def _env(engine: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFORGE_")}
    return {**env, "MLFORGE_ENGINE": engine}


def oracle(table: pa.Table, bins: int = 10) -> dict:
    """The statistics, written out in Python over the rows."""
    columns = []
    for name in table.column_names:
        values = table.column(name).to_pylist()
        present = [v for v in values if v is not None]
        entry = {"name": name, "nulls": len(values) - len(present), "distinct": len(set(present))}
        numeric = pa.types.is_integer(table.schema.field(name).type) or pa.types.is_floating(table.schema.field(name).type)
        ordered = numeric or pa.types.is_timestamp(table.schema.field(name).type)
        entry["min"] = min(present) if ordered and present else None
        entry["max"] = max(present) if ordered and present else None
        entry["mean"] = sum(present) / len(present) if numeric and present else None
        entry["histogram"] = []
        if numeric and present:
            low, high = float(entry["min"]), float(entry["max"])
            cuts = [low] if low == high else [low + (high - low) / bins * b for b in range(bins)]
            edges = [low, high] if low == high else [*cuts, high]
            for b in range(len(edges) - 1):
                last = b == len(edges) - 2
                entry["histogram"].append(sum(1 for v in present if edges[b] <= v and (v <= edges[b + 1] if last else v < edges[b + 1])))
        if pa.types.is_timestamp(table.schema.field(name).type) and present:
            entry["min"], entry["max"] = (v.replace(tzinfo=UTC) if v.tzinfo is None else v for v in (entry["min"], entry["max"]))
        columns.append(entry)
    return {"rows": table.num_rows, "columns": columns}


def stored_table(project: Path) -> pa.Table:
    return pq.read_table(project / "store" / "spend" / "1.0.0" / "data")


def assert_equal_figures(stats: dict, expected: dict) -> None:
    assert stats["rows"] == expected["rows"]
    assert [c["name"] for c in stats["columns"]] == [c["name"] for c in expected["columns"]]
    for got, want in zip(stats["columns"], expected["columns"], strict=True):
        where = got["name"]
        assert (got["nulls"], got["distinct"]) == (want["nulls"], want["distinct"]), where
        assert got["null_rate"] == pytest.approx(want["nulls"] / expected["rows"]), where
        assert [b["count"] for b in got["histogram"]] == want["histogram"], where
        for key in ("min", "max"):
            value = got[key]
            if isinstance(want[key], datetime):
                value = datetime.fromisoformat(value)
            assert value == pytest.approx(want[key]) if isinstance(want[key], float) else value == want[key], (where, key)
        assert got["mean"] == (pytest.approx(want["mean"], rel=1e-12) if want["mean"] is not None else None), where


@pytest.mark.parametrize("engine", ENGINES)
def test_table_stats_equal_the_oracle(project, engine, request):
    from mlforge.engines import get_engine

    engine_obj = request.getfixturevalue("spark_engine") if engine == "pyspark" else get_engine(engine)
    table = mlf.LocalStore(project / "store").read("spend", engine_obj, "1.0.0")
    stats = table_stats(table).to_dict()
    expected = oracle(stored_table(project))
    assert sum(c["nulls"] for c in expected["columns"]) > 0 and any(c["histogram"] for c in expected["columns"])
    assert_equal_figures(stats, expected)


@pytest.mark.parametrize("engine", ENGINES)
def test_inspect_stats_on_every_engine(project, engine):
    done = subprocess.run(
        [sys.executable, "-m", "mlforge", "inspect", "feature", "spend", "--stats", "--format", "json"],
        cwd=project, capture_output=True, text=True, env=_env(engine), timeout=600,
    )
    assert done.returncode == 0, done.stderr
    assert_equal_figures(json.loads(done.stdout)["stats"], oracle(stored_table(project)))


def test_inspect_stats_table_for_people(project):
    done = subprocess.run(
        [sys.executable, "-m", "mlforge", "inspect", "feature", "spend", "--stats"],
        cwd=project, capture_output=True, text=True, env=_env("duckdb"),
    )
    assert done.returncode == 0, done.stderr
    rows = oracle(stored_table(project))["rows"]
    assert f"statistics of spend 1.0.0 ({rows:,} rows)" in done.stdout
    assert "watermark" in done.stdout and "T00:00:00Z" in done.stdout  # ISO 8601, not epoch seconds
    stats_part = done.stdout.split("statistics of spend")[1]
    line = next(line for line in stats_part.splitlines() if line.strip().startswith("amt_mean_2d"))
    assert "%" in line and any(bar in line for bar in "▁▂▃▄▅▆▇█")


def test_approx_distinct_is_the_engines_estimate():
    import ibis

    stats = table_stats(ibis.memtable({"x": [1, 2, 2, None]}), approx=True)
    assert stats.columns[0].distinct in (1, 2, 3)  # an estimate; exact here on DuckDB
