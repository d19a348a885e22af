"""The benchmark's report: Markdown tables, a CSV/JSON of every run (and every test case), PNG plots."""
from __future__ import annotations

import csv
import json
import statistics
from pathlib import Path

_ADAPTERS = {"lorapt": "LoRA-PT", "hyps": "HyPS", "pdora": "PDoRA", "lora": "LoRA", "dora": "DoRA", "pissa": "PiSSA"}
METHOD_LABELS = {**_ADAPTERS, **{f"{m}-strict": f"{label} strict" for m, label in _ADAPTERS.items()},
                 "headonly": "head only", "decoderonly": "decoder only", "cnnonly": "CNN only",
                 "full": "full fine-tuning", "nnunet": "nnU-Net from scratch",
                 "nnunet-ft": "nnU-Net fine-tuned"}
# A run "started to learn" when fewer than this share of its test predictions are empty (no foreground at all);
# no comparison is drawn at a budget where a method has not.
STARTED_TO_LEARN_MAX_EMPTY = 0.10


def method_label(record: dict, with_iterations: bool = False) -> str:
    label = METHOD_LABELS.get(record["method"], record["method"])
    if record.get("lr"):
        label += f" lr {record['lr']}" + (f"/{record['decoder_lr']}" if record.get("decoder_lr") else "")
    if record["arch"] is not None:
        label += f" ({record['arch']})"
    return f"{label}, {record['iterations']} it" if with_iterations else label


def started_to_learn(record: dict) -> bool:
    summary = record["summary"]
    return summary.get("empty_predictions", 0) < STARTED_TO_LEARN_MAX_EMPTY * summary.get("cases", record["n_test"])


def _mean_sd(values: list[float], digits: int = 3) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def _size(n_bytes: float) -> str:
    if n_bytes < 1024:
        return f"{n_bytes:.0f} B"
    return f"{n_bytes / 2 ** 20:.1f} MiB" if n_bytes >= 2 ** 20 else f"{n_bytes / 1024:.0f} KiB"


def group(records: list[dict]) -> dict[str, dict[int, list[dict]]]:
    """method label (with the budget when runs of several budgets are present) -> k -> records (one per draw)."""
    several = len({r["iterations"] for r in records}) > 1
    out: dict[str, dict[int, list[dict]]] = {}
    for r in sorted(records, key=lambda r: (r["iterations"], r["arch"] or "~", r["method"], r.get("lr") or "",
                                            r["k"], r["draw"])):
        out.setdefault(method_label(r, several), {}).setdefault(r["k"], []).append(r)
    return out


def markdown(records: list[dict], settings) -> str:
    groups = group(records)
    shots = sorted({r["k"] for r in records})
    regions = list(records[0]["regions"])
    whole = regions[-1]
    k_max = shots[-1]
    budgets = sorted({r["iterations"] for r in records})
    n_val = max(r.get("n_val", 0) for r in records)
    lines = [f"Mean Dice over the labels ({', '.join(r for r in regions if len(records[0]['regions'][r]) == 1)}) "
             f"on {records[0]['n_test']} held-out test cases; mean ± SD over the draws of k training cases"
             f"{f' (validation: the same on {n_val} validation cases, for choosing rates and budgets)' if n_val else ''}"
             f". {', '.join(map(str, budgets))} training iterations per run; {settings.preset} preset; "
             f"device {settings.device}. Empty: test predictions without any foreground (a run with "
             f"{STARTED_TO_LEARN_MAX_EMPTY:.0%} or more has not started to learn: *marked*). Compute: the sum of "
             f"the training steps' times.", "",
             "| method | trainable | % | " + " | ".join(f"Dice k={k}" for k in shots)
             + (f" | validation Dice k={k_max}" if n_val else "")
             + f" | empty k={k_max} | HD95 {whole} (mm), k={k_max} | abs. volume error {whole} (mm³), k={k_max} | "
               f"s / step | compute (s) | peak memory (MiB) | stored |",
             "|---|---|---|" + "---|" * len(shots) + ("---|" if n_val else "") + "---|---|---|---|---|---|---|"]
    for label, by_k in groups.items():
        first = next(iter(by_k.values()))[0]
        cells = [_mean_sd([r["summary"]["mean_dice"] for r in by_k.get(k, [])])
                 + ("" if all(started_to_learn(r) for r in by_k.get(k, [])) else " *not started*") for k in shots]
        last = by_k.get(k_max, [])
        steps = [r["seconds_per_step"] for rs in by_k.values() for r in rs]
        val = [_mean_sd([(r.get("val_summary") or {}).get("mean_dice") for r in last])] if n_val else []
        empty = "/".join(str(r["summary"].get("empty_predictions", "-")) for r in last) or "-"
        compute = _mean_sd([r.get("compute_seconds") for rs in by_k.values() for r in rs], 0)
        lines.append(
            f"| {label} | {first['trainable']:,} | {first['percent_trainable']:.3f} | " + " | ".join(cells + val)
            + f" | {empty} | {_mean_sd([r['summary']['regions'][whole]['hd95'] for r in last], 2)}"
            f" | {_mean_sd([r['summary']['regions'][whole]['abs_volume_error'] for r in last], 0)}"
            f" | {statistics.median(steps):.2f} | {compute}"
            f" | {max(r['peak_memory_mib'] for rs in by_k.values() for r in rs):.0f}"
            f" | {_size(first['stored_bytes'])} ({first['stored_what']}) |")
    lines += ["", "Per label (mean over draws): Dice / HD95 (mm); undefined HD95 (a label missing from a prediction) "
                  "are left out of the mean and counted in the CSV.", "",
              "| method | k | " + " | ".join(regions) + " |", "|---|---|" + "---|" * len(regions)]
    for label, by_k in groups.items():
        for k in shots:
            rs = by_k.get(k, [])
            if not rs:
                continue
            cells = []
            for region in regions:
                d = _mean_sd([r["summary"]["regions"][region]["dice"] for r in rs]).split(" ±")[0]
                h = _mean_sd([r["summary"]["regions"][region]["hd95"] for r in rs], 2).split(" ±")[0]
                cells.append(f"{d} / {h}")
            lines.append(f"| {label} | {k} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_csvs(records: list[dict], out: Path) -> None:
    regions = list(records[0]["regions"])
    columns = ["run", "arch", "method", "method_token", "lr", "decoder_lr", "iterations", "k", "draw", "fold",
               "trainer", "plans", "n_test", "mean_dice", "empty_predictions", "started_to_learn", "n_val",
               "val_mean_dice", "trainable", "total", "percent_trainable", "seconds_per_step", "compute_seconds",
               "load_average_median", "peak_memory_mib", "peak_memory_kind", "stored_bytes", "stored_what",
               "batch_size", "wall_seconds"]
    for region in regions:
        columns += [f"{m}_{region}" for m in ("dice", "hd95", "hd95_undefined", "abs_volume_error")]
    with open(out / "runs.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, columns)
        writer.writeheader()
        for r in records:
            row = {c: r.get(c) for c in columns}
            row["mean_dice"] = r["summary"]["mean_dice"]
            row["empty_predictions"] = r["summary"].get("empty_predictions")
            row["started_to_learn"] = started_to_learn(r)
            row["val_mean_dice"] = (r.get("val_summary") or {}).get("mean_dice")
            row["load_average_median"] = (r.get("load_average") or {}).get("median")
            for region in regions:
                for m in ("dice", "hd95", "hd95_undefined", "abs_volume_error"):
                    row[f"{m}_{region}"] = r["summary"]["regions"][region][m]
            writer.writerow(row)
    with open(out / "cases.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["run", "case", "region", "dice", "hd95_mm", "volume_reference_mm3", "volume_predicted_mm3",
                         "abs_volume_error_mm3"])
        for r in records:
            for case, by_region in r["per_case"].items():
                for region, m in by_region.items():
                    writer.writerow([r["run"], case, region, m["dice"], m["hd95"], m["volume_reference"],
                                     m["volume_predicted"], m["abs_volume_error"]])


def plots(records: list[dict], out: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = group(records)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, by_k in groups.items():
        ks = sorted(by_k)
        means = [statistics.mean(r["summary"]["mean_dice"] or 0 for r in by_k[k]) for k in ks]
        sds = [statistics.stdev([r["summary"]["mean_dice"] or 0 for r in by_k[k]]) if len(by_k[k]) > 1 else 0
               for k in ks]
        style = "k--" if label.startswith("nnU-Net") else "-"
        ax.errorbar(ks, means, yerr=sds, fmt=style, marker="o", capsize=3, label=label)
    ax.set(xlabel="labelled training cases k", ylabel="mean Dice (held-out)", title="Dice vs k (mean ± SD over draws)")
    ax.set_xticks(sorted({r["k"] for r in records}))
    ax.legend(fontsize=7, ncol=2)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "dice_vs_k.png", dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 4.5))
    markers = "osD^v<>"
    for i, k in enumerate(sorted({r["k"] for r in records})):
        for j, (label, by_k) in enumerate(groups.items()):
            rs = by_k.get(k, [])
            if rs:
                ax.scatter(max(rs[0]["trainable"], 1), statistics.mean(r["summary"]["mean_dice"] or 0 for r in rs),
                           marker=markers[i % len(markers)], color=f"C{j % 10}",
                           label=label if i == 0 else None)
    ax.set_xscale("log")
    ax.set(xlabel="trainable parameters (log)", ylabel="mean Dice (held-out)",
           title="Dice vs trainable parameters (" + ", ".join(f"{m}: k={k}" for m, k in zip(
               ["o", "s", "D", "^"], sorted({r["k"] for r in records}))) + ")")
    ax.legend(fontsize=7, ncol=2)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "dice_vs_params.png", dpi=120)
    plt.close(fig)
    if len({r["iterations"] for r in records}) > 1:
        learning_curves(records, out)


def learning_curves(records: list[dict], out: Path) -> None:
    """Test Dice against training iterations and against compute seconds (sum of step times), per method and k;
    mean over draws, one point per budget."""
    import matplotlib.pyplot as plt
    curves: dict[tuple, dict[int, list[dict]]] = {}
    for r in records:
        curves.setdefault((method_label(r), r["k"]), {}).setdefault(r["iterations"], []).append(r)
    curves = {key: c for key, c in curves.items() if len(c) > 1}
    if not curves:
        return
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    for i, ((label, k), by_n) in enumerate(sorted(curves.items())):
        ns = sorted(by_n)
        dice = [statistics.mean(r["summary"]["mean_dice"] or 0 for r in by_n[n]) for n in ns]
        secs = [statistics.mean(r["compute_seconds"] for r in by_n[n]) for n in ns]
        style = "--" if label.startswith("nnU-Net") else "-"
        for ax, x in zip(axes, (ns, secs)):
            ax.plot(x, dice, style, marker="o", color=f"C{i % 10}", label=f"{label}, k={k}")
    axes[0].set(xlabel="training iterations", ylabel="mean Dice (test)", title="Dice vs iterations", xscale="log")
    axes[1].set(xlabel="compute seconds (sum of training-step times)", title="Dice vs compute", xscale="log")
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "learning_curves.png", dpi=120)
    plt.close(fig)


def write_report(records: list[dict], settings, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "benchmark.md").write_text(markdown(records, settings))
    (out / "runs.json").write_text(json.dumps(records, indent=1))
    write_csvs(records, out)
    plots(records, out)
