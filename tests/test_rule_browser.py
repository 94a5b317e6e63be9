"""The rule prober in a real browser: the rule notebook served by Voila, driven with Playwright in headless
Chromium. Paints where to add the cause and checks both models' pictures are redrawn with it."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from test_browser import (
    TIMEOUT_MS,
    pixels,
    server_env,
    stroke,
    sync_playwright,  # noqa: F401 - the fixture
    voila_page,
)
from test_notebook import ROOT, parameterized_copy
from test_rule_notebook import RULE_NOTEBOOK

pytestmark = pytest.mark.slow


def test_prober_paints_the_cause_in_chromium(sync_playwright, tmp_path):  # noqa: F811 - fixture
    served = parameterized_copy(RULE_NOTEBOOK, tmp_path, N_DISSECT=60, N_TRAIN=3, N_EVAL=6, LAYERS='layer6,layer8',
                                STEPS=2, RANK_ONE_STEPS=3, OUT='', PROBER_SIZE=192)
    problems: list[str] = []
    with voila_page(sync_playwright, served, server_env(), tmp_path, problems, 1200, 1000) as page:
        from playwright.sync_api import expect
        status = page.locator('.rp-status')
        expect(status).to_contain_text('no intervention', timeout=TIMEOUT_MS)
        original, changed = page.locator('img.rp-original'), page.locator('img.rp-changed')
        before = pixels(original), pixels(changed)
        stroke(page, page.locator('img.rp-canvas'), (0.3, 0.5), (0.7, 0.6))
        expect(status).to_contain_text('cause added at strength 8 inside the paint')
        expect(status).to_contain_text('changed: lit windows')
        assert np.abs(pixels(original) - before[0]).mean() > 0.5, 'the original model was not redrawn'
        assert np.abs(pixels(changed) - before[1]).mean() > 0.5, 'the changed model was not redrawn'
        titles = [page.locator('.rp-title').nth(i).bounding_box() for i in range(3)]   # apart, one a picture
        pictures = [page.locator(f'img.{name}').bounding_box() for name in ('rp-canvas', 'rp-original',
                                                                             'rp-changed')]
        for left, right in zip(titles, titles[1:]):
            assert left['x'] + left['width'] + 8 <= right['x'], titles
        assert len({round(picture['y']) for picture in pictures}) == 1, pictures      # side by side, level
        for title, picture in zip(titles, pictures, strict=True):
            assert abs(title['x'] - picture['x']) < 4 and title['y'] + title['height'] <= picture['y'] + 1
        page.screenshot(path=str(tmp_path / 'rule-prober.png'), full_page=True)
        (ROOT / 'artifacts').mkdir(exist_ok=True)
        shutil.copy(tmp_path / 'rule-prober.png', ROOT / 'artifacts' / 'rule-prober.png')
        assert not [t for t in problems if 'page error' in t], problems
