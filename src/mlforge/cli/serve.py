"""``mlforge serve``."""

from __future__ import annotations

import os
from typing import Annotated, Literal

from cyclopts import Parameter

from mlforge.cli.common import DEFAULT, Common, locate


def serve(
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: int = 1,
    token: Annotated[str | None, Parameter(env_var="MLFORGE_SERVE_TOKEN")] = None,
    max_batch: int | None = None,
    log_level: Literal["critical", "error", "warning", "info", "debug"] = "info",
    model: Annotated[list[str] | None, Parameter(name="--model")] = None,
    common: Common = DEFAULT,
) -> int:
    """Serve online features over HTTP (health, feature list, lookups, feature sets, models, metrics).

    The start-up line says what is served. With an in-process memory store (KIND memory)
    the latest built version of every feature is loaded into the server process first;
    such a store cannot be shared, so it refuses more than one worker.

    Parameters
    ----------
    host
        Interface to listen on.
    port
        Port to listen on.
    workers
        Worker processes; each loads the project itself.
    token
        Require this bearer token on every request (env MLFORGE_SERVE_TOKEN).
    max_batch
        Most entities per batch request (default 1000, env MLFORGE_SERVE_MAX_BATCH); more is answered with 413.
    log_level
        The server's log level.
    model
        Serve a model logged with mlf.mlflow.log_model(..., training_set=...) as NAME=URI (e.g. delays=runs:/<run_id>/model) at POST /models/NAME/predict; repeat for more. MLflow finds the URI through MLFLOW_TRACKING_URI.
    """
    from mlforge.errors import ConfigError

    if not 0 < port < 65536:
        raise ConfigError(f"port {port} is out of range", where="--port", fix="use 1-65535")
    if workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {workers}", where="--workers", fix="e.g. --workers 2")
    if max_batch is not None and max_batch < 1:
        raise ConfigError(f"--max-batch must be at least 1, got {max_batch}", where="--max-batch", fix="e.g. --max-batch 500")
    from mlforge.loader import load_definitions
    from mlforge.serve import given_token, run

    token = given_token(token, "--token (or MLFORGE_SERVE_TOKEN)")  # exit 2 before loading

    models = None
    if model:
        from mlforge.serve import parse_models

        models = parse_models(model)  # contract E2: a bad --model is exit 2 before loading

    path, profile = locate(common)
    os.chdir(path.parent)
    defs = load_definitions(path, profile=profile)
    run(defs, host=host, port=port, workers=workers, token=token, target=str(path), profile=profile, max_batch=max_batch, log_level=log_level, announce=_announce, models=models)
    return 0


def _announce(line: str) -> None:
    from mlforge.cli.common import err

    err().print(f"mlforge serve: {line}", highlight=False, markup=False)
