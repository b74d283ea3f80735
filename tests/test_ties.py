"""Rows of a non-metric feature that share their keys and timestamp (or their keys, without
one): every read takes the same one of them -- the row whose values sort last, whole -- so
training, online and REST agree (O1, P2), and the stored version keeps every row (S5).

Before, training took one row (DuckDB's `distinct(keep="first")` even mixed values from
several rows) and the online store kept whichever row was written last."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import mlforge as mlf
from conftest import ENGINES

# For key "a", three rows at one instant: the greatest first value column is 2.0, and
# that row's text is null -- a reader mixing rows would answer "z" or "y" for it.
# Key "b": equal first values, so the second column decides (nulls lowest: "m").
# Key "c": NaN sorts above every number; key "d" has one row and no tie.
ROWS = [
    ("a", 1.0, "z"), ("a", 2.0, None), ("a", None, "y"),
    ("b", 5.0, None), ("b", 5.0, "m"), ("b", 5.0, "k"),
    ("c", 7.0, "p"), ("c", float("nan"), "q"),
    ("d", 3.0, "only"),
]
EXPECTED = {"a": (2.0, None), "b": (5.0, "m"), "c": ("nan", "q"), "d": (3.0, "only")}


def _write(path: Path, *, order: list[int]) -> None:
    rows = [ROWS[i] for i in order]
    pq.write_table(
        pa.table({
            "k": [r[0] for r in rows],
            "ts": pa.array([pd.Timestamp("2024-03-01 10:00").to_pydatetime()] * len(rows), pa.timestamp("us")),
            "v": pa.array([r[1] for r in rows], pa.float64()),
            "s": pa.array([r[2] for r in rows], pa.string()),
        }),
        path,
    )


def _defs(tmp_path: Path, engine: str, *, order: list[int], timestamp: bool = True) -> mlf.Definitions:
    tmp_path.mkdir(parents=True, exist_ok=True)
    source = tmp_path / "events.parquet"
    _write(source, order=order)
    kwargs = {"timestamp": "ts"} if timestamp else {}

    @mlf.feature(source=str(source), keys=["k"], **kwargs)
    def tied(t):
        return t.select("k", *(["ts"] if timestamp else []), "v", "s")

    return mlf.Definitions("ties", [tied], offline_store=mlf.LocalStore(str(tmp_path / "store")), online_store=mlf.MemoryStore(), engine=engine)


def _answers(frame: pd.DataFrame) -> dict[str, tuple]:
    """``{key: (v, s)}``; a float NaN in ``v`` reads "nan" (pandas shows a null number as
    NaN too, but no expected row has one), a missing text None."""

    def number(value):
        return "nan" if value != value else value

    def text(value):
        return None if value is None or value is pd.NA or value != value else value

    return {row.k: (number(row.v), text(row.s)) for row in frame.itertuples()}


ENTITIES = pd.DataFrame({"k": ["a", "b", "c", "d"]})


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("timestamp", [True, False], ids=["timestamp", "no-timestamp"])
def test_tied_rows_read_the_same_whole_row_in_training_and_online(tmp_path, engine, timestamp):  # contract O1, P2
    defs = _defs(tmp_path, engine, order=list(range(len(ROWS))), timestamp=timestamp)
    defs.build(online=True)
    labels = ENTITIES.assign(L=pd.Timestamp("2024-03-02"))
    at_label = defs.get_training_data(["tied"], labels, timestamp="L" if timestamp else None)
    latest = defs.get_training_data(["tied"], ENTITIES)
    online = defs.get_online_features(["tied"], ENTITIES)
    assert _answers(at_label) == EXPECTED
    assert _answers(latest) == EXPECTED
    assert _answers(online) == EXPECTED


@pytest.mark.parametrize("engine", ["duckdb", "polars"])
def test_the_row_taken_does_not_depend_on_the_source_order(tmp_path, engine):  # contract O1
    answers = []
    for n, order in enumerate([list(range(len(ROWS))), list(reversed(range(len(ROWS)))), [4, 0, 7, 2, 8, 5, 1, 6, 3]]):
        defs = _defs(tmp_path / str(n), engine, order=order)
        defs.build()
        answers.append(_answers(defs.get_training_data(["tied"], ENTITIES.assign(L=pd.Timestamp("2024-03-02")), timestamp="L")))
    assert answers == [EXPECTED] * 3


def test_the_version_keeps_every_row_and_counts_the_tied_ones(tmp_path):  # contract S3, S5
    defs = _defs(tmp_path, "duckdb", order=list(range(len(ROWS))))
    defs.build()
    assert defs.read_feature("tied").count().to_pyarrow().as_py() == len(ROWS)
    (record,) = (tmp_path / "store").rglob("_metadata.json")
    assert json.loads(record.read_text())["tied_rows"] == 8  # a, b and c: every row but d's


def test_a_version_without_ties_records_zero(tmp_path):  # contract S3
    source = tmp_path / "events.parquet"
    pd.DataFrame({"k": ["a", "a", "b"], "ts": pd.to_datetime(["2024-01-01", "2024-01-02", "2024-01-01"]), "v": [1.0, 2.0, 3.0]}).to_parquet(source, index=False)

    @mlf.feature(source=str(source), keys=["k"], timestamp="ts")
    def plain(t):
        return t

    defs = mlf.Definitions("ties", [plain], offline_store=mlf.LocalStore(str(tmp_path / "store")))
    defs.build()
    (record,) = (tmp_path / "store").rglob("_metadata.json")
    assert json.loads(record.read_text())["tied_rows"] == 0


def test_the_rest_server_serves_the_row_training_takes(tmp_path):  # contract O1, O3
    from mlforge.serve import create_app
    from test_serve import Live

    defs = _defs(tmp_path, "duckdb", order=list(range(len(ROWS))))
    defs.build(online=True)
    with Live(create_app(defs)) as http:
        answer = http.post("/features/online", json={"features": ["tied"], "entity": {"k": "a"}})
    assert answer.status_code == 200, answer.text
    row = answer.json()["features"]["tied"]
    assert (row["v"], row["s"]) == EXPECTED["a"]
