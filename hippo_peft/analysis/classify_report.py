"""The classification's written record: the Markdown summary and the output folder (JSON, summary, figures)."""
from __future__ import annotations

import json
from pathlib import Path

from hippo_peft.analysis.cohort import Cohort
from hippo_peft.analysis.model import Classification
from hippo_peft.analysis.plots import plot_roc, plot_volumes, prefix
from hippo_peft.analysis.text import listing
from hippo_peft.atomic import write_text
from hippo_peft.errors import OutputExistsError

OUTPUT_FILES = ("classification.json", "summary.md", "roc.png", "volumes_by_group.png")


def format_summary(report: dict) -> str:
    g0, g1 = report["groups"]["positive"], report["groups"]["negative"]
    n = report["n_per_group"]
    lines = [f"## {prefix(report)}{g0} vs {g1} from hippocampal volumes", "",
             f"{report['n_subjects']} subjects ({g0} {n[g0]}, {g1} {n[g1]}); features: "
             f"{', '.join(report['features'])}; model: {report['model']} after standardisation; "
             f"stratified {report['cv']['folds']}-fold CV repeated {report['cv']['repeats']} times, seed "
             f"{report['cv']['seed']}. Positive class: {g0}.", "",
             "| metric | mean over repeats | 95 % CI (bootstrap over subjects) | 2.5-97.5 % over repeats |",
             "|---|---|---|---|"]
    for k, title in (("accuracy", "accuracy"), ("balanced_accuracy", "balanced accuracy"), ("auc", "ROC AUC")):
        m = report["metrics"][k]
        ci = m["ci95_bootstrap"]
        r = m["repeat_2.5_97.5_percentiles"]
        lines.append(f"| {title} | {m['mean_over_repeats']:.3f} | "
                     f"{f'{ci[0]:.3f}-{ci[1]:.3f}' if ci else 'not computed'} | {r[0]:.3f}-{r[1]:.3f} |")
    cm = report["confusion_matrix"]
    lines += ["", "Confusion matrix (first repeat, out-of-fold; rows: true, columns: predicted):", "",
              f"| | predicted {g0} | predicted {g1} |", "|---|---|---|"]
    lines += [f"| true {g} | {cm[f'true {g}'][f'predicted {g0}']} | {cm[f'true {g}'][f'predicted {g1}']} |"
              for g in (g0, g1)]
    p = report["permutation_test"]
    lines.append("")
    if p:
        verdict = (f"beats chance (p < {p['alpha']:g})" if p["beats_chance"] else
                   f"does NOT beat chance (p >= {p['alpha']:g}): treat the AUC as chance level")
        lines.append(f"Permutation test ({p['n_permutations']} label shuffles, {p['cv']}): AUC {p['auc']:.3f} vs "
                     f"{p['permuted_auc_mean']:.3f} +/- {p['permuted_auc_sd']:.3f} with shuffled labels; "
                     f"p = {p['p_value']:.4f} (smallest possible: {1 / (p['n_permutations'] + 1):.4f}) -> "
                     f"{verdict}.")
    else:
        lines.append("Permutation test: not run (--permutations 0); chance level is unknown.")
    ex = report["excluded"]
    lines.append("")
    if ex:
        by_reason: dict[str, list[str]] = {}
        for e in ex:
            by_reason.setdefault(e["reason"], []).append(e["subject"])
        lines.append(f"Excluded: {len(ex)} subject(s), every one listed in classification.json:")
        lines += [f"- {reason} ({len(ids)}): {listing(ids)}" for reason, ids in by_reason.items()]
    else:
        lines.append("Excluded: none.")
    fl = report["flagged_but_included"]
    if fl:
        lines.append(f"Included despite quality flags ({len(fl)}; --exclude-flagged drops them): "
                     + listing([f"{f['subject']} ({f['flags']})" for f in fl]))
    return "\n".join(lines)


def check_out_dir(out_dir: Path, overwrite: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputExistsError(f"-o {out_dir} exists and is not a folder.")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
        raise OutputExistsError(f"-o {out_dir} is not empty; pass --overwrite to replace "
                                f"{', '.join(OUTPUT_FILES)} there, or choose a new folder.")


def _prepare_out_dir(out_dir: Path, overwrite: bool) -> None:
    check_out_dir(out_dir, overwrite)
    out_dir.mkdir(parents=True, exist_ok=True)


def write_outputs(result: Classification, cohort: Cohort, out_dir: Path, overwrite: bool) -> None:
    """Figures, ``classification.json`` and ``summary.md`` into ``out_dir`` (each file atomically)."""
    _prepare_out_dir(out_dir, overwrite)
    plot_roc(result, cohort, out_dir / "roc.png")
    plot_volumes(result, cohort, out_dir / "volumes_by_group.png")
    write_text(out_dir / "classification.json",
               json.dumps(result.report, indent=2, ensure_ascii=False, default=list) + "\n")
    write_text(out_dir / "summary.md", result.report["summary_markdown"] + "\n")
