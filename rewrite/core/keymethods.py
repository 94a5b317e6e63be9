"""Key methods: orthonormal context directions D [rank, I] made of the selected regions' keys.

Every key method (registered in rewrite/formats/registry.py) is a function with one signature,
`directions(stats, keys [N, I], weights [N], rank) -> D [rank, I]` (float32), over the layer's key
statistics (C, its ZCA matrix, unit quantiles).
"""

from __future__ import annotations

import torch

from rewrite.core.statistics import KeyStatistics, solve_moment
from rewrite.formats.settings import RewriteError

__all__ = ['covariance_adjusted', 'gandissect_directions', 'mean_directions', 'svd_directions',
           'zca_directions', 'zca_whitened']


def covariance_adjusted(c_matrix: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """C^-1 k by a stable solve; k [I] or [N, I]."""
    return solve_moment(c_matrix.to(k.device), k.double()).to(k.dtype)


def zca_whitened(zca_matrix: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """C^-1/2 k; k [I] or [N, I]."""
    zca = zca_matrix.to(k.device, torch.float64)
    return (k.double() @ zca.t()).to(k.dtype) if k.dim() == 2 else (zca @ k.double()).to(k.dtype)


def zca_directions(stats: KeyStatistics, obs: torch.Tensor, w: torch.Tensor, rank: int) -> torch.Tensor:
    """Top principal directions of the ZCA-whitened, mask-weighted keys, mapped back (the paper's)."""
    whitened = w[:, None].double() * zca_whitened(stats.zca_matrix, obs.double())     # [N, I]
    if rank > min(whitened.shape):
        raise RewriteError(f'rank {rank} exceeds the {whitened.shape[0]} selected key pixels')
    _, _, vh = torch.linalg.svd(whitened, full_matrices=False)
    row_dirs = zca_whitened(stats.zca_matrix, vh[:rank])                             # [rank, I]
    q, _ = torch.linalg.qr(row_dirs.t())                                            # [I, rank]
    signs = torch.sign((q * whitened.sum(0)[:, None]).sum(0))
    signs[signs == 0] = 1
    return (q * signs[None]).t().float()


def _adjusted(stats: KeyStatistics, obs: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return covariance_adjusted(stats.c_matrix, (obs * w[:, None]).double())           # [N, I]


def svd_directions(stats: KeyStatistics, obs: torch.Tensor, w: torch.Tensor, rank: int) -> torch.Tensor:
    """Top left singular vectors of the covariance-adjusted keys C^-1 k (the first towards their mean)."""
    adjusted = _adjusted(stats, obs, w)
    avg = adjusted.mean(0)
    u, _, _ = torch.linalg.svd(adjusted.t(), full_matrices=False)                  # [I, min]
    if rank > u.shape[1]:
        raise RewriteError(f'rank {rank} exceeds the {adjusted.shape[0]} selected key pixels')
    if (avg * u[:, 0]).sum() < 0:
        u[:, 0] = -u[:, 0]
    return u.t()[:rank].float()


def mean_directions(stats: KeyStatistics, obs: torch.Tensor, w: torch.Tensor, rank: int) -> torch.Tensor:
    """The unit covariance-adjusted mean key C^-1 mean(k) (a single direction)."""
    if rank != 1:
        raise RewriteError("key_method 'mean' gives a single direction: use rank=1")
    avg = _adjusted(stats, obs, w).mean(0)
    return (avg / avg.norm())[None].float()


def gandissect_directions(stats: KeyStatistics, obs: torch.Tensor, w: torch.Tensor, rank: int) -> torch.Tensor:
    """The units whose quantile-normalised responses in the regions are highest (one-hot rows)."""
    rq = stats.unit_quantiles
    if rq is None:
        raise RewriteError('unit quantiles are not available in these statistics')
    level = rq.normalize(obs.t()).t().clamp(max=1 - 1e-4)                           # [N, I]
    score = (-torch.log1p(-level.double()) * w[:, None]).sum(0) / w.sum()
    top = score.argsort(descending=True)[:rank]
    d = torch.zeros(rank, obs.shape[1], device=obs.device)
    d[torch.arange(rank), top] = 1.0
    return d
