"""A StyleGAN2 checkpoint with random weights of the scale a trained one has, for any layout (key -> shape, e.g.
the layout files of the original release's checkpoints): a stand-in model for tests and benchmarks that need the
real architecture at 256 px or more without its weights.

    ckpt = synthetic_checkpoint(json.load(open('stylegan2-checkpoint-layout-256.json'))['g_ema'])
    model = model_from_checkpoint(ckpt, truncation=0.5)
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ['realistic_state_dict', 'synthetic_checkpoint']


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


def synthetic_checkpoint(shapes: dict[str, list[int]], seed: int = 0) -> dict:
    """{'g_ema': realistic_state_dict(shapes, seed), 'latent_avg': [style_dim] standard normal of seed + 1}."""
    sd = realistic_state_dict(shapes, seed)
    latent_avg = torch.from_numpy(np.random.RandomState(seed + 1).randn(sd['style.1.weight'].shape[0])
                                  .astype(np.float32))
    return {'g_ema': sd, 'latent_avg': latent_avg}
