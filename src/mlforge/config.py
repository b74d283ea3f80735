"""Profiles in ``mlforge.yaml`` and settings, with one precedence:
CLI flag > ``MLFORGE_*`` environment > profile > default (STYLE 5).

::

    default_profile: dev
    profiles:
      dev:
        offline_store: {KIND: local, path: ./feature_store}
        engine: duckdb
      prod:
        offline_store: {KIND: s3, bucket: "${oc.env:FEATURE_BUCKET}"}
        online_store: {KIND: redis, host: "${oc.env:REDIS_HOST,localhost}"}

``${oc.env:VAR}`` and ``${oc.env:VAR,default}`` are resolved only in the profile in use.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from mlforge.errors import ConfigError

CONFIG_FILE = "mlforge.yaml"
_ENV = re.compile(r"\$\{oc\.env:([A-Za-z_][A-Za-z0-9_]*)(?:,([^}]*))?\}")

#: KIND -> (module, class) for store blocks; objects are created lazily from these.
OFFLINE_KINDS: dict[str, tuple[str, str]] = {
    "local": ("mlforge.offline.local", "LocalStore"),
    "s3": ("mlforge.offline.s3", "S3Store"),
    "gcs": ("mlforge.offline.gcs", "GCSStore"),
    "unity-catalog": ("mlforge.offline.unity_catalog", "UnityCatalogStore"),
}
ONLINE_KINDS: dict[str, tuple[str, str]] = {
    "memory": ("mlforge.online.memory", "MemoryStore"),
    "redis": ("mlforge.online.redis", "RedisStore"),
    "valkey": ("mlforge.online.redis", "ValkeyStore"),
    "dynamodb": ("mlforge.online.dynamodb", "DynamoDBStore"),
    "databricks-online-tables": ("mlforge.online.databricks", "DatabricksOnlineStore"),
    "databricks": ("mlforge.online.databricks", "DatabricksOnlineStore"),
}


def find_config(start: Path | None = None) -> Path | None:
    """``mlforge.yaml`` in ``start`` (default: cwd) or a parent directory."""
    here = (start or Path.cwd()).resolve()
    for folder in [here, *here.parents]:
        candidate = folder / CONFIG_FILE
        if candidate.is_file():
            return candidate
    return None


def read_config(path: Path) -> tuple[dict[str, Any], Any]:
    """The parsed YAML and its node tree (for line numbers in errors)."""
    import yaml

    text = path.read_text()
    try:
        node = yaml.compose(text)
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise ConfigError(f"malformed YAML: {getattr(exc, 'problem', exc)}", where=line, fix="fix the YAML syntax") from None
    if not isinstance(data, dict):
        raise ConfigError("mlforge.yaml must be a mapping with 'profiles:'", where=str(path), fix="see docs/profiles.md")
    return data, node


def line_of(node: Any, keys: list[str]) -> int | None:
    """1-based line of the value at ``keys`` in a composed YAML node tree."""
    current = node
    for key in keys:
        if current is None or not hasattr(current, "value") or not isinstance(current.value, list):
            return None
        match = None
        for k, v in current.value:
            if getattr(k, "value", None) == key:
                match = (k, v)
                break
        if match is None:
            return None
        current = match[1]
    return current.start_mark.line + 1 if current is not None else None


def load_profile(profile: str | None = None, *, path: Path | None = None) -> dict[str, Any]:
    """Build ``offline_store``, ``online_store`` and ``engine`` from a profile.

    Returns ``{}`` when there is no ``mlforge.yaml`` and no profile was asked for.
    """
    profile = profile or os.environ.get("MLFORGE_PROFILE") or None
    config_path = path or find_config()
    if config_path is None:
        if profile:
            raise ConfigError(f"profile {profile!r} requested but no {CONFIG_FILE} was found", where=str(Path.cwd()), fix=f"create {CONFIG_FILE} or drop --profile")
        return _env_overrides({})
    data, node = read_config(config_path)
    profiles = data.get("profiles") or {}
    if not isinstance(profiles, dict):
        raise ConfigError("'profiles' must be a mapping of names to settings", where=f"{config_path}:{line_of(node, ['profiles'])}", fix="see docs/profiles.md")
    name = profile or data.get("default_profile")
    if name is None:
        return _env_overrides({})
    if name not in profiles:
        raise ConfigError(f"unknown profile {name!r}", where=str(config_path), fix=f"available profiles: {', '.join(profiles) or 'none'}")
    block = profiles[name] or {}
    where = f"{config_path}"
    resolved = _interpolate(block, node, ["profiles", name], config_path)
    settings: dict[str, Any] = {"profile": name, "path": config_path}
    for key in ("offline_store", "online_store"):
        if resolved.get(key) is not None:
            kinds = OFFLINE_KINDS if key == "offline_store" else ONLINE_KINDS
            settings[key] = make_store(resolved[key], kinds, f"{where}:{line_of(node, ['profiles', name, key])}", key, config_path.parent)
    if resolved.get("engine") is not None:
        settings["engine"] = _engine_from(resolved["engine"], f"{where}:{line_of(node, ['profiles', name, 'engine'])}")
    unknown = sorted(set(resolved) - {"offline_store", "online_store", "engine", "description"})
    if unknown:
        raise ConfigError(f"unknown key(s) {unknown} in profile {name!r}", where=f"{where}:{line_of(node, ['profiles', name, unknown[0]])}", fix="allowed: offline_store, online_store, engine")
    return _env_overrides(settings)


def _env_overrides(settings: dict[str, Any]) -> dict[str, Any]:
    engine = os.environ.get("MLFORGE_ENGINE")
    if engine:
        settings["engine"] = engine
    return settings


def _engine_from(value: Any, where: str) -> Any:
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and "KIND" in value:
        return value["KIND"]
    raise ConfigError(f"engine must be a name or a block with KIND, got {value!r}", where=where, fix="engine: duckdb")


def make_store(block: Any, kinds: dict[str, tuple[str, str]], where: str, key: str, base: Path) -> Any:
    """Create a store object from a profile block discriminated by ``KIND``."""
    import importlib

    if not isinstance(block, dict) or "KIND" not in block:
        raise ConfigError(f"{key} must be a mapping with a KIND", where=where, fix=f"e.g. {key}: {{KIND: {next(iter(kinds))}}}")
    kind = str(block["KIND"]).lower()
    if kind not in kinds:
        raise ConfigError(f"unknown {key} KIND {block['KIND']!r}", where=where, fix=f"use one of {', '.join(kinds)}")
    module_name, class_name = kinds[kind]
    options = {k: v for k, v in block.items() if k != "KIND"}
    if kind == "local" and "path" in options and not Path(str(options["path"])).is_absolute():
        options["path"] = str(base / str(options["path"]))
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"{key} KIND {kind!r} is not available: {exc}", where=where, fix="install the matching extra, e.g. pip install 'mlforge[all]'") from None
    try:
        return cls(**options)
    except TypeError as exc:
        raise ConfigError(f"bad options for {key} KIND {kind!r}: {exc}", where=where, fix="check the option names in docs/profiles.md") from None


def _interpolate(value: Any, node: Any, keys: list[str], path: Path) -> Any:
    if isinstance(value, dict):
        return {k: _interpolate(v, node, [*keys, k], path) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, node, keys, path) for v in value]
    if not isinstance(value, str):
        return value

    def replace(match: re.Match[str]) -> str:
        var, default = match.group(1), match.group(2)
        if var in os.environ:
            return os.environ[var]
        if default is not None:
            return default
        raise ConfigError(
            f"environment variable {var} is not set",
            where=f"{path}:{line_of(node, keys)} ({'.'.join(keys)})",
            fix=f"export {var}=... or write ${{oc.env:{var},default}}",
        )

    return _ENV.sub(replace, value)
