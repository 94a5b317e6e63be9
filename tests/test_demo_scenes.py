"""The demo world's procedural church renderer."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from utils.demo.scenedata import SceneDataset, presence, render_batch, scenes_as_tensor
from utils.demo.scenes import CLASSES, N_CLASSES, TOP_KINDS, WATERMARK_ALPHA, WATERMARK_RGB, render_scene

ID = {name: i for i, name in enumerate(CLASSES)}
N_RATE = 400
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope='module')
def many():
    """Scenes 0..399: images [N,64,64,3], labels [N,64,64], metas."""
    scenes = [render_scene(i) for i in range(N_RATE)]
    return (np.stack([s.image for s in scenes]),
            np.stack([s.labels for s in scenes]), [s.meta for s in scenes])


def test_classes():
    assert CLASSES == ('sky', 'ground', 'building', 'window', 'door', 'dome',
                       'spire', 'flattop', 'tree', 'watermark')
    assert N_CLASSES == 10


def test_same_index_same_scene_regardless_of_global_rng():
    np.random.seed(1)
    a = render_scene(12345)
    np.random.seed(2)
    np.random.rand(7)
    b = render_scene(12345)
    assert np.array_equal(a.image, b.image)
    assert np.array_equal(a.labels, b.labels)
    assert a.meta == b.meta


def numpy_dispatched_features() -> list[str]:
    """The SIMD levels this numpy chooses between at run time (the baseline is always on)."""
    try:
        from numpy._core._multiarray_umath import __cpu_dispatch__
    except ImportError:                                   # numpy < 2
        from numpy.core._multiarray_umath import __cpu_dispatch__
    return list(__cpu_dispatch__)


def test_scenes_do_not_depend_on_the_cpu_kernels(tmp_path):
    """The GAN and the segmenter were trained on these pixels: the renderer (float64 geometry, then uint8)
    must give the same bytes whatever SIMD kernels numpy and MKL pick. Rendered here and in a child whose
    numpy runs its baseline loops only (no AVX2 / AVX-512 dispatch) and MKL SSE4.2 only, compared in this run."""
    out = tmp_path / 'scenes.npz'
    code = ('import numpy as np, sys; from utils.demo.scenes import render_scene; '
            's = [render_scene(i) for i in range(4)]; '
            'np.savez(sys.argv[1], image=np.stack([x.image for x in s]), labels=np.stack([x.labels for x in s]))')
    env = os.environ | {'PYTHONPATH': str(ROOT), 'MKL_ENABLE_INSTRUCTIONS': 'SSE4_2', 'OMP_NUM_THREADS': '1',
                        'NPY_DISABLE_CPU_FEATURES': ' '.join(numpy_dispatched_features())}
    proc = subprocess.run([sys.executable, '-c', code, str(out)], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    child = np.load(out)
    scenes = [render_scene(i) for i in range(4)]
    assert np.array_equal(child['image'], np.stack([s.image for s in scenes]))
    assert np.array_equal(child['labels'], np.stack([s.labels for s in scenes]))


def test_different_indices_differ():
    images, labels = render_batch(range(20))
    flat = images.reshape(20, -1)
    assert len({row.tobytes() for row in flat}) == 20
    assert len({row.tobytes() for row in labels.reshape(20, -1)}) > 15


@pytest.mark.parametrize('size', [32, 64, 128])
def test_shapes_and_label_range(size):
    scene = render_scene(3, size)
    assert scene.image.shape == (size, size, 3)
    assert scene.image.dtype == np.uint8
    assert scene.labels.shape == (size, size)
    assert scene.labels.dtype == np.uint8
    assert scene.labels.max() < N_CLASSES


def test_native_sizes_agree():
    small, big = render_scene(8, 64), render_scene(8, 128)
    # Pixel (i, j) at 64 px has its centre on the corner shared by four
    # 128 px pixels; most of them carry the same label.
    agree = (big.labels[::2, ::2] == small.labels).mean()
    assert agree > 0.9
    assert set(small.meta['top_kinds']) == set(big.meta['top_kinds'])


def test_every_class_at_intended_rates(many):
    _, labels, metas = many
    present = presence(labels, min_pixels=1)
    rate = dict(zip(CLASSES, present.mean(axis=0), strict=True))
    for name in ('sky', 'ground', 'building', 'window', 'door'):
        assert rate[name] == 1.0, name
    assert 0.15 <= rate['watermark'] <= 0.35
    for kind in TOP_KINDS:
        assert 0.25 <= rate[kind] <= 0.55, (kind, rate[kind])
    assert 0.15 <= 1 - rate['tree'] <= 0.5
    tops = [k for m in metas for k in m['top_kinds']]
    shares = [tops.count(k) / len(tops) for k in TOP_KINDS]
    assert max(shares) - min(shares) < 0.1, shares


def test_meta_matches_labels(many):
    _, labels, metas = many
    present = presence(labels, min_pixels=1)
    for row, meta in zip(present, metas, strict=True):
        assert row[ID['watermark']] == meta['has_watermark']
        assert row[ID['tree']] == (meta['n_trees'] > 0)
        tops = {k for k in TOP_KINDS if row[ID[k]]}
        assert tops == set(meta['top_kinds'])
        assert 1 <= len(meta['towers']) <= 2
        for tower in meta['towers']:
            x0, _, x1, _ = tower['top_box']
            assert x1 - x0 >= 6


def test_flat_coloured_parts_match_labels(many):
    images, labels, metas = many
    for image, lab, meta in zip(images, labels, metas, strict=True):
        if meta['has_watermark']:
            continue
        for name in ('window', 'door', 'flattop'):
            colours = np.unique(image[lab == ID[name]], axis=0)
            assert len(colours) <= 1, (meta['index'], name, colours)
        door = lab == ID['door']
        x0, y0, x1, y1 = meta['door_box']
        ys, xs = np.nonzero(door)
        assert ys.min() >= y0 and ys.max() < y1
        assert xs.min() >= x0 and xs.max() < x1


def test_watermark_is_an_alpha_blend_in_a_fixed_corner(many):
    _, labels, metas = many
    boxes = {m['watermark_box'] for m in metas if m['has_watermark']}
    assert len(boxes) == 1
    x0, y0, x1, y1 = boxes.pop()
    assert x0 > 32 and y0 > 48  # bottom-right
    for index in [m['index'] for m in metas if m['has_watermark']][:10]:
        on = render_scene(index, watermark=True)
        off = render_scene(index, watermark=False)
        mask = on.labels == ID['watermark']
        assert mask.sum() == (x1 - x0) * (y1 - y0)
        assert mask[y0:y1, x0:x1].all()
        expected = np.round(WATERMARK_ALPHA * np.asarray(WATERMARK_RGB)
                            + (1 - WATERMARK_ALPHA) * off.image[mask])
        assert np.array_equal(on.image[mask], expected.astype(np.uint8))
        assert np.array_equal(on.image[~mask], off.image[~mask])
        assert np.array_equal(on.labels[~mask], off.labels[~mask])
        assert not (off.labels == ID['watermark']).any()


def test_presence_counts_pixels():
    labels = np.zeros((2, 4, 4), np.uint8)
    labels[0, :2, :2] = ID['dome']  # 4 pixels
    labels[1, 0, 0] = ID['spire']  # 1 pixel
    got = presence(labels, min_pixels=2)
    assert got.shape == (2, N_CLASSES) and got.dtype == bool
    assert got[0, ID['dome']] and got[0, ID['sky']]
    assert not got[1, ID['spire']]
    assert presence(torch.from_numpy(labels), min_pixels=1)[1, ID['spire']]


def test_tensor_views_agree():
    images, labels = render_batch([5, 6])
    x = scenes_as_tensor([5, 6])
    assert x.shape == (2, 3, 64, 64) and x.dtype == torch.float32
    assert -1 <= x.min() and x.max() <= 1
    back = ((x + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
    assert np.array_equal(back, images)
    data = SceneDataset(5, 7)
    assert len(data) == 2
    image, lab = data[1]
    assert torch.equal(image, x[1])
    assert lab.dtype == torch.long and torch.equal(lab.byte(),
                                                   torch.from_numpy(labels[1]))
    with pytest.raises(IndexError):
        data[2]
