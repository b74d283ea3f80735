"""Rule E5: identifiers reach SQL only through the engine's quoting.

A hostile column or metric name either round-trips exactly as a plain column or is rejected
before any compute; it never runs as SQL. The column name below, unquoted, would make the
stored table carry a ``leak`` column holding a local file's content.
"""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import mlforge as mlf
from mlforge.offline.local import LocalStore

SECRET = "top-secret-content-9f1c"


def _hostile_column(secret_path: str) -> str:
    return f"amount\" AS \"amount2\", (SELECT content FROM read_text('{secret_path}')) AS \"leak"


HOSTILE_NAMES = [
    'a"b',
    "a`b",
    "a;b -- c",
    "a'b",
    "größe_金額",
    "x" * 1000,
]


def _source(tmp_path, column: str, *, extra: str | None = None) -> str:
    path = tmp_path / "events.parquet"
    base = dt.datetime(2026, 1, 1)
    columns = {
        "user_id": [1, 1, 2],
        "event_time": [base, base + dt.timedelta(days=1), base + dt.timedelta(days=2)],
        column: [1.5, 2.5, 4.0],
    }
    if extra:
        columns[extra] = [10.0, 20.0, 30.0]
    pq.write_table(pa.table(columns), path)
    return str(path)


def _build_and_read(tmp_path, feature, engine, labels=None):
    """Build ``feature`` into a fresh store; its stored table, and training data for ``labels``."""
    defs = mlf.Definitions("e5", [feature], offline_store=LocalStore(str(tmp_path / "store")), engine=engine)
    try:
        result = defs.build()
        assert result.ok, result.failed and str(result.failed[0].error)
        stored = defs.read_feature(feature.name).to_pyarrow()
        training = None if labels is None else defs.get_training_data([feature.name], labels, timestamp="label_time")
    finally:
        defs.close()
    return stored, training


def test_injection_column_is_stored_as_a_plain_column(tmp_path, engine):  # contract E5
    secret = tmp_path / "secret.txt"
    secret.write_text(SECRET)
    column = _hostile_column(str(secret))
    # With a real ``amount`` column beside it, the unquoted name is valid SQL that reads the file.
    source = mlf.Source(_source(tmp_path, column, extra="amount"))

    @mlf.feature(source=source, keys=["user_id"], timestamp="event_time")
    def raw_events(t):
        return t

    stored, _ = _build_and_read(tmp_path, raw_events, engine)
    assert stored.column_names == ["user_id", "event_time", column, "amount"]
    assert sorted(stored.column(column).to_pylist()) == [1.5, 2.5, 4.0]
    for file in (tmp_path / "store").rglob("*.parquet"):
        assert SECRET.encode() not in file.read_bytes()


@pytest.mark.parametrize("name", HOSTILE_NAMES, ids=["dquote", "backtick", "semicolon", "squote", "unicode", "long"])
@pytest.mark.parametrize("engine", ["duckdb", "polars"])
def test_hostile_names_round_trip_as_columns_and_metrics(tmp_path, engine, name):  # contract E5
    source = mlf.Source(_source(tmp_path, name))

    @mlf.feature(
        source=source, keys=["user_id"], timestamp="event_time", interval="1d",
        metrics=[mlf.Sum(name, windows=["2d"]), mlf.Count(name, windows=["2d"], name=f"n{name}")],
    )
    def spend(t):
        return t

    labels = pa.table({"user_id": [1], "label_time": [dt.datetime(2026, 1, 3)]})
    stored, training = _build_and_read(tmp_path, spend, engine, labels)
    sum_column, count_column = f"{name}_sum_2d", f"n{name}_2d"
    assert stored.column_names == ["user_id", "event_time", sum_column, count_column]
    assert training.column(sum_column).to_pylist() == [4.0]
    assert training.column(count_column).to_pylist() == [2]


@pytest.mark.parametrize("name", ["*", "^amt.*$"], ids=["star", "regex"])
@pytest.mark.parametrize("engine", ["duckdb", "polars"])
def test_names_polars_reads_as_patterns_are_refused_before_compute(tmp_path, engine, name):  # contract E5, W8
    # Polars' pl.col("^amt.*$") selects the columns matching the expression and pl.col("*")
    # every column: a value column so named was dropped from the stored version, or the
    # build stopped on Polars' own error. Every engine refuses it, so versions read alike.
    source = mlf.Source(_source(tmp_path, name))

    @mlf.feature(source=source, keys=["user_id"], timestamp="event_time")
    def passes_it_through(t):
        return t.select("user_id", "event_time", name)

    defs = mlf.Definitions("e5", [passes_it_through], offline_store=LocalStore(str(tmp_path / "store")), engine=engine)
    result = defs.build(raise_on_error=False)
    [failed] = result.failed
    assert isinstance(failed.error, mlf.errors.DefinitionError) and "pattern" in str(failed.error)
    assert not (tmp_path / "store" / "passes_it_through").exists() or not any((tmp_path / "store" / "passes_it_through").glob("[0-9]*"))

    def summed(t):
        return t

    with pytest.raises(mlf.errors.DefinitionError, match="pattern"):  # a metric field: at declaration
        mlf.feature(source=source, keys=["user_id"], timestamp="event_time", interval="1d", metrics=[mlf.Sum(name, windows=["2d"])])(summed)


@pytest.mark.parametrize("other", ["Amount", "", "amount"], ids=["case", "empty", "repeated"])
def test_a_source_column_duckdb_would_rename_is_refused_when_used(tmp_path, other):  # contract E5, S2
    # DuckDB read 'Amount' beside 'amount' as 'Amount_1', an empty name as 'C3' and a repeated
    # one as 'amount_1': the version stored a column under a name nobody gave. Such a column
    # is refused when it reaches the output, and does not matter when the function leaves it.
    path = tmp_path / "events.parquet"
    columns = [pa.array([1, 2]), pa.array([dt.datetime(2026, 1, 1)] * 2), pa.array([1.0, 2.0]), pa.array([3.0, 4.0])]
    pq.write_table(pa.Table.from_arrays(columns, names=["user_id", "event_time", "amount", other]), path)

    @mlf.feature(source=mlf.Source(str(path)), keys=["user_id"], timestamp="event_time")
    def everything(t):
        return t

    @mlf.feature(source=mlf.Source(str(path)), keys=["user_id"], timestamp="event_time")
    def chosen(t):
        return t.select(t.columns[:3])

    defs = mlf.Definitions("e5", [everything, chosen], offline_store=LocalStore(str(tmp_path / "store")), engine="duckdb")
    result = defs.build(raise_on_error=False)
    [failed] = result.failed
    assert failed.name == "everything" and isinstance(failed.error, mlf.errors.DefinitionError)
    assert repr(other) in str(failed.error) and "engine='polars'" in str(failed.error)
    assert not list((tmp_path / "store").glob("everything/[0-9]*"))
    assert defs.read_feature("chosen").to_pyarrow().column_names == ["user_id", "event_time", "amount"]
