"""The Adam solvers: the paper's `insert_original` (Adam on the whole weight, re-projected onto the context)
and `insert_linear` (Adam on Lambda).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from rewrite.core.solvers.problem import InsertProblem, _check_finite, projected_conv
from rewrite.formats.settings import IterativeOptions, OriginalOptions

__all__ = ['insert_linear', 'insert_original', 'run_linear', 'run_original']


def insert_original(target: Callable, weight: torch.nn.Parameter, key, val: torch.Tensor,
                    context: torch.Tensor, niter: int = 2001, piter: int = 10, lr: float = 0.05,
                    low_rank_insert: bool = True, low_rank_gradient: bool = False,
                    update_callback: Callable | None = None,
                    extra_loss: Callable[[], torch.Tensor] | None = None) -> list[float]:
    """The original optimisation. target(key) -> value fmap; edits `weight` in place.
    extra_loss() (optional): a term added to the L1 loss each step (the preserve regions' change)."""
    losses = []
    with torch.no_grad():
        ortho_weight = weight - projected_conv(weight, context)
    optimizer = torch.optim.Adam([weight], lr=lr)
    weight.requires_grad_(True)
    try:
        for it in range(niter):
            with torch.enable_grad():
                loss = F.l1_loss(target(key), val)
                if extra_loss is not None:
                    loss = loss + extra_loss()
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


def run_original(problem: InsertProblem, options: OriginalOptions,
                 update_callback: Callable | None = None) -> list[float]:
    """The paper's Adam on the whole weight, re-projected (`insert_original`), on `problem`."""
    keep = problem.preserve_set
    extra = None if keep is None else (lambda: problem.preserve_weight * keep.change(problem.target(keep.key)))
    return insert_original(problem.target, problem.weight, problem.key, problem.val, problem.context,
                           options.niter, options.piter, options.lr, options.low_rank_insert,
                           options.low_rank_gradient, update_callback, extra_loss=extra)


def run_linear(problem: InsertProblem, options: IterativeOptions,
               update_callback: Callable | None = None) -> list[float]:
    """Adam on Lambda (`insert_linear`) on `problem` (preserve regions are not supported)."""
    if problem.preserve_set is not None:
        raise ValueError("preserve regions need the 'fast' or the 'original' solver, not 'linear'")
    return insert_linear(problem.target_with_weight, problem.weight, problem.key, problem.val, problem.context,
                         options.niter, options.lr, update_callback)
