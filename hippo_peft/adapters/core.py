"""The shared low-rank core: a principal/residual SVD split and the adapted-linear base class.

Every matrix method is "a frozen base (or residual) weight plus something small that trains":

- LoRA / DoRA start from the base weight and a zero update;
- PiSSA / PDoRA / HyPS start from the principal part ``B A`` of the SVD and keep the residual frozen.

Frozen tensors the forward needs are buffers (saved, moved with ``.to()``, restored strictly by nnU-Net's
predictor), trainable tensors are parameters, and each layer declares its trainable names so that accounting,
adapter files and merge derive from them. Decompositions and norms run in float32 (float64 for the SVD) with
autocast off: nnU-Net trains under fp16 autocast on GPUs, and SVD has no half-precision kernel.

Convolutions (nnU-Net's U-Nets) reuse every matrix method unchanged on the unfolded kernel
``W = K.reshape(C_out, C_in * k1 * k2 * k3)``: a method's conv layer is its linear layer plus :class:`ConvMixin`,
which keeps the conv's geometry and applies the current kernel ``merged_weight().view(K.shape)`` as one conv.
Methods whose update is a plain low-rank sum (LoRA, PiSSA, HyPS's branch) train with :class:`FactoredConvMixin`
instead, as HF peft's conv LoRA: the frozen kernel's conv plus a k^3 conv to r channels and a 1x1x1 conv back, so
that the backward pass computes no gradient of the full kernel (a full-size weight-gradient conv per layer).
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

    def to_plain(self) -> nn.Module:
        """The plain module that computes the same function (what ``merge`` puts back)."""
        return self.to_linear()

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


def matrix_view(conv: nn.Module) -> nn.Linear:
    """An ``nn.Linear`` (C_in * k^3 -> C_out) holding ``conv``'s unfolded kernel and its bias: the matrix every
    method adapts. Only ungrouped ``nn.Conv2d`` / ``nn.Conv3d`` (nnU-Net's U-Nets have no other kind)."""
    if type(conv) not in (nn.Conv2d, nn.Conv3d):
        raise TypeError(f"can only adapt nn.Conv2d / nn.Conv3d, got {type(conv).__name__}")
    if conv.groups != 1 or conv.padding_mode != "zeros":
        raise InputError(f"cannot adapt a conv with groups={conv.groups}, padding_mode={conv.padding_mode!r}: the "
                         f"unfolded-kernel methods need an ordinary conv (groups 1, zero padding).")
    weight = conv.weight.detach()
    linear = torch.nn.utils.skip_init(nn.Linear, weight[0].numel(), weight.shape[0], bias=conv.bias is not None,
                                      device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        linear.weight.copy_(weight.reshape(weight.shape[0], -1))
        if conv.bias is not None:
            linear.bias.copy_(conv.bias)
    return linear


class ConvMixin:
    """Turns a method's ``AdaptedLinear`` into its conv layer: put it first, ``class LoRAConv(ConvMixin,
    LoRALinear)``. ``from_conv`` builds the linear layer on :func:`matrix_view` and records the geometry; the
    forward applies ``merged_weight()`` reshaped to the kernel; ``to_plain`` merges into a plain conv."""

    @classmethod
    def from_conv(cls, conv: nn.Module, config: AdapterConfig):
        return cls.from_linear(matrix_view(conv), config).with_geometry(conv)

    def with_geometry(self, conv: nn.Module):
        """Record ``conv``'s type, kernel shape, stride, padding and dilation; returns self."""
        self.conv_type = type(conv)
        self.kernel_shape = tuple(conv.weight.shape)
        self.stride, self.padding, self.dilation = conv.stride, conv.padding, conv.dilation
        return self

    def kernel(self) -> Tensor:
        """The (C_out, C_in, k...) kernel this layer applies now (float32)."""
        return self.merged_weight().view(self.kernel_shape)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv_forward(x)

    def conv_forward(self, x: Tensor) -> Tensor:
        conv = F.conv3d if self.conv_type is nn.Conv3d else F.conv2d
        return conv(x, self.kernel(), self.bias, self.stride, self.padding, self.dilation)

    @torch.no_grad()
    def to_plain(self) -> nn.Module:
        """A plain conv of the same geometry with the merged kernel (merge)."""
        out_c, in_c, *k = self.kernel_shape
        conv = self.conv_type(in_c, out_c, k, stride=self.stride, padding=self.padding, dilation=self.dilation,
                              bias=self.bias is not None, device=self.weight.device, dtype=self.weight.dtype)
        conv.weight.copy_(self.kernel())
        if self.bias is not None:
            conv.bias.copy_(self.bias)
        return conv

    def extra_repr(self) -> str:
        return f"{self.conv_type.__name__} kernel {self.kernel_shape}, stride {self.stride}, " \
               f"trains={self.trainable_names}"


class FactoredConvMixin(ConvMixin):
    """:class:`ConvMixin` for ``W + s B A`` layers (``weight``, ``lora_A``, ``lora_B``, ``scaling``): while the
    factors train, ``conv(x, W) + s B(A(x))`` with ``A`` a conv C_in -> r of the kernel's geometry and ``B`` a 1x1x1
    conv r -> C_out (no gradient of the full kernel); otherwise one conv with the merged kernel (inference)."""

    def conv_forward(self, x: Tensor) -> Tensor:
        if not (torch.is_grad_enabled() and self.lora_A.requires_grad):
            return super().conv_forward(x)
        conv = F.conv3d if self.conv_type is nn.Conv3d else F.conv2d
        out_c, in_c, *k = self.kernel_shape
        rank = self.lora_A.shape[0]
        base = conv(x, self.weight.view(self.kernel_shape), self.bias, self.stride, self.padding, self.dilation)
        low = conv(x, self.lora_A.view(rank, in_c, *k), None, self.stride, self.padding, self.dilation)
        return base + conv(low, self.lora_B.view(out_c, rank, *[1] * len(k))) * self.scaling


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
