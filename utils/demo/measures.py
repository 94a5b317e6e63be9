"""Measures of the demo world, on segmenter label maps (64x64 px, each tower top voted to a single kind:
`utils.demo.segmenter.vote_tops`) and images in [-1, 1]; the demo-world metrics (metrics/) and tests use them.

Definitions:

- present: a class covers at least MIN_PIXELS pixels of a label map (as `utils.demo.presence`).
- dilate(mask, r) (utils.masks): square (Chebyshev) dilation by r pixels: a pixel joins when any pixel within r rows
  and r columns of it is in the mask.
- tower(labels): the tower tops (dome, spire and flattop pixels) plus the tower body column below them:
  in every column, going down from a top pixel, every following pixel labelled as a top or as building,
  window or door, up to the first pixel of another class (sky, ground, tree, watermark).
- edit region of a replacement (e.g. dome -> spire): dilate(tower(before) | tower(after), r); of an
  erase: dilate(class(before) | class(after), r).
- replaced (per sample that had the source class before): at least MIN_PIXELS pixels that are the
  target class after the edit, were not the target class before, and lie within dilate(source(before), r).
- effectiveness: replaced samples / samples that had the source class.
- collateral (of a replacement, e.g. dome -> spire): among samples with another tower top kind (flat top)
  and no source class before, the share where that kind's region now shows the target class; a specific
  edit keeps it near 0.
- mean absolute change outside: the mean of |after - before| over the three channels of every pixel
  outside the edit region, pooled over all samples, images in [-1, 1].
- feature change outside: the edited image with the unedited pixels put back inside the edit region
  (so only the outside differs), its segmenter features' L2 distance to the unedited image's,
  relative to the latter's norm; the mean over samples.
- label change outside: the share of pixels outside the edit region whose segmenter label changed.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from scipy.linalg import LinAlgWarning

from utils.demo.frechet import frechet_distance
from utils.demo.scenes import CLASSES
from utils.demo.segmenter import Segmenter
from utils.masks import dilate

MIN_PIXELS = 4                      # as utils.demo.presence
TOPS = ('dome', 'spire', 'flattop')
TOWER_BODY = ('building', 'window', 'door')
REGION_RADIUS = 3


@dataclass
class Samples:
    """Images [N, 3, H, W] in [-1, 1] and their segmenter labels [N, H, W] (int64)."""

    images: torch.Tensor
    labels: torch.Tensor


def segmenter_features(segmenter: Segmenter, images: torch.Tensor, batch: int = 64) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([segmenter.features(chunk) for chunk in images.split(batch)])



# ---------------------------------------------------------------------------------------------------
# regions
# ---------------------------------------------------------------------------------------------------

def class_ids(names: Iterable[str]) -> list[int]:
    return [CLASSES.index(n) for n in names]


def class_mask(labels: torch.Tensor, names: Iterable[str]) -> torch.Tensor:
    """bool, same shape as labels: pixels labelled as any of `names`."""
    return torch.isin(labels, torch.tensor(class_ids(names), device=labels.device))


def tower(labels: torch.Tensor) -> torch.Tensor:
    """Tower tops plus the body column below them (see the module docstring); bool like labels."""
    tops = class_mask(labels, TOPS)
    body = class_mask(labels, TOPS + TOWER_BODY)
    rows, carry = [], torch.zeros_like(tops[..., 0, :])
    for y in range(labels.shape[-2]):
        carry = tops[..., y, :] | (carry & body[..., y, :])
        rows.append(carry)
    return torch.stack(rows, dim=-2)


# ---------------------------------------------------------------------------------------------------
# measures
# ---------------------------------------------------------------------------------------------------

def presence_rates(labels: torch.Tensor, names: Sequence[str]) -> dict[str, float]:
    """Share of label maps in which each class is present (>= MIN_PIXELS pixels)."""
    return {n: float(present(labels, (n,)).float().mean()) for n in names}


def present(labels: torch.Tensor, names: Iterable[str]) -> torch.Tensor:
    """bool [N]: any of `names` covers at least MIN_PIXELS pixels of each map."""
    return class_mask(labels, names).flatten(1).sum(1) >= MIN_PIXELS


def replaced(before: torch.Tensor, after: torch.Tensor, src: Sequence[str], dst: str,
             radius: int = REGION_RADIUS) -> torch.Tensor:
    """bool [N]: the target class `dst` newly appears (>= MIN_PIXELS pixels) where the source was."""
    near_src = dilate(class_mask(before, src), radius)
    new_dst = class_mask(after, (dst,)) & ~class_mask(before, (dst,))
    return (new_dst & near_src).flatten(1).sum(1) >= MIN_PIXELS


def effectiveness(before: torch.Tensor, after: torch.Tensor, src: Sequence[str], dst: str,
                  radius: int = REGION_RADIUS) -> tuple[float, int]:
    """(share of maps with the source present whose source region now shows dst, that number of maps)."""
    had = present(before, src)
    n = int(had.sum())
    hits = replaced(before, after, src, dst, radius) & had
    return (float(hits.sum()) / n if n else float('nan')), n


def mean_abs_change_outside(before: torch.Tensor, after: torch.Tensor, region: torch.Tensor) -> float:
    """Mean |after - before| over the channels of every pixel outside `region` (bool [N, H, W])."""
    outside = (~region).unsqueeze(1).float()
    count = outside.sum() * before.shape[1]
    return float(((after - before).abs() * outside).sum() / count) if count else float('nan')


def label_change_outside(before: torch.Tensor, after: torch.Tensor, region: torch.Tensor) -> float:
    outside = ~region
    return float((before != after)[outside].float().mean()) if outside.any() else float('nan')


def feature_change_outside(segmenter: Segmenter, before: torch.Tensor, after: torch.Tensor,
                           region: torch.Tensor) -> float:
    """Mean relative L2 change of the segmenter features when only the outside of `region` is edited."""
    outside_only = torch.where(region.unsqueeze(1), before, after)
    f0, f1 = segmenter_features(segmenter, before), segmenter_features(segmenter, outside_only)
    return float(((f1 - f0).norm(dim=1) / f0.norm(dim=1).clamp(min=1e-12)).mean())


def frechet(feats_a: torch.Tensor, feats_b: torch.Tensor) -> float:
    """Frechet distance of two feature sets; fewer samples than feature dimensions give singular
    covariances (scipy warns; the value is still defined), so that warning is silenced."""
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', LinAlgWarning)
        return frechet_distance(feats_a, feats_b)


def preservation(segmenter: Segmenter, before: Samples, after: Samples, region: torch.Tensor) -> dict:
    """How much the edit changed outside `region`, and the Frechet distance to the unedited samples."""
    return {
        'mean_abs_change_outside': mean_abs_change_outside(before.images, after.images, region),
        'feature_change_outside': feature_change_outside(segmenter, before.images, after.images, region),
        'label_change_outside': label_change_outside(before.labels, after.labels, region),
        'frechet_to_unedited': frechet(segmenter_features(segmenter, after.images),
                                                segmenter_features(segmenter, before.images)),
    }


def collateral(before: torch.Tensor, after: torch.Tensor, src: Sequence[str], others: Sequence[str], dst: str,
               radius: int = REGION_RADIUS) -> tuple[float, int]:
    """(share of maps with `others` but no source present whose `others` region now shows dst, that number)."""
    bystanders = present(before, others) & ~present(before, src)
    n = int(bystanders.sum())
    hits = replaced(before, after, others, dst, radius) & bystanders
    return (float(hits.sum()) / n if n else float('nan')), n


def replacement_scores(segmenter: Segmenter, before: Samples, after: Samples, src: Sequence[str], dst: str,
                       radius: int = REGION_RADIUS, others: Sequence[str] = ()) -> dict:
    """Scores of an edit that should turn `src` into `dst` (region: the towers, before or after); with
    `others` (classes the edit should leave alone), also its collateral rate on them."""
    eff, n_src = effectiveness(before.labels, after.labels, src, dst, radius)
    region = dilate(tower(before.labels) | tower(after.labels), radius)
    scores = {'n': len(before.labels), 'n_with_source': n_src, 'effectiveness': eff}
    if others:
        scores['collateral'], scores['n_bystanders'] = collateral(before.labels, after.labels, src, others, dst,
                                                                  radius)
    return scores | preservation(segmenter, before, after, region)


def erase_scores(segmenter: Segmenter, before: Samples, after: Samples, name: str,
                 radius: int = REGION_RADIUS) -> dict:
    """Scores of an edit that should remove class `name` (region: that class, before or after)."""
    had, has = present(before.labels, (name,)), present(after.labels, (name,))
    region = dilate(class_mask(before.labels, (name,)) | class_mask(after.labels, (name,)), radius)
    n_had = int(had.sum())
    return {'n': len(before.labels), 'n_with_source': n_had, 'rate_before': float(had.float().mean()),
            'rate_after': float(has.float().mean()),
            'effectiveness': float((had & ~has).sum()) / n_had if n_had else float('nan'),
            **preservation(segmenter, before, after, region)}
