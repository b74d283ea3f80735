"""Processes exit cleanly: Delta reads do not abort them, DuckDB leaves no temporary files.

``DeltaTable.to_pyarrow_table()`` scans through a Python filesystem object; when one of
Arrow's IO threads drops the last file handle after interpreter shutdown has begun, the
process aborts with "terminate called without an active exception" (about every second
run of a short script on this machine). mlforge reads Delta through delta-rs's own reader
or Arrow's native filesystem instead; these runs would fail with the old reads.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
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


NO_CLOSE = textwrap.dedent(
    """
    import sys
    import mlforge as mlf

    @mlf.feature(sys.argv[1], keys=["user_id"], timestamp="ts", interval="1d", metrics=[mlf.Sum("amt", windows=["2d"])])
    def spend(t):
        return t

    assert mlf.Definitions("tmp", [spend], offline_store=mlf.LocalStore(sys.argv[2]), engine="duckdb").build().ok
    print("ok")  # no close(): a script that forgets it must still leave nothing behind
    """
)


def test_duckdb_builds_leave_no_temporary_directory(tmp_path):
    import pyarrow.parquet as pq

    source = tmp_path / "events.parquet"
    pq.write_table(pa.table({"user_id": [1, 1, 2], "ts": pa.array([0, 86_400_000_000, 3_600_000_000], pa.timestamp("us")), "amt": [1.0, 2.0, 3.0]}), source)
    (tmp_path / "script.py").write_text(NO_CLOSE)
    temp = tmp_path / "tmp"
    temp.mkdir()
    done = subprocess.run([sys.executable, str(tmp_path / "script.py"), str(source), str(tmp_path / "store")], capture_output=True, text=True, timeout=300, env={**os.environ, "TMPDIR": str(temp)})
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]
    assert [p.name for p in temp.iterdir() if p.name.startswith("mlforge-duckdb-")] == []


def test_duckdb_spills_to_a_private_directory_removed_on_close(tmp_path, monkeypatch):
    from mlforge.engines.duckdb import DuckDBEngine

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    engine = DuckDBEngine(threads=2, memory_limit="100MB")
    con = engine.con.con
    assert list(tmp_path.iterdir()) == []  # created on the first spill, not before
    con.execute("SELECT count(*) FROM (SELECT hash(i) AS h, count(*) FROM range(20000000) r(i) GROUP BY h)").fetchall()
    spilled = [p for p in tmp_path.iterdir() if p.name.startswith("mlforge-duckdb-")]
    assert len(spilled) == 1  # the aggregate spilled there, nowhere else
    engine.close()
    assert not spilled[0].exists()
