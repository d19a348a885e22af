"""Dice against k for the grid's methods at their chosen rates and the grid's budget only (the report's own
dice_vs_k.png holds every run of the folder, sweep included, and is unreadable for this question).

Usage (from the repository root, after ``export.sh``):
    python benchmarks/evidence/grid_plot.py [RUNS_CSV] [-o docs/benchmark/evidence/grid_dice_vs_k.png]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from matplotlib.figure import Figure

from targets import GRID_TOKENS, LABELS, load  # the same runs and labels as the targets


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="?", type=Path, default=Path("docs/benchmark/evidence/runs.csv"))
    parser.add_argument("-o", "--out", type=Path, default=Path("docs/benchmark/evidence/grid_dice_vs_k.png"))
    parser.add_argument("--budget", type=int, default=500)
    args = parser.parse_args(argv)
    if not args.runs.is_file():
        sys.exit(f"{args.runs} does not exist: run benchmarks/evidence/export.sh first (or give a report's runs.csv).")
    runs = load(args.runs, GRID_TOKENS)
    runs = runs[runs["iterations"] == args.budget]
    fig = Figure(figsize=(7, 4.5))
    ax = fig.add_subplot()
    shots = sorted(runs["k"].unique())
    for i, token in enumerate(GRID_TOKENS):
        stats = runs[runs["method_token"] == token].groupby("k")["mean_dice"].agg(["mean", "std", "count"])
        if stats.empty:
            continue
        x = [shots.index(k) + (i - len(GRID_TOKENS) / 2) * 0.03 for k in stats.index]  # side by side, not on top
        draws = "/".join(str(n) for n in stats["count"])
        ax.errorbar(x, stats["mean"], yerr=stats["std"].fillna(0), marker="o", capsize=3,
                    linestyle="--" if token.startswith("nnunet") else "-",
                    label=f"{LABELS[token.split('@')[0]]} ({draws} draws)")
    ax.set_xticks(range(len(shots)), [f"k = {k}" for k in shots])
    ax.set_ylabel("mean Dice, 40 test cases (mean ± SD over draws)")
    ax.set_title(f"The grid at {args.budget} iterations, chosen rates")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
