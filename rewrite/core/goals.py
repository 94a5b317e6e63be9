"""Goals from selections: what the target piece should now output for which keys.

A copy takes a region's values (`Copied`); a paste puts them at another region, and the goal (`Goal`) is:
the pasted image's keys (cropped to the pasted box when tight) should produce the pasted values; an erase
asks the region's keys to produce what the layer gives with the context's top units zeroed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from rewrite.core.pieces import LayerPieces
from utils.geometry import centered_location, crop_clip_to_bounds, paste_clip_at_center, positive_bounding_box
from utils.stylegan2 import DataBag

__all__ = ['Copied', 'Goal', 'Goals']


@dataclass
class Copied:
    """A copied region: its values [1, O, h, w] in the region's box, its mask [h, w] there, the full value bag
    and the box (top, left, bottom, right) at the value resolution."""
    values: torch.Tensor
    area: torch.Tensor
    output: DataBag
    box: tuple[int, int, int, int]


@dataclass
class Goal:
    """A goal: the key bag (fmap [1, I, h, w], the layer's noise cropped alike) should give val [1, O, h', w'];
    full: the whole pasted value map and box: where it was pasted (a paste's; None for an erase)."""
    key: DataBag
    val: torch.Tensor
    full: torch.Tensor | None = None
    box: tuple[int, int, int, int] | None = None


class Goals:
    """Goals at `pieces`' layer. tight_paste: crop a goal to the pasted box; alpha_area: paste through the
    copied region's mask (else its whole box)."""

    def __init__(self, pieces: LayerPieces, tight_paste: bool, alpha_area: bool):
        self.pieces, self.tight_paste, self.alpha_area = pieces, tight_paste, alpha_area

    def _crop_bag(self, bag: DataBag, fmap: torch.Tensor, value_box) -> DataBag:
        """A goal-input bag with keys `fmap`, this layer's noise map cropped to value_box."""
        fields = {k: v.detach() if torch.is_tensor(v) else v for k, v in bag.items() if k != 'output'}
        idx = self.pieces.site.noise_index
        if idx is not None:
            noise = fields['noise'] = list(bag.noise)
            if value_box is not None and torch.is_tensor(noise[idx]):
                t, l, b, r = value_box
                noise[idx] = noise[idx][:, :, t:b, l:r]
        return DataBag(fields).updated(fmap=fmap.detach())

    def copied(self, imgnum: int, mask) -> Copied:
        """The values of image `imgnum` in the region `mask`."""
        p = self.pieces
        area = p.area(mask, p.v_shape[2], 'object')
        with torch.no_grad():
            v_output = p.target_model(p.context_model(p.get_z(imgnum)))
        t, l, b, r = positive_bounding_box(area)
        return Copied(v_output.fmap[:, :, t:b, l:r], area[t:b, l:r], v_output, (t, l, b, r))

    def pasted(self, imgnum: int, mask, obj_acts: torch.Tensor, obj_area: torch.Tensor) -> Goal:
        """Copied values obj_acts [1, O, h, w] (mask obj_area [h, w]) pasted at the centre of region `mask`."""
        p = self.pieces
        area = p.area(mask, p.v_shape[2], 'paste')
        with torch.no_grad():
            source = p.context_model(p.get_z(imgnum))
            unchanged = p.target_model(source).fmap
        full, bounds = paste_clip_at_center(unchanged, obj_acts, centered_location(area),
                                            obj_area if self.alpha_area else None)
        if not self.tight_paste:
            return Goal(self._crop_bag(source, source.fmap, None), full, full, bounds)
        keys, vals, _, value_box = crop_clip_to_bounds(source.fmap, full, bounds)
        return Goal(self._crop_bag(source, keys, value_box), vals, full, bounds)

    def erased(self, imgnum: int, mask, units: Callable[[], torch.Tensor]) -> Goal:
        """The region's keys should produce what the layer gives with the key units `units()` zeroed (asked
        for once the mask is checked; the rewriter's: the context's top normdissect units)."""
        p = self.pieces
        area = p.area(mask, p.v_shape[2], 'paste')
        units = units()
        with torch.no_grad():
            source = p.context_model(p.get_z(imgnum))
            erased_keys = source.fmap.clone()
            erased_keys[:, units] = 0.0
            erased = p.target_model(source.updated(fmap=erased_keys)).fmap
        if not self.tight_paste:
            return Goal(self._crop_bag(source, source.fmap, None), erased)
        keys, vals, _, value_box = crop_clip_to_bounds(source.fmap, erased, positive_bounding_box(area))
        return Goal(self._crop_bag(source, keys, value_box), vals)
