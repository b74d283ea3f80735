"""Declaration-time rules (SEMANTICS sections 1-2, 6, 8): what a definition may say, the
errors it gets when it may not, metric naming, metadata, validators and safe names."""

from __future__ import annotations

import warnings
from datetime import timedelta

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import mlforge as mlf
from mlforge.definitions.durations import parse_duration
from mlforge.errors import (
    BuildError,
    ConfigError,
    DefinitionError,
    EngineError,
    MlforgeError,
    ValidationFailed,
)


@pytest.fixture
def events_path(tmp_path):
    path = tmp_path / "events.parquet"
    table = pa.table(
        {
            "user": ["a", "b", "c"],
            "ts": pa.array([1_704_067_200_000_000, 1_704_153_600_000_000, 1_704_240_000_000_000], type=pa.timestamp("us")),
            "amt": [1.0, 2.5, 4.0],
            "code": ["A1", "B2", "C3"],
        }
    )
    pq.write_table(table, path)
    return str(path)


def declare(source="events.parquet", name="spend", **kwargs):
    """Declare a feature whose function has the given name."""

    def fn(t):
        return t

    fn.__name__ = name
    kwargs.setdefault("keys", ["user"])
    return mlf.feature(source, **kwargs)(fn)


def metric_names(feature) -> list[str]:
    return [c.output_name for c in feature.metric_columns]


# -- durations and windows (T2, W2) ----------------------------------------------------


@pytest.mark.parametrize(("text", "seconds"), [("30s", 30), ("15m", 900), ("2h", 7200), ("7d", 604800), ("1w", 604800)])
def test_duration_units(text, seconds):  # contract T2
    assert parse_duration(text) == seconds


def test_duration_timedelta():  # contract T2
    assert parse_duration(timedelta(hours=6)) == 21600
    feat = declare(timestamp="ts", interval=timedelta(hours=1), metrics=[mlf.Sum("amt", windows=[timedelta(days=2)])])
    assert feat.interval == "1h"
    assert metric_names(feat) == ["amt_sum_2d"]


@pytest.mark.parametrize(("text", "days"), [("1mo", "30d"), ("3months", "90d"), ("1M", "30d"), ("1y", "365d"), ("2years", "730d")])
def test_months_and_years_rejected_with_days_suggestion(text, days):  # contract T2
    with pytest.raises(DefinitionError, match="months or years") as info:
        mlf.Sum("amt", windows=[text])
    assert days in str(info.value)
    with pytest.raises(DefinitionError, match=days):
        declare(timestamp="ts", interval=text, metrics=[mlf.Sum("amt", windows=["7d"])])


@pytest.mark.parametrize("bad", ["7", "d7", "7x", "0d", "-1d", "1.5d", "", "seven days", 7, None, timedelta(0), timedelta(seconds=1.5)])
def test_bad_durations(bad):  # contract T2
    with pytest.raises(DefinitionError):
        parse_duration(bad)
    if bad is not None:
        with pytest.raises(DefinitionError):
            mlf.Sum("amt", windows=[bad])


def test_window_not_multiple_of_interval():  # contract W2
    with pytest.raises(DefinitionError) as info:
        declare(timestamp="ts", interval="1d", metrics=[mlf.Sum("amt", windows=["7d", "36h"])])
    message = str(info.value)
    assert "'36h'" in message and "'1d'" in message and "spend" in message


def test_window_not_multiple_with_timedelta_and_rolling():  # contract W2
    with pytest.raises(DefinitionError, match=r"'90m'.*'1h'"):
        declare(timestamp="ts", interval="1h", metrics=[mlf.Mean("amt", windows=[timedelta(minutes=90)])])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        rolling = mlf.Rolling(windows=["10h"], aggregations={"amt": ["sum"]})
    with pytest.raises(DefinitionError, match=r"'10h'.*'4h'"):
        declare(timestamp="ts", interval="4h", metrics=[rolling])


def test_window_multiple_accepted():  # contract W2
    feat = declare(timestamp="ts", interval="6h", metrics=[mlf.Sum("amt", windows=["6h", "1d", "1w"])])
    assert [c.window_seconds for c in feat.metric_columns] == [21600, 86400, 604800]


def test_metrics_need_timestamp_and_interval():
    with pytest.raises(DefinitionError, match="timestamp"):
        declare(interval="1d", metrics=[mlf.Sum("amt", windows=["7d"])])
    with pytest.raises(DefinitionError, match="interval"):
        declare(timestamp="ts", metrics=[mlf.Sum("amt", windows=["7d"])])


# -- metrics: functions, windows, names (W5, W6) -------------------------------------------


def test_unknown_aggregation():  # contract W5
    with pytest.raises(DefinitionError, match="'avg'") as info:
        mlf.Aggregate("amt", "avg", ["7d"])
    assert "median" in str(info.value)  # the fix lists the known functions
    with pytest.raises(DefinitionError, match="'p99'"), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        mlf.Rolling(windows=["7d"], aggregations={"amt": ["sum", "p99"]})


@pytest.mark.parametrize("windows", [[], (), None])
def test_empty_windows(windows):
    with pytest.raises(DefinitionError, match="no windows"):
        mlf.Aggregate("amt", "sum", windows)
    with pytest.raises(DefinitionError, match="no windows"), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        mlf.Rolling(windows=windows, aggregations={"amt": ["sum"]})


def test_aggregate_names():  # contract W6
    feat = declare(
        timestamp="ts",
        interval="1d",
        metrics=[
            mlf.Sum("amt", windows=["7d", "30d"], name="total_spend"),
            mlf.Aggregate("amt", "median", ["7d"]),
            mlf.Count("code", windows="1d"),
        ],
    )
    assert metric_names(feat) == ["total_spend_7d", "total_spend_30d", "amt_median_7d", "code_count_1d"]


@pytest.mark.parametrize("shorthand", ["Sum", "Count", "Mean", "Min", "Max", "Std", "Median"])
def test_shorthands_are_aggregates(shorthand):  # contract W6
    metric = getattr(mlf, shorthand)("amt", windows=["7d"])
    assert metric == mlf.Aggregate("amt", shorthand.lower(), ("7d",))
    assert [c.output_name for c in metric.columns("f", [])] == [f"amt_{shorthand.lower()}_7d"]


@pytest.mark.parametrize(
    "metrics",
    [
        [mlf.Sum("amt", windows=["7d"], name="x"), mlf.Mean("amt", windows=["7d"], name="x")],
        [mlf.Sum("amt", windows=["7d"]), mlf.Sum("amt", windows=["7d"])],
        [mlf.Sum("amt", windows=["7d", "7d"])],
        [mlf.Sum("amt", windows=["1d"], name="amt_sum"), mlf.Sum("amt", windows=["1d"])],
    ],
)
def test_duplicate_output_names(metrics):  # contract W6
    with pytest.raises(DefinitionError, match=r"same|produce") as info:
        declare(timestamp="ts", interval="1d", metrics=metrics)
    assert "spend" in str(info.value)


def test_metric_name_clashing_with_key_rejected():  # contract W6
    with pytest.raises(DefinitionError, match="clashes"):
        declare(keys=["amt_sum_1d"], timestamp="ts", interval="1d", metrics=[mlf.Sum("amt", windows=["1d"])])


def test_rolling_warns_and_keeps_v07_names():  # contract W6
    with pytest.warns(DeprecationWarning, match=r"mlforge\.Aggregate") as record:
        rolling = mlf.Rolling(windows=["7d", "30d"], aggregations={"amt": ["sum", "mean"], "code": "count"})
    assert issubclass(record[0].category, FutureWarning)  # shown by Python's default filters too
    # The warning points at the user's line, not at mlforge's internals.
    assert record[0].filename == __file__
    tagged = declare(timestamp="ts", interval="1d", metrics=[rolling], tags=["risk", "daily"])
    assert metric_names(tagged) == [
        "risk__amt__sum__1d__7d",
        "risk__amt__sum__1d__30d",
        "risk__amt__mean__1d__7d",
        "risk__amt__mean__1d__30d",
        "risk__code__count__1d__7d",
        "risk__code__count__1d__30d",
    ]
    untagged = declare(timestamp="ts", interval="1d", metrics=[rolling])
    assert metric_names(untagged)[0] == "spend__amt__sum__1d__7d"


def test_rolling_build_matches_aggregate(events_path, tmp_path, engine):  # contract W6
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        rolling = mlf.Rolling(windows=["2d"], aggregations={"amt": ["sum", "max"]})
    old = declare(events_path, name="old_style", timestamp="ts", interval="1d", metrics=[rolling], tags=["risk"])
    new = declare(events_path, name="new_style", timestamp="ts", interval="1d", metrics=[mlf.Sum("amt", ["2d"]), mlf.Max("amt", ["2d"])])
    defs = mlf.Definitions("p", [old, new], offline_store=mlf.LocalStore(tmp_path / "store"), engine=engine)
    assert defs.build().ok
    old_rows = defs.read_feature("old_style").to_pyarrow().sort_by([("user", "ascending"), ("ts", "ascending")])
    new_rows = defs.read_feature("new_style").to_pyarrow().sort_by([("user", "ascending"), ("ts", "ascending")])
    assert old_rows.column_names == ["user", "ts", "risk__amt__sum__1d__2d", "risk__amt__max__1d__2d"]
    assert old_rows.column("risk__amt__sum__1d__2d").to_pylist() == new_rows.column("amt_sum_2d").to_pylist()
    assert old_rows.column("risk__amt__max__1d__2d").to_pylist() == new_rows.column("amt_max_2d").to_pylist()


def test_field_metadata(events_path, tmp_path):
    amount = mlf.Field("amt", description="order amount", unit="USD")
    feat = declare(
        events_path,
        timestamp="ts",
        interval="1d",
        metrics=[mlf.Sum(amount, windows=["7d"], name="spend"), mlf.Max(amount, windows=["7d"], unit="EUR"), mlf.Count("code", windows=["7d"])],
    )
    columns = {c.output_name: c for c in feat.metric_columns}
    assert (columns["spend_7d"].description, columns["spend_7d"].unit) == ("order amount", "USD")
    assert columns["amt_max_7d"].unit == "EUR"  # an explicit unit wins over the Field's
    assert columns["code_count_7d"].unit is None
    store = mlf.LocalStore(tmp_path / "store")
    assert mlf.Definitions("p", [feat], offline_store=store, engine="duckdb").build().ok
    stored = {m["name"]: m for m in store.read_metadata("spend")["metrics"]}
    assert stored["spend_7d"]["unit"] == "USD" and stored["spend_7d"]["description"] == "order amount"


def test_field_needs_a_name():
    with pytest.raises(DefinitionError):
        mlf.Field("")


# -- engines and schedules (section 1, I2) ------------------------------------------------


def test_unknown_engine_on_feature():
    with pytest.raises(DefinitionError, match="'spark'") as info:
        declare(engine="spark")
    assert "duckdb" in str(info.value)


def test_unknown_engine_on_definitions(events_path, tmp_path):
    feat = declare(events_path)
    with pytest.raises(ConfigError, match="unknown engine 'oracle-db'"):  # where it is given, not at the first build
        mlf.Definitions("p", [feat], offline_store=mlf.LocalStore(tmp_path / "store"), engine="oracle-db")
    defs = mlf.Definitions("p", [feat], offline_store=mlf.LocalStore(tmp_path / "store"))
    with pytest.raises(EngineError, match="'oracle-db'"):
        defs.build(engine="oracle-db")
    assert defs.offline_store.list_versions("spend") == []


def test_two_schedule_tags():  # contract I2
    with pytest.raises(DefinitionError, match="schedule") as info:
        declare(tags=["daily", "team-a", "hourly"])
    assert "daily" in str(info.value) and "hourly" in str(info.value)
    assert declare(tags=["daily", "team-a"]).schedule == "daily"


def test_definition_errors_derive_from_mlforge_error():  # contract E1
    with pytest.raises(MlforgeError) as info:
        mlf.Sum("amt", windows=["1y"])
    assert info.value.exit_code == 2 and info.value.fix


# -- validators ---------------------------------------------------------------------------

ALL_VALIDATORS = {
    "user": [mlf.not_null(), mlf.unique(), mlf.matches_regex(r"^[a-c]$"), mlf.is_in(["a", "b", "c"])],
    "amt": [
        mlf.greater_than(0),
        mlf.greater_than_or_equal(1.0),
        mlf.less_than(5),
        mlf.less_than_or_equal(4.0),
        mlf.in_range(1.0, 4.0),
    ],
}
#: Each validator with bounds the data [1.0, 2.5, 4.0] / ["a", "b", "c"] violates.
FAILING_VALIDATORS = {
    "code": [mlf.matches_regex(r"^[AB]")],
    "amt": [
        mlf.greater_than(1.0),
        mlf.greater_than_or_equal(2.0),
        mlf.less_than(4.0),
        mlf.less_than_or_equal(2.5),
        mlf.in_range(0.5, 4.0, inclusive=False),
        mlf.is_in([1.0, 2.5]),
    ],
}


def test_all_validators_pass(events_path, tmp_path, engine):
    feat = declare(events_path, validators=ALL_VALIDATORS)
    defs = mlf.Definitions("p", [feat], offline_store=mlf.LocalStore(tmp_path / "store"), engine=engine)
    result = defs.build()
    assert result.ok, result.failed and str(result.failed[0].error)
    assert result["spend"].rows == 3


def test_each_validator_fails(events_path, tmp_path, engine):  # contract E3
    feat = declare(events_path, validators=FAILING_VALIDATORS)
    defs = mlf.Definitions("p", [feat], offline_store=mlf.LocalStore(tmp_path / "store"), engine=engine)
    outcome = defs.build(raise_on_error=False)["spend"]
    assert outcome.status == "failed" and isinstance(outcome.error, ValidationFailed)
    message = str(outcome.error)
    for column, validators in FAILING_VALIDATORS.items():
        for validator in validators:
            assert f"{column}: {validator.describe()} failed for 1 row(s)" in message
    assert defs.offline_store.list_versions("spend") == []


def test_build_raises_build_error_naming_the_failed_features(events_path, tmp_path, caplog):
    good = declare(events_path, name="fine")
    bad = declare(events_path, name="too_small", validators={"amt": mlf.greater_than(3.0)})
    defs = mlf.Definitions("p", [good, bad], offline_store=mlf.LocalStore(tmp_path / "store"), engine="duckdb")
    with caplog.at_level("INFO", logger="mlforge"), pytest.raises(BuildError) as raised:
        defs.build()
    message = str(raised.value)
    assert message.startswith("1 of 2 feature(s) failed to build:\n- too_small: validation failed: amt: greater_than(3.0) failed for 2 row(s)")
    assert "fine" not in message and "raise_on_error=False" in message
    assert isinstance(raised.value.__cause__, ValidationFailed)
    assert defs.list_versions("fine") == ["1.0.0"] and defs.list_versions("too_small") == []  # the others still build
    logged = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("fine: compute") for m in logged) and any(m.startswith("fine: built 1.0.0") for m in logged)
    result = defs.build(raise_on_error=False)
    assert [(f.name, f.status) for f in result.features] == [("fine", "skipped"), ("too_small", "failed")]


def test_not_null_and_unique_fail(tmp_path, engine):  # contract E3
    # Ibis's Polars backend counts null as a distinct value; unique() counts only non-null
    # values, so the null below must not hide the duplicate on any engine.
    path = tmp_path / "dupes.parquet"
    pq.write_table(pa.table({"user": ["a", "a", None, "b"], "amt": [1.0, None, 2.0, 3.0]}), path)
    feat = declare(str(path), validators={"user": [mlf.unique(), mlf.not_null()], "amt": mlf.not_null()})
    defs = mlf.Definitions("p", [feat], offline_store=mlf.LocalStore(tmp_path / "store"), engine=engine)
    outcome = defs.build(raise_on_error=False)["spend"]
    assert isinstance(outcome.error, ValidationFailed)
    message = str(outcome.error)
    assert "user: unique() failed for 1 row(s)" in message
    assert "user: not_null() failed for 1 row(s)" in message
    assert "amt: not_null() failed for 1 row(s)" in message


def test_validation_failure_lists_up_to_five_offending_rows(tmp_path, engine):
    path = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"user": [f"u{i}" for i in range(8)] + ["u0"], "amt": [-1.0 * i for i in range(8)] + [5.0]}), path)
    feat = declare(str(path), validators={"amt": mlf.greater_than(0), "user": mlf.unique()})
    defs = mlf.Definitions("p", [feat], offline_store=mlf.LocalStore(tmp_path / "store"), engine=engine)
    message = str(defs.build(raise_on_error=False)["spend"].error)
    first, *rest = message.splitlines()
    assert first == "validation failed: amt: greater_than(0) failed for 8 row(s); user: unique() failed for 1 row(s) (in feature 'spend')"
    assert "  offending rows (up to 5 per check):" in rest
    amt = [line.strip() for line in rest if line.strip().startswith("amt: greater_than(0): ")]
    assert amt == [f"amt: greater_than(0): user='u{i}', amt={-1.0 * i!r}" for i in range(5)]  # in key order
    assert [line.strip() for line in rest if line.strip().startswith("user: unique(): ")] == ["user: unique(): user='u0'"] * 2


def test_unique_fails_without_nulls(tmp_path, engine):
    path = tmp_path / "dupes.parquet"
    pq.write_table(pa.table({"user": ["a", "a", "b", "c", "c", "c"]}), path)
    feat = declare(str(path), validators={"user": mlf.unique()})
    defs = mlf.Definitions("p", [feat], offline_store=mlf.LocalStore(tmp_path / "store"), engine=engine)
    outcome = defs.build(raise_on_error=False)["spend"]
    assert isinstance(outcome.error, ValidationFailed)
    assert "user: unique() failed for 3 row(s)" in str(outcome.error)


def test_validator_arguments_checked():
    with pytest.raises(DefinitionError):
        mlf.greater_than("zero")
    with pytest.raises(DefinitionError):
        mlf.in_range(5, 1)
    with pytest.raises(DefinitionError):
        mlf.matches_regex("([unclosed")
    with pytest.raises(DefinitionError):
        mlf.is_in([])
    with pytest.raises(DefinitionError, match="not a validator"):
        declare(validators={"amt": [lambda col: col > 0]})


def test_validator_on_missing_column(events_path, tmp_path):
    feat = declare(events_path, validators={"nope": mlf.not_null()})
    defs = mlf.Definitions("p", [feat], offline_store=mlf.LocalStore(tmp_path / "store"), engine="duckdb")
    outcome = defs.build(raise_on_error=False)["spend"]
    assert isinstance(outcome.error, ValidationFailed) and "'nope'" in str(outcome.error)


# -- names (E4) ---------------------------------------------------------------------------

# `_mlforge_metadata` as a feature on Unity Catalog was written over the store's own table
BAD_NAMES = ["../x", "a/b", "", "a\x00b", "tab\there", "new\nline", "..", "a\\b", " lead", "_mlforge_metadata", "__MLforge_online_x"]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_bad_feature_names(name):  # contract E4
    with pytest.raises(DefinitionError, match="name"):
        declare(name=name)


@pytest.mark.parametrize("name", BAD_NAMES)
def test_bad_entity_names(name):  # contract E4
    with pytest.raises(DefinitionError, match="name"):
        mlf.Entity(name=name, join_key="user_id")


@pytest.mark.parametrize("name", ["../x", "a/b", "", "a\x01b"])
def test_bad_names_when_reading(name, tmp_path):  # contract E4
    defs = mlf.Definitions("p", [], offline_store=mlf.LocalStore(tmp_path / "store"), engine="duckdb")
    with pytest.raises(DefinitionError):
        defs.read_feature(name)
    with pytest.raises(MlforgeError):
        defs.read_feature("ok_name", version=name or "..")


def test_good_names():  # contract E4
    assert declare(name="user-spend_v2").name == "user-spend_v2"
    assert mlf.Entity(name="user_1", join_key="user_id").name == "user_1"


def test_entity_declaration_errors():  # contract K1
    with pytest.raises(DefinitionError):
        mlf.Entity(name="route", join_key="")
    with pytest.raises(DefinitionError):
        mlf.Entity(name="route", join_key="route_id", from_columns=[])
    with pytest.raises(DefinitionError):
        mlf.Entity(name="route", join_key="origin", from_columns=["origin", "dest"])
    entity = mlf.Entity(name="route", join_key="route_id", from_columns="origin")
    assert entity.from_columns == ("origin",)


def test_an_entity_takes_feasts_one_join_key_list():  # contract E1, K1
    """Feast spells an entity's key ``join_keys=["driver_id"]``: one key is the same entity
    as ``join_key="driver_id"``; several keys, or both spellings, say how mlforge keys them."""
    assert mlf.Entity(name="driver", join_keys=["driver_id"]) == mlf.Entity(name="driver", join_key="driver_id")
    with pytest.raises(DefinitionError, match="exactly one join key column") as caught:
        mlf.Entity(name="route", join_keys=["origin", "dest"])
    assert "from_columns=['origin', 'dest']" in caught.value.fix
    with pytest.raises(DefinitionError, match="both join_key='a' and join_keys"):
        mlf.Entity(name="route", join_key="a", join_keys=["b"])


def test_feature_needs_keys():
    with pytest.raises(DefinitionError, match="keys"):
        declare(keys=None)
    with pytest.raises(DefinitionError, match="duplicate"):
        declare(keys=["user", "user"])
    feat = declare(keys=None, entities=[mlf.Entity(name="user", join_key="user_id")])
    assert feat.keys == ("user_id",)


def test_feature_names_differing_only_by_case_are_refused(tmp_path):  # contract E4
    # Their version folders would be one on a case-insensitive file system (and one table
    # in Unity Catalog): one feature's versions would overwrite the other's.
    def spend(t):
        return t

    def Spend(t):  # the clash is the point
        return t

    features = [mlf.feature(str(tmp_path / "e.parquet"), keys=["k"])(fn) for fn in (spend, Spend)]
    with pytest.raises(DefinitionError, match="'spend' and 'Spend' differ only by case"):
        mlf.Definitions("p", features, offline_store=mlf.LocalStore(tmp_path / "store"))


def test_a_metric_of_a_key_column_is_refused_when_declared(tmp_path):  # contract E1
    # It failed mid-build with Ibis's "Duplicate column name 'k' in result set".
    def counted(t):
        return t

    with pytest.raises(DefinitionError, match="metric field 'k' is a key column") as caught:
        mlf.feature(str(tmp_path / "e.parquet"), keys=["k"], timestamp="ts", interval="1d", metrics=[mlf.Count("k", windows=["1d"])])(counted)
    assert "mlf.Count('events'" in caught.value.fix


def test_a_frame_as_a_source_says_to_write_it_to_a_file():  # contract E1 (Feast users pass DataFrames)
    import pandas as pd

    with pytest.raises(DefinitionError, match=r"Source needs a location .*, not a DataFrame") as caught:
        mlf.Source(pd.DataFrame({"user_id": [1]}))
    assert "write it to a file first" in caught.value.fix
