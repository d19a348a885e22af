"""Everything hippo_peft writes into or reads from nnU-Net plans.

A configuration that uses one of our networks carries, besides nnU-Net's usual keys:

- ``architecture``: ``{"network_class_name": "monai.networks.nets.UNETR", "arch_kwargs": {MONAI args},
  "_kw_requires_import": []}`` -- the patch size is *not* repeated in arch_kwargs; builders take it from
  ``patch_size`` so the two can never disagree;
- ``hippo_peft``: ``{"arch": "unetr", "preset": "compact", ...}`` -- provenance, for humans and for checks.
"""
from __future__ import annotations

import math
from copy import deepcopy
from typing import Sequence

from hippo_peft.errors import InputError
from hippo_peft.networks.presets import PRESET_BATCH_SIZE, arch_for_class_name, get_arch, get_preset

# Rounding a planned patch up may at most grow it by this factor in voxels (hippocampus crops: 40x56x40 -> 64^3
# for SwinUNETR is 2.9x); beyond that the rounding would
# change the training problem too much to do silently.
MAX_PATCH_GROWTH = 4.0


def round_patch_size(patch_size: Sequence[int], divisor: int, max_growth: float = MAX_PATCH_GROWTH) -> list[int]:
    """Round every patch edge up to a multiple of ``divisor``.

    Raises:
        ValueError: when rounding grows the patch by more than ``max_growth`` x in voxels.
    """
    patch_size = [int(p) for p in patch_size]
    if any(p <= 0 for p in patch_size):
        raise InputError(f"Patch size must be positive, got {patch_size}.")
    rounded = [int(math.ceil(p / divisor) * divisor) for p in patch_size]
    growth = math.prod(rounded) / math.prod(patch_size)
    if growth > max_growth:
        raise InputError(
            f"Rounding patch size {patch_size} up to multiples of {divisor} gives {rounded}, {growth:.1f}x the voxels "
            f"(limit {max_growth}x). Choose a patch size yourself with `hippo-peft plan ... --patch-size X Y Z` "
            f"(each a multiple of {divisor}).")
    return rounded


def check_patch_size(patch_size: Sequence[int], divisor: int, what: str = "patch size") -> list[int]:
    """Validate a patch size the user chose explicitly: we never silently change what a user typed."""
    patch_size = [int(p) for p in patch_size]
    bad = [p for p in patch_size if p <= 0 or p % divisor]
    if len(patch_size) != 3 or bad:
        suggestion = [max(divisor, int(math.ceil(max(p, 1) / divisor) * divisor)) for p in patch_size]
        raise InputError(f"{what} {patch_size} is not three positive multiples of {divisor}; "
                         f"for example use {' '.join(map(str, suggestion))}.")
    return patch_size


def architecture_entry(arch: str, preset: str) -> dict:
    """The plans ``architecture`` dict for one of our backbones at a preset."""
    return {
        "network_class_name": get_arch(arch).network_class_name,
        "arch_kwargs": get_preset(arch, preset),
        "_kw_requires_import": [],
    }


def make_configuration(base_configuration: dict, arch: str, preset: str, patch_size: Sequence[int] | None = None,
                       batch_size: int | None = None) -> dict:
    """Turn a resolved nnU-Net configuration dict into one for our backbone.

    Spacing, normalisation and resampling stay nnU-Net's; only the network, patch size and batch size change.
    ``patch_size`` given explicitly must already be divisible; otherwise the planned one is rounded up.
    """
    spec = get_arch(arch)
    config = deepcopy(base_configuration)
    config.pop("inherits_from", None)
    original_patch = [int(p) for p in config["patch_size"]]
    if patch_size is not None:
        new_patch = check_patch_size(patch_size, spec.divisor, "--patch-size")
    else:
        new_patch = round_patch_size(original_patch, spec.divisor)
    config["patch_size"] = new_patch
    config["batch_size"] = int(batch_size or PRESET_BATCH_SIZE[preset])
    config["architecture"] = architecture_entry(arch, preset)
    config["hippo_peft"] = {"arch": spec.name, "preset": preset, "planned_patch_size": original_patch}
    return config


def resolve_configuration(plans: dict, configuration: str) -> dict:
    """The configuration dict with nnU-Net's ``inherits_from`` chain applied."""
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
    return PlansManager(plans)._internal_resolve_configuration_inheritance(configuration)


def adapt_plans_for_trainer(plans: dict, configuration: str, arch: str, default_preset: str) -> dict:
    """Plans as one of our trainers needs them. Returns a new dict; the input is not modified.

    - Plans made by ``hippo-peft plan`` for this backbone pass through (after a divisibility check).
    - Plans made for the other backbone are refused: the patch size and network would not match.
    - nnU-Net's own plans (``nnUNetPlans``, ResEnc, ...) get our network at ``default_preset``, the patch size
      rounded up and a transformer batch size; the trainer saves these plans into its output folder, so
      ``nnUNetv2_predict`` rebuilds exactly the trained network.
    """
    spec = get_arch(arch)
    config = resolve_configuration(plans, configuration)
    if len(config["patch_size"]) != 3:
        raise InputError(f"{spec.trainer} is a 3D network; configuration '{configuration}' is "
                         f"{len(config['patch_size'])}D. Use 3d_fullres (or another 3D configuration).")
    planned = arch_for_class_name(config.get("architecture", {}).get("network_class_name", ""))
    new_plans = deepcopy(plans)
    if planned is not None:
        if planned.name != spec.name:
            raise InputError(
                f"Plans '{plans.get('plans_name')}' configuration '{configuration}' were made for "
                f"{planned.network_class_name}; this trainer trains {spec.network_class_name}. Use "
                f"-tr {planned.trainer} or re-plan with `hippo-peft plan -d ... --arch {spec.name}`.")
        check_patch_size(config["patch_size"], spec.divisor, f"plans patch size ({plans.get('plans_name')})")
        new_plans["configurations"][configuration] = config
        return new_plans
    new_config = make_configuration(config, arch, default_preset)
    new_config["hippo_peft"]["adapted_from"] = config.get("architecture", {}).get("network_class_name")
    new_plans["configurations"][configuration] = new_config
    return new_plans


def network_io(plans, dataset_json: dict, configuration: str):
    """nnU-Net's managers and the network's channel counts for ``configuration`` of ``plans`` (a dict or a
    plans.json path): ``(plans_manager, configuration_manager, input_channels, segmentation_heads)``, as nnU-Net's
    trainer and predictor determine them."""
    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    pm = PlansManager(plans if isinstance(plans, dict) else str(plans))
    cm = pm.get_configuration(configuration)
    return (pm, cm, determine_num_input_channels(pm, cm, dataset_json),
            pm.get_label_manager(dataset_json).num_segmentation_heads)
