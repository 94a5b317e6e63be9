"""NVlabs StyleGAN2-ADA .pkl files: read as data (nothing they carry runs), images match NVlabs' own."""

from __future__ import annotations

import os
import pickle
import pickletools

import numpy as np
import pytest
import torch
from conftest import REFERENCE, need_shared

from utils.stylegan2 import load_seq_stylegan, save_checkpoint
from utils.stylegan2.ada_pickle import AdaPickleError, read_ada_checkpoint
from utils.zdataset import z_dataset_for_model

PKL = REFERENCE / 'oracle' / 'ada64.pkl'


def _ada_pkl():
    need_shared(PKL)
    return PKL


def _draw(model, idx):
    z = z_dataset_for_model(model, 1000).tensors[0][idx]
    with torch.no_grad():
        return model(z).numpy()


@pytest.mark.filterwarnings('ignore:G_ema computes')
@pytest.mark.parametrize('mconv', ['seq', 'fused'])
def test_images_match_nvlabs(mconv, tmp_path):
    ref = np.load(need_shared(REFERENCE / 'oracle' / 'ada64_images.npz'))
    for t in (1.0, 0.5):
        model = load_seq_stylegan(_ada_pkl(), truncation=t, mconv=mconv)
        expected = ref[f't{t}']
        err = np.abs(_draw(model, ref['idx']) - expected).max() / np.abs(expected).max()
        assert err <= 1e-4
    np.testing.assert_allclose(model.latents.latent_avg.numpy(), ref['w_avg'], rtol=0, atol=0)
    assert model.conv_clamp == 256.0
    # convert then reload: the same images (conv_clamp travels with the .pt)
    from rewrite.cli.entry import main
    out = tmp_path / 'ada64.pt'
    assert main(['convert', str(_ada_pkl()), str(out)]) == 0
    again = load_seq_stylegan(out, truncation=0.5, mconv=mconv)
    assert again.conv_clamp == 256.0
    err = np.abs(_draw(again, ref['idx']) - ref['t0.5']).max() / np.abs(ref['t0.5']).max()
    assert err <= 1e-4


@pytest.mark.filterwarnings('ignore:G_ema computes')
def test_conv_clamp_matters_and_fp16_warned():
    with pytest.warns(UserWarning, match='float16'):
        ckpt = read_ada_checkpoint(_ada_pkl())
    assert ckpt['conv_clamp'] == 256.0
    ref = np.load(REFERENCE / 'oracle' / 'ada64_images.npz')
    from utils.stylegan2 import model_from_checkpoint
    clamped = model_from_checkpoint({**ckpt, 'conv_clamp': 0.5})
    unclamped = model_from_checkpoint({**ckpt, 'conv_clamp': None})
    seen = []
    clamped.layer4.sconv.activate.register_forward_hook(lambda m, i, o: seen.append(o.fmap.abs().max()))
    unclamped.layer4.sconv.activate.register_forward_hook(lambda m, i, o: seen.append(o.fmap.abs().max()))
    a, b = _draw(clamped, ref['idx']), _draw(unclamped, ref['idx'])
    assert seen[0] <= 0.5 < seen[1] and np.abs(a - b).max() > 1e-2


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f'touch {self.marker}',))


def test_reduce_payload_refused(tmp_path):
    marker = tmp_path / 'ran'
    path = tmp_path / 'evil.pkl'
    path.write_bytes(pickle.dumps({'G_ema': _Payload(marker)}))
    with pytest.raises(AdaPickleError, match=r'refused to load the global (posix|os|nt)\.system'):
        load_seq_stylegan(path)
    assert not marker.exists()


def _persistent_pickle(module_src: str) -> bytes:
    """A pickle shaped like NVlabs' persistence record (G_ema -> _reconstruct_persistent_obj(meta)), built
    from opcodes without NVlabs' code."""
    meta = dict(type='class', version=6, module_src=module_src, class_name='Generator',
                state={'_parameters': {}, '_buffers': {}, '_modules': {}})
    body = pickle.dumps(meta, protocol=2)[2:-1]
    key = pickle.dumps('G_ema', protocol=2)[2:-1]
    return (b'\x80\x02}' + key + b'ctorch_utils.persistence\n_reconstruct_persistent_obj\n' + body
            + b'\x85R' + b's.')


def test_module_src_never_runs(tmp_path):
    marker = tmp_path / 'ran_src'
    path = tmp_path / 'src.pkl'
    path.write_bytes(_persistent_pickle(f'open({str(marker)!r}, "w").write("x")\n'))
    with pytest.raises(AdaPickleError, match='no synthesis network'):
        load_seq_stylegan(path)
    assert not marker.exists()


def test_tampered_storage_blob_refused(tmp_path):
    marker = tmp_path / 'ran_blob'
    data = _ada_pkl().read_bytes()
    inner = pickle.dumps(_Payload(marker), protocol=2)
    # replace the first tensor storage blob (a legacy torch.save stream) by one carrying a payload
    blob = next(arg for op, arg, pos in pickletools.genops(data) if op.name == 'BINBYTES' and len(arg) > 1000)
    evil = inner.ljust(len(blob), b'.')
    path = tmp_path / 'blob.pkl'
    path.write_bytes(data.replace(blob, evil, 1))
    with pytest.raises(AdaPickleError, match=r'storage blob names the global (posix|os|nt)\.system|weights_only'):
        load_seq_stylegan(path)
    assert not marker.exists()


def test_truncated_and_generatorless(tmp_path):
    path = tmp_path / 'cut.pkl'
    path.write_bytes(_ada_pkl().read_bytes()[:100000])
    with pytest.raises(AdaPickleError, match='truncated or corrupt'):
        load_seq_stylegan(path)
    path = tmp_path / 'none.pkl'
    path.write_bytes(pickle.dumps({'D': None, 'training_set_kwargs': {}}))
    with pytest.raises(AdaPickleError, match='has no generator'):
        load_seq_stylegan(path)
    path = tmp_path / 'tf.pkl'
    path.write_bytes(b'\x80\x02cdnnlib.tflib.network\nNetwork\nq\x00.')
    with pytest.raises(AdaPickleError, match='TensorFlow-era.*legacy.py'):
        load_seq_stylegan(path)


def test_edit_applies_to_converted_model(tmp_path):
    import json

    from rewrite.core.rewriter import SeqStyleGanRewriter
    with pytest.warns(UserWarning):
        model = load_seq_stylegan(_ada_pkl(), truncation=0.5)
    gw = SeqStyleGanRewriter(model, z_dataset_for_model(model, 1000), layernum=6, cachedir=tmp_path / 'c',
                             progress=False)
    edit = json.loads((REFERENCE / 'original-edits' / 'church' / 'dome2spire.json').read_text())
    w0 = gw.target_weights().detach().clone()
    gw.apply_edit(edit, rank=1, solver='fast')
    assert not torch.equal(gw.target_weights(), w0)
    gw.revert()
    gw.apply_edit(edit, rank=1, solver='original', niter=5)
    save_checkpoint(gw.model, tmp_path / 'edited.pt')
    again = load_seq_stylegan(tmp_path / 'edited.pt', truncation=0.5)
    assert again.conv_clamp == 256.0
    z = torch.randn(2, 512)
    with torch.no_grad():
        assert torch.allclose(again(z), gw.model(z), atol=1e-5)


def _edited_pickle(tmp_path, edit) -> object:
    """ada64.pkl with one init setting of G_ema changed (the file's records, rewritten as data)."""
    from utils.stylegan2.ada_pickle import read_ada_pickle
    data = read_ada_pickle(_ada_pkl())
    edit(data['G_ema'])
    return data


def test_conditional_and_stylegan3_refused(tmp_path):
    from utils.stylegan2.ada_pickle import ada_checkpoint

    def conditional(g):
        g.state['_init_kwargs'] = {**g.init_kwargs, 'c_dim': 10}

    def stylegan3(g):
        g.child('synthesis').state['_modules'] = {'input': g.child('synthesis').child('b4')}

    with pytest.raises(AdaPickleError, match=r'class-conditional generator \(c_dim=10\)'):
        ada_checkpoint(_edited_pickle(tmp_path, conditional))
    with pytest.raises(AdaPickleError, match='StyleGAN3'):
        ada_checkpoint(_edited_pickle(tmp_path, stylegan3))
