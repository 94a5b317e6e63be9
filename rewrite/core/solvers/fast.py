"""The fast solver: the target's output written as an explicit function of Lambda (conv responses of
  the context directions, demodulation energy as a quadratic in Lambda), solved by least squares
  through the inverted leaky ReLU with the demodulation re-estimated and reweighted towards L1,
  then polished by Adam on that explicit exact loss; no network pass while solving. Its loss also
  counts how much the change rescales every other image through the demodulation (the styles of
  a z-sample at this layer), which otherwise grows with the change and disturbs the whole image.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from rewrite.core.preserve import PreserveSet
from rewrite.core.solvers.adam import _lambda_weight
from rewrite.core.solvers.problem import InsertProblem, _check_finite, option_values
from rewrite.formats.settings import FastOptions
from utils.stylegan2 import ops
from utils.stylegan2.site import TargetLayer  # what the fast solver knows of the target piece

__all__ = ['DemodEnergy', 'insert_fast', 'LowRankTarget', 'PRESERVE_PIXELS', 'PreserveTerm', 'run_fast']

PRESERVE_PIXELS = 1024       # PreserveTerm's bound on the preserve pixels it models (an even subsample beyond)


def _inverse_activation(val: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Pre-activation u with leaky_relu(u) * sqrt 2 = val, and the local slope d val / d u."""
    slope = torch.where(val > 0, torch.ones_like(val), torch.full_like(val, ops.LRELU_SLOPE)) * ops.LRELU_GAIN
    return val / slope, slope


def _conv_response(x: torch.Tensor, weight: torch.Tensor, layer: TargetLayer) -> torch.Tensor:
    """Plain conv [+ blur] of x [B, I, h, w] with weight [O, I, k, k] (no demodulation)."""
    out = ops.plain_conv(x, weight, layer.scale, layer.upsample)
    return layer.blur(out) if layer.blur is not None else out


def insert_fast(target_with_weight: Callable, layer: TargetLayer, weight: torch.nn.Parameter, key,
                val: torch.Tensor, context: torch.Tensor, rounds: int = FastOptions.rounds,
                polish: int = FastOptions.polish, polish_lr: float = FastOptions.polish_lr,
                ridges=FastOptions.ridges, max_change: float = FastOptions.max_change,
                update_callback=None, styles: torch.Tensor | None = None,
                preserve: float = FastOptions.preserve, preserve_set: PreserveSet | None = None,
                preserve_weight: float = 0.0) -> list[float]:
    """Closed-form rank-constrained insert (see module docstring). Edits `weight` in place.

    key: the goal key bag (fmap [1, I, h, w], style [1, I]); val [1, O, H, W].
    The target layer's output is an explicit function of Lambda (`LowRankTarget`), so no network
    pass is needed while solving. For each ridge strength (relative to the largest diagonal of the
    normal equations) it runs `rounds` of reweighted least squares (demodulation re-estimated,
    weights moving the fit towards L1), keeping the lowest-loss iterate whose change stays within
    max_change * ||W|| (a huge low-rank change would dominate the demodulation and disturb every
    other image); then `polish` Adam steps on the exact L1 loss, keeping the best. The Adam step
    starts at polish_lr times the RMS element of a Lambda as large as W0 and decays to 0 (cosine).
    styles [N, I] (the layer's styles for a z-sample) with preserve > 0 add the demodulation
    term of LowRankTarget to the loss (default: the goal's L1 alone, the original's objective). The
    term trades effectiveness for preservation: on the demo model's dome-to-spire edit, preserve=0.3
    cut the change outside the towers from 0.022 to 0.014 but the converted domes from 50% to 35%.
    preserve_set (preserve regions) with preserve_weight > 0 adds preserve_weight times their
    mask-weighted L1 change (`PreserveTerm`) to the loss, in the least squares and the polish alike.
    losses: the exact loss after each round and polish step.
    """
    w0 = weight.detach().clone()                               # [1, O, I, k, k]
    o, k, r = w0.shape[1], w0.shape[-1], context.shape[0]
    with torch.no_grad():
        target = LowRankTarget(layer, w0, key, val, context, styles, preserve)
        if preserve_set is not None and preserve_weight > 0:
            target.keep = PreserveTerm(layer, w0, preserve_set, context, preserve_weight, target.val.shape[1])
        losses, candidates = [], []
        bound = max_change * w0.norm().item()        # ||Lambda D|| = ||Lambda||: D has orthonormal rows
        for ridge in ridges:
            lam, loss = _reweighted_least_squares(target, rounds, ridge, losses, update_callback)
            candidates.append((lam.norm().item() > bound, loss, lam))
        over, best_loss, lam = min(candidates, key=lambda c: (c[0], c[1]))
        if over:                                          # every candidate too large: shrink onto the bound
            lam = lam * (bound / lam.norm().item())
            best_loss = target.loss(lam).item()
    if polish > 0:
        step = polish_lr * w0.norm().item() / math.sqrt(lam.numel())    # relative to an RMS weight
        lam = _polish(target, lam, polish, step, best_loss, losses, update_callback, max_norm=bound)
    with torch.no_grad():
        weight[...] = _lambda_weight(w0, lam.reshape(1, o, r, k, k), context)
    return losses


class DemodEnergy:
    """The demodulation energy of each output channel, for styles s [N, I], as a quadratic in
    Lambda [O, r k k] (W = W0 + Lambda D):

        energy(Lambda)[n, o] = E0 + 2 <Lambda_o, G_n,o> + sum_q Lambda_oq^T M_n Lambda_oq
        demod(Lambda)[n, o]  = 1 / sqrt(scale^2 energy + eps)
    """

    def __init__(self, w0: torch.Tensor, styles: torch.Tensor, context: torch.Tensor, scale: float):
        o, i = w0.shape[1], w0.shape[2]
        w = w0[0].reshape(o, i, -1)                                                       # [O, I, k k]
        s2 = styles.to(w0).pow(2)                                                         # [N, I]
        self.o, self.r, self.scale = o, context.shape[0], scale
        self.e0 = torch.einsum('oiq,ni->no', w.pow(2), s2)                                # [N, O]
        self.g = torch.einsum('oiq,ni,di->nodq', w, s2, context).reshape(len(s2), o, -1)  # [N, O, r k k]
        self.m = torch.einsum('di,ni,ei->nde', context, s2, context)                      # [N, r, r]

    def demod(self, lam: torch.Tensor) -> torch.Tensor:
        """[N, O]"""
        lam3 = lam.reshape(self.o, self.r, -1)
        lam_gram = (lam3 @ lam3.transpose(1, 2)).reshape(self.o, -1)                      # [O, r r]
        energy = self.e0 + 2 * (self.g * lam).sum(-1) + self.m.reshape(len(self.m), -1) @ lam_gram.t()
        return torch.rsqrt(self.scale ** 2 * energy + ops.DEMOD_EPS)


class LowRankTarget:
    """The target piece's output on the goal keys as an explicit function of Lambda [O, r k k]
    (W = W0 + Lambda D), with every weight-dependent term precomputed:

        pre(Lambda)    = conv(k, W0) + Lambda A^T           A [P, r k k]: response of each tap of each
                                                            context direction to the keys (+ blur)
        demod(Lambda)  = DemodEnergy of the goal's style s
        out(Lambda)    = lrelu(pre * demod + bias + noise) * sqrt 2

    loss(Lambda) is the L1 error of out against the goal value plus, with `styles` (a sample's
    styles at this layer [N, I]) and preserve > 0, preserve * mean|val| * the RMS relative change
    of the demodulation over those styles and channels: a rank-limited change still rescales every output
    channel of every image through the demodulation, which this term keeps small.
    """

    def __init__(self, layer: TargetLayer, w0: torch.Tensor, key, val: torch.Tensor, context: torch.Tensor,
                 styles: torch.Tensor | None = None, preserve: float = 0.0):
        o, k = w0.shape[1], w0.shape[-1]
        r = context.shape[0]
        self.o, self.r, self.layer = o, r, layer
        kmap = key['fmap'].detach()
        proj = torch.einsum('bihw,di->bdhw', kmap, context)                               # [1, r, h, w]
        taps = torch.eye(r * k * k, dtype=w0.dtype, device=w0.device).reshape(r * k * k, r, k, k)
        self.design = _conv_response(proj, taps, layer)[0].reshape(r * k * k, -1).t()     # [P, r k k]
        self.base = _conv_response(kmap, w0[0], layer)[0].reshape(o, -1)                   # [O, P]
        self.goal_energy = DemodEnergy(w0, layer.style[None], context, layer.scale) if layer.demodulate else None
        self.sample_energy = None
        if styles is not None and preserve > 0 and layer.demodulate:
            self.sample_energy = DemodEnergy(w0, styles, context, layer.scale)
            self.sample_demod0 = self.sample_energy.demod(torch.zeros(o, r * k * k, dtype=w0.dtype,
                                                                      device=w0.device))
            self.preserve_weight = preserve * val.abs().mean().item()      # in the units of the L1 loss
        self.offset = (layer.bias[:, None] + layer.noise.reshape(1, -1)).expand(o, -1)     # [O, P]
        self.val = val[0].reshape(o, -1)
        u, slope = _inverse_activation(val)
        self.pre_target = (u[0].reshape(o, -1) - self.offset)                              # wanted demod * pre
        self.slope = slope[0].reshape(o, -1)
        self.keep: PreserveTerm | None = None           # the preserve regions' term, if any

    def demod(self, lam: torch.Tensor) -> torch.Tensor:
        """The goal's demodulation [O]."""
        if not self.layer.demodulate:
            return torch.ones(self.o, dtype=lam.dtype, device=lam.device)
        return self.goal_energy.demod(lam)[0]

    def demod_change(self, lam: torch.Tensor) -> torch.Tensor:
        """RMS of demod / demod(0) - 1 over the sample's styles and the output channels (0 without)."""
        if self.sample_energy is None:
            return lam.new_zeros(())
        # (+1e-12: a finite gradient at Lambda = 0)
        return ((self.sample_energy.demod(lam) / self.sample_demod0 - 1).pow(2).mean() + 1e-12).sqrt()

    def output(self, lam: torch.Tensor) -> torch.Tensor:
        pre = self.base + lam @ self.design.t()
        return ops.fused_leaky_relu(pre * self.demod(lam)[:, None] + self.offset)

    def goal_loss(self, lam: torch.Tensor) -> torch.Tensor:
        return (self.output(lam) - self.val).abs().mean()

    def loss(self, lam: torch.Tensor) -> torch.Tensor:
        loss = self.goal_loss(lam)
        if self.sample_energy is not None:
            loss = loss + self.preserve_weight * self.demod_change(lam)
        if self.keep is not None:
            loss = loss + self.keep.weight * self.keep.change(lam)
        return loss


class PreserveTerm:
    """The layer's outputs on the preserve regions as an explicit function of Lambda [O, r k k], as
    LowRankTarget does for the goal: out(Lambda) = lrelu((base + Lambda A^T) * demod(Lambda) + offset)
    at the Q selected pixels (A [Q, r k k]; demod from each region's own style; offset, the bias and
    noise, recovered from the outputs before the edit). change(Lambda): mask-weighted mean |out - out(0)|.
    In the least squares each pixel counts weight * u_q * P / sum(u) times a goal pixel (P goal pixels),
    so the objective is goal L1 + weight * preserve L1. Regions larger than max_pixels in all are
    represented by an even, deterministic subsample of max_pixels of their pixels (in scan order), which
    keeps the solve's cost bounded (whole images as preserve regions: 16 x 32 x 32 pixels)."""

    def __init__(self, layer: TargetLayer, w0: torch.Tensor, pset: PreserveSet, context: torch.Tensor,
                 weight: float, goal_pixels: int, max_pixels: int = PRESERVE_PIXELS):
        o, k, r = w0.shape[1], w0.shape[-1], context.shape[0]
        self.o, self.layer, self.weight = o, layer, weight
        kmap = pset.key['fmap'].detach().to(w0)
        where = pset.weight.nonzero()                                                     # [Q, 3]: m, y, x
        if len(where) > max_pixels:
            where = where[torch.linspace(0, len(where) - 1, max_pixels).round().long()]
        m, y, x = where.t()
        proj = torch.einsum('bihw,di->bdhw', kmap, context)                               # [M, r, h, w]
        taps = torch.eye(r * k * k, dtype=w0.dtype, device=w0.device).reshape(r * k * k, r, k, k)
        self.design = _conv_response(proj, taps, layer)[m, :, y, x]                      # [Q, r k k]
        self.base = _conv_response(kmap, w0[0], layer)[m, :, y, x].t()                   # [O, Q]
        self.image = m                                                                    # [Q]
        self.u = pset.weight[m, y, x].to(w0)                                              # [Q]
        self.row_scale = (weight * goal_pixels / self.u.sum()) * self.u.double()          # [Q]
        self.energy = DemodEnergy(w0, pset.key['style'].detach(), context, layer.scale) if layer.demodulate else None
        self.val = pset.val.to(w0)[m, :, y, x].t()                                        # [O, Q]
        u0, self.slope = _inverse_activation(self.val)
        self.pre_target = self.base * self.demod(torch.zeros(o, r * k * k, dtype=w0.dtype, device=w0.device))
        self.offset = u0 - self.pre_target                                                # bias + noise

    def demod(self, lam: torch.Tensor) -> torch.Tensor:
        """Each pixel's demodulation [O, Q]."""
        if self.energy is None:
            return torch.ones_like(self.base)
        return self.energy.demod(lam)[self.image].t()

    def output(self, lam: torch.Tensor) -> torch.Tensor:
        return ops.fused_leaky_relu((self.base + lam @ self.design.t()) * self.demod(lam) + self.offset)

    def change(self, lam: torch.Tensor) -> torch.Tensor:
        return ((self.output(lam) - self.val).abs() * self.u).sum() / (self.u.sum() * self.o)


def _reweighted_least_squares(target: LowRankTarget, rounds: int, ridge: float, losses, update_callback):
    """IRLS for Lambda [O, r k k] with the demodulation re-estimated each round; returns the
    iterate of lowest exact loss and that loss."""
    keep = target.keep
    a = target.design.double()
    if keep is not None:                                  # preserve pixels: more rows, scaled (PreserveTerm)
        scale = torch.cat([torch.ones(a.shape[0], dtype=torch.float64, device=a.device), keep.row_scale])
        a = torch.cat([a, keep.design.double()])
    eye = torch.eye(a.shape[1], dtype=torch.float64, device=a.device)
    weights = torch.ones(target.o, a.shape[0], dtype=torch.float64, device=a.device)
    lam = torch.zeros(target.o, a.shape[1], dtype=target.base.dtype, device=a.device)
    best = (math.inf, lam)
    for _ in range(rounds):
        demod = target.demod(lam)
        rhs = (target.pre_target / demod[:, None] - target.base).double()                 # [O, P]
        gain = (target.slope * demod[:, None]).double()
        row_weights = weights
        if keep is not None:
            keep_demod = keep.demod(lam)
            rhs = torch.cat([rhs, (keep.pre_target / keep_demod - keep.base).double()], 1)  # [O, P + Q]
            gain = torch.cat([gain, (keep.slope * keep_demod).double()], 1)
            row_weights = weights * scale
        gram = torch.einsum('pa,op,pb->oab', a, row_weights, a)                           # [O, a, a]
        # the ridge is relative to the goal's own normal equations (preserve rows may outweigh them)
        diag = gram.diagonal(dim1=1, dim2=2) if keep is None else torch.einsum(
            'op,pa->oa', weights[:, :target.val.shape[1]], a[:target.val.shape[1]] ** 2)
        gram = gram + (ridge * diag.amax(1) + 1e-12)[:, None, None] * eye
        lam = torch.linalg.solve(gram, torch.einsum('pa,op->oa', a, row_weights * rhs)).to(target.base.dtype)
        loss = target.loss(lam).item()
        _check_finite(torch.tensor(loss), len(losses))
        losses.append(loss)
        if update_callback is not None:
            update_callback(len(losses) - 1, loss)
        if loss < best[0]:
            best = (loss, lam.clone())
        # towards L1 of the post-activation error: weight ~ |d val / d pre| demod / |residual|
        resid = (a @ lam.double().t()).t() - rhs
        weights = gain / (gain * resid).abs().clamp(min=1e-4)
    return best[1], best[0]


def _polish(target: LowRankTarget, lam0: torch.Tensor, steps: int, lr: float, best_loss: float,
            losses, update_callback, max_norm: float = math.inf, betas=(0.9, 0.999),
            eps: float = 1e-8) -> torch.Tensor:
    """Adam (written out: a few tensor ops, no optimiser machinery) on Lambda for the exact loss of
    the explicit target, step size lr decaying to 0 (cosine), projected onto ||Lambda|| <= max_norm;
    returns the best iterate."""
    lam = lam0.clone()
    m, v = torch.zeros_like(lam), torch.zeros_like(lam)
    best = (best_loss, lam0.clone())
    for step in range(1, steps + 1):
        with torch.enable_grad():
            leaf = lam.requires_grad_(True)
            loss = target.loss(leaf)
            _check_finite(loss, len(losses))
            (grad,) = torch.autograd.grad(loss, leaf)
        lam = lam.detach()
        if loss.item() < best[0]:
            best = (loss.item(), lam.clone())
        m.mul_(betas[0]).add_(grad, alpha=1 - betas[0])
        v.mul_(betas[1]).addcmul_(grad, grad, value=1 - betas[1])
        m_hat, v_hat = m / (1 - betas[0] ** step), v / (1 - betas[1] ** step)
        step_lr = lr * 0.5 * (1 + math.cos(math.pi * (step - 1) / steps))
        lam = lam - step_lr * m_hat / (v_hat.sqrt() + eps)
        norm = lam.norm().item()
        if norm > max_norm:
            lam = lam * (max_norm / norm)
        losses.append(loss.item())
        if update_callback is not None:
            update_callback(len(losses) - 1, loss.item())
    final = target.loss(lam).item()
    return lam if final < best[0] else best[1]


def run_fast(problem: InsertProblem, options: FastOptions, update_callback: Callable | None = None) -> list[float]:
    """The closed-form solver (`insert_fast`) on `problem` (its styles are asked for only with preserve > 0)."""
    settings = option_values(options)
    if options.preserve > 0:
        settings['styles'] = problem.styles()
    if problem.preserve_set is not None:
        settings.update(preserve_set=problem.preserve_set, preserve_weight=problem.preserve_weight)
    return insert_fast(problem.target_with_weight, problem.target_layer(problem.key), problem.weight, problem.key,
                       problem.val, problem.context, update_callback=update_callback, **settings)
