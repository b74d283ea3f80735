"""Helpers shared by the benchmark scripts: isolated runs, peak RSS, machine facts, README.

Every measured case runs in its own subprocess, so the peak resident memory of one case
never includes another's. Peak RSS is the larger of two readings:

* the highest sum of RSS over the child's whole process tree, sampled every 50 ms with
  psutil (this counts a JVM that PySpark starts as a grandchild);
* the child's own high-water mark, ``VmHWM`` in ``/proc/<pid>/status``, read with each
  sample (it only grows, so the last reading is exact but for the child's final 50 ms).

Not ``ru_maxrss`` from ``os.wait4``: Linux carries the parent's high-water mark over the
child's ``exec``, so after the parent had itself held 13 GiB (comparing two 10M-row outputs
in DuckDB), a child that never passed 2.4 GiB was reported at 13.6 GiB.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
DATA_DIR = BENCH_DIR / "data"
README = BENCH_DIR / "README.md"


def import_engine(engine: str) -> None:
    """Import mlforge, Ibis and Ibis's backend for ``engine`` (``duckdb``, ``polars``,
    ``pyspark``): what mlforge otherwise imports on first use, inside a measured call."""
    import importlib

    importlib.import_module("mlforge")
    getattr(importlib.import_module("ibis"), engine)  # loads the backend module


def high_water_mark(pid: int) -> int:
    """The process's peak resident memory so far (``VmHWM``), in bytes; 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


@dataclass
class Run:
    """One isolated run: the child's own JSON report plus what the parent measured."""

    ok: bool
    report: dict
    process_seconds: float
    peak_rss_bytes: int
    cpu_seconds: float = 0.0
    stderr_tail: str = ""

    @property
    def seconds(self) -> float:
        """The child's own timing of the measured work (excludes interpreter start-up)."""
        return float(self.report.get("seconds", self.process_seconds))


def run_isolated(
    args: list[str], timeout: float | None = None, env: dict[str, str] | None = None, python: str | None = None
) -> Run:
    """Run ``python args...`` in a fresh process; the child prints one JSON line last.

    ``python`` is the interpreter (default: this one); the peer benchmarks pass another venv's.
    """
    import psutil

    started = time.perf_counter()
    proc = subprocess.Popen([python or sys.executable, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    peak = 0
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        try:
            root = psutil.Process(proc.pid)
        except psutil.NoSuchProcess:
            return
        while not stop.is_set():
            total = 0
            peak = max(peak, high_water_mark(proc.pid))
            try:
                procs = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                break
            for p in procs:
                with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                    total += p.memory_info().rss
            peak = max(peak, total)
            stop.wait(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out_chunks: list[str] = []
    err_chunks: list[str] = []
    readers = [
        threading.Thread(target=lambda: out_chunks.append(proc.stdout.read()), daemon=True),
        threading.Thread(target=lambda: err_chunks.append(proc.stderr.read()), daemon=True),
    ]
    for r in readers:
        r.start()
    deadline = None if timeout is None else started + timeout
    status = None
    usage = None
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if deadline is not None and time.perf_counter() > deadline:
            proc.kill()
            _, status, usage = os.wait4(proc.pid, 0)
            break
        time.sleep(0.02)
    proc.returncode = os.waitstatus_to_exitcode(status)
    elapsed = time.perf_counter() - started
    stop.set()
    sampler.join()
    for r in readers:
        r.join()
    stdout, stderr = "".join(out_chunks), "".join(err_chunks)
    report: dict = {}
    for line in reversed(stdout.strip().splitlines()):
        if line.startswith("{"):
            try:
                report = json.loads(line)
                break
            except ValueError:
                continue
    ok = proc.returncode == 0 and bool(report)
    cpu = usage.ru_utime + usage.ru_stime
    return Run(ok, report, elapsed, peak, cpu, "" if ok else stderr[-3000:])


def machine_info() -> dict[str, str]:
    """CPU count, memory and the versions that matter for the figures."""
    import psutil

    versions = {}
    for module in ("mlforge", "ibis", "duckdb", "polars", "pyspark", "pyarrow"):
        try:
            versions[module] = __import__(module).__version__
        except Exception:  # a missing engine is reported, not fatal
            versions[module] = "not installed"
    return {
        "cpus": str(os.cpu_count()),
        "memory": f"{psutil.virtual_memory().total / 2**30:.0f} GiB",
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
        "date": datetime.now(tz=UTC).strftime("%Y-%m-%d %H:%M UTC"),
        **versions,
    }


def fmt_seconds(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f} s"


def fmt_bytes(value: int | None) -> str:
    return "—" if value is None else f"{value / 2**30:.2f} GiB" if value >= 2**30 else f"{value / 2**20:.0f} MiB"


def replace_readme_section(heading: str, body: str) -> None:
    """Replace the ``## heading`` section of benchmarks/README.md (other sections untouched).

    The file is re-read right before writing, since other benchmarks write their own
    sections of it.
    """
    text = README.read_text() if README.exists() else "# Benchmarks\n\nRun all of them with `nox -s bench`.\n"
    section = f"## {heading}\n\n{body.strip()}\n"
    pattern = re.compile(rf"^## {re.escape(heading)}\s*\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _: section + "\n", text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + section
    README.write_text(text.rstrip("\n") + "\n")
