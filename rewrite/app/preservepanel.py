"""The widget's preserve regions: "Add to Preserve", their tray, and a preview of what a rule touches.

    panel = PreservePanel(app)          # GanRewriteApp builds one as app.preserve_panel

Add to Preserve puts the painted selection into the request's `preserve` list (one region per image; a
second region painted on the same image joins the first: their masks merge, as context strokes do), saved
and loaded with the edit as the app saves its request, with the file's `preserve_weight` when it has one
(Preview and Execute Change use it, else PRESERVE_WEIGHT; removing the last region drops it, as a weight
without regions is not a valid file).
The tray shows the preserve regions in their own colour (blue); a click on a picture removes it.
Preview draws on the app's grid of samples themselves where the current context answers (the rank-1 context
direction, chosen against the preserve keys, as Execute Change will; red heat) and where the preserve
regions' keys answer (their mean covariance-adjusted key; blue heat), each relative to the 99th percentile
of its response over those samples, so the user sees which images the rule will touch before executing; a
legend says which colour is which. A second click on Preview, the next stroke on a sample, or a change of
the model takes the heat maps off again.
Changes shows, in its own titled section under the grid (`changes_section`), a row of the samples before
the edit above a row of them after it: the `shown` held-out samples the edit changed most (of the `heldout`
image numbers after the grid's, mean absolute pixel change), then the preserve examples, each captioned with
its image number and change; Execute Change and Erase show it by themselves when they are done (`after_change`).
On the app's grid, each preserve region is outlined in blue on its image (`outline_regions`), as Preview and
the tray colour them.
"""

from __future__ import annotations

from collections.abc import Sequence

import ipyevents
import ipywidgets as widgets
import numpy as np
import torch

from rewrite.app.base import AppPanel, UserError, reports_errors
from rewrite.formats import editfile
from rewrite.formats.settings import preserve_weight_for
from utils import imgviz
from utils.paintwidget import as_rgb_array, encode_picture, mask_from_url

__all__ = ['CONTEXT_COLOR', 'heat_overlay', 'outline_regions', 'PRESERVE_COLOR', 'PreservePanel',
           'response_level']

PRESERVE_COLOR = (40, 110, 255)
CONTEXT_COLOR = (255, 40, 40)


def heat_overlay(image: torch.Tensor | np.ndarray, response: torch.Tensor, level: float, color) -> np.ndarray:
    """uint8 [H, W, 3]: image [3, H, W] in [-1, 1] (or uint8 [H, W, 3]) blended towards `color` by
    response [h, w] / level (clipped to [0, 1], alpha up to 0.7), the response upsampled bilinearly."""
    rgb = (image if isinstance(image, np.ndarray) else imgviz.to_uint8(image)).astype(np.float32)
    heat = imgviz.resize_map(response.float().cpu(), rgb.shape[:2]).numpy() / max(level, 1e-12)
    alpha = 0.7 * np.clip(heat, 0.0, 1.0)[..., None]
    return (rgb * (1 - alpha) + alpha * np.asarray(color, np.float32)).clip(0, 255).astype(np.uint8)


def outline_regions(picture, regions: Sequence[tuple[str, Sequence[int]]], size: int) -> np.ndarray:
    """uint8 [size, size, 3]: `picture` (PIL image or uint8 [H, W, 3], resized to `size`) with the edge of each
    (mask URL, RGB colour) region, mask > 0 at `size`, drawn in its colour (a band max(1, size // 128) pixels
    either side of the edge)."""
    rgb = as_rgb_array(picture, size).copy()
    for url, color in regions:
        region = editfile.mask_from_url(url, size) > 0
        rgb[imgviz.region_border(region, max(1, size // 128)).numpy()] = color
    return rgb


def response_level(maps: torch.Tensor) -> float:
    """The 99th percentile of the positive responses [N, h, w] (the heat maps' full scale)."""
    values = maps.flatten().float().clamp(min=0)
    return float(torch.quantile(values, 0.99)) if values.numel() else 1.0


class PreservePanel(AppPanel):
    """Add to Preserve, the preserve tray (click removes) and Preview (heat maps over the app's grid)."""

    outline = staticmethod(outline_regions)      # the app's grid draws the regions with it

    def __init__(self, app, heldout: int = 16, shown: int = 4):
        super().__init__(app)
        self.heldout, self.shown = int(heldout), int(shown)
        self.add_btn = app.button('Add to Preserve', self.add, tooltip='the selected region joins the preserve '
                                   'regions: the rule must leave it as it is')
        self.preview_btn = app.button('Preview', self.preview, tooltip='where the context (red) and the preserve '
                                       'regions (blue) answer, over the samples shown')
        hint = widgets.HTML('preserve (blue): regions the rule must not change (click a picture to remove it)')
        hint.add_class('rwa-hint')
        self.tray = widgets.HBox(layout=widgets.Layout(flex_flow='row wrap'))
        self.thumbs: list[widgets.Image] = []
        self.changes_btn = app.button('Changes', self.show_changes, tooltip='before / after of the held-out samples '
                                       'the edit changed most, and of the preserve examples')
        self.tray.add_class('rwa-preserve-tray')
        self.legend = widgets.HTML(
            f'<span style="color:rgb{CONTEXT_COLOR}">&#9632;</span> red: where the context answers (the rule will '
            f'apply there) &nbsp; <span style="color:rgb{PRESERVE_COLOR}">&#9632;</span> blue: where the preserve '
            'regions\' keys answer (Preview again, or paint, to hide)', layout=widgets.Layout(display='none'))
        self.legend.add_class('rwa-hint')
        self.legend.add_class('rwa-legend')
        self.previewing = False
        self._preview: dict[int, np.ndarray] = {}         # imgnum -> the sample with its heat maps
        self._preview_version = 0
        self.preview_box = widgets.HBox(layout=widgets.Layout(flex_flow='row wrap'))     # the before / after pairs
        title = widgets.HTML('<b>Changes</b> made by the last edit: each sample before (top row) and after it '
                             '(bottom row); the held-out samples it changed most, then the preserve examples, '
                             'with their mean absolute pixel change')
        title.add_class('rwa-hint')
        title.add_class('rwa-changes-title')
        self.changes_section = widgets.VBox([title, self.preview_box], layout=widgets.Layout(display='none'))
        self.changes_section.add_class('rwa-changes')
        self.children = [widgets.HBox([self.add_btn, self.preview_btn, self.changes_btn]), hint, self.tray,
                         self.legend]

    @property
    def regions(self) -> list:
        return self.app.request.get('preserve', [])

    @property
    def weight(self) -> float:
        """The preserve regions' weight Execute Change will use: the request's `preserve_weight` (a loaded
        file's), else PRESERVE_WEIGHT."""
        return preserve_weight_for(None, self.app.request.get('preserve_weight'))

    @reports_errors('Add to Preserve')
    def add(self, _button=None) -> None:
        imgnum, url = self.app.selection()
        canvas = self.app.canvases[self.app.current]
        regions = [list(pair) for pair in self.regions]
        merged = next((pair for pair in regions if pair[0] == imgnum), None)
        if merged is None:
            regions.append([imgnum, url])
        else:                                                  # the image's region grows by the new paint
            merged[1] = editfile.encode_mask(np.maximum(mask_from_url(merged[1], canvas.size), canvas.mask))
        self.app.request['preserve'] = regions
        canvas.clear_mask()                                    # the selection now shows as a blue outline
        self.app.current = None
        self.repaint()
        self.show_message(f'preserve: {len(regions)} region{"s" * (len(regions) > 1)} '
                          f'(images {[r[0] for r in regions]})' +
                          (f'; the new paint joined image {imgnum}\'s region' if merged is not None else ''))

    @reports_errors('Remove preserve region')
    def remove(self, index: int) -> None:
        regions = self.regions
        if not 0 <= index < len(regions):
            return
        imgnum, _ = regions.pop(index)
        if not regions:
            del self.app.request['preserve']
            self.app.request.pop('preserve_weight', None)     # a weight of nothing: the file would be invalid
        self.repaint()
        self.show_message(f'removed image {imgnum} from the preserve regions')

    def grid_regions(self) -> dict[int, tuple[tuple[str, tuple[int, int, int]], ...]]:
        """{imgnum: ((mask URL, colour),)}: the preserve regions as the grid outlines them (in blue; the context
        shows in its tray, and while painted in the brush's pink)."""
        return {imgnum: ((url, PRESERVE_COLOR),) for imgnum, url in self.regions}

    def repaint(self) -> None:
        """The tray and the grid's outlines from the request (also after Load / set_request: the app calls this)."""
        self.app.repaint_grid()
        regions = self.regions
        size = self.app.size * 3 // 8
        while len(self.thumbs) < len(regions):
            self.thumbs.append(self._new_thumb(len(self.thumbs), size))
        for thumb, (imgnum, url) in zip(self.thumbs, regions, strict=False):
            picture = self.app.region_picture(imgnum, url, thickness=1, border_color=PRESERVE_COLOR,
                                               outside_bright=0.45, inside_color=PRESERVE_COLOR)
            thumb.value = encode_picture(np.asarray(picture.resize((size, size))))
        self.tray.children = self.thumbs[:len(regions)]

    def _new_thumb(self, index: int, size: int) -> widgets.Image:
        thumb = widgets.Image(format='jpeg', width=size, height=size,
                              layout=widgets.Layout(width=f'{size}px', height=f'{size}px', min_width=f'{size}px'))
        thumb.add_class('rwa-thumb')
        thumb.events = ipyevents.Event(source=thumb, watched_events=['click'])
        thumb.events.on_dom_event(lambda _event: self.remove(index))
        return thumb

    def preview_maps(self, imgnums: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(context response [N, h, w], preserve response [N, h, w] or None) over samples `imgnums`: the
        rank-1 context direction as Execute Change chooses it (at the request's preserve weight), and the
        preserve regions' mean C^-1 k."""
        gw, request = self.app.gw, self.app.request
        if not request.get('key') and 'paste' not in request:
            raise UserError('there is no context yet: Add to Context (or Paste) first, then Preview')
        pairs = request.get('key') or [request['paste']]
        keep = [tuple(pair) for pair in self.regions]
        context = gw.multi_key_from_selection(pairs, rank=1, preserve_pairs=keep, preserve_weight=self.weight)[0]
        context_maps = gw.key_response_maps(context, imgnums)
        if not keep:
            return context_maps, None
        obs, w = gw.keys_and_weights(keep, 'preserve')
        query = gw.covariance_adjusted_query_key((obs * w[:, None]).sum(0) / w.sum())
        return context_maps, gw.key_response_maps(query / query.norm().clamp(min=1e-12), imgnums)

    @reports_errors('Preview')
    def preview(self, _button=None) -> None:
        """Draws the heat maps on the grid's samples (red: context, blue: preserve keys); a second click
        takes them off."""
        if self.previewing:
            self.stop_preview()
            self.show_message('preview off: the grid shows the samples')
            return
        imgnums = list(self.app.sel)
        context_maps, keep_maps = self.preview_maps(imgnums)
        images = self.app.images(imgnums)
        levels = (response_level(context_maps), None if keep_maps is None else response_level(keep_maps))
        self._preview = {}
        for k, (imgnum, image) in enumerate(zip(imgnums, images, strict=True)):
            picture = heat_overlay(image, context_maps[k], levels[0], CONTEXT_COLOR)
            if keep_maps is not None:
                picture = heat_overlay(picture, keep_maps[k], levels[1], PRESERVE_COLOR)
            self._preview[imgnum] = picture
        self._show_preview(True)
        touched = int((context_maps.flatten(1).amax(1) >= levels[0]).sum())
        self.show_message(f'preview: the context answers at full strength in {touched} of {len(imgnums)} samples '
                          '(red on the grid)' + ('; the preserve regions\' keys in blue' if keep_maps is not None
                                                 else '') + ' (click Preview again to hide)')

    def stop_preview(self) -> None:
        """Takes the heat maps off the grid (nothing to do when none are shown)."""
        if self.previewing:
            self._preview = {}
            self._show_preview(False)

    def _show_preview(self, on: bool) -> None:
        self.previewing = on
        self._preview_version += 1
        self.preview_btn.button_style = 'info' if on else ''
        self.legend.layout.display = None if on else 'none'
        self.app.repaint_grid()

    def preview_picture(self, imgnum: int) -> np.ndarray | None:
        """Sample `imgnum` with the preview's heat maps (uint8 [H, W, 3]), or None when not previewed."""
        return self._preview.get(imgnum) if self.previewing else None

    @property
    def preview_state(self) -> int | None:
        """Changes whenever the preview goes on or off (the grid repaints its canvases then)."""
        return self._preview_version if self.previewing else None

    def clear(self) -> None:
        """After a change of the model: no preview, no changes strip (both would show the model before)."""
        self.stop_preview()
        self.preview_box.children = []
        self.changes_section.layout.display = 'none'

    def heldout_numbers(self) -> list[int]:
        """The `heldout` image numbers after the grid's (wrapping around the z-sample), none of the request's."""
        n = self.app.gw.num_images
        used = set(self.app.sel) | {pair[0] for name in ('key', 'preserve') for pair in self.app.request.get(name, [])}
        start = max(self.app.sel, default=-1) + 1
        numbers = [(start + k) % n for k in range(n)]
        return [i for i in numbers if i not in used][:self.heldout]

    def most_changed(self) -> tuple[list[int], list[float], list[int], list[float]]:
        """(the `shown` most changed held-out image numbers and their mean abs pixel change, the preserve
        examples' image numbers and theirs)."""
        def change(imgnums):
            before, after = self.app.images(imgnums, original=True), self.app.images(imgnums)
            return [float((b - a).abs().mean()) for b, a in zip(before, after, strict=True)]
        heldout = self.heldout_numbers()
        keep = list(dict.fromkeys(pair[0] for pair in self.regions))
        changes = change(heldout + keep)                  # one batch of renders (the originals are cached)
        order = sorted(range(len(heldout)), key=lambda k: -changes[k])[:self.shown]
        return [heldout[k] for k in order], [changes[k] for k in order], keep, changes[len(heldout):]

    def after_change(self, record) -> None:
        """Called by the app when Execute Change or Erase is done: the before / after strip, unless the
        change was rolled back (nothing changed); the message line stays the app's."""
        if getattr(record, 'rolled_back', False):
            self.preview_box.children = []
            self.changes_section.layout.display = 'none'
        else:
            self.changes_strip()

    @reports_errors('Changes')
    def show_changes(self, _button=None) -> None:
        top_changes, keep_changes = self.changes_strip()
        worst = f'{max(top_changes):.3f}' if top_changes else 'n/a'
        kept = f', preserve examples {max(keep_changes):.3f}' if keep_changes else ''
        self.show_message(f'changes (below the samples; top: before, bottom: after): most changed held-out sample '
                          f'{worst}{kept}')

    def changes_strip(self) -> tuple[list[float], list[float]]:
        """Shows the Changes section: a column per sample (the most changed held-out samples, then the
        preserve examples), the sample before the edit above it after (the rows labelled), captioned
        `#N held-out: c` or `#N preserve: c` (c: its mean abs change); returns the two lists of changes."""
        top, top_changes, keep, keep_changes = self.most_changed()
        size = self.app.size // 2
        caption = widgets.Layout(width=f'{size}px')

        def picture(image: torch.Tensor) -> widgets.Image:
            return widgets.Image(value=encode_picture(as_rgb_array(imgviz.to_uint8(image), size)), format='jpeg',
                                 width=size, height=size, layout=widgets.Layout(width=f'{size}px',
                                                                                height=f'{size}px', margin='0'))

        rows = widgets.VBox([widgets.HTML(f'<b>{name}</b>', layout=widgets.Layout(
                                height=f'{size}px', width='48px', display='flex', align_items='center'))
                             for name in ('before', 'after')])
        rows.add_class('rwa-change-rows')
        cells = [rows]
        for imgnum, amount, kind in [(i, c, 'held-out') for i, c in zip(top, top_changes, strict=True)] + \
                                    [(i, c, 'preserve') for i, c in zip(keep, keep_changes, strict=True)]:
            before, after = self.app.images([imgnum], original=True)[0], self.app.images([imgnum])[0]
            label = widgets.HTML(f'#{imgnum} {kind}: {amount:.3f}', layout=caption)
            label.add_class('rwa-hint')                       # wraps when narrow
            cell = widgets.VBox([picture(before), picture(after), label])
            cell.add_class('rwa-change')
            cells.append(cell)
        self.preview_box.children = cells
        self.changes_section.layout.display = None
        return top_changes, keep_changes
