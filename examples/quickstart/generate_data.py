"""Generate the quickstart's sample transactions (deterministic; the output is shipped).

Run: python generate_data.py  -> data/transactions.parquet
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

MERCHANTS = ["grocer", "fuel", "books", "travel", "cafe", "pharmacy"]


def generate(rows: int = 20_000, users: int = 500, seed: int = 7) -> pa.Table:
    rng = random.Random(seed)
    start = datetime(2025, 1, 1, tzinfo=UTC)
    records = []
    for i in range(rows):
        user = rng.randrange(users)
        moment = start + timedelta(seconds=rng.randrange(180 * 86400))
        amount = round(rng.lognormvariate(3.0, 0.9), 2)
        records.append(
            {
                "transaction_id": i,
                "user_id": f"u{user:04d}",
                "merchant": rng.choice(MERCHANTS),
                "country": rng.choice(["DE", "FR", "US", "GB"]),
                "amount": amount,
                "event_time": moment.replace(tzinfo=None),
            }
        )
    records.sort(key=lambda r: r["event_time"])
    return pa.Table.from_pylist(records)


if __name__ == "__main__":
    out = Path(__file__).parent / "data" / "transactions.parquet"
    out.parent.mkdir(exist_ok=True)
    pq.write_table(generate(), out, compression="zstd")
    print(f"wrote {out}")
