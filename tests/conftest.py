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


# ---- helpers several test modules use (test modules never import each other) -----------------------------------

# source folder -> installed package (setup.cfg package_dir)
SOURCE_ROOTS = {"hippo_peft": REPO / "hippo_peft", "hippo_peft.trainers": REPO / "trainers",
                "hippo_peft.planners": REPO / "planners"}


def modules() -> dict[str, Path]:
    """Every module of the package, by its installed dotted name -> its source file."""
    found = {}
    for package, folder in SOURCE_ROOTS.items():
        for path in folder.rglob("*.py"):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join([package, *parts])] = path
    return found


TINY_PATCH = {"unetr": [48, 64, 48], "swinunetr": [64, 64, 64]}


def tiny(arch: str, seed: int = 0) -> torch.nn.Module:
    """The 'tiny' preset of a backbone, seeded: small enough for CPU tests."""
    from hippo_peft.networks import build_network, get_arch, get_preset
    torch.manual_seed(seed)
    return build_network(get_arch(arch).network_class_name, get_preset(arch, "tiny"), TINY_PATCH[arch], 1, 3)


def trained_model_folder(tmp_path, trainer, adapter_cfg=None):
    """What nnUNetv2_train leaves behind, made in-process: plans.json, dataset.json, fold_all/checkpoint_final.pth
    of an adapted tiny UNETR whose adapter moved away from its start; plus the base checkpoint it started from."""
    from hippo_peft import adapters as A
    from hippo_peft.networks import build_network
    patch = TINY_PATCH["unetr"]
    plans, dataset_json = minimal_plans("unetr", "tiny", patch)
    config = plans["configurations"]["3d_fullres"]["architecture"]
    torch.manual_seed(0)
    base = build_network(config["network_class_name"], config["arch_kwargs"], patch, 1, 3)
    torch.save({"network_weights": base.state_dict()}, tmp_path / "base.pth")
    adapter_cfg = adapter_cfg or trainer.adapter_config()
    net = A.inject(base, adapter_cfg)
    with torch.no_grad():
        for p in A.trainable_parameters(net):
            p.add_(0.05 * torch.randn_like(p))
    model = tmp_path / "results" / f"{trainer.__name__}__nnUNetPlans_UNETR_tiny__3d_fullres"
    (model / "fold_all").mkdir(parents=True)
    (model / "plans.json").write_text(json.dumps(plans))
    (model / "dataset.json").write_text(json.dumps(dataset_json))
    torch.save({"network_weights": net.state_dict(), "trainer_name": trainer.__name__,
                "init_args": {"configuration": "3d_fullres"}, "inference_allowed_mirroring_axes": (0, 1, 2),
                "optimizer_state": {"exp_avg": [torch.zeros_like(p) for p in net.parameters()]},
                "hippo_peft_adapter": {"base_fingerprint": A.injected_fingerprint(net),
                                       "config": adapter_cfg.to_dict()}},
               model / "fold_all" / "checkpoint_final.pth")
    return model, net.eval()


# t-product algebra of real third-order tensors (Kilmer & Martin): the definitions LoRA-PT's t-SVD and its FFT-free
# slices are checked against (hippo_peft itself never forms these products).

def t_product(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a * b`` for real (n1 x n2 x n3) and (n2 x n4 x n3) tensors: slice-wise products in the Fourier domain."""
    n3 = a.shape[2]
    af, bf = torch.fft.rfft(a.float(), dim=2), torch.fft.rfft(b.float(), dim=2)
    return torch.fft.irfft(torch.einsum("ijk,jlk->ilk", af, bf), n=n3, dim=2)


def t_transpose(a: torch.Tensor) -> torch.Tensor:
    """Tensor transpose: every frontal slice transposed, slices 2..n3 in reverse order."""
    idx = [0] + list(range(a.shape[2] - 1, 0, -1))
    return a.transpose(0, 1)[:, :, idx]


def compose(u: torch.Tensor, s: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``U * S * V^T`` with ``U`` (n1 x r x n3), f-diagonal ``S`` given as its r tubes (r x n3), ``V`` (n2 x r x n3),
    computed slice-wise in the Fourier domain (``fft(V^T)_k = fft(V)_k^H``) in float32."""
    n3 = u.shape[2]
    uf = torch.fft.rfft(u.float(), dim=2)
    sf = torch.fft.rfft(s.float(), dim=1)
    vf = torch.fft.rfft(v.float(), dim=2)
    return torch.fft.irfft(torch.einsum("irk,rk,jrk->ijk", uf, sf, vf.conj()), n=n3, dim=2)


def compose_slices(u: torch.Tensor, s: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """:func:`compose` laid out frontal slices first (n3 x n1 x n2)."""
    n3 = u.shape[2]
    uf = torch.fft.rfft(u.float(), dim=2) * torch.fft.rfft(s.float(), dim=1)  # (n1, r, F): U_k S_k
    vf = torch.fft.rfft(v.float(), dim=2)
    pf = torch.matmul(uf.permute(2, 0, 1), vf.conj().permute(2, 1, 0))  # (F, n1, n2): U_k S_k V_k^H
    return torch.fft.irfft(pf, n=n3, dim=0)
