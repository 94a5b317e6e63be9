"""Boxes, centres and pasting of feature-map clips (tight crops of the rewriting goal)."""

from __future__ import annotations

import torch

__all__ = ['Box', 'centered_location', 'crop_clip_to_bounds', 'paste_clip_at_center',
           'positive_bounding_box']

Box = tuple[int, int, int, int]            # top, left, bottom, right (exclusive)


def positive_bounding_box(area: torch.Tensor) -> Box:
    """Tight box around area > 0 in a [H, W] map; (0, 0, 0, 0) when nothing is positive."""
    rows = torch.nonzero((area > 0).any(dim=1))[:, 0]
    cols = torch.nonzero((area > 0).any(dim=0))[:, 0]
    if len(rows) == 0:
        return 0, 0, 0, 0
    return int(rows.min()), int(cols.min()), int(rows.max()) + 1, int(cols.max()) + 1


def centered_location(area: torch.Tensor) -> tuple[int, int]:
    """Centre (row, col) of the bounding box of area > 0."""
    t, l, b, r = positive_bounding_box(area)
    return (t + b) // 2, (l + r) // 2


def paste_clip_at_center(source: torch.Tensor, clip: torch.Tensor, center: tuple[int, int],
                         area: torch.Tensor | None = None) -> tuple[torch.Tensor, Box]:
    """Pastes clip [B, C, h, w] into a copy of source [B, C, H, W] centred at `center`, kept inside
    the map; blended by `area` [h, w] when given. Returns the result and the pasted box."""
    target = source.clone()
    t, l = (max(0, min(full - size, c - size // 2))
            for size, c, full in zip(clip.shape[2:], center, source.shape[2:]))
    b, r = t + clip.shape[2], l + clip.shape[3]
    if area is None:
        target[:, :, t:b, l:r] = clip
    else:
        a = area.to(target)[None, None]
        target[:, :, t:b, l:r] = (1 - a) * target[:, :, t:b, l:r] + a * clip
    return target, (t, l, b, r)


def crop_clip_to_bounds(source: torch.Tensor, target: torch.Tensor, bounds: Box):
    """Crops key map `source` and value map `target` (possibly 2x the key resolution) to the
    key-resolution box covering `bounds` (given at value resolution)."""
    t, l, b, r = bounds
    vr, hr = (ts // ss for ts, ss in zip(target.shape[2:], source.shape[2:]))
    st, sl, sb, sr = t // vr, l // hr, -(-b // vr), -(-r // hr)
    tt, tl, tb, tr = st * vr, sl * hr, sb * vr, sr * hr
    return (source[:, :, st:sb, sl:sr], target[:, :, tt:tb, tl:tr],
            (st, sl, sb, sr), (tt, tl, tb, tr))
