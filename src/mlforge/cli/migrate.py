"""``mlforge migrate``: import a v0.7 store; one call to :mod:`mlforge.migration`."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from mlforge.cli.common import DEFAULT, Common, Format, err, load, render


def migrate(
    source: Path,
    /,
    *,
    to: Path | None = None,
    features: str | None = None,
    dry_run: bool = False,
    format: Format = "table",
    common: Common = DEFAULT,
) -> int:
    """Import a v0.7 store (its data.parquet and .meta.json files) into versions of this
    format, keeping version numbers and v0.7's latest pointer.

    The v0.7 folder is only read. A local store cannot be migrated in place: move it aside
    first (`mv feature_store feature_store_v07 && mlforge migrate feature_store_v07`).
    Exit 1 when a version could not be imported (missing data, or refused).

    Parameters
    ----------
    source
        Folder of the v0.7 LocalStore (v0.7's default was ./feature_store).
    to
        Import into a LocalStore at this folder (default: the project's offline store).
    features
        Comma-separated feature names (default: every feature in SOURCE).
    dry_run
        Show what would be imported and write nothing.
    format
        table for people, json for machines.
    """
    from mlforge.migration import migrate_v07
    from mlforge.offline.local import LocalStore

    store = LocalStore(to) if to is not None else load(common).offline_store
    names = [n.strip() for n in features.split(",") if n.strip()] if features is not None else None
    if not dry_run and format == "table":
        err().print(f"importing {source} into {store!r}", highlight=False)
    results = migrate_v07(source, store, features=names, dry_run=dry_run)
    columns = ["feature", "version", "status", "rows", "reason"]
    render(None, columns, [[asdict(r)[c] for c in columns] for r in results], format)
    return 1 if any(r.status in ("missing data", "refused") for r in results) else 0
