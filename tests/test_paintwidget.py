"""PaintWidget driven by the messages ipyevents' browser side sends (through the comm message handler)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from conftest import REFERENCE, need_shared
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from rewrite.app.events import dispatch_dom_event, drag, mouse_message
from rewrite.formats import editfile
from utils.paintwidget import PaintWidget, stroke_footprint


def decoded(widget: PaintWidget) -> np.ndarray:
    """The picture the browser would show, as float RGB."""
    return np.asarray(Image.open(io.BytesIO(widget.value)).convert('RGB'), dtype=np.float32)


def distance_to_segment(size: int, p0, p1) -> np.ndarray:
    ys, xs = np.mgrid[0:size, 0:size] + 0.5
    d = np.subtract(p1, p0)
    t = np.clip(((xs - p0[0]) * d[0] + (ys - p0[1]) * d[1]) / max(float(d @ d), 1e-9), 0, 1)
    return np.hypot(xs - p0[0] - t * d[0], ys - p0[1] - t * d[1])


def test_stroke_paints_a_soft_band_along_the_path():
    w = PaintWidget(size=64, brushsize=5)
    drag(w.events, [(10, 10), (30, 10), (50, 40)], shown_size=64)
    assert w.mask.min() >= 0 and w.mask.max() == 1.0
    dist = np.minimum(distance_to_segment(64, (10, 10), (30, 10)), distance_to_segment(64, (30, 10), (50, 40)))
    assert (w.mask[dist < 3] == 1).all()                      # solid inside the brush
    assert (w.mask[dist > 5.5] == 0).all()                    # nothing beyond its radius
    soft = w.mask[(dist > 4) & (dist < 5)]
    assert ((soft > 0) & (soft < 1)).any()                    # the edge fades


def test_brush_size_sets_the_painted_area():
    areas = []
    for brush in (3, 9):
        w = PaintWidget(size=64, brushsize=brush)
        drag(w.events, [(32, 32)], shown_size=64)
        areas.append((w.mask > 0).sum())
    assert 6 < areas[1] / areas[0] < 12                       # ~ (9/3)^2 = 9


def test_event_positions_scale_with_the_shown_size():
    """The browser reports pixels of the element as shown; a 2x zoomed widget paints at half the coordinates."""
    w = PaintWidget(size=64, brushsize=3)
    drag(w.events, [(80, 40)], shown_size=128)
    rows, cols = np.nonzero(w.mask == 1)
    assert abs(cols.mean() - 40) < 1 and abs(rows.mean() - 20) < 1


def test_picture_shows_the_tinted_mask_only_where_painted():
    picture = np.full((32, 32, 3), 100, dtype=np.uint8)
    w = PaintWidget(picture, size=64, brushsize=6, image_format='png')
    plain = decoded(w)
    assert plain.shape == (64, 64, 3) and np.allclose(plain, 100, atol=1)
    drag(w.events, [(16, 16)], shown_size=64)
    shown = decoded(w)
    assert np.abs(shown[16, 16] - 100).max() > 40
    assert np.allclose(shown[50, 50], 100, atol=1)


def test_stroke_callbacks_and_ends():
    w = PaintWidget(size=64)
    started, ended = [], []
    w.on_stroke_start(started.append).on_mask(ended.append)
    dispatch_dom_event(w.events, mouse_message('mousedown', 5, 5, 64))
    dispatch_dom_event(w.events, mouse_message('mousemove', 20, 5, 64))
    assert started == [w] and ended == []
    dispatch_dom_event(w.events, mouse_message('mouseleave', 70, 5, 64))      # dragged out: the stroke ends
    assert ended == [w]
    before = w.mask.copy()
    dispatch_dom_event(w.events, mouse_message('mousemove', 40, 40, 64))      # hovering paints nothing
    assert np.array_equal(w.mask, before)
    dispatch_dom_event(w.events, mouse_message('mousedown', 40, 40, 64))
    dispatch_dom_event(w.events, mouse_message('mousemove', 50, 40, 64, buttons=0))  # button released outside
    assert len(ended) == 2
    dispatch_dom_event(w.events, mouse_message('mousemove', 60, 60, 64))
    assert w.mask[60, 60] == 0


def test_malformed_events_are_ignored():
    w = PaintWidget(size=64)
    for message in [{'event': 'mousedown'}, {'event': 'mousedown', 'relativeX': 'x', 'relativeY': 3},
                    {'event': 'mousedown', 'relativeX': None, 'relativeY': 3}, {'relativeX': 5, 'relativeY': 5}]:
        dispatch_dom_event(w.events, message)
    assert w.is_empty


def test_right_button_and_disabled_do_not_paint():
    w = PaintWidget(size=64)
    dispatch_dom_event(w.events, mouse_message('mousedown', 20, 20, 64, button=2))
    w.disabled = True
    drag(w.events, [(40, 40), (50, 50)], shown_size=64)
    assert w.is_empty


def test_ctrl_stroke_erases_and_oneshot_restarts():
    w = PaintWidget(size=64, brushsize=8)
    drag(w.events, [(10, 32), (54, 32)], shown_size=64)
    dispatch_dom_event(w.events, mouse_message('mousedown', 32, 32, 64, ctrlKey=True))
    dispatch_dom_event(w.events, mouse_message('mouseup', 32, 32, 64))
    assert w.mask[32, 32] == 0 and w.mask[32, 12] == 1
    one = PaintWidget(size=64, brushsize=3, oneshot=True)
    drag(one.events, [(10, 10)], shown_size=64)
    drag(one.events, [(50, 50)], shown_size=64)
    assert one.mask[10, 10] == 0 and one.mask[50, 50] == 1


def test_mask_url_is_the_edit_file_format():
    w = PaintWidget(size=64, brushsize=6)
    drag(w.events, [(20, 20), (40, 30)], shown_size=64)
    url = w.mask_url
    rgba = editfile.decode_mask_rgba(url)
    painted = w.mask > 0
    assert (rgba[~painted] == 0).all()
    assert (rgba[painted][:, :3] == 255).all()
    assert np.abs(rgba[..., 3] / 255.0 - w.mask).max() <= 1 / 255
    assert editfile.Selection(3, url).imgnum == 3             # a valid selection for edit files
    other = PaintWidget(size=128)
    other.load_mask_url(url)                                  # loads at any size, soft edges kept
    assert np.abs(other.mask[::2, ::2] - w.mask).mean() < 0.05


def test_loads_a_mask_saved_by_the_original_tool():
    edit = need_shared(REFERENCE / 'original-edits' / 'church' / 'dome2spire.json')
    import json
    url = json.loads(edit.read_text())['object'][1]
    w = PaintWidget(size=64)
    w.load_mask_url(url)
    expected = editfile.mask_from_url(url, 64).numpy() > 0
    assert not w.is_empty
    assert ((w.mask > 0.5) <= expected).all()                 # shown inside the region the rewriter uses


def test_bad_mask_url_raises_and_keeps_the_mask():
    w = PaintWidget(size=32)
    drag(w.events, [(16, 16)], shown_size=32)
    before = w.mask.copy()
    with pytest.raises(editfile.EditFileError):
        w.load_mask_url('data:image/png;base64,not-a-png')
    assert np.array_equal(w.mask, before)


def test_set_picture_resizes_and_keeps_the_mask():
    w = PaintWidget(size=48)
    drag(w.events, [(24, 24)], shown_size=48)
    w.set_picture(np.zeros((16, 16, 3), dtype=np.uint8))
    assert w.picture.shape == (48, 48, 3) and not w.is_empty
    w.clear_mask()
    assert w.is_empty


@settings(max_examples=40, deadline=None)
@given(st.tuples(st.floats(-20, 84), st.floats(-20, 84)), st.tuples(st.floats(-20, 84), st.floats(-20, 84)),
       st.floats(0.5, 20))
def test_footprint_stays_within_the_brush(p0, p1, radius):
    footprint = stroke_footprint(64, p0, p1, radius)
    dist = distance_to_segment(64, p0, p1)
    if footprint is None:
        assert (dist > radius - 1e-3).all()
        return
    mask = np.zeros((64, 64), dtype=np.float32)
    region, weight = footprint
    mask[region] = weight
    assert ((mask >= 0) & (mask <= 1)).all()
    assert (mask[dist >= radius + 1e-3] == 0).all()
    inner = dist <= radius - max(1.0, 0.3 * radius) - 1e-3
    assert (mask[inner] == 1).all()
