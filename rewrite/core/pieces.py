"""The generator cut at its rewrite site into three pieces, with the z-sample whose images requests name.

    context_model(z) -> key bag (fmap [B, I, h, w], ...)      everything before the rewritten conv
    target_model(key bag) -> value bag (fmap [B, O, H, W])     the conv and what follows it to the values
    rendering_model(value bag) -> images [B, 3, H', W']        the rest of the generator

The rewrite site (`model.rewrite_site(layernum)`, utils/generators/site.py) names the cuts and the conv.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.func import functional_call
from torch.utils.data import TensorDataset

from rewrite.formats import editfile
from rewrite.formats.settings import RewriteError
from utils.nethook import subsequence
from utils.stylegan2 import DataBag, rewrite_site

__all__ = ['all_zs', 'EDIT_DTYPES', 'float_zs', 'LayerPieces']

EDIT_DTYPES = (torch.float32, torch.float64, torch.bfloat16)   # float16 overflows in the solvers


def all_zs(zds) -> torch.Tensor:
    """Every z [N, D] of a z-sample (a TensorDataset, or any sequence of (z, ...) items)."""
    return zds.tensors[0] if hasattr(zds, 'tensors') else torch.stack([z[0] for z in zds])


def float_zs(zds):
    """The z-sample, with z's of a narrower float dtype (bfloat16, float16) as a float32 TensorDataset of the
    same values (exactly); any other z-sample as it is. The generator normalises z before its first layer
    casts it to the weights' dtype: in bfloat16 that normalisation would round."""
    if len(zds) == 0 or not torch.is_tensor(zds[0][0]) or zds[0][0].dtype not in (torch.bfloat16, torch.float16):
        return zds
    converted = TensorDataset(all_zs(zds).float())
    if hasattr(zds, 'seed'):
        converted.seed = zds.seed
    return converted


class LayerPieces:
    """`model` (the rewriter's own copy) cut at layer `layernum`'s rewrite site; zds: the z-sample
    (TensorDataset); batch_size: images per forward pass when many are rendered or searched."""

    def __init__(self, model, zds, layernum: int, batch_size: int):
        self.model, self.zds, self.layernum, self.batch_size = model, zds, layernum, batch_size
        self.device = next(model.parameters()).device
        self.site = rewrite_site(model, layernum)
        self.firstlayer, self.lastlayer = self.site.conv, self.site.target_end
        self.context_model = subsequence(model, upto_layer=self.firstlayer, share_weights=True)
        self.target_model = subsequence(model, first_layer=self.firstlayer, last_layer=self.lastlayer,
                                        share_weights=True)
        self.rendering_model = subsequence(model, after_layer=self.lastlayer, share_weights=True)
        self.conv = model.get_submodule(self.firstlayer)
        if self.conv.weight.dtype not in EDIT_DTYPES:
            raise RewriteError(f'the model is {self.conv.weight.dtype}, which the solvers do not support (they need '
                               f'one of {[str(t) for t in EDIT_DTYPES]}; float16 overflows): convert it, e.g. '
                               'model.float() or model.to(torch.bfloat16)')
        self.weight_name = next(n for n, p in self.target_model.named_parameters() if p is self.conv.weight)
        with torch.no_grad():
            k = self.context_model(self.get_z(0))
            v = self.target_model(k)
            x = self.rendering_model(v)
        self.k_shape, self.v_shape, self.x_shape = tuple(k.fmap.shape), tuple(v.fmap.shape), tuple(x.shape)

    @property
    def num_images(self) -> int:
        return len(self.zds)

    def get_z(self, imgnum: int) -> torch.Tensor:
        """z [1, D] of image `imgnum`."""
        if isinstance(imgnum, bool) or not isinstance(imgnum, (int, np.integer)):
            raise RewriteError(f'image number must be an integer, not {imgnum!r}')
        if not 0 <= imgnum < len(self.zds):
            raise RewriteError(f'image number {imgnum} is outside the z-sample (0..{len(self.zds) - 1})')
        return self.zds[int(imgnum)][0][None].to(self.device)

    def get_zs(self, imgnums: Sequence[int]) -> torch.Tensor:
        return torch.cat([self.get_z(i) for i in imgnums])

    def all_zs(self) -> torch.Tensor:
        """Every z of the z-sample [N, D]."""
        return all_zs(self.zds)

    def batches(self, imgnums: Sequence[int]) -> Iterator[tuple[list[int], torch.Tensor]]:
        """(image numbers, z's [b, D]) in batches of batch_size."""
        for start in range(0, len(imgnums), self.batch_size):
            chunk = list(imgnums[start:start + self.batch_size])
            yield chunk, self.get_zs(chunk)

    def image(self, z: torch.Tensor) -> torch.Tensor:
        """Images [B, 3, H, W] of the (edited) model for z [B, D]."""
        with torch.no_grad():
            return self.rendering_model(self.target_model(self.context_model(z.to(self.device))))

    def target(self, key: DataBag) -> torch.Tensor:
        """The target piece's output fmap [B, O, H, W] for a key bag."""
        return self.target_model(key).fmap

    def target_with_weight(self, weight: torch.Tensor, key: DataBag) -> torch.Tensor:
        """The same with the rewritten conv's weight replaced by `weight` [1, O, I, k, k] (differentiable)."""
        return functional_call(self.target_model, {self.weight_name: weight}, (key,)).fmap

    def area(self, mask, resolution: int, field: str = 'mask') -> torch.Tensor:
        """A mask (data URL, or array [H, W] in [0, 1]) at `resolution`, as the original decoded it."""
        if isinstance(mask, str):
            try:
                area = editfile.mask_from_url(mask, resolution)
            except editfile.EditFileError as e:
                raise RewriteError(f'{field}: {e}') from e
        else:
            area = editfile.resize_mask(torch.as_tensor(np.asarray(mask), dtype=torch.float32), resolution)
        if not (area > 0).any():
            raise RewriteError(f'{field}: the mask selects nothing at the {resolution}x{resolution} '
                               f'resolution of layer {self.layernum}')
        return area.to(self.device)
