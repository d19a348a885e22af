"""UNETR (Hatamizadeh et al. 2022) from MONAI, built from plans."""
from __future__ import annotations

from typing import Sequence

from monai.networks.nets import UNETR

from hippo_peft.errors import InputError
from hippo_peft.networks.presets import ARCHS


def build_unetr(in_channels: int, out_channels: int, patch_size: Sequence[int], **arch_kwargs) -> UNETR:
    """Build MONAI's UNETR for a plans configuration.

    Args:
        in_channels: image channels (from dataset.json).
        out_channels: segmentation heads (nnU-Net's ``label_manager.num_segmentation_heads``).
        patch_size: the configuration's patch size; UNETR's position embedding is sized for it, so the
            network only ever sees this size (nnU-Net's sliding window guarantees that).
        **arch_kwargs: MONAI ``UNETR`` arguments (hidden_size, mlp_dim, num_heads, feature_size, ...).

    Raises:
        ValueError: patch edges not multiples of 16, or hidden_size not divisible by num_heads.
    """
    patch_size = [int(p) for p in patch_size]
    divisor = ARCHS["unetr"].divisor
    if len(patch_size) != 3 or any(p % divisor for p in patch_size):
        raise InputError(f"UNETR needs a 3D patch size whose edges are multiples of {divisor} (its 16^3 token grid); "
                         f"got {patch_size}. Re-plan with `hippo-peft plan --arch unetr` or pass --patch-size.")
    hidden, heads = arch_kwargs.get("hidden_size", 768), arch_kwargs.get("num_heads", 12)
    if hidden % heads:
        raise InputError(f"UNETR hidden_size ({hidden}) must be divisible by num_heads ({heads}).")
    net = UNETR(in_channels=in_channels, out_channels=out_channels, img_size=patch_size, **arch_kwargs)
    # MONAI builds a cross-attention LayerNorm in every block even without cross-attention; it never gets a
    # gradient. Freeze it so the trainable set is exactly what trains (the keys stay, for checkpoint compatibility).
    for name, param in net.named_parameters():
        if ".norm_cross_attn." in name:
            param.requires_grad_(False)
    return net
