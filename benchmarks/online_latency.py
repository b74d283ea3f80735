"""Online serving latency: mlforge's Redis store against a raw redis-py baseline, and a
bounded REST load test of ``mlforge serve`` with 1 and 2 workers.

    .venv/bin/python benchmarks/online_latency.py                     # everything
    .venv/bin/python benchmarks/online_latency.py --skip-rest         # store reads only
    .venv/bin/python benchmarks/online_latency.py --requests 2000     # a shorter load test

Part 1 (store reads, same process, same Redis, same data, interleaved). The data is what
``build --online`` publishes (rule O1): per entity, a 30-row tail of daily grid rows for
``user_spend`` (3 values a row), a 7-row tail for ``user_clicks`` and the newest row of
``user_profile``, plus one publication record per feature.

* 1 entity x 3 features: ``read_many`` (one pipeline, one MGET per feature, values
  decoded by the shared codec) vs a raw redis-py pipeline of 3 GETs + ``json.loads``;
* 1 entity x 3 features, the whole online lookup (``mlforge.retrieval.online.lookup``: one
  pipeline for the 3 entity values and the 3 publication records, decoded, then the value
  at the read time picked from each tail) vs the raw pipeline of the same 4 commands +
  ``json.loads``;
* 1,000 entities x 1 feature: ``RedisStore.read`` (MGET + codec) vs raw MGET + ``json.loads``.

Part 2 (REST): the server runs through ``mlforge.serve.run`` in its own process; the load
comes from another process (this script with ``--loadgen``), open loop: request ``i`` is
sent at ``t0 + i / rps`` whatever happened before, and its latency is measured from that
scheduled instant (no coordinated omission). The requests ask 1 entity x 3 features
(``POST /features/online``; at 200 rps with 1 and 2 workers, then at higher rates with 2
workers to find where one server stops keeping up) and 100 entities x 3 features
(``POST /features/batch``).

A private ``redis-server`` (no persistence) is started on a free loopback port.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FEATURES = ["user_spend", "user_clicks", "user_profile"]
SENDERS = 32


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port}")


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
    return {"p50_ms": pick(0.50) * 1e3, "p99_ms": pick(0.99) * 1e3, "max_ms": ordered[-1] * 1e3, "mean_ms": statistics.fmean(ordered) * 1e3, "n": len(ordered)}


# -- part 1 -------------------------------------------------------------------------------
TAILS = {"user_spend": (30, ("spend_7d", "spend_30d", "n_7d")), "user_clicks": (7, ("clicks_1d", "ctr_7d"))}
DAY = 86_400
FIRST_LABEL = 1_735_689_600  # 2025-01-01: the watermark of the benchmark's publications


def fill(store, entities: int) -> None:
    """Published values, as ``build --online`` writes them (see the module docstring)."""
    import datetime as dt

    from mlforge.online.publication import PUBLICATIONS, Publication, tail_value

    ids = [f"u{i}" for i in range(entities)]
    for name, (length, columns) in TAILS.items():
        labels = [dt.datetime.fromtimestamp(FIRST_LABEL + d * DAY, tz=dt.UTC) for d in range(length)]
        values = []
        for i, uid in enumerate(ids):
            rows = [{"ts": label, **{c: (i + d) * (0.5 if c.startswith(("spend", "ctr")) else 1) for c in columns}} for d, label in enumerate(labels)]
            for row in rows:
                row.update({c: int(row[c]) for c in columns if c.startswith(("n_", "clicks"))})
            values.append(tail_value({"user_id": uid}, rows, "ts", columns, DAY))
        store.write(name, ["user_id"], values)
        record = Publication(name, "1.0.0", ("user_id",), "ts", DAY, None, FIRST_LABEL, columns, tuple((c, 0) for c in columns if c.startswith(("n_", "clicks", "spend"))), ("1.0.0",))
        store.write(PUBLICATIONS, ["feature"], [record.to_row()])
    ts = [dt.datetime(2024, 12, 31, tzinfo=dt.UTC)] * entities
    profiles = {"user_id": ids, "ts": ts, "country": ["DE"] * entities, "age": [30] * entities, "premium": [True] * entities}
    store.write("user_profile", ["user_id"], [dict(zip(profiles, row, strict=True)) for row in zip(*profiles.values(), strict=True)])
    record = Publication("user_profile", "1.0.0", ("user_id",), "ts", None, None, FIRST_LABEL - DAY, ("country", "age", "premium"), (), ("1.0.0",))
    store.write(PUBLICATIONS, ["feature"], [record.to_row()])


def bench_store(port: int, entities: int, single_iters: int, batch_iters: int) -> dict:
    import datetime as dt
    import random

    import redis

    from mlforge.online.base import read_many
    from mlforge.online.publication import Publication
    from mlforge.online.redis import RedisStore
    from mlforge.retrieval.online import lookup

    store = RedisStore(host="127.0.0.1", port=port, prefix="bench")
    fill(store, entities)
    raw = redis.Redis(host="127.0.0.1", port=port)
    rng = random.Random(7)
    results: dict[str, list[float]] = {k: [] for k in ("mlforge_1x3", "raw_1x3", "lookup_1x3", "raw_lookup_1x3", "mlforge_1000x1", "raw_1000x1")}
    at = dt.datetime.fromtimestamp(FIRST_LABEL + 12 * DAY + 3600, tz=dt.UTC)
    stand_ins = {f: Publication(f, None, ("user_id",), "ts", None, None, None, ()) for f in FEATURES}
    record_keys = [f"bench:mlforge.publications:{f}" for f in FEATURES]

    def one_lookup(uid: str) -> None:
        readings = lookup(store, stand_ins, {f: [{"user_id": uid}] for f in FEATURES}, at)
        assert readings["user_spend"][0].known

    def one_raw_lookup(uid: str) -> None:
        pipe = raw.pipeline(transaction=False)
        for f in FEATURES:
            pipe.mget([f"bench:{f}:{uid}"])
        pipe.mget(record_keys)
        answers = pipe.execute()
        values = [json.loads(v) for answer in answers for v in answer]
        assert values[0] is not None

    def one_mlforge(uid: str) -> None:
        rows = read_many(store, {f: [{"user_id": uid}] for f in FEATURES})
        assert rows["user_spend"][0] is not None

    def one_raw(uid: str) -> None:
        pipe = raw.pipeline(transaction=False)
        for f in FEATURES:
            pipe.get(f"bench:{f}:{uid}")
        values = [json.loads(v) for v in pipe.execute()]
        assert values[0] is not None

    def many_mlforge(uids: list[str]) -> None:
        rows = store.read("user_spend", [{"user_id": u} for u in uids])
        assert rows[0] is not None

    def many_raw(uids: list[str]) -> None:
        values = [json.loads(v) for v in raw.mget([f"bench:user_spend:{u}" for u in uids])]
        assert values[0] is not None

    for _ in range(200):  # warm connections and caches
        one_mlforge("u1")
        one_raw("u1")
        one_lookup("u1")
        one_raw_lookup("u1")
    for _ in range(single_iters):  # interleaved, so all see the same machine noise
        uid = f"u{rng.randrange(entities)}"
        for name, fn in (("mlforge_1x3", one_mlforge), ("raw_1x3", one_raw), ("lookup_1x3", one_lookup), ("raw_lookup_1x3", one_raw_lookup)):
            t0 = time.perf_counter()
            fn(uid)
            results[name].append(time.perf_counter() - t0)
    for _ in range(batch_iters):
        uids = [f"u{rng.randrange(entities)}" for _ in range(1_000)]
        for name, fn in (("mlforge_1000x1", many_mlforge), ("raw_1000x1", many_raw)):
            t0 = time.perf_counter()
            fn(uids)
            results[name].append(time.perf_counter() - t0)
    store.close()
    raw.close()
    return {name: percentiles(samples) for name, samples in results.items()}


# -- part 2 -------------------------------------------------------------------------------
def write_project(folder: Path, redis_port: int) -> None:
    """A ``definitions.py`` with the three features, served from the benchmark's Redis."""
    body = ["import mlforge as mlf", "from mlforge.online.redis import RedisStore", ""]
    for name in FEATURES:
        body += ['@mlf.feature(source="unused.parquet", keys=["user_id"], timestamp="ts")', f"def {name}(t):", "    return t", ""]
    body += [f'defs = mlf.Definitions("bench", [{", ".join(FEATURES)}], offline_store=mlf.LocalStore("store"), online_store=RedisStore(host="127.0.0.1", port={redis_port}, prefix="bench"))']
    (folder / "definitions.py").write_text("\n".join(body) + "\n")


def bench_rest(redis_port: int, workers: int, requests: int, rps: float, entities: int, token: str, batch: int = 1) -> dict:
    folder = Path(tempfile.mkdtemp(prefix="mlforge-bench-serve-"))
    write_project(folder, redis_port)
    port = free_port()
    code = f"from mlforge.serve import run; run(None, host='127.0.0.1', port={port}, workers={workers}, token={token!r}, target={str(folder)!r}, log_level='warning')"
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    server = subprocess.Popen([sys.executable, "-c", code], cwd=folder, env=env, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_port(port)
        import httpx

        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # every worker has loaded the project
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        time.sleep(2.0 if workers > 1 else 0.2)
        cpu_before = server_cpu(server.pid)
        load = subprocess.run(
            [sys.executable, __file__, "--loadgen", f"http://127.0.0.1:{port}", str(requests), str(rps), str(entities), token, str(batch)],
            capture_output=True, text=True, check=True,
        )
        report = json.loads(load.stdout.strip().splitlines()[-1])
        report["server_cpu_ms_per_request"] = (server_cpu(server.pid) - cpu_before) / requests * 1e3
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
        shutil.rmtree(folder, ignore_errors=True)
    report["workers"] = workers
    report["batch"] = batch
    return report


def server_cpu(pid: int) -> float:
    """CPU seconds (user + system) of the server process and its workers."""
    import psutil

    root = psutil.Process(pid)
    total = 0.0
    for proc in [root, *root.children(recursive=True)]:
        try:
            times = proc.cpu_times()
            total += times.user + times.system
        except psutil.NoSuchProcess:
            pass
    return total


class Connection:
    """A minimal HTTP/1.1 keep-alive client on asyncio streams.

    The load generator must cost far less CPU than the server it measures; a general
    client (httpx) spends a few milliseconds of CPU per request, which on a small machine
    would measure the client. This one only writes a fixed request and reads
    ``Content-Length`` bytes back.
    """

    def __init__(self, host: str, port: int, token: str):
        self.host, self.port, self.token = host, port, token
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, payload: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nAuthorization: Bearer {self.token}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
        ).encode()
        self.writer.write(head + payload)
        assert self.reader is not None
        header = await self.reader.readuntil(b"\r\n\r\n")
        status = int(header.split(b" ", 2)[1])
        length = 0
        for line in header.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        body = await self.reader.readexactly(length)
        return status, body

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


async def loadgen(url: str, requests: int, rps: float, entities: int, token: str, batch: int = 1) -> dict:
    import random
    from urllib.parse import urlparse

    parsed = urlparse(url)
    rng = random.Random(11)
    latencies: list[float] = []
    service: list[float] = []
    errors: dict[str, int] = {}
    connections = [Connection(parsed.hostname or "127.0.0.1", parsed.port or 80, token) for _ in range(SENDERS)]
    if batch == 1:
        path = "/features/online"
        payloads = [json.dumps({"features": FEATURES, "entity": {"user_id": f"u{rng.randrange(entities)}"}}).encode() for _ in range(requests)]
    else:
        path = "/features/batch"
        payloads = [json.dumps({"features": FEATURES, "entities": [{"user_id": f"u{rng.randrange(entities)}"} for _ in range(batch)]}).encode() for _ in range(requests)]
    for conn in connections:  # warm-up, not measured: every connection once
        await conn.post(path, payloads[0])
    start = time.perf_counter() + 0.1
    cursor = iter(range(requests))

    async def sender(conn: Connection) -> None:
        # A fixed pool of senders keeps pending requests bounded; each request still has
        # its own scheduled instant, and a late one is charged its lateness.
        for i in cursor:
            scheduled = start + i / rps
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            sent = time.perf_counter()
            try:
                status, body = await conn.post(path, payloads[i])
                if status != 200 or b'"user_spend":null' in body:
                    errors[str(status)] = errors.get(str(status), 0) + 1
            except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                conn.close()
            done = time.perf_counter()
            latencies.append(done - scheduled)
            service.append(done - sent)

    await asyncio.gather(*(sender(conn) for conn in connections))
    elapsed = time.perf_counter() - start
    for conn in connections:
        conn.close()
    return {"requests": requests, "target_rps": rps, "achieved_rps": requests / elapsed, "errors": sum(errors.values()), "error_kinds": errors, "latency": percentiles(latencies), "service_time": percentiles(service), "loadgen_cpu_ms_per_request": time.process_time() / requests * 1e3}


# -- main ---------------------------------------------------------------------------------
def start_redis() -> tuple[subprocess.Popen, int]:
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("redis-server is not installed (apt-get install redis-server)")
    port = free_port()
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL)
    wait_for_port(port)
    return proc, port


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--loadgen":
        url, requests, rps, entities, token, batch = sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5]), sys.argv[6], int(sys.argv[7])
        print(json.dumps(asyncio.run(loadgen(url, requests, rps, entities, token, batch))))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entities", type=int, default=20_000)
    parser.add_argument("--single-iters", type=int, default=5_000)
    parser.add_argument("--batch-iters", type=int, default=300)
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--rps", type=float, default=200.0)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--sweep-rps", type=float, nargs="*", default=[500.0, 1000.0], help="higher rates of 1-entity requests, 2 workers, 10 s each")
    parser.add_argument("--batch-size", type=int, default=100, help="entities per batch request")
    parser.add_argument("--batch-rps", type=float, default=50.0)
    parser.add_argument("--batch-requests", type=int, default=3_000)
    parser.add_argument("--skip-rest", action="store_true")
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    parser.add_argument("--no-readme", action="store_true", help="do not update the README section")
    parser.add_argument("--from-json", type=Path, help="render the README section from saved results; measure nothing")
    args = parser.parse_args()
    if args.from_json:
        out = json.loads(args.from_json.read_text())
        print(render(out))
        if not args.no_readme:
            write_readme(out)
        return
    redis_proc, port = start_redis()
    try:
        out: dict = {"machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform(), "loadavg_at_start": os.getloadavg()}}
        out["store"] = bench_store(port, args.entities, args.single_iters, args.batch_iters)
        print(json.dumps({"store": out["store"]}), file=sys.stderr, flush=True)
        out["rest"] = []
        for workers in [] if args.skip_rest else args.workers:
            out["rest"].append(bench_rest(port, workers, args.requests, args.rps, args.entities, "bench-token"))
            print(json.dumps(out["rest"][-1]), file=sys.stderr, flush=True)
        runs = [] if args.skip_rest else [(2, int(rate * 10), rate, 1) for rate in args.sweep_rps] + [(w, args.batch_requests, args.batch_rps, args.batch_size) for w in args.workers]
        for workers, requests, rate, batch in runs:
            out["rest"].append(bench_rest(port, workers, requests, rate, args.entities, "bench-token", batch))
            print(json.dumps(out["rest"][-1]), file=sys.stderr, flush=True)
    finally:
        redis_proc.terminate()
        redis_proc.wait(timeout=10)
    out["machine"]["loadavg_at_end"] = os.getloadavg()
    out["machine"]["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    out["machine"]["versions"] = versions()
    out["settings"] = {k: getattr(args, k) for k in ("entities", "single_iters", "batch_iters", "requests", "rps", "workers", "sweep_rps", "batch_size", "batch_rps", "batch_requests")}
    print(render(out))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    if not args.no_readme:
        write_readme(out)


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in ("redis", "fastapi", "uvicorn", "uvloop", "httptools"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "not installed"
    redis_server = shutil.which("redis-server")
    if redis_server:
        found["redis-server"] = subprocess.run([redis_server, "--version"], capture_output=True, text=True).stdout.split("v=")[-1].split()[0]
    return found


def write_readme(out: dict) -> None:
    """Replace the "Online serving" section of benchmarks/README.md (others untouched)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from common import replace_readme_section

    replace_readme_section("Online serving", readme_section(out))


def readme_section(out: dict) -> str:
    m, st = out["machine"], out["store"]
    cfg = out.get("settings", {})
    v = m.get("versions", {})
    ratio = lambda a, b, q="p50_ms": st[a][q] / st[b][q]  # noqa: E731
    parts = [
        "Command: `python benchmarks/online_latency.py` (starts its own `redis-server` on a free loopback port; "
        f"{cfg.get('entities', 20000):,} entities per feature, {cfg.get('single_iters', 5000):,} single reads, {cfg.get('batch_iters', 300):,} batch reads, "
        f"{cfg.get('requests', 20000):,} REST requests at {cfg.get('rps', 200):.0f} rps with {' and '.join(map(str, cfg.get('workers', [1, 2])))} worker(s)). "
        f"Run {m.get('date', '')}: Python {m['python']}, {m['cpus']} CPUs, {m['platform']}; redis-server {v.get('redis-server', '?')}, redis-py {v.get('redis', '?')}, "
        f"FastAPI {v.get('fastapi', '?')}, uvicorn {v.get('uvicorn', '?')} (uvloop {v.get('uvloop', '?')}, httptools {v.get('httptools', '?')}). "
        f"1-minute load average {m['loadavg_at_start'][0]:.1f} at the start and {m['loadavg_at_end'][0]:.1f} at the end on {m['cpus']} CPUs: "
        "the machine was shared, so absolute times are inflated; the comparisons within a table ran interleaved under the same load.",
        "**Store reads** (same process, same Redis, same data; mlforge and the baseline alternate call by call). The data is what "
        "`build --online` publishes (rule O1): per entity a 30-row tail of daily grid rows for `user_spend` (3 values a row, ~0.8 KB "
        "stored), a 7-row tail for `user_clicks`, the newest row of `user_profile`, and one publication record per feature. mlforge's "
        "figure includes building keys and decoding values back to typed Python values with the shared codec (the online lookup also "
        "fetches the 3 records in the same pipeline and picks the row of the read time from each tail); the baseline is the raw "
        "redis-py call for the same keys plus `json.loads`. The bound of issue 14 is `read_many` p99 within 1.5x of its raw call.",
        "\n".join(render(out).splitlines()[2:10]),
        f"mlforge / raw: `read_many` 1 entity x 3 features {ratio('mlforge_1x3', 'raw_1x3'):.2f}x at p50, "
        f"**{ratio('mlforge_1x3', 'raw_1x3', 'p99_ms'):.2f}x at p99** (bound: 1.5x); the whole lookup at a read time "
        f"{ratio('lookup_1x3', 'raw_lookup_1x3'):.2f}x at p50, {ratio('lookup_1x3', 'raw_lookup_1x3', 'p99_ms'):.2f}x at p99; "
        f"{ratio('mlforge_1000x1', 'raw_1000x1'):.2f}x for 1,000 entities (typed decoding and key building).",
    ]
    if out.get("rest"):
        rest_lines = render(out).splitlines()[10:]
        parts += [
            "**REST load test**: `mlforge.serve.run` in its own process (bearer token on); the load comes from a second process, "
            f"open loop at a fixed rate over {SENDERS} keep-alive connections: `POST /features/online` with 1 entity x 3 features, "
            "and `POST /features/batch` with "
            f"{cfg.get('batch_size', 100)} entities x 3 features. Latency counts from each request's *scheduled* send time, so queueing is not hidden.",
            "\n".join(line for line in rest_lines if line.startswith("|")),
            f"Errors: {', '.join(str(r['errors']) for r in out['rest'])} (in table order).",
        ]
        verdicts = targets(out)
        if verdicts:
            parts.append("Targets of issue 20 in this run:\n\n" + "\n".join(verdicts))
    return "\n\n".join(parts)


def render(out: dict) -> str:
    m = out["machine"]
    lines = [
        f"Python {m['python']}, {m['cpus']} CPUs, {m['platform']}; 1-minute load average {m['loadavg_at_start'][0]:.1f} at start, {m['loadavg_at_end'][0]:.1f} at end.",
        "",
        "| read (Redis, loopback) | p50 ms | p99 ms | n |", "|---|---:|---:|---:|"]
    labels = {
        "mlforge_1x3": "mlforge `read_many`, 1 entity x 3 features", "raw_1x3": "raw redis-py pipeline, 3 GET + json",
        "lookup_1x3": "mlforge online lookup at T (values + records, tail pick), 1 entity x 3 features", "raw_lookup_1x3": "raw redis-py pipeline, 4 MGET (3 values, 3 records) + json",
        "mlforge_1000x1": "mlforge `read`, 1,000 entities", "raw_1000x1": "raw redis-py MGET 1,000 + json",
    }
    for key, label in labels.items():
        s = out["store"][key]
        lines.append(f"| {label} | {s['p50_ms']:.3f} | {s['p99_ms']:.3f} | {s['n']} |")
    if out.get("rest"):
        lines += ["", "| REST request (x 3 features) | requests | achieved rps | p50 ms | p99 ms | max ms | errors | server CPU ms/request | load generator CPU ms/request |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in out["rest"]:
            lat, batch = r["latency"], r.get("batch", 1)
            what = "`/features/online`, 1 entity" if batch == 1 else f"`/features/batch`, {batch} entities"
            lines.append(f"| {what}, {r['workers']} worker(s), {r['target_rps']:.0f} rps open loop | {r['requests']} | {r['achieved_rps']:.1f} | {lat['p50_ms']:.2f} | {lat['p99_ms']:.2f} | {lat['max_ms']:.1f} | {r['errors']} | {r['server_cpu_ms_per_request']:.2f} | {r['loadgen_cpu_ms_per_request']:.2f} |")
        lines.append("")
        lines.append("Latency is measured from each request's scheduled send time (includes any queueing in the load generator).")
    verdicts = targets(out)
    if verdicts:
        lines += ["", "Targets (issue 20):", *verdicts]
    return "\n".join(lines)


#: Issue 20's online targets: (entities a request, rps or None for any rate, workers or None for any, p99 bound in ms).
TARGETS = ((1, 1000.0, 2, 5.0), (100, None, None, 10.0))


def targets(out: dict) -> list[str]:
    """One line per REST case an online target of issue 20 applies to, with its verdict."""
    lines = []
    for batch, rps, workers, bound in TARGETS:
        for r in out.get("rest", []):
            if r.get("batch", 1) != batch or (rps is not None and r["target_rps"] != rps) or (workers is not None and r["workers"] != workers):
                continue
            p99 = r["latency"]["p99_ms"]
            ok = p99 <= bound and r["errors"] == 0 and r["achieved_rps"] >= 0.99 * r["target_rps"]
            lines.append(
                f"- {batch} entit{'y' if batch == 1 else 'ies'} x 3 features, {r['workers']} worker(s), {r['target_rps']:.0f} rps: "
                f"p99 {p99:.2f} ms, {r['errors']} errors; target p99 <= {bound:g} ms: {'met' if ok else 'MISSED'}"
            )
    return lines


if __name__ == "__main__":
    main()
