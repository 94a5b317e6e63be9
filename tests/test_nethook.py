"""nethook: cutting nested Sequentials into pieces that compose to the whole; tracing layers."""

from __future__ import annotations

import pytest
import torch

from utils.nethook import Trace, TraceDict, get_module, subsequence
from utils.stylegan2 import SeqStyleGAN2
from utils.zdataset import z_sample_for_model


@pytest.fixture(scope='module')
def model():
    torch.manual_seed(0)
    return SeqStyleGAN2(32, style_dim=32, n_mlp=2, channels=[16] * 4).eval()


@pytest.mark.parametrize('cut', ['layer4', 'layer6.sconv.mconv.dconv', 'layer5.sconv.mconv.blur', 'to_rgb2'])
def test_pieces_compose_to_the_whole(model, cut):
    z = z_sample_for_model(model, 3)
    head = subsequence(model, upto_layer=cut)
    tail = subsequence(model, first_layer=cut)
    with torch.no_grad():
        assert torch.equal(tail(head(z)), model(z))


def test_first_last_after_bounds_and_single_layer(model):
    piece = subsequence(model, first_layer='layer6.sconv.mconv.dconv', last_layer='layer6.sconv.activate')
    assert list(piece.layer6.sconv._modules) == ['mconv', 'noise', 'activate']
    assert list(piece.layer6.sconv.mconv._modules) == ['dconv']
    assert list(piece._modules) == ['layer6']
    after = subsequence(model, after_layer='layer6.sconv.mconv.adain', upto_layer='to_rgb3')
    assert list(after._modules) == ['layer6']
    assert list(after.layer6.sconv.mconv._modules) == ['dconv']
    single = subsequence(model, single_layer='layer3', share_weights=True)
    assert list(single._modules) == ['layer3'] and single.layer3 is model.layer3


def test_shared_and_copied_weights(model):
    shared = subsequence(model, first_layer='layer4', last_layer='layer4', share_weights=True)
    copied = subsequence(model, first_layer='layer4', last_layer='layer4')          # a copy by default
    w = get_module(model, 'layer4.sconv.mconv.dconv').weight
    assert shared.layer4.sconv.mconv.dconv.weight is w
    assert copied.layer4.sconv.mconv.dconv.weight is not w
    assert torch.equal(copied.layer4.sconv.mconv.dconv.weight, w)


def test_bad_names_and_bounds(model):
    with pytest.raises(ValueError, match="no layer 'layer99'"):
        subsequence(model, upto_layer='layer99')
    with pytest.raises(ValueError, match='not both'):
        subsequence(model, first_layer='layer3', after_layer='layer3')
    with pytest.raises(ValueError, match='not an nn.Sequential'):
        subsequence(model, upto_layer='to_rgb2.rgb.mconv')


def test_trace_reads_and_edits_outputs(model):
    z = z_sample_for_model(model, 2)
    with torch.no_grad():
        with Trace(model, 'layer4', retain_input=True) as tr:
            out = model(z)
        assert tr.output.fmap.shape == (2, 16, 8, 8) and 'fmap' in tr.input
        manual = subsequence(model, after_layer='layer4')(tr.output)
        assert torch.equal(manual, out)

        def zero_features(bag, name):
            return bag.updated(fmap=torch.zeros_like(bag.fmap))
        with Trace(model, 'layer7', edit_output=zero_features):
            edited = model(z)
        # with layer 7 zeroed, the final image is what layer 8 and the RGB steps make of zero features
        rest = subsequence(model, after_layer='layer7')
        with Trace(model, 'layer7') as tr:
            model(z)
        assert torch.allclose(edited, rest(tr.output.updated(fmap=torch.zeros_like(tr.output.fmap))))
        assert not torch.allclose(edited, out)
        reached, result = [], None
        with Trace(model, 'layer6', edit_output=lambda bag, name: reached.append(name) or bag):
            with TraceDict(model, ['layer3', 'layer5'], stop=True) as td:
                result = model(z)
        assert result is None and reached == []          # stopped after layer5, before layer6
        assert td['layer3'].output.fmap.shape[-1] == 8 and td['layer5'].output.fmap.shape[-1] == 16
