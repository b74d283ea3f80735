"""Point-in-time training data for the fraud model, computed in Spark.

Locally: `python train.py` (after `python generate_data.py` and `mlforge build`). On
Databricks this is the `train` task of databricks.yml, with `--profile databricks-prod`
(the labels table is then `main.raw.fraud_labels`).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", help="profile of mlforge.yaml (default: its default_profile)")
    parser.add_argument("--labels", default=os.environ.get("FRAUD_LABELS", str(HERE / "data" / "labels.parquet")), help="Parquet file or catalog table of labels")
    args = parser.parse_args(argv)
    if args.profile:
        os.environ["MLFORGE_PROFILE"] = args.profile
    os.chdir(HERE)  # the local profile's paths are relative to the project
    from definitions import defs

    spark = defs.engine_for().session
    labels = spark.read.parquet(args.labels) if args.labels.endswith(".parquet") else spark.table(args.labels)
    training = defs.get_training_data(["user_spend", "merchant_activity", "user_merchant_history"], labels, timestamp="label_time")
    rows = training.count()
    print(f"training rows: {rows:,} (labels: {labels.count():,}), columns: {len(training.columns)}")
    training.filter("txn_count_30d > 0").orderBy("label_time").show(2, truncate=False, vertical=True)
    from pyspark.sql import functions as F

    new_merchant = (F.col("user_merchant_visits_30d") == 0).alias("new_merchant")
    training.groupBy(new_merchant).agg(F.count("*").alias("rows"), F.avg(F.col("is_fraud").cast("double")).alias("fraud_rate")).orderBy("new_merchant").show()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
