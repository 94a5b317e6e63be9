"""The settings of an edit and their checks: the solvers' options (dataclasses with documented defaults), the
preserve weight, and the rewriter's error naming the field, raised before anything changes."""

from __future__ import annotations

import numbers
from dataclasses import dataclass, fields

import numpy as np

__all__ = ['check_choice', 'check_fast_options', 'check_options', 'check_rank', 'FastOptions',
           'IterativeOptions', 'MAX_PRESERVE_WEIGHT', 'OriginalOptions', 'PRESERVE_WEIGHT',
           'preserve_weight_for', 'real_number', 'RewriteError']


@dataclass(frozen=True)
class FastOptions:
    """The closed-form solver's options (`insert_fast` documents each)."""
    rounds: int = 8                            # reweighted least-squares rounds per ridge strength
    polish: int = 300                          # Adam steps on the exact loss afterwards
    polish_lr: float = 0.03                    # their initial step, relative to an RMS weight
    ridges: tuple[float, ...] = (1e-1, 1e-2, 1e-3, 1e-4)   # ridge strengths tried, relative
    max_change: float = 3.0                    # bound on ||W' - W|| / ||W||
    preserve: float = 0.0                      # weight of the demodulation-change term (0: off)


@dataclass(frozen=True)
class IterativeOptions:
    """The Adam solvers' options (`original`: on the whole weight, re-projected; `linear`: on Lambda)."""
    niter: int = 2001                          # Adam steps
    piter: int = 10                            # re-projection interval of 'original'
    lr: float = 0.05                           # Adam's learning rate


@dataclass(frozen=True)
class OriginalOptions(IterativeOptions):
    """The original solver's options: the Adam ones and how it keeps the change in the context's span."""
    low_rank_insert: bool = True               # re-project W onto W_orth + P_D(W) every piter steps
    low_rank_gradient: bool = False            # project every gradient onto the context's span instead


# apply_edit / apply_erase's default preserve_weight: the weight of the preserve regions' L1 change in the
# solvers' loss (relative to the goal's) and the strength of their keys against C in the context directions.
# Measured on the demo model's dome -> spire (layer 8, rank 3, 16-32 flat-top regions, 400 held-out z's), the
# solver's term alone: weight 0 -> 74% of domes converted, 94% collateral (flat tops turned spire); 0.05 ->
# 66% / 87%; 0.1 -> 45% / 32%; 0.3 -> 23% / 4%; weight 1 removes the rank-1 edit entirely. The bundled
# edits at this default: metrics/results/edit_methods_preserve.md (and the demo model card).
PRESERVE_WEIGHT = 0.1
# The largest preserve_weight accepted (edit files, the API, --preserve-weight): a weight of 1 already removes a
# rank-1 edit; past this the preserve term swamps the goal in any float precision (1e308 overflowed C + w P).
MAX_PRESERVE_WEIGHT = 1000.0


def preserve_weight_for(given: float | None, in_file: float | None) -> float:
    """The preserve weight an edit uses: `given` (an explicit argument or --preserve-weight) wins, else the
    edit file's own `preserve_weight` field (`in_file`), else PRESERVE_WEIGHT. `given` is returned as it is:
    the edit checks it (and names it in its error)."""
    if given is not None:
        return given
    return PRESERVE_WEIGHT if in_file is None else float(in_file)


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
