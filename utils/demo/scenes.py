"""Procedural toy-church scenes with exact per-pixel ground-truth labels.

Scene ``i`` is a pure function of ``i``: every random draw comes from a
``numpy.random.RandomState`` seeded with the index only, so a scene is
bit-identical on every machine and in every process.

Geometry is sampled in units of a 64 px canvas and rasterised natively at
the requested size by testing pixel centres against each shape (no
anti-aliasing), so every drawn pixel carries exactly one label. Shapes are
painted back to front; a later shape overrides both colour and label.

``save_scene_grid('grid.png')`` writes an 8x8 grid of scenes 0..63.

Scene families. ``family='church'`` (the default) is the world the shipped
demo GAN and segmenter were trained on; it is pinned. ``family='glow'`` is
the same scene with one causal rule added (the analogue of the paper's
section 5.3 "windows cause reflections" rule): the windows are lit with
probability ``GLOW_LIT_RATE`` (drawn from a second RNG stream, so every other
parameter of scene ``i`` is the church scene's), and **lit windows cast a
glow on the ground in front of the building**: the ground rectangle
``x in [building x0, building x1), y in [building y1, building y1 +
GLOW_DEPTH)`` (64-px units) is alpha-blended towards ``GLOW_RGB`` with
``GLOW_ALPHA``, exactly when the windows are lit. Glow-family labels index
``RULE_CLASSES`` (``CLASSES`` plus ``lit_window`` for the cause and ``glow``
for the effect); dark windows keep the label ``window``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import numpy as np

CLASSES = ('sky', 'ground', 'building', 'window', 'door', 'dome', 'spire',
           'flattop', 'tree', 'watermark')
N_CLASSES = len(CLASSES)
CLASS_ID = MappingProxyType({name: i for i, name in enumerate(CLASSES)})
TOP_KINDS = ('dome', 'spire', 'flattop')
FAMILIES = ('church', 'glow')
RULE_CLASSES = CLASSES + ('lit_window', 'glow')  # labels of the 'glow' family
N_RULE_CLASSES = len(RULE_CLASSES)
RULE_CLASS_ID = MappingProxyType({name: i for i, name in enumerate(RULE_CLASSES)})
GLOW_LIT_RATE = 0.5
GLOW_DEPTH = 6  # rows of ground below the building that the glow covers, 64-px units
GLOW_RGB = (255.0, 226.0, 140.0)
GLOW_ALPHA = 0.55

UNIT = 64  # geometry is sampled in pixels of a 64x64 canvas
WATERMARK_RATE = 0.25
WATERMARK_BOX = (40, 55, 61, 61)  # x0, y0, x1, y1 (end-exclusive), 64-px units
WATERMARK_RGB = (245.0, 245.0, 240.0)
WATERMARK_ALPHA = 0.5

_SKIES = (  # (zenith, horizon)
    ((70, 120, 200), (170, 200, 235)),
    ((105, 150, 215), (200, 218, 238)),
    ((120, 126, 142), (188, 188, 194)),
    ((88, 100, 160), (232, 178, 128)),
)
_GRASS = (86, 140, 62)
_DIRT = (146, 114, 78)
_STONES = ((205, 185, 145), (152, 152, 156), (222, 216, 204),
           (165, 86, 64), (196, 160, 96))
_DOMES = ((78, 150, 128), (212, 172, 64), (82, 98, 140), (150, 56, 44))
_SPIRES = ((62, 66, 82), (150, 72, 52), (72, 132, 112), (104, 104, 110))
_WINDOW_DARK = (42, 46, 66)
_WINDOW_LIT = (232, 192, 96)
_DOORS = ((98, 62, 36), (56, 44, 38))
_CANOPY = (44, 102, 46)
_TRUNK = (92, 62, 36)


@dataclass(frozen=True)
class Scene:
    """One rendered scene.

    image:  uint8 [size, size, 3] RGB.
    labels: uint8 [size, size], indices into ``CLASSES``.
    meta:   layout facts; boxes are (x0, y0, x1, y1) pixel boxes at ``size``,
            end-exclusive.
    """

    image: np.ndarray
    labels: np.ndarray
    meta: dict[str, Any]


class _Canvas:
    """Float RGB image plus label map with pixel-centre shape masks."""

    def __init__(self, size: int) -> None:
        centres = (np.arange(size, dtype=np.float64) + 0.5) * (UNIT / size)
        self.size = size
        self.y = centres[:, None]
        self.x = centres[None, :]
        self.image = np.zeros((size, size, 3), np.float64)
        self.labels = np.zeros((size, size), np.uint8)

    def rect(self, x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
        return (self.y >= y0) & (self.y < y1) & (self.x >= x0) & (self.x < x1)

    def disc(self, cx: float, cy: float, r: float) -> np.ndarray:
        return (self.x - cx) ** 2 + (self.y - cy) ** 2 < r * r

    def paint(self, mask: np.ndarray, colour: Any, label: str) -> None:
        """Paint ``colour`` (RGB or a [size,size,3] field) where ``mask``."""
        colour = np.broadcast_to(np.asarray(colour, np.float64),
                                 self.image.shape)
        self.image[mask] = colour[mask]
        self.labels[mask] = RULE_CLASS_ID[label]

    def box(self, x0: float, y0: float, x1: float, y1: float) -> tuple:
        """Convert a 64-unit box to an integer pixel box at this size."""
        s = self.size / UNIT
        return tuple(round(v * s) for v in (x0, y0, x1, y1))


def _jitter(rng: np.random.RandomState, rgb: Sequence[float],
            amount: int) -> np.ndarray:
    shift = rng.randint(-amount, amount + 1) + rng.randint(-amount // 2,
                                                           amount // 2 + 1, 3)
    return np.clip(np.asarray(rgb, np.float64) + shift, 0, 255)


def _pick(rng: np.random.RandomState, options: Sequence) -> Any:
    return options[rng.randint(len(options))]


def _sample_towers(rng: np.random.RandomState, b: dict) -> list[dict]:
    """Tower columns standing on the ground beside/inside the building."""
    tw = rng.randint(8, 13)
    n = 1 if rng.rand() < 0.55 else 2
    places = [_pick(rng, ('left', 'centre', 'right'))] if n == 1 \
        else ['left', 'right']
    first = _pick(rng, TOP_KINDS)
    towers = []
    for i, place in enumerate(places):
        kind = first if i == 0 or rng.rand() < 0.5 else _pick(rng, TOP_KINDS)
        if place == 'left':
            x0 = max(1, b['x0'] - tw // 3)
        elif place == 'right':
            x0 = min(UNIT - 1, b['x1'] + tw // 3) - tw
        else:
            x0 = b['x0'] + (b['w'] - tw) // 2
        top_h = {'dome': (tw + 1) / 2, 'flattop': 5,
                 'spire': rng.randint(int(1.4 * tw), int(2.1 * tw) + 1)}[kind]
        rise = rng.randint(7, 15)
        room = b['y0'] - 2 - top_h  # keep the top inside the canvas
        if room < 6 and kind == 'spire':
            top_h, room = b['y0'] - 8, 6
        towers.append({'x0': x0, 'x1': x0 + tw, 'kind': kind, 'top_h': top_h,
                       'y0': b['y0'] - min(rise, room)})
    return towers


def _sample_trees(rng: np.random.RandomState, b: dict,
                  ground_y: int) -> list[dict]:
    n = int(rng.choice(3, p=(0.3, 0.4, 0.3)))
    trees = []
    for _ in range(n):
        r = rng.randint(4, 8)
        if rng.rand() < 0.5:
            lo, hi = r + 1, max(r + 1, b['x0'] - r + 3)
        else:
            lo, hi = min(UNIT - r - 2, b['x1'] + r - 3), UNIT - r - 2
        base = min(UNIT - 2, ground_y + rng.randint(2, 10))
        trees.append({'cx': rng.randint(lo, hi + 1) + 0.5, 'r': r,
                      'base': base, 'trunk': rng.randint(3, 7)})
    return trees


def _sample(index: int) -> dict:
    """Draw every random parameter of scene ``index`` (64-px units)."""
    rng = np.random.RandomState(index % (2 ** 32))
    ground_y = rng.randint(44, 51)
    bw, bh = rng.randint(22, 37), rng.randint(12, 21)
    bx0 = rng.randint(4, UNIT - 4 - bw + 1)
    b = {'x0': bx0, 'x1': bx0 + bw, 'w': bw, 'y1': ground_y + 2}
    b['y0'] = b['y1'] - bh
    zenith, horizon = _pick(rng, _SKIES)
    sky_shift = rng.randint(-12, 13, 3)
    grass = rng.rand() < 0.6
    p = {'ground_y': ground_y, 'building': b, 'grass': grass,
         'sky': (np.clip(np.add(zenith, sky_shift), 0, 255),
                 np.clip(np.add(horizon, sky_shift), 0, 255)),
         'ground': _jitter(rng, _GRASS if grass else _DIRT, 14),
         'stone': _jitter(rng, _pick(rng, _STONES), 14),
         'tower_shade': rng.uniform(0.84, 1.0)}
    p['towers'] = _sample_towers(rng, b)
    p['top_rgb'] = {'dome': _jitter(rng, _pick(rng, _DOMES), 12),
                    'spire': _jitter(rng, _pick(rng, _SPIRES), 12)}
    dw = rng.randint(5, 8)
    p['door'] = {'x0': bx0 + (bw - dw) // 2, 'w': dw, 'h': rng.randint(8, 12),
                 'rgb': _jitter(rng, _pick(rng, _DOORS), 10)}
    lit = rng.rand() < 0.15
    p['window'] = {'w': rng.randint(3, 5), 'h': rng.randint(5, 8),
                   'gap': rng.randint(2, 5),
                   'rgb': _jitter(rng, _WINDOW_LIT if lit else _WINDOW_DARK,
                                  10)}
    p['trees'] = _sample_trees(rng, b, ground_y)
    p['canopy'] = _jitter(rng, _CANOPY, 14)
    p['trunk'] = _jitter(rng, _TRUNK, 10)
    p['watermark'] = bool(rng.rand() < WATERMARK_RATE)
    return p


def _glow_rule(p: dict, index: int) -> dict:
    """The 'glow' family's parameters: scene ``index`` with windows lit at ``GLOW_LIT_RATE``.

    The draw uses its own stream (seeded by ``(index, 1)``) so every church parameter is unchanged.
    """
    rng = np.random.RandomState([index % (2 ** 32), 1])
    lit = bool(rng.rand() < GLOW_LIT_RATE)
    p = dict(p)
    p['window'] = dict(p['window'], label='lit_window' if lit else 'window',
                       rgb=_jitter(rng, _WINDOW_LIT if lit else _WINDOW_DARK, 10))
    p['glow'] = lit
    return p


def glow_region(building_box: Sequence[float]) -> tuple[float, float, float, float]:
    """The rule's effect region (x0, y0, x1, y1), 64-px units, for a building box in 64-px units."""
    x0, _, x1, y1 = building_box
    return (x0, y1, x1, min(UNIT, y1 + GLOW_DEPTH))


def _draw_glow(c: _Canvas, p: dict) -> tuple:
    """Blend the ground below the building towards GLOW_RGB; returns the glow's pixel box."""
    b = p['building']
    box = glow_region((b['x0'], b['y0'], b['x1'], b['y1']))
    mask = c.rect(*box)
    c.paint(mask, c.image * (1 - GLOW_ALPHA) + np.asarray(GLOW_RGB) * GLOW_ALPHA, 'glow')
    return c.box(*box)


def _highlight(c: _Canvas, rgb: np.ndarray, cx: float, cy: float,
               r: float) -> np.ndarray:
    """Colour field of a ball lit from the upper left, [size,size,3]."""
    d2 = ((c.x - cx + 0.4 * r) ** 2 + (c.y - cy + 0.4 * r) ** 2) / (r * r)
    shade = np.clip(1.18 - 0.3 * d2, 0.75, 1.18)
    return np.clip(rgb * shade[..., None], 0, 255)


def _draw_background(c: _Canvas, p: dict) -> None:
    gy = p['ground_y']
    t = np.clip(c.y / gy, 0, 1)[..., None]
    zenith, horizon = p['sky']
    c.paint(np.ones((c.size, c.size), bool), zenith + (horizon - zenith) * t,
            'sky')
    t = np.clip((c.y - gy) / (UNIT - gy), 0, 1)[..., None]
    c.paint(np.broadcast_to(c.y >= gy, (c.size, c.size)),
            p['ground'] * (1 - 0.22 * t), 'ground')


def _draw_building(c: _Canvas, p: dict) -> list[tuple[float, float]]:
    """Nave plus tower columns; returns the x spans the towers occupy."""
    b, stone = p['building'], p['stone']
    c.paint(c.rect(b['x0'], b['y0'], b['x1'], b['y1']), stone, 'building')
    c.paint(c.rect(b['x0'], b['y0'], b['x1'], b['y0'] + 2), stone * 0.8,
            'building')
    tower_rgb = stone * p['tower_shade']
    for t in p['towers']:
        shade = np.where(c.x >= t['x1'] - (t['x1'] - t['x0']) / 3, 0.88, 1.0)
        c.paint(c.rect(t['x0'], t['y0'], t['x1'], b['y1']),
                tower_rgb * shade[..., None], 'building')
    return [(t['x0'], t['x1']) for t in p['towers']]


def _draw_top(c: _Canvas, p: dict, t: dict) -> tuple:
    """Dome, spire or crenellated flat top on tower ``t``; returns its box."""
    x0, x1, y0 = t['x0'], t['x1'], t['y0']
    cx, half = (x0 + x1) / 2, (x1 - x0) / 2
    if t['kind'] == 'dome':
        r = half + 0.5
        mask = c.disc(cx, y0, r) & (c.y < y0)
        c.paint(mask, _highlight(c, p['top_rgb']['dome'], cx, y0, r), 'dome')
        return c.box(cx - r, y0 - r, cx + r, y0)
    if t['kind'] == 'spire':
        h, base = t['top_h'], half + 0.5
        apex = y0 - h
        mask = (c.y >= apex) & (c.y < y0) & \
            (np.abs(c.x - cx) < base * (c.y - apex) / h)
        shade = np.where(c.x < cx, 1.1, 0.82)[..., None]
        c.paint(mask, np.clip(p['top_rgb']['spire'] * shade, 0, 255), 'spire')
        return c.box(cx - base, apex, cx + base, y0)
    rgb = p['stone'] * p['tower_shade'] * 0.72
    w = (x1 - x0) + 2
    mask = c.rect(x0 - 1, y0 - 2, x1 + 1, y0)
    for k in range(3):  # three merlons with two crenels between them
        m0 = x0 - 1 + k * 2 * w / 5
        mask = mask | c.rect(m0, y0 - 5, m0 + w / 5, y0 - 2)
    c.paint(mask, rgb, 'flattop')
    return c.box(x0 - 1, y0 - 5, x1 + 1, y0)


def _free_spans(lo: float, hi: float,
                blocked: Iterable[tuple[float, float]]) -> list[tuple]:
    spans = [(lo, hi)]
    for b0, b1 in blocked:
        spans = [s for a, z in spans
                 for s in ((a, min(z, b0)), (max(a, b1), z)) if s[1] > s[0]]
    return spans


def _draw_openings(c: _Canvas, p: dict, towers: list[tuple]) -> int:
    """Windows on the nave and towers, then the arched door; returns #windows."""
    b, w, d = p['building'], p['window'], p['door']
    wy0 = b['y0'] + 4
    count = 0
    blocked = [(t0 - 1, t1 + 1) for t0, t1 in towers]
    blocked.append((d['x0'] - 1, d['x0'] + d['w'] + 1))
    for a, z in _free_spans(b['x0'] + 1, b['x1'] - 1, blocked):
        n = int((z - a + w['gap']) // (w['w'] + w['gap']))
        start = a + (z - a - (n * (w['w'] + w['gap']) - w['gap'])) // 2
        for k in range(n):
            x0 = start + k * (w['w'] + w['gap'])
            c.paint(c.rect(x0, wy0, x0 + w['w'], wy0 + w['h']), w['rgb'],
                    w.get('label', 'window'))
            count += 1
    for t in p['towers']:
        x0 = (t['x0'] + t['x1'] - 3) // 2
        c.paint(c.rect(x0, t['y0'] + 3, x0 + 3, t['y0'] + 8), w['rgb'],
                w.get('label', 'window'))
        count += 1
    x0, dw = d['x0'], d['w']
    arch_y = b['y1'] - d['h'] + dw / 2
    mask = c.rect(x0, arch_y, x0 + dw, b['y1']) | \
        (c.disc(x0 + dw / 2, arch_y, dw / 2) & (c.y < arch_y))
    c.paint(mask, d['rgb'], 'door')
    return count


def _draw_trees(c: _Canvas, p: dict) -> list[tuple]:
    boxes = []
    for t in p['trees']:
        cx, r, base = t['cx'], t['r'], t['base']
        c.paint(c.rect(cx - 1, base - t['trunk'] - r / 2, cx + 1, base),
                p['trunk'], 'tree')
        cy = base - t['trunk'] - 0.8 * r
        c.paint(c.disc(cx, cy, r), _highlight(c, p['canopy'], cx, cy, r),
                'tree')
        boxes.append(c.box(cx - r, cy - r, cx + r, base))
    return boxes


def _watermark_mask(c: _Canvas) -> np.ndarray:
    return c.rect(*WATERMARK_BOX)


def render_scene(index: int, size: int = 64,
                 watermark: bool | None = None, family: str = 'church') -> Scene:
    """Render scene ``index`` at ``size`` x ``size`` pixels.

    ``watermark`` forces the watermark on/off (None: the scene's own draw);
    every other pixel is unaffected by this switch. ``family`` is one of
    ``FAMILIES`` (see the module docstring); 'glow' scenes label with ``RULE_CLASSES``
    and their meta adds ``windows_lit`` (the cause) and ``glow_box`` (the effect's
    pixel box, also given when the glow is absent).
    """
    if family not in FAMILIES:
        raise ValueError(f'family: expected one of {FAMILIES}, got {family!r}')
    p = _sample(index)
    if family == 'glow':
        p = _glow_rule(p, index)
    has_wm = p['watermark'] if watermark is None else bool(watermark)
    c = _Canvas(size)
    _draw_background(c, p)
    if p.get('glow'):
        _draw_glow(c, p)
    towers = _draw_building(c, p)
    top_boxes = [_draw_top(c, p, t) for t in p['towers']]
    n_windows = _draw_openings(c, p, towers)
    tree_boxes = _draw_trees(c, p)
    image = np.clip(np.round(c.image), 0, 255).astype(np.uint8)
    if has_wm:
        mask = _watermark_mask(c)
        blend = WATERMARK_ALPHA * np.asarray(WATERMARK_RGB) + \
            (1 - WATERMARK_ALPHA) * image[mask]
        image[mask] = np.round(blend).astype(np.uint8)
        c.labels[mask] = CLASS_ID['watermark']
    b, d = p['building'], p['door']
    meta = {
        'index': index, 'size': size,
        'ground_y': c.box(0, p['ground_y'], 0, 0)[1],
        'ground_kind': 'grass' if p['grass'] else 'dirt',
        'building_box': c.box(b['x0'], b['y0'], b['x1'], b['y1']),
        'towers': [{'box': c.box(t['x0'], t['y0'], t['x1'], b['y1']),
                    'top': t['kind'], 'top_box': tb}
                   for t, tb in zip(p['towers'], top_boxes, strict=True)],
        'top_kinds': [t['kind'] for t in p['towers']],
        'door_box': c.box(d['x0'], b['y1'] - d['h'], d['x0'] + d['w'],
                          b['y1']),
        'n_windows': n_windows, 'n_trees': len(tree_boxes),
        'tree_boxes': tree_boxes, 'has_watermark': has_wm,
        'watermark_box': c.box(*WATERMARK_BOX)}
    if family == 'glow':
        meta.update(family='glow', windows_lit=bool(p['glow']),
                    glow_box=c.box(*glow_region((b['x0'], b['y0'], b['x1'], b['y1']))))
    return Scene(image=image, labels=c.labels, meta=meta)


