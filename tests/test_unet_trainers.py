"""The trainers that adapt nnU-Net's own U-Nets, in process (no data, no training): built from nnU-Net's plans as
nnU-Net plans them, the optimizer nnU-Net's (SGD, Nesterov, momentum 0.99) with an adapter group, what trains per
setting, the adapter decomposed from ``-pretrained_weights`` with the head rules on every deep-supervision output,
and plans of another network refused at once."""
import copy

import pytest
import torch
from torch import nn

from hippo_peft import adapters as A
from hippo_peft import trainers
from hippo_peft.errors import RefusedError
from tests.conftest import minimal_plans

UNET_METHODS = [s for s in A.method_specs() if s.conv_layer is not None or s.name in ("headonly", "decoderonly")]


def unet_plans(network: str = "PlainConvUNet") -> tuple[dict, dict]:
    """Plans of a 3-stage U-Net in the form nnU-Net's planner writes them (class path, arch_kwargs, imports)."""
    plans, dataset_json = minimal_plans("unet", None, [16, 16, 16])
    kw = {"n_stages": 3, "features_per_stage": [8, 16, 32], "conv_op": "torch.nn.modules.conv.Conv3d",
          "kernel_sizes": [[3, 3, 3]] * 3, "strides": [[1, 1, 1], [2, 2, 2], [2, 2, 2]],
          "n_conv_per_stage_decoder": [1, 1], "conv_bias": True,
          "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d", "norm_op_kwargs": {"eps": 1e-5, "affine": True},
          "dropout_op": None, "dropout_op_kwargs": None, "nonlin": "torch.nn.LeakyReLU",
          "nonlin_kwargs": {"inplace": True}}
    kw["n_conv_per_stage" if network == "PlainConvUNet" else "n_blocks_per_stage"] = [2, 2, 2]
    config = plans["configurations"]["3d_fullres"]
    config["architecture"] = {"network_class_name": f"dynamic_network_architectures.architectures.unet.{network}",
                              "arch_kwargs": kw, "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"]}
    config["pool_op_kernel_sizes"] = [[1, 1, 1], [2, 2, 2], [2, 2, 2]]
    config["conv_kernel_sizes"] = [[3, 3, 3]] * 3
    return plans, dataset_json


@pytest.fixture
def nnunet_folders(tmp_path, monkeypatch):
    """nnU-Net's folders (read from the environment when used) in tmp_path, and the file initialize() reads the data
    format from."""
    for var, sub in (("nnUNet_raw", "raw"), ("nnUNet_preprocessed", "pre"), ("nnUNet_results", "results")):
        monkeypatch.setenv(var, str(tmp_path / sub))
    data = tmp_path / "pre" / "Dataset999_Test" / "nnUNetPlans_3d_fullres"
    data.mkdir(parents=True)
    (data / "case_000.b2nd").write_bytes(b"")
    return tmp_path


def make_trainer(cls, network: str = "PlainConvUNet", dataset_json: dict | None = None):
    plans, dj = unet_plans(network)
    plans["continue_training"] = False  # what nnUNetv2_train adds
    trainer = cls(plans, "3d_fullres", "all", dataset_json or dj, torch.device("cpu"))
    trainer.initialize()
    return trainer


SETTINGS = [(s, False) for s in UNET_METHODS] + [(s, True) for s in UNET_METHODS if not s.baseline]


@pytest.mark.parametrize("spec,strict", SETTINGS, ids=lambda v: getattr(v, "name", "strict" if v else "papers"))
def test_unet_trainers_adapt_the_planned_network_with_nnunets_optimizer(spec, strict, nnunet_folders):
    name = f"nnUNetTrainer_UNet_{spec.trainer_suffix}{'_Strict' if strict else ''}_smoke"
    trainer = make_trainer(getattr(trainers, name))
    net = trainer.plain_network
    assert type(net).__name__ == "PlainConvUNet" and trainer.enable_deep_supervision
    optimizer = trainer.optimizer
    assert isinstance(optimizer, torch.optim.SGD)
    groups = {g["name"]: g for g in optimizer.param_groups}
    assert all(g["momentum"] == 0.99 and g["nesterov"] for g in groups.values())
    assert groups["decoder+head"]["lr"] == pytest.approx(1e-2) and groups["decoder+head"]["weight_decay"] == 3e-5
    trainable = {n for n, p in net.named_parameters() if p.requires_grad}
    adapter_names = {t for m in net.modules() for t in getattr(m, "trainable_names", ())}
    in_adapter = {n for n in trainable if n.rsplit(".", 1)[-1] in adapter_names or ".serial." in n}
    outside = trainable - in_adapter
    if spec.baseline:
        assert not in_adapter and "adapter" not in groups
    else:
        assert in_adapter and all(n.startswith("encoder.") for n in in_adapter)
        assert groups["adapter"]["lr"] == pytest.approx(1e-2) and groups["adapter"]["weight_decay"] == 3e-5
        assert {id(p) for p in groups["adapter"]["params"]} == {id(p) for n, p in net.named_parameters()
                                                                 if n in in_adapter}
        # every encoder conv is adapted: no plain Conv3d left in the encoder, none run stale
        assert not [n for n, m in net.encoder.named_modules() if type(m) is nn.Conv3d]
    head_only = strict or spec.name == "headonly"
    decoder = ("decoder.seg_layers.",) if head_only else ("decoder.stages.", "decoder.transpconvs.",
                                                          "decoder.seg_layers.")
    assert outside == {n for n, _ in net.named_parameters() if n.startswith(decoder)}
    assert not any(n.startswith("encoder.") for n in outside), "the encoder's norms stay frozen"


def test_pretrained_weights_decompose_the_source_and_map_the_head_on_every_output(nnunet_folders):
    """A one-class nnU-Net source (whole hippocampus): the adapted network starts at the source's encoder and decoder,
    and on every deep-supervision output the two target classes together keep the source's probability."""
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    trainer = make_trainer(trainers.nnUNetTrainer_UNet_LoRAPT_smoke)
    torch.manual_seed(5)
    source = nnUNetTrainer.build_network_architecture(trainer.plans_manager, trainer.configuration_manager, 1, 2, True)
    plans, dj = unet_plans()
    init_args = {"plans": plans, "configuration": "3d_fullres", "fold": 0,
                 "dataset_json": dict(dj, labels={"background": 0, "hippocampus": 1})}
    path = nnunet_folders / "source.pth"
    torch.save({"network_weights": source.state_dict(), "trainer_name": "nnUNetTrainer", "init_args": init_args}, path)
    report = trainer.load_pretrained_weights(str(path))
    assert any("one foreground class 'hippocampus'" in line for line in report.to_dict()["head"])
    net = trainer.plain_network.eval()
    source.eval()
    x = torch.randn(1, 1, 16, 16, 16)
    with torch.no_grad():
        outs, refs = net(x), source(x)
    assert len(outs) == len(refs) == 2
    for out, ref in zip(outs, refs):
        p, q = out.softmax(1), ref.softmax(1)
        assert torch.allclose(p[:, 0], q[:, 0], atol=1e-5) and torch.allclose(p[:, 1:].sum(1), q[:, 1], atol=1e-5)
    for name, conv in source.encoder.named_modules():
        if type(conv) is nn.Conv3d:
            adapted = net.encoder.get_submodule(name)
            assert torch.allclose(adapted.kernel(), conv.weight, atol=1e-5), name


def test_residual_encoder_plans_work_and_other_networks_are_refused(nnunet_folders):
    trainer = make_trainer(trainers.nnUNetTrainer_UNet_HyPS_smoke, network="ResidualEncoderUNet")
    assert type(trainer.plain_network).__name__ == "ResidualEncoderUNet"
    assert A.trainable_report(trainer.plain_network).trainable > 0
    plans, dj = minimal_plans("unetr", "tiny", [32, 32, 32])  # a MONAI UNETR in the plans
    plans["continue_training"] = False
    with pytest.raises(RefusedError, match="adapts nnU-Net's own conv U-Nets .* builds monai.networks.nets.UNETR"):
        trainers.nnUNetTrainer_UNet_LoRAPT(copy.deepcopy(plans), "3d_fullres", "all", dj, torch.device("cpu"))



def _source_checkpoint(trainer, folder, n_out: int = 3, seed: int = 5):
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    torch.manual_seed(seed)
    source = nnUNetTrainer.build_network_architecture(trainer.plans_manager, trainer.configuration_manager, 1, n_out,
                                                      False)
    path = folder / "source.pth"
    torch.save({"network_weights": source.state_dict(), "trainer_name": "nnUNetTrainer", "init_args": {
        "plans": trainer.plans_manager.plans, "configuration": "3d_fullres", "fold": 0,
        "dataset_json": trainer.dataset_json}}, path)
    return source, path


@pytest.mark.parametrize("method", ["LoRAPT", "PDoRA"])
def test_unet_adapter_files_and_merge_into_nnunets_own_trainer(method, nnunet_folders):
    """export-adapter / apply-adapter reproduce the trained U-Net; merge writes a model folder of nnU-Net's own
    nnUNetTrainer with nnU-Net's keys and the adapted network's outputs."""
    import json

    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    from hippo_peft.nnunet.adapter_files import apply_adapter, export_adapter, merge_model
    from hippo_peft.nnunet.plans import network_io
    trainer = make_trainer(getattr(trainers, f"nnUNetTrainer_UNet_{method}_smoke"))
    _, source_file = _source_checkpoint(trainer, nnunet_folders)
    trainer.load_pretrained_weights(str(source_file))
    net = trainer.plain_network
    with torch.no_grad():  # as if trained: adapter and decoder away from their start
        for p in A.trainable_parameters(net):
            p.add_(0.05 * torch.randn_like(p))
    model_dir = nnunet_folders / "model"
    (model_dir / "fold_all").mkdir(parents=True)
    (model_dir / "plans.json").write_text(json.dumps(trainer.plans_manager.plans))
    (model_dir / "dataset.json").write_text(json.dumps(trainer.dataset_json))
    trainer.save_checkpoint(str(model_dir / "fold_all" / "checkpoint_final.pth"))
    x = torch.randn(1, 1, 16, 16, 16)
    net.eval().decoder.deep_supervision = False
    with torch.no_grad():
        expected = net(x)

    meta = export_adapter(model_dir / "fold_all", nnunet_folders / "adapter")
    assert meta["arch"] == "unet" and meta["trainer"] == f"nnUNetTrainer_UNet_{method}_smoke"
    applied = apply_adapter(nnunet_folders / "adapter", source_file, model_dir / "plans.json", nnunet_folders / "app")
    merged_dir = merge_model(model_dir, nnunet_folders / "merged")
    pm, cm, n_in, n_out = network_io(trainer.plans_manager.plans, trainer.dataset_json, "3d_fullres")
    for path, trainer_name in ((applied, f"nnUNetTrainer_UNet_{method}_smoke"),
                               (merged_dir / "fold_all" / "checkpoint_final.pth", "nnUNetTrainer")):
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
        assert checkpoint["trainer_name"] == trainer_name
        cls = nnUNetTrainer if trainer_name == "nnUNetTrainer" else getattr(trainers, trainer_name)
        rebuilt = cls.build_network_architecture(pm, cm, n_in, n_out, False)
        rebuilt.load_state_dict(checkpoint["network_weights"])  # strict, as nnU-Net's predictor loads
        with torch.no_grad():
            assert torch.allclose(rebuilt.eval()(x), expected, atol=1e-4), trainer_name
    plain_keys = set(nnUNetTrainer.build_network_architecture(pm, cm, n_in, n_out, False).state_dict())
    merged = torch.load(merged_dir / "fold_all" / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    assert set(merged["network_weights"]) == plain_keys


def test_unet_trainer_resumes_its_own_checkpoint_and_refuses_another_methods(nnunet_folders):
    """``nnUNetv2_train --c``: the same trainer restores network, optimizer groups and the adapter record; another
    method's trainer refuses the checkpoint with the trainer that wrote it."""
    trainer = make_trainer(trainers.nnUNetTrainer_UNet_LoRAPT_smoke)
    _, source_file = _source_checkpoint(trainer, nnunet_folders)
    trainer.load_pretrained_weights(str(source_file))
    with torch.no_grad():
        for p in A.trainable_parameters(trainer.plain_network):
            p.add_(0.05 * torch.randn_like(p))
    path = nnunet_folders / "checkpoint_latest.pth"
    trainer.save_checkpoint(str(path))
    resumed = make_trainer(trainers.nnUNetTrainer_UNet_LoRAPT_smoke)
    resumed.load_checkpoint(str(path))
    assert resumed.pretrained_loaded and resumed.base_fingerprint == trainer.base_fingerprint
    for (name, a), b in zip(trainer.plain_network.state_dict().items(), resumed.plain_network.state_dict().values()):
        assert torch.equal(a, b), name
    assert [g["name"] for g in resumed.optimizer.param_groups] == ["adapter", "decoder+head"]
    other = make_trainer(trainers.nnUNetTrainer_UNet_PiSSA_smoke)
    with pytest.raises(RefusedError, match="was trained with adapter .*lorapt"):
        other.load_checkpoint(str(path))

@pytest.mark.e2e
@pytest.mark.parametrize("planner,plans_name,method", [
    (None, "nnUNetPlans", "LoRAPT"),  # PlainConvUNet
    ("nnUNetPlannerResEncM", "nnUNetResEncUNetMPlans", "PDoRA"),  # ResidualEncoderUNet
], ids=["PlainConvUNet-LoRAPT", "ResidualEncoderUNet-PDoRA"])
def test_unet_adapter_through_nnunets_own_commands(planner, plans_name, method, hippocampus, nnunet_env, tmp_path):
    """Stock nnUNetv2_plan_and_preprocess, then nnUNetv2_train -tr nnUNetTrainer_UNet_<METHOD>_smoke
    -pretrained_weights with an nnU-Net checkpoint of the same plans, then nnUNetv2_predict -tr with the same name:
    the adapter is decomposed from the source, frozen tensors stay the source's, the checkpoint records the adapter,
    and the model merged into nnU-Net's own trainer predicts the same segmentation with stock nnU-Net."""
    import json
    import re

    import numpy as np
    import SimpleITK as sitk
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    from tests.conftest import bin_path, link_cases, run, write_dataset_json
    cases = sorted(p.name[: -len(".nii.gz")] for p in (hippocampus / "labelsTr").glob("*.nii.gz"))[:7]
    raw = tmp_path / "nnUNet_raw" / "Dataset105_HippoUNet"
    link_cases(hippocampus, raw, cases[:6], "Tr")
    link_cases(hippocampus, raw, cases[6:], "Ts", labels_dir="labelsHeldOut")
    write_dataset_json(raw, hippocampus, 6)
    env, cwd = nnunet_env, tmp_path
    run([bin_path("nnUNetv2_plan_and_preprocess"), "-d", "105", "-c", "3d_fullres", "-np", "1",
         *(["-pl", planner] if planner else [])], dict(env, nnUNet_n_proc_DA="1"), cwd)
    pre = tmp_path / "nnUNet_preprocessed" / raw.name
    plans = json.loads((pre / f"{plans_name}.json").read_text())
    dataset_json = json.loads((pre / "dataset.json").read_text())
    pm = PlansManager(plans)
    torch.manual_seed(0)
    source = nnUNetTrainer.build_network_architecture(pm, pm.get_configuration("3d_fullres"), 1, 3, True)
    src = {k: v.clone() for k, v in source.state_dict().items()}
    source_file = tmp_path / "source.pth"
    torch.save({"network_weights": src, "trainer_name": "nnUNetTrainer", "init_args": {
        "plans": plans, "configuration": "3d_fullres", "fold": 0, "dataset_json": dataset_json}}, source_file)
    trainer = f"nnUNetTrainer_UNet_{method}_smoke"
    # fold 0 of nnU-Net's own 5-fold split: its final validation predicts 1-2 cases, not all 6
    run([bin_path("nnUNetv2_train"), "105", "3d_fullres", "0", "-tr", trainer, "-p", plans_name, "-device", "cpu",
         "-pretrained_weights", str(source_file)], env, cwd)
    fold = tmp_path / "nnUNet_results" / raw.name / f"{trainer}__{plans_name}__3d_fullres" / "fold_0"
    log = next(fold.glob("training_log*.txt")).read_text()
    assert f"{method.lower()} decomposed from the pre-trained weights" in log
    assert "SGD, Nesterov, momentum 0.99" in log and type(source).__name__ in plans["configurations"]["3d_fullres"][
        "architecture"]["network_class_name"]
    checkpoint = torch.load(fold / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    assert checkpoint["hippo_peft_adapter"]["config"]["targets"] == "all"
    net = checkpoint["network_weights"]
    norm = next(k for k in src if re.fullmatch(r"encoder\..*norm\.weight", k))
    assert torch.equal(net[norm], src[norm]), "the encoder's norms stay the source's"
    # the full-resolution output (nnU-Net's deep-supervision loss gives the lowest one weight 0)
    last = max(int(k.split(".")[2]) for k in src if k.startswith("decoder.seg_layers."))
    assert not torch.equal(net[f"decoder.seg_layers.{last}.weight"], src[f"decoder.seg_layers.{last}.weight"])
    pred = tmp_path / "pred"
    run([bin_path("nnUNetv2_predict"), "-i", str(raw / "imagesTs"), "-o", str(pred), "-d", "105", "-c",
         "3d_fullres", "-tr", trainer, "-p", plans_name, "-f", "0", "-device", "cpu", "-npp", "1", "-nps", "1"],
        env, cwd)
    seg = sitk.GetArrayFromImage(sitk.ReadImage(str(pred / f"{cases[6]}.nii.gz")))
    ref = sitk.GetArrayFromImage(sitk.ReadImage(str(raw / "labelsHeldOut" / f"{cases[6]}.nii.gz")))
    assert seg.shape == ref.shape and set(np.unique(seg)) <= {0, 1, 2}
    # merged into nnU-Net's own trainer: stock nnU-Net predicts the same segmentation
    merged = tmp_path / "merged"
    run([bin_path("hippo-peft"), "merge", str(fold.parent), "-o", str(merged)], env, cwd)
    merged_checkpoint = torch.load(merged / "fold_0" / "checkpoint_final.pth", map_location="cpu",
                                   weights_only=False)
    assert merged_checkpoint["trainer_name"] == "nnUNetTrainer" and set(merged_checkpoint["network_weights"]) == set(src)
    # the first encoder kernel: the source's moved by a few small steps (a decomposition of other weights would be
    # off by ~100 %)
    first = next(k for k in src if re.fullmatch(r"encoder\..*conv\.weight", k))
    moved = float((merged_checkpoint["network_weights"][first] - src[first]).norm() / src[first].norm())
    assert 0 < moved < 0.25, moved
    if planner is None:  # merging is network-agnostic: one stock prediction from a merged model suffices
        pred_merged = tmp_path / "pred_merged"
        run([bin_path("nnUNetv2_predict_from_modelfolder"), "-i", str(raw / "imagesTs"), "-o", str(pred_merged),
             "-m", str(merged), "-f", "0", "-device", "cpu", "-npp", "1", "-nps", "1"], env, cwd)
        assert np.array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(pred_merged / f"{cases[6]}.nii.gz"))), seg)
