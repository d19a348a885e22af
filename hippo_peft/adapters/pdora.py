"""PDoRA: the principal part of the SVD split into magnitude and direction,
``W' = m * (B A) / ||B A|| + W_res`` with ``m = ||B A||`` at the start and ``W_res`` frozen.

Deviations, on purpose: the default norm axis is 'output' (one magnitude per output unit, as DoRA / HF peft;
the public PDoRA code normalises per input column, available as ``norm_axis='input'``), and the default rank is 8
rather than the reference 16 so that the narrow first stages of the compact/tiny SwinUNETR presets fit."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from hippo_peft.adapters.config import PDoRAConfig
from hippo_peft.adapters.core import AdaptedLinear, ConvMixin, directional_scale, full_precision, principal_split, weight_norm
from hippo_peft.adapters.registry import MethodSpec


class PDoRALinear(AdaptedLinear):
    trainable_names = ("lora_A", "lora_B", "magnitude")

    def __init__(self, linear: nn.Linear, rank: int, norm_axis: str = "output", detach_norm: bool = False):
        lora_a, lora_b, residual = principal_split(linear.weight, rank)
        super().__init__(linear, weight=residual)
        self.norm_axis, self.detach_norm = norm_axis, detach_norm
        self.lora_A = nn.Parameter(lora_a)
        self.lora_B = nn.Parameter(lora_b)
        self.magnitude = nn.Parameter(weight_norm(self.principal(), norm_axis))

    @classmethod
    def from_linear(cls, linear: nn.Linear, config: PDoRAConfig) -> "PDoRALinear":
        return cls(linear, config.rank, config.norm_axis, config.detach_norm)

    def principal(self) -> Tensor:
        with full_precision(self.weight.device):
            return self.lora_B.float() @ self.lora_A.float()

    def merged_weight(self) -> Tensor:
        return self.weight + directional_scale(self.principal(), self.magnitude, self.norm_axis, self.detach_norm)


class PDoRAConv(ConvMixin, PDoRALinear):
    """PDoRA on the unfolded kernel: magnitude per output channel times the principal part's direction."""


SPEC = MethodSpec(
    "pdora", PDoRAConfig, "PDoRA", "PDoRA", layer=PDoRALinear, conv_layer=PDoRAConv, lr=2e-3, weight_decay=6e-5,
    summary="PDoRA: rank-8 principal MLP weights as magnitude x direction (reference lr 2e-3, wd 6e-5).",
    paper="PDoRA: principal weight-decomposed low-rank adaptation")
