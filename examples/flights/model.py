"""A model that carries its features: train on the feature set `delay_features`, log the model
with its training set to MLflow, score a batch of flights, and serve predictions from the
entity keys alone.

Run from this directory, after `python prepare_data.py` (`pip install -e '../..[mlflow,serve]'`
scikit-learn):

    python model.py                    # MLflow store in ./mlruns

Nothing here lists features or versions by hand: the set names the features, the training
set pins their versions, and the logged model remembers both.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from definitions import defs  # noqa: E402

import mlforge as mlf  # noqa: E402

LABEL = "arr_delay"
#: What identifies a departure for the features: carrier, route (origin, dest), aircraft.
KEYS = ["carrier", "origin", "dest", "tailnum"]


def labelled_flights() -> pd.DataFrame:
    """Landed flights: their keys, scheduled departure (the label time) and arrival delay."""
    flights = pd.read_parquet(HERE / "data" / "flights.parquet")
    flights = flights[flights[LABEL].notna()]
    return flights[["flight_id", *KEYS, "sched_dep_at", LABEL]].reset_index(drop=True)


def fit(training: mlf.TrainingSet):
    """A regression tree on the feature columns only (so serving needs only keys), fitted on
    the earlier 80% of departures. Trees take the missing values of emptied windows as
    they are; the model is kept small: the point here is the plumbing, not the score."""
    from sklearn.tree import DecisionTreeRegressor

    frame = training.frame
    earlier = frame[frame["sched_dep_at"] < frame["sched_dep_at"].quantile(0.8)]
    model = DecisionTreeRegressor(max_depth=6, min_samples_leaf=50, random_state=0)
    model.fit(earlier[list(training.feature_columns)].astype("float64"), earlier[LABEL])
    return model


def serving_moment() -> datetime:
    """The end of the published data: the latest watermark of the set's features. Online
    values from there on equal point-in-time values (contract O1)."""
    marks = [defs.offline_store.read_record(name).watermark for name in defs.feature_set("delay_features").feature_names]
    return datetime.fromtimestamp(max(m for m in marks if m is not None), UTC)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Train, log, batch-score and serve a model that carries its features.")
    parser.add_argument("--mlflow", metavar="DIR", default="mlruns", help="local MLflow store (default: ./mlruns)")
    args = parser.parse_args(argv)
    import mlflow

    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3: a file store needs opting in
    tracking = Path(args.mlflow).resolve().as_uri()
    mlflow.set_tracking_uri(tracking)

    started = time.perf_counter()
    print("== build (offline, then online)")
    result = defs.build(online=True)
    print("  " + ", ".join(f"{f.name} {f.version} {f.status}" for f in result.features) + f" ({time.perf_counter() - started:.1f}s)")
    if not result.ok:
        return 1

    print("== training set of the feature set 'delay_features'")
    flights = labelled_flights()
    training = defs.training_set("delay_features", flights, label=LABEL, timestamp="sched_dep_at")
    print(f"  {training!r}")
    print(f"  {len(training.frame):,} rows, {len(training.feature_columns)} feature columns")

    print("== fit and log the model with its training set")
    model = fit(training)
    with mlflow.start_run(run_name="flights-arr-delay-model"):
        # pip_requirements=[]: the serving environment is this one (mlforge, scikit-learn);
        # without it MLflow infers the requirements, which takes a while.
        info = mlf.mlflow.log_model(model, "arr_delay", training_set=training, pip_requirements=[])
    print(f"  logged {info.model_uri} ({time.perf_counter() - started:.1f}s since the start)")
    logged = defs.load_model(info.model_uri)  # a URI works everywhere too; loaded once here

    print("== batch scoring: the model looks its features up by itself (point in time, recorded versions)")
    later = flights[flights["sched_dep_at"] >= flights["sched_dep_at"].quantile(0.8)]
    scored = defs.score(logged, later[["flight_id", *KEYS, "sched_dep_at"]], timestamp="sched_dep_at")
    direct = model.predict(training.frame.loc[later.index, list(training.feature_columns)].astype("float64"))
    same = bool(((scored["prediction"].to_numpy() - direct) ** 2).max() < 1e-18)
    mae = float((scored["prediction"] - later[LABEL].to_numpy()).abs().mean())
    print(f"  {len(scored):,} later flights scored, MAE {mae:.2f} min")
    print(f"  batch predictions equal the model on the training frame: {same} ({time.perf_counter() - started:.1f}s since the start)")

    print("== serving by entity keys alone: POST /models/arr_delay/predict")
    from fastapi.testclient import TestClient

    from mlforge.serve import create_app

    at = serving_moment()
    upcoming = [
        {"carrier": "UA", "origin": "EWR", "dest": "IAH", "tailnum": "N14228"},
        {"carrier": "DL", "origin": "JFK", "dest": "ATL", "tailnum": "N3739P"},
        {"carrier": "B6", "origin": "JFK", "dest": "BOS", "tailnum": "N0EGMQ"},
    ]
    client = TestClient(create_app(defs, token="", models={"arr_delay": info.model_uri}))
    answer = client.post("/models/arr_delay/predict", json={"entities": upcoming, "at": at.isoformat()})
    answer.raise_for_status()
    served = answer.json()["predictions"]
    batch = defs.score(logged, pd.DataFrame(upcoming).assign(at=at), timestamp="at")["prediction"].tolist()
    for entity, prediction in zip(upcoming, served, strict=True):
        print(f"  {entity['carrier']} {entity['origin']}-{entity['dest']} {entity['tailnum']}: {prediction:+.1f} min")
    agree = all(abs(s - b) <= 1e-9 * max(1.0, abs(b)) for s, b in zip(served, batch, strict=True))
    print(f"  REST predictions equal batch scoring at the same moment ({at:%Y-%m-%d %H:%M} UTC): {agree}")
    print(f"  ({time.perf_counter() - started:.1f}s since the start)")
    print(f"  the same from a shell: MLFLOW_TRACKING_URI={tracking} mlforge serve --model arr_delay={info.model_uri}")
    return 0 if same and agree else 1


if __name__ == "__main__":
    raise SystemExit(main())
