"""The steps of the sequential StyleGAN2. Each step maps a DataBag to a DataBag.

A DataBag carries what flows through the generator in parallel:
    latent  z [B, D], then w [B, D], then per-layer w's [B, n_latent, D]
    noise   list of per-layer noise maps ([1 or B, 1, H, W]) or None (draw random noise)
    w       the latent picked for the current layer [B, D]
    style   the current layer's modulation [B, I]
    fmap    the feature map [B, C, H, W]
    output  the running RGB image [B, 3, H, W]
"""

from __future__ import annotations

import math
from collections import OrderedDict

import torch
from torch import nn

from utils.generators.site import DataBag

from . import ops

__all__ = ['AdjustLatent', 'ApplyStyle', 'BiasLeakyReLU', 'Blur', 'ConstantInput', 'DemodulatedConv2d',
           'EqualLinear', 'InputLatent', 'MappingLinear', 'modulated_conv', 'ModulatedConv2dFused',
           'ModulatedConv2dSeq', 'Modulation', 'noise_shapes', 'NoiseBuffers', 'NoiseInjection',
           'PickLatent', 'PixelNorm', 'ReturnOutput', 'StyledConv', 'ToRGB', 'UpsampleRGB']


class EqualLinear(nn.Module):
    """Linear layer with equalized learning rate: y = x (W * lr_mul / sqrt(I))^T + b * lr_mul."""

    def __init__(self, in_dim: int, out_dim: int, bias_init: float = 0.0, lr_mul: float = 1.0,
                 activate: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim) / lr_mul)
        self.bias = nn.Parameter(torch.full((out_dim,), float(bias_init)))
        self.scale = lr_mul / math.sqrt(in_dim)
        self.lr_mul = lr_mul
        self.activate = activate

    def linear(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, I] -> [B, O], in the weight's dtype (z or styles of another dtype are cast)."""
        out = x.to(self.weight.dtype) @ (self.weight * self.scale).t()
        if self.activate:
            return ops.fused_leaky_relu(out, self.bias * self.lr_mul)
        return out + self.bias * self.lr_mul

    def extra_repr(self) -> str:
        return f'{self.weight.shape[1]}, {self.weight.shape[0]}, lr_mul={self.lr_mul}'


class InputLatent(nn.Module):
    """z [B, D] -> DataBag(latent=z). A DataBag passes through unchanged."""

    def forward(self, z):
        return z if isinstance(z, DataBag) else DataBag(latent=z)


class PixelNorm(nn.Module):
    def forward(self, d: DataBag) -> DataBag:
        return d.updated(latent=ops.pixel_norm(d.latent))


class MappingLinear(EqualLinear):
    """One layer of the mapping network, acting on the bag's latent: [B, in_dim] -> [B, dim]."""

    def __init__(self, dim: int, lr_mul: float = 0.01, in_dim: int | None = None):
        super().__init__(dim if in_dim is None else in_dim, dim, lr_mul=lr_mul, activate=True)

    def forward(self, d: DataBag) -> DataBag:
        return d.updated(latent=self.linear(d.latent))


class AdjustLatent(nn.Module):
    """w [B, D] -> per-layer latents [B, n_latent, D], pulled toward latent_avg by truncation."""

    def __init__(self, n_latent: int, style_dim: int, truncation: float = 1.0):
        super().__init__()
        self.n_latent = n_latent
        self.truncation = truncation
        self.register_buffer('latent_avg', torch.zeros(style_dim))

    def forward(self, d: DataBag) -> DataBag:
        w = d.latent
        if self.truncation != 1.0:
            w = self.latent_avg + self.truncation * (w - self.latent_avg)
        if w.dim() == 2:
            w = w[:, None, :].expand(-1, self.n_latent, -1)
        return d.updated(latent=w)


def noise_shapes(size: int) -> list[int]:
    """Resolution of each layer's noise map: 4, 8, 8, 16, 16, ..., size, size."""
    log_size = int(math.log2(size))
    return [4] + [2 ** r for r in range(3, log_size + 1) for _ in range(2)]


class NoiseBuffers(nn.Module):
    """Holds fixed per-layer noise maps `noise_i` [1, 1, R, R]; puts them into the bag.

    mode 'const' (default) uses the buffers, so each z always gives the same image;
    'random' draws fresh noise at every call; 'zero' switches noise off.
    A bag that already carries `noise` keeps it.
    """

    def __init__(self, size: int, seed: int = 0, mode: str = 'const'):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.resolutions = noise_shapes(size)
        for i, res in enumerate(self.resolutions):
            self.register_buffer(f'noise_{i}', torch.randn(1, 1, res, res, generator=gen))
        self.mode = mode

    def forward(self, d: DataBag) -> DataBag:
        if 'noise' in d:
            return d
        if self.mode == 'const':
            noise = [getattr(self, f'noise_{i}') for i in range(len(self.resolutions))]
        elif self.mode == 'random':
            noise = [None] * len(self.resolutions)
        elif self.mode == 'zero':
            noise = [0.0] * len(self.resolutions)
        else:
            raise ValueError(f"noise mode must be 'const', 'random' or 'zero', not {self.mode!r}")
        return d.updated(noise=noise)


class ConstantInput(nn.Module):
    """The learned 4x4 input: fmap = input repeated over the batch [B, C, 4, 4]."""

    def __init__(self, channels: int):
        super().__init__()
        self.input = nn.Parameter(torch.randn(1, channels, 4, 4))

    def forward(self, d: DataBag) -> DataBag:
        batch = d.latent.shape[0]
        return d.updated(fmap=self.input.expand(batch, -1, -1, -1))


class PickLatent(nn.Module):
    """w = latent[:, index] for the layer that follows."""

    def __init__(self, index: int):
        super().__init__()
        self.index = index

    def forward(self, d: DataBag) -> DataBag:
        return d.updated(w=d.latent[:, self.index])

    def extra_repr(self) -> str:
        return str(self.index)


class Modulation(EqualLinear):
    """style = affine(w): [B, D] -> [B, I], biased to 1."""

    def __init__(self, style_dim: int, in_channel: int):
        super().__init__(style_dim, in_channel, bias_init=1.0)

    def forward(self, d: DataBag) -> DataBag:
        return d.updated(style=self.linear(d.w))


class ApplyStyle(nn.Module):
    """Modulates the input features: fmap * style (per input channel)."""

    def forward(self, d: DataBag) -> DataBag:
        return d.updated(fmap=d.fmap * d.style[:, :, None, None])


class DemodulatedConv2d(nn.Module):
    """The plain convolution of a styled conv, then demodulation from its weight and the style.

    weight [1, O, I, k, k] as stored in checkpoints (unscaled). Input fmap is already modulated.
    This is the layer whose `weight` the rewriter edits.
    """

    def __init__(self, in_channel: int, out_channel: int, kernel_size: int,
                 demodulate: bool = True, upsample: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(1, out_channel, in_channel, kernel_size, kernel_size))
        self.scale = 1.0 / math.sqrt(in_channel * kernel_size ** 2)
        self.demodulate = demodulate
        self.upsample = upsample

    def forward(self, d: DataBag) -> DataBag:
        weight = self.weight[0]
        out = ops.plain_conv(d.fmap, weight, self.scale, self.upsample)
        if self.demodulate:
            demod = ops.demodulation(weight, d.style, self.scale)[:, :, None, None]
            out = out * demod if torch.is_grad_enabled() and (out.requires_grad or demod.requires_grad) \
                else out.mul_(demod)                       # in place on the fresh conv output
        return d.updated(fmap=out)

    def extra_repr(self) -> str:
        _, o, i, k, _ = self.weight.shape
        return f'{i}, {o}, {k}, upsample={self.upsample}, demodulate={self.demodulate}'


class Blur(nn.Module):
    """FIR low-pass of the feature map after a transposed conv. kernel [4, 4] (sums to 4)."""

    def __init__(self, pad: tuple[int, int], taps=(1, 3, 3, 1), gain: float = 4.0):
        super().__init__()
        self.pad = pad
        self.register_buffer('kernel', ops.blur_kernel_2d(taps, gain))

    def forward(self, d: DataBag) -> DataBag:
        return d.updated(fmap=ops.upfirdn2d(d.fmap, self.kernel, pad=self.pad))


def _blur_for(upsample: bool, kernel_size: int, taps) -> list:
    if not upsample:
        return []
    return [('blur', Blur(ops.upsample_conv_padding(len(taps), kernel_size), taps))]


class ModulatedConv2dSeq(nn.Sequential):
    """Modulated conv split apart: modulation -> adain (scale input) -> dconv (conv + demod) [-> blur]."""

    def __init__(self, in_channel: int, out_channel: int, kernel_size: int, style_dim: int,
                 demodulate: bool = True, upsample: bool = False, blur_taps=(1, 3, 3, 1)):
        super().__init__(OrderedDict([
            ('modulation', Modulation(style_dim, in_channel)),
            ('adain', ApplyStyle()),
            ('dconv', DemodulatedConv2d(in_channel, out_channel, kernel_size, demodulate, upsample)),
        ] + _blur_for(upsample, kernel_size, blur_taps)))


class ModulatedConv2dFused(nn.Module):
    """The same modulated conv computed the original way, as a grouped conv with per-sample weights.

    Same parameter names as ModulatedConv2dSeq, so checkpoints and edits carry over.
    """

    def __init__(self, in_channel: int, out_channel: int, kernel_size: int, style_dim: int,
                 demodulate: bool = True, upsample: bool = False, blur_taps=(1, 3, 3, 1)):
        super().__init__()
        self.modulation = Modulation(style_dim, in_channel)
        self.dconv = DemodulatedConv2d(in_channel, out_channel, kernel_size, demodulate, upsample)
        for name, blur in _blur_for(upsample, kernel_size, blur_taps):
            self.add_module(name, blur)

    def forward(self, d: DataBag) -> DataBag:
        d = self.modulation(d)
        conv = self.dconv
        out = ops.fused_modulated_conv(d.fmap, conv.weight[0], d.style, conv.scale,
                                       conv.demodulate, conv.upsample)
        d = d.updated(fmap=out)
        return self.blur(d) if conv.upsample else d


def modulated_conv(mconv: str, *args, **kwargs) -> nn.Module:
    if mconv == 'seq':
        return ModulatedConv2dSeq(*args, **kwargs)
    if mconv == 'fused':
        return ModulatedConv2dFused(*args, **kwargs)
    raise ValueError(f"mconv must be 'seq' or 'fused', not {mconv!r}")


class NoiseInjection(nn.Module):
    """fmap + strength * noise, with this layer's noise map from the bag (random if None)."""

    def __init__(self, index: int):
        super().__init__()
        self.index = index
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, d: DataBag) -> DataBag:
        noise = d.noise[self.index]
        if noise is None:
            b, _, h, w = d.fmap.shape
            noise = torch.randn(b, 1, h, w, device=d.fmap.device, dtype=d.fmap.dtype)
        return d.updated(fmap=d.fmap + self.weight * noise)


class BiasLeakyReLU(nn.Module):
    """The activation after each styled conv: leaky_relu(fmap + bias, 0.2) * sqrt(2).

    With `clamp` set (NVlabs' `conv_clamp`), the result is then clamped to [-clamp, clamp].
    """

    def __init__(self, channels: int, clamp: float | None = None):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))
        self.clamp = clamp

    def forward(self, d: DataBag) -> DataBag:
        return d.updated(fmap=ops.clamp_activation(ops.fused_leaky_relu(d.fmap, self.bias), self.clamp))

    def extra_repr(self) -> str:
        return '' if self.clamp is None else f'clamp={self.clamp}'


class StyledConv(nn.Sequential):
    """mconv (modulated 3x3 conv) -> noise -> activate."""

    def __init__(self, in_channel: int, out_channel: int, style_dim: int, noise_index: int,
                 upsample: bool = False, mconv: str = 'seq', blur_taps=(1, 3, 3, 1),
                 clamp: float | None = None):
        super().__init__(OrderedDict([
            ('mconv', modulated_conv(mconv, in_channel, out_channel, 3, style_dim,
                                     upsample=upsample, blur_taps=blur_taps)),
            ('noise', NoiseInjection(noise_index)),
            ('activate', BiasLeakyReLU(out_channel, clamp)),
        ]))


class ToRGB(nn.Module):
    """output = modulated 1x1 conv of fmap (no demodulation) + bias (+ the upsampled skip).

    With `clamp` set (NVlabs' `conv_clamp`), this layer's RGB is clamped to [-clamp, clamp]
    before the skip is added.
    """

    def __init__(self, in_channel: int, style_dim: int, skip: bool, mconv: str = 'seq',
                 clamp: float | None = None):
        super().__init__()
        self.mconv = modulated_conv(mconv, in_channel, 3, 1, style_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))
        self.skip = skip
        self.clamp = clamp

    def forward(self, d: DataBag) -> DataBag:
        rgb = ops.clamp_activation(self.mconv(d).fmap + self.bias, self.clamp)
        if self.skip:
            rgb = rgb + d.output
        return d.updated(output=rgb)


class UpsampleRGB(nn.Module):
    """Upsamples the running RGB output 2x (zero insertion + FIR). kernel [4, 4] (sums to 4)."""

    def __init__(self, taps=(1, 3, 3, 1)):
        super().__init__()
        self.register_buffer('kernel', ops.blur_kernel_2d(taps, 4.0))
        p = len(taps) - 2
        self.pad = ((p + 1) // 2 + 1, p // 2)

    def forward(self, d: DataBag) -> DataBag:
        return d.updated(output=ops.upfirdn2d(d.output, self.kernel, up=2, pad=self.pad))


class ReturnOutput(nn.Module):
    """DataBag -> the RGB image [B, 3, H, W]."""

    def forward(self, d: DataBag) -> torch.Tensor:
        return d.output
