"""Loading weights never runs code from the file: the allow-list policy of hippo_peft.safe_load, the opt-in, and one
clear line (exit 2 through the CLI) for every corrupt or wrong file."""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from hippo_peft.safe_load import UnsafeCheckpointError, WeightsFileError, load_weights_file
from hippo_peft.nnunet.weights import read_state_dict
from tests.conftest import bin_path, minimal_plans, trained_model_folder


class _Payload:
    """Unpickling this calls os.system: the attack a downloaded checkpoint can carry."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _state() -> dict:
    torch.manual_seed(0)
    return {"layer.weight": torch.randn(4, 3), "layer.bias": torch.zeros(4)}


def _nnunet_like(path: Path, numpy_spelling: str | None = None) -> Path:
    """A checkpoint shaped like nnU-Net's (numpy scalars in its logging dict); optionally with the pickled numpy
    module renamed (numpy 1 wrote numpy.core.multiarray, numpy 2 writes numpy._core.multiarray)."""
    torch.save({"network_weights": _state(), "optimizer_state": {}, "grad_scaler_state": None,
                "logging": {"mean_fg_dice": [np.float32(0.5), np.float64(0.25)], "epoch_end_timestamps": [1.0]},
                "_best_ema": np.float32(0.4), "current_epoch": 3, "init_args": {"fold": 0},
                "trainer_name": "nnUNetTrainer_UNETR_LoRAPT", "inference_allowed_mirroring_axes": (0, 1, 2)}, path)
    if numpy_spelling:
        with zipfile.ZipFile(path) as z:
            entries = {n: z.read(n) for n in z.namelist()}
        pkl = next(n for n in entries if n.endswith("data.pkl"))
        assert b"numpy._core.multiarray" in entries[pkl]
        entries[pkl] = entries[pkl].replace(b"numpy._core.multiarray", numpy_spelling.encode())
        with zipfile.ZipFile(path, "w") as z:
            for n, data in entries.items():
                z.writestr(n, data)
    return path


def test_payload_is_refused_before_unpickling_and_named(tmp_path):
    marker = tmp_path / "PWNED"
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": _state(), "extra": _Payload(marker)}, path)
    with pytest.raises(UnsafeCheckpointError) as err:
        load_weights_file(path)
    assert not marker.exists(), "the payload ran"
    assert "posix.system" in str(err.value) or "os.system" in str(err.value)
    assert "--trust-pickle" in str(err.value) and "convert-weights" in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_plain_pickle_payload_is_refused_and_named(tmp_path, protocol):
    """A bare pickle (not torch.save's zip): torch cannot list its globals, we read them from the opcodes (GLOBAL for
    protocol 2, STACK_GLOBAL with memoised strings from 4 on) without executing anything."""
    import pickle
    import pickletools
    marker = tmp_path / "PWNED"
    path = tmp_path / "evil.pth"
    path.write_bytes(pickle.dumps({"layer.weight": [1.0, 2.0], "extra": _Payload(marker)}, protocol=protocol))
    ops = {op.name for op, _, _ in pickletools.genops(path.read_bytes())}
    assert ("STACK_GLOBAL" if protocol >= 4 else "GLOBAL") in ops
    with pytest.raises(UnsafeCheckpointError) as err:
        load_weights_file(path)
    assert not marker.exists(), "the payload ran"
    assert "posix.system" in str(err.value) or "os.system" in str(err.value)
    assert "globals outside the allow-list" not in str(err.value)
    assert err.value.globals == [f"{os.system.__module__}.system"]
    # torch's own legacy (non-zip) format is a sequence of pickles: the payload is found in the data pickle
    legacy = tmp_path / "legacy.pth"
    torch.save({"state_dict": _state(), "extra": _Payload(marker)}, legacy, _use_new_zipfile_serialization=False,
               pickle_protocol=protocol)
    with pytest.raises(UnsafeCheckpointError, match=r"(posix|os)\.system"):
        load_weights_file(legacy)
    assert not marker.exists(), "the payload ran"


def test_namespace_needs_the_opt_in_and_loads_with_it(tmp_path, monkeypatch):
    path = tmp_path / "research.pth"
    torch.save({"state_dict": _state(), "args": argparse.Namespace(lr=1e-4)}, path)
    with pytest.raises(UnsafeCheckpointError, match="argparse.Namespace"):
        read_state_dict(path)
    assert set(read_state_dict(path, trust_pickle=True)) == set(_state())
    monkeypatch.setenv("HIPPO_PEFT_TRUST_PICKLE", "1")  # the nnUNetv2_train path
    assert set(read_state_dict(path)) == set(_state())


@pytest.mark.parametrize("spelling", [None, "numpy.core.multiarray"])
def test_nnunet_checkpoints_and_plain_state_dicts_load_without_opt_in(tmp_path, spelling):
    ckpt = load_weights_file(_nnunet_like(tmp_path / "ckpt.pth", spelling))
    assert ckpt["current_epoch"] == 3 and float(ckpt["_best_ema"]) == pytest.approx(0.4)
    assert torch.equal(read_state_dict(tmp_path / "ckpt.pth")["layer.weight"], _state()["layer.weight"])
    torch.save(_state(), tmp_path / "monai.pt")  # a plain MONAI state dict
    assert set(read_state_dict(tmp_path / "monai.pt")) == set(_state())


def _corrupt_files(tmp_path: Path) -> dict[str, Path]:
    files = {}
    good = tmp_path / "good.pth"
    torch.save({"network_weights": _state()}, good)
    data = good.read_bytes()
    files["random bytes"] = tmp_path / "random.pth"
    files["random bytes"].write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    for n in (10, len(data) // 2, len(data) - 20):
        files[f"truncated at {n}"] = tmp_path / f"trunc{n}.pth"
        files[f"truncated at {n}"].write_bytes(data[:n])
    files["empty"] = tmp_path / "empty.pth"
    files["empty"].write_bytes(b"")
    import SimpleITK as sitk
    files["nifti"] = tmp_path / "image.nii.gz"
    sitk.WriteImage(sitk.Image(4, 4, 4, sitk.sitkUInt8), str(files["nifti"]))
    files["directory"] = tmp_path / "a_folder"
    files["directory"].mkdir()
    from safetensors.torch import save_file
    tampered = tmp_path / "tampered.safetensors"
    save_file(_state(), str(tampered))
    raw = bytearray(tampered.read_bytes())
    header = raw[8:8 + int.from_bytes(raw[:8], "little")].decode()
    raw[8:8 + len(header)] = header.replace('"F32"', '"F64"', 1).encode()  # dtype now claims twice the bytes
    tampered.write_bytes(bytes(raw))
    files["tampered safetensors header"] = tampered
    files["NaN weights"] = tmp_path / "nan.pth"
    torch.save({"w": torch.tensor([1.0, float("nan")]), "b": torch.tensor([float("inf")])}, files["NaN weights"])
    return files


def test_corrupt_or_wrong_files_give_one_line(tmp_path):
    for case, path in _corrupt_files(tmp_path).items():
        with pytest.raises(WeightsFileError) as err:
            read_state_dict(path)
        message = str(err.value)
        assert str(path) in message and "\n" not in message, (case, message)


@pytest.mark.e2e
@pytest.mark.slow
def test_commands_refuse_the_payload_and_corrupt_files_with_exit_2(tmp_path, nnunet_env):
    """Through the real command: the payload never runs, one line names the global; nothing is written."""
    marker = tmp_path / "PWNED"
    evil = tmp_path / "evil.pth"
    torch.save({"state_dict": _state(), "extra": _Payload(marker)}, evil)
    plans, dataset_json = minimal_plans("unetr", "tiny", [32, 32, 32])
    (tmp_path / "plans.json").write_text(json.dumps(plans))
    (tmp_path / "dataset.json").write_text(json.dumps(dataset_json))
    out = tmp_path / "out.pth"
    for cmd in ([bin_path("hippo-peft"), "import-weights", str(evil), "--plans", str(tmp_path / "plans.json"), "-o",
                 str(out)],
                [bin_path("hippo-peft"), "convert-weights", str(evil), "-o", str(tmp_path / "out.safetensors")]):
        proc = subprocess.run(cmd, env=nnunet_env, cwd=tmp_path, capture_output=True, text=True)
        assert proc.returncode == 2 and not marker.exists(), proc.stderr
        assert "system" in proc.stderr and "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1
        assert not out.exists() and not (tmp_path / "out.safetensors").exists()
    (tmp_path / "bad").mkdir()
    for case, path in _corrupt_files(tmp_path / "bad").items():
        proc = subprocess.run([bin_path("hippo-peft"), "convert-weights", str(path), "-o",
                               str(tmp_path / "c.safetensors")], env=nnunet_env, cwd=tmp_path, capture_output=True,
                              text=True)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1, (case,
                                                                                                      proc.stderr)
        assert not (tmp_path / "c.safetensors").exists()


@pytest.mark.e2e
def test_convert_weights_makes_a_file_everything_loads(tmp_path, nnunet_env):
    research = tmp_path / "research.pth"
    torch.save({"model": {f"module.{k}": v for k, v in _state().items()}, "args": argparse.Namespace(lr=1)}, research)
    out = tmp_path / "plain.safetensors"
    cmd = [bin_path("hippo-peft"), "convert-weights", str(research), "-o", str(out)]
    refused = subprocess.run(cmd, env=nnunet_env, cwd=tmp_path, capture_output=True, text=True)
    assert refused.returncode == 2 and "argparse.Namespace" in refused.stderr and not out.exists()
    done = subprocess.run(cmd + ["--trust-pickle"], env=nnunet_env, cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    loaded = read_state_dict(out)  # no opt-in needed any more
    assert set(loaded) == set(_state()) and torch.equal(loaded["layer.weight"], _state()["layer.weight"])
    again = subprocess.run(cmd + ["--trust-pickle"], env=nnunet_env, cwd=tmp_path, capture_output=True, text=True)
    assert again.returncode == 2 and "--overwrite" in again.stderr
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary file left


def _payload_checkpoint(path: Path, marker: Path) -> Path:
    torch.save({"network_weights": _state(), "extra": _Payload(marker)}, path)
    return path


def _refused(proc: subprocess.CompletedProcess, marker: Path) -> bool:
    return (proc.returncode != 0 and not marker.exists()
            and ("posix.system" in proc.stderr or "os.system" in proc.stderr))


@pytest.mark.e2e
def test_payload_through_export_merge_apply(tmp_path, nnunet_env):
    """A fold's checkpoint swapped for the payload (export-adapter, merge), and the payload as apply-adapter --base:
    refused through the real commands, the global named, nothing written."""
    from hippo_peft.trainers import nnUNetTrainer_UNETR_LoRAPT
    model, _ = trained_model_folder(tmp_path, nnUNetTrainer_UNETR_LoRAPT)
    hp = bin_path("hippo-peft")
    assert subprocess.run([hp, "export-adapter", str(model / "fold_all"), "-o", str(tmp_path / "adapter")],
                          env=nnunet_env, capture_output=True).returncode == 0
    marker = tmp_path / "PWNED"
    evil_base = _payload_checkpoint(tmp_path / "evil_base.pth", marker)
    apply = subprocess.run([hp, "apply-adapter", str(tmp_path / "adapter"), "--base", str(evil_base), "--plans",
                            str(model / "plans.json"), "-o", str(tmp_path / "applied")], env=nnunet_env,
                           capture_output=True, text=True)
    assert _refused(apply, marker) and apply.returncode == 2 and not (tmp_path / "applied").exists(), apply.stderr
    _payload_checkpoint(model / "fold_all" / "checkpoint_final.pth", marker)  # swapped
    for cmd, out in (([hp, "export-adapter", str(model / "fold_all"), "-o", str(tmp_path / "a2")], "a2"),
                     ([hp, "merge", str(model), "-o", str(tmp_path / "merged")], "merged")):
        proc = subprocess.run(cmd, env=nnunet_env, capture_output=True, text=True)
        assert _refused(proc, marker) and proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        assert not (tmp_path / out).exists()


@pytest.mark.e2e
def test_payload_through_nnunetv2_train_pretrained_weights(tmp_path, nnunet_env):
    """`nnUNetv2_train ... -tr <our trainer> -pretrained_weights evil.pth`: the payload never runs and the error
    nnU-Net shows names the global and the opt-in."""
    pre = Path(nnunet_env["nnUNet_preprocessed"]) / "Dataset999_Test"
    pre.mkdir()
    plans, dataset_json = minimal_plans("unetr", "tiny", [32, 32, 32])
    (pre / "nnUNetPlans_UNETR_tiny.json").write_text(json.dumps(plans))
    (pre / "dataset.json").write_text(json.dumps(dataset_json))
    # initialize() looks at the preprocessed folder's file type before -pretrained_weights is read; no case needed
    data = pre / plans["configurations"]["3d_fullres"]["data_identifier"]
    data.mkdir()
    (data / "case_000.b2nd").write_bytes(b"")
    marker = tmp_path / "PWNED"
    evil = _payload_checkpoint(tmp_path / "evil.pth", marker)
    cmd = [bin_path("nnUNetv2_train"), "999", "3d_fullres", "all", "-tr", "nnUNetTrainer_UNETR_LoRAPT_smoke", "-p",
           "nnUNetPlans_UNETR_tiny", "-device", "cpu", "-pretrained_weights", str(evil)]
    proc = subprocess.run(cmd, env=nnunet_env, capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert _refused(proc, marker), proc.stdout[-2000:] + proc.stderr[-2000:]
    last = [line for line in proc.stderr.strip().splitlines() if line.strip()][-1]
    assert "UnsafeCheckpointError" in last and "system" in last and "HIPPO_PEFT_TRUST_PICKLE=1" in last



def test_broken_adapter_files_give_one_line_and_write_nothing(tmp_path, capsys):
    """apply-adapter on an adapter JSON with missing / unknown fields or not JSON, and on adapter tensors of the
    wrong shape, dtype or with NaN, a tampered safetensors file: exit 2, one line, nothing written."""
    from safetensors.torch import load_file, save_file

    from hippo_peft.cli import main
    from hippo_peft.trainers import nnUNetTrainer_UNETR_LoRAPT
    model, _ = trained_model_folder(tmp_path, nnUNetTrainer_UNETR_LoRAPT)
    good = tmp_path / "adapter"
    assert main(["export-adapter", str(model / "fold_all"), "-o", str(good)]) == 0
    meta = json.loads((good / "adapter_config.json").read_text())
    tensors = load_file(str(good / "adapter.safetensors"))
    name = sorted(tensors)[0]
    cases = {
        "missing field": ({k: v for k, v in meta.items() if k != "base_fingerprint"}, tensors, "missing field"),
        "unknown field": ({**meta, "surprise": 1}, tensors, "unknown field"),
        "wrong shape": (meta, {**tensors, name: torch.zeros(3, 3)}, "wrong shape"),
        "wrong dtype": (meta, {**tensors, name: tensors[name].to(torch.float16)}, "wrong dtype"),
        "NaN": (meta, {**tensors, name: torch.full_like(tensors[name], float("nan"))}, "NaN"),
    }
    capsys.readouterr()
    for case, (m, t, expected) in cases.items():
        folder = tmp_path / case.replace(" ", "_")
        folder.mkdir()
        (folder / "adapter_config.json").write_text(json.dumps(m))
        save_file({k: v.contiguous() for k, v in t.items()}, str(folder / "adapter.safetensors"))
        out = tmp_path / f"out_{folder.name}"
        assert main(["apply-adapter", str(folder), "--base", str(tmp_path / "base.pth"), "--plans",
                     str(model / "plans.json"), "-o", str(out)]) == 2, case
        err = capsys.readouterr().err
        assert expected in err and err.count("\n") == 1 and not out.exists(), (case, err)
    (good / "adapter_config.json").write_text("{not json")
    assert main(["apply-adapter", str(good), "--base", str(tmp_path / "base.pth"), "--plans",
                 str(model / "plans.json"), "-o", str(tmp_path / "o")]) == 2
    assert "not readable JSON" in capsys.readouterr().err


@pytest.mark.e2e
def test_payload_as_benchmark_source_is_refused_before_anything(tmp_path, nnunet_env):
    from hippo_peft.experiments.synthetic import write_dataset
    target = write_dataset(tmp_path / "raw", "Dataset001_Target", 8, seed=2)
    marker = tmp_path / "PWNED"
    evil = _payload_checkpoint(tmp_path / "evil.pth", marker)
    work = tmp_path / "work"
    proc = subprocess.run([bin_path("hippo-peft"), "benchmark", "--target", str(target), "--source", str(evil),
                           "--workdir", str(work), "--shots", "2", "--n-test", "2", "--n-val", "0"],
                          env=nnunet_env, capture_output=True, text=True)
    assert _refused(proc, marker) and proc.returncode == 2 and "--trust-pickle" in proc.stderr, proc.stderr
    assert not work.exists()
