"""Issue 10's targets, computed from a benchmark report's ``runs.csv``, each reported with its gap, met or not.

Usage (from the repository root, after ``export.sh``):
    python benchmarks/evidence/targets.py [docs/benchmark/evidence/runs.csv] [--budget 500] [--json OUT.json]

Which paper method is "best" is chosen on the validation cases (mean validation Dice over the draws), never on the
test cases; the test Dice is what is reported. Only runs that started to learn (fewer than 10 % empty test
predictions) are compared, and compute seconds only of runs that had the CPU to themselves (sum of step times within
15 % of N x the median step and a median 1-minute load below 2.5 on the 2-core machine).

1. compute axis, k = 10 (the learning curves, draw 0): at each nnU-Net-from-scratch budget, the paper method's
   curve point (any budget) with the best validation Dice among those that used no more compute seconds;
2. k = 2, equal iterations (the grid's budget): the best paper method against full fine-tuning, nnU-Net from scratch
   and nnU-Net fine-tuned, on the draws both ran; met when the mean gap exceeds the spread over draws (the larger of
   the two standard deviations);
3. stretch, k = 10, equal iterations: the best paper method at least as good as nnU-Net from scratch.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

# The three published methods of this project, in the papers' setting (adapter + CNN decoder blocks + head).
PAPER = ("lorapt", "hyps", "pdora")
LABELS = {"lorapt": "LoRA-PT", "hyps": "HyPS", "pdora": "PDoRA", "lora": "LoRA", "decoderonly": "decoder only",
          "full": "full fine-tuning", "nnunet": "nnU-Net from scratch", "nnunet-ft": "nnU-Net fine-tuned"}
# the grid's methods at the rates chosen on the validation cases (03_grid.sh)
GRID_TOKENS = ("lorapt@3e-4,3e-3", "hyps@1e-2", "pdora@6e-3", "lora@3e-3", "decoderonly@3e-3", "full@3e-3", "nnunet",
               "nnunet-ft")
CLEAN_RATIO, CLEAN_LOAD = 1.15, 2.5


def load(path: Path, tokens: tuple[str, ...], arch: str = "unetr", learned_only: bool = True) -> pd.DataFrame:
    runs = pd.read_csv(path)
    missing = {"arch", "method", "method_token", "k", "draw", "iterations", "mean_dice", "val_mean_dice",
               "compute_seconds", "seconds_per_step", "load_average_median", "started_to_learn"} - set(runs.columns)
    if missing:
        sys.exit(f"{path} lacks the columns {sorted(missing)}: give the runs.csv of `hippo-peft benchmark-report`.")
    # one backbone (nnU-Net's rows have none): a SwinUNETR extra with the same token must not join UNETR's draws
    runs = runs[runs["method_token"].isin(tokens) & (runs["started_to_learn"].astype(bool) | (not learned_only))
                & (runs["arch"].isna() | (runs["arch"] == arch))].copy()
    ratio = runs["compute_seconds"] / (runs["iterations"] * runs["seconds_per_step"])
    runs["clean_compute"] = (ratio <= CLEAN_RATIO) & (runs["load_average_median"] < CLEAN_LOAD)
    return runs


def best_paper(runs: pd.DataFrame) -> str | None:
    """The paper method with the best mean validation Dice over its draws (ties: the first in PAPER)."""
    paper = runs[runs["method"].isin(PAPER)]
    if paper.empty:
        return None
    val = paper.groupby("method")["val_mean_dice"].mean()
    return max(PAPER, key=lambda m: val.get(m, float("-inf")))


def compare(runs: pd.DataFrame, k: int, budget: int, baselines: tuple[str, ...], stretch: bool) -> list[dict]:
    at = runs[(runs["k"] == k) & (runs["iterations"] == budget)]
    best = best_paper(at)
    rows = []
    for base in baselines:
        row = {"target": f"k = {k}, {budget} it: best paper method vs {LABELS[base]}", "k": k, "budget": budget}
        a, b = (at[at["method"] == m].set_index("draw")["mean_dice"] for m in (best, base))
        draws = sorted(set(a.index) & set(b.index))
        if best is None or not draws:
            rows.append({**row, "status": "not yet run"})
            continue
        a, b = a[draws], b[draws]
        gap = float(a.mean() - b.mean())
        spread = float(max(a.std(ddof=1), b.std(ddof=1))) if len(draws) > 1 else float("nan")
        met = gap >= 0 if stretch else (len(draws) > 1 and gap > spread)
        rows.append({**row, "best": LABELS[best], "draws": len(draws), "best_dice": float(a.mean()),
                     "best_sd": float(a.std(ddof=1)) if len(draws) > 1 else None, "baseline_dice": float(b.mean()),
                     "baseline_sd": float(b.std(ddof=1)) if len(draws) > 1 else None, "gap": gap,
                     "spread": None if spread != spread else spread, "paired_min": float((a - b).min()),
                     "paired_max": float((a - b).max()),
                     "status": ("met" if met else "not met") + ("" if len(draws) > 2 else f" ({len(draws)} draw(s))")})
    return rows


def compute_axis(runs: pd.DataFrame, k: int = 10, draw: int = 0) -> list[dict]:
    curve = runs[(runs["k"] == k) & (runs["draw"] == draw) & runs["clean_compute"]]
    paper = curve[curve["method"].isin(PAPER)]
    rows = []
    for _, nn in curve[curve["method"] == "nnunet"].sort_values("iterations").iterrows():
        cheaper = paper[paper["compute_seconds"] <= nn["compute_seconds"]]
        row = {"target": f"k = {k}, compute: nnU-Net {nn['iterations']} it ({nn['compute_seconds']:.0f} s)",
               "k": k, "baseline_dice": float(nn["mean_dice"]), "baseline_seconds": float(nn["compute_seconds"])}
        if cheaper.empty:
            rows.append({**row, "status": "no paper-method point at or below this compute"})
            continue
        pick = cheaper.loc[cheaper["val_mean_dice"].idxmax()]
        gap = float(pick["mean_dice"] - nn["mean_dice"])
        rows.append({**row, "best": f"{LABELS[pick['method']]} {pick['iterations']} it", "best_dice":
                     float(pick["mean_dice"]), "best_seconds": float(pick["compute_seconds"]), "gap": gap,
                     "status": "met" if gap > 0 else "not met"})
    return rows


def markdown(rows: list[dict]) -> str:
    def f(x, d=3):
        return "-" if x is None or x != x else f"{x:.{d}f}"
    lines = ["| target | best paper method (on validation) | its test Dice | baseline test Dice | gap | spread over "
             "draws | paired gaps per draw | status |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        best = r.get("best", "-") + (f", {r['best_seconds']:.0f} s" if "best_seconds" in r else "")
        sd = lambda key: f" ± {r[key]:.3f}" if r.get(key) is not None else ""  # noqa: E731
        paired = f"{f(r['paired_min'])} to {f(r['paired_max'])}" if "paired_min" in r else "-"
        lines.append(f"| {r['target']} | {best} | {f(r.get('best_dice'))}{sd('best_sd')} | "
                     f"{f(r.get('baseline_dice'))}{sd('baseline_sd')} | {f(r.get('gap'))} | {f(r.get('spread'))} | "
                     f"{paired} | {r['status']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="?", type=Path, default=Path("docs/benchmark/evidence/runs.csv"))
    parser.add_argument("--budget", type=int, default=500, help="the grid's iterations per run")
    parser.add_argument("--tokens", nargs="+", default=list(GRID_TOKENS), help="the grid's method tokens (rates)")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args(argv)
    if not args.runs.is_file():
        sys.exit(f"{args.runs} does not exist: run benchmarks/evidence/export.sh first (or give a report's runs.csv).")
    runs = load(args.runs, tuple(args.tokens))
    rows = (compute_axis(runs) + compare(runs, 2, args.budget, ("full", "nnunet", "nnunet-ft"), stretch=False)
            + compare(runs, 10, args.budget, ("nnunet",), stretch=True))
    print(markdown(rows))
    if args.json:
        from hippo_peft.atomic import write_text
        write_text(args.json, json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
