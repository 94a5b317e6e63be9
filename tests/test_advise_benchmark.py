"""The advisor's benchmark (metrics/make_advise_edits.py, metrics/advise_benchmark.py): region choice within an
image range, the ground truth's measures and goal by hand, and a kept sweep ranked again."""

from __future__ import annotations

import math

import pytest
import torch

from metrics.advise_benchmark import judge, plan_scores, ranked
from metrics.demo_regions import EditPlan
from metrics.make_advise_edits import EDITS, KINDS, PARTS, regions_in
from rewrite.analysis.advisor import Candidate
from utils.demo.measures import Samples
from utils.demo.scenes import CLASSES

TREE, SKY = CLASSES.index('tree'), CLASSES.index('sky')


def test_the_split_names_each_edit_once_with_a_kind_and_a_part():
    names = [e.name for e in EDITS]
    assert len(names) == len(set(names))
    assert {e.kind for e in EDITS} == set(KINDS) and {e.part for e in EDITS} == set(PARTS)
    for part in PARTS:                                  # every kind in both parts
        assert {e.kind for e in EDITS if e.part == part} == set(KINDS)
    assert any(e.images is not None for e in EDITS if e.part == 'heldout')


def labels_with_trees(sizes: dict[int, int], n: int = 10) -> torch.Tensor:
    """[n, 64, 64] sky label maps with a square tree of the given side in the given images."""
    labels = torch.full((n, 64, 64), SKY)
    for imgnum, side in sizes.items():
        labels[imgnum, 20:20 + side, 20:20 + side] = TREE
    return labels


def test_regions_in_an_image_range_keep_the_z_sample_numbers():
    plan = EditPlan('erase_trees', object=None, paste=('tree',), dst=None, keys=2)
    labels = labels_with_trees({2: 10, 6: 6, 8: 8})
    whole = regions_in(plan, labels, None)
    assert whole['paste'].imgnum == 2 and [r.imgnum for r in whole['key']] == [2, 8]
    late = regions_in(plan, labels, (5, 10))
    assert late['paste'].imgnum == 8 and [r.imgnum for r in late['key']] == [8, 6]
    assert late['paste'].area == 64 and late['object'] is None
    with pytest.raises(ValueError, match='outside the z-sample'):
        regions_in(plan, labels, (5, 11))


def test_plan_scores_of_an_erase_by_hand():
    """Two samples with a tree; after the erase the first has none and the second keeps it: effectiveness 1/2.
    The change outside: one pixel far from the trees changed by 0.6 in one channel."""
    plan = EditPlan('erase_trees', object=None, paste=('tree',), dst=None, keys=2)
    before_labels = labels_with_trees({0: 8, 1: 8}, n=2)
    after_labels = labels_with_trees({1: 8}, n=2)
    images = torch.zeros(2, 3, 64, 64)
    after_images = images.clone()
    after_images[0, 0, 60, 60] = 0.6                    # outside the trees dilated by 3
    scores = plan_scores(plan, Samples(images, before_labels), Samples(after_images, after_labels))
    assert scores['effectiveness'] == 0.5 and scores['n_with_source'] == 2
    outside = 2 * 64 * 64 - 2 * 14 * 14                 # the two 8 x 8 trees grown by 3 pixels
    assert scores['mean_abs_change_outside'] == pytest.approx(0.6 / (3 * outside))


def test_judge_by_hand():
    gt = {(5, 1): {'effectiveness': 0.90, 'mean_abs_change_outside': 0.04},
          (6, 1): {'effectiveness': 0.87, 'mean_abs_change_outside': 0.02},     # within 5 points: the best
          (7, 1): {'effectiveness': 0.80, 'mean_abs_change_outside': 0.01}}
    assert judge(gt, (6, 1))['pass'] and judge(gt, (6, 1))['groundtruth_best'] == [6, 1]
    assert not judge(gt, (7, 1))['effectiveness_ok']                             # 7 points below
    assert judge(gt, (5, 1))['effectiveness_ok'] and not judge(gt, (5, 1))['outside_ok']   # 0.04 > 1.25 x 0.02
    assert not judge(gt, None)['pass'] and math.isnan(judge(gt, None)['advised_effectiveness'])


def test_a_kept_sweep_is_ranked_by_the_present_rule():
    table = [Candidate(5, 1, fit=0.5, reach=0.1, attain=1.0, leak=0.05),
             Candidate(6, 1, fit=0.5, reach=0.1, attain=0.8, leak=0.01),
             Candidate(7, 1, fit=0.5, reach=0.1, attain=0.2, leak=0.00)]
    entry = {'advice': {'table': [c.to_json() for c in table]}}
    assert ranked(entry, tolerance=0.3)['best'] == {'layer': 6, 'rank': 1}
    assert ranked(entry, tolerance=0.1)['best'] == {'layer': 5, 'rank': 1}
    terms = {'5 1': {'attain': [[1.0] * 4, [1.0] * 4], 'leak': [[0.05] * 4, [1.0] * 4]},
             '6 1': {'attain': [[0.8] * 4, [1.0] * 4], 'leak': [[0.01] * 4, [1.0] * 4]},
             '7 1': {'attain': [[0.2] * 4, [1.0] * 4], 'leak': [[0.0] * 4, [1.0] * 4]}}
    got = ranked(entry | {'terms': terms}, tolerance=0.3)
    assert got['sure'] and got['win_share'] == 1.0 and got['doubt'] is None
    # without the weak setting every attainment is within the tolerance: the leak alone decides, unsure
    flat = {'advice': {'table': entry['advice']['table'][:2]}, 'terms': terms}
    got = ranked(flat, tolerance=0.3)
    assert not got['sure'] and 'barely spreads' in got['doubt']
