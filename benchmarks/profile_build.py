"""Where a build's time goes: stage times, import time and a cProfile of one build.

Builds the feature of ``bench_build.py`` (``Sum``/``Count``/``Mean`` of ``amount`` over 7d
and 30d at interval 1d) once on the given engine, in this process, and prints:

* the import time of ``mlforge`` and the engine's packages;
* the build's stage times (``mlforge.stages`` events: read/plan, compute, write);
* the top functions of a cProfile by cumulative time (``--top``), the profile itself saved
  with ``--pstats`` for ``snakeviz``/``pstats``.

On DuckDB, ``--explain`` also prints ``EXPLAIN ANALYZE`` of the compiled query, run over the
same source (the operator timings of DuckDB's own profiler).

Not a benchmark (no repeats, no isolation); ``bench_build.py`` and ``bench_peers.py`` give
the figures. Usage::

    python benchmarks/profile_build.py --engine duckdb --explain
    python benchmarks/profile_build.py --engine polars --top 40 --pstats /tmp/polars.pstats
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", default="duckdb", choices=("duckdb", "polars"))
    parser.add_argument("--size", default="1m", help="a size of bench_build.py (1m, 10m)")
    parser.add_argument("--top", type=int, default=30, help="functions to print, by cumulative time")
    parser.add_argument("--pstats", help="write the profile here")
    parser.add_argument("--explain", action="store_true", help="DuckDB: EXPLAIN ANALYZE of the compiled query")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    import mlforge as mlf

    imported = time.perf_counter() - started
    started = time.perf_counter()
    __import__(args.engine)
    __import__("ibis")

    engine_imported = time.perf_counter() - started
    print(f"import mlforge: {imported:.2f} s; import {args.engine} + ibis: {engine_imported:.2f} s")

    import bench_build

    src = bench_build.generate(args.size)

    entity_spend = bench_build.spend_feature(src)

    events = []
    with tempfile.TemporaryDirectory(prefix="mlforge-profile-") as out:
        defs = mlf.Definitions("profile", [entity_spend], offline_store=mlf.LocalStore(out), engine=args.engine)
        profile = cProfile.Profile()
        started = time.perf_counter()
        profile.enable()
        result = defs.build(progress=events.append)
        profile.disable()
        total = time.perf_counter() - started
        print(f"build: {total:.2f} s, {result['entity_spend'].rows:,} rows, ok={result.ok}")
        for event in events:
            if getattr(event, "done", False):
                print(f"  stage {event.stage.value:<10} {event.seconds:6.2f} s  {event.detail}")
        stats = pstats.Stats(profile).sort_stats("cumulative")
        if args.pstats:
            stats.dump_stats(args.pstats)
        stats.print_stats(args.top)
    if args.explain and args.engine == "duckdb":
        explain(entity_spend)
    return 0


def explain(feature) -> None:
    """Build once more with DuckDB's EXPLAIN ANALYZE run on the metric query, on the build's
    own connection (the query names the tables that connection registered), before it runs."""
    import ibis.backends.duckdb as ibis_duckdb

    import mlforge as mlf

    plans: list[str] = []
    raw_sql = ibis_duckdb.Backend.raw_sql

    def explaining(self, query, **kwargs):
        text = query if isinstance(query, str) else str(query)
        if text.startswith("SELECT CAST("):  # the engine's metric query (DuckDBEngine.write_parquet)
            rows = raw_sql(self, f"EXPLAIN ANALYZE {text}").fetchall()
            plans.append("\n".join(str(row[-1]) for row in rows))
        return raw_sql(self, query, **kwargs)

    ibis_duckdb.Backend.raw_sql = explaining
    try:
        with tempfile.TemporaryDirectory(prefix="mlforge-explain-") as out:
            mlf.Definitions("explain", [feature], offline_store=mlf.LocalStore(out), engine="duckdb").build()
    finally:
        ibis_duckdb.Backend.raw_sql = raw_sql
    for plan in plans:
        print(plan)


if __name__ == "__main__":
    raise SystemExit(main())
