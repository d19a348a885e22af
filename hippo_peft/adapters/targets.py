"""Which linears of each backbone are targets, where its transformer encoder and its head are."""
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
    groups: Dict[str, str]  # target group -> regex over nn.Linear names
    downsample: str | None = None  # optional extra targets (SwinUNETR patch merging)


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
# Fused query/key/value projections: LoRA-PT splits them into their three (d x d) row blocks.
FUSED_QKV = re.compile(r"\.attn\.qkv$")


def backbone_of(model: nn.Module) -> Backbone:
    for cls in type(model).__mro__:
        if cls.__name__ in BACKBONES:
            return BACKBONES[cls.__name__]
    raise TypeError(f"{type(model).__name__} is not a supported backbone; hippo_peft adapts MONAI "
                    f"{' and '.join(BACKBONES)}.")


def target_pattern(backbone: Backbone, config: AdapterConfig) -> str:
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
    found = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear) and pattern.fullmatch(n)]
    if not found:
        linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)][:6]
        raise InputError(f"{config.method}: targets {config.targets!r} match no nn.Linear of this {backbone.name}; "
                         f"its linears are named like {linears}.")
    return found
