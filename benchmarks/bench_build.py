"""Build benchmark: one metric feature on synthetic events, mlforge vs hand-written plans.

The feature is ``Sum``/``Count``/``Mean`` of ``amount`` over 7d and 30d at interval 1d,
keyed by ``entity_id``. Cases, each measured in its own process (wall time of the work
and peak RSS of the process tree):

* ``mlforge-duckdb``, ``mlforge-polars``, ``mlforge-pyspark``: ``mlf.Definitions(...).build()``
  into a ``LocalStore`` in a temporary directory -- the public API, including the store's
  metadata (row count, file hash) and the W9 dropped-row count;
* ``hand-duckdb``: the query a careful engineer writes by hand in DuckDB SQL (daily
  partials, a per-entity day spine, window frames), written to Parquet sorted by
  ``(entity_id, ts)`` with the same compression;
* ``naive-duckdb`` (1M only): a per-entity day spine joined to all of the entity's
  events, then filtered to the window and grouped;
* ``hand-pyspark-spread`` and ``hand-pyspark-window``: the two Spark SQL jobs a Spark
  engineer writes by hand (daily partials spread over the 30 offsets and grouped; or a
  dense day spine per entity framed by window functions), on a session with mlforge's own
  settings, written by Spark ordered by ``(entity_id, ts)``; mlforge's PySpark build is
  held against the faster of the two.

Every output is checked against the hand-written one (``EXCEPT`` both ways and equal row
counts; the amounts are multiples of 0.25, so sums are exact in any order).

Usage::

    python benchmarks/bench_build.py                  # 1M and 10M, writes the README section
    python benchmarks/bench_build.py --sizes 1m --repeat 3 --no-readme
    python benchmarks/bench_build.py --cases mlforge-duckdb,hand-duckdb --sizes 10m
    python benchmarks/bench_build.py --sizes 1m --repeat 2 --no-readme \
        --cases hand-pyspark-spread,hand-pyspark-window,mlforge-pyspark
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    DATA_DIR,
    fmt_bytes,
    fmt_seconds,
    import_engine,
    machine_info,
    replace_readme_section,
    run_isolated,
)

RESULTS = Path(__file__).resolve().parent / "results"
SIZES = {"1m": (1_000_000, 20_000), "10m": (10_000_000, 200_000)}
CASES = (
    "hand-duckdb",
    "mlforge-duckdb",
    "naive-duckdb",
    "mlforge-polars",
    "hand-pyspark-spread",
    "hand-pyspark-window",
    "mlforge-pyspark",
)
#: The hand-written Spark jobs mlforge's PySpark build is held against (the faster of them).
HAND_SPARK = ("hand-pyspark-spread", "hand-pyspark-window")
NAIVE_MAX_EVENTS = 1_000_000
#: Cases measured in the first round only: slow, and far from the targets' boundaries.
ONCE = ("naive-duckdb",)
FEATURE = "entity_spend"
METRIC_COLUMNS = [f"amount_{fn}_{w}" for fn in ("sum", "count", "mean") for w in ("7d", "30d")]


# -- data -----------------------------------------------------------------------------------
def events_path(size: str) -> Path:
    return DATA_DIR / f"events_{size}.parquet"


def generate(size: str) -> Path:
    """Synthetic events over 2025: ~0.1% null keys, ~1% null amounts, amounts in steps of 0.25."""
    import duckdb

    path = events_path(size)
    if path.exists():
        return path
    rows, entities = SIZES[size]
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute(
        f"""
        COPY (
            SELECT
                CASE WHEN hash(i, 1) % 1000 = 0 THEN NULL ELSE (hash(i, 2) % {entities})::BIGINT END AS entity_id,
                TIMESTAMP '2025-01-01' + to_microseconds((hash(i, 3) % 31536000000000)::BIGINT) AS ts,
                CASE WHEN hash(i, 4) % 100 = 0 THEN NULL ELSE (hash(i, 5) % 4000)::DOUBLE / 4 END AS amount
            FROM range({rows}) AS r(i)
            ORDER BY ts
        ) TO '{tmp}' (FORMAT parquet, COMPRESSION zstd)
        """
    )
    con.close()
    tmp.rename(path)
    return path


# -- hand-written and naive plans -------------------------------------------------------------
HAND_SQL = """
WITH events AS (
    SELECT entity_id, amount, floor(epoch(ts) / 86400)::BIGINT AS day
    FROM read_parquet('{src}') WHERE entity_id IS NOT NULL AND ts IS NOT NULL
), daily AS (
    SELECT entity_id, day, count(*) AS n, count(amount) AS c, sum(amount) AS s
    FROM events GROUP BY entity_id, day
), span AS (
    SELECT entity_id, min(day) AS first_day, max(day) AS last_day FROM daily GROUP BY entity_id
), spine AS (
    SELECT entity_id, unnest(range(first_day + 1, last_day + 31)) AS label FROM span
), grid AS (
    -- the events of day d are known at label d + 1
    SELECT spine.entity_id, spine.label, daily.n, daily.c, daily.s
    FROM spine LEFT JOIN daily ON daily.entity_id = spine.entity_id AND daily.day = spine.label - 1
), windowed AS (
    SELECT entity_id, label,
        sum(n) OVER w30 AS n30,
        sum(s) OVER w7 AS s7, sum(s) OVER w30 AS s30,
        sum(c) OVER w7 AS c7, sum(c) OVER w30 AS c30
    FROM grid
    WINDOW w7 AS (PARTITION BY entity_id ORDER BY label ROWS BETWEEN 6 PRECEDING AND CURRENT ROW),
           w30 AS (PARTITION BY entity_id ORDER BY label ROWS BETWEEN 29 PRECEDING AND CURRENT ROW)
)
SELECT entity_id, to_timestamp(label * 86400) AS ts,
    coalesce(s7, 0) AS amount_sum_7d, coalesce(s30, 0) AS amount_sum_30d,
    coalesce(c7, 0)::BIGINT AS amount_count_7d, coalesce(c30, 0)::BIGINT AS amount_count_30d,
    s7 / nullif(c7, 0) AS amount_mean_7d, s30 / nullif(c30, 0) AS amount_mean_30d
FROM windowed WHERE n30 > 0
ORDER BY entity_id, ts
"""

NAIVE_SQL = """
WITH events AS (
    SELECT entity_id, ts, amount FROM read_parquet('{src}') WHERE entity_id IS NOT NULL AND ts IS NOT NULL
), span AS (
    SELECT entity_id, date_trunc('day', min(ts)) AS first_day, date_trunc('day', max(ts)) AS last_day
    FROM events GROUP BY entity_id
), spine AS (
    SELECT entity_id, unnest(generate_series(first_day + INTERVAL 1 DAY, last_day + INTERVAL 30 DAY, INTERVAL 1 DAY)) AS t
    FROM span
), joined AS (
    SELECT spine.entity_id, spine.t, events.ts, events.amount
    FROM spine JOIN events ON events.entity_id = spine.entity_id
    WHERE events.ts < spine.t AND events.ts >= spine.t - INTERVAL 30 DAY
)
SELECT entity_id, t::TIMESTAMPTZ AS ts,
    coalesce(sum(amount) FILTER (ts >= t - INTERVAL 7 DAY), 0) AS amount_sum_7d,
    coalesce(sum(amount), 0) AS amount_sum_30d,
    count(amount) FILTER (ts >= t - INTERVAL 7 DAY) AS amount_count_7d,
    count(amount) AS amount_count_30d,
    avg(amount) FILTER (ts >= t - INTERVAL 7 DAY) AS amount_mean_7d,
    avg(amount) AS amount_mean_30d
FROM joined GROUP BY entity_id, t
ORDER BY entity_id, ts
"""


def run_sql_case(sql: str, src: Path, out_dir: Path) -> dict:
    import duckdb

    started = time.perf_counter()
    from mlforge.engines.duckdb import default_memory_limit

    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    # The same memory cap and spill directory as mlforge's DuckDB engine: like for like.
    spill = tempfile.mkdtemp(prefix="bench-duckdb-")
    con.execute(f"SET temp_directory = '{spill}'")
    con.execute(f"SET memory_limit = '{default_memory_limit()}'")
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / "part-00000.parquet"
    con.execute(f"COPY ({sql.format(src=src)}) TO '{target}' (FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE 1048576)")
    con.close()
    shutil.rmtree(spill, ignore_errors=True)
    return {"seconds": time.perf_counter() - started, "output": str(out_dir)}


# -- hand-written Spark ------------------------------------------------------------------------
# Two jobs a Spark engineer would write, on a session with mlforge's own settings (the
# engine's session factory: local[2], its driver memory, shuffle partitions, UTC). Both
# start from daily partials; the output is ordered by (entity_id, ts) like mlforge's.
SPARK_DAILY = """
SELECT entity_id, unix_date(CAST(ts AS DATE)) AS day,
       count(*) AS n, count(amount) AS c, sum(amount) AS s
FROM events WHERE entity_id IS NOT NULL AND ts IS NOT NULL
GROUP BY entity_id, day
"""

#: Each day's partials spread over the 30 labels whose windows hold it, then grouped.
SPARK_SPREAD = """
WITH spread AS (
    SELECT entity_id, day + o AS label, o, c, s
    FROM daily CROSS JOIN (SELECT explode(sequence(1, 30)) AS o) AS offsets
), grouped AS (
    SELECT entity_id, label,
        sum(IF(o <= 7, s, NULL)) AS s7, sum(s) AS s30,
        sum(IF(o <= 7, c, NULL)) AS c7, sum(c) AS c30
    FROM spread GROUP BY entity_id, label
)
SELECT entity_id, timestamp_seconds(label * 86400) AS ts,
    coalesce(s7, 0D) AS amount_sum_7d, coalesce(s30, 0D) AS amount_sum_30d,
    coalesce(c7, 0L) AS amount_count_7d, c30 AS amount_count_30d,
    s7 / nullif(c7, 0) AS amount_mean_7d, s30 / nullif(c30, 0) AS amount_mean_30d
FROM grouped
ORDER BY entity_id, ts
"""

#: A dense day spine per entity joined to the partials of the day before, framed by rows.
SPARK_WINDOW = """
WITH span AS (
    SELECT entity_id, min(day) AS first_day, max(day) AS last_day FROM daily GROUP BY entity_id
), spine AS (
    SELECT entity_id, explode(sequence(first_day + 1, last_day + 30)) AS label FROM span
), grid AS (
    SELECT spine.entity_id, spine.label, daily.n, daily.c, daily.s
    FROM spine LEFT JOIN daily ON daily.entity_id = spine.entity_id AND daily.day = spine.label - 1
), windowed AS (
    SELECT entity_id, label,
        sum(n) OVER w30 AS n30,
        sum(s) OVER w7 AS s7, sum(s) OVER w30 AS s30,
        sum(c) OVER w7 AS c7, sum(c) OVER w30 AS c30
    FROM grid
    WINDOW w7 AS (PARTITION BY entity_id ORDER BY label ROWS BETWEEN 6 PRECEDING AND CURRENT ROW),
           w30 AS (PARTITION BY entity_id ORDER BY label ROWS BETWEEN 29 PRECEDING AND CURRENT ROW)
)
SELECT entity_id, timestamp_seconds(label * 86400) AS ts,
    coalesce(s7, 0D) AS amount_sum_7d, coalesce(s30, 0D) AS amount_sum_30d,
    coalesce(c7, 0L) AS amount_count_7d, coalesce(c30, 0L) AS amount_count_30d,
    s7 / nullif(c7, 0) AS amount_mean_7d, s30 / nullif(c30, 0) AS amount_mean_30d
FROM windowed WHERE n30 > 0
ORDER BY entity_id, ts
"""


def run_spark_case(plan: str, src: Path, out_dir: Path) -> dict:
    from mlforge.engines.pyspark import PySparkEngine

    started = time.perf_counter()  # the session's start counts, as it does in mlforge's case
    spark = PySparkEngine(master="local[2]").session
    spark.read.parquet(str(src)).createOrReplaceTempView("events")
    spark.sql(SPARK_DAILY).createOrReplaceTempView("daily")
    spark.sql(SPARK_SPREAD if plan == "spread" else SPARK_WINDOW).write.mode("overwrite").parquet(
        str(out_dir)
    )
    seconds = time.perf_counter() - started
    spark.stop()
    return {"seconds": seconds, "output": str(out_dir)}


# -- mlforge ----------------------------------------------------------------------------------
def spend_feature(src: Path):
    """The benchmarked feature: 7d and 30d sum, count and mean of ``amount`` per entity."""
    import mlforge as mlf

    @mlf.feature(
        mlf.Source(str(src)),
        keys=["entity_id"],
        timestamp="ts",
        interval="1d",
        metrics=[
            mlf.Sum("amount", windows=["7d", "30d"]),
            mlf.Count("amount", windows=["7d", "30d"]),
            mlf.Mean("amount", windows=["7d", "30d"]),
        ],
    )
    def entity_spend(events):
        return events

    return entity_spend


def run_mlforge_case(engine_name: str, src: Path, out_dir: Path) -> dict:
    import mlforge as mlf

    entity_spend = spend_feature(src)
    # The engine's libraries are imported before the clock starts, as the hand-written cases
    # import duckdb first: mlforge imports Ibis and its backend on first use (~0.5 s), which
    # the process's CPU time still counts.
    import_engine(engine_name)
    engine = engine_name
    if engine_name == "pyspark":
        from mlforge.engines.pyspark import PySparkEngine

        engine = PySparkEngine(master="local[2]")
    started = time.perf_counter()
    defs = mlf.Definitions(
        "bench", [entity_spend], offline_store=mlf.LocalStore(str(out_dir)), engine=engine
    )
    result = defs.build()
    seconds = time.perf_counter() - started
    feature = result[FEATURE]
    if not result.ok:
        raise SystemExit(f"build failed: {feature.error}")
    data_dir = out_dir / FEATURE / feature.version / "data"
    report = {
        "seconds": seconds,
        "output": str(data_dir),
        "rows": feature.rows,
        "dropped": feature.dropped_rows,
    }
    defs.close() if hasattr(defs, "close") else None
    return report


def child(case: str, size: str, out_dir: Path) -> None:
    src = events_path(size)
    family, engine = case.split("-", 1)
    if family == "mlforge":
        report = run_mlforge_case(engine, src, out_dir)
    elif engine.startswith("pyspark-"):
        report = run_spark_case(engine.split("-", 1)[1], src, out_dir)
    else:
        report = run_sql_case(HAND_SQL if family == "hand" else NAIVE_SQL, src, out_dir)
    print(json.dumps(report), flush=True)


# -- checking ---------------------------------------------------------------------------------
def compare(expected_dir: str, actual_dir: str) -> str | None:
    """None when both outputs hold the same rows; else a description of the difference."""
    import duckdb

    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    cols = ", ".join(["entity_id", "epoch_us(ts) AS ts", *METRIC_COLUMNS])

    def rel(d: str) -> str:
        return f"(SELECT {cols} FROM read_parquet('{d}/*.parquet'))"

    n_exp = con.execute(f"SELECT count(*) FROM {rel(expected_dir)}").fetchone()[0]
    n_act = con.execute(f"SELECT count(*) FROM {rel(actual_dir)}").fetchone()[0]
    missing = con.execute(
        f"SELECT count(*) FROM ({rel(expected_dir)} EXCEPT ALL {rel(actual_dir)})"
    ).fetchone()[0]
    extra = con.execute(
        f"SELECT count(*) FROM ({rel(actual_dir)} EXCEPT ALL {rel(expected_dir)})"
    ).fetchone()[0]
    con.close()
    if n_exp == n_act and missing == 0 and extra == 0:
        return None
    return f"rows {n_act} vs {n_exp} expected; {missing} missing, {extra} unexpected"


def sorted_by_key(data_dir: str) -> bool:
    """The mlforge contract writes rows ordered by (keys, ts); check the hand-written one too."""
    import duckdb

    con = duckdb.connect()
    bad = con.execute(
        f"""SELECT count(*) FROM (
              SELECT entity_id, ts, lag(entity_id) OVER () AS pk, lag(ts) OVER () AS pts
              FROM read_parquet('{data_dir}/*.parquet', file_row_number = true) ORDER BY filename, file_row_number)
            WHERE pk > entity_id OR (pk = entity_id AND pts >= ts)"""
    ).fetchone()[0]
    con.close()
    return bad == 0


# -- driver -----------------------------------------------------------------------------------
def measure(case: str, size: str, work: Path, rep: int) -> dict:
    out_dir = work / f"{case}-{size}-{rep}"
    run = run_isolated([__file__, "--child", case, "--size", size, "--out-dir", str(out_dir)])
    entry = {
        "case": case,
        "size": size,
        "rep": rep,
        "ok": run.ok,
        "seconds": run.seconds if run.ok else None,
        "process_seconds": run.process_seconds,
        "cpu_seconds": run.cpu_seconds,
        "peak_rss": run.peak_rss_bytes,
        **run.report,
    }
    if not run.ok:
        entry["error"] = (
            run.stderr_tail.strip().splitlines()[-1] if run.stderr_tail.strip() else "no report"
        )
        print(f"    {case} {size} run {rep}: FAILED: {entry['error']}", flush=True)
    else:
        print(
            f"    {case} {size} run {rep}: {run.seconds:.2f} s (cpu {run.cpu_seconds:.1f} s), peak {fmt_bytes(run.peak_rss_bytes)}",
            flush=True,
        )
    return entry


def summarise(entries: list[dict]) -> dict[tuple[str, str], dict]:
    """Best time and its peak RSS per (case, size); RSS is the max over runs."""
    summary: dict[tuple[str, str], dict] = {}
    for e in entries:
        key = (e["case"], e["size"])
        s = summary.setdefault(
            key,
            {
                "best": None,
                "peak_rss": 0,
                "runs": 0,
                "failed": 0,
                "check": None,
                "rows": e.get("rows"),
            },
        )
        s["runs"] += 1
        if not e["ok"]:
            s["failed"] += 1
            s["error"] = e.get("error")
            continue
        s["best"] = e["seconds"] if s["best"] is None else min(s["best"], e["seconds"])
        s["cpu"] = e["cpu_seconds"] if s.get("cpu") is None else min(s["cpu"], e["cpu_seconds"])
        s["peak_rss"] = max(s["peak_rss"], e["peak_rss"])
        s["check"] = e.get("check", s["check"])
        s["rows"] = e.get("rows") or s["rows"]
    return summary


def run(sizes: list[str], cases: list[str], repeat: dict[str, int]) -> list[dict]:
    entries: list[dict] = []
    for size in sizes:
        print(f"== {size}: generating/reading {events_path(size)}", flush=True)
        generate(size)
        size_cases = [
            c for c in cases if not (c.startswith("naive") and SIZES[size][0] > NAIVE_MAX_EVENTS)
        ]
        work = Path(tempfile.mkdtemp(prefix=f"mlforge-bench-{size}-"))
        try:
            reference: str | None = None
            # Interleave the cases (and repeat the rounds) so noise from other work on the
            # machine hits all of them alike.
            for rep in range(repeat[size]):
                for case in size_cases:
                    if case in ONCE and rep > 0:
                        continue
                    entry = measure(case, size, work, rep)
                    entries.append(entry)
                    if not entry["ok"]:
                        continue
                    if case == "hand-duckdb" and reference is None:
                        reference = entry["output"]
                        entry["check"] = (
                            "reference" if sorted_by_key(reference) else "reference (UNSORTED)"
                        )
                        entry["rows"] = output_rows(reference)
                    elif reference is not None and rep == 0:
                        diff = compare(reference, entry["output"])
                        entry["check"] = "equal" if diff is None else f"DIFFERS: {diff}"
                        print(f"      check vs hand-written: {entry['check']}", flush=True)
                    if entry["output"] != reference:
                        shutil.rmtree(
                            Path(entry["output"]).parents[2]
                            if case.startswith("mlforge")
                            else entry["output"],
                            ignore_errors=True,
                        )
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return entries


def output_rows(data_dir: str) -> int:
    import duckdb

    return (
        duckdb.connect()
        .execute(f"SELECT count(*) FROM read_parquet('{data_dir}/*.parquet')")
        .fetchone()[0]
    )


def targets(summary: dict[tuple[str, str], dict]) -> list[str]:
    def best(case: str, size: str) -> float | None:
        return summary.get((case, size), {}).get("best")

    def cpu(case: str, size: str, limit: float) -> str:
        mine, hand = (
            summary.get((case, size), {}).get("cpu"),
            summary.get(("hand-duckdb", size), {}).get("cpu"),
        )
        if not (mine and hand):
            return ""
        return f"; CPU time {mine / hand:.2f}× ({'met' if mine / hand <= limit else 'MISSED'} on CPU time)"

    # Issue 20's targets: each engine at or below the hand-written DuckDB query, and a peak
    # RSS within 4 GiB at 10M. (The foundation issue's "10x the naive spine join" is withdrawn:
    # DuckDB's planner makes that query cheap; the naive case is kept as a reference.)
    lines = []
    for size in ("1m", "10m"):
        hand = best("hand-duckdb", size)
        for case, label in (("mlforge-duckdb", "DuckDB"), ("mlforge-polars", "Polars")):
            mine = best(case, size)
            if hand and mine:
                ratio = mine / hand
                lines.append(
                    f"{label} build / hand-written DuckDB at {size.upper()}: {ratio:.2f}× wall ({'met' if ratio <= 1.0 else 'MISSED'} on wall time){cpu(case, size, 1.0)}; target ≤ 1.0×"
                )
    for case, label in (("mlforge-duckdb", "DuckDB"), ("mlforge-polars", "Polars")):
        rss = summary.get((case, "10m"), {})
        if rss.get("best"):
            lines.append(
                f"{label} build peak RSS at 10M: {fmt_bytes(rss['peak_rss'])} (target ≤ 4 GiB: {'met' if rss['peak_rss'] <= 4 * 2**30 else 'MISSED'})"
            )
    for size in ("1m", "10m"):
        spark, hands = (
            best("mlforge-pyspark", size),
            [(best(c, size), c) for c in HAND_SPARK if best(c, size)],
        )
        if spark and hands:
            fastest, which = min(hands)
            ratio = spark / fastest
            lines.append(
                f"PySpark build / the faster hand-written Spark job ({which}) at {size.upper()}: {ratio:.2f}× wall ({'met' if ratio <= 1.0 else 'MISSED'}); target ≤ 1.0×"
            )
    spark = summary.get(("mlforge-pyspark", "10m"))
    if spark:
        done = spark.get("best") is not None and spark.get("check") == "equal"
        lines.append(f"PySpark completes 10M: {'met' if done else 'MISSED'}")
        if done:
            lines.append(
                f"PySpark 10M build in under 10 minutes: {spark['best']:.0f} s ({'met' if spark['best'] < 600 else 'MISSED'})"
            )
    return lines


def notes(summary: dict[tuple[str, str], dict]) -> list[str]:
    """What the figures mean: where the build's time goes, and the naive target."""
    hand, naive = summary.get(("hand-duckdb", "1m"), {}), summary.get(("naive-duckdb", "1m"), {})
    lines = [
        "Where the time goes, before and after issue 20's changes, is written down in the",
        "sections on issue 20 and in \"Where the build's time goes\" below. The hand-written query",
        "writes one file with DuckDB's parallel writer; mlforge writes one file per month, which is",
        "what lets an incremental build rewrite only the months it touches. Polars holds its result",
        "in key ranges of ~16M rows (`docs/engines.md`), which bounds its memory at 10M.",
    ]
    if hand.get("best") and naive.get("best"):
        lines += [
            "",
            f"The naive plan takes only {naive['best'] / hand['best']:.1f}× the hand-written query's wall time here: DuckDB",
            "runs the spine-to-events join as a hash join on the entity with the window test as a",
            "residual filter. So \"10× faster than the naive plan\" would mean several times faster",
            "than hand-written SQL on the same engine; issue 20 withdrew that target for this reason.",
        ]
    return [*lines, ""]


def render(summary: dict[tuple[str, str], dict], info: dict[str, str], command: str) -> str:
    labels = {
        "hand-duckdb": "hand-written DuckDB SQL",
        "mlforge-duckdb": "mlforge, DuckDB",
        "naive-duckdb": "naive spine join (DuckDB)",
        "mlforge-polars": "mlforge, Polars",
        "hand-pyspark-spread": "hand-written Spark SQL, spread over offsets, local[2]",
        "hand-pyspark-window": "hand-written Spark SQL, window over daily partials, local[2]",
        "mlforge-pyspark": "mlforge, PySpark local[2]",
    }
    rows = [
        "| events | case | best wall time | vs hand-written | least CPU time | vs hand-written | peak RSS | runs | output check |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for size in SIZES:
        hand = summary.get(("hand-duckdb", size), {})
        for case in CASES:
            s = summary.get((case, size))
            if not s:
                continue
            ratio = (
                f"{s['best'] / hand['best']:.2f}×" if s.get("best") and hand.get("best") else "—"
            )
            cpu_ratio = (
                f"{s['cpu'] / hand['cpu']:.2f}×" if s.get("cpu") and hand.get("cpu") else "—"
            )
            cpu_text = fmt_seconds(s.get("cpu"))
            if "pyspark" in case:  # the JVM is not the child's reaped child: its CPU is not counted
                cpu_text, cpu_ratio = "n/a (JVM)", "—"
            check = s.get("check") or (f"failed: {s.get('error')}" if s["failed"] else "—")
            time_text = fmt_seconds(s["best"]) if s["best"] is not None else "failed"
            rows.append(
                f"| {size.upper()} | {labels[case]} | {time_text} | {ratio} | {cpu_text} | {cpu_ratio} "
                f"| {fmt_bytes(s['peak_rss']) if s['best'] else '—'} | {s['runs'] - s['failed']}/{s['runs']} | {check} |"
            )
    versions = ", ".join(
        f"{k} {info[k]}" for k in ("mlforge", "ibis", "duckdb", "polars", "pyspark", "pyarrow")
    )
    out_rows = ", ".join(
        f"{size.upper()}: {summary[('hand-duckdb', size)]['rows']:,} rows"
        for size in SIZES
        if ("hand-duckdb", size) in summary and summary[("hand-duckdb", size)].get("rows")
    )
    return "\n".join(
        [
            "One feature, `Sum`/`Count`/`Mean` of `amount` over 7d and 30d at interval 1d, keyed by `entity_id`,",
            "on synthetic events over one year (1M events / 20k entities and 10M events / 200k entities;",
            "0.1% null keys, 1% null amounts). Each case runs in its own process; wall time is the measured",
            "work inside it (for mlforge: `mlf.Definitions(...).build()` into a `LocalStore`, so it includes the",
            "store's metadata, file hash and W9 dropped-row count; each side's libraries, DuckDB for the",
            "hand-written query and Ibis with its backend for mlforge, are imported before the clock starts",
            "since 2026-12-06 22:35 UTC -- before that mlforge's wall time included Ibis's import, ~0.5 s);",
            "peak RSS is the process tree's (the JVM",
            "included for PySpark). Best of the runs listed; cases are interleaved round by round. CPU time is",
            "user + system time of the case's whole process (all threads, interpreter start-up and imports",
            "included); on a shared machine it is the steadier",
            "figure. The hand-written and naive queries run with the same DuckDB memory limit and spill",
            "directory as mlforge's DuckDB engine. Every output equals the hand-written query's (`EXCEPT ALL`",
            "both ways, equal row counts).",
            *([f"Output: {out_rows}."] if out_rows else []),
            "",
            *rows,
            "",
            "Targets:",
            "",
            *[f"- {line}" for line in targets(summary)],
            "",
            *notes(summary),
            f"Machine: {info['cpus']} cores, {info['memory']} RAM, {info['platform']}, Python {info['python']}; {versions}.",
            f"Date: {info['date']}. Command: `{command}` (all of it: `nox -s bench`).",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1m,10m", help="comma-separated subset of 1m,10m")
    parser.add_argument(
        "--cases", default=",".join(CASES), help=f"comma-separated subset of {','.join(CASES)}"
    )
    parser.add_argument("--repeat", type=int, default=3, help="rounds at 1M (10M runs once)")
    parser.add_argument("--repeat-10m", type=int, default=1)
    parser.add_argument(
        "--no-readme", action="store_true", help="do not write benchmarks/README.md"
    )
    parser.add_argument(
        "--json",
        help="where to write all runs as JSON (default benchmarks/results/build_<sizes>.json, which chart.py reads)",
    )
    parser.add_argument(
        "--from-json",
        help="comma-separated JSON files of earlier runs: render the README section from them",
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--size", help=argparse.SUPPRESS)
    parser.add_argument("--out-dir", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child, args.size, Path(args.out_dir))
        return 0
    sizes = [s.strip().lower() for s in args.sizes.split(",") if s.strip()]
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = [s for s in sizes if s not in SIZES] + [c for c in cases if c not in CASES]
    if unknown:
        parser.error(f"unknown sizes/cases {unknown}")
    if "hand-duckdb" not in cases:
        cases.insert(0, "hand-duckdb")  # the reference every output is checked against
    if args.from_json:
        saved = [json.loads(Path(f).read_text()) for f in args.from_json.split(",")]
        info = saved[0]["machine"]
        entries = [e for run_ in saved for e in run_["runs"]]
        command = " + ".join(run_.get("command", "?") for run_ in saved)
    else:
        info = machine_info()
        entries = run(sizes, cases, {"1m": args.repeat, "10m": args.repeat_10m})
        command = (
            "python benchmarks/bench_build.py "
            + " ".join(argv if argv is not None else sys.argv[1:])
        ).strip()
    summary = summarise(entries)
    text = render(summary, info, command)
    print("\n" + text)
    if not args.from_json:
        out = Path(args.json) if args.json else RESULTS / f"build_{'_'.join(sizes)}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(
            json.dumps(
                {"machine": info, "command": command, "runs": entries}, indent=2, default=str
            )
        )
    if not args.no_readme:
        replace_readme_section("Build", text)
    bad = [e for e in entries if not e["ok"] or str(e.get("check", "")).startswith("DIFFERS")]
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
