"""What a panel of the widget is built on, and the protocol it may use of the app.

A panel (rewrite/app/preservepanel.py, advisepanel.py) is an `AppPanel` (a VBox holding `app`). It may read
the app's state: `gw` (the rewriter), `request` (the edit being built), `sel` (image numbers on the canvases),
`current` (the selected canvas), `size`, `canvases`, `progress`, `rank_box`, `loss_label`, `other_layer`,
`background`, `cancel_requested` (a threading.Event), `solving`; and call these methods of it, nothing else:
`button`, `show_message`, `images`, `region_picture`, `selection`, `checked_request`, `start_solve`,
`repaint_grid`, `ask_layer`, `switch_layer`. Handlers are wrapped in `reports_errors`, which shows a
UserError / RewriteError on the message line instead of raising.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import ipywidgets as widgets

from rewrite.core.rewriter import RewriteError
from rewrite.formats import editfile
from rewrite.formats.savededits import SavedEditError

__all__ = ['AppPanel', 'explain', 'reports_errors', 'SolveCancelled', 'UserError']


class UserError(Exception):
    """A problem with what the user asked for; shown on the message line."""


class SolveCancelled(KeyboardInterrupt):
    """Raised from the progress callback after Cancel: the rewriter restores the weights as on an interrupt."""


def explain(action: str, error: Exception) -> str:
    """The message line's text for an error raised while carrying out `action`."""
    if isinstance(error, (UserError, editfile.EditFileError, RewriteError, SavedEditError)):
        return str(error)
    return f'{action} failed: {type(error).__name__}: {error}'


def reports_errors(action: str, while_busy: bool = False) -> Callable:
    """Decorates a handler so that nothing raises into the notebook: user errors (UserError, invalid edit
    files, requests the rewriter refuses) show as a message, anything else as '<action> failed: ...'.
    While a solve runs the handler is not carried out (unless `while_busy`) and the message says so, so a
    click made during a solve is never replayed after it."""
    def decorate(handler: Callable) -> Callable:
        @functools.wraps(handler)
        def guarded(self, *args, **kwargs):
            running = getattr(self, 'solving', None)
            if running and not while_busy:
                self.show_message(f'{action} was not carried out: {running} is still running '
                                  '(wait for it to finish, or click Cancel)', warning=True)
                return None
            try:
                return handler(self, *args, **kwargs)
            except Exception as e:  # noqa: BLE001 - the UI must survive anything
                self.show_message(explain(action, e), error=True)
        return guarded
    return decorate


class AppPanel(widgets.VBox):
    """A panel of the app in its own module (preserve regions, the advisor): keeps the app, and reports
    through it, so its handlers decorated with `reports_errors` show messages in the app's bar and wait
    for the app's solve."""

    def __init__(self, app, **kwargs):
        super().__init__(**kwargs)
        self.app = app

    @property
    def solving(self) -> str | None:
        return self.app.solving

    def show_message(self, text: str, error: bool = False, warning: bool = False) -> None:
        self.app.show_message(text, error=error, warning=warning)
