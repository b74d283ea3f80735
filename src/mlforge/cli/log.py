"""``mlforge log mlflow``: record the feature versions a model uses in an MLflow run."""

from __future__ import annotations

from typing import Annotated

from cyclopts import App, Parameter

from mlforge.cli.common import (
    DEFAULT,
    Common,
    Format,
    check_known_feature,
    load,
    out,
    print_json,
    table,
)
from mlforge.errors import ConfigError

app = App(name="log", help="Record the feature versions a model uses in an experiment tracker.", help_format="plaintext")


@app.command
def mlflow(
    *,
    run_id: Annotated[str, Parameter(name="--run-id")],
    features: Annotated[str | None, Parameter(name=["--features", "-f"])] = None,
    format: Format = "table",
    common: Common = DEFAULT,
) -> int:
    """Log feature names, versions, hashes and schemas to an MLflow run.

    The tracking server is MLflow's own setting (MLFLOW_TRACKING_URI). Needs the mlflow extra (in the mlforge repository: pip install -e '.[mlflow]').

    Parameters
    ----------
    run_id
        The MLflow run to log to.
    features
        Comma-separated feature names, name@version to pin one (default: every built feature).
    format
        table for people, json for machines.
    """
    from mlforge.integrations.mlflow import log_features_to_mlflow

    defs = load(common)
    requested = None
    if features is not None:
        requested = [tuple(f.split("@", 1)) if "@" in f else f for f in (s.strip() for s in features.split(",")) if f]
        if not requested:
            raise ConfigError("--features names no feature", where="mlforge log mlflow --features", fix="name features (comma-separated, name@version to pin one), or leave --features out to log every built feature")
        for name in requested:
            check_known_feature(defs, name[0] if isinstance(name, tuple) else name)
    record = log_features_to_mlflow(requested, run_id, defs)
    if format == "json":
        print_json(record)
    else:
        rows = [[f["name"], f["version"], f["definition_hash"][:12], f["data_hash"][:12], len(f["schema"] or {})] for f in record["features"]]
        out().print(table(f"logged to MLflow run {run_id}", ["feature", "version", "definition_hash", "data_hash", "columns"], rows))
    return 0
