"""Phantom cases for the QC page (``hippo-peft qc``): images, "predictions" with the faults QC is for, references.

Each case is a hippocampus-like phantom (:func:`hippo_peft.experiments.synthetic.make_phantom`) written with its own
voxel spacing and axis order (non-identity direction matrices), so the pictures show that orientation and proportions
come from the header. Predictions are the phantom's label, eroded or dilated a little, and, for chosen cases, a stray
fragment, an empty map, a missing label (a small total volume) or a voxel grid that differs from the image.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

LABELS = {"background": 0, "Anterior": 1, "Posterior": 2}
# (axes, flips): array index axis a runs along RAS world axis axes[a], reversed where flips[a]
ORIENTATIONS = [((0, 1, 2), (False, False, False)), ((2, 0, 1), (True, False, True)), ((1, 2, 0), (False, True, False))]
SPACINGS = [(1.0, 1.0, 1.0), (0.7, 1.4, 1.0), (1.2, 0.8, 1.5)]


def write_ras(path: str | Path, array_ras: np.ndarray, spacing_ras, axes=(0, 1, 2), flips=(False, False, False),
              origin_shift_mm: float = 0.0) -> Path:
    """Write an array given in RAS axis order as a file whose index axes follow ``axes`` / ``flips``.

    Args:
        path: file to write (SimpleITK picks the format from the ending).
        array_ras: 3D array, axis 0 towards Right, 1 towards Anterior, 2 towards Superior.
        spacing_ras: mm per voxel along those axes.
        axes: index axis ``a`` of the file runs along world axis ``axes[a]``.
        flips: index axis ``a`` runs towards the negative end of its world axis.
        origin_shift_mm: added to the origin along every axis (a grid that differs from the others).
    """
    import SimpleITK as sitk
    flips = tuple(bool(f) for f in flips)
    arr = np.transpose(array_ras, axes)
    for a, f in enumerate(flips):
        if f:
            arr = np.flip(arr, a)
    direction_ras = np.zeros((3, 3))
    origin_ras = np.zeros(3)
    for a, (p, f) in enumerate(zip(axes, flips)):
        direction_ras[p, a] = -1.0 if f else 1.0
        if f:
            origin_ras[p] = (array_ras.shape[p] - 1) * spacing_ras[p]
    lps = np.diag([-1.0, -1.0, 1.0])
    img = sitk.GetImageFromArray(np.ascontiguousarray(arr).transpose(2, 1, 0))
    img.SetSpacing([float(spacing_ras[p]) for p in axes])
    img.SetDirection((lps @ direction_ras).ravel().tolist())
    img.SetOrigin((lps @ origin_ras + origin_shift_mm).tolist())
    sitk.WriteImage(img, str(path), useCompression=True)
    return Path(path)


def write_qc_phantoms(root: str | Path, n_cases: int = 12, seed: int = 0) -> dict[str, Path]:
    """Write ``images/``, ``pred/`` (with ``dataset.json``) and ``ref/`` under ``root``.

    Faults: case 1 a stray fragment, case 2 an empty prediction, case 3 only the anterior label (small total),
    case 4 a prediction on a shifted voxel grid (with n_cases >= 5).

    Returns:
        {"images": ..., "pred": ..., "ref": ...} folders.
    """
    from scipy import ndimage

    from hippo_peft.experiments.synthetic import make_phantom
    root = Path(root)
    folders = {k: root / k for k in ("images", "pred", "ref")}
    for f in folders.values():
        f.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n_cases):
        case = f"phantom_{i:03d}"
        image, label = (np.flip(a, 1) for a in make_phantom(rng))  # its label 1 (the head) to the anterior end
        axes, flips = ORIENTATIONS[i % len(ORIENTATIONS)]
        spacing = SPACINGS[i % len(SPACINGS)]
        pred = label.copy()
        grow = ndimage.binary_dilation(label > 0) & (label == 0)
        if rng.random() < 0.5:  # a little too large or too small, as a real model would be
            pred[grow] = 2
        else:
            pred[ndimage.binary_erosion(label > 0) != (label > 0)] = 0
        shift = 0.0
        if i == 1:
            pred[2:5, 2:5, 2:5] = 2
        elif i == 2:
            pred[:] = 0
        elif i == 3:
            pred[pred == 2] = 0
        elif i == 4:
            shift = 3.0
        kw = {"axes": axes, "flips": flips}
        write_ras(folders["images"] / f"{case}_0000.nii.gz", image, spacing, **kw)
        write_ras(folders["ref"] / f"{case}.nii.gz", label, spacing, **kw)
        write_ras(folders["pred"] / f"{case}.nii.gz", pred.astype(np.uint8), spacing, origin_shift_mm=shift, **kw)
    (folders["pred"] / "dataset.json").write_text(json.dumps(
        {"channel_names": {"0": "T1"}, "labels": LABELS, "numTraining": n_cases, "file_ending": ".nii.gz"}, indent=2))
    return folders
