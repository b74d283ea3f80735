"""``mlforge profile``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mlforge.cli.common import (
    DEFAULT,
    Common,
    Format,
    check_profile_flag,
    load,
    locate,
    print_json,
    render,
)

if TYPE_CHECKING:
    from mlforge.config import Profile
    from mlforge.project import Definitions

SETTINGS = ("offline_store", "online_store", "engine")
_DEFAULTS = {"offline_store": "LocalStore('feature_store')", "online_store": "-", "engine": "duckdb"}


def profile(*, validate: bool = False, format: Format = "table", common: Common = DEFAULT) -> int:
    """Show the settings in effect and where each came from (flag > MLFORGE_* env >
    mlforge.yaml profile > default), what mlforge.yaml contributes and what definitions.py
    sets itself (a setting given to Definitions(...) wins over the profile, except under
    --profile / MLFORGE_PROFILE). Values read from the environment are shown as ***.

    Parameters
    ----------
    validate
        Also check that every profile of mlforge.yaml loads, and that the stores in effect answer. Exit 2 when a profile is invalid, 1 when a store does not answer.
    format
        table for people, json for machines.
    """
    from mlforge.config import env_settings, profile_names, resolve_profile

    defs = _project(common)
    resolved = defs.profile_settings if defs is not None else resolve_profile(env_settings(profile=common.profile).profile)
    rows = [
        ["profile", resolved.name or "-", resolved.origin.get("profile", "default"), "-", "-"],
        ["config", str(resolved.path) if resolved.path else "-", "file" if resolved.path else "none found", "-", "-"],
        *[_setting_row(key, resolved, defs) for key in SETTINGS],
    ]
    stores = {key: (_in_effect(key, resolved, defs)) for key in ("offline_store", "online_store")}
    checks: list[list[Any]] = []
    if validate:
        for name in profile_names(resolved.path):
            checks.append([f"profile {name}", *_check(lambda n=name: resolve_profile(n, path=resolved.path))])
        if stores["offline_store"] is not None:
            checks.append(["offline_store answers", *_check(stores["offline_store"].list_features)])
        if stores["online_store"] is not None:
            checks.append(["online_store answers", *_check(stores["online_store"].ping)])
    columns = ["setting", "value", "from", "mlforge.yaml", "definitions.py"]
    if format == "json":
        print_json({"settings": [dict(zip(columns, r, strict=True)) for r in rows], "checks": [dict(zip(["check", "status", "problem"], c, strict=True)) for c in checks]})
    else:
        render(None, columns, rows, "table")
        if checks:
            render(None, ["check", "status", "problem"], checks, "table")
    failed = [c for c in checks if c[1] != "ok"]
    if not failed:
        return 0
    return 2 if any(c[0].startswith("profile ") for c in failed) else 1


def _project(common: Common) -> Definitions | None:
    """The project, when there is a definitions.py to load (none is fine: then only
    mlforge.yaml is shown); a --target that does not exist is still an error."""
    from mlforge.config import env_settings
    from mlforge.errors import ConfigError

    check_profile_flag(common)  # before the fallback below, which would read "" as the default
    try:
        locate(common)
    except ConfigError:
        if env_settings(target=common.target).target is not None:
            raise
        return None
    return load(common)


def _in_effect(key: str, resolved: Profile, defs: Definitions | None) -> Any:
    if defs is None:
        return resolved.as_settings().get(key)
    return {"offline_store": defs.offline_store, "online_store": defs.online_store, "engine": defs.engine_spec}[key]


def _setting_row(key: str, resolved: Profile, defs: Definitions | None) -> list[Any]:
    """``[setting, value in effect, from, value in mlforge.yaml, value in definitions.py]``."""
    in_yaml = resolved.in_file.get(key)
    declared = defs.declared.get(key) if defs is not None else None
    value = _in_effect(key, resolved, defs)
    origin = defs.origins.get(key, "default") if defs is not None else resolved.origin.get(key, "default" if value is None else "profile")
    if origin == "definitions":
        origin = "definitions.py" + (" (overrides mlforge.yaml)" if in_yaml is not None else "")
    elif declared is not None:  # --profile / MLFORGE_PROFILE replaced what definitions.py set
        origin += " (overrides definitions.py)"
    if value is None and key == "online_store":
        origin = "not set"
    return [key, _describe(value) if value is not None else _DEFAULTS[key], origin, _describe(in_yaml), _describe(declared)]


def _check(action: Any) -> list[str]:
    from mlforge.errors import MlforgeError, redact

    try:
        action()
    except MlforgeError as exc:
        return ["failed", str(exc)]
    except Exception as exc:
        return ["failed", redact(f"{type(exc).__name__}: {exc}")]
    return ["ok", ""]


def _describe(value: Any) -> str:
    from mlforge.errors import redact

    if value is None:
        return "-"
    return redact(value if isinstance(value, str) else repr(value))
