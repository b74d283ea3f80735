"""Seams a black-box review found between the contract and the code (2026-12-07): online keys
that two entities could share or that a lookup spelled differently from the publish, names
that reached an engine's internals, a rolling sum's float residue, damaged records, and a
build that judged its change against a ``latest`` another build had moved."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest

import mlforge as mlf
from mlforge.errors import (
    ConfigError,
    DefinitionError,
    RetrievalError,
    StoreError,
    VersionNotFound,
)
from mlforge.online.base import key_text

AT = datetime(2024, 1, 3, 12, tzinfo=UTC)


def _events(tmp_path: Path, frame: pd.DataFrame) -> str:
    path = tmp_path / "events.parquet"
    frame.to_parquet(path, index=False)
    return str(path)


# -- online keys (O1, K2) ----------------------------------------------------------------------
def test_composite_keys_holding_the_separator_never_share_a_stored_key():  # contract O1
    assert key_text({"a": "x\x1fy", "b": "z"}) != key_text({"a": "x", "b": "y\x1fz"})
    assert key_text({"a": "\\N", "b": "1"}) != key_text({"a": None, "b": "1"})
    assert key_text({"a": "x\x1ey", "b": "z"}) != key_text({"a": "x", "b": "\x1eyz"})
    # keys without those characters keep the text earlier releases stored
    assert key_text({"origin": "JFK", "dest": "LAX"}) == "LAX\x1fJFK"
    assert key_text({"user_id": 42}) == "42"


def test_a_timestamp_key_names_the_same_entity_naive_or_zoned_and_minus_zero_is_zero():  # contract O1, T1
    naive = datetime(2024, 1, 1, 3)
    assert key_text({"t": naive}) == key_text({"t": naive.replace(tzinfo=UTC)}) == "2024-01-01T03:00:00+00:00"
    assert key_text({"t": pd.Timestamp("2024-01-01 04:00", tz="Europe/Berlin")}) == key_text({"t": naive})
    assert key_text({"x": -0.0}) == key_text({"x": 0.0})


def test_online_reads_equal_training_for_keys_with_the_separator_and_timestamp_keys(tmp_path):  # contract O1
    frame = pd.DataFrame({
        "a": ["x\x1fy", "x"], "b": ["z", "y\x1fz"],
        "when": pd.to_datetime(["2024-01-01 03:00", "2024-01-01 04:00"]),
        "ts": pd.to_datetime(["2024-01-01 05:00", "2024-01-02 05:00"]),
        "v": [1, 2],
    })
    source = mlf.Source(_events(tmp_path, frame), timestamp="ts")

    @mlf.feature(source=source, keys=["a", "b"], timestamp="ts", interval="1d", metrics=[mlf.Sum("v", windows=["3d"])])
    def pair(t):
        return t.select("a", "b", "ts", "v")

    @mlf.feature(source=source, keys=["when"], timestamp="ts", interval="1d", metrics=[mlf.Sum("v", windows=["3d"], name="w")])
    def moment(t):
        return t.select("when", "ts", "v")

    defs = mlf.Definitions("seams", [pair, moment], offline_store=mlf.LocalStore(tmp_path / "store"), online_store=mlf.MemoryStore())
    assert defs.build(online=True).ok
    labels = frame[["a", "b", "when"]].assign(label=pd.Timestamp(AT.replace(tzinfo=None)))
    training = defs.get_training_data(["pair", "moment"], labels, timestamp="label")
    online = defs.get_online_features(["pair", "moment"], frame[["a", "b", "when"]], at=AT, with_metadata=True)
    assert training["v_sum_3d"].tolist() == [1, 2] and training["w_3d"].tolist() == [1, 2]
    assert online["pair__known"].tolist() == [True, True] and online["moment__known"].tolist() == [True, True]
    assert online[["v_sum_3d", "w_3d"]].values.tolist() == training[["v_sum_3d", "w_3d"]].values.tolist()


@pytest.fixture
def served(tmp_path):
    frame = pd.DataFrame({"k": [1, 2], "ts": pd.to_datetime(["2024-01-01 05:00", "2024-01-02 05:00"]), "v": [5, 7]})
    source = mlf.Source(_events(tmp_path, frame), timestamp="ts")

    @mlf.feature(source=source, keys=["k"], timestamp="ts", interval="1d", metrics=[mlf.Sum("v", windows=["2d"], name="m")])
    def m(t):
        return t.select("k", "ts", "v")

    @mlf.feature(source=source, keys=["k"], timestamp="ts")
    def p(t):
        return t.select("k", "ts", p__known=t.v)

    defs = mlf.Definitions("seams", [m, p], offline_store=mlf.LocalStore(tmp_path / "store"), online_store=mlf.MemoryStore())
    assert defs.build(online=True).ok
    return defs


def test_online_refuses_the_key_columns_training_refuses(served):  # contract O1, P1, E1
    gappy = pd.DataFrame({"k": [1, None]})  # pandas makes it float64
    with pytest.raises(RetrievalError, match="float64 in entity_df but int64"):
        served.get_online_features(["m"], gappy, at=AT)
    with pytest.raises(RetrievalError, match="float64 in entity_df but int64"):
        served.get_training_data(["m"], gappy.assign(label=pd.Timestamp("2024-01-03")), timestamp="label")
    assert served.get_online_features(["m"], pd.DataFrame({"k": pd.array([1, 2], dtype="int32")}), at=AT)["m_2d"].tolist() == [5, 7]


def test_a_mixed_key_column_a_nat_read_time_and_a_metadata_name_clash_are_mlforge_errors(served):  # contract E1
    mixed = pd.DataFrame({"k": pd.Series([1, "a", None], dtype=object)})
    with pytest.raises(RetrievalError, match="not of one type"):
        served.get_online_features(["m"], mixed, at=AT)
    with pytest.raises(RetrievalError, match="not of one type"):
        served.get_training_data(["m"], mixed.assign(label=pd.Timestamp("2024-01-03")), timestamp="label")
    with pytest.raises(RetrievalError, match="NaT"):
        served.get_online_features(["m"], pd.DataFrame({"k": [1]}), at=pd.NaT)
    # p's value column is named like the column with_metadata adds for p
    with pytest.raises(RetrievalError, match="p__known"):
        served.get_online_features(["p"], pd.DataFrame({"k": [1]}), at=AT, with_metadata=True)


# -- names (E5) -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"keys": ["__mlforge_row"]}, "reserves"),
        ({"keys": [""]}, "empty"),
        ({"keys": ["a\x00b"]}, "NUL"),
        ({"keys": ["k"], "timestamp": "__MLFORGE_month", "interval": None}, "reserves"),
        ({"keys": ["k"], "metrics": [mlf.Sum("__mlforge_label", windows=["2d"])]}, "reserves"),
        ({"keys": ["k"], "metrics": [mlf.Sum("v", windows=["2d"], name="spend"), mlf.Sum("v", windows=["2d"], name="SPEND")]}, "differ only by case"),
        ({"keys": ["Spend_2d"], "metrics": [mlf.Sum("v", windows=["2d"], name="spend")]}, "differ only by case"),
    ],
)
def test_names_no_engine_carries_exactly_are_refused_when_declared(arguments, message):  # contract E5
    options = {"timestamp": "ts", "interval": "1d", **arguments}

    def named(t):
        return t

    with pytest.raises(DefinitionError, match=message):
        mlf.feature(source="events.parquet", **options)(named)


@pytest.mark.parametrize("engine", ["duckdb", "polars"])
def test_a_function_output_column_under_the_reserved_prefix_fails_the_build_before_compute(tmp_path, engine):  # contract E5
    source = mlf.Source(_events(tmp_path, pd.DataFrame({"k": [1], "ts": pd.to_datetime(["2024-01-01"]), "v": [1.0]})), timestamp="ts")

    @mlf.feature(source=source, keys=["k"], timestamp="ts")
    def tail(t):
        return t.select("k", "ts", __mlforge_tail=t.v)

    result = mlf.Definitions("seams", [tail], offline_store=mlf.LocalStore(tmp_path / "store"), engine=engine).build(raise_on_error=False)
    assert not result.ok and "reserves for its own columns" in str(result["tail"].error)
    assert not (tmp_path / "store" / "tail").exists() or not list((tmp_path / "store" / "tail").glob("*/_metadata.json"))


@pytest.mark.parametrize("window", [" 1d", "01d", "\uff11d", "1 d", "99999999999999999999d"])
def test_a_window_not_written_as_int_unit_is_refused(window):  # contract T2, W6
    with pytest.raises(DefinitionError):
        mlf.Sum("v", windows=[window])


def test_an_empty_tag_or_schedule_filter_is_an_error_never_all(tmp_path):  # contract E2
    source = mlf.Source(_events(tmp_path, pd.DataFrame({"k": [1], "ts": pd.to_datetime(["2024-01-01"])})), timestamp="ts")

    @mlf.feature(source=source, keys=["k"], timestamp="ts", tags=["daily"])
    def f(t):
        return t

    defs = mlf.Definitions("seams", [f], offline_store=mlf.LocalStore(tmp_path / "store"))
    assert defs.list_features(tags="daily") == ["f"]
    with pytest.raises(ConfigError, match="no tags given"):
        defs.list_features(tags="")
    with pytest.raises(ConfigError, match="no schedules given"):
        defs.list_features(schedule="")


# -- the rolling plan's sums (W4, W8) ---------------------------------------------------------------
def test_a_rolled_sum_of_an_emptied_window_is_exactly_zero_on_polars(tmp_path):  # contract W4, W8
    frame = pd.DataFrame({"k": ["c", "c"], "ts": pd.to_datetime(["2023-11-18", "2023-11-19"]), "v": [1_000_000.5, 68.78256]})
    source = mlf.Source(_events(tmp_path, frame), timestamp="ts")

    @mlf.feature(source=source, keys=["k"], timestamp="ts", interval="1d", metrics=[mlf.Sum("v", windows=["3d", "5d"]), mlf.Count("v", windows=["3d"])])
    def feat(t):
        return t

    tables = {}
    for engine in ("duckdb", "polars"):
        defs = mlf.Definitions("seams", [feat], offline_store=mlf.LocalStore(tmp_path / engine), engine=engine)
        assert defs.build().ok
        tables[engine] = defs.read_feature("feat").order_by("ts").to_pandas()
    polars = tables["polars"]
    emptied = polars[polars["v_count_3d"] == 0]
    assert len(emptied) == 2  # labels 11-22 and 11-23: the 5d window still holds the events
    assert (emptied["v_sum_3d"] == 0.0).all()
    assert polars["v_sum_3d"].tolist() == pytest.approx(tables["duckdb"]["v_sum_3d"].tolist(), rel=1e-9, abs=0)


# -- versions (S2, S7, S8, E1) --------------------------------------------------------------------
def _spend(source: str, *extra: mlf.Aggregate):
    @mlf.feature(source=source, keys=["k"], timestamp="ts", interval="1d", metrics=[mlf.Sum("v", windows=["2d"]), *extra])
    def spend(t):
        return t.select("k", "ts", "v")

    return spend


@pytest.fixture
def built(tmp_path):
    frame = pd.DataFrame({"k": [1, 1, 2], "ts": pd.to_datetime(["2024-01-01", "2024-02-03", "2024-01-02"]), "v": [1.0, 2.0, 3.0]})
    source = _events(tmp_path, frame)
    store = tmp_path / "store"
    assert mlf.Definitions("seams", [_spend(source)], offline_store=mlf.LocalStore(store)).build().ok
    return source, store


def test_a_build_judges_its_change_against_the_latest_another_build_published_meanwhile(built, monkeypatch):  # contract S2, S8
    import mlforge.materialize as materialize

    source, store = built
    frame = pd.read_parquet(source)
    frame.assign(v=frame.v + 1).to_parquet(source, index=False)  # new data: a PATCH against 1.0.0
    real = materialize._metadata
    calls = []

    def metadata_after_a_concurrent_publish(*args, **kwargs):
        if not calls:  # while this build computes, another adds a metric and publishes 1.1.0
            calls.append(1)
            other = mlf.Definitions("seams", [_spend(source, mlf.Max("v", windows=["2d"]))], offline_store=mlf.LocalStore(store)).build()["spend"]
            assert (other.version, other.change) == ("1.1.0", "MINOR")
        return real(*args, **kwargs)

    monkeypatch.setattr(materialize, "_metadata", metadata_after_a_concurrent_publish)
    result = mlf.Definitions("seams", [_spend(source)], offline_store=mlf.LocalStore(store)).build()["spend"]
    # without v_max_2d it removes a column of 1.1.0: MAJOR, numbered past it, and latest
    assert (result.version, result.change) == ("2.0.0", "MAJOR") and "v_max_2d" in result.reason
    assert json.loads((store / "spend" / "_latest.json").read_text())["version"] == "2.0.0"


@pytest.mark.parametrize(("field", "value"), [("rows", "x"), ("data_files", {"a": 1}), ("format_version", "two"), ("build_range", "all"), ("schema", ["a"])])
def test_a_record_with_a_field_of_the_wrong_kind_is_a_store_error_naming_its_file(built, field, value):  # contract S7, E1
    source, store = built
    path = store / "spend" / "1.0.0" / "_metadata.json"
    record = json.loads(path.read_text())
    record[field] = value
    path.write_text(json.dumps(record))
    defs = mlf.Definitions("seams", [_spend(source)], offline_store=mlf.LocalStore(store))
    with pytest.raises(StoreError, match=f"damaged: field '{field}'") as caught:
        defs.read_feature("spend")
    assert "_metadata.json" in str(caught.value)


def test_a_missing_latest_pointer_is_named_and_the_next_build_goes_past_the_versions(built):  # contract S8, E1
    source, store = built
    (store / "spend" / "_latest.json").unlink()
    defs = mlf.Definitions("seams", [_spend(source)], offline_store=mlf.LocalStore(store))
    with pytest.raises(VersionNotFound, match=r"has versions \(1.0.0\) but no latest one") as caught:
        defs.read_feature("spend")
    assert "mlforge rollback spend 1.0.0" in caught.value.fix
    result = defs.build()["spend"]  # the rows of 1.0.0, which no rollback hid: adopted, not published again (S2)
    assert (result.status, result.version) == ("skipped", "1.0.0") and "latest moved to it" in result.reason
    assert defs.read_feature("spend").count().execute() > 0 and defs.offline_store.list_versions("spend") == ["1.0.0"]


def test_a_version_directory_without_its_record_is_named_not_taken_for_a_concurrent_build(built):  # contract E1
    source, store = built
    (store / "spend" / "1.0.0" / "_metadata.json").unlink()
    result = mlf.Definitions("seams", [_spend(source)], offline_store=mlf.LocalStore(store)).build(raise_on_error=False)["spend"]
    assert result.status == "failed" and "holds no version" in str(result.error) and "another build" not in str(result.error)
    shutil.rmtree(store / "spend" / "1.0.0")
    assert mlf.Definitions("seams", [_spend(source)], offline_store=mlf.LocalStore(store)).build()["spend"].version == "1.0.0"
