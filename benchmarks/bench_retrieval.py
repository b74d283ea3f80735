"""Retrieval benchmark: point-in-time training data, mlforge vs a hand-written DuckDB query.

Stored features (written in the offline store's layout through ``LocalStore.stage`` /
``publish``, generated with DuckDB SQL):

* ``bench_spend`` -- a metric feature on a 1d grid: ``--feature-rows`` rows over
  ``--keys`` users (some grid rows absent, as rule W3 leaves them), columns
  ``spend_7d`` (sum), ``n_7d`` (count), ``avg_7d`` (mean);
* ``bench_last`` -- a non-metric feature: ``--feature-rows`` events at random seconds
  (unique per user, so the newest event before a label is never a tie), columns
  ``amount``, ``merchant``.

Labels: ``--rows`` rows ``(user_id, ts, label)`` with random times (10% exactly on the
grid, 2% unknown users, some before any event), as a PyArrow table.

Cases, each in its own process (wall time of the retrieval call, peak RSS of the process):

* ``mlforge-duckdb``: ``mlf.get_training_data(["bench_spend", "bench_last"], labels,
  timestamp="ts", definitions=defs)`` -- returns a PyArrow table in the labels' order;
* ``mlforge-polars``, ``mlforge-pyspark``: the same call with ``engine="polars"`` or a
  ``PySparkEngine(master="local[2]")`` (the labels are a PyArrow table, so only their key
  and label columns go to the engine and the feature columns come back in row order);
* ``hand-duckdb``: one SQL query over the same files -- an equality join on
  ``time_bucket('1 day', ts)`` and an ``ASOF LEFT JOIN``, ``ORDER BY`` the row number,
  fetched as Arrow;
* ``hand-pyspark``: the Spark SQL job a Spark engineer writes (the grid equality join,
  then labels and events unioned per user, ``last(event, true)`` over time carrying the
  newest event to each label), on a session with mlforge's settings, ordered by the row
  number and fetched as Arrow -- what mlforge's PySpark retrieval is held against.

Both results are checked to be equal (row count and per-column checksums).

Usage::

    python benchmarks/bench_retrieval.py                          # 1M labels, 10M-row features
    python benchmarks/bench_retrieval.py --rows 100000 --feature-rows 1000000 --no-readme
"""

from __future__ import annotations

import argparse
import json
import sys
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

CASES = ("hand-duckdb", "mlforge-duckdb", "mlforge-polars", "hand-pyspark", "mlforge-pyspark")
RESULTS = Path(__file__).resolve().parent / "results"
#: Cases measured in the first round only (none: the Spark cases repeat too, so their ratio
#: is taken within each round).
ONCE: tuple[str, ...] = ()
SPAN_DAYS = 365


def data_dir(rows: int, feature_rows: int, keys: int) -> Path:
    # v2: event times unique per user, so "the newest event" is never a tie to break;
    # v3: the record counts its tied rows (none), as a build records them.
    return DATA_DIR / f"retrieval_v3_{rows}_{feature_rows}_{keys}"


# -- data -----------------------------------------------------------------------------------
def generate(rows: int, feature_rows: int, keys: int) -> Path:
    """Labels parquet and a LocalStore with both features; reused when present."""
    import duckdb

    import mlforge as mlf

    root = data_dir(rows, feature_rows, keys)
    if (root / "done").exists():
        return root
    root.mkdir(parents=True, exist_ok=True)
    store = mlf.LocalStore(root / "store")
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    # A grid row per (user, day) with probability p, so that the table has ~feature_rows rows.
    keep = min(1.0, feature_rows / (keys * SPAN_DAYS))
    spend_sql = f"""
        SELECT 'u' || k AS user_id,
               (TIMESTAMP '2025-01-01' + INTERVAL (d) DAY)::TIMESTAMPTZ AS ts,
               (hash(k, d, 1) % 40000)::DOUBLE / 4 AS spend_7d,
               (1 + hash(k, d, 2) % 20)::BIGINT AS n_7d,
               (hash(k, d, 1) % 40000)::DOUBLE / 4 / (1 + hash(k, d, 2) % 20) AS avg_7d
        FROM range({keys}) AS a(k), range({SPAN_DAYS}) AS b(d)
        WHERE (hash(k, d, 3) % 1000000) < {int(keep * 1_000_000)}
        ORDER BY user_id, ts
    """
    metrics = [
        {"name": n, "field": "amount", "function": f, "window": "7d", "description": None, "unit": None}
        for n, f in (("spend_7d", "sum"), ("n_7d", "count"), ("avg_7d", "mean"))
    ]
    slot = SPAN_DAYS * 86400 // -(-feature_rows // keys)  # seconds per event slot of one user
    _publish(con, store, "bench_spend", spend_sql, {"keys": ["user_id"], "timestamp": "ts", "interval": "1d", "metrics": metrics})
    last_sql = f"""
        SELECT 'u' || (i % {keys}) AS user_id,
               -- the n-th event of a user falls at a random second of its own slot of the year
               (TIMESTAMP '2025-01-01' + to_microseconds(((i // {keys}) * {slot} + hash(i, 2) % {slot})::BIGINT * 1000000))::TIMESTAMPTZ AS ts,
               (hash(i, 3) % 40000)::DOUBLE / 4 AS amount,
               'm' || (hash(i, 4) % 500) AS merchant
        FROM range({feature_rows}) AS r(i)
        ORDER BY user_id, ts
    """
    _publish(con, store, "bench_last", last_sql, {"keys": ["user_id"], "timestamp": "ts", "interval": None, "metrics": []})
    con.execute(f"""
        COPY (
            SELECT CASE WHEN hash(i, 1) % 50 = 0 THEN 'nobody' || i ELSE 'u' || (hash(i, 2) % {keys}) END AS user_id,
                   CASE WHEN hash(i, 3) % 10 = 0
                        THEN TIMESTAMP '2025-01-01' + INTERVAL (hash(i, 4) % {SPAN_DAYS + 10}) DAY
                        ELSE TIMESTAMP '2024-12-25' + to_microseconds((hash(i, 5) % {(SPAN_DAYS + 14) * 86400})::BIGINT * 1000000)
                   END AS ts,
                   (hash(i, 6) % 2)::BIGINT AS label
            FROM range({rows}) AS r(i)
        ) TO '{root / "labels.parquet"}' (FORMAT parquet, COMPRESSION zstd)
    """)
    con.close()
    (root / "done").write_text("ok")
    return root


def _publish(con, store, name: str, sql: str, metadata: dict) -> None:
    """Write one version with DuckDB into the store's staging area and publish it."""
    import pyarrow.parquet as pq

    from mlforge.manifest import files_hash

    staging = store.stage(name)
    target = f"{staging.data_dir}/part-00000.parquet"
    con.execute(f"COPY ({sql}) TO '{target}' (FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE {1 << 20})")
    schema = {f.name: _canonical(f.type) for f in pq.read_schema(target)}
    meta = {"name": name, "version": "1.0.0", "schema": schema, "entities": [], "rows": pq.read_metadata(target).num_rows, "data_hash": files_hash([target]), **metadata}
    if not metadata["metrics"]:  # what a build records: rows sharing user and ts with another
        groups = f"SELECT count(*) AS n FROM read_parquet('{target}') GROUP BY user_id, ts HAVING count(*) > 1"
        meta["tied_rows"] = int(con.execute(f"SELECT coalesce(sum(n), 0) FROM ({groups})").fetchone()[0])
    store.publish(staging, "1.0.0", meta)


def _canonical(arrow_type) -> str:
    import pyarrow as pa

    if pa.types.is_timestamp(arrow_type):
        return f"timestamp[{arrow_type.tz or 'naive'}]"
    return {"int64": "int64", "double": "float64", "string": "string", "large_string": "string"}.get(str(arrow_type), str(arrow_type))


# -- cases ----------------------------------------------------------------------------------
HAND_SQL = """
WITH labels AS (
    SELECT *, time_bucket(INTERVAL 1 DAY, ts) AS grid FROM labels_arrow
),
spend AS (
    SELECT user_id, ts::TIMESTAMP AS ts, spend_7d, n_7d, avg_7d FROM read_parquet('{spend}')
),
last AS (
    SELECT user_id, ts::TIMESTAMP AS ts, amount, merchant FROM read_parquet('{last}')
),
with_spend AS (
    SELECT l.*, coalesce(s.spend_7d, 0) AS spend_7d, coalesce(s.n_7d, 0) AS n_7d, s.avg_7d
    FROM labels l LEFT JOIN spend s ON s.user_id = l.user_id AND s.ts = l.grid
)
SELECT w.* EXCLUDE (grid, row_id), e.amount, e.merchant
FROM with_spend w ASOF LEFT JOIN last e ON e.user_id = w.user_id AND w.ts >= e.ts
ORDER BY w.row_id
"""


#: The Spark job a Spark engineer writes by hand: the grid join, then labels and events on
#: one timeline per user where each label row carries the newest event's values forward
#: (``last(..., ignorenulls)`` over time, events before labels at equal times).
SPARK_SQL = """
WITH labels AS (
    SELECT *, CAST(ts AS TIMESTAMP) AS at FROM labels_in
), with_spend AS (
    SELECT l.*, coalesce(s.spend_7d, 0D) AS spend_7d, coalesce(s.n_7d, 0L) AS n_7d, s.avg_7d
    FROM labels l LEFT JOIN spend s ON s.user_id = l.user_id AND s.ts = date_trunc('DAY', l.at)
), timeline AS (
    SELECT row_id, user_id, ts, label, spend_7d, n_7d, avg_7d, at AS t, 1 AS is_label,
        CAST(NULL AS STRUCT<amount: DOUBLE, merchant: STRING>) AS event
    FROM with_spend
    UNION ALL
    SELECT NULL, user_id, NULL, NULL, NULL, NULL, NULL, ts, 0, named_struct('amount', amount, 'merchant', merchant)
    FROM last
), carried AS (
    SELECT *, last(event, true) OVER (PARTITION BY user_id ORDER BY t, is_label
                                      ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS newest
    FROM timeline
)
SELECT row_id, user_id, ts, label, spend_7d, n_7d, avg_7d, newest.amount AS amount, newest.merchant AS merchant
FROM carried WHERE is_label = 1
ORDER BY row_id
"""


def spark_case(labels, root: Path):
    """The hand-written Spark job on a session with mlforge's settings (its session factory)."""
    import pyarrow as pa

    from mlforge.engines.pyspark import PySparkEngine

    spark = PySparkEngine(master="local[2]").session
    with_row = labels.append_column("row_id", pa.array(range(labels.num_rows), pa.int64()))
    spark.createDataFrame(with_row).createOrReplaceTempView("labels_in")
    store = root / "store"
    spark.read.parquet(str(store / "bench_spend/1.0.0/data")).createOrReplaceTempView("spend")
    spark.read.parquet(str(store / "bench_last/1.0.0/data")).createOrReplaceTempView("last")
    return spark.sql(SPARK_SQL).toArrow().drop_columns(["row_id"])


def child(case: str, root: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    labels = pq.read_table(root / "labels.parquet")
    started, cpu_started = time.perf_counter(), _tree_cpu()
    # The libraries the case needs are imported first, inside the timed region as before,
    # and their share is reported on its own: mlforge's includes Ibis and its backend.
    _import_libraries(case)
    imported = time.perf_counter() - started
    if case == "hand-duckdb":
        import duckdb

        con = duckdb.connect()
        con.execute("SET TimeZone = 'UTC'")
        labels_arrow = labels.append_column("row_id", pa.array(range(labels.num_rows), pa.int64()))  # noqa: F841 - scanned by name
        store = root / "store"
        sql = HAND_SQL.format(spend=store / "bench_spend/1.0.0/data/*.parquet", last=store / "bench_last/1.0.0/data/*.parquet")
        out = con.execute(sql).fetch_arrow_table()
    elif case == "hand-pyspark":
        out = spark_case(labels, root)
    else:
        import mlforge as mlf

        engine: object = case.split("-", 1)[1]
        if engine == "pyspark":
            from mlforge.engines.pyspark import PySparkEngine

            engine = PySparkEngine(master="local[2]")
        defs = mlf.Definitions("bench", [], offline_store=mlf.LocalStore(root / "store"), engine=engine)
        out = mlf.get_training_data(["bench_spend", "bench_last"], labels, timestamp="ts", definitions=defs)
    seconds, cpu = time.perf_counter() - started, _tree_cpu() - cpu_started
    print(json.dumps({"seconds": seconds, "import_seconds": imported, "cpu_seconds": cpu, "rows": out.num_rows, "checksums": _checksums(out), "columns": out.column_names}))


def _import_libraries(case: str) -> None:
    """Import what ``case`` runs on: DuckDB or PySpark for the hand-written cases; mlforge,
    Ibis and the engine's Ibis backend for mlforge's."""
    import importlib

    family, engine = case.split("-", 1)
    if family == "hand":
        importlib.import_module("duckdb" if engine == "duckdb" else "pyspark.sql")
        return
    import_engine(engine)


def _tree_cpu() -> float:
    """CPU seconds of this process and its children (PySpark's JVM is one) so far."""
    import contextlib

    import psutil

    me = psutil.Process()
    total = sum(me.cpu_times()[:2])
    for child_proc in me.children(recursive=True):
        with contextlib.suppress(psutil.Error):
            total += sum(child_proc.cpu_times()[:2])
    return total


def _checksums(table) -> dict:
    """Per-column (sum, count) plus position-weighted sums, exact for these generated values."""
    import pyarrow as pa
    import pyarrow.compute as pc

    weights = pa.array(range(1, table.num_rows + 1), pa.int64())
    out = {}
    for name in table.column_names:
        col = table.column(name)
        if pa.types.is_timestamp(col.type):
            col = pc.cast(col, pa.timestamp("us")).cast(pa.int64())
        elif pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
            col = pc.utf8_length(col)
        elif pa.types.is_floating(col.type):
            col = pc.multiply(col, 4)  # generated values are multiples of 1/4 (avg_7d: rounded)
            col = pc.cast(pc.round(col), pa.int64())
        col = pc.cast(col, pa.int64())
        positioned = pc.multiply(pc.fill_null(col, 0), weights)
        out[name] = [int(pc.sum(col).as_py() or 0), int(pc.count(col).as_py()), int(pc.sum(positioned).as_py() or 0)]
    return out


# -- driver ---------------------------------------------------------------------------------
def measure(case: str, root: Path, timeout: float | None) -> dict:
    run = run_isolated([__file__, "--child", case, "--root", str(root)], timeout=timeout)
    entry = {"case": case, "ok": run.ok, "seconds": run.seconds if run.ok else run.process_seconds, "cpu": run.report.get("cpu_seconds"), "peak_rss": run.peak_rss_bytes, "report": run.report}
    if not run.ok:
        tail = run.stderr_tail.strip().splitlines()
        entry["error"] = tail[-1] if tail else f"no result within {timeout:.0f} s (stopped)" if timeout else "no report"
    return entry


def render(best: dict[str, dict], args: argparse.Namespace, info: dict, command: str, feature_rows: dict[str, int], load: tuple[float, float]) -> str:
    hand = best["hand-duckdb"]
    lines = [
        f"Point-in-time training data for {args.rows:,} label rows against a stored metric feature of "
        f"{feature_rows['bench_spend']:,} grid rows and a non-metric feature of {feature_rows['bench_last']:,} events "
        f"({args.keys:,} users). {args.repeat} run(s) per case, each in its own process (reported: fastest wall, lowest CPU, highest peak RSS); "
        "time is the retrieval call only (labels already in memory as a PyArrow table): wall clock, and CPU "
        "time of the process and its children (all threads, PySpark's JVM included; steadier than wall time on a shared "
        "machine); peak RSS is the whole process tree's (the JVM included).",
        "",
        f"Command: `{command}`",
        "",
        "| case | wall time | vs hand-written | CPU time | vs hand-written | peak RSS | rows | result |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for case, r in best.items():
        if not r["ok"]:
            lines.append(f"| {case} | — | — | — | — | {fmt_bytes(r['peak_rss'])} | — | failed: {r.get('error')} |")
            continue
        wall = f"{r['seconds'] / hand['seconds']:.2f}×"
        cpu = f"{r['cpu'] / hand['cpu']:.2f}×" if r.get("cpu") and hand.get("cpu") else "—"
        lines.append(
            f"| {case} | {fmt_seconds(r['seconds'])} | {wall} | {fmt_seconds(r['cpu'])} | {cpu} | {fmt_bytes(r['peak_rss'])} "
            f"| {r['report']['rows']:,} | {r.get('check', '—')} |"
        )
    # Issue 20: point-in-time retrieval at or below the hand-written DuckDB joins.
    for case, label in (("mlforge-duckdb", "DuckDB"), ("mlforge-polars", "Polars")):
        ours = best.get(case)
        if ours and ours["ok"]:
            ratio, cpu_ratio = ours["seconds"] / hand["seconds"], ours["cpu"] / hand["cpu"]
            verdict = "met" if ratio <= 1.0 else "NOT met"
            calls = f"; without the libraries' import (best of each): {ours['call']:.2f} s against {hand['call']:.2f} s, **{ours['call'] / hand['call']:.2f}×**" if ours.get("call") and hand.get("call") else ""
            lines += ["", f"mlforge on {label} / hand-written DuckDB: **{ratio:.2f}×** wall, {cpu_ratio:.2f}× CPU (target ≤ 1.0×: {verdict}){calls}."]
    spark, hand_spark = best.get("mlforge-pyspark"), best.get("hand-pyspark")
    if spark and hand_spark and spark["ok"] and hand_spark["ok"]:
        ratio = spark["seconds"] / hand_spark["seconds"]
        cpu_ratio = f", {spark['cpu'] / hand_spark['cpu']:.2f}× CPU" if spark.get("cpu") and hand_spark.get("cpu") else ""
        verdict = "met" if ratio <= 1.2 else "NOT met"
        lines += ["", f"mlforge on PySpark / hand-written Spark job: **{ratio:.2f}×** wall{cpu_ratio} (target ≤ 1.2×: {verdict})."]
    lines += [
        "",
        "`equal` means the row count, the column order and per-column checksums (sum, count and a "
        "position-weighted sum, so order counts) equal the hand-written query's.",
        "",
        "`hand-duckdb` is `LEFT JOIN ... ON user_id AND ts = time_bucket('1 day', label)` plus "
        "`ASOF LEFT JOIN ... ON user_id AND label >= ts`, ordered by row number; mlforge builds "
        "the same joins as Ibis expressions and appends the feature columns to the caller's table. "
        "On Polars the as-of join is Polars' own `join_asof` on the sorted lazy frames (Ibis's "
        "lowering of it is wrong on unsorted input); on PySpark (no as-of join in Ibis) labels and events are "
        "unioned per key and ordered by time, and the newest event's values travel forward in a struct taken with `last(..., ignore nulls)`.",
        "",
        f"Load average (1 min) at start / end: {load[0]:.1f} / {load[1]:.1f} on {info['cpus']} CPUs -- the machine was "
        "shared; where the load exceeds the CPU count, wall time is inflated and CPU time is the fairer comparison.",
        "",
        "Machine: " + ", ".join(f"{k} {v}" for k, v in info.items()),
    ]
    return "\n".join(lines)


def keep_best(best: dict[str, dict], result: dict) -> None:
    """Fastest wall time, lowest CPU time and highest peak RSS over a case's runs."""
    case = result["case"]
    previous = best.get(case)
    if previous is None or (result["ok"] and (not previous["ok"] or result["seconds"] < previous["seconds"])):
        best[case] = {**result}
    kept = best[case]
    kept["peak_rss"] = max(result["peak_rss"], previous["peak_rss"] if previous else 0)
    cpus = [r["cpu"] for r in (result, previous) if r and r["ok"] and r.get("cpu")]
    kept["cpu"] = min(cpus) if cpus else None
    calls = [r["seconds"] - r["report"]["import_seconds"] for r in (result, previous) if r and r["ok"] and "import_seconds" in r.get("report", {})]
    kept["call"] = min(calls) if calls else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="label rows (default 1M)")
    parser.add_argument("--feature-rows", type=int, default=10_000_000, help="rows of each stored feature (default 10M)")
    parser.add_argument("--keys", type=int, default=100_000, help="distinct users (default 100k)")
    parser.add_argument("--repeat", type=int, default=2, help="runs per case; the best is reported")
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma-separated subset of {','.join(CASES)}")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds before a case's run is stopped")
    parser.add_argument("--no-readme", action="store_true", help="do not write benchmarks/README.md")
    parser.add_argument("--json", help="where to write all runs as JSON (default benchmarks/results/retrieval_<rows>.json)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--root", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child, Path(args.root))
        return 0
    import os

    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    if unknown := [c for c in cases if c not in CASES]:
        parser.error(f"unknown cases {unknown}")
    if "hand-duckdb" not in cases:
        cases.insert(0, "hand-duckdb")  # the reference every result is checked against
    load_start = os.getloadavg()[0]
    started = time.perf_counter()
    root = generate(args.rows, args.feature_rows, args.keys)
    print(f"data ready in {time.perf_counter() - started:.1f} s: {root}", file=sys.stderr)
    best: dict[str, dict] = {}
    runs: list[dict] = []
    for rep in range(args.repeat):
        for case in cases:
            if rep > 0 and (case in ONCE or (case in best and not best[case]["ok"])):
                continue  # a slow case, or one that failed or timed out once, runs once
            result = measure(case, root, args.timeout)
            runs.append({**result, "rep": rep})
            cpu = f"{result['cpu']:.2f} s CPU" if result.get("cpu") else "CPU n/a"
            status = "" if result["ok"] else f" FAILED: {result.get('error')}"
            print(f"{case}: {result['seconds']:.2f} s wall, {cpu}, {fmt_bytes(result['peak_rss'])}{status}", file=sys.stderr)
            keep_best(best, result)
    hand = best["hand-duckdb"]["report"]
    differs = []
    for case, r in best.items():
        if not r["ok"]:
            continue
        ours = r["report"]
        same = hand["rows"] == ours["rows"] and hand["checksums"] == ours["checksums"] and hand["columns"] == ours["columns"]
        r["check"] = "reference" if case == "hand-duckdb" else "equal" if same else "DIFFERS"
        if not same:
            differs.append(f"{case}: {ours}")
    import pyarrow.parquet as pq

    feature_rows = {n: sum(pq.read_metadata(f).num_rows for f in (root / "store" / n / "1.0.0" / "data").glob("*.parquet")) for n in ("bench_spend", "bench_last")}
    command = "python benchmarks/bench_retrieval.py " + " ".join(a for a in (argv if argv is not None else sys.argv[1:]))
    info = machine_info()
    load = (load_start, os.getloadavg()[0])
    text = render(best, args, info, command.strip(), feature_rows, load)
    print(text)
    RESULTS.mkdir(exist_ok=True)
    out = Path(args.json) if args.json else RESULTS / f"retrieval_{args.rows}.json"
    out.write_text(json.dumps({
        "benchmark": "retrieval", "command": command.strip(), "machine": info, "load": load,
        "rows": args.rows, "feature_rows": feature_rows, "keys": args.keys,
        "best": {c: {k: v for k, v in r.items() if k != "report"} | {"rows": r["report"].get("rows"), "checksums": r["report"].get("checksums")} for c, r in best.items()},
        "runs": [{k: v for k, v in r.items() if k != "report"} for r in runs],
    }, indent=2, default=str))
    if not args.no_readme:
        replace_readme_section("Retrieval", text)
    if differs:
        print("results differ from the hand-written query:\n" + "\n".join(differs), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
