"""Build the flight features, train an arrival-delay model on point-in-time training data,
and serve the same features online.

Run from this directory, after `python prepare_data.py`:

    python train.py                    # build, train, score, serve
    python train.py --mlflow mlruns    # also record the run with MLflow (the mlflow extra: pip install -e '../..[mlflow]')
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from definitions import defs  # noqa: E402

FEATURES = "delay_features"  # the feature set declared in features.py
LABEL = "arr_delay"


def build() -> None:
    started = time.perf_counter()
    result = defs.build(online=True, raise_on_error=False)  # report every feature, then exit 1
    for f in result.features:
        dropped = f" dropped={f.dropped_rows}" if getattr(f, "dropped_rows", None) else ""
        print(f"  {f.name:<16} {f.status:<8} {f.version}  rows={f.rows:>9,}{dropped}")
        if f.error:
            print(f"    error: {f.error}")
    if not result.ok:
        raise SystemExit(1)
    print(f"built in {time.perf_counter() - started:.1f}s")


def labels() -> pd.DataFrame:
    """One row per landed flight: its keys, scheduled departure (the label time) and delay."""
    flights = pd.read_parquet(HERE / "data" / "flights.parquet")
    flights = flights[flights[LABEL].notna()]
    return flights[["flight_id", "carrier", "origin", "dest", "tailnum", "hour", "distance", "sched_dep_at", LABEL]].reset_index(drop=True)


def train(training: pd.DataFrame) -> dict[str, float]:
    """Fit on the earlier 80% of departures, score on the rest (a split in time)."""
    from sklearn.ensemble import HistGradientBoostingRegressor
    from sklearn.metrics import mean_absolute_error, r2_score

    inputs = [c for c in training.columns if c not in ("flight_id", "carrier", "origin", "dest", "tailnum", "sched_dep_at", LABEL)]
    cut = training["sched_dep_at"].quantile(0.8)
    fit, test = training[training["sched_dep_at"] < cut], training[training["sched_dep_at"] >= cut]
    model = HistGradientBoostingRegressor(max_iter=100, learning_rate=0.1, random_state=0)
    model.fit(fit[inputs].astype("float64"), fit[LABEL])
    predicted = model.predict(test[inputs].astype("float64"))
    baseline = [fit[LABEL].median()] * len(test)
    return {
        "train_rows": len(fit),
        "test_rows": len(test),
        "inputs": len(inputs),
        "mae": mean_absolute_error(test[LABEL], predicted),
        "baseline_mae": mean_absolute_error(test[LABEL], baseline),
        "r2": r2_score(test[LABEL], predicted),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build, train, serve.")
    parser.add_argument("--mlflow", metavar="DIR", help="record the run in a local MLflow store in DIR")
    args = parser.parse_args(argv)
    run = _start_mlflow(args.mlflow) if args.mlflow else None

    print("== build (offline, then the latest row per entity online)")
    build()

    print("== training data (point in time: each flight sees what was known at its scheduled departure)")
    entity_df = labels()
    started = time.perf_counter()
    training = defs.get_training_data(FEATURES, entity_df, timestamp="sched_dep_at")
    print(f"{len(training):,} rows x {training.shape[1]} columns in {time.perf_counter() - started:.1f}s")
    print(training.drop(columns=["flight_id"]).sample(3, random_state=1).T.to_string())

    print("== model (HistGradientBoostingRegressor, later 20% of departures held out)")
    score = train(training)
    print(f"train rows {score['train_rows']:,}, test rows {score['test_rows']:,}, {score['inputs']} inputs")
    print(f"MAE {score['mae']:.2f} min  (median baseline {score['baseline_mae']:.2f} min)  R2 {score['r2']:.3f}")

    print("== online (MemoryStore): the features of the next departures")
    upcoming = pd.DataFrame({"carrier": ["UA", "DL", "B6"], "origin": ["EWR", "JFK", "JFK"], "dest": ["IAH", "ATL", "BOS"], "tailnum": ["N14228", "N3739P", "N0EGMQ"]})
    online = defs.get_online_features(FEATURES, upcoming)
    print(online.T.to_string())
    # The online store holds each entity's newest grid row, which lies up to the longest
    # window past its last event (contract O1, W3); the values as of the end of the data:
    end = pd.Timestamp("2014-01-01", tz="UTC")
    print(f"== the same entities, point in time at the end of the data ({end:%Y-%m-%d %H:%M} UTC)")
    as_of_end = defs.get_training_data(FEATURES, upcoming.assign(at=end), timestamp="at")
    print(as_of_end.drop(columns=["at"]).T.to_string())

    if run is not None:
        import mlflow

        mlflow.log_metrics({k: float(v) for k, v in score.items()})
        mlflow.end_run()
        print(f"MLflow run {run.info.run_id}: features and metrics logged")
    return 0


def _start_mlflow(directory: str):
    import os

    import mlflow

    import mlforge as mlf

    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3: a file store needs opting in
    mlflow.set_tracking_uri(Path(directory).resolve().as_uri())
    mlf.mlflow.autolog()  # every get_training_data in the run records its feature versions
    return mlflow.start_run(run_name="flights-arr-delay")


if __name__ == "__main__":
    raise SystemExit(main())
