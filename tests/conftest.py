"""Shared fixtures: checkpoints built from the shared layout files, with realistic random values."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from utils.stylegan2.synthetic import synthetic_checkpoint

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / 'shared'
REFERENCE = SHARED / 'reference'


def need_shared(path: Path = REFERENCE) -> Path:
    """Skips (with the reason) only when ../shared is absent."""
    if not SHARED.is_dir():
        pytest.skip(f'../shared is absent ({SHARED}); this test needs its reference files')
    assert path.exists(), f'{path} is missing from ../shared'
    return path


def layout(size: int) -> dict[str, list[int]]:
    return json.loads((need_shared() / f'stylegan2-checkpoint-layout-{size}.json').read_text())['g_ema']


def layout_checkpoint(size: int, seed: int = 0) -> dict:
    return synthetic_checkpoint(layout(size), seed)


@pytest.fixture(scope='session')
def ckpt64():
    return layout_checkpoint(64)


@pytest.fixture(scope='session')
def ckpt256():
    return layout_checkpoint(256)
