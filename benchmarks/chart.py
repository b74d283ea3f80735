"""Render ``benchmarks/chart.png``: time and peak memory against data size, per engine.

Reads the machine-readable results the benchmarks write (``benchmarks/results/build_*.json``
from ``bench_build.py`` and ``benchmarks/results/retrieval_*.json`` from
``bench_retrieval.py``) and draws, for the build and for retrieval, the best wall time and
the peak RSS of every case against the data size, with the hand-written DuckDB baselines
as dashed lines. A case that did not finish is left out of its size. When
``benchmarks/results/peers.json`` exists (``bench_peers.py``), a last row of bars compares
mlforge with mlforge-sdk 0.7.0 and Feast, job by job.

Usage::

    python benchmarks/chart.py                       # benchmarks/results -> benchmarks/chart.png
    python benchmarks/chart.py --out /tmp/chart.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
RESULTS = BENCH_DIR / "results"
GIB = 2**30

#: Line style per case: baselines dashed, one colour per engine.
STYLE = {
    "hand-duckdb": {"color": "black", "linestyle": "--", "marker": "o", "label": "hand-written DuckDB SQL"},
    "naive-duckdb": {"color": "grey", "linestyle": ":", "marker": "x", "label": "naive spine join (DuckDB)"},
    "mlforge-duckdb": {"color": "tab:blue", "linestyle": "-", "marker": "o", "label": "mlforge, DuckDB"},
    "mlforge-polars": {"color": "tab:orange", "linestyle": "-", "marker": "s", "label": "mlforge, Polars"},
    "mlforge-pyspark": {"color": "tab:red", "linestyle": "-", "marker": "^", "label": "mlforge, PySpark local[2]"},
}


def build_points(results: Path) -> dict[str, list[tuple[int, float, float]]]:
    """``case -> [(events, best wall seconds, peak RSS bytes)]`` from the build results."""
    sizes = {"1m": 1_000_000, "10m": 10_000_000}
    best: dict[tuple[str, str], tuple[float, float]] = {}
    for path in sorted(results.glob("build_*.json")):
        for run in json.loads(path.read_text())["runs"]:
            if not run.get("ok") or run.get("seconds") is None:
                continue
            key = (run["case"], run["size"])
            seconds, rss = best.get(key, (float("inf"), 0.0))
            best[key] = (min(seconds, run["seconds"]), max(rss, run["peak_rss"]))
    points: dict[str, list[tuple[int, float, float]]] = {}
    for (case, size), (seconds, rss) in best.items():
        points.setdefault(case, []).append((sizes[size], seconds, rss))
    return {case: sorted(p) for case, p in points.items()}


def retrieval_points(results: Path) -> dict[str, list[tuple[int, float, float]]]:
    """``case -> [(label rows, best wall seconds, peak RSS bytes)]`` from the retrieval results."""
    points: dict[str, list[tuple[int, float, float]]] = {}
    for path in sorted(results.glob("retrieval_*.json")):
        saved = json.loads(path.read_text())
        for case, best in saved["best"].items():
            if best.get("ok"):
                points.setdefault(case, []).append((saved["rows"], best["seconds"], best["peak_rss"]))
    return {case: sorted(p) for case, p in points.items()}


def peer_bars(results: Path) -> list[tuple[str, float, float]]:
    """``[(job: case, best process wall seconds, peak RSS bytes)]`` from ``peers.json``."""
    path = results / "peers.json"
    if not path.exists():
        return []
    best: dict[str, tuple[float, float]] = {}
    for run in json.loads(path.read_text())["runs"]:
        if run.get("ok"):
            key = f"{run['job']}: {run['case']}"
            seconds, rss = best.get(key, (float("inf"), 0.0))
            best[key] = (min(seconds, run["process_seconds"]), max(rss, run["peak_rss"]))
    return [(key, seconds, rss) for key, (seconds, rss) in best.items()]


def draw_peers(time_ax, mem_ax, bars: list[tuple[str, float, float]]) -> None:
    names = [b[0] for b in bars]
    colours = ["tab:blue" if ": mlforge" in n else "tab:grey" for n in names]
    time_ax.barh(names, [b[1] for b in bars], color=colours)
    mem_ax.barh(names, [b[2] / GIB for b in bars], color=colours)
    for ax, what in ((time_ax, "process wall time (s)"), (mem_ax, "peak RSS (GiB)")):
        ax.invert_yaxis()
        ax.set_xlabel(what)
        ax.set_title(f"Peers (one run; blue: mlforge): {what.split(' (')[0]}")
        ax.grid(True, axis="x", alpha=0.3)
        ax.tick_params(axis="y", labelsize=8)


def draw(
    panels: list[tuple[str, str, dict[str, list[tuple[int, float, float]]]]],
    out: Path,
    peers: list[tuple[str, float, float]] | None = None,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = len(panels) + (1 if peers else 0)
    fig, axes = plt.subplots(rows, 2, figsize=(11, 4.2 * rows), squeeze=False)
    if peers:
        draw_peers(*axes[-1], peers)
    for row, (title, xlabel, points) in enumerate(panels):
        time_ax, mem_ax = axes[row]
        for case in STYLE:
            if case not in points:
                continue
            xs = [p[0] for p in points[case]]
            time_ax.plot(xs, [p[1] for p in points[case]], **STYLE[case])
            mem_ax.plot(xs, [p[2] / GIB for p in points[case]], **STYLE[case])
        for ax, what in ((time_ax, "best wall time (s)"), (mem_ax, "peak RSS (GiB)")):
            ax.set_xscale("log")
            ax.set_yscale("log" if what.startswith("best") else "linear")
            ax.set_xlabel(xlabel)
            ax.set_ylabel(what)
            ax.set_title(f"{title}: {what.split(' (')[0]}")
            ax.grid(True, which="both", alpha=0.3)
        mem_ax.set_ylim(bottom=0)
        time_ax.legend(fontsize=8)
    fig.suptitle("mlforge benchmarks (2 shared CPUs; see README for load and CPU-time ratios)", fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default=str(RESULTS), help="directory of the benchmarks' JSON results")
    parser.add_argument("--out", default=str(BENCH_DIR / "chart.png"))
    args = parser.parse_args(argv)
    results = Path(args.results)
    panels = [
        ("Build", "events", build_points(results)),
        ("Retrieval", "label rows (features: 10 rows per label)", retrieval_points(results)),
    ]
    panels = [p for p in panels if p[2]]
    peers = peer_bars(results)
    if not panels and not peers:
        raise SystemExit(f"no results in {results}: run the benchmarks first")
    draw(panels, Path(args.out), peers)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
