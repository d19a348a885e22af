"""``hippo-peft synthetic-cohort``: a SYNTHETIC cohort (volumes + metadata from a simple generative model, fixed
seed) to try ``hippo-peft classify`` on; it is not data from any real subject."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from hippo_peft.analysis.cohort import SYNTHETIC_MARK
from hippo_peft.errors import InputError, OutputExistsError


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
        raise InputError(f"--n-per-group must be >= 2 (got {n_per_group}).")
    out_dir = Path(out_dir)
    vol_path, meta_path, readme = (out_dir / "synthetic_volumes.csv", out_dir / "synthetic_metadata.csv",
                                   out_dir / "README_SYNTHETIC.txt")
    existing = [str(p) for p in (vol_path, meta_path, readme) if p.exists()]
    if existing and not overwrite:
        raise OutputExistsError(f"{', '.join(existing)} exist(s); pass --overwrite or choose another folder.")
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
