"""Upgrading from v0.7: the deprecated ``Rolling`` warns where users see it."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from datetime import datetime

import pyarrow as pa
import pyarrow.parquet as pq

FEATURES = textwrap.dedent(
    """
    import mlforge as mlf

    @mlf.feature(
        source="events.parquet", keys=["user_id"], timestamp="ts", interval="1d",
        metrics=[mlf.Rolling(windows=["2d"], aggregations={"amt": ["sum"]})],
    )
    def spend(t):
        return t
    """
)
DEFINITIONS = textwrap.dedent(
    """
    import mlforge as mlf
    import features

    defs = mlf.Definitions("upgrade", [features], offline_store=mlf.LocalStore("feature_store"))
    """
)


def rolling_project(root):
    root.mkdir(exist_ok=True)
    (root / "features.py").write_text(FEATURES)
    (root / "definitions.py").write_text(DEFINITIONS)
    pq.write_table(pa.table({"user_id": [1, 1, 2], "ts": [datetime(2026, 1, d) for d in (1, 2, 3)], "amt": [1.0, 2.0, 3.0]}), root / "events.parquet")
    return root


def default_filters_env():
    """The environment of a user's shell: Python's default warning filters, this checkout."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONWARNINGS", "MLFORGE_PROFILE", "MLFORGE_TARGET")}
    src = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
    return env


def test_rolling_warns_when_imported_from_a_module(tmp_path):
    """Python's default filters hide a DeprecationWarning raised in an imported module; the
    FutureWarning shows, pointing at the user's line."""
    root = rolling_project(tmp_path / "project")
    done = subprocess.run([sys.executable, "-c", "import features"], cwd=root, env=default_filters_env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "FutureWarning: mlforge.Rolling is deprecated" in done.stderr
    assert "features.py" in done.stderr and "mlf.Sum(" in done.stderr


def test_mlforge_build_shows_the_rolling_warning(tmp_path):
    root = rolling_project(tmp_path / "project")
    done = subprocess.run([sys.executable, "-m", "mlforge", "build"], cwd=root, env=default_filters_env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "FutureWarning: mlforge.Rolling is deprecated" in done.stderr
