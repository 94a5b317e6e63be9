"""Small pieces of the widget: image-number lists, mask shifts, an edit record in words, download links, its style.
"""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Sequence
from pathlib import Path

import ipywidgets as widgets
import numpy as np

from rewrite.app.base import UserError
from rewrite.formats import editfile
from rewrite.formats.registry import SOLVERS

__all__ = ['click_center', 'describe_record', 'DOWNLOAD_LIMIT', 'download_link', 'format_image_numbers',
           'loss_rose', 'parse_image_numbers', 'shift_mask', 'SOLVER_CHOICES', 'STYLE', 'WARNING_COLOR',
           'WIDE', 'wrapping_row']

SOLVER_CHOICES = tuple(SOLVERS)                 # the solver registry's names (rewrite/formats/registry.py)

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
