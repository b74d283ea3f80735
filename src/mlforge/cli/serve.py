"""``mlforge serve``."""

from __future__ import annotations

from typing import Annotated

from cyclopts import Parameter

from mlforge.cli.common import DEFAULT, Common, load


def serve(
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: int = 1,
    token: Annotated[str | None, Parameter(env_var="MLFORGE_SERVE_TOKEN")] = None,
    common: Common = DEFAULT,
) -> int:
    """Serve online features over HTTP (health, feature list, lookups, metrics).

    Parameters
    ----------
    host
        Interface to listen on.
    port
        Port to listen on.
    workers
        Worker processes.
    token
        Require this bearer token on every request (env MLFORGE_SERVE_TOKEN).
    """
    from mlforge.errors import ConfigError

    if not 0 < port < 65536:
        raise ConfigError(f"port {port} is out of range", where="--port", fix="use 1-65535")
    if workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {workers}", where="--workers", fix="e.g. --workers 2")
    from mlforge.serve import run

    defs = load(common)
    run(defs, host=host, port=port, workers=workers, token=token)
    return 0
