"""Changing a contextual rule (the paper's section 5.3).

- ``unit_iou_ranking``: dissection of a layer's units against a concept's label masks (which units
  draw the cause), by IoU of each unit's top-quantile activation region with the masks.
- ``rank_one_update`` / ``project_rank_one``: the rank-one change W' = W + lambda d^T along a context
  direction d that best maps keys to goal values (least squares), and the projection of any change
  onto that direction.

- ``unit_intervention`` / ``direction_intervention``: add or remove the cause inside a painted mask (for
  ``nethook.Trace``), by setting units or by moving the features along ``cause_direction``.
- ``RuleChangeProblem`` / ``build_problem``: chosen samples with the cause added, the effect's region, and
  the goal: draw there what the samples draw without the cause (the rule reversed), keep the rest.
- ``fit_layer_change``: optimise a change of one layer's conv weight for that goal, full or rank one along a
  key direction (``key_direction``: C^-1 k of the effect region's keys, as the paper's context key).
- ``changed_model`` returns the changed generator (it saves with ``utils.stylegan2.save_checkpoint`` in the
  checkpoint layout); which layer holds the rule is rewrite/analysis/layersearch.py.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch.func import functional_call

from utils.generators.site import RewriteSite, rewrite_site
from utils.nethook import Trace

__all__ = ['build_problem', 'cause_direction', 'change_loss', 'change_outside', 'changed_model',
           'conv_change_rank', 'conv_weight_name', 'direction_intervention', 'Edit', 'fit_layer_change',
           'key_direction', 'layer_site', 'LayerChange', 'project_rank_one', 'rank_one_conv',
           'rank_one_update', 'render', 'RuleChangeProblem', 'unit_intervention', 'unit_iou_ranking']


def unit_iou_ranking(acts: torch.Tensor, masks: torch.Tensor, quantile: float = 0.99
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Rank units by IoU of their high-activation regions with a concept's masks.

    acts:  float [N, C, h, w] activations of one layer.
    masks: bool [N, H, W] where the concept is (H, W multiples of h, w or not: acts are resized
           bilinearly to H x W).
    Each unit is "on" where its (resized) activation exceeds its ``quantile`` over every position of
    every image. Returns (units int64 [C] best first, iou float [C] in that order).
    """
    if acts.dim() != 4:
        raise ValueError(f'acts: expected [N, C, h, w], got shape {tuple(acts.shape)}')
    if masks.dim() != 3 or masks.shape[0] != acts.shape[0]:
        raise ValueError(f'masks: expected [N={acts.shape[0]}, H, W], got shape {tuple(masks.shape)}')
    if not 0.0 < quantile < 1.0:
        raise ValueError(f'quantile: expected a number in (0, 1), got {quantile}')
    up = F.interpolate(acts.float(), size=masks.shape[-2:], mode='bilinear', align_corners=False)
    flat = up.transpose(0, 1).reshape(acts.shape[1], -1)                  # [C, N*H*W]
    thresh = torch.quantile(flat, quantile, dim=1, keepdim=True)
    on = flat > thresh
    m = masks.reshape(1, -1).bool()
    inter = (on & m).sum(1).double()
    union = (on | m).sum(1).double()
    iou = inter / union.clamp(min=1)
    order = torch.argsort(iou, descending=True, stable=True)
    return order, iou[order]


def project_rank_one(delta: torch.Tensor, direction: torch.Tensor) -> torch.Tensor:
    """The part of a weight change along one input direction: delta d d^T / (d^T d).

    delta: [out, in]; direction: [in]. Returns a rank-one (or zero) [out, in] matrix.
    """
    if delta.dim() != 2 or direction.shape != (delta.shape[1],):
        raise ValueError(f'direction: expected shape ({delta.shape[1]},) for delta {tuple(delta.shape)}, '
                         f'got {tuple(direction.shape)}')
    d = direction / direction.norm().clamp(min=1e-12)
    return torch.outer(delta @ d, d)


def rank_one_update(weight: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
                    direction: torch.Tensor) -> torch.Tensor:
    """The change lambda d^T that minimises ||(W + lambda d^T) K - V||^2 (closed form).

    weight: [out, in]; keys: [in, n]; values: [out, n]; direction d: [in].
    Returns the change [out, in] (rank one): lambda = (V - W K) K^T d / ||K^T d||^2.
    """
    if keys.shape[0] != weight.shape[1] or values.shape != (weight.shape[0], keys.shape[1]):
        raise ValueError(f'keys/values: expected [in={weight.shape[1]}, n] and [out={weight.shape[0]}, n], '
                         f'got {tuple(keys.shape)} and {tuple(values.shape)}')
    kd = keys.T @ direction                                                # [n]
    denom = kd.dot(kd)
    if denom <= 0:
        raise ValueError('direction: orthogonal to every key, so no change along it can move the values')
    lam = (values - weight @ keys) @ kd / denom                             # [out]
    return torch.outer(lam, direction)


def unit_intervention(units: torch.Tensor, mask: torch.Tensor, value: torch.Tensor | float):
    """An ``edit_output`` for ``nethook.Trace`` that sets ``units`` of a layer's feature map inside ``mask``.

    Adds the cause (``value``: e.g. each unit's high quantile, [len(units)] or a scalar) or removes it
    (``value=0``) where mask is 1, blending by the mask's weight in [0, 1]:
    fmap[:, units] <- (1 - m) fmap[:, units] + m value.

    units: int64 [U]; mask: float [h, w] or [N, 1, h, w] at the layer's resolution (resized bilinearly
    otherwise). Usage: ``with nethook.Trace(model, 'layer5', edit_output=unit_intervention(...)): model(z)``.
    """
    units = torch.as_tensor(units, dtype=torch.long)

    def edit(bag, _layer):
        fmap = bag['fmap']
        m = mask.to(fmap.dtype)
        m = m.reshape(1, 1, *m.shape) if m.dim() == 2 else m
        if m.shape[-2:] != fmap.shape[-2:]:
            m = F.interpolate(m, size=fmap.shape[-2:], mode='bilinear', align_corners=False)
        val = torch.as_tensor(value, dtype=fmap.dtype).reshape(1, -1, 1, 1) if torch.as_tensor(value).dim() \
            else torch.as_tensor(value, dtype=fmap.dtype)
        fmap = fmap.clone()
        fmap[:, units] = (1 - m) * fmap[:, units] + m * val
        return bag.updated(fmap=fmap)

    return edit


# ---------------------------------------------------------------------------------------------------
# interventions
# ---------------------------------------------------------------------------------------------------

Edit = Callable  # an edit_output for nethook.Trace: (bag, layer name) -> bag


def cause_direction(acts: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """Mean feature of samples that show the cause minus that of samples that do not: float [C].

    acts: [N, C, h, w] one layer's features; present: bool [N] (both groups non-empty).
    """
    present = torch.as_tensor(present, dtype=torch.bool)
    if acts.dim() != 4 or present.shape != (acts.shape[0],):
        raise ValueError(f'present: expected bool [N={acts.shape[0]}] for acts [N, C, h, w], '
                         f'got {tuple(present.shape)} and {tuple(acts.shape)}')
    if present.all() or not present.any():
        raise ValueError('present: expected samples both with and without the cause')
    means = acts.float().mean((2, 3))
    return means[present].mean(0) - means[~present].mean(0)


def _resized(mask: torch.Tensor, fmap: torch.Tensor) -> torch.Tensor:
    m = mask.to(fmap.dtype)
    m = m.reshape(1, 1, *m.shape) if m.dim() == 2 else m
    return m if m.shape[-2:] == fmap.shape[-2:] else F.interpolate(m, size=fmap.shape[-2:], mode='area')


def direction_intervention(direction: torch.Tensor, mask: torch.Tensor, strength: float = 1.0) -> Edit:
    """An ``edit_output`` adding ``strength * direction`` to the features inside ``mask``.

    direction: [C]; mask: float [h, w] or [N, 1, h, w] in [0, 1] (area-resized to the layer's resolution).
    fmap <- fmap + strength * m * direction; a negative strength removes the cause.
    """
    def edit(bag, _layer):
        fmap = bag['fmap']
        d = direction.to(fmap.dtype).reshape(1, -1, 1, 1)
        return bag.updated(fmap=fmap + strength * _resized(mask, fmap) * d)

    return edit


def conv_weight_name(model: torch.nn.Module, layer: str) -> str:
    """The parameter a change of ``layer`` (e.g. 'layer6') edits: its plain convolution weight."""
    return layer_site(model, layer).weight_name


def layer_site(model: torch.nn.Module, layer: str) -> RewriteSite:
    """The generator's rewrite site of ``layer`` ('layerN', or N)."""
    return rewrite_site(model, int(str(layer).removeprefix('layer')))


def render(model: torch.nn.Module, z: torch.Tensor, cause: tuple[str, Edit] | None = None,
           weights: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
    """model(z) [N, 3, H, W] (not clamped), with ``cause`` = (layer, edit_output) applied and any
    parameters replaced by ``weights`` (differentiable in them when grad is enabled)."""
    def forward():
        return functional_call(model, weights, (z,)) if weights else model(z)

    if cause is None:
        return forward()
    with Trace(model, cause[0], retain_output=False, edit_output=cause[1]):
        return forward()


# ---------------------------------------------------------------------------------------------------
# the change that reverses the effect
# ---------------------------------------------------------------------------------------------------

@dataclass
class RuleChangeProblem:
    """What a changed layer should do on N chosen samples with the cause added.

    z: [N, D]; cause: (layer, edit_output) adding the cause to those samples; region: bool [N, H, W]
    where the effect is; goal: [N, 3, H, W] what to draw inside region (the samples without the cause:
    the effect reversed); reference: [N, 3, H, W] the original model's images with the cause (kept
    outside region). keep_z: [M, D] samples drawn without intervention whose images keep_images
    [M, 3, H, W] must not change (optional).
    """

    z: torch.Tensor
    cause: tuple[str, Edit]
    region: torch.Tensor
    goal: torch.Tensor
    reference: torch.Tensor
    keep_z: torch.Tensor | None = None
    keep_images: torch.Tensor | None = None


def build_problem(model: torch.nn.Module, z: torch.Tensor, cause: tuple[str, Edit], region: torch.Tensor,
                  keep_z: torch.Tensor | None = None) -> RuleChangeProblem:
    """The goal 'draw inside region what the sample draws without the cause', the rest as with it."""
    if region.dim() != 3 or region.shape[0] != z.shape[0]:
        raise ValueError(f'region: expected bool [N={z.shape[0]}, H, W], got shape {tuple(region.shape)}')
    with torch.no_grad():
        goal = render(model, z).clamp(-1, 1)
        reference = render(model, z, cause).clamp(-1, 1)
        keep = None if keep_z is None else render(model, keep_z).clamp(-1, 1)
    if region.shape[-2:] != goal.shape[-2:]:
        raise ValueError(f'region: expected {tuple(goal.shape[-2:])} pixels, got {tuple(region.shape[-2:])}')
    return RuleChangeProblem(z, cause, region.bool(), goal, reference, keep_z, keep)


def _masked_mse(x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask.unsqueeze(1).to(x.dtype)
    return ((x - y).pow(2) * m).sum() / (m.sum() * x.shape[1]).clamp(min=1)


def change_loss(model: torch.nn.Module, layer: str, delta: torch.Tensor, problem: RuleChangeProblem,
                keep_weight: float = 1.0) -> torch.Tensor:
    """Mean square error to the goal inside the region + keep_weight * (error to the reference outside
    it + error on the kept samples), for the layer's weight changed by ``delta``."""
    name = conv_weight_name(model, layer)
    weights = {name: model.get_parameter(name).detach() + delta}
    out = render(model, problem.z, problem.cause, weights)
    loss = _masked_mse(out, problem.goal, problem.region)
    keep = _masked_mse(out, problem.reference, ~problem.region)
    if problem.keep_z is not None:
        kept = render(model, problem.keep_z, None, weights)
        keep = keep + _masked_mse(kept, problem.keep_images, torch.ones_like(kept[:, 0], dtype=torch.bool))
    return loss + keep_weight * keep


def rank_one_conv(lam: torch.Tensor, direction: torch.Tensor) -> torch.Tensor:
    """The conv change lam (x) d: [1, O, k, k] and [I] -> [1, O, I, k, k] (rank one over the input dim)."""
    return torch.einsum('goyx,i->goiyx', lam, direction)


def conv_change_rank(delta: torch.Tensor) -> int:
    """Rank of a conv change [1, O, I, k, k] as the [O k k, I] matrix the input vectors meet (numerical
    rank at the tensor's own precision)."""
    return int(torch.linalg.matrix_rank(delta.reshape(-1, *delta.shape[-3:]).permute(0, 2, 3, 1)
                                        .reshape(-1, delta.shape[-3])))


@dataclass
class LayerChange:
    """A fitted change of one layer: delta [1, O, I, k, k] and the loss before each step (and after)."""

    layer: str
    delta: torch.Tensor
    losses: list[float] = field(default_factory=list)


def fit_layer_change(model: torch.nn.Module, layer: str, problem: RuleChangeProblem, steps: int = 50,
                     lr: float = 0.02, direction: torch.Tensor | None = None, keep_weight: float = 1.0
                     ) -> LayerChange:
    """Adam on a change of ``layer``'s conv weight minimising ``change_loss``.

    direction [I]: the change is rank one, lam (x) d with only lam [1, O, k, k] optimised;
    None: the full weight [1, O, I, k, k]. losses[0] is the loss of no change, losses[-1] the final one.
    """
    if steps < 1:
        raise ValueError(f'steps: expected a positive number of steps, got {steps}')
    w = model.get_parameter(conv_weight_name(model, layer))
    if direction is not None:
        if direction.shape != (w.shape[2],):
            raise ValueError(f'direction: expected shape ({w.shape[2]},) for {layer}, got {tuple(direction.shape)}')
        d = (direction / direction.norm().clamp(min=1e-12)).to(w)
        param = torch.zeros(w.shape[0], w.shape[1], *w.shape[3:], dtype=w.dtype, requires_grad=True)

        def delta():
            return rank_one_conv(param, d)
    else:
        param = torch.zeros_like(w, requires_grad=True)

        def delta():
            return param
    opt = torch.optim.Adam([param], lr=lr)
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = change_loss(model, layer, delta(), problem, keep_weight)
        loss.backward()
        losses.append(float(loss.detach()))
        opt.step()
    with torch.no_grad():
        losses.append(float(change_loss(model, layer, delta(), problem, keep_weight)))
        return LayerChange(layer, delta().detach().clone(), losses)


def key_direction(model: torch.nn.Module, layer: str, problem: RuleChangeProblem, ridge: float = 1e-3
                  ) -> torch.Tensor:
    """The context key of the effect's region: C^-1 k [I], k the region's mean key and C the keys'
    second moment over every position (keys: the input features ``layer``'s conv meets, cause added)."""
    with torch.no_grad(), Trace(model, layer_site(model, layer).conv, retain_output=False, retain_input=True) as tr:
        render(model, problem.z, problem.cause)
    keys = tr.input['fmap'].double()                                         # [N, I, h, w]
    m = _resized(problem.region.unsqueeze(1).double(), keys)                  # [N, 1, h, w]
    if m.sum() <= 0:
        raise ValueError('problem.region: empty, so there is no effect region to take the key from')
    k = (keys * m).sum((0, 2, 3)) / m.sum()
    flat = keys.transpose(0, 1).reshape(keys.shape[1], -1)
    c = flat @ flat.T / flat.shape[1]
    c = c + ridge * c.diagonal().mean() * torch.eye(c.shape[0], dtype=c.dtype)
    return torch.linalg.solve(c, k).float()


def changed_model(model: torch.nn.Module, layer: str, delta: torch.Tensor) -> torch.nn.Module:
    """A copy of ``model`` with ``layer``'s conv weight changed by ``delta`` (the original is untouched)."""
    new = copy.deepcopy(model)
    with torch.no_grad():
        new.get_parameter(conv_weight_name(model, layer)).add_(delta)
    return new


def change_outside(model: torch.nn.Module, layer: str, delta: torch.Tensor, problem: RuleChangeProblem
                   ) -> float:
    """Mean abs change of the clamped images outside the effect region (cause added) and over the kept
    samples, in image units ([-1, 1] range), for the layer changed by ``delta``."""
    name = conv_weight_name(model, layer)
    weights = {name: model.get_parameter(name).detach() + delta}
    with torch.no_grad():
        out = render(model, problem.z, problem.cause, weights).clamp(-1, 1)
        diff = (out - problem.reference).abs() * (~problem.region).unsqueeze(1)
        total, count = diff.sum(), (~problem.region).sum() * out.shape[1]
        if problem.keep_z is not None:
            kept = render(model, problem.keep_z, None, weights).clamp(-1, 1)
            total, count = total + (kept - problem.keep_images).abs().sum(), count + kept.numel()
    return float(total / count.clamp(min=1))


