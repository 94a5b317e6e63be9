"""SeqStyleGAN2: checkpoint layout, seq vs fused, truncation, noise, round trips, clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import REFERENCE, layout, need_shared

from utils.stylegan2 import (
    CheckpointMismatchError,
    SeqStyleGAN2,
    load_seq_stylegan,
    model_from_checkpoint,
    read_checkpoint,
    save_checkpoint,
)
from utils.stylegan2.checkpoint import infer_config
from utils.zdataset import z_dataset_for_model, z_sample_for_model


def build(ckpt, **kw):
    return model_from_checkpoint(ckpt, **kw)


def draw(model, z):
    with torch.no_grad():
        return model(z)


@pytest.mark.parametrize('size', [64, 256])
def test_checkpoint_layout_matches_shared_file(size):
    model = SeqStyleGAN2(size, channel_multiplier=1 if size == 64 else 2)
    ours = {k: list(v.shape) for k, v in model.checkpoint_state_dict().items()}
    assert ours == layout(size)


def test_layout_1024_matches_shared_file():
    model = SeqStyleGAN2(1024, channel_multiplier=2)
    assert {k: list(v.shape) for k, v in model.checkpoint_state_dict().items()} == layout(1024)


@pytest.mark.parametrize('fixture', ['ckpt64', pytest.param('ckpt256', marks=pytest.mark.slow)])
def test_seq_equals_fused(fixture, request):
    ckpt = request.getfixturevalue(fixture)
    z = z_sample_for_model(SeqStyleGAN2(8, style_dim=512), 3)
    for t in (1.0, 0.6):
        a = draw(build(ckpt, mconv='seq', truncation=t), z)
        b = draw(build(ckpt, mconv='fused', truncation=t), z)
        assert a.shape == (3, 3, infer_config(ckpt['g_ema'])['size'], infer_config(ckpt['g_ema'])['size'])
        assert (a - b).abs().max() <= 1e-4


def test_infer_config_reads_architecture(ckpt256):
    cfg = infer_config(ckpt256['g_ema'])
    assert cfg['size'] == 256 and cfg['style_dim'] == 512 and cfg['n_mlp'] == 8
    assert cfg['channels'] == {4: 512, 8: 512, 16: 512, 32: 512, 64: 512, 128: 256, 256: 128}


@pytest.mark.slow
def test_matches_reference_port_images():
    """Images drawn by the widely used PyTorch port from the oracle's checkpoint."""
    import subprocess
    import sys
    import tempfile
    need_shared()
    ref = np.load(REFERENCE / 'oracle' / 'reference_images_64.npz')
    with tempfile.TemporaryDirectory() as tmp:
        path = f'{tmp}/ck.pt'
        subprocess.run([sys.executable, str(REFERENCE / 'oracle' / 'make_ckpt.py'), '64', path],
                       check=True, capture_output=True)
        for t in (1.0, 0.5):
            for mconv in ('seq', 'fused'):
                model = load_seq_stylegan(path, truncation=t, mconv=mconv)
                z = z_dataset_for_model(model, 1000).tensors[0][ref['s64_idx']]
                img = draw(model, z).numpy()
                expected = ref[f's64_t{t}']
                assert np.abs(img - expected).max() <= 1e-4 * max(1.0, np.abs(expected).max())


def test_truncation_pulls_toward_latent_avg(ckpt64):
    z = z_sample_for_model(SeqStyleGAN2(8), 4)
    full = build(ckpt64, truncation=1.0)
    zero = build(ckpt64, truncation=0.0)
    imgs0 = draw(zero, z)
    assert (imgs0 - imgs0[:1]).abs().max() < 1e-5          # every z -> the latent_avg image
    assert (draw(full, z) - imgs0).abs().max() > 0.1
    # w' = avg + t (w - avg), checked on the latents step
    half = build(ckpt64, truncation=0.5)
    from utils.stylegan2 import DataBag
    with torch.no_grad():
        w = full.style(DataBag(latent=z)).latent
        got = half.latents(DataBag(latent=w)).latent[:, 3]
    avg = ckpt64['latent_avg']
    assert torch.allclose(got, avg + 0.5 * (w - avg), atol=1e-4)


def test_const_noise_makes_image_independent_of_batch(ckpt64):
    model = build(ckpt64)
    z = z_sample_for_model(model, 5)
    alone = draw(model, z[3:4])
    together = draw(model, z)[3:4]
    assert (alone - together).abs().max() < 1e-4
    model.noise_mode = 'random'
    torch.manual_seed(0)
    assert (draw(model, z[3:4]) - alone).abs().max() > 1e-3   # noise strengths are non-zero
    model.noise_mode = 'zero'
    assert (draw(model, z[3:4]) - alone).abs().max() > 1e-3


def test_file_round_trip_gives_identical_images(ckpt64, tmp_path):
    model = build(ckpt64, truncation=0.7)
    z = z_sample_for_model(model, 3)
    save_checkpoint(model, tmp_path / 'g.pt')
    raw = torch.load(tmp_path / 'g.pt', weights_only=True)
    assert set(raw['g_ema']) == set(ckpt64['g_ema'])
    again = load_seq_stylegan(tmp_path / 'g.pt', truncation=0.7)
    assert torch.equal(draw(model, z), draw(again, z))
    # the original release's call style
    sd = torch.load(tmp_path / 'g.pt', weights_only=True)
    third = SeqStyleGAN2(64, style_dim=512, n_mlp=8, channel_multiplier=1, truncation=0.7, mconv='seq')
    third.load_state_dict(sd['g_ema'], latent_avg=sd['latent_avg'])
    assert torch.equal(draw(model, z), draw(third, z))


def _bits(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize('damage, words', [
    (lambda sd: sd.pop('convs.3.conv.weight'), ['missing', 'convs.3.conv.weight']),
    (lambda sd: sd.__setitem__('convs.99.conv.weight', torch.zeros(1)), ['unexpected', 'convs.99.conv.weight']),
    (lambda sd: sd.__setitem__('to_rgbs.1.conv.weight', torch.zeros(1, 3, 7, 1, 1)),
     ['mis-shaped', 'to_rgbs.1.conv.weight', '(1, 3, 7, 1, 1)']),
    (lambda sd: sd['style.2.bias'].__setitem__(0, float('nan')), ['NaN', 'style.2.bias']),
])
def test_bad_checkpoint_gives_clear_error_and_unchanged_model(ckpt64, damage, words):
    model = build(ckpt64)
    before = _bits(model)
    sd = {k: v.clone() for k, v in ckpt64['g_ema'].items()}
    damage(sd)
    with pytest.raises(CheckpointMismatchError) as err:
        model.load_state_dict(sd, latent_avg=ckpt64['latent_avg'])
    for w in words:
        assert w in str(err.value)
    after = _bits(model)
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_wrong_size_checkpoint_is_refused(ckpt64):
    model = SeqStyleGAN2(256)
    before = _bits(model)
    with pytest.raises(CheckpointMismatchError, match='missing keys: .*convs.8'):
        model.load_state_dict(ckpt64['g_ema'], latent_avg=ckpt64['latent_avg'])
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


def test_read_checkpoint_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match='no checkpoint file'):
        read_checkpoint(tmp_path / 'nope.pt')
    (tmp_path / 'junk.pt').write_bytes(b'not a checkpoint')
    with pytest.raises(ValueError, match='not a readable PyTorch checkpoint'):
        read_checkpoint(tmp_path / 'junk.pt')
    torch.save({'d': {}}, tmp_path / 'nog.pt')
    with pytest.raises(ValueError, match='no generator weights'):
        read_checkpoint(tmp_path / 'nog.pt')


def test_load_by_release_name_offline_gives_clear_error(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.hub, 'get_dir', lambda: str(tmp_path))

    def offline(*a, **k):
        raise OSError('network is unreachable')
    monkeypatch.setattr(torch.hub, 'download_url_to_file', offline)
    with pytest.raises(RuntimeError, match=r'stylegan2_church-e8ca9fd0\.pt.*checkpoints'):
        load_seq_stylegan('church')


def test_release_name_uses_cached_file(ckpt64, monkeypatch, tmp_path):
    monkeypatch.setattr(torch.hub, 'get_dir', lambda: str(tmp_path))
    (tmp_path / 'checkpoints').mkdir()
    torch.save(ckpt64, tmp_path / 'checkpoints' / 'stylegan2_horse-499b5380.pt')
    model = load_seq_stylegan('horse')
    assert model.size == 64


def test_z_dataset_matches_numpy_formula():
    model = SeqStyleGAN2(8, style_dim=512)
    zds = z_dataset_for_model(model, 1000)
    expected = np.random.RandomState(1).standard_normal(1000 * 512).reshape(1000, 512)[960]
    assert np.allclose(zds[960][0].numpy(), expected.astype(np.float32), atol=0)
    assert len(zds) == 1000


def test_layer_names_follow_the_original():
    model = SeqStyleGAN2(256, channel_multiplier=2)
    assert model.layer_numbers == list(range(2, 15))
    assert model.layer_resolution(8) == 32 and model.layer_resolution(10) == 64
    assert model.layer8.sconv.mconv.dconv.weight.shape == (1, 512, 512, 3, 3)
    assert model.layer9.sconv.mconv.dconv.upsample and not model.layer10.sconv.mconv.dconv.upsample
    with pytest.raises(ValueError, match='layers 2..14'):
        model.check_layer(15)
