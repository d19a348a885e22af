"""The grid's table for one k: test Dice per draw, mean ± SD over draws, validation Dice, cost; one row per method
at its chosen rate, ordered by validation Dice (the column every choice uses), never by test Dice.

Usage (from the repository root, after ``export.sh``):
    python benchmarks/evidence/grid_table.py --k 10 [RUNS_CSV] [--budget 500]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from targets import GRID_TOKENS, LABELS, load  # the same runs and labels as the targets


def label(token: str) -> str:
    method, _, rate = token.partition("@")
    return f"{LABELS[method]} ({rate.replace(',', ' / ')})" if rate else LABELS[method]


def rows(runs, k: int, budget: int, draws: int) -> list[str]:
    at = runs[(runs["k"] == k) & (runs["iterations"] == budget)]
    out = []
    for token, g in at.groupby("method_token"):
        test = g.set_index("draw")["mean_dice"]
        cells = " | ".join(f"{test[d]:.3f}" if d in test.index else "-" for d in range(draws))
        sd = lambda s: f" ± {s.std(ddof=1):.3f}" if len(s) > 1 else " (1 draw)"  # noqa: E731
        empty = int(g["empty_predictions"].max())
        # a run can learn one label and lose the other (Dice ~0 on every case): the mean hides which
        labels = g[[c for c in g.columns if c.startswith("dice_") and "+" not in c]]
        low = labels.min(axis=1)
        lowest = f"{low.min():.2f} ({labels.loc[low.idxmin()].idxmin()[5:]}, draw {g.loc[low.idxmin(), 'draw']})"
        out.append((g["val_mean_dice"].mean(),
                    f"| {label(token)} | {cells} | {test.mean():.3f}{sd(test)} | "
                    f"{g['val_mean_dice'].mean():.3f}{sd(g['val_mean_dice'])} | {empty} | {lowest} | "
                    f"{g['seconds_per_step'].median():.2f} | {g['compute_seconds'].median():.0f} |"))
    return [r for _, r in sorted(out, key=lambda x: -x[0])]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="?", type=Path, default=Path("docs/benchmark/evidence/runs.csv"))
    parser.add_argument("--k", type=int, required=True, help="labelled training cases per draw")
    parser.add_argument("--budget", type=int, default=500, help="the grid's iterations per run")
    parser.add_argument("--draws", type=int, default=3)
    args = parser.parse_args(argv)
    if not args.runs.is_file():
        sys.exit(f"{args.runs} does not exist: run benchmarks/evidence/export.sh first (or give a report's runs.csv).")
    # every run, learned or not: the empty-predictions column shows which had not started to learn
    table = rows(load(args.runs, GRID_TOKENS, learned_only=False), args.k, args.budget, args.draws)
    if not table:
        sys.exit(f"no grid run at k = {args.k} and {args.budget} iterations in {args.runs}.")
    head = " | ".join(f"draw {d}" for d in range(args.draws))
    print(f"| method (rate) | {head} | test Dice, mean ± SD | validation Dice | most empty test predictions in a draw "
          f"| lowest single-label test Dice | s / step (median) | compute (s, median) |")
    print("|---" * (args.draws + 7) + "|")
    print("\n".join(table))
    return 0


if __name__ == "__main__":
    sys.exit(main())
