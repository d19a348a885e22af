"""Shared fixtures: where the real data lives, a private nnU-Net tree per test, console commands of this venv."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
HIPPO = SHARED_DATA / "Dataset004_Hippocampus"

torch.set_num_threads(2)


def bin_path(name: str) -> str:
    candidate = Path(sys.executable).parent / name
    if not candidate.exists():
        pytest.fail(f"console script {name} not found next to {sys.executable}; install the package "
                    f"(bash scripts/setup.sh) before running the tests")
    return str(candidate)


@pytest.fixture
def hippocampus() -> Path:
    if not (HIPPO / "dataset.json").is_file():
        pytest.skip(f"real hippocampus data not found at {HIPPO} (../shared/data beside the project root)")
    return HIPPO


@pytest.fixture(scope="session")
def ext_trainer_dir() -> str:
    """The installed package's shim folder, as `hippo-peft env` prints it for users."""
    out = subprocess.run([bin_path("hippo-peft"), "env"], capture_output=True, text=True, check=True,
                         cwd="/").stdout
    line = next(l for l in out.splitlines() if l.startswith("export nnUNet_extTrainer="))
    return line.split("=", 1)[1].split(os.pathsep)[-1]


@pytest.fixture
def nnunet_env(tmp_path, ext_trainer_dir) -> dict:
    """Environment for nnU-Net subprocesses: a fresh tree under tmp_path, low process counts, our ext trainers."""
    env = dict(os.environ)
    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        env[name] = str(tmp_path / name)
        Path(env[name]).mkdir()
    env.update(nnUNet_n_proc_DA="0", nnUNet_def_n_proc="1", nnUNet_extTrainer=ext_trainer_dir,
               OMP_NUM_THREADS="2")
    return env


def run(cmd: list[str], env: dict, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    """Run a console command from ``cwd`` (never the repo root: users run nnU-Net from anywhere)."""
    proc = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True)
    if check and proc.returncode:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n"
                             f"{proc.stderr[-4000:]}")
    return proc


def link_cases(source: Path, target: Path, cases: list[str], split: str, with_labels: bool = True,
               labels_dir: str | None = None) -> None:
    """Symlink real cases into an nnU-Net raw folder (the data are never copied): the package's own helper."""
    from hippo_peft.experiments.datasets import link_cases as link
    link(source, target, cases, split, labels=with_labels, labels_dir=labels_dir)


def write_dataset_json(folder: Path, base: Path, n_train: int) -> None:
    dj = json.loads((base / "dataset.json").read_text())
    dj["numTraining"] = n_train
    (folder / "dataset.json").write_text(json.dumps(dj))


def minimal_plans(arch: str, preset: str, patch_size, n_channels: int = 1) -> tuple[dict, dict]:
    """A plans dict + dataset.json shaped like nnU-Net's, without running nnU-Net's planner."""
    from hippo_peft.nnunet.plans import make_configuration
    stock = {"data_identifier": "nnUNetPlans_3d_fullres", "preprocessor_name": "DefaultPreprocessor",
             "batch_size": 9, "patch_size": list(patch_size), "median_image_size_in_voxels": [35, 50, 36],
             "spacing": [1.0, 1.0, 1.0], "normalization_schemes": ["ZScoreNormalization"] * n_channels,
             "use_mask_for_norm": [False] * n_channels,
             "architecture": {"network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
                              "arch_kwargs": {"n_stages": 4}, "_kw_requires_import": []}, "batch_dice": False}
    plans = {"dataset_name": "Dataset999_Test", "plans_name": "nnUNetPlans", "transpose_forward": [0, 1, 2],
             "transpose_backward": [0, 1, 2], "image_reader_writer": "SimpleITKIO", "label_manager": "LabelManager",
             "configurations": {"3d_fullres": stock}, "original_median_spacing_after_transp": [1, 1, 1],
             "original_median_shape_after_transp": [35, 50, 36], "experiment_planner_used": "ExperimentPlanner",
             "foreground_intensity_properties_per_channel": {}}
    if preset:
        plans["plans_name"] = f"nnUNetPlans_{arch}_{preset}"
        plans["configurations"]["3d_fullres"] = make_configuration(stock, arch, preset, patch_size)
    dataset_json = {"channel_names": {str(i): f"c{i}" for i in range(n_channels)},
                    "labels": {"background": 0, "Anterior": 1, "Posterior": 2}, "numTraining": 10,
                    "file_ending": ".nii.gz"}
    return plans, dataset_json
