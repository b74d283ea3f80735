"""Feature sets (issue 19): declared next to features, registered in ``Definitions``, accepted
wherever a feature list is, and read at the same versions for training and serving.

The project (``shop_project.py``) has ``user_spend`` (metric) and ``last_amount`` in the set
``shopper`` (``last_amount`` pinned to 1.0.0) and ``first_seen`` outside it; variant 2 of its
definitions builds new versions of both members.
"""

from __future__ import annotations

import json
import math
import types

import pandas as pd
import pytest

import mlforge as mlf
from mlforge.errors import (
    ConfigError,
    DefinitionError,
    DefinitionErrors,
    RetrievalError,
    UnpublishedFeature,
)
from mlforge.online.memory import MemoryStore
from mlforge.publishing import publish_latest
from shop_project import labels, load_shop, serving_time, write_shop


@pytest.fixture
def shop(tmp_path, monkeypatch):
    """The shop project in tmp_path, built (variant 1, every feature 1.0.0) and published
    to an in-process online store."""
    monkeypatch.chdir(tmp_path)
    online = MemoryStore()
    defs = load_shop(tmp_path, online)
    assert defs.build(online=True).ok
    return defs


def frames_equal(left: pd.DataFrame, right: pd.DataFrame, columns: list[str]) -> None:
    """Same values column by column: floats within 1e-9, NaN equals NaN."""
    for column in columns:
        for a, b in zip(left[column].tolist(), right[column].tolist(), strict=True):
            if isinstance(a, float) or isinstance(b, float):
                assert (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-9), (column, a, b)
            else:
                assert a == b, (column, a, b)


# -- declaring and registering ------------------------------------------------------------
def test_a_set_is_declared_with_names_pins_specs_and_features():
    @mlf.feature(source="unused.parquet", keys=["user_id"], timestamp="ts")
    def clicks(t):
        return t

    declared = mlf.FeatureSet("s", features=["a", ("b", "1.2.0"), mlf.FeatureSpec("c", columns=["x"]), clicks], description="why")
    assert [(s.name, s.version, s.columns) for s in declared.specs] == [("a", None, None), ("b", "1.2.0", None), ("c", None, ("x",)), ("clicks", None, None)]
    assert declared.feature_names == ["a", "b", "c", "clicks"]
    assert declared.description == "why"


@pytest.mark.parametrize(
    ("name", "features", "message"),
    [
        ("../x", ["a"], "not allowed"),  # contract E4: names become keys and paths
        ("s", [], "at least one feature"),
        ("s", "a", "at least one feature"),  # a bare string is not a list of features
        ("s", [("a", "1.2")], "not a version like 1.2.0"),
        ("s", ["a", ("a", "1.0.0")], "in the set twice"),
        ("s", [42], "cannot read 42"),
    ],
)
def test_a_bad_set_fails_when_declared(name, features, message):
    # contract E1: what, where (the set) and how to fix
    with pytest.raises(DefinitionError) as caught:
        mlf.FeatureSet(name, features=features)
    assert message in str(caught.value)
    assert "fix:" in str(caught.value)


def test_sets_are_registered_from_modules_lists_and_feature_sets(tmp_path):
    @mlf.feature(source="unused.parquet", keys=["user_id"], timestamp="ts")
    def clicks(t):
        return t

    module = types.ModuleType("user_features")
    module.clicks = clicks
    module.from_module = mlf.FeatureSet("from_module", features=["clicks"])
    in_list = mlf.FeatureSet("in_list", features=["clicks"])
    keyword = mlf.FeatureSet("keyword", features=[("clicks", "1.0.0")])
    defs = mlf.Definitions("p", [module, in_list], feature_sets=[keyword], offline_store=mlf.LocalStore(tmp_path / "fs"))
    assert defs.list_feature_sets() == ["from_module", "in_list", "keyword"]
    assert defs.list_features() == ["clicks"]
    assert defs.feature_set("keyword") is keyword
    with pytest.raises(ConfigError, match=r"unknown feature set 'nope'.*\n.*available: from_module, in_list, keyword"):
        defs.feature_set("nope")
    # a misspelt set name given where features are selected names the sets too (E1)
    with pytest.raises(ConfigError, match=r"unknown feature\(s\) \['in_lst'\][\s\S]*available: clicks; feature sets: from_module, in_list, keyword"):
        defs.select(["in_lst"])


def test_a_set_naming_an_unknown_feature_fails_at_registration(tmp_path):
    @mlf.feature(source="unused.parquet", keys=["user_id"], timestamp="ts")
    def clicks(t):
        return t

    typo = mlf.FeatureSet("typo", features=["clicks", "click_count"])
    with pytest.raises(DefinitionError) as caught:
        mlf.Definitions("p", [clicks, typo], offline_store=mlf.LocalStore(tmp_path / "fs"))
    text = str(caught.value)
    assert "feature set 'typo' names unknown feature(s) ['click_count']" in text
    assert "fix: use features of this project (clicks)" in text


def test_set_problems_are_reported_together(tmp_path):
    # STYLE 3: every problem of the project at once
    @mlf.feature(source="unused.parquet", keys=["user_id"], timestamp="ts")
    def clicks(t):
        return t

    sets = [mlf.FeatureSet("clicks", features=["clicks"]), mlf.FeatureSet("twice", features=["clicks"]), mlf.FeatureSet("twice", features=["clicks"]), mlf.FeatureSet("bad", features=["nope"])]
    with pytest.raises(DefinitionErrors) as caught:
        mlf.Definitions("p", [clicks], feature_sets=sets, offline_store=mlf.LocalStore(tmp_path / "fs"))
    text = str(caught.value)
    assert "3 problems" in text
    assert "feature set 'clicks' has the name of a feature" in text
    assert "two feature sets are named 'twice'" in text
    assert "names unknown feature(s) ['nope']" in text


def test_a_pinned_version_that_was_never_built_fails_when_the_set_is_read(shop):
    # Registration cannot need built versions (`mlforge build` loads the definitions
    # first); the first read of the set says which version of which feature is missing.
    shop.feature_sets["late"] = mlf.FeatureSet("late", features=[("last_amount", "9.9.9")])
    with pytest.raises(RetrievalError, match=r"9\.9\.9"):
        shop.training_set("late", labels(), timestamp="ts")


# -- the Done-when check: training and serving read the same versions ---------------------
def test_training_and_serving_a_set_resolve_the_same_versions(shop, tmp_path):
    # contract O1 (revised), P4: the set's training rows at T equal its online read at T,
    # at the versions the set resolves to, before and after new versions are built.
    entities = pd.DataFrame({"user_id": ["u0", "u1", "u2", "zz"]})
    at = serving_time(shop, "user_spend", "last_amount")
    trained = shop.training_set("shopper", entities.assign(ts=at), timestamp="ts")
    assert trained.versions == {"user_spend": "1.0.0", "last_amount": "1.0.0"}
    assert shop.resolve_versions("shopper") == list(trained.features)
    served = shop.get_online_features("shopper", entities, at=at)
    assert list(served.columns) == ["user_id", *trained.feature_columns]
    frames_equal(trained.frame, served, list(trained.feature_columns))

    # New versions of both members, both published online.
    online = shop.online_store
    newer = load_shop(tmp_path, online, variant=2)
    assert newer.build(online=True).ok
    assert newer.offline_store.latest_version("last_amount") == "1.1.0"
    spend_version = newer.offline_store.latest_version("user_spend")
    assert spend_version != "1.0.0"

    # Training reads the latest user_spend and the pinned last_amount 1.0.0 (no next_amount).
    retrained = newer.training_set("shopper", entities.assign(ts=at), timestamp="ts")
    assert retrained.versions == {"user_spend": spend_version, "last_amount": "1.0.0"}
    assert "next_amount" not in retrained.feature_columns
    # Serving the set would read last_amount 1.1.0, which training did not: refused.
    with pytest.raises(RetrievalError) as caught:
        newer.get_online_features("shopper", entities, at=at)
    assert "feature 'last_amount' is served online at version 1.1.0, but version 1.0.0 was asked for" in str(caught.value)
    # Once 1.0.0 is served again, serving the set answers what training gives.
    publish_latest(newer.workspace, newer.features["last_amount"], "1.0.0")
    served = newer.get_online_features("shopper", entities, at=at)
    frames_equal(retrained.frame, served, list(retrained.feature_columns))
    assert served["spend_4d"].tolist()[:3] == [2 * v for v in trained.frame["spend_4d"].tolist()[:3]]


def test_a_pinned_feature_list_is_refused_online_when_another_version_is_served(shop, tmp_path):
    # contract P4 online: a pinned version is read exactly, or the read fails
    newer = load_shop(tmp_path, shop.online_store, variant=2)
    assert newer.build("last_amount", online=True).ok
    with pytest.raises(RetrievalError, match=r"served online at version 1\.1\.0"):
        newer.get_online_features([("last_amount", "1.0.0")], pd.DataFrame({"user_id": ["u0"]}))
    unpinned = newer.get_online_features(["last_amount"], pd.DataFrame({"user_id": ["u0"]}), at=serving_time(newer, "last_amount"))
    assert "next_amount" in unpinned.columns  # a feature list without pins reads what is served


def test_a_pinned_read_of_a_feature_with_nothing_published_is_refused(shop, tmp_path):
    # contract P4 online: a store that serves no version of the feature (emptied, or never
    # published) cannot serve the pinned one; its W4 defaults would be a silent skew
    fresh = load_shop(tmp_path, MemoryStore())
    with pytest.raises(RetrievalError, match=r"no version published online, but version 1\.0\.0 was asked for") as caught:
        fresh.get_online_features([("last_amount", "1.0.0")], pd.DataFrame({"user_id": ["u0"]}))
    # the fix's Python call publishes exactly that version
    assert "publish_latest(defs.workspace, defs.features['last_amount'], '1.0.0')" in caught.value.fix
    publish_latest(fresh.workspace, fresh.features["last_amount"], "1.0.0")
    at = serving_time(fresh, "last_amount")
    assert fresh.get_online_features([("last_amount", "1.0.0")], pd.DataFrame({"user_id": ["u0"]}), at=at)["user_id"].tolist() == ["u0"]
    with pytest.warns(UnpublishedFeature, match=r"feature 'user_spend' has no version published online .*mlforge build --features user_spend --online"):
        unpinned = fresh.get_online_features(["user_spend"], pd.DataFrame({"user_id": ["u0"]}), with_metadata=True)
    assert unpinned["user_spend__known"].tolist() == [False]  # unpinned: unknown, as O2 says, and a warning says why


# -- accepted wherever a feature list is --------------------------------------------------
def test_get_training_data_takes_a_set_and_can_return_a_training_set(shop):
    # contract P1: the rows and columns of entity_df, plus the set's feature columns
    frame = shop.get_training_data("shopper", labels(), timestamp="ts")
    by_list = shop.get_training_data(["user_spend", ("last_amount", "1.0.0")], labels(), timestamp="ts")
    pd.testing.assert_frame_equal(frame, by_list)
    as_set = shop.get_training_data(shop.feature_set("shopper"), labels(), timestamp="ts", label="target", as_training_set=True)
    assert isinstance(as_set, mlf.TrainingSet)
    pd.testing.assert_frame_equal(as_set.load_df(), frame)
    assert as_set.feature_set == "shopper"
    assert as_set.label_columns == ("target",)
    assert as_set.timestamp == "ts"
    assert as_set.keys == ("user_id",)
    assert as_set.feature_columns == ("spend_2d", "spend_4d", "last_amount")
    module_level = mlf.get_training_data("shopper", labels(), timestamp="ts", definitions=shop, as_training_set=True)
    assert module_level.versions == as_set.versions


def test_a_training_set_of_a_feature_list_has_no_set_name(shop):
    ts = shop.training_set(["first_seen", "user_spend"], labels(), timestamp="ts")
    assert ts.feature_set is None
    assert ts.versions == {"first_seen": "1.0.0", "user_spend": "1.0.0"}


def test_a_label_missing_from_entity_df_is_an_error(shop):
    with pytest.raises(RetrievalError, match=r"label column\(s\) \['churned'\] are not in entity_df"):
        shop.training_set("shopper", labels(), label="churned", timestamp="ts")


def test_build_takes_a_set(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    defs = load_shop(tmp_path)
    result = defs.build("shopper")
    assert sorted(f.name for f in result.features) == ["last_amount", "user_spend"]
    assert defs.offline_store.latest_version("first_seen") is None


# -- the command line ---------------------------------------------------------------------
@pytest.fixture
def cli(tmp_path, monkeypatch, run_cli):
    monkeypatch.chdir(tmp_path)
    write_shop(tmp_path)
    return run_cli


def test_cli_builds_lists_and_inspects_a_set(cli):
    code, out, err = cli("build", "--feature-set", "shopper", "--format", "json")
    assert code == 0, err
    assert sorted(f["name"] for f in json.loads(out)["features"]) == ["last_amount", "user_spend"]
    code, out, _ = cli("list", "feature-sets", "--format", "json")
    assert code == 0
    assert json.loads(out) == [{"feature_set": "shopper", "features": ["user_spend", "last_amount@1.0.0"], "description": "What a shopper spent lately."}]
    code, out, _ = cli("inspect", "feature-set", "shopper", "--format", "json")
    assert code == 0
    shown = json.loads(out)
    assert [(m["feature"], m["pinned"], m["latest"]) for m in shown["features"]] == [("user_spend", None, "1.0.0"), ("last_amount", "1.0.0", "1.0.0")]
    code, out, _ = cli("inspect", "feature-set", "shopper")
    assert code == 0 and "last_amount" in out and "1.0.0" in out


def test_cli_unknown_set_exits_2(cli):
    # contract E2: a bad argument is exit 2 with the message, no traceback
    code, _, err = cli("build", "--feature-set", "nope")
    assert code == 2
    assert "unknown feature set 'nope'" in err and "available: shopper" in err and "Traceback" not in err
    code, _, err = cli("inspect", "feature-set", "nope")
    assert code == 2 and "unknown feature set 'nope'" in err


# -- REST ---------------------------------------------------------------------------------
@pytest.fixture
def rest(shop):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from mlforge.serve import create_app

    return TestClient(create_app(shop, token=""))


def test_rest_serves_a_set_like_get_online_features(shop, rest):
    # contract O1: the set's REST answer at T is the online read at T (= training at T)
    at = serving_time(shop, "user_spend", "last_amount")
    answer = rest.post("/feature-sets/shopper/online", json={"entity": {"user_id": "u1"}, "at": at.isoformat()})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["versions"] == {"user_spend": "1.0.0", "last_amount": "1.0.0"}
    trained = shop.get_training_data("shopper", pd.DataFrame({"user_id": ["u1"], "ts": [at]}), timestamp="ts").iloc[0]
    features = body["features"]
    assert features["user_spend"]["spend_2d"] == trained["spend_2d"] and features["user_spend"]["spend_4d"] == trained["spend_4d"]
    assert features["last_amount"]["last_amount"] == trained["last_amount"]
    assert body["metadata"]["user_spend"]["known"] is True

    batch = rest.post("/feature-sets/shopper/online", json={"entities": [{"user_id": "u1"}, {"user_id": "zz"}], "at": at.isoformat()})
    assert batch.status_code == 200, batch.text
    results = batch.json()["results"]
    assert results[0]["features"] == features
    assert results[1]["metadata"]["user_spend"]["known"] is False  # contract O2: unknown, no error
    listed = rest.get("/feature-sets").json()["feature_sets"]
    assert listed == [{"name": "shopper", "description": "What a shopper spent lately.", "features": [{"name": "user_spend", "version": None, "columns": None}, {"name": "last_amount", "version": "1.0.0", "columns": None}]}]


def test_rest_set_errors(rest):
    # contract O3: unknown name 404, bad body 422, never a 500
    unknown = rest.post("/feature-sets/nope/online", json={"entity": {"user_id": "u1"}})
    assert unknown.status_code == 404
    assert unknown.json() == {"detail": "unknown feature set 'nope'", "fix": "available: shopper (GET /feature-sets)"}
    both = rest.post("/feature-sets/shopper/online", json={"entity": {"user_id": "u1"}, "entities": [{"user_id": "u1"}]})
    assert both.status_code == 422
    neither = rest.post("/feature-sets/shopper/online", json={"at": "2024-01-20T00:00:00"})
    assert neither.status_code == 422
    no_key = rest.post("/feature-sets/shopper/online", json={"entity": {"customer": "u1"}})
    assert no_key.status_code == 422 and "user_id" in no_key.text


def test_rest_set_batch_past_the_limit_is_413(shop):
    # contract O3: as /features/batch, past max_batch entities is 413 with how to fix it
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from mlforge.serve import create_app

    small = TestClient(create_app(shop, token="", max_batch=2))
    over = small.post("/feature-sets/shopper/online", json={"entities": [{"user_id": f"u{i}"} for i in range(3)]})
    assert over.status_code == 413
    assert over.json()["detail"] == "3 entities are over the limit of 2 per request" and "--max-batch" in over.json()["fix"]
    within = small.post("/feature-sets/shopper/online", json={"entities": [{"user_id": "u1"}, {"user_id": "u2"}]})
    assert within.status_code == 200 and len(within.json()["results"]) == 2


def test_cli_serve_passes_models_and_refuses_a_bad_one(cli, monkeypatch):
    # contract E2: a malformed --model is exit 2 before anything is served
    import sys

    calls = []
    fake = types.ModuleType("mlforge.serve")
    fake.run = lambda defs, **kwargs: calls.append(kwargs)
    from mlforge.serve import parse_models

    fake.parse_models = parse_models
    fake.given_token = lambda token, where: token
    monkeypatch.setitem(sys.modules, "mlforge.serve", fake)
    code, _, err = cli("serve", "--model", "spend=runs:/abc/model", "--model", "other=models:/m-1")
    assert code == 0, err
    assert calls[0]["models"] == {"spend": "runs:/abc/model", "other": "models:/m-1"}
    code, _, err = cli("serve", "--model", "spend")
    assert code == 2 and "cannot read model 'spend'" in err and "NAME=URI" in err
