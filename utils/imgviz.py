"""Turning generator outputs into pictures: plain, with a region outlined, or with a heatmap."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

__all__ = ['as_image', 'box_image', 'masked_image', 'region_border', 'resize_map', 'tile', 'to_uint8',
           'to_uint8_batch']


def to_uint8(img: torch.Tensor) -> np.ndarray:
    """img [3, H, W] in [-1, 1] -> uint8 [H, W, 3]."""
    return to_uint8_batch(img[None])[0]


def to_uint8_batch(images: torch.Tensor, truncate: bool = False) -> np.ndarray:
    """images [N, 3, H, W] in [-1, 1] -> uint8 [N, H, W, 3]: rounded (pictures, grids), or with
    truncate=True as torchvision's ToPILImage did (the original release's bulk samplers, kept by
    rewrite/cli/sampling.py so sample folders match the original's files)."""
    if truncate:
        x = images.detach().float().cpu().mul(0.5).add(0.5).clamp(0, 1)
        return x.mul(255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    arr = ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().byte()
    return arr.permute(0, 2, 3, 1).cpu().numpy()


def tile(images, cols: int = 8, pad: int = 0, background: int = 0) -> np.ndarray:
    """uint8 images [N, H, W, C] (array or sequence) -> one grid, row-major, `cols` per row,
    `pad` pixels of `background` around and between tiles (short last row left as background)."""
    if len(images) == 0:
        raise ValueError('tile needs at least one image')
    h, w, c = images[0].shape
    rows = -(-len(images) // cols)
    grid = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, c), background, np.uint8)
    for k, im in enumerate(images):
        y, x = pad + (k // cols) * (h + pad), pad + (k % cols) * (w + pad)
        grid[y:y + h, x:x + w] = im
    return grid


def as_image(img: torch.Tensor) -> Image.Image:
    """img [3, H, W] in [-1, 1] -> PIL RGB image."""
    return Image.fromarray(to_uint8(img))


def resize_map(values: torch.Tensor, size: tuple[int, int], mode: str = 'bilinear') -> torch.Tensor:
    """values [h, w] -> [H, W] (float)."""
    v = values.detach().float()[None, None]
    kw = {'align_corners': False} if mode == 'bilinear' else {}
    return F.interpolate(v, size=size, mode=mode, **kw)[0, 0].cpu()


def region_border(region: torch.Tensor, thickness: int = 1) -> torch.Tensor:
    """Pixels of the boolean map `region` [H, W] that lie within `thickness` of its edge."""
    r = region.float()[None, None]
    k = 2 * thickness + 1
    eroded = -F.max_pool2d(-r, k, stride=1, padding=thickness)
    dilated = F.max_pool2d(r, k, stride=1, padding=thickness)
    return ((dilated - eroded) > 0)[0, 0] & (dilated[0, 0] > 0)


def masked_image(img: torch.Tensor, mask: torch.Tensor, border_color=(255, 0, 0), thickness: int = 1,
                 outside_bright: float = 0.5, inside_color=None, level: float = 0.0) -> Image.Image:
    """Image [3, H, W] with the region mask > level (mask [h, w], any resolution) outlined and the
    outside dimmed to `outside_bright`; inside tinted by inside_color (RGB, alpha 0.4) if given."""
    rgb = to_uint8(img).astype(np.float32)
    h, w = rgb.shape[:2]
    region = resize_map(mask, (h, w), mode='nearest' if mask.shape[0] < h else 'bilinear') > level
    region_np = region.numpy()
    rgb[~region_np] *= outside_bright
    if inside_color is not None:
        rgb[region_np] = 0.6 * rgb[region_np] + 0.4 * np.asarray(inside_color, dtype=np.float32)
    if border_color is not None and thickness > 0:
        rgb[region_border(region, thickness).numpy()] = border_color
    return Image.fromarray(rgb.clip(0, 255).astype(np.uint8))


def box_image(img: torch.Tensor, box: tuple[int, int, int, int], box_resolution: int,
              color=(255, 0, 0), thickness: int = 2) -> Image.Image:
    """Image with a rectangle (top, left, bottom, right at `box_resolution`) drawn on it."""
    rgb = to_uint8(img).copy()
    s = rgb.shape[0] / box_resolution
    t, l, b, r = (int(round(v * s)) for v in box)
    b, r = max(b - 1, t), max(r - 1, l)
    for y0, y1, x0, x1 in [(t, t + thickness, l, r + 1), (b - thickness + 1, b + 1, l, r + 1),
                           (t, b + 1, l, l + thickness), (t, b + 1, r - thickness + 1, r + 1)]:
        rgb[max(y0, 0):y1, max(x0, 0):x1] = color
    return Image.fromarray(rgb)
