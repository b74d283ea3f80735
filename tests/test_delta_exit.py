"""Processes that read Delta tables exit cleanly.

``DeltaTable.to_pyarrow_table()`` scans through a Python filesystem object; when one of
Arrow's IO threads drops the last file handle after interpreter shutdown has begun, the
process aborts with "terminate called without an active exception" (about every second
run of a short script on this machine). mlforge reads Delta through delta-rs's own reader
or Arrow's native filesystem instead; these runs would fail with the old reads.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pyarrow as pa
import pytest

RUNS = 8

SCRIPT = textwrap.dedent(
    """
    import sys
    import mlforge as mlf
    from mlforge.offline.delta_tables import RustTables, TableRef

    source, store, engine = sys.argv[1:4]

    @mlf.feature(mlf.Source(source, format=mlf.DeltaFormat()), keys=["user_id"], timestamp="ts")
    def users(t):
        return t

    defs = mlf.Definitions("exit", [users], offline_store=mlf.LocalStore(store), engine=engine)
    assert defs.build().ok
    assert defs.read_feature("users").count().execute() == 3
    rows = RustTables().metadata_rows(TableRef("t", source))
    assert len(rows) == 3, rows
    print("ok")
    """
)


@pytest.mark.parametrize("engine", ["duckdb", "polars"])
def test_processes_reading_delta_exit_cleanly(tmp_path, engine):
    from deltalake import write_deltalake

    source = tmp_path / "users_delta"
    write_deltalake(
        str(source),
        pa.table({"user_id": [1, 2, 3], "ts": pa.array([0, 86_400_000_000, 2 * 86_400_000_000], pa.timestamp("us", tz="UTC")), "name": ["a", "b", None]}),
    )
    script = tmp_path / "read.py"
    script.write_text(SCRIPT)
    for run in range(RUNS):
        store = tmp_path / f"store{run}"
        done = subprocess.run([sys.executable, str(script), str(source), str(store), engine], capture_output=True, text=True, timeout=300)
        assert done.returncode == 0 and done.stdout.strip() == "ok", f"run {run + 1} of {RUNS}: exit {done.returncode}\n{done.stderr[-2000:]}"
