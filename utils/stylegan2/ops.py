"""Small functional operations of StyleGAN2, in plain PyTorch (no compiled extensions).

Conventions follow the widely used PyTorch port of StyleGAN2: weights are stored unscaled and
multiplied at run time by their equalized-learning-rate scale, 1/sqrt(fan_in).
Shapes: B batch, C channels, H x W feature map, O output channels, I input channels.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ['blur_kernel_2d', 'CHANNELS_LAST', 'clamp_activation', 'DEMOD_EPS', 'demodulation',
           'fused_leaky_relu', 'fused_modulated_conv', 'LRELU_GAIN', 'LRELU_SLOPE', 'pixel_norm',
           'plain_conv', 'upfirdn2d', 'upsample_conv_padding']

LRELU_SLOPE = 0.2
LRELU_GAIN = math.sqrt(2.0)
DEMOD_EPS = 1e-8
CHANNELS_LAST = torch.channels_last


def blur_kernel_2d(taps=(1, 3, 3, 1), gain: float = 1.0) -> torch.Tensor:
    """The separable FIR kernel outer(taps, taps), normalised to sum to `gain`. [K, K]"""
    k = torch.tensor(taps, dtype=torch.float32)
    k = k[:, None] * k[None, :]
    return k / k.sum() * gain


def fused_leaky_relu(x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """leaky_relu(x + bias, 0.2) * sqrt(2); bias [C] broadcast over dim 1. Never modifies x."""
    if bias is not None:
        x = x + bias.view([1, -1] + [1] * (x.dim() - 2))
    elif not _needs_grad(x):
        x = x.clone()
    if _needs_grad(x):
        return F.leaky_relu(x, LRELU_SLOPE) * LRELU_GAIN
    return F.leaky_relu_(x, LRELU_SLOPE).mul_(LRELU_GAIN)       # in place on a fresh tensor


def clamp_activation(x: torch.Tensor, clamp: float | None) -> torch.Tensor:
    """x clamped to [-clamp, clamp] (NVlabs' `conv_clamp`); x itself when clamp is None."""
    if clamp is None:
        return x
    return x.clamp(-clamp, clamp)


def _needs_grad(x: torch.Tensor) -> bool:
    return torch.is_grad_enabled() and x.requires_grad


def pixel_norm(z: torch.Tensor) -> torch.Tensor:
    """Normalise each row of z [B, D] to unit root-mean-square."""
    return z * torch.rsqrt(z.pow(2).mean(dim=1, keepdim=True) + 1e-8)


def upfirdn2d(x: torch.Tensor, kernel: torch.Tensor, up: int = 1,
              pad: tuple[int, int] = (0, 0)) -> torch.Tensor:
    """Upsample by zero insertion, pad, and filter every channel with `kernel`.

    x [B, C, H, W], kernel [K, K] -> [B, C, H*up + pad0 + pad1 - K + 1, ...].
    The kernel is flipped (true convolution), as in the reference upfirdn2d.
    """
    b, c, h, w = x.shape
    if up > 1:
        x = x.reshape(b, c, h, 1, w, 1)
        x = F.pad(x, [0, up - 1, 0, 0, 0, up - 1])
        x = x.reshape(b, c, h * up, w * up)
    weight = torch.flip(kernel, [0, 1]).to(x.dtype)[None, None].expand(c, 1, *kernel.shape)
    weight = weight.contiguous(memory_format=CHANNELS_LAST)
    x = x.contiguous(memory_format=CHANNELS_LAST)          # depthwise convs are far faster in NHWC
    if pad[0] == pad[1]:
        return F.conv2d(x, weight, padding=pad[0], groups=c)
    return F.conv2d(F.pad(x, [pad[0], pad[1], pad[0], pad[1]]), weight, groups=c)


def upsample_conv_padding(kernel_taps: int, conv_size: int, factor: int = 2) -> tuple[int, int]:
    """Blur padding after a stride-2 transposed conv so the output is exactly factor x input."""
    p = (kernel_taps - factor) - (conv_size - 1)
    return (p + 1) // 2 + factor - 1, p // 2 + 1


def demodulation(weight: torch.Tensor, style: torch.Tensor, scale: float) -> torch.Tensor:
    """Demodulation coefficients 1/||scale * W[o] * style[b]||.

    weight [O, I, k, k] (unscaled), style [B, I] -> [B, O]. Uses
    sum_{i,kk} (s W[o,i,kk] style[b,i])^2 = (style^2 @ (s^2 sum_kk W^2)^T)[b, o],
    which never forms the per-sample weight tensor.
    """
    energy = weight.pow(2).sum(dim=(2, 3)) * (scale * scale)
    return torch.rsqrt(style.pow(2) @ energy.t() + DEMOD_EPS)


def plain_conv(x: torch.Tensor, weight: torch.Tensor, scale: float,
               upsample: bool = False) -> torch.Tensor:
    """The unmodulated convolution: x [B, I, H, W], weight [O, I, k, k] -> [B, O, H', W'].

    Same-padded conv, or (upsample) a stride-2 transposed conv giving 2H+1 before blurring.
    Runs in channels-last layout (no per-call reorders in oneDNN); a 1x1 conv is a matmul, whose
    result does not depend on the thread count or on which images share the batch.
    """
    w = weight * scale
    b, i, h, wd = x.shape
    if w.shape[-1] == 1 and not upsample:
        y = x.permute(0, 2, 3, 1).reshape(-1, i) @ w[:, :, 0, 0].t()
        return y.reshape(b, h, wd, -1).permute(0, 3, 1, 2)
    x = x.contiguous(memory_format=CHANNELS_LAST)
    if upsample:
        return F.conv_transpose2d(x, w.transpose(0, 1).contiguous(memory_format=CHANNELS_LAST), stride=2)
    return F.conv2d(x, w.contiguous(memory_format=CHANNELS_LAST), padding=weight.shape[-1] // 2)


def fused_modulated_conv(x: torch.Tensor, weight: torch.Tensor, style: torch.Tensor, scale: float,
                         demodulate: bool = True, upsample: bool = False) -> torch.Tensor:
    """The original fused modulated conv: one grouped conv with a weight per sample.

    x [B, I, H, W], weight [O, I, k, k] (unscaled), style [B, I] -> [B, O, H', W'].
    """
    b, i, h, w = x.shape
    o, _, k, _ = weight.shape
    wt = scale * weight[None] * style[:, None, :, None, None]          # [B, O, I, k, k]
    if demodulate:
        wt = wt * torch.rsqrt(wt.pow(2).sum(dim=(2, 3, 4)) + DEMOD_EPS)[:, :, None, None, None]
    x = x.reshape(1, b * i, h, w)
    if upsample:
        wt = wt.transpose(1, 2).reshape(b * i, o, k, k)
        out = F.conv_transpose2d(x, wt, stride=2, groups=b)
    else:
        out = F.conv2d(x, wt.reshape(b * o, i, k, k), padding=k // 2, groups=b)
    return out.reshape(b, o, *out.shape[2:])
