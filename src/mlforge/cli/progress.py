"""How ``mlforge build`` shows a build as it runs, on stderr.

The build reports :class:`~mlforge.stages.StageEvent`\\ s and each feature's result to one
of these reporters:

* ``LiveProgress`` (stderr is a terminal): a spinner with the running stage and its elapsed
  time, and a line per finished stage (seconds, rows, the range it recomputed);
* ``FeatureLines`` (a pipe or CI log): one line per finished feature;
* ``JsonLines`` (``--log-format json``): one JSON object per event, for schedulers;
* ``Silent`` (``--quiet``).
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any, Literal

from rich.markup import escape

from mlforge.cli.common import count, err
from mlforge.materialize import FeatureResult
from mlforge.stages import StageEvent

LogFormat = Literal["text", "json"]

MARKS = {"built": "[green]✓[/]", "skipped": "[dim]=[/]", "failed": "[red]✗[/]"}


class Silent:
    """``--quiet``: nothing while the build runs."""

    def __enter__(self) -> Silent:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def __call__(self, event: Any) -> None:
        return None


class FeatureLines(Silent):
    """One line per finished feature: status, version, rows written, range, stage times."""

    def __init__(self) -> None:
        self.stages: dict[str, list[StageEvent]] = {}

    def __call__(self, event: Any) -> None:
        if isinstance(event, StageEvent):
            if event.done:
                self.stages.setdefault(event.feature, []).append(event)
            return
        if isinstance(event, FeatureResult):
            err().print(self.line(event, self.stages.pop(event.name, [])), highlight=False)

    @staticmethod
    def line(result: FeatureResult, stages: list[StageEvent]) -> str:
        parts = [f"{MARKS.get(result.status, '?')} {escape(result.name)} {result.status}" + (f" {result.version}" if result.version else "")]
        if result.rows_written is not None:
            parts.append(f"{count(result.rows_written)} rows written")
        elif result.reason and result.status == "skipped":
            parts.append(result.reason)
        if result.online_written is not None:
            parts.append(f"online: {count(result.online_written)} entities written, {count(result.online_removed)} removed")
        compute = next((s for s in stages if s.stage == "compute"), None)
        if compute is not None:
            parts.append(f"range {compute.detail}")
        if stages:
            parts.append(", ".join(f"{s.stage} {s.seconds:.2f}s" for s in stages))
        return " · ".join(parts) + f" ({result.seconds:.2f}s)"


class LiveProgress(FeatureLines):
    """On a terminal: the running stage with a spinner and elapsed time, a line per
    finished stage, and the feature's line when it is done."""

    def __init__(self) -> None:
        from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        super().__init__()
        self.progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=err(), transient=True)
        self.tasks: dict[str, Any] = {}

    def __enter__(self) -> LiveProgress:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(None, None, None)

    def __call__(self, event: Any) -> None:
        console = self.progress.console
        if isinstance(event, StageEvent):
            if not event.done:
                description = f"[bold]{event.feature}[/] {event.stage}" + (f" [dim]{event.detail}[/]" if event.detail else "")
                if event.feature not in self.tasks:
                    self.tasks[event.feature] = self.progress.add_task(description, total=None)
                self.progress.update(self.tasks[event.feature], description=description)
                return
            self.stages.setdefault(event.feature, []).append(event)
            rows = f"  {count(event.rows)} rows" if event.rows is not None else ""
            detail = f"  range {event.detail}" if event.detail and event.stage == "compute" else ""
            console.print(f"  [dim]{event.feature}[/] {event.stage:<14} {event.seconds:>7.2f}s{rows}{detail}", highlight=False)
            return
        if isinstance(event, FeatureResult):
            task = self.tasks.pop(event.name, None)
            if task is not None:
                self.progress.remove_task(task)
            self.stages.pop(event.name, None)
            console.print(self.line(event, []), highlight=False)  # its stages are printed above


class JsonLines(Silent):
    """``--log-format json``: each stage start and end and each result as one JSON line."""

    def __call__(self, event: Any) -> None:
        if isinstance(event, StageEvent):
            payload = {"event": "stage_end" if event.done else "stage_start", **event.to_dict()}
        elif isinstance(event, FeatureResult):
            payload = {"event": "feature", **event.to_dict()}
        else:
            return
        write_json_line(payload)


def write_json_line(payload: dict[str, Any]) -> None:
    import sys

    stamped = {"time": datetime.now(tz=UTC).isoformat(timespec="milliseconds"), **payload}
    sys.stderr.write(json.dumps(stamped, default=str) + "\n")
    sys.stderr.flush()


class JsonLogFormatter(logging.Formatter):
    """Log records as JSON lines (``--log-format json``), beside the build's events."""

    def format(self, record: logging.LogRecord) -> str:
        payload = {
            "time": datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds"),
            "event": "log", "level": record.levelname.lower(), "logger": record.name, "message": record.getMessage(),
        }
        if record.exc_info:
            payload["traceback"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str)


def reporter(*, quiet: bool, log_format: LogFormat, terminal: bool, table_output: bool) -> Silent:
    """The reporter for a build: quiet, JSON lines, live on a terminal, else a line per
    feature (only when the result goes out as a table; ``--format json`` keeps stderr quiet
    in a pipe)."""
    if quiet:
        return Silent()
    if log_format == "json":
        for handler in logging.getLogger("mlforge").handlers:
            handler.setFormatter(JsonLogFormatter())
        return JsonLines()
    if terminal:
        return LiveProgress()
    return FeatureLines() if table_output else Silent()
