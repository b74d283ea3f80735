"""Draw the figures of the docs site into docs/figures/*.svg (run by `nox -s docs`).

* ``grid-windows.svg``: the grid, its labels and one window (docs/concepts.md);
* ``point-in-time-join.svg``: which grid row each label row joins (docs/retrieval.md);
* ``version-lifecycle.svg``: a build publishing versions and the ``latest`` pointer
  (docs/storage.md).

The SVGs are deterministic (no dates, fixed ids, text kept as text), so a re-run changes
a file only when its drawing changed. Needs matplotlib (a dev dependency).

    python docs/gen_figures.py            # write the figures
    python docs/gen_figures.py --check    # exit 1 when a figure is missing
"""

from __future__ import annotations

import sys
from pathlib import Path

FIGURES = Path(__file__).resolve().parent / "figures"
NAMES = ("grid-windows.svg", "point-in-time-join.svg", "version-lifecycle.svg")

INK, MUTED, ACCENT, GOOD, BAD, FILL = "#1f2933", "#7b8794", "#2f6fdf", "#2e8540", "#c0392b", "#e4ecfb"


def setup():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({
        "svg.hashsalt": "mlforge-docs", "svg.fonttype": "none", "font.family": "DejaVu Sans",
        "font.size": 10, "axes.edgecolor": MUTED, "text.color": INK,
    })
    return plt


def save(fig, name: str) -> None:
    FIGURES.mkdir(exist_ok=True)
    fig.savefig(FIGURES / name, format="svg", bbox_inches="tight", metadata={"Date": None, "Creator": None})


def timeline(ax, start: float, end: float, y: float = 0.0) -> None:
    ax.annotate("", xy=(end, y), xytext=(start, y), arrowprops={"arrowstyle": "->", "color": MUTED, "lw": 1.2})


def grid_windows(plt) -> None:
    """Daily grid, window 3d: the row labelled 01-08 aggregates [01-05 00:00, 01-08 00:00)."""
    fig, ax = plt.subplots(figsize=(8.6, 3.0))
    days = list(range(4, 11))
    timeline(ax, 3.6, 10.6)
    events = [(5.42, "e₁"), (6.63, "e₂"), (8.0, "e₃")]
    ax.add_patch(plt.Rectangle((5, -0.1), 3, 0.2, facecolor=FILL, edgecolor="none", zorder=0))
    ax.annotate("", xy=(5, -0.48), xytext=(8, -0.48), arrowprops={"arrowstyle": "<->", "color": ACCENT})
    ax.text(6.3, -0.53, "3d window of the row t = 01-08:  t − 3d ≤ ts < t", ha="center", va="top", color=ACCENT)
    for day in days:
        ax.plot([day, day], [-0.12, 0.12], color=INK, lw=1)
        ax.text(day, -0.28, f"01-{day:02d}", ha="center", va="top", color=INK)
    for day in (6, 7, 8, 9):
        ax.annotate(f"row\nt = 01-{day:02d}", xy=(day, 0.14), xytext=(day, 0.62), ha="center", va="bottom", fontsize=8.5, color=MUTED,
                    arrowprops={"arrowstyle": "->", "color": MUTED, "lw": 0.8})
    for x, name in events:
        inside = 5 <= x < 8
        ax.plot([x], [0], "o", color=GOOD if inside else BAD, ms=8, zorder=3)
        ax.text(x, 0.07, name, ha="center", va="bottom", color=GOOD if inside else BAD, fontsize=10)
    ax.text(8.75, -0.53, "e₃ at 01-08 00:00 is not in row 01-08:\nit belongs to the next label", color=BAD, fontsize=8.5, ha="left", va="top")
    ax.text(3.6, 0.95, "interval = 1d: the grid, epoch-aligned, UTC; the row labelled t holds what was known at t", color=MUTED, fontsize=8.5, ha="left")
    ax.set_xlim(3.5, 10.8)
    ax.set_ylim(-0.85, 1.05)
    ax.axis("off")
    save(fig, "grid-windows.svg")


def point_in_time_join(plt) -> None:
    """Each label row joins the grid row at or before its time: floor(L / interval)."""
    fig, ax = plt.subplots(figsize=(8.6, 3.4))
    timeline(ax, 3.6, 9.6, 1.0)
    timeline(ax, 3.6, 9.6, 0.0)
    ax.text(3.55, 1.0, "feature rows\n(grid labels)", ha="right", va="center", color=INK)
    ax.text(3.55, 0.0, "entity_df\n(label times)", ha="right", va="center", color=INK)
    rows = {5: "5.0", 6: "12.5", 7: "40.0", 8: "27.5"}
    for day, value in rows.items():
        ax.add_patch(plt.Rectangle((day - 0.16, 0.9), 0.32, 0.2, facecolor=FILL, edgecolor=ACCENT))
        ax.text(day, 1.16, f"01-{day:02d}", ha="center", va="bottom", fontsize=8.5, color=INK)
        ax.text(day, 1.38, value, ha="center", va="bottom", fontsize=8.5, color=ACCENT)
    ax.text(3.55, 1.45, "spend_3d", ha="right", va="bottom", fontsize=8.5, color=ACCENT)
    labels = [(5.6, 5, "L = 01-05 14:24", -0.12), (7.0, 7, "L = 01-07 00:00\n(exact hit)", -0.12), (7.9, 7, "L = 01-07 21:36", -0.55)]
    for x, row, text, y in labels:
        ax.plot([x], [0], "D", color=INK, ms=6, zorder=3)
        ax.text(x, y, text, ha="center", va="top", fontsize=8.5)
        ax.annotate("", xy=(row, 0.88), xytext=(x, 0.05), arrowprops={"arrowstyle": "->", "color": GOOD, "lw": 1.4})
    ax.plot([4.3], [0], "D", color=INK, ms=6, zorder=3)
    ax.text(4.3, -0.12, "L = 01-04 08:00\nno row yet:\nempty windows (sum 0)", ha="center", va="top", fontsize=8.5)
    ax.annotate("", xy=(8.0, 0.88), xytext=(7.9, 0.05), arrowprops={"arrowstyle": "->", "color": BAD, "lw": 1, "ls": "--"})
    ax.text(8.35, 0.5, "never a later row:\nit holds events after L", color=BAD, fontsize=8.5, va="center")
    ax.set_xlim(2.4, 9.8)
    ax.set_ylim(-0.8, 1.65)
    ax.axis("off")
    save(fig, "point-in-time-join.svg")


def version_lifecycle(plt) -> None:
    """A build stages, hashes and publishes; change kinds bump the version; `latest` moves."""
    fig, ax = plt.subplots(figsize=(10.0, 3.4))
    steps = ["read/plan", "compute\n(staging files)", "write\n(hashes, metadata)", "publish\n(one rename)"]
    for i, step in enumerate(steps):
        x = 0.7 + i * 2.1
        ax.add_patch(plt.Rectangle((x - 0.8, 2.05), 1.6, 0.55, facecolor="white", edgecolor=MUTED))
        ax.text(x, 2.32, step, ha="center", va="center", fontsize=8.5)
        if i:
            ax.annotate("", xy=(x - 0.82, 2.32), xytext=(x - 1.28, 2.32), arrowprops={"arrowstyle": "->", "color": MUTED})
    versions = [("1.0.0", "first build"), ("1.0.1", "new data\nPATCH"), ("1.1.0", "metric added\nMINOR"), ("2.0.0", "key or type\nchanged: MAJOR")]
    for i, (version, why) in enumerate(versions):
        x = 0.6 + i * 2.6
        ax.add_patch(plt.Rectangle((x - 0.55, 0.55), 1.1, 0.5, facecolor=FILL, edgecolor=ACCENT))
        ax.text(x, 0.8, version, ha="center", va="center", fontsize=10, color=ACCENT)
        if i:
            ax.annotate("", xy=(x - 0.57, 0.8), xytext=(x - 2.03, 0.8), arrowprops={"arrowstyle": "->", "color": INK})
            ax.text(x - 1.3, 1.05, why, ha="center", va="bottom", fontsize=8)
    ax.annotate("", xy=(0.6 + 3 * 2.6, 1.07), xytext=(6.9, 1.95), arrowprops={"arrowstyle": "->", "color": MUTED, "ls": ":"})
    ax.text(8.45, 0.0, "latest", ha="center", va="center", color=GOOD, fontweight="bold")
    ax.annotate("", xy=(8.4, 0.53), xytext=(8.45, 0.12), arrowprops={"arrowstyle": "->", "color": GOOD})
    ax.annotate("", xy=(5.8, 0.53), xytext=(8.2, 0.02), arrowprops={"arrowstyle": "->", "color": GOOD, "ls": "--", "connectionstyle": "arc3,rad=-0.2"})
    ax.text(5.2, 0.12, "mlforge rollback:\nonly the pointer moves", fontsize=8, color=GOOD, ha="right", va="center")
    ax.text(0.05, -0.35, "every version stays; an unchanged definition and source is skipped, not rebuilt", fontsize=8, color=MUTED)
    ax.text(0.05, -0.6, "a failed build publishes nothing: its staging files are discarded", fontsize=8, color=BAD)
    ax.set_xlim(-0.3, 9.6)
    ax.set_ylim(-0.75, 2.75)
    ax.axis("off")
    save(fig, "version-lifecycle.svg")


def main(argv: list[str]) -> int:
    if "--check" in argv:
        missing = [n for n in NAMES if not (FIGURES / n).is_file()]
        if missing:
            print(f"missing figures: {missing}; run python docs/gen_figures.py", file=sys.stderr)
            return 1
        return 0
    plt = setup()
    for draw in (grid_windows, point_in_time_join, version_lifecycle):
        draw(plt)
        plt.close("all")
    print(f"wrote {', '.join(NAMES)} to {FIGURES}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
