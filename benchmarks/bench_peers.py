"""Peer benchmark: mlforge against the original mlforge-sdk 0.7.0 and Feast 0.67, one run.

Two jobs on the same generated data as ``bench_build.py`` and ``bench_retrieval.py``:

* **build**: ``Sum``/``Count``/``Mean`` of ``amount`` over 7d and 30d at interval 1d, keyed
  by ``entity_id``, on ``--events`` events (default 1M over 20k entities). Cases:
  ``mlforge-duckdb``, ``mlforge-polars`` (``Definitions(...).build()`` into a ``LocalStore``)
  and ``v07-duckdb``, ``v07-polars`` (the public ``mlforge-sdk==0.7.0``, the same feature
  written with its own API: ``Rolling(windows=..., aggregations=...)`` and ``engine=``).
  Output row counts are compared.
* **retrieval**: point-in-time join of a plain (non-metric) feature of ``--feature-rows``
  events (default 10M over 100k users; columns ``amount``, ``merchant``) to ``--labels``
  label rows (default 1M). Cases: ``mlforge-duckdb``, ``mlforge-polars``
  (``mlf.get_training_data``) and ``feast-duckdb`` (Feast's DuckDB offline store,
  ``get_historical_features(...).to_arrow()`` over a ``FileSource`` on the same Parquet
  file). Every output is compared with mlforge-duckdb's row by row.

The peers run from their own virtualenvs under ``.cache/bench/`` (git-ignored), made on the
first run from PyPI: mlforge-sdk 0.7.0 requires Python 3.13 (found with pyenv), Feast
0.67 runs on this interpreter's Python. Each case is one whole subprocess: the table gives
its wall time (start to exit, imports included), the time of the measured call alone, its
CPU time (user + system of the process and the children it reaped) and the peak RSS of its
process tree. Cases are interleaved round by round, so load from other work hits all alike.

Usage::

    python benchmarks/bench_peers.py                       # issue sizes, writes README + JSON
    python benchmarks/bench_peers.py --events 100000 --feature-rows 1000000 --labels 100000 --no-readme
    python benchmarks/bench_peers.py --jobs build --repeat 2
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import fmt_bytes, machine_info, replace_readme_section, run_isolated

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
VENVS = REPO / ".cache" / "bench"
RESULTS = BENCH_DIR / "results"
V07_REQUIREMENT = "mlforge-sdk[duckdb]==0.7.0"  # 0.7.0 imports duckdb but declares it only as an extra
FEAST_REQUIREMENT = "feast[duckdb]==0.67.0"
BUILD_CASES = ("mlforge-duckdb", "mlforge-polars", "v07-duckdb", "v07-polars", "hand-duckdb")
RETRIEVAL_CASES = ("mlforge-duckdb", "mlforge-polars", "feast-duckdb")
FEATURE = "entity_spend"


# -- peer virtualenvs -------------------------------------------------------------------------
def pyenv_python(version: str) -> str:
    """The interpreter of a pyenv-installed Python ``version`` (e.g. "3.13")."""
    root = os.environ.get("PYENV_ROOT") or subprocess.run(["pyenv", "root"], capture_output=True, text=True).stdout.strip()
    candidates = sorted(Path(root, "versions").glob(f"{version}*/bin/python{version}")) if root else []
    found = str(candidates[-1]) if candidates else shutil.which(f"python{version}")
    if not found:
        raise SystemExit(f"bench_peers: Python {version} not found (install it with `pyenv install {version}`)")
    return found


def ensure_venv(name: str, base_python: str, requirement: str, probe: str) -> str:
    """A venv under .cache/bench/ holding ``requirement``; made once, reused while ``probe`` passes."""
    venv = VENVS / name
    python = venv / "bin" / "python"
    env = peer_env()
    if python.exists() and subprocess.run([str(python), "-c", probe], capture_output=True, env=env).returncode == 0:
        return str(python)
    print(f"bench_peers: making {venv} with {requirement} (once; a few minutes)", flush=True)
    subprocess.run([base_python, "-m", "venv", "--clear", str(venv)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", requirement], check=True, env=env, timeout=1800)
    subprocess.run([str(python), "-c", probe], check=True, env=env)
    return str(python)


def peer_env() -> dict[str, str]:
    """The environment of a peer process: without PYTHONPATH, so ``import mlforge`` finds 0.7.0."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}


def peer_pythons() -> dict[str, str]:
    v07 = ensure_venv(
        "mlforge-sdk-0.7.0", pyenv_python("3.13"), V07_REQUIREMENT,
        "import importlib.metadata as m; assert m.version('mlforge-sdk') == '0.7.0'; import duckdb, polars",
    )
    feast = ensure_venv(
        "feast-0.67.0", sys.executable, FEAST_REQUIREMENT,
        "import importlib.metadata as m; assert m.version('feast') == '0.67.0'; import duckdb, ibis",
    )
    return {"v07": v07, "feast": feast}


def peer_version(python: str, package: str, engines: tuple[str, ...]) -> str:
    """``package x.y.z (Python a.b.c; duckdb ..., ...)``: the peer's own engine versions too,
    which are not mlforge's (the peers' venvs resolve the newest their pins allow)."""
    names = (package, *engines)
    code = f"import importlib.metadata as m, platform; print(platform.python_version(), *(m.version(n) for n in {names!r}))"
    out = subprocess.run([python, "-c", code], capture_output=True, text=True, env=peer_env()).stdout.split()
    if len(out) != len(names) + 1:
        return package
    own = ", ".join(f"{n} {v}" for n, v in zip(engines, out[2:], strict=True))
    return f"{package} {out[1]} (Python {out[0]}; {own})"


# -- children: one case each, a JSON line last ------------------------------------------------
def child_build(case: str, src: Path, out_dir: Path) -> dict:
    family, engine = case.split("-", 1)
    if family == "hand":  # the floor: bench_build's hand-written DuckDB query, same rows as mlforge
        import bench_build

        report = bench_build.run_sql_case(bench_build.HAND_SQL, src, out_dir)
        return {"seconds": report["seconds"], "rows": bench_build.output_rows(str(out_dir))}
    if family == "mlforge":
        import mlforge as mlf

        @mlf.feature(
            mlf.Source(str(src)), keys=["entity_id"], timestamp="ts", interval="1d",
            metrics=[mlf.Sum("amount", windows=["7d", "30d"]), mlf.Count("amount", windows=["7d", "30d"]), mlf.Mean("amount", windows=["7d", "30d"])],
        )
        def entity_spend(events):
            return events

        started = time.perf_counter()
        result = mlf.Definitions("bench", [entity_spend], offline_store=mlf.LocalStore(str(out_dir)), engine=engine).build()
        if not result.ok:
            raise SystemExit(f"build failed: {result[FEATURE].error}")
        return {"seconds": time.perf_counter() - started, "rows": result[FEATURE].rows}
    # mlforge-sdk 0.7.0: metrics are one Rolling with an aggregations mapping, the engine a
    # string, and the function gets a Polars DataFrame on either engine. It keeps null keys
    # (mlforge drops them and counts them, rule W9), so the function drops them here.
    import polars as pl
    import pyarrow.dataset as ds

    import mlforge as mlf  # 0.7.0 in its own venv

    @mlf.feature(
        keys=["entity_id"], source=str(src), timestamp="ts", interval="1d", engine=engine,
        metrics=[mlf.Rolling(windows=["7d", "30d"], aggregations={"amount": ["sum", "count", "mean"]})],
    )
    def entity_spend(df):
        return df.filter(pl.col("entity_id").is_not_null() & pl.col("ts").is_not_null())

    started = time.perf_counter()
    defs = mlf.Definitions(name="bench", features=[entity_spend], offline_store=mlf.LocalStore(str(out_dir)), default_engine=engine)
    defs.build(preview=False)
    seconds = time.perf_counter() - started
    files = [str(p) for p in out_dir.rglob("*.parquet")]
    return {"seconds": seconds, "rows": ds.dataset(files).count_rows(), "files": len(files)}


def child_retrieval(case: str, root: Path, out_file: Path) -> dict:
    import pyarrow.parquet as pq

    labels = pq.read_table(root / "labels.parquet")
    if case == "feast-duckdb":
        return feast_retrieval(root, labels, out_file)
    import mlforge as mlf

    defs = mlf.Definitions("bench", [], offline_store=mlf.LocalStore(root / "store"), engine=case.split("-", 1)[1])
    started = time.perf_counter()
    out = mlf.get_training_data(["bench_last"], labels, timestamp="ts", definitions=defs)
    seconds = time.perf_counter() - started
    pq.write_table(out.select(["user_id", "ts", "label", "amount", "merchant"]), out_file)
    return {"seconds": seconds, "rows": out.num_rows}


def feast_retrieval(root: Path, labels, out_file: Path) -> dict:
    """Feast's DuckDB offline store over the same Parquet file as mlforge's ``bench_last``."""
    from datetime import timedelta

    import pyarrow as pa
    import pyarrow.parquet as pq
    from feast import Entity, FeatureStore, FeatureView, Field, FileSource
    from feast.types import Float64, String
    from feast.value_type import ValueType

    repo = out_file.parent / "feast_repo"
    repo.mkdir(parents=True, exist_ok=True)
    (repo / "feature_store.yaml").write_text(
        "project: bench\nprovider: local\nregistry: registry.db\nentity_key_serialization_version: 3\n"
        "offline_store:\n  type: duckdb\nonline_store:\n  type: sqlite\n  path: online.db\n"
    )
    store = FeatureStore(repo_path=str(repo))
    user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.STRING)
    parquet = next((root / "store" / "bench_last").glob("*/data/*.parquet"))
    view = FeatureView(
        # ttl 0 is Feast's "no time limit": it then looks back as far as mlforge's as-of join.
        name="bench_last", entities=[user], ttl=timedelta(0),
        schema=[Field(name="amount", dtype=Float64), Field(name="merchant", dtype=String)],
        source=FileSource(path=str(parquet), timestamp_field="ts"),
    )
    store.apply([user, view])
    # Feast takes the entity rows as pandas; the conversion is not timed (mlforge's labels
    # are already in memory as Arrow). Naive label times mean UTC on both sides.
    entity_df = labels.to_pandas()
    started = time.perf_counter()
    job = store.get_historical_features(entity_df=entity_df, features=["bench_last:amount", "bench_last:merchant"])
    out = job.to_arrow()
    seconds = time.perf_counter() - started
    out = out.select(["user_id", "ts", "label", "amount", "merchant"])
    out = out.set_column(1, "ts", out["ts"].cast(pa.timestamp("us", tz="UTC")))
    pq.write_table(out, out_file)
    return {"seconds": seconds, "rows": out.num_rows}


def child(job: str, case: str, data: Path, out: Path) -> None:
    report = child_build(case, data, out) if job == "build" else child_retrieval(case, data, out)
    print(json.dumps(report), flush=True)


# -- checks -----------------------------------------------------------------------------------
def compare_retrieval(reference: Path, actual: Path) -> dict:
    """Both outputs sorted by every column, then compared row by row (nulls equal nulls)."""
    import duckdb

    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")

    def ordered(path: Path) -> str:
        return f"""(SELECT row_number() OVER (ORDER BY user_id, ts, label, amount NULLS FIRST, merchant NULLS FIRST) AS n,
                    user_id, epoch_us(ts::TIMESTAMPTZ) AS ts, label, amount, merchant FROM read_parquet('{path}'))"""

    rows_ref, rows_act, mismatches, with_value = con.execute(f"""
        SELECT (SELECT count(*) FROM read_parquet('{reference}')), (SELECT count(*) FROM read_parquet('{actual}')),
               count(*) FILTER (WHERE r.n IS NULL OR a.n IS NULL OR (r.user_id, r.ts, r.label, r.amount, r.merchant)
                                IS DISTINCT FROM (a.user_id, a.ts, a.label, a.amount, a.merchant)),
               count(a.amount)
        FROM {ordered(reference)} r FULL JOIN {ordered(actual)} a ON r.n = a.n
    """).fetchone()
    con.close()
    return {"rows_reference": rows_ref, "rows": rows_act, "mismatches": mismatches, "rows_with_value": with_value}


# -- driver -----------------------------------------------------------------------------------
def measure(job: str, case: str, data: Path, out: Path, pythons: dict[str, str], rep: int) -> dict:
    family = case.split("-", 1)[0]
    python = pythons.get(family)
    args = [__file__, "--child", job, "--case", case, "--data", str(data), "--out", str(out)]
    run = run_isolated(args, python=python, env=peer_env() if python else None, timeout=3600)
    entry = {"job": job, "case": case, "rep": rep, "ok": run.ok, "seconds": run.seconds if run.ok else None,
             "process_seconds": run.process_seconds, "cpu_seconds": run.cpu_seconds, "peak_rss": run.peak_rss_bytes, **run.report}
    if run.ok:
        print(f"    {job} {case} run {rep}: {run.process_seconds:.2f} s process, {run.seconds:.2f} s call, "
              f"cpu {run.cpu_seconds:.1f} s, peak {fmt_bytes(run.peak_rss_bytes)}, {entry.get('rows'):,} rows", flush=True)
    else:
        tail = run.stderr_tail.strip().splitlines()
        entry["error"] = tail[-1] if tail else "no report"
        print(f"    {job} {case} run {rep}: FAILED: {run.stderr_tail[-1500:]}", flush=True)
    return entry


def run_build(args, pythons: dict[str, str]) -> list[dict]:
    import bench_build

    # bench_build's own file when the sizes are its 1M case; else a file named by the sizes.
    size = next((k for k, v in bench_build.SIZES.items() if v == (args.events, args.entities)), f"{args.events}_{args.entities}")
    bench_build.SIZES[size] = (args.events, args.entities)
    src = bench_build.generate(size)
    entries = []
    work = Path(tempfile.mkdtemp(prefix="mlforge-peers-build-"))
    try:
        for rep in range(args.repeat):
            for case in BUILD_CASES:
                out = work / f"{case}-{rep}"
                entries.append(measure("build", case, src, out, pythons, rep))
                shutil.rmtree(out, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    reference = next((e["rows"] for e in entries if e["case"] == "mlforge-duckdb" and e["ok"]), None)
    for e in entries:
        if e["ok"]:
            e["check"] = "reference" if e["case"] == "mlforge-duckdb" else ("same row count" if e["rows"] == reference else f"rows differ: {e['rows']:,} vs {reference:,}")
    return entries


def run_retrieval(args, pythons: dict[str, str]) -> list[dict]:
    import bench_retrieval

    root = bench_retrieval.generate(args.labels, args.feature_rows, args.keys)
    entries = []
    work = Path(tempfile.mkdtemp(prefix="mlforge-peers-retrieval-"))
    try:
        for rep in range(args.repeat):
            outs = {}
            for case in RETRIEVAL_CASES:
                outs[case] = work / f"{case}-{rep}.parquet"
                entries.append(measure("retrieval", case, root, outs[case], pythons, rep))
            for e in entries[-len(RETRIEVAL_CASES):]:
                if e["ok"] and e["case"] != "mlforge-duckdb" and outs["mlforge-duckdb"].exists():
                    e["compare"] = compare_retrieval(outs["mlforge-duckdb"], outs[e["case"]])
                    e["check"] = "equal" if e["compare"]["mismatches"] == 0 else f"{e['compare']['mismatches']:,} rows differ"
                    print(f"      {e['case']} vs mlforge-duckdb: {e['compare']}", flush=True)
                elif e["ok"]:
                    e["check"] = "reference"
            for path in outs.values():
                path.unlink(missing_ok=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return entries


def best(entries: list[dict], job: str, case: str) -> dict:
    """Fastest process wall and call time, least CPU, highest peak RSS over a case's runs."""
    ok = [e for e in entries if e["job"] == job and e["case"] == case and e["ok"]]
    if not ok:
        failed = [e for e in entries if e["job"] == job and e["case"] == case]
        return {"runs": len(failed), "ok": 0, "error": failed[0].get("error") if failed else "not run"}
    return {
        "runs": len([e for e in entries if e["job"] == job and e["case"] == case]), "ok": len(ok),
        "process": min(e["process_seconds"] for e in ok), "call": min(e["seconds"] for e in ok),
        "cpu": min(e["cpu_seconds"] for e in ok), "rss": max(e["peak_rss"] for e in ok),
        "rows": ok[0].get("rows"), "check": ok[0].get("check", ""),
    }


#: How each comparison is aligned, and what differs by design (rendered under the tables).
NOTES = """
How the outputs compare:

- **Build, row counts differ by design.** mlforge-sdk 0.7.0 labels an entity's days from its
  first to its last event day and gives the label at day T (midnight) the events in
  (T − window, T + 1 day]: day T's own events, and a 7d window spanning 8 calendar days.
  mlforge's label T sees the events of [T − window, T) (rule W3: the events of day d are known
  at d + 1) and labels the 30 days after the last event while the longest window still holds
  one. So the same (entity, day) carries different values, and mlforge has more rows. 0.7.0 on Polars also leaves out days whose window holds no
  event (its spine is inner-joined to the events), hence its count differs from its own DuckDB
  path. Only row counts are compared; values are not (different contracts). 0.7.0 keeps null
  keys, so its feature function drops them, as mlforge does by rule W9.
- **0.7.0 on Polars** joins every entity's day spine to all of the entity's events
  (~355 days × ~50 events per entity at 1M events), which is where its memory goes.
- **Retrieval, aligned exactly.** Feast 0.67's DuckDB offline store (its Ibis point-in-time
  join) inner-joins the feature rows to the entity rows on the join key with
  `feature ts <= entity ts` (and `feature ts + ttl >= entity ts` when the view has a TTL),
  keeps per entity row the newest feature row (row_number over the feature time, then the
  created time, descending) and left-joins that back to every entity row. With `ttl=0`
  (Feast's "no time limit") this is mlforge's as-of rule: same key, feature time <= label
  time, newest wins, no match -> nulls. Event times are unique per user in this data, so no
  tie is broken differently (Feast would order ties by a created-time column; there is none).
  Both outputs are sorted by every column and compared row by row: a mismatch count of 0
  means every row's key, time, label, `amount` and `merchant` are equal (nulls equal nulls).
- Feast gets the labels as a pandas DataFrame (its API); the Arrow-to-pandas conversion is not
  timed, as mlforge's labels are already in memory as Arrow. The peers' venvs resolve the
  newest engines their pins allow (see the versions below), so they run a newer DuckDB than
  mlforge's venv.
- "process wall" is the whole subprocess (interpreter start, imports, the call, writing the
  output for the check); "measured call" is `build()` / `get_historical_features().to_arrow()`
  / `get_training_data()` alone. The targets are judged on process wall time; CPU time is the
  steadier figure on this shared machine.
"""


def ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}×" if a and b else "—"


def render(entries: list[dict], info: dict, peers: dict[str, str], args, command: str, loads: tuple) -> str:
    lines = []
    labels = {"mlforge-duckdb": "mlforge, DuckDB", "mlforge-polars": "mlforge, Polars", "v07-duckdb": "mlforge-sdk 0.7.0, DuckDB (its default)",
              "v07-polars": "mlforge-sdk 0.7.0, Polars", "feast-duckdb": "Feast 0.67, DuckDB offline store",
              "hand-duckdb": "hand-written DuckDB SQL (the Build section's query)"}
    head = "| case | process wall | measured call | CPU time | peak RSS | rows | check |\n|---|---:|---:|---:|---:|---:|---|"
    for job, cases, title in (("build", BUILD_CASES, f"Build, {args.events:,} events / {args.entities:,} entities, 7d+30d × sum/count/mean at 1d"),
                              ("retrieval", RETRIEVAL_CASES, f"Point-in-time retrieval, plain feature of {args.feature_rows:,} events ({args.keys:,} users) × {args.labels:,} labels")):
        if not any(e["job"] == job for e in entries):
            continue
        lines += [f"**{title}**", "", head]
        for case in cases:
            b = best(entries, job, case)
            if not b["ok"]:
                lines.append(f"| {labels[case]} | failed | — | — | — | — | {b['error']} |")
                continue
            lines.append(f"| {labels[case]} | {b['process']:.2f} s | {b['call']:.2f} s | {b['cpu']:.2f} s | {fmt_bytes(b['rss'])} | {b['rows']:,} | {b['check']} |")
        lines.append("")
    lines += ["Targets (issue 20; wall time of the whole process, best of the runs):", ""]
    md, mp, vd, vp, hd = (best(entries, "build", c) for c in BUILD_CASES)
    if md.get("ok") and vd.get("ok"):
        speed = vd["process"] / md["process"]
        lines.append(f"- build, mlforge DuckDB vs 0.7.0 on DuckDB: **{speed:.2f}× faster** (call only {vd['call'] / md['call']:.2f}×, CPU {vd['cpu'] / md['cpu']:.2f}×); target ≥ 10×: {'met' if speed >= 10 else 'MISSED'}")
    if hd.get("ok") and vd.get("ok") and md.get("ok") and mp.get("ok"):
        floor = vd["process"] / hd["process"]
        lines.append(
            f"- build, the hand-written DuckDB query vs 0.7.0 on DuckDB: **{floor:.2f}× faster** (CPU {vd['cpu'] / hd['cpu']:.2f}×); "
            f"mlforge DuckDB takes {md['process'] / hd['process']:.2f}× its time (CPU {md['cpu'] / hd['cpu']:.2f}×), "
            f"mlforge Polars {mp['process'] / hd['process']:.2f}× (CPU {mp['cpu'] / hd['cpu']:.2f}×); target ≤ 1.0×"
        )
    if mp.get("ok") and vp.get("ok"):
        speed, mem = vp["process"] / mp["process"], mp["rss"] / vp["rss"]
        lines.append(f"- build, mlforge Polars vs 0.7.0 on Polars: **{speed:.2f}× faster** (call only {vp['call'] / mp['call']:.2f}×, CPU {vp['cpu'] / mp['cpu']:.2f}×); target ≥ 10×: {'met' if speed >= 10 else 'MISSED'}")
        lines.append(f"- build, mlforge Polars peak RSS / 0.7.0 on Polars: **{mem:.3f}** ({fmt_bytes(mp['rss'])} vs {fmt_bytes(vp['rss'])}); target ≤ 0.20: {'met' if mem <= 0.2 else 'MISSED'}")
    rd, rp, feast = (best(entries, "retrieval", c) for c in RETRIEVAL_CASES)
    for name, mine in (("DuckDB", rd), ("Polars", rp)):
        if mine.get("ok") and feast.get("ok"):
            speed = feast["process"] / mine["process"]
            lines.append(f"- retrieval, mlforge {name} vs Feast DuckDB: **{speed:.2f}× faster** (call only {feast['call'] / mine['call']:.2f}×, CPU {feast['cpu'] / mine['cpu']:.2f}×); target ≥ 3×: {'met' if speed >= 3 else 'MISSED'}")
    lines += [
        "",
        NOTES.strip(),
        "",
        f"Peers: {peers.get('v07', '—')}; {peers.get('feast', '—')}; each in its own venv under `.cache/bench/`.",
        f"Load average (1 min) at start / end: {loads[0]:.1f} / {loads[1]:.1f} on {info['cpus']} CPUs.",
        f"Machine: {info['cpus']} cores, {info['memory']} RAM, {info['platform']}, Python {info['python']}; "
        + ", ".join(f"{k} {info[k]}" for k in ("mlforge", "ibis", "duckdb", "polars", "pyarrow")) + ".",
        f"Date: {info['date']}. Command: `{command}` (`nox -s bench_peers`); {args.repeat} round(s), cases interleaved.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", default="build,retrieval", help="comma-separated subset of build,retrieval")
    parser.add_argument("--events", type=int, default=1_000_000, help="build: events")
    parser.add_argument("--entities", type=int, default=20_000, help="build: entities")
    parser.add_argument("--feature-rows", type=int, default=10_000_000, help="retrieval: events of the plain feature")
    parser.add_argument("--labels", type=int, default=1_000_000, help="retrieval: label rows")
    parser.add_argument("--keys", type=int, default=100_000, help="retrieval: users")
    parser.add_argument("--repeat", type=int, default=1, help="rounds (cases interleaved within a round)")
    parser.add_argument("--no-readme", action="store_true", help="do not write the Peers section of benchmarks/README.md")
    parser.add_argument("--json", help="where to write all runs (default benchmarks/results/peers.json)")
    parser.add_argument("--from-json", help="render the README section from a saved run instead of running")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child, args.case, Path(args.data), Path(args.out))
        return 0
    if args.from_json:
        saved = json.loads(Path(args.from_json).read_text())
        for name, value in saved["sizes"].items():
            setattr(args, name, value)
        text = render(saved["runs"], saved["machine"], saved["peers"], args, saved["command"], tuple(saved["load"]))
        print(text)
        if not args.no_readme:
            replace_readme_section("Peers", text)
        return 0
    jobs = [j.strip() for j in args.jobs.split(",") if j.strip()]
    loads = [os.getloadavg()[0]]
    pythons = peer_pythons()
    peers = {
        "v07": peer_version(pythons["v07"], "mlforge-sdk", ("duckdb", "polars", "pyarrow")),
        "feast": peer_version(pythons["feast"], "feast", ("duckdb", "ibis-framework", "pyarrow", "pandas")),
    }
    info = machine_info()
    entries = (run_build(args, pythons) if "build" in jobs else []) + (run_retrieval(args, pythons) if "retrieval" in jobs else [])
    loads.append(os.getloadavg()[0])
    command = ("python benchmarks/bench_peers.py " + " ".join(argv if argv is not None else sys.argv[1:])).strip()
    text = render(entries, info, peers, args, command, tuple(loads))
    print("\n" + text)
    sizes = {name: getattr(args, name) for name in ("events", "entities", "feature_rows", "labels", "keys", "repeat")}
    out = Path(args.json) if args.json else RESULTS / "peers.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    saved = {"machine": info, "peers": peers, "command": command, "load": loads, "sizes": sizes, "runs": entries}
    out.write_text(json.dumps(saved, indent=2, default=str))
    if not args.no_readme:
        replace_readme_section("Peers", text)
    return 0 if all(e["ok"] for e in entries) else 1


if __name__ == "__main__":
    raise SystemExit(main())
