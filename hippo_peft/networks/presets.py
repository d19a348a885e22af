"""Named size presets for the two MONAI backbones.

``paper`` reproduces the sizes used by LoRA-PT (UNETR) and HyPS/PDoRA (SwinUNETR); ``compact`` trains on
2 CPU cores in minutes; ``tiny`` exists for tests. The numbers are MONAI constructor arguments, stored verbatim
in the plans' ``architecture.arch_kwargs`` so that a plans file fully determines the network.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict

from hippo_peft.errors import InputError


@dataclass(frozen=True)
class ArchSpec:
    """What hippo_peft needs to know about one backbone."""

    name: str  # short name used on the command line: "unetr" / "swinunetr"
    network_class_name: str  # what the plans' architecture entry records
    divisor: int  # every patch edge must be a multiple of this
    trainer: str  # the full fine-tuning trainer that goes with it
    plans_suffix: str  # "UNETR" -> nnUNetPlans_UNETR_<preset>


ARCHS: Dict[str, ArchSpec] = {
    "unetr": ArchSpec("unetr", "monai.networks.nets.UNETR", 16, "nnUNetTrainer_UNETR", "UNETR"),
    "swinunetr": ArchSpec("swinunetr", "monai.networks.nets.SwinUNETR", 32, "nnUNetTrainer_SwinUNETR", "SwinUNETR"),
}

# MONAI's UNETR always has 12 transformer blocks (it taps blocks 3, 6, 9 for the decoder), so presets
# scale width, not depth.
PRESETS: Dict[str, Dict[str, dict]] = {
    "unetr": {
        "paper": dict(hidden_size=768, mlp_dim=3072, num_heads=12, feature_size=16),
        "compact": dict(hidden_size=192, mlp_dim=768, num_heads=4, feature_size=8),
        "tiny": dict(hidden_size=48, mlp_dim=96, num_heads=3, feature_size=4),
    },
    "swinunetr": {
        "paper": dict(feature_size=48, depths=[2, 2, 2, 2], num_heads=[3, 6, 12, 24]),
        "compact": dict(feature_size=12, depths=[2, 2, 2, 2], num_heads=[3, 6, 12, 24]),
        "tiny": dict(feature_size=12, depths=[1, 1, 1, 1], num_heads=[1, 2, 2, 4]),
    },
}

# Transformers on few labelled scans: keep batches small (the papers use 1-4).
PRESET_BATCH_SIZE = {"paper": 2, "compact": 2, "tiny": 2}


def get_arch(name: str) -> ArchSpec:
    key = name.lower()
    if key not in ARCHS:
        raise InputError(f"Unknown architecture '{name}'. Choose one of: {', '.join(ARCHS)}.")
    return ARCHS[key]


def arch_for_class_name(network_class_name: str) -> ArchSpec | None:
    """The ArchSpec whose network class the plans name, or None for nnU-Net's own architectures."""
    for spec in ARCHS.values():
        if spec.network_class_name == network_class_name:
            return spec
    return None


def get_preset(arch: str, preset: str) -> dict:
    spec = get_arch(arch)
    presets = PRESETS[spec.name]
    if preset not in presets:
        raise InputError(f"Unknown preset '{preset}' for {spec.name}. Choose one of: {', '.join(presets)}.")
    return dict(presets[preset])
