"""The stages of a feature's build and the events a build reports about them.

A build reports each stage's start and end to a callback (the CLI draws them) and logs
each end through :mod:`logging` (a notebook or a scheduler sees them there). Nothing here
prints.

>>> seen = []
>>> clock = StageClock("user_spend", seen.append)
>>> clock.enter(Stage.READ)
>>> seconds = clock.close(rows=3)
>>> [(e.stage.value, e.done, e.rows) for e in seen]
[('read/plan', False, None), ('read/plan', True, 3)]
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

log = logging.getLogger(__name__)


class Stage(StrEnum):
    """What a build is doing, in the order it does it."""

    #: Read the stored version's metadata and the source's schema; plan the range.
    READ = "read/plan"
    #: Run the function, validators and metrics; the engine streams the result into staging files.
    COMPUTE = "compute"
    #: Hash the files, record the version's metadata and publish it.
    WRITE = "write"
    #: Write the newest row per entity to the online store (``build --online``).
    PUBLISH = "publish online"


@dataclass(frozen=True)
class StageEvent:
    """A stage of one feature's build started (``done=False``) or ended (``done=True``).

    ``seconds`` is the stage's duration and ``rows`` the rows it wrote (both on the end
    event); ``detail`` says what the stage works on, e.g. the range a compute recomputes.
    """

    feature: str
    stage: Stage
    done: bool
    seconds: float = 0.0
    rows: int | None = None
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"feature": self.feature, "stage": self.stage.value, "done": self.done, "seconds": self.seconds, "rows": self.rows, "detail": self.detail}


#: Receives the events of a build: :class:`StageEvent`\ s, and each feature's result.
Reporter = Callable[[Any], None]


class StageClock:
    """Times the stages of one feature's build; entering a stage ends the one before."""

    def __init__(self, feature: str, report: Reporter | None = None):
        self.feature = feature
        self.report = report
        self.current: StageEvent | None = None
        self.started = 0.0

    def enter(self, stage: Stage, detail: str = "") -> None:
        """End the running stage (if any) and start ``stage``."""
        self.close()
        self.current = StageEvent(self.feature, stage, done=False, detail=detail)
        self.started = time.perf_counter()
        log.debug("%s: %s started %s", self.feature, stage.value, detail)
        self._emit(self.current)

    def close(self, rows: int | None = None) -> float:
        """End the running stage, with the rows it wrote when known; return its seconds."""
        if self.current is None:
            return 0.0
        seconds = round(time.perf_counter() - self.started, 3)
        ended = StageEvent(self.feature, self.current.stage, done=True, seconds=seconds, rows=rows, detail=self.current.detail)
        self.current = None
        log.info("%s: %s %.2fs%s%s", self.feature, ended.stage.value, seconds, f", {rows:,} rows" if rows is not None else "", f" {ended.detail}" if ended.detail else "")
        self._emit(ended)
        return seconds

    def _emit(self, event: StageEvent) -> None:
        if self.report is not None:
            self.report(event)
