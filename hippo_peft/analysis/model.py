"""The classifier and its evaluation: a scikit-learn pipeline (standardisation + logistic regression, RBF SVM or
random forest), repeated stratified k-fold cross-validation, bootstrap confidence intervals over subjects and a
permutation test against chance."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from hippo_peft.analysis.cohort import Cohort
from hippo_peft.errors import InputError

MODELS = ("logreg", "svm", "rf")


@dataclass
class Classification:
    """What :func:`run_classification` found.

    Args:
        report: JSON-ready: metrics with intervals, confusion matrix, permutation test, subjects, exclusions.
        cv: out-of-fold ``scores`` and ``pred`` (repeats x subjects) and per-repeat metric arrays.
        roc: the mean ROC (``fpr``, ``tpr``) and every repeat's curve (``curves``), for the plot.
    """
    report: dict
    cv: dict
    roc: dict

    def __getitem__(self, key):  # the report's fields read directly: result["metrics"]
        return self.report[key]


def make_pipeline(model: str = "logreg", seed: int = 0):
    """Standardisation + classifier. ``svm`` ranks by its decision function (no Platt scaling)."""
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC
    if model not in MODELS:
        raise InputError(f"--model {model!r}: choose one of {', '.join(MODELS)}.")
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
        raise InputError(f"--repeats must be >= 1 (got {repeats}).")
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
                       n_permutations: int = 200, n_boot: int = 1000, alpha: float = 0.05) -> Classification:
    """Cross-validate, bootstrap and permutation-test ``cohort``: the JSON-ready report and the arrays behind it."""
    if n_permutations < 0 or n_boot < 0:
        raise InputError("--permutations and --bootstrap must be >= 0.")
    if not 0 < alpha < 1:
        raise InputError(f"--alpha must be in (0, 1) (got {alpha}).")
    if n_permutations and (n_permutations + 1) * alpha < 1:
        raise InputError(f"--permutations {n_permutations} can never give p < {alpha:g} (smallest possible p is "
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
    import sklearn

    from hippo_peft import __version__
    report = {
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
    }
    return Classification(report=report, cv=cv, roc=roc)
