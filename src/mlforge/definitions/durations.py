"""Durations: ``<int><unit>`` with unit s, m, h, d, w, or a ``timedelta`` (contract T2)."""

from __future__ import annotations

import re
from datetime import timedelta

from mlforge.errors import DefinitionError

UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_PATTERN = re.compile(r"^\s*(\d+)\s*([a-zA-Z]+)\s*$", re.ASCII)
#: The one spelling a duration may have: it becomes part of output column names (W6).
_CANONICAL = re.compile(r"^([1-9][0-9]*)([smhdw])$", re.ASCII)
#: Longer than this (~31,700 years) is a typo, and past what engines hold as an interval.
MAX_SECONDS = 10**12
_CALENDAR_UNITS = {"mo": 30, "mon": 30, "month": 30, "months": 30, "y": 365, "yr": 365, "year": 365, "years": 365, "M": 30}


def parse_duration(value: str | timedelta | int, *, where: str = "duration") -> int:
    """Return a duration in whole seconds.

    >>> parse_duration("7d")
    604800
    >>> parse_duration(timedelta(hours=1))
    3600
    """
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
        if seconds <= 0 or seconds != int(seconds):
            raise DefinitionError(
                f"duration {value!r} must be a positive whole number of seconds",
                where=where,
                fix="use e.g. timedelta(days=7) or '7d'",
            )
        return int(seconds)
    if isinstance(value, bool) or not isinstance(value, str):
        raise DefinitionError(
            f"duration {value!r} is not a string like '7d' or a timedelta",
            where=where,
            fix="write durations as '<int><unit>' with unit s, m, h, d or w",
        )
    match = _PATTERN.match(value)
    if match is None:
        raise DefinitionError(
            f"cannot parse duration {value!r}",
            where=where,
            fix="write durations as '<int><unit>' with unit s, m, h, d or w, e.g. '30d'",
        )
    amount, unit = int(match.group(1)), match.group(2)
    if unit in _CALENDAR_UNITS or unit.lower() in _CALENDAR_UNITS:
        days = amount * _CALENDAR_UNITS.get(unit, _CALENDAR_UNITS.get(unit.lower(), 30))
        raise DefinitionError(
            f"duration {value!r} uses months or years, which have no fixed length",
            where=where,
            fix=f"use days instead, e.g. '{days}d'",
        )
    if unit not in UNIT_SECONDS:
        raise DefinitionError(
            f"duration {value!r} has unknown unit {unit!r}",
            where=where,
            fix="use one of s, m, h, d, w",
        )
    if amount <= 0:
        raise DefinitionError(f"duration {value!r} must be positive", where=where, fix="use e.g. '1d'")
    if not _CANONICAL.match(value):  # spaces or leading zeros: the text names output columns (W6)
        raise DefinitionError(f"duration {value!r} is not written as '<int><unit>'", where=where, fix=f"write it as '{amount}{unit}'")
    if amount * UNIT_SECONDS[unit] > MAX_SECONDS:
        raise DefinitionError(f"duration {value!r} is longer than any engine can hold", where=where, fix=f"use at most {MAX_SECONDS // 86400}d")
    return amount * UNIT_SECONDS[unit]


def format_duration(seconds: int) -> str:
    """The shortest ``<int><unit>`` spelling of a number of seconds.

    >>> format_duration(604800)
    '7d'
    """
    for unit in ("d", "h", "m", "s"):
        if seconds % UNIT_SECONDS[unit] == 0:
            return f"{seconds // UNIT_SECONDS[unit]}{unit}"
    return f"{seconds}s"
