"""NVlabs StyleGAN2-ADA `.pkl` snapshots, read as data: nothing the file carries is ever executed.

NVlabs' `stylegan2-ada-pytorch` (and the StyleGAN3 repository's `stylegan2` config) pickle their
networks through `torch_utils.persistence`: each network is a record
`_reconstruct_persistent_obj({'type': 'class', 'version': 6, 'module_src': <the training code's
source>, 'class_name': ..., 'state': <the module's __dict__>})`, which, unpickled the usual way,
compiles and runs `module_src`. Here a restricted unpickler allows only

- tensor and storage rebuilds (`torch._utils._rebuild_tensor_v2`, `_rebuild_parameter`), with each
  storage's bytes (`torch.storage._load_from_bytes`) read by `torch.load(..., weights_only=True)`,
- `collections.OrderedDict`, `builtins.set` / `frozenset` (protocol-3 files), `dnnlib.util.EasyDict`
  (read as a plain dict), numpy dtypes and scalars (under `numpy.core` and `numpy._core`),
- the persistence record itself, turned into a `PersistentRecord` (class name, init arguments,
  parameters, buffers, children) whose `module_src` is kept as text and never compiled,

and refuses every other global with an `AdaPickleError` naming it. `ada_checkpoint` then maps the
generator onto the {'g_ema', 'latent_avg'} checkpoint layout of SeqStyleGAN2: `G_ema`; only a snapshot with
no `G_ema` entry at all falls back to `G` (the raw training generator, with a warning), while a `G_ema`
that is present but is not a network is an error.

What a file may claim is bounded by what it holds: a storage blob may not declare more bytes than it
carries (checked before torch.load allocates it), a tensor may not view more values than its storage
holds (broadcast or overlapping strides are refused), the data may nest at most MAX_NESTING levels (and
may not contain itself; these reads are utils/stylegan2/ada_unpickler.py), and every hyper-parameter read
(img_resolution, img_channels, lr_multiplier,
num_ws, conv_clamp, w_dim, z_dim, resample_filter, ...) is checked by name for its type and range.

    ckpt = read_ada_checkpoint('network-snapshot-000000.pkl')   # {'g_ema', 'latent_avg', 'conv_clamp', ...}
"""

from __future__ import annotations

import math
import numbers
import os
import warnings

import numpy as np
import torch

from utils.stylegan2.ada_unpickler import AdaPickleError, PersistentRecord, describe, read_ada_pickle

__all__ = ['AdaPickleError', 'PersistentRecord', 'ada_checkpoint', 'read_ada_checkpoint', 'read_ada_pickle']

MAX_RESOLUTION = 8192


# ---------------------------------------------------------------------------------------------------
# the restricted unpickler
# ---------------------------------------------------------------------------------------------------




# ---------------------------------------------------------------------------------------------------
# the generator, mapped onto the {'g_ema', 'latent_avg'} layout
# ---------------------------------------------------------------------------------------------------

def _tensor(record: PersistentRecord, table: dict, name: str, where: str) -> torch.Tensor:
    value = table.get(name)
    if not isinstance(value, torch.Tensor):
        raise AdaPickleError(f'{where}.{name} is missing (a {record.class_name} without it)')
    if not value.is_floating_point():
        raise AdaPickleError(f'{where}.{name} is a {value.dtype} tensor, expected floating point')
    return value.detach().to(torch.float32).clone()


def _param(record: PersistentRecord, name: str, where: str) -> torch.Tensor:
    return _tensor(record, record.parameters, name, where)


def _buffer(record: PersistentRecord, name: str, where: str) -> torch.Tensor:
    return _tensor(record, record.buffers, name, where)


def _reshaped(value: torch.Tensor, shape: tuple[int, ...], where: str) -> torch.Tensor:
    if value.numel() != math.prod(shape):
        raise AdaPickleError(f'{where} has shape {tuple(value.shape)}; expected {math.prod(shape)} values')
    return value.reshape(shape)


def _need_child(record: PersistentRecord, name: str, where: str) -> PersistentRecord:
    child = record.child(name)
    if child is None:
        raise AdaPickleError(f'{where} has no {name} network (children: {", ".join(map(str, record.children))})')
    return child


def _setting(record: PersistentRecord, name: str, default=None):
    """An init argument or attribute of a network (init kwargs first)."""
    kwargs = record.init_kwargs
    if name in kwargs:
        return kwargs[name]
    return record.state.get(name, default)


def _int_setting(record: PersistentRecord, name: str, where: str, default: int | None, low: int,
                 high: int | None = None) -> int | None:
    """An integer init argument or attribute, checked by name: an int (numpy ints too; not bool, float,
    string or list) in [low, high]; `default` when absent (None: may be absent)."""
    value = _setting(record, name, default)
    if value is None and default is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise AdaPickleError(f'{where}: {name} is {describe(value)}, expected an integer')
    value = int(value)
    if value < low or high is not None and value > high:
        span = f'>= {low}' if high is None else f'between {low} and {high}'
        raise AdaPickleError(f'{where}: {name} is {value}, expected an integer {span}')
    return value


def _float_setting(record: PersistentRecord, name: str, where: str, default: float | None) -> float | None:
    """A positive finite number setting, checked by name (int, float or numpy number; not bool or str)."""
    value = _setting(record, name, default)
    if value is None and default is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 < float(value) < math.inf:
        raise AdaPickleError(f'{where}: {name} is {describe(value)}, expected a positive finite number')
    return float(value)


def _choice_setting(record: PersistentRecord, name: str, where: str, default: str) -> str:
    value = _setting(record, name, default)
    if not isinstance(value, str):
        raise AdaPickleError(f'{where}: {name} is {describe(value)}, expected a string')
    return value


def _bool_setting(record: PersistentRecord, name: str, where: str, default: bool) -> bool:
    value = _setting(record, name, default)
    if not isinstance(value, (bool, np.bool_)):
        raise AdaPickleError(f'{where}: {name} is {describe(value)}, expected True or False')
    return bool(value)


def _generator(data) -> tuple[PersistentRecord, str]:
    if isinstance(data, PersistentRecord):
        return data, 'the pickled network'
    if not isinstance(data, dict):
        raise AdaPickleError(f'holds a {type(data).__name__}, expected a snapshot dict with G_ema')
    if isinstance(data.get('G_ema'), PersistentRecord):
        return data['G_ema'], 'G_ema'
    if 'G_ema' in data:
        raise AdaPickleError(f'G_ema is {describe(data["G_ema"])}, expected a network record (the file is '
                             'damaged; G, the raw training generator, is not used in its place)')
    if isinstance(data.get('G'), PersistentRecord):
        warnings.warn('the pickle has no G_ema: using G (the raw training generator, usually worse images)',
                      stacklevel=3)
        return data['G'], 'G'
    raise AdaPickleError(f'has no generator: expected a G_ema (or G) network, found '
                         f'{", ".join(map(str, data))[:200] or "nothing"}')


def _check_supported(gen: PersistentRecord, synthesis: PersistentRecord, mapping: PersistentRecord,
                     gname: str = 'the generator') -> None:
    """Clear errors for what SeqStyleGAN2 cannot express."""
    c_dim = _int_setting(gen, 'c_dim', gname, 0, 0) or _int_setting(mapping, 'c_dim', f'{gname}.mapping', 0, 0)
    if c_dim:
        raise AdaPickleError(f'a class-conditional generator (c_dim={c_dim}) is not supported: SeqStyleGAN2 has no '
                             'class input (its mapping network would need the label embedding)')
    names = set(synthesis.children)
    class_name = _setting(gen, 'class_name', '')
    if synthesis.child('input') is not None or any(str(n).startswith('L') and '_' in str(n) for n in names) \
            or isinstance(class_name, str) and 'stylegan3' in class_name:
        raise AdaPickleError('a StyleGAN3 (stylegan3-t / stylegan3-r) synthesis network is not supported: its '
                             'Fourier-feature input and alias-free layers are not a StyleGAN2 generator')
    if not any(str(n).startswith('b') for n in names):
        raise AdaPickleError(f'the synthesis network ({synthesis.class_name}) has no b4, b8, ... blocks '
                             f'(children: {", ".join(map(str, names))[:200]})')


def _clamp_setting(records: list[tuple[PersistentRecord, str]]) -> float | None:
    """The one conv_clamp of the layers [(record, where)]: a positive finite number or None in every one."""
    clamps = {_float_setting(r, 'conv_clamp', where, None) for r, where in records}
    if len(clamps) > 1:
        raise AdaPickleError(f'layers differ in conv_clamp ({sorted(map(str, clamps))}); SeqStyleGAN2 has one setting')
    return clamps.pop() if clamps else None


def ada_checkpoint(data, source: str = 'the pickle') -> dict:
    """A snapshot read by read_ada_pickle -> {'g_ema': state dict (checkpoint layout), 'latent_avg',
    'conv_clamp' (None when unset), 'z_dim'} for SeqStyleGAN2. AdaPickleError for what it cannot express."""
    try:
        gen, gname = _generator(data)
        synthesis = _need_child(gen, 'synthesis', gname)
        mapping = _need_child(gen, 'mapping', gname)
        _check_supported(gen, synthesis, mapping, gname)
        return _map_generator(gen, gname, synthesis, mapping)
    except AdaPickleError as e:
        raise AdaPickleError(f'{source}: {e}') from None


def _map_generator(gen: PersistentRecord, gname: str, synthesis: PersistentRecord,
                   mapping: PersistentRecord) -> dict:
    owner = synthesis if 'img_resolution' in synthesis.init_kwargs or 'img_resolution' in synthesis.state else gen
    resolution = _int_setting(owner, 'img_resolution', f'{gname}.synthesis' if owner is synthesis else gname,
                              0, 8, MAX_RESOLUTION)
    log_size = int(math.log2(resolution))
    if 2 ** log_size != resolution:
        raise AdaPickleError(f'{gname}: img_resolution {resolution} is not a power of two >= 8')
    img_channels = _int_setting(synthesis, 'img_channels', f'{gname}.synthesis', 3, 1)
    if img_channels != 3:
        raise AdaPickleError(f'{gname}: img_channels is {img_channels}; SeqStyleGAN2 draws RGB (3 channels)')
    sd: dict[str, torch.Tensor] = {}

    # mapping: fc0..fc{n-1}; weights rescaled to the layout's lr_mul 0.01 (w * lr / 0.01, same product)
    n_mlp = 0
    while mapping.child(f'fc{n_mlp}') is not None:
        fc = mapping.child(f'fc{n_mlp}')
        where = f'{gname}.mapping.fc{n_mlp}'
        lr = _float_setting(fc, 'lr_multiplier', where, 1.0)
        activation = _choice_setting(fc, 'activation', where, 'linear')
        if activation != 'lrelu':
            raise AdaPickleError(f"{where}: activation {describe(activation)} is not supported (StyleGAN2 uses "
                                 "'lrelu')")
        gain = _float_setting(fc, 'weight_gain', where, None)
        weight, bias = _param(fc, 'weight', where), _param(fc, 'bias', where)
        if gain is not None and not math.isclose(float(gain), lr / math.sqrt(weight.shape[1]), rel_tol=1e-5):
            raise AdaPickleError(f'{where}: weight_gain {float(gain)} is not lr_multiplier / sqrt(fan_in)')
        sd[f'style.{n_mlp + 1}.weight'] = weight if lr == 0.01 else weight * (lr / 0.01)
        sd[f'style.{n_mlp + 1}.bias'] = bias if lr == 0.01 else bias * (lr / 0.01)
        n_mlp += 1
    if n_mlp == 0:
        raise AdaPickleError(f'{gname}.mapping has no fc0 layer')
    w_dim = sd[f'style.{n_mlp}.weight'].shape[0]
    z_dim = sd['style.1.weight'].shape[1]
    hidden = {sd[f'style.{i}.weight'].shape[0] for i in range(1, n_mlp + 1)}
    if hidden != {w_dim}:
        raise AdaPickleError(f'{gname}.mapping: hidden widths {sorted(hidden)} differ from w_dim {w_dim}; '
                             'SeqStyleGAN2 has mapping layers of one width')
    for i in range(2, n_mlp + 1):
        if sd[f'style.{i}.weight'].shape[1] != w_dim:
            raise AdaPickleError(f'{gname}.mapping.fc{i - 1} takes {sd[f"style.{i}.weight"].shape[1]} inputs, '
                                 f'expected {w_dim}')
    latent_avg = _buffer(mapping, 'w_avg', f'{gname}.mapping') if 'w_avg' in mapping.buffers else None
    if latent_avg is None:
        warnings.warn(f'{gname}.mapping has no w_avg: truncation will pull toward zero', stacklevel=4)
    for owner, name in ((mapping, 'w_dim'), (gen, 'w_dim'), (synthesis, 'w_dim')):
        declared = _int_setting(owner, name, f'{gname}.mapping' if owner is mapping else gname, None, 1)
        if declared is not None and declared != w_dim:
            raise AdaPickleError(f'{gname}: w_dim is {declared} but the mapping network makes {w_dim} values')
    for owner in (mapping, gen):
        declared = _int_setting(owner, 'z_dim', f'{gname}.mapping' if owner is mapping else gname, None, 1)
        if declared is not None and declared != z_dim:
            raise AdaPickleError(f'{gname}: z_dim is {declared} but the mapping network takes {z_dim} inputs')
    num_ws = _int_setting(mapping, 'num_ws', f'{gname}.mapping', None, 1)
    if num_ws is not None and num_ws != 2 * log_size - 2:
        raise AdaPickleError(f'{gname}.mapping broadcasts {num_ws} ws; '
                             f'a {resolution}px StyleGAN2 uses {2 * log_size - 2}')

    # synthesis: blocks b4 .. b{resolution}
    layers, fp16, n_noise = [], [], 0
    for r in range(2, log_size + 1):
        res = 2 ** r
        block = _need_child(synthesis, f'b{res}', f'{gname}.synthesis')
        where = f'{gname}.synthesis.b{res}'
        architecture = _choice_setting(block, 'architecture', where, 'skip')
        if architecture != 'skip':
            raise AdaPickleError(f"{where}: architecture {describe(architecture)} is not supported: SeqStyleGAN2 "
                                 "is the 'skip' generator (StyleGAN2 config-e/f); 'orig' and 'resnet' differ in how "
                                 'blocks feed RGB and features forward')
        if _bool_setting(block, 'use_fp16', where, False):
            fp16.append(res)
        if res == 4:
            sd['input.input'] = _param(block, 'const', where)[None]
            convs = [(block, 'conv1', 'conv1')]
        else:
            n = 2 * r - 3
            convs = [(block, 'conv0', f'convs.{n - 3}'), (block, 'conv1', f'convs.{n - 2}')]
        for parent, cname, key in convs:
            layer = _need_child(parent, cname, where)
            lwhere = f'{where}.{cname}'
            if _choice_setting(layer, 'activation', lwhere, 'lrelu') != 'lrelu' \
                    or not _bool_setting(layer, 'use_noise', lwhere, True):
                raise AdaPickleError(f'{lwhere}: only lrelu layers with noise inputs are supported')
            weight = _param(layer, 'weight', lwhere)
            if weight.dim() != 4 or weight.shape[-1] != 3:
                raise AdaPickleError(f'{lwhere}.weight has shape {tuple(weight.shape)}; expected [out, in, 3, 3]')
            affine = _need_child(layer, 'affine', lwhere)
            sd[f'{key}.conv.weight'] = weight[None]
            sd[f'{key}.conv.modulation.weight'] = _param(affine, 'weight', f'{lwhere}.affine')
            sd[f'{key}.conv.modulation.bias'] = _param(affine, 'bias', f'{lwhere}.affine')
            strength = _param(layer, 'noise_strength', lwhere)
            sd[f'{key}.noise.weight'] = _reshaped(strength, (1,), f'{lwhere}.noise_strength')
            sd[f'{key}.activate.bias'] = _param(layer, 'bias', lwhere)
            noise = _buffer(layer, 'noise_const', lwhere)
            if noise.dim() < 2:
                raise AdaPickleError(f'{lwhere}.noise_const has shape {tuple(noise.shape)}; expected [H, W]')
            sd[f'noises.noise_{n_noise}'] = _reshaped(noise, (1, 1, *noise.shape[-2:]), f'{lwhere}.noise_const')
            n_noise += 1
            layers.append((layer, lwhere))
        torgb = _need_child(block, 'torgb', where)
        rgb_key = 'to_rgb1' if res == 4 else f'to_rgbs.{r - 3}'
        rwhere = f'{where}.torgb'
        rgb_weight = _param(torgb, 'weight', rwhere)
        if rgb_weight.dim() != 4 or rgb_weight.shape[0] != 3 or rgb_weight.shape[-1] != 1:
            raise AdaPickleError(f'{rwhere}.weight has shape {tuple(rgb_weight.shape)}; expected [3, in, 1, 1]')
        rgb_affine = _need_child(torgb, 'affine', rwhere)
        sd[f'{rgb_key}.conv.weight'] = rgb_weight[None]
        sd[f'{rgb_key}.conv.modulation.weight'] = _param(rgb_affine, 'weight', f'{rwhere}.affine')
        sd[f'{rgb_key}.conv.modulation.bias'] = _param(rgb_affine, 'bias', f'{rwhere}.affine')
        sd[f'{rgb_key}.bias'] = _reshaped(_param(torgb, 'bias', rwhere), (1, 3, 1, 1), f'{rwhere}.bias')
        layers.append((torgb, rwhere))
        taps = _resample_taps(block, where)
        if res > 4:
            sd[f'to_rgbs.{r - 3}.upsample.kernel'] = _blur_kernel(taps)
            sd[f'convs.{2 * r - 6}.conv.blur.kernel'] = _blur_kernel(taps)

    if fp16:
        warnings.warn(f'{gname} computes resolutions {fp16} in float16 in NVlabs\' code; SeqStyleGAN2 computes '
                      'in float32 (as NVlabs\' force_fp32=True), so images may differ slightly from fp16 ones',
                      stacklevel=4)
    return {'g_ema': sd, 'latent_avg': latent_avg, 'conv_clamp': _clamp_setting(layers), 'z_dim': int(z_dim)}


def _resample_taps(block: PersistentRecord, where: str) -> list[float]:
    taps = _setting(block, 'resample_filter', [1, 3, 3, 1])
    if not isinstance(taps, (list, tuple)) or len(taps) != 4 \
            or not all(isinstance(t, numbers.Real) and not isinstance(t, bool) and math.isfinite(t) for t in taps) \
            or not sum(taps) > 0:
        raise AdaPickleError(f'{where}: resample_filter is {describe(taps)}, not supported (expected 4 finite taps '
                             'with a positive sum, e.g. [1, 3, 3, 1])')
    return [float(t) for t in taps]


def _blur_kernel(taps: list[float]) -> torch.Tensor:
    """The layout's upsampling FIR kernel: outer(taps, taps) normalised to sum 4. [4, 4]"""
    k = torch.tensor(taps, dtype=torch.float32)
    k = k[:, None] * k[None, :]
    return k / k.sum() * 4.0


def read_ada_checkpoint(path: str | os.PathLike) -> dict:
    """read_ada_pickle + ada_checkpoint: {'g_ema', 'latent_avg', 'conv_clamp', 'z_dim'} from an NVlabs .pkl."""
    return ada_checkpoint(read_ada_pickle(path), source=str(path))
