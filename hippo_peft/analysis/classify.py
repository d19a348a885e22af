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

The command ties four modules together: :mod:`.cohort` (join and checks), :mod:`.model` (pipeline, CV, intervals,
permutation test), :mod:`.plots` and :mod:`.classify_report` (summary and output folder); the synthetic cohort is
:mod:`.synthetic_cohort`.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from hippo_peft.analysis.classify_report import OUTPUT_FILES, check_out_dir, format_summary, write_outputs
from hippo_peft.analysis.cohort import SEX_CODES, SYNTHETIC_MARK, Cohort, build_cohort, parse_groups, read_table
from hippo_peft.analysis.model import (MODELS, Classification, auc_by_ranks, bootstrap_ci, cross_validate,
                                       make_pipeline, permutation_test, run_classification)
from hippo_peft.analysis.synthetic_cohort import write_synthetic_cohort
from hippo_peft.errors import InputError

__all__ = ["classify", "register", "OUTPUT_FILES", "SEX_CODES", "SYNTHETIC_MARK", "Cohort", "build_cohort",
           "parse_groups", "read_table", "MODELS", "Classification", "auc_by_ranks", "bootstrap_ci", "cross_validate",
           "make_pipeline", "permutation_test", "run_classification", "write_synthetic_cohort", "format_summary"]


def classify(volumes_csv, metadata_csv, target: str, groups, out_dir: str | Path = "classification", *,
             overwrite: bool = False, model: str = "logreg", folds: int = 5, repeats: int = 10, seed: int = 0,
             n_permutations: int = 200, n_boot: int = 1000, alpha: float = 0.05, **cohort_kwargs) -> dict:
    """Check the inputs, run the classification, write JSON + summary + plots into ``out_dir``; return the report.

    ``cohort_kwargs`` go to :func:`build_cohort`.
    """
    out_dir = Path(out_dir)
    if model not in MODELS:
        raise InputError(f"--model {model!r}: choose one of {', '.join(MODELS)}.")
    if out_dir.exists() and not overwrite:  # fail before minutes of computation, not after
        check_out_dir(out_dir, overwrite)
    cohort = build_cohort(volumes_csv, metadata_csv, target, groups, folds=folds, **cohort_kwargs)
    result = run_classification(cohort, model, folds, repeats, seed, n_permutations, n_boot, alpha)
    result.report["inputs"] = {"volumes_csv": str(Path(volumes_csv).resolve()),
                               "metadata_csv": str(Path(metadata_csv).resolve()), "target": target,
                               **{k: v for k, v in cohort_kwargs.items()}}
    result.report["summary_markdown"] = format_summary(result.report)
    write_outputs(result, cohort, out_dir, overwrite)
    return result.report


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
        description="Do hippocampal volumes separate two diagnostic groups (e.g. AD vs CN)? A\n"
                    "scikit-learn pipeline (standardisation, then logistic regression, an RBF SVM or\n"
                    "a random forest) over volumes from hippo-peft volumes plus chosen covariates\n"
                    "from a metadata table (age, sex, intracranial volume), evaluated with repeated\n"
                    "stratified k-fold cross-validation with a fixed seed. Reported: accuracy,\n"
                    "balanced accuracy and ROC AUC (mean over repeats, 95 % bootstrap confidence\n"
                    "interval over subjects, spread over repeats), the confusion matrix of the first\n"
                    "repeat, and a permutation test of whether the AUC beats chance.\n\n"
                    "Subjects are joined by id. Missing subjects, unknown groups, non-numeric values,\n"
                    "duplicate ids and groups too small for the folds are errors that list the\n"
                    "offenders; --allow-missing, --drop-other-groups and --exclude-flagged list\n"
                    "every subject they exclude in the report. Nothing is dropped silently.\n\n"
                    "To try it: hippo-peft synthetic-cohort OUT_DIR writes a SYNTHETIC cohort.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    s.add_argument("volumes_csv", help="CSV written by hippo-peft volumes (one row per case)")
    s.add_argument("metadata_csv", help="CSV with one row per subject: id, target, covariates")
    s.add_argument("--target", required=True, help="metadata column with the group, e.g. diagnosis")
    s.add_argument("--groups", required=True, help="two groups, comma-separated, e.g. AD,CN; the first is the "
                                                   "positive class of the AUC. Values are case-sensitive")
    s.add_argument("--id-column", default="subject", help="metadata id column")
    s.add_argument("--volumes-id-column", default="case",
                   help="volumes id column; its values must equal the metadata ids")
    s.add_argument("--volume-columns", nargs="+", default=["total_mm3"], metavar="COL",
                   help="volume features, e.g. Anterior_mm3 Posterior_mm3 for one feature per label")
    s.add_argument("--covariates", nargs="*", default=[], metavar="COL",
                   help="metadata columns added as features, e.g. age sex icv (numeric; sex may be M/F/male/female "
                        "-> 1/0)")
    s.add_argument("--sex-column", default="sex", help="the covariate coded M/F")
    s.add_argument("--icv-column", help="metadata column of intracranial volume: adds each volume / ICV feature")
    s.add_argument("--icv-normalised-only", action="store_true", help="with --icv-column: drop the raw volumes")
    s.add_argument("--model", default="logreg", choices=MODELS,
                   help="logreg (logistic regression), svm (RBF, AUC from its decision function) or rf (random "
                        "forest)")
    s.add_argument("--folds", type=int, default=5, help="stratified folds")
    s.add_argument("--repeats", type=int, default=10, help="repeats of the k-fold split")
    s.add_argument("--seed", type=int, default=0, help="seed of the splits, bootstrap and permutations")
    s.add_argument("--permutations", type=int, default=200,
                   help="label shuffles of the permutation test; 0 skips it")
    s.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the confidence intervals")
    s.add_argument("--alpha", type=float, default=0.05, help="significance level of the permutation test")
    s.add_argument("--allow-missing", action="store_true",
                   help="exclude subjects present in only one table (listed in the report) instead of failing")
    s.add_argument("--drop-other-groups", action="store_true",
                   help="exclude subjects whose target is not in --groups (listed) instead of failing")
    s.add_argument("--exclude-flagged", action="store_true",
                   help="exclude cases with quality flags in the volumes CSV (listed); without it they are kept "
                        "and listed")
    s.add_argument("-o", "--output", default="classification",
                   help="output folder; must be new or empty unless --overwrite")
    s.add_argument("--overwrite", action="store_true", help="write into a non-empty output folder")
    s.set_defaults(func=_cmd_classify)

    s = subparsers.add_parser("synthetic-cohort",
                              help="write a SYNTHETIC volumes + metadata cohort (AD smaller, age-related atrophy; "
                                   "not real data) to try classify",
                              description="Write a SYNTHETIC cohort -- not data from any real subject -- to try\n"
                                          "hippo-peft classify: synthetic_volumes.csv (case, file=SYNTHETIC,\n"
                                          "Anterior_mm3, Posterior_mm3, total_mm3, n_components, flags),\n"
                                          "synthetic_metadata.csv (subject, diagnosis, age, sex, icv,\n"
                                          "data_source=SYNTHETIC) and README_SYNTHETIC.txt with the generative\n"
                                          "model: volume proportional to ICV; 0.4 % smaller per year of age above\n"
                                          "70 (larger below); smaller than CN by 18 % in AD (10 % in LMCI, 5 % in\n"
                                          "EMCI); 7 % noise. The same seed writes the same files.",
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    s.add_argument("out_dir", help="folder to write the three files into")
    s.add_argument("--n-per-group", type=int, default=60, help="subjects per diagnosis")
    s.add_argument("--include-mci", action="store_true", help="also EMCI and LMCI groups")
    s.add_argument("--seed", type=int, default=0, help="random seed")
    s.add_argument("--overwrite", action="store_true", help="replace existing files")
    s.set_defaults(func=_cmd_synthetic)
