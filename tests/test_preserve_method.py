"""Preserve regions, the method: context directions against preserve keys vs a naive generalized eigen-solve."""

from __future__ import annotations

import json

import numpy as np
import preserve_reference
import pytest
import scipy.linalg
import torch
import torch.nn.functional as F
from conftest import layout_checkpoint, need_shared
from test_cli import files  # noqa: F401  (the tiny checkpoint fixture)

from rewrite.core.preserve import PreserveSet, context_directions
from rewrite.core.solvers.fast import LowRankTarget, PreserveTerm, _reweighted_least_squares, insert_fast
from utils.generators.site import TargetLayer
from utils.stylegan2 import ops


def test_context_direction_is_the_naive_generalized_eigenvector():
    rng = np.random.RandomState(0)
    i = 12
    basis = rng.randn(i, i)
    c = basis @ basis.T / i + 0.1 * np.eye(i)
    keys, w = rng.randn(30, i), rng.rand(30) + 0.1
    pkeys, pw = rng.randn(20, i), rng.rand(20) + 0.1
    for strength in (0.0, 1.0, 30.0):
        a = (keys * w[:, None] ** 2).T @ keys
        b = c + strength * (pkeys * pw[:, None]).T @ pkeys / pw.sum()
        _, vecs = scipy.linalg.eigh(a, b)
        ref = vecs[:, -1] / np.linalg.norm(vecs[:, -1])
        d = context_directions(torch.tensor(keys), torch.tensor(w), torch.tensor(c), 1,
                               torch.tensor(pkeys), torch.tensor(pw), strength)[0].double().numpy()
        assert abs(d @ ref) >= 0.9999
        assert d @ (keys * w[:, None]).sum(0) > 0
        # rank 2 spans the top two generalized eigenvectors
        d2 = context_directions(torch.tensor(keys), torch.tensor(w), torch.tensor(c), 2,
                                torch.tensor(pkeys), torch.tensor(pw), strength).double().numpy()
        assert np.allclose(d2 @ d2.T, np.eye(2), atol=1e-6)
        for v in vecs[:, -2:].T:
            v = v / np.linalg.norm(v)
            assert np.linalg.norm(d2 @ v) >= 0.9999


def test_strong_preserve_turns_the_direction_away_from_preserve_keys():
    rng = np.random.RandomState(1)
    i = 10
    c = np.eye(i)
    shared = rng.randn(i)
    keys = shared + 0.3 * rng.randn(25, i)
    pkeys = shared[None] * rng.rand(15, 1)                    # preserve keys along the shared part only
    w, pw = np.ones(25), np.ones(15)
    loose = context_directions(torch.tensor(keys), torch.tensor(w), torch.tensor(c), 1)[0].double().numpy()
    strict = context_directions(torch.tensor(keys), torch.tensor(w), torch.tensor(c), 1,
                                torch.tensor(pkeys), torch.tensor(pw), 1e4)[0].double().numpy()
    unit = shared / np.linalg.norm(shared)
    assert abs(strict @ unit) < 0.05 < abs(loose @ unit)


# ---- the preserve term of the fast solver ------------------------------------------------------

def small_layer(i=8, o=6, k=3, demodulate=True, seed=0):
    """A random styled conv (float64): TargetLayer, W0 [1, O, I, k, k], and a key bag maker."""
    g = torch.Generator().manual_seed(seed)
    layer = TargetLayer(scale=1 / np.sqrt(i * k * k), upsample=False, demodulate=demodulate, blur=None,
                        noise=torch.zeros(()), bias=0.1 * torch.randn(o, generator=g, dtype=torch.float64))
    w0 = torch.randn(1, o, i, k, k, generator=g, dtype=torch.float64)

    def bag(fmap):
        return {'fmap': fmap, 'style': 1 + 0.3 * torch.randn(len(fmap), i, generator=g, dtype=torch.float64)}
    return layer, w0, bag, g


def naive_demod(w0, style, scale):
    """[O]: 1 / sqrt(scale^2 sum_i,taps (W0 s_i)^2 + eps), written out."""
    w = w0[0] * style[:, None, None]
    return 1 / np.sqrt(scale ** 2 * (w.numpy() ** 2).sum((1, 2, 3)) + ops.DEMOD_EPS)


def naive_design(fmap, context, k, scale):
    """[B H W, r k k]: the plain conv of the keys with each one-hot tap of each context row (F.conv2d)."""
    cols = []
    for j in range(context.shape[0] * k * k):
        tap = torch.zeros(context.shape[0] * k * k, dtype=torch.float64)
        tap[j] = 1
        weight = torch.einsum('dyx,di->iyx', tap.reshape(-1, k, k), context)[None] * scale
        cols.append(F.conv2d(fmap, weight, padding=k // 2).reshape(-1))
    return torch.stack(cols, 1).numpy()


def test_preserve_least_squares_is_the_naive_float64_solve():
    layer, w0, bag, g = small_layer()
    k, scale, o = 3, layer.scale, w0.shape[1]
    context = torch.linalg.qr(torch.randn(8, 2, generator=g, dtype=torch.float64))[0].t()        # [2, I]
    key = bag(torch.randn(1, 8, 5, 5, generator=g, dtype=torch.float64))
    layer.style = key['style'][0]                                                     # the goal's style
    val = torch.randn(1, o, 5, 5, generator=g, dtype=torch.float64)
    pkey = bag(torch.randn(2, 8, 5, 5, generator=g, dtype=torch.float64))
    pmask = (torch.rand(2, 5, 5, generator=g, dtype=torch.float64) - 0.3).clamp(min=0)
    pset = PreserveSet(pkey, torch.randn(2, o, 5, 5, generator=g, dtype=torch.float64), pmask)
    weight = 2.5
    target = LowRankTarget(layer, w0, key, val, context)
    target.keep = PreserveTerm(layer, w0, pset, context, weight, goal_pixels=25)
    lam, _ = _reweighted_least_squares(target, 1, 0.0, [], None)                   # one round, no ridge

    # naive: per output channel, least squares of [A; sqrt(s) A_p] lam = [rhs; 0] (at Lambda = 0 the
    # preserve pixels' wanted change is zero), s = weight * u * P / sum(u)
    a = naive_design(key['fmap'], context, k, scale)
    ap = naive_design(pkey['fmap'], context, k, scale).reshape(2, 5, 5, -1)[pmask.numpy() > 0]
    u = pmask.numpy()[pmask.numpy() > 0]
    s = weight * u * 25 / u.sum()
    d0 = naive_demod(w0, key['style'][0], scale)
    gain = np.where(val[0].numpy() > 0, 1.0, ops.LRELU_SLOPE) * ops.LRELU_GAIN
    pre = val[0].numpy() / gain - layer.bias.numpy()[:, None, None]                    # wanted demod * conv
    base = F.conv2d(key['fmap'], w0[0] * scale, padding=1)[0].numpy()
    rhs = (pre / d0[:, None, None] - base).reshape(o, -1)
    stacked = np.concatenate([a, np.sqrt(s)[:, None] * ap])
    for c in range(o):
        ref = np.linalg.lstsq(stacked, np.concatenate([rhs[c], np.zeros(len(u))]), rcond=None)[0]
        assert np.linalg.norm(lam[c].numpy() - ref) <= 1e-6 * np.linalg.norm(ref)


def test_large_preserve_weight_keeps_keys_in_the_preserve_span():
    # without demodulation the pre-demodulation outputs are the outputs (with it, the solver keeps the
    # preserve regions' demodulated outputs, rescaling their pre-demodulation outputs to do so)
    layer, w0, bag, g = small_layer(k=1, seed=3, demodulate=False)
    o = w0.shape[1]
    context = torch.linalg.qr(torch.randn(8, 3, generator=g, dtype=torch.float64))[0].t()        # [3, I]
    v = torch.randn(8, generator=g, dtype=torch.float64)
    coeff = torch.rand(1, 1, 4, 4, generator=g, dtype=torch.float64) + 0.5
    pkey = bag(v[None, :, None, None] * coeff)                                       # every pixel along v
    pset = PreserveSet(pkey, layer_output(layer, w0, pkey), torch.ones(1, 4, 4, dtype=torch.float64))
    key = bag(torch.randn(1, 8, 4, 4, generator=g, dtype=torch.float64))
    layer.style = key['style'][0]
    val = layer_output(layer, w0, key) + torch.randn(1, o, 4, 4, generator=g, dtype=torch.float64)

    def edited(weight_value):
        weight = torch.nn.Parameter(w0.clone(), requires_grad=False)
        insert_fast(None, layer, weight, key, val, context, preserve_set=pset, preserve_weight=weight_value)
        return weight.detach()
    w_free, w_kept = edited(0.0), edited(1e6)
    assert (w_kept - w0).norm() > 1e-2 * w0.norm()                                  # the edit still happens
    probe = torch.stack([2.0 * v, -0.7 * v])                                        # keys in span(v)
    before = probe @ w0[0, :, :, 0, 0].t()
    assert (probe @ w_kept[0, :, :, 0, 0].t() - before).norm() <= 1e-5 * before.norm()
    assert (probe @ w_free[0, :, :, 0, 0].t() - before).norm() > 1e-2 * before.norm()


def layer_output(layer, w0, key):
    """The styled conv's output [B, O, H, W] written out (1x1 conv of the modulated keys, demodulated by
    the modulated weight's norm, bias, leaky ReLU)."""
    style = key['style']
    w = w0[0, :, :, 0, 0][None] * layer.scale * torch.ones_like(style)[:, None, :]   # [B, O, I]
    if layer.demodulate:
        w = w / torch.sqrt(((w * style[:, None, :]) ** 2).sum(2, keepdim=True) + ops.DEMOD_EPS)
    out = torch.einsum('boi,bihw->bohw', w, key['fmap'])
    return F.leaky_relu(out + layer.bias[None, :, None, None], ops.LRELU_SLOPE) * ops.LRELU_GAIN


def test_large_preserve_weight_keeps_the_preserve_regions_demodulated_outputs():
    layer, w0, bag, g = small_layer(k=1, seed=4)
    context = torch.linalg.qr(torch.randn(8, 3, generator=g, dtype=torch.float64))[0].t()
    v = torch.randn(8, generator=g, dtype=torch.float64)
    pkey = bag(v[None, :, None, None] * (torch.rand(1, 1, 4, 4, generator=g, dtype=torch.float64) + 0.5))
    before = layer_output(layer, w0, pkey)
    pset = PreserveSet(pkey, before, torch.ones(1, 4, 4, dtype=torch.float64))
    key = bag(torch.randn(1, 8, 4, 4, generator=g, dtype=torch.float64))
    layer.style = key['style'][0]
    val = layer_output(layer, w0, key) + torch.randn(1, w0.shape[1], 4, 4, generator=g, dtype=torch.float64)
    changes = []
    for weight_value in (0.0, 1e6):
        weight = torch.nn.Parameter(w0.clone(), requires_grad=False)
        insert_fast(None, layer, weight, key, val, context, preserve_set=pset, preserve_weight=weight_value)
        assert (weight - w0).norm() > 1e-2 * w0.norm()
        changes.append((layer_output(layer, weight.detach(), pkey) - before).abs().mean() / before.abs().mean())
    assert changes[1] <= 1e-4 < changes[0]


# ---- files without preserve: bit-identical to preserve regions at weight 0 (same run, same host) ----------

def assert_same_weights(without: dict, with_zero: dict) -> None:
    assert without.keys() == with_zero.keys()
    differ = [key for key in without if not torch.equal(without[key], with_zero[key])]
    assert differ == []


@pytest.mark.slow
def test_bundled_edit_files_without_preserve_match_preserve_weight_zero():
    cases = list(preserve_reference.demo_cases())
    assert len(cases) >= 8
    rewriter_for = preserve_reference.demo_rewriters()
    without = preserve_reference.weights_after(rewriter_for, cases)
    with_zero = preserve_reference.weights_after(rewriter_for, cases, preserve_reference.with_zero_weight_preserve,
                                                 preserve_weight=0.0)
    assert_same_weights(without, with_zero)
    layers = {key: layer for key, layer, *_ in cases}
    unchanged = [key for key, w in without.items() if torch.equal(w, rewriter_for(layers[key]).target_weights())]
    assert unchanged == [], 'every case changes the weight'


@pytest.mark.slow
def test_original_edit_files_without_preserve_match_preserve_weight_zero():
    folder = need_shared() / 'original-edits'
    cases = list(preserve_reference.orig_cases(folder))
    assert len(cases) == 28 + 4
    rewriter_for = preserve_reference.orig_rewriters(layout_checkpoint(256, seed=5))
    without = preserve_reference.weights_after(rewriter_for, cases)
    with_zero = preserve_reference.weights_after(rewriter_for, cases, preserve_reference.with_zero_weight_preserve,
                                                 preserve_weight=0.0)
    assert_same_weights(without, with_zero)


# ---- apply_edit / apply_erase with preserve regions --------------------------------------------

@pytest.fixture(scope='module')
def demo_gw():
    return preserve_reference.demo_rewriters()(8)


def with_preserve(regions) -> dict:
    edit = json.loads((preserve_reference.DEMO_EDITS / 'dome2spire_layer8_rank3.json').read_text())
    return {**edit, 'preserve': regions}


@pytest.mark.parametrize('solver, niter', [('fast', 1), ('original', 100)])
def test_apply_edit_with_preserve_regions_records_and_keeps_them(demo_gw, solver, niter):
    from test_rewriter import box_mask
    gw = demo_gw
    regions = [[n, box_mask(256, 0, 0, 128, 256)] for n in (3, 4, 5)]
    keep = gw.preserve_from_selection([(n, m) for n, m in regions])
    changes = {}
    for weight_value in (0.0, 30.0):
        record = gw.apply_edit(with_preserve(regions), rank=1, solver=solver, niter=niter,
                               preserve_weight=weight_value)
        changes[weight_value] = keep.change(gw.target(keep.key)).item()
        if weight_value:
            assert record.preserve_weight == weight_value
            assert record.preserve_change == pytest.approx(changes[weight_value], rel=1e-6)
            assert record.final_loss < record.initial_loss
        else:
            assert record.preserve_weight is None and record.preserve_change is None
        gw.revert()
    assert changes[30.0] < 0.5 * changes[0.0]


def test_preserve_weight_and_solver_errors_leave_the_weights(demo_gw):
    from test_rewriter import box_mask
    gw = demo_gw
    before = gw.target_weights().clone()
    request = with_preserve([[3, box_mask(256, 0, 0, 128, 256)]])
    for bad in (-1.0, float('nan'), 'x', True):
        with pytest.raises(ValueError, match='preserve_weight'):
            gw.apply_edit(request, rank=1, solver='fast', preserve_weight=bad)
    with pytest.raises(ValueError, match="'linear'"):
        gw.apply_edit(request, rank=1, solver='linear', niter=2)
    with pytest.raises(ValueError, match=r'preserve\[0\]'):
        gw.apply_edit(with_preserve([[gw.num_images, box_mask(256, 0, 0, 64, 64)]]), rank=1, solver='fast')
    assert torch.equal(gw.target_weights(), before)


# ---- the command line uses the file's preserve regions -----------------------------------------

def test_cli_apply_and_sample_use_the_preserve_regions(files, tmp_path, capsys):  # noqa: F811
    from test_cli import LAYER, NITER, ZSAMPLE, box, edit_json, in_memory_edit, load, read_png, reference_images, run

    from rewrite.formats.editfile import encode_mask
    from utils.stylegan2 import read_checkpoint
    edit = tmp_path / 'keep.json'
    edit.write_text(json.dumps({**edit_json(), 'preserve': [[9, encode_mask(box(0, 0, 32, 32))]]}))
    common = ['--edit', edit, '--layer', LAYER, '--solver', 'original', '--niter', NITER, '--zsample', ZSAMPLE,
              '--cachedir', files['cache'], '--quiet']
    weights = {}
    for value in ('0', '50'):
        out = tmp_path / f'w{value}.pt'
        code, stdout, _ = run(capsys, 'apply', '--model', files['ckpt'], *common, '--preserve-weight', value,
                              '--out', out)
        assert code == 0
        assert ('preserve regions changed' in stdout) == (value != '0')
        weights[value] = read_checkpoint(out)['g_ema'][f'convs.{LAYER - 3}.conv.weight']
    key = f'convs.{LAYER - 3}.conv.weight'
    # weight 0 ignores the regions: the edit without them, bit for bit
    assert torch.equal(weights['0'], in_memory_edit(files).checkpoint_state_dict()[key])
    assert not torch.equal(weights['0'], weights['50'])
    # sample --edit makes the same model as apply (default weight: preserve regions used)
    code, _, _ = run(capsys, 'apply', '--model', files['ckpt'], *common, '--out', tmp_path / 'default.pt')
    assert code == 0
    edited = load(tmp_path / 'default.pt')
    assert not torch.equal(edited.checkpoint_state_dict()[key], weights['0'])
    code, _, _ = run(capsys, 'sample', '--model', files['ckpt'], *common, '--n', 2, '--batch', 2,
                     '--out', tmp_path / 's', '--quiet')
    assert code == 0
    ref = reference_images(edited, [0, 1], batch=2)
    for i in (0, 1):
        np.testing.assert_array_equal(read_png(tmp_path / 's' / f'{i:06d}.png'), ref[i])
    code, _, err = run(capsys, 'apply', '--model', files['ckpt'], *common, '--preserve-weight', '-1',
                       '--out', tmp_path / 'bad.pt')
    assert code != 0 and 'preserve-weight' in err and not (tmp_path / 'bad.pt').exists()


# ---- the notebook shows a preserve edit ---------------------------------------------------------

def test_notebook_preserve_example(tmp_path):
    import nbformat
    from test_notebook import NOTEBOOK, execute, outputs_of, text_of, with_parameters
    nb = with_parameters(nbformat.read(NOTEBOOK, as_version=4), SAMPLE_SIZE=60, NUM_CANVASES=4, CANVAS_SIZE=128,
                         MASK_DIR=str(tmp_path / 'masks'))
    cell = next(cell for cell in nb.cells if 'preserve-example' in cell.metadata.get('tags', []))
    assert cell.source.lstrip().startswith('# run_preserve_example()'), 'the example must not run by itself'
    cell.source = 'run_preserve_example()'
    execute(nb)
    text = text_of(nb)
    changes = [float(line.rsplit(' ', 1)[1]) for line in text.splitlines() if 'preserve region changed' in line]
    assert len(changes) == 2 and changes[1] < 0.5 * changes[0]
    assert len(outputs_of(nb, 'image/png')) == 3                  # original and the two weights


# ---- the bundled edits' preserve regions and the per-pixel erase score --------------------------

def test_preserve_regions_are_chosen_from_the_labels():
    from metrics.demo_regions import PreservePlan, Region, preserve_regions
    from metrics.make_demo_edits import PLAN, WINDOWS
    from utils.demo.scenes import CLASS_ID
    labels = torch.zeros(5, 16, 16, dtype=torch.int64)                  # sky
    labels[0, 4:7, 4:7], labels[0, 4:6, 10:12] = CLASS_ID['flattop'], CLASS_ID['dome']   # has a dome: excluded
    labels[1, 5:7, 5:8] = CLASS_ID['flattop']                           # 6 pixels
    labels[2, 5:8, 5:8] = CLASS_ID['flattop']                           # 9 pixels
    labels[3, 5:8, 5:8] = CLASS_ID['flattop']                           # used by the edit's own regions
    used = Region(3, np.zeros((16, 16), bool))
    regions = {'object': used, 'paste': used, 'key': [used]}
    found = preserve_regions(PreservePlan('x', PLAN['dome2spire'], keep=('flattop',), absent=('dome',)),
                             labels, regions)
    assert [r.imgnum for r in found] == [2, 1]
    assert np.array_equal(found[1].mask, (labels[1] == CLASS_ID['flattop']).numpy())
    # clear=False: every keep pixel at least 2 px away from the paste class (one-pixel dilation)
    walls = torch.full((2, 16, 16), CLASS_ID['building'])
    walls[0, 8, 8] = CLASS_ID['window']
    found = preserve_regions(PreservePlan('w', WINDOWS, keep=('building',), absent=(), clear=False), walls,
                             {'object': None, 'paste': Region(1, walls[1].numpy() > 0), 'key': []})
    assert [r.imgnum for r in found] == [0] and found[0].area == 256 - 9
    assert not found[0].mask[7:10, 7:10].any()


def test_pixel_erase_score_by_hand():
    from metrics.demo_regions import pixel_erase_scores
    from utils.demo import load_segmenter
    from utils.demo.measures import Samples
    from utils.demo.scenes import CLASS_ID
    before_labels = torch.full((2, 64, 64), CLASS_ID['building'])       # (two samples: a Frechet distance)
    before_labels[0, 10, 0:10] = CLASS_ID['window']                     # 10 window pixels
    after_labels = before_labels.clone()
    after_labels[0, 10, 6:8] = CLASS_ID['sky']                          # 6 became building, 2 sky, 2 stay window
    after_labels[0, 10, 0:6] = CLASS_ID['building']
    after_labels[0, 40, 40:43] = CLASS_ID['window']                     # 3 new window pixels
    images = torch.zeros(2, 3, 64, 64)
    scores = pixel_erase_scores(load_segmenter(), Samples(images, before_labels), Samples(images + 0.5, after_labels),
                                'window', 'building')
    assert scores['pixels_with_source'] == 10
    assert scores['effectiveness'] == pytest.approx(0.6)
    assert scores['source_pixels_after_over_before'] == pytest.approx(0.5)
    assert scores['mean_abs_change_outside'] == pytest.approx(0.5)


# ---- the widget: Add to Preserve, its tray, Preview, saved and loaded with the edit ---------------

def naive_edge(region: np.ndarray) -> np.ndarray:
    """Pixels of the boolean map [H, W] whose 3 x 3 neighbourhood (inside the frame) holds pixels both in and
    out of the region: the one-pixel band either side of its edge."""
    height, width = region.shape
    edge = np.zeros_like(region)
    for y in range(height):
        for x in range(width):
            around = region[max(y - 1, 0):y + 2, max(x - 1, 0):x + 2]
            edge[y, x] = around.any() and not around.all()
    return edge


def outline_colour(app, index: int, url: str) -> np.ndarray:
    """The mean RGB that grid canvas `index` shows (decoded from the JPEG the browser gets) on the edge band of
    the region painted as `url` (at the canvas size), after checking that away from the band it shows the sample."""
    import scipy.ndimage
    from test_rewriteapp import shown

    from rewrite.formats import editfile
    from utils import imgviz
    from utils.paintwidget import as_rgb_array
    canvas = app.canvases[index]
    edge = naive_edge(editfile.decode_mask_rgba(url)[..., 0] > 0)
    seen = shown(canvas)
    sample = as_rgb_array(imgviz.to_uint8(app.images([app.sel[index]])[0]), canvas.size).astype(np.float32)
    far = ~scipy.ndimage.binary_dilation(edge, iterations=2)                 # JPEG spreads the band's colour
    assert np.abs(seen - sample)[far].mean() < 6.0
    return seen[edge].mean(0)


def tray_tint(app, thumb, imgnum: int, url: str) -> float:
    """How much bluer (blue minus red, mean over the region's inside) a tray picture is than the sample itself."""
    import scipy.ndimage
    from PIL import Image
    from test_rewriteapp import shown

    from rewrite.formats import editfile
    from utils import imgviz
    seen = shown(thumb)
    size = seen.shape[0]
    plain = np.asarray(Image.fromarray(imgviz.to_uint8(app.images([imgnum])[0])).resize((size, size)), np.float32)
    inside = scipy.ndimage.binary_erosion(editfile.mask_from_url(url, size).numpy() > 0.5, iterations=1)
    assert inside.sum() >= 9
    blueness = [(picture[..., 2] - picture[..., 0])[inside].mean() for picture in (seen, plain)]
    return float(blueness[0] - blueness[1])


def preserve_app(tmp_path):
    """The preserve tests' rewriter and widget: a 32 px model of seed 0 (noise strengths as initialised), 6 canvases
    of 64 px, masks saved under tmp_path/masks, solves in the calling thread."""
    from test_rewriteapp import LAYER, NUM_IMAGES

    from rewrite.app.rewriteapp import GanRewriteApp
    from rewrite.core.rewriter import SeqStyleGanRewriter
    from utils.stylegan2 import SeqStyleGAN2
    from utils.zdataset import z_dataset_for_model
    torch.manual_seed(0)
    model = SeqStyleGAN2(32, style_dim=64, n_mlp=2, channels={4: 32, 8: 32, 16: 32, 32: 32}).eval()
    gw = SeqStyleGanRewriter(model, z_dataset_for_model(model, NUM_IMAGES), LAYER, progress=False)
    return gw, GanRewriteApp(gw, mask_dir=tmp_path / 'masks', size=64, num_canvases=6, niter=40, background=False)


def test_widget_preserve_tray_preview_save_and_load(tmp_path):
    import re

    from test_rewriteapp import grid_pictures, paint, prepare_edit, shown

    from rewrite.app.events import dispatch_dom_event
    from rewrite.app.preservepanel import CONTEXT_COLOR, PRESERVE_COLOR, response_level
    from utils import imgviz
    from utils.paintwidget import as_rgb_array
    gw, app = preserve_app(tmp_path)
    panel = app.preserve_panel
    prepare_edit(app)
    paint(app, 3, [(4, 4), (30, 20)])
    panel.add_btn.click()
    assert [r[0] for r in app.request['preserve']] == [app.sel[3]] and len(panel.tray.children) == 1
    # the preserve region is outlined in blue on its grid sample; the trays tint context and preserve differently
    drawn = outline_colour(app, 3, app.request['preserve'][0][1])
    assert drawn[2] > drawn[0] + 100 and drawn[2] > drawn[1] + 60
    context_tint = tray_tint(app, app.thumbs[0], *app.request['key'][0])
    preserve_tint = tray_tint(app, panel.thumbs[0], *app.request['preserve'][0])
    assert preserve_tint - context_tint > 50
    plain = grid_pictures(app)
    panel.preview_btn.click()                     # the heat maps drawn on the grid's own samples, with a legend
    assert panel.previewing and 'preview' in app.message and panel.legend.layout.display is None
    assert 'red' in panel.legend.value and 'blue' in panel.legend.value
    context_maps, keep_maps = panel.preview_maps(app.sel)
    levels = response_level(context_maps), response_level(keep_maps)
    for k, imgnum in enumerate(app.sel):          # each canvas shows its sample under both heat maps
        sample = imgviz.to_uint8(app.images([imgnum])[0]).astype(np.float64)
        heat = [np.clip(imgviz.resize_map(maps[k].float(), sample.shape[:2]).numpy() / level, 0, 1)[..., None] * 0.7
                for maps, level in zip((context_maps, keep_maps), levels, strict=True)]
        expected = sample * (1 - heat[0]) + heat[0] * np.asarray(CONTEXT_COLOR)
        expected = np.floor(np.clip(expected, 0, 255))
        expected = expected * (1 - heat[1]) + heat[1] * np.asarray(PRESERVE_COLOR)
        seen = shown(app.canvases[k])
        expected = panel.outline(np.clip(expected, 0, 255).astype(np.uint8), panel.grid_regions().get(imgnum, ()),
                                 seen.shape[0]).astype(np.float32)       # the preserve region's outline on top
        assert np.abs(seen - expected).mean() < 4.0, k        # JPEG
    assert sum(picture != before for picture, before in zip(grid_pictures(app), plain, strict=True)) >= 2
    panel.preview_btn.click()                     # a second click takes them off
    assert not panel.previewing and grid_pictures(app) == plain and panel.legend.layout.display == 'none'
    panel.preview_btn.click()
    paint(app, 5, [(4, 4), (8, 8)])               # ... and so does the next stroke
    assert not panel.previewing and grid_pictures(app)[:5] == plain[:5]
    app.clear_btn.click()
    app.execute()
    assert 'changed the model' in app.message
    # the Changes section is shown without a click: the most changed held-out samples, then the preserve example,
    # each the sample before above it after, under labelled rows and a title
    assert panel.changes_section.layout.display is None and 'Changes' in panel.changes_section.children[0].value
    rows, *cells = panel.preview_box.children
    assert [label.value for label in rows.children] == ['<b>before</b>', '<b>after</b>']
    labels = [cell.children[-1].value for cell in cells]
    assert len(labels) == panel.shown + 1 and labels[-1].startswith(f'#{app.sel[3]} preserve: ')
    assert all(re.fullmatch(r'#\d+ held-out: \d\.\d{3}', label) for label in labels[:-1])
    top, top_changes, keep, keep_changes = panel.most_changed()
    before = as_rgb_array(imgviz.to_uint8(app.images([top[0]], original=True)[0]), app.size // 2)
    after = as_rgb_array(imgviz.to_uint8(app.images([top[0]])[0]), app.size // 2)
    distance = lambda image, picture: float(np.abs(shown(image) - picture).mean())    # noqa: E731 (JPEG at 32 px)
    assert distance(cells[0].children[0], before) < distance(cells[0].children[0], after)     # top: before
    assert distance(cells[0].children[1], after) < distance(cells[0].children[1], before)     # bottom: after
    drawn = outline_colour(app, 3, app.request['preserve'][0][1])             # still outlined on the new model
    assert drawn[2] > drawn[0] + 100 and drawn[2] > drawn[1] + 60
    # Changes: before / after of the most changed held-out samples (none of the request's) and the preserve example
    top, top_changes, keep, keep_changes = panel.most_changed()
    assert len(top) == panel.shown and not set(top) & ({app.sel[1], app.sel[3]} | set(app.sel))
    assert top_changes == sorted(top_changes, reverse=True) and keep == [app.sel[3]]
    before, after = app.images([top[0]], original=True)[0], app.images([top[0]])[0]
    assert top_changes[0] == pytest.approx(float((before - after).abs().mean()))
    panel.changes_btn.click()
    assert len(panel.preview_box.children) == panel.shown + 2 and 'most changed' in app.message
    app.name_box.value = 'kept'
    app.save()
    saved = json.loads((tmp_path / 'masks' / 'kept.json').read_text())
    assert saved['preserve'] == app.request['preserve']
    # a click on the tray picture removes it; Load brings it back
    outlined = app.canvases[3].value
    dispatch_dom_event(panel.thumbs[0].events, {'event': 'click', 'target': {}})
    assert 'preserve' not in app.request and not panel.tray.children
    assert app.canvases[3].value != outlined                                 # the outline went with the region
    app.load()
    assert saved['preserve'] == app.request['preserve'] and len(panel.tray.children) == 1
    assert app.canvases[3].value == outlined                                 # and is drawn again on Load


def test_large_preserve_regions_are_an_even_subsample_of_their_pixels():
    layer, w0, bag, g = small_layer()
    context = torch.linalg.qr(torch.randn(8, 2, generator=g, dtype=torch.float64))[0].t()
    pkey = bag(torch.randn(2, 8, 5, 5, generator=g, dtype=torch.float64))
    pset = PreserveSet(pkey, torch.randn(2, 6, 5, 5, generator=g, dtype=torch.float64),
                       torch.ones(2, 5, 5, dtype=torch.float64))
    full = PreserveTerm(layer, w0, pset, context, 1.0, goal_pixels=25)
    part = PreserveTerm(layer, w0, pset, context, 1.0, goal_pixels=25, max_pixels=7)
    picked = torch.linspace(0, 49, 7).round().long()
    assert len(full.u) == 50 and len(part.u) == 7
    for name in ('design', 'u', 'image'):
        assert torch.equal(getattr(part, name), getattr(full, name)[picked])
    for name in ('base', 'val', 'offset'):
        assert torch.equal(getattr(part, name), getattr(full, name)[:, picked])


def test_preserve_goals_read_the_fast_rows_with_preserve_regions():
    from metrics.edit_methods_report import preserve_goals, preserve_report

    def row(solver, rank, weight, **scores):
        return {'solver': solver, 'rank': rank, 'preserve_weight': weight, 'seconds': 1.0, 'final_loss': 0.1,
                'preserve_change': None if not weight else 0.01, 'mean_abs_change_outside': 0.02,
                'frechet_to_unedited': 0.1, **scores}
    res = {'checkpoint': {'sha256': 'x'}, 'machine': {'torch_threads': 1},
           'settings': {'n': 4, 'niter': 3, 'preserve_weight': 0.1},
           'edits': {'dome2spire_preserve': {'file': 'f', 'layer': 7, 'rank': 3, 'preserve_regions': 16, 'rows': [
               row('fast', 1, 0.0, effectiveness=0.9, collateral=0.9),
               row('fast', 1, 0.1, effectiveness=0.56, collateral=0.14),
               row('fast', 3, 0.1, effectiveness=0.7, collateral=0.2),
               row('original', 3, 0.1, effectiveness=0.9, collateral=0.0)]},
               'erase_watermark_preserve': {'file': 'g', 'layer': 7, 'rank': 1, 'preserve_regions': 16, 'rows': [
                   row('fast', 1, 0.1, effectiveness=0.99, rate_before=0.25, rate_after=0.01)]}}}
    goals = preserve_goals(res)
    assert [g[2] for g in goals] == ['FAIL', 'pass', 'pass']          # collateral 20% > 10% at the bundled rank
    assert '70.0%, 20.0%, 0.0200' in goals[0][1]
    assert 'dome2spire_preserve' in preserve_report(res) and 'What was tried' in preserve_report(res)


def test_demo_command_shows_the_difference_preserve_regions_make(tmp_path, capsys):
    from test_cli import run
    edit = preserve_reference.DEMO_EDITS / 'dome2spire_preserve_layer7.json'
    code, out, err = run(capsys, 'demo', '--edit', edit, '--images', 2, '--stats-n', 100, '--quiet',
                         '--out', tmp_path / 'grid.png')
    assert code == 0, err
    kept = float(out.split('preserve regions changed ')[1].split()[0])
    without = float(out.split('the edit would change them ')[1].split()[0])
    assert kept < without


def test_a_second_preserve_region_on_the_same_image_joins_the_first(tmp_path):
    """Add to Preserve twice on one sample (the canvas cleared between): one region, the union of both paints."""
    from test_rewriteapp import paint

    from rewrite.formats import editfile
    from utils.paintwidget import mask_from_url
    gw, app = preserve_app(tmp_path)
    panel = app.preserve_panel
    paint(app, 3, [(6, 6), (14, 10)])
    first = app.canvases[3].mask.copy()
    panel.add_btn.click()
    paint(app, 0, [(30, 30), (34, 34)])                 # another image's region stays its own
    panel.add_btn.click()
    paint(app, 3, [(44, 44), (54, 50)])
    second = app.canvases[3].mask.copy()
    panel.add_btn.click()
    assert [r[0] for r in app.request['preserve']] == [app.sel[3], app.sel[0]]
    assert 'joined image 3' in app.message and len(panel.tray.children) == 2
    url = app.request['preserve'][0][1]
    union = np.maximum(first, second)
    assert (first > 0).sum() > 20 and (second > 0).sum() > 20 and not ((first > 0) & (second > 0)).any()
    assert np.array_equal(editfile.mask_from_url(url, 64).numpy() > 0, union > 0)    # both regions, nothing else
    assert np.abs(mask_from_url(url, 64) - union).max() <= 0.5 / 255 + 1e-6   # soft edges as painted (8-bit alpha)
