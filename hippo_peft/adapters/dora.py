"""DoRA: ``W' = m * (W0 + s B A) / ||W0 + s B A||`` with LoRA's initialisation and ``m = ||W0||``."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hippo_peft.adapters.config import DoRAConfig
from hippo_peft.adapters.core import ConvMixin, directional_scale, weight_norm
from hippo_peft.adapters.lora import LoRALinear
from hippo_peft.adapters.registry import MethodSpec


class DoRALinear(LoRALinear):
    """LoRA plus a trainable ``magnitude`` vector (per output unit by default, per input column optionally)."""

    trainable_names = ("lora_A", "lora_B", "magnitude")

    def __init__(self, linear: nn.Linear, rank: int, scaling: float, norm_axis: str = "output",
                 detach_norm: bool = True):
        super().__init__(linear, rank, scaling)
        self.norm_axis, self.detach_norm = norm_axis, detach_norm
        self.magnitude = nn.Parameter(weight_norm(self.weight, norm_axis))

    @classmethod
    def from_linear(cls, linear: nn.Linear, config: DoRAConfig) -> "DoRALinear":
        return cls(linear, config.rank, config.scaling, config.norm_axis, config.detach_norm)

    def merged_weight(self) -> Tensor:
        return directional_scale(self.weight + self.delta_weight(), self.magnitude, self.norm_axis, self.detach_norm)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.merged_weight(), self.bias)


class DoRAConv(ConvMixin, DoRALinear):
    """DoRA on the unfolded kernel: one magnitude per output channel (norm over C_in k^3), as HF peft's conv DoRA."""


SPEC = MethodSpec("dora", DoRAConfig, "DoRA", "DoRA", layer=DoRALinear, conv_layer=DoRAConv,
                           summary="DoRA, rank 8, alpha 8, on every transformer linear.",
                           paper="Liu et al. 2024, DoRA: weight-decomposed low-rank adaptation")
