"""End to end in Chromium (the notebook served by Voila, the app at layer 8): Load of the bundled
demo/erase_watermark_layer7_rank3 offers to switch to layer 7 and keeps Erase disabled until then; after
Switch to layer 7 and Erase, the exported generator is the layer-7 edit the API makes from the same file."""

from __future__ import annotations

import shutil

import pytest
import torch
from test_browser import (
    TIMEOUT_MS,
    server_env,
    sync_playwright,  # noqa: F401 - the fixture
    voila_page,
)
from test_notebook import NOTEBOOK, parameterized_copy

from rewrite.core.rewriter import SeqStyleGanRewriter
from rewrite.formats.savededits import notebooks_dir
from utils.generators import load_generator
from utils.zdataset import z_dataset_for_model

pytestmark = pytest.mark.slow

EDIT = 'erase_watermark_layer7_rank3'


def test_load_switch_layer_erase_gives_the_layer_7_edit(sync_playwright, tmp_path):  # noqa: F811 - the fixture
    from playwright.sync_api import expect
    mask_dir = tmp_path / 'masks'
    shutil.copytree(notebooks_dir() / 'masks' / 'demo', mask_dir / 'demo')
    served = parameterized_copy(NOTEBOOK, tmp_path, LAYER=8, NUM_CANVASES=4, CANVAS_SIZE=128, MASK_DIR=str(mask_dir),
                                RUN_EXAMPLE=False)
    problems: list[str] = []
    with voila_page(sync_playwright, served, server_env(), tmp_path, problems, 1400, 1100) as page:
        message = page.locator('.rwa-message')
        expect(message).to_contain_text('paint a region on a sample to begin', timeout=TIMEOUT_MS)
        expect(page.locator('.rwa-setting')).to_contain_text('layer 8')
        page.locator('.rwa-name input').fill(f'demo/{EDIT}')
        page.get_by_role('button', name='Load', exact=True).click()
        expect(message).to_contain_text('it was made for layer 7')
        erase = page.get_by_role('button', name='Erase', exact=True)
        expect(erase).to_be_disabled()
        page.get_by_role('button', name='Switch to layer 7', exact=True).click()
        expect(message).to_contain_text('now rewriting layer 7', timeout=TIMEOUT_MS)
        expect(page.locator('.rwa-setting')).to_contain_text('layer 7')
        expect(erase).to_be_enabled()
        erase.click()
        expect(message).to_contain_text('erased the context from the model', timeout=TIMEOUT_MS)
        expect(message).to_contain_text('held-out change')
        expect(page.locator('.rwa-history .widget-radio-box label').nth(1)).to_contain_text('layer 7')
        page.get_by_role('button', name='Export', exact=True).click()
        expect(message).to_contain_text('exported the rewritten generator')
        page.screenshot(path=str(tmp_path / 'switch-layer.png'), full_page=True)
    # the API, here, with the server's thread count: the bundled file at layer 7, its own rank and solver
    threads = torch.get_num_threads()
    torch.set_num_threads(int(server_env()['OMP_NUM_THREADS']))
    try:
        model = load_generator('demo', truncation=0.5)
        gw = SeqStyleGanRewriter(model, z_dataset_for_model(model, 1000), 7, progress=False, damage_samples=0)
        record = gw.apply_request(str(mask_dir / 'demo' / f'{EDIT}.json'))
    finally:
        torch.set_num_threads(threads)
    assert (record.layer, record.rank, record.solver) == (7, 3, 'fast')
    exported = load_generator(str(mask_dir / 'rewritten.pt'), truncation=0.5).state_dict()
    expected = gw.model.state_dict()
    assert exported.keys() == expected.keys()
    changed = [k for k in expected if not torch.equal(expected[k], model.state_dict()[k])]
    assert len(changed) == 1 and changed[0].startswith('layer7.')                    # the one rewritten conv
    assert all(torch.equal(exported[k], expected[k]) for k in expected), 'the browser made another edit'
