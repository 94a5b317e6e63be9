"""The edit advisor (rewrite/analysis/advisor.py) and `python -m rewrite advise`: scores against hand-computed values
and an independent float64 re-computation, skipped layers, malformed requests, the model left unchanged."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage
from test_cli import box, edit_json
from test_sampling import TINY

from rewrite import __main__ as cli
from rewrite.analysis import advisor
from rewrite.analysis.advisor import Candidate, advise, score_candidates
from rewrite.core.rewriter import RewriteError, SeqStyleGanRewriter
from rewrite.formats.editfile import encode_mask, mask_from_url, parse_edit
from utils.stylegan2 import SeqStyleGAN2, save_checkpoint
from utils.zdataset import z_dataset_for_model, z_sample_for_model

ZSAMPLE, HELDOUT = 20, 8


@pytest.fixture(scope='module')
def model():
    torch.manual_seed(0)
    m = SeqStyleGAN2(**TINY).eval()
    m.latents.latent_avg.copy_(torch.randn(TINY['style_dim']))
    m.truncation = 0.5
    return m


@pytest.fixture(scope='module')
def zds(model):
    return z_dataset_for_model(model, ZSAMPLE)


def state(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_same_state(model, saved) -> None:
    now = model.state_dict()
    assert now.keys() == saved.keys()
    for k, v in saved.items():
        assert torch.equal(now[k], v), f'{k} changed'


# ---- measures against hand-computed values ---------------------------------------------------------

def test_the_measures_and_pictures_modules_are_what_the_advisor_offers():
    """rewrite.advisor keeps offering every name it had before the measures and pictures moved to their
    own modules, as the same objects (a caller of either module gets one implementation)."""
    from rewrite.analysis import advise_measures, advise_pictures
    for name in ('PatchGoal', 'Probe', 'change_map', 'pasted_region', 'patch_targets', 'patches', 'render',
                 'replacement_distance', 'source_likeness', 'surround_ring', 'target_maps', 'weighted_mean_change',
                 'PATCH_EXEMPLARS', 'PATCH_RES', 'PREVIEW', 'SURROUND_RING', 'TARGET_QUANTILE'):
        assert getattr(advisor, name) is getattr(advise_measures, name), name
    for name in ('ROW_LABEL_WIDTH', 'advice_picture', 'change_picture'):
        assert getattr(advisor, name) is getattr(advise_pictures, name), name
    for name in ('Advice', 'Candidate', 'advise', 'check_request', 'confidence', 'read_request', 'score_candidates',
                 'winners', 'ATTAIN_TOLERANCE', 'HELDOUT_N', 'HELDOUT_SEED', 'HELDOUT_TRUNCATION', 'MAX_HELDOUT',
                 'SCORE_VERSION', 'SURE_SHARE'):
        assert hasattr(advisor, name), name


def test_weighted_mean_change_and_change_map_by_hand():
    change = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    assert advisor.weighted_mean_change(change, torch.tensor([[1.0, 0.0], [0.0, 1.0]])) == pytest.approx(2.5)
    assert advisor.weighted_mean_change(change, torch.tensor([[0.5, 0.0], [0.0, 0.0]])) == pytest.approx(1.0)
    assert math.isnan(advisor.weighted_mean_change(change, torch.zeros(2, 2)))
    before, after = torch.zeros(1, 3, 2, 2), torch.zeros(1, 3, 2, 2)
    after[0, :, 1, 0] = torch.tensor([0.3, -0.6, 0.9])
    after[0, :, 0, 0] = torch.tensor([2.0, 2.0, 2.0])              # clamped to 1: images are in [-1, 1]
    expected = torch.tensor([[[1.0, 0.0], [0.6, 0.0]]])
    torch.testing.assert_close(advisor.change_map(before, after), expected)


def test_pasted_region_by_hand():
    req = parse_edit({'object': [0, encode_mask(box(4, 4, 12, 8))], 'paste': [1, encode_mask(box(16, 16, 24, 24))]})
    region = advisor.pasted_region(req, 32)
    # the 8 x 4 object box centred on the paste box's centre (20, 20): rows 16..23, columns 18..21
    assert torch.equal(region > 0, torch.from_numpy(box(16, 18, 24, 22)) > 0)
    erase = parse_edit({'paste': [1, encode_mask(box(16, 16, 24, 24))]})
    assert torch.equal(advisor.pasted_region(erase, 32) > 0, torch.from_numpy(box(16, 16, 24, 24)) > 0)


def test_ranking_by_hand():
    a = Candidate(5, 1, fit=0.5, reach=0.40, leak=0.03)            # effect 0.20 (the largest)
    b = Candidate(6, 1, fit=0.5, reach=0.38, leak=0.02)            # effect 0.19: within 15% of the largest
    c = Candidate(7, 1, fit=0.5, reach=0.20, leak=0.01)            # effect 0.10: not
    d = Candidate(8, 1, fit=-0.2, reach=0.50, leak=0.00)           # made the goal worse: effect 0
    e = Candidate(2, 1, skipped='paste.mask: selects nothing')
    table = score_candidates([e, a, b, c, d])
    assert [(x.layer, x.rank) for x in table] == [(6, 1), (5, 1), (7, 1), (8, 1), (2, 1)]
    assert [x.effect for x in table[:4]] == pytest.approx([0.19, 0.20, 0.10, 0.0])
    assert [x.score for x in table[:4]] == pytest.approx([1 + (1 - 0.02 / 0.03), 1.0, 0.5, 0.0])
    assert math.isnan(table[4].score)
    # a preserve region that b disturbs more than a: its larger leak decides
    b.preserve_leak = 0.05
    table = score_candidates([a, b, c])
    assert [(x.layer, x.score) for x in table] == [(5, pytest.approx(1 + (1 - 0.03 / 0.05))), (6, 1.0),
                                                    (7, pytest.approx(0.5))]


def test_ranking_by_attainment_by_hand():
    a = Candidate(5, 1, fit=0.5, reach=0.4, attain=0.60, leak=0.05)      # the best attainment
    b = Candidate(6, 2, fit=0.5, reach=0.1, attain=0.56, leak=0.02)      # within 30% of it: leaks least, wins
    c = Candidate(7, 3, fit=0.9, reach=0.9, attain=0.30, leak=0.00)      # the largest reach x fit, but half as far
    table = score_candidates([a, b, c])
    assert [(x.layer, x.rank) for x in table] == [(6, 2), (5, 1), (7, 3)]
    assert [x.score for x in table] == pytest.approx([1 + (1 - 0.02 / 0.05), 1.0, 0.30 / 0.60])
    c.attain = math.nan                     # one setting without an attainment: the reach x fit rule for all
    assert [(x.layer, x.rank) for x in score_candidates([a, b, c])][0] == (7, 3)


def test_patches_by_hand():
    """A 4 x 4 image averaged to 2 x 2 (res 2): block means; each pixel's 3 x 3 neighbourhood with the edges
    replicated, channel c * 9 + 3 dy + dx."""
    img = torch.zeros(1, 3, 4, 4)
    img[0, 0] = torch.tensor([[0.0, 0.4, 0.8, 0.8], [0.4, 0.4, 0.8, 0.8], [-1, -1, 0, 0], [-1, -1, 0, 0]])
    img[0, 1, 0, 0] = 3.0                                   # clamped to 1 first: block mean 0.25
    got = advisor.patches(img, res=2)
    assert got.shape == (1, 27, 2, 2)
    red = np.array([[0.3, 0.8], [-1.0, 0.0]])               # block means of channel 0
    padded = np.pad(red, 1, mode='edge')
    for dy in range(3):
        for dx in range(3):
            np.testing.assert_allclose(got[0, 3 * dy + dx].numpy(), padded[dy:dy + 2, dx:dx + 2], atol=1e-6)
    assert float(got[0, 9 + 4, 0, 0]) == pytest.approx(0.25)   # channel 1, centre of pixel (0, 0)
    assert float(got[0, 9 + 0, 0, 0]) == pytest.approx(0.25)   # its upper-left neighbour: the replicated edge
    assert float(got[0, 9 + 8, 0, 0]) == pytest.approx(0.0)


def one_pixel_dist(values: dict) -> dict:
    return {k: torch.tensor(v, dtype=torch.float32).view(1, 1, -1) for k, v in values.items()}


def test_patch_goal_attainment_leak_region_and_erase_by_hand():
    """Three patch pixels of one image. Distances to the nearest object exemplar before 3, 4, 5 and after
    0, 2, 5: with the first two the targets, the pooled share closed is (7 - 2) / 7. The looks: nearest
    kind per pixel (source, object, other order on ties)."""
    goal = advisor.PatchGoal({'source': torch.zeros(1, 27), 'object': torch.ones(1, 27),
                              'other': torch.full((1, 27), -1.0)})
    before = one_pixel_dist({'source': [1.0, 1.0, 9.0], 'object': [3.0, 4.0, 5.0], 'other': [2.0, 2.0, 1.0]})
    after = one_pixel_dist({'source': [5.0, 1.0, 9.0], 'object': [0.0, 2.0, 5.0], 'other': [5.0, 1.0, 1.0]})
    targets = torch.tensor([[[True, True, False]]])
    assert goal.attainment(before, after, targets) == pytest.approx(5 / 7)
    assert math.isnan(goal.attainment(before, after, torch.zeros_like(targets)))
    assert goal.looks_like(after, 'source').tolist() == [[[False, True, False]]]    # tie source/other: source
    assert goal.looks_like(after, 'object').tolist() == [[[True, False, False]]]
    # about: source before at 0, 1; object after at 0; source after at 1; grown by one pixel: all three
    assert goal.about(before, after).tolist() == [[[True, True, True]]]
    erase = advisor.PatchGoal({'source': torch.zeros(1, 27), 'other': torch.ones(1, 27),
                               'surround': torch.ones(1, 27)})
    before = one_pixel_dist({'source': [1.0, 1.0, 1.0, 1.0, 5.0], 'other': [2.0, 2.0, 2.0, 2.0, 1.0]})
    after = one_pixel_dist({'source': [1.0, 3.0, 3.0, 1.0, 5.0], 'other': [2.0, 1.0, 2.0, 2.0, 1.0]})
    # an erase closes the targets' distance to their replacement: (4 + 2 + 6 - 4 - 1 - 3) / 12 over the first three
    before['replacement'] = torch.tensor([[[4.0, 2.0, 6.0, 0.0, 0.0]]])
    after['replacement'] = torch.tensor([[[4.0, 1.0, 3.0, 0.0, 0.0]]])
    targets = torch.tensor([[[True, True, True, False, False]]])
    assert erase.goal_kind() == 'replacement' and goal.goal_kind() == 'object'
    assert erase.attainment(before, after, targets) == pytest.approx(4 / 12)
    num, den = erase.attainment_terms(before, after, targets)
    assert num.tolist() == pytest.approx([4.0]) and den.tolist() == pytest.approx([12.0])
    # about: pixels 0..3 look like the source before, grown by one: 0..4; nothing of the fifth alone
    assert erase.about(before, after).tolist() == [[[True, True, True, True, True]]]
    assert erase.about(one_pixel_dist({'source': [9.0] * 4 + [1.0], 'other': [1.0] * 4 + [9.0]}),
                       one_pixel_dist({'source': [9.0] * 5, 'other': [1.0] * 5})).tolist() == \
        [[[False, False, False, True, True]]]


def test_patch_goal_distances_by_hand():
    """Exemplars: source the all-zero patch, object the all-0.5 one; a uniform image of 0.5 is 0 from the
    object and sqrt(27) * 0.5 from the source; other has no exemplar: inf."""
    goal = advisor.PatchGoal({'source': torch.zeros(1, 27), 'object': torch.full((2, 27), 0.5),
                              'other': torch.zeros(0, 27)})
    dist = goal.distances(torch.full((1, 3, 4, 4), 0.5))
    assert dist['object'].shape == (1, 4, 4)
    torch.testing.assert_close(dist['object'], torch.zeros(1, 4, 4), atol=1e-3, rtol=0)
    torch.testing.assert_close(dist['source'], torch.full((1, 4, 4), math.sqrt(27) * 0.5))
    assert torch.isinf(dist['other']).all()
    assert goal.looks_like(dist, 'object').all()


def erase_case(moved: float, share: float):
    """One 4 x 4 patch image: a 'tree' (all-ones patches) in the 2 x 2 centre on 'sky' (all-zero patches).
    After the erase, the first `share` of the tree patches (in scan order) moved `moved` of the way to sky.
    Returns (goal, before feats, after feats, targets)."""
    before = torch.zeros(1, 27, 4, 4)
    targets = torch.zeros(1, 4, 4, dtype=torch.bool)
    targets[0, 1:3, 1:3] = True
    before[:, :, targets[0]] = 1.0
    after = before.clone()
    where = targets[0].nonzero()
    for y, x in where[:round(share * len(where))].tolist():
        after[0, :, y, x] = 1.0 - moved
    goal = advisor.PatchGoal({'source': torch.ones(1, 27), 'other': torch.zeros(1, 27),
                              'surround': torch.zeros(0, 27)})
    return goal, before, after, targets


@pytest.mark.parametrize('moved, share, expected', [
    (0.0, 1.0, 0.0),        # removes nothing
    (1.0, 0.5, 0.5),        # removes half of the tree
    (0.5, 1.0, 0.5),        # every tree patch half-way to the sky
    (1.0, 1.0, 1.0),        # removes all of it
])
def test_erase_attainment_nothing_half_all(moved, share, expected):
    """The erase's replacement is the sky (here from the paste image's surround exemplars); each tree patch is
    sqrt(27) from it and 0 from the source before (source-likeness 1); a patch moved half-way is equally far
    from both (0.5), one turned to sky 0; the pooled share of the source-likeness removed is the answer."""
    goal, before, after, targets = erase_case(moved, share)
    source_like = goal.looks_like(goal.distances_of(before), 'source')
    assert torch.equal(source_like, targets)
    ring = advisor.surround_ring(targets, source_like, ring=1)
    # within one pixel of the 2 x 2 centre, outside it grown by one: nothing on a 4 x 4 grid; ring 3: the same
    # (every pixel is within one of the centre); so the sky comes from the paste image's surround exemplars
    assert not ring.any()
    goal.exemplars['surround'] = torch.zeros(3, 27)
    dist = {}
    for name, feats in (('before', before), ('after', after)):
        dist[name] = goal.distances_of(feats)
        rep = advisor.replacement_distance(feats, before, targets, ring, goal.exemplars['surround'])
        if name == 'before':
            torch.testing.assert_close(rep[targets], torch.full((4,), math.sqrt(27)))
        dist[name]['replacement'] = advisor.source_likeness(rep, dist[name]['source'])
    torch.testing.assert_close(dist['before']['replacement'][targets], torch.ones(4))
    assert goal.attainment(dist['before'], dist['after'], targets) == pytest.approx(expected, abs=1e-6)


def test_replacement_distance_uses_the_images_own_surroundings():
    """Two images, one target patch each; image 0's ring holds a patch of 0.2, image 1's a patch of 0.9, and
    the surround exemplars are all 0.5: each target (0.2 after the edit) is measured against its own ring and
    the shared exemplars, never the other image's ring."""
    before = torch.zeros(2, 27, 3, 3)
    before[0, :, 0, 0], before[1, :, 0, 0] = 0.2, 0.9
    targets = torch.zeros(2, 3, 3, dtype=torch.bool)
    targets[:, 2, 2] = True
    ring = torch.zeros(2, 3, 3, dtype=torch.bool)
    ring[:, 0, 0] = True
    after = torch.full((2, 27, 3, 3), 0.2)
    got = advisor.replacement_distance(after, before, targets, ring, torch.full((1, 27), 0.5))
    assert got[0, 2, 2] == pytest.approx(0.0, abs=1e-5)                       # its own ring: 0.2
    assert got[1, 2, 2] == pytest.approx(0.3 * math.sqrt(27), rel=1e-5)       # the exemplar 0.5, not image 0's ring
    assert float(got[~targets].abs().sum()) == 0.0
    assert torch.isinf(advisor.replacement_distance(after, before, targets, torch.zeros_like(ring),
                                                    torch.zeros(0, 27))[targets]).all()


def test_source_likeness_by_hand():
    rep = torch.tensor([0.0, 1.0, 3.0, math.inf, 0.0])
    src = torch.tensor([2.0, 1.0, 1.0, 5.0, 0.0])
    assert advisor.source_likeness(rep, src).tolist() == pytest.approx([0.0, 0.5, 0.75, 1.0, 0.5])


def test_surround_ring_by_hand():
    targets = torch.zeros(1, 7, 7, dtype=torch.bool)
    targets[0, 3, 3] = True
    source_like = torch.zeros_like(targets)
    source_like[0, 1, 1] = True
    ring = advisor.surround_ring(targets, source_like, ring=2)
    expected = torch.zeros(7, 7, dtype=torch.bool)
    expected[1:6, 1:6] = True
    expected[2:5, 2:5] = False
    expected[1, 1] = False                                  # looks like the source: not a replacement
    assert torch.equal(ring[0], expected)


def test_an_edit_that_changes_nothing_attains_nothing_and_leaks_nothing():
    goal = advisor.PatchGoal({'source': torch.zeros(1, 27), 'object': torch.ones(1, 27),
                              'other': torch.full((1, 27), -1.0)})
    images = torch.rand(2, 3, 8, 8) * 2 - 1
    dist = goal.distances(images)
    targets = torch.ones(2, 8, 8, dtype=torch.bool)
    assert goal.attainment(dist, goal.distances(images.clone()), targets) == 0.0
    assert advisor.weighted_mean_change(advisor.change_map(images, images.clone()), torch.ones(2, 8, 8)) == 0.0


def cand(layer: int, rank: int, **scores) -> Candidate:
    return Candidate(layer, rank, fit=0.5, reach=0.1, **scores)


def terms(attain: list[float], leak: list[float]) -> dict:
    """Per-image terms whose pooled values are the given per-image values (denominators 1)."""
    return {'attain': (np.array(attain), np.ones(len(attain))), 'leak': (np.array(leak), np.ones(len(leak)))}


def test_winners_by_hand():
    attain = np.array([[1.0, 0.9, 0.5], [1.0, 0.6, 0.99], [np.nan, 0.2, 0.1]])
    leak = np.array([[0.3, 0.2, 0.1], [0.3, 0.1, 0.2], [0.0, 0.5, 0.4]])
    # row 0: 0 and 1 within 30% of 1.0, 1 leaks less; row 1: 0 and 2 near, 2 leaks less; row 2: 1 alone
    assert advisor.winners(attain, leak, 0.3).tolist() == [1, 2, 1]
    assert advisor.winners(attain, leak, 0.05).tolist() == [0, 2, 1]


def test_confidence_clear_winner_noise_and_no_spread():
    n = 40
    rng = np.random.default_rng(1)
    # a clear winner: the most attainment by far, the least leak among the near
    a = cand(7, 1, attain=0.8, leak=0.01, terms=terms(0.8 + 0.01 * rng.standard_normal(n), [0.01] * n))
    b = cand(8, 1, attain=0.3, leak=0.005, terms=terms(0.3 + 0.01 * rng.standard_normal(n), [0.005] * n))
    c = cand(6, 1, attain=0.1, leak=0.002, terms=terms(0.1 + 0.01 * rng.standard_normal(n), [0.002] * n))
    sure, doubt, share = advisor.confidence(score_candidates([a, b, c]))
    assert sure and doubt is None and share == 1.0
    # two settings with the same attainment, whose leaks differ only by noise: the winner flips between them
    noise = rng.standard_normal(n)
    noise -= noise.mean()
    leak_a, leak_b = 0.02 + 0.01 * noise, 0.02 - 0.01 * noise            # the same mean: a tie up to noise
    a = cand(7, 1, attain=0.8, leak=float(leak_a.mean()), terms=terms([0.8] * n, leak_a))
    b = cand(8, 1, attain=0.8, leak=float(leak_b.mean()), terms=terms([0.8] * n, leak_b))
    table = score_candidates([a, b, c])
    sure, doubt, share = advisor.confidence(table)
    assert not sure and 'within noise' in doubt and share < advisor.SURE_SHARE
    assert 'L7 R1' in doubt and 'L8 R1' in doubt
    # every setting near the best: the leak alone decides (no terms: judged on the spread alone)
    flat = [cand(5, r, attain=0.95 + 0.01 * r, leak=0.01 * r) for r in (1, 2, 3)]
    sure, doubt, share = advisor.confidence(score_candidates(flat))
    assert not sure and 'barely spreads' in doubt and share is None
    low = [cand(5, r, attain=0.01 * r, leak=0.01 * r) for r in (1, 2, 3)]
    sure, doubt, _ = advisor.confidence(score_candidates(low, tolerance=0.1))
    assert not sure and 'moves the targets far' in doubt
    # the same resamples every time (seeded)
    assert advisor.confidence(table) == advisor.confidence(table)


def test_ranking_tolerance_is_a_parameter():
    a = Candidate(5, 1, fit=0.5, reach=0.4, attain=1.00, leak=0.05)
    b = Candidate(6, 1, fit=0.5, reach=0.4, attain=0.85, leak=0.01)
    assert score_candidates([a, b], tolerance=0.3)[0] is b
    assert score_candidates([a, b], tolerance=0.1)[0] is a


# ---- a sweep on a tiny model, against an independent float64 re-computation ---------------------------

@pytest.fixture(scope='module')
def advice(model, zds, tmp_path_factory):
    saved = state(model)
    result = advise(model, zds, edit_json(), layers=[6, 8], ranks=(1, 2), heldout=HELDOUT,
                    cachedir=tmp_path_factory.mktemp('stats'), progress=False)
    assert_same_state(model, saved)                                 # the model passed in is never changed
    return result


def reference_scores(model, zds, request, layer, rank) -> dict:
    """fit, size, paste, reach, leak and attain recomputed in float64 numpy from a separate rewriter
    (held-out samples at truncation 1, the edit, the paste image and the request's images at the model's own)."""
    gw = SeqStyleGanRewriter(model, zds, layer, progress=False)
    w0 = gw.target_weights().detach().double().clone()
    pairs = [tuple(p) for p in request['key']]
    direction = gw.multi_key_from_selection(pairs, rank=1)[0].double().numpy()
    res = gw.k_shape[2]
    with torch.no_grad():
        def response(z):
            keys = gw.context_model(z).fmap.double().numpy()            # [N, I, h, w]
            return np.einsum('nihw,i->nhw', keys, direction)
        own = np.concatenate([response(gw.get_z(i))[0][mask_from_url(u, res).numpy() > 0.5] for i, u in pairs])
        level = np.quantile(own, advisor.TARGET_QUANTILE)
        imgnums = sorted({request['object'][0], request['paste'][0], *(i for i, _ in pairs)})
        own_images = np.concatenate([model(gw.get_z(i)).double().clamp(-1, 1).numpy() for i in imgnums])
        z = z_sample_for_model(model, HELDOUT, seed=advisor.HELDOUT_SEED)
        goal_before = model(gw.get_z(request['paste'][0])).double().clamp(-1, 1).numpy()
        gw.model.truncation = 1.0
        before, responses = gw.model(z).double().clamp(-1, 1).numpy(), response(z)
        gw.model.truncation = model.truncation
        record = gw.apply_request(request, rank=rank, solver='fast')
        goal_after = gw.model(gw.get_z(request['paste'][0])).double().clamp(-1, 1).numpy()
        gw.model.truncation = 1.0
        after = gw.model(z).double().clamp(-1, 1).numpy()
    size = before.shape[-1]
    scale = size // res
    targets = np.kron(responses >= level, np.ones((1, scale, scale))) > 0
    change = np.abs(after - before).mean(1)
    # the object's 12 x 12 box (32 px) pasted centred on the paste box's centre (17, 17): rows and columns 11..22
    pasted = box(11, 11, 23, 23) > 0
    # attain and leak in the output's 3x3 patch space at PATCH_RES, from the request's own regions
    res_p = min(advisor.PATCH_RES, size)
    feats = patch_rows(own_images, res_p)                                           # [n, r, r, 27]
    where = {i: n for n, i in enumerate(imgnums)}
    kinds = {'source': [request['paste']] + [list(p) for p in pairs], 'object': [request['object']]}
    masks = {}
    for kind, sels in kinds.items():
        masks[kind] = np.zeros((len(imgnums), res_p, res_p), bool)
        for i, u in sels:
            masks[kind][where[i]] |= mask_from_url(u, res_p).numpy() > 0.5
    masks['other'] = ~np.stack([ndimage.binary_dilation(m, np.ones((3, 3)))
                                for m in masks['source'] | masks['object']])
    masks['source'] &= ~masks['object']
    exemplars = {}
    for kind, m in masks.items():
        rows = feats[m]
        if len(rows) > advisor.PATCH_EXEMPLARS:
            rows = rows[np.round(np.linspace(0, len(rows) - 1, advisor.PATCH_EXEMPLARS)).astype(int)]
        exemplars[kind] = rows
    def dist(images):
        f = patch_rows(images, res_p)
        return {k: np.sqrt(((f[..., None, :] - e) ** 2).sum(-1)).min(-1) for k, e in exemplars.items()}
    dist0, dist1 = dist(before), dist(after)
    order = ['source', 'object', 'other']
    def looks(dd, kind):
        return np.stack([dd[k] for k in order]).argmin(0) == order.index(kind)
    pix = targets.reshape(len(targets), res_p, size // res_p, res_p, size // res_p).mean((2, 4)) >= 0.5
    d0, d1 = dist0['object'][pix].sum(), dist1['object'][pix].sum()
    about = looks(dist0, 'source') | looks(dist0, 'object') | looks(dist1, 'source') | looks(dist1, 'object')
    about = np.stack([ndimage.binary_dilation(a, np.ones((3, 3))) for a in about])
    about = np.kron(about, np.ones((1, size // res_p, size // res_p))) > 0
    return {'attain': (d0 - d1) / d0,
            'fit': (record.initial_loss - record.final_loss) / record.initial_loss,
            'size': float(np.linalg.norm(gw.target_weights().double().numpy() - w0.numpy()) / np.linalg.norm(w0)),
            'paste': np.abs(goal_after - goal_before).mean(1)[0][pasted].mean(),
            'reach': change[targets].mean(), 'leak': change[~about].mean()}


def patch_rows(images: np.ndarray, res: int) -> np.ndarray:
    """[N, res, res, 27]: block means of images [N, 3, H, W], then each pixel's 3 x 3 neighbourhood (edges
    repeated), feature c * 9 + 3 dy + dx."""
    n, c, h, w = images.shape
    small = images.reshape(n, c, res, h // res, res, w // res).mean((3, 5))
    padded = np.pad(small, ((0, 0), (0, 0), (1, 1), (1, 1)), mode='edge')
    out = np.zeros((n, 27, res, res))
    for ch in range(3):
        for dy in range(3):
            for dx in range(3):
                out[:, ch * 9 + 3 * dy + dx] = padded[:, ch, dy:dy + res, dx:dx + res]
    return out.transpose(0, 2, 3, 1)


@pytest.mark.parametrize('layer, rank', [(6, 2), (8, 1)])
def test_scores_match_an_independent_computation(model, zds, advice, layer, rank):
    cand = next(c for c in advice.table if (c.layer, c.rank) == (layer, rank))
    ref = reference_scores(model, zds, edit_json(), layer, rank)
    assert cand.ok
    for name, value in ref.items():
        assert getattr(cand, name) == pytest.approx(value, rel=1e-4, abs=1e-6), name
    assert cand.effect == pytest.approx(cand.reach * max(cand.fit, 0))
    assert cand.preserve_leak is None
    assert advice.to_json()['heldout_truncation'] == advisor.HELDOUT_TRUNCATION == 1.0


def test_table_is_ranked_and_serialisable(advice):
    assert len(advice.table) == 4 and all(c.ok for c in advice.table)
    scores = [c.score for c in advice.table]
    assert scores == sorted(scores, reverse=True)
    assert (advice.best.layer, advice.best.rank) == (advice.table[0].layer, advice.table[0].rank)
    data = json.loads(json.dumps(advice.to_json()))
    assert data['best'] == {'layer': advice.best.layer, 'rank': advice.best.rank}
    assert {(r['layer'], r['rank']) for r in data['table']} == {(6, 1), (6, 2), (8, 1), (8, 2)}
    assert 'layer' in advice.text_table().splitlines()[0]
    picture = advisor.advice_picture(advice, top=2)
    cols = min(advisor.PREVIEW, HELDOUT)
    assert picture.shape == ((1 + 2 * 2) * (32 + 2) + 2, advisor.ROW_LABEL_WIDTH + cols * (32 + 2) + 2, 3)
    labels = picture[:, :advisor.ROW_LABEL_WIDTH].min(-1) < 128          # dark text on white, left of the grid
    for row in range(1 + 2 * 2):                                          # every row labelled
        assert labels[2 + row * 34:(row + 1) * 34].sum() > 20, row
    assert np.array_equal(picture[0, advisor.ROW_LABEL_WIDTH:], np.full((cols * 34 + 2, 3), 255, np.uint8))


def test_terms_pool_to_the_reported_attainment_and_leak_for_an_edit_and_an_erase(model, zds, advice):
    erase = {k: v for k, v in edit_json().items() if k != 'object'}
    erased = advise(model, zds, erase, layers=[8], ranks=(1, 2), heldout=HELDOUT, progress=False)
    for result in (advice, erased):
        for c in result.table:
            (an, ad), (ln, ld) = c.terms['attain'], c.terms['leak']
            assert len(an) == len(ad) == len(ln) == len(ld) == HELDOUT
            assert c.attain == pytest.approx(an.sum() / ad.sum(), rel=1e-9)
            assert c.leak == pytest.approx(ln.sum() / ld.sum(), rel=1e-5)
            assert (ad >= 0).all()
        data = json.loads(json.dumps(result.to_json()))
        assert data['sure'] == result.sure and data['doubt'] == result.doubt
        assert (result.doubt is None) == result.sure
        assert ('not sure: ' in result.text_table()) == (not result.sure)
    # an erase is measured against the surroundings: the exemplars include them, the request has no object
    assert all(math.isfinite(c.attain) and c.attain <= 1 for c in erased.table)


def test_layer_too_small_for_the_masks_is_skipped_with_the_reason(model, zds):
    one_pixel = np.zeros((256, 256))
    one_pixel[100, 100] = 1                     # vanishes at 4x4 (layer 2), shows at 32x32 (layer 8)
    request = edit_json()
    request['key'].append([9, encode_mask(one_pixel)])
    advice = advise(model, zds, request, layers=[2, 8], ranks=(1,), heldout=4, progress=False)
    skipped = [c for c in advice.table if not c.ok]
    assert [(c.layer, c.rank) for c in skipped] == [(2, 1)]
    assert 'key[2].mask' in skipped[0].skipped and 'selects nothing' in skipped[0].skipped
    assert math.isnan(skipped[0].score) and advice.table[-1] is skipped[0]
    assert (advice.best.layer, advice.best.rank) == (8, 1)
    assert 'skipped: key[2].mask' in advice.text_table()
    assert advice.to_json()['table'][-1]['skipped'] == skipped[0].skipped


def test_the_files_preserve_weight_passes_the_advisors_check():
    request = edit_json() | {'preserve': [[11, encode_mask(box(0, 0, 32, 32))]], 'preserve_weight': 1.0}
    assert advisor.check_request(request, ZSAMPLE).paste.imgnum == request['paste'][0]


def test_preserve_regions_are_scored(model, zds):
    request = edit_json() | {'preserve': [[11, encode_mask(box(0, 0, 32, 32))]]}
    advice = advise(model, zds, request, layers=[8], ranks=(1,), heldout=4, progress=False)
    cand = advice.table[0]
    assert cand.ok, cand.skipped            # the rewriter applies requests with preserve regions
    with torch.no_grad():
        z = zds.tensors[0][11:12]
        before = model(z).clamp(-1, 1)
        gw = SeqStyleGanRewriter(model, zds, 8, progress=False)
        gw.apply_request(request, rank=1, solver='fast')
        after = gw.model(z).clamp(-1, 1)
    assert cand.preserve_leak == pytest.approx(float((after - before).abs().mean()), rel=1e-4)


# ---- malformed requests: clear errors, nothing changed -------------------------------------------------

@pytest.mark.parametrize('change, field', [
    (lambda r: r.pop('paste'), 'paste'),
    (lambda r: r.__setitem__('paste', [ZSAMPLE + 5, r['paste'][1]]), 'paste.imgnum'),
    (lambda r: r.__setitem__('colour', 'red'), 'colour'),
    (lambda r: r.__setitem__('object', [3, 'not a mask']), 'object.mask'),
    (lambda r: r['key'].__setitem__(1, [7]), 'key[1]'),
    (lambda r: r.__setitem__('preserve', [[2]]), 'preserve[0]'),
    (lambda r: r.__setitem__('preserve', [[ZSAMPLE, r['paste'][1]]]), 'preserve[0].imgnum'),
    (lambda r: r.__setitem__('preserve_weight', 1.0), 'preserve_weight: is the weight of the preserve regions'),
    (lambda r: r.update(preserve=[[2, r['paste'][1]]], preserve_weight=-1), 'preserve_weight: must be a finite'),
])
def test_malformed_requests_give_clear_errors(model, zds, change, field):
    request = edit_json()
    change(request)
    saved = state(model)
    with pytest.raises(RewriteError, match=r'(?i)' + field.replace('[', r'\[').replace(']', r'\]')):
        advise(model, zds, request, layers=[8], ranks=(1,), heldout=2, progress=False)
    assert_same_state(model, saved)


@pytest.mark.parametrize('options, message', [
    ({'layers': [99]}, 'layers: layer 99 does not exist'),
    ({'layers': []}, 'at least one'),
    ({'ranks': [0]}, 'ranks: expected positive integers'),
    ({'heldout': 0}, 'heldout'),
])
def test_bad_settings_give_clear_errors(model, zds, options, message):
    with pytest.raises(RewriteError, match=message):
        advise(model, zds, edit_json(), **({'layers': [8], 'ranks': (1,), 'heldout': 2} | options), progress=False)


def test_unreadable_request_file(model, zds, tmp_path):
    with pytest.raises(RewriteError, match='cannot read the edit file'):
        advise(model, zds, tmp_path / 'missing.json', layers=[8], progress=False)
    (tmp_path / 'bad.json').write_text('{"paste": ')
    with pytest.raises(RewriteError, match='not valid JSON'):
        advise(model, zds, tmp_path / 'bad.json', layers=[8], progress=False)


def test_rank_too_high_is_reported_in_the_table(model, zds):
    request = edit_json() | {'key': [[5, encode_mask(box(10, 10, 12, 12))]]}     # a few key pixels at 16x16
    advice = advise(model, zds, request, layers=[6], ranks=(1, 32), heldout=2, progress=False)
    high = next(c for c in advice.table if c.rank == 32)
    assert not high.ok and 'rank 32' in high.skipped
    assert advice.best.rank == 1


# ---- the command line --------------------------------------------------------------------------------

@pytest.fixture(scope='module')
def files(model, tmp_path_factory):
    d = tmp_path_factory.mktemp('advise-cli')
    save_checkpoint(model, d / 'tiny.pt')
    (d / 'edit.json').write_text(json.dumps(edit_json()))
    return d


def run(capsys, *args) -> tuple[int, str, str]:
    status = cli.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return status, out, err


def test_cli_advise_writes_table_and_picture(files, capsys):
    out_dir = files / 'advice'
    status, out, err = run(capsys, 'advise', '--model', files / 'tiny.pt', '--edit', files / 'edit.json',
                           '--layers', 6, 8, '--ranks', 1, 2, '--zsample', ZSAMPLE, '--heldout', 4,
                           '--cachedir', files / 'cache', '--out', out_dir, '--quiet')
    assert status == 0, err
    data = json.loads((out_dir / 'advice.json').read_text())
    best = data['best']
    assert f'first in the ranking: --layer {best["layer"]} --rank {best["rank"]}' in out
    assert f'a shortlist, not a verdict: look at the first rows in {out_dir / "advice.png"}' in out
    unsure = not data['sure']
    assert ('(not sure: ' in out) == unsure and (f'not sure: {data["doubt"]}' in out) == unsure
    assert len(data['table']) == 4 and data['edit_file'].endswith('edit.json')
    assert data['table'][0]['layer'] == best['layer'] and data['table'][0]['rank'] == best['rank']
    with Image.open(out_dir / 'advice.png') as im:
        assert im.size == (advisor.ROW_LABEL_WIDTH + 4 * 34 + 2, (1 + 2 * 3) * 34 + 2)
    assert 'layer' in out.splitlines()[0] and 'leak' in out.splitlines()[0]


def test_cli_advise_bad_edit_writes_nothing(files, capsys):
    (files / 'nopaste.json').write_text(json.dumps({k: v for k, v in edit_json().items() if k != 'paste'}))
    out_dir = files / 'never'
    status, _, err = run(capsys, 'advise', '--model', files / 'tiny.pt', '--edit', files / 'nopaste.json',
                         '--layers', 8, '--zsample', ZSAMPLE, '--out', out_dir, '--quiet')
    assert status == 2 and 'paste' in err and err.count('\n') == 1
    assert not out_dir.exists()
    status, _, err = run(capsys, 'advise', '--model', files / 'tiny.pt', '--edit', files / 'edit.json',
                         '--layers', 99, '--zsample', ZSAMPLE, '--out', out_dir, '--quiet')
    assert status == 2 and '--layer' in err and 'does not exist' in err
    assert not out_dir.exists()


def test_cli_advise_help_explains_the_scores(capsys):
    with pytest.raises(SystemExit):
        cli.main(['advise', '--help'])
    text = capsys.readouterr().out
    for word in ('fit', 'paste', 'reach', 'leak', 'preserve', 'size', 'attain', 'effect', 'score', 'advice.png',
                 '--heldout-truncation'):
        assert word in text


def test_model_card_shows_the_advisor_table_only_for_its_checkpoint(tmp_path):
    from metrics.demo_world_card import advisor_note
    results = tmp_path / 'advise_benchmark.json'
    results.write_text(json.dumps({'checkpoint': {'sha256': 'abc123'}}))
    results.with_suffix('.md').write_text('| edit | goal |\n| --- | --- |\n| dome2spire | pass |\n')
    note = advisor_note('abc123', results)
    assert '| dome2spire | pass |' in note and 'rewrite advise' in note
    assert advisor_note('other', results) == '' and advisor_note('abc123', tmp_path / 'missing.json') == ''
