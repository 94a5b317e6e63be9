"""The widget's layout as a user meets it: the notebook run in JupyterLab and served by Voila, in headless
Chromium at 1280 and 1920 px wide, with the notebook's own canvas size (256 px) and grid (9 samples).

Each page is loaded once and resized. At each width the page's geometry is checked: every control's box
lies inside the output area, no button or label is cut short with an ellipsis (scrollWidth > clientWidth),
every grid canvas is visible (the canvas itself is what the page shows at its centre and corners, so no
scroll box or neighbour hides it), each canvas carries its image number, and the status line sits between
the controls and the pictures. Screenshots go to the test's tmp dir and artifacts/. In JupyterLab a short
session then checks the feedback: Execute Change, the history list, Ctrl+Z over the pictures.
"""

from __future__ import annotations

import contextlib
import re
import shutil
from pathlib import Path

import pytest
from browser.voila_server import serve_jupyterlab, serve_voila
from test_browser import CHROMIUM, CHROMIUM_ARGS, TIMEOUT_MS, open_page, server_env, stroke, sync_playwright  # noqa: F401 - fixture
from test_notebook import NOTEBOOK, ROOT, parameterized_copy

pytestmark = pytest.mark.slow

WIDTHS = (900, 1280, 1920)
HEIGHT = 1500                   # tall enough that the whole widget shows in the screenshots
READY = 'paint a region on a sample to begin'

# Geometry of the app as the browser lays it out: problems found, in words.
LAYOUT_JS = '''() => {
    const app = document.querySelector('.rwa');
    const area = app.closest('.jp-OutputArea-output') || app.parentElement;
    const box = area.getBoundingClientRect();
    const shown = el => { const r = el.getBoundingClientRect(); const s = getComputedStyle(el);
                          return r.width > 0 && r.height > 0 && s.visibility !== 'hidden'; };
    const name = el => ((el.innerText || el.value || el.className || el.tagName) + '').trim().slice(0, 40);
    const problems = [];
    const controls = app.querySelectorAll('button, input, select, textarea, .widget-label, .widget-readout, '
        + '.widget-html, img.rwa-grid-canvas, img.rwa-thumb, .rwa-copy-canvas, .rwa-paste-canvas');
    for (const el of controls) {
        if (!shown(el)) continue;
        const r = el.getBoundingClientRect();
        if (r.left < box.left - 1 || r.right > box.right + 1)
            problems.push(`outside the output area: ${name(el)} spans ${r.left}..${r.right}, `
                          + `the area ${box.left}..${box.right}`);
    }
    for (const el of app.querySelectorAll('button, .widget-label, label, .widget-readout, .widget-html-content'))
        if (shown(el) && el.scrollWidth > el.clientWidth + 1)
            problems.push(`cut short: "${name(el)}" needs ${el.scrollWidth} px, has ${el.clientWidth}`);
    // no scroll box: every canvas, its cell and pane, the trays, the grid, and any other box of the app that
    // would show a scrollbar (overflow auto / scroll) holds its content without scrolling
    const boxes = new Set(app.querySelectorAll('.paint-widget, .rwa-cell, .rwa-pane, .rwa-tray, .rwa-grid, '
        + '.rwa-thumb, .rwa-changes'));
    for (const el of app.querySelectorAll('*'))
        if (['auto', 'scroll'].some(v => [getComputedStyle(el).overflowX, getComputedStyle(el).overflowY].includes(v))
            && !['SELECT', 'TEXTAREA', 'INPUT'].includes(el.tagName)) boxes.add(el);
    for (const el of boxes)
        if (shown(el) && (el.scrollWidth > el.clientWidth || el.scrollHeight > el.clientHeight))
            problems.push(`scrolls: ${el.className} holds ${el.scrollWidth} x ${el.scrollHeight} px `
                          + `in ${el.clientWidth} x ${el.clientHeight}`);
    const canvases = [...app.querySelectorAll('img.rwa-grid-canvas')].filter(shown);
    const numbers = canvases.map(img => (img.parentElement.querySelector('.rwa-number') || img).innerText.trim());
    const message = app.querySelector('.rwa-message').getBoundingClientRect();
    const execute = [...app.querySelectorAll('button')].find(b => b.innerText.trim() === 'Execute Change');
    const grid = app.querySelector('.rwa-grid').getBoundingClientRect();
    if (!(execute && message.top >= execute.getBoundingClientRect().bottom && message.bottom <= grid.top))
        problems.push('the status line is not between the controls and the pictures');
    return {problems, numbers, area: [box.left, box.right], columns: new Set(canvases.map(
        img => Math.round(img.getBoundingClientRect().left))).size};
}'''

# Each visible grid canvas scrolled into view: what the page shows at its centre and near its corners.
HIDDEN_CANVASES_JS = '''() => {
    const hidden = [];
    const canvases = [...document.querySelectorAll('.rwa img.rwa-grid-canvas')]
        .filter(img => img.getBoundingClientRect().width > 0);
    canvases.forEach((img, i) => {
        img.scrollIntoView({block: 'center', inline: 'center'});
        const r = img.getBoundingClientRect();
        for (const [fx, fy] of [[0.5, 0.5], [0.04, 0.04], [0.96, 0.04], [0.04, 0.96], [0.96, 0.96]]) {
            const hit = document.elementFromPoint(r.left + fx * r.width, r.top + fy * r.height);
            if (hit !== img) { hidden.push(`canvas ${i} at (${fx}, ${fy}) shows ${hit && hit.className}`); break; }
        }
    });
    return {hidden, count: canvases.length};
}'''


@pytest.fixture
def served_notebook(tmp_path):
    """A fresh copy of the notebook for each page (JupyterLab saves what it opened)."""
    folder = tmp_path
    path = parameterized_copy(NOTEBOOK, folder, SAMPLE_SIZE=60, MASK_DIR=str(folder / 'masks'), RUN_EXAMPLE=False)
    shutil.copy(NOTEBOOK.parent / 'voila.json', folder / 'voila.json')      # as `rewrite notebook` copies it
    return path


def fill_trays(page) -> None:
    """Four context regions (two rows of the tray), a preserve region, a copy and a paste: the trays and the
    copy / paste boxes as a user fills them."""
    from playwright.sync_api import expect
    message = page.locator('.rwa-message')
    canvases = page.locator('img.rwa-grid-canvas')
    button = lambda name: page.get_by_role('button', name=name, exact=True)   # noqa: E731
    for n, index in enumerate((3, 4, 5, 6), 1):
        canvases.nth(index).scroll_into_view_if_needed()
        stroke(page, canvases.nth(index), (0.3, 0.3), (0.5, 0.5))
        button('Add to Context').click()
        expect(message).to_contain_text(f'context: {n} region')
    canvases.nth(7).scroll_into_view_if_needed()
    stroke(page, canvases.nth(7), (0.2, 0.2), (0.4, 0.4))
    button('Add to Preserve').click()
    expect(message).to_contain_text('preserve: 1 region')
    for index, name, said in ((0, 'Copy', 'copied a region of image 0'), (1, 'Paste', 'paste goal in image 1')):
        canvases.nth(index).scroll_into_view_if_needed()
        stroke(page, canvases.nth(index), (0.3, 0.3), (0.55, 0.5))
        button(name).click()
        expect(message).to_contain_text(said)


def check_layout(page, where: str, folder: Path) -> dict:
    """Checks the geometry at each width, the trays and copy / paste boxes filled; returns {width: columns of
    samples}."""
    columns = {}
    fill_trays(page)
    for width in WIDTHS:
        page.set_viewport_size({'width': width, 'height': HEIGHT})
        page.wait_for_timeout(500)                                    # let the reflow settle
        found = page.evaluate(LAYOUT_JS)
        hidden = page.evaluate(HIDDEN_CANVASES_JS)
        shot = folder / f'layout-{where}-{width}.png'
        page.locator('.rwa').screenshot(path=str(shot))
        artifacts = ROOT / 'artifacts'
        artifacts.mkdir(exist_ok=True)
        shutil.copy(shot, artifacts / shot.name)
        assert found['problems'] == [], f'{where} at {width} px: {found["problems"]}'
        assert hidden == {'hidden': [], 'count': 9}, f'{where} at {width} px: {hidden}'
        assert found['numbers'] == [f'#{n}' for n in range(9)], found['numbers']
        columns[width] = found['columns']
    return columns


def test_layout_in_voila(sync_playwright, served_notebook):  # noqa: F811 - the fixture
    from playwright.sync_api import expect
    folder, problems = served_notebook.parent, []
    with serve_voila(served_notebook, server_env(), log=folder / 'voila.log') as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            page = open_page(browser, problems, WIDTHS[0], HEIGHT)
            page.goto(url, timeout=TIMEOUT_MS)
            expect(page.locator('.rwa-message')).to_contain_text(READY, timeout=TIMEOUT_MS)
            columns = check_layout(page, 'voila', folder)
            assert columns[1920] == 3, columns                              # the whole grid beside the tools
            text = page.inner_text('body')                  # no text for notebook users on a Voila page
            assert 'run_example' not in text and 'MODEL' not in text and 'Scripted use' not in text
            assert 'Rewriting a Deep Generative Model' in text and 'Add to Context' in text
        except Exception as error:
            log = (folder / 'voila.log').read_text()[-3000:]
            raise AssertionError(f'{error}\nbrowser console errors: {problems[-10:]}\nvoila log:\n{log}') from error
        finally:
            browser.close()


def test_layout_and_feedback_in_jupyterlab(sync_playwright, served_notebook):  # noqa: F811 - the fixture
    page_in_jupyter(sync_playwright, served_notebook, 'jupyterlab', session_in_jupyterlab)


def test_layout_in_notebook7(sync_playwright, served_notebook):  # noqa: F811 - the fixture
    page_in_jupyter(sync_playwright, served_notebook, 'notebook')


def page_in_jupyter(sync_playwright, notebook: Path, app: str, session=None) -> None:  # noqa: F811
    """Opens the notebook in JupyterLab or Notebook 7, runs all cells (Run > Run All Cells, once the
    kernel is idle), waits for the widget, checks the layout, then runs `session(page, message)`."""
    from playwright.sync_api import expect
    folder, problems = notebook.parent, []
    log = folder / f'{app}.log'
    with serve_jupyterlab(notebook, server_env(), log=log, app=app) as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        page = open_page(browser, problems, WIDTHS[0], HEIGHT)
        # on a slow start JupyterLab may ask which kernel to use (its kernel list came late): the notebook's own
        select_kernel = page.locator('.jp-Dialog', has_text='Select Kernel')
        page.add_locator_handler(select_kernel, lambda dialog: dialog.get_by_role('button', name='Select',
                                                                                  exact=True).click())
        try:
            page.goto(url, timeout=TIMEOUT_MS)
            page.locator('.jp-Notebook .jp-Cell').first.wait_for(timeout=TIMEOUT_MS)
            run_all_cells(page)
            message = page.locator('.rwa-message')
            expect(message).to_contain_text(READY, timeout=TIMEOUT_MS)
            check_layout(page, app, folder)
            if session is not None:
                session(page, message)
        except Exception as error:
            page.remove_locator_handler(select_kernel)      # the report must not wait on the dialog's button
            with contextlib.suppress(Exception):
                page.screenshot(path=str(folder / f'failure-{app}.png'), timeout=10_000)
            dialogs = page.locator('.jp-Dialog').all_inner_texts()
            raise AssertionError(f'{error}\ndialogs: {dialogs}\nbrowser console errors: {problems[-10:]}\n'
                                 f'{app} log:\n{log.read_text()[-3000:]}') from error
        finally:
            browser.close()


def run_all_cells(page, tries: int = 4) -> None:
    """Run > Run All Cells, repeated while no cell starts (a click made before the kernel's session is
    ready is dropped, whatever the kernel indicator shows)."""
    from playwright.sync_api import expect
    started = page.locator('.jp-InputArea-prompt', has_text=re.compile(r'\[(\*|\d+)\]'))
    for attempt in range(tries):
        page.locator('.lm-MenuBar-itemLabel', has_text=re.compile(r'^Run$')).click()
        page.locator('.lm-Menu-itemLabel', has_text=re.compile(r'^Run All Cells$')).click()
        try:
            expect(started.first).to_be_attached(timeout=20_000)
            return
        except AssertionError:
            if attempt == tries - 1:
                raise


def session_in_jupyterlab(page, message) -> None:
    """Copy / paste / Execute Change, then the history and Ctrl+Z with the mouse over the pictures."""
    from playwright.sync_api import expect
    canvases = page.locator('img.rwa-grid-canvas')
    button = lambda name: page.get_by_role('button', name=name, exact=True)   # noqa: E731
    canvases.nth(0).scroll_into_view_if_needed()
    stroke(page, canvases.nth(0), (0.3, 0.3), (0.55, 0.5))
    button('Copy').click()
    expect(message).to_contain_text('copied a region of image 0')
    stroke(page, canvases.nth(1), (0.45, 0.45), (0.7, 0.6))
    button('Paste').click()
    expect(message).to_contain_text('paste goal in image 1')
    button('Execute Change').click()
    expect(message).to_contain_text(re.compile('changed the model|the loss rose'), timeout=TIMEOUT_MS)
    expect(button('Cancel')).to_be_disabled()
    expect(button('Execute Change')).to_be_enabled()
    history = page.locator('.rwa-history .widget-radio-box label')
    expect(history).to_have_count(2)
    expect(page.locator('.rwa-changes')).to_be_visible()
    for width in WIDTHS:                            # the history and the Changes section laid out as well
        page.set_viewport_size({'width': width, 'height': HEIGHT})
        page.wait_for_timeout(500)
        found = page.evaluate(LAYOUT_JS)
        page.locator('.rwa').screenshot(path=str(ROOT / 'artifacts' / f'layout-jupyterlab-executed-{width}.png'))
        assert found['problems'] == [], f'after Execute Change at {width} px: {found["problems"]}'
        lines = page.evaluate('''() => [...document.querySelectorAll('.rwa-history .widget-radio-box label')].map(
            label => [label.getBoundingClientRect().height, label.scrollWidth <= label.clientWidth])''')
        assert all(height > 0 and fits for height, fits in lines), lines    # every state shown, wrapped
    for part in ('changes', 'history'):             # below the pictures: scrolled into view to be seen
        page.locator(f'.rwa-{part}').screenshot(path=str(ROOT / 'artifacts' / f'jupyterlab-{part}.png'))
    expect(history.nth(1)).to_contain_text('edit')
    expect(page.locator('.rwa-loss')).not_to_have_text('')
    cells = page.locator('.jp-Notebook .jp-Cell').count()
    canvases.nth(2).hover()
    page.keyboard.press('Control+z')
    expect(message).to_contain_text('undid the last edit')
    assert page.locator('.jp-Notebook .jp-Cell').count() == cells          # no cell added or removed meanwhile
    expect(history.nth(1)).to_contain_text('undone: edit')
    expect(page.locator('.rwa-loss')).to_have_text('')                     # the undone solve's figures are gone
