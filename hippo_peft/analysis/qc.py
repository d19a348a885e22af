"""``hippo-peft qc``: look before you measure -- one overlay picture per predicted label map and one page of them.

For each label map in PRED_DIR (the ``-o`` folder of ``nnUNetv2_predict``) and its image (``IMAGES_DIR/<case>_0000``
plus the file ending, nnU-Net's naming; ``--channel`` picks another channel): three orthogonal slices through the
centre of each connected structure, the label overlay in one colour per label, in RAS orientation and physical
proportions (see :mod:`hippo_peft.analysis.qc_render`). ``QC_DIR/index.html`` shows every case as a thumbnail,
cases that could not be drawn first, then flagged cases, each with its volumes and flags; with ``--reference`` the
reference is drawn beside the prediction and the cases are ordered by Dice, worst first. The page is one file with
its thumbnails inside (no external address); a click opens the full picture in ``QC_DIR/cases/``.

Flags are those of ``hippo-peft volumes`` (``--volumes volumes.csv``), or computed the same way when not given.

Refused before any picture is made (exit 2, every offender named): a missing image or reference, an unreadable file,
label values outside the label list. Drawn as a placeholder that states the reason (the run goes on, exit 1 at the
end): an empty prediction, a prediction whose voxel grid differs from its image's (or the reference's).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from hippo_peft.analysis.label_maps import resolve_inputs
from hippo_peft.analysis.text import line_listing, listing
from hippo_peft.analysis.volumes import flag_rows, measure_label_map
from hippo_peft.errors import InputError, MissingInputError, OutputExistsError

SITK_ENDINGS = (".nii.gz", ".nii", ".nrrd", ".mha")  # nnU-Net's readers and SimpleITK both read these


def _find(folder: Path, case: str, ending: str, channel: int | None) -> Path | None:
    """``<case>_<channel:04d><ending>`` (nnU-Net's image naming), or ``<case><ending>`` for channel 0 (a folder of
    single-channel images) and for references (``channel`` None)."""
    names = ([f"{case}_{channel:04d}{ending}"] if channel is not None else []) + \
        ([f"{case}{ending}"] if not channel else [])
    return next((folder / n for n in names if (folder / n).is_file()), None)


def check_output(output: Path, pred_dir: Path, overwrite: bool, keep: dict[str, Path | None] | None = None) -> None:
    """Refuse an output folder that is, holds or lies inside any input (``pred_dir`` and ``keep``: images,
    references, the volumes CSV), or that exists and is not empty without ``overwrite``; with ``overwrite`` only a
    folder ``qc`` made (it holds ``qc.json``) is replaced."""
    out = output.resolve()
    for flag, path in {"the prediction folder": pred_dir, **(keep or {})}.items():
        if path is None:
            continue
        p = Path(path).resolve()
        if out == p or p in out.parents or out in p.parents:
            raise InputError(f"-o {output} would be, contain or lie inside {flag} ({path}); "
                             f"choose a QC folder apart from every input.")
    if output.exists() and not output.is_dir():
        raise OutputExistsError(f"-o {output} is a file; give a folder.")
    if output.is_dir() and any(output.iterdir()):
        if not overwrite:
            raise OutputExistsError(f"{output} exists and is not empty; pass --overwrite to replace it (the old folder "
                                    f"is removed only once the new one is complete), or choose another -o.")
        if not (output / "qc.json").is_file():
            raise OutputExistsError(f"{output} is not a folder `hippo-peft qc` wrote (no qc.json in it): --overwrite "
                                    f"replaces only those. Choose another -o.")


def _volumes_table(path: Path, cases: list[str]) -> dict[str, dict]:
    """Rows of a ``hippo-peft volumes`` CSV by case; its cases must be exactly the prediction folder's."""
    import pandas as pd
    if not path.is_file():
        raise MissingInputError(f"--volumes {path}: no such file; write it with `hippo-peft volumes PRED_DIR -o "
                                f"{path.name}` or leave --volumes out (the flags are then computed here).")
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing_cols = [c for c in ("case", "flags", "total_mm3") if c not in table.columns]
    if missing_cols:
        raise InputError(f"--volumes {path}: column(s) {', '.join(missing_cols)} missing; give a CSV written by "
                         f"`hippo-peft volumes`.")
    dup = sorted(table["case"][table["case"].duplicated()].unique())
    if dup:
        raise InputError(f"--volumes {path}: case(s) listed twice: {listing(dup)}")
    have, want = set(table["case"]), set(cases)
    if have != want:
        raise InputError(f"--volumes {path} does not describe this prediction folder: not in the CSV: "
                         f"{listing(sorted(want - have)) or 'none'}; not in the folder: "
                         f"{listing(sorted(have - want)) or 'none'}. Run `hippo-peft volumes` on this folder.")
    volume_cols = [c for c in table.columns if c.endswith("_mm3") and c not in ("voxel_volume_mm3",)]
    out = {}
    for rec in table.to_dict("records"):
        out[rec["case"]] = {"flags": rec["flags"], **{c: float(rec[c]) for c in volume_cols if rec[c] != ""}}
    return out


def _inspect(job: dict) -> dict:
    """Pass 1 for one case: read everything, check it, measure it. Returns problems (refusals) or the facts."""
    from hippo_peft.analysis import qc_render
    from hippo_peft.analysis.metrics import dice, label_regions
    from hippo_peft.image_check import check_complete
    case, labels = job["case"], job["labels"]
    out = {"problems": [], "placeholder": None, "row": None, "dice": None}
    arrays, geoms = {}, {}
    for what in ("pred", "image", "ref"):
        path = job.get(what)
        if path is None:
            continue
        try:
            check_complete(path)
            geoms[what] = qc_render.header_geometry(path)
            if what != "image":
                arrays[what] = qc_render.read_volume(path)
            elif not str(path).endswith((".nii", ".nii.gz")):  # check_complete checked NIfTI's data; read the rest
                qc_render.read_volume(path)
        except ValueError as e:
            out["problems"].append(f"{case}: {e}")
    if out["problems"]:
        return out
    for what, vol in arrays.items():
        a = vol.array
        if not np.all(np.isfinite(a)) or np.any(a != np.round(a)) or a.min() < 0:
            out["problems"].append(f"{case}: {Path(job[what]).name} is not a label map (non-integer or negative "
                                   f"values)")
            continue
        if a.max() > max(labels.values()):  # np.bincount would allocate up to the largest value
            present = set(np.unique(a).astype(np.int64).tolist()) - {0}
        else:
            present = set(np.flatnonzero(np.bincount(a.astype(np.int64).ravel())).tolist()) - {0}
        unknown = sorted(present - set(labels.values()))
        if unknown:
            out["problems"].append(f"{case}: {Path(job[what]).name} holds label value(s) {unknown}, not in the "
                                   f"label list {labels}")
    if out["problems"]:
        return out
    pred = arrays["pred"]
    out["row"] = measure_label_map(pred.array.astype(np.int64), pred.spacing, labels)
    for what, name in (("image", "its image"), ("ref", "its reference")):
        if what in geoms and out["placeholder"] is None:
            diff = qc_render.geometry_difference(geoms["pred"], geoms[what])
            if diff:
                out["placeholder"] = f"the prediction's voxel grid differs from {name}: {diff}"
    if out["placeholder"] is None and not (pred.array > 0).any():
        out["placeholder"] = "empty prediction: no foreground voxel"
    if "ref" in arrays and out["placeholder"] is None:
        ref = arrays["ref"].array
        out["dice"] = {name: dice(np.isin(ref, v), np.isin(pred.array, v)) for name, v in label_regions(labels).items()}
    return out


def _draw(job: dict) -> dict:
    """Pass 2 for one case: the picture (or placeholder) as PNG and its thumbnail."""
    from hippo_peft.analysis import qc_render
    if job["placeholder"]:
        image = qc_render.placeholder(job["case"], job["placeholder"])
        panels = []
    else:
        ref = qc_render.read_volume(job["ref"]) if job.get("ref") else None
        picture = qc_render.render_case(
            qc_render.read_volume(job["image"]), qc_render.read_volume(job["pred"]), list(job["labels"].values()),
            list(job["labels"]), job["case"], job["lines"], ref, job["max_structures"], job["margin_mm"])
        image, panels = picture.image, picture.panels
    image.save(job["png"], optimize=False)
    return {"key": job["key"], "thumb": qc_render.thumbnail_data_uri(image), "size": image.size, "panels": panels}


def _map(fn, jobs: list[dict], processes: int, desc: str, progress: bool) -> list[dict]:
    from tqdm import tqdm
    bar = dict(desc=desc, unit="case", total=len(jobs), disable=not progress, file=sys.stderr, mininterval=0.5)
    if processes <= 1 or len(jobs) < 4:
        return [fn(j) for j in tqdm(jobs, **bar)]
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    with ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn")) as pool:
        return list(tqdm(pool.map(fn, jobs, chunksize=max(1, min(16, len(jobs) // (4 * processes)))), **bar))


def _fmt(v: float) -> str:
    return "nan" if v != v else f"{v:.0f}" if abs(v) >= 100 else f"{v:.3g}"


def draw_cases(jobs: list[dict], labels: dict[str, int], output: Path, settings: dict, title: str,
               table: dict[str, dict] | None = None, overwrite: bool = False, only_flagged: bool = False,
               expected_components: int = 1, max_structures: int = 2, margin_mm: float = 10.0,
               processes: int | None = None, progress: bool = True,
               sections: list[tuple[str, list[str]]] | None = None, start: float | None = None) -> dict:
    """Read and check every case, then draw them and write the page (the part ``qc`` and ``benchmark`` share).

    Args:
        jobs: one dict per tile: ``key`` (unique; the picture's file name), ``case`` (shown), ``pred``, ``image``,
            ``ref`` (path or None).
        labels: ``{name: value}`` of the foreground labels.
        output: the QC folder (checked by the caller), written atomically.
        settings: recorded in the page and ``qc.json``.
        title: the page's heading.
        table: flags and volumes by key (a ``volumes`` CSV); default: computed as ``volumes`` does.
        sections: headings with their keys, in order (default: one grid in the page order).
        start: ``time.perf_counter()`` when the command started (the page says how long it took).
        (other arguments: see :func:`run_qc`)

    Raises:
        ValueError: unreadable files or label values outside ``labels``, every offender named, before anything
            is drawn.
    """
    start = time.perf_counter() if start is None else start
    processes = processes or min(8, os.cpu_count() or 1)
    jobs = [{**j, "labels": labels} for j in jobs]
    facts = _map(_inspect, jobs, processes, "qc: reading", progress)
    problems = [p for f in facts for p in f["problems"]]
    if problems:
        raise InputError(f"{len(problems)} problem(s) in {sum(bool(f['problems']) for f in facts)} case(s); nothing "
                         f"was drawn:\n  {line_listing(problems)}\nFix the files, or give the label list with --labels "
                         f"NAME=VALUE ...")
    rows = [{"case": j["key"], **f["row"]} for j, f in zip(jobs, facts)]
    if table is None:
        flag_rows(rows, expected_components=expected_components)
        table = {r["case"]: {k: v for k, v in r.items() if k == "flags" or
                             (k.endswith("_mm3") and k != "voxel_volume_mm3")} for r in rows}
    entries = []
    for job, f in zip(jobs, facts):
        shown = table[job["key"]]
        flags = [x for x in shown["flags"].split(";") if x]
        vols = {k[:-4]: v for k, v in shown.items() if k.endswith("_mm3")}
        mean_dice = None
        if f["dice"] is not None:
            singles = [f["dice"][n] for n in labels if f["dice"][n] == f["dice"][n]]
            mean_dice = float(np.mean(singles)) if singles else float("nan")
        lines = [("flags: " + ", ".join(flags)) if flags else "no flags",
                 "volumes (mm3): " + ", ".join(f"{k} {_fmt(v)}" for k, v in vols.items())]
        if f["dice"] is not None:
            lines.append("Dice: " + ", ".join(f"{k} {v:.3f}" for k, v in f["dice"].items())
                         + f"; mean {mean_dice:.3f}")
        entries.append({"key": job["key"], "case": job["case"], "flags": flags, "volumes": vols, "dice": f["dice"],
                        "mean_dice": mean_dice, "placeholder": f["placeholder"], "lines": lines, "job": job})
    from hippo_peft.analysis import qc_page
    from hippo_peft.atomic import atomic_dir
    to_draw = [e for e in entries if e["placeholder"] or e["flags"] or not only_flagged]
    # an existing folder here is empty or one qc wrote (check_output), so replacing it loses nothing of the user's
    with atomic_dir(output, overwrite=overwrite or output.is_dir()) as tmp:
        (tmp / "cases").mkdir()
        draw_jobs = [{**e["job"], "placeholder": e["placeholder"], "lines": e["lines"],
                      "png": str(tmp / "cases" / f"{e['key']}.png"), "max_structures": max_structures,
                      "margin_mm": margin_mm} for e in to_draw]
        drawn = {d["key"]: d for d in _map(_draw, draw_jobs, processes, "qc: drawing", progress)}
        for e in entries:
            d = drawn.get(e["key"])
            e["thumb"], e["href"] = (d["thumb"], f"cases/{e['key']}.png") if d else (None, None)
        by_key = {e["key"]: e for e in entries}
        groups = [(heading, [by_key[k] for k in keys]) for heading, keys in sections] if sections else None
        seconds = time.perf_counter() - start
        qc_page.write_index(tmp / "index.html", entries, settings, title, seconds, groups)
        (tmp / "qc.json").write_text(encoding="utf-8", data=json.dumps({
            "settings": settings, "seconds": round(seconds, 1),
            "cases": [{k: e[k] for k in ("key", "case", "flags", "volumes", "dice", "mean_dice", "placeholder",
                                         "href")} for e in qc_page.order(entries)]}, indent=2, ensure_ascii=False)
            + "\n")
    return {"index": output / "index.html", "cases": len(entries), "drawn": len(drawn),
            "placeholders": {e["key"]: e["placeholder"] for e in entries if e["placeholder"]},
            "flagged": [e["key"] for e in entries if e["flags"]], "seconds": time.perf_counter() - start}


def run_qc(pred_dir: str | Path, images_dir: str | Path, output: str | Path = "qc", volumes_csv: str | None = None,
           only_flagged: bool = False, reference_dir: str | Path | None = None, channel: int = 0,
           labels: list[str] | None = None, file_ending: str | None = None, overwrite: bool = False,
           expected_components: int = 1, max_structures: int = 2, margin_mm: float = 10.0,
           processes: int | None = None, progress: bool = True, title: str | None = None) -> dict:
    """Draw every case of ``pred_dir`` and write ``output/index.html``.

    Args:
        pred_dir: label maps (``dataset.json`` there names labels and file ending, else ``labels`` / ``file_ending``).
        images_dir: the images the predictions were made from (``<case>_<channel:04d><ending>`` or
            ``<case><ending>``).
        output: QC folder to write (new or empty, or replaced with ``overwrite``; never inside ``pred_dir``).
        volumes_csv: a ``hippo-peft volumes`` CSV of ``pred_dir`` whose flags and volumes are shown.
        only_flagged: draw only flagged cases and placeholders; the page still lists every case.
        reference_dir: reference label maps (``<case><ending>``): drawn beside the prediction, Dice per case.
        channel: image channel to draw.
        labels: ``NAME=VALUE`` items (default: ``pred_dir/dataset.json``).
        file_ending: e.g. ``.nii.gz`` (default: from ``dataset.json`` or the folder).
        overwrite: replace an existing, non-empty ``output``.
        expected_components: as ``volumes --expected-components`` (2 for maps with both hippocampi).
        max_structures: connected structures drawn per case, largest first.
        margin_mm: margin around each structure.
        processes: worker processes (default: the CPU count, at most 8).
        progress: show progress bars.
        title: the page's heading (default: the prediction folder).

    Returns:
        dict with ``index`` (path), ``cases``, ``drawn``, ``placeholders`` ({case: reason}), ``flagged``,
        ``seconds``.

    Raises:
        FileNotFoundError, ValueError, FileExistsError: bad input, before anything is written.
    """
    start = time.perf_counter()
    pred_dir, images_dir, output = Path(pred_dir), Path(images_dir), Path(output)
    if channel < 0:
        raise InputError(f"--channel {channel}: give a channel number >= 0 (nnU-Net's _0000 is 0).")
    if max_structures < 1 or not margin_mm >= 0:
        raise InputError("--max-structures must be >= 1 and --margin >= 0 mm.")
    found = resolve_inputs(pred_dir, file_ending, labels, reader=None)
    ending = found["file_ending"]
    if ending.lower() not in SITK_ENDINGS:
        raise InputError(f"qc reads images with SimpleITK to know their orientation; {ending} is not one of "
                         f"{', '.join(SITK_ENDINGS)}. Convert the files (e.g. to .nii.gz) first.")
    for folder, flag in ((images_dir, "--images"), (reference_dir, "--reference")):
        if folder is not None and not Path(folder).is_dir():
            raise MissingInputError(f"{flag} {folder} is not a folder.")
    check_output(output, pred_dir, overwrite, {"--images": images_dir, "--reference": reference_dir,
                                               "--volumes": Path(volumes_csv) if volumes_csv else None})
    table = _volumes_table(Path(volumes_csv), [c for c, _ in found["cases"]]) if volumes_csv else None
    jobs, missing = [], []
    for case, path in found["cases"]:
        image = _find(images_dir, case, ending, channel)
        ref = _find(Path(reference_dir), case, ending, None) if reference_dir else None
        if image is None:
            also = f" (or {case}{ending})" if channel == 0 else ""
            missing.append(f"{case}: no {case}_{channel:04d}{ending}{also} in {images_dir}")
        if reference_dir and ref is None:
            missing.append(f"{case}: no reference {case}{ending} in {reference_dir}")
        jobs.append({"key": case, "case": case, "pred": str(path), "image": str(image) if image else None,
                     "ref": str(ref) if ref else None})
    if missing:
        raise MissingInputError(f"{len(missing)} file(s) missing; nothing was drawn:\n  {line_listing(missing)}")
    settings = {"pred_dir": str(pred_dir.resolve()), "images_dir": str(images_dir.resolve()),
                "reference_dir": str(Path(reference_dir).resolve()) if reference_dir else None,
                "channel": channel, "labels": found["labels"], "labels_source": found["labels_source"],
                "flags_source": str(Path(volumes_csv).resolve()) if volumes_csv else
                f"computed as `hippo-peft volumes` does (--expected-components {expected_components})",
                "only_flagged": only_flagged, "max_structures": max_structures, "margin_mm": margin_mm}
    return draw_cases(jobs, found["labels"], output, settings, title or str(pred_dir), table, overwrite,
                      only_flagged, expected_components, max_structures, margin_mm, processes, progress,
                      start=start)


def _cmd_qc(args) -> int:
    result = run_qc(args.pred_dir, args.images, args.output, args.volumes, args.only_flagged, args.reference,
                    args.channel, args.labels, args.file_ending, args.overwrite, args.expected_components,
                    args.max_structures, args.margin, args.processes, progress=not args.no_progress)
    print(f"{result['cases']} case(s), {result['drawn']} drawn, {len(result['flagged'])} flagged, "
          f"{len(result['placeholders'])} not drawable, in {result['seconds']:.1f} s")
    for case, reason in result["placeholders"].items():
        print(f"  NOT DRAWN {case}: {reason}")
    print(f"open {result['index']}")
    return 1 if result["placeholders"] else 0


def register(subparsers) -> None:
    """Add the ``qc`` subcommand to hippo-peft's argparse subparsers."""
    description = (
        "Look before you measure: one overlay picture per predicted label map and one\n"
        "page of them. For each label map in PRED_DIR and its image (IMAGES/<case>_0000\n"
        "plus the file ending, nnU-Net's naming; --channel picks another channel): three\n"
        "orthogonal slices through the centre of each connected structure, one colour per\n"
        "label, in RAS orientation and physical proportions. OUTPUT/index.html shows\n"
        "every case as a thumbnail: cases that could not be drawn first, then flagged\n"
        "cases, each with its volumes and flags; with --reference the reference is drawn\n"
        "beside the prediction and cases are ordered by Dice, worst first. The page is\n"
        "one file; a click opens the full picture in OUTPUT/cases/.\n"
        "\n"
        "Flags are those of hippo-peft volumes (--volumes volumes.csv), or computed the\n"
        "same way when not given.\n"
        "\n"
        "Refused before any picture is made (exit 2, every offender named): a missing\n"
        "image or reference, an unreadable file, label values outside the label list.\n"
        "Drawn as a placeholder stating the reason (the run goes on, exit 1 at the end):\n"
        "an empty prediction, a prediction whose voxel grid differs from its image's (or\n"
        "the reference's).")
    s = subparsers.add_parser("qc", help="overlay pictures of predicted label maps and one HTML page of them, "
                                         "flagged cases first",
                              description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    s.add_argument("pred_dir", help="folder of label maps, e.g. the -o folder of nnUNetv2_predict")
    s.add_argument("--images", required=True, help="the images the predictions were made from (nnU-Net naming: "
                                                   "<case>_0000.nii.gz), e.g. the -i folder of nnUNetv2_predict")
    s.add_argument("-o", "--output", default="qc", help="QC folder to write (never inside PRED_DIR)")
    s.add_argument("--volumes", help="a hippo-peft volumes CSV of PRED_DIR: its flags and volumes are shown "
                                     "(default: computed here the same way)")
    s.add_argument("--only-flagged", action="store_true", help="draw only flagged cases (the page lists all)")
    s.add_argument("--reference", help="reference label maps (<case>.nii.gz): drawn beside the prediction, with "
                                       "Dice per case; the page is ordered worst first")
    s.add_argument("--channel", type=int, default=0, help="image channel to draw (0: <case>_0000)")
    s.add_argument("--labels", nargs="+", metavar="NAME=VALUE",
                   help="foreground labels (default: PRED_DIR/dataset.json)")
    s.add_argument("--file-ending", help="e.g. .nii.gz (default: PRED_DIR/dataset.json)")
    s.add_argument("--expected-components", type=int, default=1,
                   help="as in volumes: flag several_components above this (2 for maps with both hippocampi)")
    s.add_argument("--max-structures", type=int, default=2,
                   help="connected structures drawn per case, largest first")
    s.add_argument("--margin", type=float, default=10.0, help="margin around each structure in mm")
    s.add_argument("--processes", type=int, help="worker processes; 1: none (default: the CPU count, at most 8; "
                                                 "none for fewer than 4 cases)")
    s.add_argument("--overwrite", action="store_true", help="replace an existing, non-empty QC folder")
    s.add_argument("--no-progress", action="store_true", help="no progress bars")
    s.set_defaults(func=_cmd_qc)
