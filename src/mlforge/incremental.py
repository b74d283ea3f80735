"""Pure interval arithmetic for incremental builds (contract I1).

All instants are integer epoch seconds (UTC). Ranges are half-open: ``[since, until)``.
A build over ``[since, until)`` recomputes the grid labels ``since <= t < until`` and
reads the events ``since - max_window <= ts < until``.

>>> align_down(90_000, 86_400)
86400
>>> plan_range(since="1970-01-02", until="1970-01-04", interval=86_400).labels
(86400, 259200)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from mlforge.definitions.durations import parse_duration
from mlforge.errors import ConfigError


@dataclass(frozen=True)
class BuildRange:
    """What one build recomputes: labels in ``[since, until)``; ``None`` is unbounded."""

    since: int | None = None
    until: int | None = None
    #: The instant ``--last`` counted back from when it is the data's end, not now.
    counted_from: int | None = field(default=None, compare=False)

    @property
    def is_full(self) -> bool:
        return self.since is None and self.until is None

    @property
    def labels(self) -> tuple[int | None, int | None]:
        return (self.since, self.until)

    def read_range(self, max_window: int) -> tuple[int | None, int | None]:
        """The event range a metric build must read: ``[since - max_window, until)``."""
        start = None if self.since is None else self.since - max_window
        return (start, self.until)

    def covers(self, other: BuildRange) -> bool:
        """Whether every label of ``other`` lies in this range.

        >>> BuildRange(since=10).covers(BuildRange(since=20, until=30))
        True
        >>> BuildRange(since=10, until=30).covers(BuildRange(since=20))
        False
        """
        starts_before = self.since is None or (other.since is not None and self.since <= other.since)
        ends_after = self.until is None or (other.until is not None and other.until <= self.until)
        return starts_before and ends_after

    def describe(self) -> str:
        if self.is_full:
            return "full"
        start = "(-∞" if self.since is None else f"[{format_instant(self.since)}"  # --until alone: every label before it
        return f"{start}, {format_instant(self.until)})"

    def explain(self) -> str:
        """:meth:`describe`, and where ``--last`` counted back from when that was not now."""
        if self.counted_from is None:
            return self.describe()
        return f"{self.describe()} (--last counted back from the newest event, {format_instant(self.counted_from)})"


def align_down(instant: int, interval: int) -> int:
    """The grid instant at or before ``instant``."""
    return (instant // interval) * interval


def align_up(instant: int, interval: int) -> int:
    """The grid instant at or after ``instant``."""
    return -((-instant) // interval) * interval


def to_instant(value: Any, *, name: str) -> int:
    """Epoch seconds from a date, datetime or ISO string; naive means UTC."""
    if isinstance(value, bool):
        raise ConfigError(f"--{name} value {value!r} is not a date", where=f"--{name} / {name}=", fix="use e.g. 2026-01-15 or 2026-01-15T06:00:00")
    if isinstance(value, int):
        return value
    if isinstance(value, datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=UTC)
        return int(moment.timestamp() // 1)
    if isinstance(value, date):
        return int(datetime(value.year, value.month, value.day, tzinfo=UTC).timestamp())
    if isinstance(value, str):
        text = value.strip().replace("Z", "+00:00")
        try:
            return to_instant(datetime.fromisoformat(text), name=name)
        except ValueError:
            pass
    raise ConfigError(f"cannot parse --{name} value {value!r} as a date", where=f"--{name} / {name}=", fix="use ISO form, e.g. 2026-01-15 or 2026-01-15T06:00:00")


def format_instant(instant: int | None) -> str:
    if instant is None:
        return "∞"
    return datetime.fromtimestamp(instant, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def plan_range(
    *,
    since: Any = None,
    until: Any = None,
    last: Any = None,
    full_refresh: bool = False,
    now: int | None = None,
    watermark: int | None = None,
    interval: int | None = None,
    data_end: int | None = None,
) -> BuildRange:
    """Decide the label range of a build.

    - ``full_refresh`` -> everything;
    - ``since``/``until`` -> that range, widened to whole grid steps
      (``since`` down, ``until`` up);
    - ``last`` -> ``since = now - last`` aligned down, no upper bound; when the data
      ends before now (``data_end``, the newest event), it counts back from there;
    - nothing -> continue from ``watermark`` (or everything if there is none).
    """
    if full_refresh and (since is not None or until is not None or last is not None):
        raise ConfigError("--full-refresh cannot be combined with --since/--until/--last", where="the build range options", fix="drop one of them")
    if last is not None and (since is not None or until is not None):
        raise ConfigError("--last cannot be combined with --since/--until", where="the build range options", fix="use either --last 7d or --since/--until")
    if full_refresh:
        return BuildRange()
    if last is not None:
        span = parse_duration(last, where="--last")
        current = now if now is not None else int(datetime.now(tz=UTC).timestamp())
        anchored = data_end is not None and data_end < current
        start = (data_end if anchored and data_end is not None else current) - span
        return BuildRange(since=align_down(start, interval) if interval else start, counted_from=data_end if anchored else None)
    if since is None and until is None:
        if watermark is None:
            return BuildRange()
        return BuildRange(since=align_down(watermark, interval) if interval else watermark)
    start = to_instant(since, name="since") if since is not None else None
    end = to_instant(until, name="until") if until is not None else None
    if start is not None and end is not None and start >= end:
        raise ConfigError(
            f"--since {format_instant(start)} is not before --until {format_instant(end)}",
            where="the build range options",
            fix="give a --since earlier than --until",
        )
    if interval:
        start = align_down(start, interval) if start is not None else None
        end = align_up(end, interval) if end is not None else None
    return BuildRange(since=start, until=end)


def next_watermark(previous: int | None, build: BuildRange, newest_label: int | None) -> int | None:
    """The watermark after a build: the end of what is known to be complete.

    That is the grid label just after the newest event's grid step (from there on labels
    may still gain events; the label at that step aggregates only events before it), capped
    at ``until``. A range build never moves it backwards, nor past labels left out: a range
    starting after the previous watermark (``--last 7d`` after missed runs) leaves the
    labels between the two as the previous build computed them, so the watermark stays,
    and the next build without a range recomputes from there. A full refresh recomputes
    every label, so its watermark is its own, earlier than the previous one when events
    were taken out of the source (a mistyped date in 2099, say).

    >>> next_watermark(100, BuildRange(since=300), 400)
    100
    >>> next_watermark(100, BuildRange(since=100), 400)
    400
    >>> next_watermark(4_000_000_000, BuildRange(), 400)
    400
    >>> next_watermark(100, BuildRange(since=100, until=900), None)  # it read no event
    100
    """
    if build.is_full:
        return newest_label
    if previous is not None and build.since is not None and build.since > previous:
        return previous
    # a range that read no event says nothing of what is complete: the watermark stays
    covered = None if newest_label is None else newest_label if build.until is None else min(build.until, newest_label)
    candidates = [v for v in (previous, covered) if v is not None]
    return max(candidates) if candidates else None
