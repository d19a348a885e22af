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
