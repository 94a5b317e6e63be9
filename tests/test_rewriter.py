"""SeqStyleGanRewriter: statistics and keys against naive float64 formulas, the rank constraint,
atomic edits, undo/revert, the statistics cache."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch
from numerics import gram_atol

from rewrite.core.rewriter import RewriteError, SeqStyleGanRewriter
from rewrite.core.solvers.problem import projected_conv
from rewrite.formats import editfile
from utils.runningstats import SecondMoment
from utils.stylegan2 import SeqStyleGAN2, ops
from utils.zdataset import z_dataset_for_model

LAYER = 6          # second 16x16 conv of a 32 px model


def tiny_model(seed: int = 0, size: int = 32) -> SeqStyleGAN2:
    torch.manual_seed(seed)
    model = SeqStyleGAN2(size, style_dim=64, n_mlp=2, channels={r: 32 for r in (4, 8, 16, 32, 64)})
    with torch.no_grad():                          # realistic, non-zero noise strengths and biases
        for name, p in model.named_parameters():
            if name.endswith('noise.weight'):
                p.fill_(0.1)
            elif name.endswith('activate.bias'):
                p.normal_(0, 0.1)
    return model.eval()


def box_mask(res: int, t: int, l: int, b: int, r: int) -> str:
    m = np.zeros((res, res), np.float32)
    m[t:b, l:r] = 1.0
    return editfile.encode_mask(m)


@pytest.fixture(scope='module')
def gw():
    model = tiny_model()
    return SeqStyleGanRewriter(model, z_dataset_for_model(model, 40), LAYER, progress=False)


@pytest.fixture
def request_dict():
    return {'object': [3, box_mask(256, 40, 40, 120, 120)],
            'paste': [7, box_mask(256, 128, 128, 224, 224)],
            'key': [[7, box_mask(256, 128, 128, 224, 224)], [9, box_mask(256, 0, 0, 96, 96)]]}


def naive_keys(gw, imgnums) -> np.ndarray:
    """Per-pixel keys (inputs of the layer's plain conv), traced image by image, float64 [N, I]."""
    rows = []
    for i in imgnums:
        with torch.no_grad():
            fmap = gw.context_model(gw.zds[i][0][None]).fmap[0].double().numpy()
        rows.append(fmap.reshape(fmap.shape[0], -1).T)
    return np.concatenate(rows)


def test_second_moment_and_zca_match_naive_float64(gw):
    keys = naive_keys(gw, range(len(gw.zds)))
    c = keys.T @ keys / len(keys)
    # float32 products over chunks of at most SecondMoment's chunk rows, summed in float64
    assert np.abs(gw.c_matrix.numpy() - c).max() <= gram_atol(c, SecondMoment().chunk)
    zca = np.linalg.inv(scipy.linalg.sqrtm(gw.c_matrix.numpy()).real)    # float64 from the same C
    assert np.abs(gw.zca_matrix.numpy() - zca).max() / np.abs(zca).max() <= 1e-6
    k = keys[5]
    want = np.linalg.solve(gw.c_matrix.numpy(), k)           # the solve itself, on the same C
    got = gw.covariance_adjusted_query_key(torch.from_numpy(k)).numpy()
    assert np.abs(got - want).max() / np.abs(want).max() <= 1e-9


def naive_zca_key(gw, pairs, rank):
    keys = naive_keys(gw, range(len(gw.zds)))
    c = keys.T @ keys / len(keys)
    zca = np.linalg.inv(scipy.linalg.sqrtm(c).real)
    rows = []
    for imgnum, url in pairs:
        k = naive_keys(gw, [imgnum])
        w = editfile.mask_from_url(url, gw.k_shape[2]).double().numpy().reshape(-1)
        rows.append((w[:, None] * (k @ zca.T))[w > 0])
    white = np.concatenate(rows)
    _, _, vt = np.linalg.svd(white, full_matrices=False)
    dirs = []
    for j in range(rank):                          # Gram-Schmidt of zca @ v_j, sign of the summed keys
        d = zca @ vt[j]
        for e in dirs:
            d = d - (d @ e) * e
        d /= np.linalg.norm(d)
        dirs.append(d * np.sign(d @ white.sum(0)))
    return np.stack(dirs)


@pytest.mark.parametrize('rank', [1, 3])
def test_zca_key_directions_match_naive(gw, request_dict, rank):
    pairs = [tuple(p) for p in request_dict['key']]
    got = gw.multi_key_from_selection(pairs, rank=rank).double().numpy()
    want = naive_zca_key(gw, pairs, rank)
    assert got.shape == want.shape
    assert np.allclose(got @ got.T, np.eye(rank), atol=1e-5)
    for g, w in zip(got, want):
        assert abs(g @ w) >= 0.9999
    assert got[0] @ want[0] > 0                    # same sign convention


@pytest.mark.parametrize('method', ['svd', 'mean', 'gandissect'])
def test_other_key_methods_give_unit_directions(gw, request_dict, method):
    pairs = [tuple(p) for p in request_dict['key']]
    d = gw.multi_key_from_selection(pairs, rank=1, key_method=method)
    assert d.shape == (1, gw.k_shape[1]) and abs(d.norm().item() - 1) < 1e-5
    if method == 'mean':                           # C^-1 (weighted mean key), normalised
        keys = naive_keys(gw, range(len(gw.zds)))
        c = keys.T @ keys / len(keys)
        obs = []
        for imgnum, url in pairs:
            m = editfile.mask_from_url(url, gw.k_shape[2]).double().numpy().reshape(-1)
            obs.append(naive_keys(gw, [imgnum])[m > 0] * m[m > 0, None])
        avg = np.linalg.solve(c, np.concatenate(obs).T).T.mean(0)
        assert abs(d[0].double().numpy() @ avg / np.linalg.norm(avg)) > 0.9999


@pytest.mark.parametrize('solver', ['original', 'fast', 'linear'])
def test_edit_stays_in_context_span_and_lowers_loss(gw, request_dict, solver):
    w0 = gw.target_weights().detach().clone()
    niter = 150 if solver != 'fast' else 0
    record = gw.apply_edit(request_dict, rank=2, niter=niter, solver=solver)
    try:
        d = record.context.to(w0)
        delta = gw.target_weights().detach() - w0
        resid = delta - projected_conv(delta, d)
        assert delta.norm() > 0
        assert resid.norm() / delta.norm() <= 1e-5
        assert record.final_loss < record.initial_loss
        # a key orthogonal to the context: the plain (pre-demodulation) conv output is unchanged
        x = torch.randn(2, gw.k_shape[1], 8, 8)
        x = x - torch.einsum('bihw,di,dj->bjhw', x, d, d)
        before = ops.plain_conv(x, w0[0], gw.conv.scale)
        after = ops.plain_conv(x, gw.target_weights()[0], gw.conv.scale)
        assert (after - before).abs().max() <= 1e-5 * before.abs().max()
    finally:
        gw.undo()
    assert torch.equal(gw.target_weights(), w0)


def test_fast_solver_reaches_original_loss(gw, request_dict):
    original = gw.apply_edit(request_dict, rank=1, niter=2001, solver='original')
    gw.undo()
    fast = gw.apply_edit(request_dict, rank=1, solver='fast')
    gw.undo()
    assert fast.final_loss <= original.final_loss * 1.0001


def test_edits_compose_undo_and_revert(gw, request_dict):
    w0 = gw.target_weights().detach().clone()
    gw.apply_edit(request_dict, rank=1, solver='fast')
    w1 = gw.target_weights().detach().clone()
    second = dict(request_dict, paste=[11, box_mask(256, 0, 128, 96, 224)])
    second.pop('key')
    gw.apply_edit(second, rank=1, solver='fast')
    assert len(gw.history) == 2 and not torch.equal(gw.target_weights(), w1)
    gw.undo()
    assert torch.equal(gw.target_weights(), w1)
    with gw.original_model():
        assert torch.equal(gw.target_weights(), w0)
    assert torch.equal(gw.target_weights(), w1)
    gw.revert()
    assert torch.equal(gw.target_weights(), w0) and gw.history == []


def state_bits(gw):
    return {k: v.clone() for k, v in gw.model.state_dict().items()}


def assert_unchanged(gw, before):
    after = gw.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_interrupt_and_nan_restore_the_weights(gw, request_dict):
    before = state_bits(gw)

    def interrupt(it, loss):
        if it == 5:
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        gw.apply_edit(request_dict, niter=50, update_callback=interrupt, solver='original')
    assert_unchanged(gw, before)
    def poison(it, loss):                                    # a weight blows up mid-optimisation
        if it == 3:
            gw.target_weights().data[0, 0, 0, 0, 0] = float('inf')
    for solver in ('original',):
        with pytest.raises(FloatingPointError, match='restored'):
            gw.apply_edit(request_dict, niter=30, update_callback=poison, solver=solver)
        assert_unchanged(gw, before)
    assert_unchanged(gw, before)
    assert gw.history == []


@pytest.mark.parametrize('mutate, message', [
    (lambda r: r.pop('object'), "both 'object'.*apply_request"),
    (lambda r: r.__setitem__('paste', [400, r['paste'][1]]), 'outside the z-sample'),
    (lambda r: r.__setitem__('object', [3, 'data:image/png;base64,AAAA']), 'object'),
    (lambda r: r.__setitem__('key', [[7, box_mask(1024, 0, 0, 1, 1)]]), 'selects nothing'),
])
def test_bad_requests_raise_clear_errors_and_change_nothing(gw, request_dict, mutate, message):
    before = state_bits(gw)
    mutate(request_dict)
    with pytest.raises(ValueError, match=message):
        gw.apply_edit(request_dict, niter=5)
    assert_unchanged(gw, before)


def test_bad_options_raise_clear_errors(gw, request_dict):
    before = state_bits(gw)
    with pytest.raises(RewriteError, match='rank must be between'):
        gw.apply_edit(request_dict, rank=0)
    with pytest.raises(RewriteError, match='solver must be one of'):
        gw.apply_edit(request_dict, solver='magic')
    with pytest.raises(RewriteError, match='lr must be a positive finite number'):
        gw.apply_edit(request_dict, lr=float('nan'))
    assert_unchanged(gw, before)
    with pytest.raises(RewriteError, match='mconv'):
        SeqStyleGanRewriter(SeqStyleGAN2(32, style_dim=64, n_mlp=2, channels=[16] * 4, mconv='fused'),
                            gw.zds, LAYER)
    with pytest.raises(ValueError, match='layer 9 does not exist'):
        SeqStyleGanRewriter(gw.model, gw.zds, 9)


def test_erase_and_zero(gw, request_dict):
    before = state_bits(gw)
    erase = {'paste': request_dict['paste'], 'key': request_dict['key']}
    record = gw.apply_erase(erase, drank=5, niter=100, solver='original')
    assert record.final_loss < record.initial_loss
    gw.undo()
    d = gw.multi_key_from_selection([tuple(p) for p in request_dict['key']], rank=1)
    gw.zero(d)
    assert projected_conv(gw.target_weights(), d).abs().max() < 1e-5
    gw.revert()
    assert_unchanged(gw, before)


def test_statistics_cache_is_keyed_by_weights(tmp_path, monkeypatch):
    import rewrite.core.contextkeys as gr  # where the rewriter gathers its key statistics

    calls = []
    real = gr.gather_key_statistics
    monkeypatch.setattr(gr, 'gather_key_statistics', lambda *a, **k: calls.append(1) or real(*a, **k))
    model = tiny_model(1)
    zds = z_dataset_for_model(model, 12)
    c1 = SeqStyleGanRewriter(model, zds, LAYER, cachedir=tmp_path, progress=False).c_matrix
    c2 = SeqStyleGanRewriter(model, zds, LAYER, cachedir=tmp_path, progress=False).c_matrix
    assert len(calls) == 1 and torch.equal(c1, c2)
    with torch.no_grad():
        model.layer4.sconv.mconv.dconv.weight[0, 0, 0, 0, 0] += 1.0
    c3 = SeqStyleGanRewriter(model, zds, LAYER, cachedir=tmp_path, progress=False).c_matrix
    assert len(calls) == 2 and not torch.equal(c1, c3)
    # an edit of the layer itself does not change its keys: the cache still serves
    with torch.no_grad():
        model.get_submodule(f'layer{LAYER}.sconv.mconv.dconv').weight.mul_(2.0)
    c4 = SeqStyleGanRewriter(model, zds, LAYER, cachedir=tmp_path, progress=False).c_matrix
    assert len(calls) == 2 and torch.equal(c3, c4)
    c5 = SeqStyleGanRewriter(model, z_dataset_for_model(model, 12, seed=2), LAYER, cachedir=tmp_path,
                             progress=False).c_matrix
    assert len(calls) == 3 and not torch.equal(c4, c5)   # another z-sample is another cache entry


def test_search_ranks_by_strongest_response(gw, request_dict):
    key = gw.query_key_from_selection(7, request_dict['paste'][1])
    top, quantiles = gw.ranking_for_key(key, k=5)
    maxima = [gw.key_response_maps(key, [i]).max().item() for i in range(len(gw.zds))]
    assert top == list(np.argsort(maxima)[::-1][:5])
    assert quantiles.shape == (101,) and torch.all(quantiles[1:] >= quantiles[:-1])


def test_rendering_matches_the_model(gw):
    z = gw.get_zs([0, 1])
    with torch.no_grad():
        direct = gw.model(z)
    assert torch.allclose(gw.sample_image_from_latent(z), direct, atol=1e-5)
    img = gw.render_image(1)
    assert img.size == (32, 32)
    assert np.abs(np.asarray(img).astype(float) - ((direct[1].clamp(-1, 1) + 1) * 127.5)
                  .permute(1, 2, 0).numpy()).max() <= 0.5 + 1e-3


def test_demod_energy_matches_the_weight_it_describes():
    from rewrite.core.solvers.fast import DemodEnergy
    torch.manual_seed(0)
    w0 = torch.randn(1, 6, 5, 3, 3, dtype=torch.float64)
    context = torch.linalg.qr(torch.randn(5, 2, dtype=torch.float64))[0].t()        # [2, 5] orthonormal
    styles = torch.randn(4, 5, dtype=torch.float64)
    lam = torch.randn(6, 2 * 9, dtype=torch.float64)
    w = w0 + torch.einsum('godyx,di->goiyx', lam.reshape(1, 6, 2, 3, 3), context)
    expected = ops.demodulation(w[0], styles, 0.3)
    assert torch.allclose(DemodEnergy(w0, styles, context, 0.3).demod(lam), expected, rtol=1e-10, atol=0)


def test_fast_solver_preserve_keeps_other_images_demodulation(gw, request_dict):
    styles = gw.sample_styles()
    w0 = gw.target_weights().detach().clone()
    d0 = ops.demodulation(w0[0], styles, gw.conv.scale)
    change = {}
    for preserve in (0.0, 3.0):
        record = gw.apply_edit(request_dict, rank=1, solver='fast', preserve=preserve)
        d1 = ops.demodulation(gw.target_weights().detach()[0], styles, gw.conv.scale)
        change[preserve] = ((d1 / d0 - 1).pow(2).mean().sqrt().item(), record.final_loss)
        gw.undo()
    assert change[3.0][0] < 0.5 * change[0.0][0]
    assert change[3.0][1] < gw.apply_edit(request_dict, rank=1, niter=0, solver='original').initial_loss
    gw.undo()


def test_sample_styles_are_the_layers_styles(gw):
    zs = gw.statistics_zs()[:5]
    with torch.no_grad():
        expected = gw.context_model(zs).style
    assert torch.allclose(gw.sample_styles(5), expected, rtol=1e-6, atol=1e-6)


def test_fast_solver_polish_alone_starts_from_zero(gw, request_dict):
    # no least-squares rounds: the polish starts at Lambda = 0, where the demodulation term is at its minimum
    record = gw.apply_edit(request_dict, rank=1, solver='fast', rounds=0, polish=50)
    gw.undo()
    assert np.isfinite(record.final_loss) and record.final_loss < record.initial_loss
