"""`hippo-peft demo`: the whole nnU-Net workflow on CPU, with nnU-Net's own commands in subprocesses.

source task -> `hippo-peft plan` -> `nnUNetv2_train SOURCE ... all` -> target planned with the source's patch
size -> `nnUNetv2_train TARGET ... all -tr <method trainer> -pretrained_weights` (LoRA-PT by default, any method or
full fine-tuning with ``--method``; the tolerant loader adapts channels and the head) -> `nnUNetv2_predict` on
held-out target cases -> Dice per label against their labels, and the trainable parameter count.
"""
from __future__ import annotations

import json
import random
import shutil
import tempfile
import time
from pathlib import Path

from hippo_peft.errors import InputError, OutputExistsError
from hippo_peft.experiments.commands import console_script as _bin
from hippo_peft.experiments.commands import nnunet_env
from hippo_peft.experiments.commands import run_logged as _run
from hippo_peft.experiments.datasets import link_cases
from hippo_peft.experiments.pipeline import (fold_folder, our_plans, plan_command, planned_patch_size,
                                             source_plan_command, train_command)
from hippo_peft.networks.presets import get_arch, get_preset

SOURCE_ID, TARGET_ID = 901, 902


def dataset_from_raw(raw: Path, raw_root: Path, name: str, n_train: int, n_test: int, seed: int = 0) -> Path:
    """A target task from a labelled nnU-Net raw dataset: ``n_train`` cases to train on and ``n_test`` held-out
    labelled cases (imagesTs + labelsTs), symlinked, drawn with a fixed seed."""
    dataset_json = json.loads((raw / "dataset.json").read_text())
    ending = dataset_json["file_ending"]
    cases = sorted(p.name[: -len(ending)] for p in (raw / "labelsTr").glob(f"*{ending}"))
    if len(cases) < n_train + n_test:
        raise InputError(f"{raw} has {len(cases)} labelled cases; the demo needs {n_train + n_test}.")
    drawn = random.Random(seed).sample(cases, n_train + n_test)
    folder = raw_root / name
    for split, chosen in (("Tr", drawn[:n_train]), ("Ts", drawn[n_train:])):
        link_cases(raw, folder, chosen, split, dataset_json=dataset_json)
    (folder / "dataset.json").write_text(json.dumps({**dataset_json, "numTraining": n_train}, indent=2))
    return folder


def dice_table(reference: Path, prediction: Path, dataset_json: dict) -> dict:
    """nnU-Net's own evaluation: Dice per label and of all foreground labels together, averaged over cases."""
    from nnunetv2.evaluation.evaluate_predictions import compute_metrics_on_folder
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO

    labels = sorted(v for v in dataset_json["labels"].values() if v != 0)
    regions = labels + ([tuple(labels)] if len(labels) > 1 else [])
    result = compute_metrics_on_folder(str(reference), str(prediction), str(prediction / "summary.json"),
                                       SimpleITKIO(), dataset_json["file_ending"], regions, None, 1)
    names = {str(v): k for k, v in dataset_json["labels"].items()}
    names[str(tuple(labels))] = "+".join(names[str(v)] for v in labels)
    return {names[str(k)]: float(v["Dice"]) for k, v in result["mean"].items()}


def run_demo(workdir: str | None = None, raw: str | None = None, arch: str = "unetr", preset: str = "compact",
             keep: bool = False, n_source: int = 8, n_train: int = 8, n_test: int = 4, method: str = "lorapt") -> dict:
    from hippo_peft.experiments.synthetic import write_dataset
    from hippo_peft.trainers import trainer_name

    spec = get_arch(arch)
    get_preset(arch, preset)
    adapt_trainer = trainer_name(arch, method, "short")  # validates the method before anything runs
    root = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="hippo_peft_demo_"))
    if workdir and root.exists() and any(root.iterdir()):
        raise OutputExistsError(f"--workdir {root} is not empty; the demo only writes into a new or empty folder.")
    root.mkdir(parents=True, exist_ok=True)
    env, log = nnunet_env(root), root / "demo.log"
    trainer, plans = f"{spec.trainer}_short", our_plans(arch, preset)
    raw_root = Path(env["nnUNet_raw"])
    print(f"hippo-peft demo: {spec.network_class_name} '{preset}' in {root} (log: {log})")
    try:
        t0 = time.time()
        source = write_dataset(raw_root, f"Dataset{SOURCE_ID:03d}_PhantomSource", n_source, seed=1, source=True)
        if raw:
            target = dataset_from_raw(Path(raw), raw_root, f"Dataset{TARGET_ID:03d}_DemoTarget", n_train, n_test)
        else:
            target = write_dataset(raw_root, f"Dataset{TARGET_ID:03d}_PhantomTarget", n_train, n_test, seed=2)
        results = Path(env["nnUNet_results"])
        timings = {"plan": _run(plan_command(TARGET_ID, arch, preset), env, log)}
        patch = planned_patch_size(Path(env["nnUNet_preprocessed"]), target.name, plans)
        timings["plan"] += _run(source_plan_command(SOURCE_ID, arch, preset, patch), env, log)
        timings["train source"] = _run(train_command(SOURCE_ID, "all", trainer, plans, "cpu"), env, log)
        source_ckpt = fold_folder(results, source.name, trainer, plans, "all") / "checkpoint_final.pth"
        timings["adapt target"] = _run(train_command(TARGET_ID, "all", adapt_trainer, plans, "cpu", source_ckpt),
                                       env, log)
        from hippo_peft.safe_load import load_weights_file
        adapted = load_weights_file(fold_folder(results, target.name, adapt_trainer, plans, "all")
                                    / "checkpoint_final.pth")
        trainable = adapted.get("hippo_peft_adapter", {}).get("trainable") or {
            "trainable": sum(v.numel() for v in adapted["network_weights"].values() if v.is_floating_point()),
            "total": sum(v.numel() for v in adapted["network_weights"].values() if v.is_floating_point()),
            "percent": 100.0}
        pred = root / "predictions"
        timings["predict"] = _run([_bin("nnUNetv2_predict"), "-i", str(target / "imagesTs"), "-o", str(pred), "-d",
                                   str(TARGET_ID), "-c", "3d_fullres", "-tr", adapt_trainer, "-p", plans, "-f", "all",
                                   "-device", "cpu", "-npp", "1", "-nps", "1"], env, log)
        dataset_json = json.loads((target / "dataset.json").read_text())
        dice = dice_table(target / "labelsTs", pred, dataset_json)
        result = {"workdir": str(root), "arch": arch, "preset": preset, "trainer": adapt_trainer,
                  "source_trainer": trainer, "method": method, "trainable": trainable, "plans": plans,
                  "source_cases": n_source, "target_train_cases": n_train, "target_test_cases": n_test,
                  "dice": dice, "seconds": {k: round(v, 1) for k, v in timings.items()},
                  "total_seconds": round(time.time() - t0, 1)}
        (root / "demo_results.json").write_text(json.dumps(result, indent=2))
        print(format_results(result))
        return result
    finally:
        if not (workdir or keep):
            shutil.rmtree(root, ignore_errors=True)


def format_results(result: dict) -> str:
    t = result["trainable"]
    lines = [f"\n{result['arch']} ({result['preset']}): source pre-training ({result['source_trainer']}) on "
             f"{result['source_cases']} cases, adaptation with {result['trainer']} on {result['target_train_cases']}, "
             f"test on {result['target_test_cases']} held-out cases",
             f"method {result['method']}: trainable {t['trainable']:,} of {t['total']:,} parameters "
             f"({t['percent']:.3f} %)", "", "| label | Dice (held-out mean) |", "|---|---|"]
    lines += [f"| {k} | {v:.3f} |" for k, v in result["dice"].items()]
    lines += ["", "| step | seconds |", "|---|---|"] + [f"| {k} | {v} |" for k, v in result["seconds"].items()]
    lines.append(f"| total | {result['total_seconds']} |")
    return "\n".join(lines)
