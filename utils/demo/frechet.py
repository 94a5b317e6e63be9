"""Frechet distance between two feature sets modelled as Gaussians."""

from __future__ import annotations

import numpy as np
from scipy import linalg


def gaussian_stats(feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean [D] and unbiased covariance [D,D] of features [N,D], float64."""
    x = np.asarray(feats, np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f'need features [N>=2, D], got {x.shape}')
    return x.mean(axis=0), np.atleast_2d(np.cov(x, rowvar=False))


def frechet_from_stats(mu1: np.ndarray, s1: np.ndarray, mu2: np.ndarray,
                       s2: np.ndarray, eps: float = 1e-6) -> float:
    """|mu1-mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)) for Gaussian statistics."""
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    s1, s2 = np.asarray(s1, np.float64), np.asarray(s2, np.float64)
    covmean = linalg.sqrtm(s1 @ s2)
    if not np.isfinite(covmean).all():  # singular product: regularise
        offset = np.eye(s1.shape[0]) * eps
        covmean = linalg.sqrtm((s1 + offset) @ (s2 + offset))
    if np.iscomplexobj(covmean):
        imag = np.abs(covmean.imag).max()
        if imag > 1e-3 * max(1.0, np.abs(covmean.real).max()):
            raise ValueError(f'sqrtm has a large imaginary part: {imag:g}')
        covmean = covmean.real
    diff = mu1 - mu2
    dist = diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean)
    return float(max(dist, 0.0))


def frechet_distance(feats_a: np.ndarray, feats_b: np.ndarray) -> float:
    """Frechet distance between features [Na,D] and [Nb,D] (torch or numpy)."""
    feats_a, feats_b = (np.asarray(f.detach().cpu() if hasattr(f, 'detach')
                                   else f, np.float64)
                        for f in (feats_a, feats_b))
    return frechet_from_stats(*gaussian_stats(feats_a),
                              *gaussian_stats(feats_b))
