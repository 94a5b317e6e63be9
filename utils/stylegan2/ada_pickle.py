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
generator (`G_ema`, else `G`) onto the {'g_ema', 'latent_avg'} checkpoint layout of SeqStyleGAN2.

    ckpt = read_ada_checkpoint('network-snapshot-000000.pkl')   # {'g_ema', 'latent_avg', 'conv_clamp', ...}
"""

from __future__ import annotations

import io
import math
import os
import pickle
import warnings
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

PERSISTENCE_VERSION = 6
TF_CONVERTERS = ("NVlabs stylegan2-ada-pytorch's `python legacy.py --source=OLD.pkl --dest=NEW.pkl` "
                 "(writes a PyTorch .pkl this loader reads) or rosinality stylegan2-pytorch's "
                 "`convert_weight.py` (writes a .pt in the {'g_ema', 'latent_avg'} layout)")
_NUMPY_KINDS = 'biufc?'            # numeric and bool dtypes: the only ones a scalar may have


class AdaPickleError(ValueError):
    """An NVlabs .pkl that is refused (unsafe content) or that SeqStyleGAN2 cannot express."""


class _PlainDict(dict):
    """What `dnnlib.util.EasyDict` becomes: a plain dict (attribute state, if any, becomes items)."""

    def __setstate__(self, state) -> None:
        if state is None:
            return
        if not isinstance(state, dict):
            raise AdaPickleError(f'an EasyDict carries state of type {type(state).__name__}; expected a dict')
        self.update(state)


@dataclass
class PersistentRecord:
    """One network of an NVlabs pickle, as plain data. `module_src` is text: it is never compiled.

    state: the module's __dict__ (`_parameters`, `_buffers`, `_modules`, `_init_kwargs`, attributes).
    """

    class_name: str
    module_src: str
    state: dict = field(repr=False)

    @property
    def init_args(self) -> tuple:
        args = self.state.get('_init_args', ())
        return tuple(args) if isinstance(args, (tuple, list)) else ()

    @property
    def init_kwargs(self) -> dict:
        kwargs = self.state.get('_init_kwargs', {})
        return dict(kwargs) if isinstance(kwargs, dict) else {}

    def _table(self, name: str) -> dict:
        table = self.state.get(name) or {}
        if not isinstance(table, dict):
            raise AdaPickleError(f'{self.class_name}.{name} is a {type(table).__name__}, expected a dict')
        return table

    @property
    def parameters(self) -> dict:
        return self._table('_parameters')

    @property
    def buffers(self) -> dict:
        return self._table('_buffers')

    @property
    def children(self) -> dict:
        return self._table('_modules')

    def child(self, name: str) -> PersistentRecord | None:
        value = self.children.get(name)
        return value if isinstance(value, PersistentRecord) else None


# ---------------------------------------------------------------------------------------------------
# the restricted unpickler
# ---------------------------------------------------------------------------------------------------

def _persistent_record(meta) -> PersistentRecord:
    """Stands in for torch_utils.persistence._reconstruct_persistent_obj: keeps the record as data."""
    if not isinstance(meta, dict):
        raise AdaPickleError(f'a persistent-object record holds a {type(meta).__name__}, expected a dict')
    if meta.get('type') != 'class':
        raise AdaPickleError(f"a persistent-object record has type {meta.get('type')!r}, expected 'class'")
    if meta.get('version') != PERSISTENCE_VERSION:
        raise AdaPickleError(f"persistence format version {meta.get('version')!r} is not supported "
                             f'(expected {PERSISTENCE_VERSION})')
    class_name, src, state = meta.get('class_name'), meta.get('module_src'), meta.get('state')
    if not isinstance(class_name, str) or not isinstance(src, str) or not isinstance(state, dict):
        raise AdaPickleError('a persistent-object record lacks a class_name, module_src or state dict')
    return PersistentRecord(class_name, src, dict(state))


def _load_storage(data) -> Any:
    """Stands in for torch.storage._load_from_bytes: the blob is read by torch.load(weights_only=True)."""
    if not isinstance(data, (bytes, bytearray)):
        raise AdaPickleError(f'a tensor storage is a {type(data).__name__}, expected bytes')
    try:
        storage = torch.load(io.BytesIO(bytes(data)), map_location='cpu', weights_only=True)
    except Exception as e:
        raise AdaPickleError(f'a tensor storage blob was refused by torch.load(weights_only=True) '
                             f'({type(e).__name__}: {" ".join(str(e).split())[:300]})') from None
    if not isinstance(storage, torch.TypedStorage):
        raise AdaPickleError(f'a tensor storage blob holds a {type(storage).__name__}, not a typed storage')
    return storage


def _rebuild_tensor(storage, offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None):
    """torch._utils._rebuild_tensor_v2 for a storage from _load_storage, after checking its arguments."""
    if not isinstance(storage, torch.TypedStorage):
        raise AdaPickleError(f'a tensor is rebuilt from a {type(storage).__name__}, not a typed storage')
    ints = (offset, *size, *stride)
    if not all(type(v) is int for v in ints) or len(size) != len(stride):
        raise AdaPickleError('a tensor has a non-integer offset, size or stride')
    if any(v < 0 for v in ints):
        raise AdaPickleError('a tensor has a negative offset, size or stride')
    if math.prod(size) > 0:
        last = offset + sum((n - 1) * s for n, s in zip(size, stride, strict=True))
        count = storage.size()
        if last >= count:
            raise AdaPickleError(f'a tensor of shape {tuple(size)} reaches element {last} of a storage of {count}')
    return torch._utils._rebuild_tensor_v2(storage, offset, tuple(size), tuple(stride), False, OrderedDict())


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, state=None):
    """torch._utils._rebuild_parameter(_with_state): the parameter's plain tensor."""
    if not isinstance(data, torch.Tensor):
        raise AdaPickleError(f'a parameter wraps a {type(data).__name__}, not a tensor')
    return data.detach()


def _numpy_dtype(spec, align=False, copy=True) -> np.dtype:
    """numpy.dtype for numeric and bool types only."""
    if not isinstance(spec, str):
        raise AdaPickleError(f'a numpy dtype is described by a {type(spec).__name__}, expected a string')
    try:
        dtype = np.dtype(spec)
    except TypeError as e:
        raise AdaPickleError(f'unknown numpy dtype {spec!r}') from e
    if dtype.kind not in _NUMPY_KINDS:
        raise AdaPickleError(f'numpy dtype {spec!r} (kind {dtype.kind!r}) is refused: only numbers are read')
    return dtype


def _numpy_scalar(dtype, data=None):
    """numpy.core.multiarray.scalar for numeric dtypes: the value from its raw bytes."""
    if not isinstance(dtype, np.dtype) or dtype.kind not in _NUMPY_KINDS:
        raise AdaPickleError(f'a numpy scalar has dtype {dtype!r}; only numeric dtypes are read')
    if not isinstance(data, (bytes, bytearray)) or len(data) != dtype.itemsize:
        raise AdaPickleError(f'a numpy {dtype} scalar needs {dtype.itemsize} bytes of data')
    return np.frombuffer(bytes(data), dtype=dtype)[0]


_ALLOWED = {     # (module, name) -> its safe stand-in: persistent networks, storages, tensors, parameters
    ('torch_utils.persistence', '_reconstruct_persistent_obj'): _persistent_record,
    ('torch.storage', '_load_from_bytes'): _load_storage,
    ('torch._utils', '_rebuild_tensor_v2'): _rebuild_tensor,
    ('torch._utils', '_rebuild_parameter'): _rebuild_parameter,
    ('torch._utils', '_rebuild_parameter_with_state'): _rebuild_parameter,
}
_ALLOWED.update({    # containers and numpy values
    ('collections', 'OrderedDict'): OrderedDict,
    ('builtins', 'set'): set,
    ('builtins', 'frozenset'): frozenset,
    ('dnnlib.util', 'EasyDict'): _PlainDict,
    ('numpy', 'dtype'): _numpy_dtype,
    ('numpy.core.multiarray', 'scalar'): _numpy_scalar,
    ('numpy._core.multiarray', 'scalar'): _numpy_scalar,
})


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only the globals in _ALLOWED (to the safe stand-ins above); refuses all others."""

    def find_class(self, module: str, name: str):
        allowed = _ALLOWED.get((module, name))
        if allowed is not None:
            return allowed
        if module.startswith('dnnlib.tflib') or module.startswith('tensorflow'):
            raise AdaPickleError(f'this is a TensorFlow-era StyleGAN pickle (it wants {module}.{name}); '
                                 f'convert it to PyTorch first with {TF_CONVERTERS}')
        raise AdaPickleError(f'refused to load the global {module}.{name}: an NVlabs StyleGAN2-ADA pickle '
                             'is read as data, and this object could run code')

    def persistent_load(self, pid):
        raise AdaPickleError(f'refused a persistent id {str(pid)[:60]!r}: not part of an NVlabs pickle')


def read_ada_pickle(path: str | os.PathLike) -> Any:
    """The pickle at `path` as plain nested data (dicts, tensors, PersistentRecords); runs none of its code.

    AdaPickleError for a refused global, a truncated or corrupt file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'no .pkl file at {path}')
    with open(path, 'rb') as f, warnings.catch_warnings():
        warnings.filterwarnings('ignore', message='TypedStorage is deprecated')   # torch's own, internal
        try:
            return _RestrictedUnpickler(f).load()
        except AdaPickleError as e:
            raise AdaPickleError(f'{path}: {e}') from None
        except (EOFError, pickle.UnpicklingError, ValueError, TypeError, KeyError, IndexError,
                AttributeError, RuntimeError, MemoryError, OverflowError) as e:
            raise AdaPickleError(f'{path} is not a readable NVlabs pickle: truncated or corrupt '
                                 f'({type(e).__name__}: {" ".join(str(e).split())[:200]})') from None


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


def _generator(data) -> tuple[PersistentRecord, str]:
    if isinstance(data, PersistentRecord):
        return data, 'the pickled network'
    if not isinstance(data, dict):
        raise AdaPickleError(f'holds a {type(data).__name__}, expected a snapshot dict with G_ema')
    if isinstance(data.get('G_ema'), PersistentRecord):
        return data['G_ema'], 'G_ema'
    if isinstance(data.get('G'), PersistentRecord):
        warnings.warn('the pickle has no G_ema: using G (the raw training generator, usually worse images)',
                      stacklevel=3)
        return data['G'], 'G'
    raise AdaPickleError(f'has no generator: expected a G_ema (or G) network, found '
                         f'{", ".join(map(str, data))[:200] or "nothing"}')


def _check_supported(gen: PersistentRecord, synthesis: PersistentRecord, mapping: PersistentRecord) -> None:
    """Clear errors for what SeqStyleGAN2 cannot express."""
    c_dim = _setting(gen, 'c_dim', 0) or _setting(mapping, 'c_dim', 0)
    if c_dim:
        raise AdaPickleError(f'a class-conditional generator (c_dim={c_dim}) is not supported: SeqStyleGAN2 has no '
                             'class input (its mapping network would need the label embedding)')
    names = set(synthesis.children)
    if synthesis.child('input') is not None or any(str(n).startswith('L') and '_' in str(n) for n in names) \
            or 'stylegan3' in str(_setting(gen, 'class_name', '')):
        raise AdaPickleError('a StyleGAN3 (stylegan3-t / stylegan3-r) synthesis network is not supported: its '
                             'Fourier-feature input and alias-free layers are not a StyleGAN2 generator')
    if not any(str(n).startswith('b') for n in names):
        raise AdaPickleError(f'the synthesis network ({synthesis.class_name}) has no b4, b8, ... blocks '
                             f'(children: {", ".join(map(str, names))[:200]})')


def _clamp_setting(records: list[PersistentRecord]) -> float | None:
    clamps = {_setting(r, 'conv_clamp') for r in records}
    if len(clamps) > 1:
        raise AdaPickleError(f'layers differ in conv_clamp ({sorted(map(str, clamps))}); SeqStyleGAN2 has one setting')
    clamp = clamps.pop() if clamps else None
    if clamp is None:
        return None
    if isinstance(clamp, bool) or not isinstance(clamp, (int, float, np.number)) or not 0 < float(clamp) < math.inf:
        raise AdaPickleError(f'conv_clamp is {clamp!r}, expected a positive number or None')
    return float(clamp)


def ada_checkpoint(data, source: str = 'the pickle') -> dict:
    """A snapshot read by read_ada_pickle -> {'g_ema': state dict (checkpoint layout), 'latent_avg',
    'conv_clamp' (None when unset), 'z_dim'} for SeqStyleGAN2. AdaPickleError for what it cannot express."""
    try:
        gen, gname = _generator(data)
        synthesis = _need_child(gen, 'synthesis', gname)
        mapping = _need_child(gen, 'mapping', gname)
        _check_supported(gen, synthesis, mapping)
        return _map_generator(gen, gname, synthesis, mapping)
    except AdaPickleError as e:
        raise AdaPickleError(f'{source}: {e}') from None


def _map_generator(gen: PersistentRecord, gname: str, synthesis: PersistentRecord,
                   mapping: PersistentRecord) -> dict:
    resolution = int(_setting(synthesis, 'img_resolution', _setting(gen, 'img_resolution', 0)) or 0)
    log_size = int(math.log2(resolution)) if resolution > 0 else 0
    if resolution < 8 or 2 ** log_size != resolution:
        raise AdaPickleError(f'{gname}: img_resolution {resolution} is not a power of two >= 8')
    img_channels = int(_setting(synthesis, 'img_channels', 3))
    if img_channels != 3:
        raise AdaPickleError(f'{gname}: img_channels is {img_channels}; SeqStyleGAN2 draws RGB (3 channels)')
    sd: dict[str, torch.Tensor] = {}

    # mapping: fc0..fc{n-1}; weights rescaled to the layout's lr_mul 0.01 (w * lr / 0.01, same product)
    n_mlp = 0
    while mapping.child(f'fc{n_mlp}') is not None:
        fc = mapping.child(f'fc{n_mlp}')
        where = f'{gname}.mapping.fc{n_mlp}'
        lr = float(_setting(fc, 'lr_multiplier', 1.0))
        activation = _setting(fc, 'activation', 'linear')
        if activation != 'lrelu':
            raise AdaPickleError(f"{where}: activation {activation!r} is not supported (StyleGAN2 uses 'lrelu')")
        gain = _setting(fc, 'weight_gain')
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
    num_ws = _setting(mapping, 'num_ws')
    if num_ws is not None and int(num_ws) != 2 * log_size - 2:
        raise AdaPickleError(f'{gname}.mapping broadcasts {num_ws} ws; '
                             f'a {resolution}px StyleGAN2 uses {2 * log_size - 2}')

    # synthesis: blocks b4 .. b{resolution}
    layers, fp16, n_noise = [], [], 0
    for r in range(2, log_size + 1):
        res = 2 ** r
        block = _need_child(synthesis, f'b{res}', f'{gname}.synthesis')
        where = f'{gname}.synthesis.b{res}'
        architecture = _setting(block, 'architecture', 'skip')
        if architecture != 'skip':
            raise AdaPickleError(f"{where}: architecture {architecture!r} is not supported: SeqStyleGAN2 is the "
                                 "'skip' generator (StyleGAN2 config-e/f); 'orig' and 'resnet' differ in how "
                                 'blocks feed RGB and features forward')
        if _setting(block, 'use_fp16', False):
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
            if _setting(layer, 'activation', 'lrelu') != 'lrelu' or not _setting(layer, 'use_noise', True):
                raise AdaPickleError(f'{lwhere}: only lrelu layers with noise inputs are supported')
            weight = _param(layer, 'weight', lwhere)
            if weight.dim() != 4 or weight.shape[-1] != 3:
                raise AdaPickleError(f'{lwhere}.weight has shape {tuple(weight.shape)}; expected [out, in, 3, 3]')
            affine = _need_child(layer, 'affine', lwhere)
            sd[f'{key}.conv.weight'] = weight[None]
            sd[f'{key}.conv.modulation.weight'] = _param(affine, 'weight', f'{lwhere}.affine')
            sd[f'{key}.conv.modulation.bias'] = _param(affine, 'bias', f'{lwhere}.affine')
            sd[f'{key}.noise.weight'] = _param(layer, 'noise_strength', lwhere).reshape(1)
            sd[f'{key}.activate.bias'] = _param(layer, 'bias', lwhere)
            noise = _buffer(layer, 'noise_const', lwhere)
            sd[f'noises.noise_{n_noise}'] = noise.reshape(1, 1, *noise.shape[-2:])
            n_noise += 1
            layers.append(layer)
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
        sd[f'{rgb_key}.bias'] = _param(torgb, 'bias', rwhere).reshape(1, 3, 1, 1)
        layers.append(torgb)
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
    if not isinstance(taps, (list, tuple)) or len(taps) != 4 or not all(isinstance(t, (int, float)) for t in taps):
        raise AdaPickleError(f'{where}: resample_filter {taps!r} is not supported (expected 4 taps, e.g. [1, 3, 3, 1])')
    return [float(t) for t in taps]


def _blur_kernel(taps: list[float]) -> torch.Tensor:
    """The layout's upsampling FIR kernel: outer(taps, taps) normalised to sum 4. [4, 4]"""
    k = torch.tensor(taps, dtype=torch.float32)
    k = k[:, None] * k[None, :]
    return k / k.sum() * 4.0


def read_ada_checkpoint(path: str | os.PathLike) -> dict:
    """read_ada_pickle + ada_checkpoint: {'g_ema', 'latent_avg', 'conv_clamp', 'z_dim'} from an NVlabs .pkl."""
    return ada_checkpoint(read_ada_pickle(path), source=str(path))
