"""Shared fixtures: checkpoints built from the shared layout files, with realistic random values."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / 'shared'
REFERENCE = SHARED / 'reference'


def need_shared(path: Path = REFERENCE) -> Path:
    """Skips (with the reason) only when ../shared is absent."""
    if not SHARED.is_dir():
        pytest.skip(f'../shared is absent ({SHARED}); this test needs its reference files')
    assert path.exists(), f'{path} is missing from ../shared'
    return path


def layout(size: int) -> dict[str, list[int]]:
    return json.loads((need_shared() / f'stylegan2-checkpoint-layout-{size}.json').read_text())['g_ema']


def realistic_state_dict(shapes: dict[str, list[int]], seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights of the scale a trained StyleGAN2 has (see the layout notes in ../shared)."""
    rng = np.random.RandomState(seed)
    taps = np.array([1.0, 3.0, 3.0, 1.0])
    blur = np.outer(taps, taps) / 64.0 * 4.0
    sd = {}
    for key, shape in shapes.items():
        if key.endswith(('blur.kernel', 'upsample.kernel')):
            v = blur
        elif key.startswith('style.'):
            v = rng.randn(*shape) * (100.0 if key.endswith('weight') else 5.0)
        elif key.endswith('modulation.bias'):
            v = 1.0 + 0.2 * rng.randn(*shape)
        elif key.endswith('noise.weight'):
            v = 0.05 + 0.1 * np.abs(rng.randn(*shape))
        elif key.endswith('.bias'):
            v = 0.1 * rng.randn(*shape)
        else:
            v = rng.randn(*shape)
        sd[key] = torch.from_numpy(np.asarray(v, dtype=np.float32).reshape(shape))
    return sd


def layout_checkpoint(size: int, seed: int = 0) -> dict:
    sd = realistic_state_dict(layout(size), seed)
    latent_avg = torch.from_numpy(np.random.RandomState(seed + 1).randn(sd['style.1.weight'].shape[0])
                                  .astype(np.float32))
    return {'g_ema': sd, 'latent_avg': latent_avg}


@pytest.fixture(scope='session')
def ckpt64():
    return layout_checkpoint(64)


@pytest.fixture(scope='session')
def ckpt256():
    return layout_checkpoint(256)
