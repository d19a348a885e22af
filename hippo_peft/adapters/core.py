"""The shared low-rank core: a principal/residual SVD split and the adapted-linear base class.

Every matrix method is "a frozen base (or residual) weight plus something small that trains":

- LoRA / DoRA start from the base weight and a zero update;
- PiSSA / PDoRA / HyPS start from the principal part ``B A`` of the SVD and keep the residual frozen.

Frozen tensors the forward needs are buffers (saved, moved with ``.to()``, restored strictly by nnU-Net's
predictor), trainable tensors are parameters, and each layer declares its trainable names so that accounting,
adapter files and merge derive from them. Decompositions and norms run in float32 (float64 for the SVD) with
autocast off: nnU-Net trains under fp16 autocast on GPUs, and SVD has no half-precision kernel.
"""
from __future__ import annotations

import contextlib
from typing import ClassVar, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hippo_peft.adapters.config import AdapterConfig
from hippo_peft.errors import InputError


@contextlib.contextmanager
def full_precision(device: torch.device):
    """Disable autocast inside (decompositions, norms, t-products stay in float32)."""
    with torch.autocast(device_type=device.type, enabled=False):
        yield


@torch.no_grad()
def principal_split(weight: Tensor, rank: int, scaling: float = 1.0) -> Tuple[Tensor, Tensor, Tensor]:
    """Principal factors and frozen residual of an (out x in) weight, as in PiSSA.

    ``W = U diag(s) V^T``; ``lora_B = U_r sqrt(s_r) / sqrt(scaling)`` (out x r), ``lora_A = sqrt(s_r) V_r^T /
    sqrt(scaling)`` (r x in), ``residual = W - scaling * lora_B @ lora_A``, so that
    ``residual + scaling * lora_B @ lora_A == W`` to round-off. (The method notes call the out x r factor A and
    the r x in factor B; we use HF peft's names, lora_A being the one applied first.)

    Returns:
        (lora_A, lora_B, residual) in float32 on the weight's device.
    """
    out_f, in_f = weight.shape
    if rank > min(out_f, in_f):
        raise InputError(f"rank {rank} exceeds min(out, in) = {min(out_f, in_f)} of a {out_f} x {in_f} weight; "
                         f"choose rank <= {min(out_f, in_f)} or restrict the targets.")
    w64 = weight.detach().to(torch.float64)
    u, s, vh = torch.linalg.svd(w64, full_matrices=False)
    root = (s[:rank] / scaling).sqrt()
    lora_b = (u[:, :rank] * root).float()
    lora_a = (root[:, None] * vh[:rank]).float()
    with full_precision(weight.device):
        residual = weight.detach().float() - scaling * (lora_b @ lora_a)
    return lora_a, lora_b, residual


class AdaptedLinear(nn.Module):
    """Base of every adapted ``nn.Linear``: frozen ``weight`` / ``bias`` buffers under the original names (so a
    merged network has exactly the base keys) plus the method's trainable tensors, named in ``trainable_names``."""

    trainable_names: ClassVar[Tuple[str, ...]] = ()
    adapter_buffers: ClassVar[Tuple[str, ...]] = ()  # non-trainable adapter state that adapter files carry

    def __init__(self, linear: nn.Linear, weight: Tensor | None = None):
        super().__init__()
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"can only adapt nn.Linear, got {type(linear).__name__}")
        self.in_features, self.out_features = linear.in_features, linear.out_features
        base = linear.weight.detach() if weight is None else weight
        self.register_buffer("weight", base.float().clone())
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().clone())

    @classmethod
    def from_linear(cls, linear: nn.Linear, config: AdapterConfig) -> "AdaptedLinear":
        raise NotImplementedError

    def merged_weight(self) -> Tensor:
        """The (out x in) weight this layer currently applies (float32)."""
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.merged_weight(), self.bias)

    @torch.no_grad()
    def to_linear(self) -> nn.Module:
        """A plain ``nn.Linear`` computing the same function (merge)."""
        linear = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None,
                           device=self.weight.device, dtype=self.weight.dtype)
        linear.weight.copy_(self.merged_weight())
        if self.bias is not None:
            linear.bias.copy_(self.bias)
        return linear

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, trains={self.trainable_names}"


def directional_scale(weight: Tensor, magnitude: Tensor, axis: str, detach_norm: bool, eps: float = 1e-12) -> Tensor:
    """``magnitude * weight / ||weight||`` with the norm over the input dimension (``axis='output'``: one
    magnitude per output unit) or over the output dimension (``axis='input'``: one per input column)."""
    with full_precision(weight.device):
        weight = weight.float()
        dim = 1 if axis == "output" else 0
        norm = torch.linalg.vector_norm(weight, dim=dim, keepdim=True).clamp_min(eps)
        if detach_norm:
            norm = norm.detach()
        m = magnitude.float().view(-1, 1) if axis == "output" else magnitude.float().view(1, -1)
        return weight * (m / norm)


def weight_norm(weight: Tensor, axis: str) -> Tensor:
    with torch.no_grad(), full_precision(weight.device):
        return torch.linalg.vector_norm(weight.float(), dim=1 if axis == "output" else 0)
