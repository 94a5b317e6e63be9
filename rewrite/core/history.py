"""The edit history of a model: atomic edits (the changed parameters restored on any error or interrupt), keeping
the better of before and after when the goal loss rises, undo / redo / revert, and the original weights on
request.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

__all__ = ['EditHistory', 'EditRecord', 'InterruptGuard', 'LOSS_TOLERANCE']

LOSS_TOLERANCE = 0.5    # an edit whose goal loss ends above (1 + this) x its initial loss is rolled back


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
    warning: str = ''             # set when the goal loss ended above its initial value
    rolled_back: bool = False     # the rise exceeded LOSS_TOLERANCE: the weights were restored
    preserve_weight: float | None = None     # with preserve regions: the weight of their term
    preserve_change: float | None = None     # mean abs change of the layer's outputs in the preserve regions
    key_method: str = ''                     # how the context directions were made (rewrite/formats/registry.py)
    options: dict = field(default_factory=dict)   # every option the solver ran with, defaults filled in
    layer: int | None = None                 # the layer the change was made at
    heldout_change: float | None = None      # damage (core/damage.py): mean abs pixel change of held-out samples
    paste_change: float | None = None        # outside where the rule acts, and inside the request's paste region
    damage_threshold: float | None = None    # the held-out change above which it is damage
    damage_warning: str = ''                 # set when heldout_change exceeds damage_threshold

    def __repr__(self) -> str:
        """A one-line summary (the losses of every step and the request's masks are left out)."""
        fields = sorted(self.request or {})
        outcome = ', rolled back' if self.rolled_back else ', loss rose' if self.warning else ''
        layer = '' if self.layer is None else f'layer={self.layer}, '
        damage = ('' if self.heldout_change is None else f', held-out change {self.heldout_change:.3f}'
                  + (' (damage)' if self.damage_warning else ''))
        return (f'EditRecord(kind={self.kind!r}, {layer}solver={self.solver!r}, rank={self.rank}, '
                f'loss {self.initial_loss:.4g} -> {self.final_loss:.4g}{outcome}{damage}, {len(self.losses)} steps, '
                f'{self.seconds:.2f} s, request fields {fields})')


class InterruptGuard:
    """SIGINT made safe for a restore: while the guard is active (in the main thread; elsewhere it does
    nothing), the first SIGINT is handled as before (the handler that was installed raises KeyboardInterrupt),
    every later one is held back (counted in `held`) until the guard ends, so that the restore which the
    first one starts cannot be interrupted by a second; `hold()` holds back every SIGINT from then on.

        with InterruptGuard() as guard:
            try:
                work()
            except BaseException:
                guard.hold()
                restore()
                raise
    """

    def __init__(self):
        self.previous = None
        self.holding = False
        self.held = 0
        self._installed = False

    def __enter__(self) -> InterruptGuard:
        if threading.current_thread() is threading.main_thread():
            try:
                self.previous = signal.getsignal(signal.SIGINT)
                signal.signal(signal.SIGINT, self._handle)
                self._installed = True
            except (ValueError, OSError):         # not the main interpreter: signals are not ours to handle
                self._installed = False
        return self

    def __exit__(self, *exc) -> None:
        if self._installed:
            signal.signal(signal.SIGINT, self.previous)
            self._installed = False

    def hold(self) -> None:
        self.holding = True

    def _handle(self, signum, frame) -> None:
        if self.holding:
            self.held += 1
            return
        previous = self.previous
        if previous == signal.SIG_IGN:
            return
        try:
            if callable(previous):
                previous(signum, frame)
            else:                                 # SIG_DFL or a handler not installed from Python
                raise KeyboardInterrupt
        except BaseException:
            self.holding = True                   # the first interrupt is on its way: the rest wait
            raise


class EditHistory:
    """Edits of `model`'s parameters (by default the one named `weight_name`). history: [(record, the weights
    from before it)]; undone: [(record, the weights it made)], for redo. on_change() runs after every change."""

    def __init__(self, model: torch.nn.Module, weight_name: str, on_change: Callable[[], None]):
        self.model, self.weight_name, self.on_change = model, weight_name, on_change
        self.original_state = {n: t.detach().clone() for n, t in model.state_dict().items()}
        self.history: list[tuple[EditRecord, dict[str, torch.Tensor]]] = []
        self.undone: list[tuple[EditRecord, dict[str, torch.Tensor]]] = []

    def _restore(self, saved: dict[str, torch.Tensor]) -> None:
        state = dict(self.model.named_parameters())
        with torch.no_grad():
            for n, v in saved.items():
                state[n].copy_(v)

    @contextlib.contextmanager
    def atomic_edit(self, record: EditRecord, names: Sequence[str] | None = None):
        """Snapshot the parameters an edit changes; restore them on any error or interrupt.

        Atomic under repeated SIGINTs (InterruptGuard): the first interrupts the edit, later ones wait
        until the weights are restored; one that arrives as the edit finishes undoes it too, so an
        interrupted edit always leaves the weights bit-identical to before."""
        state = dict(self.model.named_parameters())
        names = names or [self.weight_name]
        saved = {n: state[n].detach().clone() for n in names}
        t0 = time.perf_counter()
        with InterruptGuard() as guard:
            try:
                yield saved
                guard.hold()
                bad = [n for n in names if not torch.isfinite(state[n]).all()]
                if bad:
                    raise FloatingPointError(f'the edit made non-finite weights in {bad} (the weights were restored)')
                if guard.held:
                    raise KeyboardInterrupt
            except BaseException:
                guard.hold()
                self._restore(saved)
                raise
            record.seconds = time.perf_counter() - t0
            if record.rolled_back:
                return
            self.history.append((record, saved))
            self.undone.clear()
            self.on_change()

    def keep_the_better(self, record: EditRecord, saved: dict[str, torch.Tensor]) -> None:
        """After a solve: warns when the goal loss ended above its initial value, and rolls the weights back
        to `saved` (record.rolled_back) when it ended above (1 + LOSS_TOLERANCE) x the initial loss. Below
        that a rise is kept with the warning: the original solver's periodic re-projection legitimately
        ends a little above its start on some edits (README: 0.410 -> 0.470), as the original release does."""
        if not record.final_loss > record.initial_loss:
            return
        rise = f'the goal loss rose from {record.initial_loss:.4g} to {record.final_loss:.4g} ({record.solver} solver)'
        if record.final_loss <= record.initial_loss * (1 + LOSS_TOLERANCE):
            record.warning = f'{rise}; the result is kept: try another solver, layer or rank'
        else:
            self._restore(saved)
            record.rolled_back = True
            record.warning = (f'{rise}, more than {LOSS_TOLERANCE:.0%} above: the change was rolled back (weights '
                              'unchanged); try a lower learning rate or another solver')
        warnings.warn(record.warning, RuntimeWarning, stacklevel=4)

    def undo(self) -> EditRecord | None:
        """Restores the weights from before the last edit; returns its record (None if none)."""
        if not self.history:
            return None
        record, saved = self.history.pop()
        self.undone.append((record, self._swap_weights(saved)))
        return record

    def redo(self) -> EditRecord | None:
        """Re-applies the last undone edit (a new edit or revert() forgets undone ones); returns its
        record (None if there is none)."""
        if not self.undone:
            return None
        record, made = self.undone.pop()
        self.history.append((record, self._swap_weights(made)))
        return record

    def _swap_weights(self, weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Copies `weights` into the model's parameters of those names; returns their previous values."""
        state = dict(self.model.named_parameters())
        previous = {n: state[n].detach().clone() for n in weights}
        self._restore(weights)
        self.on_change()
        return previous

    def revert(self) -> None:
        """Restores the original model (all edits undone and forgotten)."""
        self.model.load_state_dict(self.original_state)
        self.history.clear()
        self.undone.clear()
        self.on_change()

    @contextlib.contextmanager
    def original_model(self):
        """Within the block, the model has its original weights (for 'Toggle original')."""
        current = {n: t.detach().clone() for n, t in self.model.state_dict().items()}
        self.model.load_state_dict(self.original_state)
        try:
            yield self.model
        finally:
            self.model.load_state_dict(current)
