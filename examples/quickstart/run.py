"""Build the quickstart features and pull a point-in-time training set.

Run from this directory: python run.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))

from definitions import defs  # noqa: E402


def labels() -> pd.DataFrame:
    """Label rows: three users, each asked about at three moments of 2025."""
    times = pd.to_datetime(["2025-02-01 09:00", "2025-04-15 18:30", "2025-06-30 00:00"])
    return pd.DataFrame([(user, t) for user in ("u0001", "u0042", "u0275") for t in times], columns=["user_id", "label_time"])


def main() -> int:
    result = defs.build(raise_on_error=False)  # print every feature's outcome, then exit 1 on a failure
    for f in result.features:
        print(f"{f.name:<24} {f.status:<8} version={f.version} rows={f.rows} time={f.seconds}s {f.reason or ''}")
        if f.error:
            print(f"  error: {f.error}")
    if not result.ok:
        return 1
    table = defs.read_feature("user_spend").order_by(["user_id", "event_time"]).limit(5).to_pandas()
    print(table.to_string(index=False))
    # Point in time: each label row gets what was known at its label_time, never later.
    training = defs.get_training_data(["user_spend", "last_transaction"], labels(), timestamp="label_time")
    print(f"\ntraining set: {len(training)} rows, columns {list(training.columns)}")
    print(training[["user_id", "label_time", "spend_7d", "spend_30d", "txn_count_30d", "amount"]].to_string(index=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
