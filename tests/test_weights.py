"""The tolerant pre-trained loader: class change, channel change, foreign MONAI checkpoints, refusals, and where
its report goes."""
import argparse
import logging
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from hippo_peft.networks import build_network, get_arch, get_preset
from hippo_peft.nnunet.weights import (SourceWeights, WeightsMismatchError, adapt_input_channels, load_pretrained,
                                       read_source, read_state_dict, transfer_weights)

UNETR = get_arch("unetr").network_class_name
PATCH = [32, 32, 32]
HIPPOCAMPUS = {"background": 0, "Anterior": 1, "Posterior": 2}
HEAD = {"out.conv.conv.weight", "out.conv.conv.bias"}


def unetr(in_ch=1, out_ch=3, preset="tiny", patch=PATCH, seed=0):
    torch.manual_seed(seed)
    return build_network(UNETR, get_preset("unetr", preset), patch, in_ch, out_ch)


def test_same_task_loads_everything_and_reproduces_outputs():
    src, dst = unetr(seed=0), unetr(seed=1)
    report = transfer_weights(dst, SourceWeights(src.state_dict(), HIPPOCAMPUS), 1, target_labels=HIPPOCAMPUS)
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
    report = load_pretrained(dst, path, in_channels=1, log=logged.append, target_labels=HIPPOCAMPUS)
    # everything loads but the head: a foreign file does not record its classes
    assert not report.skipped and {k for k, _ in report.reinitialised} == HEAD
    assert "head: left fresh: the checkpoint does not record its classes" in logged[0]


def test_wrong_preset_is_refused_and_nothing_is_written():
    src, dst = unetr(preset="compact", seed=0), unetr(preset="tiny", seed=1)
    before = {k: v.clone() for k, v in dst.state_dict().items()}
    with pytest.raises(WeightsMismatchError, match="whole encoder .*widths of the 'compact' preset.*--preset compact"):
        transfer_weights(dst, src.state_dict(), in_channels=1)
    assert all(torch.equal(before[k], v) for k, v in dst.state_dict().items())


def test_wrong_backbone_is_refused():
    torch.manual_seed(0)
    swin = build_network(get_arch("swinunetr").network_class_name, get_preset("swinunetr", "tiny"), PATCH, 1, 3)
    with pytest.raises(WeightsMismatchError, match="another backbone or preset"):
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


def preprocessed_stub(nnunet_env: dict, arch: str, patch) -> Path:
    """Dataset999_Test in nnUNet_preprocessed: tiny plans (nnUNetPlans_<UNETR|SwinUNETR>_tiny), dataset.json and one
    empty case file, enough for `nnUNetv2_train` to get past initialize() and -pretrained_weights; it stops at the
    case file later."""
    import json

    from tests.conftest import minimal_plans
    pre = Path(nnunet_env["nnUNet_preprocessed"]) / "Dataset999_Test"
    pre.mkdir()
    plans, dataset_json = minimal_plans(arch, "tiny", patch)
    (pre / f"nnUNetPlans_{get_arch(arch).plans_suffix}_tiny.json").write_text(json.dumps(plans))
    (pre / "dataset.json").write_text(json.dumps(dataset_json))
    data = pre / plans["configurations"]["3d_fullres"]["data_identifier"]
    data.mkdir()
    (data / "case_000.b2nd").write_bytes(b"")  # initialize() only looks at the file type
    return pre


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.parametrize("trainer", ["nnUNetTrainer_UNETR_smoke", "nnUNetTrainer_UNETR_LoRAPT_smoke"])
def test_opt_in_and_report_reach_the_training_log_once(tmp_path, nnunet_env, trainer):
    """`HIPPO_PEFT_TRUST_PICKLE=1 nnUNetv2_train ... -pretrained_weights research.pth`: the opt-in, the unpickling
    warning (logged deep in hippo_peft.safe_load) and the load report are in nnU-Net's training log and on the
    console, each once. The run stops later at the dummy case file; the weights were loaded before."""
    import subprocess

    from tests.conftest import bin_path

    preprocessed_stub(nnunet_env, "unetr", PATCH)
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
        assert text.count(f"Loaded pre-trained weights from {path}") == 1
        assert "head: left fresh: the checkpoint does not record its classes" in text
    assert "unpickling" not in proc.stderr


# ---- the head rules ---------------------------------------------------------------------------------------------
def _head(net):
    return net.out.conv.conv.weight.detach().clone(), net.out.conv.conv.bias.detach().clone()


def test_one_source_class_starts_every_target_class_with_the_whole_structures_probability():
    """Label-shift source (background, hippocampus) -> anterior + posterior: both rows from the hippocampus row,
    biases - log(2); at the start the network's hippocampus probability is the source's, voxel by voxel."""
    src, dst = unetr(out_ch=2, seed=0), unetr(out_ch=3, seed=1)
    source = SourceWeights(src.state_dict(), {"background": 0, "hippocampus": 1}, labels_from="test")
    report = transfer_weights(dst, source, 1, target_labels=HIPPOCAMPUS)
    (w_s, b_s), (w_t, b_t) = _head(src), _head(dst)
    assert torch.equal(w_t[0], w_s[0]) and torch.equal(w_t[1], w_s[1]) and torch.equal(w_t[2], w_s[1])
    assert torch.allclose(b_t[1:], b_s[1] - math.log(2)) and torch.equal(b_t[0], b_s[0])
    x = torch.randn(2, 1, *PATCH)  # a phantom batch
    with torch.no_grad():
        p_src, p_dst = src.eval()(x).softmax(1), dst.eval()(x).softmax(1)
    assert torch.allclose(p_dst[:, 1:].sum(1), p_src[:, 1], atol=1e-5)
    assert torch.allclose(p_dst[:, 0], p_src[:, 0], atol=1e-5)
    text = report.format()
    assert "'Anterior' (row 1) from the source's one foreground class 'hippocampus' (row 1), bias - log(2)" in text
    assert "'Posterior' (row 2)" in text and "background from background" in text
    assert report.to_dict()["head"] == report.head and len(report.head) == 4  # source classes + one line per row


def test_classes_are_mapped_by_name_not_by_row():
    src, dst = unetr(out_ch=3, seed=0), unetr(out_ch=3, seed=1)
    source = SourceWeights(src.state_dict(), {"background": 0, "posterior": 1, "anterior": 2})
    transfer_weights(dst, source, 1, target_labels=HIPPOCAMPUS)
    (w_s, b_s), (w_t, b_t) = _head(src), _head(dst)
    assert torch.equal(w_t[1], w_s[2]) and torch.equal(w_t[2], w_s[1]) and torch.equal(b_t, b_s[[0, 2, 1]])


@pytest.mark.parametrize("labels", [{"background": 0, "edema": 1, "tumour core": 2}, None])
def test_a_same_shape_head_with_other_or_unknown_classes_is_not_copied(labels):
    """Not even its background row: a source-calibrated background beside random foreground rows would hold every
    foreground probability down at the start."""
    src, dst = unetr(out_ch=3, seed=0), unetr(out_ch=3, seed=1)
    fresh = _head(dst)
    report = transfer_weights(dst, SourceWeights(src.state_dict(), labels), 1, target_labels=HIPPOCAMPUS)
    assert torch.equal(_head(dst)[0], fresh[0]) and torch.equal(_head(dst)[1], fresh[1])
    assert {k for k, _ in report.reinitialised} == HEAD
    assert any(("does not record its classes" if labels is None else "2 foreground classes, not one") in line
               for line in report.head), report.head


def test_a_partly_matching_head_copies_the_matches_and_background():
    src, dst = unetr(out_ch=3, seed=0), unetr(out_ch=3, seed=1)
    fresh = _head(dst)
    report = transfer_weights(dst, SourceWeights(src.state_dict(), {"background": 0, "anterior": 1, "tail": 2}), 1,
                              target_labels=HIPPOCAMPUS)
    w_s, w_t = _head(src)[0], _head(dst)[0]
    assert torch.equal(w_t[:2], w_s[:2]) and torch.equal(w_t[2], fresh[0][2])
    assert "'Anterior' (row 1) from the source's 'anterior' (row 1, same name)" in report.head
    assert "'Posterior' (row 2) left fresh: no source class of that name" in report.head


def test_rows_follow_nnunets_label_order_ignore_and_gaps():
    """nnU-Net's head has one row per label but 'ignore', sorted by value; values need not be consecutive."""
    src, dst = unetr(out_ch=2, seed=0), unetr(out_ch=3, seed=1)
    source = SourceWeights(src.state_dict(), {"background": 0, "hippocampus": 1, "ignore": 5})
    target = {"background": 0, "Anterior": 1, "Posterior": 4, "ignore": 9}
    report = transfer_weights(dst, source, 1, target_labels=target)
    (w_s, b_s), (w_t, b_t) = _head(src), _head(dst)
    assert torch.equal(w_t[2], w_s[1]) and torch.allclose(b_t[1:], b_s[1] - math.log(2))  # n = 2: 'ignore' is no row
    assert any("'Posterior' (row 2)" in line for line in report.head)


@pytest.mark.parametrize("missing", ["bias", "rows"])
def test_a_head_without_its_bias_stays_fresh_whole(missing):
    """The log(n) shift lives in the bias: weights copied beside a fresh bias would break the start probability."""
    src, dst = unetr(out_ch=2, seed=0), unetr(out_ch=3, seed=1)
    state = src.state_dict()
    if missing == "bias":
        del state["out.conv.conv.bias"]
    else:
        state["out.conv.conv.bias"] = torch.zeros(5)  # another row count than its weight
    fresh = _head(dst)
    report = transfer_weights(dst, SourceWeights(state, {"background": 0, "hippocampus": 1}), 1,
                              target_labels=HIPPOCAMPUS)
    assert torch.equal(_head(dst)[0], fresh[0]) and torch.equal(_head(dst)[1], fresh[1])
    assert report.head[-1] == ("left fresh: the checkpoint lacks out.conv.conv.bias or has it in another shape"
                               if missing == "bias" else "left fresh: the checkpoint's head tensors have different "
                                                         "row counts")


def test_an_adapted_checkpoint_is_refused_with_the_merge_command(tmp_path):
    torch.save({"network_weights": unetr().state_dict(), "hippo_peft_adapter": {"method": "lorapt"}},
               tmp_path / "adapted.pth")
    with pytest.raises(WeightsMismatchError, match="adaptation trainers \\(lorapt\\).*hippo-peft merge"):
        load_pretrained(unetr(seed=1), tmp_path / "adapted.pth", in_channels=1, target_labels=HIPPOCAMPUS)


@pytest.mark.parametrize("case", ["region source", "regions_class_order", "region target", "fresh trainer"])
def test_region_heads_and_freshhead_trainers_are_never_mapped(case, tmp_path):
    src, dst = unetr(out_ch=2, seed=0), unetr(out_ch=3, seed=1)
    fresh = _head(dst)
    source = SourceWeights(src.state_dict(), {"background": 0, "hippocampus": 1})
    target, regions, head_init = HIPPOCAMPUS, False, "source"
    if case == "region source":
        source.labels = {"background": 0, "whole tumour": [1, 2, 3], "tumour core": [2, 3]}
    elif case == "regions_class_order":  # what an nnU-Net region-based checkpoint records
        torch.save({"network_weights": src.state_dict(), "init_args": {"dataset_json": {
            "labels": {"background": 0, "hippocampus": 1}, "regions_class_order": [1]}}}, tmp_path / "r.pth")
        source = read_source(tmp_path / "r.pth")
        assert source.regions and source.labels_from.startswith("the checkpoint's dataset.json")
    elif case == "region target":
        regions = True
    else:
        head_init = "fresh"
    report = transfer_weights(dst, source, 1, target_labels=target, target_regions=regions, head_init=head_init)
    assert torch.equal(_head(dst)[0], fresh[0]) and {k for k, _ in report.reinitialised} == HEAD
    assert any(("region" if case != "fresh trainer" else "_freshhead") in line for line in report.head)


def test_nnunet_checkpoints_and_imported_files_record_their_classes(tmp_path):
    sd = unetr(out_ch=2).state_dict()
    torch.save({"network_weights": sd, "init_args": {"dataset_json": {"labels": {"background": 0, "hc": 1}}}},
               tmp_path / "nnunet.pth")
    torch.save({"network_weights": sd, "hippo_peft_import": {"labels": HIPPOCAMPUS, "regions": False}},
               tmp_path / "imported.pth")
    assert read_source(tmp_path / "nnunet.pth").labels == {"background": 0, "hc": 1}
    assert read_source(tmp_path / "imported.pth").labels == HIPPOCAMPUS
    torch.save(sd, tmp_path / "plain.pth")
    assert read_source(tmp_path / "plain.pth").labels is None


# ---- public SwinUNETR files ---------------------------------------------------------------------------------------
SWIN = get_arch("swinunetr").network_class_name
SWIN_PATCH = [64, 64, 64]


def swin(in_ch=1, out_ch=3, preset="tiny", seed=0):
    torch.manual_seed(seed)
    return build_network(SWIN, get_preset("swinunetr", preset), SWIN_PATCH, in_ch, out_ch)


def ssl_encoder_file(path, preset="tiny", drop=None):
    """A file in the layout of MONAI's self-supervised model_swinvit.pt: {"state_dict": {"module.patch_embed...",
    "module.layersN.0.blocks.i... mlp.fc1/fc2", ...}} plus the pre-training heads, exactly those keys and shapes."""
    enc = swin(preset=preset, seed=7).swinViT.state_dict()
    state = {}
    for key, value in enc.items():
        key = key.replace(".mlp.linear1.", ".mlp.fc1.").replace(".mlp.linear2.", ".mlp.fc2.")
        if key != drop:
            state[f"module.{key}"] = value
    state["module.norm.weight"] = torch.ones(enc["layers4.0.downsample.reduction.weight"].shape[0])
    state["module.rotation_head.weight"] = torch.randn(4, 8)
    torch.save({"epoch": 100, "state_dict": state}, path)
    return path


def test_the_self_supervised_swin_encoder_loads_as_monai_load_from_loads_it(tmp_path):
    path = ssl_encoder_file(tmp_path / "model_swinvit.pt")
    ours, reference = swin(seed=1), swin(seed=1)
    report = transfer_weights(ours, read_source(path), 1, target_labels=HIPPOCAMPUS)
    reference.load_from(torch.load(path, weights_only=True))  # MONAI's own mapping
    ref = reference.state_dict()
    for key, value in ours.state_dict().items():  # encoder as load_from has it; decoder and head untouched (seed 1)
        assert torch.equal(value, ref[key]), key
    assert report.layout.startswith("MONAI's self-supervised Swin encoder")
    assert {"norm.weight", "rotation_head.weight"} <= set(report.unused)
    assert HEAD <= {k for k, why in report.skipped if why == "not in checkpoint"}
    assert report.loaded and all(k.startswith("swinViT.") for k in report.loaded)


def test_the_swin_encoder_renamed_by_monais_btcv_script_loads(tmp_path):
    """Copies of model_swinvit.pt renamed by MONAI's BTCV script: swin_vit.* with MONAI's linear1 / linear2."""
    enc = swin(seed=7).swinViT.state_dict()
    torch.save({"state_dict": {f"swin_vit.{k}": v for k, v in enc.items()}}, tmp_path / "btcv.pt")
    ours = swin(seed=1)
    transfer_weights(ours, read_source(tmp_path / "btcv.pt"), 1, target_labels=HIPPOCAMPUS)
    assert all(torch.equal(v, enc[k]) for k, v in ours.swinViT.state_dict().items())


def test_an_encoder_with_a_missing_block_is_refused_naming_it(tmp_path):
    path = ssl_encoder_file(tmp_path / "cut.pt", drop="layers3.0.blocks.0.attn.qkv.weight")
    dst = swin(seed=1)
    before = {k: v.clone() for k, v in dst.state_dict().items()}
    with pytest.raises(WeightsMismatchError, match=r"1 of \d+ encoder tensors.*swinViT.layers3.0.blocks.0.attn.qkv."
                                                   r"weight: not in checkpoint.*has this network's widths but "
                                                   r"lacks those tensors.*Nothing was loaded"):
        transfer_weights(dst, read_source(path), 1, target_labels=HIPPOCAMPUS)
    assert all(torch.equal(before[k], v) for k, v in dst.state_dict().items())


def test_an_encoder_of_another_preset_names_the_preset(tmp_path):
    path = ssl_encoder_file(tmp_path / "compact.pt", preset="compact")
    with pytest.raises(WeightsMismatchError, match="widths of the 'compact' preset.*--arch swinunetr --preset compact"):
        transfer_weights(swin(seed=1), read_source(path), 1, target_labels=HIPPOCAMPUS)


def test_a_brats_2021_fold_checkpoint_loads_with_its_region_head_fresh(tmp_path):
    """BraTS 2021 SwinUNETR folds: {"epoch", "best_acc", "state_dict": MONAI keys}, 4 MRI channels, a 3-row sigmoid
    head (TC / WT / ET) and no record of it: the channels are adapted, the head is not copied by its shape."""
    src = swin(in_ch=4, out_ch=3, seed=0)
    torch.save({"epoch": 300, "best_acc": 0.9, "state_dict": src.state_dict()}, tmp_path / "fold1_f48_ep300_4gpu.pt")
    dst = swin(seed=1)
    fresh = _head(dst)
    report = transfer_weights(dst, read_source(tmp_path / "fold1_f48_ep300_4gpu.pt"), 1, target_labels=HIPPOCAMPUS)
    assert "swinViT.patch_embed.proj.weight" in {k for k, _ in report.adapted}
    assert torch.equal(_head(dst)[0], fresh[0]) and {k for k, _ in report.reinitialised} == HEAD


@pytest.mark.e2e
@pytest.mark.slow
def test_public_swinunetr_files_load_through_import_weights_and_pretrained_weights(tmp_path, nnunet_env):
    """The two public SwinUNETR layouts through the user's commands: MONAI's self-supervised encoder straight into
    `nnUNetv2_train -pretrained_weights` (PDoRA, whose decomposition needs the loaded encoder), a BraTS 2021 fold
    through `hippo-peft import-weights` and then `-pretrained_weights`. The runs stop later at the dummy case file;
    the weights were loaded before."""
    import json
    import subprocess

    from tests.conftest import bin_path, run

    pre = preprocessed_stub(nnunet_env, "swinunetr", SWIN_PATCH)

    def train(trainer: str, weights: Path) -> dict:
        cmd = [bin_path("nnUNetv2_train"), "999", "3d_fullres", "all", "-tr", trainer, "-p",
               "nnUNetPlans_SwinUNETR_tiny", "-device", "cpu", "-pretrained_weights", str(weights)]
        proc = subprocess.run(cmd, env=nnunet_env, capture_output=True, text=True, cwd=tmp_path, timeout=600)
        [report] = Path(nnunet_env["nnUNet_results"]).glob(f"*/{trainer}__*/fold_all/pretrained_weights_report.json")
        assert f"Loaded pre-trained weights from {weights}" in proc.stdout, proc.stdout[-3000:] + proc.stderr[-3000:]
        return json.loads(report.read_text())

    report = train("nnUNetTrainer_SwinUNETR_PDoRA_smoke", ssl_encoder_file(tmp_path / "model_swinvit.pt"))
    assert report["layout"].startswith("MONAI's self-supervised Swin encoder") and not report["adapted"]
    assert all(k.startswith("swinViT.") for k in report["loaded"])

    brats = tmp_path / "fold1_f48_ep300_4gpu.pt"
    torch.save({"epoch": 300, "best_acc": 0.9, "state_dict": swin(in_ch=4, out_ch=3).state_dict()}, brats)
    imported = tmp_path / "brats_for_hippocampus.pth"
    cmd = [bin_path("hippo-peft"), "import-weights", str(brats), "--plans", str(pre / "nnUNetPlans_SwinUNETR_tiny.json"),
           "-o", str(imported)]
    refused = run([*cmd, "--source-labels", "tc,wt,et"], nnunet_env, tmp_path, check=False)
    assert refused.returncode == 2 and "region-based" in refused.stderr and not imported.exists()
    proc = run(cmd, nnunet_env, tmp_path)
    assert "input channels 4 -> 1" in proc.stdout and "left fresh: the checkpoint does not record its classes" in proc.stdout
    report = train("nnUNetTrainer_SwinUNETR_smoke", imported)
    assert report["head"][-1] == "left fresh: hippo-peft import-weights left the head fresh"
    assert not report["skipped"] and not report["adapted"]  # the imported file is the target's network
    assert {k for k, _ in report["reinitialised"]} == HEAD


def test_import_weights_maps_a_foreign_head_named_by_source_labels(tmp_path):
    import json

    from hippo_peft.errors import InputError
    from hippo_peft.nnunet.import_weights import import_weights
    from tests.conftest import minimal_plans

    plans, dataset_json = minimal_plans("unetr", "tiny", PATCH)
    (tmp_path / "plans.json").write_text(json.dumps(plans))
    (tmp_path / "dataset.json").write_text(json.dumps(dataset_json))
    src = unetr(out_ch=2, seed=0)
    torch.save(src.state_dict(), tmp_path / "whole_hippocampus.pt")
    out = tmp_path / "imported.pth"
    with pytest.raises(InputError, match="first row must be background"):
        import_weights(tmp_path / "whole_hippocampus.pt", tmp_path / "plans.json", out, source_labels="hc,background")
    report = import_weights(tmp_path / "whole_hippocampus.pt", tmp_path / "plans.json", out,
                            source_labels="background,hippocampus")
    saved = torch.load(out, weights_only=True)
    w = saved["network_weights"]["out.conv.conv.weight"]
    assert torch.equal(w[1], src.out.conv.conv.weight[1]) and torch.equal(w[2], src.out.conv.conv.weight[1])
    assert saved["hippo_peft_import"]["labels"] == dataset_json["labels"]
    assert saved["hippo_peft_import"]["source_labels_from"] == "--source-labels" and report.head[1:] == \
        saved["hippo_peft_import"]["head"][1:]
