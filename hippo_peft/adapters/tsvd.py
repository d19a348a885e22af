"""The t-SVD of real third-order tensors (Kilmer & Martin), in float64, returning float32 factors.

For ``A`` in R^{n1 x n2 x n3}: ``Â = fft(A, dim=2)``; the t-product ``A * B`` multiplies matching frontal slices
in the Fourier domain; ``A^T`` transposes every slice and reverses slices 2..n3, so ``fft(A^T)_k = fft(A)_k^H``.
Because the tensors are real, only the ``n3 // 2 + 1`` non-redundant slices are computed (``rfft``/``irfft``):
the others are their conjugates. The DC slice (and the Nyquist slice for even ``n3``) of a real tensor is real;
it gets a *real* SVD so that the factors' spectra stay conjugate-symmetric and ``irfft`` returns real factors
that reproduce them exactly.
"""
from __future__ import annotations

from typing import Tuple

import torch
from torch import Tensor

from hippo_peft.errors import InputError


@torch.no_grad()
def t_svd(a: Tensor, rank: int | None = None) -> Tuple[Tensor, Tensor, Tensor]:
    """Truncated t-SVD: real ``U`` (n1 x r x n3), tubes ``S`` (r x n3), ``V`` (n2 x r x n3) with
    ``U * S * V^T`` (t-product, ``S`` f-diagonal with these tubes) the best tubal-rank-r approximation of ``a``
    (all of ``a`` for r = min(n1, n2)). LoRA-PT applies it without forming it (:class:`~.lorapt.PrincipalTensor`).

    The decomposition runs in float64; the factors are returned in float32.
    """
    n1, n2, n3 = a.shape
    full = min(n1, n2)
    rank = full if rank is None else rank
    if not 1 <= rank <= full:
        raise InputError(f"tubal rank must be in 1..{full} for a {n1} x {n2} x {n3} tensor, got {rank}.")
    af = torch.fft.rfft(a.detach().to(torch.float64), dim=2).permute(2, 0, 1)  # (F, n1, n2)
    u, s, vh = torch.linalg.svd(af, full_matrices=False)
    u, s, v = u[:, :, :rank], s[:, :rank].to(u.dtype), vh[:, :rank, :].conj().transpose(1, 2)
    real_slices = [0] + ([n3 // 2] if n3 % 2 == 0 and n3 > 1 else [])
    for k in real_slices:
        ur, sr, vhr = torch.linalg.svd(af[k].real, full_matrices=False)
        u[k], s[k], v[k] = ur[:, :rank].to(u.dtype), sr[:rank].to(u.dtype), vhr[:rank].T.to(u.dtype)
    u = torch.fft.irfft(u.permute(1, 2, 0), n=n3, dim=2)
    s = torch.fft.irfft(s.permute(1, 0), n=n3, dim=1)
    v = torch.fft.irfft(v.permute(1, 2, 0), n=n3, dim=2)
    return u.float(), s.float(), v.float()


@torch.no_grad()
def t_svd_nd(a: Tensor, rank: int) -> Tuple[Tensor, Tensor, Tensor]:
    """Truncated order-p t-SVD (Martin, Shafer, LaRue 2013) of a real ``n1 x n2 x m_1 x ... x m_q`` tensor: the
    multidimensional DFT over modes 3..p, an SVD of every frontal slice, the first ``rank`` triplets kept.

    Returns real ``U`` (n1 x r x m...), tubes ``S`` (r x m...), ``V`` (n2 x r x m...) whose order-p t-product
    :func:`t_product_nd` is the best tubal-rank-r approximation of ``a``; for one extra mode it is :func:`t_svd`.
    Frequencies ``f`` and ``-f`` (mod m, per mode) hold conjugate slices of a real tensor: ``-f`` takes the conjugate
    factors of ``f``, and a self-conjugate slice (every index 0 or m/2) a real SVD, so the factors are real and
    reproduce the slices exactly. Decomposed in float64; factors returned in float32.
    """
    n1, n2, *modes = a.shape
    if not 1 <= rank <= min(n1, n2):
        raise InputError(f"tubal rank must be in 1..{min(n1, n2)} for a {' x '.join(map(str, a.shape))} tensor, "
                         f"got {rank}.")
    dims = tuple(range(2, a.dim()))
    slices = torch.fft.fftn(a.detach().to(torch.float64), dim=dims).reshape(n1, n2, -1).permute(2, 0, 1)
    u, s, vh = torch.linalg.svd(slices, full_matrices=False)
    u, s, v = u[:, :, :rank].clone(), s[:, :rank].to(u.dtype), vh[:, :rank, :].conj().transpose(1, 2).clone()
    index = torch.arange(slices.shape[0]).reshape(modes)
    partner = index.flip(dims=tuple(range(len(modes)))).roll(shifts=(1,) * len(modes),
                                                             dims=tuple(range(len(modes)))).reshape(-1)
    for f, g in enumerate(partner.tolist()):  # g: the flat index of -f
        if f == g:  # a real slice gets a real SVD
            ur, sr, vhr = torch.linalg.svd(slices[f].real, full_matrices=False)
            u[f], s[f], v[f] = ur[:, :rank].to(u.dtype), sr[:rank].to(u.dtype), vhr[:rank].T.to(u.dtype)
        elif g < f:  # the conjugate of an earlier slice's factors
            u[f], s[f], v[f] = u[g].conj(), s[g], v[g].conj()

    def spatial(x: Tensor, lead: int) -> Tensor:  # (F, ...) -> (..., m...) back in the tap domain
        x = x.reshape(*modes, *x.shape[1:]).movedim(tuple(range(len(modes))), tuple(range(lead, lead + len(modes))))
        return torch.fft.ifftn(x, dim=tuple(range(lead, lead + len(modes)))).real.float()

    return spatial(u, 2), spatial(s, 1), spatial(v, 2)


def t_product_nd(u: Tensor, s: Tensor, v: Tensor) -> Tensor:
    """``U * S * V^T`` for :func:`t_svd_nd`'s factors: the product of matching slices in the Fourier domain over the
    trailing modes, ``Û_f diag(Ŝ_f) V̂_f^H`` (a real n1 x n2 x m... tensor, in the factors' float dtype)."""
    dims = tuple(range(2, u.dim()))
    uf, sf, vf = torch.fft.fftn(u, dim=dims), torch.fft.fftn(s, dim=tuple(range(1, s.dim()))), torch.fft.fftn(v, dim=dims)
    return torch.fft.ifftn(torch.einsum("ar...,r...,br...->ab...", uf, sf, vf.conj()), dim=dims).real
