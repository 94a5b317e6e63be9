"""Reading and writing StyleGAN2 checkpoints in the widely used {'g_ema', 'latent_avg'} layout."""

from __future__ import annotations

import math
import os
import pickle
import re
import warnings
from pathlib import Path

import torch

from utils.fileio import atomic_path

from .ada_pickle import read_ada_checkpoint
from .model import SeqStyleGAN2, strip_data_parallel_prefix

__all__ = ['atomic_torch_save', 'check_state_tensors', 'checkpoint_options', 'DEFAULT_TRUNCATION',
           'DEMO_CHECKPOINT', 'describe_file', 'FILE_SIGNATURES', 'infer_config', 'load_seq_stylegan',
           'MAX_LOG_SIZE', 'MAX_WIDTH', 'model_from_checkpoint', 'read_checkpoint', 'RELEASE_FILES',
           'RELEASE_URL', 'save_checkpoint']

RELEASE_URL = 'http://rewriting.csail.mit.edu/data/models/'
RELEASE_FILES = {
    'bedroom': 'stylegan2_bedroom-6fa55a6e.pt',
    'car': 'stylegan2_car-3659b4b6.pt',
    'cat': 'stylegan2_cat-d8dc98b2.pt',
    'church': 'stylegan2_church-e8ca9fd0.pt',
    'faces': 'stylegan2_faces-2858cc2e.pt',
    'horse': 'stylegan2_horse-499b5380.pt',
    'kitchen': 'stylegan2_kitchen-b3a526e9.pt',
    'places': 'stylegan2_places-a3b72d71.pt',
}
DEMO_CHECKPOINT = Path(__file__).resolve().parents[1] / 'demo' / 'weights' / 'toychurch64.pt'
MAX_LOG_SIZE = 12          # 4096 px: the largest generator a checkpoint may declare
MAX_WIDTH = 16384          # the widest layer (style_dim or channels) a checkpoint may declare
DEFAULT_TRUNCATION = 0.5   # load_seq_stylegan's and the CLI's: what the original release sampled and edited with


def read_checkpoint(path: str | os.PathLike) -> dict:
    """Loads a checkpoint safely (weights_only) and returns {'g_ema': state_dict, 'latent_avg': tensor or None}.

    Accepts the full training layout (g, d, g_ema, optimisers, args), just {'g_ema', 'latent_avg'},
    or a bare generator state dict.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'no checkpoint file at {path}')
    if path.suffix.lower() == '.pkl':          # an NVlabs StyleGAN2-ADA snapshot, read as data
        return read_ada_checkpoint(path)
    data = _torch_load_lazily(path)
    if not isinstance(data, dict):
        raise ValueError(f'{path} holds a {type(data).__name__}, not a checkpoint dict')
    odd = [k for k in data if not isinstance(k, str)]
    if odd:
        raise ValueError(f'{path}: checkpoint keys must be strings, found {", ".join(repr(k)[:40] for k in odd[:8])}')
    data = _without_data_parallel_prefix(data, path, 'the state dict')
    if 'g_ema' in data:
        g_ema = data['g_ema']
        if isinstance(g_ema, dict):
            g_ema = _without_data_parallel_prefix(g_ema, path, 'g_ema')
        ckpt = {'g_ema': g_ema, 'latent_avg': data.get('latent_avg')}
        check_state_tensors(ckpt['g_ema'], path, 'g_ema')
    elif any(k.startswith('style.') for k in data):
        ckpt = {'g_ema': data, 'latent_avg': data.get('latents.latent_avg')}
        check_state_tensors(data, path, 'the state dict')
    else:
        raise ValueError(f'{path} has no generator weights: expected a g_ema entry, found {sorted(data)[:8]}')
    latent_avg = ckpt['latent_avg']
    if latent_avg is not None and not (isinstance(latent_avg, torch.Tensor) and latent_avg.is_floating_point()
                                       and latent_avg.dim() <= 2):
        shown = f'{latent_avg.dtype} tensor' if isinstance(latent_avg, torch.Tensor) else type(latent_avg).__name__
        raise ValueError(f'{path}: latent_avg must be a real floating-point tensor [style_dim], got {shown}')
    ckpt['conv_clamp'] = data.get('conv_clamp')
    return ckpt


def _without_data_parallel_prefix(state: dict, path: Path, where: str) -> dict:
    """`state` with the 'module.' prefix of a (Distributed)DataParallel-wrapped model's keys removed, with
    a warning saying so (unchanged when not every key has it)."""
    stripped = strip_data_parallel_prefix(state)
    if stripped is not state:
        warnings.warn(f"{path}: every key of {where} starts with 'module.' (a model saved inside DataParallel / "
                      'DistributedDataParallel); the prefix was removed', stacklevel=3)
    return stripped


FILE_SIGNATURES = [          # (leading bytes, what a file starting with them is)
    (b'\x89PNG\r\n\x1a\n', 'a PNG image'), (b'\xff\xd8\xff', 'a JPEG image'), (b'GIF8', 'a GIF image'),
    (b'RIFF', 'a RIFF (WebP/WAV) file'), (b'%PDF', 'a PDF document'), (b'\x1f\x8b', 'a gzip archive'),
    (b'\x89HDF', 'an HDF5 file (Keras/TensorFlow weights?)'), (b'\x93NUMPY', 'a NumPy .npy array'),
    (b'{', 'a JSON or text file'), (b'[', 'a JSON or text file'), (b'<', 'an HTML/XML file'),
]


def describe_file(path: Path) -> str | None:
    """What a file that is not a PyTorch checkpoint appears to be, from its first bytes (None: no idea)."""
    with open(path, 'rb') as f:
        head = f.read(16)
    if not head:
        return 'an empty file'
    for signature, kind in FILE_SIGNATURES:
        if head.startswith(signature):
            return kind
    return None


def _torch_load_lazily(path: Path):
    """torch.load(weights_only=True), memory-mapped when the file's format allows it, so that tensor
    metadata can be checked before any value is read into memory. A file that is not a checkpoint (an
    image, JSON, ...) is named as what it is; torch's own advice to drop weights_only is never passed on."""
    kind = describe_file(path)
    expected = ("expected a PyTorch checkpoint (torch.save of {'g_ema': ..., 'latent_avg': ...} or of a "
                'generator state dict) or an NVlabs .pkl')
    if kind is not None:
        raise ValueError(f'{path} is {kind}, not a model checkpoint: {expected}')
    try:
        return torch.load(path, map_location='cpu', weights_only=True, mmap=True)
    except Exception:  # legacy (non-zip) files cannot be memory-mapped; any other error repeats below
        pass
    try:
        return torch.load(path, map_location='cpu', weights_only=True)
    except pickle.UnpicklingError as e:      # weights-only refusal: objects other than tensors and containers
        if 'Weights only load failed' not in str(e):
            raise ValueError(f'{path} is not a readable PyTorch checkpoint (UnpicklingError: '
                             f'{str(e).splitlines()[0][:200]}); {expected}') from e
        raise ValueError(f'{path} is not a readable PyTorch checkpoint: it pickles Python objects other than '
                         'tensors and plain containers (a whole model object?), which are never unpickled here '
                         "because unpickling can run code. Save the generator's weights instead: "
                         "torch.save({'g_ema': G.state_dict(), 'latent_avg': ...}, path)") from e
    except Exception as e:  # truncated files, non-torch files
        raise ValueError(f'{path} is not a readable PyTorch checkpoint ({type(e).__name__}: '
                         f'{str(e).splitlines()[0][:200] if str(e) else ""}); {expected}') from e


def check_state_tensors(state_dict, path: str | os.PathLike = 'checkpoint', where: str = 'g_ema') -> None:
    """Every entry of a generator state dict is a named, real floating-point tensor whose values the
    file really holds (no broadcast views claiming more elements than their storage has: a tiny file
    must not make the loader build a huge model). ValueError naming the key otherwise."""
    if not isinstance(state_dict, dict):
        raise ValueError(f'{path}: {where} must be a dict of tensors, got {type(state_dict).__name__}')
    for key, value in state_dict.items():
        if not isinstance(key, str):
            raise ValueError(f'{path}: {where} keys must be strings, found {key!r:.40}')
        if not isinstance(value, torch.Tensor):
            raise ValueError(f'{path}: {where}[{key!r}] must be a tensor, got {type(value).__name__} {value!r:.40}')
        if not value.is_floating_point():
            raise ValueError(f'{path}: {where}[{key!r}] is a {value.dtype} tensor; expected real floating-point '
                             'weights (complex, bool and integer values are refused)')
        held = value.untyped_storage().nbytes()
        if value.numel() * value.element_size() > held:
            raise ValueError(f'{path}: {where}[{key!r}] claims shape {tuple(value.shape)} '
                             f'({value.numel()} values) but the file holds {held // value.element_size()} for it')


def infer_config(state_dict: dict) -> dict:
    """Architecture (size, style_dim, n_mlp, channels) from a g_ema state dict's shapes."""
    keys = set(state_dict)
    if 'style.1.weight' not in keys or 'conv1.conv.weight' not in keys:
        raise ValueError('not a StyleGAN2 generator state dict in the checkpoint layout '
                         '(no style.1.weight or conv1.conv.weight)')
    n_mlp = 0
    while f'style.{n_mlp + 1}.weight' in keys:
        n_mlp += 1
    n_convs = len({m[1] for k in keys if (m := re.match(r'convs\.(\d+)\.', k))})
    if n_convs == 0 or n_convs % 2:
        raise ValueError(f'expected an even, non-zero number of convs.* layers, found {n_convs}')
    log_size = n_convs // 2 + 2
    if log_size > MAX_LOG_SIZE:
        raise ValueError(f'{n_convs} convs.* layers declare a {2 ** log_size}px generator; '
                         f'at most {2 ** MAX_LOG_SIZE}px is supported')
    channels = {4: _dim(state_dict, 'conv1.conv.weight', 5, 1)}
    for r in range(3, log_size + 1):
        channels[2 ** r] = _dim(state_dict, f'convs.{2 * (r - 3)}.conv.weight', 5, 1)
    return dict(size=2 ** log_size, style_dim=_dim(state_dict, 'style.1.weight', 2, 0),
                n_mlp=n_mlp, channels=channels)


def _dim(state_dict: dict, key: str, ndim: int, axis: int) -> int:
    """Size `axis` of the `ndim`-d tensor at `key`, within MAX_WIDTH; ValueError naming the key otherwise."""
    value = state_dict.get(key)
    if not isinstance(value, torch.Tensor) or value.dim() != ndim:
        shown = f'shape {tuple(value.shape)}' if isinstance(value, torch.Tensor) else type(value).__name__
        raise ValueError(f'{key}: expected a {ndim}-d tensor, got {shown}')
    size = int(value.shape[axis])
    if not 1 <= size <= MAX_WIDTH:
        raise ValueError(f'{key}: a width of {size} (shape {tuple(value.shape)}) is outside 1..{MAX_WIDTH}')
    return size


def model_from_checkpoint(ckpt: dict, truncation: float = 1.0, mconv: str = 'seq') -> SeqStyleGAN2:
    """Builds the generator that fits `ckpt` (from read_checkpoint) and loads it."""
    config = infer_config(ckpt['g_ema']) | checkpoint_options(ckpt)
    with torch.device('meta'):        # every shape and value checked before the model is allocated
        skeleton = SeqStyleGAN2(**config, truncation=truncation, mconv=mconv)
    skeleton.check_state_dict(ckpt['g_ema'], latent_avg=ckpt['latent_avg'])
    model = SeqStyleGAN2(**config, truncation=truncation, mconv=mconv)
    model.load_state_dict(ckpt['g_ema'], latent_avg=ckpt['latent_avg'])
    return model.eval()


def checkpoint_options(ckpt: dict) -> dict:
    """SeqStyleGAN2 options a checkpoint holds beyond its shapes: `conv_clamp` (an entry beside g_ema,
    written for models converted from NVlabs pickles) and `z_dim` (style.1.weight's input width, when
    it differs from style_dim). ValueError naming the entry when it is malformed."""
    options = {}
    clamp = ckpt.get('conv_clamp')
    if clamp is not None:
        if isinstance(clamp, bool) or not isinstance(clamp, (int, float)) or not 0 < clamp < math.inf:
            raise ValueError(f'conv_clamp must be a positive finite number (or absent), got {clamp!r:.40}')
        options['conv_clamp'] = float(clamp)
    first = ckpt['g_ema'].get('style.1.weight')
    if isinstance(first, torch.Tensor) and first.dim() == 2 and first.shape[1] != first.shape[0]:
        options['z_dim'] = _dim(ckpt['g_ema'], 'style.1.weight', 2, 1)
    return options


def _release_file(name: str) -> Path:
    """The release checkpoint in the torch hub cache, downloaded (hash-checked) when missing."""
    filename = RELEASE_FILES[name]
    target = Path(torch.hub.get_dir()) / 'checkpoints' / filename
    if target.is_file():
        return target
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        hash_prefix = re.search(r'-([0-9a-f]+)\.pt$', filename)[1]
        torch.hub.download_url_to_file(RELEASE_URL + filename, str(target), hash_prefix, progress=True)
    except Exception as e:
        raise RuntimeError(
            f"could not download the '{name}' StyleGAN2 checkpoint ({type(e).__name__}: {e}). "
            f'Offline, put {filename} (from {RELEASE_URL}{filename}) at {target}, '
            'or pass a local checkpoint path instead of a name.') from e
    return target


def load_seq_stylegan(name_or_path: str | os.PathLike = 'demo', truncation: float = DEFAULT_TRUNCATION,
                      mconv: str = 'seq', device=None) -> SeqStyleGAN2:
    """A ready-to-use SeqStyleGAN2 from a checkpoint file, 'demo', or a release name
    (church, faces, horse, kitchen, bedroom, car, cat, places). The architecture is read from
    the checkpoint's shapes. Loads with torch.load(..., weights_only=True). truncation: psi, default
    DEFAULT_TRUNCATION (0.5, as the original release and the command line); 1.0 samples untruncated
    (SeqStyleGAN2(...) and model_from_checkpoint keep the constructor's 1.0)."""
    name = str(name_or_path)
    if name == 'demo':
        path = DEMO_CHECKPOINT
        if not path.is_file():
            raise FileNotFoundError(f'the bundled demo checkpoint is missing: {path}')
    elif name in RELEASE_FILES and not Path(name).exists():
        path = _release_file(name)
    else:
        path = Path(name)
        if not path.is_file():
            known = ', '.join(['demo', *RELEASE_FILES])
            raise FileNotFoundError(f'no checkpoint file at {path} (names known: {known})')
    model = model_from_checkpoint(read_checkpoint(path), truncation=truncation, mconv=mconv)
    return model.to(device) if device is not None else model


def atomic_torch_save(obj, path: str | os.PathLike) -> None:
    """torch.save to a temp file in the same folder, then rename over `path`."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def save_checkpoint(model: SeqStyleGAN2, path: str | os.PathLike, **extra) -> None:
    """Writes {'g_ema', 'latent_avg'} in the checkpoint layout (atomically), readable by other
    StyleGAN2 tools and by load_seq_stylegan. `extra` entries (e.g. args) are stored alongside. A model
    whose weights were loaded without a latent_avg is written without one too."""
    ckpt = {'g_ema': model.checkpoint_state_dict(), 'latent_avg': model.latents.latent_avg.detach().clone(), **extra}
    if getattr(model.latents, 'latent_avg_unknown', False):
        del ckpt['latent_avg']
    if model.conv_clamp is not None:       # NVlabs' conv_clamp, kept by models converted from .pkl files
        ckpt['conv_clamp'] = float(model.conv_clamp)
    atomic_torch_save({k: (v.cpu() if torch.is_tensor(v) else v) for k, v in ckpt.items()}, path)
