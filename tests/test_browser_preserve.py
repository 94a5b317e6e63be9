"""Preserve regions, Preview, Changes and Export end to end in a real browser (Voila + headless Chromium, as
tests/test_browser.py): paint two preserve regions on one sample (Add to Preserve twice: they merge, the sample
shows both outlined in blue), Preview (the heat maps drawn on the grid's own samples, measured against the
samples; a second click takes them off), Execute Change (the titled Changes section appears by itself, the
preserve example in it), Save (the saved file holds one region covering both paints), Export (a download link
that carries the file; a second Export asks before replacing it)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from test_browser import (
    CANVAS,
    TIMEOUT_MS,
    pixels,
    served_notebook,
    stroke,
    sync_playwright,  # noqa: F401 - the fixture
    voila_page,
)

from rewrite.formats import editfile

pytestmark = pytest.mark.slow

FIRST, SECOND = ((0.2, 0.2), (0.4, 0.35)), ((0.62, 0.6), (0.8, 0.78))     # the two preserve paints on sample 2


def test_preserve_regions_preview_changes_and_export_in_chromium(sync_playwright, tmp_path):  # noqa: F811
    served, env, mask_dir = served_notebook(tmp_path)
    mask_dir.mkdir()
    with voila_page(sync_playwright, served, env, tmp_path, [], 1400, 1400, accept_downloads=True) as page:
        session(page, mask_dir, tmp_path)
    assert 'preserve' in json.loads((mask_dir / 'kept_edit.json').read_text())
    saved = editfile.load_edit(mask_dir / 'kept_edit.json')
    assert [s.imgnum for s in saved.preserve] == [2]                       # one region for the image ...
    painted = saved.preserve[0].mask_at(CANVAS).numpy() > 0
    for (x0, y0), (x1, y1) in (FIRST, SECOND):                            # ... covering both paints
        assert painted[int((y0 + y1) / 2 * CANVAS), int((x0 + x1) / 2 * CANVAS)]
    assert not painted[int(0.9 * CANVAS), int(0.1 * CANVAS)] and not painted[int(0.1 * CANVAS), int(0.9 * CANVAS)]


def session(page, mask_dir: Path, tmp_path: Path) -> None:
    from playwright.sync_api import expect
    message = page.locator('.rwa-message')
    canvases = page.locator('img.rwa-grid-canvas')
    button = lambda name: page.get_by_role('button', name=name, exact=True)   # noqa: E731
    expect(message).to_contain_text('paint a region on a sample to begin', timeout=TIMEOUT_MS)
    steps = [  # (sample painted, stroke, button, message it leaves)
        (0, ((0.3, 0.3), (0.55, 0.5)), 'Copy', 'copied a region of image 0'),
        (1, ((0.45, 0.45), (0.7, 0.6)), 'Paste', 'paste goal in image 1'),
        (None, None, 'Add to Context', 'context: 1 region'),
        (2, FIRST, 'Add to Preserve', 'preserve: 1 region'),
        (2, SECOND, 'Add to Preserve', "preserve: 1 region (images [2]); the new paint joined image 2's region")]
    painted = None                                  # sample 2 painted, before any outline: its own blue (the sky)
    for sample, line, name, said in steps:
        if sample is not None:
            stroke(page, canvases.nth(sample), *line)
            if sample == 2 and painted is None:
                painted = pixels(canvases.nth(2))
        button(name).click()
        expect(message).to_contain_text(said)
    expect(page.locator('img.rwa-thumb')).to_have_count(2)                # the context's and the preserve tray's
    page.wait_for_timeout(500)                                            # the canvas's new picture is drawn
    outlined = blue_pixels(pixels(canvases.nth(2))) & ~blue_pixels(painted)
    rows, cols = np.nonzero(outlined)
    side = outlined.shape[0]
    assert len(rows) > 80, 'the preserve regions are not outlined in blue'
    for (x0, y0), (x1, y1) in (FIRST, SECOND):                            # both regions outlined, where painted
        near = (abs(cols / side - (x0 + x1) / 2) < 0.2) & (abs(rows / side - (y0 + y1) / 2) < 0.2)
        assert near.sum() > 20, f'no blue outline about the paint {(x0, y0)} - {(x1, y1)}'

    # Preview: the heat maps on the grid's own canvases, measured against the samples shown before
    samples = [pixels(canvases.nth(i)) for i in range(4)]
    button('Preview').click()
    expect(message).to_contain_text('preview:', timeout=TIMEOUT_MS)
    expect(page.locator('.rwa-legend')).to_be_visible()
    expect(page.locator('.rwa-legend')).to_contain_text('red: where the context answers')
    page.wait_for_timeout(800)
    artifacts = Path(__file__).resolve().parents[1] / 'artifacts'
    artifacts.mkdir(exist_ok=True)
    page.locator('.rwa-body').screenshot(path=str(artifacts / 'preview-voila.png'))
    heat = [pixels(canvases.nth(i)) - samples[i] for i in range(4)]
    reddened = [int(((d[..., 0] > 40) & (d[..., 1] < -10) & (d[..., 2] < -10)).sum()) for d in heat]
    blued = [int(((d[..., 2] > 40) & (d[..., 0] < -10)).sum()) for d in heat]
    assert reddened[1] > 100, f'no red heat where the context was painted: {reddened}'
    assert blued[2] > 100, f'no blue heat on the preserve example: {blued}'
    button('Preview').click()                                             # a second click: the samples again
    expect(message).to_contain_text('preview off')
    page.wait_for_timeout(800)
    assert all(np.abs(pixels(canvases.nth(i)) - samples[i]).mean() < 1.0 for i in range(4))
    expect(page.locator('.rwa-legend')).to_be_hidden()

    button('Execute Change').click()
    expect(message).to_contain_text('changed the model', timeout=TIMEOUT_MS)
    section = page.locator('.rwa-changes')                                # shown without a click on Changes
    expect(section).to_be_visible()
    expect(section.locator('.rwa-changes-title')).to_contain_text('Changes made by the last edit')
    expect(section.locator('.rwa-change-rows')).to_contain_text('before')
    expect(section.locator('.rwa-change-rows')).to_contain_text('after')
    strip = section.locator('.rwa-change')
    expect(strip).to_have_count(5)                          # the 4 most changed held-out samples, then sample 2
    expect(strip.last).to_contain_text('#2 preserve:')
    expect(strip.first).to_contain_text('held-out:')
    section.screenshot(path=str(artifacts / 'changes-voila.png'))
    tray = page.locator('.rwa-preserve-tray')                             # the section is not under the tray
    assert section.bounding_box()['y'] > page.locator('.rwa-grid').bounding_box()['y']
    assert section.bounding_box()['y'] >= tray.bounding_box()['y'] + tray.bounding_box()['height']
    assert (blue_pixels(pixels(canvases.nth(2))) & outlined).sum() > 0.8 * len(rows)   # outlined on the new model
    page.locator('.rwa-name input').fill('kept_edit')
    button('Save').click()
    expect(message).to_contain_text('saved')
    expect(page.locator('img.rwa-thumb')).to_have_count(2)                # still shown after the save

    # Export: a download link that carries the checkpoint; a second Export asks before replacing it
    exported = mask_dir / 'rewritten.pt'
    page.locator('.rwa-export input').fill(str(exported))
    button('Export').click()
    expect(message).to_contain_text('exported the rewritten generator')
    with page.expect_download() as download:
        page.locator('.rwa-download a').click()
    assert download.value.suggested_filename == 'rewritten.pt'
    assert Path(download.value.path()).read_bytes() == exported.read_bytes()
    written = exported.stat().st_mtime_ns
    button('Export').click()
    expect(message).to_have_text(f'rewritten.pt already exists in {mask_dir}: click Overwrite to replace it, or Keep')
    expect(page.locator('.rwa-confirm:not(.rwa-layer-ask)')).to_be_visible()
    button('Keep').click()
    expect(message).to_contain_text('kept rewritten.pt')
    assert exported.stat().st_mtime_ns == written


def blue_pixels(rgb: np.ndarray) -> np.ndarray:
    """Where a screenshot [H, W, 3] is strongly blue (the preserve outline's colour; not the brush's pink)."""
    red, green, blue = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    return (blue > red + 100) & (blue > green + 60)
