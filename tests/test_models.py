"""Models that carry their features (issue 19): ``mlf.mlflow.log_model(..., training_set=)``,
batch scoring with ``defs.score`` and serving with ``POST /models/{name}/predict``, against a
real local MLflow tracking store (file backend under tmp_path; nothing is downloaded).

The models are tiny linear models (no scikit-learn needed): a plain object with ``predict``
(wrapped by ``log_model``) and an ``mlflow.pyfunc.PythonModel``.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("mlflow")

import mlflow
import mlflow.pyfunc

import mlforge as mlf
from mlforge.errors import ConfigError, RetrievalError
from mlforge.online.memory import MemoryStore
from shop_project import labels, load_shop, serving_time


class Linear:
    """``predict(frame) = frame @ weights + bias``, nulls read as 0."""

    def __init__(self, weights: list[float], bias: float = 0.0):
        self.weights = np.asarray(weights, dtype="float64")
        self.bias = bias

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        return frame.astype("float64").fillna(0.0).to_numpy() @ self.weights + self.bias


class LinearPyfunc(mlflow.pyfunc.PythonModel):
    """The same model, as MLflow's own model class (returns a one-column frame)."""

    def __init__(self, weights: list[float]):
        self.weights = weights

    def predict(self, context, model_input, params=None):
        return pd.DataFrame({"y": Linear(self.weights).predict(model_input)})


@pytest.fixture
def shop(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    defs = load_shop(tmp_path, MemoryStore())
    assert defs.build(online=True).ok
    return defs


def fit_and_log(defs, model, *, input_columns=None):
    """A training set of the set ``shopper`` and the model logged with it."""
    ts = defs.training_set("shopper", labels(), label="target", timestamp="ts")
    with mlflow.start_run():
        info = mlf.mlflow.log_model(model, "model", training_set=ts, input_columns=input_columns, pip_requirements=[])
    return ts, info


def close(left: list[float], right: list[float]) -> bool:
    return len(left) == len(right) and all(math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12) for a, b in zip(left, right, strict=True))


# -- the Done-when checks -----------------------------------------------------------------
def test_score_gives_the_predictions_of_the_training_frame(tracking, shop, tmp_path):
    # contract P1-P4: defs.score looks the features up point in time at the versions the
    # model was trained on, even after newer versions exist, and predicts in input order.
    model = Linear([1.0, 10.0, 100.0], bias=0.5)
    ts, info = fit_and_log(shop, model)
    direct = model.predict(ts.frame[list(ts.feature_columns)]).tolist()

    newer = load_shop(tmp_path, shop.online_store, variant=2)  # user_spend values double
    assert newer.build().ok
    assert newer.offline_store.latest_version("user_spend") != "1.0.0"
    scored = newer.score(info.model_uri, labels().drop(columns=["target"]), timestamp="ts")
    assert list(scored.columns) == ["user_id", "ts", "prediction"]
    assert close(scored["prediction"].tolist(), direct)
    # The latest versions would have given other predictions: the test can tell them apart.
    latest = newer.get_training_data(["user_spend", ("last_amount", "1.0.0")], labels(), timestamp="ts")
    assert not close(model.predict(latest[list(ts.feature_columns)]).tolist(), direct)


def test_score_defaults_to_the_training_timestamp_column(tracking, shop):
    model = Linear([1.0, 1.0, 1.0])
    ts, info = fit_and_log(shop, model)
    scored = shop.score(info.model_uri, labels())  # entity_df has "ts", the training set's timestamp
    assert close(scored["prediction"].tolist(), model.predict(ts.frame[list(ts.feature_columns)]).tolist())
    assert scored["target"].tolist() == labels()["target"].tolist()  # entity_df's columns stay


def test_rest_model_route_answers_what_score_gives_at_the_same_moment(tracking, shop, tmp_path):
    # contract O1 (revised): online at T == training at T, so the served model predicts what
    # batch scoring predicts for the same entities at T, from the entity keys alone.
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from mlforge.serve import create_app

    model = Linear([2.0, -1.0, 0.25], bias=1.0)
    _, info = fit_and_log(shop, model)
    newer = load_shop(tmp_path, shop.online_store, variant=2)  # newer offline versions, not served
    assert newer.build().ok
    at = serving_time(newer, "user_spend", "last_amount")
    entities = [{"user_id": "u0"}, {"user_id": "u2"}, {"user_id": "u1"}, {"user_id": "zz"}]
    batch = newer.score(info.model_uri, pd.DataFrame(entities).assign(ts=at), timestamp="ts")["prediction"].tolist()

    client = TestClient(create_app(newer, token="", models={"spend": info.model_uri}))
    answer = client.post("/models/spend/predict", json={"entities": entities, "at": at.isoformat()})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["versions"] == {"user_spend": "1.0.0", "last_amount": "1.0.0"}
    assert close(body["predictions"], batch)
    assert body["predictions"][3] == pytest.approx(1.0)  # an unknown entity: W4 sums are 0, last_amount null -> 0
    online = newer.score_online(info.model_uri, pd.DataFrame(entities), at=at)["prediction"].tolist()
    assert close(online, batch)
    models = client.get("/models").json()["models"]
    assert [(m["name"], m["feature_set"], m["keys"], m["inputs"]) for m in models] == [("spend", "shopper", ["user_id"], ["spend_2d", "spend_4d", "last_amount"])]


def test_a_pyfunc_model_is_logged_as_it_is(tracking, shop):
    ts, info = fit_and_log(shop, LinearPyfunc([1.0, 0.0, -1.0]))
    scored = shop.score(info.model_uri, labels(), timestamp="ts")
    assert close(scored["prediction"].tolist(), Linear([1.0, 0.0, -1.0]).predict(ts.frame[list(ts.feature_columns)]).tolist())


# -- what is logged -----------------------------------------------------------------------
def test_the_model_artifact_records_set_versions_keys_and_column_order(tracking, shop):
    _, info = fit_and_log(shop, Linear([1.0, 1.0, 1.0]))
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=info.model_uri))
    record = json.loads((local / "artifacts" / "mlforge_features.json").read_text())
    assert record == {
        "format": 1,
        "project": "shop",
        "feature_set": "shopper",
        "features": [{"name": "user_spend", "version": "1.0.0", "columns": None}, {"name": "last_amount", "version": "1.0.0", "columns": None}],
        "feature_columns": ["spend_2d", "spend_4d", "last_amount"],
        "input_columns": ["spend_2d", "spend_4d", "last_amount"],
        "keys": ["user_id"],
        "natural_keys": {},
        "timestamp": "ts",
        "label_columns": ["target"],
        "input_types": {},
    }
    assert mlflow.get_run(info.run_id).data.tags["mlforge.feature_set"] == "shopper"


def test_input_columns_set_the_order_and_may_include_entity_columns(tracking, shop):
    data = labels().assign(bonus=[1.0, 2.0, 3.0, 4.0, 5.0])
    ts = shop.training_set("shopper", data, label="target", timestamp="ts")
    inputs = ["last_amount", "bonus", "spend_2d"]
    model = Linear([1.0, 100.0, 10.0])
    with mlflow.start_run():
        info = mlf.mlflow.log_model(model, "model", training_set=ts, input_columns=inputs, pip_requirements=[])
    scored = shop.score(info.model_uri, data.drop(columns=["target"]), timestamp="ts")
    assert close(scored["prediction"].tolist(), model.predict(ts.frame[inputs]).tolist())
    with pytest.raises(RetrievalError, match=r"also reads the column\(s\) \['bonus'\]"):
        shop.score(info.model_uri, labels(), timestamp="ts")


class PlusDay:
    """``spend_2d + seen.day``: reads an ``entity_df`` timestamp as a timestamp."""

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        return frame["spend_2d"].fillna(0.0).to_numpy() + frame["seen"].dt.day.to_numpy()


def test_rest_gives_entity_columns_a_model_reads_their_training_types(tracking, shop):
    # contract O1: JSON has no timestamps; the served model must get what scoring gives it
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from mlforge.serve import create_app

    data = labels().assign(seen=labels()["ts"] + pd.Timedelta(days=3))
    ts = shop.training_set("shopper", data, label="target", timestamp="ts")
    with mlflow.start_run():
        info = mlf.mlflow.log_model(PlusDay(), "model", training_set=ts, input_columns=["spend_2d", "seen"], pip_requirements=[])
    at = serving_time(shop, "user_spend", "last_amount")
    entities = pd.DataFrame({"user_id": ["u0", "u1"], "seen": pd.to_datetime(["2024-03-05T10:00:00", "2024-03-17T23:00:00"])})
    batch = shop.score(info.model_uri, entities.assign(ts=at), timestamp="ts")["prediction"].tolist()
    client = TestClient(create_app(shop, token="", models={"m": info.model_uri}))
    body = {"entities": [{"user_id": "u0", "seen": "2024-03-05T10:00:00Z"}, {"user_id": "u1", "seen": "2024-03-18T01:00:00+02:00"}], "at": at.isoformat()}
    answer = client.post("/models/m/predict", json=body)
    assert answer.status_code == 200, answer.text
    assert close(answer.json()["predictions"], batch)
    for wrong in ("tomorrow", 1709251200, True):  # a number would be read as ticks since 1970
        bad = client.post("/models/m/predict", json={"entities": [{"user_id": "u0", "seen": wrong}], "at": at.isoformat()})
        assert bad.status_code == 422 and "'seen'" in bad.json()["detail"] and bad.json()["fix"], (wrong, bad.text)


def test_input_types_are_recorded_for_every_kind_of_frame(shop):
    # rule P1: the training set is the kind of frame entity_df was; a model's record needs
    # the types of the entity columns it reads from any of them, without running the frame
    import ibis
    import polars as pl
    import pyarrow as pa

    data = pa.Table.from_pandas(labels().assign(seen=labels()["ts"]), preserve_index=False)
    for frame in (data, data.to_pandas(), pl.from_arrow(data), pl.from_arrow(data).lazy(), ibis.memtable(data)):
        ts = shop.training_set("shopper", frame, label="target", timestamp="ts")
        record = ts.model_features(["spend_2d", "seen"])
        assert dict(record.input_types) == {"seen": "timestamp(6)"}, (type(frame), record.input_types)


def test_rest_model_batch_may_mix_natural_and_join_keys(tracking, tmp_path, monkeypatch):
    # rule K2: each entity of a batch may be given by its natural columns or its join key
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from mlforge.serve import create_app

    monkeypatch.chdir(tmp_path)
    pd.DataFrame({"origin": ["JFK", "JFK"], "dest": ["LAX", "LAX"], "event_time": pd.to_datetime(["2024-01-01 10:00", "2024-01-02 10:00"]), "amount": [10.0, 20.0]}).to_parquet("tx.parquet")
    route = mlf.Entity("route", join_key="route_id", from_columns=["origin", "dest"])

    @mlf.feature(source=mlf.Source("tx.parquet", timestamp="event_time"), entities=[route], timestamp="event_time", interval="1d", metrics=[mlf.Sum("amount", windows=["2d"], name="amt")])
    def route_stats(t):
        return t.select("route_id", "event_time", "amount")

    defs = mlf.Definitions("routes", [route_stats], offline_store=mlf.LocalStore("fs"), online_store=MemoryStore())
    assert defs.build(online=True).ok
    ts = defs.training_set(["route_stats"], pd.DataFrame({"origin": ["JFK"], "dest": ["LAX"], "t": pd.to_datetime(["2024-01-03"]), "y": [1]}), label="y", timestamp="t")
    with mlflow.start_run():
        info = mlf.mlflow.log_model(Linear([1.0]), "model", training_set=ts, pip_requirements=[])
    client = TestClient(create_app(defs, token="", models={"m": info.model_uri}))
    natural, joined = {"origin": "JFK", "dest": "LAX"}, {"route_id": mlf.surrogate_key("JFK", "LAX")}
    for batch in ([natural, joined], [joined, natural]):
        answer = client.post("/models/m/predict", json={"entities": batch, "at": "2024-01-03T00:00:00Z"})
        assert answer.status_code == 200 and answer.json()["predictions"] == [30.0, 30.0], answer.text
    with pytest.raises(RetrievalError, match=re.escape("lacks the key column 'route_id' (or its natural columns ['origin', 'dest'])")):
        defs.get_online_features(["route_stats"], pd.DataFrame({"origin": ["JFK"]}), at="2024-01-03T00:00:00Z")


# -- errors -------------------------------------------------------------------------------
def test_log_model_refuses_bad_arguments(tracking, shop):
    ts = shop.training_set("shopper", labels(), label="target", timestamp="ts")
    with mlflow.start_run():
        with pytest.raises(ConfigError, match="training_set must be a TrainingSet"):
            mlf.mlflow.log_model(Linear([1.0]), "model", training_set=ts.frame)
        with pytest.raises(ConfigError, match="training_set must be a TrainingSet"):
            mlf.mlflow.log_model(Linear([1.0]), "model")  # forgotten: a ConfigError with its fix, not a TypeError
        with pytest.raises(ConfigError, match=r"input column\(s\) \['target'\] are labels"):
            mlf.mlflow.log_model(Linear([1.0]), "model", training_set=ts, input_columns=["spend_2d", "target"])
        with pytest.raises(ConfigError, match=r"input column\(s\) \['nope'\] are not in the training set"):
            mlf.mlflow.log_model(Linear([1.0]), "model", training_set=ts, input_columns=["nope"])
        with pytest.raises(ConfigError, match="it has no predict method"):
            mlf.mlflow.log_model(object(), "model", training_set=ts)


def test_a_model_logged_without_a_training_set_cannot_be_scored(tracking, shop):
    with mlflow.start_run():
        info = mlflow.pyfunc.log_model(name="plain", python_model=LinearPyfunc([1.0]), pip_requirements=[])
    with pytest.raises(ConfigError, match=r"has no mlforge_features\.json: it was not logged with a training set"):
        shop.score(info.model_uri, labels())
    with pytest.raises(ConfigError, match="cannot fetch model"):
        shop.score("runs:/0123456789abcdef/missing", labels())


def test_scoring_refuses_an_entity_df_with_a_prediction_column(tracking, shop):
    _, info = fit_and_log(shop, Linear([1.0, 1.0, 1.0]))
    with pytest.raises(RetrievalError, match="already has a 'prediction' column"):
        shop.score(info.model_uri, labels().assign(prediction=0.0))


def test_rest_model_errors(tracking, shop, tmp_path, caplog):
    # contract O3: unknown model 404; a store serving other versions 422; never a 500
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from mlforge.serve import create_app, parse_models

    _, info = fit_and_log(shop, Linear([1.0, 1.0, 1.0]))
    client = TestClient(create_app(shop, token="", models={"spend": info.model_uri}))
    unknown = client.post("/models/nope/predict", json={"entities": [{"user_id": "u0"}]})
    assert unknown.status_code == 404
    assert unknown.json() == {"detail": "unknown model 'nope'", "fix": "served: spend (GET /models)"}
    assert client.post("/models/spend/predict", json={"entities": []}).status_code == 422
    wrong_body = client.post("/models/spend/predict", json={"features": ["user_spend"], "entity": {"user_id": "u0"}}).json()
    assert '{"entities": [{"user_id": "u1"}]}' in wrong_body["fix"]  # the route's own body, not /features/online's
    assert client.post("/models/spend/predict", json={"entities": [{"customer": "u0"}]}).status_code == 422

    newer = load_shop(tmp_path, shop.online_store, variant=2)
    assert newer.build(online=True).ok  # the store now serves other versions than the model's
    with caplog.at_level("WARNING", logger="mlforge.serve"):
        stale = TestClient(create_app(newer, token="", models={"spend": info.model_uri}))
    assert "model 'spend' was trained on" in caplog.text and "but the online store serves" in caplog.text  # said at start-up
    refused = stale.post("/models/spend/predict", json={"entities": [{"user_id": "u0"}]})
    assert refused.status_code == 422
    assert "is served online at version" in refused.json()["detail"]

    with pytest.raises(ConfigError, match="cannot read model 'spend'"):
        parse_models(["spend"])
    with pytest.raises(ConfigError, match="given twice"):
        parse_models(["a=x", "a=y"])
    with pytest.raises(ConfigError, match="model name"):
        create_app(shop, token="", models={"../x": info.model_uri})
