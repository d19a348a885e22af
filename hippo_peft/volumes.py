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
import math
import sys
from pathlib import Path

import numpy as np

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
_RESERVED = {"case", "file", "voxel_volume_mm3", "total", "removed", "flags"}
_MAX_LISTED = 30


def _listing(items: list[str]) -> str:
    """Offenders for an error message: all of them up to a readable length, then a count."""
    shown = ", ".join(items[:_MAX_LISTED])
    return shown + (f" ... and {len(items) - _MAX_LISTED} more" if len(items) > _MAX_LISTED else "")


def parse_label_args(items: list[str]) -> dict[str, int]:
    """``["Anterior=1", "Posterior=2"]`` -> ``{"Anterior": 1, "Posterior": 2}`` (foreground labels only).

    A bare integer ``3`` is accepted and named ``label3``.

    Raises:
        ValueError: malformed item, background (0) given, duplicate names or values, reserved names.
    """
    labels: dict[str, int] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep:
            name, value = f"label{item}", item
        name = name.strip()
        try:
            v = int(value)
        except ValueError:
            raise ValueError(f"--labels {item!r}: expected NAME=VALUE with an integer value, e.g. "
                             f"--labels Anterior=1 Posterior=2") from None
        if v <= 0:
            raise ValueError(f"--labels {item!r}: give foreground labels only (values > 0); 0 is background.")
        if not name:
            raise ValueError(f"--labels {item!r}: the label name is empty.")
        if name in labels:
            raise ValueError(f"--labels: the name {name!r} is given twice.")
        if v in labels.values():
            raise ValueError(f"--labels: the value {v} is given twice.")
        labels[name] = v
    _check_label_names(labels, "--labels")
    return labels


def _check_label_names(labels: dict[str, int], source: str) -> None:
    clash = sorted(n for n in labels if n.lower() in _RESERVED)
    if clash:
        raise ValueError(f"{source}: label name(s) {', '.join(clash)} clash with CSV column names "
                         f"({', '.join(sorted(_RESERVED))}); rename them with --labels NAME=VALUE.")
    if not labels:
        raise ValueError(f"{source}: no foreground label; give them with --labels NAME=VALUE ...")


def labels_from_dataset_json(dataset_json: dict, path: Path) -> dict[str, int]:
    """Foreground labels ``{name: value}`` of an nnU-Net dataset.json (background dropped).

    Raises:
        ValueError: region-based labels (lists of values), which are not label values on disk.
    """
    labels = {}
    for name, value in dataset_json.get("labels", {}).items():
        if isinstance(value, (list, tuple)):
            raise ValueError(f"{path} defines region-based labels ({name}: {value}); the values written to disk "
                             f"are not these regions. Give the label values with --labels NAME=VALUE ...")
        if int(value) != 0:
            labels[name] = int(value)
    _check_label_names(labels, str(path))
    return labels


def _supported_endings() -> dict[str, list[str]]:
    from nnunetv2.imageio.reader_writer_registry import LIST_OF_IO_CLASSES
    return {rw.__name__: list(rw.supported_file_endings) for rw in LIST_OF_IO_CLASSES}


def _detect_ending(files: list[Path]) -> str:
    """The one nnU-Net file ending among ``files``; error when there is none or several."""
    endings = sorted({e for es in _supported_endings().values() for e in es}, key=len, reverse=True)
    found = {}
    for f in files:
        match = next((e for e in endings if f.name.lower().endswith(e)), None)
        if match:
            found.setdefault(match, []).append(f.name)
    if len(found) != 1:
        what = "; ".join(f"{e}: {len(v)} file(s)" for e, v in sorted(found.items())) or "none"
        raise ValueError(f"cannot tell the file ending of the label maps (no dataset.json in the folder; endings "
                         f"found: {what}). Pass --file-ending, e.g. --file-ending .nii.gz")
    return next(iter(found))


def _reader_class(name: str | None, pred_dir: Path, file_ending: str, example: Path):
    """nnU-Net reader/writer class: --reader, else the plans.json / dataset.json that nnUNetv2_predict writes into
    its output folder, else the first class of nnU-Net's registry that reads ``example``."""
    from nnunetv2.imageio.reader_writer_registry import LIST_OF_IO_CLASSES, recursive_find_reader_writer_by_name
    source = "--reader"
    if name is None:
        for meta, key in (("plans.json", "image_reader_writer"), ("dataset.json", "overwrite_image_reader_writer")):
            if (pred_dir / meta).is_file():
                value = json.loads((pred_dir / meta).read_text()).get(key)
                if value and value != "None":
                    name, source = value, f"{meta} ({key})"
                    break
    if name is not None:
        try:
            rw = recursive_find_reader_writer_by_name(name)
        except RuntimeError:
            known = ", ".join(c.__name__ for c in LIST_OF_IO_CLASSES)
            raise ValueError(f"{source} names the reader {name!r}, which nnU-Net does not have (known: {known}).") \
                from None
        if file_ending.lower() not in rw.supported_file_endings:
            raise ValueError(f"{source}: {rw.__name__} reads {', '.join(rw.supported_file_endings)}, not "
                             f"{file_ending}; pass --reader or --file-ending.")
    else:
        source = "nnU-Net's registry, by file ending"
        # 2D natural images carry no physical spacing: never let the registry pick that reader for a 3D .tif.
        candidates = [c for c in LIST_OF_IO_CLASSES if c.__name__ != "NaturalImage2DIO"
                      and file_ending.lower() in c.supported_file_endings]
        if not candidates:
            raise ValueError(f"no nnU-Net reader for 3D label maps reads {file_ending!r} "
                             f"(supported: {_supported_endings()}).")
        rw, failures = None, []
        for c in candidates:
            try:
                c().read_seg(str(example))
                rw = c
                break
            except Exception as e:  # noqa: BLE001 -- try the next reader, as nnU-Net's registry does
                failures.append(f"{c.__name__}: {type(e).__name__}: {e}")
        if rw is None:
            raise ValueError(f"no nnU-Net reader can read {example} ({'; '.join(failures)}).")
    if rw.__name__ == "NaturalImage2DIO":
        raise ValueError(f"{rw.__name__} reads 2D images without physical spacing: volumes in mm³ are undefined. "
                         f"hippo-peft volumes needs 3D label maps.")
    return rw, source


def resolve_inputs(pred_dir: str | Path, file_ending: str | None = None, labels: list[str] | None = None,
                   reader: str | None = None) -> dict:
    """Find the label maps, their reader and the label names of a prediction folder.

    Args:
        pred_dir: folder with one label map per case (e.g. the output folder of ``nnUNetv2_predict``).
        file_ending: e.g. ``.nii.gz``; default: ``file_ending`` of ``pred_dir/dataset.json``, else the single
            nnU-Net file ending found among the files.
        labels: ``NAME=VALUE`` items; default: the labels of ``pred_dir/dataset.json``.
        reader: nnU-Net reader/writer class name (e.g. ``SimpleITKIO``); default: from ``plans.json`` /
            ``dataset.json`` in ``pred_dir``, else by file ending.

    Returns:
        dict with ``cases`` (list of (case id, path)), ``reader`` (class), ``reader_source``, ``labels``
        ({name: value}), ``labels_source``, ``file_ending``.

    Raises:
        FileNotFoundError: missing folder, or no label map with the ending.
        ValueError: no way to know the ending or the labels.
    """
    pred_dir = Path(pred_dir)
    if not pred_dir.is_dir():
        raise FileNotFoundError(f"{pred_dir} is not a folder; give the folder with the predicted label maps "
                                f"(the -o folder of nnUNetv2_predict).")
    dj_path = pred_dir / "dataset.json"
    dataset_json = json.loads(dj_path.read_text()) if dj_path.is_file() else None
    files = sorted(p for p in pred_dir.iterdir() if p.is_file())
    if file_ending is None:
        file_ending = dataset_json["file_ending"] if dataset_json and "file_ending" in dataset_json \
            else _detect_ending(files)
    if not file_ending.startswith("."):
        raise ValueError(f"--file-ending {file_ending!r} must start with a dot, e.g. .nii.gz")
    cases = [(p.name[: -len(file_ending)], p) for p in files if p.name.endswith(file_ending)]
    if not cases:
        present = ", ".join(sorted({"".join(p.suffixes) or p.name for p in files})) or "nothing"
        raise FileNotFoundError(f"no label map ending in {file_ending} in {pred_dir} (found: {present}). "
                                f"Check the folder, or pass --file-ending.")
    if labels:
        label_map, labels_source = parse_label_args(labels), "--labels"
    elif dataset_json is not None:
        label_map, labels_source = labels_from_dataset_json(dataset_json, dj_path), str(dj_path)
    else:
        raise ValueError(f"no dataset.json in {pred_dir} to name the labels; pass --labels NAME=VALUE ..., e.g. "
                         f"--labels Anterior=1 Posterior=2")
    rw, reader_source = _reader_class(reader, pred_dir, file_ending, cases[0][1])
    return {"cases": cases, "reader": rw, "reader_source": reader_source, "labels": label_map,
            "labels_source": labels_source, "file_ending": file_ending}


def read_label_map(path: Path, reader_class) -> tuple[np.ndarray, tuple[float, ...]]:
    """(3D integer label array, spacing in mm in the array's axis order) of one file.

    Raises:
        ValueError: unreadable or cut short (a ``.nii.gz`` that does not decode to its end), not 3D, non-integer or
            negative values, missing spacing (3D TIFF without its
            .json spacing file), non-positive spacing.
    """
    if reader_class.__name__ == "Tiff3DIO":
        aux = path.with_name(path.name[: -len(path.name.split(".")[-1]) - 1] + ".json")
        if not aux.is_file():
            raise ValueError(f"{path.name}: no spacing file {aux.name} beside it; without it the voxel size is "
                             f"unknown and volumes in mm³ would be made up.")
    from hippo_peft.image_check import check_complete
    check_complete(path)  # a cut-short file would read with zeros for the missing voxels
    try:
        seg, props = reader_class().read_seg(str(path))
    except Exception as e:  # noqa: BLE001 -- any reader failure becomes an error naming the file
        raise ValueError(f"{path.name}: {reader_class.__name__} could not read it ({type(e).__name__}: {e})") \
            from None
    seg = np.asarray(seg)
    if seg.ndim == 4 and seg.shape[0] == 1:
        seg = seg[0]
    spacing = tuple(abs(float(s)) for s in props["spacing"])
    if seg.ndim != 3 or len(spacing) != 3:
        raise ValueError(f"{path.name}: not a single-channel 3D label map (array shape {seg.shape}).")
    if seg.shape[0] == 1 and spacing[0] >= 999 * max(spacing[1:]):
        raise ValueError(f"{path.name}: a 2D image (nnU-Net gives it a dummy spacing {spacing[0]:g}); volumes in "
                         f"mm³ need 3D label maps.")
    if not all(math.isfinite(s) and s > 0 for s in spacing):
        raise ValueError(f"{path.name}: invalid voxel spacing {spacing} in the header.")
    if not np.all(np.isfinite(seg)) or np.any(seg != np.round(seg)) or seg.min() < 0:
        raise ValueError(f"{path.name}: not a label map (non-integer or negative values); give predicted "
                         f"segmentations, not probabilities or images.")
    return seg.astype(np.int64, copy=False), spacing


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
        raise ValueError(f"label value(s) {unknown} not in the label map {labels}")
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
    median = float(np.median(values))
    mad = float(np.median(np.abs(values - median)))
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
        raise ValueError(f"--remove-small-components must be > 0 mm³ (got {remove_small_mm3}).")
    for flag, v in (("--min-volume", min_volume), ("--max-volume", max_volume)):
        if v is not None and not v >= 0:
            raise ValueError(f"{flag} must be >= 0 mm³ (got {v}).")
    if min_volume is not None and max_volume is not None and min_volume >= max_volume:
        raise ValueError(f"--min-volume {min_volume} must be below --max-volume {max_volume}.")
    if expected_components < 1:
        raise ValueError(f"--expected-components must be >= 1 (got {expected_components}).")
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
        raise ValueError(f"{len(problems)} of {len(found['cases'])} label map(s) cannot be measured:\n  "
                         + "\n  ".join(problems[:_MAX_LISTED])
                         + (f"\n  ... and {len(problems) - _MAX_LISTED} more" if len(problems) > _MAX_LISTED else "")
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
        raise ValueError(f"-o {output}: the output must be a .csv file (its settings go beside it as .json).")
    side = sidecar_path(output)
    existing = [str(p) for p in (output, side) if p.exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{' and '.join(existing)} already exist(s); pass --overwrite to replace, or choose "
                              f"another -o.")
    if not output.parent.is_dir():
        raise FileNotFoundError(f"-o {output}: the folder {output.parent} does not exist.")
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
    lines.append(f"flagged: {len(flagged)} case(s)" + (": " + _listing([f"{c} ({f})" for c, f in flagged.items()])
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
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
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
                   help="CSV to write (default ./volumes.csv); settings and flag definitions go to the same name "
                        "with .json. Never written into PRED_DIR unless you say so")
    s.add_argument("--overwrite", action="store_true", help="replace an existing output CSV/JSON")
    s.add_argument("--remove-small-components", type=float, metavar="MM3",
                   help=f"before measuring, set each label's {CONNECTIVITY}-connected components smaller than MM3 "
                        f"mm³ to background (in memory; files unchanged). The threshold is written to the JSON")
    s.add_argument("--min-volume", type=float, metavar="MM3", help="flag 'small_abs' when the total is below this")
    s.add_argument("--max-volume", type=float, metavar="MM3", help="flag 'large_abs' when the total is above this")
    s.add_argument("--expected-components", type=int, default=1,
                   help="flag 'several_components' when all foreground labels together form more connected "
                        "components than this (default 1: one hippocampus per map; use 2 for left+right maps)")
    s.add_argument("--no-progress", action="store_true", help="no progress bar")
    s.epilog = ("Cohort rule (always on with >= %d non-empty cases): flag small_cohort / large_cohort when the "
                "total is outside median +/- %g x %g x MAD of the non-empty cases' totals." %
                (COHORT_MIN_CASES, COHORT_K, MAD_TO_SD))
    s.set_defaults(func=_cmd_volumes)
