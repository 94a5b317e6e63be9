"""SeqStyleGAN2: a StyleGAN2 generator written as nested nn.Sequential steps.

Top-level steps, for size 2^L:
    bag_in, style (PixelNorm + n_mlp mapping layers), latents (truncation), noises, input,
    layer2 (4x4 conv), to_rgb1, then for each resolution 2^r, r = 3..L:
    up_rgb{r-2}, layer{2r-3} (upsampling conv), layer{2r-2}, to_rgb{r-1}; and output.
Inside each layerN: lat{N-2} (picks the layer's w), sconv = mconv -> noise -> activate, with
mconv = modulation -> adain -> dconv [-> blur] when mconv='seq'. `layerN.sconv.mconv.dconv.weight`
is the plain convolution weight that the rewriter reads and edits.

Parameters and buffers load from, and save to, the widely used PyTorch StyleGAN2 checkpoint
layout ({'g_ema': ..., 'latent_avg': ...}); see `checkpoint_key`.
"""

from __future__ import annotations

import math
import numbers
import re
import warnings
from collections import OrderedDict
from collections.abc import Mapping

import torch
from torch import nn

from .layers import (
    AdjustLatent,
    ConstantInput,
    InputLatent,
    MappingLinear,
    NoiseBuffers,
    PickLatent,
    PixelNorm,
    ReturnOutput,
    StyledConv,
    ToRGB,
    UpsampleRGB,
)

__all__ = ['checkpoint_key', 'CheckpointMismatchError', 'config_f_channels', 'SeqStyleGAN2',
           'strip_data_parallel_prefix']


def config_f_channels(size: int, channel_multiplier: int = 2) -> dict[int, int]:
    """Feature widths per resolution of StyleGAN2 config-f."""
    widths = {4: 512, 8: 512, 16: 512, 32: 512, 64: 256, 128: 128, 256: 64, 512: 32, 1024: 16}
    return {r: (c if r <= 32 else c * channel_multiplier) for r, c in widths.items() if r <= size}


class CheckpointMismatchError(ValueError):
    """A state dict does not fit the model; the message names every offending key."""


class SeqStyleGAN2(nn.Sequential):
    """StyleGAN2 generator as nested Sequentials. forward(z [B, style_dim]) -> image [B, 3, size, size].

    Args:
        size: output resolution (a power of two, >= 8).
        style_dim, n_mlp: latent width and mapping depth.
        channel_multiplier: config-f widths (1 or 2) when `channels` is not given.
        truncation: pulls w toward `latent_avg` (1.0 = none).
        mconv: 'seq' (modulate, plain conv, demodulate: rewritable) or 'fused' (grouped conv).
        channels: optional {resolution: width} (or a list by resolution 4, 8, ...) for custom models.
        noise_mode: 'const' (the stored noise maps), 'random' or 'zero'.
        lr_mlp: learning-rate multiplier of the mapping layers (weights are stored divided by it).
        blur_taps: the 1D FIR filter of upsampling (NVlabs' `resample_filter`).
        z_dim: width of z, the mapping network's input (default style_dim).
        conv_clamp: when set (NVlabs' `conv_clamp`, e.g. 256), every styled conv's activation and
            every toRGB output is clamped to [-conv_clamp, conv_clamp]; None (default): no clamping.
    """

    def __init__(self, size: int, style_dim: int = 512, n_mlp: int = 8, channel_multiplier: int = 2,
                 truncation: float = 1.0, mconv: str = 'seq', channels=None,
                 noise_mode: str = 'const', lr_mlp: float = 0.01, blur_taps=(1, 3, 3, 1),
                 z_dim: int | None = None, conv_clamp: float | None = None):
        log_size = int(math.log2(size))
        if size < 8 or 2 ** log_size != size:
            raise ValueError(f'size must be a power of two >= 8, not {size}')
        if channels is None:
            channels = config_f_channels(size, channel_multiplier)
        elif not isinstance(channels, Mapping):
            channels = {2 ** (i + 2): int(c) for i, c in enumerate(channels)}
        missing = [2 ** r for r in range(2, log_size + 1) if 2 ** r not in channels]
        if missing:
            raise ValueError(f'channels has no width for resolutions {missing}')
        z_dim = style_dim if z_dim is None else int(z_dim)
        if conv_clamp is not None:
            conv_clamp = float(conv_clamp)
            if not (math.isfinite(conv_clamp) and conv_clamp > 0):
                raise ValueError(f'conv_clamp must be a positive finite number or None, not {conv_clamp}')
        if n_mlp < 1 and z_dim != style_dim:
            raise ValueError(f'z_dim ({z_dim}) differs from style_dim ({style_dim}) but there are no mapping layers')
        mapping = [MappingLinear(style_dim, lr_mlp, in_dim=z_dim if i == 0 else None) for i in range(n_mlp)]
        clamp = conv_clamp
        n_latent = 2 * log_size - 2
        steps = [
            ('bag_in', InputLatent()),
            ('style', nn.Sequential(PixelNorm(), *mapping)),
            ('latents', AdjustLatent(n_latent, style_dim, truncation)),
            ('noises', NoiseBuffers(size, mode=noise_mode)),
            ('input', ConstantInput(channels[4])),
            ('layer2', _styled_layer(0, channels[4], channels[4], style_dim, False, mconv, blur_taps, clamp)),
            ('to_rgb1', _rgb_layer(1, channels[4], style_dim, False, mconv, clamp)),
        ]
        for r in range(3, log_size + 1):
            c_in, c_out, n = channels[2 ** (r - 1)], channels[2 ** r], 2 * r - 3
            steps += [
                (f'up_rgb{r - 2}', UpsampleRGB(blur_taps)),
                (f'layer{n}', _styled_layer(n - 2, c_in, c_out, style_dim, True, mconv, blur_taps, clamp)),
                (f'layer{n + 1}', _styled_layer(n - 1, c_out, c_out, style_dim, False, mconv, blur_taps, clamp)),
                (f'to_rgb{r - 1}', _rgb_layer(n, c_out, style_dim, True, mconv, clamp)),
            ]
        steps.append(('output', ReturnOutput()))
        super().__init__(OrderedDict(steps))
        self.size = size
        self.style_dim = style_dim
        self.z_dim = z_dim
        self.conv_clamp = conv_clamp
        self.n_mlp = n_mlp
        self.n_latent = n_latent
        self.mconv = mconv
        self.channels = {r: channels[r] for r in sorted(channels) if r <= size}
        self.num_layers = 2 * log_size - 3      # styled convs: layer2 .. layer{2L-2}

    # ---- settings ------------------------------------------------------------------------
    @property
    def truncation(self) -> float:
        return self.latents.truncation

    @truncation.setter
    def truncation(self, value: float) -> None:
        self.latents.truncation = float(value)

    @property
    def noise_mode(self) -> str:
        return self.noises.mode

    @noise_mode.setter
    def noise_mode(self, mode: str) -> None:
        if mode not in ('const', 'random', 'zero'):
            raise ValueError(f"noise_mode must be 'const', 'random' or 'zero', not {mode!r}")
        self.noises.mode = mode

    @property
    def layer_numbers(self) -> list[int]:
        """The numbers N of the styled conv layers `layerN` (2 .. 2 log2(size) - 1)."""
        return list(range(2, self.num_layers + 2))

    def layer_resolution(self, layernum: int) -> int:
        """Output resolution of layer N."""
        self.check_layer(layernum)
        return 2 ** ((layernum + 3) // 2)

    def check_layer(self, layernum: int) -> None:
        """ValueError unless `layernum` (an int) names one of this generator's styled conv layers."""
        if isinstance(layernum, bool) or not isinstance(layernum, numbers.Integral):
            hint = f' (write {int(layernum)}, without quotes)' if isinstance(layernum, str) and \
                layernum.strip().isdigit() else ''
            raise ValueError(f'layer must be an int among {self.layer_numbers[0]}..{self.layer_numbers[-1]}, '
                             f'got the {type(layernum).__name__} {layernum!r}{hint}')
        if layernum not in self.layer_numbers:
            raise ValueError(f'layer {layernum} does not exist: this {self.size}px generator has '
                             f'layers {self.layer_numbers[0]}..{self.layer_numbers[-1]}')

    def rewrite_site(self, layernum: int):
        """The rewrite site of layer N (`utils.stylegan2.site.StyleGAN2Site`): where the rewriter cuts,
        the conv it edits, its styles and target piece. ValueError for a missing layer or mconv='fused'."""
        from .site import StyleGAN2Site
        return StyleGAN2Site(self, layernum)

    def fused_copy(self) -> SeqStyleGAN2:
        """The same generator (weights copied) computing each modulated conv the original way, as one
        grouped conv with per-sample weights (mconv='fused': not rewritable, for comparisons)."""
        twin = SeqStyleGAN2(**(self.config() | {'mconv': 'fused'}), noise_mode=self.noise_mode)
        twin.load_state_dict(self.state_dict())
        return twin.to(next(self.parameters()).device)

    def config(self) -> dict:
        """Constructor arguments that rebuild this architecture."""
        config = dict(size=self.size, style_dim=self.style_dim, n_mlp=self.n_mlp,
                      channels=dict(self.channels), mconv=self.mconv, truncation=self.truncation)
        if self.z_dim != self.style_dim:
            config['z_dim'] = self.z_dim
        if self.conv_clamp is not None:
            config['conv_clamp'] = self.conv_clamp
        return config

    # ---- checkpoint layout -----------------------------------------------------------------
    def checkpoint_state_dict(self) -> dict[str, torch.Tensor]:
        """Parameters and buffers under the checkpoint layout's key names (no latent_avg)."""
        return {checkpoint_key(k): v.detach().cpu().clone() for k, v in self.state_dict().items()
                if k != 'latents.latent_avg'}

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False,
                        latent_avg: torch.Tensor | None = None):
        """Loads weights in the checkpoint layout (or this module's own key names).

        Accepts a whole checkpoint ({'g_ema', 'latent_avg', ...}) too. Every key is checked before
        anything is copied: a missing, unexpected or mis-shaped key raises CheckpointMismatchError
        naming them all, and leaves the model unchanged.
        """
        own = self.state_dict()
        translated = self.check_state_dict(state_dict, strict=strict, latent_avg=latent_avg)
        if 'latents.latent_avg' not in translated and self.truncation != 1.0:
            warnings.warn('no latent_avg given: truncation pulls toward the current latent_avg', stacklevel=2)
        with torch.no_grad():
            for k, v in translated.items():
                own[k].copy_(v)
        # weights loaded without a latent_avg (usable at truncation 1.0 only): save_checkpoint leaves it out, so
        # a re-saved copy still says it has none instead of carrying an arbitrary one
        self.latents.latent_avg_unknown = 'latents.latent_avg' not in translated
        return torch.nn.modules.module._IncompatibleKeys([], [])

    def check_state_dict(self, state_dict, strict: bool = True,
                         latent_avg: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """What load_state_dict would copy, under this module's key names, after every check (keys,
        types, dtypes, shapes, finiteness; CheckpointMismatchError naming them all). Reads nothing
        but shapes and values, so it works on a skeleton built on the 'meta' device too."""
        if not isinstance(state_dict, Mapping):
            raise CheckpointMismatchError(f'expected a state dict (a dict of tensors), got {type(state_dict).__name__}')
        odd = [k for k in state_dict if not isinstance(k, str)]
        if odd:
            raise CheckpointMismatchError(f'state dict keys must be strings, got {_show_keys(odd)}')
        if 'g_ema' in state_dict and not any(k.startswith('style.') for k in state_dict):
            if latent_avg is None:
                latent_avg = state_dict.get('latent_avg')
            return self.check_state_dict(state_dict['g_ema'], strict, latent_avg)
        own = self.state_dict()
        state_dict = strip_data_parallel_prefix(state_dict)
        if 'latents.latent_avg' in state_dict:
            if latent_avg is None:
                latent_avg = state_dict['latents.latent_avg']
            state_dict = {k: v for k, v in state_dict.items() if k != 'latents.latent_avg'}
        to_ours = {checkpoint_key(k): k for k in own}
        translated = {(k if k in own else to_ours.get(k, k)): v for k, v in state_dict.items()}
        if latent_avg is not None:
            translated['latents.latent_avg'] = _latent_avg_tensor(latent_avg, self.style_dim)
        elif strict and self.truncation != 1.0:
            raise CheckpointMismatchError(
                f'no latent_avg: the checkpoint has no latent_avg entry (the average w that truncation '
                f'{self.truncation} pulls toward), so it can only be used untruncated. Load it with truncation=1.0 '
                "(command line: --truncation 1; notebook: TRUNCATION = 1.0), or pass latent_avg=... "
                "(the training run's mean w, saved as 'latent_avg' beside 'g_ema')")
        else:       # truncation 1.0 never reads latent_avg: the model's own (zeros when new) is kept
            own = {k: v for k, v in own.items() if k != 'latents.latent_avg'}
        _check_fits(own, translated, strict)
        return translated


def _styled_layer(latent_index, c_in, c_out, style_dim, upsample, mconv, blur_taps, clamp=None):
    return nn.Sequential(OrderedDict([
        (f'lat{latent_index}', PickLatent(latent_index)),
        ('sconv', StyledConv(c_in, c_out, style_dim, noise_index=latent_index, upsample=upsample,
                             mconv=mconv, blur_taps=blur_taps, clamp=clamp)),
    ]))


def _rgb_layer(latent_index, c_in, style_dim, skip, mconv, clamp=None):
    return nn.Sequential(OrderedDict([
        (f'lat{latent_index}', PickLatent(latent_index)),
        ('rgb', ToRGB(c_in, style_dim, skip=skip, mconv=mconv, clamp=clamp)),
    ]))


def _conv_prefix(layernum: int) -> str:
    return 'conv1' if layernum == 2 else f'convs.{layernum - 3}'


def _rgb_prefix(rgbnum: int) -> str:
    return 'to_rgb1' if rgbnum == 1 else f'to_rgbs.{rgbnum - 2}'


_KEY_RULES = [
    (r'layer(\d+)\.sconv\.mconv\.dconv\.weight', lambda m: f'{_conv_prefix(int(m[1]))}.conv.weight'),
    (r'layer(\d+)\.sconv\.mconv\.(modulation\.\w+|blur\.kernel)', lambda m: f'{_conv_prefix(int(m[1]))}.conv.{m[2]}'),
    (r'layer(\d+)\.sconv\.(noise\.weight|activate\.bias)', lambda m: f'{_conv_prefix(int(m[1]))}.{m[2]}'),
    (r'to_rgb(\d+)\.rgb\.mconv\.dconv\.weight', lambda m: f'{_rgb_prefix(int(m[1]))}.conv.weight'),
    (r'to_rgb(\d+)\.rgb\.mconv\.(modulation\.\w+)', lambda m: f'{_rgb_prefix(int(m[1]))}.conv.{m[2]}'),
    (r'to_rgb(\d+)\.rgb\.bias', lambda m: f'{_rgb_prefix(int(m[1]))}.bias'),
    (r'up_rgb(\d+)\.kernel', lambda m: f'to_rgbs.{int(m[1]) - 1}.upsample.kernel'),
]


def checkpoint_key(key: str) -> str:
    """Our state-dict key -> its name in the checkpoint layout (identical for style.*, input, noises)."""
    for pattern, rename in _KEY_RULES:
        m = re.fullmatch(pattern, key)
        if m:
            return rename(m)
    return key


def _show_keys(keys: list) -> str:
    shown = ', '.join(repr(k)[:60] for k in keys[:8])
    return shown + (f', ... ({len(keys)} in all)' if len(keys) > 8 else '')


def strip_data_parallel_prefix(state_dict: Mapping) -> Mapping:
    """The state dict without the 'module.' prefix that (Distributed)DataParallel adds to every key, when
    every key has it (keys of a generator saved from a wrapped model); otherwise unchanged."""
    prefix = 'module.'
    if state_dict and all(isinstance(k, str) and k.startswith(prefix) for k in state_dict):
        return {k[len(prefix):]: v for k, v in state_dict.items()}
    return state_dict


def _latent_avg_tensor(latent_avg, style_dim: int):
    """latent_avg as a flat tensor, or a CheckpointMismatchError naming it and what was expected."""
    expected = f'expected a float tensor of {style_dim} values'
    if isinstance(latent_avg, torch.Tensor):
        return latent_avg.reshape(-1)
    if isinstance(latent_avg, (list, tuple)) or type(latent_avg).__module__ == 'numpy':
        try:
            array = torch.as_tensor(latent_avg)
        except (TypeError, ValueError, RuntimeError):
            array = None
        if array is not None:
            return array.reshape(-1)
    text = repr(latent_avg)
    raise CheckpointMismatchError(f'latent_avg: {expected}, got {type(latent_avg).__name__} '
                                  f'{text[:40] + "..." if len(text) > 40 else text}')


def _dtype_problem(value: torch.Tensor, own: torch.Tensor) -> bool:
    """True when a checkpoint value cannot stand for a model tensor: complex, bool or integer values
    for floating-point weights (copying would drop the imaginary part or invent values)."""
    return own.is_floating_point() and not value.is_floating_point()


def _check_fits(own: dict, given: dict, strict: bool) -> None:
    not_tensors = [f'{checkpoint_key(k)} ({type(v).__name__})' for k, v in given.items()
                   if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise CheckpointMismatchError('checkpoint does not fit this SeqStyleGAN2 (model left unchanged); '
                                      f'keys whose values are not tensors: {", ".join(not_tensors[:12])}')
    missing = [k for k in own if k not in given] if strict else []
    unexpected = [k for k in given if k not in own]
    wrong_dtype = [f'{checkpoint_key(k)}: {v.dtype} (expected a real floating-point tensor)'
                   for k, v in given.items() if k in own and _dtype_problem(v, own[k])]
    misshaped = [f'{checkpoint_key(k)}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}'
                 for k, v in given.items() if k in own and tuple(v.shape) != tuple(own[k].shape)]
    nonfinite = [checkpoint_key(k) for k, v in given.items()
                 if k in own and tuple(v.shape) == tuple(own[k].shape) and v.is_floating_point()
                 and not torch.isfinite(v).all()]
    problems = []
    for title, keys in [('missing keys', [checkpoint_key(k) for k in missing]),
                        ('unexpected keys', [checkpoint_key(k) for k in unexpected]),
                        ('keys of the wrong dtype', wrong_dtype),
                        ('mis-shaped keys', misshaped), ('keys with NaN or inf', nonfinite)]:
        if keys:
            shown = ', '.join(keys[:12]) + (f', ... ({len(keys)} in all)' if len(keys) > 12 else '')
            problems.append(f'{title}: {shown}')
    if problems:
        raise CheckpointMismatchError('checkpoint does not fit this SeqStyleGAN2 (model left unchanged); '
                                      + '; '.join(problems))
