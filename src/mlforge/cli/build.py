"""``mlforge build``."""

from __future__ import annotations

from typing import Annotated, Any

from cyclopts import Parameter
from rich.markup import escape

from mlforge.cli.common import (
    DEFAULT,
    Common,
    Format,
    count,
    err,
    in_process_note,
    load,
    out,
    print_json,
    table,
)
from mlforge.cli.progress import LogFormat, reporter
from mlforge.plugins import EngineName

PREVIEW_ROWS = 5


def build(
    *,
    features: Annotated[str | None, Parameter(name=["--features", "-f"])] = None,
    feature_set: str | None = None,
    tags: str | None = None,
    schedule: str | None = None,
    engine: EngineName | None = None,
    online: bool = False,
    since: str | None = None,
    until: str | None = None,
    last: str | None = None,
    full_refresh: bool = False,
    force: bool = False,
    preview: bool = False,
    format: Format = "table",
    quiet: Annotated[bool, Parameter(name=["--quiet", "-q"], negative="")] = False,
    log_format: LogFormat = "text",
    common: Common = DEFAULT,
) -> int:
    """Build features and publish new versions where anything changed.

    On a terminal each feature's stages (read/plan, compute, write, publish online) show as
    they run, with elapsed time, rows and the range recomputed; in a pipe or CI log, one
    line per feature. A table of what was built, the range recomputed and the rows written
    follows on stdout.

    Exit 0 when every selected feature was built or skipped, 1 when any failed (nothing of
    a failed feature is written), 2 for bad definitions, configuration or arguments.

    Parameters
    ----------
    features
        Comma-separated feature names (default: all); a feature set's name stands for its features.
    feature_set
        Build the features of these comma-separated feature sets (with --features: both).
    tags
        Only features with one of these comma-separated tags.
    schedule
        Only features with one of these schedules (realtime, hourly, daily, weekly, monthly, on-demand).
    engine
        Engine for this build (overrides MLFORGE_ENGINE and the profile).
    online
        Also publish to the online store what reads at or after the watermark need (per entity: the tail of grid rows of a metric feature, the newest row of another), and remove entities that no longer have values; reports entities written and removed.
    since
        Recompute grid rows from this date/time (ISO, UTC).
    until
        Recompute grid rows before this date/time (ISO, UTC).
    last
        Recompute the last duration, e.g. 7d (not with --since/--until).
    full_refresh
        Rebuild everything, ignoring the stored watermark.
    force
        Publish a new version even when nothing changed.
    preview
        Show a few rows of each built feature.
    format
        table for people, json for machines.
    quiet
        Show no progress and no table: only errors (and the result with --format json).
    log_format
        text, or json: each stage and each feature's result as one JSON line on stderr, for schedulers.
    """
    from mlforge.incremental import plan_range

    # contract E2: argument errors surface before the project is even loaded
    plan_range(since=since, until=until, last=last, full_refresh=full_refresh)
    defs = load(common)
    progress = reporter(quiet=quiet, log_format=log_format, terminal=err().is_terminal, table_output=format == "table")
    with progress:
        result = defs.build(
            _selection(features, feature_set, defs), tags=tags, schedule=schedule, since=since, until=until, last=last,
            full_refresh=full_refresh, online=online, engine=engine, force=force, progress=progress,
            raise_on_error=False,  # the exit code says it; the table and messages say which
        )
    previews = _previews(defs, result) if preview else {}
    if format == "json":
        payload = result.to_dict()
        if preview:
            payload["preview"] = previews
        print_json(payload)
    elif not quiet:
        _render(result, previews)
    if online and log_format == "text":
        in_process_note(defs.workspace.online_store)
    if log_format == "text":
        for f in result.failed:
            err().print(f"[red]error[/]: {escape(f.name)}: {escape(str(f.error))}", highlight=False)
    return 1 if result.failed else 0


def _selection(features: str | None, feature_set: str | None, defs: Any) -> str | None:
    """``--features`` plus the members of each ``--feature-set``; unknown sets are errors."""
    if feature_set is None:
        return features
    from mlforge.errors import ConfigError

    names = [n.strip() for n in feature_set.split(",") if n.strip()]
    if not names:
        raise ConfigError("no feature set named", where="--feature-set", fix=f"name one of: {', '.join(defs.list_feature_sets()) or 'none defined'}")
    members = [m for n in names for m in defs.feature_set(n).feature_names]
    return ",".join([*([features] if features else []), *members])


def _render(result: Any, previews: dict[str, list[dict[str, Any]]]) -> None:
    online = any(f.online_written is not None for f in result.features)
    rows = []
    for f in result.features:
        note = f.reason or ""
        if f.status == "failed":
            note = str(f.error).splitlines()[0] if f.error else "failed"
        recomputed = f.build_range if f.rows_written is not None else "-"
        row = [f.name, f.status, f.version or "-", f.change or "-", recomputed, count(f.rows_written), count(f.rows), f"{f.seconds:.2f}s", note]
        if online:
            row[-1:-1] = [count(f.online_written), count(f.online_removed)]
        rows.append(row)
    summary = f"{len(result.built)} built, {len(result.skipped)} skipped, {len(result.failed)} failed"
    columns = ["feature", "status", "version", "change", "range recomputed", "rows written", "rows", "time", *(["online written", "online removed"] if online else []), "note"]
    out().print(table(None, columns, rows))
    out().print(summary, highlight=False)
    for name, sample in previews.items():
        if sample:
            out().print(table(f"{name} (first {len(sample)} rows)", list(sample[0]), [list(r.values()) for r in sample]))


def _previews(defs: Any, result: Any) -> dict[str, list[dict[str, Any]]]:
    samples: dict[str, list[dict[str, Any]]] = {}
    for f in result.features:
        if f.status != "failed" and f.version:
            samples[f.name] = defs.read_feature(f.name, version=f.version).limit(PREVIEW_ROWS).to_pyarrow().to_pylist()
    return samples
