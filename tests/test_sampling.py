"""Bulk sampling library: z convention, pixel conversion, atomic PNGs, resumable folders, contact sheets."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from rewrite.cli import sampling
from utils.stylegan2 import SeqStyleGAN2

TINY = dict(size=32, style_dim=64, n_mlp=2, channels={4: 32, 8: 32, 16: 32, 32: 32})


@pytest.fixture(scope='module')
def tiny():
    torch.manual_seed(0)
    return SeqStyleGAN2(**TINY).eval()


def numpy_uint8(images: torch.Tensor) -> np.ndarray:
    """Independent reference of torchvision's ToPILImage on clamp(x/2 + 1/2): float32 math, truncating cast."""
    x = images.numpy().astype(np.float32)
    x = np.clip(x * np.float32(0.5) + np.float32(0.5), 0, 1) * np.float32(255)
    return np.floor(x).astype(np.uint8).transpose(0, 2, 3, 1)


def reference_images(model, indices, batch, seed_offset=0) -> dict[int, np.ndarray]:
    """Images drawn directly: z from numpy's RandomState(i + offset), batches of `batch` (last one padded)."""
    out = {}
    for start in range(0, len(indices), batch):
        chunk = list(indices[start:start + batch])
        padded = chunk + [chunk[-1]] * (batch - len(chunk))
        z = np.stack([np.random.RandomState(i + seed_offset).standard_normal(model.style_dim) for i in padded])
        with torch.no_grad():
            images = numpy_uint8(model(torch.from_numpy(z).float()))
        out.update(zip(chunk, images[:len(chunk)], strict=False))
    return out


def read_png(path) -> np.ndarray:
    with Image.open(path) as im:
        assert im.format == 'PNG' and im.mode == 'RGB'
        return np.asarray(im)


def folder_bytes(folder) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


# ---- conventions -------------------------------------------------------------------------------------

def test_image_z_is_the_seeded_numpy_sample(tiny):
    z = sampling.image_z(tiny, [0, 7, 12], seed_offset=5)
    for row, i in zip(z, [0, 7, 12], strict=True):
        expected = np.random.RandomState(i + 5).standard_normal(tiny.style_dim).astype(np.float32)
        np.testing.assert_array_equal(row.numpy(), expected)


@given(st.lists(st.floats(-3, 3, width=32), min_size=1, max_size=60))
@settings(max_examples=50, deadline=None)
def test_to_uint8_matches_truncating_reference(values):
    x = torch.tensor(values + [-1.0, 1.0, 0.0, -1e-9], dtype=torch.float32)
    images = x.repeat(3).reshape(1, 3, 1, -1)
    got = sampling.to_uint8(images)
    assert got.dtype == np.uint8 and got.shape == (1, 1, x.numel(), 3)
    np.testing.assert_array_equal(got, numpy_uint8(images))
    assert got[0, 0, -4:, 0].tolist() == [0, 255, 127, 127]


@given(st.lists(st.integers(0, 10_000), min_size=1, max_size=40, unique=True), st.integers(1, 9))
def test_padded_batches_are_full_and_cover_in_order(indices, batch):
    seen = []
    for chunk, real in sampling.padded_batches(indices, batch):
        assert len(chunk) == batch and 1 <= real <= batch
        assert chunk[real:] == [chunk[real - 1]] * (batch - real)
        seen += chunk[:real]
    assert seen == indices


# ---- writing -----------------------------------------------------------------------------------------

def test_sample_to_folder_writes_the_reference_images(tiny, tmp_path):
    indices = list(range(3, 14))
    written = sampling.sample_to_folder(tiny, tmp_path, indices, batch=4, seed_offset=2, progress=False)
    assert written == indices
    assert sorted(p.name for p in tmp_path.iterdir()) == [f'{i:06d}.png' for i in indices]
    ref = reference_images(tiny, indices, batch=4, seed_offset=2)
    for i in indices:
        np.testing.assert_array_equal(read_png(tmp_path / f'{i:06d}.png'), ref[i])


def test_images_do_not_depend_on_batch_neighbours(tiny, tmp_path):
    """Same batch size, different companions (as when ranks interleave): identical files."""
    a, b = tmp_path / 'a', tmp_path / 'b'
    sampling.sample_to_folder(tiny, a, list(range(12)), batch=4, progress=False)
    sampling.sample_to_folder(tiny, b, [0, 3, 6, 9], batch=4, progress=False)
    sampling.sample_to_folder(tiny, b, [1, 4, 7, 10, 2, 5, 8, 11], batch=4, progress=False)
    assert folder_bytes(a) == folder_bytes(b)


def test_other_batch_sizes_agree_to_one_level(tiny, tmp_path):
    sampling.sample_to_folder(tiny, tmp_path / 'a', list(range(6)), batch=1, progress=False)
    sampling.sample_to_folder(tiny, tmp_path / 'b', list(range(6)), batch=6, progress=False)
    for i in range(6):
        diff = read_png(tmp_path / 'a' / f'{i:06d}.png').astype(int) - read_png(tmp_path / 'b' / f'{i:06d}.png')
        assert np.abs(diff).max() <= 1


def test_resume_after_interruption_gives_the_same_files(tiny, tmp_path):
    clean, resumed = tmp_path / 'clean', tmp_path / 'resumed'
    indices = list(range(20))
    sampling.sample_to_folder(tiny, clean, indices, batch=4, progress=False)

    def stop_after(k):
        count = [0]

        def hook(_i):
            count[0] += 1
            if count[0] == k:
                raise KeyboardInterrupt
        return hook

    with pytest.raises(KeyboardInterrupt):
        sampling.sample_to_folder(tiny, resumed, indices, batch=4, progress=False, on_written=stop_after(6))
    assert len(list(resumed.glob('*.png'))) == 6
    (resumed / '.000009.png.abc123.tmp').write_bytes(b'half a png')          # a crash mid-write
    (resumed / '000010.png').write_bytes((clean / '000010.png').read_bytes()[:50])   # a truncated file
    written = sampling.sample_to_folder(tiny, resumed, indices, batch=4, progress=False)
    assert written == list(range(6, 20))
    assert folder_bytes(resumed) == folder_bytes(clean)


def test_complete_png_check(tmp_path):
    good = tmp_path / 'good.png'
    sampling.write_png(np.zeros((8, 8, 3), np.uint8), good)
    assert sampling.is_complete_png(good, 8)
    assert not sampling.is_complete_png(good, 16)
    (tmp_path / 'short.png').write_bytes(good.read_bytes()[:-20])
    assert not sampling.is_complete_png(tmp_path / 'short.png', 8)
    assert not sampling.is_complete_png(tmp_path / 'missing.png', 8)
    sampling.write_png(np.zeros((8, 8), np.uint8), tmp_path / 'gray.png')
    assert not sampling.is_complete_png(tmp_path / 'gray.png', 8)


def test_failed_write_leaves_nothing(tmp_path):
    with pytest.raises(TypeError):
        sampling.write_png(np.zeros((4, 4, 3), np.complex64), tmp_path / 'x.png')
    assert list(tmp_path.iterdir()) == []


def test_existing_file_is_replaced_atomically(tmp_path):
    path = tmp_path / 'x.png'
    sampling.write_png(np.zeros((4, 4, 3), np.uint8), path)
    sampling.write_png(np.full((4, 4, 3), 7, np.uint8), path)
    assert read_png(path).max() == 7 and [p.name for p in tmp_path.iterdir()] == ['x.png']


# ---- contact sheet and manifest ----------------------------------------------------------------------

def test_contact_sheet_layout():
    images = [np.full((2, 3, 3), n, np.uint8) for n in range(1, 12)]
    sheet = sampling.contact_sheet(images, cols=4)
    assert sheet.shape == (3 * 2, 4 * 3, 3)
    for n in range(11):
        r, c = divmod(n, 4)
        assert (sheet[2 * r:2 * r + 2, 3 * c:3 * c + 3] == n + 1).all()
    assert (sheet[4:, 9:] == 0).all()


def test_write_contact_sheet_uses_the_first_64(tiny, tmp_path):
    indices = list(range(5, 75))
    sampling.sample_to_folder(tiny, tmp_path, indices, batch=16, progress=False)
    sheet = read_png(sampling.write_contact_sheet(tmp_path, indices))
    assert sheet.shape == (8 * 32, 8 * 32, 3)
    for n, i in enumerate(indices[:64]):
        r, c = divmod(n, 8)
        np.testing.assert_array_equal(sheet[32 * r:32 * r + 32, 32 * c:32 * c + 32],
                                      read_png(tmp_path / f'{i:06d}.png'))


def test_manifest_guards_the_folder(tmp_path):
    settings_a = {'weights': 'abc', 'truncation': 0.5}
    sampling.check_manifest(tmp_path, settings_a)            # nothing there yet
    sampling.write_manifest(tmp_path, settings_a)
    assert json.loads((tmp_path / sampling.MANIFEST_NAME).read_text()) == settings_a
    sampling.check_manifest(tmp_path, dict(settings_a))
    with pytest.raises(sampling.SampleFolderError, match='truncation'):
        sampling.check_manifest(tmp_path, settings_a | {'truncation': 1.0})
    (tmp_path / sampling.MANIFEST_NAME).write_text('{not json')
    with pytest.raises(sampling.SampleFolderError, match='unreadable'):
        sampling.check_manifest(tmp_path, settings_a)
