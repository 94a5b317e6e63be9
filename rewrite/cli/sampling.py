"""Bulk sampling of a generator into a folder of numbered PNGs, resumable and shardable across processes.

Conventions of the original release's bulk samplers (davidbau/rewriting metrics/sample.py and
metrics/sample_edited.py):
    image i is model(z_sample_for_model(model, size=1, seed=i + seed_offset)), seed_offset 0 for the
    evaluation samples and 1000007 for the held-out set used as FID reference;
    pixels are clamp(x * 0.5 + 0.5, 0, 1) converted by torchvision's ToPILImage, i.e. mul(255) then a
    truncating cast to uint8 (not rounding).
Files are DIR/{i:06d}.png, each written to a temp file in DIR and renamed into place, so a file with
its final name is always complete. Batches are always padded to the full batch size, because CPU
kernels pick different algorithms (different float rounding) for different batch sizes: for a given
--batch an image is then bit-identical whichever other images share its batch.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from utils import imgviz
from utils.fileio import atomic_path, atomic_write_text
from utils.zdataset import z_sample_for_model

__all__ = ['check_manifest', 'contact_sheet', 'FID_SEED_OFFSET', 'GRID_COLUMNS', 'GRID_IMAGES', 'GRID_NAME',
           'image_path', 'image_z', 'is_complete_png', 'MANIFEST_NAME', 'padded_batches', 'pending',
           'PIXEL_FORMAT', 'remove_stale_temps', 'render', 'sample_to_folder', 'SampleFolderError',
           'to_uint8', 'write_contact_sheet', 'write_manifest', 'write_png']

FID_SEED_OFFSET = 1_000_007
GRID_NAME = 'grid.png'
MANIFEST_NAME = 'sample.json'
GRID_IMAGES = 64
GRID_COLUMNS = 8
PIXEL_FORMAT = 'uint8(clamp(x * 0.5 + 0.5, 0, 1) * 255), truncated'
_TEMP_RE = re.compile(r'^\.(\d+)\.png\..+\.tmp(\.png)?$')     # utils.fileio.atomic_path's temp names


class SampleFolderError(ValueError):
    """The output folder holds samples of a different generator or settings."""


def image_z(model: torch.nn.Module, indices: Sequence[int], seed_offset: int = 0) -> torch.Tensor:
    """z [len(indices), style_dim]: row j is z_sample_for_model(model, size=1, seed=indices[j] + seed_offset)."""
    return torch.cat([z_sample_for_model(model, size=1, seed=int(i) + seed_offset) for i in indices])


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """Generator output [B, 3, H, W] in ~[-1, 1] -> uint8 [B, H, W, 3], as the original's ToPILImage did."""
    return imgviz.to_uint8_batch(images, truncate=True)


def image_path(out_dir: str | os.PathLike, index: int) -> Path:
    return Path(out_dir) / f'{index:06d}.png'


def write_png(array: np.ndarray, path: str | os.PathLike) -> None:
    """Saves uint8 [H, W, 3] (or [H, W]) as a PNG atomically (a bulk write: see utils.fileio.atomic_path)."""
    with atomic_path(path, bulk=True) as tmp:
        Image.fromarray(array).save(tmp, format='PNG')


def is_complete_png(path: str | os.PathLike, size: int) -> bool:
    """True if `path` is a readable size x size RGB PNG (CRCs checked)."""
    try:
        with Image.open(path) as im:
            if im.format != 'PNG' or im.size != (size, size) or im.mode != 'RGB':
                return False
            im.verify()
        return True
    except (OSError, SyntaxError, ValueError):
        return False


def pending(out_dir: str | os.PathLike, indices: Iterable[int], size: int) -> list[int]:
    """The indices whose image is not yet complete in out_dir."""
    return [i for i in indices if not is_complete_png(image_path(out_dir, i), size)]


def remove_stale_temps(out_dir: str | os.PathLike, indices: Iterable[int]) -> int:
    """Deletes temp files left by an interrupted run for the given image indices; returns how many."""
    wanted = set(indices)
    removed = 0
    for entry in os.scandir(out_dir):
        m = _TEMP_RE.match(entry.name)
        if m and int(m[1]) in wanted and entry.is_file():
            os.unlink(entry.path)
            removed += 1
    return removed


def padded_batches(indices: Sequence[int], batch: int) -> Iterator[tuple[list[int], int]]:
    """(indices padded to `batch` by repeating the last one, number of real ones) for each batch."""
    for start in range(0, len(indices), batch):
        chunk = list(indices[start:start + batch])
        yield chunk + [chunk[-1]] * (batch - len(chunk)), len(chunk)


def render(model: torch.nn.Module, indices: Sequence[int], batch: int = 8,
           seed_offset: int = 0) -> Iterator[tuple[list[int], np.ndarray]]:
    """Yields (indices, uint8 images [n, H, W, 3]) for `indices`, `batch` at a time (always computed full)."""
    device = next(model.parameters()).device
    for chunk, real in padded_batches(indices, batch):
        with torch.no_grad():
            images = model(image_z(model, chunk, seed_offset).to(device))
        yield chunk[:real], to_uint8(images[:real])


def sample_to_folder(model: torch.nn.Module, out_dir: str | os.PathLike, indices: Sequence[int], batch: int = 8,
                     seed_offset: int = 0, progress: bool = True, desc: str = 'sampling',
                     on_written: Callable[[int], None] | None = None) -> list[int]:
    """Writes image i to out_dir/{i:06d}.png for every i in `indices` not already complete there.

    Returns the indices written. `on_written(i)` is called after each file lands.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(out_dir, indices)
    todo = pending(out_dir, indices, model.size)
    written = []
    with tqdm(total=len(todo), unit='img', desc=desc, disable=not progress, dynamic_ncols=True) as bar:
        for chunk, images in render(model, todo, batch, seed_offset):
            for i, image in zip(chunk, images, strict=True):
                write_png(image, image_path(out_dir, i))
                written.append(i)
                if on_written is not None:
                    on_written(i)
            bar.update(len(chunk))
    return written


def contact_sheet(images: Sequence[np.ndarray], cols: int = GRID_COLUMNS) -> np.ndarray:
    """Tiles uint8 images [H, W, 3] row-major, `cols` per row (black where the last row is short)."""
    if not images:
        raise ValueError('contact_sheet needs at least one image')
    return imgviz.tile(images, cols=min(cols, len(images)))


def write_contact_sheet(out_dir: str | os.PathLike, indices: Sequence[int],
                        path: str | os.PathLike | None = None) -> Path:
    """Writes the contact sheet of the first GRID_IMAGES of `indices` (read back from out_dir)."""
    out_dir = Path(out_dir)
    images = []
    for i in indices[:GRID_IMAGES]:
        with Image.open(image_path(out_dir, i)) as im:
            images.append(np.asarray(im.convert('RGB')))
    path = Path(path) if path is not None else out_dir / GRID_NAME
    write_png(contact_sheet(images), path)
    return path


def check_manifest(out_dir: str | os.PathLike, settings: dict) -> None:
    """Raises SampleFolderError if out_dir already holds samples made with other `settings`."""
    path = Path(out_dir) / MANIFEST_NAME
    if not path.is_file():
        return
    try:
        found = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise SampleFolderError(f'{path} is unreadable ({e}); remove it or use another output folder') from None
    if found != settings:
        diff = sorted(k for k in set(found) | set(settings) if found.get(k) != settings.get(k))
        raise SampleFolderError(f'{out_dir} holds samples made with other settings ({", ".join(diff)} differ); '
                                'use another output folder')


def write_manifest(out_dir: str | os.PathLike, settings: dict) -> None:
    """Records the settings that define the images in out_dir (atomically)."""
    text = json.dumps(settings, indent=1, sort_keys=True)
    atomic_write_text(Path(out_dir) / MANIFEST_NAME, text)
