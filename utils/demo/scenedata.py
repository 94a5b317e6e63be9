"""The demo world's scenes as data (utils/demo/scenes.py draws them): batches of images and label maps,
tensors in [-1, 1], a torch Dataset, class presence, contact sheets.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from utils.demo.scenes import N_CLASSES, render_scene
from utils.imgviz import tile


def render_batch(indices: Iterable[int], size: int = 64, family: str = 'church'
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Render several scenes: (uint8 [N,size,size,3], uint8 [N,size,size])."""
    scenes = [render_scene(int(i), size, family=family) for i in indices]
    return (np.stack([s.image for s in scenes]),
            np.stack([s.labels for s in scenes]))


def images_to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 [N,H,W,3] -> float32 [N,3,H,W] in [-1, 1]."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)
    return x.float().div(127.5).sub(1.0).contiguous()


def scenes_as_tensor(indices: Iterable[int], size: int = 64, family: str = 'church') -> torch.Tensor:
    """Rendered scenes as the GAN sees them: float32 [N,3,size,size] in [-1,1]."""
    return images_to_tensor(render_batch(indices, size, family)[0])


def presence(labels: np.ndarray | torch.Tensor,
             min_pixels: int = 4, n_classes: int = N_CLASSES) -> np.ndarray:
    """Which classes cover at least ``min_pixels`` pixels of each map.

    labels: integer [N,H,W] -> bool [N, n_classes] (``N_RULE_CLASSES`` for 'glow' labels).
    """
    lab = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor)
                     else labels).astype(np.int64)
    n = lab.shape[0]
    flat = lab.reshape(n, -1) + np.arange(n)[:, None] * n_classes
    counts = np.bincount(flat.ravel(), minlength=n * n_classes)
    return counts.reshape(n, n_classes) >= min_pixels


class SceneDataset(Dataset):
    """Scenes ``start .. stop-1`` as (image float [3,H,W] in [-1,1], labels long [H,W])."""

    def __init__(self, start: int = 0, stop: int = 1000, size: int = 64,
                 family: str = 'church') -> None:
        self.start, self.stop, self.size, self.family = start, stop, size, family

    def __len__(self) -> int:
        return self.stop - self.start

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not 0 <= i < len(self):
            raise IndexError(i)
        scene = render_scene(self.start + i, self.size, family=self.family)
        image = images_to_tensor(scene.image[None])[0]
        return image, torch.from_numpy(scene.labels.astype(np.int64))


def scene_grid(indices: Sequence[int], cols: int = 8, size: int = 64,
               pad: int = 2, family: str = 'church') -> np.ndarray:
    """Tile rendered scenes into one uint8 [H,W,3] image."""
    return tile(render_batch(indices, size, family)[0], cols=cols, pad=pad, background=255)


def save_scene_grid(path: str | Path, indices: Sequence[int] = range(64),
                    cols: int = 8, size: int = 64, family: str = 'church') -> None:
    """Write ``scene_grid`` of ``indices`` as a PNG."""
    from PIL import Image

    Image.fromarray(scene_grid(indices, cols, size, family=family)).save(path, format='PNG', optimize=True)
