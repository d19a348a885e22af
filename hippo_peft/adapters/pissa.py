"""PiSSA: LoRA whose factors start as the principal rank-r SVD part of ``W``, the frozen weight being the residual
``W - s B A`` (so the adapted layer starts exactly at ``W``)."""
from __future__ import annotations

import torch
from torch import nn

from hippo_peft.adapters.config import PiSSAConfig
from hippo_peft.adapters.core import FactoredConvMixin, principal_split
from hippo_peft.adapters.lora import LoRALinear
from hippo_peft.adapters.registry import MethodSpec


class PiSSALinear(LoRALinear):
    """LoRA whose factors start as the principal rank-r SVD part; ``weight`` holds the frozen residual."""

    @classmethod
    def from_linear(cls, linear: nn.Linear, config: PiSSAConfig) -> "PiSSALinear":
        scaling = getattr(config, "scaling", 1.0)  # HyPS has no alpha: its principal branch is unscaled
        lora_a, lora_b, residual = principal_split(linear.weight, config.rank, scaling)
        layer = cls(linear, config.rank, scaling, weight=residual)
        with torch.no_grad():
            layer.lora_A.copy_(lora_a)
            layer.lora_B.copy_(lora_b)
        return layer


class PiSSAConv(FactoredConvMixin, PiSSALinear):
    """PiSSA on the unfolded kernel: the principal rank-r part of ``K.reshape(C_out, -1)`` trains."""


SPEC = MethodSpec("pissa", PiSSAConfig, "PiSSA", "PiSSA", layer=PiSSALinear, conv_layer=PiSSAConv,
                           summary="PiSSA, rank 8, on every transformer linear.",
                           paper="Meng et al. 2024, PiSSA: principal singular values and singular vectors adaptation")
