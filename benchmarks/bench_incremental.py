"""Incremental build benchmark: a year of events, then one more day.

Measures, in one run on DuckDB:
  1. the full build of a Sum/Count/Mean 7d+30d feature (interval 1d) over one year;
  2. a one-day incremental build after a day of new events arrives (continuation from the
     stored watermark), and how many source rows it read;
  3. checks that the incremental result equals a full refresh on the same data.

Targets (issue 5): incremental time <= 10% of the full build; rows read <= 15% of the source.

Usage: python benchmarks/bench_incremental.py [--events 10000000] [--entities 20000]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import duckdb

import mlforge as mlf

DAY = 86_400


def generate(directory: Path, events: int, entities: int, start: str = "2025-01-01") -> tuple[Path, Path]:
    """365 days of events from ``start`` in ``year.parquet``, and the next day in a separate file."""
    directory.mkdir(parents=True, exist_ok=True)
    year, extra = directory / "year.parquet", directory / "next_day.parquet"
    con = duckdb.connect()
    con.execute(
        f"""COPY (SELECT (hash(i) % {entities})::BIGINT AS user_id,
                   TIMESTAMP '{start}' + to_microseconds((hash(i * 7 + 1) % (365 * 86400000000))::BIGINT) AS ts,
                   round((hash(i * 13 + 5) % 10000) / 100.0, 2) AS amt
            FROM range({events}) t(i) ORDER BY ts) TO '{year}' (FORMAT parquet)"""
    )
    per_day = max(events // 365, 1)
    con.execute(
        f"""COPY (SELECT (hash(i + 99) % {entities})::BIGINT AS user_id,
                   TIMESTAMP '{start}' + INTERVAL 365 DAY + to_microseconds((hash(i * 3 + 2) % 86400000000)::BIGINT) AS ts,
                   round((hash(i * 11 + 3) % 10000) / 100.0, 2) AS amt
            FROM range({per_day}) t(i) ORDER BY ts) TO '{extra}' (FORMAT parquet)"""
    )
    return year, extra


def feature_for(source_dir: Path):
    @mlf.feature(
        source=mlf.Source(str(source_dir / "*.parquet"), format=mlf.ParquetFormat()),
        keys=["user_id"],
        timestamp="ts",
        interval="1d",
        metrics=[
            mlf.Sum("amt", windows=["7d", "30d"], name="spend"),
            mlf.Count("amt", windows=["7d", "30d"], name="txns"),
            mlf.Mean("amt", windows=["7d", "30d"], name="avg"),
        ],
    )
    def spend(t):
        return t.select("user_id", "ts", "amt")

    return spend


def timed_build(defs: mlf.Definitions, **kwargs) -> tuple[float, object]:
    started = time.perf_counter()
    result = defs.build(**kwargs)
    elapsed = time.perf_counter() - started
    if not result.ok:
        raise SystemExit(f"build failed: {[str(f.error) for f in result.failed]}")
    return elapsed, result


def rows_in(path_glob: str, where: str = "true") -> int:
    return duckdb.sql(f"SELECT count(*) FROM read_parquet('{path_glob}') WHERE {where}").fetchone()[0]


def count_differences(con: duckdb.DuckDBPyConnection, a: str, b: str) -> int:
    """Rows that differ between two stored tables; floats compare within 1e-9 relative
    (parallel float sums are not bit-identical from run to run)."""
    columns = [r[0] for r in con.execute(f"DESCRIBE SELECT * FROM {a}").fetchall()]
    keys = ["user_id", "ts"]
    values = [c for c in columns if c not in keys]
    same = " AND ".join(
        f"(x.{c} IS NULL AND y.{c} IS NULL OR abs(x.{c} - y.{c}) <= 1e-9 * greatest(abs(x.{c}), abs(y.{c}), 1e-12))" for c in values
    )
    on = " AND ".join(f"x.{k} = y.{k}" for k in keys)
    return con.execute(
        f"SELECT count(*) FROM {a} x FULL OUTER JOIN {b} y ON {on} WHERE x.user_id IS NULL OR y.user_id IS NULL OR NOT ({same})"
    ).fetchone()[0]


def targets(figures: dict) -> list[str]:
    """The verdicts of issues 5 and 20 on one run's figures."""
    ratio, share = figures["incremental_over_full"], figures["rows_read_share"]
    return [
        f"- one-day build / full build: {ratio:.3f}; target <= 0.10: {'met' if ratio <= 0.10 else 'MISSED'}",
        f"- source rows read by the one-day build: {share:.3f} of the source; target <= 0.15: {'met' if share <= 0.15 else 'MISSED'}",
        f"- the one-day build equals a full refresh: {'yes' if figures['incremental_equals_full_refresh'] else 'NO'}",
    ]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--entities", type=int, default=20_000)
    parser.add_argument("--start", default="2025-01-01", help="first day of the year of events (the new day is 365 days later)")
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--json", default=None, help="write the figures to this file")
    args = parser.parse_args()

    work = Path(args.workdir or tempfile.mkdtemp(prefix="mlforge-bench-inc-"))
    data = work / "data"
    source = work / "source"
    for left in (work / "store", work / "check"):  # a reused --workdir starts from no store
        shutil.rmtree(left, ignore_errors=True)
    source.mkdir(parents=True, exist_ok=True)
    (source / "next_day.parquet").unlink(missing_ok=True)
    year, extra = generate(data, args.events, args.entities, args.start)
    shutil.copy(year, source / "year.parquet")

    feature = feature_for(source)
    defs = mlf.Definitions("bench", [feature], offline_store=mlf.LocalStore(work / "store"))
    full_seconds, full = timed_build(defs)

    shutil.copy(extra, source / "next_day.parquet")  # a day of new events arrives
    watermark = defs.offline_store.read_metadata("spend")["watermark"]
    inc_seconds, inc = timed_build(defs)
    total_rows = rows_in(str(source / "*.parquet"))
    read_from = watermark - 30 * DAY
    read_rows = rows_in(str(source / "*.parquet"), f"ts >= to_timestamp({read_from})::TIMESTAMP")

    check = mlf.Definitions("check", [feature], offline_store=mlf.LocalStore(work / "check"))
    timed_build(check)
    con = duckdb.connect()
    a = f"read_parquet('{work}/store/spend/{inc['spend'].version}/data/*.parquet')"
    b = f"read_parquet('{work}/check/spend/1.0.0/data/*.parquet')"
    diff = count_differences(con, a, b)

    figures = {
        "events": args.events,
        "start": args.start,
        "entities": args.entities,
        "full_build_s": round(full_seconds, 2),
        "incremental_build_s": round(inc_seconds, 2),
        "incremental_over_full": round(inc_seconds / full_seconds, 3),
        "source_rows": total_rows,
        "rows_read": read_rows,
        "rows_read_share": round(read_rows / total_rows, 3),
        "stored_rows": inc["spend"].rows,
        "versions": [full["spend"].version, inc["spend"].version],
        "incremental_equals_full_refresh": diff == 0,
        "cpu_count": os.cpu_count(),
    }
    print(json.dumps(figures, indent=2))
    for line in targets(figures):
        print(line)
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if diff == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
