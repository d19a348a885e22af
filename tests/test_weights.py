"""The tolerant pre-trained loader: class change, channel change, foreign MONAI checkpoints, refusals, and where
its report goes."""
import argparse
import logging
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from hippo_peft.networks import build_network, get_arch, get_preset
from hippo_peft.nnunet.weights import (WeightsMismatchError, adapt_input_channels, load_pretrained, read_state_dict,
                                transfer_weights)

UNETR = get_arch("unetr").network_class_name
PATCH = [32, 32, 32]


def unetr(in_ch=1, out_ch=3, preset="tiny", patch=PATCH, seed=0):
    torch.manual_seed(seed)
    return build_network(UNETR, get_preset("unetr", preset), patch, in_ch, out_ch)


def test_same_task_loads_everything_and_reproduces_outputs():
    src, dst = unetr(seed=0), unetr(seed=1)
    report = transfer_weights(dst, src.state_dict(), in_channels=1)
    assert report.fraction == 1.0 and not report.skipped and not report.adapted
    x = torch.randn(1, 1, *PATCH)
    with torch.no_grad():
        assert torch.allclose(src.eval()(x), dst.eval()(x), atol=1e-6)


def test_class_change_reinitialises_only_the_head():
    src, dst = unetr(out_ch=2, seed=0), unetr(out_ch=3, seed=1)
    fresh_head = dst.out.conv.conv.weight.detach().clone()
    report = transfer_weights(dst, src.state_dict(), in_channels=1)
    assert {k for k, _ in report.reinitialised} == {"out.conv.conv.weight", "out.conv.conv.bias"}
    assert torch.equal(dst.out.conv.conv.weight, fresh_head)
    src_sd, dst_sd = src.state_dict(), dst.state_dict()
    for key in report.loaded:
        assert torch.equal(src_sd[key], dst_sd[key]), key
    assert report.fraction > 0.99


def test_channel_change_four_to_one_sums_kernels():
    src, dst = unetr(in_ch=4, out_ch=2, seed=0), unetr(in_ch=1, out_ch=3, seed=1)
    report = transfer_weights(dst, src.state_dict(), in_channels=1)
    adapted = {k for k, _ in report.adapted}
    assert "vit.patch_embedding.patch_embeddings.weight" in adapted
    assert "encoder1.layer.conv1.conv.weight" in adapted
    # a 1-channel image seen by the target == the same image repeated on the source's 4 channels
    x = torch.randn(1, 1, *PATCH)
    with torch.no_grad():
        a = dst.vit.patch_embedding.patch_embeddings(x)
        b = src.vit.patch_embedding.patch_embeddings(x.repeat(1, 4, 1, 1, 1))
    assert torch.allclose(a, b, atol=1e-4, rtol=1e-4)


def test_channel_change_to_more_channels_repeats_and_rescales():
    w = torch.randn(8, 2, 3, 3, 3)
    out = adapt_input_channels(w, 3)
    assert out.shape == (8, 3, 3, 3, 3)
    assert torch.allclose(out[:, 2], w[:, 0] * 2 / 3)  # cyclic repeat, scaled by C_s / C_t
    # when C_t is a multiple of C_s the response to an image repeated on every channel is preserved exactly
    out4 = adapt_input_channels(w, 4)
    x = torch.randn(1, 1, 5, 5, 5)
    conv = lambda weight, inp: torch.nn.functional.conv3d(inp, weight)  # noqa: E731
    assert torch.allclose(conv(out4, x.repeat(1, 4, 1, 1, 1)), conv(w, x.repeat(1, 2, 1, 1, 1)), atol=1e-4)


@pytest.mark.parametrize("wrap", ["plain", "state_dict", "net", "module_prefix", "safetensors"])
def test_foreign_checkpoints_are_read(tmp_path, wrap):
    src = unetr(seed=0)
    sd = src.state_dict()
    path = tmp_path / ("w.safetensors" if wrap == "safetensors" else "w.pt")
    if wrap == "safetensors":
        from safetensors.torch import save_file
        save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    else:
        obj = {"plain": sd, "state_dict": {"state_dict": sd, "epoch": 3}, "net": {"net": sd},
               "module_prefix": {"model": {f"module.{k}": v for k, v in sd.items()}}}[wrap]
        torch.save(obj, path)
    read = read_state_dict(path)
    assert set(read) == set(sd)
    dst = unetr(seed=5)
    logged = []
    report = load_pretrained(dst, path, in_channels=1, log=logged.append)
    assert report.fraction == 1.0 and "100.0 %" in logged[0]


def test_wrong_preset_is_refused_and_nothing_is_written():
    src, dst = unetr(preset="compact", seed=0), unetr(preset="tiny", seed=1)
    before = {k: v.clone() for k, v in dst.state_dict().items()}
    with pytest.raises(WeightsMismatchError, match="another backbone or preset"):
        transfer_weights(dst, src.state_dict(), in_channels=1)
    assert all(torch.equal(before[k], v) for k, v in dst.state_dict().items())


def test_wrong_backbone_is_refused():
    torch.manual_seed(0)
    swin = build_network(get_arch("swinunetr").network_class_name, get_preset("swinunetr", "tiny"), PATCH, 1, 3)
    with pytest.raises(WeightsMismatchError):
        transfer_weights(unetr(), swin.state_dict(), in_channels=1)


def test_unetr_patch_size_mismatch_explains_the_fix():
    src, dst = unetr(patch=[48, 64, 48]), unetr(patch=PATCH)
    with pytest.raises(WeightsMismatchError, match="source's patch size"):
        transfer_weights(dst, src.state_dict(), in_channels=1)


def test_missing_or_empty_files(tmp_path):
    from hippo_peft.safe_load import WeightsFileError
    with pytest.raises(WeightsFileError, match="no such file"):
        read_state_dict(tmp_path / "nope.pt")
    torch.save({"epoch": 1, "note": "no tensors"}, tmp_path / "empty.pt")
    with pytest.raises(WeightsMismatchError, match="no state dict"):
        read_state_dict(tmp_path / "empty.pt")


def test_pretrained_weights_routing_is_scoped_to_our_trainer(monkeypatch):
    """nnUNetv2_train's -pretrained_weights reaches our loader for our trainer's network only; any other network
    (e.g. nnU-Net's own trainer in the same process) still gets nnU-Net's function."""
    import gc

    import nnunetv2.run.run_training as run_training

    from hippo_peft.trainers.base import route_pretrained_weights
    calls = []
    monkeypatch.setattr(run_training, "load_pretrained_weights",
                        lambda network, fname, verbose=False: calls.append(("nnunet", network, fname)))

    class Trainer:  # what route_pretrained_weights uses of a trainer
        def __init__(self, name):
            self.name, self.network = name, nn.Linear(1, 1)

        def load_pretrained_weights(self, fname):
            calls.append((self.name, self.network, fname))

    first, second, other = Trainer("first"), Trainer("second"), nn.Linear(1, 1)
    route_pretrained_weights(first)
    route_pretrained_weights(second)
    run_training.load_pretrained_weights(first.network, "a.pth", verbose=True)
    run_training.load_pretrained_weights(second.network, "b.pth")
    run_training.load_pretrained_weights(other, "c.pth")
    assert calls == [("first", first.network, "a.pth"), ("second", second.network, "b.pth"), ("nnunet", other, "c.pth")]
    network = second.network
    del second
    gc.collect()  # held weakly: a gone trainer's network falls through to nnU-Net's function
    run_training.load_pretrained_weights(network, "d.pth")
    assert calls[-1] == ("nnunet", network, "d.pth")


def test_report_is_logged_by_default(tmp_path, caplog):
    torch.save(unetr(seed=0).state_dict(), tmp_path / "w.pt")
    with caplog.at_level(logging.INFO, logger="hippo_peft"):
        load_pretrained(unetr(seed=1), tmp_path / "w.pt", in_channels=1)
    [record] = caplog.records
    assert record.name == "hippo_peft.nnunet.weights" and record.levelno == logging.INFO
    assert record.getMessage().startswith(f"Loaded pre-trained weights from {tmp_path / 'w.pt'}\npre-trained weights:")


def test_a_trainer_logs_every_message_of_the_load_once(tmp_path, monkeypatch, caplog):
    """nnUNetv2_train configures no logging: what the library logs while a trainer loads weights (here the opt-in
    warning of hippo_peft.safe_load, deep below load_pretrained) goes to the trainer's print_to_log_file, once."""
    from hippo_peft.trainers.base import nnUNetTrainer_TransformerBase

    path = tmp_path / "research.pth"
    torch.save({"state_dict": unetr(seed=0).state_dict(), "args": argparse.Namespace(lr=1e-4)}, path)
    monkeypatch.setenv("HIPPO_PEFT_TRUST_PICKLE", "1")
    lines = []
    trainer = SimpleNamespace(print_to_log_file=lambda *args, **kwargs: lines.append(" ".join(map(str, args))))
    package = logging.getLogger("hippo_peft")
    before = (list(package.handlers), package.level, package.propagate)
    caplog.set_level(logging.INFO)
    with nnUNetTrainer_TransformerBase.library_logs(trainer):
        load_pretrained(unetr(seed=1), path, in_channels=1, log=trainer.print_to_log_file)
    assert [line.split(" ")[0] for line in lines] == ["HIPPO_PEFT_TRUST_PICKLE=1:", "WARNING:", "Loaded"], lines
    assert "unpickling" in lines[1] and "argparse.Namespace" in lines[1]
    assert not caplog.records  # not also through the root logger's handlers
    assert (list(package.handlers), package.level, package.propagate) == before

    # outside a trainer the same warning is a warning of hippo_peft.safe_load (stderr, or the CLI's stdout)
    read_state_dict(path)
    assert [(r.name, r.levelno) for r in caplog.records] == [("hippo_peft.safe_load", logging.WARNING)]


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.parametrize("trainer", ["nnUNetTrainer_UNETR_smoke", "nnUNetTrainer_UNETR_LoRAPT_smoke"])
def test_opt_in_and_report_reach_the_training_log_once(tmp_path, nnunet_env, trainer):
    """`HIPPO_PEFT_TRUST_PICKLE=1 nnUNetv2_train ... -pretrained_weights research.pth`: the opt-in, the unpickling
    warning (logged deep in hippo_peft.safe_load) and the load report are in nnU-Net's training log and on the
    console, each once. The run stops later at the dummy case file; the weights were loaded before."""
    import json
    import subprocess

    from tests.conftest import bin_path, minimal_plans

    pre = Path(nnunet_env["nnUNet_preprocessed"]) / "Dataset999_Test"
    pre.mkdir()
    plans, dataset_json = minimal_plans("unetr", "tiny", PATCH)
    (pre / "nnUNetPlans_UNETR_tiny.json").write_text(json.dumps(plans))
    (pre / "dataset.json").write_text(json.dumps(dataset_json))
    data = pre / plans["configurations"]["3d_fullres"]["data_identifier"]
    data.mkdir()
    (data / "case_000.b2nd").write_bytes(b"")  # initialize() only looks at the file type
    path = tmp_path / "research.pth"
    torch.save({"state_dict": unetr(out_ch=3).state_dict(), "args": argparse.Namespace(lr=1e-4)}, path)
    cmd = [bin_path("nnUNetv2_train"), "999", "3d_fullres", "all", "-tr", trainer, "-p", "nnUNetPlans_UNETR_tiny",
           "-device", "cpu", "-pretrained_weights", str(path)]
    proc = subprocess.run(cmd, env=dict(nnunet_env, HIPPO_PEFT_TRUST_PICKLE="1"), capture_output=True, text=True,
                          cwd=tmp_path, timeout=600)
    [log] = Path(nnunet_env["nnUNet_results"]).rglob("training_log*.txt")
    for text in (log.read_text(), proc.stdout):
        assert text.count("HIPPO_PEFT_TRUST_PICKLE=1: ") == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
        assert text.count(f"WARNING: hippo_peft: unpickling {path} without the allow-list (argparse.Namespace)") == 1
        assert text.count(f"Loaded pre-trained weights from {path}") == 1 and "100.0 %" in text
    assert "unpickling" not in proc.stderr
