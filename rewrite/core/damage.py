"""Damage: what an applied change did to images it should have left alone, measured after every change.

A rank-r change W' = W + Lambda D answers only through D k (the keys' components along the context
directions D [r, I]), so on images the rule should not touch the change should be small. After each
change the rewriter renders a handful of held-out samples (z's drawn apart from the z-sample) before and
after it and measures

- heldout: the mean absolute pixel change (images in [-1, 1], averaged over RGB) of those samples
  *outside where the rule acts*: away from the pixels whose key answers to the context at least
  ACTS_AT times as strongly as the median pixel of the request's own context regions (||D k||, the
  layer's key resolution, grown by one key pixel and upsampled to the image);
- paste: the same change inside the request's paste region of its paste image (what the edit was asked
  to change; None for a request without one), so the two compare.

A change whose held-out figure exceeds DAMAGE_THRESHOLD is reported as damage (a warning from the
rewriter, `rewrite: warning: ...` from the command line, amber in the widget). The threshold and how it was
chosen: metrics/README.md (`python -m metrics.damage_table`).

    probe = DamageProbe(gw.pieces)                      # the rewriter keeps one as gw.damage_probe
    keys, before = probe.before(paste_imgnum)           # held-out samples and the paste image, [n + 1, ...]
    ... change the rewritten conv's weights ...
    after = probe.after(keys, paste_imgnum)             # rendered, and kept: the next change starts from them
    damage = probe.measure(before, after, probe.acting(keys, context, ...), paste_mask)

Rendering the samples is the probe's whole cost (two passes of n + 1 images from the rewrite site on, about 20 s
at 256 px on a 2-core CPU), so the renders of the last RENDERS_KEPT model states are kept, keyed by the SHA-256 of
every weight and buffer of the generator (`weights_fingerprint`, computed when read): a change that starts where
the last one ended (or where an undo returned to) renders only once (not at all when it ends at kept weights),
and renders of any other weights are never used.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from rewrite.core.statistics import weights_fingerprint
from utils.generators.site import DataBag
from utils.zdataset import z_sample_for_model

__all__ = ['ACTS_AT', 'DAMAGE_SAMPLES', 'DAMAGE_SEED', 'DAMAGE_THRESHOLD', 'Damage', 'DamageProbe', 'RENDERS_KEPT']

DAMAGE_SAMPLES = 8          # held-out samples rendered before and after each change
DAMAGE_SEED = 23            # their z's: apart from the z-sample (seed 1), the demo metrics' (2, 3), the advisor's (17)
ACTS_AT = 0.5               # the rule acts where ||D k|| >= ACTS_AT x the context regions' median
DAMAGE_THRESHOLD = 0.05     # held-out change above this is damage (metrics/README.md: how it was chosen)
RENDERS_KEPT = 4            # model states whose held-out renders are kept (the last changes, for undo / redo)


@dataclass(frozen=True)
class Damage:
    """A change's effect on held-out samples (`heldout`, outside where the rule acts) and inside its own paste
    region (`paste`, None without one), mean absolute pixel changes of images in [-1, 1]; `samples`: how many
    held-out samples; `acting`: the share of their pixels where the rule acts (left out of `heldout`)."""
    heldout: float
    paste: float | None
    samples: int
    acting: float
    threshold: float = DAMAGE_THRESHOLD

    @property
    def ratio(self) -> float | None:
        """heldout / paste: the collateral per unit of the asked-for change (None without a paste region)."""
        if self.paste is None or not self.paste > 0:
            return None
        return self.heldout / self.paste

    @property
    def exceeds(self) -> bool:
        return bool(self.heldout > self.threshold)

    def summary(self) -> str:
        """'held-out change 0.012 (8 samples, outside where the rule acts; inside the paste region 0.21)'."""
        inside = '' if self.paste is None else f'; inside the paste region {self.paste:.3f}'
        return f'held-out change {self.heldout:.3f} ({self.samples} samples, outside where the rule acts{inside})'

    def warning(self, kind: str) -> str:
        """The warning for a change that exceeds the threshold ('' when it does not)."""
        if not self.exceeds:
            return ''
        return (f'the {kind} changed held-out samples by {self.heldout:.3f} on average outside where its rule acts '
                f'(threshold {self.threshold:g}; {self.summary()}): it damages images it should leave alone; '
                'undo it, or try the layer it was made for, another rank or fewer regions')


class DamageProbe:
    """Held-out samples of a rewriter's generator (`pieces`, rewrite.core.pieces.LayerPieces). Before a change,
    before() computes their keys at the rewrite site (with the request's paste image) and renders them; after
    it, render(keys) renders the same keys again (a change of the rewritten conv leaves everything before it
    as it was)."""

    def __init__(self, pieces, samples: int = DAMAGE_SAMPLES, seed: int = DAMAGE_SEED):
        self.pieces, self.samples, self.seed = pieces, int(samples), int(seed)
        self.renders: OrderedDict[tuple[str, int | None], tuple[DataBag, torch.Tensor]] = OrderedDict()
        self.rendered = 0                       # render passes made (each renders n (+1) images)

    def state(self) -> str:
        """What the renders depend on: the SHA-256 of the generator's weights and buffers as they are now."""
        return weights_fingerprint(self.pieces.model)

    def _keep(self, key: tuple[str, int | None], keys: DataBag, images: torch.Tensor) -> None:
        """Keeps the key bag and images [n (+1), 3, H, W] under `key` (the weights' state, the paste image); the
        oldest of more than RENDERS_KEPT is dropped."""
        self.renders[key] = (keys, images)
        while len(self.renders) > RENDERS_KEPT:
            self.renders.popitem(last=False)

    def after(self, keys: DataBag, paste_imgnum: int | None = None) -> torch.Tensor:
        """The images [n (+1), 3, H, W] of the model as it is now from before()'s key bag (the same paste image):
        the kept renders of these weights, else rendered and kept."""
        key = (self.state(), paste_imgnum)
        if key in self.renders:
            return self.renders[key][1]
        images = self.render(keys)
        self._keep(key, keys, images)
        return images

    def zs(self) -> torch.Tensor:
        """The held-out z's [n, D]."""
        return z_sample_for_model(self.pieces.model, self.samples, seed=self.seed).to(self.pieces.device)

    def before(self, paste_imgnum: int | None = None) -> tuple[DataBag, torch.Tensor]:
        """(the key bag of the held-out samples, then of the paste image when given: fmap [n (+1), I, h, w];
        the current model's images of them [n (+1), 3, H, W])."""
        key = (self.state(), paste_imgnum)
        if key in self.renders:
            return self.renders[key]
        z = self.zs()
        if paste_imgnum is not None:
            z = torch.cat([z, self.pieces.get_z(paste_imgnum)])
        with torch.no_grad():
            keys = self.pieces.context_model(z)
        images = self.render(keys)
        self._keep(key, keys, images)
        return keys, images

    def render(self, keys: DataBag) -> torch.Tensor:
        """Images [N, 3, H, W] of the current model from a key bag at the rewrite site."""
        self.rendered += 1
        with torch.no_grad():
            return self.pieces.rendering_model(self.pieces.target_model(keys)).float()

    def acting(self, keys: DataBag, context: torch.Tensor, context_keys: torch.Tensor,
               context_weights: torch.Tensor, size: int) -> torch.Tensor:
        """Where the rule acts on the held-out samples (their `keys`, as before() gives them), bool [n, size,
        size]: ||D k|| (context D [r, I]) at
        least ACTS_AT x its median over the context regions' pixels (keys [N, I], weights [N] > 0), grown by
        one key pixel, upsampled (nearest) to the image."""
        d = context.to(torch.float32)
        fmap = keys.fmap[:self.samples].to(torch.float32)                          # [n, I, h, w]
        response = torch.einsum('ri,nihw->nrhw', d.to(fmap.device), fmap).norm(dim=1)   # [n, h, w]
        own = (context_keys.to(torch.float32) @ d.t().to(context_keys.device)).norm(dim=1)[context_weights > 0]
        level = ACTS_AT * float(own.median()) if len(own) else 0.0
        acts = (response >= level).float()[:, None]
        acts = F.max_pool2d(acts, 3, stride=1, padding=1)
        return F.interpolate(acts, size=(size, size), mode='nearest')[:, 0].bool()

    def measure(self, before: torch.Tensor, after: torch.Tensor, acting: torch.Tensor,
                paste_mask: torch.Tensor | None = None) -> Damage:
        """Damage from images before / after [n (+1), 3, H, W] (the paste image last when paste_mask [H, W]
        is given), `acting` [n, H, W] as acting() gives."""
        n = self.samples
        change = (after - before).abs().mean(dim=1)                                  # [n (+1), H, W]
        outside = ~acting.to(change.device)
        heldout = float(change[:n][outside].mean()) if outside.any() else 0.0
        paste = None
        if paste_mask is not None:
            weight = paste_mask.to(change)
            paste = float((change[n] * weight).sum() / weight.sum().clamp(min=1e-12))
        return Damage(heldout, paste, n, float(acting.float().mean()), threshold=DAMAGE_THRESHOLD)
