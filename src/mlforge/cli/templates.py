"""The files ``mlforge init`` writes, and its deterministic sample data."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

DEFINITIONS = '''"""The {name} project: one Definitions object that the mlforge CLI loads."""

import mlforge as mlf

import features

defs = mlf.Definitions(name="{name}", features=[features])
'''

FEATURES = '''"""Features of {name}. Each function receives the source as an Ibis table."""

import mlforge as mlf

transactions = mlf.Source("data/transactions.parquet", timestamp="event_time")
users = mlf.Source("data/users.parquet")

user = mlf.Entity(name="user", join_key="user_id")
merchant = mlf.Entity(name="merchant", join_key="merchant_id")


@mlf.feature(
    source=transactions,
    entities=[user],
    timestamp="event_time",
    interval="1d",
    metrics=[
        mlf.Sum("amount", windows=["7d", "30d"], name="total_spend", unit="USD"),
        mlf.Count("amount", windows=["7d", "30d"], name="txn_count"),
        mlf.Mean("amount", windows=["7d"], name="avg_amount", unit="USD"),
    ],
    validators={{"amount": [mlf.greater_than(0)]}},
    tags=["users", "daily"],
)
def user_spend(t):
    """Spend per user over rolling 7 and 30 day windows."""
    return t.select("user_id", "event_time", "amount")


@mlf.feature(
    source=transactions,
    entities=[merchant],
    timestamp="event_time",
    interval="1d",
    metrics=[
        mlf.Count("amount", windows=["7d", "28d"], name="merchant_txns"),
        mlf.Max("amount", windows=["28d"], name="merchant_max_amount", unit="USD"),
    ],
    tags=["merchants", "weekly"],
)
def merchant_activity(t):
    """Transactions per merchant over rolling windows."""
    return t.select("merchant_id", "event_time", "amount")


@mlf.feature(
    source=users,
    entities=[user],
    validators={{"user_id": [mlf.not_null(), mlf.unique()]}},
    tags=["users", "on-demand"],
)
def user_profile(t):
    """Static attributes of each user."""
    return t.select("user_id", "country", "signup_date")
'''

README = """# {name}

A feature project made with `mlforge init`.

```bash
mlforge build                      # build every feature (dev profile, local store)
mlforge list features              # what is defined, with the latest version
mlforge inspect feature user_spend
mlforge build --schedule daily     # only daily features
mlforge build --last 7d            # recompute the last week only
mlforge build --profile prod       # the prod profile of mlforge.yaml
mlforge serve                      # REST on http://127.0.0.1:8000 (dev: an in-process online store)
```

The sample transactions run from January to 1 March 2026. A read "now" (the default) is long
after them, so every window has emptied: sums and counts read 0. Online reads start at the
watermark (the first label after the newest event, here 2 March; earlier moments are
training data's, `get_training_data`); ask for one with `at`:

```bash
curl -s -X POST http://127.0.0.1:8000/features/online -H 'content-type: application/json' \\
  -d '{{"features": ["user_spend"], "entity": {{"user_id": "u001"}}, "at": "2026-03-02T00:00:00Z"}}'
```

- `definitions.py` holds the one `Definitions` object.
- `features.py` declares sources, entities and features.
- `mlforge.yaml` holds the profiles; see the mlforge docs, "Profiles".
- `data/` holds generated sample data (transactions and users).
"""

_STORE_BLOCKS = {
    "local": "    offline_store:\n      KIND: local\n      path: ./feature_store\n",
    "s3": '    offline_store:\n      KIND: s3\n      bucket: "${{oc.env:MLFORGE_S3_BUCKET}}"\n      prefix: {name}\n',
    "gcs": '    offline_store:\n      KIND: gcs\n      bucket: "${{oc.env:MLFORGE_GCS_BUCKET}}"\n      prefix: {name}\n',
    "unity-catalog": '    offline_store:\n      KIND: unity-catalog\n      catalog: "${{oc.env:DATABRICKS_CATALOG,main}}"\n      schema: features\n',
}
_ONLINE_BLOCKS = {
    "redis": '    online_store:\n      KIND: redis\n      host: "${oc.env:REDIS_HOST,localhost}"\n      port: "${oc.env:REDIS_PORT,6379}"\n',
    "valkey": '    online_store:\n      KIND: valkey\n      host: "${oc.env:VALKEY_HOST,localhost}"\n      port: "${oc.env:VALKEY_PORT,6379}"\n',
    "dynamodb": '    online_store:\n      KIND: dynamodb\n      table_name: "${oc.env:DYNAMODB_TABLE,mlforge-features}"\n',
    "databricks": '    online_store:\n      KIND: databricks-online-tables\n      catalog: "${oc.env:DATABRICKS_CATALOG,main}"\n      schema: features_online\n      sync_mode: triggered\n',
}


#: The dev profile's online store: in-process, so `mlforge serve` works right after `init`.
_DEV_ONLINE = "    online_store:  # in-process: `mlforge serve` fills it from the offline store at start-up\n      KIND: memory\n"


def config_text(name: str, *, online: str | None, store: str, engine: str) -> str:
    prod = _STORE_BLOCKS[store].format(name=name) + (_ONLINE_BLOCKS[online] if online else "") + f"    engine: {engine}\n"
    return (
        "# Profiles: `mlforge build --profile prod`, or MLFORGE_PROFILE=prod.\n"
        "# ${oc.env:VAR,default} reads an environment variable, only in the profile in use.\n"
        "default_profile: dev\n"
        "profiles:\n"
        "  dev:\n"
        + _DEV_ONLINE
        + _STORE_BLOCKS["local"]
        + f"    engine: {engine}\n"
        "  prod:\n" + prod
    )


def write_project(root: Path, *, online: str | None, store: str, engine: str) -> list[str]:
    """Write the project files and sample data under ``root``; return the paths written."""
    name = root.name
    (root / "data").mkdir(parents=True, exist_ok=True)
    files = {
        "definitions.py": DEFINITIONS.format(name=name),
        "features.py": FEATURES.format(name=name),
        "mlforge.yaml": config_text(name, online=online, store=store, engine=engine),
        "README.md": README.format(name=name),
        ".gitignore": "feature_store/\n__pycache__/\n",
    }
    for rel, text in files.items():
        (root / rel).write_text(text)
    write_sample_data(root / "data")
    return [*files, "data/transactions.parquet", "data/users.parquet"]


def write_sample_data(folder: Path, *, users: int = 50, merchants: int = 8, days: int = 60, seed: int = 7) -> None:
    """Deterministic transactions and users as Parquet files."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = random.Random(seed)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    rows = []
    for _ in range(users * 20):
        moment = start + timedelta(seconds=rng.randrange(days * 86400))
        rows.append((f"u{rng.randrange(users):03d}", f"m{rng.randrange(merchants):02d}", round(rng.uniform(1, 500), 2), moment.replace(tzinfo=None)))
    rows.sort(key=lambda r: r[3])
    transactions = pa.table({
        "user_id": [r[0] for r in rows],
        "merchant_id": [r[1] for r in rows],
        "amount": pa.array([r[2] for r in rows], pa.float64()),
        "event_time": pa.array([r[3] for r in rows], pa.timestamp("us")),
    })
    pq.write_table(transactions, folder / "transactions.parquet")
    countries = ["DE", "FR", "NL", "US", "GB"]
    profiles = pa.table({
        "user_id": [f"u{i:03d}" for i in range(users)],
        "country": [rng.choice(countries) for _ in range(users)],
        "signup_date": pa.array([(start - timedelta(days=rng.randrange(400))).date() for _ in range(users)], pa.date32()),
    })
    pq.write_table(profiles, folder / "users.parquet")
