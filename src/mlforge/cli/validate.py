"""``mlforge validate``."""

from __future__ import annotations

from typing import Annotated

from cyclopts import Parameter

from mlforge.cli.common import DEFAULT, Common, Format, err, load, out, render
from mlforge.plugins import EngineName


def validate(
    *,
    features: Annotated[str | None, Parameter(name=["--features", "-f"])] = None,
    engine: EngineName | None = None,
    format: Format = "table",
    common: Common = DEFAULT,
) -> int:
    """Run feature functions and their validators without writing anything.

    Exit 0 when every feature passes, 1 when any fails.

    Parameters
    ----------
    features
        Comma-separated feature names (default: all).
    engine
        Engine to run on (overrides MLFORGE_ENGINE and the profile).
    format
        table for people, json for machines.
    """
    defs = load(common)
    report = defs.validate(features, engine=engine)
    rows = [[name, "ok" if message == "ok" else "failed", "" if message == "ok" else message] for name, message in report.items()]
    render(None, ["feature", "status", "problem"], rows, format)
    failed = sum(1 for _, status, _ in rows if status == "failed")
    if format == "table":
        out().print(f"{len(rows) - failed} passed, {failed} failed", highlight=False)
        from rich.markup import escape

        for name, status, problem in rows:
            if status == "failed":
                err().print(f"[red]error[/]: {escape(name)}: {escape(problem)}", highlight=False)
    return 1 if failed else 0
