"""Backbones (MONAI UNETR / SwinUNETR), their presets, and the one entry point that builds them from plans."""
from __future__ import annotations

from typing import Sequence

from torch import nn

from hippo_peft.errors import InputError
from hippo_peft.networks.presets import ARCHS, PRESETS, ArchSpec, arch_for_class_name, get_arch, get_preset
from hippo_peft.networks.swinunetr import build_swinunetr
from hippo_peft.networks.unetr import build_unetr

_BUILDERS = {"unetr": build_unetr, "swinunetr": build_swinunetr}


def build_network(network_class_name: str, arch_kwargs: dict, patch_size: Sequence[int],
                  in_channels: int, out_channels: int) -> nn.Module:
    """Build the network a plans configuration names (``architecture.network_class_name`` + ``arch_kwargs``)."""
    spec = arch_for_class_name(network_class_name)
    if spec is None:
        raise InputError(f"'{network_class_name}' is not a hippo_peft network; expected one of "
                         f"{[a.network_class_name for a in ARCHS.values()]}.")
    return _BUILDERS[spec.name](in_channels, out_channels, patch_size, **arch_kwargs)


__all__ = ["ARCHS", "PRESETS", "ArchSpec", "arch_for_class_name", "get_arch", "get_preset", "build_network",
           "build_unetr", "build_swinunetr"]
