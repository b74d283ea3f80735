"""Ctrl-C (SIGINT) and SIGTERM stop a build at once: exit 130, nothing published, no
staging left behind (rules E2, E3), whatever the build was doing at that moment.

Before, DuckDB turned the SIGINT into a "Query interrupted" failure of the current feature
and the build went on with the next one.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

pytestmark = pytest.mark.slow

DEFINITIONS = """
import mlforge as mlf

events = mlf.Source("events.parquet")
metrics = [mlf.Median("amount", windows=["7d"]), mlf.Std("amount", windows=["7d"])]

@mlf.feature(source=events, keys=["user_id"], timestamp="event_time", interval="1d", metrics=metrics)
def first(t):
    return t

@mlf.feature(source=events, keys=["user_id"], timestamp="event_time", interval="1d", metrics=metrics)
def second(t):
    return t

defs = mlf.Definitions("interrupt", [first, second])
"""


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """Two features that take several seconds each on DuckDB (1.3M output rows each)."""
    root = tmp_path_factory.mktemp("interrupt")
    n = 300_000
    rng = np.random.default_rng(1)
    start = 1_700_000_000 * 1_000_000
    pq.write_table(
        pa.table({
            "user_id": rng.integers(0, 20_000, n),
            "event_time": pa.array(start + rng.integers(0, 100 * 86_400, n) * 1_000_000, pa.timestamp("us")),
            "amount": rng.random(n),
        }),
        root / "events.parquet",
    )
    (root / "definitions.py").write_text(textwrap.dedent(DEFINITIONS))
    return root


def _build_until(project: Path, fault_log: Path, marker: str, delay: float, sig: int, pause: str = "") -> tuple[int, float, str]:
    """Start `mlforge build`, wait for the ``marker``-th checkpoint line, sleep ``delay``, send
    ``sig``; return the exit code, the seconds from the signal to the exit, and stderr."""
    fault_log.unlink(missing_ok=True)
    env = {**os.environ, "MLFORGE_FAULT_LOG": str(fault_log), "MLFORGE_FAULT_PAUSE": pause}
    proc = subprocess.Popen([sys.executable, "-m", "mlforge", "build"], cwd=project, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    name, _, nth = marker.partition("#")
    deadline = time.monotonic() + 120
    while name and time.monotonic() < deadline and proc.poll() is None:
        lines = fault_log.read_text().splitlines() if fault_log.exists() else []
        if sum(line.split()[0] == name for line in lines) >= int(nth or 1):
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the build ended before the moment to interrupt it"
    time.sleep(delay)
    signalled = time.monotonic()
    proc.send_signal(sig)
    try:
        proc.wait(timeout=30)
    finally:
        proc.kill()
    return proc.returncode, time.monotonic() - signalled, proc.stderr.read()


def _published(project: Path) -> list[str]:
    store = project / "feature_store"
    return sorted(str(p.relative_to(store)) for p in store.rglob("*") if p.name in ("_metadata.json", "_latest.json") or p.name.startswith(".staging-")) if store.exists() else []


MOMENTS = [
    # (what, checkpoint to wait for, seconds after it, fault pause)
    ("starting: loading definitions, reading the source", "", 1.5, ""),
    ("in the first feature's query", "staged#1", 0.5, ""),
    ("just before the first feature's commit", "commit#1", 0.2, "commit:30"),
]


@pytest.mark.parametrize(("sig", "moment"), [(signal.SIGINT, m) for m in MOMENTS] + [(signal.SIGTERM, MOMENTS[1])], ids=lambda v: v[0] if isinstance(v, tuple) else signal.Signals(v).name)
def test_a_signal_stops_the_build_at_once_leaving_nothing(project, tmp_path, sig, moment):
    what, marker, delay, pause = moment
    code, seconds, stderr = _build_until(project, tmp_path / "faults.log", marker, delay, sig, pause)
    assert code == 130, f"{what}: exit {code}: {stderr}"
    assert seconds < 1.0, f"{what}: exited {seconds:.2f}s after the signal"
    assert "Traceback" not in stderr and "interrupted" in stderr
    assert _published(project) == [], f"{what}: left {_published(project)}"
