"""The demo-world segmenter (shipped weights) and the Frechet distance."""

import numpy as np
import pytest
import torch

from utils.demo.frechet import frechet_distance, frechet_from_stats
from utils.demo.scenedata import render_batch, scenes_as_tensor
from utils.demo.scenes import CLASSES
from utils.demo.segmenter import (
    DEFAULT_WEIGHTS,
    Segmenter,
    confusion_matrix,
    evaluate_iou,
    iou_from_confusion,
    load_segmenter,
    save_segmenter,
    vote_tops,
)


@pytest.fixture(scope='module')
def model():
    return load_segmenter()


def test_closed_form_diagonal():
    mu1, mu2 = np.array([0.0, 1.0, -2.0]), np.array([1.0, 1.0, 0.5])
    v1, v2 = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 0.25])
    expected = ((mu1 - mu2) ** 2).sum() + (v1 + v2 - 2 * np.sqrt(v1 * v2)).sum()
    got = frechet_from_stats(mu1, np.diag(v1), mu2, np.diag(v2))
    assert got == pytest.approx(expected, rel=1e-9)


def test_closed_form_shared_full_covariance():
    rng = np.random.RandomState(0)
    a = rng.randn(5, 5)
    cov = a @ a.T + np.eye(5)
    mu1, mu2 = rng.randn(5), rng.randn(5)
    got = frechet_from_stats(mu1, cov, mu2, cov)
    assert got == pytest.approx(((mu1 - mu2) ** 2).sum(), rel=1e-6)


def test_samples_match_closed_form():
    rng = np.random.RandomState(1)
    sd1, sd2 = np.array([1.0, 2.0, 0.5]), np.array([2.0, 1.0, 0.5])
    mu2 = np.array([3.0, 0.0, 0.0])
    a = rng.randn(200_000, 3) * sd1
    b = rng.randn(200_000, 3) * sd2 + mu2
    expected = 9.0 + ((sd1 - sd2) ** 2).sum()
    assert frechet_distance(a, b) == pytest.approx(expected, rel=0.02)


def test_equal_samples_and_rank_deficient_features():
    rng = np.random.RandomState(2)
    feats = rng.randn(50, 8)
    assert frechet_distance(feats, feats) == pytest.approx(0.0, abs=1e-6)
    few = rng.randn(10, 32)  # covariance of rank 9 in 32 dimensions
    d = frechet_distance(few, few + 0.01)
    assert np.isfinite(d) and isinstance(d, float)
    assert d == pytest.approx(32 * 1e-4, abs=1e-3)
    assert frechet_distance(torch.from_numpy(feats), feats) < 1e-6


def test_iou_pools_pixels_over_the_set():
    target = torch.tensor([[0, 0, 1, 1]])
    pred = torch.tensor([[0, 1, 1, 1]])
    iou = iou_from_confusion(confusion_matrix(pred, target, 3))
    assert iou.tolist() == pytest.approx([0.5, 2 / 3, 0.0])


def test_shipped_weights_load(model):
    assert DEFAULT_WEIGHTS.stat().st_size <= 5 * 2 ** 20
    assert not model.training
    assert model.config['n_classes'] == len(CLASSES)


def test_output_shapes(model):
    x = scenes_as_tensor(range(3))
    with torch.no_grad():
        assert model(x).shape == (3, len(CLASSES), 64, 64)
        feats = model.features(x)
    assert feats.shape == (3, model.feature_dim)
    assert 64 <= model.feature_dim <= 256
    labels = model.segment(x, batch_size=2)
    assert labels.shape == (3, 64, 64) and labels.dtype == torch.int64
    big = torch.nn.functional.interpolate(x, scale_factor=2)
    assert model.segment(big).shape == (3, 128, 128)


def test_save_and_reload(tmp_path):
    torch.manual_seed(0)
    net = Segmenter(width=4).eval()
    path = tmp_path / 'seg.pt'
    save_segmenter(net, path)
    again = load_segmenter(path)
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        assert torch.equal(net(x), again(x))


def test_held_out_iou(model):
    indices = range(200)  # held out: training uses indices >= 1_000_000
    images, labels = render_batch(indices)
    x = scenes_as_tensor(indices)
    iou = evaluate_iou(model, x, torch.from_numpy(labels.astype(np.int64)))
    per_class = dict(zip(CLASSES, iou.tolist(), strict=True))
    assert iou.mean() >= 0.85, per_class
    assert min(per_class.values()) >= 0.6, per_class


def _ids(*names):
    return [CLASSES.index(n) for n in names]


def test_vote_gives_each_top_its_majority_kind():
    sky, dome, spire, flat, building = _ids('sky', 'dome', 'spire', 'flattop', 'building')
    lab = torch.full((2, 8, 8), sky)
    lab[0, 1, 0:3] = torch.tensor([dome, flat, flat])       # top A: 2 flat, 1 dome
    lab[0, 2, 0:3] = building
    lab[0, 1, 5:7] = torch.tensor([spire, dome])            # top B ...
    lab[0, 2, 7] = spire                                    # ... joined diagonally: 2 spire vs 1 dome
    lab[1, 4, 4:6] = torch.tensor([spire, dome])            # a tie -> the first in TOP_KINDS (dome)
    got = vote_tops(lab)
    want = lab.clone()
    want[0, 1, 0:3] = flat
    want[0, 1, 5:7] = spire
    want[1, 4, 4:6] = dome
    assert torch.equal(got, want)
    assert got.dtype == lab.dtype and got.shape == lab.shape
    assert lab[0, 1, 0] == dome                             # the input is untouched
    assert torch.equal(vote_tops(lab[0]), want[0])          # a single [H, W] map


def test_vote_leaves_rendered_labels_unchanged():
    _, labels = render_batch(range(200))
    truth = torch.from_numpy(labels.astype(np.int64))
    assert torch.equal(vote_tops(truth), truth)


def test_segment_with_vote_equals_vote_of_segment(model):
    x = scenes_as_tensor(range(8))
    assert torch.equal(model.segment(x, vote=True), vote_tops(model.segment(x)))

