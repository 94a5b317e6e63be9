"""GanRewriteApp: the notebook interface for rewriting a generator (ipywidgets + ipyevents).

    gw = SeqStyleGanRewriter(model, z_dataset_for_model(model, 1000), layernum=6)
    app = GanRewriteApp(gw, mask_dir='masks', size=256, num_canvases=9)
    display(app)

Paint a region on a sample, then Copy it, paint where it should go and Paste, Add to Context the
regions where the new rule should apply, and Execute Change: the layer's weights are rewritten and
the grid repaints from the edited model. Edits are saved to and loaded from `mask_dir` in the edit-file
format of the original tool. Every handler reports problems on the message line and never raises.

The class is put together from one mixin a concern: layout.py (controls, canvases, rows), canvas.py (the grid,
painting, Copy / Paste / context, search), solving.py (the worker thread, Cancel, history), fileactions.py
(Save / Load / Export, layer switches); panels (preservepanel.py, advisepanel.py) build on base.py.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import ipywidgets as widgets
import torch

from rewrite.app.base import AppPanel, SolveCancelled, UserError, reports_errors
from rewrite.app.canvas import CanvasMixin
from rewrite.app.fileactions import FileActionsMixin
from rewrite.app.layout import LayoutMixin
from rewrite.app.parts import format_image_numbers, parse_image_numbers, shift_mask
from rewrite.app.solving import SolvingMixin
from rewrite.core.rewriter import DEFAULT_SOLVER

__all__ = ['GanRewriteApp', 'UserError', 'SolveCancelled', 'AppPanel', 'reports_errors', 'parse_image_numbers',
           'format_image_numbers', 'shift_mask']


class GanRewriteApp(LayoutMixin, CanvasMixin, SolvingMixin, FileActionsMixin, widgets.VBox):
    """Interactive rewriting of `gw.model` (a SeqStyleGanRewriter); display it in a notebook.

    Args:
        gw: the rewriter (its model is edited in place).
        mask_dir: folder of saved edits (default gw.cachedir, else ./masks).
        size: side of each sample canvas in pixels; masks are painted at this resolution.
        num_canvases: number of samples in the grid.
        rank, lr, niter, piter, solver: the initial Execute Change settings.
        columns: samples per grid row at most (fewer when the page is narrower).
        background: clicks on Execute Change / Erase solve in a worker thread, so the page stays live
            and Cancel can stop the solve (calls from code, `app.execute()`, always run to the end).

    While a solve runs every control but Cancel is disabled; Cancel stops it at its next step and the
    weights stay as they were. Keys, with the mouse over the pictures: Ctrl+Z undo, Ctrl+Shift+Z or
    Ctrl+Y redo, Delete (or Backspace) removes the selected context thumbnail.
    """

    def __init__(self, gw, mask_dir: str | Path | None = None, size: int = 256, num_canvases: int = 9,
                 rank: int = 1, lr: float = 0.05, niter: int = 2001, piter: int = 10, solver: str = DEFAULT_SOLVER,
                 columns: int = 3, background: bool = True):
        super().__init__()
        self.add_class('rwa')
        self.gw = gw
        self.size = int(size)
        self.num_canvases = int(num_canvases)
        self.mask_dir = Path(mask_dir if mask_dir is not None else (getattr(gw, 'cachedir', None) or 'masks'))
        self.request: dict = {}
        self.sel: list[int] = list(range(min(self.num_canvases, gw.num_images)))
        self.current: int | None = None
        self.showing_original = False
        self.showing_matches = False
        self.message = ''
        self.background = bool(background)
        self.solving: str | None = None          # the action whose solve is running
        self.cancel_requested = threading.Event()
        self._worker: threading.Thread | None = None
        self._was_disabled: dict = {}
        self.selected_context: int | None = None
        self._keep_hint = ''
        self._pending_save: Path | None = None            # the file Overwrite replaces ...
        self._pending_write: Callable[[Path], None] | None = None      # ... and how it writes it
        self._updating_history = False
        self._model_version = 0
        self._image_cache: dict[tuple, torch.Tensor] = {}
        self._shown: list[tuple | None] = [None] * self.num_canvases
        self._context_key_cache: torch.Tensor | None = None
        self._context_version = 0
        self.file_setting: dict = {}             # how the loaded edit was made (its file's layer, rank, solver...)
        self.other_layer: int | None = None      # the loaded edit's layer while it is not the app's (not overridden)
        self._build_controls(rank, lr, niter, piter, solver)
        self._build_canvases()
        self.children = self._layout(columns)
        self.repaint_grid()
        self._show_setting()
        self.show_message(f'{gw.num_images} samples, layer {gw.layernum}: paint a region on a sample to begin')
