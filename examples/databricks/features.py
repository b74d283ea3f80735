"""Fraud-detection features (the Databricks workflow of docs/databricks.md).

The functions take and return Spark DataFrames (the annotation makes them run on the
PySpark engine only). Metrics use the metric API (`mlf.Sum`, `mlf.Mean`, ...), not the
deprecated `Rolling`.
"""

import os

from pyspark.sql import DataFrame as SparkDataFrame
from pyspark.sql import functions as F

import mlforge as mlf

# On Databricks the job sets FRAUD_TRANSACTIONS=main.raw.transactions (a Unity Catalog Delta
# table); locally the features read the file written by generate_data.py.
transactions = mlf.Source(os.environ.get("FRAUD_TRANSACTIONS", "data/transactions.parquet"), name="transactions")

user = mlf.Entity(name="user", join_key="user_id")
merchant = mlf.Entity(name="merchant", join_key="merchant_id")
user_merchant = mlf.Entity(name="user_merchant", join_key="user_merchant_id", from_columns=["user_id", "merchant_id"])

WINDOWS = ["1d", "7d", "30d"]


@mlf.feature(
    source=transactions,
    entities=[user],
    timestamp="event_time",
    interval="1d",
    metrics=[
        mlf.Sum("amt", windows=WINDOWS, name="spend", unit="USD"),
        mlf.Mean("amt", windows=WINDOWS, name="avg_amt", unit="USD"),
        mlf.Count("amt", windows=WINDOWS, name="txn_count"),
    ],
    tags=["users", "daily"],
    description="Rolling spend of each card holder.",
)
def user_spend(df: SparkDataFrame) -> SparkDataFrame:
    return df.select("user_id", "event_time", "amt")


@mlf.feature(
    source=transactions,
    entities=[merchant],
    timestamp="event_time",
    interval="1d",
    metrics=[
        mlf.Count("amt", windows=["7d"], name="merchant_txn_count"),
        mlf.Max("amt", windows=["7d"], name="merchant_max_amt", unit="USD"),
        mlf.Mean("large", windows=["7d"], name="merchant_large_share"),
    ],
    tags=["merchants", "daily"],
    description="Activity of each merchant; share of transactions above 100 USD.",
)
def merchant_activity(df: SparkDataFrame) -> SparkDataFrame:
    return df.select("merchant_id", "event_time", "amt", (F.col("amt") > 100).cast("double").alias("large"))


@mlf.feature(
    source=transactions,
    entities=[user_merchant],
    timestamp="event_time",
    interval="1d",
    metrics=[mlf.Count("amt", windows=["30d"], name="user_merchant_visits")],
    tags=["users", "daily"],
    description="How often a card holder used this merchant: new merchants are riskier.",
)
def user_merchant_history(df: SparkDataFrame) -> SparkDataFrame:
    return df.select("user_merchant_id", "user_id", "merchant_id", "event_time", "amt")
