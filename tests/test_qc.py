"""`hippo-peft qc`: overlay pictures (orientation, proportions, structure centres), the page, placeholders, refusals.

The pictures are checked from their pixels: a scene defined in RAS millimetres is written with anisotropic spacing
and with a non-identity direction matrix, and what the picture shows is compared with where the scene puts things.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hippo_peft.analysis import qc_render
from hippo_peft.analysis.qc import run_qc
from hippo_peft.analysis.qc_page import PAGE_BACKGROUND, TILE_COLOURS
from hippo_peft.analysis.qc_render import ALPHA, label_colour, read_volume, render_case
from hippo_peft.cli import main
from hippo_peft.experiments.qc_phantoms import write_qc_phantoms, write_ras

SPACING = (0.7, 1.4, 1.0)  # mm along R, A, S
TURNED = ((2, 0, 1), (True, False, True))  # index axes along S (reversed), R, A (reversed)


def shows(pixel, colour, tol: float = 4.0) -> bool:
    """The pixel is the label colour blended at ALPHA over some grey (the fill), or the colour itself (the outline)."""
    p, c = np.asarray(pixel, float), np.asarray(colour, float)
    if np.abs(p - c).max() <= tol:
        return True
    grey = (p - ALPHA * c) / (1 - ALPHA)
    return grey.min() >= -tol and grey.max() <= 255 + tol and np.ptp(grey) <= 2 * tol


def colour_mask(panel: np.ndarray, colour) -> np.ndarray:
    return np.array([[shows(px, colour) for px in row] for row in panel])


def scene(centres_mm, shape=(90, 40, 56), slabs=True):
    """RAS arrays at SPACING: a grey image, and per centre a 14 mm cube of label 1 with 4 mm slabs on its Right
    (label 2), Anterior (3) and Superior (4) faces."""
    grid = np.meshgrid(*[(np.arange(n) + 0.5) * s for n, s in zip(shape, SPACING)], indexing="ij")
    labels = np.zeros(shape, np.uint8)
    for c in centres_mm:
        d = [g - ci for g, ci in zip(grid, c)]
        inside = [np.abs(x) < 7 for x in d]
        labels[inside[0] & inside[1] & inside[2]] = 1
        if slabs:
            for label, axis in ((2, 0), (3, 1), (4, 2)):
                others = [inside[a] for a in range(3) if a != axis]
                labels[(d[axis] >= 7) & (d[axis] < 11) & others[0] & others[1]] = label
    image = (100 + 20 * np.sin(grid[0] / 9) + 10 * np.cos(grid[2] / 7)).astype(np.float32)
    return image, labels


def render(tmp_path, image, labels, orientation=((0, 1, 2), (False, False, False)), **kw):
    axes, flips = orientation
    tag = "".join(map(str, axes)) + "".join("f" if f else "-" for f in flips)
    img = read_volume(write_ras(tmp_path / f"img{tag}.nii.gz", image, SPACING, axes, flips))
    lab = read_volume(write_ras(tmp_path / f"lab{tag}.nii.gz", labels, SPACING, axes, flips))
    values = sorted(int(v) for v in np.unique(labels) if v)
    pic = render_case(img, lab, values, [f"L{v}" for v in values], "case", ["line"], **kw)
    return np.asarray(pic.image), pic.panels


def crop(pixels, box):
    x0, y0, x1, y1 = box
    return pixels[y0:y1, x0:x1]


@pytest.mark.parametrize("orientation", [((0, 1, 2), (False, False, False)), TURNED], ids=["identity", "turned"])
def test_overlay_orientation_proportions_and_centre(tmp_path, orientation):
    image, labels = scene([(31.5, 28.0, 28.0)])
    pixels, panels = render(tmp_path, image, labels, orientation)
    assert [p["view"] for p in panels] == ["axial", "coronal", "sagittal"]
    side = {"axial": {2: "right", 3: "top"}, "coronal": {2: "right", 4: "top"}, "sagittal": {3: "left", 4: "top"}}
    for p in panels:
        panel = crop(pixels, p["box"])
        h, w = panel.shape[:2]
        cy, cx = h // 2, w // 2
        assert shows(panel[cy, cx], label_colour(0)), (p["view"], panel[cy, cx])  # the structure's centre
        core = colour_mask(panel, label_colour(0))
        rows, cols = np.nonzero(core)
        height, width = np.ptp(rows) + 1, np.ptp(cols) + 1
        assert abs(height - width) <= max(2, 0.06 * width), (p["view"], height, width)  # 14 x 14 mm is square
        for label, where in side[p["view"]].items():
            r, c = np.nonzero(colour_mask(panel, label_colour(label - 1)))
            assert r.size > 20, (p["view"], label)
            if where == "right":
                assert c.mean() > cx + 0.2 * width, (p["view"], label, c.mean(), cx)
            elif where == "left":
                assert c.mean() < cx - 0.2 * width, (p["view"], label, c.mean(), cx)
            else:
                assert r.mean() < cy - 0.2 * height, (p["view"], label, r.mean(), cy)
        shown = {lab for lab in (2, 3, 4) if colour_mask(panel, label_colour(lab - 1)).sum() > 20}
        assert shown == set(side[p["view"]]), (p["view"], shown)  # the third slab is outside this slice


def test_written_headers_say_what_the_scene_means(tmp_path):
    """write_ras (which the picture tests rely on) checked against nibabel's own reading of the header."""
    import nibabel as nib  # nnU-Net's dependency
    from nibabel.orientations import aff2axcodes
    image, labels = scene([(31.5, 28.0, 28.0)])
    plain = nib.load(str(write_ras(tmp_path / "plain.nii.gz", labels, SPACING)))
    assert aff2axcodes(plain.affine) == ("R", "A", "S") and plain.header.get_zooms() == pytest.approx(SPACING)
    turned = nib.load(str(write_ras(tmp_path / "turned.nii.gz", labels, SPACING, *TURNED)))
    assert aff2axcodes(turned.affine) == ("I", "R", "P")  # index axes along S reversed, R, A reversed
    # the slab on the Right face (label 2) lies at larger world x than the cube's centre, in both files
    for img in (plain, turned):
        ijk = np.argwhere(np.asarray(img.dataobj) == 2)
        world = nib.affines.apply_affine(img.affine, ijk)
        core = nib.affines.apply_affine(img.affine, np.argwhere(np.asarray(img.dataobj) == 1))
        assert world[:, 0].mean() > core[:, 0].mean() + 5


def test_direction_matrix_does_not_change_the_picture(tmp_path):
    image, labels = scene([(31.5, 28.0, 28.0)])
    a, panels_a = render(tmp_path, image, labels)
    b, panels_b = render(tmp_path, image, labels, TURNED)
    assert [p["box"] for p in panels_a] == [p["box"] for p in panels_b]
    assert np.mean(np.abs(a.astype(int) - b.astype(int)) > 8) < 0.01


def test_both_structures_of_a_two_hippocampus_map(tmp_path):
    image, labels = scene([(14.0, 28.0, 28.0), (49.0, 28.0, 28.0)], slabs=False)
    pixels, panels = render(tmp_path, image, labels, TURNED)
    assert sorted({p["structure"] for p in panels}) == [0, 1]
    for p in panels:
        panel = crop(pixels, p["box"])
        assert shows(panel[panel.shape[0] // 2, panel.shape[1] // 2], label_colour(0)), p
    # the two rows are at different heights: one row per structure
    assert panels[0]["box"][1] != panels[3]["box"][1]


def test_reference_is_drawn_beside_the_prediction(tmp_path):
    image, labels = scene([(31.5, 28.0, 28.0)], slabs=False)
    img = read_volume(write_ras(tmp_path / "i.nii.gz", image, SPACING))
    lab = read_volume(write_ras(tmp_path / "l.nii.gz", labels, SPACING))
    pic = render_case(img, lab, [1], ["L1"], "case", [], reference=lab)
    assert [p["kind"] for p in pic.panels] == ["prediction"] * 3 + ["reference"] * 3
    assert pic.panels[3]["box"][0] > pic.panels[2]["box"][2]


def test_oblique_direction_goes_to_the_nearest_axes():
    theta = np.radians(20)
    rot = np.array([[np.cos(theta), -np.sin(theta), 0], [np.sin(theta), np.cos(theta), 0], [0, 0, 1]])
    vol = qc_render.to_ras(np.zeros((4, 5, 6)), (1.0, 2.0, 3.0), (np.diag([-1.0, -1.0, 1.0]) @ rot).ravel())
    assert vol.array.shape == (4, 5, 6) and vol.spacing == (1.0, 2.0, 3.0)
    assert vol.oblique_deg == pytest.approx(20, abs=0.01)


# ---- the command ------------------------------------------------------------------------------------------------

@pytest.fixture
def phantoms(tmp_path):
    return write_qc_phantoms(tmp_path / "data", n_cases=6)


def qc_json(folder: Path) -> dict:
    return json.loads((folder / "qc.json").read_text())


def test_page_lists_every_case_flagged_first_with_placeholders(phantoms, tmp_path, capsys):
    out = tmp_path / "qc"
    assert main(["qc", str(phantoms["pred"]), "--images", str(phantoms["images"]), "-o", str(out),
                 "--processes", "1", "--no-progress"]) == 1  # two cases could not be drawn
    cases = qc_json(out)["cases"]
    order = [c["case"] for c in cases]
    assert sorted(order) == [f"phantom_{i:03d}" for i in range(6)]
    assert order[:2] == ["phantom_002", "phantom_004"]  # placeholders first
    assert "empty" in cases[0]["placeholder"] and "voxel grid differs" in cases[1]["placeholder"]
    assert order[2] == "phantom_001" and cases[2]["flags"] == ["several_components"]
    page = (out / "index.html").read_text()
    assert re.findall(r'<figure class="tile (\w+)" data-case="([^"]+)"', page) == \
        [("placeholder", "phantom_002"), ("placeholder", "phantom_004"), ("flagged", "phantom_001")] + \
        [("ok", c) for c in order[3:]]
    assert not re.search(r'(src|href)="(https?:)?//', page)  # nothing from elsewhere
    assert sorted(p.name for p in (out / "cases").iterdir()) == [f"{c}.png" for c in sorted(order)]
    printed = capsys.readouterr().out
    assert "NOT DRAWN phantom_002" in printed and "NOT DRAWN phantom_004" in printed


def test_reference_orders_by_dice_and_volumes_csv_gives_the_flags(phantoms, tmp_path):
    csv = tmp_path / "volumes.csv"
    assert main(["volumes", str(phantoms["pred"]), "-o", str(csv), "--min-volume", "800", "--no-progress"]) == 0
    out = tmp_path / "qc"
    assert main(["qc", str(phantoms["pred"]), "--images", str(phantoms["images"]), "-o", str(out), "--reference",
                 str(phantoms["ref"]), "--volumes", str(csv), "--processes", "1", "--no-progress"]) == 1
    cases = qc_json(out)["cases"]
    drawn = [c for c in cases if not c["placeholder"]]
    dices = [c["mean_dice"] for c in drawn]
    assert dices == sorted(dices) and all(0 <= d <= 1 for d in dices)
    import pandas as pd
    table = pd.read_csv(csv, dtype=str, keep_default_na=False).set_index("case")
    for c in cases:
        assert ";".join(c["flags"]) == table.loc[c["case"], "flags"]
    assert any("small_abs" in c["flags"] for c in cases)  # a flag only the CSV's thresholds give


def test_only_flagged_draws_flagged_cases_and_lists_the_rest(phantoms, tmp_path):
    out = tmp_path / "qc"
    run_qc(phantoms["pred"], phantoms["images"], out, only_flagged=True, processes=1, progress=False)
    assert sorted(p.stem for p in (out / "cases").iterdir()) == ["phantom_001", "phantom_002", "phantom_004"]
    page = (out / "index.html").read_text()
    assert all(f'data-case="phantom_{i:03d}"' in page for i in range(6))


def test_parallel_run_matches_serial(phantoms, tmp_path):
    a = run_qc(phantoms["pred"], phantoms["images"], tmp_path / "a", processes=1, progress=False)
    b = run_qc(phantoms["pred"], phantoms["images"], tmp_path / "b", processes=2, progress=False)
    assert a["placeholders"] == b["placeholders"] and a["flagged"] == b["flagged"]
    for png in (tmp_path / "a" / "cases").iterdir():
        assert np.array_equal(np.asarray(Image.open(png)), np.asarray(Image.open(tmp_path / "b" / "cases" / png.name)))


def _refused(capsys, argv) -> str:
    assert main(argv) == 2
    return capsys.readouterr().err


def test_refusals_name_every_offender_and_write_nothing(phantoms, tmp_path, capsys):
    pred, images = phantoms["pred"], phantoms["images"]
    out = tmp_path / "qc"
    base = ["qc", str(pred), "--images", str(images), "-o", str(out), "--processes", "1", "--no-progress"]
    # missing images
    moved = tmp_path / "moved"
    moved.mkdir()
    for case in ("phantom_000", "phantom_003"):
        shutil.move(images / f"{case}_0000.nii.gz", moved)
    err = _refused(capsys, base)
    assert "phantom_000" in err and "phantom_003" in err and "2 file(s) missing" in err
    for f in moved.iterdir():
        shutil.move(f, images)
    # an unreadable prediction and an unreadable image
    keep = tmp_path / "keep"
    keep.mkdir()
    for f in (pred / "phantom_001.nii.gz", images / "phantom_005_0000.nii.gz"):
        shutil.copy(f, keep)
        f.write_bytes(f.read_bytes()[: len(f.read_bytes()) // 2])
    err = _refused(capsys, base)
    assert "phantom_001" in err and "phantom_005_0000.nii.gz" in err
    for f in keep.iterdir():
        shutil.copy(f, pred if not f.name.endswith("_0000.nii.gz") else images)
    # label values outside the list
    err = _refused(capsys, base + ["--labels", "Anterior=1"])
    assert "[2]" in err and err.count("holds label value(s)") >= 4
    assert not out.exists()
    # output inside the prediction folder; an existing folder without --overwrite
    err = _refused(capsys, base[:4] + ["-o", str(pred / "qc")] + base[6:])
    assert "inside the prediction folder" in err and not (pred / "qc").exists()
    for inside, named in ((images, "--images"), (images.parent, "prediction folder")):  # even with --overwrite
        err = _refused(capsys, base[:4] + ["-o", str(inside), "--overwrite"] + base[6:])
        assert named in err and "would be, contain or lie inside" in err and len(list(images.iterdir())) == 6
    out.mkdir()  # an empty folder is fine
    assert main(base) == 1 and (out / "index.html").is_file()
    shutil.rmtree(out)
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    err = _refused(capsys, base)
    assert "--overwrite" in err and (out / "mine.txt").read_text() == "keep me"
    err = _refused(capsys, base + ["--overwrite"])  # not a folder qc wrote: kept
    assert "qc.json" in err and (out / "mine.txt").read_text() == "keep me"
    (out / "mine.txt").unlink()
    assert main(base) == 1
    assert main(base + ["--overwrite"]) == 1 and (out / "qc.json").is_file()  # a folder qc wrote is replaced
    # a volumes CSV of another folder
    csv = tmp_path / "v.csv"
    csv.write_text("case,flags,total_mm3\nphantom_000,,1\nother,,2\n")
    err = _refused(capsys, base[:4] + ["-o", str(tmp_path / "qc2"), "--volumes", str(csv)] + base[6:])
    assert "other" in err and "phantom_001" in err


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.mark.e2e
def test_page_in_a_real_browser(phantoms, tmp_path):
    browser = _chromium()
    if browser is None:
        message = "headless Chromium not found (Debian: apt-get install chromium; .ci/run installs it)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    out = tmp_path / "qc"
    run_qc(phantoms["pred"], phantoms["images"], out, reference_dir=phantoms["ref"], processes=1, progress=False)
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars",
             f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1400,1000"]
    url = (out / "index.html").as_uri()
    shot = tmp_path / "shot.png"
    subprocess.run([browser, *flags, f"--screenshot={shot}", url], capture_output=True, timeout=120, check=True)
    dom = subprocess.run([browser, *flags, "--dump-dom", url], capture_output=True, text=True, timeout=120,
                         check=True).stdout
    assert sorted(set(re.findall(r'data-case="([^"]+)"', dom))) == [f"phantom_{i:03d}" for i in range(6)]
    pixels = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    from scipy import ndimage
    tiles = 0
    for hex_colour in TILE_COLOURS.values():
        rgb = np.array([int(hex_colour[i:i + 2], 16) for i in (1, 3, 5)])
        mask = np.abs(pixels - rgb).max(axis=2) <= 2
        labelled, n = ndimage.label(mask)
        sizes = np.bincount(labelled.ravel())[1:]
        tiles += int((sizes > 2000).sum())  # a tile's frame, not a stray pixel of that colour
    assert tiles == 6
    assert PAGE_BACKGROUND == "#ffffff" and (pixels == 255).all(axis=2).mean() > 0.2


def test_benchmark_page_draws_each_methods_worst_and_best_case(phantoms, tmp_path):
    from hippo_peft.experiments.benchmark_qc import TARGET_NAME, write_benchmark_qc
    from hippo_peft.experiments.pipeline import fold_folder
    root = tmp_path / "bench"
    raw = root / "nnunet" / "nnUNet_raw" / TARGET_NAME
    shutil.copytree(phantoms["images"], raw / "imagesTr")
    shutil.copytree(phantoms["ref"], raw / "labelsTr")
    shutil.copy(phantoms["pred"] / "dataset.json", raw / "dataset.json")
    cases = ["phantom_000", "phantom_003", "phantom_005"]
    records = []
    for run, method, dices in (("unetr-lorapt-k2-d0-500it", "lorapt", (0.9, 0.2, 0.5)),
                               ("unetr-lorapt-k2-d1-500it", "lorapt", (0.95, 0.6, 0.7)),
                               ("nnunet-k2-d0-500it", "nnunet", (0.4, 0.8, 0.6))):
        rec = {"run": run, "arch": None if method == "nnunet" else "unetr", "method": method, "method_token": method,
               "trainer": f"T_{run}", "plans": "P", "fold": 0, "regions": {"Anterior": [1], "Posterior": [2]},
               "per_case": {c: {"Anterior": {"dice": d}, "Posterior": {"dice": d}} for c, d in zip(cases, dices)}}
        validation = fold_folder(root / "nnunet" / "nnUNet_results", TARGET_NAME, rec["trainer"], "P", 0) / "validation"
        shutil.copytree(phantoms["ref"], validation)
        records.append(rec)
    index = write_benchmark_qc(root, records, root / "report", progress=False)
    page = index.read_text()
    headings = re.findall(r"<h2>([^<]+)</h2>", page)
    assert len(headings) == 2 and "over 2 run(s)" in [h for h in headings if "lorapt" in h][0]
    tiles = re.findall(r'data-case="([^"]+)"', page)
    assert tiles == ["phantom_000 (worst, nnunet-k2-d0-500it)", "phantom_003 (best, nnunet-k2-d0-500it)",
                     "phantom_003 (worst, unetr-lorapt-k2-d0-500it)", "phantom_000 (best, unetr-lorapt-k2-d1-500it)"]
    assert len(list((root / "report" / "qc" / "cases").iterdir())) == 4
