"""``hippo-peft classify``: do hippocampal volumes separate two diagnostic groups (e.g. AD vs CN)?

A scikit-learn pipeline (standardisation, then logistic regression by default, an RBF SVM or a random forest by
option) over volumes from ``hippo-peft volumes`` plus chosen covariates from a metadata table (age, sex,
intracranial volume; volume / ICV when an ICV column is given), evaluated with stratified k-fold
cross-validation repeated with a fixed seed. Reported: accuracy, balanced accuracy and ROC AUC (mean over repeats,
95 % bootstrap confidence interval over subjects, spread over repeats), the confusion matrix of the first repeat,
and a permutation test (labels shuffled, model refitted) that says whether the AUC beats chance.

Subjects are joined by id. Missing subjects, unknown groups, non-numeric values, duplicate ids and groups too small
for the folds are errors that list the offenders; options that exclude subjects (``--allow-missing``,
``--drop-other-groups``, ``--exclude-flagged``) list every excluded subject in the report. Nothing is dropped
silently.

``hippo-peft synthetic-cohort OUT_DIR`` writes a SYNTHETIC cohort (volumes + metadata drawn from a simple
generative model, fixed seed) to try the command on; it is not data from any real subject.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

MODELS = ("logreg", "svm", "rf")
SEX_CODES = {"f": 0.0, "female": 0.0, "m": 1.0, "male": 1.0, "0": 0.0, "1": 1.0}
SYNTHETIC_MARK = "SYNTHETIC"
OUTPUT_FILES = ("classification.json", "summary.md", "roc.png", "volumes_by_group.png")
_MAX_LISTED = 30


def _listing(items: list[str]) -> str:
    shown = ", ".join(items[:_MAX_LISTED])
    return shown + (f" ... and {len(items) - _MAX_LISTED} more" if len(items) > _MAX_LISTED else "")


# ---------------------------------------------------------------------------------------------------------- input

def read_table(path: str | Path, what: str) -> tuple[list[str], list[dict[str, str]]]:
    """(header, rows) of a CSV; every value a stripped string (ids like ``007`` stay strings).

    Raises:
        FileNotFoundError: no such file.
        ValueError: empty file, blank or repeated column names, ragged rows.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist.")
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        rows = [r for r in reader if any(c.strip() for c in r)]
    if not rows:
        raise ValueError(f"{what} {path} is empty.")
    header = [h.strip() for h in rows[0]]
    repeated = sorted({h for h in header if header.count(h) > 1})
    if repeated or "" in header:
        raise ValueError(f"{what} {path}: blank or repeated column names {repeated or ['<blank>']}.")
    ragged = [str(i + 2) for i, r in enumerate(rows[1:]) if len(r) != len(header)]
    if ragged:
        raise ValueError(f"{what} {path}: line(s) {_listing(ragged)} do not have {len(header)} fields like the "
                         f"header.")
    return header, [dict(zip(header, (c.strip() for c in r))) for r in rows[1:]]


def _require_columns(header: list[str], wanted: list[str], what: str, path, hint: str = "") -> None:
    missing = [c for c in wanted if c not in header]
    if missing:
        raise ValueError(f"{what} {path} has no column(s) {', '.join(missing)} (it has: {', '.join(header)}). "
                         f"{hint}".rstrip())


def _index_by_id(rows: list[dict], column: str, what: str, path) -> dict[str, dict]:
    ids = [r[column] for r in rows]
    blank = [str(i + 2) for i, v in enumerate(ids) if not v]
    if blank:
        raise ValueError(f"{what} {path}: empty {column!r} on line(s) {_listing(blank)}.")
    dup = sorted({v for v in ids if ids.count(v) > 1})
    if dup:
        raise ValueError(f"{what} {path}: duplicate id(s) in column {column!r}: {_listing(dup)}. Each subject must "
                         f"appear once.")
    return {r[column]: r for r in rows}


def _number(value: str, column: str, sex_column: str | None) -> float | None:
    """A finite float, or None when the value is not one; the sex column also takes M/F (M=1, F=0)."""
    if column == sex_column and value.lower() in SEX_CODES:
        return SEX_CODES[value.lower()]
    if column == sex_column:
        return None
    try:
        x = float(value)
    except ValueError:
        return None
    return x if math.isfinite(x) else None


@dataclass
class Cohort:
    """Subjects that go into the classification, with everything needed to report on them."""
    ids: list[str]
    y: np.ndarray  # 1 = groups[0] (the positive class), 0 = groups[1]
    labels: list[str]  # the target value of each subject
    X: np.ndarray
    feature_names: list[str]
    groups: tuple[str, str]
    volumes: dict[str, np.ndarray]  # volume features (raw and / ICV) for the box plot
    excluded: list[dict] = field(default_factory=list)  # {"subject", "reason"}
    flagged_included: list[dict] = field(default_factory=list)  # {"subject", "flags"}
    synthetic: bool = False


def parse_groups(groups: str | list[str]) -> tuple[str, str]:
    items = [g.strip() for g in (groups.split(",") if isinstance(groups, str) else groups) if g.strip()]
    if len(items) != 2 or items[0] == items[1]:
        raise ValueError(f"--groups needs exactly two different groups, e.g. --groups AD,CN (got {groups!r}); the "
                         f"first is the positive class of the AUC.")
    return items[0], items[1]


def build_cohort(volumes_csv: str | Path, metadata_csv: str | Path, target: str, groups, *,
                 id_column: str = "subject", volumes_id_column: str = "case",
                 volume_columns: list[str] | tuple[str, ...] = ("total_mm3",), covariates: list[str] | tuple = (),
                 sex_column: str = "sex", icv_column: str | None = None, icv_normalised_only: bool = False,
                 allow_missing: bool = False, drop_other_groups: bool = False, exclude_flagged: bool = False,
                 folds: int = 5) -> Cohort:
    """Join volumes and metadata by subject id and check everything before any model sees it.

    Args:
        volumes_csv: output of ``hippo-peft volumes`` (or any CSV with an id column and volume columns).
        metadata_csv: one row per subject with the id, the target and the covariates.
        target: metadata column with the group of each subject (e.g. ``diagnosis``).
        groups: two target values, ``"AD,CN"``; the first is the positive class.
        id_column / volumes_id_column: id columns of the metadata / volumes tables; ids must be equal strings.
        volume_columns: volume features (default the total volume).
        covariates: metadata columns added as features; the sex column may hold M/F (M=1, F=0) or 0/1.
        icv_column: metadata column of intracranial volume; adds each volume / ICV as a feature.
        icv_normalised_only: keep only the volume / ICV features, not the raw volumes.
        allow_missing: exclude (and list) subjects present in only one table instead of failing.
        drop_other_groups: exclude (and list) subjects whose target is not one of ``groups``.
        exclude_flagged: exclude (and list) cases with quality flags in the volumes table's ``flags`` column.
        folds: folds of the stratified cross-validation (each group needs at least this many subjects).

    Raises:
        FileNotFoundError: a table is missing.
        ValueError: any bad input; the message lists every offender found.
    """
    groups = parse_groups(groups)
    if folds < 2:
        raise ValueError(f"--folds must be >= 2 (got {folds}).")
    volume_columns, covariates = list(volume_columns), list(covariates)
    if not volume_columns:
        raise ValueError("--volume-columns: give at least one volume column, e.g. total_mm3.")
    if icv_normalised_only and not icv_column:
        raise ValueError("--icv-normalised-only needs --icv-column.")
    vh, vrows = read_table(volumes_csv, "volumes CSV")
    mh, mrows = read_table(metadata_csv, "metadata CSV")
    _require_columns(vh, [volumes_id_column], "volumes CSV", volumes_csv, "Set --volumes-id-column.")
    available = [c for c in vh if c.endswith("_mm3")]
    _require_columns(vh, volume_columns, "volumes CSV", volumes_csv,
                     f"Volume columns available: {', '.join(available) or 'none'}.")
    _require_columns(mh, [id_column], "metadata CSV", metadata_csv, "Set --id-column.")
    _require_columns(mh, [target], "metadata CSV", metadata_csv, "Set --target.")
    _require_columns(mh, covariates + ([icv_column] if icv_column else []), "metadata CSV", metadata_csv,
                     "Check --covariates / --icv-column.")
    vol = _index_by_id(vrows, volumes_id_column, "volumes CSV", volumes_csv)
    meta = _index_by_id(mrows, id_column, "metadata CSV", metadata_csv)

    problems, excluded = [], []
    only_vol = sorted(set(vol) - set(meta))
    only_meta = sorted(set(meta) - set(vol))
    if only_vol or only_meta:
        if allow_missing:
            excluded += [{"subject": s, "reason": "in the volumes CSV only"} for s in only_vol]
            excluded += [{"subject": s, "reason": "in the metadata CSV only"} for s in only_meta]
        else:
            msg = []
            if only_vol:
                msg.append(f"{len(only_vol)} id(s) in the volumes CSV but not in the metadata CSV: "
                           f"{_listing(only_vol)}")
            if only_meta:
                msg.append(f"{len(only_meta)} id(s) in the metadata CSV but not in the volumes CSV: "
                           f"{_listing(only_meta)}")
            problems.append("; ".join(msg) + " (ids are compared as exact strings; --allow-missing excludes them "
                                             "and lists them in the report)")
    matched = [s for s in meta if s in vol]  # metadata order

    other = [s for s in matched if meta[s][target] not in groups]
    if other:
        if drop_other_groups:
            excluded += [{"subject": s, "reason": f"{target}={meta[s][target] or '<empty>'} not in "
                                                  f"{','.join(groups)}"} for s in other]
        else:
            shown = {s: meta[s][target] or "<empty>" for s in other}
            tally = ", ".join(f"{v} ({list(shown.values()).count(v)})" for v in sorted(set(shown.values())))
            problems.append(f"{len(other)} subject(s) have a {target!r} outside --groups {','.join(groups)} "
                            f"(values {tally}; case-sensitive): "
                            f"{_listing([f'{s} ({v})' for s, v in shown.items()])}. "
                            f"Fix the values or pass --drop-other-groups to exclude them (they are then listed).")
    other_set = set(other)
    included = [s for s in matched if s not in other_set]

    flagged_included = []
    if exclude_flagged and "flags" not in vh:
        raise ValueError(f"--exclude-flagged: the volumes CSV {volumes_csv} has no 'flags' column (write it with "
                         f"`hippo-peft volumes`), so there is nothing to exclude by; drop the option.")
    if "flags" in vh:
        flagged = [s for s in included if vol[s]["flags"]]
        if exclude_flagged:
            excluded += [{"subject": s, "reason": f"quality flags: {vol[s]['flags']}"} for s in flagged]
            flagged_set = set(flagged)
            included = [s for s in included if s not in flagged_set]
        else:
            flagged_included = [{"subject": s, "flags": vol[s]["flags"]} for s in flagged]

    bad = []
    values: dict[str, dict[str, float]] = {s: {} for s in included}
    for s in included:
        for c in volume_columns:
            x = _number(vol[s][c], c, None)
            if x is None or x < 0:
                bad.append(f"{s}: {c}={vol[s][c] or '<empty>'!s}")
            values[s][c] = x
        for c in covariates + ([icv_column] if icv_column and icv_column not in covariates else []):
            x = _number(meta[s][c], c, sex_column)
            if x is None or (c == icv_column and x <= 0):
                bad.append(f"{s}: {c}={meta[s][c] or '<empty>'!s}")
            values[s][c] = x
    if bad:
        problems.append(f"{len(bad)} non-numeric, missing or invalid value(s) (volumes must be >= 0, ICV > 0, "
                        f"{sex_column!r} M/F/male/female/0/1): {_listing(bad)}")
    if problems:
        raise ValueError("cannot classify:\n  " + "\n  ".join(problems))

    counts = {g: sum(1 for s in included if meta[s][target] == g) for g in groups}
    small = {g: n for g, n in counts.items() if n < folds}
    if small:
        need = min(counts.values())
        hint = (f"use --folds {need} (or fewer) or add subjects" if need >= 2 else
                "add subjects (each group needs at least 2)")
        raise ValueError(f"group(s) {', '.join(f'{g} ({n} subject(s))' for g, n in small.items())} have fewer "
                         f"subjects than --folds {folds} (counts after exclusions: "
                         f"{', '.join(f'{g} {n}' for g, n in counts.items())}); stratified {folds}-fold "
                         f"cross-validation needs >= {folds} per group: {hint}.")

    names, cols, vol_feats = [], [], {}
    for c in volume_columns:
        raw = np.array([values[s][c] for s in included])
        if not icv_normalised_only:
            names.append(c)
            cols.append(raw)
            vol_feats[c] = raw
        if icv_column:
            ratio = raw / np.array([values[s][icv_column] for s in included])
            names.append(f"{c}/{icv_column}")
            cols.append(ratio)
            vol_feats[f"{c}/{icv_column}"] = ratio
    for c in covariates:
        names.append(c)
        cols.append(np.array([values[s][c] for s in included]))
    synthetic = bool(included) and (all(vol[s].get("file") == SYNTHETIC_MARK for s in included)
                                    or all(meta[s].get("data_source") == SYNTHETIC_MARK for s in included))
    return Cohort(ids=included, y=np.array([1 if meta[s][target] == groups[0] else 0 for s in included]),
                  labels=[meta[s][target] for s in included], X=np.column_stack(cols), feature_names=names,
                  groups=groups, volumes=vol_feats, excluded=excluded, flagged_included=flagged_included,
                  synthetic=synthetic)


# ------------------------------------------------------------------------------------------------------- modelling

def make_pipeline(model: str = "logreg", seed: int = 0):
    """Standardisation + classifier. ``svm`` ranks by its decision function (no Platt scaling)."""
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC
    if model not in MODELS:
        raise ValueError(f"--model {model!r}: choose one of {', '.join(MODELS)}.")
    clf = {"logreg": lambda: LogisticRegression(max_iter=5000),
           "svm": lambda: SVC(kernel="rbf", C=1.0, gamma="scale"),
           "rf": lambda: RandomForestClassifier(n_estimators=300, random_state=seed, n_jobs=1)}[model]()
    return Pipeline([("standardise", StandardScaler()), (model, clf)])


def _scores(pipe, X: np.ndarray) -> np.ndarray:
    """Continuous score for the positive class (probability when the model has one, else decision function)."""
    if hasattr(pipe, "predict_proba"):
        return pipe.predict_proba(X)[:, 1]
    return pipe.decision_function(X)


def auc_by_ranks(scores: np.ndarray, n_pos: int) -> np.ndarray:
    """ROC AUC of each row of ``scores`` whose first ``n_pos`` columns are positives (Mann-Whitney U, ties 0.5)."""
    from scipy.stats import rankdata
    scores = np.atleast_2d(scores)
    n_neg = scores.shape[1] - n_pos
    ranks = rankdata(scores, axis=1)
    return (ranks[:, :n_pos].sum(axis=1) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def cross_validate(X: np.ndarray, y: np.ndarray, model: str = "logreg", folds: int = 5, repeats: int = 10,
                   seed: int = 0) -> dict:
    """Out-of-fold scores and predictions of every subject in every repeat of stratified k-fold CV.

    Returns:
        dict with ``scores`` and ``pred`` (repeats x subjects) and per-repeat ``accuracy``,
        ``balanced_accuracy``, ``auc`` arrays.
    """
    from sklearn.base import clone
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, roc_auc_score
    from sklearn.model_selection import RepeatedStratifiedKFold
    if repeats < 1:
        raise ValueError(f"--repeats must be >= 1 (got {repeats}).")
    pipe = make_pipeline(model, seed)
    scores = np.full((repeats, len(y)), np.nan)
    pred = np.full((repeats, len(y)), -1)
    cv = RepeatedStratifiedKFold(n_splits=folds, n_repeats=repeats, random_state=seed)
    for i, (train, test) in enumerate(cv.split(X, y)):
        r = i // folds  # RepeatedStratifiedKFold yields all folds of one repeat before the next repeat
        fitted = clone(pipe).fit(X[train], y[train])
        scores[r, test] = _scores(fitted, X[test])
        pred[r, test] = fitted.predict(X[test])
    return {"scores": scores, "pred": pred,
            "accuracy": np.array([accuracy_score(y, p) for p in pred]),
            "balanced_accuracy": np.array([balanced_accuracy_score(y, p) for p in pred]),
            "auc": np.array([roc_auc_score(y, s) for s in scores])}


def bootstrap_ci(y: np.ndarray, scores: np.ndarray, pred: np.ndarray, n_boot: int = 1000, seed: int = 0,
                 level: float = 0.95) -> dict:
    """Percentile bootstrap CI over subjects (resampled within each group), of each metric averaged over repeats.

    Returns:
        ``{metric: [low, high]}`` for accuracy, balanced_accuracy and auc.
    """
    rng = np.random.default_rng(seed)
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    idx = np.concatenate([rng.choice(pos, (n_boot, pos.size)), rng.choice(neg, (n_boot, neg.size))], axis=1)
    auc = np.mean([auc_by_ranks(s[idx], pos.size) for s in scores], axis=0)
    correct = np.stack([p[idx] == y[idx] for p in pred])  # repeats x boot x subjects
    acc = correct.mean(axis=(0, 2))
    bacc = (correct[:, :, :pos.size].mean(axis=2) + correct[:, :, pos.size:].mean(axis=2)).mean(axis=0) / 2
    q = [(1 - level) / 2 * 100, (1 + level) / 2 * 100]
    return {k: [float(v) for v in np.percentile(a, q)] for k, a in
            (("accuracy", acc), ("balanced_accuracy", bacc), ("auc", auc))}


def permutation_test(X: np.ndarray, y: np.ndarray, model: str = "logreg", folds: int = 5, n_permutations: int = 200,
                     seed: int = 0) -> dict:
    """sklearn's permutation_test_score with ROC AUC on one stratified k-fold split (seeded): the model is refitted
    on ``n_permutations`` label shufflings; p = (shuffles scoring >= the real AUC + 1) / (n_permutations + 1)."""
    from sklearn.model_selection import StratifiedKFold, permutation_test_score
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    score, perm, p = permutation_test_score(make_pipeline(model, seed), X, y, cv=cv, n_permutations=n_permutations,
                                            scoring="roc_auc", random_state=seed, n_jobs=1)
    return {"n_permutations": n_permutations, "cv": f"stratified {folds}-fold, shuffled with seed {seed}",
            "scoring": "roc_auc", "auc": float(score), "p_value": float(p),
            "permuted_auc_mean": float(np.mean(perm)), "permuted_auc_sd": float(np.std(perm)),
            "permuted_auc_95th_percentile": float(np.percentile(perm, 95)),
            "permuted_auc": [float(v) for v in perm]}


def _mean_roc(y: np.ndarray, scores: np.ndarray) -> dict:
    from sklearn.metrics import roc_curve
    grid = np.linspace(0, 1, 101)
    curves = []
    for s in scores:
        fpr, tpr, _ = roc_curve(y, s)
        curves.append((fpr, tpr))
    tprs = np.array([np.interp(grid, f, t) for f, t in curves])
    tprs[:, 0] = 0.0
    return {"fpr": grid, "tpr": tprs.mean(axis=0), "curves": curves}


def run_classification(cohort: Cohort, model: str = "logreg", folds: int = 5, repeats: int = 10, seed: int = 0,
                       n_permutations: int = 200, n_boot: int = 1000, alpha: float = 0.05) -> dict:
    """Cross-validate, bootstrap and permutation-test; return the report (JSON-ready, plus ``_cv`` arrays)."""
    if n_permutations < 0 or n_boot < 0:
        raise ValueError("--permutations and --bootstrap must be >= 0.")
    if not 0 < alpha < 1:
        raise ValueError(f"--alpha must be in (0, 1) (got {alpha}).")
    if n_permutations and (n_permutations + 1) * alpha < 1:
        raise ValueError(f"--permutations {n_permutations} can never give p < {alpha:g} (smallest possible p is "
                         f"1/{n_permutations + 1}); use >= {math.ceil(1 / alpha) - 1}, or 0 to skip the test.")
    from threadpoolctl import threadpool_limits
    # Hundreds of fits on a few features: multi-threaded BLAS only adds overhead (20x slower on a busy machine).
    with threadpool_limits(limits=1):
        cv = cross_validate(cohort.X, cohort.y, model, folds, repeats, seed)
        perm = permutation_test(cohort.X, cohort.y, model, folds, n_permutations, seed) if n_permutations else None
    metrics = {}
    ci = bootstrap_ci(cohort.y, cv["scores"], cv["pred"], n_boot, seed) if n_boot else {}
    for k in ("accuracy", "balanced_accuracy", "auc"):
        v = cv[k]
        metrics[k] = {"mean_over_repeats": float(v.mean()),
                      "ci95_bootstrap": ci.get(k),
                      "repeat_2.5_97.5_percentiles": [float(x) for x in np.percentile(v, [2.5, 97.5])],
                      "per_repeat": [float(x) for x in v]}
    g0, g1 = cohort.groups
    first = cv["pred"][0]
    cm = {f"true {g}": {f"predicted {h}": int(np.sum((cohort.y == yt) & (first == yp)))
                        for h, yp in ((g0, 1), (g1, 0))} for g, yt in ((g0, 1), (g1, 0))}
    if perm:
        perm["beats_chance"] = perm["p_value"] < alpha
        perm["alpha"] = alpha
    roc = _mean_roc(cohort.y, cv["scores"])
    from hippo_peft import __version__
    import sklearn
    return {
        "tool": f"hippo-peft classify {__version__} (scikit-learn {sklearn.__version__})",
        "synthetic_data": cohort.synthetic,
        "groups": {"positive": g0, "negative": g1},
        "n_subjects": len(cohort.ids),
        "n_per_group": {g0: int(cohort.y.sum()), g1: int((cohort.y == 0).sum())},
        "features": cohort.feature_names,
        "model": model, "pipeline": str(make_pipeline(model, seed)),
        "cv": {"scheme": "RepeatedStratifiedKFold", "folds": folds, "repeats": repeats, "seed": seed},
        "metrics": metrics,
        "metrics_note": "mean_over_repeats: each repeat scores every subject once out-of-fold; ci95_bootstrap: "
                        f"percentile bootstrap over subjects ({n_boot} resamples within each group) of the "
                        "repeat-averaged metric; repeat_2.5_97.5_percentiles: spread due to the fold assignment "
                        "only (not a confidence interval). Accuracy uses the model's default threshold.",
        "confusion_matrix": cm,
        "confusion_matrix_note": "out-of-fold predictions of the first repeat (each subject counted once)",
        "permutation_test": perm,
        "mean_roc": {"fpr": [float(x) for x in roc["fpr"]], "tpr": [float(x) for x in roc["tpr"]]},
        "excluded": cohort.excluded,
        "flagged_but_included": cohort.flagged_included,
        "subjects": [{"subject": s, "group": g, "mean_oof_score": float(m), "first_repeat_prediction":
                      g0 if p == 1 else g1} for s, g, m, p in zip(cohort.ids, cohort.labels,
                                                                  cv["scores"].mean(axis=0), first)],
        "_cv": cv, "_roc": roc,
    }


# -------------------------------------------------------------------------------------------------------- outputs

def _prefix(report: dict) -> str:
    return "SYNTHETIC DATA: " if report["synthetic_data"] else ""


def plot_roc(report: dict, cohort: Cohort, path: Path) -> None:
    from matplotlib.figure import Figure  # no pyplot: no global backend state, works headless
    fig = Figure(figsize=(5.2, 5))
    ax = fig.subplots()
    for fpr, tpr in report["_roc"]["curves"]:
        ax.plot(fpr, tpr, color="tab:blue", alpha=0.2, lw=0.8)
    auc = report["metrics"]["auc"]
    ci = auc["ci95_bootstrap"]
    label = f"mean ROC, AUC {auc['mean_over_repeats']:.3f}" + (f" (95% CI {ci[0]:.3f}-{ci[1]:.3f})" if ci else "")
    ax.plot(report["_roc"]["fpr"], report["_roc"]["tpr"], color="tab:blue", lw=2, label=label)
    ax.plot([0, 1], [0, 1], "--", color="grey", lw=1, label="chance")
    g0, g1 = cohort.groups
    ax.set(xlabel=f"false positive rate ({g1} called {g0})", ylabel=f"true positive rate ({g0} found)",
           xlim=(0, 1), ylim=(0, 1.01))
    ax.set_title(f"{_prefix(report)}{g0} vs {g1}, {report['model']}, {report['cv']['folds']}-fold x "
                 f"{report['cv']['repeats']}", fontsize=9)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    _save_figure(fig, path)


def _save_figure(fig, path: Path) -> None:
    from hippo_peft.atomic import atomic_file
    with atomic_file(path) as tmp:
        fig.savefig(tmp, dpi=120, format=path.suffix.lstrip(".") or "png")


def plot_volumes(report: dict, cohort: Cohort, path: Path) -> None:
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
    fig.suptitle(f"{_prefix(report)}volume by group", fontsize=10)
    fig.tight_layout()
    _save_figure(fig, path)


def format_summary(report: dict) -> str:
    g0, g1 = report["groups"]["positive"], report["groups"]["negative"]
    n = report["n_per_group"]
    lines = [f"## {_prefix(report)}{g0} vs {g1} from hippocampal volumes", "",
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
        lines += [f"- {reason} ({len(ids)}): {_listing(ids)}" for reason, ids in by_reason.items()]
    else:
        lines.append("Excluded: none.")
    fl = report["flagged_but_included"]
    if fl:
        lines.append(f"Included despite quality flags ({len(fl)}; --exclude-flagged drops them): "
                     + _listing([f"{f['subject']} ({f['flags']})" for f in fl]))
    return "\n".join(lines)


def _check_out_dir(out_dir: Path, overwrite: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise FileExistsError(f"-o {out_dir} exists and is not a folder.")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
        raise FileExistsError(f"-o {out_dir} is not empty; pass --overwrite to replace "
                              f"{', '.join(OUTPUT_FILES)} there, or choose a new folder.")


def _prepare_out_dir(out_dir: Path, overwrite: bool) -> None:
    _check_out_dir(out_dir, overwrite)
    out_dir.mkdir(parents=True, exist_ok=True)


def classify(volumes_csv, metadata_csv, target: str, groups, out_dir: str | Path = "classification", *,
             overwrite: bool = False, model: str = "logreg", folds: int = 5, repeats: int = 10, seed: int = 0,
             n_permutations: int = 200, n_boot: int = 1000, alpha: float = 0.05, **cohort_kwargs) -> dict:
    """Check the inputs, run the classification, write JSON + summary + plots into ``out_dir``; return the report.

    ``cohort_kwargs`` go to :func:`build_cohort`.
    """
    out_dir = Path(out_dir)
    if model not in MODELS:
        raise ValueError(f"--model {model!r}: choose one of {', '.join(MODELS)}.")
    if out_dir.exists() and not overwrite:  # fail before minutes of computation, not after
        _check_out_dir(out_dir, overwrite)
    cohort = build_cohort(volumes_csv, metadata_csv, target, groups, folds=folds, **cohort_kwargs)
    report = run_classification(cohort, model, folds, repeats, seed, n_permutations, n_boot, alpha)
    report["inputs"] = {"volumes_csv": str(Path(volumes_csv).resolve()),
                        "metadata_csv": str(Path(metadata_csv).resolve()), "target": target,
                        **{k: v for k, v in cohort_kwargs.items()}}
    _prepare_out_dir(out_dir, overwrite)
    plot_roc(report, cohort, out_dir / "roc.png")
    plot_volumes(report, cohort, out_dir / "volumes_by_group.png")
    summary = format_summary(report)
    report["summary_markdown"] = summary
    public = {k: v for k, v in report.items() if not k.startswith("_")}
    from hippo_peft.atomic import write_text
    write_text(out_dir / "classification.json", json.dumps(public, indent=2, ensure_ascii=False, default=list) + "\n")
    write_text(out_dir / "summary.md", summary + "\n")
    return report


# ------------------------------------------------------------------------------------------------ synthetic cohort

def write_synthetic_cohort(out_dir: str | Path, n_per_group: int = 60, include_mci: bool = False, seed: int = 0,
                           overwrite: bool = False) -> tuple[Path, Path]:
    """Write a SYNTHETIC cohort: ``synthetic_volumes.csv`` (like ``hippo-peft volumes`` output) and
    ``synthetic_metadata.csv`` (subject, diagnosis, age, sex, icv, data_source=SYNTHETIC), plus a README.

    Generative model (one hippocampus per subject, as in the MSD hippocampus crops): age uniform 55-90 years; sex
    M/F with probability 1/2; ICV normal, mean 1.55e6 mm³ (M) / 1.38e6 mm³ (F), SD 1.0e5; total volume =
    3400 mm³ x ICV / 1.47e6 x (1 - 0.004 per year of age above 70) x (1 - atrophy) x (1 + N(0, 0.07)), atrophy
    CN 0, EMCI 0.05, LMCI 0.10, AD 0.18; anterior share N(0.52, 0.03). Rows of the two files are in different
    orders (the join is by id).

    Raises:
        FileExistsError: the files exist and ``overwrite`` is false.
    """
    if n_per_group < 2:
        raise ValueError(f"--n-per-group must be >= 2 (got {n_per_group}).")
    out_dir = Path(out_dir)
    vol_path, meta_path, readme = (out_dir / "synthetic_volumes.csv", out_dir / "synthetic_metadata.csv",
                                   out_dir / "README_SYNTHETIC.txt")
    existing = [str(p) for p in (vol_path, meta_path, readme) if p.exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{', '.join(existing)} exist(s); pass --overwrite or choose another folder.")
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    atrophy = {"CN": 0.0, "EMCI": 0.05, "LMCI": 0.10, "AD": 0.18}
    diagnoses = [g for g in atrophy if include_mci or g in ("CN", "AD")]
    dx = np.repeat(diagnoses, n_per_group)
    rng.shuffle(dx)
    n = dx.size
    age = rng.uniform(55, 90, n)
    sex = rng.choice(["M", "F"], n)
    icv = np.where(sex == "M", 1.55e6, 1.38e6) + rng.normal(0, 1.0e5, n)
    total = (3400 * icv / 1.47e6 * (1 - 0.004 * (age - 70)) * (1 - np.array([atrophy[d] for d in dx]))
             * (1 + rng.normal(0, 0.07, n)))
    anterior = total * rng.normal(0.52, 0.03, n)
    ids = [f"synth-{i + 1:04d}" for i in range(n)]
    with open(meta_path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["subject", "diagnosis", "age", "sex", "icv", "data_source"])
        for i in range(n):
            w.writerow([ids[i], dx[i], f"{age[i]:.1f}", sex[i], f"{icv[i]:.0f}", SYNTHETIC_MARK])
    with open(vol_path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["case", "file", "Anterior_mm3", "Posterior_mm3", "total_mm3", "n_components", "flags"])
        for i in rng.permutation(n):
            w.writerow([ids[i], SYNTHETIC_MARK, f"{anterior[i]:.1f}", f"{total[i] - anterior[i]:.1f}",
                        f"{total[i]:.1f}", 1, ""])
    readme.write_text(
        "SYNTHETIC DATA -- not from any real subject. Written by `hippo-peft synthetic-cohort` "
        f"(seed {seed}, {n_per_group} subjects per group, groups {', '.join(diagnoses)}).\n\n"
        "Model: age uniform 55-90 years; sex M/F with probability 1/2; ICV normal, mean 1.55e6 mm3 (M) / 1.38e6 mm3 "
        "(F), SD 1.0e5; total hippocampal volume = 3400 mm3 x ICV / 1.47e6 x (1 - 0.004 per year of age above 70) "
        "x (1 - atrophy) x (1 + N(0, 0.07)), atrophy CN 0, EMCI 0.05, LMCI 0.10, AD 0.18; anterior share "
        "N(0.52, 0.03). Use it to try `hippo-peft classify`, never as evidence about real patients.\n")
    return vol_path, meta_path


# ------------------------------------------------------------------------------------------------------------ CLI

def _cmd_classify(args) -> None:
    report = classify(args.volumes_csv, args.metadata_csv, args.target, args.groups, args.output,
                      overwrite=args.overwrite, model=args.model, folds=args.folds, repeats=args.repeats,
                      seed=args.seed, n_permutations=args.permutations, n_boot=args.bootstrap, alpha=args.alpha,
                      id_column=args.id_column, volumes_id_column=args.volumes_id_column,
                      volume_columns=args.volume_columns, covariates=args.covariates, sex_column=args.sex_column,
                      icv_column=args.icv_column, icv_normalised_only=args.icv_normalised_only,
                      allow_missing=args.allow_missing, drop_other_groups=args.drop_other_groups,
                      exclude_flagged=args.exclude_flagged)
    print(report["summary_markdown"])
    out = Path(args.output)
    print(f"\nWrote {', '.join(str(out / f) for f in OUTPUT_FILES)}")


def _cmd_synthetic(args) -> None:
    vol, meta = write_synthetic_cohort(args.out_dir, args.n_per_group, args.include_mci, args.seed, args.overwrite)
    print(f"Wrote SYNTHETIC cohort (not real subjects): {vol} and {meta}\n"
          f"Try: hippo-peft classify {vol} {meta} --target diagnosis --groups AD,CN --covariates age sex "
          f"--icv-column icv -o {Path(args.out_dir) / 'classification'}")


def register(subparsers) -> None:
    """Add the ``classify`` and ``synthetic-cohort`` subcommands to hippo-peft's argparse subparsers."""
    s = subparsers.add_parser(
        "classify", help="classify two groups (e.g. AD vs CN) from volumes + covariates: repeated stratified CV, "
                         "AUC with CI, permutation test, ROC / box plots, JSON",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    s.add_argument("volumes_csv", help="CSV written by `hippo-peft volumes` (one row per case)")
    s.add_argument("metadata_csv", help="CSV with one row per subject: id, target, covariates")
    s.add_argument("--target", required=True, help="metadata column with the group, e.g. diagnosis")
    s.add_argument("--groups", required=True, help="two groups, comma-separated, e.g. AD,CN; the first is the "
                                                   "positive class of the AUC. Values are case-sensitive")
    s.add_argument("--id-column", default="subject", help="metadata id column (default subject)")
    s.add_argument("--volumes-id-column", default="case",
                   help="volumes id column (default case); its values must equal the metadata ids")
    s.add_argument("--volume-columns", nargs="+", default=["total_mm3"], metavar="COL",
                   help="volume features (default total_mm3; e.g. Anterior_mm3 Posterior_mm3 for per-label)")
    s.add_argument("--covariates", nargs="*", default=[], metavar="COL",
                   help="metadata columns added as features, e.g. age sex icv (numeric; sex may be M/F/male/female "
                        "-> 1/0)")
    s.add_argument("--sex-column", default="sex", help="the covariate coded M/F (default sex)")
    s.add_argument("--icv-column", help="metadata column of intracranial volume: adds each volume / ICV feature")
    s.add_argument("--icv-normalised-only", action="store_true", help="with --icv-column: drop the raw volumes")
    s.add_argument("--model", default="logreg", choices=MODELS,
                   help="logreg (default), svm (RBF, AUC from its decision function) or rf (random forest)")
    s.add_argument("--folds", type=int, default=5, help="stratified folds (default 5)")
    s.add_argument("--repeats", type=int, default=10, help="repeats of the k-fold split (default 10)")
    s.add_argument("--seed", type=int, default=0, help="seed of the splits, bootstrap and permutations (default 0)")
    s.add_argument("--permutations", type=int, default=200,
                   help="label shuffles of the permutation test (default 200; 0 skips it)")
    s.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the CIs (default 1000)")
    s.add_argument("--alpha", type=float, default=0.05, help="significance level of the permutation test")
    s.add_argument("--allow-missing", action="store_true",
                   help="exclude subjects present in only one table (listed in the report) instead of failing")
    s.add_argument("--drop-other-groups", action="store_true",
                   help="exclude subjects whose target is not in --groups (listed) instead of failing")
    s.add_argument("--exclude-flagged", action="store_true",
                   help="exclude cases with quality flags in the volumes CSV (listed); default: keep and list them")
    s.add_argument("-o", "--output", default="classification",
                   help="output folder (default ./classification); must be new or empty unless --overwrite")
    s.add_argument("--overwrite", action="store_true", help="write into a non-empty output folder")
    s.set_defaults(func=_cmd_classify)

    s = subparsers.add_parser("synthetic-cohort",
                              help="write a SYNTHETIC volumes + metadata cohort (AD smaller, age-related atrophy; "
                                   "not real data) to try `classify`",
                              description="Write a SYNTHETIC cohort -- not data from any real subject -- to try "
                                          "`hippo-peft classify`: synthetic_volumes.csv (case, file=SYNTHETIC, "
                                          "Anterior_mm3, Posterior_mm3, total_mm3, n_components, flags), "
                                          "synthetic_metadata.csv (subject, diagnosis, age, sex, icv, "
                                          "data_source=SYNTHETIC) and README_SYNTHETIC.txt with the generative "
                                          "model (AD volumes 18 % smaller, 0.4 % per year of age-related "
                                          "atrophy, volume scaling with ICV). Fixed seed: the same files every "
                                          "time.")
    s.add_argument("out_dir", help="folder to write the three files into")
    s.add_argument("--n-per-group", type=int, default=60, help="subjects per diagnosis (default 60)")
    s.add_argument("--include-mci", action="store_true", help="also EMCI and LMCI groups")
    s.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    s.add_argument("--overwrite", action="store_true", help="replace existing files")
    s.set_defaults(func=_cmd_synthetic)
