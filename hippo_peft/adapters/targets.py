"""Which linears (transformers) or convs (nnU-Net's U-Nets) of each backbone are targets, where its encoder and its
head are."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Dict, List, Tuple

from torch import nn

from hippo_peft.adapters.config import AdapterConfig
from hippo_peft.errors import InputError


@dataclass(frozen=True)
class Backbone:
    name: str
    encoder_prefix: str  # parameters under it form the transformer encoder; everything else is "decoder"
    head_prefix: str
    # The CNN decoder blocks the papers train with the adapter ('decoder_head'); the CNN skip encoders (encoder1-4,
    # SwinUNETR's encoder10) are the rest outside the transformer and stay frozen there.
    decoder_prefixes: Tuple[str, ...]
    groups: Dict[str, str]  # target group -> regex over the target modules' names
    downsample: str | None = None  # optional extra targets (SwinUNETR patch merging)
    target_types: Tuple[type, ...] = (nn.Linear,)  # what the methods adapt: linears, or convs on a U-Net
    encoder_aliases: Tuple[str, ...] = ()  # other state-dict paths of the encoder (a second reference to it)

    @property
    def convolutional(self) -> bool:
        return self.target_types != (nn.Linear,)


BACKBONES: Dict[str, Backbone] = {
    "UNETR": Backbone("unetr", "vit.", "out.", ("decoder2.", "decoder3.", "decoder4.", "decoder5."), {
        "attn": r"vit\.blocks\.\d+\.attn\.(qkv|out_proj)",
        "mlp": r"vit\.blocks\.\d+\.mlp\.linear[12]"}),
    "SwinUNETR": Backbone("swinunetr", "swinViT.", "out.",
                          ("decoder1.", "decoder2.", "decoder3.", "decoder4.", "decoder5."), {
        "attn": r"swinViT\.layers\d+\.\d+\.blocks\.\d+\.attn\.(qkv|proj)",
        "mlp": r"swinViT\.layers\d+\.\d+\.blocks\.\d+\.mlp\.linear[12]"},
        downsample=r"swinViT\.layers\d+\.\d+\.downsample\.reduction"),
}
# nnU-Net's U-Nets (dynamic_network_architectures): the encoder's convs are the targets (the residual encoder's stem
# and 1x1x1 skip projections included); the decoder is its stages, transposed convs and segmentation layers (the
# deep-supervision outputs included). `decoder.encoder` is a second reference to the encoder, not decoder.
_UNET = dict(encoder_prefix="encoder.", head_prefix="decoder.seg_layers.",
             decoder_prefixes=("decoder.stages.", "decoder.transpconvs.", "decoder.seg_layers."),
             groups={"convs": r"encoder\..+"}, target_types=(nn.Conv2d, nn.Conv3d), encoder_aliases=("decoder.encoder.",))
BACKBONES["PlainConvUNet"] = Backbone("unet", **_UNET)
BACKBONES["ResidualEncoderUNet"] = Backbone("resencunet", **_UNET)
# Fused query/key/value projections: LoRA-PT splits them into their three (d x d) row blocks.
FUSED_QKV = re.compile(r"\.attn\.qkv$")


def backbone_of(model: nn.Module) -> Backbone:
    for cls in type(model).__mro__:
        if cls.__name__ in BACKBONES:
            return BACKBONES[cls.__name__]
    raise TypeError(f"{type(model).__name__} is not a supported backbone; hippo_peft adapts MONAI UNETR and "
                    f"SwinUNETR and nnU-Net's PlainConvUNet and ResidualEncoderUNet.")


def target_pattern(backbone: Backbone, config: AdapterConfig) -> str:
    if backbone.convolutional and config.targets in ("attn", "mlp"):
        raise InputError(f"{config.method}: targets {config.targets!r} names transformer linears; a {backbone.name} "
                         f"has convs: use targets 'all' (every encoder conv) or a regular expression over conv "
                         f"names such as 'encoder\\.stages\\.[3-5]\\..+'.")
    if config.targets == "all":
        pattern = "|".join(backbone.groups.values())
    elif config.targets in backbone.groups:
        pattern = backbone.groups[config.targets]
    else:
        pattern = config.targets
    if getattr(config, "include_downsample", False) and backbone.downsample:
        pattern = f"{pattern}|{backbone.downsample}"
    return pattern


def find_targets(model: nn.Module, config: AdapterConfig) -> List[Tuple[str, nn.Linear]]:
    backbone = backbone_of(model)
    pattern = re.compile(f"(?:{target_pattern(backbone, config)})")
    kinds = backbone.target_types
    found = [(n, m) for n, m in model.named_modules() if isinstance(m, kinds) and pattern.fullmatch(n)]
    if not found:
        names = [n for n, m in model.named_modules() if isinstance(m, kinds)][:6]
        what = " / ".join(f"nn.{k.__name__}" for k in kinds)
        raise InputError(f"{config.method}: targets {config.targets!r} match no {what} of this "
                         f"{backbone.name}; its {'convs' if backbone.convolutional else 'linears'} are named like "
                         f"{names}.")
    return found
