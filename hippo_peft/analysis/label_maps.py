"""Label maps in, before anything is measured: which labels (``--labels`` or ``dataset.json``), which files and
reader (nnU-Net's reader-writer registry, or the reader ``plans.json`` names), and each map read completely with its
spacing. Every problem is found and named before any output is written."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from hippo_peft.errors import InputError, MissingInputError


_RESERVED = {"case", "file", "voxel_volume_mm3", "total", "removed", "flags"}


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
            raise InputError(f"--labels {item!r}: expected NAME=VALUE with an integer value, e.g. "
                             f"--labels Anterior=1 Posterior=2") from None
        if v <= 0:
            raise InputError(f"--labels {item!r}: give foreground labels only (values > 0); 0 is background.")
        if not name:
            raise InputError(f"--labels {item!r}: the label name is empty.")
        if name in labels:
            raise InputError(f"--labels: the name {name!r} is given twice.")
        if v in labels.values():
            raise InputError(f"--labels: the value {v} is given twice.")
        labels[name] = v
    _check_label_names(labels, "--labels")
    return labels


def _check_label_names(labels: dict[str, int], source: str) -> None:
    clash = sorted(n for n in labels if n.lower() in _RESERVED)
    if clash:
        raise InputError(f"{source}: label name(s) {', '.join(clash)} clash with CSV column names "
                         f"({', '.join(sorted(_RESERVED))}); rename them with --labels NAME=VALUE.")
    if not labels:
        raise InputError(f"{source}: no foreground label; give them with --labels NAME=VALUE ...")


def labels_from_dataset_json(dataset_json: dict, path: Path) -> dict[str, int]:
    """Foreground labels ``{name: value}`` of an nnU-Net dataset.json (background dropped).

    Raises:
        ValueError: region-based labels (lists of values), which are not label values on disk.
    """
    labels = {}
    for name, value in dataset_json.get("labels", {}).items():
        if isinstance(value, (list, tuple)):
            raise InputError(f"{path} defines region-based labels ({name}: {value}); the values written to disk "
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
        raise InputError(f"cannot tell the file ending of the label maps (no dataset.json in the folder; endings "
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
            raise InputError(f"{source} names the reader {name!r}, which nnU-Net does not have (known: {known}).") \
                from None
        if file_ending.lower() not in rw.supported_file_endings:
            raise InputError(f"{source}: {rw.__name__} reads {', '.join(rw.supported_file_endings)}, not "
                             f"{file_ending}; pass --reader or --file-ending.")
    else:
        source = "nnU-Net's registry, by file ending"
        # 2D natural images carry no physical spacing: never let the registry pick that reader for a 3D .tif.
        candidates = [c for c in LIST_OF_IO_CLASSES if c.__name__ != "NaturalImage2DIO"
                      and file_ending.lower() in c.supported_file_endings]
        if not candidates:
            raise InputError(f"no nnU-Net reader for 3D label maps reads {file_ending!r} "
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
            raise InputError(f"no nnU-Net reader can read {example} ({'; '.join(failures)}).")
    if rw.__name__ == "NaturalImage2DIO":
        raise InputError(f"{rw.__name__} reads 2D images without physical spacing: volumes in mm³ are undefined. "
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
        raise MissingInputError(f"{pred_dir} is not a folder; give the folder with the predicted label maps "
                                f"(the -o folder of nnUNetv2_predict).")
    dj_path = pred_dir / "dataset.json"
    dataset_json = json.loads(dj_path.read_text()) if dj_path.is_file() else None
    files = sorted(p for p in pred_dir.iterdir() if p.is_file())
    if file_ending is None:
        file_ending = dataset_json["file_ending"] if dataset_json and "file_ending" in dataset_json \
            else _detect_ending(files)
    if not file_ending.startswith("."):
        raise InputError(f"--file-ending {file_ending!r} must start with a dot, e.g. .nii.gz")
    cases = [(p.name[: -len(file_ending)], p) for p in files if p.name.endswith(file_ending)]
    if not cases:
        present = ", ".join(sorted({"".join(p.suffixes) or p.name for p in files})) or "nothing"
        raise MissingInputError(f"no label map ending in {file_ending} in {pred_dir} (found: {present}). "
                                f"Check the folder, or pass --file-ending.")
    if labels:
        label_map, labels_source = parse_label_args(labels), "--labels"
    elif dataset_json is not None:
        label_map, labels_source = labels_from_dataset_json(dataset_json, dj_path), str(dj_path)
    else:
        raise InputError(f"no dataset.json in {pred_dir} to name the labels; pass --labels NAME=VALUE ..., e.g. "
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
            raise InputError(f"{path.name}: no spacing file {aux.name} beside it; without it the voxel size is "
                             f"unknown and volumes in mm³ would be made up.")
    from hippo_peft.image_check import check_complete
    check_complete(path)  # a cut-short file would read with zeros for the missing voxels
    try:
        seg, props = reader_class().read_seg(str(path))
    except Exception as e:  # noqa: BLE001 -- any reader failure becomes an error naming the file
        raise InputError(f"{path.name}: {reader_class.__name__} could not read it ({type(e).__name__}: {e})") \
            from None
    seg = np.asarray(seg)
    if seg.ndim == 4 and seg.shape[0] == 1:
        seg = seg[0]
    spacing = tuple(abs(float(s)) for s in props["spacing"])
    if seg.ndim != 3 or len(spacing) != 3:
        raise InputError(f"{path.name}: not a single-channel 3D label map (array shape {seg.shape}).")
    if seg.shape[0] == 1 and spacing[0] >= 999 * max(spacing[1:]):
        raise InputError(f"{path.name}: a 2D image (nnU-Net gives it a dummy spacing {spacing[0]:g}); volumes in "
                         f"mm³ need 3D label maps.")
    if not all(math.isfinite(s) and s > 0 for s in spacing):
        raise InputError(f"{path.name}: invalid voxel spacing {spacing} in the header.")
    if not np.all(np.isfinite(seg)) or np.any(seg != np.round(seg)) or seg.min() < 0:
        raise InputError(f"{path.name}: not a label map (non-integer or negative values); give predicted "
                         f"segmentations, not probabilities or images.")
    return seg.astype(np.int64, copy=False), spacing
