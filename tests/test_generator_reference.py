"""An independent float64 reference of the published StyleGAN2 formulas, checked against the
model's modules: one plain styled conv, one upsampling styled conv and one toRGB step."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import layout_checkpoint

from utils.stylegan2 import DataBag, model_from_checkpoint

TAPS = np.array([1.0, 3.0, 3.0, 1.0])
FIR = torch.from_numpy(np.outer(TAPS, TAPS) / 64.0)          # sums to 1


def modulation(w, weight, bias):
    """Equalized-lr affine: s = w (W / sqrt(D))^T + b."""
    return w @ (weight / math.sqrt(weight.shape[1])).t() + bias


def zero_stuff(x):
    """[B, C, H, W] -> [B, C, 2H, 2W] with x at even positions, zeros between."""
    b, c, h, w = x.shape
    out = torch.zeros(b, c, 2 * h, 2 * w, dtype=x.dtype)
    out[:, :, ::2, ::2] = x
    return out


def fir(x, kernel, pad0, pad1):
    """Pad, then convolve every channel with kernel (flipped: a true convolution)."""
    c = x.shape[1]
    x = F.pad(x, [pad0, pad1, pad0, pad1])
    return F.conv2d(x, torch.flip(kernel, [0, 1])[None, None].expand(c, 1, 4, 4), groups=c)


def styled_conv_reference(x, w, p, noise, upsample):
    """Per-sample modulated/demodulated 3x3 conv (+ transposed-conv upsampling and blur),
    noise, bias and leaky ReLU * sqrt 2, with explicit loops over samples."""
    s = modulation(w, p['modulation.weight'], p['modulation.bias'])
    weight = p['weight'][0]
    scale = 1.0 / math.sqrt(weight.shape[1] * 9)
    outs = []
    for b in range(x.shape[0]):
        wb = scale * weight * s[b][None, :, None, None]                   # [O, I, 3, 3]
        wb = wb / torch.sqrt((wb ** 2).sum(dim=(1, 2, 3), keepdim=True) + 1e-8)
        xb = x[b:b + 1]
        if upsample:
            # transposed conv, stride 2 == zero-stuffed input, full correlation with flipped kernel
            stuffed = zero_stuff(xb)[:, :, :-1, :-1]                       # [1, I, 2H-1, 2W-1]
            y = F.conv2d(F.pad(stuffed, [2, 2, 2, 2]), torch.flip(wb, [2, 3]))  # [1, O, 2H+1, 2W+1]
            y = fir(y, FIR * 4, 1, 1)                                      # -> [1, O, 2H, 2W]
        else:
            y = F.conv2d(xb, wb, padding=1)
        outs.append(y)
    y = torch.cat(outs) + p['noise.weight'] * noise
    return F.leaky_relu(y + p['activate.bias'][None, :, None, None], 0.2) * math.sqrt(2)


def to_rgb_reference(x, w, p, skip):
    s = modulation(w, p['modulation.weight'], p['modulation.bias'])
    weight = p['weight'][0, :, :, 0, 0] / math.sqrt(x.shape[1])           # [3, I]
    rgb = torch.einsum('oi,bi,bihw->bohw', weight, s, x) + p['bias']
    if skip is not None:
        rgb = rgb + fir(zero_stuff(skip), FIR * 4, 2, 1)
    return rgb


def params(sd, prefix):
    return {k[len(prefix):]: v.double() for k, v in sd.items() if k.startswith(prefix)}


@pytest.fixture(scope='module')
def setup():
    ckpt = layout_checkpoint(64, seed=3)
    model = model_from_checkpoint(ckpt).double()
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(2, 512, generator=gen, dtype=torch.float64)
    latent = w[:, None].expand(2, model.n_latent, 512)
    noise = [torch.randn(1, 1, r, r, generator=gen, dtype=torch.float64) for r in
             [4, 8, 8, 16, 16, 32, 32, 64, 64]]
    return ckpt['g_ema'], model, w, latent, noise


def test_plain_styled_conv(setup):
    sd, model, w, latent, noise = setup
    x = torch.randn(2, 512, 16, 16, dtype=torch.float64)
    got = model.layer6(DataBag(latent=latent, fmap=x, noise=noise)).fmap        # layer6 = convs.3
    p = params(sd, 'convs.3.') | {'weight': sd['convs.3.conv.weight'].double()}
    p = {k.replace('conv.', '', 1) if k.startswith('conv.') else k: v for k, v in p.items()}
    want = styled_conv_reference(x, w, p, noise[4], upsample=False)
    assert got.shape == want.shape == (2, 512, 16, 16)
    assert (got - want).abs().max() / want.abs().max() < 1e-10


def test_upsampling_styled_conv(setup):
    sd, model, w, latent, noise = setup
    x = torch.randn(2, 512, 8, 8, dtype=torch.float64)
    got = model.layer5(DataBag(latent=latent, fmap=x, noise=noise)).fmap        # layer5 = convs.2
    p = params(sd, 'convs.2.')
    p = {k.replace('conv.', '', 1) if k.startswith('conv.') else k: v for k, v in p.items()}
    want = styled_conv_reference(x, w, p, noise[3], upsample=True)
    assert got.shape == want.shape == (2, 512, 16, 16)
    assert (got - want).abs().max() / want.abs().max() < 1e-10


def test_to_rgb_with_upsampled_skip(setup):
    sd, model, w, latent, noise = setup
    x = torch.randn(2, 512, 16, 16, dtype=torch.float64)
    skip = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    bag = model.up_rgb2(DataBag(latent=latent, fmap=x, output=skip))
    got = model.to_rgb3(bag).output                                               # to_rgbs.1
    p = params(sd, 'to_rgbs.1.')
    p = {k.replace('conv.', '', 1) if k.startswith('conv.') else k: v for k, v in p.items()}
    want = to_rgb_reference(x, w, p, skip)
    assert (got - want).abs().max() / want.abs().max() < 1e-10
