"""The errors mlforge raises.

Every error derives from :class:`MlforgeError` and carries three parts: *what* is wrong,
*where* (feature, column, file, line) and *how* to fix it. The CLI prints ``str(error)``
without a traceback and maps the class to an exit code (``exit_code``).

Values read from the environment through ``${oc.env:VAR}`` in ``mlforge.yaml`` may be
secrets: :func:`hide` records them and every message of an ``MlforgeError`` (and whatever
the CLI, the server and the CLI's log handler print, through :func:`redact`) shows ``***``
in their place.

::

    MlforgeError
    ├── DefinitionError        bad feature / entity / source / metric declarations   (exit 2)
    │   └── DefinitionErrors   several definition problems reported together         (exit 2)
    ├── ConfigError            mlforge.yaml, profiles, settings, CLI arguments       (exit 2)
    │   └── ProfileError       a problem at a line of mlforge.yaml                 (exit 2)
    ├── EngineError            an engine cannot run a construct, or is missing      (exit 2)
    ├── SourceError            a source file/table is missing or unreadable         (exit 1)
    ├── BuildError             a feature failed to build                           (exit 1)
    │   └── ValidationFailed   validators rejected a feature's output               (exit 1)
    ├── StoreError             offline store read/write/publish problems           (exit 1)
    │   ├── VersionNotFound    a requested version does not exist                  (exit 2)
    │   ├── ConcurrentPublish  another build published first                       (exit 1)
    │   └── CorruptVersion     a version's files differ from its record (S7)        (exit 1)
    ├── RetrievalError         bad retrieval request (features, columns, keys)      (exit 2)
    └── OnlineStoreError       an online store is unreachable or misbehaves         (exit 1)
        └── PublishOnlyError   the store is filled by publishing tables, not rows   (exit 1)
"""

from __future__ import annotations

import functools
import importlib.metadata
import os
import re
import sys
import warnings
from pathlib import Path

#: What a hidden value is printed as.
MASK = "***"
#: Values read from the environment in this process (see :func:`hide`).
_HIDDEN: set[str] = set()
#: Values this short are masked only where they stand alone (``"1"`` must not garble "10").
_SHORT = 4
#: The ends of relative paths read from the environment, masked only as whole path parts.
_HIDDEN_PARTS: set[str] = set()


def hide(value: str) -> None:
    """Never print ``value``: messages show :data:`MASK` in its place from now on.

    >>> hide("s3cr3t-token")
    >>> redact("password s3cr3t-token refused")
    'password *** refused'
    """
    if not value:
        return
    _HIDDEN.add(value)
    escaped = repr(value)[1:-1]  # how it appears inside a repr() of a string
    if escaped != value:
        _HIDDEN.add(escaped)
    # A relative path is shown resolved ('./s3cr3t' as '/home/me/project/s3cr3t'): hide
    # what stays of it once its leading './' and '../' are gone, as a path part ('/s3cr3t'),
    # so that './data' does not mask every word 'data'.
    inner = value
    while inner.startswith(("./", "../")):
        inner = inner.split("/", 1)[1]
    inner = inner.rstrip("/")
    if inner and inner != value:
        _HIDDEN_PARTS.add("/" + inner)


def redact(text: str) -> str:
    """``text`` with every hidden value replaced by :data:`MASK`."""
    if not text or not (_HIDDEN or _HIDDEN_PARTS):
        return text
    for part in sorted(_HIDDEN_PARTS, key=len, reverse=True):  # '/data' in '/x/data/y', not in '/x/database'
        if part in text:
            text = re.sub(rf"{re.escape(part)}(?=$|[/\\'\"\s),;:])", "/" + MASK, text)
    for value in sorted(_HIDDEN, key=len, reverse=True):
        if len(value) >= _SHORT:
            text = text.replace(value, MASK)
        elif value in text:
            text = re.sub(rf"(?<![A-Za-z0-9]){re.escape(value)}(?![A-Za-z0-9])", MASK, text)
    return text


class MlforgeDeprecationWarning(DeprecationWarning, FutureWarning):
    """A deprecated mlforge API (e.g. ``Rolling``). It is a ``DeprecationWarning``, as the
    contract says, and a ``FutureWarning``, and mlforge shows it by default: Python's default
    filters hide plain ``DeprecationWarning`` outside ``__main__``, so users declaring features
    in an imported module, or running ``mlforge build``, would never see it. Filters given with
    ``-W`` or ``PYTHONWARNINGS`` are left alone."""


if not sys.warnoptions:
    warnings.filterwarnings("default", category=MlforgeDeprecationWarning)


def caller_stacklevel() -> int:
    """The ``stacklevel`` of a warning that points at the user's call, however many mlforge
    frames lie between it and the caller of this function."""
    package = os.path.dirname(os.path.abspath(__file__))
    frame, level = sys._getframe(1), 1
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(package + os.sep):
        frame, level = frame.f_back, level + 1
    return level


class UnpublishedFeature(UserWarning):
    """An online read of a feature built offline of which the online store holds nothing:
    every entity answers as unknown (O2), not with what training reads."""


class MlforgeError(Exception):
    """Base class of every error mlforge raises."""

    exit_code: int = 1

    def __init__(self, what: str, *, where: str | None = None, fix: str | None = None):
        self.what = redact(what)
        self.where = redact(where) if where else where
        self.fix = redact(fix) if fix else fix
        super().__init__(self._render())

    def locate(self, where: str) -> None:
        """Set (or extend) where the problem is, once it is known higher up."""
        self.where = redact(where)
        self.args = (self._render(),)

    def amend(self, more: str, fix: str) -> None:
        """Add what else went wrong while handling this error, and the fix that covers both."""
        self.what = f"{self.what}; {redact(more)}"
        self.fix = redact(fix)
        self.args = (self._render(),)

    def _render(self) -> str:
        text = self.what
        if self.where:  # after the first line: a message may go on with a traceback or excerpt
            first, newline, rest = text.partition("\n")
            text = f"{first} (in {self.where}){newline}{rest}"
        if self.fix:
            text = f"{text}\n  fix: {self.fix}"
        return text


class DefinitionError(MlforgeError):
    """A feature, entity, source or metric declaration is invalid."""

    exit_code = 2


class DefinitionErrors(DefinitionError):
    """Several definition problems, collected and reported together."""

    def __init__(self, errors: list[DefinitionError]):
        self.errors = list(errors)
        lines = [f"{len(self.errors)} problems in the definitions:"]
        lines += [f"- {e!s}" for e in self.errors]
        MlforgeError.__init__(self, "\n".join(lines))

    @staticmethod
    def raise_if_any(problems: list[DefinitionError]) -> None:
        """Raise the one problem as it is, or several together; nothing if none."""
        if len(problems) == 1:
            raise problems[0]
        if problems:
            raise DefinitionErrors(problems)


class ConfigError(MlforgeError):
    """Configuration, profile or command-line arguments are invalid."""

    exit_code = 2


class ProfileError(ConfigError):
    """A problem in ``mlforge.yaml``; ``where`` names the file, the line and the key."""


class EngineError(MlforgeError):
    """An engine is unavailable or cannot run a construct."""

    exit_code = 2


class SourceError(MlforgeError):
    """A source is missing, unreadable or lacks a column."""

    exit_code = 1


class BuildError(MlforgeError):
    """A feature failed to build."""

    exit_code = 1


class ValidationFailed(BuildError):
    """Validators rejected the output of a feature function."""


class StoreError(MlforgeError):
    """The offline store could not read, write or publish."""

    exit_code = 1


class VersionNotFound(StoreError):
    """A requested feature version does not exist."""

    exit_code = 2


class ConcurrentPublish(StoreError):
    """Another build published the same version first."""


class CorruptVersion(StoreError):
    """A version's data file is missing, truncated or replaced: it differs from the size
    or row count the version's record lists (S7)."""


class RetrievalError(MlforgeError):
    """A retrieval request is malformed (unknown feature, column, key...)."""

    exit_code = 2


class OnlineStoreError(MlforgeError):
    """An online store is unreachable or returned an error."""

    exit_code = 1
    #: The store's own error code, when it gave one (e.g. DynamoDB's ``ResourceNotFoundException``).
    code: str | None = None


class PublishOnlyError(OnlineStoreError):
    """The online store is filled by publishing a table, not by writing rows."""


def missing_extra(module: str, extra: str, *, where: str | None = None) -> EngineError:
    """The error for an optional dependency that is not installed, with the command that
    installs it into this installation of mlforge (:func:`install_command`)."""
    return EngineError(
        f"the optional dependency '{module}' is not installed",
        where=where,
        fix=install_command(extra),
    )


@functools.cache
def install_command(extra: str) -> str:
    """The ``pip install`` line that adds ``extra`` to the mlforge that is running.

    The name ``mlforge`` on PyPI belongs to an unrelated project, so a bare
    ``pip install`` of ``mlforge`` with an extra would install something else. The command names what
    installed this package: the source checkout it runs from (its ``pyproject.toml``), or
    the local directory or VCS URL pip recorded, or else the distribution's own name.
    """
    checkout = Path(__file__).resolve().parents[2]
    name = _project_name(checkout / "pyproject.toml")
    if name is not None:
        return f"pip install -e '{checkout}[{extra}]'   # {name}, from the source checkout this runs from"
    dist = _distribution()
    if dist is None:
        return f"pip install the mlforge distribution you installed, with the extra [{extra}]"
    origin = _direct_url(dist)
    dist_name = dist.metadata["Name"]
    if origin.get("dir_info") is not None and str(origin.get("url", "")).startswith("file://"):
        path = str(origin["url"])[len("file://"):]
        editable = "-e " if origin["dir_info"].get("editable") else ""
        return f"pip install {editable}'{path}[{extra}]'"
    if origin.get("vcs_info") is not None:
        return f"pip install '{dist_name}[{extra}] @ {origin['vcs_info'].get('vcs', 'git')}+{origin['url']}'"
    return f"pip install '{dist_name}[{extra}]'"


def _project_name(pyproject: Path) -> str | None:
    """``[project] name`` of a source checkout that holds this package, else ``None``."""
    if not pyproject.is_file() or not (pyproject.parent / "src" / "mlforge" / "errors.py").is_file():
        return None
    import tomllib

    try:
        return str(tomllib.loads(pyproject.read_text())["project"]["name"])
    except (OSError, KeyError, tomllib.TOMLDecodeError):
        return None


def _distribution() -> importlib.metadata.Distribution | None:
    from importlib import metadata

    # An editable install maps no top-level package; its distribution carries the project name.
    names = metadata.packages_distributions().get("mlforge") or ["mlforge"]
    for name in names:
        try:
            return metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
    return None


def _direct_url(dist: importlib.metadata.Distribution) -> dict:
    import json

    text = dist.read_text("direct_url.json")
    try:
        return json.loads(text) if text else {}
    except ValueError:
        return {}
