"""The registries of context-key methods and solvers: one place that names them, says what each does and
gives its options with their defaults. Edit files (their `solver`, `solver_options`), the rewriter
(validation, defaults, the EditRecord), the command line (choices, --help), the widget (menus, progress bars)
and the metrics read them from here. The functions that run them live in the engine (rewrite/core) and are
named here as 'module:function', imported when first called (`Deferred`), so this vocabulary sits below the
engine and an edit file can be checked without loading it; a registered stand-in may give the function itself.

    SOLVERS['fast'].options()            # FastOptions(rounds=8, polish=300, ...)
    SOLVERS['fast'].steps(niter=2001)    # update_callback steps, for a progress bar
    KEY_METHODS['mean'].max_rank         # 1
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields

from rewrite.formats import settings as checks
from rewrite.formats.settings import FastOptions, IterativeOptions, OriginalOptions

__all__ = ['DEFAULT_KEY_METHOD', 'DEFAULT_SOLVER', 'Deferred', 'KEY_METHODS', 'KeyMethod', 'Solver',
           'SOLVERS']


@dataclass(frozen=True)
class Deferred:
    """A function named 'package.module:function', looked up when called (its module imported the first time)."""
    path: str

    def __call__(self, *args, **kwargs):
        module, _, function = self.path.partition(':')
        return getattr(importlib.import_module(module), function)(*args, **kwargs)


@dataclass(frozen=True)
class KeyMethod:
    """A way of turning the selected context regions' keys into orthonormal directions D [rank, I]:
    directions(stats, keys [N, I], mask weights [N], rank) -> D (rewrite/core/keymethods.py)."""
    name: str
    summary: str
    directions: Callable
    max_rank: int | None = None                # None: up to the layer's width and the selected pixels


KEY_METHODS: dict[str, KeyMethod] = {m.name: m for m in (
    KeyMethod('zca', "top principal directions of the ZCA-whitened keys, mapped back (the paper's)",
              Deferred('rewrite.core.keymethods:zca_directions')),
    KeyMethod('svd', 'top left singular vectors of the covariance-adjusted keys C^-1 k',
              Deferred('rewrite.core.keymethods:svd_directions')),
    KeyMethod('mean', 'the unit covariance-adjusted mean key C^-1 mean(k)',
              Deferred('rewrite.core.keymethods:mean_directions'), max_rank=1),
    KeyMethod('gandissect', 'the units whose quantile-normalised responses in the regions are highest',
              Deferred('rewrite.core.keymethods:gandissect_directions')),
)}
DEFAULT_KEY_METHOD = 'zca'


@dataclass(frozen=True)
class Solver:
    """A solver: its name, what it does, the function that runs it (`run(problem: solvers.InsertProblem,
    options, update_callback) -> losses`, editing problem.weight in place) and its options (a dataclass with
    documented defaults); preserve_regions: whether it can weigh preserve regions; check(settings): raises
    RewriteError, naming the setting, for settings it cannot run with (None: no checks of its own)."""
    name: str
    summary: str
    run: Callable
    options: type
    preserve_regions: bool = True
    check: Callable[[dict], None] | None = None

    def option_names(self) -> list[str]:
        return [f.name for f in fields(self.options)]

    def steps(self, niter: int = IterativeOptions.niter, **options) -> int:
        """How many update_callback steps it takes: `niter`, or the fast solver's fixed schedule (with
        `options`, any of FastOptions' fields, overriding the defaults; other settings are ignored)."""
        if self.options is not FastOptions:
            return niter
        opts = self.configure(**options)
        return opts.rounds * len(opts.ridges) + opts.polish

    def configure(self, **settings):
        """The solver's options from `settings` (its own fields; the rest are ignored), defaults filled in."""
        return self.options(**{k: v for k, v in settings.items() if k in self.option_names()})

    def recorded(self, **options) -> dict:
        """Every option of this solver, the defaults filled in, as an EditRecord keeps them."""
        values = asdict(self.configure(**options))
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in values.items()}

    def differing(self, options: dict) -> dict:
        """The options (as an EditRecord keeps them) that differ from this solver's defaults: what an edit
        file's `solver_options` records."""
        defaults = self.recorded()
        recorded = self.recorded(**options)
        return {k: v for k, v in recorded.items() if v != defaults[k]}


SOLVERS: dict[str, Solver] = {s.name: s for s in (
    Solver('fast', 'closed-form weighted least squares through the inverted activation, then a short Adam '
                   'polish on the exact loss (seconds on a CPU)', Deferred('rewrite.core.solvers.fast:run_fast'),
           FastOptions, check=checks.check_fast_options),
    Solver('original', "the paper's Adam on the whole weight, re-projected onto the context every piter "
                       'steps (niter steps, minutes)', Deferred('rewrite.core.solvers.adam:run_original'),
           OriginalOptions),
    Solver('linear', 'Adam on the low-rank coefficient Lambda of W + Lambda D (niter steps)',
           Deferred('rewrite.core.solvers.adam:run_linear'), IterativeOptions, preserve_regions=False),
)}
DEFAULT_SOLVER = 'fast'
