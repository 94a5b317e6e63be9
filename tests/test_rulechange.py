"""Rule-change library pieces: dissection ranking and the rank-one change."""

import pytest
import torch

from rewrite.rulechange import project_rank_one, rank_one_update, unit_iou_ranking


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
    from rewrite.rulechange import unit_intervention
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
