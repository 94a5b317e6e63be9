"""The rewrite site: everything the rewriter, its solvers, the command line and the widget need to know
about one rewritable layer of a generator, asked of the generator itself.

A generator family supports rewriting by a method `rewrite_site(layernum) -> RewriteSite` (SeqStyleGAN2
has one, utils/stylegan2/site.py; `rewrite_site(model, layernum)` below asks for it). The generator must be a nested
nn.Sequential whose steps pass a `DataBag` with the feature map in `fmap` (the first step takes z
[B, D], the last returns images [B, 3, H, W]), so `utils.nethook.subsequence` can cut it into three
pieces at the site:

    context piece   z -> key bag          up to (and excluding) `conv`
    target piece    key bag -> value bag  `conv` .. `target_end`: conv [+ demodulation] [+ blur]
                                          [+ noise] + bias + leaky ReLU (slope 0.2, gain sqrt 2)
    rendering piece value bag -> image    after `target_end`

The rewritten weight is `conv`'s parameter `weight`, shaped [1, O, I, k, k] (StyleGAN2's stored layout).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from utils.nethook import subsequence


class DataBag(dict):
    """A dict whose keys are also attributes, passed between a generator's steps (`fmap`: the feature map
    [B, C, H, W]; StyleGAN2 adds `latent`, `style`, `noise`, ...). `updated` returns a new bag (inputs stay intact)."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def updated(self, **fields) -> DataBag:
        bag = DataBag(self)
        bag.update(fields)
        return bag


@dataclass
class TargetLayer:
    """What the closed-form solver needs to know of the target piece on a goal's keys: out = lrelu(
    conv(k, W) [* demod(W, style)] [-> blur] + noise + bias) * sqrt 2, with the conv `ops.plain_conv`."""
    scale: float                   # the conv's weight scale (equalized learning rate)
    upsample: bool                 # transposed stride-2 conv (then `blur`)
    demodulate: bool               # StyleGAN2 demodulation from W and `style`
    blur: Callable[[torch.Tensor], torch.Tensor] | None
    noise: torch.Tensor            # noise strength * noise map, broadcastable to the value crop
    bias: torch.Tensor             # [O]
    style: torch.Tensor | None = None    # [I], the goal's style (needed when demodulate)


class RewriteSite:
    """One rewritable layer of a generator (bound to that generator).

    layernum: the layer's number; conv: module name of the rewritten conv (the target piece's first
    module; the context piece ends just before it); target_end: the target piece's last module;
    key_shape / value_shape: (C, H, W) of the keys (the conv's input) and values (the piece's output).
    Families override `styles`, `noise_index` and `target_layer`; the defaults describe a plain conv
    (no modulation, no noise)."""

    def __init__(self, model: torch.nn.Module, layernum: int, conv: str, target_end: str):
        self.model, self.layernum, self.conv, self.target_end = model, layernum, conv, target_end
        self._shapes: tuple[tuple[int, ...], tuple[int, ...]] | None = None

    @property
    def weight_name(self) -> str:
        """The rewritten parameter's name in the generator."""
        return f'{self.conv}.weight'

    def conv_module(self) -> torch.nn.Module:
        return self.model.get_submodule(self.conv)

    @property
    def in_channels(self) -> int:
        """I, the width of the keys."""
        return int(self.conv_module().weight.shape[2])

    @property
    def out_channels(self) -> int:
        """O, the width of the values."""
        return int(self.conv_module().weight.shape[1])

    def _probe(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        if self._shapes is None:
            z = torch.zeros(1, self.z_dim, device=next(self.model.parameters()).device)
            with torch.no_grad():
                k = subsequence(self.model, upto_layer=self.conv, share_weights=True)(z)
                v = subsequence(self.model, first_layer=self.conv, last_layer=self.target_end,
                                share_weights=True)(k)
            self._shapes = tuple(k.fmap.shape[1:]), tuple(v.fmap.shape[1:])
        return self._shapes

    @property
    def z_dim(self) -> int:
        return int(getattr(self.model, 'z_dim', None) or self.model.style_dim)

    @property
    def key_shape(self) -> tuple[int, ...]:
        """(I, h, w) of the keys."""
        return self._probe()[0]

    @property
    def value_shape(self) -> tuple[int, ...]:
        """(O, H, W) of the values."""
        return self._probe()[1]

    @property
    def mask_resolution(self) -> int:
        """The smaller of the key and value feature-map sizes (where every mask must select something)."""
        return min(self.key_shape[1], self.value_shape[1])

    @property
    def noise_index(self) -> int | None:
        """Index of the layer's noise map in the bag's `noise` list (None: the layer has no noise)."""
        return None

    def styles(self, zs: torch.Tensor) -> torch.Tensor | None:
        """The layer's styles [N, I] for z's [N, D] (None: the layer is not modulated)."""
        return None

    def target_layer(self, key) -> TargetLayer:
        """The target piece described for the fast solver, on the goal key bag `key`."""
        conv = self.conv_module()
        zero = torch.zeros(()).to(conv.weight)
        bias = getattr(self.model.get_submodule(self.target_end), 'bias', None)
        return TargetLayer(scale=getattr(conv, 'scale', 1.0), upsample=False, demodulate=False, blur=None,
                           noise=zero, bias=(torch.zeros(self.out_channels).to(zero) if bias is None
                                             else bias.detach()))


def rewrite_site(model: torch.nn.Module, layernum: int) -> RewriteSite:
    """The generator's rewrite site for layer `layernum` (ValueError when it has no such layer, or
    when the generator does not support rewriting)."""
    ask = getattr(model, 'rewrite_site', None)
    if ask is None:
        raise ValueError(f'{type(model).__name__} does not support rewriting: it has no rewrite_site(layernum) '
                         '(see utils/generators/site.py)')
    return ask(layernum)


__all__ = ['DataBag', 'RewriteSite', 'TargetLayer', 'rewrite_site']
