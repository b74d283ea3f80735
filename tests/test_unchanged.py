"""A rebuild of unchanged inputs publishes nothing, on every engine and plan (contract S2).

"Unchanged" is judged on what determines the output -- the definition (the function's logic
and the source columns it uses), the source fingerprint, the range, canonical types -- and
data is compared with canonical types and a float tolerance (mlforge.equivalence), never on
bytes, engine, plan or the source's unused columns. One real value change is still a PATCH.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import mlforge as mlf
from mlforge.equivalence import (
    FLOAT_RTOL,
    canonical_arrow_type,
    files_equivalent,
    tables_equivalent,
)
from mlforge.fingerprints import definition_hash
from mlforge.prepare import prepare_input

BASE = datetime(2026, 1, 1)
DAYS = 45


def write_events(path, seed: int = 7, rows: int = 3000, **writer) -> pa.Table:
    """Events whose float sums depend on the order of addition in the last bits."""
    rng = random.Random(seed)
    table = pa.table({
        "user_id": pa.array([rng.randrange(25) for _ in range(rows)], pa.int64()),
        "ts": pa.array([BASE + timedelta(seconds=rng.randrange(DAYS * 86_400)) for _ in range(rows)], pa.timestamp("us")),
        "amt": pa.array([rng.uniform(-5, 50) * 1.0000001 for _ in range(rows)], pa.float64()),
        "qty": pa.array([rng.randrange(9) for _ in range(rows)], pa.int64()),
    })
    pq.write_table(table, path, **writer)
    return table


def rewrite_same_rows(path) -> None:
    """Same rows, other bytes: the source fingerprint changes, so the build must compute and
    compare data instead of trusting the fingerprint."""
    table = pq.read_table(path)
    pq.write_table(table, path, row_group_size=777, compression="gzip")


def spend(path):
    # Partial aggregates only, so DuckDB and PySpark pick the window plan (see compiler.py).
    @mlf.feature(
        source=str(path), keys=["user_id"], timestamp="ts", interval="1d",
        metrics=[mlf.Sum("amt", windows=["7d", "14d"]), mlf.Mean("amt", windows=["7d"]), mlf.Count("amt", windows=["3d"])],
    )
    def user_spend(t):
        return t.mutate(amt=t.amt * 1.5)

    return user_spend


def project(path, store, engine) -> mlf.Definitions:
    return mlf.Definitions("s2", [spend(path)], offline_store=mlf.LocalStore(store), engine=engine)


def other_engine(engine) -> str:
    return "polars" if engine.name == "duckdb" else "duckdb"


CASES = ["range", "full_refresh", "engine_switch", "plan_switch"]


@pytest.mark.parametrize("source", ["same", "rewritten"])
@pytest.mark.parametrize("case", CASES)
def test_rebuild_of_unchanged_inputs_is_skipped(engine, case, source, tmp_path, monkeypatch):  # contract S2
    fast_plan = {"window_functions", "rolling_frames"} & {c.value for c in engine.capabilities}
    if case == "plan_switch" and not fast_plan:
        pytest.skip(f"{engine.name} has one metric plan (spread): there is no plan to switch to")
    path, store = tmp_path / "events.parquet", tmp_path / "store"
    write_events(path)
    first_engine = other_engine(engine) if case == "engine_switch" else engine
    first = project(path, store, first_engine).build()
    assert first["user_spend"].status == "built", first["user_spend"].error
    if source == "rewritten":
        rewrite_same_rows(path)
    if case == "plan_switch":  # the window or rolling plan built 1.0.0; now the portable spread plan
        monkeypatch.setattr(engine, "capabilities", engine.capabilities - fast_plan)
    options = {"range": {"since": "2026-01-10", "until": "2026-01-24"}, "full_refresh": {"full_refresh": True}}.get(case, {"full_refresh": True})
    result = project(path, store, engine).build(**options)["user_spend"]
    assert result.status == "skipped", (result.reason, result.error)
    assert result.version == "1.0.0"
    expected = "unchanged definition and source" if source == "same" else "rebuilt data equals the latest version"
    assert result.reason.startswith(expected)
    assert mlf.LocalStore(store).list_versions("user_spend") == ["1.0.0"]


def test_one_changed_value_is_a_patch(engine, tmp_path):  # contract S2
    path, store = tmp_path / "events.parquet", tmp_path / "store"
    table = write_events(path)
    assert project(path, store, engine).build()["user_spend"].version == "1.0.0"
    amounts = table["amt"].to_pylist()
    amounts[100] *= 1 + 1000 * FLOAT_RTOL  # small, but well beyond float noise
    pq.write_table(table.set_column(2, "amt", pa.array(amounts)), path)
    result = project(path, store, engine).build(full_refresh=True)["user_spend"]
    assert (result.status, result.version, result.change, result.reason) == ("built", "1.0.1", "PATCH", "new data")


def test_range_outside_the_previous_build_is_computed(tmp_path):  # contract S2, I1
    path, store = tmp_path / "events.parquet", tmp_path / "store"
    write_events(path)
    defs = project(path, store, "duckdb")
    assert defs.build(until="2026-01-20")["user_spend"].version == "1.0.0"
    inside = defs.build(since="2026-01-05", until="2026-01-12")["user_spend"]
    assert (inside.status, inside.reason) == ("skipped", "unchanged definition and source")
    beyond = defs.build(since="2026-01-20", until="2026-02-01")["user_spend"]
    assert (beyond.status, beyond.version, beyond.reason) == ("built", "1.0.1", "new data")


@pytest.mark.parametrize("spelling", ["24h", "1440m", timedelta(days=1)])
def test_an_interval_spelt_another_way_is_the_same_grid(spelling, tmp_path):  # contract S2
    """'1d', '24h' and timedelta(days=1) are one grid: a rebuild is skipped, not a MAJOR."""
    path, store = tmp_path / "events.parquet", tmp_path / "store"
    write_events(path)

    def defined(interval):
        @mlf.feature(source=str(path), keys=["user_id"], timestamp="ts", interval=interval, metrics=[mlf.Sum("amt", windows=["7d"])])
        def user_spend(t):
            return t

        return mlf.Definitions("spelling", [user_spend], offline_store=mlf.LocalStore(store))

    assert defined("1d").build()["user_spend"].version == "1.0.0"
    again = defined(spelling).build(full_refresh=True)["user_spend"]
    assert (again.status, again.version) == ("skipped", "1.0.0"), again.reason
    other = defined("12h").build()["user_spend"]
    assert (other.status, other.change) == ("built", "MAJOR")
    assert "interval changed" in other.reason


def test_a_source_rewritten_to_its_old_size_and_time_is_read_again(tmp_path):  # contract S2
    """In one process, a CSV rewritten with other values of the same width and its old
    modification time restored (``cp -p``, ``touch -d``) is new data, not a cached digest."""
    import os

    path, store = tmp_path / "events.csv", tmp_path / "store"
    path.write_text("user_id,ts,amt\n1,2026-01-01 10:00:00,1.5\n2,2026-01-02 10:00:00,2.5\n")

    @mlf.feature(source=str(path), keys=["user_id"], timestamp="ts", interval="1d", metrics=[mlf.Sum("amt", windows=["7d"])])
    def csv_spend(t):
        return t

    defs = mlf.Definitions("ctime", [csv_spend], offline_store=mlf.LocalStore(store))
    assert defs.build()["csv_spend"].version == "1.0.0"
    before = os.stat(path)
    path.write_text("user_id,ts,amt\n1,2026-01-01 10:00:00,7.5\n2,2026-01-02 10:00:00,2.5\n")
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert (os.stat(path).st_size, os.stat(path).st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    result = defs.build(full_refresh=True)["csv_spend"]
    assert (result.status, result.version, result.reason) == ("built", "1.0.1", "new data")


def test_a_plain_build_of_a_remote_source_reads_its_new_events(tmp_path):  # contract S2, I1
    """A remote source's fingerprint is its location: a plain build still continues from the
    watermark, so new events are published (PATCH) and an unchanged source is skipped on
    its rows."""
    path, store = tmp_path / "events.parquet", tmp_path / "store"
    table = write_events(path)

    @mlf.feature(source=f"file://{path}", keys=["user_id"], timestamp="ts", interval="1d", metrics=[mlf.Sum("amt", windows=["7d"])])
    def remote_spend(t):
        return t

    defs = mlf.Definitions("remote", [remote_spend], offline_store=mlf.LocalStore(store))
    assert defs.build()["remote_spend"].version == "1.0.0"
    again = defs.build()["remote_spend"]
    assert (again.status, again.version) == ("skipped", "1.0.0")
    assert again.reason.startswith("rebuilt data equals the latest version")
    later = pa.table({"user_id": pa.array([3], pa.int64()), "ts": pa.array([BASE + timedelta(days=DAYS + 2)], pa.timestamp("us")),
                      "amt": [9.5], "qty": pa.array([1], pa.int64())})
    pq.write_table(pa.concat_tables([table, later]), path)
    grown = defs.build()["remote_spend"]
    assert (grown.status, grown.version, grown.change, grown.reason) == ("built", "1.0.1", "PATCH", "new data")
    stored = defs.read_feature("remote_spend").to_pyarrow().to_pylist()
    newest = max((r for r in stored if r["user_id"] == 3), key=lambda r: r["ts"])  # a week after the new event: only it in the window
    assert (newest["ts"].date(), newest["amt_sum_7d"]) == ((BASE + timedelta(days=DAYS + 9)).date(), 9.5)


# -- the definition hash covers the columns a feature uses (contract S2) --------------------
def _hash(feature, engine) -> str:
    return definition_hash(feature, prepare_input(feature, engine).schema())


def test_new_unused_source_column_changes_nothing(engine, tmp_path):  # contract S2
    """Appending rows with pandas adds ``__index_level_0__``: the metric feature's definition
    is unchanged, so the next build is an incremental PATCH, not a full rebuild."""
    path, store = tmp_path / "events.parquet", tmp_path / "store"
    table = write_events(path)
    feature = spend(path)
    before = _hash(feature, engine)
    first = project(path, store, engine).build()["user_spend"]
    later = pd.DataFrame({"user_id": [3, 4], "ts": [BASE + timedelta(days=DAYS, hours=5)] * 2, "amt": [10.0, 20.0], "qty": [1, 2]})
    frame = pd.concat([table.to_pandas(), later])  # a non-default index: pandas stores it
    frame.to_parquet(path)
    assert "__index_level_0__" in pq.read_schema(path).names
    assert _hash(feature, engine) == before
    result = project(path, store, engine).build()["user_spend"]
    assert (result.status, result.change, result.reason) == ("built", "PATCH", "new data")
    assert result.build_range != "full" and first.build_range == "full"


def test_new_used_column_is_a_definition_change(engine, tmp_path):  # contract S2
    """A feature without metrics stores every column its function returns: a new source
    column it passes through is a new output column."""
    path, store = tmp_path / "events.parquet", tmp_path / "store"
    table = write_events(path, rows=200)

    def profile_feature():
        @mlf.feature(source=str(path), keys=["user_id"], timestamp="ts")
        def events(t):
            return t

        return events

    defs = mlf.Definitions("s2", [profile_feature()], offline_store=mlf.LocalStore(store), engine=engine)
    before = _hash(profile_feature(), engine)
    assert defs.build()["events"].version == "1.0.0"
    pq.write_table(table.append_column("channel", pa.array(["web"] * table.num_rows)), path)
    assert _hash(profile_feature(), engine) != before
    result = defs.build()["events"]
    assert (result.version, result.change) == ("1.1.0", "MINOR"), result.reason
    assert "channel" in result.reason


def test_definition_hash_is_the_same_on_every_engine_and_type_spelling(tmp_path):  # contract S2
    from mlforge.engines import get_engine

    path = tmp_path / "events.parquet"
    table = write_events(path, rows=50)
    feature = spend(path)
    hashes = {_hash(feature, get_engine(name)) for name in ("duckdb", "polars")}
    narrow = pa.schema([("user_id", pa.int32()), ("ts", pa.timestamp("ns")), ("amt", pa.float32()), ("qty", pa.int16())])
    pq.write_table(table.cast(narrow), path)
    hashes |= {_hash(feature, get_engine(name)) for name in ("duckdb", "polars")}
    assert len(hashes) == 1


def test_changed_logic_changes_the_definition_hash(tmp_path):  # contract S2
    from mlforge.engines import get_engine

    path = tmp_path / "events.parquet"
    write_events(path, rows=50)
    metrics = [mlf.Sum("amt", windows=["7d"])]

    @mlf.feature(source=str(path), keys=["user_id"], timestamp="ts", interval="1d", metrics=metrics)
    def doubled(t):
        return t.mutate(amt=t.amt * 2)

    @mlf.feature(source=str(path), keys=["user_id"], timestamp="ts", interval="1d", metrics=metrics)
    def tripled(t):
        return t.mutate(amt=t.amt * 3)

    engine = get_engine("duckdb")
    assert _hash(doubled, engine) != _hash(tripled, engine)


# -- data equivalence (mlforge.equivalence) ----------------------------------------------------
def test_canonical_types_make_engine_spellings_equal():  # contract S2
    old = pa.table({"k": pa.array(["a", "b"]), "ts": pa.array([1, 2], pa.timestamp("us", tz="UTC")), "n": pa.array([1, 2], pa.int64())})
    new = pa.table({
        "k": pa.array(["b", "a"], pa.large_string()),
        "ts": pa.array([2000, 1000], pa.timestamp("ns", tz="UTC")),
        "n": pa.array([2, 1], pa.int32()),
    })
    assert tables_equivalent(old, new, ["k", "ts"])
    assert canonical_arrow_type(pa.dictionary(pa.int32(), pa.large_string())) == pa.string()


@pytest.mark.parametrize(
    ("old", "new", "same"),
    [
        ([1.0, 2.0], [1.0 + 1e-13, 2.0], True),  # parallel-sum noise
        ([0.0, 2.0], [1e-17, 2.0], True),  # a sum that cancels to ~0
        ([1.0, None], [1.0, None], True),
        ([float("nan"), 1.0], [float("nan"), 1.0], True),
        ([float("inf"), 1.0], [float("inf"), 1.0], True),
        ([1.0, 2.0], [1.0 + 1e-6, 2.0], False),
        ([1.0, None], [1.0, 0.0], False),
        ([float("nan"), 1.0], [0.0, 1.0], False),
        ([float("inf"), 1.0], [1e308, 1.0], False),
    ],
)
def test_floats_compare_within_the_tolerance(old, new, same):  # contract S2, W8
    assert tables_equivalent(pa.table({"k": [1, 2], "v": old}), pa.table({"k": [1, 2], "v": new}), ["k"]) is same


def test_other_differences_are_differences():  # contract S2
    base = pa.table({"k": [1, 2], "v": ["x", "y"]})
    assert not tables_equivalent(base, pa.table({"k": [1, 2], "v": ["x", "z"]}), ["k"])
    assert not tables_equivalent(base, pa.table({"k": [1, 2, 3], "v": ["x", "y", "z"]}), ["k"])
    assert not tables_equivalent(base, pa.table({"k": [1, 2], "w": ["x", "y"]}), ["k"])
    assert not tables_equivalent(base, pa.table({"k": [1.0, 2.0], "v": ["x", "y"]}), ["k"])


def test_files_are_compared_month_by_month(tmp_path):  # contract S2
    def write(folder, months):
        folder.mkdir()
        for name, values in months.items():
            pq.write_table(pa.table({"k": [1, 2], "v": values}), folder / f"{name}.parquet")
        return sorted(str(p) for p in folder.iterdir())

    old = write(tmp_path / "old", {"2026-01": [1.0, 2.0], "2026-02": [3.0, 4.0]})
    noisy = write(tmp_path / "noisy", {"2026-01": [1.0, 2.0 + 1e-14], "2026-02": [3.0, 4.0]})
    changed = write(tmp_path / "changed", {"2026-01": [1.0, 2.0], "2026-02": [3.0, 4.5]})
    assert files_equivalent(old, noisy, ["k"])
    assert not files_equivalent(old, changed, ["k"])
    assert files_equivalent(old, changed, ["k"], identical={"2026-02.parquet"})  # digests said equal: not read


# -- the definition hash covers the code a function reads (contract S2) ---------------------
# A Polars function has no expression to compile, and an Ibis expression only names its
# Python UDFs: what the code reads -- module constants, helper functions, a UDF's body --
# is part of the definition, so changing it is a new version, not a skipped build.
NATIVE_MODULE = '''
import polars as pl
import mlforge as mlf

FACTOR = {factor}

def scaled(df):
    return df.with_columns(pl.col("amt") * {helper_factor})

@mlf.feature(source=SOURCE, keys=["user_id"], timestamp="ts", interval="1d", metrics=[mlf.Sum("amt", windows=["7d"])])
def native_spend(df: pl.DataFrame) -> pl.DataFrame:
    return scaled(df.with_columns(pl.col("amt") * FACTOR))
'''

UDF_MODULE = '''
import ibis
import mlforge as mlf

@ibis.udf.scalar.python
def bump(x: float) -> float:
    return x * {factor}

@mlf.feature(source=SOURCE, keys=["user_id"], timestamp="ts")
def bumped(t):
    return t.select("user_id", "ts", amt=bump(t.amt))
'''


def loaded(module: str, path, store, engine: str, **values) -> mlf.Definitions:
    """The project of a definitions module run afresh, as a new ``mlforge build`` process
    reads it: its functions read the constants and helpers through their module globals."""
    namespace = {"SOURCE": str(path)}
    exec(compile(module.format(**values), "definitions.py", "exec"), namespace)
    features = [v for v in namespace.values() if isinstance(v, mlf.Feature)]
    return mlf.Definitions("code", features, offline_store=mlf.LocalStore(store), engine=engine)


def test_native_function_rebuilt_unchanged_is_skipped(tmp_path):  # contract S2
    path, store = tmp_path / "events.parquet", tmp_path / "store"
    write_events(path, rows=300)
    assert loaded(NATIVE_MODULE, path, store, "polars", factor=1.0, helper_factor=1.0).build()["native_spend"].version == "1.0.0"
    again = loaded(NATIVE_MODULE, path, store, "polars", factor=1.0, helper_factor=1.0).build()["native_spend"]
    assert (again.status, again.version, again.reason) == ("skipped", "1.0.0", "unchanged definition and source")


@pytest.mark.parametrize("changed", [{"factor": 2.0, "helper_factor": 1.0}, {"factor": 1.0, "helper_factor": 3.0}], ids=["module_constant", "helper_body"])
def test_native_function_reads_changed_code_is_a_new_version(changed, tmp_path):  # contract S2
    """FACTOR = 1.0 -> 2.0, or the helper's ``* 1.0`` -> ``* 3.0``: the function's own
    bytecode is the same, its output is not."""
    path, store = tmp_path / "events.parquet", tmp_path / "store"
    write_events(path, rows=300)
    assert loaded(NATIVE_MODULE, path, store, "polars", factor=1.0, helper_factor=1.0).build()["native_spend"].version == "1.0.0"
    result = loaded(NATIVE_MODULE, path, store, "polars", **changed).build()["native_spend"]
    assert (result.status, result.version, result.change) == ("built", "1.0.1", "PATCH"), result.reason


def test_native_function_closure_value_is_part_of_the_definition(tmp_path):  # contract S2
    path, store = tmp_path / "events.parquet", tmp_path / "store"
    write_events(path, rows=300)

    def scaled_by(factor):
        import polars as pl

        @mlf.feature(source=str(path), keys=["user_id"], timestamp="ts", interval="1d", metrics=[mlf.Sum("amt", windows=["7d"])])
        def closure_spend(df: pl.DataFrame) -> pl.DataFrame:
            return df.with_columns(pl.col("amt") * factor)

        return mlf.Definitions("closure", [closure_spend], offline_store=mlf.LocalStore(store), engine="polars")

    assert scaled_by(1.0).build()["closure_spend"].version == "1.0.0"
    assert scaled_by(1.0).build()["closure_spend"].status == "skipped"
    result = scaled_by(2.0).build()["closure_spend"]
    assert (result.status, result.version, result.change) == ("built", "1.0.1", "PATCH"), result.reason


def test_ibis_python_udf_body_is_part_of_the_definition(tmp_path):  # contract S2
    """Ibis numbers a UDF per definition in the process (``bump_0``, ``bump_1``) and the SQL
    does not show its body: the same body defined again is unchanged, another body is not."""
    path, store = tmp_path / "events.parquet", tmp_path / "store"
    write_events(path, rows=200)
    assert loaded(UDF_MODULE, path, store, "duckdb", factor=1).build()["bumped"].version == "1.0.0"
    again = loaded(UDF_MODULE, path, store, "duckdb", factor=1).build()["bumped"]
    assert (again.status, again.version, again.reason) == ("skipped", "1.0.0", "unchanged definition and source")
    result = loaded(UDF_MODULE, path, store, "duckdb", factor=5).build()["bumped"]
    assert (result.status, result.version, result.change) == ("built", "1.0.1", "PATCH"), result.reason


def test_a_function_hash_does_not_depend_on_the_module_name_its_file_runs_as():  # contract S2
    """`python features.py` runs a project file as __main__, `mlforge build` imports it as
    `features`: a feature function reading one of the file's own objects is the same definition."""
    from mlforge.fingerprints import code_text

    source = (
        "import enum\n"
        "class Cfg:\n    factor = 2.0\n"
        "class Agg(enum.Enum):\n    SUM = object()\n"
        "CFG = Cfg()\nNAMES = dict.fromkeys({'alpha', 'beta', 'gamma', 'delta'})\n"
        "def scaled(frame):\n    return (frame, CFG, Agg.SUM, NAMES)\n"
    )
    texts = []
    for module in ("__main__", "features"):
        namespace: dict = {"__name__": module}
        exec(compile(source, "features.py", "exec"), namespace)
        texts.append(code_text(namespace["scaled"]))
    assert texts[0] == texts[1]
    assert "object at 0x" not in texts[0]


def test_a_function_hash_is_the_same_in_every_process(tmp_path):  # contract S2
    """Set order follows string hashing, which PYTHONHASHSEED changes per process."""
    import os
    import subprocess
    import sys

    script = tmp_path / "hash_it.py"
    script.write_text(
        "import enum\nfrom mlforge.fingerprints import code_text\n"
        "class Agg(enum.Enum):\n    SUM = object()\n"
        "NAMES = dict.fromkeys({'alpha', 'beta', 'gamma', 'delta', 'epsilon'})\nKEPT = {'x', 'y', 'z'}\n"
        "def picked(frame):\n    return (frame, NAMES, KEPT, Agg.SUM)\n"
        "print(code_text(picked))\n"
    )
    outputs = {
        subprocess.run([sys.executable, str(script)], capture_output=True, text=True, check=True, env={**os.environ, "PYTHONHASHSEED": seed}).stdout
        for seed in ("1", "2", "3")
    }
    assert len(outputs) == 1, outputs
