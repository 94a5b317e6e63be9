"""What every solver is given (InsertProblem) and the algebra they share: W' = W + Lambda D.

Rank-constrained rewriting of one convolution weight (a linear associative memory).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields

import torch

from rewrite.core.preserve import PreserveSet
from utils.stylegan2.site import TargetLayer  # what the fast solver knows of the target piece

__all__ = ['InsertProblem', 'option_values', 'projected_conv']


@dataclass
class InsertProblem:
    """What every solver is given (one signature: `run(problem, options, update_callback) -> losses`).

    target(key) -> the target piece's output [B, O, H, W]; target_with_weight(weight, key) the same with
    another weight [1, O, I, k, k]; target_layer(key) the piece as the fast solver models it; styles() the
    layer's styles [N, I] for a z-sample (the fast solver's demodulation term). `weight` is edited in place
    so that target(key) ~ val [1, O, H, W] within span(context rows [rank, I]); with preserve_set, the loss
    adds preserve_weight times the preserve regions' mask-weighted L1 change."""
    target: Callable
    target_with_weight: Callable
    target_layer: Callable[[object], TargetLayer]
    styles: Callable[[], torch.Tensor]
    weight: torch.nn.Parameter
    key: object
    val: torch.Tensor
    context: torch.Tensor
    preserve_set: PreserveSet | None = None
    preserve_weight: float = 0.0


def projected_conv(weight: torch.Tensor, direction: torch.Tensor) -> torch.Tensor:
    """Projection of each weight row onto span(direction rows): W D^T D over the input dim.

    weight [1, O, I, k, k] (or [O, I, k, k]), direction [rank, I] orthonormal rows."""
    eq = ('goiyx,di->godyx', 'godyx,di->goiyx') if weight.dim() == 5 else ('oiyx,di->odyx', 'odyx,di->oiyx')
    return torch.einsum(eq[1], torch.einsum(eq[0], weight, direction), direction)


def _check_finite(loss: torch.Tensor, it: int) -> None:
    if not torch.isfinite(loss):
        raise FloatingPointError(f'the rewriting loss became {loss.item()} at iteration {it}; '
                                 'try a lower learning rate (the weights were restored)')


def option_values(options) -> dict:
    """An options dataclass's fields as keyword arguments (values as given: no copies)."""
    return {f.name: getattr(options, f.name) for f in fields(options)}
