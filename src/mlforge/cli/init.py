"""``mlforge init``: a new project that builds as soon as it is created."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from mlforge.cli.common import err, out
from mlforge.errors import ConfigError
from mlforge.plugins import EngineName

Online = Literal["redis", "valkey", "dynamodb", "databricks"]
Store = Literal["local", "s3", "gcs", "unity-catalog"]


def init(name: str, *, online: Online | None = None, store: Store = "local", engine: EngineName = "duckdb", verbose: bool = False) -> int:
    """Create a new project with sample data that builds immediately.

    The ``dev`` profile (the default) always uses a local store so that
    ``cd NAME && mlforge build`` works at once; ``--store`` and ``--online`` fill in the
    ``prod`` profile, whose settings come from environment variables.

    Parameters
    ----------
    name
        Project folder to create (also the project name).
    online
        Online store for the prod profile.
    store
        Offline store for the prod profile.
    engine
        Engine of both profiles.
    verbose
        Show debug logs and tracebacks.
    """
    from mlforge.cli.templates import write_project
    from mlforge.definitions.names import check_name

    if not name.strip():
        raise ConfigError("the project name is empty", where="mlforge init NAME", fix="e.g. `mlforge init shop`; `mlforge init .` makes the project in the current folder")
    root = Path(name)
    check_name(root.resolve().name, kind="project")  # before the file system is asked (a name too long for it, E4)
    if root.exists() and not root.is_dir():
        raise ConfigError(f"{root} already exists and is a file", where="mlforge init", fix="choose another name or remove the file")
    if root.exists() and any(root.iterdir()):
        raise ConfigError(f"{root} already exists and is not empty", where="mlforge init", fix="choose another name or remove the folder")
    written = write_project(root.resolve(), online=online, store=store, engine=engine)
    err().print(f"created project [bold]{root.resolve().name}[/] in {root.resolve()}", highlight=False)
    for path in written:
        out().print(f"  {path}", highlight=False)
    err().print(f"next: cd {name} && mlforge build", highlight=False)
    return 0
