"""LoRA: ``y = x (W0 + s B A)^T + b`` with the update applied in factored form (no d_out x d_in tensor per
step), starting from ``B = 0``. PiSSA (:mod:`.pissa`) is the same layer started from the principal SVD part."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hippo_peft.adapters.config import LoRAConfig
from hippo_peft.adapters.core import AdaptedLinear, FactoredConvMixin, full_precision
from hippo_peft.adapters.registry import MethodSpec
from hippo_peft.errors import InputError


class LoRALinear(AdaptedLinear):
    """``nn.Linear`` + trainable ``lora_A`` (r x in, Kaiming-uniform) and ``lora_B`` (out x r, zero), scaled by
    alpha / r -- the same initialisation and scaling as HF peft's default LoRA."""

    trainable_names = ("lora_A", "lora_B")

    def __init__(self, linear: nn.Linear, rank: int, scaling: float, weight: Tensor | None = None):
        super().__init__(linear, weight)
        if rank > min(self.in_features, self.out_features):
            raise InputError(f"rank {rank} exceeds min(out, in) = {min(self.in_features, self.out_features)} of a "
                             f"{self.out_features} x {self.in_features} linear; lower the rank.")
        self.scaling = float(scaling)
        device = self.weight.device
        self.lora_A = nn.Parameter(torch.empty(rank, self.in_features, device=device))
        self.lora_B = nn.Parameter(torch.zeros(self.out_features, rank, device=device))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))

    @classmethod
    def from_linear(cls, linear: nn.Linear, config: LoRAConfig) -> "LoRALinear":
        return cls(linear, config.rank, config.scaling)

    def delta_weight(self) -> Tensor:
        with full_precision(self.weight.device):
            return (self.lora_B.float() @ self.lora_A.float()) * self.scaling

    def merged_weight(self) -> Tensor:
        return self.weight + self.delta_weight()

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight, self.bias) + F.linear(F.linear(x, self.lora_A), self.lora_B) * self.scaling


class LoRAConv(FactoredConvMixin, LoRALinear):
    """LoRA on the unfolded kernel: ``lora_A`` r x C_in k^3, ``lora_B`` C_out x r."""


SPEC = MethodSpec("lora", LoRAConfig, "LoRA", "LoRA", layer=LoRALinear, conv_layer=LoRAConv,
                           summary="LoRA, rank 8, alpha 8, on every transformer linear.",
                           paper="Hu et al. 2021, LoRA: low-rank adaptation of large language models")
