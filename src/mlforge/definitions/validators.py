"""Validators: checks on a feature function's output, run before anything is stored.

Each validator knows how to express "this row violates me" as an Ibis boolean, so the
check runs inside the engine; ``unique`` counts duplicated values instead.

>>> greater_than(0).describe()
'greater_than(0)'
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mlforge.errors import DefinitionError


@dataclass(frozen=True)
class Validator:
    """A named check; ``violation`` maps a column expression to a 'bad row' boolean."""

    name: str
    args: tuple[Any, ...] = ()
    violation: Callable[[Any], Any] | None = field(default=None, compare=False, hash=False)

    def describe(self) -> str:
        return f"{self.name}({', '.join(repr(a) for a in self.args)})"


def not_null() -> Validator:
    """No value may be null."""
    return Validator("not_null", (), lambda col: col.isnull())


def unique() -> Validator:
    """No non-null value may appear twice."""
    return Validator("unique", ())


def _compare(name: str, value: Any, op: Callable[[Any, Any], Any]) -> Validator:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise DefinitionError(f"{name}() needs a number, got {value!r}", fix=f"e.g. {name}(0)")
    return Validator(name, (value,), lambda col: col.notnull() & ~op(col, value))


def greater_than(value: float) -> Validator:
    """Every non-null value must be > ``value``."""
    return _compare("greater_than", value, lambda c, v: c > v)


def greater_than_or_equal(value: float) -> Validator:
    """Every non-null value must be >= ``value``."""
    return _compare("greater_than_or_equal", value, lambda c, v: c >= v)


def less_than(value: float) -> Validator:
    """Every non-null value must be < ``value``."""
    return _compare("less_than", value, lambda c, v: c < v)


def less_than_or_equal(value: float) -> Validator:
    """Every non-null value must be <= ``value``."""
    return _compare("less_than_or_equal", value, lambda c, v: c <= v)


def in_range(lo: float, hi: float, inclusive: bool = True) -> Validator:
    """Every non-null value must lie between ``lo`` and ``hi``."""
    if lo > hi:
        raise DefinitionError(f"in_range({lo!r}, {hi!r}): lower bound is above upper bound", fix="swap the bounds")
    if inclusive:
        return Validator("in_range", (lo, hi, inclusive), lambda c: c.notnull() & ~((c >= lo) & (c <= hi)))
    return Validator("in_range", (lo, hi, inclusive), lambda c: c.notnull() & ~((c > lo) & (c < hi)))


def matches_regex(pattern: str) -> Validator:
    """Every non-null value must match ``pattern`` (anywhere; anchor it with ^...$ for all)."""
    try:
        re.compile(pattern)
    except re.error as exc:
        raise DefinitionError(f"matches_regex({pattern!r}) is not a valid regex: {exc}", fix="fix the pattern") from None
    return Validator("matches_regex", (pattern,), lambda c: c.notnull() & ~c.cast("string").re_search(pattern))


def is_in(values) -> Validator:
    """Every non-null value must be one of ``values``."""
    allowed = tuple(values)
    if not allowed:
        raise DefinitionError("is_in() needs at least one allowed value", fix="is_in(['a', 'b'])")
    return Validator("is_in", (allowed,), lambda c: c.notnull() & ~c.isin(list(allowed)))
