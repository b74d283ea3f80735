"""A naive, pure-Python statement of contract rules W1-W9 (SEMANTICS.md section 2).

It is written straight from the contract and shares no code with mlforge, so a test can
compare any engine's build with it (STYLE 10). It is deliberately slow and obvious:
every grid label of every entity is checked against every event.

>>> from datetime import datetime
>>> events = [{"user": "a", "ts": datetime(2024, 1, 1, 6), "amt": 2.0}]
>>> rows = expected_rows(events, keys=["user"], timestamp="ts", interval=86400,
...                      metrics=[OracleMetric("amt_sum_2d", "amt", "sum", 2 * 86400)])
>>> [(r["ts"].day, r["amt_sum_2d"]) for r in rows]
[(2, 2.0), (3, 2.0)]
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROS = 1_000_000


@dataclass(frozen=True)
class OracleMetric:
    """One output column: ``function`` of ``field`` over a trailing window."""

    name: str
    field: str
    function: str
    window_seconds: int


def to_micros(value: datetime) -> int:
    """Microseconds since the epoch; a naive datetime is UTC (rule T1)."""
    aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    return (aware - EPOCH) // timedelta(microseconds=1)


def from_micros(micros: int) -> datetime:
    return EPOCH + timedelta(microseconds=micros)


def aggregate(function: str, values: Sequence[Any]) -> Any:
    """One aggregation over one window's non-null values (rules W4, W5)."""
    if function == "count":
        return len(values)
    if function == "sum":
        return sum(values) if values else 0
    if not values:
        return None
    if function == "mean":  # integers summed exactly (past 2^53 a float sum rounds each one)
        return sum(values) / len(values) if all(isinstance(v, int) for v in values) else math.fsum(values) / len(values)
    if function == "min":
        return min(values)
    if function == "max":
        return max(values)
    if function == "std":
        return statistics.stdev(float(v) for v in values) if len(values) >= 2 else None
    if function == "median":
        return float(statistics.median(values))
    raise ValueError(f"unknown function {function!r}")


def expected_rows(
    events: Sequence[dict[str, Any]],
    *,
    keys: Sequence[str],
    timestamp: str,
    interval: int,
    metrics: Sequence[OracleMetric],
) -> list[dict[str, Any]]:
    """The rows a metric feature must store, sorted by keys then grid label.

    Each row has the key columns, ``timestamp`` holding the grid label as an aware UTC
    datetime, and one column per metric.
    """
    # W9: an event with a null key or timestamp takes part in nothing.
    kept = [e for e in events if e[timestamp] is not None and all(e[k] is not None for k in keys)]
    by_entity: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for event in kept:
        by_entity.setdefault(tuple(event[k] for k in keys), []).append(event)

    step = interval * _MICROS
    max_window = max(m.window_seconds for m in metrics) * _MICROS
    rows = []
    for entity, entity_events in sorted(by_entity.items()):
        instants = [to_micros(e[timestamp]) for e in entity_events]
        # W3: exactly the labels t with some event e in [t - max_window, t), i.e. e < t <= e + max_window.
        labels = {t for e in instants for t in range(_next_grid(e, step), e + max_window + 1, step)}
        for label in sorted(labels):
            row = dict(zip(keys, entity, strict=True))
            row[timestamp] = from_micros(label)
            for metric in metrics:
                start = label - metric.window_seconds * _MICROS
                # W1: the window at t holds the events with t - w <= e < t; W5: nulls (and
                # NaN, a missing value too) are ignored.
                values = [
                    event[metric.field]
                    for event, instant in zip(entity_events, instants, strict=True)
                    if start <= instant < label and not _missing(event[metric.field])
                ]
                row[metric.name] = aggregate(metric.function, values)
            rows.append(row)
    return rows


def _next_grid(instant: int, step: int) -> int:
    """The first grid instant strictly after ``instant`` (the grid is epoch-aligned)."""
    return (instant // step + 1) * step


def values_match(expected: Any, actual: Any, *, rel: float = 1e-9) -> bool:
    """Equality, with floats compared within ``rel`` relative (rule W8).

    Sums and variances of floats are added in a different order by each engine, so a
    result that should be exactly zero may come out as 1e-13: an absolute tolerance of
    the same size covers values near zero.
    """
    if expected is None or actual is None:
        return expected is None and actual is None
    if isinstance(expected, float) or isinstance(actual, float):
        if math.isnan(float(actual)):
            return False
        return math.isclose(float(expected), float(actual), rel_tol=rel, abs_tol=rel)
    return expected == actual


def _missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))
