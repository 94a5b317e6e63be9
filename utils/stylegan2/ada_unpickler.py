"""NVlabs' pickles read as data (the first half of utils/stylegan2/ada_pickle.py, whose docstring explains why):
a restricted unpickler that turns each persistence record into a `PersistentRecord` and refuses every other
global, with storage, view and nesting claims bounded by what the file holds.

    data = read_ada_pickle('network-snapshot-000000.pkl')     # {'G_ema': PersistentRecord(...), ...}
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

__all__ = ['AdaPickleError', 'check_nesting', 'describe', 'MAX_NESTING', 'PERSISTENCE_VERSION',
           'PersistentRecord', 'read_ada_pickle', 'TF_CONVERTERS']

PERSISTENCE_VERSION = 6
TF_CONVERTERS = ("NVlabs stylegan2-ada-pytorch's `python legacy.py --source=OLD.pkl --dest=NEW.pkl` "
                 "(writes a PyTorch .pkl this loader reads) or rosinality stylegan2-pytorch's "
                 "`convert_weight.py` (writes a .pt in the {'g_ema', 'latent_avg'} layout)")


_NUMPY_KINDS = 'biufc?'            # numeric and bool dtypes: the only ones a scalar may have


MAX_NESTING = 100                  # NVlabs snapshots nest about 20 levels (dict, record, state, _modules, ...)


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
