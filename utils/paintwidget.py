"""PaintWidget: an ipywidgets Image you paint a soft mask on with the mouse (events from ipyevents).

The picture and the mask live in Python: each mouse event paints a soft round brush into a float
mask [size, size] in [0, 1], and the widget re-encodes the picture with the mask tinted over it
(JPEG by default: a 256 px frame encodes in about a millisecond). Mouse moves are throttled in the
browser. The mask exports to, and loads from, the edit files' data URL (utils.masks): an RGBA
PNG, unpainted pixels (0, 0, 0, 0), painted ones white with the brush's soft alpha.

Tests script the widget with the very messages the browser sends (tests/paintevents.py).
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence

import ipyevents
import ipywidgets as widgets
import numpy as np
from PIL import Image

from utils.masks import decode_mask_rgba, encode_mask, resize_mask

__all__ = ['as_rgb_array', 'BLANK_GRAY', 'encode_picture', 'mask_from_url', 'MOUSE_EVENTS', 'PaintWidget',
           'stroke_footprint']

MOUSE_EVENTS = ['mousedown', 'mousemove', 'mouseup', 'mouseleave']
BLANK_GRAY = 242                     # what an empty widget shows


def encode_picture(rgb: np.ndarray, image_format: str = 'jpeg') -> bytes:
    """uint8 [H, W, 3] -> JPEG (quality 90) or PNG bytes."""
    buf = io.BytesIO()
    options = {'quality': 90} if image_format == 'jpeg' else {'compress_level': 1}
    Image.fromarray(rgb).save(buf, format=image_format.upper(), **options)
    return buf.getvalue()


def as_rgb_array(picture, size: int) -> np.ndarray:
    """A PIL image or uint8 array [H, W, 3], resized to [size, size], as uint8 [size, size, 3]."""
    image = picture if isinstance(picture, Image.Image) else Image.fromarray(np.asarray(picture, dtype=np.uint8))
    image = image.convert('RGB')
    if image.size != (size, size):
        image = image.resize((size, size), Image.BICUBIC)
    return np.asarray(image, dtype=np.uint8)


def mask_from_url(url: str, size: int) -> np.ndarray:
    """An edit-file mask URL (any resolution) -> float mask [size, size] in [0, 1] for display: red x alpha,
    so soft brush edges show. Raises EditFileError (a ValueError) when the URL is not a mask PNG."""
    rgba = decode_mask_rgba(url).astype(np.float32) / 255.0
    return resize_mask(rgba[..., 0] * rgba[..., 3], size).numpy()


def stroke_footprint(size: int, p0: tuple[float, float], p1: tuple[float, float],
                     radius: float) -> tuple[tuple[slice, slice], np.ndarray] | None:
    """Soft brush coverage of the segment p0 -> p1 ((x, y) points) on a size x size canvas,
    as (region, weights in [0, 1]).

    A pixel (centre at +0.5) at distance d from the segment gets clip((radius - d) / feather, 0, 1):
    solid inside, fading over the outer `feather` pixels. None when the stroke misses the canvas.
    """
    radius = max(float(radius), 0.5)
    feather = max(1.0, 0.3 * radius)
    (x0, y0), (x1, y1) = p0, p1
    left, right = max(int(np.floor(min(x0, x1) - radius)), 0), min(int(np.ceil(max(x0, x1) + radius)) + 1, size)
    top, bottom = max(int(np.floor(min(y0, y1) - radius)), 0), min(int(np.ceil(max(y0, y1) + radius)) + 1, size)
    if left >= right or top >= bottom:
        return None
    ys, xs = np.mgrid[top:bottom, left:right].astype(np.float32) + 0.5
    dx, dy = x1 - x0, y1 - y0
    length2 = dx * dx + dy * dy
    t = np.zeros_like(xs) if length2 < 1e-6 else np.clip(((xs - x0) * dx + (ys - y0) * dy) / length2, 0.0, 1.0)
    dist = np.hypot(xs - (x0 + t * dx), ys - (y0 + t * dy))
    return (slice(top, bottom), slice(left, right)), np.clip((radius - dist) / feather, 0.0, 1.0)


class PaintWidget(widgets.Image):
    """A square image you paint a soft mask on. Display it like any widget.

    Args:
        picture: a PIL image or uint8 array [H, W, 3] (resized to the widget), or None for blank (light gray).
        size: widget side in pixels; the mask has this resolution.
        brushsize: brush radius in widget pixels.
        oneshot: each new stroke first clears the mask (a click marks one spot).
        disabled: ignore the mouse.
        opacity, color: how the mask is tinted over the picture.
        throttle_ms: the browser sends at most one mouse event of a kind per this many ms.
        image_format: 'jpeg' (fast) or 'png' (lossless).

    `on_mask(callback)` registers callback(widget), called when a stroke ends; `on_stroke_start`
    likewise when one begins.
    """

    def __init__(self, picture=None, size: int = 256, brushsize: float = 10.0, oneshot: bool = False,
                 disabled: bool = False, opacity: float = 0.55, color: Sequence[int] = (255, 64, 160),
                 throttle_ms: int = 25, image_format: str = 'jpeg'):
        super().__init__(format=image_format, width=size, height=size)
        self.layout.width = self.layout.height = f'{size}px'
        self.layout.min_width = self.layout.min_height = f'{size}px'
        self.add_class('paint-widget')
        self.size = int(size)
        self.brushsize = float(brushsize)
        self.oneshot, self.disabled, self.erase = oneshot, disabled, False
        self.opacity = float(opacity)
        self.color = np.asarray(color, dtype=np.float32)
        self.image_format = image_format
        self.mask = self._blank_mask()
        self._picture = self._blank_picture()
        self._last_point: tuple[float, float] | None = None
        self._erasing = False
        self._mask_callbacks: list[Callable] = []
        self._start_callbacks: list[Callable] = []
        self.events = ipyevents.Event(source=self, watched_events=MOUSE_EVENTS, prevent_default_action=True,
                                      throttle_or_debounce='throttle', wait=int(throttle_ms))
        self.events.on_dom_event(self.handle_event)
        self.set_picture(picture)

    # ---- public API -------------------------------------------------------------------------
    def on_mask(self, callback: Callable[[PaintWidget], None]) -> PaintWidget:
        self._mask_callbacks.append(callback)
        return self

    def on_stroke_start(self, callback: Callable[[PaintWidget], None]) -> PaintWidget:
        self._start_callbacks.append(callback)
        return self

    def set_picture(self, picture) -> None:
        """Shows a new picture (PIL image, uint8 array, or None for blank); the mask is kept."""
        self._picture = self._blank_picture() if picture is None else as_rgb_array(picture, self.size)
        self.render()

    @property
    def picture(self) -> np.ndarray:
        """The picture under the mask, uint8 [size, size, 3]."""
        return self._picture

    @property
    def is_empty(self) -> bool:
        return not bool((self.mask > 0).any())

    def clear_mask(self) -> None:
        self._last_point = None
        if not self.is_empty:
            self.mask = self._blank_mask()
            self.render()

    def set_mask(self, mask: np.ndarray | None) -> None:
        """Replaces the mask with a float array in [0, 1] (resized to the widget) or None (clear)."""
        if mask is None:
            self.clear_mask()
            return
        self.mask = resize_mask(mask, self.size).numpy()
        self.render()

    @property
    def mask_url(self) -> str:
        """The mask as the edit files' RGBA PNG data URL."""
        return encode_mask(self.mask)

    def load_mask_url(self, url: str) -> None:
        """Shows the mask of an edit-file data URL (any resolution); EditFileError if it does not decode."""
        self.set_mask(mask_from_url(url, self.size))

    def paint(self, p0: tuple[float, float], p1: tuple[float, float] | None = None, erase: bool = False) -> None:
        """Paints (or erases) the brush along p0 -> p1 in widget pixels (x, y) and re-renders."""
        footprint = stroke_footprint(self.size, p0, p0 if p1 is None else p1, self.brushsize)
        if footprint is None:
            return
        region, weight = footprint
        self.mask[region] = (np.minimum(self.mask[region], 1.0 - weight) if erase
                             else np.maximum(self.mask[region], weight))
        self.render()

    def render(self) -> None:
        """Re-encodes picture + tinted mask into the widget's value (sent to the browser)."""
        rgb = self._picture
        if not self.is_empty:
            alpha = (self.opacity * self.mask)[..., None]
            rgb = (rgb * (1.0 - alpha) + self.color * alpha).astype(np.uint8)
        self.value = encode_picture(rgb, self.image_format)

    # ---- mouse handling ---------------------------------------------------------------------
    def handle_event(self, event: dict) -> None:
        """ipyevents callback: mousedown starts a stroke, mousemove extends it, mouseup/leave ends it."""
        kind = event.get('event')
        if self.disabled:
            return
        point = self._event_point(event)
        if kind == 'mousedown' and point is not None and event.get('button', 0) == 0:
            self._start_stroke(point, erase=bool(event.get('ctrlKey')))
        elif self._last_point is None:
            return
        elif kind == 'mousemove' and point is not None and event.get('buttons', 1) != 0:
            self.paint(self._last_point, point, erase=self._erasing)
            self._last_point = point
        elif kind in ('mouseup', 'mouseleave', 'mousemove'):
            if kind == 'mouseup' and point is not None:
                self.paint(self._last_point, point, erase=self._erasing)
            self._last_point = None
            for callback in self._mask_callbacks:
                callback(self)

    def _blank_picture(self) -> np.ndarray:
        return np.full((self.size, self.size, 3), BLANK_GRAY, dtype=np.uint8)

    def _blank_mask(self) -> np.ndarray:
        return np.zeros((self.size, self.size), dtype=np.float32)

    def _start_stroke(self, point: tuple[float, float], erase: bool) -> None:
        for callback in self._start_callbacks:
            callback(self)
        if self.oneshot:
            self.mask = self._blank_mask()
        self._erasing = self.erase ^ erase
        self._last_point = point
        self.paint(point, erase=self._erasing)

    def _event_point(self, event: dict) -> tuple[float, float] | None:
        """(x, y) in widget pixels: relativeX/Y scaled by the element's on-screen size."""
        try:
            x, y = float(event['relativeX']), float(event['relativeY'])
            shown_w = float(event.get('boundingRectWidth') or self.size)
            shown_h = float(event.get('boundingRectHeight') or self.size)
        except (KeyError, TypeError, ValueError):
            return None
        return x * self.size / shown_w, y * self.size / shown_h
