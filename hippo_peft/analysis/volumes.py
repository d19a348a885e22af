"""``hippo-peft volumes``: hippocampal volumes, connected components and quality flags of predicted label maps.

Every label map in a folder (typically the output folder of ``nnUNetv2_predict``) is read with nnU-Net's own
reader/writer classes, so any format nnU-Net supports works (NIfTI, NRRD, MHA, 3D TIFF with its spacing file).
Volumes are voxel counts times the voxel volume (the product of the voxel spacing in mm, read from the image
header); connected components use 26-connectivity (voxels sharing a face, an edge or a corner are connected).

Outputs: a plain CSV (one row per case, readable by pandas or a spreadsheet) and a sidecar JSON with the same
stem (settings used -- thresholds included -- the flag definitions, the cohort statistics and the list of
flagged cases). Input files are never modified; the optional small-component removal happens in memory only.
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np

from hippo_peft.analysis.label_maps import (labels_from_dataset_json, parse_label_args,  # noqa: F401
                                            read_label_map, resolve_inputs)
from hippo_peft.analysis.text import MAX_LISTED, line_listing, listing  # noqa: F401
from hippo_peft.errors import InputError, MissingInputError, OutputExistsError

CONNECTIVITY = 26
_STRUCTURE = np.ones((3, 3, 3), dtype=bool)  # 26-connectivity in 3D
COHORT_MIN_CASES = 10  # the cohort-relative outlier rule needs this many non-empty cases to be meaningful
COHORT_K = 3.0  # bounds: median +/- COHORT_K robust standard deviations
MAD_TO_SD = 1.4826  # scales the median absolute deviation to a standard deviation for normal data
FLAG_DEFINITIONS = {
    "empty": "no foreground voxel at all (after small-component removal, if requested)",
    "small_abs": "total volume below --min-volume",
    "large_abs": "total volume above --max-volume",
    "small_cohort": f"total volume below median - {COHORT_K:g} x {MAD_TO_SD} x MAD of the non-empty cases' total "
                    f"volumes (applied only with >= {COHORT_MIN_CASES} non-empty cases and MAD > 0)",
    "large_cohort": f"total volume above median + {COHORT_K:g} x {MAD_TO_SD} x MAD (same conditions)",
    "several_components": f"all foreground labels together form more than --expected-components (default 1) "
                          f"connected components ({CONNECTIVITY}-connectivity)",
}


def _components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    from scipy import ndimage
    labelled, n = ndimage.label(mask, structure=_STRUCTURE)
    return labelled, int(n)


def measure_label_map(seg: np.ndarray, spacing, labels: dict[str, int],
                      remove_small_mm3: float | None = None) -> dict:
    """Volumes and connected components of one 3D label map.

    Args:
        seg: 3D integer array (background 0).
        spacing: voxel size in mm, one value per axis (order irrelevant: only the product is used).
        labels: ``{name: value}`` of the foreground labels; other non-zero values must not occur.
        remove_small_mm3: if given, each label's connected components smaller than this volume become background
            (in memory) before measuring.

    Returns:
        Row dict: ``voxel_volume_mm3``, ``<name>_mm3``, ``total_mm3``, ``<name>_n_components``, ``n_components``
        (all foreground labels together) and, with removal, ``<name>_removed_voxels``, ``<name>_removed_mm3``,
        ``removed_voxels``, ``removed_mm3``.

    Raises:
        ValueError: values that are not background or a given label (message lists them).
    """
    present = np.flatnonzero(np.bincount(seg.ravel()))  # faster than np.unique on large maps
    unknown = sorted(set(present.tolist()) - {0} - set(labels.values()))
    if unknown:
        raise InputError(f"label value(s) {unknown} not in the label map {labels}")
    voxel = float(np.prod([float(s) for s in spacing]))
    if remove_small_mm3 is not None:
        seg = seg.copy()
    row: dict = {"voxel_volume_mm3": voxel}
    removed_total = 0
    counts, ncomp = {}, {}
    for name, value in labels.items():
        mask = seg == value
        comp, n = _components(mask)
        removed = 0
        if remove_small_mm3 is not None and n:
            sizes = np.bincount(comp.ravel())
            small = np.flatnonzero(sizes * voxel < remove_small_mm3)
            small = small[small > 0]  # index 0 is the background of this label's mask
            if small.size:
                drop = np.isin(comp, small)
                removed = int(drop.sum())
                seg[drop] = 0
                mask &= ~drop
                n -= int(small.size)
            row[f"{name}_removed_voxels"] = removed
            row[f"{name}_removed_mm3"] = removed * voxel
        counts[name], ncomp[name] = int(mask.sum()), n
        removed_total += removed
    for name in labels:
        row[f"{name}_mm3"] = counts[name] * voxel
    row["total_mm3"] = sum(counts.values()) * voxel
    for name in labels:
        row[f"{name}_n_components"] = ncomp[name]
    row["n_components"] = _components(seg > 0)[1]
    if remove_small_mm3 is not None:
        row["removed_voxels"] = removed_total
        row["removed_mm3"] = removed_total * voxel
    return row


def cohort_bounds(totals: list[float]) -> dict:
    """The cohort-relative outlier rule on total volumes: median +/- 3 x 1.4826 x MAD of the non-empty cases.

    Returns:
        dict with ``applied`` (bool), ``reason`` when not applied, else ``median``, ``mad``, ``low``, ``high``
        (mm³) and ``n`` (non-empty cases used).
    """
    values = np.asarray([t for t in totals if t > 0], dtype=float)
    if values.size < COHORT_MIN_CASES:
        return {"applied": False, "n": int(values.size),
                "reason": f"only {values.size} non-empty case(s); the rule needs >= {COHORT_MIN_CASES}"}
    from scipy.stats import median_abs_deviation
    median = float(np.median(values))
    mad = float(median_abs_deviation(values))  # raw MAD; x 1.4826 (MAD_TO_SD) makes it a normal SD below
    if mad == 0:
        return {"applied": False, "n": int(values.size), "median": median, "mad": 0.0,
                "reason": "MAD is 0 (at least half the cases have identical volumes); no spread to judge by"}
    half = COHORT_K * MAD_TO_SD * mad
    return {"applied": True, "n": int(values.size), "median": median, "mad": mad, "low": median - half,
            "high": median + half}


def flag_rows(rows: list[dict], min_volume: float | None = None, max_volume: float | None = None,
              expected_components: int = 1) -> dict:
    """Add ``flag_*`` columns and a ``flags`` summary to each row (in place); return the cohort statistics."""
    cohort = cohort_bounds([r["total_mm3"] for r in rows])
    for r in rows:
        total, flags = r["total_mm3"], []
        if total == 0:
            flags.append("empty")
        else:
            if min_volume is not None and total < min_volume:
                flags.append("small_abs")
            if cohort["applied"] and total < cohort["low"]:
                flags.append("small_cohort")
            if max_volume is not None and total > max_volume:
                flags.append("large_abs")
            if cohort["applied"] and total > cohort["high"]:
                flags.append("large_cohort")
        if r["n_components"] > expected_components:
            flags.append("several_components")
        r["flag_empty"] = int("empty" in flags)
        r["flag_small"] = int(any(f.startswith("small") for f in flags))
        r["flag_large"] = int(any(f.startswith("large") for f in flags))
        r["flag_several_components"] = int("several_components" in flags)
        r["flags"] = ";".join(flags)
    return cohort


def compute_volumes(pred_dir: str | Path, labels: list[str] | None = None, file_ending: str | None = None,
                    reader: str | None = None, remove_small_mm3: float | None = None,
                    min_volume: float | None = None, max_volume: float | None = None, expected_components: int = 1,
                    progress: bool = True) -> tuple[list[dict], dict]:
    """Measure every label map of ``pred_dir``.

    Returns:
        (rows, summary): one dict per case (``case``, ``file``, volumes, components, flags) and a summary with the
        settings, the cohort statistics and the flagged cases.

    Raises:
        ValueError: bad options, or files that cannot be measured (all offending cases are listed at once).
    """
    if remove_small_mm3 is not None and not remove_small_mm3 > 0:
        raise InputError(f"--remove-small-components must be > 0 mm³ (got {remove_small_mm3}).")
    for flag, v in (("--min-volume", min_volume), ("--max-volume", max_volume)):
        if v is not None and not v >= 0:
            raise InputError(f"{flag} must be >= 0 mm³ (got {v}).")
    if min_volume is not None and max_volume is not None and min_volume >= max_volume:
        raise InputError(f"--min-volume {min_volume} must be below --max-volume {max_volume}.")
    if expected_components < 1:
        raise InputError(f"--expected-components must be >= 1 (got {expected_components}).")
    from tqdm import tqdm

    found = resolve_inputs(pred_dir, file_ending, labels, reader)
    rows, problems = [], []
    for case, path in tqdm(found["cases"], desc="volumes", unit="case", disable=not progress, file=sys.stderr,
                           mininterval=1.0):
        try:
            seg, spacing = read_label_map(path, found["reader"])
            row = measure_label_map(seg, spacing, found["labels"], remove_small_mm3)
        except ValueError as e:
            problems.append(f"{case}: {e}" if not str(e).startswith(path.name) else str(e))
            continue
        rows.append({"case": case, "file": path.name, **row})
    if problems:
        raise InputError(f"{len(problems)} of {len(found['cases'])} label map(s) cannot be measured:\n  "
                         + line_listing(problems)
                         + "\nNothing was written. Fix the files or the label map (--labels NAME=VALUE ...).")
    cohort = flag_rows(rows, min_volume, max_volume, expected_components)
    from hippo_peft import __version__
    summary = {
        "tool": f"hippo-peft volumes {__version__}",
        "pred_dir": str(Path(pred_dir).resolve()),
        "file_ending": found["file_ending"],
        "reader": found["reader"].__name__, "reader_source": found["reader_source"],
        "labels": found["labels"], "labels_source": found["labels_source"],
        "n_cases": len(rows),
        "connectivity": f"{CONNECTIVITY} (face, edge and corner neighbours)",
        "volume_definition": "voxel count x voxel volume; voxel volume = product of the header spacing (mm)",
        "remove_small_components_mm3": remove_small_mm3,
        "remove_small_components_rule": None if remove_small_mm3 is None else
        f"per label, {CONNECTIVITY}-connected components with volume < {remove_small_mm3:g} mm³ were set to "
        f"background in memory before measuring; input files unchanged",
        "min_volume_mm3": min_volume, "max_volume_mm3": max_volume, "expected_components": expected_components,
        "cohort_rule": cohort,
        "flag_definitions": FLAG_DEFINITIONS,
        "flag_counts": {k: sum(1 for r in rows if k in r["flags"].split(";")) for k in FLAG_DEFINITIONS},
        "flagged_cases": {r["case"]: r["flags"] for r in rows if r["flags"]},
    }
    return rows, summary


def sidecar_path(output: Path) -> Path:
    return output.with_suffix(".json")


def write_outputs(rows: list[dict], summary: dict, output: str | Path, overwrite: bool = False) -> tuple[Path, Path]:
    """Write ``output`` (CSV) and its sidecar JSON; refuse to replace existing files unless ``overwrite``."""
    output = Path(output)
    if output.suffix.lower() != ".csv":
        raise InputError(f"-o {output}: the output must be a .csv file (its settings go beside it as .json).")
    side = sidecar_path(output)
    existing = [str(p) for p in (output, side) if p.exists()]
    if existing and not overwrite:
        raise OutputExistsError(f"{' and '.join(existing)} already exist(s); pass --overwrite to replace, or choose "
                                f"another -o.")
    if not output.parent.is_dir():
        raise MissingInputError(f"-o {output}: the folder {output.parent} does not exist.")
    from hippo_peft.atomic import atomic_file, write_text
    columns = list(rows[0].keys())
    with atomic_file(output) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        for r in rows:
            writer.writerow({k: (f"{v:.10g}" if isinstance(v, float) else v) for k, v in r.items()})
    summary = {**summary, "csv": str(output.resolve()), "columns": columns}
    write_text(side, json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    return output, side


def format_summary(rows: list[dict], summary: dict, csv_path: Path, json_path: Path) -> str:
    totals = np.asarray([r["total_mm3"] for r in rows], dtype=float)
    lines = [f"{len(rows)} case(s) measured ({summary['reader']}; labels {summary['labels']} from "
             f"{summary['labels_source']}); total volume median {np.median(totals):.1f} mm³ "
             f"(range {totals.min():.1f}-{totals.max():.1f})"]
    if summary["remove_small_components_mm3"] is not None:
        n = sum(1 for r in rows if r["removed_voxels"])
        lines.append(f"small-component removal: components < {summary['remove_small_components_mm3']:g} mm³ "
                     f"removed in {n} case(s) (input files unchanged)")
    cohort = summary["cohort_rule"]
    lines.append(f"cohort outlier rule: {'bounds %.1f-%.1f mm³' % (cohort['low'], cohort['high'])}"
                 if cohort["applied"] else f"cohort outlier rule not applied: {cohort['reason']}")
    flagged = summary["flagged_cases"]
    lines.append(f"flagged: {len(flagged)} case(s)" + (": " + listing([f"{c} ({f})" for c, f in flagged.items()])
                                                       if flagged else ""))
    lines.append(f"wrote {csv_path} and {json_path}")
    return "\n".join(lines)


def _cmd_volumes(args) -> None:
    rows, summary = compute_volumes(args.pred_dir, args.labels, args.file_ending, args.reader,
                                    args.remove_small_components, args.min_volume, args.max_volume,
                                    args.expected_components, progress=not args.no_progress)
    csv_path, json_path = write_outputs(rows, summary, args.output, args.overwrite)
    print(format_summary(rows, summary, csv_path, json_path))


def register(subparsers) -> None:
    """Add the ``volumes`` subcommand to hippo-peft's argparse subparsers."""
    s = subparsers.add_parser(
        "volumes", help="volume (mm³) per label and total, connected components and QC flags of predicted label "
                        "maps -> CSV + sidecar JSON",
        description="Volumes (mm³) per label and in total, connected components and quality flags of\n"
                    "every label map in a folder, typically the -o folder of nnUNetv2_predict. Files\n"
                    "are read with nnU-Net's own readers, so every format nnU-Net supports works\n"
                    "(NIfTI, NRRD, MHA, 3D TIFF with its spacing file). A volume is the voxel count\n"
                    "times the voxel volume from the image header; components are 26-connected.\n\n"
                    "Writes a CSV (one row per case) and a JSON of the same name beside it (the\n"
                    "settings, flag definitions, cohort statistics and flagged cases). Input files\n"
                    "are never modified.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    s.add_argument("pred_dir", help="folder of label maps, e.g. the -o folder of nnUNetv2_predict (its dataset.json "
                                    "gives the file ending and label names)")
    s.add_argument("--labels", nargs="+", metavar="NAME=VALUE",
                   help="foreground labels, e.g. Anterior=1 Posterior=2 (default: PRED_DIR/dataset.json). Any other "
                        "non-zero value in a file is an error")
    s.add_argument("--file-ending", help="e.g. .nii.gz (default: PRED_DIR/dataset.json, else the single nnU-Net "
                                         "ending found in the folder)")
    s.add_argument("--reader", help="nnU-Net reader/writer class, e.g. SimpleITKIO, NibabelIO, Tiff3DIO (default: "
                                    "PRED_DIR/plans.json, else chosen by file ending)")
    s.add_argument("-o", "--output", default="volumes.csv",
                   help="CSV to write; settings and flag definitions go to the same name with .json. Never "
                        "written into PRED_DIR unless you say so")
    s.add_argument("--overwrite", action="store_true", help="replace an existing output CSV/JSON")
    s.add_argument("--remove-small-components", type=float, metavar="MM3",
                   help=f"before measuring, set each label's {CONNECTIVITY}-connected components smaller than MM3 "
                        f"mm³ to background (in memory; files unchanged). The threshold is written to the JSON")
    s.add_argument("--min-volume", type=float, metavar="MM3", help="flag 'small_abs' when the total is below this")
    s.add_argument("--max-volume", type=float, metavar="MM3", help="flag 'large_abs' when the total is above this")
    s.add_argument("--expected-components", type=int, default=1,
                   help="flag 'several_components' when all foreground labels together form more connected "
                        "components than this (1: one hippocampus per map; use 2 for left+right maps)")
    s.add_argument("--no-progress", action="store_true", help="no progress bar")
    s.epilog = ("Cohort rule (always on with >= %d non-empty cases): flag small_cohort or\n"
                "large_cohort when the total is outside median +/- %g x %g x MAD of the\n"
                "non-empty cases' totals." %
                (COHORT_MIN_CASES, COHORT_K, MAD_TO_SD))
    s.set_defaults(func=_cmd_volumes)
