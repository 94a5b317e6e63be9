"""Generator families: how a checkpoint of each is loaded and saved, so that the command line edits any family
that has a rewrite site (utils/generators/site.py) without code of its own for it.

A checkpoint names its family in a 'family' entry; one without it is a StyleGAN2 checkpoint (the default
family). Every family registers itself with `register_family`, StyleGAN2 too (utils/stylegan2/__init__.py:
it also loads by name: files, 'demo', release names, NVlabs .pkl files); a built-in family's package is
imported when its name is first asked for (BUILTIN_FAMILIES).
Another family's checkpoint is {'family': name, 'state_dict': model.state_dict(), ...extra entries}.

    register_family('tiny-pgan', lambda ckpt, truncation: TinyPGAN.from_state_dict(ckpt['state_dict']), TinyPGAN)
    model = load_generator('edited.pt', truncation=0.5)
    save_generator(model, 'edited.pt', edit_info='...')
    with sampling_at(model, 1.0): images = model(z)     # any family with a `truncation` attribute
"""

from __future__ import annotations

import contextlib
import importlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from utils.fileio import atomic_path

__all__ = ['BUILTIN_FAMILIES', 'checkpoint_family', 'DEFAULT_FAMILY', 'FAMILIES', 'family', 'family_of',
           'GeneratorFamily', 'load_generator', 'register_family', 'sampling_at', 'save_generator']

DEFAULT_FAMILY = 'stylegan2'


BUILTIN_FAMILIES = {DEFAULT_FAMILY: 'utils.stylegan2'}     # name -> the package that registers it on import


@dataclass(frozen=True)
class GeneratorFamily:
    """name; build(checkpoint dict, truncation) -> the generator (eval mode); model_type: its class, by which
    save_generator knows a model's family. A family that reads files (or names) of its own gives
    load(spec, truncation) -> model and save(model, path, **extra); the others use {'family', 'state_dict'}."""
    name: str
    build: Callable[[dict, float], torch.nn.Module] | None
    model_type: type
    load: Callable[[str | os.PathLike, float], torch.nn.Module] | None = None
    save: Callable[..., None] | None = None


FAMILIES: dict[str, GeneratorFamily] = {}


def register_family(name: str, build_from_state_dict: Callable[[dict, float], torch.nn.Module] | None,
                    model_type: type, load: Callable | None = None, save: Callable | None = None) -> GeneratorFamily:
    """Registers (or replaces) the family `name`; build_from_state_dict(checkpoint, truncation) -> model
    (or load / save of its own files)."""
    if not isinstance(name, str) or not name:
        raise ValueError(f'family: a non-empty name, not {name!r}')
    if build_from_state_dict is None and load is None:
        raise ValueError(f'family {name!r}: give build_from_state_dict or load')
    family = FAMILIES[name] = GeneratorFamily(name, build_from_state_dict, model_type, load, save)
    return family


def family(name: str) -> GeneratorFamily | None:
    """The registered family `name` (a built-in one is imported, and so registered, when first asked for)."""
    if name not in FAMILIES and name in BUILTIN_FAMILIES:
        importlib.import_module(BUILTIN_FAMILIES[name])
    return FAMILIES.get(name)


def checkpoint_family(spec: str | os.PathLike) -> str:
    """The family a checkpoint names (DEFAULT_FAMILY for names, .pkl files and checkpoints without one)."""
    path = Path(spec)
    if not path.is_file() or path.suffix.lower() == '.pkl':
        return DEFAULT_FAMILY
    try:
        data = torch.load(path, map_location='cpu', weights_only=True, mmap=True)   # tensors not read
    except Exception:                    # not a zip checkpoint: StyleGAN2's reader says what is wrong
        return DEFAULT_FAMILY
    family = data.get('family', DEFAULT_FAMILY) if isinstance(data, dict) else DEFAULT_FAMILY
    if not isinstance(family, str):
        raise ValueError(f'{path}: family must be a name, not {type(family).__name__}')
    return family


def load_generator(spec: str | os.PathLike, truncation: float) -> torch.nn.Module:
    """The generator a checkpoint file (or a StyleGAN2 name such as 'demo') holds, of whichever family."""
    name = checkpoint_family(spec)
    found = family(name)
    if found is None:
        known = sorted({*BUILTIN_FAMILIES, *FAMILIES})
        raise ValueError(f'{spec}: family {name!r} is not registered (known: {known})')
    if found.load is not None:
        return found.load(spec, truncation)
    return found.build(torch.load(spec, map_location='cpu', weights_only=True), truncation).eval()


def family_of(model: torch.nn.Module) -> str:
    """The registered family whose model_type `model` is (DEFAULT_FAMILY otherwise)."""
    family(DEFAULT_FAMILY)
    return next((f.name for f in FAMILIES.values() if isinstance(model, f.model_type)), DEFAULT_FAMILY)


def save_generator(model: torch.nn.Module, path: str | os.PathLike, **extra) -> None:
    """Writes `model` (atomically) as its family's checkpoint, with `extra` entries alongside."""
    name = family_of(model)
    found = family(name)
    if found is not None and found.save is not None:
        found.save(model, path, **extra)
        return
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        torch.save({'family': name, 'state_dict': state, **extra}, tmp)


@contextlib.contextmanager
def sampling_at(model: torch.nn.Module, truncation: float | None) -> Iterator[torch.nn.Module]:
    """Within the block `model` samples at `truncation` (e.g. an edited model made at another); None, or a
    model without a `truncation` attribute: unchanged."""
    saved = getattr(model, 'truncation', None)
    if truncation is None or saved is None:
        yield model
        return
    model.truncation = truncation
    try:
        yield model
    finally:
        model.truncation = saved
