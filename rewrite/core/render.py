"""Pictures and search at a layer: the responses of its keys to a direction, the images that respond most,
the (edited) model's images, outlined where a key responds or a mask selects, and goal pictures."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from PIL import Image
from tqdm.auto import tqdm

from rewrite.core.pieces import LayerPieces
from utils import imgviz

__all__ = ['key_response', 'Renderer']


def key_response(fmap: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
    """fmap [N, I, h, w] . key [I] -> [N, h, w]."""
    return (fmap * key.to(fmap.device, torch.float32)[None, :, None, None]).sum(1)


class Renderer:
    """Renders and searches `pieces`' z-sample (progress: a bar while searching). The ranking cache is cleared
    with clear() whenever the weights change."""

    def __init__(self, pieces: LayerPieces, progress: bool):
        self.pieces, self.progress = pieces, progress
        self._ranking_cache: dict = {}

    def clear(self) -> None:
        self._ranking_cache.clear()

    def key_response_maps(self, key: torch.Tensor, imgnums: Sequence[int]) -> torch.Tensor:
        """Response k . key at every key pixel: [N, h, w]."""
        maps = []
        with torch.no_grad():
            for _, z in self.pieces.batches(imgnums):
                maps.append(key_response(self.pieces.context_model(z).fmap, key))
        return torch.cat(maps)

    def ranking_for_key(self, key: torch.Tensor, k: int = 12):
        """(the k image numbers whose strongest response to `key` is highest, response quantiles
        [101] over every pixel of the z-sample)."""
        cache_key = (tuple(key.detach().cpu().numpy().round(6).tolist()), k)
        if cache_key in self._ranking_cache:
            return self._ranking_cache[cache_key]
        maxima, samples = [], []
        imgnums = list(range(self.pieces.num_images))
        for chunk, _ in tqdm(list(self.pieces.batches(imgnums)), desc='search', disable=not self.progress,
                             leave=False):
            maps = self.key_response_maps(key, chunk)
            maxima.append(maps.flatten(1).max(1).values)
            samples.append(maps.flatten()[:: max(1, maps.numel() // 4096)])
        maxima = torch.cat(maxima)
        top = maxima.argsort(descending=True)[:k].tolist()
        quantiles = torch.quantile(torch.cat(samples).float().cpu(), torch.linspace(0, 1, 101))
        self._ranking_cache[cache_key] = (top, quantiles)
        return top, quantiles

    def image_with_values(self, imgnum: int, values: torch.Tensor) -> torch.Tensor:
        """Image [3, H, W] of `imgnum` with the rewritten layer's output replaced by values [1, O, h, w]."""
        p = self.pieces
        with torch.no_grad():
            unchanged = p.target_model(p.context_model(p.get_z(imgnum)))
            return p.rendering_model(unchanged.updated(fmap=values))[0]

    def render_image_batch(self, imgnums: Sequence[int], key: torch.Tensor | None = None,
                           level: float | None = None, mask=None, **kwargs) -> list[Image.Image]:
        """The (edited) model's images, outlined where key's response exceeds level, or where a mask selects."""
        p = self.pieces
        results = []
        for _, z in p.batches(list(imgnums)):
            with torch.no_grad():
                keys = p.context_model(z)
                images = p.rendering_model(p.target_model(keys))
            if key is not None and level is not None:
                maps = key_response(keys.fmap, key)
                results += [imgviz.masked_image(img, m, level=level, **kwargs) for img, m in zip(images, maps)]
            elif mask is not None:
                area = p.area(mask, p.x_shape[2]) if isinstance(mask, str) else torch.as_tensor(mask)
                results += [imgviz.masked_image(img, area, **kwargs) for img in images]
            else:
                results += [imgviz.as_image(img) for img in images]
        return results
