"""Loading a user's ``definitions.py``: find it, import it, return its one ``Definitions``.

The file is found from ``--target`` (a file or a directory) or by walking up from the
current directory. Errors raised while importing it are shown with the user's own frames
(file, line, code), never with mlforge's or importlib's.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlforge.errors import ConfigError, DefinitionError, MlforgeError, ProfileError

if TYPE_CHECKING:
    from mlforge.project import Definitions

DEFINITIONS_FILE = "definitions.py"
_PACKAGE_DIR = str(Path(__file__).resolve().parent)
#: Folders of definitions files imported in this process; their modules are forgotten
#: before the next import so two projects never share a stale ``features`` module.
_LOADED_ROOTS: list[str] = []


def find_definitions(target: str | os.PathLike[str] | None = None, start: Path | None = None) -> Path:
    """The ``definitions.py`` to load: ``target`` (file or folder), else the nearest one
    in the current directory or a parent."""
    if target is not None:
        path = Path(target).expanduser()
        if path.is_dir():
            path = path / DEFINITIONS_FILE
        if not path.is_file():
            raise ConfigError(f"definitions file {path} does not exist", where="--target", fix="point --target at a definitions.py or the folder holding it")
        if path.suffix != ".py":
            raise ConfigError(f"definitions file {path} is not a Python file", where="--target", fix="point --target at a .py file")
        return path.resolve()
    here = (start or Path.cwd()).resolve()
    for folder in [here, *here.parents]:
        candidate = folder / DEFINITIONS_FILE
        if candidate.is_file():
            return candidate
    raise ConfigError(
        f"no {DEFINITIONS_FILE} found in {here} or its parents",
        where=str(here),
        fix="run inside an mlforge project, pass --target PATH, or create one with `mlforge init NAME`",
    )


def load_definitions(target: str | os.PathLike[str] | None = None, *, profile: str | None = None) -> Definitions:
    """Import the project's definitions file and return its single ``Definitions``.

    When ``profile`` is given (the ``--profile`` flag), it is the profile in use while the
    file is imported and its stores and engine replace those the file set: a profile asked
    for on the command line is the more specific choice.
    """
    path = find_definitions(target)
    previous = os.environ.get("MLFORGE_PROFILE")
    if profile:
        os.environ["MLFORGE_PROFILE"] = profile
    try:
        module = _import(path)
    finally:
        if profile:
            _restore("MLFORGE_PROFILE", previous)
    defs = _single_definitions(module, path)
    if profile or os.environ.get("MLFORGE_PROFILE"):
        _apply_profile(defs, profile)
    return defs


def _restore(var: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(var, None)
    else:
        os.environ[var] = value


def _apply_profile(defs: Any, profile: str | None) -> None:
    from mlforge.config import resolve_profile

    resolved = resolve_profile(profile)
    if resolved.offline_store is not None:
        defs.offline_store = resolved.offline_store
        defs.origins["offline_store"] = resolved.origin.get("offline_store", "profile")
    if resolved.online_store is not None:
        defs.online_store = resolved.online_store
        defs.origins["online_store"] = resolved.origin.get("online_store", "profile")
    if resolved.engine is not None:
        defs.engine_spec = resolved.engine
        defs.origins["engine"] = resolved.origin.get("engine", "profile")
    defs.profile = resolved.name
    defs.profile_settings = resolved


def _import(path: Path) -> Any:
    root = str(path.parent)
    for previous in [*_LOADED_ROOTS, root]:
        _forget_modules_under(previous)
        while previous in sys.path:
            sys.path.remove(previous)
    _LOADED_ROOTS[:] = [root]
    sys.path.insert(0, root)
    name = f"_mlforge_user_definitions_{abs(hash(str(path)))}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:  # pragma: no cover - only for odd files
        raise ConfigError(f"cannot import {path}", fix="check that it is a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except SyntaxError as exc:
        sys.modules.pop(name, None)
        raise DefinitionError(
            f"syntax error: {exc.msg}\n{_syntax_excerpt(exc)}".rstrip(),
            where=f"{exc.filename}:{exc.lineno}",
            fix="fix the Python syntax",
        ) from None
    except MlforgeError as exc:
        sys.modules.pop(name, None)
        frame = _last_user_frame(exc)
        # A problem of mlforge.yaml is at its line there, not where Definitions() was called.
        if frame is not None and not isinstance(exc, ProfileError) and (exc.where is None or frame not in exc.where):
            exc.locate(f"{exc.where}, {frame}" if exc.where else frame)
        raise
    except SystemExit as exc:  # exit() at import: a bad definition (exit 2, E2), not the command's own exit code
        sys.modules.pop(name, None)
        raise DefinitionError(
            f"importing {path} called exit({exc.code!r})",
            where=_last_user_frame(exc) or str(path),
            fix="do not call sys.exit() or exit() in the project's modules; raise an exception with a message instead",
        ) from None
    except Exception as exc:
        sys.modules.pop(name, None)
        error = DefinitionError(
            f"importing {path} failed: {type(exc).__name__}: {exc}\n{_user_traceback(exc)}".rstrip(),
            where=_last_user_frame(exc) or str(path),
            fix="fix the error at the innermost frame shown above",
        )
        raise error from exc
    return module


def _forget_modules_under(root: str) -> None:
    """Drop modules imported from ``root`` earlier, so a reload sees the current files."""
    prefix = root.rstrip(os.sep) + os.sep
    # Installed packages and the running script are never the user's modules, even when a
    # virtualenv lives inside the project (dropping them breaks e.g. duckdb's C extension).
    installed = tuple(p.rstrip(os.sep) + os.sep for p in {sys.prefix, sys.base_prefix, sys.exec_prefix})
    for key, module in list(sys.modules.items()):
        file = getattr(module, "__file__", None)
        if key == "__main__" or not file or file.startswith(installed) or file.startswith(_PACKAGE_DIR):
            continue
        if file.startswith(prefix):
            del sys.modules[key]


def _is_ours(filename: str) -> bool:
    """Frames of mlforge, of the import machinery and of generated code (a dataclass's
    ``__init__`` is ``<string>``): never where the user's mistake is."""
    return filename.startswith(_PACKAGE_DIR) or filename.startswith("<") or "importlib" in filename


def _user_traceback(exc: BaseException) -> str:
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if not _is_ours(f.filename)]
    return "".join(traceback.format_list(frames))


def _last_user_frame(exc: BaseException) -> str | None:
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if not _is_ours(f.filename)]
    return f"{frames[-1].filename}:{frames[-1].lineno}" if frames else None


def _syntax_excerpt(exc: SyntaxError) -> str:
    if not exc.text:
        return ""
    line = exc.text.rstrip("\n")
    caret = " " * max((exc.offset or 1) - 1, 0) + "^"
    return f"    {line}\n    {caret}"


def _single_definitions(module: Any, path: Path) -> Definitions:
    from mlforge.project import Definitions

    found: dict[int, list[str]] = {}
    objects: dict[int, Definitions] = {}
    for attr, value in vars(module).items():
        if isinstance(value, Definitions):
            found.setdefault(id(value), []).append(attr)
            objects[id(value)] = value
    if not found:
        raise ConfigError(
            f"{path.name} defines no Definitions object",
            where=str(path),
            fix="add e.g. `defs = mlf.Definitions(name='my-project', features=[features])`",
        )
    if len(found) > 1:
        names = ", ".join(names[0] for names in found.values())
        raise ConfigError(
            f"{path.name} defines {len(found)} Definitions objects ({names}); mlforge needs exactly one",
            where=str(path),
            fix="keep one Definitions per project (or pass --target to another file)",
        )
    return next(iter(objects.values()))
