"""The ``mlforge`` command line: thin cyclopts commands, the only place that prints.

Commands live one module per group and are imported only when run, so ``mlforge --help``
stays fast: the top-level help and ``--version`` are answered from the table below without
importing cyclopts, rich, ibis or the user's project.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

#: name -> (import path, one-line help). The single list of commands: the cyclopts app
#: registers these lazily and the fast top-level help prints them.
COMMANDS: dict[str, tuple[str, str]] = {
    "init": ("mlforge.cli.init:init", "Create a new project with sample data that builds immediately."),
    "build": ("mlforge.cli.build:build", "Build features and publish new versions where anything changed."),
    "validate": ("mlforge.cli.validate:validate", "Run feature functions and validators without writing anything."),
    "list": ("mlforge.cli.listing:app", "List features, feature sets, entities, sources or the versions of a feature."),
    "inspect": ("mlforge.cli.inspection:app", "Show one feature, feature set, entity or source in detail."),
    "diff": ("mlforge.cli.versions:diff", "Compare two versions of a feature (exit 0 same, 1 PATCH, 2 MINOR, 3 MAJOR, 4 error)."),
    "rollback": ("mlforge.cli.versions:rollback", "Point a feature's latest version at an earlier version."),
    "sync": ("mlforge.cli.versions:sync", "Rebuild missing data files of versions whose metadata is present."),
    "manifest": ("mlforge.cli.versions:manifest", "Print the project manifest (features, versions, metadata) as JSON."),
    "migrate": ("mlforge.cli.migrate:migrate", "Import a v0.7 store into versions of this format, keeping version numbers."),
    "profile": ("mlforge.cli.profile:profile", "Show the profile in use and where each setting came from."),
    "serve": ("mlforge.cli.serve:serve", "Serve online features over HTTP."),
    "log": ("mlforge.cli.log:app", "Record the feature versions a model uses in an MLflow run."),
}

GLOBAL_OPTIONS: tuple[tuple[str, str], ...] = (
    ("--verbose, -v", "Show debug logs and tracebacks (any command)."),
    ("--profile NAME", "Profile of mlforge.yaml to use (env MLFORGE_PROFILE)."),
    ("--target PATH", "definitions.py, or its folder (env MLFORGE_TARGET)."),
    ("--help, -h", "Show help (also `mlforge COMMAND --help`)."),
    ("--version", "Show the mlforge version."),
)


def fast_help() -> str:
    """The top-level help, rendered without importing cyclopts or rich."""
    width = max(len(n) for n in COMMANDS) + 2
    opt_width = max(len(o) for o, _ in GLOBAL_OPTIONS) + 2
    lines = [
        "Usage: mlforge COMMAND [OPTIONS]",
        "",
        "mlforge: declare features in Python, build them on DuckDB, Polars or PySpark,",
        "store them versioned and serve them point-in-time correct.",
        "",
        "Commands:",
        *(f"  {name:<{width}}{summary}" for name, (_, summary) in COMMANDS.items()),
        "",
        "Options:",
        *(f"  {opt:<{opt_width}}{text}" for opt, text in GLOBAL_OPTIONS),
        "",
        "Exit codes: 0 ok, 1 failed build or validation, 2 bad definitions, config or arguments.",
    ]
    return "\n".join(lines)


#: The exit code when the reader of stdout goes away (``mlforge --help | head -1``), as a
#: shell reports a command ended by SIGPIPE (128 + 13).
PIPE_CLOSED = 141


def main(argv: Sequence[str] | None = None) -> None:
    """Console entry point (``mlforge`` and ``python -m mlforge``); exits with the code."""
    tokens = list(sys.argv[1:] if argv is None else argv)
    try:
        code = _main(tokens)
        sys.stdout.flush()
    except BrokenPipeError:
        # What the command did stands; only its output has no reader left. Point stdout at
        # /dev/null so the interpreter's last flush does not fail again with a traceback.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = PIPE_CLOSED
    sys.exit(code)


def _main(tokens: list[str]) -> int:
    if tokens in ([], ["--help"], ["-h"]):
        print(fast_help())
        return 0
    if tokens == ["--version"]:
        from mlforge import __version__

        print(f"mlforge {__version__}")
        return 0
    from mlforge.cli.app import run

    return run(tokens)
