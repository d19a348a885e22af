"""SwinUNETR (Hatamizadeh et al. 2022) from MONAI, built from plans."""
from __future__ import annotations

from typing import Sequence

from monai.networks.nets import SwinUNETR

from hippo_peft.errors import InputError
from hippo_peft.networks.presets import ARCHS


def build_swinunetr(in_channels: int, out_channels: int, patch_size: Sequence[int], **arch_kwargs) -> SwinUNETR:
    """Build MONAI's SwinUNETR for a plans configuration.

    Args:
        in_channels: image channels (from dataset.json).
        out_channels: segmentation heads.
        patch_size: the configuration's patch size; SwinUNETR downsamples 5 times, so edges must be
            multiples of 32 (the network itself is size-agnostic).
        **arch_kwargs: MONAI ``SwinUNETR`` arguments (feature_size, depths, num_heads, ...).

    Raises:
        ValueError: feature_size not a multiple of 12, heads/depths of different lengths, or patch edges not
            multiples of 32.
    """
    patch_size = [int(p) for p in patch_size]
    divisor = ARCHS["swinunetr"].divisor
    if len(patch_size) != 3 or any(p % divisor for p in patch_size):
        raise InputError(f"SwinUNETR needs a 3D patch size whose edges are multiples of {divisor} (5 halvings); "
                         f"got {patch_size}. Re-plan with `hippo-peft plan --arch swinunetr` or pass --patch-size.")
    feature_size = arch_kwargs.get("feature_size", 24)
    if feature_size % 12:
        raise InputError(f"SwinUNETR feature_size must be a multiple of 12 (MONAI's constraint); got {feature_size}. "
                         f"Use 12, 24, 36, 48, ...")
    depths, heads = arch_kwargs.get("depths", (2, 2, 2, 2)), arch_kwargs.get("num_heads", (3, 6, 12, 24))
    if len(depths) != len(heads):
        raise InputError(f"SwinUNETR depths {list(depths)} and num_heads {list(heads)} must have the same length.")
    for stage, h in enumerate(heads):
        if (feature_size * 2 ** stage) % h:
            raise InputError(f"SwinUNETR stage {stage} has {feature_size * 2 ** stage} channels, not divisible by "
                             f"its {h} heads.")
    return SwinUNETR(in_channels=in_channels, out_channels=out_channels, **arch_kwargs)
