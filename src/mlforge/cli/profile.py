"""``mlforge profile``."""

from __future__ import annotations

from typing import Any

from mlforge.cli.common import DEFAULT, Common, Format, print_json, render


def profile(*, validate: bool = False, format: Format = "table", common: Common = DEFAULT) -> int:
    """Show the profile in use and where each setting came from
    (flag > MLFORGE_* env > mlforge.yaml profile > default).

    Parameters
    ----------
    validate
        Also check that every profile of mlforge.yaml loads, and that the stores of the
        profile in use answer. Exit 1 when a store does not answer.
    format
        table for people, json for machines.
    """
    from mlforge.config import env_settings, profile_names, resolve_profile

    settings = env_settings(profile=common.profile)
    resolved = resolve_profile(settings.profile)
    rows = [
        ["profile", resolved.name or "-", resolved.origin.get("profile", "default")],
        ["config", str(resolved.path) if resolved.path else "-", "file" if resolved.path else "none found"],
        ["offline_store", _describe(resolved.offline_store) if resolved.offline_store else "LocalStore('feature_store')", resolved.origin.get("offline_store", "profile")],
        ["online_store", _describe(resolved.online_store) if resolved.online_store else "-", resolved.origin.get("online_store", "not set")],
        ["engine", resolved.engine or "duckdb", resolved.origin.get("engine", "default")],
    ]
    checks: list[list[Any]] = []
    if validate:
        for name in profile_names(resolved.path):
            checks.append([f"profile {name}", *_check(lambda n=name: resolve_profile(n, path=resolved.path))])
        if resolved.offline_store is not None:
            checks.append(["offline_store answers", *_check(resolved.offline_store.list_features)])
        if resolved.online_store is not None:
            checks.append(["online_store answers", *_check(resolved.online_store.ping)])
    if format == "json":
        print_json({"settings": [dict(zip(["setting", "value", "from"], r, strict=True)) for r in rows], "checks": [dict(zip(["check", "status", "problem"], c, strict=True)) for c in checks]})
    else:
        render(None, ["setting", "value", "from"], rows, "table")
        if checks:
            render(None, ["check", "status", "problem"], checks, "table")
    failed = [c for c in checks if c[1] != "ok"]
    if not failed:
        return 0
    return 2 if any(c[0].startswith("profile ") for c in failed) else 1


def _check(action: Any) -> list[str]:
    from mlforge.errors import MlforgeError

    try:
        action()
    except MlforgeError as exc:
        return ["failed", str(exc)]
    except Exception as exc:
        return ["failed", f"{type(exc).__name__}: {exc}"]
    return ["ok", ""]


def _describe(store: Any) -> str:
    return repr(store)
