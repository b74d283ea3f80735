"""Verified reads (S7): a version's data files are checked against its record before use.

A record of format 2 lists each data file with its size in bytes and its row count. A check
costs one ``stat`` per file and, once the size matches, one read of the Parquet footer (a
few kilobytes at the end of the file) for the row count; no data page is read. A missing
file, a file of another size (truncated, or replaced) or another row count (a foreign file
of the same size), and, beside listed files, a Parquet file the record does not list, all
raise :class:`~mlforge.errors.CorruptVersion` naming the feature, version and file.

Records of format 1 did not list files with sizes (see :mod:`mlforge.records`): object
stores' names are still checked for presence; a local version's files must add up to the
record's row count.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Callable, Mapping
from typing import cast

from mlforge.errors import CorruptVersion
from mlforge.records import DataFile, VersionRecord

#: ``restore_data`` and ``sync`` put back whole versions; this is how to get a good one.
FIX = (
    "rebuild the feature (`mlforge build --features {feature} --full-refresh --force` recomputes every row and publishes a new, complete "
    "version) or point latest at an intact version (`mlforge rollback {feature} VERSION`); if "
    "this version's data was never copied (a clone of the metadata only), delete its data/ "
    "directory and run `mlforge sync`"
)


def corrupt(feature: str, version: str, path: str, problem: str) -> CorruptVersion:
    """The error for one data file that does not match the record."""
    return CorruptVersion(
        f"data file {path!r} of {feature} {version} {problem}; mlforge will not read a damaged version",
        where=f"feature {feature!r}, version {version}",
        fix=FIX.format(feature=feature),
    )


def describe_files(directory: str) -> tuple[DataFile, ...]:
    """Each ``*.parquet`` file of ``directory``: name, size and row count."""
    return tuple(describe_file(path) for path in parquet_files(directory))


def parquet_files(directory: str) -> list[str]:
    """Every ``*.parquet`` file of ``directory``, hidden ones (``.x.parquet``, ``._x.parquet``)
    included: an engine's ``*.parquet`` scan reads them, so the check must see them too (S7)."""
    return sorted(glob.glob(os.path.join(glob.escape(directory), "*.parquet"), include_hidden=True))


def describe_file(path: str) -> DataFile:
    """A Parquet file's name, size and row count (from its footer)."""
    import pyarrow.parquet as pq

    return DataFile(os.path.basename(path), os.path.getsize(path), pq.read_metadata(path).num_rows)


def verified_files(feature: str, version: str, record: VersionRecord, directory: str, local_name: Callable[[str], str] = str) -> list[str]:
    """The local paths of a version's data files in ``directory``, each checked against
    ``record`` (``local_name`` maps a recorded name to the name in ``directory``).

    Raises:
        CorruptVersion: a file is missing, has another size or row count, or an unlisted
            Parquet file lies beside the listed ones.
    """
    if os.path.lexists(directory) and not os.path.isdir(directory):
        raise corrupt(feature, version, os.path.basename(directory), "is not a directory")
    present = parquet_files(directory)
    nested = sorted(set(glob.glob(os.path.join(glob.escape(directory), "**", "*.parquet"), recursive=True, include_hidden=True)) - set(present))
    if nested:  # plain readers of the folder (pandas, pyarrow datasets) read these too (S5)
        raise corrupt(feature, version, os.path.relpath(nested[0], directory), "lies in a folder inside data/ (a foreign file)")
    if record.files is None:
        # Format 1, local: no file list, but the files' footers must add up to the record's rows.
        rows = sum(_footer_rows(feature, version, DataFile(os.path.basename(path)), path) for path in present)
        if rows != record.rows:
            raise CorruptVersion(
                f"the data files of {feature} {version} hold {rows} rows where the record says {record.rows} "
                "(a file is missing or foreign); mlforge will not read a damaged version",
                where=f"feature {feature!r}, version {version}",
                fix=FIX.format(feature=feature),
            )
        return present
    listed = [entry.rows for entry in record.files]
    if None not in listed and (total := sum(cast("list[int]", listed))) != record.rows:
        raise CorruptVersion(
            f"the record of {feature} {version} says {record.rows} rows but lists files of {total} rows "
            "(a hand-edited or damaged _metadata.json); mlforge will not read a damaged version",
            where=f"feature {feature!r}, version {version}",
            fix=FIX.format(feature=feature),
        )
    paths = [_checked(feature, version, entry, os.path.join(directory, local_name(entry.path))) for entry in record.files]
    foreign = sorted(set(present) - set(paths))
    if foreign:
        raise corrupt(feature, version, os.path.basename(foreign[0]), "is not listed in the version's record (a foreign file)")
    return sorted(paths)


def check_sizes(feature: str, version: str, record: VersionRecord, stored: Mapping[str, int]) -> None:
    """Check a listing (name -> size in bytes) of a version's stored data files against the
    record: each listed file present, with its size. Row counts need the files themselves
    (:func:`verified_files`); unlisted objects are debris of other builds and are ignored."""
    for entry in record.files or ():
        if entry.path not in stored:
            raise corrupt(feature, version, entry.path, "is missing")
        if entry.size is not None and stored[entry.path] != entry.size:
            raise corrupt(feature, version, entry.path, _size_problem(stored[entry.path], entry.size))


def _checked(feature: str, version: str, entry: DataFile, path: str) -> str:
    try:
        size = os.path.getsize(path)
    except FileNotFoundError:
        raise corrupt(feature, version, entry.path, "is missing") from None
    if entry.size is not None and size != entry.size:
        raise corrupt(feature, version, entry.path, _size_problem(size, entry.size))
    if entry.rows is not None:
        rows = _footer_rows(feature, version, entry, path)
        if rows != entry.rows:
            raise corrupt(feature, version, entry.path, f"has {rows} rows where the record says {entry.rows} (replaced by another file)")
    return path


def _footer_rows(feature: str, version: str, entry: DataFile, path: str) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.read_metadata(path).num_rows
    except (OSError, pa.ArrowException) as exc:
        raise corrupt(feature, version, entry.path, f"is not a readable Parquet file ({exc})") from exc


def _size_problem(size: int, recorded: int) -> str:
    kind = "truncated" if size < recorded else "replaced by another file"
    return f"has {size} bytes where the record says {recorded} ({kind})"
