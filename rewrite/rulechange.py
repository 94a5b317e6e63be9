"""Changing a contextual rule (the paper's section 5.3): the first library pieces.

- ``unit_iou_ranking``: dissection of a layer's units against a concept's label masks (which units
  draw the cause), by IoU of each unit's top-quantile activation region with the masks.
- ``rank_one_update`` / ``project_rank_one``: the rank-one change W' = W + lambda d^T along a context
  direction d that best maps keys to goal values (least squares), and the projection of any change
  onto that direction.

- ``unit_intervention``: add or remove the cause by setting units inside a painted mask (for ``nethook.Trace``).

Still to come (issue 17): the per-layer search, metrics, notebook and the prober widget.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


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
