"""Edits that respect "preserve" regions: regions whose layer outputs must stay as they are.

The `zca` context directions D are the top generalized eigenvectors of the context energy
A = sum_n w_n^2 k_n k_n^T against the keys' second moment C (A d = s C d): the directions the context
keys answer to most, relative to how much every key answers to them. With preserve regions the
denominator also counts the preserve keys' energy, B = C + strength * P, with P = sum_m u_m k_m k_m^T /
sum_m u_m (u: the preserve masks' weights), so the directions answer to the context and as little as
possible to the keys whose outputs must stay as they are.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rewrite.formats.settings import MAX_PRESERVE_WEIGHT, PRESERVE_WEIGHT, preserve_weight_for

__all__ = ['MAX_PRESERVE_WEIGHT', 'PRESERVE_WEIGHT', 'PreserveSet', 'context_directions', 'preserve_weight_for']


@dataclass
class PreserveSet:
    """The preserve regions at the target layer, M images at full size.

    key: the target piece's input bag (fmap [M, I, h, w], style [M, I], noise); val [M, O, H, W]: the
    layer's outputs before the edit; weight [M, H, W]: the masks at the value resolution, in [0, 1]."""
    key: object
    val: torch.Tensor
    weight: torch.Tensor

    def change(self, out: torch.Tensor) -> torch.Tensor:
        """Mask-weighted mean abs change of outputs out [M, O, H, W] against val (a scalar)."""
        w = self.weight[:, None].to(out)
        return ((out - self.val).abs() * w).sum() / (w.sum() * out.shape[1]).clamp(min=1e-30)


def preserve_moment(keys: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """P [I, I] float64: the mask-weighted mean of k k^T over the preserve pixels; keys [M, I], weights [M]."""
    k = keys.double()
    u = weights.double()
    return (k * u[:, None]).t() @ k / u.sum().clamp(min=1e-30)


def context_directions(keys: torch.Tensor, weights: torch.Tensor, c_matrix: torch.Tensor, rank: int,
                       preserve_keys: torch.Tensor | None = None, preserve_weights: torch.Tensor | None = None,
                       strength: float = 1.0) -> torch.Tensor:
    """Orthonormal rows D [rank, I] spanning the top `rank` generalized eigenvectors of
    (A, C + strength * P); keys [N, I] and weights [N] of the context pixels, c_matrix [I, I].
    Signs: each row responds positively to the context keys' weighted sum."""
    k = keys.double()
    w = weights.double()
    a = (k * w[:, None] ** 2).t() @ k                                                   # [I, I]
    b = c_matrix.double().clone()
    if preserve_keys is not None and len(preserve_keys):
        b = b + strength * preserve_moment(preserve_keys, preserve_weights)
    chol = torch.linalg.cholesky(b + 1e-12 * b.diagonal().mean() * torch.eye(len(b), dtype=b.dtype))
    half = torch.linalg.solve_triangular(chol, a, upper=False)                          # L^-1 A
    m = torch.linalg.solve_triangular(chol, half.t(), upper=False)                       # L^-1 A L^-T
    _, vecs = torch.linalg.eigh((m + m.t()) / 2)
    top = vecs[:, -rank:].flip(1)                                                         # [I, rank]
    dirs = torch.linalg.solve_triangular(chol.t(), top, upper=True)                      # L^-T v
    q, _ = torch.linalg.qr(dirs)
    signs = torch.sign(q.t() @ (k * w[:, None]).sum(0))
    signs[signs == 0] = 1
    return (q * signs[None]).t().float()
