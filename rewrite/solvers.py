"""Rank-constrained rewriting of one convolution weight (a linear associative memory).

Goal: the target piece (conv + demodulation [+ blur] + noise + bias + leaky ReLU) maps the goal
keys to the goal values, L1 loss, while the weight changes only along the context directions D
(rows [rank, I], orthonormal): W' = W + Lambda D, Lambda [1, O, rank, k, k].

- `insert_original`: the paper's algorithm: Adam on the whole weight, re-projected onto
  W_orth + P_D(W) every `piter` steps and at the end (or gradients projected instead).
- `insert_linear`: Adam directly on Lambda.
- `insert_fast`: least squares through the inverted leaky ReLU with the demodulation
  re-estimated (closed form), iteratively reweighted towards L1, then a short Adam polish of
  Lambda on the exact loss; keeps the best iterate.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from utils.stylegan2 import ops


@dataclass
class EditRecord:
    """What an edit did: losses every step (as recorded), the final loss and the wall time."""
    kind: str
    solver: str
    rank: int
    losses: list[float] = field(default_factory=list)
    final_loss: float = float('nan')
    initial_loss: float = float('nan')
    seconds: float = 0.0
    request: dict | None = None


def projected_conv(weight: torch.Tensor, direction: torch.Tensor) -> torch.Tensor:
    """Projection of each weight row onto span(direction rows): W D^T D over the input dim.

    weight [1, O, I, k, k] (or [O, I, k, k]), direction [rank, I] orthonormal rows."""
    eq = ('goiyx,di->godyx', 'godyx,di->goiyx') if weight.dim() == 5 else ('oiyx,di->odyx', 'odyx,di->oiyx')
    return torch.einsum(eq[1], torch.einsum(eq[0], weight, direction), direction)


def _check_finite(loss: torch.Tensor, it: int) -> None:
    if not torch.isfinite(loss):
        raise FloatingPointError(f'the rewriting loss became {loss.item()} at iteration {it}; '
                                 'try a lower learning rate (the weights were restored)')


def insert_original(target: Callable, weight: torch.nn.Parameter, key, val: torch.Tensor,
                    context: torch.Tensor, niter: int = 2001, piter: int = 10, lr: float = 0.05,
                    low_rank_insert: bool = True, low_rank_gradient: bool = False,
                    update_callback: Callable | None = None) -> list[float]:
    """The original optimisation. target(key) -> value fmap; edits `weight` in place."""
    losses = []
    with torch.no_grad():
        ortho_weight = weight - projected_conv(weight, context)
    optimizer = torch.optim.Adam([weight], lr=lr)
    weight.requires_grad_(True)
    try:
        for it in range(niter):
            with torch.enable_grad():
                loss = F.l1_loss(target(key), val)
                _check_finite(loss, it)
                optimizer.zero_grad()
                loss.backward()
                if low_rank_gradient:
                    weight.grad[...] = projected_conv(weight.grad, context)
                optimizer.step()
            losses.append(loss.item())
            if update_callback is not None:
                update_callback(it, loss.item())
            if low_rank_insert and (it % piter == 0 or it == niter - 1):
                with torch.no_grad():
                    weight[...] = ortho_weight + projected_conv(weight, context)
    finally:
        weight.requires_grad_(False)
        weight.grad = None
    return losses


def _lambda_weight(w0: torch.Tensor, lam: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
    return w0 + torch.einsum('godyx,di->goiyx', lam, context)


def _adam_on_lambda(target_with_weight: Callable, w0, lam0, key, val, context, niter, lr,
                    update_callback, start_it=0, losses=None):
    """Adam on Lambda for the exact L1 loss; returns (best lambda, best loss, losses)."""
    losses = [] if losses is None else losses
    lam = lam0.clone().requires_grad_(True)
    optimizer = torch.optim.Adam([lam], lr=lr)
    best_lam, best_loss = lam0.clone(), math.inf
    for it in range(niter):
        with torch.enable_grad():
            loss = F.l1_loss(target_with_weight(_lambda_weight(w0, lam, context), key), val)
            _check_finite(loss, start_it + it)
            if loss.item() < best_loss:
                best_loss, best_lam = loss.item(), lam.detach().clone()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        losses.append(loss.item())
        if update_callback is not None:
            update_callback(start_it + it, loss.item())
    with torch.no_grad():
        loss = F.l1_loss(target_with_weight(_lambda_weight(w0, lam, context), key), val).item()
    if loss < best_loss:
        best_loss, best_lam = loss, lam.detach().clone()
    return best_lam, best_loss, losses


def insert_linear(target_with_weight: Callable, weight: torch.nn.Parameter, key, val, context,
                  niter: int = 2001, lr: float = 0.05, update_callback=None) -> list[float]:
    """Adam directly on the coefficient Lambda of the low-rank change (the original's linear insert)."""
    w0 = weight.detach().clone()
    lam0 = torch.zeros(1, w0.shape[1], context.shape[0], *w0.shape[3:], dtype=w0.dtype, device=w0.device)
    lam, _, losses = _adam_on_lambda(target_with_weight, w0, lam0, key, val, context, niter, lr, update_callback)
    with torch.no_grad():
        weight[...] = _lambda_weight(w0, lam, context)
    return losses


@dataclass
class TargetLayer:
    """What the fast solver needs to know of the target piece (conv, demod, [blur], noise, bias, act)."""
    scale: float
    upsample: bool
    demodulate: bool
    blur: Callable[[torch.Tensor], torch.Tensor] | None
    noise: torch.Tensor            # noise strength * noise map, broadcastable to the value crop
    bias: torch.Tensor             # [O]


def _inverse_activation(val: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Pre-activation u with leaky_relu(u) * sqrt 2 = val, and the local slope d val / d u."""
    slope = torch.where(val > 0, torch.ones_like(val), torch.full_like(val, ops.LRELU_SLOPE)) * ops.LRELU_GAIN
    return val / slope, slope


def _conv_response(x: torch.Tensor, weight: torch.Tensor, layer: TargetLayer) -> torch.Tensor:
    """Plain conv [+ blur] of x [B, I, h, w] with weight [O, I, k, k] (no demodulation)."""
    out = ops.plain_conv(x, weight, layer.scale, layer.upsample)
    return layer.blur(out) if layer.blur is not None else out


def insert_fast(target_with_weight: Callable, layer: TargetLayer, weight: torch.nn.Parameter, key,
                val: torch.Tensor, context: torch.Tensor, rounds: int = 8, polish: int = 20,
                lr: float = 0.05, ridges=(1e-1, 1e-2, 1e-3, 1e-4), max_change: float = 3.0,
                update_callback=None) -> list[float]:
    """Closed-form rank-constrained insert (see module docstring). Edits `weight` in place.

    key: the goal key bag (fmap [1, I, h, w], style [1, I]); val [1, O, H, W].
    For each ridge strength (relative to the largest diagonal of the normal equations) it runs
    `rounds` of reweighted least squares; it keeps the lowest-loss solution whose change stays
    within max_change * ||W|| (a huge low-rank change would dominate the demodulation and
    disturb every other image), then polishes it with `polish` Adam steps on the exact L1 loss.
    """
    w0 = weight.detach().clone()                               # [1, O, I, k, k]
    o, k, r = w0.shape[1], w0.shape[-1], context.shape[0]
    with torch.no_grad():
        problem = _linearised_problem(layer, w0, key, val, context)
        losses, candidates = [], []
        for ridge in ridges:
            lam, loss = _reweighted_least_squares(target_with_weight, layer, w0, key, val, context, problem,
                                                  rounds, ridge, losses, update_callback)
            change = (torch.einsum('od,di->oi', lam, _expand_context(context, k)).norm() / w0.norm()).item()
            candidates.append((change > max_change, loss, lam))
        _, _, lam = min(candidates, key=lambda c: (c[0], c[1]))
    lam = lam.reshape(1, o, r, k, k)
    if polish > 0:
        lam, _, losses = _adam_on_lambda(target_with_weight, w0, lam, key, val, context, polish,
                                         lr * 0.1, update_callback, start_it=len(losses), losses=losses)
    with torch.no_grad():
        weight[...] = _lambda_weight(w0, lam, context)
    return losses


def _expand_context(context: torch.Tensor, k: int) -> torch.Tensor:
    """[r, I] -> [r k k, I k k]: the map from flattened Lambda rows to flattened weight rows."""
    eye = torch.eye(k * k, dtype=context.dtype, device=context.device)
    return torch.einsum('di,ab->daib', context, eye).reshape(context.shape[0] * k * k, -1)


def _linearised_problem(layer: TargetLayer, w0, key, val, context) -> dict:
    """Pre-activation targets and the design matrix of Lambda (fixed demodulation)."""
    o, k = w0.shape[1], w0.shape[-1]
    r = context.shape[0]
    kmap = key['fmap'].detach()
    u, slope = _inverse_activation(val)
    u = u - layer.bias[None, :, None, None] - layer.noise
    # the response of each (context direction, kernel tap) to the projected keys
    proj = torch.einsum('bihw,di->bdhw', kmap, context)                                  # [1, r, h, w]
    taps = torch.eye(r * k * k, dtype=w0.dtype, device=w0.device).reshape(r * k * k, r, k, k)
    design = _conv_response(proj, taps, layer)[0].reshape(r * k * k, -1).t()              # [P, r k k]
    return {'design': design.double(), 'base': _conv_response(kmap, w0[0], layer)[0].reshape(o, -1),
            'target': u[0].reshape(o, -1), 'slope': slope[0].reshape(o, -1)}


def _reweighted_least_squares(target_with_weight, layer, w0, key, val, context, problem, rounds, ridge,
                              losses, update_callback):
    """IRLS for Lambda [O, r k k], re-estimating the demodulation each round; returns (best, loss)."""
    o, k, r = w0.shape[1], w0.shape[-1], context.shape[0]
    a = problem['design']
    eye = torch.eye(a.shape[1], dtype=torch.float64, device=a.device)
    weights = torch.ones_like(problem['target'], dtype=torch.float64)
    lam = torch.zeros(o, a.shape[1], dtype=w0.dtype, device=w0.device)
    best = (math.inf, lam)
    style = key['style'].detach()
    for _ in range(rounds):
        w_now = _lambda_weight(w0, lam.reshape(1, o, r, k, k), context)
        demod = (ops.demodulation(w_now[0], style, layer.scale)[0] if layer.demodulate
                 else torch.ones(o, dtype=w0.dtype, device=w0.device))
        rhs = (problem['target'] / demod[:, None] - problem['base']).double()             # [O, P]
        gram = torch.einsum('pa,op,pb->oab', a, weights, a)                               # [O, a, a]
        gram = gram + (ridge * gram.diagonal(dim1=1, dim2=2).amax(1) + 1e-12)[:, None, None] * eye
        lam = torch.linalg.solve(gram, torch.einsum('pa,op->oa', a, weights * rhs)).to(w0.dtype)
        loss = F.l1_loss(target_with_weight(_lambda_weight(w0, lam.reshape(1, o, r, k, k), context), key),
                         val).item()
        _check_finite(torch.tensor(loss), len(losses))
        losses.append(loss)
        if update_callback is not None:
            update_callback(len(losses) - 1, loss)
        if loss < best[0]:
            best = (loss, lam.clone())
        # towards L1 of the post-activation error: weight ~ |d val / d pre| demod / |residual|
        gain = (problem['slope'] * demod[:, None]).double()
        resid = (a @ lam.double().t()).t() - rhs
        weights = gain / (gain * resid).abs().clamp(min=1e-4)
    return best[1], best[0]


def timed(fn: Callable, *args, **kwargs):
    """(result, seconds) of fn(*args, **kwargs)."""
    t0 = time.perf_counter()
    result = fn(*args, **kwargs)
    return result, time.perf_counter() - t0
