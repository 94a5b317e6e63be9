"""The demo 'glow' world's rule (lit windows cast a glow on the ground below the building), as the
rule-change procedure of ``rewrite.analysis.rulechange`` needs it: labels of generated images by the glow
segmenter, the cause's and the effect's masks, the rule's rates, the dissection of the cause at an
early layer, the intervention that adds (or removes) it, and the flip score of a changed model.

    rule = GlowRule(model, load_segmenter(GLOW_SEGMENTER))
    found = rule.dissect(z)                  # units ranked by IoU with lit windows; the cause's direction
    cause = rule.cause(labels)               # (layer, edit_output): add the cause inside each building
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from rewrite.analysis.rulechange import (
    Edit,
    RuleChangeProblem,
    build_problem,
    cause_direction,
    direction_intervention,
    render,
    unit_iou_ranking,
)
from utils.demo.scenes import GLOW_DEPTH, RULE_CLASS_ID, UNIT
from utils.demo.segmenter import DEFAULT_WEIGHTS
from utils.nethook import Trace

__all__ = ['area', 'BODY', 'body_mask', 'Dissection', 'effect_region', 'flip_rate', 'GLOW_MODEL',
           'GLOW_SEGMENTER', 'GlowRule', 'MIN_PIXELS', 'present', 'RuleRates', 'WEIGHTS']

WEIGHTS = DEFAULT_WEIGHTS.parent                  # the demo world's weights folder (utils/demo/weights)
GLOW_MODEL = WEIGHTS / 'glowchurch64.pt'
GLOW_SEGMENTER = WEIGHTS / 'segmenter_glow.pt'
MIN_PIXELS = 4                                  # a class is present with at least this many pixels
BODY = ('building', 'window', 'lit_window', 'door')


def present(labels: torch.Tensor, name: str, min_pixels: int = MIN_PIXELS) -> torch.Tensor:
    """bool [N]: class ``name`` covers at least ``min_pixels`` pixels of each label map [N, H, W]."""
    return area(labels, name) >= min_pixels


def area(labels: torch.Tensor, name: str) -> torch.Tensor:
    """int64 [N]: the pixels of class ``name`` in each label map [N, H, W]."""
    return (labels == RULE_CLASS_ID[name]).flatten(1).sum(1)


def body_mask(labels: torch.Tensor) -> torch.Tensor:
    """bool [N, H, W]: the building's body (walls, windows, door) where the cause is drawn."""
    return torch.isin(labels, torch.tensor([RULE_CLASS_ID[n] for n in BODY]))


def effect_region(labels: torch.Tensor) -> torch.Tensor:
    """bool [N, H, W]: where the rule puts the glow, the GLOW_DEPTH rows of ground below the building's
    bottom edge (found from the labels: the lowest row with 3 or more body pixels) across the columns
    the body covers in its 3 bottom rows; empty where no building is drawn."""
    n, h, w = labels.shape
    body = body_mask(labels)
    depth = round(GLOW_DEPTH * h / UNIT)
    region = torch.zeros_like(body)
    for i in range(n):
        rows = torch.nonzero(body[i].sum(1) >= 3).flatten()
        if len(rows) == 0:
            continue
        y1 = int(rows.max()) + 1
        cols = torch.nonzero(body[i, max(0, y1 - 3):y1].any(0)).flatten()
        region[i, y1:y1 + depth, int(cols.min()):int(cols.max()) + 1] = True
    return region


@dataclass
class RuleRates:
    """The rule's rates over N label maps: cause present, effect present when it is and when it is not,
    effect placed as the rule says (most of its pixels in ``effect_region``) when the cause is present.
    ``cause_pixels``: the area from which the cause counts as present (MIN_PIXELS by default; the data's
    smallest lit-window area asks for windows drawn as large as the world draws them)."""

    n: int
    cause: float
    effect_when_cause: float
    effect_without_cause: float
    placed_when_cause: float

    @classmethod
    def of(cls, labels: torch.Tensor, cause_pixels: int = MIN_PIXELS) -> RuleRates:
        lit, glow = present(labels, 'lit_window', cause_pixels), present(labels, 'glow')
        g = labels == RULE_CLASS_ID['glow']
        inside = (g & effect_region(labels)).flatten(1).sum(1).float()
        placed = glow & (inside >= 0.5 * g.flatten(1).sum(1).float())

        def share(x, among):
            return float(x[among].float().mean()) if among.any() else float('nan')

        return cls(len(labels), float(lit.float().mean()), share(glow, lit), share(glow, ~lit), share(placed, lit))


@dataclass
class Dissection:
    """The cause at one layer: units ranked by IoU with the cause's masks, and its mean direction [C]."""

    layer: str
    units: torch.Tensor
    iou: torch.Tensor
    direction: torch.Tensor


class GlowRule:
    """The glow rule on one generator: labelling, dissection of the cause, interventions, flip score.

    model: a SeqStyleGAN2 of the glow world; segmenter: the glow segmenter (12 classes);
    cause_layer: the early layer where the cause is dissected and added; strength: how far the
    features move along the cause's direction inside the building (negative: remove the cause).
    """

    def __init__(self, model: torch.nn.Module, segmenter: torch.nn.Module, cause_layer: str = 'layer3',
                 strength: float = 8.0) -> None:
        self.model, self.segmenter = model, segmenter
        self.cause_layer, self.strength = cause_layer, strength
        self.dissection: Dissection | None = None

    def images(self, z: torch.Tensor, cause: tuple[str, Edit] | None = None, batch: int = 32) -> torch.Tensor:
        """Clamped images [N, 3, H, W] of z, with ``cause`` applied (in one batch then: its masks are
        per sample)."""
        with torch.no_grad():
            if cause is not None:
                return render(self.model, z, cause).clamp(-1, 1)
            return torch.cat([render(self.model, zz).clamp(-1, 1) for zz in z.split(batch)])

    def labels(self, images: torch.Tensor) -> torch.Tensor:
        """Segmenter labels int64 [N, H, W] of images in [-1, 1]."""
        return self.segmenter.segment(images)

    def dissect(self, z: torch.Tensor, quantile: float = 0.98) -> Dissection:
        """Rank the cause layer's units by IoU with the lit-window masks of z's images, and take the cause's
        direction (mean feature with lit windows minus without). Kept as ``self.dissection``."""
        with torch.no_grad(), Trace(self.model, self.cause_layer) as tr:
            images = self.model(z).clamp(-1, 1)
        acts = tr.output['fmap']
        labels = self.labels(images)
        units, iou = unit_iou_ranking(acts, labels == RULE_CLASS_ID['lit_window'], quantile)
        self.dissection = Dissection(self.cause_layer, units, iou,
                                     cause_direction(acts, present(labels, 'lit_window')))
        return self.dissection

    def cause(self, labels: torch.Tensor, strength: float | None = None, mask: torch.Tensor | None = None
              ) -> tuple[str, Edit]:
        """(layer, edit_output) adding the cause inside each sample's building body (or ``mask``, float
        [N, 1, H, W] / [H, W]) at ``strength`` (default ``self.strength``; negative removes it)."""
        if self.dissection is None:
            raise RuntimeError('dissect() first: the cause direction comes from the dissection')
        if mask is None:
            mask = body_mask(labels).float().unsqueeze(1)
        s = self.strength if strength is None else strength
        return self.cause_layer, direction_intervention(self.dissection.direction, mask, s)

    def candidates(self, z: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The first n of z drawn with a building, without lit windows and without glow (where the rule
        holds and the cause can be added), and their labels."""
        labels = self.labels(self.images(z))
        keep = ~present(labels, 'lit_window') & ~present(labels, 'glow') & \
            (effect_region(labels).flatten(1).sum(1) > 0)
        idx = torch.nonzero(keep).flatten()[:n]
        return z[idx], labels[idx]

    def problem(self, z: torch.Tensor, labels: torch.Tensor, keep_z: torch.Tensor | None = None
                ) -> RuleChangeProblem:
        """The rule-change problem for z (labels: theirs without intervention): the cause added in each
        building; the region: the rule's region with and without the cause, plus any glow drawn with the
        cause (dilated by one pixel); the goal there: the image without the cause (no glow)."""
        cause = self.cause(labels)
        ref_labels = self.labels(self.images(z, cause))
        glow = (ref_labels == RULE_CLASS_ID['glow']).float().unsqueeze(1)
        region = effect_region(labels) | effect_region(ref_labels) | (F.max_pool2d(glow, 3, 1, 1)[:, 0] > 0)
        return build_problem(self.model, z, cause, region, keep_z)

    def flip(self, before: torch.Tensor, after: torch.Tensor) -> float:
        """Share of the images that show the effect ``before`` (original model, cause added) which, changed,
        show the cause but not the effect (the rule reversed); nan when none showed the effect."""
        return flip_rate(self.labels(before), self.labels(after))


def flip_rate(before: torch.Tensor, after: torch.Tensor) -> float:
    """From label maps [N, H, W]: among maps with glow before, the share with lit windows and no glow after."""
    had = present(before, 'glow')
    flipped = had & present(after, 'lit_window') & ~present(after, 'glow')
    return float(flipped.sum() / had.sum()) if had.any() else float('nan')
