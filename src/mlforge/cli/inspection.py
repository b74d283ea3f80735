"""``mlforge inspect feature|entity|source NAME``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from cyclopts import App

from mlforge.cli.common import DEFAULT, Common, Format, load, out, print_json, table
from mlforge.cli.listing import features_using, reads_source, uses_entity
from mlforge.errors import ConfigError

app = App(name="inspect", help="Show one feature, feature set, entity or source in detail.", help_format="plaintext")


@app.command
def feature(name: str, /, *, version: str | None = None, format: Format = "table", common: Common = DEFAULT) -> int:
    """Show a feature's definition and the metadata of a stored version (latest by default).

    Parameters
    ----------
    name
        Feature name.
    version
        Stored version to show, e.g. 1.2.0.
    format
        table for people, json for machines.
    """
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
    if version is not None or defs.offline_store.latest_version(name):
        stored = defs.offline_store.read_record(name, version).to_dict()  # shown as stored
    if format == "json":
        print_json({"definition": definition, "stored": stored})
        return 0
    rows = [[k, _text(v)] for k, v in definition.items() if k not in ("metrics",)]
    out().print(table(f"feature {name}", ["field", "value"], rows))
    if definition["metrics"]:
        out().print(table("metrics", ["column", "field", "function", "window", "unit"], [list(m.values()) for m in definition["metrics"]]))
    if stored:
        keys = ("version", "change", "reason", "rows", "created_at", "engine", "watermark", "ttl", "definition_hash", "data_hash")
        out().print(table(f"stored version {stored.get('version')}", ["field", "value"], [[k, _text(stored.get(k))] for k in keys]))
        out().print(table("schema", ["column", "type"], [[c, t] for c, t in (stored.get("schema") or {}).items()]))
    else:
        out().print("not built yet: run `mlforge build --features " + name + "`", highlight=False)
    return 0


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
        "format": repr(match.format) if match.format else "table",
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
        return ", ".join(f"{k}: {v}" for k, v in value.items()) or "-"
    return str(value)
