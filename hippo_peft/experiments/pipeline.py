"""The transfer pipeline the demo and the benchmark share, one nnU-Net command per step: plan the target with our
planner, plan the source with the target's patch size (UNETR's position embedding is tied to it), pre-train on the
source, train on the target with ``-pretrained_weights``; and where nnU-Net puts what it plans and trains."""
from __future__ import annotations

import json
from pathlib import Path

from hippo_peft.experiments.commands import console_script
from hippo_peft.networks.presets import get_arch

CONFIGURATION = "3d_fullres"


def our_plans(arch: str, preset: str) -> str:
    """The plans name ``hippo-peft plan`` writes: ``nnUNetPlans_UNETR_compact``."""
    return f"nnUNetPlans_{get_arch(arch).plans_suffix}_{preset}"


def plan_command(dataset_id: int, arch: str, preset: str, *extra: str) -> list[str]:
    """``hippo-peft plan`` of a dataset (one process: these are small datasets)."""
    return [console_script("hippo-peft"), "plan", "-d", str(dataset_id), "--arch", arch, "--preset", preset, "-np",
            "1", *extra]


def planned_patch_size(preprocessed: Path, dataset: str, plans: str) -> list[int]:
    return json.loads((Path(preprocessed) / dataset / f"{plans}.json").read_text())[
        "configurations"][CONFIGURATION]["patch_size"]


def source_plan_command(source_id: int, arch: str, preset: str, patch_size, *extra: str) -> list[str]:
    """Plan the source with the target's patch size: a network pre-trained there loads into the target's."""
    return plan_command(source_id, arch, preset, *extra, "--patch-size", *map(str, patch_size))


def train_command(dataset_id: int, fold, trainer: str, plans: str, device: str,
                  pretrained: str | Path | None = None) -> list[str]:
    """``nnUNetv2_train`` of one fold (``all`` for every case), from ``pretrained`` weights when given."""
    cmd = [console_script("nnUNetv2_train"), str(dataset_id), CONFIGURATION, str(fold), "-tr", trainer, "-p", plans,
           "-device", device]
    return cmd + (["-pretrained_weights", str(pretrained)] if pretrained else [])


def fold_folder(results: Path, dataset: str, trainer: str, plans: str, fold) -> Path:
    """nnU-Net's results folder of one fold: ``<results>/<dataset>/<trainer>__<plans>__3d_fullres/fold_<fold>``."""
    return Path(results) / dataset / f"{trainer}__{plans}__{CONFIGURATION}" / f"fold_{fold}"
