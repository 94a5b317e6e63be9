"""The 'glow' scene family: lit windows cast a glow on the ground in front of the building."""

import numpy as np
import pytest

from utils.demo.scenedata import presence
from utils.demo.scenes import (
    CLASSES,
    GLOW_ALPHA,
    GLOW_DEPTH,
    GLOW_RGB,
    N_RULE_CLASSES,
    RULE_CLASS_ID,
    RULE_CLASSES,
    render_scene,
)

N = 200


@pytest.fixture(scope='module')
def pairs():
    """(church scene, glow scene) for indices 0..N-1."""
    return [(render_scene(i), render_scene(i, family='glow')) for i in range(N)]


def test_rule_classes_extend_the_church_classes():
    assert RULE_CLASSES[:len(CLASSES)] == CLASSES
    assert RULE_CLASSES[len(CLASSES):] == ('lit_window', 'glow')
    assert N_RULE_CLASSES == 12


def test_unknown_family_is_refused():
    with pytest.raises(ValueError, match='family'):
        render_scene(0, family='kitchen')


def test_lit_rate_near_half(pairs):
    lit = np.array([g.meta['windows_lit'] for _, g in pairs])
    # binomial(200, 0.5): sd 3.5 points; 5 sd
    assert abs(lit.mean() - 0.5) < 0.18


def test_effect_follows_exactly_from_the_scene_parameters(pairs):
    """Glow pixels are exactly the glow box minus what is drawn over it, iff the windows are lit;
    their colour is the church scene's ground blended with GLOW_RGB at GLOW_ALPHA."""
    glow, lit_id, win_id = RULE_CLASS_ID['glow'], RULE_CLASS_ID['lit_window'], RULE_CLASS_ID['window']
    ground = RULE_CLASS_ID['ground']
    for church, g in pairs:
        lit = g.meta['windows_lit']
        x0, y0, x1, y1 = g.meta['glow_box']
        box = np.zeros((64, 64), bool)
        box[y0:y1, x0:x1] = True
        bx0, _, bx1, by1 = g.meta['building_box']
        assert (x0, y0, x1) == (bx0, by1, bx1) and y1 == min(64, by1 + GLOW_DEPTH)
        # the glow covers every pixel of its box that the church scene shows as ground
        expect = box & (church.labels == ground) if lit else np.zeros_like(box)
        assert np.array_equal(g.labels == glow, expect), g.meta['index']
        # everything else is labelled as in the church scene, windows relabelled when lit
        church_lab = church.labels.copy()
        if lit:
            church_lab[church_lab == win_id] = lit_id
        keep = ~expect
        assert np.array_equal(g.labels[keep], church_lab[keep])
        if lit:
            want = church.image[expect].astype(float) * (1 - GLOW_ALPHA) + np.array(GLOW_RGB) * GLOW_ALPHA
            assert np.abs(g.image[expect].astype(float) - want).max() <= 1.0   # two roundings of uint8
        # only the windows' colour and the glow (also under the watermark's blend) differ
        other = keep & (church.labels != win_id) & ~(box & (church.labels == RULE_CLASS_ID['watermark']))
        assert np.array_equal(g.image[other], church.image[other])


def test_cause_and_effect_presence_agree(pairs):
    labels = np.stack([g.labels for _, g in pairs])
    pres = presence(labels, n_classes=N_RULE_CLASSES)
    lit = np.array([g.meta['windows_lit'] for _, g in pairs])
    assert np.array_equal(pres[:, RULE_CLASS_ID['lit_window']], lit)
    assert np.array_equal(pres[:, RULE_CLASS_ID['glow']], lit)
    assert not pres[~lit][:, RULE_CLASS_ID['glow']].any()


def test_church_parameters_unchanged(pairs):
    for church, g in pairs:
        extra = {'family', 'windows_lit', 'glow_box'}
        assert {k: v for k, v in g.meta.items() if k not in extra} == church.meta
