"""End to end in a real browser: the notebook served by Voila, driven with Playwright in headless Chromium.

Paints a stroke on one sample, Copy, paints on another, Paste and Add to Context, Execute Change, checks the
grid repainted from the rewritten model, then Save writes a JSON file the edit-file module reads back.
A screenshot is kept in the test's tmp dir and in artifacts/.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from browser.voila_server import serve_voila
from PIL import Image
from test_notebook import NOTEBOOK, ROOT, parameterized_copy

from rewrite.formats import editfile

CHROMIUM = Path(os.environ.get('CHROMIUM', '/usr/bin/chromium'))
CHROMIUM_ARGS = ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
                 '--no-first-run', '--disable-sync']
CANVAS = 128
TIMEOUT_MS = 180_000

pytestmark = pytest.mark.slow

# Mouse events dispatched on sample 3, one at a time: ms from each event to the canvas showing a new picture
# (through ipyevents, the kernel's painting and re-encoding, and the widget update back).
STROKE_LATENCY_JS = '''() => new Promise((resolve, reject) => {
    const img = document.querySelectorAll('img.rwa-grid-canvas')[3];
    const rect = img.getBoundingClientRect();
    const times = [];
    let start = 0;
    const fire = (type, i, buttons) => img.dispatchEvent(new MouseEvent(type, {bubbles: true, button: 0, buttons,
        clientX: rect.left + 20 + 4 * i, clientY: rect.top + 30 + 2 * i}));
    const next = () => setTimeout(() => {
        start = performance.now();
        fire(times.length === 0 ? 'mousedown' : 'mousemove', times.length, 1);
    }, 50);
    const observer = new MutationObserver(() => {
        times.push(performance.now() - start);
        if (times.length < 20) { next(); return; }
        observer.disconnect();
        fire('mouseup', times.length, 0);
        resolve(times);
    });
    observer.observe(img, {attributes: true, attributeFilter: ['src']});
    setTimeout(() => reject(new Error('canvas not repainted: ' + times.length + ' of 20')), 60000);
    next();
})'''


@pytest.fixture(scope='module')
def sync_playwright():
    playwright = pytest.importorskip('playwright.sync_api', reason='playwright is not installed (pip install it)')
    if not CHROMIUM.is_file():
        pytest.skip(f'no Chromium at {CHROMIUM} (apt-get install chromium, or set CHROMIUM=/path/to/chromium)')
    return playwright.sync_playwright


def stroke(page, locator, start: tuple[float, float], end: tuple[float, float]) -> None:
    """A mouse drag over the element, in fractions of its size."""
    box = locator.bounding_box()
    x0, y0 = box['x'] + start[0] * box['width'], box['y'] + start[1] * box['height']
    x1, y1 = box['x'] + end[0] * box['width'], box['y'] + end[1] * box['height']
    page.mouse.move(x0, y0)
    page.mouse.down()
    page.mouse.move(x1, y1, steps=8)
    page.mouse.up()


def pixels(locator) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(locator.screenshot())).convert('RGB'), dtype=np.float32)


def open_page(browser, problems: list[str], width: int, height: int, **options):
    """A new page of `browser` (width x height px, other new_page `options`) with the suite's timeout; its page
    errors and console errors are appended to `problems`, to be reported if the test fails."""
    page = browser.new_page(viewport={'width': width, 'height': height}, **options)
    page.set_default_timeout(TIMEOUT_MS)
    page.on('pageerror', lambda error: problems.append(f'page error: {error}'))
    page.on('console', lambda msg: problems.append(msg.text) if msg.type == 'error' else None)
    return page


@contextlib.contextmanager
def voila_page(sync_playwright, notebook: Path, env: dict[str, str], folder: Path, problems: list[str],
               width: int, height: int, **options) -> Iterator:
    """A Chromium page (open_page) showing `notebook` served by Voila (its log: folder/voila.log); an exception
    inside the block is re-raised as an AssertionError with the browser's last errors and the end of that log."""
    log = folder / 'voila.log'
    with serve_voila(notebook, env, log=log) as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            page = open_page(browser, problems, width, height, **options)
            page.goto(url, timeout=TIMEOUT_MS)
            yield page
        except Exception as error:
            raise AssertionError(f'{error}\nbrowser errors: {problems[-10:]}\nvoila log:\n{log.read_text()[-4000:]}'
                                 ) from error
        finally:
            browser.close()


def server_env() -> dict[str, str]:
    """The notebook servers' environment: the project importable, the test's thread count."""
    return {'PYTHONPATH': os.pathsep.join(filter(None, [str(ROOT), os.environ.get('PYTHONPATH')])),
            'OMP_NUM_THREADS': os.environ.get('OMP_NUM_THREADS', '1')}


def served_notebook(tmp_path: Path) -> tuple[Path, dict, Path]:
    """(the notebook with the test's parameters, written to tmp_path; the Voila server's environment; its MASK_DIR)."""
    mask_dir = tmp_path / 'masks'
    served = parameterized_copy(NOTEBOOK, tmp_path, SAMPLE_SIZE=60, NUM_CANVASES=4, CANVAS_SIZE=CANVAS,
                                MASK_DIR=str(mask_dir), RUN_EXAMPLE=False)
    return served, server_env(), mask_dir


def test_paint_copy_paste_execute_save_in_chromium(sync_playwright, tmp_path):
    served, env, mask_dir = served_notebook(tmp_path)
    problems: list[str] = []
    with voila_page(sync_playwright, served, env, tmp_path, problems, 1400, 1100) as page:
        run_session(page, mask_dir, tmp_path)
        broken = [text for text in problems if 'create a view' in text or 'create view' in text]
        assert not broken, f'widgets failed to render in the browser: {broken}'


def run_session(page, mask_dir: Path, tmp_path: Path) -> None:
    from playwright.sync_api import expect
    message = page.locator('.rwa-message')
    canvases = page.locator('img.rwa-grid-canvas')
    expect(message).to_contain_text('paint a region on a sample to begin', timeout=TIMEOUT_MS)
    expect(canvases).to_have_count(4)
    original_target = pixels(canvases.nth(1))
    latencies = page.evaluate(STROKE_LATENCY_JS)               # paints on sample 3 (cleared by the next stroke)
    median = float(np.median(latencies))
    (tmp_path / 'browser-stroke-latency.json').write_text(json.dumps({'median_ms': median, 'all_ms': latencies}))
    assert len(latencies) == 20, f'not every stroke repainted its canvas: {latencies} ms'   # timings: metrics/

    stroke(page, canvases.nth(0), (0.3, 0.3), (0.55, 0.5))
    page.get_by_role('button', name='Copy', exact=True).click()
    expect(message).to_contain_text('copied a region of image 0')
    stroke(page, canvases.nth(1), (0.45, 0.45), (0.7, 0.6))
    page.get_by_role('button', name='Paste', exact=True).click()
    expect(message).to_contain_text('paste goal in image 1')
    page.get_by_role('button', name='Add to Context', exact=True).click()
    expect(message).to_contain_text('context: 1 region')
    expect(page.locator('img.rwa-thumb')).to_have_count(1)

    page.get_by_role('button', name='Execute Change', exact=True).click()
    expect(message).to_contain_text('changed the model', timeout=TIMEOUT_MS)
    expect(page.locator('.rwa-history .widget-radio-box label')).to_have_count(2)   # the original model, the edit
    rewritten_target = pixels(canvases.nth(1))
    assert np.abs(rewritten_target - original_target).mean() > 1.0, 'the grid was not repainted from the new model'

    page.locator('.rwa-name input').fill('browser_edit')
    page.get_by_role('button', name='Save', exact=True).click()
    expect(message).to_contain_text('saved')
    screenshot = tmp_path / 'rewriting-app.png'
    page.screenshot(path=str(screenshot), full_page=True)
    artifacts = Path(__file__).resolve().parents[1] / 'artifacts'
    artifacts.mkdir(exist_ok=True)
    for kept in (screenshot, tmp_path / 'browser-stroke-latency.json'):
        shutil.copy(kept, artifacts / kept.name)

    saved = editfile.load_edit(mask_dir / 'browser_edit.json')
    assert (saved.object.imgnum, saved.paste.imgnum, [k.imgnum for k in saved.key]) == (0, 1, [1])
    painted = saved.object.mask_at(CANVAS).numpy() > 0
    assert painted[int(0.4 * CANVAS), int(0.42 * CANVAS)] and not painted[int(0.9 * CANVAS), int(0.9 * CANVAS)]
