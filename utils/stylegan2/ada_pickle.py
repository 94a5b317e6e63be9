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
may not contain itself), and every hyper-parameter read (img_resolution, img_channels, lr_multiplier,
num_ws, conv_clamp, w_dim, z_dim, resample_filter, ...) is checked by name for its type and range.

    ckpt = read_ada_checkpoint('network-snapshot-000000.pkl')   # {'g_ema', 'latent_avg', 'conv_clamp', ...}
"""

from __future__ import annotations

import io
import math
import numbers
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
MAX_NESTING = 100                  # NVlabs snapshots nest about 20 levels (dict, record, state, _modules, ...)
MAX_RESOLUTION = 8192
_STORAGE_BYTES = {'DoubleStorage': 8, 'FloatStorage': 4, 'HalfStorage': 2, 'BFloat16Storage': 2,
                  'LongStorage': 8, 'IntStorage': 4, 'ShortStorage': 2, 'CharStorage': 1, 'ByteStorage': 1,
                  'BoolStorage': 1, 'ComplexFloatStorage': 8, 'ComplexDoubleStorage': 16}


class AdaPickleError(ValueError):
    """An NVlabs .pkl that is refused (unsafe content) or that SeqStyleGAN2 cannot express."""


def describe(value: object) -> str:
    """A short description of a value read from a file, safe whatever it holds (no deep or long repr)."""
    if value is None or isinstance(value, (bool, numbers.Number)):
        text = repr(value)
        return text if len(text) <= 40 else f'a number of {len(text)} characters'
    if isinstance(value, str):
        return repr(value) if len(value) <= 40 else f'a string of {len(value)} characters'
    if isinstance(value, (list, tuple, dict, set, frozenset)):
        return f'a {type(value).__name__} of {len(value)} items'
    if isinstance(value, torch.Tensor):
        return f'a {value.dtype} tensor of shape {tuple(value.shape)}'
    return f'a {type(value).__name__}'


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


class _StorageType(str):
    """A storage class named in a storage blob (e.g. 'FloatStorage'), as data."""


class _ClaimReader(pickle.Unpickler):
    """Reads the small pickles of a legacy torch.save stream as data: storage class names become
    _StorageType, persistent ids (the storages' declarations) are collected, any other global is refused."""

    def __init__(self, f):
        super().__init__(f)
        self.claims: list = []

    def find_class(self, module: str, name: str):
        if module == 'torch' and name in _STORAGE_BYTES:
            return _StorageType(name)
        raise AdaPickleError(f'a tensor storage blob names the global {module}.{name}, not a torch storage type')

    def persistent_load(self, pid):
        self.claims.append(pid)
        return None


def _check_storage_claims(data: bytes) -> None:
    """A legacy torch.save stream (what NVlabs' pickles embed per storage: magic number, protocol, system
    info, the storage's declaration, its key list, then its bytes) may not declare more bytes than it
    carries: torch.load would allocate the declared size before reading any. AdaPickleError otherwise."""
    if data[:2] == b'PK':                   # a zip archive: torch checks its records' sizes itself
        return
    f = io.BytesIO(data)
    try:
        for _ in range(3):                  # magic number, protocol version, system info
            _ClaimReader(f).load()
        reader = _ClaimReader(f)
        reader.load()
    except AdaPickleError:
        raise
    except Exception as e:
        raise AdaPickleError(f'a tensor storage blob is not a torch.save stream ({type(e).__name__})') from None
    declared = {}
    for pid in reader.claims:
        if not (isinstance(pid, tuple) and len(pid) == 6 and pid[0] == 'storage'
                and isinstance(pid[1], _StorageType)):
            raise AdaPickleError(f'a tensor storage blob declares {describe(pid)}, expected a storage')
        numel = pid[4]
        if isinstance(numel, bool) or not isinstance(numel, int) or numel < 0:
            raise AdaPickleError(f'a tensor storage blob declares {describe(numel)} elements')
        declared[str(pid[2])] = numel * _STORAGE_BYTES[pid[1]]
    claimed = sum(declared.values())
    if claimed > len(data):
        raise AdaPickleError(f'a tensor storage blob declares {claimed} bytes of storage but holds only '
                             f'{len(data)} (refused before allocating)')


def _load_storage(data) -> Any:
    """Stands in for torch.storage._load_from_bytes: the blob is read by torch.load(weights_only=True)."""
    if not isinstance(data, (bytes, bytearray)):
        raise AdaPickleError(f'a tensor storage is a {type(data).__name__}, expected bytes')
    _check_storage_claims(bytes(data))
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
        if math.prod(size) > count - offset:        # stride 0 or overlapping: a copy would be larger than the file
            raise AdaPickleError(f'a tensor claims shape {tuple(size)} ({math.prod(size)} values) with strides '
                                 f'{tuple(stride)} over a storage of {count - offset} values (a broadcast or '
                                 'overlapping view: an NVlabs pickle stores every value)')
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
            data = _RestrictedUnpickler(f).load()
            check_nesting(data)
            return data
        except AdaPickleError as e:
            raise AdaPickleError(f'{path}: {e}') from None
        except (EOFError, pickle.UnpicklingError, ValueError, TypeError, KeyError, IndexError,
                AttributeError, RuntimeError, MemoryError, OverflowError) as e:
            raise AdaPickleError(f'{path} is not a readable NVlabs pickle: truncated or corrupt '
                                 f'({type(e).__name__}: {" ".join(str(e).split())[:200]})') from None


def _children(value) -> list:
    if isinstance(value, PersistentRecord):
        return [value.state]
    if isinstance(value, dict):
        return [*value.keys(), *value.values()]
    if isinstance(value, (list, tuple, set, frozenset)):
        return list(value)
    return []


def check_nesting(data, limit: int = MAX_NESTING) -> None:
    """AdaPickleError when containers (dicts, lists, tuples, sets, records) nest deeper than `limit` levels
    along any path, or one contains itself. Iterative (no recursion whatever the depth); each container is
    explored once (shared ones are not re-walked)."""
    below: dict[int, int] = {}               # id -> the longest chain of containers under it
    on_path = {id(data)}
    stack = [[data, iter(_children(data)), 0]]
    while stack:
        top = stack[-1]
        child = next(top[1], stack)          # the stack itself: a sentinel no child can be
        if child is stack:
            stack.pop()
            on_path.discard(id(top[0]))
            below[id(top[0])] = top[2]
            if stack:
                stack[-1][2] = max(stack[-1][2], top[2] + 1)
            continue
        if not isinstance(child, (PersistentRecord, dict, list, tuple, set, frozenset)):
            continue
        if id(child) in on_path:
            raise AdaPickleError('the data contains itself (a cyclic structure): not an NVlabs snapshot')
        depth = below.get(id(child))
        if depth is None and len(stack) >= limit or depth is not None and len(stack) + depth >= limit:
            raise AdaPickleError(f'the data nests more than {limit} levels deep (MAX_NESTING); NVlabs snapshots '
                                 'nest about 20')
        if depth is not None:
            top[2] = max(top[2], depth + 1)
            continue
        on_path.add(id(child))
        stack.append([child, iter(_children(child)), 0])


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
