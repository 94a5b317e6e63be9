"""The rule prober widget, scripted in Python (the browser test drives it in Chromium)."""

import io

import numpy as np
import pytest
import torch
from PIL import Image

from rewrite.analysis.rulechange import changed_model
from rewrite.experiments.glow.prober import RuleProber
from rewrite.experiments.glow.rule import GLOW_MODEL, GLOW_SEGMENTER, GlowRule
from utils.demo.segmenter import load_segmenter
from utils.stylegan2 import load_seq_stylegan
from utils.zdataset import z_sample_for_model


@pytest.fixture(scope='module')
def prober():
    model = load_seq_stylegan(GLOW_MODEL, truncation=1.0)
    rule = GlowRule(model, load_segmenter(GLOW_SEGMENTER))
    rule.dissect(z_sample_for_model(model, 40, seed=1))
    weight = model.get_parameter('layer6.sconv.mconv.dconv.weight')
    noise = torch.randn(weight.shape, generator=torch.Generator().manual_seed(0))
    changed = changed_model(model, 'layer6', 0.5 * noise)
    return RuleProber(rule, changed, z_sample_for_model(model, 3, seed=2), size=128)


def picture(widget) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(widget.value)).convert('RGB'), dtype=np.float32)


def test_prober_adds_the_cause_where_painted_in_both_models(prober):
    prober.clear()
    assert 'no intervention' in prober.status.value
    plain_original, plain_changed = picture(prober.original), picture(prober.changed)
    assert np.abs(plain_original - plain_changed).mean() > 1.0          # the two models differ
    mask = np.zeros((128, 128), np.float32)
    mask[40:90, 30:100] = 1.0
    prober.canvas.set_mask(mask)
    prober.update()
    assert 'cause added at strength 8 inside the paint' in prober.status.value
    added = picture(prober.original)
    diff = np.abs(added - plain_original).mean(2)
    assert diff.mean() > 0.5 and diff[:20].mean() < diff[40:90, 30:100].mean()   # most change near the paint
    assert np.abs(picture(prober.changed) - plain_changed).mean() > 0.5
    prober.strength.value = -8.0                                          # observer: recomputed at once
    assert 'cause removed at strength -8' in prober.status.value
    assert 'original: lit windows' in prober.status.value and 'changed: lit windows' in prober.status.value


def test_prober_follows_the_sample_and_checks_its_input(prober):
    first = picture(prober.canvas) if prober.canvas.value else None
    prober.sample.value = 2
    assert prober.status.value.startswith('sample 2:')
    assert first is None or np.abs(picture(prober.canvas) - first).mean() > 0
    with pytest.raises(ValueError, match='dissect'):
        RuleProber(GlowRule(prober.rule.model, prober.rule.segmenter), prober.changed_model, prober.z)
    with pytest.raises(ValueError, match='z: expected'):
        RuleProber(prober.rule, prober.changed_model, torch.zeros(0, 3))
