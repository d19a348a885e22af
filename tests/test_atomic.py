"""Files users keep are written atomically: a command killed while writing leaves nothing a later run would accept,
and a plain rerun succeeds (export-adapter, merge, import-weights through the real CLI entry point)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from hippo_peft.atomic import atomic_dir, atomic_file
from hippo_peft.trainers import nnUNetTrainer_UNETR_LoRAPT
from tests.conftest import minimal_plans, trained_model_folder

REPO = Path(__file__).resolve().parents[1]


def test_atomic_helpers_leave_old_or_new(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_file(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]
    folder = tmp_path / "model"
    with atomic_dir(folder) as tmp:
        (tmp / "a").write_text("1")
    with pytest.raises(FileExistsError, match="--overwrite"):
        with atomic_dir(folder):
            pass
    with pytest.raises(RuntimeError):
        with atomic_dir(folder, overwrite=True) as tmp:
            (tmp / "b").write_text("2")
            raise RuntimeError("killed")
    assert sorted(p.name for p in folder.iterdir()) == ["a"]  # the old folder, whole
    with atomic_dir(folder, overwrite=True) as tmp:
        (tmp / "b").write_text("2")
    assert sorted(p.name for p in folder.iterdir()) == ["b"]  # replaced whole, nothing stale
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "out.txt"]


def _kill_while_writing(tmp_path: Path, argv: list[str], patch: str) -> None:
    """Run ``hippo-peft argv`` in a subprocess whose ``patch`` writer writes its first bytes, says so and waits;
    then SIGKILL it."""
    script = tmp_path / "killed_run.py"
    script.write_text(f"import sys, time\nsys.path.insert(0, {str(REPO)!r})\n{patch}\n"
                      f"from hippo_peft.cli import main\nmain({argv!r})\n")
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=tmp_path)
    deadline = time.time() + 300
    line = ""
    while "FIRST BYTES WRITTEN" not in line:
        line = proc.stdout.readline()
        assert line or proc.poll() is None, proc.stderr.read()[-2000:]
        assert time.time() < deadline
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


# A writer that writes part of its file, announces it and hangs until killed.
_HANG = """
def _hang(path):
    open(path, "wb").write(b"PK\\x03\\x04 first bytes")
    print("FIRST BYTES WRITTEN", flush=True)
    time.sleep(600)
"""
PATCH_SAFETENSORS = _HANG + """
import safetensors.torch
safetensors.torch.save_file = lambda tensors, filename, metadata=None: _hang(filename)
"""
PATCH_TORCH_SAVE = _HANG + """
import torch
torch.save = lambda obj, f, *a, **k: _hang(f)
"""


@pytest.mark.e2e
def test_export_adapter_killed_while_writing(tmp_path):
    model, _ = trained_model_folder(tmp_path, nnUNetTrainer_UNETR_LoRAPT)
    out = tmp_path / "adapter"
    argv = ["export-adapter", str(model / "fold_all"), "-o", str(out)]
    _kill_while_writing(tmp_path, argv, PATCH_SAFETENSORS)
    assert not out.exists()  # only a hidden temporary, which no command reads as an adapter
    from hippo_peft.cli import main
    assert main(argv) == 0
    assert (out / "adapter.safetensors").is_file() and json.loads((out / "adapter_config.json").read_text())
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".adapter")]  # the stale temporary is gone


@pytest.mark.e2e
def test_merge_killed_while_writing_keeps_the_old_folder(tmp_path):
    model, _ = trained_model_folder(tmp_path, nnUNetTrainer_UNETR_LoRAPT)
    out = tmp_path / "merged"
    from hippo_peft.cli import main
    assert main(["merge", str(model), "-o", str(out)]) == 0
    before = (out / "fold_all" / "checkpoint_final.pth").read_bytes()
    argv = ["merge", str(model), "-o", str(out), "--overwrite"]
    _kill_while_writing(tmp_path, argv, PATCH_TORCH_SAVE)
    assert (out / "fold_all" / "checkpoint_final.pth").read_bytes() == before  # the old state, intact
    assert main(argv) == 0
    assert torch.load(out / "fold_all" / "checkpoint_final.pth", weights_only=False)["network_weights"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".merged")]


@pytest.mark.e2e
def test_import_weights_killed_while_writing(tmp_path):
    from hippo_peft.networks import build_network, get_preset
    plans, dataset_json = minimal_plans("unetr", "tiny", [32, 32, 32])
    (tmp_path / "plans.json").write_text(json.dumps(plans))
    (tmp_path / "dataset.json").write_text(json.dumps(dataset_json))
    net = build_network("monai.networks.nets.UNETR", get_preset("unetr", "tiny"), [32, 32, 32], 1, 3)
    torch.save(net.state_dict(), tmp_path / "released.pt")
    out = tmp_path / "imported.pth"
    argv = ["import-weights", str(tmp_path / "released.pt"), "--plans", str(tmp_path / "plans.json"), "-o", str(out)]
    _kill_while_writing(tmp_path, argv, PATCH_TORCH_SAVE)
    assert not out.exists()
    from hippo_peft.cli import main
    assert main(argv) == 0  # a plain rerun: no "exists, pass --overwrite"
    assert torch.load(out, weights_only=True)["network_weights"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".imported")]
