"""One [imgnum, mask] pair of an edit request (`Selection`): checked on construction, its mask decoded once
(utils/masks.py, the original tool's decoding; rewrite/formats/editfile.py documents the format).
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass, field

import numpy as np
import torch

from utils.geometry import positive_bounding_box
from utils.masks import FieldError as EditFileError
from utils.masks import (  # the mask codec, re-exported as part of this module's API
    describe_value,
    encode_mask,
    open_png,
    red_channel,
    resize_red,
)

__all__ = ['bounding_box', 'check_imgnum', 'parse_pair', 'Selection', 'selection_from_mask']


def bounding_box(mask: torch.Tensor | np.ndarray) -> tuple[int, int, int, int]:
    """(top, left, bottom, right), bottom/right exclusive, of the pixels > 0 of a [H, W] mask;
    (0, 0, 0, 0) when there are none (as the original's positive_bounding_box)."""
    return positive_bounding_box(torch.as_tensor(np.asarray(mask)))


def check_imgnum(imgnum: object) -> int:
    if isinstance(imgnum, bool) or not isinstance(imgnum, numbers.Integral):
        raise EditFileError('imgnum', f'must be a non-negative int, got {describe_value(imgnum)}')
    if imgnum < 0:
        raise EditFileError('imgnum', f'must be a non-negative int, got {imgnum}')
    return int(imgnum)


@dataclass(frozen=True)
class Selection:
    """One [imgnum, mask] pair: image `imgnum` of the z-sample and a painted mask (a PNG data URL).

    Constructing one validates it (EditFileError with field 'imgnum' or 'mask'); the full-resolution
    red channel is decoded once and kept.
    """

    imgnum: int
    mask_url: str = field(repr=False)
    _red: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        object.__setattr__(self, 'imgnum', check_imgnum(self.imgnum))
        red = red_channel(open_png(self.mask_url))
        if not red.any():
            raise EditFileError('mask', 'nothing is painted (the mask is empty)')
        object.__setattr__(self, '_red', red)

    @property
    def size(self) -> int:
        """Side of the full-resolution mask image, in pixels."""
        return self._red.shape[0]

    def mask_at(self, resolution: int) -> torch.Tensor:
        """[res, res] float32 in [0, 1], as the original's from_url(mask, target='pt', size=(res, res))[0]."""
        return resize_red(self._red, resolution)

    def bbox_at(self, resolution: int) -> tuple[int, int, int, int]:
        """(top, left, bottom, right) of mask_at(resolution) > 0, bottom/right exclusive; (0, 0, 0, 0) if none."""
        return bounding_box(self.mask_at(resolution))

    def to_json(self) -> list:
        """[imgnum, mask_url], as in the file."""
        return [self.imgnum, self.mask_url]


def selection_from_mask(imgnum: int, mask: np.ndarray | torch.Tensor, size: int | None = None) -> Selection:
    """A Selection of image `imgnum` painted with the [N, N] `mask` in [0, 1] (resized to `size` if given)."""
    return Selection(imgnum, encode_mask(mask, size))


def parse_pair(value: object, where: str) -> Selection:
    if not isinstance(value, (list, tuple)):
        raise EditFileError(where, f'must be an [imgnum, mask] pair, got {describe_value(value)}')
    if len(value) != 2:
        raise EditFileError(where, f'must be an [imgnum, mask] pair, got a {type(value).__name__} of {len(value)}')
    try:
        return Selection(value[0], value[1])
    except EditFileError as err:
        raise err.within(where) from None
