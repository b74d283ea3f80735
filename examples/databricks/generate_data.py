"""Generate local sample data for the fraud-detection example (deterministic).

On Databricks the features read the Delta table `main.raw.transactions`; locally they read
`data/transactions.parquet` written here, with the same columns. `data/labels.parquet`
holds the transactions to train on: their time and whether they were fraud.

Run: python generate_data.py
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent


def generate(rows: int = 6_000, users: int = 200, merchants: int = 40, seed: int = 13) -> pa.Table:
    """Card holders mostly shop at a few favourite merchants; fraud happens elsewhere, at
    a handful of risky merchants, and for larger amounts."""
    rng = random.Random(seed)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    shops = [f"m{m:03d}" for m in range(merchants)]
    risky = rng.sample(shops, 4)
    favourites = {f"u{u:04d}": rng.sample(shops, 4) for u in range(users)}
    records = []
    for i in range(rows):
        user = f"u{rng.randrange(users):04d}"
        fraud = rng.random() < 0.03
        if fraud:
            merchant, amount = rng.choice(risky), round(rng.lognormvariate(4.5, 0.8), 2)
        else:
            merchant = rng.choice(favourites[user]) if rng.random() < 0.85 else rng.choice(shops)
            amount = round(rng.lognormvariate(3.2, 1.0), 2)
        records.append({
            "transaction_id": i,
            "user_id": user,
            "merchant_id": merchant,
            "amt": amount,
            "event_time": start + timedelta(seconds=rng.randrange(90 * 86400)),
            "is_fraud": fraud,
        })
    records.sort(key=lambda r: r["event_time"])
    return pa.Table.from_pylist(records)


def main() -> int:
    (HERE / "data").mkdir(exist_ok=True)
    table = generate()
    pq.write_table(table, HERE / "data" / "transactions.parquet")
    labels = table.select(["transaction_id", "user_id", "merchant_id", "event_time", "is_fraud"]).rename_columns(
        ["transaction_id", "user_id", "merchant_id", "label_time", "is_fraud"]
    )
    pq.write_table(labels, HERE / "data" / "labels.parquet")
    print(f"wrote {table.num_rows:,} transactions to data/transactions.parquet and data/labels.parquet")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
