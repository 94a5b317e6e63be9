"""Reading and writing StyleGAN2 checkpoints in the widely used {'g_ema', 'latent_avg'} layout."""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch

from utils.fileio import atomic_path

from .model import SeqStyleGAN2

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
RELEASE_SIZES = {name: 256 for name in RELEASE_FILES} | {'faces': 1024, 'car': 512}
DEMO_CHECKPOINT = Path(__file__).resolve().parents[1] / 'demo' / 'weights' / 'toychurch64.pt'


def read_checkpoint(path: str | os.PathLike) -> dict:
    """Loads a checkpoint safely (weights_only) and returns {'g_ema': state_dict, 'latent_avg': tensor or None}.

    Accepts the full training layout (g, d, g_ema, optimisers, args), just {'g_ema', 'latent_avg'},
    or a bare generator state dict.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'no checkpoint file at {path}')
    try:
        data = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as e:  # pickle errors, truncated files, non-torch files
        raise ValueError(f'{path} is not a readable PyTorch checkpoint ({type(e).__name__}: {e})') from e
    if not isinstance(data, dict):
        raise ValueError(f'{path} holds a {type(data).__name__}, not a checkpoint dict')
    if 'g_ema' in data:
        return {'g_ema': data['g_ema'], 'latent_avg': data.get('latent_avg')}
    if any(k.startswith('style.') for k in data):
        return {'g_ema': data, 'latent_avg': data.get('latents.latent_avg')}
    raise ValueError(f'{path} has no generator weights: expected a g_ema entry, found {sorted(data)[:8]}')


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
    channels = {4: state_dict['conv1.conv.weight'].shape[1]}
    for r in range(3, log_size + 1):
        channels[2 ** r] = state_dict[f'convs.{2 * (r - 3)}.conv.weight'].shape[1]
    return dict(size=2 ** log_size, style_dim=state_dict['style.1.weight'].shape[0],
                n_mlp=n_mlp, channels=channels)


def model_from_checkpoint(ckpt: dict, truncation: float = 1.0, mconv: str = 'seq') -> SeqStyleGAN2:
    """Builds the generator that fits `ckpt` (from read_checkpoint) and loads it."""
    config = infer_config(ckpt['g_ema'])
    model = SeqStyleGAN2(**config, truncation=truncation, mconv=mconv)
    model.load_state_dict(ckpt['g_ema'], latent_avg=ckpt['latent_avg'])
    return model.eval()


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


def load_seq_stylegan(name_or_path: str | os.PathLike = 'demo', truncation: float = 1.0,
                      mconv: str = 'seq', device=None) -> SeqStyleGAN2:
    """A ready-to-use SeqStyleGAN2 from a checkpoint file, 'demo', or a release name
    (church, faces, horse, kitchen, bedroom, car, cat, places). The architecture is read from
    the checkpoint's shapes. Loads with torch.load(..., weights_only=True)."""
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
    StyleGAN2 tools and by load_seq_stylegan. `extra` entries (e.g. args) are stored alongside."""
    ckpt = {'g_ema': model.checkpoint_state_dict(),
            'latent_avg': model.latents.latent_avg.detach().clone(), **extra}
    atomic_torch_save({k: (v.cpu() if torch.is_tensor(v) else v) for k, v in ckpt.items()}, path)
