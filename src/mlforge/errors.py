"""The errors mlforge raises.

Every error derives from :class:`MlforgeError` and carries three parts: *what* is wrong,
*where* (feature, column, file, line) and *how* to fix it. The CLI prints ``str(error)``
without a traceback and maps the class to an exit code (``exit_code``).

::

    MlforgeError
    ├── DefinitionError        bad feature / entity / source / metric declarations   (exit 2)
    │   └── DefinitionErrors   several definition problems reported together         (exit 2)
    ├── ConfigError            mlforge.yaml, profiles, settings, CLI arguments       (exit 2)
    ├── EngineError            an engine cannot run a construct, or is missing      (exit 2)
    ├── SourceError            a source file/table is missing or unreadable         (exit 1)
    ├── BuildError             a feature failed to build                           (exit 1)
    │   └── ValidationFailed   validators rejected a feature's output               (exit 1)
    ├── StoreError             offline store read/write/publish problems           (exit 1)
    │   ├── VersionNotFound    a requested version does not exist                  (exit 2)
    │   └── ConcurrentPublish  another build published first                       (exit 1)
    ├── RetrievalError         bad retrieval request (features, columns, keys)      (exit 2)
    └── OnlineStoreError       an online store is unreachable or misbehaves         (exit 1)
        └── PublishOnlyError   the store is filled by publishing tables, not rows   (exit 1)
"""

from __future__ import annotations


class MlforgeError(Exception):
    """Base class of every error mlforge raises."""

    exit_code: int = 1

    def __init__(self, what: str, *, where: str | None = None, fix: str | None = None):
        self.what = what
        self.where = where
        self.fix = fix
        super().__init__(self._render())

    def _render(self) -> str:
        text = self.what
        if self.where:
            text = f"{text} (in {self.where})"
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


class ConfigError(MlforgeError):
    """Configuration, profile or command-line arguments are invalid."""

    exit_code = 2


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


class RetrievalError(MlforgeError):
    """A retrieval request is malformed (unknown feature, column, key...)."""

    exit_code = 2


class OnlineStoreError(MlforgeError):
    """An online store is unreachable or returned an error."""

    exit_code = 1


class PublishOnlyError(OnlineStoreError):
    """The online store is filled by publishing a table, not by writing rows."""


def missing_extra(module: str, extra: str) -> EngineError:
    """The error for an optional dependency that is not installed."""
    return EngineError(
        f"the optional dependency '{module}' is not installed",
        fix=install_hint(extra),
    )


#: The distribution name of this package (pyproject.toml's ``[project] name``). The PyPI
#: project called ``mlforge`` is an unrelated one, so hints never send anyone there.
DISTRIBUTION = "mlforge"


def install_hint(extra: str) -> str:
    """The command that adds ``extra`` to *this* mlforge: ``pip install -e`` of the checkout
    the code runs from, else of the path pip recorded installing it from (PEP 610), else
    the distribution name, with a warning about the unrelated PyPI project."""
    import json
    from importlib import metadata
    from pathlib import Path
    from urllib.parse import unquote, urlparse

    checkout = Path(__file__).resolve().parents[2]  # src/mlforge/errors.py -> the repository
    if (checkout / "pyproject.toml").is_file():
        return f"pip install -e '{checkout}[{extra}]'"
    try:
        recorded = json.loads(metadata.distribution(DISTRIBUTION).read_text("direct_url.json") or "{}")
    except (metadata.PackageNotFoundError, ValueError):
        recorded = {}
    url = str(recorded.get("url", ""))
    if url.startswith("file://"):
        editable = "-e " if recorded.get("dir_info", {}).get("editable") else ""
        return f"pip install {editable}'{unquote(urlparse(url).path)}[{extra}]'"
    return f"pip install '{DISTRIBUTION}[{extra}]' from the index or path this mlforge came from (PyPI's 'mlforge' is another project)"
