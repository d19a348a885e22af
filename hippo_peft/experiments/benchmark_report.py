"""The benchmark's report: Markdown tables, a CSV/JSON of every run (and every test case), PNG plots.

About 500 lines because every table of the report is here (summary, per label, lost labels, rate choices, learning
curves, equal compute, paired differences), each a short function; splitting tables from plots would split the
shared labels and the started-to-learn rule.

Repeats (``--repeats``): every repeat of a (method, k, draw, budget) is a run of its own in the summary, per-label,
lost-label, rate and curve tables (means and SDs over every run); the paired differences need one value per draw
and take the mean over a draw's repeats that started to learn."""
from __future__ import annotations

import csv
import json
import statistics
from pathlib import Path

from hippo_peft.nnunet import label_health

_OWN_LABELS = {"full": "full fine-tuning", "nnunet": "nnU-Net from scratch", "nnunet-ft": "nnU-Net fine-tuned"}


def method_labels() -> dict[str, str]:
    """Table / plot label of every benchmark method: the registry's labels (hippo_peft.adapters.method_specs), the
    strict settings as '<label> strict', and the benchmark's own methods."""
    from hippo_peft.adapters import method_specs
    labels = {}
    for spec in method_specs():
        labels[spec.name] = spec.label
        labels.update({token: f"{spec.label} strict" for token in spec.settings[1:]})
    return {**labels, **_OWN_LABELS}


# A run "started to learn" when fewer than this share of its test predictions are empty (no foreground at all);
# no comparison is drawn at a budget where a method has not.
STARTED_TO_LEARN_MAX_EMPTY = 0.10
# a single label's mean test Dice below this while another's is above OTHER_MIN_DICE: the run lost that label
LOST_LABEL_MAX_DICE = label_health.LOST_MAX_DICE


def _fresh_head(record: dict) -> bool:
    """A run of our backbones whose head started fresh (+freshhead). Records made before the head was recorded
    carry no "head" and get no mark (they started fresh: the head was not loaded from the source then)."""
    return record["arch"] is not None and record.get("head") == "fresh"


def method_label(record: dict, with_iterations: bool = False) -> str:
    label = method_labels().get(record["method"], record["method"])
    if record.get("lr"):
        label += f" lr {record['lr']}" + (f"/{record['decoder_lr']}" if record.get("decoder_lr") else "")
    if record["arch"] is not None:
        label += f" ({record['arch']}{', head fresh' if _fresh_head(record) else ''})"
    return f"{label}, {record['iterations']} it" if with_iterations else label


def started_to_learn(record: dict) -> bool:
    summary = record["summary"]
    return summary.get("empty_predictions", 0) < STARTED_TO_LEARN_MAX_EMPTY * summary.get("cases", record["n_test"])


def lost_labels(record: dict) -> list[str]:
    """Single labels whose mean test Dice is below LOST_LABEL_MAX_DICE while another single label's is above
    label_health.OTHER_MIN_DICE (label_health.lost_labels): a run can learn one label and lose the other (a fresh
    head, a rate near instability), and its mean Dice alone does not say so."""
    regions = record["summary"]["regions"]
    return label_health.lost_labels({name: regions[name]["dice"] for name, labels in record["regions"].items()
                                     if len(labels) == 1})


def _repeats(records: list[dict]) -> int:
    return 1 + max(r.get("repeat", 0) for r in records)


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
    """method label (with the budget when runs of several budgets are present) -> k -> records (one per draw and
    repeat)."""
    several = len({r["iterations"] for r in records}) > 1
    out: dict[str, dict[int, list[dict]]] = {}
    for r in sorted(records, key=lambda r: (r["iterations"], r["arch"] or "~", r["method"], r.get("lr") or "",
                                            _fresh_head(r), r["k"], r["draw"], r.get("repeat", 0))):
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
    repeats = _repeats(records)
    lines = [f"Mean Dice over the labels ({', '.join(r for r in regions if len(records[0]['regions'][r]) == 1)}) "
             f"on {records[0]['n_test']} held-out test cases; mean ± SD over the "
             + ("draws of k training cases" if repeats == 1 else
                f"runs: the draws of k training cases × {repeats} repeats, each repeat in its own nnU-Net fold "
                f"(the paired differences take each draw's mean over its repeats)")
             + (f" (validation: the same on {n_val} validation cases, for choosing rates and budgets)" if n_val else "")
             + f". {', '.join(map(str, budgets))} training iterations per run; {settings.preset} preset; "
             f"device {settings.device}. Empty: test predictions without any foreground (a run with "
             f"{STARTED_TO_LEARN_MAX_EMPTY:.0%} or more has not started to learn: *marked*). *lost a label*: a "
             f"draw's run whose mean test Dice of one label is below {LOST_LABEL_MAX_DICE} while another's is above "
             f"{label_health.OTHER_MIN_DICE} (it learned the others; rerun it or lower its rate). Compute: the sum of "
             f"the training steps' times.", "",
             "| method | trainable | % | " + " | ".join(f"Dice k={k}" for k in shots)
             + (f" | validation Dice k={k_max}" if n_val else "")
             + f" | empty k={k_max} | HD95 {whole} (mm), k={k_max} | abs. volume error {whole} (mm³), k={k_max} | "
               f"s / step | compute (s) | peak memory (MiB) | stored |",
             "|---|---|---|" + "---|" * len(shots) + ("---|" if n_val else "") + "---|---|---|---|---|---|---|"]
    for label, by_k in groups.items():
        first = next(iter(by_k.values()))[0]
        cells = [_mean_sd([r["summary"]["mean_dice"] for r in by_k.get(k, [])])
                 + ("" if all(started_to_learn(r) for r in by_k.get(k, [])) else " *not started*")
                 + (" *lost a label*" if any(started_to_learn(r) and lost_labels(r) for r in by_k.get(k, [])) else "")
                 for k in shots]
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
    lines += ["", f"Per label (mean over {'draws' if repeats == 1 else 'runs'}): Dice / HD95 (mm); undefined HD95 (a "
                  "label missing from a prediction) are left out of the mean and counted in the CSV.", "",
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
    for section in (lost_label_section(records), rate_section(records), curve_section(records),
                    paired_section(records)):
        if section:
            lines += ["", *section]
    return "\n".join(lines) + "\n"


def _lost(r: dict) -> bool:
    return started_to_learn(r) and bool(lost_labels(r))


def _warning(r: dict) -> bool | None:
    """Whether the run's early warning fired; None when the run has no label check (made before it existed, or
    the warning could not be evaluated)."""
    check = r.get("label_check")
    if not check or not check.get("early_warning_checked", True):
        return None
    return bool(check.get("early_warning"))


def label_warnings(records: list[dict]) -> list[dict]:
    """Per (method label, k): runs, runs that lost a label (test Dice, runs that started to learn), and, of the
    runs with a label check, how often the early warning fired, was right (fired, lost), a false alarm (fired,
    not lost) or missed (lost, not fired)."""
    rows = []
    for label, by_k in group(records).items():
        for k, rs in sorted(by_k.items()):
            checked = [r for r in rs if _warning(r) is not None]
            rows.append({"label": label, "k": k, "runs": len(rs), "lost": sum(map(_lost, rs)),
                         "checked": len(checked), "fired": sum(map(_warning, checked)),
                         "right": sum(_warning(r) and _lost(r) for r in checked),
                         "false_alarms": sum(_warning(r) and not _lost(r) for r in checked),
                         "missed": sum(_lost(r) and not _warning(r) for r in checked)})
    return rows


def lost_label_section(records: list[dict]) -> list[str]:
    rows = label_warnings(records)
    shown = [x for x in rows if x["lost"] or x["fired"]]
    if not shown and not any(x["checked"] for x in rows):
        return []  # nothing lost, nothing checked: nothing to say

    def line(label, k, x) -> str:
        counts = ("n/a",) * 4 if not x["checked"] else (
            f"{x['fired']}" + (f" of {x['checked']} checked" if x["checked"] < x["runs"] else ""),
            *(str(x[c]) for c in ("right", "false_alarms", "missed")))
        return f"| {label} | {k} | {x['runs']} | {x['lost']} | " + " | ".join(counts) + " |"

    total = {c: sum(x[c] for x in rows) for c in ("runs", "lost", "checked", "fired", "right", "false_alarms",
                                                  "missed")}
    return ["### Lost labels and the early warning",
            f"Lost a label: one label's mean test Dice below {LOST_LABEL_MAX_DICE} while another's is above "
            f"{label_health.OTHER_MIN_DICE} (runs that started to learn, as in the summary). Early warning: the "
            f"trainers' label check while training (nnU-Net's pseudo-Dice of a label below "
            f"{label_health.EARLY_MAX_DICE} in every epoch of the first {label_health.EARLY_FRACTION:.0%} of the "
            f"epochs while another label's exceeded {label_health.OTHER_MIN_DICE}), from each run's label_check; "
            f"right: fired and lost; false alarm: fired, not lost; missed: lost without a warning; n/a: runs without "
            f"a label check (made before it existed). Rows where no run lost a label and no warning fired are left "
            f"out; the last row counts every run.", "",
            "| method | k | runs | lost a label | warning fired | right | false alarms | missed |",
            "|---|---|---|---|---|---|---|---|",
            *(line(x["label"], x["k"], x) for x in shown), line("all runs", "all", total)]


def _val(r: dict) -> float | None:
    return (r.get("val_summary") or {}).get("mean_dice")


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.mean(values) if values else None


def _fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def rate_choices(records: list[dict]) -> list[dict]:
    """For each (backbone, method, k, budget) run at two or more rates: the rates' mean validation and test Dice
    and the rate chosen on the validation cases (best mean validation Dice among runs that started to learn)."""
    groups: dict[tuple, dict[str, list[dict]]] = {}
    for r in records:
        if _val(r) is not None:
            # a fresh head is another method, not another rate
            key = (r["arch"] or "", r["method"], _fresh_head(r), r["k"], r["iterations"])
            groups.setdefault(key, {}).setdefault(r.get("method_token", r["method"]), []).append(r)
    choices = []
    for (arch, method, fresh, k, n), by_token in sorted(groups.items()):
        if len(by_token) < 2:
            continue
        rates = [{"token": token, "lr": rs[0].get("lr"), "decoder_lr": rs[0].get("decoder_lr"),
                  "draws": len({r["draw"] for r in rs}), "runs": len(rs),
                  "val_dice": _mean(_val(r) for r in rs), "test_dice": _mean(r["summary"]["mean_dice"] for r in rs),
                  "started": all(started_to_learn(r) for r in rs)} for token, rs in by_token.items()]
        rates.sort(key=lambda x: float(x["lr"]) if x["lr"] else 0.0)
        eligible = [x for x in rates if x["started"] and x["val_dice"] is not None]
        chosen = max(eligible, key=lambda x: x["val_dice"])["token"] if eligible else None
        # a choice at the end of the swept range says: sweep further before trusting it
        ends = {rates[0]["token"], rates[-1]["token"]} if len(rates) >= 3 else set()
        choices.append({"arch": arch or None, "method": method, "fresh_head": fresh, "k": k, "iterations": n,
                        "rates": rates, "chosen": chosen, "at_edge": chosen in ends})
    return choices


def rate_section(records: list[dict]) -> list[str]:
    choices = rate_choices(records)
    if not choices:
        return []
    lines = ["### Learning rates, chosen on the validation cases",
             "Mean Dice of each rate (adapter / decoder + head group where they differ; 'default': the trainer's own); "
             "**bold**: the chosen rate (best validation Dice among runs that started to learn); *at the edge*: the "
             "best rate is the smallest or largest swept (of three or more), so the range should be extended before "
             "the choice is trusted. Test Dice is shown for the record and was not used for the choice.", "",
             "| method | k | iterations | rate | validation Dice | test Dice | draws |",
             "|---|---|---|---|---|---|---|"]
    for c in choices:
        label = method_labels().get(c["method"], c["method"]) + (
            f" ({c['arch']}{', head fresh' if c['fresh_head'] else ''})" if c["arch"] else "")
        for x in c["rates"]:
            rate = (x["lr"] + (f" / {x['decoder_lr']}" if x["decoder_lr"] else "")) if x["lr"] else "default"
            if x["token"] == c["chosen"]:
                rate = f"**{rate}**" + (" *at the edge*" if c["at_edge"] else "")
            lines.append(f"| {label} | {c['k']} | {c['iterations']} | {rate} | {_fmt(x['val_dice'])}"
                         f"{'' if x['started'] else ' *not started*'} | {_fmt(x['test_dice'])} | {x['draws']} |")
    return lines


def curves(records: list[dict]) -> dict[tuple[str, int], list[dict]]:
    """(method label, k) -> one point per budget (mean over draws): iterations, test / validation Dice, compute
    seconds, seconds per step, load; only for methods run at two or more budgets."""
    by: dict[tuple[str, int], dict[int, list[dict]]] = {}
    for r in records:
        by.setdefault((method_label(r), r["k"]), {}).setdefault(r["iterations"], []).append(r)
    out = {}
    for key, by_n in by.items():
        if len(by_n) < 2:
            continue
        out[key] = [{"iterations": n, "test_dice": _mean(r["summary"]["mean_dice"] for r in rs),
                     "val_dice": _mean(_val(r) for r in rs), "compute_seconds": _mean(r.get("compute_seconds")
                                                                                     for r in rs),
                     "seconds_per_step": _mean(r["seconds_per_step"] for r in rs),
                     "load": max(((r.get("load_average") or {}).get("median") or 0) for r in rs),
                     # the sum of step times over N x the median step: ~1 alone, far above when the CPU was shared
                     "shared": max(r["compute_seconds"] / (r["iterations"] * r["seconds_per_step"]) for r in rs),
                     "started": all(started_to_learn(r) for r in rs), "draws": len({r["draw"] for r in rs}),
                     "runs": len(rs)}
                    for n, rs in sorted(by_n.items())]
    return out


def at_compute(points: list[dict], seconds: float, key: str = "test_dice") -> float | None:
    """A curve's Dice at ``seconds`` of compute, interpolated linearly in log-seconds between measured budgets;
    None outside the measured range (no extrapolation)."""
    import math
    xs = [p["compute_seconds"] for p in points]
    if seconds < min(xs) * 0.999 or seconds > max(xs) * 1.001:
        return None
    for a, b in zip(points, points[1:]):
        lo, hi = a["compute_seconds"], b["compute_seconds"]
        if min(lo, hi) * 0.999 <= seconds <= max(lo, hi) * 1.001:
            if a[key] is None or b[key] is None:
                return None
            if hi == lo:
                return a[key]
            t = (math.log(seconds) - math.log(lo)) / (math.log(hi) - math.log(lo))
            return a[key] + min(max(t, 0.0), 1.0) * (b[key] - a[key])
    return None


def curve_section(records: list[dict]) -> list[str]:
    cs = curves(records)
    if not cs:
        return []
    cpus = max(((r.get("load_average") or {}).get("cpus") or 0) for r in records) or None
    lines = ["### Learning curves",
             "Each budget is its own run (the poly schedule depends on it). Compute: the sum of the training steps' "
             "times. Load: the median 1-minute load average while training (the run itself counts). Sum ÷ "
             "(N × median step): about 1 for a run that had the CPU to itself; well above 1 (say > 1.5) when "
             f"something else shared the {cpus or ''} cores, and then its compute seconds are not comparable.", "",
             "| method | k | iterations | test Dice | validation Dice | compute (s) | s / step (median) | load | "
             "sum ÷ (N × median) |", "|---|---|---|---|---|---|---|---|---|"]
    for (label, k), points in sorted(cs.items()):
        for pt in points:
            lines.append(f"| {label} | {k} | {pt['iterations']} | {_fmt(pt['test_dice'])}"
                         f"{'' if pt['started'] else ' *not started*'} | {_fmt(pt['val_dice'])} | "
                         f"{_fmt(pt['compute_seconds'], 0)} | {_fmt(pt['seconds_per_step'], 2)} | "
                         f"{_fmt(pt['load'], 1)} | {_fmt(pt['shared'], 2)} |")
    reference = {k: pts for (label, k), pts in cs.items() if label == _OWN_LABELS["nnunet"]}
    for k, ref in sorted(reference.items()):
        others = {label: pts for (label, kk), pts in cs.items() if kk == k and label != _OWN_LABELS["nnunet"]}
        if not others:
            continue
        lines += ["", f"Equal compute, k = {k}: test Dice of each method at the compute seconds nnU-Net from scratch "
                      f"spent on each of its budgets (interpolated between measured budgets in log-seconds; '-': "
                      f"outside the range measured).", "",
                  "| method | " + " | ".join(f"{p['iterations']} it of nnU-Net ({_fmt(p['compute_seconds'], 0)} s)"
                                            for p in ref) + " |", "|---|" + "---|" * len(ref),
                  f"| {_OWN_LABELS['nnunet']} | " + " | ".join(_fmt(p["test_dice"]) for p in ref) + " |"]
        for label, pts in sorted(others.items()):
            lines.append(f"| {label} | " + " | ".join(_fmt(at_compute(pts, p["compute_seconds"])) for p in ref) + " |")
    return lines


def _token(r: dict) -> str:
    return f"{r['arch'] + '-' if r['arch'] else ''}{r.get('method_token', r['method'])}"


def _mean_exact(values: list[float]) -> float:
    return values[0] if len(values) == 1 else sum(values) / len(values)


def paired_differences(records: list[dict], reference: str) -> list[dict]:
    """Per (method label, k, budget) with two or more draws: the test Dice minus the reference's on the same draw
    and budget (``reference``: a run's backbone and method token, 'nnunet' or 'unetr-full@1e-3'); mean and SD over
    draws. Only runs that started to learn; with repeats, a draw's value on each side is the mean over its repeats
    that started to learn (one value per draw: the draws are the pairs)."""
    ref: dict[tuple, list[float]] = {}
    draws: dict[tuple, list[float]] = {}
    for r in records:
        if not started_to_learn(r):
            continue
        if _token(r) == reference:
            ref.setdefault((r["k"], r["draw"], r["iterations"]), []).append(r["summary"]["mean_dice"])
        else:
            draws.setdefault((method_label(r), r["k"], r["iterations"], r["draw"]), []).append(
                r["summary"]["mean_dice"])
    out: dict[tuple, list[float]] = {}
    for (label, k, n, draw), values in draws.items():
        if (k, draw, n) in ref:
            out.setdefault((label, k, n), []).append(_mean_exact(values) - _mean_exact(ref[(k, draw, n)]))
    return [{"label": label, "k": k, "iterations": n, "diffs": d, "mean": statistics.mean(d),
             "sd": statistics.stdev(d)} for (label, k, n), d in sorted(out.items()) if len(d) >= 2]


def paired_section(records: list[dict]) -> list[str]:
    lines = []
    counts: dict[str, int] = {}
    for r in records:
        if r["method"] in ("nnunet", "full"):
            counts[_token(r)] = counts.get(_token(r), 0) + 1
    for reference in sorted(counts, key=lambda t: (not t.startswith("nnunet"), t)):
        rows = paired_differences(records, reference)
        if not rows:
            continue
        label = method_label(next(r for r in records if _token(r) == reference))
        lines += ["" if lines else "### Paired differences over draws",
                  f"Test Dice minus {label}'s on the same draw and budget (runs that started to learn); mean ± SD "
                  f"over draws, and each draw's difference.", "",
                  "| method | k | iterations | difference | per draw |", "|---|---|---|---|---|"]
        lines += [f"| {x['label']} | {x['k']} | {x['iterations']} | {x['mean']:+.3f} ± {x['sd']:.3f} | "
                  + ", ".join(f"{d:+.3f}" for d in x["diffs"]) + " |" for x in rows]
    return lines


def write_csvs(records: list[dict], out: Path) -> None:
    regions = list(records[0]["regions"])
    columns = ["run", "arch", "method", "method_token", "lr", "decoder_lr", "head", "iterations", "k", "draw",
               "repeat", "fold", "trainer", "plans", "n_test", "mean_dice", "empty_predictions", "started_to_learn",
               "lost_labels", "early_warning", "label_check", "n_val", "val_mean_dice", "trainable", "total",
               "percent_trainable", "seconds_per_step", "compute_seconds", "load_average_median", "peak_memory_mib",
               "peak_memory_kind", "stored_bytes", "stored_what", "batch_size", "wall_seconds"]
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
            row["lost_labels"] = ";".join(lost_labels(r))
            row["repeat"] = r.get("repeat", 0)
            row["early_warning"] = _warning(r)  # empty: no label check
            row["label_check"] = (r.get("label_check") or {}).get("verdict")  # on nnU-Net's validation (ours + test)
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
    from matplotlib.figure import Figure  # no pyplot: no global backend state, works headless

    groups = group(records)
    fig = Figure(figsize=(7, 4.5))
    ax = fig.subplots()
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

    fig = Figure(figsize=(7, 4.5))
    ax = fig.subplots()
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
    if len({r["iterations"] for r in records}) > 1:
        learning_curves(records, out)


def learning_curves(records: list[dict], out: Path) -> None:
    """Test Dice against training iterations and against compute seconds (sum of step times), per method and k;
    mean over draws, one point per budget."""
    from matplotlib.figure import Figure
    curves: dict[tuple, dict[int, list[dict]]] = {}
    for r in records:
        curves.setdefault((method_label(r), r["k"]), {}).setdefault(r["iterations"], []).append(r)
    curves = {key: c for key, c in curves.items() if len(c) > 1}
    if not curves:
        return
    fig = Figure(figsize=(12, 4.5))
    axes = fig.subplots(1, 2, sharey=True)
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


def write_report(records: list[dict], settings, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "benchmark.md").write_text(markdown(records, settings))
    (out / "runs.json").write_text(json.dumps(records, indent=1))
    write_csvs(records, out)
    plots(records, out)
