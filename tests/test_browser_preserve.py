"""Issue 13 end to end in a real browser (Voila + headless Chromium, as tests/test_browser.py): paint a preserve
region, Add to Preserve (the sample shows it outlined in blue where it was painted), Preview, Execute Change (the
before / after strip appears by itself, the preserve example in it), Save; the saved file holds the region."""

from __future__ import annotations

import json

import numpy as np
import pytest
from browser.voila_server import serve_voila
from test_browser import CANVAS, CHROMIUM, CHROMIUM_ARGS, TIMEOUT_MS, pixels, served_notebook, stroke, sync_playwright  # noqa: F401

from rewrite import editfile

pytestmark = pytest.mark.slow


def test_paint_preserve_region_execute_save_in_chromium(sync_playwright, tmp_path):  # noqa: F811
    served, env, mask_dir = served_notebook(tmp_path)
    with serve_voila(served, env, log=tmp_path / 'voila.log') as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={'width': 1400, 'height': 1400})
            page.set_default_timeout(TIMEOUT_MS)
            page.goto(url, timeout=TIMEOUT_MS)
            session(page)
        except Exception as error:
            log = (tmp_path / 'voila.log').read_text()[-4000:]
            raise AssertionError(f'{error}\nvoila log:\n{log}') from error
        finally:
            browser.close()
    assert 'preserve' in json.loads((mask_dir / 'kept_edit.json').read_text())
    saved = editfile.load_edit(mask_dir / 'kept_edit.json')
    assert [s.imgnum for s in saved.preserve] == [2]
    painted = saved.preserve[0].mask_at(CANVAS).numpy() > 0
    assert painted[int(0.3 * CANVAS), int(0.3 * CANVAS)] and not painted[int(0.9 * CANVAS), int(0.9 * CANVAS)]


def session(page) -> None:
    from playwright.sync_api import expect
    message = page.locator('.rwa-message')
    canvases = page.locator('img.rwa-grid-canvas')
    expect(message).to_contain_text('paint a region on a sample to begin', timeout=TIMEOUT_MS)
    steps = [  # (sample painted or None, button, message it leaves)
        (0, (0.3, 0.3), (0.55, 0.5), 'Copy', 'copied a region of image 0'),
        (1, (0.45, 0.45), (0.7, 0.6), 'Paste', 'paste goal in image 1'),
        (None, None, None, 'Add to Context', 'context: 1 region'),
        (2, (0.2, 0.2), (0.45, 0.4), 'Add to Preserve', 'preserve: 1 region')]
    painted = None
    for sample, start, end, button, said in steps:
        if sample is not None:
            stroke(page, canvases.nth(sample), start, end)
            painted = pixels(canvases.nth(sample))
        page.get_by_role('button', name=button, exact=True).click()
        expect(message).to_contain_text(said)
    expect(page.locator('img.rwa-thumb')).to_have_count(2)                # the context's and the preserve tray's
    page.wait_for_timeout(500)                                            # the canvas's new picture is drawn
    outlined = blue_pixels(pixels(canvases.nth(2))) & ~blue_pixels(painted)
    rows, cols = np.nonzero(outlined)
    assert len(rows) > 40, 'the preserve region is not outlined in blue'
    assert max(rows.max(), cols.max()) < 0.65 * outlined.shape[0]         # about the stroke (0.2, 0.2) - (0.45, 0.4)
    page.get_by_role('button', name='Preview', exact=True).click()
    expect(message).to_contain_text('preview:', timeout=TIMEOUT_MS)
    page.get_by_role('button', name='Execute Change', exact=True).click()
    expect(message).to_contain_text('changed the model', timeout=TIMEOUT_MS)
    strip = page.locator('.rwa-change')                                   # shown without a click on Changes
    expect(strip).to_have_count(5)                          # the 4 most changed held-out samples, then sample 2
    expect(strip.last).to_contain_text('preserve 2:')
    assert (blue_pixels(pixels(canvases.nth(2))) & outlined).sum() > 0.8 * len(rows)   # outlined on the new model
    page.locator('.rwa-name input').fill('kept_edit')
    page.get_by_role('button', name='Save', exact=True).click()
    expect(message).to_contain_text('saved')
    expect(page.locator('img.rwa-thumb')).to_have_count(2)                # still shown after the save


def blue_pixels(rgb: np.ndarray) -> np.ndarray:
    """Where a screenshot [H, W, 3] is strongly blue (the preserve outline's colour; not the brush's pink)."""
    red, green, blue = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    return (blue > red + 100) & (blue > green + 60)
