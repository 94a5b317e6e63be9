"""The registries of context-key methods and solvers: one place that names them, says what each does and
gives its options with their defaults. The rewriter (validation, defaults, the EditRecord), the command
line (choices, --help), the widget (menus, progress bars) and the metrics read them from here.

    SOLVERS['fast'].options()            # FastOptions(rounds=8, polish=300, ...)
    SOLVERS['fast'].steps(niter=2001)    # update_callback steps, for a progress bar
    KEY_METHODS['mean'].max_rank         # 1
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields


@dataclass(frozen=True)
class KeyMethod:
    """A way of turning the selected context regions' keys into orthonormal directions D [rank, I]."""
    name: str
    summary: str
    max_rank: int | None = None                # None: up to the layer's width and the selected pixels


KEY_METHODS: dict[str, KeyMethod] = {m.name: m for m in (
    KeyMethod('zca', "top principal directions of the ZCA-whitened keys, mapped back (the paper's)"),
    KeyMethod('svd', 'top left singular vectors of the covariance-adjusted keys C^-1 k'),
    KeyMethod('mean', 'the unit covariance-adjusted mean key C^-1 mean(k)', max_rank=1),
    KeyMethod('gandissect', 'the units whose quantile-normalised responses in the regions are highest'),
)}
DEFAULT_KEY_METHOD = 'zca'


@dataclass(frozen=True)
class FastOptions:
    """The closed-form solver's options (`rewrite.solvers.insert_fast` documents each)."""
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
class Solver:
    """A solver: its name, what it does and its options (a dataclass with documented defaults)."""
    name: str
    summary: str
    options: type

    def option_names(self) -> list[str]:
        return [f.name for f in fields(self.options)]

    def steps(self, niter: int = IterativeOptions.niter, **options) -> int:
        """How many update_callback steps it takes: `niter`, or the fast solver's fixed schedule (with
        `options`, any of FastOptions' fields, overriding the defaults; other settings are ignored)."""
        if self.options is not FastOptions:
            return niter
        known = {k: v for k, v in options.items() if k in self.option_names()}
        opts = FastOptions(**known)
        return opts.rounds * len(opts.ridges) + opts.polish

    def recorded(self, **options) -> dict:
        """Every option of this solver, the defaults filled in, as an EditRecord keeps them."""
        known = {k: v for k, v in options.items() if k in self.option_names()}
        values = asdict(self.options(**known))
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in values.items()}


SOLVERS: dict[str, Solver] = {s.name: s for s in (
    Solver('fast', 'closed-form weighted least squares through the inverted activation, then a short Adam '
                   'polish on the exact loss (seconds on a CPU)', FastOptions),
    Solver('original', "the paper's Adam on the whole weight, re-projected onto the context every piter "
                       'steps (niter steps, minutes)', IterativeOptions),
    Solver('linear', 'Adam on the low-rank coefficient Lambda of W + Lambda D (niter steps)', IterativeOptions),
)}
DEFAULT_SOLVER = 'fast'
