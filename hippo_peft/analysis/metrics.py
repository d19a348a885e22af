"""Per-case segmentation metrics in physical units: Dice, HD95 (MONAI's implementation) and volume error.

Conventions (stated in the benchmark report): a region empty in both reference and prediction has Dice NaN and
HD95 NaN (nnU-Net's convention: nothing to score), a region present in only one of them has Dice 0 and HD95 NaN
(no surface to measure to); NaNs are left out of means and counted.
"""
from __future__ import annotations

import warnings

import numpy as np
import torch

from hippo_peft.errors import InputError


def dice(reference: np.ndarray, prediction: np.ndarray) -> float:
    """nnU-Net's Dice: its evaluation's voxel counts, its formula and its convention (NaN when both are empty), so
    that the benchmark's numbers and nnU-Net's ``summary.json`` are one computation."""
    from nnunetv2.evaluation.evaluate_predictions import compute_tp_fp_fn_tn

    tp, fp, fn, _ = compute_tp_fp_fn_tn(reference.astype(bool), prediction.astype(bool))
    return float("nan") if tp + fp + fn == 0 else float(2 * tp / (2 * tp + fp + fn))


def hd95(reference: np.ndarray, prediction: np.ndarray, spacing) -> float:
    """Symmetric 95th-percentile Hausdorff distance in the unit of ``spacing`` (mm), via MONAI."""
    from monai.metrics import compute_hausdorff_distance

    ref, pred = reference.astype(bool), prediction.astype(bool)
    if not ref.any() or not pred.any():
        return float("nan")
    with warnings.catch_warnings():  # MONAI's deprecation notices inside its own metric code
        warnings.simplefilter("ignore", FutureWarning)
        value = compute_hausdorff_distance(torch.from_numpy(pred)[None, None], torch.from_numpy(ref)[None, None],
                                           include_background=True, percentile=95,
                                           spacing=[float(s) for s in spacing])
    return float(value.item())


def case_metrics(reference: np.ndarray, prediction: np.ndarray, spacing, regions: dict[str, tuple[int, ...]]) -> dict:
    """Dice, HD95 (mm), reference / predicted volume and absolute volume error (mm^3) per region.

    Args:
        reference: integer label map.
        prediction: integer label map of the same shape.
        spacing: voxel size per axis of the arrays, in mm.
        regions: name -> label values that make the region (e.g. ``{"Anterior": (1,), "hippocampus": (1, 2)}``).
    """
    if reference.shape != prediction.shape:
        raise InputError(f"Reference shape {reference.shape} and prediction shape {prediction.shape} differ; "
                         f"predictions must be in the reference's geometry (nnU-Net exports them that way).")
    if len(spacing) != reference.ndim:
        raise InputError(f"spacing {tuple(spacing)} has {len(spacing)} values for a {reference.ndim}-D image.")
    voxel = float(np.prod(spacing))
    out = {}
    for name, labels in regions.items():
        ref, pred = np.isin(reference, labels), np.isin(prediction, labels)
        v_ref, v_pred = ref.sum() * voxel, pred.sum() * voxel
        out[name] = {"dice": dice(ref, pred), "hd95": hd95(ref, pred, spacing), "volume_reference": float(v_ref),
                     "volume_predicted": float(v_pred), "abs_volume_error": float(abs(v_pred - v_ref))}
    return out


def label_regions(labels: dict[str, int]) -> dict[str, tuple[int, ...]]:
    """Each foreground label alone and, with several, all of them together (``+``-joined name), as nnU-Net's
    evaluation does with ``regions``."""
    fg = {name: value for name, value in labels.items() if value != 0}
    regions = {name: (value,) for name, value in fg.items()}
    if len(fg) > 1:
        regions["+".join(fg)] = tuple(fg.values())
    return regions
