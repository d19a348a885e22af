"""Backbones from presets and plans: every preset builds and trains one step at the planned patch size; bad
sizes fail early with an actionable message."""
import math

import pytest
import torch

from hippo_peft.networks import PRESETS, build_network, get_arch, get_preset
from hippo_peft.nnunet.plans import (adapt_plans_for_trainer, check_patch_size, make_configuration, round_patch_size)
from hippo_peft.nnunet.schedule import WarmupPolyLRScheduler
from tests.conftest import minimal_plans

# nnU-Net plans [40, 56, 40] for the MSD hippocampus crops; rounded up per backbone
PLANNED = {"unetr": [48, 64, 48], "swinunetr": [64, 64, 64]}


@pytest.mark.parametrize("arch,preset", [(a, p) for a in PRESETS for p in PRESETS[a]])
def test_every_preset_runs_forward_backward_at_planned_patch(arch, preset):
    torch.manual_seed(0)
    net = build_network(get_arch(arch).network_class_name, get_preset(arch, preset), PLANNED[arch], 1, 3)
    x = torch.randn(1, 1, *PLANNED[arch])
    out = net(x)
    assert out.shape == (1, 3, *PLANNED[arch])
    out.square().mean().backward()
    grads = [p.grad for p in net.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0


def test_paper_presets_have_published_sizes():
    unetr = build_network("monai.networks.nets.UNETR", get_preset("unetr", "paper"), [96, 96, 96], 1, 3)
    n = sum(p.numel() for p in unetr.parameters())
    assert 90e6 < n < 95e6  # UNETR-base, ~93 M
    assert len(unetr.vit.blocks) == 12 and unetr.vit.blocks[0].mlp.linear1.out_features == 3072
    swin = build_network("monai.networks.nets.SwinUNETR", get_preset("swinunetr", "paper"), [96, 96, 96], 4, 3)
    assert 60e6 < sum(p.numel() for p in swin.parameters()) < 64e6  # ~62 M


@pytest.mark.parametrize("arch,patch,match", [("unetr", [40, 64, 48], "multiples of 16"),
                                              ("swinunetr", [48, 64, 64], "multiples of 32")])
def test_indivisible_patch_is_refused(arch, patch, match):
    with pytest.raises(ValueError, match=match):
        build_network(get_arch(arch).network_class_name, get_preset(arch, "tiny"), patch, 1, 3)


def test_swin_feature_size_must_be_multiple_of_12():
    kwargs = dict(get_preset("swinunetr", "tiny"), feature_size=18)
    with pytest.raises(ValueError, match="multiple of 12"):
        build_network("monai.networks.nets.SwinUNETR", kwargs, [64, 64, 64], 1, 3)


def test_unknown_names_list_the_choices():
    with pytest.raises(ValueError, match="paper, compact, tiny"):
        get_preset("unetr", "huge")
    with pytest.raises(ValueError, match="unetr, swinunetr"):
        get_arch("vnet")


def test_patch_rounding():
    assert round_patch_size([40, 56, 40], 16) == [48, 64, 48]
    assert round_patch_size([40, 56, 40], 32) == [64, 64, 64]
    with pytest.raises(ValueError, match="--patch-size"):
        round_patch_size([8, 8, 8], 32)  # 64x the voxels
    with pytest.raises(ValueError, match="for example use 48 64 48"):
        check_patch_size([40, 64, 48], 16)


def test_stock_plans_get_our_network_and_rounded_patch():
    plans, _ = minimal_plans("unetr", None, [40, 56, 40])
    before = repr(plans)
    adapted = adapt_plans_for_trainer(plans, "3d_fullres", "unetr", "tiny")
    assert repr(plans) == before  # the user's plans dict is untouched
    c = adapted["configurations"]["3d_fullres"]
    assert c["patch_size"] == [48, 64, 48] and c["batch_size"] == 2
    assert c["architecture"]["network_class_name"] == "monai.networks.nets.UNETR"
    assert c["hippo_peft"]["adapted_from"].endswith("PlainConvUNet")


def test_plans_of_the_other_backbone_are_refused():
    plans, _ = minimal_plans("swinunetr", "tiny", [64, 64, 64])
    with pytest.raises(ValueError, match="-tr nnUNetTrainer_SwinUNETR"):
        adapt_plans_for_trainer(plans, "3d_fullres", "unetr", "tiny")


def test_2d_configuration_is_refused():
    plans, _ = minimal_plans("unetr", None, [40, 56, 40])
    plans["configurations"]["2d"] = dict(plans["configurations"]["3d_fullres"], patch_size=[56, 40])
    with pytest.raises(ValueError, match="3D network"):
        adapt_plans_for_trainer(plans, "2d", "unetr", "tiny")


def test_explicit_patch_size_is_never_changed_silently():
    plans, _ = minimal_plans("unetr", None, [40, 56, 40])
    with pytest.raises(ValueError, match="multiples of 16"):
        make_configuration(plans["configurations"]["3d_fullres"], "unetr", "tiny", [40, 56, 40])


def test_warmup_poly_schedule():
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = WarmupPolyLRScheduler(opt, 1e-3, max_steps=100, warmup_steps=5)
    lrs = []
    for epoch in range(100):
        sched.step(epoch)
        lrs.append(opt.param_groups[0]["lr"])
    assert all(a < b for a, b in zip(lrs[:5], lrs[1:6]))  # rises during warm-up
    assert math.isclose(lrs[5], 1e-3) and all(a >= b for a, b in zip(lrs[5:], lrs[6:]))
    assert lrs[-1] < 1e-4
    # parameter groups (adapter / decoder+head): the same curve, each at its own ratio to the first group's rate
    opt = torch.optim.AdamW([{"params": [torch.nn.Parameter(torch.zeros(1))], "lr": 2e-3},
                             {"params": [torch.nn.Parameter(torch.zeros(1))], "lr": 5e-4}])
    sched = WarmupPolyLRScheduler(opt, 2e-3, max_steps=100, warmup_steps=5)
    for epoch in (0, 3, 5, 50, 99):
        sched.step(epoch)
        a, b = (g["lr"] for g in opt.param_groups)
        assert math.isclose(a, 2e-3 * sched.factor_at(epoch)) and math.isclose(b, a / 4)
    assert math.isclose(opt.param_groups[1]["lr"], 5e-4 * sched.factor_at(99))
    with pytest.raises(ValueError):
        WarmupPolyLRScheduler(opt, 1e-3, max_steps=5, warmup_steps=5)
