"""GanRewriteApp: the notebook interface for rewriting a generator (ipywidgets + ipyevents).

    gw = SeqStyleGanRewriter(model, z_dataset_for_model(model, 1000), layernum=6)
    app = GanRewriteApp(gw, mask_dir='masks', size=256, num_canvases=9)
    display(app)

Paint a region on a sample, then Copy it, paint where it should go and Paste, Add to Context the
regions where the new rule should apply, and Execute Change: the layer's weights are rewritten and
the grid repaints from the edited model. Edits are saved to and loaded from `mask_dir` in the edit-file
format of the original tool. Every handler reports problems on the message line and never raises.
"""

from __future__ import annotations

import base64
import copy
import functools
import html
import re
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import ipyevents
import ipywidgets as widgets
import numpy as np
import torch

from utils import imgviz
from utils.generators import save_generator
from utils.paintwidget import PaintWidget, encode_picture

from . import editfile, edits
from .ganrewrite import DEFAULT_SOLVER, ERASE_UNITS, RewriteError
from .methods import SOLVERS
from .savededits import SavedEditError, export_path, saved_edit_names, saved_edit_path

SOLVER_CHOICES = tuple(SOLVERS)                 # the solver registry's names (rewrite/methods.py)
STYLE = '''<style>
.rwa-title { font-size: 20px; font-weight: bold; margin-right: 16px; }
.rwa-message { min-height: 1.6em; font-family: monospace; flex: 1 1 320px; min-width: 0; }
.rwa-message, .rwa-hint, .rwa-message .widget-html-content, .rwa-hint .widget-html-content {
    white-space: normal; overflow-wrap: anywhere; line-height: 1.3; height: auto; }
.rwa-tray { background: #f2f2f2; min-height: 100px; }
.rwa .rwa-cell, .rwa .rwa-pane, .rwa .rwa-tray { overflow: visible; }   /* sized to fit: never a scroll box */
.rwa .paint-widget, .rwa .rwa-cell > * { margin: 0; }   /* the canvas fills its cell exactly (no widget margin) */
.rwa-thumb { cursor: pointer; margin: 2px; border: 3px solid transparent; }
.rwa-thumb-selected { border-color: #1565c0; }
.rwa-grid { border-left: 4px dashed gray; padding-left: 6px; }
.rwa-cell { position: relative; }
.rwa-busy .paint-widget, .rwa-busy .rwa-thumb { opacity: 0.6; cursor: progress; }   /* not painted while solving */
.rwa-body:focus { outline: 1px dashed #90a4ae; }   /* keys go to the widget */
.rwa-number { position: absolute; top: 3px; left: 3px; z-index: 2; pointer-events: none; margin: 0; padding: 0 4px;
              background: rgba(255, 255, 255, 0.8); border-radius: 3px; font: bold 12px monospace; line-height: 16px; }
.rwa-confirm { background: #fff4e0; padding: 2px 6px; }
.rwa-change-rows .widget-html-content { align-self: center; }   /* 'before' / 'after' level with their row */
.rwa-history { width: 100%; }
.rwa-history .widget-radio-box { width: 100%; flex: 1 1 auto; min-width: 0; }
.rwa-history .widget-radio-box label { white-space: normal; overflow-wrap: anywhere; height: auto; line-height: 1.3;
                                       margin: 1px 0; }   /* one entry a line, long ones wrapped: every state shown */
</style>'''
WARNING_COLOR = '#8a4b00'            # amber: the change happened but did not do what was asked
WIDE = {'description_width': 'initial'}   # descriptions never cut short
DOWNLOAD_LIMIT = 64 << 20            # bytes: a bigger export is not offered as a download link from the page


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


def parse_image_numbers(text: str, num_images: int, limit: int) -> list[int]:
    """'200-212', '5,9,12' or a mix -> the image numbers, in order, at most `limit` of them.

    Raises UserError naming a malformed item or a number outside 0..num_images-1."""
    numbers: list[int] = []
    items = [item.strip() for item in str(text).split(',') if item.strip()]
    if not items:
        raise UserError(f'type image numbers, e.g. 0-8 or 5,9,12 (0..{num_images - 1})')
    for item in items:
        match = re.fullmatch(r'(\d{1,12})\s*(?:-\s*(\d{1,12}))?', item)
        if match is None:
            raise UserError(f'cannot read {item!r} as an image number or a range like 200-212')
        first = int(match[1])
        last = int(match[2]) if match[2] is not None else first
        if last < first:
            raise UserError(f'the range {item!r} runs backwards; write it as {last}-{first}')
        if last >= num_images:
            raise UserError(f'{item!r} goes beyond the z-sample: images are numbered 0..{num_images - 1}')
        numbers.extend(range(first, min(last, first + limit) + 1))
        if len(numbers) >= limit:
            break
    return numbers[:limit]


def format_image_numbers(numbers: Sequence[int]) -> str:
    """[3, 4, 5, 9] -> '3-5,9'."""
    runs: list[list[int]] = []
    for n in numbers:
        if runs and n == runs[-1][1] + 1:
            runs[-1][1] = n
        else:
            runs.append([n, n])
    return ','.join(str(a) if a == b else f'{a}-{b}' for a, b in runs)


def wrapping_row(*children: widgets.Widget, align: str = 'center') -> widgets.HBox:
    """An HBox whose children wrap onto the next line instead of shrinking or being clipped."""
    return widgets.HBox(list(children), layout=widgets.Layout(flex_flow='row wrap', align_items=align))


def click_center(mask: np.ndarray) -> tuple[int, int] | None:
    """Centre (row, col) of the bounding box of mask > 0, or None when empty."""
    top, left, bottom, right = editfile.bounding_box(mask)
    return None if bottom == 0 else ((top + bottom) // 2, (left + right) // 2)


def shift_mask(mask: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """The mask moved by (dy, dx) pixels; what leaves the frame is dropped, what enters is empty."""
    height, width = mask.shape
    moved = np.zeros_like(mask)
    src_y, dst_y = slice(max(0, -dy), min(height, height - dy)), slice(max(0, dy), min(height, height + dy))
    src_x, dst_x = slice(max(0, -dx), min(width, width - dx)), slice(max(0, dx), min(width, width + dx))
    moved[dst_y, dst_x] = mask[src_y, src_x]
    return moved


def describe_record(record) -> str:
    """One line of the applied-changes list for an EditRecord."""
    request = record.request or {}
    parts = [record.kind]
    if 'object' in request and record.kind == 'edit':
        parts.append(f'copy from #{request["object"][0]}')
    if 'paste' in request:
        parts.append(f'{"paste into" if record.kind == "edit" else "in"} #{request["paste"][0]}')
    parts.append(f'context {[pair[0] for pair in request.get("key", [])] or "= paste"}')
    layer = getattr(record, 'layer', None)
    parts.append(f'{"" if layer is None else f"layer {layer}, "}rank {record.rank}, {record.solver}, loss '
                 f'{record.initial_loss:.4g} -> {record.final_loss:.4g}{" (rose)" if loss_rose(record) else ""}, '
                 f'{record.seconds:.1f} s')
    heldout = getattr(record, 'heldout_change', None)
    if heldout is not None:
        parts.append(f'held-out change {heldout:.3f}{" (damage)" if record.damage_warning else ""}')
    return ', '.join(parts)


def download_link(path: Path, limit: int | None = None) -> str:
    """An HTML link that downloads the file at `path` from the page itself (a data: URL, so it works where the
    server does not serve files, as on a Voila page); '' for a file over `limit` bytes (DOWNLOAD_LIMIT)."""
    size = path.stat().st_size
    if size > (DOWNLOAD_LIMIT if limit is None else limit):
        return ''
    with open(path, 'rb') as f:
        data = base64.b64encode(f.read(size)).decode('ascii')
    name = html.escape(path.name, quote=True)
    return (f'<a download="{name}" href="data:application/octet-stream;base64,{data}" '
            f'title="the exported checkpoint">download {name} ({size / 2 ** 20:.1f} MB)</a>')


def loss_rose(record) -> bool:
    """Whether an edit ended with a higher loss than it started with (it made things worse)."""
    return bool(record.final_loss > record.initial_loss)


class GanRewriteApp(widgets.VBox):
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
        self._cancel = threading.Event()
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

    # ---- construction ----------------------------------------------------------------------------
    def _button(self, label: str, handler: Callable, style: str = '', tooltip: str = '') -> widgets.Button:
        button = widgets.Button(description=label, button_style=style, tooltip=tooltip,
                                layout=widgets.Layout(width='auto', flex='0 0 auto'))
        button.on_click(handler)
        return button

    def _build_controls(self, rank: int, lr: float, niter: int, piter: int, solver: str) -> None:
        b = self._button
        self.search_btn = b('Search', self.search, tooltip='show the samples that respond most to the context')
        self.original_btn = b('Toggle Original', self.toggle_original, tooltip='show the unedited model')
        self.execute_btn = b('Execute Change', self.execute, style='success', tooltip='rewrite the model')
        self.context_btn = b('Add to Context', self.add_context, tooltip='the selected region joins the context')
        self.matches_btn = b('Show Context Matches', self.toggle_matches, tooltip='where the context key responds')
        self.copy_btn = b('Copy', self.copy, tooltip='copy the selected region')
        self.paste_btn = b('Paste', self.paste, tooltip='paste the copy at the selected region')
        self.match_btn = b('Match Sel', self.match_selection, tooltip='samples that respond most to the selection')
        self.clear_btn = b('Clear', self.clear_selection, tooltip='clear the painted selection')
        self.erase_btn = b('Erase', self.erase, style='warning', tooltip='remove what the context shows from the '
                                                                         'pasted region')
        self.undo_btn = b('Undo', self.undo, tooltip='undo the last executed change (Ctrl+Z over the pictures)')
        self.redo_btn = b('Redo', self.redo, tooltip='re-apply the last undone change (Ctrl+Shift+Z or Ctrl+Y)')
        self.cancel_btn = b('Cancel', self.cancel, tooltip='stop the running solve; the model stays as it was')
        self.cancel_btn.disabled = True
        self.remove_btn = b('Remove', self.remove_selected_context,
                            tooltip='drop the selected context picture (Delete over the pictures)')
        self.overwrite_btn = b('Overwrite', self.confirm_overwrite, style='danger', tooltip='replace the saved edit')
        self.keep_btn = b('Keep', self.keep_saved, tooltip='keep the saved edit; type another name')
        self.revert_btn = b('Revert', self.revert, style='danger', tooltip='back to the original model')
        self.save_btn = b('Save', self.save, tooltip='save the edit under this name')
        self.load_btn = b('Load', self.load, tooltip='load the named edit')
        self.export_btn = b('Export', self.export, tooltip='save the rewritten generator as a checkpoint')
        self.switch_layer_btn = b('Switch layer', self.switch_to_file_layer, style='warning',
                                  tooltip="rewrite the layer the loaded edit was made for (a new rewriter of it)")
        self.override_layer_btn = b('Apply here anyway', self.override_layer,
                                    tooltip="allow Execute / Erase of the loaded edit at this app's layer")
        self.damage_undo_btn = b('Undo', self.undo, style='warning', tooltip='undo the change that damaged the '
                                                                            'held-out samples')
        self.damage_undo_btn.layout.display = 'none'
        self.setting_label = widgets.HTML(value='')
        self.setting_label.add_class('rwa-setting')
        self.numbers_box = widgets.Text(value=format_image_numbers(self.sel), description='Images', style=WIDE,
                                        continuous_update=False, layout=widgets.Layout(width='260px'))
        self.numbers_box.observe(self.change_numbers, names='value')
        self.brush_slider = widgets.IntSlider(value=10, min=1, max=max(8, self.size // 4), description='brush',
                                              style=WIDE, continuous_update=False, layout=widgets.Layout(width='260px'))
        self.brush_slider.observe(self.change_brush, names='value')
        self.rank_box = widgets.BoundedIntText(value=rank, min=1, max=int(self.gw.k_shape[1]), description='rank',
                                               style=WIDE, layout=widgets.Layout(width='140px'))
        self.lr_box = widgets.BoundedFloatText(value=lr, min=1e-6, max=10.0, step=0.01, description='lr', style=WIDE,
                                               layout=widgets.Layout(width='150px'))
        self.niter_box = widgets.BoundedIntText(value=niter, min=1, max=100000, description='iterations', style=WIDE,
                                                layout=widgets.Layout(width='170px'))
        self.piter_box = widgets.BoundedIntText(value=piter, min=1, max=10000, description='proj every', style=WIDE,
                                                layout=widgets.Layout(width='160px'))
        channels = int(self.gw.k_shape[1])
        self.drank_box = widgets.BoundedIntText(value=min(ERASE_UNITS, channels), min=1, max=channels,
                                                description='erase units', style=WIDE,
                                                layout=widgets.Layout(width='170px'),
                                                tooltip='Erase: how many of the context\'s top units are zeroed '
                                                        f'in the goal (the original used {ERASE_UNITS} of 512)')
        self.solver_box = widgets.Dropdown(options=SOLVER_CHOICES, value=solver, description='solver', style=WIDE,
                                           layout=widgets.Layout(width='190px'))
        self.solver_box.observe(self._solver_changed, names='value')
        self._solver_changed({'new': solver})
        self.rank_box.observe(lambda _change: self._show_setting(), names='value')
        self.name_box = widgets.Combobox(placeholder='edit name', options=self.saved_names(), ensure_option=False,
                                         layout=widgets.Layout(width='200px'))
        self.name_box.add_class('rwa-name')
        self.export_box = widgets.Text(value=str(self.mask_dir / 'rewritten.pt'), layout=widgets.Layout(width='260px'))
        self.export_box.add_class('rwa-export')
        self.download_link = widgets.HTML(value='')          # after Export: the checkpoint as a download
        self.download_link.add_class('rwa-download')
        self.progress = widgets.IntProgress(value=0, min=0, max=1, layout=widgets.Layout(width='300px',
                                                                                          visibility='hidden'))
        self.loss_label = widgets.Label(value='')
        self.loss_label.add_class('rwa-loss')
        self.message_line = widgets.HTML(value='')
        self.message_line.add_class('rwa-message')
        self.history_box = widgets.RadioButtons(options=[], description='history', style=WIDE,
                                                layout=widgets.Layout(width='100%', display='none'))
        self.history_box.add_class('rwa-history')
        self.history_box.observe(self._history_clicked, names='value')
        self.confirm_label = widgets.HTML(value='')
        self.confirm_label.add_class('rwa-hint')
        self.confirm_row = wrapping_row(self.confirm_label, self.overwrite_btn, self.keep_btn)
        self.confirm_row.layout.display = 'none'
        self.confirm_row.add_class('rwa-confirm')
        self.layer_label = widgets.HTML(value='')
        self.layer_label.add_class('rwa-hint')
        self.layer_row = wrapping_row(self.layer_label, self.switch_layer_btn, self.override_layer_btn)
        self.layer_row.layout.display = 'none'
        self.layer_row.add_class('rwa-confirm')
        self.layer_row.add_class('rwa-layer-ask')

    def _build_canvases(self) -> None:
        small = self.size * 3 // 4
        self.canvases = [PaintWidget(size=self.size, brushsize=self.brush_slider.value)
                         for _ in range(self.num_canvases)]
        for index, canvas in enumerate(self.canvases):
            canvas.add_class('rwa-grid-canvas')
            canvas.on_stroke_start(functools.partial(self._select_canvas, index))
        self.copy_canvas = PaintWidget(size=small, brushsize=self.brush_slider.value * 3 / 4)
        self.copy_canvas.add_class('rwa-copy-canvas')
        self.copy_canvas.on_mask(self.change_copy_mask)
        self.paste_canvas = PaintWidget(size=small, brushsize=4, oneshot=True, opacity=0.0)
        self.paste_canvas.add_class('rwa-paste-canvas')
        self.paste_canvas.on_mask(self.move_paste)
        self.thumbs: list[widgets.Image] = []
        self.tray = widgets.HBox(layout=widgets.Layout(width=f'{max(self.size * 3 // 2 + 12, 330)}px',
                                                       min_height=f'{small // 2 + 24}px', flex_flow='row wrap'))
        self.tray.add_class('rwa-tray')
        self.number_labels = [widgets.HTML(value='') for _ in self.canvases]
        self.cells = [widgets.Box([label, canvas], layout=widgets.Layout(width=f'{self.size}px'))
                      for label, canvas in zip(self.number_labels, self.canvases, strict=True)]
        for label, cell in zip(self.number_labels, self.cells, strict=True):
            label.add_class('rwa-number')
            cell.add_class('rwa-cell')

    def _layout(self, columns: int) -> list[widgets.Widget]:
        """Rows that wrap (nothing is clipped or shrunk in a narrow output area): the title, the actions,
        the solver settings, the image and file controls, the status line right below them, then the
        context / copy / paste panel and the grid (beside it when there is room for `columns` samples a
        row, below it otherwise, with fewer a row only when the page is narrower still; every row shown),
        then the Changes section (after an edit) and the history."""
        title = widgets.HTML(STYLE + '<span class="rwa-title">Rewriting a Deep Generative Model</span>')
        small = f'{self.size * 3 // 4}px'
        panes = [widgets.VBox([button, canvas], layout=widgets.Layout(width=small, margin='4px'))
                 for button, canvas in [(self.copy_btn, self.copy_canvas), (self.paste_btn, self.paste_canvas)]]
        for pane in panes:
            pane.add_class('rwa-pane')
        copy_paste = wrapping_row(*panes)
        tray_label = widgets.HTML('context: click a picture to select it, then Remove (or Delete) drops it')
        tray_label.add_class('rwa-hint')
        from .preservepanel import PreservePanel  # issue 13's preserve regions, their own module
        self.preserve_panel = PreservePanel(self)
        left = widgets.VBox([wrapping_row(self.context_btn, self.remove_btn, self.matches_btn), tray_label, self.tray,
                             self.preserve_panel, copy_paste],
                            layout=widgets.Layout(width=f'{max(self.size * 3 // 2 + 20, 340)}px', flex='0 0 auto'))
        columns = max(1, min(columns, self.num_canvases))
        cell = self.size + 4
        self.grid = widgets.GridBox(self.cells, layout=widgets.Layout(
            grid_template_columns=f'repeat(auto-fill, {self.size}px)', grid_auto_rows=f'{self.size}px',
            grid_gap='4px', align_content='flex-start', flex=f'1 1 {columns * cell + 10}px',
            min_width=f'{cell + 10}px', max_width=f'{columns * cell + 10}px'))
        self.grid.add_class('rwa-grid')
        self.body = wrapping_row(left, self.grid, align='flex-start')
        self.body.add_class('rwa-body')
        self.key_events = ipyevents.Event(source=self.body, watched_events=['keydown'], ignore_modifier_key_events=True)
        self.key_events.on_dom_event(self.handle_key)
        from .advisepanel import AdvisePanel  # the Advise panel's own module (it imports this one)
        self.advise_panel = AdvisePanel(self)
        return [title,
                wrapping_row(self.execute_btn, self.erase_btn, self.cancel_btn, self.undo_btn, self.redo_btn,
                             self.revert_btn, self.original_btn),
                wrapping_row(self.setting_label, self.rank_box, self.lr_box, self.niter_box, self.piter_box,
                             self.solver_box, self.drank_box),
                wrapping_row(self.numbers_box, self.search_btn, self.match_btn, self.brush_slider, self.clear_btn),
                wrapping_row(self.name_box, self.load_btn, self.save_btn, self.export_box, self.export_btn,
                             self.download_link),
                self.confirm_row,
                self.layer_row,
                wrapping_row(self.message_line, self.damage_undo_btn, self.progress, self.loss_label),
                self.body,
                self.preserve_panel.changes_section,
                self.history_box,
                self.advise_panel]

    def _solver_changed(self, change) -> None:
        """The fast solver runs a fixed number of steps: iterations and projection apply to the others."""
        self.niter_box.disabled = self.piter_box.disabled = change['new'] == 'fast'
        if hasattr(self, 'setting_label'):
            self._show_setting()

    def _show_setting(self) -> None:
        """The line that always shows what Execute Change and Erase run with: layer, rank, solver."""
        self.setting_label.value = (f'<b>layer {self.gw.layernum}</b> &middot; rank {self.rank_box.value} &middot; '
                                    f'{html.escape(str(self.solver_box.value))}')

    # ---- messages and progress ---------------------------------------------------------------------
    def show_message(self, text: str, error: bool = False, warning: bool = False) -> None:
        """Shows one line (errors in red, warnings in amber, else green); `message` keeps the plain text."""
        self.message = text
        self.message_color = 'red' if error else 'amber' if warning else 'green'
        color = '#b00020' if error else WARNING_COLOR if warning else '#1b5e20'
        self.message_line.value = f'<span style="color:{color}">{html.escape(text)}</span>'

    def _progress_callback(self, niter: int) -> Callable:
        """update_callback(iteration, loss) for the rewriter, expecting `niter` steps: moves the bar
        and shows the loss at most every 0.1 s; raises SolveCancelled once Cancel was clicked."""
        self.progress.max, self.progress.value = niter, 0
        self.progress.layout.visibility = 'visible'
        last = [0.0]

        def update(iteration: int, loss) -> None:
            if self._cancel.is_set():
                raise SolveCancelled
            now = time.monotonic()
            if now - last[0] >= 0.1 or iteration + 1 >= niter:
                last[0] = now
                self.progress.value = min(iteration + 1, niter)
                self.loss_label.value = f'iteration {iteration + 1}/{niter}  loss {float(loss):.4f}'
        return update

    # ---- long solves: controls disabled, Cancel ------------------------------------------------------
    def _controls(self) -> list[widgets.Widget]:
        """Every control of the app but Cancel (found by walking its children, so panels added to it
        are included): what is disabled while a solve runs."""
        found, stack = [], list(self.children)
        while stack:
            widget = stack.pop()
            stack.extend(getattr(widget, 'children', ()))
            if widget is not self.cancel_btn and isinstance(getattr(widget, 'disabled', None), bool):
                found.append(widget)
        return found

    def _start_solve(self, action: str, work: Callable[[], None], background: bool) -> None:
        """Runs work() with every control but Cancel disabled, in a worker thread when `background`."""
        self.solving = action
        self._cancel.clear()
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
        self._cancel.set()
        self.show_message(f'cancelling {self.solving}: it stops at its next step, the model stays as it was',
                          warning=True)

    # ---- pictures ------------------------------------------------------------------------------------
    def _images(self, imgnums: Sequence[int], original: bool = False) -> list[torch.Tensor]:
        """Generator outputs [3, H, W] in [-1, 1] of the current (or original) model, cached."""
        tag = 'original' if original else self._model_version
        missing = [n for n in dict.fromkeys(imgnums) if (tag, n) not in self._image_cache]
        pixels = int(self.gw.x_shape[-1]) * int(self.gw.x_shape[-2])
        batch = max(int(getattr(self.gw, 'batch_size', 8)), min(32, 2 ** 17 // pixels))   # small models: one batch
        for start in range(0, len(missing), batch):
            chunk = missing[start:start + batch]
            z = self.gw.get_zs(chunk)
            if original:
                with self.gw.original_model():
                    images = self.gw.sample_image_from_latent(z)
            else:
                images = self.gw.sample_image_from_latent(z)
            self._image_cache.update({(tag, n): img.cpu() for n, img in zip(chunk, images, strict=True)})
        return [self._image_cache[(tag, n)] for n in imgnums]

    def _area(self, url: str, resolution: int) -> torch.Tensor:
        return editfile.mask_from_url(url, resolution)

    def refresh(self) -> None:
        """Forgets the edited model's pictures and repaints everything (done after every change made
        here; call it after changing gw.model from code)."""
        self._model_version += 1
        self._image_cache = {k: v for k, v in self._image_cache.items() if k[0] == 'original'}
        self.showing_original = False
        self.original_btn.description = 'Toggle Original'
        for canvas in self.canvases:
            canvas.mask = np.zeros_like(canvas.mask)
        self.current = None
        self.repaint_grid()
        self._repaint_tray()
        self._repaint_copy()
        self._repaint_paste()
        self._repaint_changes()
        self.preserve_panel.clear()                       # a preview or strip of the model before is stale

    def repaint_grid(self) -> None:
        """Shows the selected samples; only canvases whose picture changed are re-encoded."""
        shown = self.sel[:self.num_canvases]
        images = self._images(shown, original=self.showing_original)
        overlay = self._match_overlays(shown, images) if self.showing_matches else None
        view = ('original' if self.showing_original else self._model_version,
                self._context_version if self.showing_matches else None, self.preserve_panel.preview_state)
        outlines = self.preserve_panel.grid_regions()     # preserve regions, outlined in blue
        for index, canvas in enumerate(self.canvases):
            if index >= len(shown):
                canvas.layout.display = self.cells[index].layout.display = 'none'
                canvas.clear_mask()
                self._shown[index] = None
                continue
            canvas.layout.display = self.cells[index].layout.display = None
            self.number_labels[index].value = f'#{shown[index]}'
            state = (shown[index], *view, outlines.get(shown[index]))
            if self._shown[index] == state:
                continue
            if self._shown[index] is None or self._shown[index][0] != shown[index]:
                canvas.mask = np.zeros_like(canvas.mask)
                if self.current == index:
                    self.current = None
            picture = imgviz.to_uint8(images[index]) if overlay is None else overlay[index]
            previewed = None if self.showing_original else self.preserve_panel.preview_picture(shown[index])
            picture = picture if previewed is None else previewed         # Preview's heat maps on the sample
            canvas.set_picture(self.preserve_panel.outline(picture, outlines.get(shown[index], ()), canvas.size))
            self._shown[index] = state

    def _match_overlays(self, imgnums: Sequence[int], images: Sequence[torch.Tensor]) -> list:
        """The samples with the outside of the context key's strongest responses dimmed."""
        key = self._context_key()
        _, quantiles = self.gw.ranking_for_key(key, k=self.num_canvases)
        level = float(quantiles[99])
        maps = self.gw.key_response_maps(key, imgnums).cpu()
        return [imgviz.masked_image(img, response, level=level, outside_bright=0.5, border_color=(255, 255, 0))
                for img, response in zip(images, maps, strict=True)]

    def _region_picture(self, imgnum: int, url: str, **style):
        """Image `imgnum` of the current model with the mask's region outlined, outside dimmed."""
        image = self._images([imgnum])[0]
        return imgviz.masked_image(image, self._area(url, image.shape[-1]), **style)

    def _repaint_tray(self) -> None:
        keys = self.request.get('key', [])
        while len(self.thumbs) < len(keys):
            self.thumbs.append(self._new_thumb(len(self.thumbs)))
        thumb_size = self.size * 3 // 8
        for thumb, (imgnum, url) in zip(self.thumbs[:len(keys)], keys, strict=True):
            picture = self._region_picture(imgnum, url, thickness=0, outside_bright=0.45, inside_color=(255, 255, 255))
            thumb.value = encode_picture(np.asarray(picture.resize((thumb_size, thumb_size))))
        self.tray.children = self.thumbs[:len(keys)]
        self._mark_selected_thumb()

    def _mark_selected_thumb(self) -> None:
        for index, thumb in enumerate(self.thumbs):
            (thumb.add_class if index == self.selected_context else thumb.remove_class)('rwa-thumb-selected')

    def _new_thumb(self, index: int) -> widgets.Image:
        thumb_size = self.size * 3 // 8
        thumb = widgets.Image(format='jpeg', width=thumb_size, height=thumb_size,
                              layout=widgets.Layout(width=f'{thumb_size}px', height=f'{thumb_size}px',
                                                    min_width=f'{thumb_size}px'))
        thumb.add_class('rwa-thumb')
        thumb.events = ipyevents.Event(source=thumb, watched_events=['click'])
        thumb.events.on_dom_event(lambda _event: self.select_context(index))
        return thumb

    def _repaint_copy(self) -> None:
        if 'object' not in self.request:
            self.copy_canvas.set_mask(None)
            self.copy_canvas.set_picture(None)
            return
        imgnum, url = self.request['object']
        self.copy_canvas.set_mask(self._area(url, self.copy_canvas.size).numpy())
        self.copy_canvas.set_picture(self._region_picture(imgnum, url, thickness=1, outside_bright=0.5))

    def _repaint_paste(self) -> None:
        self.paste_canvas.set_mask(None)
        if 'paste' not in self.request:
            self.paste_canvas.set_picture(None)
            return
        imgnum, url = self.request['paste']
        if 'object' not in self.request:
            self.paste_canvas.set_picture(self._region_picture(imgnum, url, thickness=2, outside_bright=0.7))
            return
        self.paste_canvas.set_picture(self._paste_goal_picture(imgnum, url, *self.request['object']))

    def _paste_goal_picture(self, imgnum: int, url: str, object_imgnum: int, object_url: str):
        """What the goal looks like: the copied layer values pasted into image `imgnum` at the paste
        region's centre, rendered by the rest of the generator, the pasted box in red."""
        gw = self.gw
        obj_acts, obj_area, _, _ = gw.object_from_selection(object_imgnum, object_url)
        _, _, full, bounds = gw.paste_from_selection(imgnum, url, obj_acts, obj_area)
        return imgviz.box_image(gw.image_with_values(imgnum, full), bounds, gw.v_shape[2])

    def _repaint_changes(self) -> None:
        """The history list: 0 the original model, the applied changes, then the undone ones (which
        Redo, or a click on them, re-applies); the current state is selected."""
        applied = [record for record, _ in getattr(self.gw, 'history', [])]
        undone = [record for record, _ in reversed(getattr(self.gw, 'undone', []))]
        options = [('0  the original model', 0)]
        options += [(f'{i}  {describe_record(record)}', i) for i, record in enumerate(applied, 1)]
        options += [(f'{i}  undone: {describe_record(record)}', i) for i, record in enumerate(undone, len(applied) + 1)]
        self._updating_history = True
        try:
            self.history_box.options = options
            self.history_box.value = len(applied)
        finally:
            self._updating_history = False
        self.history_box.layout.display = None if len(options) > 1 else 'none'

    def _history_clicked(self, change) -> None:
        if not self._updating_history and change['new'] is not None:
            self.go_to(change['new'])

    # ---- selection ---------------------------------------------------------------------------------
    def _select_canvas(self, index: int, _canvas: PaintWidget) -> None:
        """A stroke starts on grid canvas `index`: it holds the selection, the others are cleared."""
        self.current = index
        for other, canvas in enumerate(self.canvases):
            if other != index:
                canvas.clear_mask()
        self.preserve_panel.stop_preview()                # painting takes Preview's heat maps off

    def _selection(self) -> tuple[int, str]:
        """(imgnum, mask URL) of the painted selection; UserError when there is none."""
        if self.current is None or self.current >= len(self.sel):
            raise UserError('nothing is selected: paint a region on one of the samples first')
        canvas = self.canvases[self.current]
        if canvas.is_empty:
            raise UserError('the selection is empty: paint a region on one of the samples first')
        return self.sel[self.current], canvas.mask_url

    @reports_errors('Clear')
    def clear_selection(self, _button=None) -> None:
        for canvas in self.canvases:
            canvas.clear_mask()
        self.current = None
        self.show_message('selection cleared')

    @reports_errors('Brush size')
    def change_brush(self, change) -> None:
        for canvas in self.canvases:
            canvas.brushsize = float(change['new'])
        self.copy_canvas.brushsize = float(change['new']) * 3 / 4

    @reports_errors('Images')
    def change_numbers(self, change) -> None:
        numbers = parse_image_numbers(change['new'], self.gw.num_images, self.num_canvases)
        if numbers != self.sel:
            self.sel = numbers
            self.repaint_grid()
        self.show_message(f'showing images {format_image_numbers(numbers)}')

    def _show_numbers(self, numbers: Sequence[int]) -> None:
        self.sel = list(numbers)
        self.numbers_box.value = format_image_numbers(self.sel)
        self.repaint_grid()

    # ---- context, copy and paste -------------------------------------------------------------------
    @reports_errors('Add to Context')
    def add_context(self, _button=None) -> None:
        imgnum, url = self._selection()
        keys = [pair for pair in self.request.get('key', []) if pair[0] != imgnum]
        position = next((i for i, pair in enumerate(self.request.get('key', [])) if pair[0] == imgnum), len(keys))
        keys.insert(position, [imgnum, url])
        self.request['key'] = keys
        self._context_changed()
        self.show_message(f'context: {len(keys)} region{"s" * (len(keys) > 1)} (images {[k[0] for k in keys]})')

    @reports_errors('Remove context')
    def remove_context(self, index: int) -> None:
        keys = self.request.get('key', [])
        if 0 <= index < len(keys):                  # (an index out of range removes nothing)
            imgnum, _ = keys.pop(index)
            if not keys:
                del self.request['key']
            self._context_changed()
            self.show_message(f'removed image {imgnum} from the context')

    @reports_errors('Select context')
    def select_context(self, index: int) -> None:
        """A click on context thumbnail `index` selects it (a second click deselects it)."""
        keys = self.request.get('key', [])
        if not 0 <= index < len(keys):
            return
        self.selected_context = None if self.selected_context == index else index
        self._mark_selected_thumb()
        self.show_message('no context picture selected' if self.selected_context is None else
                          f'selected context image {keys[index][0]}: Remove (or Delete) drops it')

    @reports_errors('Remove')
    def remove_selected_context(self, _button=None) -> None:
        if self.selected_context is None:
            raise UserError('select a context picture first (click it), then Remove or press Delete')
        self.remove_context(self.selected_context)

    def handle_key(self, event: dict) -> None:
        """ipyevents keydown with the mouse over the pictures: Ctrl+Z (or Cmd+Z) undo, Ctrl+Shift+Z or
        Ctrl+Y redo, Delete or Backspace removes the selected context picture; other keys do nothing."""
        key = str(event.get('key', '')).lower()
        command = bool(event.get('ctrlKey') or event.get('metaKey'))
        if command and key == 'z':
            (self.redo if event.get('shiftKey') else self.undo)()
        elif command and key == 'y':
            self.redo()
        elif key in ('delete', 'backspace') and not command:
            self.remove_selected_context()

    def _context_changed(self) -> None:
        self.selected_context = None
        self._context_key_cache = None
        self._context_version += 1
        if self.showing_matches and not self.request.get('key'):
            self.showing_matches = False
            self.matches_btn.button_style = ''
        self._repaint_tray()
        if self.showing_matches:
            self.repaint_grid()

    def _context_key(self) -> torch.Tensor:
        if not self.request.get('key'):
            raise UserError('there is no context: paint a region and click Add to Context first')
        if self._context_key_cache is None:
            self._context_key_cache = self.gw.multi_key_from_selection(self.request['key'], rank=1)[0]
        return self._context_key_cache

    @reports_errors('Copy')
    def copy(self, _button=None) -> None:
        imgnum, url = self._selection()
        self.request['object'] = [imgnum, url]
        self._repaint_copy()
        self._repaint_paste()
        self.show_message(f'copied a region of image {imgnum}' +
                          ('' if 'paste' in self.request else '; now paint where it goes and click Paste'))

    @reports_errors('Copy canvas')
    def change_copy_mask(self, canvas: PaintWidget) -> None:
        """Painting on the copy canvas edits the copied region (an empty one drops the copy)."""
        if 'object' not in self.request:
            canvas.clear_mask()
            raise UserError('nothing is copied yet: select a region on a sample and click Copy')
        if canvas.is_empty:
            del self.request['object']
            self.show_message('the copy was cleared')
        else:
            self.request['object'] = [self.request['object'][0], editfile.encode_mask(canvas.mask, self.size)]
            self.show_message('copied region changed')
        self._repaint_copy()
        self._repaint_paste()

    @reports_errors('Paste')
    def paste(self, _button=None) -> None:
        imgnum, url = self._selection()
        self.request['paste'] = [imgnum, url]
        self._repaint_paste()
        hint = 'click the paste canvas to move it' if 'object' in self.request else 'Copy a region to see the goal'
        self.show_message(f'paste goal in image {imgnum}: {hint}')

    @reports_errors('Move paste')
    def move_paste(self, canvas: PaintWidget) -> None:
        """A click on the paste canvas moves the paste region's centre there."""
        target = click_center(canvas.mask)
        canvas.set_mask(None)
        if 'paste' not in self.request or target is None:
            raise UserError('nothing is pasted yet: Copy a region, select where it goes and click Paste')
        imgnum, url = self.request['paste']
        mask = self._area(url, self.size).numpy()
        center = click_center(mask)
        scale = self.size / canvas.size
        moved = shift_mask(mask, round(target[0] * scale) - center[0], round(target[1] * scale) - center[1])
        if not (moved > 0).any():
            raise UserError('the paste would leave the image; click nearer its middle')
        self.request['paste'] = [imgnum, editfile.encode_mask(moved)]
        self._repaint_paste()
        self.show_message(f'moved the paste in image {imgnum}')

    # ---- search ----------------------------------------------------------------------------------------
    @reports_errors('Show Context Matches')
    def toggle_matches(self, _button=None) -> None:
        if not self.showing_matches:
            self._context_key()
        self.showing_matches = not self.showing_matches
        self.matches_btn.button_style = 'info' if self.showing_matches else ''
        self.repaint_grid()
        self.show_message('highlighting where the context key responds' if self.showing_matches
                          else 'context highlighting off')

    @reports_errors('Search')
    def search(self, _button=None) -> None:
        top, _ = self.gw.ranking_for_key(self._context_key(), k=self.num_canvases)
        self._show_numbers([int(n) for n in top])
        self.show_message(f'samples that respond most to the context: {format_image_numbers(self.sel)}')

    @reports_errors('Match Sel')
    def match_selection(self, _button=None) -> None:
        imgnum, url = self._selection()
        self.request['query'] = [imgnum, url]
        key = self.gw.query_key_from_selection(imgnum, url)
        top, _ = self.gw.ranking_for_key(key, k=self.num_canvases)
        self._show_numbers([int(n) for n in top])
        self.show_message(f'samples that respond most to the selection in image {imgnum}')

    # ---- rewriting ---------------------------------------------------------------------------------------
    def _settings(self) -> dict:
        solver = self.solver_box.value
        if solver not in SOLVER_CHOICES:
            raise UserError(f'choose a solver among {", ".join(SOLVER_CHOICES)}')
        return dict(rank=int(self.rank_box.value), lr=float(self.lr_box.value), niter=int(self.niter_box.value),
                    piter=int(self.piter_box.value), solver=solver)

    def _file_options(self, solver: str) -> dict:
        """The loaded edit's solver options (other than the Adam settings the boxes hold) when its solver is the
        one chosen: Execute Change and Erase run with them, Save writes them back."""
        if self.file_setting.get('solver') != solver:
            return {}
        return {name: value for name, value in self.file_setting.get('solver_options', {}).items()
                if name not in edits.ADAM_SETTINGS}

    def edit_setting(self) -> dict:
        """The fields Save writes: this app's layer, the rank and solver it runs with, the solver options that
        differ from the defaults, the model (rewrite.editfile)."""
        settings = self._settings()
        solver = settings['solver']
        options = edits.settings(self.gw, settings['niter'], settings['piter'], settings['lr'],
                                 self._file_options(solver))
        fields = {'layer': self.gw.layernum, 'rank': settings['rank'], 'solver': solver}
        changed = SOLVERS[solver].differing(options)
        if changed:
            fields['solver_options'] = changed
        return fields | {'model': self.gw.setting()['model']}

    def _checked_request(self, needed: Sequence[str], action: str) -> dict:
        missing = [name for name in needed if name not in self.request]
        hints = {'object': 'Copy a region', 'paste': 'select where it goes and click Paste'}
        if missing:
            raise UserError(f'{action} needs {" and ".join(missing)}: ' + ', then '.join(hints[m] for m in missing))
        resolution = self.gw.site.mask_resolution
        editfile.validate_request(self.request, self.gw.num_images, resolution)
        return copy.deepcopy(self.request)

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
        self._start_solve(action, work, background=self.background and clicked)

    def _report_change(self, record, done: str) -> None:
        """'<done>: loss a -> b in s, held-out change x' in green, or a warning in amber: when the loss rose
        (and whether the rewriter rolled the change back), or when the change damaged the held-out samples
        beyond the threshold (rewrite/damage.py; with an Undo button beside it)."""
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
        request = self._checked_request(('object', 'paste'), 'Execute Change')
        self._rewrite('Execute Change', self.gw.apply_edit, request, 'rewriting the model...', 'changed the model',
                      clicked=_button is not None)

    @reports_errors('Erase')
    def erase(self, _button=None) -> None:
        request = self._checked_request(('paste',), 'Erase')
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

    # ---- files -------------------------------------------------------------------------------------------
    def saved_names(self) -> list[str]:
        """Names of the edits saved in mask_dir: NAME, then FOLDER/NAME (e.g. the bundled demo/...)."""
        return saved_edit_names(self.mask_dir)

    def _edit_path(self) -> Path:
        return saved_edit_path(self.mask_dir, self.name_box.value)

    @reports_errors('Save')
    def save(self, _button=None) -> None:
        """Saves the edit under the typed name; an existing file is replaced only after Overwrite."""
        path = self._edit_path()
        if not any(self.request.get(name) for name in editfile.EDIT_FIELDS):
            raise UserError('there is nothing to save: Copy, Paste or Add to Context first')
        if path.exists():
            self._ask_overwrite(path, self._write_edit, 'type another name to save this edit')
            return
        self._write_edit(path)

    def _ask_overwrite(self, path: Path, write: Callable[[Path], None], other: str) -> None:
        """Shows Overwrite / Keep and one message saying that `path` exists; Overwrite calls write(path),
        Keep says `other` (what to do instead)."""
        self._pending_save, self._pending_write, self._keep_hint = path, write, other
        self.confirm_label.value = ''
        self.confirm_row.layout.display = None
        self.show_message(f'{path.name} already exists in {path.parent}: click Overwrite to replace it, or Keep',
                          warning=True)

    @reports_errors('Overwrite')
    def confirm_overwrite(self, _button=None) -> None:
        path, self._pending_save = self._pending_save, None
        self.confirm_row.layout.display = 'none'
        if path is None:
            raise UserError('nothing to overwrite: click Save or Export first')
        (self._pending_write or self._write_edit)(path)

    @reports_errors('Keep')
    def keep_saved(self, _button=None) -> None:
        path, self._pending_save = self._pending_save, None
        self.confirm_row.layout.display = 'none'
        self.show_message(f'kept {path.name}: {self._keep_hint}' if path else 'nothing to keep')

    def _write_edit(self, path: Path) -> None:
        setting = self.edit_setting()
        request = {name: value for name, value in self.request.items() if name not in editfile.SETTING_FIELDS}
        editfile.validate_request({**request, **setting}, num_images=self.gw.num_images)   # before any folder
        path.parent.mkdir(parents=True, exist_ok=True)      # mask_dir (or FOLDER in it)
        editfile.save_edit(path, {**request, **setting}, num_images=self.gw.num_images)
        self.name_box.options = self.saved_names()
        self.show_message(f'saved {path} (layer {setting["layer"]}, rank {setting["rank"]}, {setting["solver"]})')

    @reports_errors('Load')
    def load(self, _button=None) -> None:
        path = self._edit_path()
        if not path.is_file():
            known = ', '.join(self.saved_names()) or 'none yet'
            raise UserError(f'no saved edit named {path.stem!r} in {self.mask_dir} (saved: {known})')
        parsed = editfile.load_edit(path, num_images=self.gw.num_images)
        setting = parsed.setting()
        named_layer, named_rank = editfile.setting_from_name(path)    # files that record no setting: their name
        if 'layer' not in setting and named_layer is not None:
            setting |= {'layer': named_layer} | ({} if 'rank' in setting else {'rank': named_rank})
        self._use_request(parsed.to_json(), setting)
        action = 'Erase' if parsed.object is None and parsed.paste is not None else 'Execute Change'
        if self.other_layer is not None:
            self.show_message(f'loaded {path.stem}: it was made for layer {self.other_layer} (rank '
                              f'{self.rank_box.value}), and this interface rewrites layer {self.gw.layernum}: click '
                              f'"Switch to layer {self.other_layer}" to rewrite that layer, then {action}',
                              warning=True)
        else:
            self.show_message(f'loaded {path.stem} (layer {self.gw.layernum}, rank {self.rank_box.value}, '
                              f'{self.solver_box.value}): click {action} to apply it')

    @reports_errors('Set request')
    def set_request(self, request: dict) -> None:
        """Uses an edit request (a dict in the edit-file format) as if it had been loaded."""
        parsed = editfile.validate_request(request, num_images=self.gw.num_images)
        self._use_request(parsed.to_json(), parsed.setting())
        if self.other_layer is not None:
            self.show_message(f'request set: it was made for layer {self.other_layer}, and this interface rewrites '
                              f'layer {self.gw.layernum}: click "Switch to layer {self.other_layer}"', warning=True)
        else:
            self.show_message('request set: click Execute Change to apply it')

    def _use_request(self, request: dict, setting: dict | None = None) -> None:
        """The request's regions (its setting fields apart) become the app's; its setting (layer, rank, solver,
        solver options) sets the boxes, and a layer other than the app's asks to switch first."""
        setting = setting or {}
        self.loss_label.value = ''                           # the figures of a solve of the edit before
        self.request = {name: value for name, value in request.items() if name not in editfile.SETTING_FIELDS}
        self.file_setting = dict(setting)
        if 'solver' in setting:
            self.solver_box.value = setting['solver']
        recorded = setting.get('solver_options', {})
        for name, box in (('lr', self.lr_box), ('niter', self.niter_box), ('piter', self.piter_box)):
            if name in recorded:
                box.value = recorded[name]
        if 'rank' in setting:
            self.rank_box.value = min(int(setting['rank']), int(self.rank_box.max))
        layer = setting.get('layer')
        self._ask_layer(layer if layer is not None and layer != self.gw.layernum else None)
        self.preserve_panel.repaint()
        self._context_changed()
        self._repaint_copy()
        self._repaint_paste()

    def _ask_layer(self, layer: int | None) -> None:
        """With `layer` (the loaded edit's, not the app's): the row offering to switch to it, Execute Change and
        Erase disabled until the user switches or overrides; None: that row hidden, both enabled."""
        self.other_layer = layer
        if layer is None:
            self.layer_row.layout.display = 'none'
        else:
            self.layer_label.value = (f'This edit was made for <b>layer {layer}</b>; the interface rewrites '
                                      f'<b>layer {self.gw.layernum}</b>.')
            self.switch_layer_btn.description = f'Switch to layer {layer}'
            self.override_layer_btn.description = f'Apply at layer {self.gw.layernum} anyway'
            self.layer_row.layout.display = None
        self.execute_btn.disabled = self.erase_btn.disabled = layer is not None
        self._show_setting()

    def switch_layer(self, layer: int) -> None:
        """A rewriter of `layer` on the same model and z-sample replaces the app's (only while no change is
        applied, so that Revert still means the original weights); raises UserError otherwise."""
        if layer == self.gw.layernum:
            return
        if self.gw.history:
            raise UserError(f'undo or revert the applied changes before switching to layer {layer}')
        old = self.gw
        try:
            self.gw = type(old)(old.model, old.zds, layer, cachedir=old.cachedir, key_method=old.key_method,
                                batch_size=old.batch_size, progress=old.progress,
                                damage_samples=old.damage_probe.samples if old.damage_probe is not None else 0,
                                model_name=getattr(old, 'model_name', None))
        except RewriteError as e:
            raise UserError(f'cannot rewrite layer {layer}: {e}') from None
        self.rank_box.max = int(self.gw.k_shape[1])
        self.drank_box.max = int(self.gw.k_shape[1])
        self.drank_box.value = min(self.drank_box.value, self.drank_box.max)
        self._context_changed()
        self.refresh()
        self._show_setting()

    @reports_errors('Switch layer')
    def switch_to_file_layer(self, _button=None) -> None:
        """Switches the app to the layer the loaded edit was made for; Execute Change and Erase then run there."""
        if self.other_layer is None:
            raise UserError('the loaded edit was made for this layer: nothing to switch')
        layer = self.other_layer
        self.switch_layer(layer)
        self._ask_layer(None)
        self.show_message(f'now rewriting layer {layer} (rank {self.rank_box.value}, {self.solver_box.value}): click '
                          f'{"Erase" if "object" not in self.request else "Execute Change"} to apply the edit')

    @reports_errors('Apply here anyway')
    def override_layer(self, _button=None) -> None:
        """Allows the loaded edit at this app's layer, although it was made for another."""
        if self.other_layer is None:
            raise UserError('the loaded edit was made for this layer: nothing to override')
        layer = self.other_layer
        self._ask_layer(None)
        self.show_message(f'the edit made for layer {layer} will be applied at layer {self.gw.layernum}: its regions '
                          'and rank were chosen for the other layer; the result shows its held-out change',
                          warning=True)

    @reports_errors('Export')
    def export(self, _button=None) -> None:
        path = export_path(self.export_box.value)
        if path.exists():
            self._ask_overwrite(path, self._write_export, 'type another file name to export to')
            return
        self._write_export(path)

    def _write_export(self, path: Path) -> None:
        save_generator(self.gw.model, path)
        self.download_link.value = download_link(path)
        self.show_message(f'exported the rewritten generator to {path}' +
                          ('' if self.download_link.value else f' (over {DOWNLOAD_LIMIT >> 20} MB: no download link; '
                           'copy the file from there)'))
