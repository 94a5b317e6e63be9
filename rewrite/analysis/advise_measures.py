"""The advisor's label-free measures of one applied setting (rewrite/analysis/advisor.py ranks them).

Everything a setting of the sweep is measured on is built once per sweep (`Probe.build`): held-out samples
(their own z's, drawn at the held-out truncation) and their unedited images, the request's regions as
labelled exemplar patches (`PatchGoal`), the paste image and the pasted region, the preserve regions.
`Probe.measure` applies one (layer, rank) on a rewriter and fills a Candidate's measures (fit, paste, reach,
leak, size, attain), measured from the model and the request alone, no labels:

- fit: how much of the goal loss the edit removed at the layer, (initial - final) / initial, in [0, 1].
- paste: the mean |pixel change| (images in [-1, 1], averaged over RGB) inside the pasted region of
  the goal image (the object's mask pasted where the edit pastes it; for an erase, the paste mask).
- reach: on `heldout` samples not in the z-sample, the mean |pixel change| where the rule applies:
  pixels where the context key (the request's rank-1 context direction at this layer) responds at
  least as strongly as the median pixel of the request's own context regions.
- leak: the mean |pixel change| of held-out samples away from what the edit is about: outside the
  pixels whose output patch (below) looks like the source or the object, before or after the edit, grown
  by one patch pixel; with a `preserve` field in the request (a list of [imgnum, mask] pairs), also
  `preserve_leak`, the mean |pixel change| inside those regions.
- size: the relative weight change ||W' - W|| / ||W|| of the rewritten layer.
- attain: how far the held-out targets went where the request asked, not merely how much they changed
  (reach), measured in one space downstream of every layer, so that settings at different layers compare:
  the output image's 3x3 RGB patches at PATCH_RES x PATCH_RES (`PatchGoal`), labelled by their nearest
  exemplar patch from the request's own images: 'object' (the copied object's mask), 'source' (the paste
  and context masks) and 'other' (the rest of those images). An edit: the share of the target pixels'
  patch distance to the nearest object patch that the edit closed, pooled over them,
  (sum d_before - sum d_after) / sum d_before (1: all the way, 0: no closer, negative: further away).
  An erase: how far the targets that looked like the source came to look like what should replace
  them, graded rather than thresholded: each such patch's source-likeness d_rep / (d_rep + d_source)
  (`source_likeness`; d_source: to the nearest source exemplar, d_rep: to the nearest patch of the
  surroundings, i.e. the paste image's patches in a ring around the paste mask ('surround' exemplars) and,
  in each held-out image, its own patches in a ring of SURROUND_RING patch pixels around its targets that
  do not look like the source, before the edit: `replacement_distance`), and the pooled share of it the
  erase removed, 1 - sum after / sum before (0: removes nothing, 1: the targets look like their
  surroundings, negative: more source-like).
- effect: reach * fit, kept for comparison (and for the ranking when no attainment could be measured).

Held-out samples are drawn at the held-out truncation; the edit, the paste image and preserve regions use
the model's own truncation.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from rewrite.core.pieces import all_zs
from rewrite.core.rewriter import RewriteError, SeqStyleGanRewriter
from rewrite.formats import editfile
from utils.generators import sampling_at
from utils.geometry import centered_location, paste_clip_at_center, positive_bounding_box
from utils.imgviz import to_uint8_batch
from utils.masks import dilate
from utils.zdataset import z_sample_for_model

TARGET_QUANTILE = 0.5       # held-out pixels responding >= this quantile of the context pixels are the targets
PREVIEW = 6                 # held-out samples kept per setting for pictures
PATCH_RES = 32              # attainment and leak compare output images' 3x3 RGB patches at this resolution
PATCH_EXEMPLARS = 512       # at most this many exemplar patches of each kind (object, source, other)
SURROUND_RING = 3           # an erase's replacement: patches within this many patch pixels of the targets


def pasted_region(req: editfile.EditRequest, resolution: int) -> torch.Tensor:
    """float [R, R] in [0, 1]: where the edit pastes, at image resolution `resolution`. For an edit,
    the object's mask (cropped to its box) pasted centred on the paste mask's box, as
    paste_from_selection pastes values; for an erase, the paste mask."""
    paste = req.paste.mask_at(resolution)
    if req.object is None:
        return paste
    obj = req.object.mask_at(resolution)
    t, l, b, r = positive_bounding_box(obj)
    clip = obj[t:b, l:r]
    out, _ = paste_clip_at_center(torch.zeros(1, 1, resolution, resolution), clip[None, None],
                                  centered_location(paste), clip)
    return out[0, 0]


def weighted_mean_change(change: torch.Tensor, weight: torch.Tensor) -> float:
    """sum(change * weight) / sum(weight); change and weight broadcastable; nan when the weight is 0."""
    total = float((weight.float()).expand_as(change).sum())
    return float((change * weight.float()).sum()) / total if total > 0 else math.nan


def change_map(before: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
    """|after - before| averaged over RGB: [N, H, W] from images [N, 3, H, W] in [-1, 1]."""
    return (after.clamp(-1, 1) - before.clamp(-1, 1)).abs().mean(1)


def target_maps(gw: SeqStyleGanRewriter, req: editfile.EditRequest, z: torch.Tensor, image_size: int,
                batch: int = 16, truncation: float | None = None) -> torch.Tensor:
    """bool [N, H, W] at image resolution: held-out pixels (z [N, D], sampled at `truncation`) where the
    rank-1 context direction responds at least as strongly as the TARGET_QUANTILE quantile of the context
    regions' own pixels (the z-sample's images, at the model's own truncation)."""
    pairs = [(s.imgnum, s.mask_url) for s in req.context]
    direction = gw.multi_key_from_selection(pairs, rank=1)[0]
    res = gw.k_shape[2]
    responses = [gw.key_response_maps(direction, [imgnum])[0] for imgnum, _ in pairs]
    masks = [editfile.mask_from_url(url, res).to(r.device) for (_, url), r in zip(pairs, responses)]
    own = torch.cat([r[m > 0.5] for r, m in zip(responses, masks)])
    if own.numel() == 0:            # every context mask is faint at this resolution: use its painted pixels
        own = torch.cat([r[m > 0] for r, m in zip(responses, masks)])
    level = torch.quantile(own.float().cpu(), TARGET_QUANTILE)
    maps = []
    with torch.no_grad(), sampling_at(gw.model, truncation):
        for chunk in z.split(batch):
            maps.append(gw.key_response(gw.context_model(chunk.to(gw.device)).fmap, direction).cpu() >= level)
    maps = torch.cat(maps).float()[:, None]
    return F.interpolate(maps, size=(image_size, image_size), mode='nearest')[:, 0] > 0


def render(model, z: torch.Tensor, batch: int = 16) -> torch.Tensor:
    """model(z) in batches, no gradients: [N, 3, H, W]."""
    with torch.no_grad():
        return torch.cat([model(chunk) for chunk in z.split(batch)]).detach().cpu()


def _spread(rows: torch.Tensor, most: int) -> torch.Tensor:
    """At most `most` rows of [M, D], evenly spaced (deterministic)."""
    if len(rows) <= most:
        return rows
    return rows[torch.linspace(0, len(rows) - 1, most).round().long()]


def patches(images: torch.Tensor, res: int = PATCH_RES, size: int = 3) -> torch.Tensor:
    """float [N, 3 size^2, r, r], r = min(res, H): each pixel's size x size RGB neighbourhood (edges replicated;
    channel c * size^2 + size dy + dx, F.unfold's order) of images [N, 3, H, W] clamped to [-1, 1] and
    area-averaged to r x r (the advisor's space: size 3, 27 channels)."""
    r = min(res, images.shape[-1])
    small = F.adaptive_avg_pool2d(images.clamp(-1, 1).float(), r)
    pad = size // 2
    return F.unfold(F.pad(small, (pad,) * 4, mode='replicate'), size).view(len(images), 3 * size * size, r, r)


def request_masks(req: editfile.EditRequest, imgnums: Sequence[int], res: int) -> dict[str, torch.Tensor]:
    """{kind: bool [len(imgnums), res, res]} of the request's images (imgnums, in that order): 'source' (the
    paste and context masks, less the object's), 'object' (the object's mask; an edit only), 'other' (outside
    every mask grown by one pixel)."""
    where = {i: n for n, i in enumerate(imgnums)}
    kinds = {'source': [req.paste, *req.context]} | ({} if req.object is None else {'object': [req.object]})
    masks = {}
    for kind, sels in kinds.items():
        masks[kind] = torch.zeros(len(imgnums), res, res, dtype=torch.bool)
        for s in sels:
            masks[kind][where[s.imgnum]] |= s.mask_at(res) > 0.5
    masks['other'] = ~dilate(torch.stack(list(masks.values())).any(0), 1)
    if 'object' in masks:
        masks['source'] &= ~masks['object']
    return masks


@dataclass
class PatchGoal:
    """The request's own regions as labelled output patches (see `patches`), a space downstream of every
    layer: exemplars {'source': [Ms, 27], 'object': [Mo, 27] (edits only), 'other': [Mx, 27], 'surround':
    [Mr, 27] (erases only)}, at most PATCH_EXEMPLARS each (evenly spaced)."""

    exemplars: dict[str, torch.Tensor]

    @classmethod
    def build(cls, model, z_all: torch.Tensor, req: editfile.EditRequest, batch: int = 16,
              features: Callable[[torch.Tensor], torch.Tensor] = patches) -> PatchGoal:
        """z_all: the z-sample [Z, D]; the request's images are rendered at the model's own truncation;
        features: images [N, 3, H, W] -> [N, F, r, r], the space (default `patches`; others for comparisons).
        source: the paste mask and the context masks; object: the object's mask (not source where both);
        other: the pixels of those images outside every mask grown by one pixel; surround (an erase): the
        paste image's pixels within SURROUND_RING of the paste mask, outside it grown by one pixel."""
        imgnums = sorted({s.imgnum for s in (req.paste, *req.context, *([req.object] if req.object else []))})
        feats = features(render(model, z_all[imgnums].to(next(model.parameters()).device), batch))
        res = feats.shape[-1]
        masks = request_masks(req, imgnums, res)
        if 'object' not in masks:
            paste = torch.zeros(len(imgnums), res, res, dtype=torch.bool)
            paste[imgnums.index(req.paste.imgnum)] = req.paste.mask_at(res) > 0.5
            masks['surround'] = dilate(paste, SURROUND_RING) & ~dilate(paste, 1)
        rows = feats.permute(0, 2, 3, 1)
        return cls({kind: _spread(rows[m], PATCH_EXEMPLARS) for kind, m in masks.items()})

    def distances(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """{kind: [N, r, r]}: each patch's distance to the nearest exemplar of that kind (inf without any);
        images [N, 3, H, W]."""
        return self.distances_of(patches(images))

    def distances_of(self, feats: torch.Tensor) -> dict[str, torch.Tensor]:
        """As `distances`, of features already computed (feats [N, F, r, r]: `patches`, or the space the
        exemplars were built in)."""
        n, f, r, _ = feats.shape
        flat = feats.permute(0, 2, 3, 1).reshape(-1, f)
        out = {}
        for kind, ex in self.exemplars.items():
            if not len(ex):
                out[kind] = torch.full((n, r, r), math.inf)
                continue
            out[kind] = torch.cat([torch.cdist(part, ex).min(1).values
                                   for part in flat.split(4096)]).view(n, r, r)
        return out

    def goal_kind(self) -> str:
        """The distance attainment closes: to the object (an edit) or to the replacement (an erase)."""
        return 'object' if 'object' in self.exemplars else 'replacement'

    @staticmethod
    def looks_like(dist: Mapping[str, torch.Tensor], kind: str) -> torch.Tensor:
        """bool [N, r, r]: the patches whose nearest exemplar is of `kind` (ties: the earlier kind in
        source, object, other order); dist from `distances`."""
        kinds = [k for k in ('source', 'object', 'other') if k in dist]
        return torch.stack([dist[k] for k in kinds]).argmin(0) == kinds.index(kind)

    def attainment(self, before: Mapping[str, torch.Tensor], after: Mapping[str, torch.Tensor],
                   targets: torch.Tensor) -> float:
        """targets: bool [N, r, r]. (sum d_before - sum d_after) / sum d_before of the targets' distance to
        the nearest object patch (an edit) or of their source-likeness (an erase: dist['replacement'], see
        `source_likeness`), pooled over the targets. nan without targets."""
        num, den = self.attainment_terms(before, after, targets)
        total = float(den.sum())
        return float(num.sum()) / total if total > 0 else math.nan

    def attainment_terms(self, before: Mapping[str, torch.Tensor], after: Mapping[str, torch.Tensor],
                         targets: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """Per image (float64 [N]): sum over its targets of d_before - d_after, and of d_before (see
        `attainment`)."""
        kind = self.goal_kind()
        d0 = torch.where(targets, before[kind].double(), 0.0).flatten(1).sum(1)
        d1 = torch.where(targets, after[kind].double(), 0.0).flatten(1).sum(1)
        return (d0 - d1).numpy(), d0.numpy()

    def about(self, before: Mapping[str, torch.Tensor], after: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """bool [N, r, r]: what the edit is about, the patches that look like the source or the object before
        or after it, grown by one pixel (leak is measured outside)."""
        kinds = [k for k in ('source', 'object') if k in self.exemplars]
        return dilate(torch.stack([self.looks_like(d, k) for d in (before, after) for k in kinds]).any(0), 1)


def replacement_distance(feats: torch.Tensor, before_feats: torch.Tensor, targets: torch.Tensor,
                         ring: torch.Tensor, surround: torch.Tensor) -> torch.Tensor:
    """float [N, r, r]: each target patch's distance to the nearest patch of what should replace it, the
    patches of `before_feats` in its own image's `ring` or the `surround` exemplars [M, 27] (0 off the
    targets; inf where neither exists). feats, before_feats: [N, 27, r, r] (`patches`); targets, ring:
    bool [N, r, r]."""
    n, _, r, _ = feats.shape
    out = torch.zeros(n, r, r)
    for i in range(n):
        if not targets[i].any():
            continue
        pool = torch.cat([before_feats[i].permute(1, 2, 0)[ring[i]], surround])
        here = feats[i].permute(1, 2, 0)[targets[i]]
        out[i][targets[i]] = torch.cdist(here, pool).min(1).values if len(pool) else math.inf
    return out


def source_likeness(replacement: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
    """replacement / (replacement + source), elementwise, in [0, 1]: 0 where a patch is its replacement,
    1 where it is a source exemplar (and where no replacement exists: replacement inf); 0.5 where both
    distances are 0. replacement, source: distances of the same shape."""
    total = replacement + source
    out = torch.where(total > 0, replacement / total.clamp(min=1e-12), torch.full_like(total, 0.5))
    return torch.where(torch.isinf(replacement), torch.ones_like(out), out)


def surround_ring(targets: torch.Tensor, source_like: torch.Tensor, ring: int = SURROUND_RING) -> torch.Tensor:
    """bool [N, r, r]: the patches within `ring` patch pixels of the targets (bool [N, r, r]), outside them
    grown by one pixel, that do not look like the source (source_like, bool [N, r, r])."""
    return dilate(targets, ring) & ~dilate(targets, 1) & ~source_like


def patch_targets(targets: torch.Tensor, res: int) -> torch.Tensor:
    """bool [N, res, res]: the targets (bool [N, H, W]) at patch resolution, blocks at least half covered."""
    return F.interpolate(targets.float()[:, None], size=(res, res), mode='area')[:, 0] >= 0.5



@dataclass
class Probe:
    """What every setting of a sweep is measured on: held-out z [N, D] and their unedited images
    [N, 3, H, W], the request's exemplar patches, the held-out images' patches [N, 27, r, r] and their
    distances to the exemplars ({kind: [N, r, r]}); the paste image's z and image and the pasted region
    [H, W]; the preserve regions' z, images and masks (None without). keep_renders: each measured
    candidate also keeps every edited held-out image (previews['renders'], float16 [N, 3, H, W]), for
    re-scoring a sweep with other measures (metrics/advise_variants.py)."""

    z: torch.Tensor
    before: torch.Tensor
    patch_goal: PatchGoal
    before_dist: dict
    before_feats: torch.Tensor
    z_goal: torch.Tensor
    before_goal: torch.Tensor
    region: torch.Tensor
    batch: int
    truncation: float | None = None
    keep_renders: bool = False
    z_pres: torch.Tensor | None = None
    before_pres: torch.Tensor | None = None
    pres_masks: torch.Tensor | None = None

    @classmethod
    def build(cls, model, zds, req: editfile.EditRequest, preserve: Sequence[editfile.Selection], heldout: int,
              heldout_seed: int, batch: int, truncation: float | None = None, keep_renders: bool = False) -> Probe:
        device = next(model.parameters()).device
        z = z_sample_for_model(model, heldout, seed=heldout_seed).to(device)
        sampler = copy.deepcopy(model)                 # the model passed in is never changed
        with sampling_at(sampler, truncation):
            before = render(sampler, z, batch)
        size = before.shape[-1]
        z_all = all_zs(zds)
        z_goal = z_all[req.paste.imgnum][None].to(device)
        pres = {}
        if preserve:
            z_pres = torch.stack([z_all[s.imgnum] for s in preserve]).to(device)
            pres = {'z_pres': z_pres, 'before_pres': render(model, z_pres, batch),
                    'pres_masks': torch.stack([s.mask_at(size) for s in preserve])}
        patch_goal = PatchGoal.build(model, z_all, req, batch)
        before_feats = patches(before)
        return cls(z=z, before=before, patch_goal=patch_goal, before_dist=patch_goal.distances_of(before_feats),
                   before_feats=before_feats,
                   z_goal=z_goal, before_goal=render(model, z_goal),
                   region=pasted_region(req, size), batch=batch,
                   truncation=truncation, keep_renders=keep_renders, **pres)

    def measure(self, cand, gw: SeqStyleGanRewriter, request: dict, rank: int, targets: torch.Tensor,
                solver_options: Mapping) -> None:
        """Applies the request at `rank` on gw (reverted first and after) and fills cand's measures;
        targets: bool [N, H, W], the rule's targets at gw's layer (target_maps)."""
        gw.revert()
        w0 = gw.target_weights().detach().clone()
        try:
            record = gw.apply_request(request, rank=rank, solver='fast', **solver_options)
        except (RewriteError, FloatingPointError) as e:
            cand.skipped = f'the edit failed: {" ".join(str(e).split())}'
            return
        try:
            cand.seconds = record.seconds
            cand.initial_loss, cand.final_loss = record.initial_loss, record.final_loss
            if math.isfinite(record.initial_loss) and record.initial_loss > 0:
                cand.fit = (record.initial_loss - record.final_loss) / record.initial_loss
            cand.size = float((gw.target_weights().detach() - w0).norm() / w0.norm().clamp(min=1e-30))
            after_goal = render(gw.model, self.z_goal)
            cand.paste = weighted_mean_change(change_map(self.before_goal, after_goal)[0], self.region)
            with sampling_at(gw.model, self.truncation):
                after = render(gw.model, self.z, self.batch)
            change = change_map(self.before, after)
            cand.reach = weighted_mean_change(change, targets)
            after_feats = patches(after)
            after_dist = self.patch_goal.distances_of(after_feats)
            about = self.patch_goal.about(self.before_dist, after_dist)
            about = F.interpolate(about.float()[:, None], size=change.shape[-2:], mode='nearest')[:, 0] > 0
            cand.leak = weighted_mean_change(change, ~about)
            outside = (~about).double()
            leak_terms = ((change.double() * outside).flatten(1).sum(1).numpy(), outside.flatten(1).sum(1).numpy())
            goal_targets = patch_targets(targets, after_dist['source'].shape[-1])
            before_dist = self.before_dist
            if self.patch_goal.goal_kind() == 'replacement':          # an erase: the source-like targets
                source_like = self.patch_goal.looks_like(before_dist, 'source')
                ring = surround_ring(goal_targets, source_like)
                goal_targets = goal_targets & source_like
                surround = self.patch_goal.exemplars['surround']
                before_dist = dict(before_dist, replacement=source_likeness(replacement_distance(
                    self.before_feats, self.before_feats, goal_targets, ring, surround), before_dist['source']))
                after_dist['replacement'] = source_likeness(replacement_distance(
                    after_feats, self.before_feats, goal_targets, ring, surround), after_dist['source'])
            cand.attain = self.patch_goal.attainment(before_dist, after_dist, goal_targets)
            cand.terms = {'attain': self.patch_goal.attainment_terms(before_dist, after_dist, goal_targets),
                          'leak': leak_terms}
            if self.z_pres is not None:
                cand.preserve_leak = weighted_mean_change(
                    change_map(self.before_pres, render(gw.model, self.z_pres, self.batch)), self.pres_masks)
            cand.previews = {'after': to_uint8_batch(after[:PREVIEW]), 'change': change[:PREVIEW].numpy(),
                             'targets': targets[:PREVIEW].numpy()}
            if self.keep_renders:
                cand.previews['renders'] = after.half()
        finally:
            gw.revert()

