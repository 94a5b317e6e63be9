"""The rewriter's error and its checks of settings: a clear error naming the field, before anything changes."""

from __future__ import annotations

import numbers
from dataclasses import fields

import numpy as np

from .solvers import FastOptions


class RewriteError(ValueError):
    """A request the rewriter cannot carry out; the model is left unchanged."""


def real_number(value, low: float, strict: bool) -> bool:
    """value is a finite real number (not bool) > low (strict) or >= low."""
    return (not isinstance(value, bool) and isinstance(value, numbers.Real) and bool(np.isfinite(value))
            and (value > low if strict else value >= low))


def check_choice(value, choices, field: str) -> None:
    """value is one of `choices` (a registry's names, read when called: a newly registered one counts)."""
    if value not in choices:
        raise RewriteError(f'{field} must be one of {tuple(choices)}, not {value!r}')


def check_options(niter: int, piter: int, lr: float) -> None:
    """Clear errors for optimisation settings that cannot work."""
    if isinstance(niter, bool) or not isinstance(niter, int) or niter < 0:
        raise RewriteError(f'niter must be a non-negative integer, not {niter!r}')
    if isinstance(piter, bool) or not isinstance(piter, int) or piter < 1:
        raise RewriteError(f'piter must be a positive integer, not {piter!r}')
    if isinstance(lr, bool) or not (isinstance(lr, numbers.Real) and np.isfinite(lr) and lr > 0):   # numpy scalars too
        raise RewriteError(f'lr must be a positive finite number, not {lr!r}')


def check_fast_options(options: dict) -> None:
    """Clear errors for the fast solver's settings (insert_fast's keyword arguments)."""
    known = [f.name for f in fields(FastOptions)] + ['styles']
    for name in options:
        if name not in known:
            raise RewriteError(f"unknown option {name!r} of the 'fast' solver (expected some of {known})")
    for name in ('rounds', 'polish'):
        value = options.get(name, 0)
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise RewriteError(f'{name} must be an integer >= 0, not {value!r}')
    for name, strict in (('polish_lr', True), ('max_change', True), ('preserve', False)):
        if name in options and not real_number(options[name], 0.0, strict):
            raise RewriteError(f'{name} must be a finite number {">" if strict else ">="} 0, not {options[name]!r}')
    ridges = options.get('ridges', (1.0,))
    if isinstance(ridges, (str, bytes)) or not hasattr(ridges, '__len__') or len(ridges) == 0 \
            or not all(real_number(r, 0.0, True) for r in ridges):
        raise RewriteError(f'ridges must be a non-empty sequence of positive finite numbers, not {ridges!r}')


def check_rank(rank, width: int, name: str = 'rank') -> None:
    """rank: an integer from 1 to the layer's key width."""
    if isinstance(rank, bool) or not isinstance(rank, (int, np.integer)) or not 1 <= rank <= width:
        raise RewriteError(f'{name} must be between 1 and {width} (an integer), not {rank!r}')
