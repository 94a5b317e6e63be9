"""Rule-change library pieces: dissection ranking and the rank-one change."""

import pytest
import torch

from rewrite.analysis.rulechange import project_rank_one, rank_one_update, unit_iou_ranking


def test_dissection_ranks_the_unit_that_draws_the_mask_first():
    gen = torch.Generator().manual_seed(0)
    masks = torch.zeros(4, 16, 16, dtype=torch.bool)
    masks[:, 4:8, 8:12] = True
    acts = torch.rand(4, 5, 16, 16, generator=gen) * 0.5      # units 0, 1, 3, 4: noise below 0.5
    acts[:, 2] = masks.float() * 2.0 + 0.01 * acts[:, 2]        # unit 2: exactly the mask, on top
    acts[:, 4, 4:8, 8:10] += 1.0                                # unit 4: half the mask ...
    acts[:, 4, 12:16, 0:2] += 1.0                               # ... and as much elsewhere
    order, iou = unit_iou_ranking(acts, masks, quantile=1 - masks.float().mean().item() + 1e-6)
    assert order[0] == 2 and iou[0] == pytest.approx(1.0)
    assert order[1] == 4 and iou[1] == pytest.approx(1 / 3)     # 32 shared of 64 + 64 - 32
    assert (iou[2:] < 0.1).all()


def test_dissection_checks_its_input():
    with pytest.raises(ValueError, match='masks'):
        unit_iou_ranking(torch.rand(2, 3, 4, 4), torch.zeros(3, 4, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match='quantile'):
        unit_iou_ranking(torch.rand(2, 3, 4, 4), torch.zeros(2, 4, 4, dtype=torch.bool), quantile=1.5)


def test_rank_one_update_has_rank_one_and_lowers_the_loss():
    gen = torch.Generator().manual_seed(1)
    w = torch.randn(6, 8, generator=gen, dtype=torch.float64)
    k = torch.randn(8, 20, generator=gen, dtype=torch.float64)
    v = torch.randn(6, 20, generator=gen, dtype=torch.float64)
    d = k.mean(1)
    delta = rank_one_update(w, k, v, d)
    assert torch.linalg.matrix_rank(delta) == 1
    before = (w @ k - v).pow(2).sum()
    after = ((w + delta) @ k - v).pow(2).sum()
    assert after < before
    # optimal along d: any other multiple of the same direction does no better
    for s in (0.9, 1.1):
        assert ((w + s * delta) @ k - v).pow(2).sum() >= after


def test_projection_is_rank_one_and_idempotent():
    gen = torch.Generator().manual_seed(2)
    delta = torch.randn(6, 8, generator=gen, dtype=torch.float64)
    d = torch.randn(8, generator=gen, dtype=torch.float64)
    p = project_rank_one(delta, d)
    assert torch.linalg.matrix_rank(p) == 1
    assert torch.allclose(project_rank_one(p, d), p)
    assert torch.allclose(p @ d, delta @ d)                       # unchanged along d
    with pytest.raises(ValueError, match='direction'):
        project_rank_one(delta, torch.ones(7))


def test_unit_intervention_sets_units_inside_the_mask_only():
    from rewrite.analysis.rulechange import unit_intervention
    from utils.nethook import Trace
    from utils.stylegan2 import load_seq_stylegan
    from utils.zdataset import z_sample_for_model

    model = load_seq_stylegan('demo')
    z = z_sample_for_model(model, 2)
    mask = torch.zeros(16, 16)
    mask[4:8, 4:8] = 1.0
    units = torch.tensor([3, 7])
    with torch.no_grad(), Trace(model, 'layer5') as plain:
        model(z)
    with torch.no_grad(), Trace(model, 'layer5', edit_output=unit_intervention(units, mask, 5.0)) as tr:
        model(z)
    before, after = plain.output['fmap'], tr.output['fmap']
    assert after.shape[-1] == 16
    assert torch.equal(after[:, units][..., 4:8, 4:8], torch.full((2, 2, 4, 4), 5.0))
    keep = torch.ones_like(after, dtype=torch.bool)
    keep[:, units, 4:8, 4:8] = False
    assert torch.equal(after[keep], before[keep])


# ---------------------------------------------------------------------------------------------------
# the procedure on a tiny generator: interventions, the rank-one change, the per-layer search
# ---------------------------------------------------------------------------------------------------

TINY16 = dict(size=16, style_dim=16, n_mlp=2, channels={4: 8, 8: 8, 16: 8})


@pytest.fixture(scope='module')
def tiny_problem():
    """A hand-made rule: adding +2 of a fixed direction at layer3 inside the upper-left quadrant; the
    'effect' region is the lower-right quadrant of the image."""
    from rewrite.analysis.rulechange import build_problem, direction_intervention
    from utils.stylegan2 import SeqStyleGAN2
    from utils.zdataset import z_sample_for_model

    torch.manual_seed(0)
    model = SeqStyleGAN2(**TINY16).eval()
    z = z_sample_for_model(model, 6, seed=4)
    mask = torch.zeros(8, 8)
    mask[:4, :4] = 1
    direction = torch.randn(8, generator=torch.Generator().manual_seed(5))
    region = torch.zeros(6, 16, 16, dtype=torch.bool)
    region[:, 8:, 8:] = True
    cause = ('layer3', direction_intervention(direction, mask, 2.0))
    return model, build_problem(model, z, cause, region, keep_z=z_sample_for_model(model, 3, seed=6))


def test_cause_direction_is_the_difference_of_group_means():
    from rewrite.analysis.rulechange import cause_direction
    acts = torch.randn(5, 3, 2, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    present = torch.tensor([True, False, True, False, False])
    naive = [sum(acts[i, c].mean() for i in (0, 2)) / 2 - sum(acts[i, c].mean() for i in (1, 3, 4)) / 3
             for c in range(3)]
    assert torch.allclose(cause_direction(acts, present).double(), torch.stack(naive), atol=1e-6)
    with pytest.raises(ValueError, match='present: expected samples both with and without'):
        cause_direction(acts, torch.ones(5, dtype=torch.bool))


def test_direction_intervention_moves_features_inside_the_mask_only():
    from rewrite.analysis.rulechange import direction_intervention
    from utils.stylegan2.layers import DataBag

    fmap = torch.randn(2, 3, 4, 4)
    mask = torch.zeros(4, 4)
    mask[1:3, 0:2] = 1
    d = torch.tensor([1.0, -2.0, 0.5])
    out = direction_intervention(d, mask, -1.5)(DataBag(fmap=fmap), 'layerX')['fmap']
    expected = fmap.clone()
    expected[:, :, 1:3, 0:2] -= 1.5 * d.reshape(1, 3, 1, 1)
    assert torch.allclose(out, expected)


def test_key_direction_is_c_inverse_k(tiny_problem):
    from rewrite.analysis.rulechange import key_direction, render
    from utils.nethook import Trace

    model, problem = tiny_problem
    with torch.no_grad(), Trace(model, 'layer5.sconv.mconv.adain') as tr:
        render(model, problem.z, problem.cause)
    keys = tr.output['fmap'].double()                  # layer5 upsamples: keys at 8x8, region at 16x16
    m = problem.region.double().reshape(6, 8, 2, 8, 2).mean((2, 4))
    k = sum(keys[n, :, y, x] * m[n, y, x] for n in range(6) for y in range(8) for x in range(8)) / m.sum()
    vecs = keys.permute(0, 2, 3, 1).reshape(-1, 8)
    c = vecs.T @ vecs / len(vecs)
    c += 1e-3 * c.diagonal().mean() * torch.eye(8, dtype=torch.float64)
    expected = torch.linalg.solve(c, k)
    got = key_direction(model, 'layer5', problem).double()
    assert torch.allclose(got, expected, rtol=1e-4, atol=1e-6 * expected.abs().max())


def test_rank_one_change_has_rank_one_and_lowers_the_loss(tiny_problem):
    from rewrite.analysis.rulechange import change_loss, conv_change_rank, fit_layer_change, key_direction

    model, problem = tiny_problem
    before = {n: p.clone() for n, p in model.named_parameters()}
    d = key_direction(model, 'layer5', problem)
    fit = fit_layer_change(model, 'layer5', problem, steps=25, lr=0.05, direction=d)
    assert fit.delta.shape == model.get_parameter('layer5.sconv.mconv.dconv.weight').shape
    assert conv_change_rank(fit.delta) == 1
    m = fit.delta[0].permute(0, 2, 3, 1).reshape(-1, 8).double()    # every row parallel to d
    assert torch.allclose(m - torch.outer(m @ d.double(), d.double()) / d.double().dot(d.double()),
                          torch.zeros_like(m), atol=1e-6)
    with torch.no_grad():
        assert float(change_loss(model, 'layer5', torch.zeros_like(fit.delta), problem)) == \
            pytest.approx(fit.losses[0], rel=1e-5)
        assert float(change_loss(model, 'layer5', fit.delta, problem)) == pytest.approx(fit.losses[-1], rel=1e-5)
    assert fit.losses[-1] < 0.9 * fit.losses[0]
    full = fit_layer_change(model, 'layer5', problem, steps=25, lr=0.01)
    assert conv_change_rank(full.delta) > 1 and full.losses[-1] < fit.losses[0]
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())   # fitting changes nothing


def test_fit_checks_its_input(tiny_problem):
    from rewrite.analysis.rulechange import build_problem, fit_layer_change

    model, problem = tiny_problem
    with pytest.raises(ValueError, match=r'direction: expected shape \(8,\)'):
        fit_layer_change(model, 'layer5', problem, steps=1, direction=torch.ones(5))
    with pytest.raises(ValueError, match='steps'):
        fit_layer_change(model, 'layer5', problem, steps=0)
    with pytest.raises(ValueError, match='region'):
        build_problem(model, problem.z, problem.cause, problem.region[:2])


def test_scale_to_budget_finds_the_largest_scale_within_it(tiny_problem):
    from rewrite.analysis.layersearch import scale_to_budget
    from rewrite.analysis.rulechange import change_outside, fit_layer_change

    model, problem = tiny_problem
    fit = fit_layer_change(model, 'layer4', problem, steps=5, lr=0.2)
    full = change_outside(model, 'layer4', fit.delta, problem)
    assert full > 0
    scale, at = scale_to_budget(model, 'layer4', fit.delta, problem, budget=full / 3, iters=8)
    assert 0 < scale < 1 and at <= full / 3
    assert at == pytest.approx(change_outside(model, 'layer4', scale * fit.delta, problem))
    assert change_outside(model, 'layer4', (scale + 2 ** -7) * fit.delta, problem) > full / 3
    assert scale_to_budget(model, 'layer4', fit.delta, problem, budget=2 * full) == (1.0, full)
    up, at_up = scale_to_budget(model, 'layer4', fit.delta, problem, budget=2 * full, max_scale=4.0, iters=8)
    assert 1.0 < up < 4.0 and full < at_up <= 2 * full          # strengthened up to the budget
    with pytest.raises(ValueError, match='max_scale'):
        scale_to_budget(model, 'layer4', fit.delta, problem, budget=full, max_scale=0.0)


def test_layer_search_brings_every_layers_change_to_the_budget(tiny_problem):
    """Changes under the budget at scale 1 are strengthened, changes over it weakened: every row's change
    outside, measured again here, is the budget to within 2%, or under it at the largest scale allowed, and
    then the table says so."""
    from rewrite.analysis.layersearch import layer_search
    from rewrite.analysis.rulechange import change_outside, fit_layer_change

    model, problem = tiny_problem
    layers = ['layer4', 'layer5', 'layer6']
    at_one = [change_outside(model, layer, fit_layer_change(model, layer, problem, steps=3, lr=0.01).delta, problem)
              for layer in layers]
    budget = sorted(at_one)[1]                    # the middle one: one layer must be strengthened, one weakened
    search = layer_search(model, layers, problem, lambda before, after: 0.5, budget=budget, steps=3, lr=0.01)
    scales = {r['layer']: r['scale'] for r in search.rows}
    assert max(scales.values()) > 1.0 > min(scales.values())
    for row, before in zip(search.rows, at_one, strict=True):
        measured = change_outside(model, row['layer'], search.changes[row['layer']], problem)
        assert measured == pytest.approx(row['change_outside'], rel=1e-5)
        assert measured == pytest.approx(budget, rel=0.02) and not row['under_budget']
        assert (row['scale'] > 1) == (before < budget)
    # a budget out of reach: every change stays under it at the largest scale, and the table says so
    far = layer_search(model, layers[:1], problem, lambda before, after: 0.5, budget=100 * max(at_one), steps=3,
                       lr=0.01, max_scale=2.0)
    row = far.rows[0]
    assert row['scale'] == 2.0 and row['under_budget'] and row['change_outside'] < far.budget
    assert '2.000 (largest allowed: under the budget)' in far.table()


def test_verdict_says_when_the_margin_is_within_the_noise():
    from rewrite.analysis.layersearch import LayerSearch

    rows = [dict(layer='layer4', flip=0.9), dict(layer='layer5', flip=0.6)]
    search = LayerSearch(rows, 0.03)
    p = 0.75                                      # two standard errors of a difference of two binomial rates
    assert search.noise(16) == pytest.approx(200 * (2 * p * (1 - p) / 16) ** 0.5)
    assert search.verdict(n=16).startswith('no layer is clearly best: the best, layer4, is 30 points above')
    assert 'within the noise of 16 samples' in search.verdict(n=16)
    assert search.verdict(n=400).startswith('layer4 is clearly best (30 points')
    assert search.verdict().startswith('layer4 is clearly best')          # no sample count: the margin alone


def test_layer_search_table_plot_and_verdict(tiny_problem):
    from rewrite.analysis.layersearch import layer_search

    model, problem = tiny_problem
    calls = []

    def flip(before, after):          # hand-made score: share of samples whose region moved towards the goal
        calls.append(after.shape)
        r = problem.region.unsqueeze(1)
        return float(((after - problem.goal).abs() * r).sum((1, 2, 3))
                     .lt(((before - problem.goal).abs() * r).sum((1, 2, 3))).float().mean())

    search = layer_search(model, ['layer4', 'layer5', 'layer6'], problem, flip, budget=0.01, steps=3, lr=0.01)
    assert [r['layer'] for r in search.rows] == ['layer4', 'layer5', 'layer6'] and len(calls) == 3
    assert all(r['change_outside'] <= 0.01 + 1e-9 for r in search.rows)
    assert search.best in search.table() and '| layer5 |' in search.table()
    assert search.plot().size == (360, 220)
    flips = sorted((r['flip'] for r in search.rows), reverse=True)
    assert search.margin == pytest.approx(100 * (flips[0] - flips[1]))
    search.rows = [dict(search.rows[0], flip=0.9), dict(search.rows[1], flip=0.5)]
    assert search.verdict().startswith('layer4 is clearly best (40 points')
    search.rows[1]['flip'] = 0.8
    assert 'spread over layers' in search.verdict()


def test_changed_model_saves_in_the_checkpoint_layout(tiny_problem, tmp_path):
    from rewrite.analysis.rulechange import changed_model, render
    from utils.stylegan2 import load_seq_stylegan, save_checkpoint

    model, problem = tiny_problem
    delta = 0.1 * torch.randn_like(model.get_parameter('layer5.sconv.mconv.dconv.weight'))
    new = changed_model(model, 'layer5', delta)
    assert not torch.equal(new.get_parameter('layer5.sconv.mconv.dconv.weight'),
                           model.get_parameter('layer5.sconv.mconv.dconv.weight'))
    save_checkpoint(new, tmp_path / 'changed.pt')
    loaded = load_seq_stylegan(tmp_path / 'changed.pt', truncation=model.truncation)
    assert set(torch.load(tmp_path / 'changed.pt', weights_only=True)) >= {'g_ema', 'latent_avg'}
    weights = {'layer5.sconv.mconv.dconv.weight': model.get_parameter('layer5.sconv.mconv.dconv.weight') + delta}
    with torch.no_grad():
        assert torch.allclose(loaded(problem.z), render(model, problem.z, None, weights), atol=1e-5)
