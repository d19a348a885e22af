"""LoRA-PT: the target matrices of all transformer blocks, grouped by shape and stacked along a third mode
(UNETR: ``W_sa`` = q, k, v, out-projection of every block, d x d x 4L; ``W_up`` m x d x L; ``W_down`` d x m x L),
split by t-SVD into a trainable principal tensor ``U_r * S_r * V_r^T`` and a frozen residual.

Each group is a :class:`PrincipalTensor` registered on the root network under ``lorapt_tensors``; every adapted
linear becomes a :class:`TensorSliceLinear` that reads its frontal slice(s) of ``residual + U * S * V^T``. The
principal tensor is rebuilt once per network forward (a forward pre-hook opens a cache, the post-hook drops it),
so the t-product cost does not grow with the number of layers; see :class:`PrincipalTensor` for how the t-product
is applied without forming (or Fourier-transforming) the large tensors: a first version that did was 3.5x slower
per step than full fine-tuning on UNETR-base. Trainable: ``r * n3 * (n1 + n2 + 1)`` real numbers
per group -- every Fourier slice's factors, not only the non-redundant half (the paper's 0.08 % for UNETR-base
counts that half; we report what this parameterisation trains, 0.18 %).

On nnU-Net's U-Nets (:class:`LoRAPTConv`) each conv kernel ``K`` (C_out x C_in x k1 x k2 x k3) is already a tensor
whose extra modes index same-kind matrices (one C_out x C_in channel mixing per tap): the order-p t-SVD
(:func:`~.tsvd.t_svd_nd`, DFT over the three tap modes) splits it into a trainable principal tensor of tubal rank r
and a frozen residual. Trainable per conv: ``r * k1 k2 k3 * (C_out + C_in + 1)``. On a 1x1x1 conv (the residual
encoder's skip projections) one tap is one matrix SVD: there LoRA-PT is PiSSA with its singular values as a
separate trainable vector.
"""
from __future__ import annotations

from typing import List, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hippo_peft.adapters.config import LoRAPTConfig
from hippo_peft.adapters.core import AdaptedLinear, ConvMixin, full_precision, matrix_view
from hippo_peft.adapters.registry import MethodSpec
from hippo_peft.adapters.targets import FUSED_QKV, find_targets
from hippo_peft.adapters.tsvd import t_product_nd, t_svd, t_svd_nd
from hippo_peft.errors import InputError

GROUPS_ATTR = "lorapt_tensors"


class PrincipalTensor(nn.Module):
    """One stacked tensor: trainable ``U`` (n1 x r x n3), tubes ``S`` (r x n3), ``V`` (n2 x r x n3); frozen residual.

    The t-product needs no large FFT: with ``Ũ = U ⊛ S`` (every column's tube circularly convolved with its S tube)
    frontal slice k of ``U * S * V^T`` is ``Σ_m Ũ_m V_{(m-k) mod n3}^T = A @ B_k`` with ``A`` = Ũ unfolded
    (n1 x r·n3) and ``B_k`` (r·n3 x n2) a circular shift of V's slices. So each slice's principal part is a product
    of rank r·n3, and a layer applies it LoRA-style, ``x R_k^T + (x B_k^T) A^T``, when that is cheaper than forming
    ``R_k + A B_k`` (few tokens, as in UNETR: 36 per 48x64x48 patch). Both paths are exact; tests check ``A B_k``
    against the FFT definition. The residual is stored frontal slices first (n3 x n1 x n2): contiguous weights.
    """

    trainable_names = ("U", "S", "V")

    def __init__(self, stacked: Tensor, rank: int):
        super().__init__()
        n1, n2, n3 = stacked.shape
        if rank > min(n1, n2):
            raise InputError(f"lorapt: tubal rank {rank} exceeds min(n1, n2) = {min(n1, n2)} of a stacked "
                             f"{n1} x {n2} x {n3} tensor; lower the rank.")
        u, s, v = t_svd(stacked, rank)
        self.U, self.S, self.V = nn.Parameter(u), nn.Parameter(s), nn.Parameter(v)
        # B_k[(j, m)] = V[:, j, (m - k) mod n3]: gather indices, shape (n3_k, n3_m)
        k, m = torch.meshgrid(torch.arange(n3), torch.arange(n3), indexing="ij")
        self.register_buffer("shift", (m - k) % n3, persistent=False)
        self._caching, self._cache = False, None
        with torch.no_grad():
            # contiguous: a difference with a permuted view keeps the view's strides, and strided weights get
            # copied by every matmul
            residual = stacked.detach().float().permute(2, 0, 1).contiguous() - self.principal_slices()
            self.register_buffer("residual", residual.contiguous())

    def factors(self) -> Tuple[Tensor, Tensor]:
        """``A`` (n1 x r·n3) and ``B`` (n3 x r·n3 x n2) with principal slice k = ``A @ B[k]``; float32, cached for
        one network forward."""
        if self._caching and self._cache is not None:
            return self._cache
        with full_precision(self.U.device):
            n1, r, n3 = self.U.shape
            u_s = torch.fft.irfft(torch.fft.rfft(self.U.float(), dim=2) * torch.fft.rfft(self.S.float(), dim=1),
                                  n=n3, dim=2)  # U ⊛ S, tube-wise (small: n1 x r x n3)
            a = u_s.reshape(n1, r * n3)
            b = self.V.float().permute(1, 2, 0)[:, self.shift]  # (r, n3_k, n3_m, n2)
            b = b.permute(1, 0, 2, 3).reshape(n3, r * n3, -1)
        if self._caching:
            self._cache = (a, b)
        return a, b

    def principal_slices(self) -> Tensor:
        a, b = self.factors()
        with full_precision(a.device):
            return torch.matmul(a, b)  # (n3, n1, n2)

    def stacked(self) -> Tensor:
        """``residual + U * S * V^T`` as an n1 x n2 x n3 tensor (inspection, merge, tests)."""
        return (self.residual + self.principal_slices()).permute(1, 2, 0)

    def extra_repr(self) -> str:
        n3, n1, n2 = self.residual.shape
        return f"{n1} x {n2} x {n3}, tubal rank {self.U.shape[1]}"


class TensorSliceLinear(nn.Module):
    """A linear whose weight is the concatenation (along outputs) of frontal slices of a shared tensor."""

    trainable_names: Tuple[str, ...] = ()

    def __init__(self, linear: nn.Linear, group: PrincipalTensor, group_key: str, slices: List[int]):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().clone())
        self.group_key, self.slices = group_key, list(slices)
        object.__setattr__(self, "_group", group)  # a reference, not a submodule: the root owns the tensor

    def merged_weight(self) -> Tensor:
        a, b = self._group.factors()
        with full_precision(a.device):
            return torch.cat([self._group.residual[k] + a @ b[k] for k in self.slices], dim=0)

    def forward(self, x: Tensor) -> Tensor:
        a, b = self._group.factors()
        n1, rank = a.shape
        tokens = x.numel() // max(x.shape[-1], 1)
        if tokens * (n1 + self.in_features) >= n1 * self.in_features:  # many tokens: form the weight
            return F.linear(x, self.merged_weight(), self.bias)
        residual = self._group.residual
        out = torch.cat([F.linear(x, residual[k]) + F.linear(F.linear(x, b[k]), a) for k in self.slices], dim=-1)
        return out if self.bias is None else out + self.bias

    @torch.no_grad()
    def to_linear(self) -> nn.Linear:
        w = self.merged_weight()
        linear = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None, device=w.device)
        linear.weight.copy_(w)
        if self.bias is not None:
            linear.bias.copy_(self.bias)
        return linear

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, " \
               f"slices {self.slices} of {GROUPS_ATTR}.{self.group_key}"


def _open_cache(model: nn.Module, args) -> None:
    for group in getattr(model, GROUPS_ATTR).values():
        group._caching, group._cache = True, None


def _close_cache(model: nn.Module, args, output) -> None:
    for group in getattr(model, GROUPS_ATTR).values():
        group._caching, group._cache = False, None


def inject_lorapt(model: nn.Module, config: LoRAPTConfig) -> None:
    targets = find_targets(model, config)
    # Pieces block by block, in the order q, k, v, out-projection (then the MLP linears); a fused qkv contributes its
    # q, k and v row blocks as three pieces. named_modules() lists MONAI's MLP before its attention, so sort.
    blocks = list(dict.fromkeys(name.rsplit(".", 2)[0] for name, _ in targets))
    role = {"qkv": 0, "out_proj": 1, "proj": 1, "linear1": 2, "linear2": 3}
    targets = sorted(targets, key=lambda t: (blocks.index(t[0].rsplit(".", 2)[0]), role.get(t[0].rsplit(".", 1)[1], 4)))
    pieces: List[Tuple[str, Tensor]] = []
    for name, linear in targets:
        w = linear.weight.detach()
        if FUSED_QKV.search(name):
            pieces += [(name, chunk) for chunk in w.chunk(3, dim=0)]
        else:
            pieces.append((name, w))
    by_shape: dict = {}
    for name, w in pieces:
        by_shape.setdefault(tuple(w.shape), []).append((name, w))
    groups = nn.ModuleDict()
    slices_of: dict = {}
    for (n1, n2), members in by_shape.items():
        key = f"w{n1}x{n2}"
        groups[key] = PrincipalTensor(torch.stack([w for _, w in members], dim=2), config.rank)
        for k, (name, _) in enumerate(members):
            slices_of.setdefault(name, (key, []))[1].append(k)
    model.add_module(GROUPS_ATTR, groups)
    for name, linear in targets:
        key, slices = slices_of[name]
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent), child, TensorSliceLinear(linear, groups[key], key, slices))
    model.register_forward_pre_hook(_open_cache)
    model.register_forward_hook(_close_cache)


def remove_lorapt(model: nn.Module) -> None:
    """Drop the stacked tensors and their hooks (after the slice linears were replaced by plain ones)."""
    if hasattr(model, GROUPS_ATTR):
        delattr(model, GROUPS_ATTR)
    for hooks, fn in ((model._forward_pre_hooks, _open_cache), (model._forward_hooks, _close_cache)):
        for hid in [h for h, f in hooks.items() if f is fn]:
            del hooks[hid]


class LoRAPTConv(ConvMixin, AdaptedLinear):
    """A conv whose kernel is ``residual + U * S * V^T`` (order-p t-product over the tap modes): trainable ``U``
    (C_out x r x k...), tubes ``S`` (r x k...), ``V`` (C_in x r x k...); ``weight`` is the frozen residual, unfolded
    like every conv layer's (C_out x C_in k^3)."""

    trainable_names = ("U", "S", "V")

    def __init__(self, conv: nn.Module, rank: int):
        kernel = conv.weight.detach()
        out_c, in_c = kernel.shape[:2]
        if rank > min(out_c, in_c):
            raise InputError(f"lorapt: tubal rank {rank} exceeds min(C_out, C_in) = {min(out_c, in_c)} of a "
                             f"{tuple(kernel.shape)} conv kernel; lower the rank or restrict the targets.")
        u, s, v = t_svd_nd(kernel, rank)
        super().__init__(matrix_view(conv))
        self.U, self.S, self.V = nn.Parameter(u), nn.Parameter(s), nn.Parameter(v)
        with torch.no_grad():  # the residual from the stored factors, so that residual + principal == K at the start
            self.weight.sub_(self.principal().reshape(out_c, -1))

    @classmethod
    def from_conv(cls, conv: nn.Module, config: LoRAPTConfig) -> "LoRAPTConv":
        return cls(conv, config.rank).with_geometry(conv)

    def principal(self) -> Tensor:
        """``U * S * V^T`` as a (C_out, C_in, k...) kernel, float32."""
        with full_precision(self.U.device):
            return t_product_nd(self.U.float(), self.S.float(), self.V.float())

    def merged_weight(self) -> Tensor:
        return self.weight + self.principal().reshape(self.out_features, -1)


SPEC = MethodSpec(
    "lorapt", LoRAPTConfig, "LoRA-PT", "LoRAPT", injector=inject_lorapt, conv_layer=LoRAPTConv,
    summary="LoRA-PT: tubal rank 1 principal tensors of the stacked attention / MLP weights (reference lr 1e-3, "
            "wd 1e-5).",
    paper="LoRA-PT: low-rank adaptation of UNETR using principal tensor singular values and vectors (t-SVD)")
