"""The widget's canvases: the sample grid, painting and selections, Copy / Paste, context regions, search and
matches, and the pictures they show.
"""

from __future__ import annotations

from collections.abc import Sequence

import ipyevents
import ipywidgets as widgets
import numpy as np
import torch

from rewrite.app.base import UserError, reports_errors
from rewrite.app.parts import click_center, describe_record, format_image_numbers, parse_image_numbers, shift_mask
from rewrite.formats import editfile
from utils import imgviz
from utils.paintwidget import PaintWidget, encode_picture

__all__ = ['CanvasMixin']


class CanvasMixin:
    """GanRewriteApp's canvas methods (see rewrite/app/rewriteapp.py for the state they share)."""

    # ---- pictures ------------------------------------------------------------------------------------
    def images(self, imgnums: Sequence[int], original: bool = False) -> list[torch.Tensor]:
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
        images = self.images(shown, original=self.showing_original)
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

    def region_picture(self, imgnum: int, url: str, **style):
        """Image `imgnum` of the current model with the mask's region outlined, outside dimmed."""
        image = self.images([imgnum])[0]
        return imgviz.masked_image(image, self._area(url, image.shape[-1]), **style)

    def _repaint_tray(self) -> None:
        keys = self.request.get('key', [])
        while len(self.thumbs) < len(keys):
            self.thumbs.append(self._new_thumb(len(self.thumbs)))
        thumb_size = self.size * 3 // 8
        for thumb, (imgnum, url) in zip(self.thumbs[:len(keys)], keys, strict=True):
            picture = self.region_picture(imgnum, url, thickness=0, outside_bright=0.45, inside_color=(255, 255, 255))
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
        self.copy_canvas.set_picture(self.region_picture(imgnum, url, thickness=1, outside_bright=0.5))

    def _repaint_paste(self) -> None:
        self.paste_canvas.set_mask(None)
        if 'paste' not in self.request:
            self.paste_canvas.set_picture(None)
            return
        imgnum, url = self.request['paste']
        if 'object' not in self.request:
            self.paste_canvas.set_picture(self.region_picture(imgnum, url, thickness=2, outside_bright=0.7))
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

    def selection(self) -> tuple[int, str]:
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
        imgnum, url = self.selection()
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
        imgnum, url = self.selection()
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
        imgnum, url = self.selection()
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
        imgnum, url = self.selection()
        self.request['query'] = [imgnum, url]
        key = self.gw.query_key_from_selection(imgnum, url)
        top, _ = self.gw.ranking_for_key(key, k=self.num_canvases)
        self._show_numbers([int(n) for n in top])
        self.show_message(f'samples that respond most to the selection in image {imgnum}')
