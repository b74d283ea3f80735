"""The quickstart project: DuckDB engine, local versioned store."""

import features

import mlforge as mlf

defs = mlf.Definitions(
    name="quickstart",
    features=[features],
    offline_store=mlf.LocalStore("feature_store"),
    engine="duckdb",
)
