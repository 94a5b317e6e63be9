"""Running a solve: in a worker thread with progress and Cancel, the result reported, and the edit history
(undo, redo, revert, the original).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from rewrite.app.base import SolveCancelled, UserError, explain, reports_errors
from rewrite.app.parts import loss_rose
from rewrite.formats.registry import SOLVERS

__all__ = ['SolvingMixin']


class SolvingMixin:
    """GanRewriteApp's solving methods (see rewrite/app/rewriteapp.py for the state they share)."""

    def _progress_callback(self, niter: int) -> Callable:
        """update_callback(iteration, loss) for the rewriter, expecting `niter` steps: moves the bar
        and shows the loss at most every 0.1 s; raises SolveCancelled once Cancel was clicked."""
        self.progress.max, self.progress.value = niter, 0
        self.progress.layout.visibility = 'visible'
        last = [0.0]

        def update(iteration: int, loss) -> None:
            if self.cancel_requested.is_set():
                raise SolveCancelled
            now = time.monotonic()
            if now - last[0] >= 0.1 or iteration + 1 >= niter:
                last[0] = now
                self.progress.value = min(iteration + 1, niter)
                self.loss_label.value = f'iteration {iteration + 1}/{niter}  loss {float(loss):.4f}'
        return update

    def start_solve(self, action: str, work: Callable[[], None], background: bool) -> None:
        """Runs work() with every control but Cancel disabled, in a worker thread when `background`."""
        self.solving = action
        self.cancel_requested.clear()
        self._was_disabled = {widget: widget.disabled for widget in self._controls()}
        for widget in self._was_disabled:
            widget.disabled = True
        self.cancel_btn.disabled = False
        self.add_class('rwa-busy')
        if background:
            self._worker = threading.Thread(target=self._run_solve, args=(action, work), daemon=True)
            self._worker.start()
        else:
            self._run_solve(action, work)

    def _run_solve(self, action: str, work: Callable[[], None]) -> None:
        try:
            work()
        except SolveCancelled:
            self.show_message(f'{action} cancelled: the model is as it was', warning=True)
        except Exception as e:  # noqa: BLE001 - the UI must survive anything
            self.show_message(explain(action, e), error=True)
        finally:
            self.progress.layout.visibility = 'hidden'
            for widget, disabled in self._was_disabled.items():
                widget.disabled = disabled
            self.cancel_btn.disabled = True
            self.remove_class('rwa-busy')
            self.solving = None

    def wait(self, timeout: float | None = None) -> bool:
        """Waits for a background solve to end; True when none is running any more."""
        if self._worker is not None:
            self._worker.join(timeout)
        return self.solving is None

    @reports_errors('Cancel', while_busy=True)
    def cancel(self, _button=None) -> None:
        """Stops the running solve at its next step; the rewriter restores the weights."""
        if not self.solving:
            raise UserError('nothing to cancel: no change is being computed')
        self.cancel_requested.set()
        self.show_message(f'cancelling {self.solving}: it stops at its next step, the model stays as it was',
                          warning=True)

    def _rewrite(self, action: str, apply: Callable, request: dict, doing: str, done: str, clicked: bool,
                 **options) -> None:
        """Runs gw.apply_edit / apply_erase with the settings and a progress bar, then repaints and reports;
        in a worker thread when clicked (and `background`), so that Cancel can stop it."""
        if self.other_layer is not None:
            raise UserError(f'the loaded edit was made for layer {self.other_layer} and this interface rewrites layer '
                            f'{self.gw.layernum}: click "Switch to layer {self.other_layer}" (or "Apply here anyway")')
        settings = self._settings()
        options = {**self._file_options(settings['solver']), **options}
        self.show_message(doing)
        progress = self._progress_callback(SOLVERS[settings['solver']].steps(**settings, **options))

        def work() -> None:
            record = apply(request, update_callback=progress, **settings, **options)
            self.loss_label.value = (f'{len(record.losses)} steps, loss {record.initial_loss:.4f} -> '
                                     f'{record.final_loss:.4f}')
            self.refresh()
            self.preserve_panel.after_change(record)      # the before / after strip of what changed most
            self._report_change(record, done)
        self.start_solve(action, work, background=self.background and clicked)

    def _report_change(self, record, done: str) -> None:
        """'<done>: loss a -> b in s, held-out change x' in green, or a warning in amber: when the loss rose
        (and whether the rewriter rolled the change back), or when the change damaged the held-out samples
        beyond the threshold (rewrite/core/damage.py; with an Undo button beside it)."""
        losses = f'loss {record.initial_loss:.4g} -> {record.final_loss:.4g} in {record.seconds:.1f} s'
        heldout = getattr(record, 'heldout_change', None)
        if heldout is not None:
            inside = '' if record.paste_change is None else f' (inside the paste region {record.paste_change:.3f})'
            losses += f'; held-out change {heldout:.3f}{inside}'
        damaged = bool(getattr(record, 'damage_warning', '')) and not getattr(record, 'rolled_back', False)
        self.damage_undo_btn.layout.display = None if damaged else 'none'
        if damaged and not loss_rose(record):
            self.show_message(f'{done}, but it damaged other images: {losses}, above the threshold '
                              f'{record.damage_threshold:g} (held-out samples outside where the rule acts changed '
                              f'that much); Undo removes it (or try the layer it was made for, another rank or region)',
                              warning=True)
        elif getattr(record, 'rolled_back', False):
            self.show_message(f'the loss rose ({losses}), so the change was rolled back: the model is as it was '
                              '(try a lower learning rate, another solver or region)', warning=True)
        elif loss_rose(record):
            self.show_message(f'the loss rose ({losses}): the model was changed, but the edit ends worse than it '
                              'started; Undo removes it (or try another rank, solver or region)', warning=True)
        else:
            self.show_message(f'{done}: {losses}')

    @reports_errors('Execute Change')
    def execute(self, _button=None) -> None:
        request = self.checked_request(('object', 'paste'), 'Execute Change')
        self._rewrite('Execute Change', self.gw.apply_edit, request, 'rewriting the model...', 'changed the model',
                      clicked=_button is not None)

    @reports_errors('Erase')
    def erase(self, _button=None) -> None:
        request = self.checked_request(('paste',), 'Erase')
        self._rewrite('Erase', self.gw.apply_erase, request, 'erasing from the model...',
                      'erased the context from the model', clicked=_button is not None,
                      drank=int(self.drank_box.value))

    @reports_errors('Undo')
    def undo(self, _button=None) -> None:
        self._step_history(self.gw.undo, 'nothing to undo: no change has been executed',
                           'undid the last {} (Redo re-applies it)')

    @reports_errors('Redo')
    def redo(self, _button=None) -> None:
        self._step_history(self.gw.redo, 'nothing to redo: no change has been undone', 'redid the {}')

    def _step_history(self, step: Callable, nothing: str, done: str) -> None:
        """step() (the rewriter's undo or redo) -> its record, or UserError(nothing); repaint, report done."""
        record = step()
        self.damage_undo_btn.layout.display = 'none'
        if record is None:
            raise UserError(nothing)
        self.loss_label.value = ''                           # the last solve's figures are not this state's
        self.refresh()
        self.show_message(done.format(record.kind))

    @reports_errors('History')
    def go_to(self, state: int) -> None:
        """Undoes or redoes changes until `state` of them are applied (0: the original model)."""
        total = len(self.gw.history) + len(self.gw.undone)
        if isinstance(state, bool) or not isinstance(state, int) or not 0 <= state <= total:
            raise UserError(f'history: no state {state!r}; there are 0..{total}')
        while len(self.gw.history) > state:
            self.gw.undo()
        while len(self.gw.history) < state:
            self.gw.redo()
        self.loss_label.value = ''
        self.refresh()
        self.show_message('back to the original model (Redo or the history re-applies the changes)' if state == 0
                          else f'now at change {state} of {total}')

    @reports_errors('Revert')
    def revert(self, _button=None) -> None:
        self.gw.revert()
        self.loss_label.value = ''
        self.refresh()
        self.show_message('reverted to the original model (the history is cleared)')

    @reports_errors('Toggle Original')
    def toggle_original(self, _button=None) -> None:
        self.showing_original = not self.showing_original
        self.original_btn.description = 'Toggle Changed' if self.showing_original else 'Toggle Original'
        self.repaint_grid()
        self.show_message('showing the original model' if self.showing_original else 'showing the changed model')
