"""What every command shares: global options, loading the project, and rendering."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from cyclopts import Parameter

if TYPE_CHECKING:
    from rich.console import Console

    from mlforge.project import Definitions

Format = Literal["table", "json"]


@Parameter(name="*", group="Global options")
@dataclass(frozen=True)
class Common:
    """Options every command accepts."""

    verbose: Annotated[bool, Parameter(name=["--verbose", "-v"], negative="")] = False
    "Show debug logs and tracebacks."

    profile: Annotated[str | None, Parameter(name="--profile")] = None
    "Profile of mlforge.yaml to use (env MLFORGE_PROFILE)."

    target: Annotated[Path | None, Parameter(name="--target")] = None
    "definitions.py, or the folder holding it (env MLFORGE_TARGET)."


DEFAULT = Common()


def locate(common: Common) -> tuple[Path, str | None]:
    """The definitions file and the profile asked for (flag > ``MLFORGE_*`` env)."""
    from mlforge.config import env_settings
    from mlforge.loader import find_definitions

    check_profile_flag(common)
    config = os.environ.get("MLFORGE_CONFIG")
    if config and not os.path.isabs(config):  # read from where the command runs, before any chdir to the project
        os.environ["MLFORGE_CONFIG"] = os.path.abspath(config)
    settings = env_settings(profile=common.profile, target=common.target)
    return find_definitions(settings.target), settings.profile


def check_profile_flag(common: Common) -> None:
    """An empty ``--profile`` is a mistake, not the default profile."""
    if common.profile is not None and not common.profile.strip():
        from mlforge.errors import ConfigError

        raise ConfigError("--profile is empty", where="--profile", fix="name a profile of mlforge.yaml (`mlforge profile` lists them), or leave --profile out for the default")


def in_process_note(store: Any) -> None:
    """After an online publish from the CLI: an in-process store's values end with the command."""
    if store is not None and store.capabilities.in_process:
        err().print(
            f"note: the online store is in-process ({type(store).__name__}): what --online wrote ends with this command; "
            "`mlforge serve` fills it from the offline store when it starts",
            highlight=False,
        )


def check_known_feature(defs: Definitions, feature: str) -> list[str]:
    """The stored versions of ``feature``; a feature neither defined nor stored is unknown
    (a feature removed from the definitions keeps its stored versions)."""
    from mlforge.errors import ConfigError

    found = defs.list_versions(feature)
    if not found and feature not in defs.features:
        raise ConfigError(f"unknown feature {feature!r}", fix=f"available: {', '.join(sorted(defs.features)) or 'none'}")
    return found


def load(common: Common) -> Definitions:
    """The project's ``Definitions``, with the requested profile applied.

    The working directory becomes the project's folder, so relative source and store paths
    mean the same from anywhere inside the project.
    """
    from mlforge.loader import load_definitions

    path, profile = locate(common)
    os.chdir(path.parent)
    with contextlib.redirect_stdout(sys.stderr):  # what the project's modules print is not the result (a pipe holds only that)
        defs = load_definitions(path, profile=profile)
    _LOADED.append(defs)
    return defs


#: Every project a command loaded; :func:`close_loaded` releases their engines and stores.
_LOADED: list[Definitions] = []


def close_loaded() -> None:
    """Close what the command loaded: an owned Spark session stops here, while the
    interpreter is whole, rather than in its shutdown."""
    while _LOADED:
        defs = _LOADED.pop()
        try:
            defs.close()
        except Exception:  # closing must never change a command's outcome
            import logging

            logging.getLogger(__name__).debug("closing the project failed", exc_info=True)


# -- output ----------------------------------------------------------------------------
_CONSOLES: dict[str, Any] = {}


def out() -> Console:
    """The console for results (stdout): plain text when piped."""
    if "out" not in _CONSOLES or _CONSOLES["out"].file is not sys.stdout:
        _CONSOLES["out"] = piped_console(file=sys.stdout, soft_wrap=False, width=None if sys.stdout.isatty() else 200)
    return _CONSOLES["out"]


def piped_console(**options: Any) -> Console:
    """A rich console whose reader may go away (``mlforge ... | head``): rich would exit 1,
    the code of a failed build; this one raises ``BrokenPipeError`` for ``main`` to end
    with the shell's code for it."""
    return _piped_console_class()(**options)


@functools.cache
def _piped_console_class() -> type[Console]:
    import errno

    from rich.console import Console

    class PipedConsole(Console):
        def on_broken_pipe(self) -> None:
            self.quiet = True
            raise BrokenPipeError(errno.EPIPE, "the reader of stdout went away")

    return PipedConsole


def err() -> Console:
    """The console for progress and messages (stderr)."""
    from rich.console import Console

    if "err" not in _CONSOLES or _CONSOLES["err"].file is not sys.stderr:
        _CONSOLES["err"] = Console(file=sys.stderr, soft_wrap=True)
    return _CONSOLES["err"]


def print_json(payload: Any) -> None:
    sys.stdout.write(json.dumps(payload, indent=2, default=str) + "\n")


def table(title: str | None, columns: list[str], rows: list[list[Any]]) -> Any:
    from rich.table import Table

    grid = Table(title=title, title_justify="left", show_edge=False, header_style="bold")
    for column in columns:
        grid.add_column(column, overflow="fold")
    for row in rows:
        grid.add_row(*(_cell(v) for v in row))
    return grid


def _cell(value: Any) -> str:
    """A value as table text; brackets are text, never rich markup ("mlforge[polars]")."""
    from rich.markup import escape

    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return escape(", ".join(str(v) for v in value))
    return escape(str(value))


def count(value: int | None) -> str:
    """A count with thousands separators; ``-`` when unknown.

    >>> count(1234567), count(None)
    ('1,234,567', '-')
    """
    return "-" if value is None else f"{value:,}"


def instant(value: Any) -> str:
    """An instant as ISO 8601 in UTC: epoch seconds (a stored watermark) or a datetime.

    >>> instant(1772409600)
    '2026-03-02T00:00:00Z'
    """
    from datetime import UTC, datetime

    if value is None:
        return "-"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = datetime.fromtimestamp(value, tz=UTC)
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return value
    if isinstance(value, datetime):
        value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        return value.isoformat().replace("+00:00", "Z")
    return str(value)


def source_format(fmt: Any) -> str:
    """A source format by name, with the options that differ from the defaults.

    >>> from mlforge.definitions.source import CSVFormat, ParquetFormat
    >>> source_format(ParquetFormat()), source_format(CSVFormat(delimiter=";")), source_format(None)
    ('parquet', "csv (delimiter=';')", 'table')
    """
    from dataclasses import fields

    if fmt is None:
        return "table"
    name = type(fmt).__name__.removesuffix("Format").lower()
    options = [f"{f.name}={getattr(fmt, f.name)!r}" for f in fields(fmt) if getattr(fmt, f.name) != f.default]
    return f"{name} ({', '.join(options)})" if options else name


def render(title: str | None, columns: list[str], rows: list[list[Any]], fmt: Format) -> None:
    """Rows as a table, or as a JSON list of objects."""
    if fmt == "json":
        print_json([dict(zip(columns, row, strict=True)) for row in rows])
    else:
        out().print(table(title, columns, rows))
