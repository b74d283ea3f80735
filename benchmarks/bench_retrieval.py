"""Retrieval benchmark: point-in-time training data, mlforge vs a hand-written DuckDB query.

Stored features (written in the offline store's layout through ``LocalStore.stage`` /
``publish``, generated with DuckDB SQL):

* ``bench_spend`` -- a metric feature on a 1d grid: ``--feature-rows`` rows over
  ``--keys`` users (some grid rows absent, as rule W3 leaves them), columns
  ``spend_7d`` (sum), ``n_7d`` (count), ``avg_7d`` (mean);
* ``bench_last`` -- a non-metric feature: ``--feature-rows`` events at random seconds,
  columns ``amount``, ``merchant``.

Labels: ``--rows`` rows ``(user_id, ts, label)`` with random times (10% exactly on the
grid, 2% unknown users, some before any event), as a PyArrow table.

Cases, each in its own process (wall time of the retrieval call, peak RSS of the process):

* ``mlforge-duckdb``: ``mlf.get_training_data(["bench_spend", "bench_last"], labels,
  timestamp="ts", definitions=defs)`` -- returns a PyArrow table in the labels' order;
* ``hand-duckdb``: one SQL query over the same files -- an equality join on
  ``time_bucket('1 day', ts)`` and an ``ASOF LEFT JOIN``, ``ORDER BY`` the row number,
  fetched as Arrow.

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
    machine_info,
    replace_readme_section,
    run_isolated,
)

CASES = ("hand-duckdb", "mlforge-duckdb")
SPAN_DAYS = 365


def data_dir(rows: int, feature_rows: int, keys: int) -> Path:
    return DATA_DIR / f"retrieval_{rows}_{feature_rows}_{keys}"


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
    _publish(con, store, "bench_spend", spend_sql, {"keys": ["user_id"], "timestamp": "ts", "interval": "1d", "metrics": metrics})
    last_sql = f"""
        SELECT 'u' || (hash(i, 1) % {keys}) AS user_id,
               (TIMESTAMP '2025-01-01' + to_microseconds((hash(i, 2) % {SPAN_DAYS * 86400})::BIGINT * 1000000))::TIMESTAMPTZ AS ts,
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


def child(case: str, root: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    labels = pq.read_table(root / "labels.parquet")
    started, cpu_started = time.perf_counter(), time.process_time()
    if case == "hand-duckdb":
        import duckdb

        con = duckdb.connect()
        con.execute("SET TimeZone = 'UTC'")
        labels_arrow = labels.append_column("row_id", pa.array(range(labels.num_rows), pa.int64()))  # noqa: F841 - scanned by name
        store = root / "store"
        sql = HAND_SQL.format(spend=store / "bench_spend/1.0.0/data/*.parquet", last=store / "bench_last/1.0.0/data/*.parquet")
        out = con.execute(sql).fetch_arrow_table()
    else:
        import mlforge as mlf

        defs = mlf.Definitions("bench", [], offline_store=mlf.LocalStore(root / "store"), engine="duckdb")
        out = mlf.get_training_data(["bench_spend", "bench_last"], labels, timestamp="ts", definitions=defs)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    print(json.dumps({"seconds": seconds, "cpu_seconds": cpu, "rows": out.num_rows, "checksums": _checksums(out), "columns": out.column_names}))


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
def measure(case: str, root: Path) -> dict:
    run = run_isolated([__file__, "--child", case, "--root", str(root)])
    if not run.ok:
        raise SystemExit(f"{case} failed:\n{run.stderr_tail}")
    return {"case": case, "seconds": run.seconds, "cpu": run.report["cpu_seconds"], "peak_rss": run.peak_rss_bytes, "report": run.report}


def render(results: list[dict], args: argparse.Namespace, info: dict, command: str, feature_rows: dict[str, int], load: tuple[float, float]) -> str:
    by_case = {r["case"]: r for r in results}
    hand, ours = by_case["hand-duckdb"], by_case["mlforge-duckdb"]
    ratio = ours["seconds"] / hand["seconds"]
    cpu_ratio = ours["cpu"] / hand["cpu"]
    lines = [
        f"Point-in-time training data for {args.rows:,} label rows against a stored metric feature of "
        f"{feature_rows['bench_spend']:,} grid rows and a non-metric feature of {feature_rows['bench_last']:,} events "
        f"({args.keys:,} users), on DuckDB. {args.repeat} run(s) per case, each in its own process (reported: fastest wall, lowest CPU, highest peak RSS); "
        "time is the retrieval call only (labels already in memory as a PyArrow table): wall clock, and CPU "
        "time of the process (all threads; steadier than wall time on a shared machine); peak RSS is the whole process.",
        "",
        f"Command: `{command}`",
        "",
        "| case | wall time | CPU time | peak RSS | rows |",
        "|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(f"| {r['case']} | {fmt_seconds(r['seconds'])} | {fmt_seconds(r['cpu'])} | {fmt_bytes(r['peak_rss'])} | {r['report']['rows']:,} |")
    verdict = "met" if ratio <= 1.5 else "NOT met"
    lines += [
        "",
        f"mlforge / hand-written: **{ratio:.2f}×** wall, {cpu_ratio:.2f}× CPU (target ≤ 1.5×: {verdict}). Results are identical "
        "(row count, order and per-column checksums compared).",
        "",
        "`hand-duckdb` is `LEFT JOIN ... ON user_id AND ts = time_bucket('1 day', label)` plus "
        "`ASOF LEFT JOIN ... ON user_id AND label >= ts`, ordered by row number; mlforge builds "
        "the same joins as Ibis expressions and appends the feature columns to the caller's table.",
        "",
        f"Load average (1 min) at start / end: {load[0]:.1f} / {load[1]:.1f} on {info['cpus']} CPUs -- the machine was "
        "shared; where the load exceeds the CPU count, wall time is inflated and CPU time is the fairer comparison.",
        "",
        "Machine: " + ", ".join(f"{k} {v}" for k, v in info.items()),
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="label rows (default 1M)")
    parser.add_argument("--feature-rows", type=int, default=10_000_000, help="rows of each stored feature (default 10M)")
    parser.add_argument("--keys", type=int, default=100_000, help="distinct users (default 100k)")
    parser.add_argument("--repeat", type=int, default=2, help="runs per case; the best is reported")
    parser.add_argument("--no-readme", action="store_true", help="do not write benchmarks/README.md")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--root", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child, Path(args.root))
        return 0
    import os

    load_start = os.getloadavg()[0]
    started = time.perf_counter()
    root = generate(args.rows, args.feature_rows, args.keys)
    print(f"data ready in {time.perf_counter() - started:.1f} s: {root}", file=sys.stderr)
    best: dict[str, dict] = {}
    for _ in range(args.repeat):
        for case in CASES:
            result = measure(case, root)
            print(f"{case}: {result['seconds']:.2f} s wall, {result['cpu']:.2f} s CPU, {fmt_bytes(result['peak_rss'])}", file=sys.stderr)
            if case not in best or result["seconds"] < best[case]["seconds"]:
                previous = best.get(case, {})
                best[case] = {**result, "peak_rss": max(result["peak_rss"], previous.get("peak_rss", 0)), "cpu": min(result["cpu"], previous.get("cpu", result["cpu"]))}
            else:
                best[case]["cpu"] = min(best[case]["cpu"], result["cpu"])
                best[case]["peak_rss"] = max(best[case]["peak_rss"], result["peak_rss"])
    hand, ours = best["hand-duckdb"]["report"], best["mlforge-duckdb"]["report"]
    if hand["rows"] != ours["rows"] or hand["checksums"] != ours["checksums"] or hand["columns"] != ours["columns"]:
        raise SystemExit(f"results differ:\nhand    {hand}\nmlforge {ours}")
    import pyarrow.parquet as pq

    feature_rows = {n: sum(pq.read_metadata(f).num_rows for f in (root / "store" / n / "1.0.0" / "data").glob("*.parquet")) for n in ("bench_spend", "bench_last")}
    command = "python benchmarks/bench_retrieval.py " + " ".join(a for a in (argv if argv is not None else sys.argv[1:]))
    text = render([best[c] for c in CASES], args, machine_info(), command.strip(), feature_rows, (load_start, os.getloadavg()[0]))
    print(text)
    if not args.no_readme:
        replace_readme_section("Retrieval", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
