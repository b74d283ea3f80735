"""CPU of one in-process online lookup of many entities, as ``mlforge serve`` does it.

    .venv/bin/python benchmarks/profile_online.py                 # 100 entities x 3 features
    .venv/bin/python benchmarks/profile_online.py --profile       # and where the time goes

Starts a private ``redis-server`` on a free loopback port, fills it as
``online_latency.py`` does (tails of published metric features, one plain feature, their
publication records), then times ``mlforge.retrieval.online.lookup`` of ``--entities``
random entities of the three features plus rendering the answer to JSON with
``serve.render_json``, as the server answers, after warm-up calls. CPU time is this
process's only (Redis is a separate process); run it against two checkouts with ``PYTHONPATH=<checkout>/src`` to
compare them.
"""

from __future__ import annotations

import argparse
import cProfile
import datetime as dt
import pstats
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import online_latency as ol


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entities", type=int, default=100, help="entities per lookup")
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--profile", action="store_true", help="also print the top of a cProfile run")
    args = parser.parse_args()

    from mlforge.online.publication import Publication
    from mlforge.online.redis import RedisStore
    from mlforge.retrieval.online import lookup
    from mlforge.serve import render_json

    proc, port = ol.start_redis()
    try:
        store = RedisStore(host="127.0.0.1", port=port, prefix="bench")
        population = 20_000
        ol.fill(store, population)
        at = dt.datetime.fromtimestamp(ol.FIRST_LABEL + 12 * ol.DAY + 3600, tz=dt.UTC)
        stand_ins = {f: Publication(f, None, ("user_id",), "ts", None, None, None, ()) for f in ol.FEATURES}
        rng = random.Random(3)

        def one() -> None:
            uids = [f"u{rng.randrange(population)}" for _ in range(args.entities)]
            readings = lookup(store, stand_ins, {f: [{"user_id": u} for u in uids] for f in ol.FEATURES}, at)
            answer = [
                {
                    "features": {f: readings[f][i].row for f in ol.FEATURES},
                    "metadata": {f: {"label_time": readings[f][i].label_time, "known": readings[f][i].known} for f in ol.FEATURES},
                }
                for i in range(len(uids))
            ]
            render_json(answer)

        for _ in range(20):
            one()
        cpu, wall = time.process_time(), time.perf_counter()
        for _ in range(args.calls):
            one()
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        print(f"{args.entities} entities x {len(ol.FEATURES)} features: {cpu / args.calls * 1e3:.2f} ms CPU, {wall / args.calls * 1e3:.2f} ms wall per lookup ({args.calls} calls)")
        if args.profile:
            profiler = cProfile.Profile()
            profiler.enable()
            for _ in range(args.calls):
                one()
            profiler.disable()
            pstats.Stats(profiler).sort_stats("tottime").print_stats(20)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


if __name__ == "__main__":
    main()
