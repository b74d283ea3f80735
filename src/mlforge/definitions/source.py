"""Sources: where a feature's events come from, and how to read their timestamps."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from mlforge.errors import DefinitionError


@dataclass(frozen=True)
class ParquetFormat:
    """Parquet files; ``columns`` restricts what is read."""

    columns: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.columns is not None:
            object.__setattr__(self, "columns", tuple(self.columns))


@dataclass(frozen=True)
class CSVFormat:
    """CSV files: one file, a directory of ``*.csv`` files or a glob (read in name order).

    ``null_values``: text read as null, besides the empty field (which always is); without
    it, the reader's default markers (``NA``, ``null``, ``NaN``, ...) are null too.
    """

    delimiter: str = ","
    has_header: bool = True
    quote_char: str = '"'
    skip_rows: int = 0
    null_values: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if len(self.delimiter) != 1:
            raise DefinitionError(f"CSV delimiter {self.delimiter!r} must be one character", fix="e.g. CSVFormat(delimiter=';')")
        if self.skip_rows < 0:
            raise DefinitionError(f"CSV skip_rows {self.skip_rows} must be >= 0", fix="use skip_rows=0 or more")
        if self.null_values is not None:
            values = (self.null_values,) if isinstance(self.null_values, str) else tuple(self.null_values)
            object.__setattr__(self, "null_values", values)


@dataclass(frozen=True)
class DeltaFormat:
    """A Delta Lake table directory; ``version`` pins a table version (time travel)."""

    version: int | None = None


Format = ParquetFormat | CSVFormat | DeltaFormat

#: Formats tried, in order, when a string timestamp column has no explicit format (rule T1).
TIMESTAMP_FORMATS: tuple[str, ...] = (
    "%Y-%m-%dT%H:%M:%S.%f%z",
    "%Y-%m-%dT%H:%M:%S%z",
    "%Y-%m-%dT%H:%M:%S.%f",
    "%Y-%m-%dT%H:%M:%S",
    "%Y-%m-%d %H:%M:%S.%f%z",
    "%Y-%m-%d %H:%M:%S%z",
    "%Y-%m-%d %H:%M:%S.%f",
    "%Y-%m-%d %H:%M:%S",
    "%Y-%m-%d %H:%M",
    "%Y-%m-%d",
    "%Y/%m/%d %H:%M:%S",
    "%Y/%m/%d",
    "%d/%m/%Y %H:%M:%S",
    "%m/%d/%Y %H:%M:%S",
)


@dataclass(frozen=True)
class Timestamp:
    """A timestamp column: ``format`` parses strings (strftime codes); ``alias`` renames it."""

    column: str
    format: str | None = None
    alias: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.column, str) or not self.column:
            raise DefinitionError("Timestamp needs a column name", fix="Timestamp('event_time')")

    @property
    def output_name(self) -> str:
        return self.alias or self.column


_UC_NAME = re.compile(r"^[A-Za-z_][\w]*\.[A-Za-z_][\w]*\.[A-Za-z_][\w]*$")
_SUFFIX_FORMATS = {".parquet": ParquetFormat, ".pq": ParquetFormat, ".csv": CSVFormat, ".tsv": CSVFormat}


@dataclass(frozen=True)
class Source:
    """A file path or URI (``.parquet``, ``.csv``, a Delta directory, ``s3://``, ``gs://``)
    or a three-part Unity Catalog table name ``catalog.schema.table``.

    >>> Source("data/transactions.parquet").name
    'transactions'
    """

    location: str
    name: str | None = None
    format: Format | None = field(default=None)
    timestamp: Timestamp | str | None = None

    def __post_init__(self) -> None:
        location = str(self.location) if isinstance(self.location, Path) else self.location
        if not isinstance(location, str) or not location.strip():
            given = "" if location is None or isinstance(location, str) else f", not a {type(location).__name__}"
            raise DefinitionError(
                f"Source needs a location (a file, folder, glob or table name){given}",
                fix="Source('data/events.parquet'); an in-memory frame is not a source: write it to a file first (e.g. df.to_parquet('data/events.parquet'))",
            )
        object.__setattr__(self, "location", location)
        if isinstance(self.timestamp, str):
            object.__setattr__(self, "timestamp", Timestamp(self.timestamp))
        if self.name is None:
            object.__setattr__(self, "name", _default_name(location))
        if self.format is None and not self.is_table:
            object.__setattr__(self, "format", _infer_format(location))

    @property
    def is_table(self) -> bool:
        """True for a ``catalog.schema.table`` name rather than a path."""
        return bool(_UC_NAME.match(self.location)) and Path(self.location).suffix.lower() not in _SUFFIX_FORMATS

    @property
    def is_remote(self) -> bool:
        return "://" in self.location


def is_pattern(location: str) -> bool:
    """Whether a local location is a glob pattern: it holds ``*``, ``?`` or ``[`` and names
    no file or directory as it is (a file called ``events[1].parquet`` is read as itself,
    not as ``events1.parquet``).

    >>> is_pattern("/data/events-*.parquet"), is_pattern("/data/events.parquet")
    (True, False)
    """
    return "://" not in location and any(ch in location for ch in "*?[") and not os.path.lexists(location)


def _default_name(location: str) -> str:
    if _UC_NAME.match(location):
        return location.split(".")[-1]
    stem = Path(location.rstrip("/")).name
    for suffix in (".parquet", ".pq", ".csv", ".tsv"):
        if stem.lower().endswith(suffix):
            return stem[: -len(suffix)]
    return stem


def _infer_format(location: str) -> Format:
    suffix = Path(location.rstrip("/")).suffix.lower()
    if suffix in _SUFFIX_FORMATS:
        fmt = _SUFFIX_FORMATS[suffix]
        return CSVFormat(delimiter="\t") if suffix == ".tsv" else fmt()
    local = Path(location)
    if "://" not in location and local.is_dir():
        if (local / "_delta_log").is_dir():
            return DeltaFormat()
        return ParquetFormat()
    if "*" in location:
        return ParquetFormat()
    raise DefinitionError(
        f"cannot tell the format of source {location!r} from its name",
        fix="pass format=mlf.ParquetFormat(), mlf.CSVFormat() or mlf.DeltaFormat()",
    )
