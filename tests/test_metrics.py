"""Benchmark metrics against answers computed by hand: shifted spheres (analytic lens volume and surface-distance
percentile), boxes and single voxels with anisotropic spacing (exact)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from hippo_peft.analysis.metrics import case_metrics, dice, hd95, label_regions

SPACING = (1.0, 0.8, 1.25)  # mm per axis of the arrays, deliberately anisotropic


def sphere(shape, spacing, center_mm, radius_mm) -> np.ndarray:
    grid = np.meshgrid(*[np.arange(n) * s for n, s in zip(shape, spacing)], indexing="ij")
    return sum((g - c) ** 2 for g, c in zip(grid, center_mm)) <= radius_mm ** 2


def test_shifted_spheres_match_the_analytic_dice_and_hd95():
    r, d = 12.0, 4.0
    shape = (48, 60, 40)
    center = np.array([24.0, 24.0, 25.0])
    a = sphere(shape, SPACING, center, r)
    b = sphere(shape, SPACING, center + [d, 0, 0], r)
    # Dice of two equal spheres at distance d = lens volume / sphere volume = (4r + d)(2r - d)^2 / (16 r^3)
    expected_dice = (4 * r + d) * (2 * r - d) ** 2 / (16 * r ** 3)
    assert dice(a, b) == pytest.approx(expected_dice, abs=0.01)
    # A surface point at polar cosine u (uniform in [-1, 1] for area-uniform points) lies |sqrt(r^2 + d^2 - 2rdu) - r|
    # from the other sphere's surface; HD95 is the 95th percentile of that distance, the same in both directions.
    u = np.linspace(-1, 1, 200001)
    expected_hd95 = float(np.percentile(np.abs(np.sqrt(r ** 2 + d ** 2 - 2 * r * d * u) - r), 95))
    assert expected_hd95 == pytest.approx(3.8, abs=1e-3)  # 0.95 of the shift d = 4 mm for this r and d
    assert hd95(a, b, SPACING) == pytest.approx(expected_hd95, abs=max(SPACING) / 2)  # voxel discretisation


def test_boxes_and_voxels_exact_with_anisotropic_spacing():
    a = np.zeros((20, 20, 20), np.uint8)
    b = np.zeros_like(a)
    a[2:12, 3:13, 4:14] = 1
    b[4:14, 3:13, 4:14] = 1  # shifted by 2 voxels along axis 0: overlap 8 x 10 x 10
    assert dice(a, b) == pytest.approx(2 * 800 / 2000)
    p, q = np.zeros_like(a), np.zeros_like(a)
    p[2, 2, 2], q[2, 2, 5] = 1, 1  # 3 voxels apart along the last axis (1.25 mm each)
    assert hd95(p, q, SPACING) == pytest.approx(3 * 1.25)
    assert hd95(a, a, SPACING) == pytest.approx(0.0)


def test_case_metrics_regions_volumes_and_empty_conventions():
    ref = np.zeros((10, 10, 10), np.uint8)
    pred = np.zeros_like(ref)
    ref[1:4, 1:4, 1:4] = 1   # 27 voxels
    ref[5:7, 5:7, 5:7] = 2   # 8 voxels
    pred[1:4, 1:4, 1:3] = 1  # 18 voxels; label 2 missing from the prediction
    voxel = math.prod(SPACING)
    regions = label_regions({"background": 0, "Anterior": 1, "Posterior": 2})
    assert regions == {"Anterior": (1,), "Posterior": (2,), "Anterior+Posterior": (1, 2)}
    m = case_metrics(ref, pred, SPACING, regions)
    assert m["Anterior"]["dice"] == pytest.approx(2 * 18 / 45)
    assert m["Anterior"]["abs_volume_error"] == pytest.approx(9 * voxel)
    assert m["Posterior"]["dice"] == 0.0 and math.isnan(m["Posterior"]["hd95"])
    assert m["Posterior"]["volume_reference"] == pytest.approx(8 * voxel)
    assert m["Anterior+Posterior"]["dice"] == pytest.approx(2 * 18 / (35 + 18))
    empty = case_metrics(np.zeros_like(ref), np.zeros_like(ref), SPACING, {"x": (1,)})["x"]
    assert math.isnan(empty["dice"]) and math.isnan(empty["hd95"]) and empty["abs_volume_error"] == 0
    with pytest.raises(ValueError, match="shape"):
        case_metrics(ref, pred[:5], SPACING, regions)
    with pytest.raises(ValueError, match="spacing"):
        case_metrics(ref, pred, (1.0, 1.0), regions)
