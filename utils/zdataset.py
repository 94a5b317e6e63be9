"""Seeded z-samples, identical to the original release's, so image numbers mean the same images."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import TensorDataset

__all__ = ['standard_z_sample', 'z_dataset_for_model', 'z_sample_for_model']


def standard_z_sample(size: int, depth: int, seed: int = 1) -> torch.Tensor:
    """z [size, depth] = RandomState(seed).standard_normal(size * depth), as float32."""
    rng = np.random.RandomState(seed)
    return torch.from_numpy(rng.standard_normal(size * depth).reshape(size, depth)).float()


def _z_dim(model) -> int:
    for name in ('style_dim', 'z_dim'):
        if hasattr(model, name):
            return int(getattr(model, name))
    if hasattr(model, 'input_shape'):
        return int(model.input_shape[1])
    raise ValueError('cannot tell the z dimension of this model (no style_dim, z_dim or input_shape)')


def z_sample_for_model(model, size: int = 100, seed: int = 1) -> torch.Tensor:
    """The seeded z-sample [size, style_dim] for `model`."""
    return standard_z_sample(size, _z_dim(model), seed)


def z_dataset_for_model(model, size: int = 100, seed: int = 1, indices=None) -> TensorDataset:
    """TensorDataset of z_sample_for_model(model, size, seed), optionally restricted to `indices`.

    `zds[i]` is a 1-tuple (z [style_dim],); `zds.tensors[0]` is the whole [size, style_dim] sample.
    """
    z = z_sample_for_model(model, size, seed)
    if indices is not None:
        z = z[torch.as_tensor(indices, dtype=torch.long)]
    ds = TensorDataset(z)
    ds.seed = seed
    return ds
