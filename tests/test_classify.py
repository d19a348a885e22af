"""`hippo-peft classify` and `synthetic-cohort`: a separable synthetic cohort must give a high AUC that beats
chance, shuffled labels must sit at chance, and every bad input fails loudly naming the offenders."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from hippo_peft.analysis.classify import (auc_by_ranks, bootstrap_ci, build_cohort, classify, write_synthetic_cohort)
from hippo_peft.cli import main

FAST = ["--repeats", "3", "--permutations", "39", "--bootstrap", "200"]  # keeps a CLI run to about a second


@pytest.fixture(scope="module")
def cohort_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cohort")
    write_synthetic_cohort(out, n_per_group=60, seed=0)
    return out


def rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def write(path: Path, table: list[dict]) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(table[0]))
        w.writeheader()
        w.writerows(table)
    return path


def small_tables(tmp_path: Path, n: int = 6) -> tuple[Path, Path]:
    """A hand-made cohort: n AD with small volumes, n CN with large ones."""
    vol = [{"case": f"s{i}", "total_mm3": str(2500 + 10 * i if i < n else 3500 + 10 * i)} for i in range(2 * n)]
    meta = [{"subject": f"s{i}", "diagnosis": "AD" if i < n else "CN", "age": str(70 + i), "sex": "MF"[i % 2],
             "icv": str(1.4e6 + 1e4 * i)} for i in range(2 * n)]
    return write(tmp_path / "v.csv", vol), write(tmp_path / "m.csv", meta)


def run_cli(v, m, out, *extra) -> int:
    return main(["classify", str(v), str(m), "--target", "diagnosis", "--groups", "AD,CN", "-o", str(out), *extra])


# --------------------------------------------------------------------------------------------- synthetic cohort

def test_synthetic_cohort_is_labelled_and_reproducible(tmp_path, cohort_dir):
    v, m = rows(cohort_dir / "synthetic_volumes.csv"), rows(cohort_dir / "synthetic_metadata.csv")
    assert len(v) == len(m) == 120
    assert {r["file"] for r in v} == {"SYNTHETIC"} and {r["data_source"] for r in m} == {"SYNTHETIC"}
    assert "SYNTHETIC DATA" in (cohort_dir / "README_SYNTHETIC.txt").read_text()
    assert [r["case"] for r in v] != [r["subject"] for r in m]  # different order: the join must be by id
    vol = {r["case"]: float(r["total_mm3"]) for r in v}
    ad = [vol[r["subject"]] for r in m if r["diagnosis"] == "AD"]
    cn = [vol[r["subject"]] for r in m if r["diagnosis"] == "CN"]
    assert 0.12 < 1 - np.mean(ad) / np.mean(cn) < 0.25  # AD about 18 % smaller
    write_synthetic_cohort(tmp_path, n_per_group=60, seed=0)
    assert (tmp_path / "synthetic_volumes.csv").read_bytes() == (cohort_dir / "synthetic_volumes.csv").read_bytes()
    with pytest.raises(FileExistsError):
        write_synthetic_cohort(tmp_path)
    assert main(["synthetic-cohort", str(tmp_path / "mci"), "--include-mci", "--n-per-group", "5"]) == 0
    assert {r["diagnosis"] for r in rows(tmp_path / "mci" / "synthetic_metadata.csv")} == {"AD", "CN", "EMCI", "LMCI"}


# ------------------------------------------------------------------------------------------------ the numbers

def test_auc_by_ranks_matches_sklearn():
    from sklearn.metrics import roc_auc_score
    rng = np.random.default_rng(1)
    s = np.round(rng.normal(size=(5, 30)), 1)  # rounding makes ties
    y = np.r_[np.ones(12), np.zeros(18)]
    np.testing.assert_allclose(auc_by_ranks(s, 12), [roc_auc_score(y, r) for r in s], atol=1e-12)


def test_bootstrap_ci_brackets_the_estimate():
    rng = np.random.default_rng(0)
    y = np.r_[np.ones(40, int), np.zeros(40, int)]
    scores = y + rng.normal(0, 0.8, (3, 80))
    pred = (scores > 0.5).astype(int)
    ci = bootstrap_ci(y, scores, pred, n_boot=500, seed=0)
    auc = np.mean(auc_by_ranks(np.c_[scores[:, y == 1], scores[:, y == 0]], 40))
    assert ci["auc"][0] < auc < ci["auc"][1] and 0.03 < ci["auc"][1] - ci["auc"][0] < 0.3
    acc = (pred == y).mean()
    assert ci["accuracy"][0] < acc < ci["accuracy"][1]


def test_separable_cohort_high_auc_beats_chance(tmp_path, cohort_dir, capsys):
    out = tmp_path / "res"
    rc = run_cli(cohort_dir / "synthetic_volumes.csv", cohort_dir / "synthetic_metadata.csv", out,
                 "--covariates", "age", "sex", "--icv-column", "icv", "--permutations", "99")
    assert rc == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    report = json.loads((out / "classification.json").read_text())
    auc = report["metrics"]["auc"]
    assert auc["mean_over_repeats"] > 0.9
    assert auc["ci95_bootstrap"][0] < auc["mean_over_repeats"] < auc["ci95_bootstrap"][1]
    assert len(auc["per_repeat"]) == 10 and report["cv"] == {"scheme": "RepeatedStratifiedKFold", "folds": 5,
                                                             "repeats": 10, "seed": 0}
    assert report["metrics"]["balanced_accuracy"]["mean_over_repeats"] > 0.8
    perm = report["permutation_test"]
    assert perm["p_value"] < 0.05 and perm["beats_chance"] is True and perm["n_permutations"] == 99
    assert perm["p_value"] == pytest.approx(1 / 100)  # no shuffle reached the real AUC
    assert abs(perm["permuted_auc_mean"] - 0.5) < 0.1
    cm = report["confusion_matrix"]
    assert sum(v for row in cm.values() for v in row.values()) == 120
    assert cm["true AD"]["predicted AD"] + cm["true AD"]["predicted CN"] == 60
    assert report["features"] == ["total_mm3", "total_mm3/icv", "age", "sex"]
    assert report["synthetic_data"] is True and report["excluded"] == []
    assert len(report["subjects"]) == 120
    for png in ("roc.png", "volumes_by_group.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and (out / png).stat().st_size > 10_000
    assert "SYNTHETIC DATA" in printed and "beats chance" in printed and "| ROC AUC |" in printed
    assert (out / "summary.md").read_text().strip() == report["summary_markdown"].strip()


def test_volume_alone_is_weaker_than_with_covariates(cohort_dir):
    """The generative model puts head size and age into the volume: covariates must help, volume alone still
    separates."""
    kw = dict(n_permutations=0, n_boot=0, repeats=3)
    plain = build_cohort(cohort_dir / "synthetic_volumes.csv", cohort_dir / "synthetic_metadata.csv", "diagnosis",
                         "AD,CN")
    full = build_cohort(cohort_dir / "synthetic_volumes.csv", cohort_dir / "synthetic_metadata.csv", "diagnosis",
                        "AD,CN", covariates=["age"], icv_column="icv")
    from hippo_peft.analysis.classify import run_classification
    a = run_classification(plain, **kw)["metrics"]["auc"]["mean_over_repeats"]
    b = run_classification(full, **kw)["metrics"]["auc"]["mean_over_repeats"]
    assert 0.7 < a < b


def test_shuffled_labels_sit_at_chance(tmp_path, cohort_dir, capsys):
    meta = rows(cohort_dir / "synthetic_metadata.csv")
    dx = [r["diagnosis"] for r in meta]
    np.random.default_rng(123).shuffle(dx)
    for r, d in zip(meta, dx):
        r["diagnosis"] = d
    shuffled = write(tmp_path / "shuffled.csv", meta)
    report = classify(cohort_dir / "synthetic_volumes.csv", shuffled, "diagnosis", "AD,CN", tmp_path / "res",
                      n_permutations=99, covariates=["age", "sex"], icv_column="icv")
    auc = report["metrics"]["auc"]["mean_over_repeats"]
    assert abs(auc - 0.5) < 0.15
    assert report["permutation_test"]["p_value"] > 0.05 and report["permutation_test"]["beats_chance"] is False
    assert "does NOT beat chance" in report["summary_markdown"]
    assert report["metrics"]["auc"]["ci95_bootstrap"][0] < 0.5 < report["metrics"]["auc"]["ci95_bootstrap"][1]


def test_svm_rf_and_per_label_features(cohort_dir):
    c = build_cohort(cohort_dir / "synthetic_volumes.csv", cohort_dir / "synthetic_metadata.csv", "diagnosis",
                     "AD,CN", volume_columns=["Anterior_mm3", "Posterior_mm3"], icv_column="icv",
                     icv_normalised_only=True)
    assert c.feature_names == ["Anterior_mm3/icv", "Posterior_mm3/icv"]
    from hippo_peft.analysis.classify import run_classification
    r = run_classification(c, model="svm", repeats=2, n_permutations=0, n_boot=0)
    assert r["metrics"]["auc"]["mean_over_repeats"] > 0.85 and r["permutation_test"] is None
    r = run_classification(c, model="rf", repeats=1, n_permutations=0, n_boot=0)
    assert r["metrics"]["auc"]["mean_over_repeats"] > 0.8 and "RandomForestClassifier" in r["pipeline"]


def test_sex_coding_and_positive_class(tmp_path):
    v, m = small_tables(tmp_path)
    c = build_cohort(v, m, "diagnosis", "CN,AD", covariates=["sex"], folds=3)
    assert c.feature_names == ["total_mm3", "sex"]
    assert c.X[:, 1].tolist() == [1.0, 0.0] * 6  # M -> 1, F -> 0
    assert c.y.tolist() == [0] * 6 + [1] * 6  # CN listed first: CN is the positive class


# ------------------------------------------------------------------------------------------------- bad input

def test_missing_subjects_are_listed(tmp_path, capsys):
    v, m = small_tables(tmp_path)
    meta = rows(m)
    write(m, meta[:-1] + [{**meta[-1], "subject": "ghost"}])
    assert run_cli(v, m, tmp_path / "o", *FAST) == 2
    err = capsys.readouterr().err
    assert "in the volumes CSV but not in the metadata CSV: s11" in err
    assert "in the metadata CSV but not in the volumes CSV: ghost" in err and "--allow-missing" in err
    assert not (tmp_path / "o").exists()
    assert run_cli(v, m, tmp_path / "o", *FAST, "--folds", "3", "--allow-missing") == 0
    out = capsys.readouterr().out
    report = json.loads((tmp_path / "o" / "classification.json").read_text())
    assert {e["subject"] for e in report["excluded"]} == {"s11", "ghost"} and report["n_subjects"] == 11
    assert "Excluded: 2 subject(s)" in out and "- in the volumes CSV only (1): s11" in out
    assert "- in the metadata CSV only (1): ghost" in out


def test_unknown_group_is_listed(tmp_path, capsys):
    v, m = small_tables(tmp_path)
    meta = rows(m)
    meta[2]["diagnosis"], meta[8]["diagnosis"], meta[9]["diagnosis"] = "EMCI", "ad", ""
    write(m, meta)
    assert run_cli(v, m, tmp_path / "o", *FAST) == 2
    err = capsys.readouterr().err
    assert "s2 (EMCI)" in err and "s8 (ad)" in err and "s9 (<empty>)" in err and "--drop-other-groups" in err
    assert "values <empty> (1), EMCI (1), ad (1)" in err
    assert run_cli(v, m, tmp_path / "o", *FAST, "--folds", "3", "--drop-other-groups") == 0
    report = json.loads((tmp_path / "o" / "classification.json").read_text())
    assert {e["subject"]: e["reason"] for e in report["excluded"]} == {
        "s2": "diagnosis=EMCI not in AD,CN", "s8": "diagnosis=ad not in AD,CN", "s9": "diagnosis=<empty> not in AD,CN"}
    assert report["n_per_group"] == {"AD": 5, "CN": 4}


def test_too_few_subjects_for_folds(tmp_path, capsys):
    v, m = small_tables(tmp_path, n=4)
    assert run_cli(v, m, tmp_path / "o", *FAST) == 2
    err = capsys.readouterr().err
    assert "AD (4 subject(s))" in err and "CN (4 subject(s))" in err and "--folds 4" in err


def test_non_numeric_values_are_listed(tmp_path, capsys):
    v, m = small_tables(tmp_path)
    meta = rows(m)
    meta[1]["age"], meta[3]["sex"], meta[4]["icv"] = "n/a", "X", "-5"
    write(m, meta)
    vol = rows(v)
    vol[5]["total_mm3"] = "abc"
    write(v, vol)
    assert run_cli(v, m, tmp_path / "o", *FAST, "--covariates", "age", "sex", "--icv-column", "icv") == 2
    err = capsys.readouterr().err
    for needle in ("s1: age=n/a", "s3: sex=X", "s4: icv=-5", "s5: total_mm3=abc", "4 non-numeric"):
        assert needle in err


def test_duplicate_ids_and_missing_columns(tmp_path, capsys):
    v, m = small_tables(tmp_path)
    meta = rows(m)
    write(m, meta + [meta[3]])
    assert run_cli(v, m, tmp_path / "o") == 2
    assert "duplicate id(s) in column 'subject': s3" in capsys.readouterr().err
    write(m, meta)
    assert run_cli(v, m, tmp_path / "o", "--covariates", "height") == 2
    assert "no column(s) height" in capsys.readouterr().err
    assert run_cli(v, m, tmp_path / "o", "--volume-columns", "Left_mm3") == 2
    assert "Volume columns available: total_mm3" in capsys.readouterr().err
    assert main(["classify", str(v), str(m), "--target", "dx", "--groups", "AD,CN", "-o", str(tmp_path / "o")]) == 2
    assert "no column(s) dx" in capsys.readouterr().err
    assert run_cli(v, tmp_path / "nope.csv", tmp_path / "o") == 2
    assert "nope.csv does not exist" in capsys.readouterr().err


def test_bad_options(tmp_path, capsys):
    v, m = small_tables(tmp_path)
    for extra, needle in ((["--groups", "AD"], "exactly two"), (["--folds", "1"], "--folds must be >= 2"),
                          (["--permutations", "10"], "can never give p < 0.05"),
                          (["--icv-normalised-only"], "needs --icv-column")):
        assert main(["classify", str(v), str(m), "--target", "diagnosis", "--groups", "AD,CN",
                     "-o", str(tmp_path / "o"), *extra]) == 2
        assert needle in capsys.readouterr().err


def test_flagged_cases_are_listed_or_excluded(tmp_path, capsys):
    v, m = small_tables(tmp_path)
    vol = rows(v)
    for r in vol:
        r["flags"] = ""
    vol[0]["flags"] = "several_components"
    write(v, vol)
    assert run_cli(v, m, tmp_path / "a", *FAST, "--folds", "3") == 0
    assert "Included despite quality flags (1" in capsys.readouterr().out
    report = json.loads((tmp_path / "a" / "classification.json").read_text())
    assert report["flagged_but_included"] == [{"subject": "s0", "flags": "several_components"}]
    assert run_cli(v, m, tmp_path / "b", *FAST, "--folds", "3", "--exclude-flagged") == 0
    assert "- quality flags: several_components (1): s0" in capsys.readouterr().out
    report = json.loads((tmp_path / "b" / "classification.json").read_text())
    assert report["excluded"] == [{"subject": "s0", "reason": "quality flags: several_components"}]
    (tmp_path / "plain").mkdir()
    v2, m2 = small_tables(tmp_path / "plain")
    assert run_cli(v2, m2, tmp_path / "c", "--exclude-flagged") == 2
    assert "no 'flags' column" in capsys.readouterr().err


def test_refuses_non_empty_output(tmp_path, capsys):
    v, m = small_tables(tmp_path)
    out = tmp_path / "o"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert run_cli(v, m, out, *FAST, "--folds", "3") == 2
    assert "--overwrite" in capsys.readouterr().err and sorted(p.name for p in out.iterdir()) == ["keep.txt"]
    assert run_cli(v, m, out, *FAST, "--folds", "3", "--overwrite") == 0
    assert (out / "classification.json").is_file() and (out / "keep.txt").read_text() == "mine"
