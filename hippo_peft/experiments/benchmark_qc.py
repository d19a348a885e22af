"""The benchmark's QC page (opt-in: ``benchmark --qc-page``, ``benchmark-report --qc-page``): for each method, the
test case it segmented worst and the one it segmented best over all its finished runs, each drawn with its image
and reference by :mod:`hippo_peft.analysis.qc` into ``report/qc/index.html``."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from hippo_peft.errors import MissingInputError
from hippo_peft.experiments.benchmark_settings import TARGET_ID
from hippo_peft.experiments.pipeline import fold_folder

TARGET_NAME = f"Dataset{TARGET_ID}_BenchmarkTarget"


def _case_dice(record: dict) -> dict[str, float]:
    """Mean Dice over the single labels per test case of one run record."""
    singles = [name for name, values in record["regions"].items() if len(values) == 1]
    out = {}
    for case, metrics in record["per_case"].items():
        values = [metrics[n]["dice"] for n in singles if metrics[n]["dice"] == metrics[n]["dice"]]
        out[case] = float(np.mean(values)) if values else float("nan")
    return out


def extremes(records: list[dict]) -> dict[tuple[str, str], tuple[list[tuple[str, str, float]], int]]:
    """Per (arch, method token): ([(run, case, Dice) of the worst test case, the same of the best], number of runs),
    over all its runs (an undefined Dice counts as the worst)."""
    pairs: dict[tuple[str, str], list[tuple[str, str, float]]] = {}
    runs: dict[tuple[str, str], int] = {}
    for r in records:
        key = (r.get("arch") or "nnU-Net", r.get("method_token", r["method"]))
        pairs.setdefault(key, []).extend((r["run"], c, d) for c, d in _case_dice(r).items())
        runs[key] = runs.get(key, 0) + 1
    out = {}
    for key, items in sorted(pairs.items()):
        items = sorted(items, key=lambda t: (-1.0 if t[2] != t[2] else t[2], t[0], t[1]))
        out[key] = ([items[0], items[-1]] if len(items) > 1 else items, runs[key])
    return out


def write_benchmark_qc(root: Path, records: list[dict], report: Path, progress: bool = True) -> Path:
    """Draw each method's worst and best test case into ``report/qc`` (replaced: the report's own folder).

    Args:
        root: the benchmark work folder.
        records: finished run records.
        report: the report folder.
    """
    from hippo_peft.analysis.qc import draw_cases
    from hippo_peft.experiments.benchmark_report import method_labels
    nnunet = root / "nnunet"
    raw = nnunet / "nnUNet_raw" / TARGET_NAME
    dataset_json = json.loads((raw / "dataset.json").read_text())
    ending = dataset_json["file_ending"]
    labels = {n: int(v) for n, v in dataset_json["labels"].items() if int(v) != 0}
    by_run = {r["run"]: r for r in records}
    names = method_labels()
    jobs, sections, gone = [], [], []
    for (arch, token), (picks, n_runs) in extremes(records).items():
        keys = []
        for what, (run, case, value) in zip(("worst", "best"), picks):
            rec = by_run[run]
            pred = fold_folder(nnunet / "nnUNet_results", TARGET_NAME, rec["trainer"], rec["plans"],
                               rec["fold"]) / "validation" / f"{case}{ending}"
            if not pred.is_file():
                gone.append(str(pred))
                continue
            key = f"{run}__{case}"
            jobs.append({"key": key, "case": f"{case} ({what}, {run})", "pred": str(pred),
                         "image": str(raw / "imagesTr" / f"{case}_0000{ending}"),
                         "ref": str(raw / "labelsTr" / f"{case}{ending}")})
            keys.append(key)
        label = names.get(token.split("@")[0].split("+")[0], token)  # the section names the full token
        sections.append((f"{label} [{token}, {arch}]: worst and best test case over {n_runs} run(s)", keys))
    if gone:
        raise MissingInputError(f"{len(gone)} prediction(s) of finished runs are gone (the work folder was cleaned?): "
                                f"{gone[0]} ...; the QC page needs nnU-Net's validation folders.")
    if not jobs:
        raise MissingInputError("no finished run with test predictions: nothing to draw.")
    settings = {"workdir": str(root), "what": "per method: the test case with the lowest and the highest mean Dice "
                                              "over all its finished runs", "labels": labels}
    draw_cases(jobs, labels, report / "qc", settings, f"benchmark {root.name}: best and worst test cases",
               overwrite=True, progress=progress, sections=sections)
    return report / "qc" / "index.html"
