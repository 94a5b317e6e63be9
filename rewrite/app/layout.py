"""How the widget is laid out: its controls, canvases and the responsive rows they sit in.
"""

from __future__ import annotations

import functools
import html
from collections.abc import Callable

import ipyevents
import ipywidgets as widgets

from rewrite.app.advisepanel import AdvisePanel
from rewrite.app.parts import SOLVER_CHOICES, STYLE, WARNING_COLOR, WIDE, format_image_numbers, wrapping_row
from rewrite.app.preservepanel import PreservePanel
from rewrite.core.rewriter import ERASE_UNITS
from utils.paintwidget import PaintWidget

__all__ = ['LayoutMixin']


class LayoutMixin:
    """GanRewriteApp's layout methods (see rewrite/app/rewriteapp.py for the state they share)."""

    # ---- construction ----------------------------------------------------------------------------
    def button(self, label: str, handler: Callable, style: str = '', tooltip: str = '') -> widgets.Button:
        button = widgets.Button(description=label, button_style=style, tooltip=tooltip,
                                layout=widgets.Layout(width='auto', flex='0 0 auto'))
        button.on_click(handler)
        return button

    def _build_controls(self, rank: int, lr: float, niter: int, piter: int, solver: str) -> None:
        b = self.button
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
