"""Run every benchmark script in this directory (``nox -s bench``).

Runs each ``bench_*.py`` and ``online_*.py`` that exists (except ``bench_peers.py``, which
makes peer virtualenvs and has its own session, ``nox -s bench_peers``, unless named here),
one after the other, with the
arguments given here passed to none of them (each script has its own defaults and writes
its own section of ``benchmarks/README.md``). A missing script is skipped; a failing one
is reported and the others still run. The exit code is 1 if any script failed.

Usage::

    python benchmarks/run_all.py                 # everything
    python benchmarks/run_all.py build retrieval # only bench_build.py and bench_retrieval.py
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
#: Scripts with their own nox session, run only when named.
OWN_SESSION = ("bench_peers",)


def scripts(selected: list[str]) -> list[Path]:
    found = sorted(BENCH_DIR.glob("bench_*.py")) + sorted(BENCH_DIR.glob("online_*.py"))
    if not selected:
        return [p for p in found if p.stem not in OWN_SESSION]
    wanted = []
    for name in selected:
        matches = [p for p in found if p.stem in (name, f"bench_{name}", f"online_{name}")]
        if not matches:
            print(f"run_all: no benchmark script named {name!r}; skipping", flush=True)
        wanted += matches
    return wanted


def main(argv: list[str]) -> int:
    failed: list[str] = []
    for script in scripts(argv):
        print(f"\n=== {script.name}", flush=True)
        started = time.perf_counter()
        code = subprocess.call([sys.executable, str(script)], cwd=BENCH_DIR.parent)
        took = time.perf_counter() - started
        status = "ok" if code == 0 else f"FAILED (exit {code})"
        print(f"=== {script.name}: {status} in {took:.0f} s", flush=True)
        if code != 0:
            failed.append(script.name)
    if failed:
        print(f"\nrun_all: failed: {', '.join(failed)}", flush=True)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
