"""The flights project: DuckDB, a local versioned store, and an in-process online store."""

import features

import mlforge as mlf

defs = mlf.Definitions(
    name="flights",
    features=[features],
    offline_store=mlf.LocalStore("feature_store"),
    online_store=mlf.MemoryStore(),
    engine="duckdb",
)
