"""Profiles in ``mlforge.yaml`` and settings, with one precedence (STYLE 5):

    CLI flag  >  ``MLFORGE_*`` environment  >  ``mlforge.yaml`` profile  >  default

::

    default_profile: dev
    profiles:
      dev:
        offline_store: {KIND: local, path: ./feature_store}
        engine: duckdb
      prod:
        offline_store: {KIND: s3, bucket: "${oc.env:FEATURE_BUCKET}"}
        online_store: {KIND: redis, host: "${oc.env:REDIS_HOST,localhost}"}

``${oc.env:VAR}`` and ``${oc.env:VAR,default}`` are resolved only in the profile in use, so
a variable missing for ``prod`` never breaks ``dev``; an unclosed ``${`` is an error. Values
taken from the environment are never printed (:func:`mlforge.errors.hide`). A key given
twice in one mapping (a profile named twice, a setting twice in a profile) is an error.
Every error names the file, the line and the key (contract E1). Nothing is read at import
time.
"""

from __future__ import annotations

import importlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlforge.errors import MASK, ConfigError, MlforgeError, ProfileError, hide, install_command
from mlforge.plugins import ENGINE_NAMES, OFFLINE_KINDS, ONLINE_KINDS, EngineName, Kind

CONFIG_FILE = "mlforge.yaml"
PROFILE_KEYS: tuple[str, ...] = ("offline_store", "online_store", "engine", "description")
_ENV = re.compile(r"\$\{oc\.env:([A-Za-z_][A-Za-z0-9_]*)(?:,([^}]*))?\}")
_BAD_ENV = re.compile(r"\$\{(?!oc\.env:[A-Za-z_][A-Za-z0-9_]*(?:,[^}]*)?\})[^}]*\}")


# -- MLFORGE_* settings ------------------------------------------------------------------
@dataclass(frozen=True)
class EnvSettings:
    """What ``MLFORGE_*`` variables and CLI flags ask for (``None``: not given)."""

    profile: str | None = None
    engine: EngineName | None = None
    config: Path | None = None
    target: Path | None = None


def env_settings(**flags: Any) -> EnvSettings:
    """Settings from CLI flags (given as keyword arguments) over ``MLFORGE_*`` variables.

    Flags that are ``None`` are treated as not given, so the environment applies. With no
    flag and no ``MLFORGE_*`` variable there is nothing to validate, and pydantic-settings
    is not imported (~0.1 s of every ``Definitions`` in a fresh process otherwise).

    >>> env_settings(profile="prod").profile
    'prod'
    """
    given = {k: v for k, v in flags.items() if v is not None}
    if not given and not any(name.upper().startswith("MLFORGE_") for name in os.environ):
        return EnvSettings()
    from pydantic import ValidationError

    cls = _settings_class()
    try:
        return EnvSettings(**cls(**given).model_dump())
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            key = str(err["loc"][0]) if err.get("loc") else "?"
            source = "flag" if flags.get(key) is not None else f"MLFORGE_{key.upper()}"
            problems.append(f"{source}={err.get('input')!r}: {err['msg']}")
        raise ConfigError("invalid setting " + "; ".join(problems), where="environment / command line", fix=f"engines are {', '.join(ENGINE_NAMES)}") from None


_SETTINGS_CLASS: Any = None


def _settings_class() -> Any:
    """The pydantic-settings model, defined on first use so importing this module stays cheap."""
    global _SETTINGS_CLASS
    if _SETTINGS_CLASS is None:
        from pydantic_settings import BaseSettings, SettingsConfigDict

        class Settings(BaseSettings):
            """``MLFORGE_PROFILE``, ``MLFORGE_ENGINE``, ``MLFORGE_CONFIG``, ``MLFORGE_TARGET``."""

            model_config = SettingsConfigDict(env_prefix="MLFORGE_", extra="ignore", case_sensitive=False)

            profile: str | None = None
            engine: EngineName | None = None
            config: Path | None = None
            target: Path | None = None

        _SETTINGS_CLASS = Settings
    return _SETTINGS_CLASS


# -- mlforge.yaml --------------------------------------------------------------------------
def find_config(start: Path | None = None) -> Path | None:
    """``mlforge.yaml`` in ``start`` (default: cwd) or a parent directory."""
    here = (start or Path.cwd()).resolve()
    for folder in [here, *here.parents]:
        candidate = folder / CONFIG_FILE
        if candidate.is_file():
            return candidate
        if candidate.exists() or candidate.is_symlink():  # not skipped for a parent's file: that would be another project's stores
            what = "a directory" if candidate.is_dir() else "a link to a missing file" if candidate.is_symlink() and not candidate.exists() else "not a regular file"
            raise ConfigError(f"{candidate} is {what}, not a {CONFIG_FILE} file", where=str(candidate), fix=f"make it the project's {CONFIG_FILE}, or remove it")
    return None


def read_config(path: Path) -> tuple[dict[str, Any], Any]:
    """The parsed YAML and its node tree (for line numbers in errors)."""
    import yaml

    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}", where=str(path), fix="check the path and its permissions") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path} is not UTF-8 text (byte {exc.start}: {exc.reason})", where=str(path), fix=f"save {path.name} as UTF-8") from None
    try:
        node = yaml.compose(text)
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(exc, "problem", None) or str(exc)
        raise ProfileError(f"malformed YAML: {problem}", where=line, fix="fix the YAML syntax (indentation, colons, quotes)") from None
    if not isinstance(data, dict):
        raise ProfileError(f"{CONFIG_FILE} must be a mapping with a 'profiles:' key", where=f"{path}:1", fix="see docs/profiles.md")
    check_duplicate_keys(node, path)
    unknown = sorted(set(data) - {"profiles", "default_profile"})
    if unknown:
        raise ProfileError(f"unknown top-level key {unknown[0]!r}", where=f"{path}:{line_of(node, [unknown[0]])}", fix="top-level keys are 'profiles' and 'default_profile'")
    profiles = data.get("profiles")
    if profiles is not None and not isinstance(profiles, dict):  # checked here, not only for a profile in use; null: all commented out
        raise ProfileError(f"'profiles' must be a mapping of profile names to blocks, not {type(profiles).__name__}", where=f"{path}:{line_of(node, ['profiles'])} (profiles)", fix="indent a block per profile under it, e.g. `profiles: {dev: {offline_store: {KIND: local, path: ./feature_store}}}` (docs/profiles.md)")
    return data, node


def check_duplicate_keys(node: Any, path: Path, keys: tuple[str, ...] = ()) -> None:
    """A key given twice in one mapping is an error naming both lines (YAML loaders keep the
    last silently, so a second ``engine:`` or a profile named twice would win unseen)."""
    import yaml

    if isinstance(node, yaml.SequenceNode):
        for item in node.value:
            check_duplicate_keys(item, path, keys)
        return
    if not isinstance(node, yaml.MappingNode):
        return
    seen: dict[str, int] = {}
    for key_node, value_node in node.value:
        key = str(key_node.value)
        line = key_node.start_mark.line + 1
        if key in seen:
            dotted = ".".join([*keys, key])
            what = f"profile {key!r} is defined twice" if keys == ("profiles",) else f"key {key!r} is given twice" + (f" in {'.'.join(keys)}" if keys else "")
            raise ProfileError(what, where=f"{path}:{line} ({dotted})", fix=f"keep one of them (the other is at line {seen[key]})")
        seen[key] = line
        check_duplicate_keys(value_node, path, (*keys, key))


def line_of(node: Any, keys: list[str]) -> int | None:
    """1-based line of the key path ``keys`` in a composed YAML node tree."""
    current, mark = node, None
    for key in keys:
        if current is None or not isinstance(getattr(current, "value", None), list):
            return None
        match = next(((k, v) for k, v in current.value if getattr(k, "value", None) == key), None)
        if match is None:
            return None
        mark, current = match[0].start_mark, match[1]
    if mark is None:
        return current.start_mark.line + 1 if current is not None else None
    return mark.line + 1  # the key's line: where a reader looks for it


@dataclass
class Profile:
    """A resolved profile: stores and engine, plus where each setting came from."""

    name: str | None = None
    path: Path | None = None
    offline_store: Any = None
    online_store: Any = None
    engine: str | None = None
    origin: dict[str, str] = field(default_factory=dict)  # setting -> flag|env|profile|default
    #: What the profile's block in ``mlforge.yaml`` sets, before flags and environment.
    in_file: dict[str, Any] = field(default_factory=dict)

    def as_settings(self) -> dict[str, Any]:
        out: dict[str, Any] = {"profile": self.name, "path": self.path}
        for key in ("offline_store", "online_store", "engine"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        return out


def resolve_profile(profile: str | None = None, *, engine: str | None = None, path: Path | None = None) -> Profile:
    """The profile in use, applying flag > env > profile > default.

    ``profile`` and ``engine`` are CLI flags (``None`` when not given); ``path`` is an
    explicit ``mlforge.yaml``. Without a config file and without a requested profile the
    result holds only defaults.
    """
    settings = env_settings(profile=profile, engine=engine, config=path)
    config_path = settings.config or find_config()
    if settings.config is not None and not Path(settings.config).is_file():
        given = Path(settings.config)
        what = "is empty" if str(settings.config) in ("", ".") else "is a directory" if given.is_dir() else "does not exist"
        raise ConfigError(f"config file {str(settings.config)!r} {what}", where="MLFORGE_CONFIG", fix=f"point MLFORGE_CONFIG at a {CONFIG_FILE} file (a relative path is read from the folder the command runs in), or unset it")
    result = Profile()
    _origin_of = "flag" if profile else "env"
    if config_path is None:
        if settings.profile:
            raise ConfigError(f"profile {settings.profile!r} requested but no {CONFIG_FILE} was found", where=str(Path.cwd()), fix=f"create {CONFIG_FILE} (see docs/profiles.md) or drop --profile / MLFORGE_PROFILE")
    else:
        config_path = Path(config_path)
        data, node = read_config(config_path)
        name = settings.profile or data.get("default_profile")
        result.path = config_path
        if name is not None:
            _load_block(result, str(name), data, node, config_path)
            result.in_file = {k: v for k, v in result.as_settings().items() if k in ("offline_store", "online_store", "engine")}
            result.origin["profile"] = _origin_of if settings.profile else "profile (default_profile)"
    if settings.engine:
        result.engine = settings.engine
        result.origin["engine"] = "flag" if engine else "env"
    if result.engine is None:
        result.origin["engine"] = "default"
    if result.offline_store is None:
        result.origin["offline_store"] = "default"
    return result


def load_profile(profile: str | None = None, *, path: Path | None = None) -> dict[str, Any]:
    """``offline_store``, ``online_store`` and ``engine`` of a profile, as a dict.

    Returns only what is set; ``{}``-like when there is no ``mlforge.yaml``.
    """
    return resolve_profile(profile, path=path).as_settings()


def profile_names(path: Path | None = None) -> list[str]:
    """The profiles declared in ``mlforge.yaml`` (none when there is no file)."""
    config_path = path or find_config()
    if config_path is None:
        return []
    data, _ = read_config(config_path)
    profiles = data.get("profiles") or {}
    return list(profiles) if isinstance(profiles, dict) else []


def _load_block(result: Profile, name: str, data: dict[str, Any], node: Any, path: Path) -> None:
    profiles = data.get("profiles") or {}
    if not isinstance(profiles, dict):
        raise ProfileError("'profiles' must be a mapping of names to settings", where=f"{path}:{line_of(node, ['profiles'])} (profiles)", fix="see docs/profiles.md")
    if name not in profiles:
        where = f"{path}:{line_of(node, ['default_profile'])} (default_profile)" if name == data.get("default_profile") else str(path)
        raise ProfileError(f"unknown profile {name!r}", where=where, fix=f"available profiles: {', '.join(profiles) or 'none'}")
    block = profiles[name] or {}
    keys = ["profiles", name]
    if not isinstance(block, dict):
        raise ProfileError(f"profile {name!r} must be a mapping", where=_where(path, node, keys), fix="e.g. dev: {offline_store: {KIND: local, path: ./feature_store}}")
    unknown = sorted(set(block) - set(PROFILE_KEYS))
    if unknown:
        raise ProfileError(f"unknown key {unknown[0]!r} in profile {name!r}", where=_where(path, node, [*keys, unknown[0]]), fix=f"allowed keys: {', '.join(PROFILE_KEYS)}")
    from_env: dict[tuple[str, ...], list[str]] = {}
    resolved = _interpolate(block, node, keys, path, from_env)
    result.name = name
    for key, kinds in (("offline_store", OFFLINE_KINDS), ("online_store", ONLINE_KINDS)):
        if resolved.get(key) is not None:
            block_keys = [*keys, key]
            env_options = {k[len(block_keys)]: v for k, v in from_env.items() if len(k) > len(block_keys) and list(k[: len(block_keys)]) == block_keys}
            store = make_store(
                resolved[key], kinds, _where(path, node, block_keys), key, path.parent,
                locate=lambda option, bk=block_keys: _where(path, node, [*bk, option]), from_env=env_options,
            )
            setattr(result, key, store)
            result.origin[key] = "profile"
    if resolved.get("engine") is not None:
        result.engine = _engine_from(resolved["engine"], _where(path, node, [*keys, "engine"]))
        result.origin["engine"] = "profile"


def _where(path: Path, node: Any, keys: list[str]) -> str:
    line = line_of(node, keys)
    return f"{path}:{line} ({'.'.join(keys)})" if line else f"{path} ({'.'.join(keys)})"


def _engine_from(value: Any, where: str) -> str:
    name = value["KIND"] if isinstance(value, dict) and "KIND" in value else value
    if not isinstance(name, str) or name.lower() not in ENGINE_NAMES:
        raise ProfileError(f"unknown engine {name!r}", where=where, fix=f"use one of {', '.join(ENGINE_NAMES)}")
    return name.lower()


def make_store(
    block: Any,
    kinds: dict[str, Kind],
    where: str,
    key: str,
    base: Path,
    *,
    locate: Any = None,
    from_env: dict[str, list[str]] | None = None,
) -> Any:
    """Create a store object from a profile block discriminated by ``KIND``.

    ``locate(option)`` names the line of one option and ``from_env`` maps options to the
    environment variables interpolated into them, so that a value the store rejects is
    blamed on its line of ``mlforge.yaml`` without printing it.
    """
    if not isinstance(block, dict) or "KIND" not in block:
        raise ProfileError(f"{key} must be a mapping with a KIND", where=where, fix=f"e.g. {key}: {{KIND: {next(iter(kinds))}}}")
    kind_name = str(block["KIND"]).lower()
    if kind_name not in kinds:
        raise ProfileError(f"unknown {key} KIND {block['KIND']!r}", where=where, fix=f"use one of {', '.join(kinds)}")
    kind = kinds[kind_name]
    options = {k: v for k, v in block.items() if k != "KIND"}
    if kind_name == "local" and "path" in options:
        if not isinstance(options["path"], str) or not options["path"].strip():  # "" would be the project folder itself
            raise ProfileError(f"{key} path must name a folder, got {options['path']!r}", where=locate("path") if locate else where, fix="name a folder of its own, e.g. path: ./feature_store")
        if not Path(options["path"]).is_absolute():
            options["path"] = str(base / options["path"])
    try:
        cls = getattr(importlib.import_module(kind.module), kind.cls)
    except (ImportError, AttributeError) as exc:
        missing = getattr(exc, "name", None) or str(exc)
        what = (
            f"{key} KIND {kind_name!r} is not available in this installation of mlforge ({missing} is missing)"
            if str(missing).startswith("mlforge")
            else f"{key} KIND {kind_name!r} needs the optional dependency {missing!r}"
        )
        fix = install_command(kind.extra or "all")
        if str(missing).startswith("mlforge"):
            fix += " (with a version of mlforge that provides this KIND)"
        raise ProfileError(what, where=where, fix=fix) from None
    known = _option_names(cls)
    unknown = sorted(set(options) - known, key=str) if known is not None else []
    if unknown:
        raise ProfileError(
            f"unknown option {unknown[0]!r} for {key} KIND {kind_name!r}",
            where=locate(unknown[0]) if locate else where,
            fix=f"its options are {', '.join(sorted(known or ())) or 'none'} (docs/profiles.md)",
        )
    try:
        return cls(**options)
    except TypeError as exc:
        raise ProfileError(f"bad options for {key} KIND {kind_name!r}: {exc}", where=where, fix="check the option names in docs/profiles.md") from None
    except Exception as exc:  # a value the store rejects: blame its line, never print a secret
        raise _rejected_value(exc, key, kind_name, options, where, locate, from_env or {}) from None


def _option_names(cls: Any) -> set[str] | None:
    """The keyword options ``cls`` takes (``None`` when it takes any)."""
    import inspect

    params = inspect.signature(cls).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return {p.name for p in params if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)}


def _rejected_value(exc: Exception, key: str, kind_name: str, options: dict[str, Any], where: str, locate: Any, from_env: dict[str, list[str]]) -> ProfileError:
    detail = exc.what if isinstance(exc, MlforgeError) else f"{type(exc).__name__}: {exc}"
    raw = exc.what if isinstance(exc, MlforgeError) else str(exc)  # not its fix: examples there name other options
    suspects = [o for o in from_env if isinstance(options.get(o), str) and options[o] and options[o] in raw]
    if not suspects:  # the message names the option it rejects ("... schema '***' is not ...")
        named = [o for o in options if re.search(rf"(?<![\w.]){re.escape(o)}(?![\w.])", raw)]
        suspects = [o for o in named if o in from_env] if len(named) == 1 else []
    if not suspects and MASK in detail and len(from_env) == 1:
        suspects = list(from_env)
    if len(suspects) == 1 and locate is not None:
        option = suspects[0]
        variables = ", ".join(from_env[option])
        return ProfileError(
            f"bad value for {key} KIND {kind_name!r} option {option!r}: {detail}",
            where=locate(option),
            fix=f"set {variables} to a valid {option} (values from the environment are not printed)",
        )
    written = [o for o, v in options.items() if o not in from_env and isinstance(v, str) and v and repr(v) in raw]
    if len(written) == 1 and locate is not None:  # a value written in the file, quoted in the message: its line
        return ProfileError(f"bad value for {key} KIND {kind_name!r} option {written[0]!r}: {detail}", where=locate(written[0]), fix="check the option values in docs/profiles.md")
    return ProfileError(f"bad value for {key} KIND {kind_name!r}: {detail}", where=where, fix="check the option values in docs/profiles.md")


def _interpolate(value: Any, node: Any, keys: list[str], path: Path, from_env: dict[tuple[str, ...], list[str]]) -> Any:
    if isinstance(value, dict):
        return {k: _interpolate(v, node, [*keys, str(k)], path, from_env) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, node, keys, path, from_env) for v in value]
    if not isinstance(value, str):
        return value
    bad = _BAD_ENV.search(value)
    if bad:
        raise ProfileError(f"cannot interpolate {bad.group(0)!r}", where=_where(path, node, keys), fix="write ${oc.env:VAR} or ${oc.env:VAR,default}")
    if "${" in _ENV.sub("", value):
        raise ProfileError(f"unclosed interpolation in {value!r}", where=_where(path, node, keys), fix="close it with '}': ${oc.env:VAR} or ${oc.env:VAR,default}")

    def replace(match: re.Match[str]) -> str:
        var, default = match.group(1), match.group(2)
        if var in os.environ:
            hide(os.environ[var])
            from_env.setdefault(tuple(keys), []).append(var)
            return os.environ[var]
        if default is not None:
            return default
        raise ProfileError(
            f"environment variable {var} is not set",
            where=_where(path, node, keys),
            fix=f"export {var}=... or write ${{oc.env:{var},default}}",
        )

    return _ENV.sub(replace, value)
