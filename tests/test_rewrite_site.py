"""The rewrite site seam (utils/generators/site.py): a second, deliberately different generator family, a
tiny Progressive-GAN-like Sequential of plain convs (no mapping network, no modulation, no demodulation,
no noise, nearest upsampling, pixel norm), which the rewriter and both solvers edit through its
`rewrite_site` alone; and StyleGAN2's site against the module paths it stands for."""

from __future__ import annotations

import json
import math
from collections import OrderedDict

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from rewrite.core.rewriter import RewriteError, SeqStyleGanRewriter
from rewrite.core.solvers.problem import projected_conv
from utils.masks import encode_mask
from utils.stylegan2 import DataBag, RewriteSite, SeqStyleGAN2, ops, rewrite_site
from utils.zdataset import z_dataset_for_model

# ---- the second family ------------------------------------------------------------------------------------


class LatentToMap(nn.Module):
    """z [B, D] -> bag with fmap [B, C, 4, 4] (pixel-normalised z through a dense layer, as ProGAN's first block)."""

    def __init__(self, z_dim: int, channels: int):
        super().__init__()
        self.dense = nn.Linear(z_dim, channels * 16)
        self.channels = channels

    def forward(self, z: torch.Tensor) -> DataBag:
        z = z * torch.rsqrt(z.pow(2).mean(1, keepdim=True) + 1e-8)
        return DataBag(fmap=self.dense(z).reshape(len(z), self.channels, 4, 4))


class EqualConv(nn.Module):
    """Plain 3x3 conv with the equalized learning rate; weight stored [1, O, I, 3, 3] (the site's layout)."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(1, c_out, c_in, 3, 3))
        self.scale = 1 / math.sqrt(c_in * 9)

    def forward(self, d: DataBag) -> DataBag:
        return d.updated(fmap=ops.plain_conv(d.fmap, self.weight[0], self.scale))


class BiasAct(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.bias = nn.Parameter(0.1 * torch.randn(channels))

    def forward(self, d: DataBag) -> DataBag:
        return d.updated(fmap=ops.fused_leaky_relu(d.fmap, self.bias))


class Step(nn.Module):
    """A bag -> bag function (upsampling, pixel norm)."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, d: DataBag) -> DataBag:
        return d.updated(fmap=self.fn(d.fmap))


class ToImage(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.rgb = nn.Conv2d(channels, 3, 1)

    def forward(self, d: DataBag) -> torch.Tensor:
        return torch.tanh(self.rgb(d.fmap))


def pixel_norm(x: torch.Tensor) -> torch.Tensor:
    return x * torch.rsqrt(x.pow(2).mean(1, keepdim=True) + 1e-8)


class TinyPGAN(nn.Sequential):
    """4 -> 8 -> 16 px: block1 (4x4), up, block2 (8x8), up, block3 (16x16); block N = conv -> act -> norm."""

    def __init__(self, z_dim: int = 16, channels: int = 12):
        torch.manual_seed(0)
        steps = [('input', LatentToMap(z_dim, channels))]
        for n in (1, 2, 3):
            if n > 1:
                steps.append((f'up{n}', Step(lambda x: F.interpolate(x, scale_factor=2, mode='nearest'))))
            steps.append((f'block{n}', nn.Sequential(OrderedDict([
                ('conv', EqualConv(channels, channels)), ('act', BiasAct(channels)), ('norm', Step(pixel_norm))]))))
        steps.append(('output', ToImage(channels)))
        super().__init__(OrderedDict(steps))
        self.z_dim = z_dim
        self.size = 16                                  # the image size (the sample folders check it)

    def rewrite_site(self, layernum: int) -> RewriteSite:
        if layernum not in (1, 2, 3):
            raise ValueError(f'layer {layernum} does not exist: this generator has layers 1..3')
        return RewriteSite(self, layernum, f'block{layernum}.conv', f'block{layernum}.act')


def square(res: int, top: int, left: int, size: int) -> str:
    mask = np.zeros((res, res), np.float32)
    mask[top:top + size, left:left + size] = 1
    return encode_mask(mask)


@pytest.fixture(scope='module')
def pgan():
    return TinyPGAN().eval()


@pytest.fixture(scope='module')
def request_8px():
    return {'object': [0, square(8, 1, 1, 3)], 'paste': [1, square(8, 4, 4, 3)],
            'key': [[1, square(8, 4, 4, 3)], [2, square(8, 2, 3, 3)]]}


def test_site_of_the_plain_conv_family(pgan):
    site = rewrite_site(pgan, 2)
    assert (site.conv, site.target_end, site.weight_name) == ('block2.conv', 'block2.act', 'block2.conv.weight')
    assert site.key_shape == (12, 8, 8) and site.value_shape == (12, 8, 8) and site.mask_resolution == 8
    assert (site.in_channels, site.out_channels, site.noise_index) == (12, 12, None)
    assert site.styles(torch.zeros(2, 16)) is None
    with pytest.raises(ValueError, match='layer 7 does not exist'):
        rewrite_site(pgan, 7)
    with pytest.raises(ValueError, match='has no rewrite_site'):
        rewrite_site(nn.Sequential(nn.Linear(2, 2)), 1)


@pytest.mark.parametrize('solver', ['fast', 'original'])
def test_rewriter_edits_the_plain_conv_family(pgan, request_8px, solver):
    zds = z_dataset_for_model(pgan, 20)
    gw = SeqStyleGanRewriter(pgan, zds, layernum=2, progress=False, batch_size=4)
    assert gw.k_shape == (1, 12, 8, 8) and gw.x_shape == (1, 3, 16, 16)
    before = gw.sample_image_from_latent(gw.get_zs(range(6)))
    w0 = gw.target_weights().detach().clone()
    record = gw.apply_edit(request_8px, rank=2, solver=solver, niter=300, lr=0.05)
    assert np.isfinite(record.final_loss) and record.final_loss < 0.8 * record.initial_loss
    change = gw.target_weights().detach() - w0
    context = record.context.to(change)
    assert change.norm() > 0
    # the change lies in the span of the context rows (W' = W + Lambda D), to float32 rounding
    assert (change - projected_conv(change, context)).norm() <= 1e-5 * change.norm()
    after = gw.sample_image_from_latent(gw.get_zs(range(6)))
    assert (after - before).abs().max() > 1e-4
    gw.undo()
    assert torch.equal(gw.target_weights().detach(), w0)
    assert torch.equal(gw.sample_image_from_latent(gw.get_zs(range(6))), before)


def test_fast_solver_model_of_the_plain_conv_matches_the_network(pgan, request_8px):
    """The fast solver's explicit loss (from the site's TargetLayer: no demodulation, no noise) is the
    network's own: its best loss equals the final loss measured by a forward of the edited layer."""
    gw = SeqStyleGanRewriter(pgan, z_dataset_for_model(pgan, 20), layernum=3, progress=False)
    record = gw.apply_edit({'object': [3, square(16, 2, 2, 5)], 'paste': [4, square(16, 9, 8, 5)]},
                           rank=1, solver='fast')
    assert record.final_loss == pytest.approx(min(record.losses), rel=1e-4, abs=1e-6)


def test_unknown_family_is_a_clear_rewrite_error():
    with pytest.raises(RewriteError, match='does not support rewriting'):
        SeqStyleGanRewriter(nn.Sequential(nn.Linear(4, 4)), z_dataset_for_model(TinyPGAN(z_dim=4), 4), 1)


# ---- StyleGAN2's site stands for the module paths it replaced --------------------------------------------

def test_stylegan2_site_names_and_shapes():
    model = SeqStyleGAN2(32, style_dim=16, n_mlp=2, channels=[8, 8, 8, 8])
    for layernum in model.layer_numbers:
        site = model.rewrite_site(layernum)
        conv = model.get_submodule(f'layer{layernum}.sconv.mconv.dconv')
        assert site.conv_module() is conv and site.target_end == f'layer{layernum}.sconv.activate'
        res = model.layer_resolution(layernum)
        assert site.value_shape == (8, res, res)
        assert site.key_shape == (8, res // 2 if conv.upsample else res, res // 2 if conv.upsample else res)
        assert site.mask_resolution == min(site.key_shape[1], site.value_shape[1])
        assert site.noise_index == model.get_submodule(f'layer{layernum}.sconv.noise').index
    with pytest.raises(ValueError, match="mconv='seq'"):
        SeqStyleGAN2(32, style_dim=16, n_mlp=2, channels=[8, 8, 8, 8], mconv='fused').rewrite_site(4)


def test_image_with_values_renders_the_rest_of_the_generator(pgan):
    gw = SeqStyleGanRewriter(pgan, z_dataset_for_model(pgan, 8), layernum=2, progress=False)
    _, _, values, _ = gw.object_from_selection(5, square(8, 0, 0, 8))
    z = gw.get_z(5)
    assert torch.equal(gw.image_with_values(5, values.fmap), gw.sample_image_from_latent(z)[0])
    zeroed = gw.image_with_values(5, torch.zeros_like(values.fmap))
    with torch.no_grad():
        expected = pgan.output(pgan.block3(pgan.up3(DataBag(fmap=pixel_norm(torch.zeros(1, 12, 8, 8))))))[0]
    assert torch.allclose(zeroed, expected, atol=1e-6)


def test_widget_edits_and_exports_the_plain_conv_family(pgan, request_8px, tmp_path, monkeypatch):
    """Execute rewrites the tiny family's layer; Export writes a checkpoint of its family that reloads
    (through the family registry) with the rewritten weights."""
    from rewrite.app.rewriteapp import GanRewriteApp
    from utils import generators
    monkeypatch.setattr(generators, 'FAMILIES', {})
    generators.register_family('tiny-pgan', lambda ckpt, truncation: tiny_from_state(ckpt['state_dict']), TinyPGAN)

    gw = SeqStyleGanRewriter(pgan, z_dataset_for_model(pgan, 12), layernum=2, progress=False)
    app = GanRewriteApp(gw, mask_dir=tmp_path, size=32, num_canvases=4, niter=40, background=False)
    before = [canvas.value for canvas in app.canvases]
    app.set_request(request_8px)
    app.execute_btn.click()
    assert app.message.startswith('changed the model'), app.message
    assert len(gw.history) == 1 and gw.history[0][0].final_loss < gw.history[0][0].initial_loss
    assert any(a != b for a, b in zip(before, [canvas.value for canvas in app.canvases], strict=True))
    app.export_box.value = str(tmp_path / 'exported.pt')
    app.export()
    assert app.message.startswith('exported the rewritten generator'), app.message
    reloaded = generators.load_generator(tmp_path / 'exported.pt', truncation=0.5)
    assert isinstance(reloaded, TinyPGAN)
    want = gw.model.state_dict()
    assert all(torch.equal(v, want[k]) for k, v in reloaded.state_dict().items())


def test_advisor_sweeps_the_plain_conv_family(pgan):
    from rewrite.analysis.advisor import advise

    request = {'object': [0, square(16, 2, 2, 6)], 'paste': [1, square(16, 8, 8, 6)]}
    before = {k: v.clone() for k, v in pgan.state_dict().items()}
    advice = advise(pgan, z_dataset_for_model(pgan, 40), request, layers=[2, 3], ranks=(1, 2), progress=False,
                    heldout=8)
    assert sorted((c.layer, c.rank) for c in advice.table) == [(2, 1), (2, 2), (3, 1), (3, 2)]
    assert advice.best is advice.table[0] and all(0 < c.fit <= 1 for c in advice.table)
    assert all(torch.equal(v, before[k]) for k, v in pgan.state_dict().items())
    with pytest.raises(RewriteError, match='layer 9 does not exist'):
        advise(pgan, z_dataset_for_model(pgan, 40), request, layers=[9], progress=False)


def test_the_command_line_applies_and_samples_the_plain_conv_family(pgan, request_8px, tmp_path, monkeypatch):
    """`python -m rewrite apply / sample` on a checkpoint of the tiny family: it names its family, the test
    registers how to build it, and the CLI edits it as the API does (weights bit-identical)."""
    from rewrite.cli.entry import main
    from utils import generators
    monkeypatch.setattr(generators, 'FAMILIES', {})
    generators.register_family('tiny-pgan', lambda ckpt, truncation: tiny_from_state(ckpt['state_dict']), TinyPGAN)
    ckpt, edit, out = tmp_path / 'pgan.pt', tmp_path / 'edit.json', tmp_path / 'edited.pt'
    generators.save_generator(pgan, ckpt)
    edit.write_text(json.dumps(request_8px))
    threads = ['--threads', str(torch.get_num_threads())]
    assert main(['apply', '--model', str(ckpt), '--edit', str(edit), '--layer', '2', '--rank', '2', '--zsample', '20',
                 '--cachedir', str(tmp_path / 'cache'), '--out', str(out), '--quiet', *threads]) == 0
    edited = generators.load_generator(out, truncation=0.5)
    assert isinstance(edited, TinyPGAN) and torch.load(out, weights_only=True)['family'] == 'tiny-pgan'
    gw = SeqStyleGanRewriter(pgan, z_dataset_for_model(pgan, 20), layernum=2, progress=False)
    gw.apply_request(request_8px, rank=2)
    got, want = edited.state_dict(), gw.model.state_dict()
    assert not torch.equal(got['block2.conv.weight'], pgan.state_dict()['block2.conv.weight'])
    assert all(torch.equal(got[k], want[k]) for k in want)
    samples = tmp_path / 'samples'
    assert main(['sample', '--model', str(out), '--n', '3', '--out', str(samples), '--quiet', *threads]) == 0
    pngs = sorted(samples.glob('0*.png'))
    assert len(pngs) == 3 and Image.open(pngs[0]).size == (16, 16)
    torch.save({'family': 'nope', 'state_dict': {}}, tmp_path / 'odd.pt')
    with pytest.raises(ValueError, match="family 'nope' is not registered"):
        generators.load_generator(tmp_path / 'odd.pt', truncation=0.5)


def tiny_from_state(state: dict) -> TinyPGAN:
    model = TinyPGAN()
    model.load_state_dict(state)
    return model.eval()
