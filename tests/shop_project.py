"""A small shop project on disk for the feature-set and model tests: two features in a
feature set (one member pinned), a third feature outside it, and a second variant of the
definitions whose builds make new versions (other values, one more column)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd

from mlforge.loader import load_definitions

START = datetime(2024, 1, 1)

DEFINITIONS = """\
import mlforge as mlf

tx = mlf.Source("data/tx.parquet")
user = mlf.Entity(name="user", join_key="user_id")


@mlf.feature(source=tx, entities=[user], timestamp="event_time", interval="1d",
             metrics=[mlf.Sum("amount", windows=["2d", "4d"], name="spend")])
def user_spend(t):
    return t.mutate(amount=t.amount * {factor}).select("user_id", "event_time", "amount")


@mlf.feature(source=tx, keys=["user_id"], timestamp="event_time")
def last_amount(t):
    return t.select("user_id", "event_time", t.amount.name("last_amount"){extra_column})


@mlf.feature(source=tx, keys=["user_id"], timestamp="event_time")
def first_seen(t):
    return t.select("user_id", "event_time", (t.amount * 0).name("seen"))


shopper = mlf.FeatureSet("shopper", features=["user_spend", ("last_amount", "1.0.0")], description="What a shopper spent lately.")

defs = mlf.Definitions("shop", features=[user_spend, last_amount, first_seen, shopper], offline_store=mlf.LocalStore("feature_store"))
"""


def write_shop(root: Path, *, variant: int = 1) -> Path:
    """The project folder: events of three users every 7 hours for 17 days, and the
    definitions (variant 2: spend doubled, ``last_amount`` with one more column)."""
    (root / "data").mkdir(parents=True, exist_ok=True)
    if not (root / "data" / "tx.parquet").exists():
        rows = [{"user_id": f"u{i % 3}", "event_time": START + timedelta(hours=7 * i), "amount": float(i % 11 + 1)} for i in range(60)]
        pd.DataFrame(rows).to_parquet(root / "data" / "tx.parquet")
    extra = "" if variant == 1 else ', (t.amount + 1).name("next_amount")'
    (root / "definitions.py").write_text(DEFINITIONS.format(factor=1 if variant == 1 else 2, extra_column=extra))
    return root / "definitions.py"


def load_shop(root: Path, online_store=None, *, variant: int = 1):
    """The project's ``Definitions`` (variant 1 or 2) with ``online_store`` attached."""
    defs = load_definitions(write_shop(root, variant=variant))
    defs.online_store = online_store
    return defs


def serving_time(defs, *names: str) -> datetime:
    """A read time 5 hours past the latest watermark of ``names`` (rule O1 holds from the
    watermark on), still inside the 4-day windows of the last events."""
    marks = [defs.offline_store.read_record(name).watermark for name in names]
    return datetime.fromtimestamp(max(m for m in marks if m is not None), UTC) + timedelta(hours=5)


def labels() -> pd.DataFrame:
    return pd.DataFrame({
        "user_id": ["u0", "u1", "u2", "u1", "u0"],
        "ts": pd.to_datetime(["2024-01-05 12:00", "2024-01-07 00:00", "2024-01-10 03:00", "2024-01-12 00:00", "2024-01-16 09:30"]),
        "target": [3.0, 1.0, 4.0, 1.0, 5.0],
    })
