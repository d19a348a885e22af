"""`hippo-peft volumes`: volumes against hand-computed answers on synthetic label maps with non-unit spacing,
connected components, QC flags, small-component removal, readers, and every bad input."""
from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from hippo_peft.cli import main
from hippo_peft.analysis.volumes import cohort_bounds, compute_volumes, measure_label_map

# SimpleITK spacing is (x, y, z); the array is (z, y, x). A spacing whose product is 1 would hide a missing
# multiplication, so the voxel volume here is 0.7 * 0.9 * 1.3 = 0.819 mm³.
SPACING_XYZ = (0.7, 0.9, 1.3)
VOXEL = 0.7 * 0.9 * 1.3
LABELS = {"background": 0, "Anterior": 1, "Posterior": 2}


def write_image(path: Path, arr: np.ndarray, spacing=SPACING_XYZ) -> None:
    img = sitk.GetImageFromArray(arr.astype(np.uint8))
    img.SetSpacing(spacing)
    img.SetOrigin((10.0, -5.0, 3.0))
    sitk.WriteImage(img, str(path))


def base_map() -> np.ndarray:
    """Anterior: 4x5x6 = 120 voxels; Posterior: 2x3x4 = 24 voxels sharing a face with it: one structure."""
    a = np.zeros((16, 14, 15), np.uint8)
    a[2:6, 3:8, 4:10] = 1
    a[6:8, 3:6, 4:8] = 2
    return a


def pred_folder(root: Path, maps: dict[str, np.ndarray], dataset_json: bool = True, ending: str = ".nii.gz",
                spacing=SPACING_XYZ) -> Path:
    """A folder shaped like nnUNetv2_predict's output (label maps + dataset.json)."""
    root.mkdir(parents=True, exist_ok=True)
    for case, arr in maps.items():
        write_image(root / f"{case}{ending}", arr, spacing)
    if dataset_json:
        (root / "dataset.json").write_text(json.dumps({"channel_names": {"0": "MRI"}, "labels": LABELS,
                                                       "numTraining": 1, "file_ending": ending}))
    return root


def read_csv(path: Path) -> dict[str, dict[str, str]]:
    with open(path, newline="") as f:
        return {r["case"]: r for r in csv.DictReader(f)}


def test_box_volumes_with_anisotropic_spacing(tmp_path, capsys):
    pred = pred_folder(tmp_path / "pred", {"c1": base_map()})
    out = tmp_path / "out" / "v.csv"
    out.parent.mkdir()
    assert main(["volumes", str(pred), "-o", str(out), "--no-progress"]) == 0
    row = read_csv(out)["c1"]
    # hand computation from the spacing written into the header (NIfTI keeps it as float32: rel 1e-6)
    assert float(row["voxel_volume_mm3"]) == pytest.approx(0.819, rel=1e-6)
    assert float(row["Anterior_mm3"]) == pytest.approx(120 * 0.819, rel=1e-6)
    assert float(row["Posterior_mm3"]) == pytest.approx(24 * 0.819, rel=1e-6)
    assert float(row["total_mm3"]) == pytest.approx(144 * 0.819, rel=1e-6)
    assert (row["Anterior_n_components"], row["Posterior_n_components"], row["n_components"]) == ("1", "1", "1")
    assert row["flags"] == "" and row["flag_empty"] == "0"
    side = json.loads(out.with_suffix(".json").read_text())
    assert side["labels"] == {"Anterior": 1, "Posterior": 2}
    assert side["reader"] == "SimpleITKIO" and side["connectivity"].startswith("26")
    assert side["remove_small_components_mm3"] is None
    assert not (pred / "volumes.csv").exists()  # never writes into the prediction folder
    assert "1 case(s) measured" in capsys.readouterr().out


def test_spacing_enters_only_as_product_and_is_per_case(tmp_path):
    """Same voxels, different headers: each case gets its own voxel volume."""
    root = tmp_path / "pred"
    pred_folder(root, {"fine": base_map()}, spacing=(0.5, 0.5, 0.5))
    pred_folder(root, {"coarse": base_map()}, spacing=(2.0, 1.0, 1.5))
    rows, _ = compute_volumes(root, progress=False)
    by = {r["case"]: r for r in rows}
    assert by["fine"]["total_mm3"] == pytest.approx(144 * 0.125, rel=1e-6)
    assert by["coarse"]["total_mm3"] == pytest.approx(144 * 3.0, rel=1e-6)


def test_26_connectivity():
    a = np.zeros((10, 10, 10), np.uint8)
    a[2:4, 2:4, 2:4] = 1
    a[4, 4, 4] = 1  # touches the cube at one corner only: connected with 26-, not 6-connectivity
    row = measure_label_map(a, (1.0, 1.0, 1.0), {"A": 1})
    assert row["A_n_components"] == 1 and row["n_components"] == 1
    a[7, 7, 7] = 1  # two voxels away: a component of its own
    row = measure_label_map(a, (1.0, 1.0, 1.0), {"A": 1})
    assert row["A_n_components"] == 2 and row["n_components"] == 2
    assert row["A_mm3"] == 10


def test_components_per_label_and_whole_structure():
    a = np.zeros((12, 12, 12), np.uint8)
    a[1:3, 1:3, 1:3] = 1
    a[1:3, 1:3, 3:5] = 2  # touches label 1: whole structure is one piece
    a[8:10, 8:10, 8:10] = 2  # a second piece of label 2, far away
    row = measure_label_map(a, (1.0, 2.0, 0.5), {"A": 1, "P": 2})
    assert (row["A_n_components"], row["P_n_components"], row["n_components"]) == (1, 2, 2)
    assert row["P_mm3"] == pytest.approx(16 * 1.0)


def test_small_component_removal_exact(tmp_path):
    a = base_map()
    a[12, 12, 13] = 1  # stray single Anterior voxel: 0.819 mm³
    a[12, 1, 1] = 2
    a[12, 1, 2] = 2  # stray two-voxel Posterior blob: 1.638 mm³
    pred = pred_folder(tmp_path / "pred", {"c1": a})
    digest = hashlib.sha256((pred / "c1.nii.gz").read_bytes()).hexdigest()
    assert main(["volumes", str(pred), "-o", str(tmp_path / "raw.csv"), "--no-progress"]) == 0
    assert main(["volumes", str(pred), "-o", str(tmp_path / "clean.csv"), "--no-progress",
                 "--remove-small-components", "1.0"]) == 0
    raw, clean = read_csv(tmp_path / "raw.csv")["c1"], read_csv(tmp_path / "clean.csv")["c1"]
    assert raw["n_components"] == "3" and "several_components" in raw["flags"]
    # only the 1-voxel component is below 1.0 mm³; the 2-voxel one (1.638 mm³) stays
    assert clean["Anterior_removed_voxels"] == "1" and clean["Posterior_removed_voxels"] == "0"
    assert float(raw["Anterior_mm3"]) - float(clean["Anterior_mm3"]) == pytest.approx(VOXEL, rel=1e-6)
    assert float(raw["total_mm3"]) - float(clean["total_mm3"]) == pytest.approx(float(clean["removed_mm3"]))
    assert float(clean["removed_mm3"]) == pytest.approx(VOXEL, rel=1e-6)
    assert clean["n_components"] == "2"
    side = json.loads((tmp_path / "clean.json").read_text())
    assert side["remove_small_components_mm3"] == 1.0 and "1 mm³" in side["remove_small_components_rule"]
    assert hashlib.sha256((pred / "c1.nii.gz").read_bytes()).hexdigest() == digest  # input untouched
    row = measure_label_map(a, tuple(reversed(SPACING_XYZ)), {"Anterior": 1, "Posterior": 2}, 2.0)
    assert (row["Anterior_removed_voxels"], row["Posterior_removed_voxels"], row["n_components"]) == (1, 2, 1)
    assert row["total_mm3"] == pytest.approx(144 * VOXEL)


def test_flags_empty_absolute_bounds(tmp_path):
    small = np.zeros_like(base_map())
    small[1:3, 1:3, 1:3] = 1  # 8 voxels
    pred = pred_folder(tmp_path / "pred", {"ok": base_map(), "empty": np.zeros_like(base_map()), "small": small})
    rows, summary = compute_volumes(pred, min_volume=50.0, max_volume=100.0, progress=False)
    by = {r["case"]: r for r in rows}
    assert by["empty"]["flags"] == "empty" and by["empty"]["flag_empty"] == 1 and by["empty"]["total_mm3"] == 0
    assert by["small"]["flags"] == "small_abs" and by["small"]["flag_small"] == 1
    assert by["ok"]["flags"] == "large_abs"  # 117.9 mm³ > 100
    assert summary["cohort_rule"]["applied"] is False and "only 2 non-empty" in summary["cohort_rule"]["reason"]
    assert summary["flag_counts"]["empty"] == 1 and set(summary["flagged_cases"]) == {"ok", "empty", "small"}


def test_cohort_rule_hand_computed(tmp_path):
    totals = [100.0, 102, 98, 101, 99, 103, 97, 100, 104, 96, 100, 400]
    b = cohort_bounds(totals + [0.0])  # the empty case is left out of the statistics
    median = 100.0
    mad = float(np.median(np.abs(np.array(totals) - median)))  # deviations 0,2,2,1,1,3,3,0,4,4,0,300 -> 2
    assert b["applied"] and b["n"] == 12 and b["median"] == median and b["mad"] == mad == 2.0
    assert b["low"] == pytest.approx(100 - 3 * 1.4826 * 2) and b["high"] == pytest.approx(100 + 3 * 1.4826 * 2)
    assert cohort_bounds(totals[:9])["applied"] is False  # fewer than 10 cases
    assert cohort_bounds([5.0] * 12)["applied"] is False  # MAD 0

    maps = {}
    for i in range(11):
        a = np.zeros((16, 14, 15), np.uint8)
        a[2:6, 3:8, 4:4 + 5 + i % 3] = 1  # 100, 120 or 140 voxels
        maps[f"c{i:02d}"] = a
    big = np.zeros((16, 14, 15), np.uint8)
    big[1:15, 1:13, 1:14] = 1
    maps["big"] = big
    rows, summary = compute_volumes(pred_folder(tmp_path / "pred", maps), progress=False)
    flagged = {r["case"]: r["flags"] for r in rows if r["flags"]}
    assert flagged == {"big": "large_cohort"}
    assert summary["cohort_rule"]["applied"] and summary["cohort_rule"]["median"] == pytest.approx(120 * VOXEL)


def test_expected_components(tmp_path):
    a = np.zeros((16, 14, 15), np.uint8)
    a[2:5, 2:5, 2:5] = 1
    a[10:13, 2:5, 10:13] = 1  # left + right
    pred = pred_folder(tmp_path / "pred", {"lr": a})
    rows, _ = compute_volumes(pred, progress=False)
    assert rows[0]["flags"] == "several_components"
    rows, _ = compute_volumes(pred, expected_components=2, progress=False)
    assert rows[0]["flags"] == ""


@pytest.mark.parametrize("ending,reader", [(".nii", "NibabelIO"), (".nrrd", "SimpleITKIO"), (".mha", "SimpleITKIO")])
def test_other_nnunet_formats(tmp_path, ending, reader):
    """Other readers of nnU-Net's registry, no dataset.json: ending detected, labels from --labels."""
    pred = pred_folder(tmp_path / "pred", {"c1": base_map()}, dataset_json=False, ending=ending)
    out = tmp_path / "v.csv"
    assert main(["volumes", str(pred), "--labels", "Anterior=1", "Posterior=2", "-o", str(out),
                 "--no-progress"]) == 0
    row = read_csv(out)["c1"]
    assert float(row["total_mm3"]) == pytest.approx(144 * VOXEL, rel=1e-6)  # float32 spacing in the header
    assert float(row["Posterior_mm3"]) == pytest.approx(24 * VOXEL, rel=1e-6)
    assert json.loads(out.with_suffix(".json").read_text())["reader"] == reader


def test_tiff_with_and_without_spacing_file(tmp_path, capsys):
    import tifffile
    pred = tmp_path / "pred"
    pred.mkdir()
    tifffile.imwrite(pred / "c1.tif", base_map())
    out = tmp_path / "v.csv"
    assert main(["volumes", str(pred), "--labels", "A=1", "P=2", "-o", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "c1.tif" in err and "c1.json" in err and not out.exists()
    (pred / "c1.json").write_text(json.dumps({"spacing": [1.3, 0.9, 0.7]}))
    assert main(["volumes", str(pred), "--labels", "A=1", "P=2", "-o", str(out), "--no-progress"]) == 0
    assert float(read_csv(out)["c1"]["total_mm3"]) == pytest.approx(144 * VOXEL)


def test_reader_from_plans_json(tmp_path, capsys):
    """nnUNetv2_predict writes plans.json beside the predictions: its image_reader_writer is used."""
    pred = pred_folder(tmp_path / "pred", {"c1": base_map()})
    (pred / "plans.json").write_text(json.dumps({"image_reader_writer": "NibabelIO"}))
    rows, summary = compute_volumes(pred, progress=False)
    assert summary["reader"] == "NibabelIO" and summary["reader_source"].startswith("plans.json")
    assert rows[0]["total_mm3"] == pytest.approx(144 * VOXEL, rel=1e-6)
    (pred / "plans.json").write_text(json.dumps({"image_reader_writer": "Tiff3DIO"}))
    assert main(["volumes", str(pred), "-o", str(tmp_path / "v.csv")]) == 2
    assert "Tiff3DIO reads .tif, .tiff, not .nii.gz" in capsys.readouterr().err


def test_default_output_is_cwd(tmp_path, monkeypatch):
    pred = pred_folder(tmp_path / "pred", {"c1": base_map()})
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    assert main(["volumes", str(pred), "--no-progress"]) == 0
    assert (work / "volumes.csv").is_file() and (work / "volumes.json").is_file()
    assert sorted(p.name for p in pred.iterdir()) == ["c1.nii.gz", "dataset.json"]


# ------------------------------------------------------------------------------------------------- bad input

def test_refuses_to_overwrite(tmp_path, capsys):
    pred = pred_folder(tmp_path / "pred", {"c1": base_map()})
    out = tmp_path / "v.csv"
    out.write_text("precious\n")
    assert main(["volumes", str(pred), "-o", str(out), "--no-progress"]) == 2
    assert "--overwrite" in capsys.readouterr().err and out.read_text() == "precious\n"
    assert main(["volumes", str(pred), "-o", str(out), "--no-progress", "--overwrite"]) == 0
    assert "c1" in read_csv(out)


def test_empty_folder_and_missing_folder(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["volumes", str(tmp_path / "empty"), "--file-ending", ".nii.gz", "-o", str(tmp_path / "v.csv"),
                 "--no-progress"]) == 2
    assert "no label map ending in .nii.gz" in capsys.readouterr().err
    assert main(["volumes", str(tmp_path / "empty"), "-o", str(tmp_path / "v.csv")]) == 2
    assert "--file-ending" in capsys.readouterr().err
    assert main(["volumes", str(tmp_path / "nope"), "-o", str(tmp_path / "v.csv")]) == 2
    assert "is not a folder" in capsys.readouterr().err
    assert not (tmp_path / "v.csv").exists()


def test_unknown_label_values_list_cases(tmp_path, capsys):
    bad1, bad2 = base_map(), base_map()
    bad1[0, 0, 0] = 3
    bad2[0, 0, 0], bad2[0, 0, 1] = 5, 7
    pred = pred_folder(tmp_path / "pred", {"good": base_map(), "bad1": bad1, "bad2": bad2})
    out = tmp_path / "v.csv"
    assert main(["volumes", str(pred), "-o", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "2 of 3 label map(s)" in err and "bad1: label value(s) [3]" in err and "bad2: label value(s) [5, 7]" in err
    assert "good" not in err and not out.exists()


def test_no_labels_known(tmp_path, capsys):
    pred = pred_folder(tmp_path / "pred", {"c1": base_map()}, dataset_json=False)
    assert main(["volumes", str(pred), "-o", str(tmp_path / "v.csv")]) == 2
    assert "--labels" in capsys.readouterr().err
    assert main(["volumes", str(pred), "--labels", "Anterior:1", "-o", str(tmp_path / "v.csv")]) == 2
    assert "NAME=VALUE" in capsys.readouterr().err
    assert main(["volumes", str(pred), "--labels", "bg=0", "A=1", "-o", str(tmp_path / "v.csv")]) == 2
    assert "0 is background" in capsys.readouterr().err
    assert main(["volumes", str(pred), "--labels", "total=1", "P=2", "-o", str(tmp_path / "v.csv")]) == 2
    assert "clash" in capsys.readouterr().err


def test_region_based_dataset_json(tmp_path, capsys):
    pred = pred_folder(tmp_path / "pred", {"c1": base_map()})
    dj = json.loads((pred / "dataset.json").read_text())
    dj["labels"] = {"background": 0, "whole": [1, 2], "posterior": 2}
    (pred / "dataset.json").write_text(json.dumps(dj))
    assert main(["volumes", str(pred), "-o", str(tmp_path / "v.csv")]) == 2
    assert "region-based" in capsys.readouterr().err


def test_probability_map_is_not_a_label_map(tmp_path, capsys):
    pred = tmp_path / "pred"
    pred_folder(pred, {"c1": base_map()})
    img = sitk.GetImageFromArray(np.full((4, 4, 4), 0.3, np.float32))
    sitk.WriteImage(img, str(pred / "soft.nii.gz"))
    assert main(["volumes", str(pred), "-o", str(tmp_path / "v.csv"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "soft.nii.gz: not a label map" in err


def test_2d_image_is_refused(tmp_path, capsys):
    pred = pred_folder(tmp_path / "pred", {})
    img = sitk.GetImageFromArray(np.ones((8, 8), np.uint8))
    img.SetSpacing((0.5, 0.5))
    sitk.WriteImage(img, str(pred / "flat.nii.gz"))
    assert main(["volumes", str(pred), "-o", str(tmp_path / "v.csv"), "--no-progress"]) == 2
    assert "flat.nii.gz: a 2D image" in capsys.readouterr().err


def test_bad_options(tmp_path, capsys):
    pred = pred_folder(tmp_path / "pred", {"c1": base_map()})
    for extra, needle in ((["--remove-small-components", "0"], "must be > 0"),
                          (["--min-volume", "10", "--max-volume", "5"], "must be below"),
                          (["--expected-components", "0"], ">= 1"),
                          (["--reader", "NoSuchIO"], "NoSuchIO")):
        assert main(["volumes", str(pred), "-o", str(tmp_path / "v.csv"), *extra]) == 2
        assert needle in capsys.readouterr().err
    assert main(["volumes", str(pred), "-o", str(tmp_path / "v.txt")]) == 2
    assert ".csv" in capsys.readouterr().err


def test_cut_short_label_maps_stop_the_command_before_any_output(tmp_path, capsys, hippocampus):
    """A real MSD label map cut at several lengths (compressed stream, and the decompressed voxel data) is named
    and nothing is measured or written; before this check, the reader filled the missing voxels with zeros."""
    import gzip
    real = sorted((hippocampus / "labelsTr").glob("*.nii.gz"))[0]
    data = real.read_bytes()
    pred = pred_folder(tmp_path / "pred", {"case_ok": base_map()})
    cuts = {"case_300": data[:300], "case_half": data[:len(data) // 2], "case_minus1": data[:-1],
            "case_voxels": gzip.compress(gzip.decompress(data)[:-50])}  # a complete stream of too few voxels
    for case, content in cuts.items():
        (pred / f"{case}.nii.gz").write_bytes(content)
    out = tmp_path / "v.csv"
    assert main(["volumes", str(pred), "-o", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"{len(cuts)} of {len(cuts) + 1} label map(s) cannot be measured" in err
    for case in cuts:
        assert f"{case}.nii.gz" in err
    assert "cut short" in err and "Nothing was written" in err and not out.exists()
    (pred / "case_ok2.nii.gz").write_bytes(data)  # the complete file measures
    for case in cuts:
        (pred / f"{case}.nii.gz").unlink()
    assert main(["volumes", str(pred), "-o", str(out), "--no-progress"]) == 0 and out.exists()
