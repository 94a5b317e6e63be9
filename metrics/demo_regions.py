"""How the bundled demo edits choose their regions from the demo segmenter's labels of the z-sample (for
metrics/make_demo_edits.py): the clearest instance of each class, the paste standing on its base, context and
preserve regions, painted as the original UI paints (256 px masks), and the erase's pixel scores.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage

from rewrite.formats import editfile
from utils.demo import Segmenter
from utils.demo.measures import MIN_PIXELS, REGION_RADIUS, Samples, class_mask, dilate, present, preservation
from utils.demo.scenes import CLASSES

MASK_SIZE = 256                 # the original UI's canvas


@dataclass(frozen=True)
class EditPlan:
    """An edit to make: copy `object` (None: erase), paste onto / erase `paste`; `dst` should appear.

    keys: how many context regions a user would collect (e.g. with search by context). Tower tops vary
    in colour, size and shape, so a rule over all of them needs many examples; the watermark is the
    same bar in every image, and more examples of it only widen the change."""

    name: str
    object: tuple[str, ...] | None
    paste: tuple[str, ...]
    dst: str | None
    keys: int
    into: str | None = None        # an erase scored per pixel: the class its pixels should become


@dataclass(frozen=True)
class PreservePlan:
    """A bundled edit with `preserve` regions, made by the same procedure: `plan`'s object,
    paste and context regions, plus `count` regions whose outputs must stay, chosen from the segmenter's
    labels of z-sample images that the plan's regions do not use and that show none of `absent`:
    per image its largest clear region of `keep` (as the context regions are chosen), or with
    clear=False all its `keep` pixels away from the plan's paste class (dilated by one pixel)."""

    name: str
    plan: EditPlan
    keep: tuple[str, ...]
    absent: tuple[str, ...]
    clear: bool = True
    count: int = 16


@dataclass(frozen=True)
class Region:
    """One connected region of image `imgnum` of the z-sample: bool [H, W]."""

    imgnum: int
    mask: np.ndarray

    @property
    def area(self) -> int:
        return int(self.mask.sum())


def is_clear(rows: slice, cols: slice, shape: tuple[int, int]) -> bool:
    """A component's box is one object: at most half the image each way, not touching the border."""
    h, w = shape
    small = (rows.stop - rows.start) * 2 <= h and (cols.stop - cols.start) * 2 <= w
    inside = rows.start > 0 and cols.start > 0 and rows.stop < h and cols.stop < w
    return small and inside


def largest_component(mask: np.ndarray) -> np.ndarray | None:
    """The largest clear 4-connected component (see is_clear) of a bool [H, W] mask with at least
    MIN_PIXELS pixels (ties: the first in scan order); None if there is none."""
    comps, _ = ndimage.label(mask)
    best = None
    for k, (rows, cols) in enumerate(ndimage.find_objects(comps), start=1):
        comp = comps == k
        if is_clear(rows, cols, mask.shape) and comp.sum() >= MIN_PIXELS and (best is None or comp.sum() > best.sum()):
            best = comp
    return best


def clearest_regions(labels: torch.Tensor, names: Sequence[str], exclude: Sequence[int] = ()) -> list[Region]:
    """Per image (except `exclude`), its largest single region of `names`; largest first, then by imgnum."""
    masks = class_mask(labels, names).numpy()
    found = []
    for imgnum, mask in enumerate(masks):
        comp = None if imgnum in exclude else largest_component(mask)
        if comp is not None:
            found.append(Region(imgnum, comp))
    return sorted(found, key=lambda r: (-r.area, r.imgnum))


def stand_on_base(paste: np.ndarray, obj: np.ndarray) -> np.ndarray:
    """`paste` plus, when `obj` is taller, the rows above it (within its columns) up to obj's height."""
    rows, cols = np.nonzero(paste)
    obj_rows = np.nonzero(obj.any(axis=1))[0]
    height = obj_rows.max() - obj_rows.min() + 1
    bottom = rows.max() + 1
    out = paste.copy()
    if height > bottom - rows.min():
        out[max(0, bottom - height):bottom, cols.min():cols.max() + 1] = True
    return out


def painted(mask: np.ndarray, dilate_px: int, size: int = MASK_SIZE) -> str:
    """A region dilated by `dilate_px` pixels, scaled (nearest) to size x size, as a mask data URL."""
    grown = dilate(torch.from_numpy(mask), dilate_px).numpy()
    scale = size // mask.shape[0]
    return editfile.encode_mask(np.kron(grown, np.ones((scale, scale))).astype(np.float32))


def choose_regions(plan: EditPlan, labels: torch.Tensor, n_keys: int | None = None) -> dict:
    """{'object': Region | None, 'paste': Region, 'key': [Region]} for `plan` from the z-sample's labels
    (n_keys context regions; default: the plan's)."""
    obj = None
    if plan.object is not None:
        found = clearest_regions(labels, plan.object)
        if not found:
            raise RuntimeError(f'{plan.name}: no image of the z-sample shows a clear {"/".join(plan.object)} '
                               'by the segmenter (the model may need more training)')
        obj = found[0]
    pastes = clearest_regions(labels, plan.paste, exclude=() if obj is None else (obj.imgnum,))
    if not pastes:
        raise RuntimeError(f'{plan.name}: no image of the z-sample shows a clear {"/".join(plan.paste)} '
                           'by the segmenter (the model may need more training)')
    return {'object': obj, 'paste': pastes[0], 'key': pastes[:n_keys or plan.keys]}


def build_request(regions: dict, dilate_px: int) -> dict:
    """The edit request (the shared JSON format) for chosen regions."""
    obj, paste = regions['object'], regions['paste']
    request = {}
    if obj is not None:
        request['object'] = [obj.imgnum, painted(obj.mask, dilate_px)]
    paste_mask = paste.mask if obj is None else stand_on_base(paste.mask, obj.mask)
    request['paste'] = [paste.imgnum, painted(paste_mask, dilate_px)]
    request['key'] = [[r.imgnum, painted(r.mask, dilate_px)] for r in regions['key']]
    return request


def preserve_regions(pplan: PreservePlan, labels: torch.Tensor, regions: dict) -> list[Region]:
    """The preserve regions of `pplan` (see PreservePlan), largest first (ties: by imgnum)."""
    used = {r.imgnum for r in regions['key']} | {regions['paste'].imgnum}
    used |= set() if regions['object'] is None else {regions['object'].imgnum}
    shows = present(labels, pplan.absent) if pplan.absent else torch.zeros(len(labels), dtype=torch.bool)
    exclude = used | set(np.nonzero(shows.numpy())[0].tolist())
    if pplan.clear:
        return clearest_regions(labels, pplan.keep, exclude=sorted(exclude))[:pplan.count]
    away = class_mask(labels, pplan.keep) & ~dilate(class_mask(labels, pplan.plan.paste), 1)
    found = [Region(i, away[i].numpy()) for i in range(len(labels))
             if i not in exclude and int(away[i].sum()) >= MIN_PIXELS]
    return sorted(found, key=lambda r: (-r.area, r.imgnum))[:pplan.count]


def pixel_erase_scores(segmenter: Segmenter, before: Samples, after: Samples, name: str, into: str,
                       radius: int = REGION_RADIUS) -> dict:
    """An erase scored per pixel: the share of `name` pixels (before) labelled `into` after, the
    `name` pixels after over before, and the change outside `name` (before or after, dilated)."""
    src, now = class_mask(before.labels, (name,)), class_mask(after.labels, (name,))
    n = int(src.sum())
    turned = int(((after.labels == CLASSES.index(into)) & src).sum())
    region = dilate(src | now, radius)
    return {'n': len(before.labels), 'pixels_with_source': n,
            'effectiveness': turned / n if n else float('nan'),
            'source_pixels_after_over_before': int(now.sum()) / n if n else float('nan'),
            **preservation(segmenter, before, after, region)}
