"""Version commands: ``diff``, ``rollback``, ``sync``, ``manifest``.

Each calls one function of :mod:`mlforge.operations` and renders its result.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

from cyclopts import Parameter

from mlforge.cli.common import (
    DEFAULT,
    Common,
    Format,
    check_known_feature,
    err,
    in_process_note,
    instant,
    load,
    out,
    print_json,
    render,
    table,
)
from mlforge.errors import ConfigError, MlforgeError, OnlineStoreError

#: ``diff`` exit code for any error (contract S4); 0-3 are the change kinds.
DIFF_ERROR = 4


def diff(feature: str, v1: str | None = None, v2: str | None = None, /, *, format: Format = "table", common: Common = DEFAULT) -> int:
    """Compare two versions of a feature (default: the latest and the one before).

    Exit code: 0 identical, 1 PATCH, 2 MINOR, 3 MAJOR, 4 error (contract S4). A feature
    with one version has nothing to compare: a message, exit 0.

    Parameters
    ----------
    feature
        Feature name.
    v1
        Older version (default: the one before v2).
    v2
        Newer version (default: the latest).
    format
        table for people, json for machines.
    """
    try:
        from mlforge.operations import diff_versions

        defs = load(common)
        check_known_feature(defs, feature)
        only = _only_version(defs.offline_store, feature) if v1 is None else None
        if only is not None and v2 in (None, only):
            return _nothing_to_compare(feature, only, format)
        result = diff_versions(defs.offline_store, feature, v1, v2)
    except MlforgeError as exc:  # contract S4: every error of diff exits 4
        if exc.where is None:  # as the app does for other commands (E1: where)
            exc.locate(f"`mlforge diff {' '.join(v for v in (feature, v1, v2) if v)}`")
        if common.verbose:
            import traceback

            traceback.print_exception(exc, file=sys.stderr)
        print(f"error: {exc}", file=sys.stderr)
        return DIFF_ERROR
    payload = {k: (v.name if k == "kind" else v) for k, v in result.items()}
    if "watermark" in payload["changes"]:  # an instant, shown as `inspect` shows it
        payload["changes"] = {**payload["changes"], "watermark": [instant(w) for w in payload["changes"]["watermark"]]}
    if format == "json":
        print_json(payload)
    else:
        out().print(table(f"diff {feature}", ["field", "value"], [[k, _text(v)] for k, v in payload.items()]))
    return int(result["exit_code"])


def _only_version(store: Any, feature: str) -> str | None:
    """The version of a feature that has exactly one, else None."""
    versions = store.list_versions(feature)
    return versions[0] if len(versions) == 1 else None


def _nothing_to_compare(feature: str, version: str, fmt: Format) -> int:
    message = f"{feature} has one version ({version}): nothing to compare with yet"
    if fmt == "json":
        print_json({"feature": feature, "from": None, "to": version, "kind": "NONE", "exit_code": 0, "reason": message})
    else:
        out().print(message, highlight=False)
    return 0


def rollback(
    feature: str,
    version: str | None = None,
    /,
    *,
    previous: bool = False,
    dry_run: bool = False,
    online: bool = False,
    yes: Annotated[bool, Parameter(name=["--yes", "-y"], negative="")] = False,
    common: Common = DEFAULT,
) -> int:
    """Point a feature's latest version at an earlier version. Only the pointer moves;
    no version is deleted (contract S4). With ``--online``, the version is then published
    online from its stored rows, so online reads serve what training reads (O1).

    Parameters
    ----------
    feature
        Feature name.
    version
        Version to make latest, e.g. 1.0.0.
    previous
        Make the version before the current latest the latest.
    dry_run
        Show what would change and change nothing.
    online
        Also publish the version online (the profile's online store), from its stored rows.
    yes
        Do not ask for confirmation.
    """
    if version is not None and previous:
        raise ConfigError("give either a VERSION or --previous, not both", where="mlforge rollback", fix="e.g. `mlforge rollback user_spend 1.0.0` or `mlforge rollback user_spend --previous`")
    if version is None and not previous:
        raise ConfigError("rollback needs a VERSION or --previous", where="mlforge rollback", fix=f"see `mlforge list versions {feature}`")
    from mlforge.operations import rollback as rollback_to

    defs = load(common)
    check_known_feature(defs, feature)
    store = defs.offline_store
    if online:  # before the pointer moves: a store that is missing or down changes nothing (E3)
        from mlforge.publishing import check_publishable

        if feature not in defs.features:
            raise ConfigError(f"feature {feature!r} is stored but not defined: publishing needs its definition", where="mlforge rollback --online", fix=f"add {feature!r} back to the definitions, or roll back without --online")
        check_publishable(defs.workspace, where="mlforge rollback --online")
    current, target = rollback_to(store, feature, version=version, previous=previous, dry_run=True)
    if dry_run:
        also = " and publish it online" if online else ""
        out().print(f"would move {feature} latest from {current} to {target}{also} (dry run, nothing changed)", highlight=False)
        return 0
    if not yes:
        if not sys.stdin.isatty():
            raise ConfigError("rollback needs confirmation", where="mlforge rollback", fix="pass --yes to confirm without a terminal")
        from rich.prompt import Confirm

        if not Confirm.ask(f"move {feature} latest from {current} to {target}?", console=err()):
            err().print("nothing changed")
            return 0
    current, target = rollback_to(store, feature, version=version, previous=previous, dry_run=False)
    out().print(f"{feature} latest is now {target} (was {current})", highlight=False)
    again = f"mlforge rollback {feature} {target} --online --yes" + (f" --profile {common.profile}" if common.profile else "")
    if online:
        _publish_rolled_back(defs, feature, target, again)
    elif defs.online_store is not None and not defs.online_store.capabilities.in_process:  # `mlforge serve` fills an in-process one from latest
        err().print(f"note: online reads serve the version published last until {target} is published: `{again}`", markup=False, highlight=False)
    return 0


def _publish_rolled_back(defs: Any, feature: str, version: str, again: str) -> None:
    from mlforge.publishing import publish_latest

    try:
        done = publish_latest(defs.workspace, defs.features[feature], version)
    except MlforgeError as exc:  # the pointer has moved: say so, and how to finish
        retry = f"`{again}` publishes it"
        raise OnlineStoreError(
            f"{feature} latest is now {version}, but publishing it online failed: {exc.what}", where=exc.where,
            fix=f"{exc.fix}; then {retry}" if exc.fix else retry,
        ) from exc
    out().print(f"published {feature} {version} online: {done.written} entities written, {done.removed} removed", highlight=False)
    in_process_note(defs.workspace.online_store)


def sync(*, force: bool = False, format: Format = "table", common: Common = DEFAULT) -> int:
    """Rebuild missing data files of versions whose metadata is present.

    After cloning a repository that commits only ``_metadata.json`` files, this fills in
    each version's data from the current definition and source. A version whose source or
    definition changed since it was built is refused unless ``--force``. Exit 1 when any
    version was refused or failed.

    Parameters
    ----------
    force
        Rebuild versions whose source or definition changed, as long as the schema matches.
    format
        table for people, json for machines.
    """
    defs = load(common)
    entries = defs.sync(force=force)
    columns: list[str] = []
    for entry in entries:
        columns += [k for k in entry if k not in columns]
    render(None, columns, [[entry.get(c) for c in columns] for entry in entries], format)
    failed = [e for e in entries if e.get("status") == "failed" or e.get("error")]
    return 1 if failed else 0


def manifest(*, output: Path | None = None, common: Common = DEFAULT) -> int:
    """Print the project manifest (features, versions and their metadata) as JSON.

    Parameters
    ----------
    output
        Write the manifest to this file instead of stdout.
    """
    import json

    target = None if output is None else output.absolute()  # as the caller meant it: load() moves into the project's folder
    if target is not None:
        _check_output(target)
    defs = load(common)
    payload = defs.manifest()
    if target is None:
        print_json(payload)
        return 0
    try:
        target.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    except OSError as exc:  # e.g. no permission: still the argument's problem (E2)
        raise ConfigError(f"cannot write the manifest to {str(output)!r}: {exc.strerror}", where="--output", fix="name a file you can write") from None
    err().print(f"wrote {output}", highlight=False)
    return 0


def _check_output(output: Path) -> None:
    """A ``--output`` that cannot be a file is a bad argument (E2), found before any work."""
    if output.is_dir():
        raise ConfigError(f"{str(output)!r} is a directory", where="--output", fix=f"name a file, e.g. `--output {output / 'manifest.json'}`")
    if not output.parent.is_dir():
        raise ConfigError(
            f"the directory of {str(output)!r} does not exist",
            where="--output",
            fix=f"create it first (`mkdir -p {output.parent}`) or write into an existing directory",
        )


def _text(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {v}" for k, v in value.items()) or "-"
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value) or "-"
    return str(value)
