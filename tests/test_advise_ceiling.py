"""The ceiling (metrics/advise_ceiling.py): the ground truth's measures split per image add up to
advise_benchmark.plan_scores on any subset of images, and the resampled ceiling against a naive loop."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from metrics import advise_ceiling as ac
from metrics.advise_benchmark import plan_scores
from metrics.demo_regions import EditPlan
from metrics.make_advise_edits import BenchEdit
from utils.demo.measures import Samples
from utils.demo.scenes import CLASSES

PLANS = [EditPlan('replace', object=('spire',), paste=('dome',), dst='spire', keys=4),
         EditPlan('erase', object=None, paste=('tree',), dst=None, keys=4),
         EditPlan('erase_into', object=None, paste=('window',), dst=None, keys=4, into='building')]


def blocky_samples(n: int, seed: int) -> Samples:
    """Label maps of 8x8-pixel blocks of random classes (so classes cover enough pixels to count) on 32x32
    images, and random images."""
    g = torch.Generator().manual_seed(seed)
    blocks = torch.randint(0, len(CLASSES), (n, 4, 4), generator=g)
    labels = blocks.repeat_interleave(8, 1).repeat_interleave(8, 2)
    return Samples(torch.rand(n, 3, 32, 32, generator=g) * 2 - 1, labels)


@pytest.mark.parametrize('plan', PLANS, ids=lambda p: p.name)
def test_plan_terms_add_up_to_plan_scores_on_any_subset(plan):
    before, after = blocky_samples(24, 0), blocky_samples(24, 1)
    terms = ac.plan_terms(plan, before, after)
    assert terms.shape == (4, 24)
    for subset in (slice(None), slice(0, 11), slice(5, 24, 3)):
        want = plan_scores(plan, Samples(before.images[subset], before.labels[subset]),
                           Samples(after.images[subset], after.labels[subset]))
        t = terms[:, subset].sum(1)
        assert t[1] > 0, 'the case must hold the source somewhere'
        assert t[0] / t[1] == pytest.approx(want['effectiveness'], abs=1e-12)
        # plan_scores sums float32 (torch sums pairwise: relative error about log2(n x 3 x 1024) x 6e-8, under
        # 2e-6 for each of its two sums), the terms float64; 1e-5 leaves a factor of 2.5 over both
        assert t[2] / t[3] == pytest.approx(want['mean_abs_change_outside'], rel=1e-5)


def naive_share(hits: dict, outside: dict, gt_best: tuple, rounds: int, seed: int) -> float:
    """The share of resamples on which best_setting's rule, written out, names gt_best (hits: per image 0/1,
    every image counted; outside: one value per setting)."""
    n = len(next(iter(hits.values())))
    idx = np.random.default_rng(seed).integers(0, n, size=(rounds, n))
    named = 0
    for row in idx:
        eff = {s: sum(h[i] for i in row) / n for s, h in hits.items()}
        top = max(eff.values())
        near = [s for s in eff if eff[s] >= top - 0.05]
        named += min(near, key=lambda s: (outside[s], s[1], s[0])) == gt_best
    return named / rounds


def test_expected_ceiling_against_a_naive_loop():
    """Two settings on 10 held-out images: L5 R1 hits images 0-4 and leaks less, L6 R1 hits 5-9. The ground
    truth (400 z's) calls L6 R1 best (90% against 50%), so a resample passes only when the rule names L6 R1:
    when L5 R1 is more than 5 points less effective there. A second edit where L6 R1 hits every image passes
    on every resample; a third where L5 R1 does fails on every one."""
    hits = {(5, 1): [1] * 5 + [0] * 5, (6, 1): [0] * 5 + [1] * 5}
    outside = {(5, 1): 0.01, (6, 1): 0.05}

    def terms(h):
        return {f'{s[0]} {s[1]}': [h[s], [1] * 10, [outside[s] * 100] * 10, [100] * 10] for s in h}
    gt = {(5, 1): {'effectiveness': 0.5, 'mean_abs_change_outside': 0.01},
          (6, 1): {'effectiveness': 0.9, 'mean_abs_change_outside': 0.05}}
    kept = {'tie': {'oracle_terms': terms(hits)},
            'sure': {'oracle_terms': terms({(5, 1): [0] * 10, (6, 1): [1] * 10})},
            'wrong': {'oracle_terms': terms({(5, 1): [1] * 10, (6, 1): [0] * 10})}}
    edits = [BenchEdit(EditPlan(name, ('spire',), ('dome',), 'spire', 4), 'replace', part)
             for name, part in (('tie', 'tune'), ('sure', 'heldout'), ('wrong', 'heldout'))]
    got = ac.expected_ceiling(kept, {name: gt for name in kept}, edits, rounds=200)
    share = naive_share(hits, outside, (6, 1), rounds=200, seed=0)
    assert 0 < share < 1
    assert got['tune'] == [pytest.approx(share), 1]
    assert got['heldout'] == [pytest.approx(1.0), 2]
    picks = ac.resampled_picks(kept['tie']['oracle_terms'], rounds=200)
    assert sum(p == (6, 1) for p in picks) / 200 == pytest.approx(share)
    assert math.isclose(sum(p == (5, 1) for p in picks) / 200, 1 - share)
