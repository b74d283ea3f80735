"""Quickstart features: rolling spend per user, and per (user, merchant) pair."""

import mlforge as mlf

transactions = mlf.Source("data/transactions.parquet", timestamp="event_time")

user = mlf.Entity(name="user", join_key="user_id")
user_merchant = mlf.Entity(name="user_merchant", join_key="user_merchant_id", from_columns=["user_id", "merchant"])


@mlf.feature(
    source=transactions,
    entities=[user],
    timestamp="event_time",
    interval="1d",
    metrics=[
        mlf.Sum("amount", windows=["7d", "30d"], name="spend", unit="EUR"),
        mlf.Count("amount", windows=["7d", "30d"], name="txn_count"),
        mlf.Mean("amount", windows=["30d"], name="avg_amount", unit="EUR"),
        mlf.Max("amount", windows=["30d"], name="max_amount", unit="EUR"),
    ],
    validators={"amount": [mlf.not_null(), mlf.greater_than(0)]},
    tags=["users", "daily"],
    description="Rolling spend per user.",
)
def user_spend(transactions):
    return transactions.select("user_id", "event_time", "amount")


@mlf.feature(
    source=transactions,
    entities=[user_merchant],
    timestamp="event_time",
    interval="1d",
    metrics=[mlf.Count("amount", windows=["30d"], name="visits"), mlf.Median("amount", windows=["30d"], name="median_amount")],
    tags=["merchants", "daily"],
)
def user_merchant_activity(transactions):
    return transactions.select("user_merchant_id", "user_id", "merchant", "event_time", "amount")


@mlf.feature(source=transactions, keys=["user_id"], timestamp="event_time", tags=["users", "hourly"])
def last_transaction(transactions):
    """The latest transaction of each user, as of any time (non-metric feature)."""
    return transactions.select("user_id", "event_time", "amount", "merchant", "country")
