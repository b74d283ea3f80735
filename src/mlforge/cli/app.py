"""The cyclopts application and the one place where errors become exit codes (E2)."""

from __future__ import annotations

import logging
import signal
import sys
import threading
import traceback
from collections.abc import Sequence
from typing import Any

from cyclopts import App, Parameter
from cyclopts.exceptions import CycloptsError

from mlforge import __version__
from mlforge.cli import COMMANDS
from mlforge.cli.common import piped_console
from mlforge.errors import MlforgeError, redact

#: Exit codes (contract E2).
OK, FAILED, USAGE = 0, 1, 2


def make_app() -> App:
    """The ``mlforge`` app, each command imported only when it runs."""
    app = App(
        name="mlforge",
        help="mlforge: declare features in Python, build them on DuckDB, Polars or PySpark, "
        "store them versioned and serve them point-in-time correct.",
        version=f"mlforge {__version__}",
        version_flags=["--version"],
        help_format="plaintext",
        default_parameter=Parameter(negative=()),
        console=piped_console(),  # `mlforge build --help | head -1` is no failed build
    )
    for name, (import_path, summary) in COMMANDS.items():
        app.command(import_path, name=name, help=summary)
    return app


_GLOBAL_FLAGS = ("--verbose", "-v")
_GLOBAL_OPTIONS = ("--profile", "--target")


def hoist_global_options(tokens: Sequence[str]) -> list[str]:
    """Accept global options before the command too: ``mlforge -v --profile p build``
    is ``mlforge build -v --profile p``.

    >>> hoist_global_options(["-v", "--profile", "p", "list", "features"])
    ['list', 'features', '-v', '--profile', 'p']
    """
    tokens = list(tokens)
    leading: list[str] = []
    while tokens:
        head = tokens[0]
        if head in _GLOBAL_FLAGS or any(head.startswith(f"{o}=") for o in _GLOBAL_OPTIONS):
            leading.append(tokens.pop(0))
        elif head in _GLOBAL_OPTIONS and len(tokens) > 1:
            leading += [tokens.pop(0), tokens.pop(0)]
        else:
            break
    if not leading:
        return tokens
    if "--" in tokens:
        cut = tokens.index("--")
        return [*tokens[:cut], *leading, *tokens[cut:]]
    return [*tokens, *leading]


def _wants_verbose(tokens: Sequence[str]) -> bool:
    for token in tokens:
        if token == "--":
            return False
        if token in ("--verbose", "-v"):
            return True
    return False


#: Exit code of a command stopped by Ctrl-C or SIGTERM (128 + SIGINT, as shells report it).
INTERRUPTED = 130


def run(tokens: Sequence[str]) -> int:
    """Run a command line; return its exit code. Prints one message per failure, with the
    traceback only under ``--verbose`` (contract E2)."""
    tokens = hoist_global_options(tokens)
    verbose = _wants_verbose(tokens)
    _configure_logging(verbose)
    app = make_app()
    _stop_on_sigterm()
    try:
        return _run(app, tokens, verbose)
    finally:
        from mlforge.cli.common import close_loaded

        close_loaded()


def _run(app: App, tokens: Sequence[str], verbose: bool) -> int:
    try:
        result = app(list(tokens), exit_on_error=False, print_error=False, result_action="return_value")
    except CycloptsError as exc:  # contract E2: bad arguments exit 2
        _error(_cyclopts_message(exc), verbose, exc)
        return USAGE
    except MlforgeError as exc:
        if exc.where is None:  # the command itself is where the problem showed up
            exc.locate(f"`{command_line(tokens)}`")
        _error(str(exc), verbose, exc)
        return exc.exit_code
    except KeyboardInterrupt:
        _error("interrupted: nothing was published", False, None)
        return INTERRUPTED
    except SystemExit as exc:
        if exc.code == INTERRUPTED:  # cyclopts turns a KeyboardInterrupt into exit 130
            _error("interrupted: nothing was published", False, None)
        return exc.code if isinstance(exc.code, int) else (OK if exc.code is None else FAILED)
    except BrokenPipeError:
        raise  # the reader of stdout left (`| head`): main() ends quietly
    except Exception as exc:  # a bug or an environment problem: still one clear line
        _error(f"unexpected error: {type(exc).__name__}: {exc}" + ("" if verbose else "\n  (run with --verbose for the traceback)"), verbose, exc)
        return FAILED
    return result if isinstance(result, int) and not isinstance(result, bool) else OK


_SECRET_OPTIONS = ("--token",)


def command_line(tokens: Sequence[str]) -> str:
    """The command as typed, for messages; the value of ``--token`` is never shown.

    >>> command_line(["serve", "--token", "s3cret", "--port", "1"])
    'mlforge serve --token *** --port 1'
    """
    import shlex

    shown: list[str] = []
    hide_next = False
    for token in tokens:
        name, eq, _ = token.partition("=")
        if hide_next:
            shown.append("***")
        elif eq and name in _SECRET_OPTIONS:
            shown.append(f"{name}=***")
        else:
            shown.append(shlex.quote(token) if token else "''")
        hide_next = token in _SECRET_OPTIONS
    return redact(" ".join(["mlforge", *shown]))


def _stop_on_sigterm() -> None:
    """SIGTERM (a scheduler stopping the job) stops a command as Ctrl-C does: staging is
    cleaned, nothing is published, exit 130."""
    if threading.current_thread() is not threading.main_thread():
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)


def _configure_logging(verbose: bool) -> None:
    """The library logs (STYLE 13); the CLI shows warnings, or everything with --verbose."""
    logger = logging.getLogger("mlforge")
    handler = next((h for h in logger.handlers if isinstance(h, _StderrHandler)), None)
    if handler is None:
        handler = _StderrHandler()
        logger.addHandler(handler)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))  # `build --log-format json` may have changed it
    logger.setLevel(logging.DEBUG if verbose else logging.WARNING)


class _StderrHandler(logging.Handler):
    """Writes to whatever ``sys.stderr`` is at the time (it may be replaced, e.g. by tests)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            print(redact(self.format(record)), file=sys.stderr)
        except Exception:  # pragma: no cover - logging must never break a command
            self.handleError(record)


def _cyclopts_message(exc: CycloptsError) -> str:
    """The parser's message, where it happened (the command) and how to fix it (its help)."""
    text = str(exc).strip() or type(exc).__name__
    command = " ".join(["mlforge", *(exc.command_chain or ())])
    return f"{text} (in the arguments of `{command}`)\n  fix: see `{command} --help`"


def _error(message: str, verbose: bool, exc: BaseException | None) -> None:
    """One message on stderr (and the traceback under --verbose), with every value read
    from the environment masked."""
    if verbose and exc is not None:
        print(redact("".join(traceback.format_exception(exc))), file=sys.stderr, end="")
    print(f"error: {redact(message)}", file=sys.stderr)
