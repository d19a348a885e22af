"""Before / after table of the head rules (05_head.sh): per method, k and draw, the test Dice per label with the
head fresh ("before", `+freshhead`) and from the source ("after"), lost labels (the shared rule of
hippo_peft.nnunet.label_health) and whether the early warning fired. Usage:
python benchmarks/evidence/head_table.py docs/benchmark/head/runs [--k 10]"""
from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from hippo_peft.experiments.benchmark_report import method_labels
from hippo_peft.nnunet.label_health import lost_labels


def load(folder: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]


def row(r: dict) -> dict:
    regions = r["summary"]["regions"]
    dice = {n: regions[n]["dice"] for n, labels in r["regions"].items() if len(labels) == 1}
    check = r.get("label_check") or {}
    return {"dice": dice, "mean": r["summary"]["mean_dice"], "lost": lost_labels(dice),
            "warned": bool(check.get("early_warning")) if check else None}


def fmt(x: dict) -> str:
    per = " / ".join(f"{d:.3f}" if d is not None else "-" for d in x["dice"].values())
    return f"{x['mean']:.3f} ({per})" + (" **lost " + ", ".join(x["lost"]) + "**" if x["lost"] else "") + \
        (" (warned)" if x["warned"] else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("runs", type=Path)
    parser.add_argument("--k", type=int, nargs="+", default=[10, 1])
    args = parser.parse_args()
    records = load(args.runs)
    labels = method_labels()
    out = ["| method | k | draw | repeat | head fresh (before) | head from source (after) |", "|---|---|---|---|---|---|"]
    means: dict[tuple, dict[str, list]] = {}
    for k in args.k:
        keys = sorted({(r["method"], r["draw"], r.get("repeat", 0)) for r in records if r["k"] == k})
        for method, draw, repeat in keys:
            pair = {r["head"]: row(r) for r in records
                    if (r["method"], r["k"], r["draw"], r.get("repeat", 0)) == (method, k, draw, repeat)}
            cells = [fmt(pair[h]) if h in pair else "pending" for h in ("fresh", "source")]
            out.append(f"| {labels.get(method, method)} | {k} | {draw} | {repeat} | {cells[0]} | {cells[1]} |")
            for h, x in pair.items():
                means.setdefault((method, k), {}).setdefault(h, []).append(x)
    out += ["", "| method | k | runs before / after | mean Dice before | mean Dice after | lost a label before | "
                "lost a label after | warnings before / after |", "|---|---|---|---|---|---|---|---|"]
    for (method, k), by in sorted(means.items(), key=lambda i: (-i[0][1], i[0][0])):
        b, a = by.get("fresh", []), by.get("source", [])

        def ms(xs):
            v = [x["mean"] for x in xs]
            return "-" if not v else f"{statistics.mean(v):.3f}" + (f" ± {statistics.stdev(v):.3f}" if len(v) > 1 else "")
        out.append(f"| {labels.get(method, method)} | {k} | {len(b)} / {len(a)} | {ms(b)} | {ms(a)} | "
                   f"{sum(bool(x['lost']) for x in b)} | {sum(bool(x['lost']) for x in a)} | "
                   f"{sum(bool(x['warned']) for x in b)} / {sum(bool(x['warned']) for x in a)} |")
    print("\n".join(out))


if __name__ == "__main__":
    main()
