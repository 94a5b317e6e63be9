"""The edit history of a model: atomic edits (the changed parameters restored on any error or interrupt), keeping
the better of before and after when the goal loss rises, undo / redo / revert, and the original weights on
request.
"""

from __future__ import annotations

import contextlib
import time
import warnings
from collections.abc import Callable, Sequence

import torch

from .solvers import EditRecord

LOSS_TOLERANCE = 0.5    # an edit whose goal loss ends above (1 + this) x its initial loss is rolled back


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
        """Snapshot the parameters an edit changes; restore them on any error or interrupt."""
        state = dict(self.model.named_parameters())
        names = names or [self.weight_name]
        saved = {n: state[n].detach().clone() for n in names}
        t0 = time.perf_counter()
        try:
            yield saved
            bad = [n for n in names if not torch.isfinite(state[n]).all()]
            if bad:
                raise FloatingPointError(f'the edit made non-finite weights in {bad} (the weights were restored)')
        except BaseException:
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
