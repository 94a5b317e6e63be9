"""StyleGAN2's residual discriminator, for training the demo model (same parameter names as the
widely used PyTorch port's `d` entry). Equalized learning rate; blur-then-stride-2 downsampling."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from . import ops
from .layers import EqualLinear

__all__ = ['BiasActivation', 'ConvLayer', 'Discriminator', 'EqualConv2d', 'EqualLinearModule', 'FIRBlur',
           'ResBlock']


class EqualConv2d(nn.Module):
    """Conv with weight scaled by 1/sqrt(fan_in) at run time. x [B, I, H, W] -> [B, O, H', W']."""

    def __init__(self, in_channel: int, out_channel: int, kernel_size: int, stride: int = 1,
                 padding: int = 0, bias: bool = True):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channel, in_channel, kernel_size, kernel_size))
        self.scale = 1 / math.sqrt(in_channel * kernel_size ** 2)
        self.stride, self.padding = stride, padding
        self.bias = nn.Parameter(torch.zeros(out_channel)) if bias else None

    def forward(self, x):
        return F.conv2d(x, self.weight * self.scale, self.bias, self.stride, self.padding)


class FIRBlur(nn.Module):
    """Depthwise [1,3,3,1] low-pass with padding, applied before a stride-2 conv."""

    def __init__(self, pad: tuple[int, int]):
        super().__init__()
        self.register_buffer('kernel', ops.blur_kernel_2d())
        self.pad = pad

    def forward(self, x):
        return ops.upfirdn2d(x, self.kernel, pad=self.pad)


class BiasActivation(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x):
        return ops.fused_leaky_relu(x, self.bias)


class ConvLayer(nn.Sequential):
    """[blur ->] conv [-> bias + leaky ReLU]; downsample halves the resolution."""

    def __init__(self, in_channel: int, out_channel: int, kernel_size: int,
                 downsample: bool = False, activate: bool = True):
        layers = []
        if downsample:
            p = 4 - 2 + (kernel_size - 1)
            layers.append(FIRBlur(((p + 1) // 2, p // 2)))
            stride, padding = 2, 0
        else:
            stride, padding = 1, kernel_size // 2
        layers.append(EqualConv2d(in_channel, out_channel, kernel_size, stride, padding,
                                  bias=not activate and not downsample))
        if activate:
            layers.append(BiasActivation(out_channel))
        super().__init__(*layers)


class ResBlock(nn.Module):
    def __init__(self, in_channel: int, out_channel: int):
        super().__init__()
        self.conv1 = ConvLayer(in_channel, in_channel, 3)
        self.conv2 = ConvLayer(in_channel, out_channel, 3, downsample=True)
        self.skip = ConvLayer(in_channel, out_channel, 1, downsample=True, activate=False)

    def forward(self, x):
        return (self.conv2(self.conv1(x)) + self.skip(x)) / math.sqrt(2)


class Discriminator(nn.Module):
    """image [B, 3, size, size] in [-1, 1] -> realness logit [B, 1].

    channels: {resolution: width}, as for the generator. Minibatch-stddev over groups of 4.
    """

    def __init__(self, size: int, channels: dict[int, int], stddev_group: int = 4):
        super().__init__()
        log_size = int(math.log2(size))
        blocks = [ConvLayer(3, channels[size], 1)]
        for r in range(log_size, 2, -1):
            blocks.append(ResBlock(channels[2 ** r], channels[2 ** (r - 1)]))
        self.convs = nn.Sequential(*blocks)
        self.stddev_group = stddev_group
        self.final_conv = ConvLayer(channels[4] + 1, channels[4], 3)
        self.final_linear = nn.Sequential(
            EqualLinearModule(channels[4] * 16, channels[4], activate=True),
            EqualLinearModule(channels[4], 1))

    def forward(self, x):
        out = self.convs(x)
        b, c, h, w = out.shape
        group = min(b, self.stddev_group)
        while b % group:
            group -= 1
        y = out.view(group, -1, 1, c, h, w)
        y = torch.sqrt(y.var(0, unbiased=False) + 1e-8).mean([2, 3, 4], keepdim=True).squeeze(2)
        y = y.repeat(group, 1, h, w)
        out = self.final_conv(torch.cat([out, y], 1))
        return self.final_linear(out.reshape(b, -1))


class EqualLinearModule(EqualLinear):
    def forward(self, x):
        return self.linear(x)
