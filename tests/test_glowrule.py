"""The glow world's rule as the rule-change procedure reads it: effect region, rates, flip score."""

import numpy as np
import pytest
import torch

from rewrite.experiments.glow.rule import RuleRates, effect_region, flip_rate, present
from utils.demo.scenedata import render_batch
from utils.demo.scenes import RULE_CLASS_ID, render_scene

N = 60


@pytest.fixture(scope='module')
def data():
    images, labels = render_batch(range(N), family='glow')
    return torch.as_tensor(labels).long()


def test_effect_region_from_labels_is_the_rules_glow_box(data):
    # from labels alone: the rows are the rule's; the columns can differ where a tree hides the
    # building's corner or a tower stands wider than the building
    region = effect_region(data)
    ious, rows_exact = [], []
    for i in range(N):
        x0, y0, x1, y1 = render_scene(i, family='glow').meta['glow_box']
        box = torch.zeros(64, 64, dtype=torch.bool)
        box[y0:y1, x0:x1] = True
        ious.append(float((box & region[i]).sum() / (box | region[i]).sum()))
        rows_exact.append(torch.equal(region[i].any(1), box.any(1)))
    assert np.mean(rows_exact) >= 0.9 and np.mean(ious) > 0.85


def test_rates_of_the_data_are_the_rule(data):
    lit = torch.tensor([render_scene(i, family='glow').meta['windows_lit'] for i in range(N)])
    rates = RuleRates.of(data)
    assert rates.n == N and rates.cause == pytest.approx(float(lit.float().mean()))
    assert rates.effect_when_cause == 1.0 and rates.effect_without_cause == 0.0
    assert rates.placed_when_cause == 1.0


def test_rates_count_the_cause_from_the_area_asked():
    lw, g = RULE_CLASS_ID['lit_window'], RULE_CLASS_ID['glow']
    labels = torch.zeros(4, 8, 8, dtype=torch.long)
    labels[0, :1, :4] = lw                      # 4 lit pixels, no glow: a small, unruly cause
    labels[1, :3, :3] = lw                      # 9 lit pixels, glow
    labels[1, 7, :] = g
    labels[2, :3, :3] = lw                      # 9 lit pixels, no glow
    labels[3, 7, :] = g                         # glow without the cause
    small = RuleRates.of(labels)                # MIN_PIXELS = 4: maps 0, 1, 2 are lit
    assert (small.cause, small.effect_when_cause, small.effect_without_cause) == (0.75, pytest.approx(1 / 3), 1.0)
    large = RuleRates.of(labels, cause_pixels=9)   # only maps 1 and 2; maps 0 and 3 unlit, one with glow
    assert (large.cause, large.effect_when_cause, large.effect_without_cause) == (0.5, 0.5, 0.5)


def test_flip_rate_counts_effects_lost_with_the_cause_kept():
    lw, g = RULE_CLASS_ID['lit_window'], RULE_CLASS_ID['glow']
    before = torch.zeros(4, 8, 8, dtype=torch.long)
    before[:, :2, :2] = lw
    before[:3, 6:, :] = g                       # maps 0, 1, 2 show the glow; map 3 does not
    after = before.clone()
    after[0, 6:, :] = 0                         # 0: glow gone, lit windows kept -> flipped
    after[1, 6:, :] = 0
    after[1, :2, :2] = 0                        # 1: glow gone with the windows -> not a flip
    assert flip_rate(before, after) == pytest.approx(1 / 3)
    assert present(before, 'glow').tolist() == [True, True, True, False]
    assert flip_rate(after[3:], after[3:]) != flip_rate(after[3:], after[3:])   # nan: no glow before
