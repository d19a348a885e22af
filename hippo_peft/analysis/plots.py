"""The classification's figures (matplotlib's Figure API: no global pyplot state, works headless), written
atomically."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from hippo_peft.analysis.cohort import Cohort
from hippo_peft.analysis.model import Classification
from hippo_peft.atomic import atomic_file


def prefix(report: dict) -> str:
    """The title prefix that marks a synthetic cohort."""
    return "SYNTHETIC DATA: " if report["synthetic_data"] else ""


def plot_roc(result: Classification, cohort: Cohort, path: Path) -> None:
    """Every repeat's ROC curve (thin) and their mean with the AUC and its interval."""
    report = result.report
    from matplotlib.figure import Figure  # no pyplot: no global backend state, works headless
    fig = Figure(figsize=(5.2, 5))
    ax = fig.subplots()
    for fpr, tpr in result.roc["curves"]:
        ax.plot(fpr, tpr, color="tab:blue", alpha=0.2, lw=0.8)
    auc = report["metrics"]["auc"]
    ci = auc["ci95_bootstrap"]
    label = f"mean ROC, AUC {auc['mean_over_repeats']:.3f}" + (f" (95% CI {ci[0]:.3f}-{ci[1]:.3f})" if ci else "")
    ax.plot(result.roc["fpr"], result.roc["tpr"], color="tab:blue", lw=2, label=label)
    ax.plot([0, 1], [0, 1], "--", color="grey", lw=1, label="chance")
    g0, g1 = cohort.groups
    ax.set(xlabel=f"false positive rate ({g1} called {g0})", ylabel=f"true positive rate ({g0} found)",
           xlim=(0, 1), ylim=(0, 1.01))
    ax.set_title(f"{prefix(report)}{g0} vs {g1}, {report['model']}, {report['cv']['folds']}-fold x "
                 f"{report['cv']['repeats']}", fontsize=9)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    _save_figure(fig, path)


def _save_figure(fig, path: Path) -> None:
    with atomic_file(path) as tmp:
        fig.savefig(tmp, dpi=120, format=path.suffix.lstrip(".") or "png")


def plot_volumes(result: Classification, cohort: Cohort, path: Path) -> None:
    """A box plot with the subjects' dots of each volume feature by group."""
    report = result.report
    from matplotlib.figure import Figure
    names = list(cohort.volumes)
    fig = Figure(figsize=(3.2 * len(names) + 0.6, 4))
    axes = np.atleast_1d(fig.subplots(1, len(names)))
    rng = np.random.default_rng(0)  # jitter of the dots only
    for ax, name in zip(axes, names):
        data = [cohort.volumes[name][cohort.y == v] for v in (1, 0)]
        ax.boxplot(data, showfliers=False)
        ax.set_xticks([1, 2], [f"{g}\n(n={len(d)})" for g, d in zip(cohort.groups, data)])
        for i, d in enumerate(data, start=1):
            ax.plot(i + rng.uniform(-0.12, 0.12, len(d)), d, "o", ms=3, alpha=0.5, color="k")
        ax.set_title(name, fontsize=9)
        ax.set_ylabel("mm³" if "/" not in name else "ratio")
    fig.suptitle(f"{prefix(report)}volume by group", fontsize=10)
    fig.tight_layout()
    _save_figure(fig, path)
