"""``mlforge inspect feature|entity|source NAME``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from cyclopts import App

from mlforge.cli.common import (
    DEFAULT,
    Common,
    Format,
    count,
    instant,
    load,
    out,
    print_json,
    source_format,
    table,
)
from mlforge.cli.listing import features_using, reads_source, uses_entity
from mlforge.errors import ConfigError

app = App(name="inspect", help="Show one feature, feature set, entity or source in detail.", help_format="plaintext")


#: Bars of the histogram sparkline, lowest to highest.
BARS = " ▁▂▃▄▅▆▇█"


@app.command
def feature(name: str, /, *, version: str | None = None, stats: bool = False, approx: bool = False, format: Format = "table", common: Common = DEFAULT) -> int:
    """Show a feature's definition and the metadata of a stored version (latest by default).

    Parameters
    ----------
    name
        Feature name.
    version
        Stored version to show, e.g. 1.2.0.
    stats
        Also show per-column statistics of the stored version (null rate, distinct values, min/max/mean, a histogram), computed by the engine.
    approx
        With --stats: estimate distinct values (the engine's approx_nunique) instead of counting them.
    format
        table for people, json for machines.
    """
    if approx and not stats:
        raise ConfigError("--approx estimates the distinct values of --stats, which was not given", where="mlforge inspect feature", fix=f"mlforge inspect feature {name} --stats --approx")
    defs = load(common)
    f = defs.features.get(name)
    if f is None:
        raise ConfigError(f"unknown feature {name!r}", fix=f"available: {', '.join(sorted(defs.features)) or 'none'}")
    definition = {
        "name": f.name,
        "description": f.description,
        "source": f.source.location,
        "keys": list(f.keys),
        "entities": [e.name for e in f.entities],
        "timestamp": f.timestamp_column,
        "interval": f.interval,
        "ttl": f.ttl,
        "tags": list(f.tags),
        "schedule": f.schedule,
        "engine": f.engine,
        "metrics": [{"column": c.output_name, "field": c.field, "function": c.function, "window": c.window, "unit": c.unit} for c in f.metric_columns],
        "validators": {column: [v.describe() for v in checks] for column, checks in f.validators},
    }
    stored = None
    if version is not None or defs.offline_store.latest_version(name) or defs.offline_store.list_versions(name):
        # versions without a latest one (a broken pointer) is the store's error, not "not built"
        stored = defs.offline_store.read_record(name, version).to_dict()  # shown as stored
    column_stats = None
    if stats and stored:
        from mlforge.stats import table_stats

        column_stats = table_stats(defs.read_feature(name, version=stored.get("version")), approx=approx)
    if format == "json":
        print_json({"definition": definition, "stored": stored, **({"stats": column_stats.to_dict()} if column_stats else {})})
        return 0
    rows = [[k, _text(v)] for k, v in definition.items() if k not in ("metrics",)]
    out().print(table(f"feature {name}", ["field", "value"], rows))
    if definition["metrics"]:
        out().print(table("metrics", ["column", "field", "function", "window", "unit"], [list(m.values()) for m in definition["metrics"]]))
    if stored:
        out().print(table(f"stored version {stored.get('version')}", ["field", "value"], _stored_rows(stored)))
        out().print(table("schema", ["column", "type"], [[c, t] for c, t in (stored.get("schema") or {}).items()]))
    else:
        out().print("not built yet: run `mlforge build --features " + name + "`", highlight=False)
    if column_stats is not None and stored:
        _show_stats(f"statistics of {name} {stored.get('version')} ({count(column_stats.rows)} rows)", column_stats, stored.get("schema") or {})
    return 0


def _stored_rows(stored: dict[str, Any]) -> list[list[Any]]:
    """The stored version's metadata for people: instants as ISO 8601, counts with separators."""
    build_range = stored.get("build_range") or {}
    bounds = [build_range.get("since"), build_range.get("until")]
    shown = {
        "version": stored.get("version"), "change": stored.get("change"), "reason": stored.get("reason"),
        "rows": count(stored.get("rows")), "created_at": instant(stored.get("created_at")), "engine": stored.get("engine"),
        "build range": "full" if bounds == [None, None] else f"[{', '.join(instant(b) if b is not None else '∞' for b in bounds)})",
        "watermark": instant(stored.get("watermark")), "ttl": stored.get("ttl"), "definition_hash": stored.get("definition_hash"), "data_hash": stored.get("data_hash"),
    }
    return [[k, _text(v)] for k, v in shown.items()]


def _show_stats(title: str, column_stats: Any, schema: dict[str, str]) -> None:
    rows = []
    for c in column_stats.columns:
        rows.append([
            c.name, schema.get(c.name, c.dtype), f"{c.null_rate:.1%}", count(c.distinct), _figure(c.minimum), _figure(c.maximum),
            _figure(c.mean), sparkline([b.count for b in c.histogram]),
        ])
    out().print(table(title, ["column", "type", "nulls", "distinct", "min", "max", "mean", "histogram"], rows))


def sparkline(counts: list[int]) -> str:
    """Bin counts as bars, the fullest bin full height; an empty bin is a space.

    >>> sparkline([0, 1, 4, 8])
    ' ▁▄█'
    """
    if not counts:
        return ""
    top = max(counts) or 1
    return "".join(BARS[0] if n == 0 else BARS[max(1, round(n / top * (len(BARS) - 1)))] for n in counts)


def _figure(value: Any) -> str:
    """A statistic for people: instants as ISO 8601, numbers to 6 significant digits with separators."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return count(value)
    if isinstance(value, float):
        return f"{value:,.6g}" if abs(value) < 1e15 else f"{value:.6g}"
    return instant(value)


@app.command
def feature_set(name: str, /, *, format: Format = "table", common: Common = DEFAULT) -> int:
    """Show a feature set: its features, the version each is pinned to and the latest built.

    Parameters
    ----------
    name
        Feature set name.
    format
        table for people, json for machines.
    """
    defs = load(common)
    found = defs.feature_set(name)
    members = [
        {"feature": s.name, "pinned": s.version, "latest": defs.offline_store.latest_version(s.name), "columns": list(s.columns) if s.columns else None}
        for s in found.specs
    ]
    if format == "json":
        print_json({"name": found.name, "description": found.description, "features": members})
        return 0
    out().print(table(f"feature set {name}", ["field", "value"], [["name", found.name], ["description", _text(found.description)]]))
    out().print(table("features", ["feature", "pinned", "latest", "columns"], [[_text(v) for v in m.values()] for m in members]))
    return 0


@app.command
def entity(name: str, /, *, format: Format = "table", common: Common = DEFAULT) -> int:
    """Show an entity: its join key, surrogate columns and the features that use it.

    Parameters
    ----------
    name
        Entity name.
    format
        table for people, json for machines.
    """
    defs = load(common)
    match = _find("entity", name, defs.list_entities(), lambda e: e.name == name)
    info = {
        "name": match.name,
        "join_key": match.join_key,
        "from_columns": list(match.from_columns or []),
        "features": features_using(defs, match, uses_entity),
    }
    _show(f"entity {name}", info, format)
    return 0


@app.command
def source(name: str, /, *, format: Format = "table", common: Common = DEFAULT) -> int:
    """Show a source by name or location: format, timestamp and the features reading it.

    Parameters
    ----------
    name
        Source name (file stem or table name) or its location.
    format
        table for people, json for machines.
    """
    defs = load(common)
    match = _find("source", name, defs.list_sources(), lambda s: name in (s.name, s.location))
    info = {
        "name": match.name,
        "location": match.location,
        "format": source_format(match.format),
        "timestamp": getattr(match.timestamp, "column", None),
        "features": features_using(defs, match, reads_source),
    }
    _show(f"source {name}", info, format)
    return 0


def _find(kind: str, name: str, candidates: list[Any], matches: Callable[[Any], bool]) -> Any:
    """The first candidate ``matches`` accepts; an unknown name lists the available ones."""
    match = next((c for c in candidates if matches(c)), None)
    if match is None:
        raise ConfigError(f"unknown {kind} {name!r}", fix=f"available: {', '.join(c.name for c in candidates) or 'none'}")
    return match


def _show(title: str, info: dict[str, Any], fmt: Format) -> None:
    if fmt == "json":
        print_json(info)
    else:
        out().print(table(title, ["field", "value"], [[k, _text(v)] for k, v in info.items()]))


def _text(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value) or "-"
    if isinstance(value, dict):
        return "; ".join(f"{k}: {_text(v)}" for k, v in value.items()) or "-"
    return str(value)
