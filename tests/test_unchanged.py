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

import mlforge as mlf
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
