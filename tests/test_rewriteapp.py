"""GanRewriteApp driven like the browser drives it: ipyevents mouse messages on the canvases and
button clicks, with the real rewriter on a small random model."""

from __future__ import annotations

import io
import json
import shutil

import numpy as np
import pytest
import torch
from conftest import REFERENCE, need_shared
from PIL import Image

from rewrite.app.events import dispatch_dom_event, drag, key_message, mouse_message
from rewrite.app.rewriteapp import GanRewriteApp, format_image_numbers, parse_image_numbers, shift_mask
from rewrite.core.rewriter import SeqStyleGanRewriter
from rewrite.formats import editfile
from rewrite.formats.registry import SOLVERS
from utils.stylegan2 import SeqStyleGAN2, load_seq_stylegan
from utils.zdataset import z_dataset_for_model

SIZE = 64           # canvas side (masks are painted at this resolution)
LAYER = 4           # an 8x8 conv of the 32 px model
NUM_IMAGES = 24


def tiny_app_model() -> SeqStyleGAN2:
    """The 32 px model of the widget tests (seed 0, noise strengths 0.1), in eval mode."""
    torch.manual_seed(0)
    model = SeqStyleGAN2(32, style_dim=64, n_mlp=2, channels={4: 32, 8: 32, 16: 32, 32: 32})
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith('noise.weight'):
                p.fill_(0.1)
    return model.eval()


@pytest.fixture(scope='module')
def gw():
    model = tiny_app_model()
    return SeqStyleGanRewriter(model, z_dataset_for_model(model, NUM_IMAGES), LAYER, progress=False)


@pytest.fixture
def app(gw, tmp_path):
    gw.revert()
    return GanRewriteApp(gw, mask_dir=tmp_path / 'masks', size=SIZE, num_canvases=6, niter=40, background=False)


def paint(app: GanRewriteApp, index: int, points) -> None:
    drag(app.canvases[index].events, points, shown_size=SIZE)


def shown(widget) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(widget.value)).convert('RGB'), dtype=np.float32)


def grid_pictures(app: GanRewriteApp) -> list[bytes]:
    return [canvas.value for canvas in app.canvases]


def press(app: GanRewriteApp, key: str, **modifiers) -> None:
    """A keydown over the pictures, as ipyevents sends it."""
    dispatch_dom_event(app.key_events, key_message(key, **modifiers))


def region(url: str) -> np.ndarray:
    return editfile.mask_from_url(url, SIZE).numpy() > 0


def prepare_edit(app: GanRewriteApp) -> None:
    """Copy from sample 0, paste into sample 1, sample 1's region as context."""
    paint(app, 0, [(14, 14), (26, 22)])
    app.copy_btn.click()
    paint(app, 1, [(40, 40), (48, 44)])
    app.paste_btn.click()
    app.context_btn.click()


# ---- helpers --------------------------------------------------------------------------------------------
@pytest.mark.parametrize('text, expected', [
    ('200-203', [200, 201, 202, 203]), ('5,9,12', [5, 9, 12]), (' 1-2 , 7,3-4', [1, 2, 7, 3, 4]),
    ('0-999', list(range(6))), ('7', [7])])
def test_parse_image_numbers(text, expected):
    assert parse_image_numbers(text, num_images=1000, limit=6) == expected


@pytest.mark.parametrize('text, complaint', [('', 'type image numbers'), ('5-x', "'5-x'"), ('9-3', 'backwards'),
                                             ('998-1002', 'beyond'), ('-4', "'-4'")])
def test_parse_image_numbers_names_the_problem(text, complaint):
    from rewrite.app.rewriteapp import UserError
    with pytest.raises(UserError, match=complaint):
        parse_image_numbers(text, num_images=1000, limit=6)


def test_format_image_numbers():
    assert format_image_numbers([3, 4, 5, 9, 11, 12]) == '3-5,9,11-12'
    assert parse_image_numbers(format_image_numbers([8, 1, 2, 3]), 100, 10) == [8, 1, 2, 3]


def test_shift_mask_moves_and_crops():
    mask = np.zeros((8, 8), np.float32)
    mask[1:3, 1:3] = 1
    moved = shift_mask(mask, 4, 5)
    assert moved[5:7, 6:8].all() and moved.sum() == 4
    assert shift_mask(mask, 0, -2).sum() == 2


# ---- painting and selections ----------------------------------------------------------------------------
def test_grid_shows_the_samples_and_painting_selects_one(app, gw):
    assert app.sel == list(range(6)) and app.numbers_box.value == '0-5'
    expected = np.asarray(gw.render_image(2).resize((SIZE, SIZE), Image.BICUBIC), dtype=np.float32)
    assert np.abs(shown(app.canvases[2]) - expected).mean() < 6          # JPEG of the model's image 2
    paint(app, 3, [(10, 10), (20, 20)])
    assert app.current == 3 and not app.canvases[3].is_empty
    paint(app, 4, [(30, 30)])
    assert app.current == 4 and app.canvases[3].is_empty                 # one selection at a time
    app.clear_btn.click()
    assert app.canvases[4].is_empty and app.current is None


def test_copy_paste_and_context_build_the_request(app):
    prepare_edit(app)
    object_imgnum, object_url = app.request['object']
    paste_imgnum, paste_url = app.request['paste']
    assert (object_imgnum, paste_imgnum) == (0, 1)
    assert region(object_url)[18, 20] and not region(object_url)[45, 45]
    assert region(paste_url)[42, 44] and not region(paste_url)[18, 20]
    assert [k[0] for k in app.request['key']] == [1]
    assert app.request['key'][0][1] == paste_url
    assert len(app.tray.children) == 1
    copy_view, paste_view = shown(app.copy_canvas), shown(app.paste_canvas)
    assert copy_view.shape == (48, 48, 3) and paste_view.std() > 1
    assert 'paste goal in image 1' in app.message or 'context' in app.message


def test_context_tray_adds_replaces_and_removes_by_click(app):
    for index in (0, 2, 4):
        paint(app, index, [(20, 20), (30, 30)])
        app.context_btn.click()
    paint(app, 2, [(50, 50)])
    app.context_btn.click()                                              # image 2 again: replaced in place
    assert [k[0] for k in app.request['key']] == [0, 2, 4]
    assert region(app.request['key'][1][1])[50, 50]
    thumb = app.tray.children[1]
    dispatch_dom_event(thumb.events, {'event': 'click', 'relativeX': 5, 'relativeY': 5, 'target': {}})
    assert [k[0] for k in app.request['key']] == [0, 2, 4] and 'rwa-thumb-selected' in thumb._dom_classes
    assert 'selected context image 2' in app.message
    press(app, 'Delete')                                                  # the key, with the mouse over the pictures
    assert [k[0] for k in app.request['key']] == [0, 4] and len(app.tray.children) == 2
    assert not any('rwa-thumb-selected' in t._dom_classes for t in app.thumbs) and app.selected_context is None
    press(app, 'Delete')
    assert 'select a context picture first' in app.message and len(app.tray.children) == 2
    for _ in range(2):
        dispatch_dom_event(app.tray.children[0].events, {'event': 'click', 'target': {}})
        app.remove_btn.click()
    assert 'key' not in app.request and app.tray.children == ()


def test_clicking_the_paste_canvas_moves_the_paste(app):
    prepare_edit(app)
    before = app.paste_canvas.value
    drag(app.paste_canvas.events, [(12, 12)], shown_size=48)             # the paste canvas is 3/4 size
    rows, cols = np.nonzero(region(app.request['paste'][1]))
    assert abs((rows.min() + rows.max()) / 2 - 16) <= 1.5 and abs((cols.min() + cols.max()) / 2 - 16) <= 1.5
    assert app.paste_canvas.value != before and app.paste_canvas.is_empty
    assert 'moved the paste' in app.message


def test_painting_the_copy_canvas_edits_the_copied_region(app):
    prepare_edit(app)
    drag(app.copy_canvas.events, [(40, 6)], shown_size=48)
    assert region(app.request['object'][1])[8, 53]
    dispatch_dom_event(app.copy_canvas.events, mouse_message('mousedown', 0, 0, 48, ctrlKey=True))
    app.copy_canvas.mask[:] = 0                                           # as if all of it were erased
    dispatch_dom_event(app.copy_canvas.events, mouse_message('mouseup', 0, 0, 48))
    assert 'object' not in app.request and app.message == 'the copy was cleared'


# ---- rewriting --------------------------------------------------------------------------------------------
def test_execute_change_rewrites_and_repaints(app, gw):
    prepare_edit(app)
    app.clear_btn.click()
    before = grid_pictures(app)
    losses = []
    original_apply = gw.apply_edit

    def spy(request, update_callback=None, **kwargs):
        def callback(it, loss):
            losses.append(float(loss))
            update_callback(it, loss)
        return original_apply(request, update_callback=callback, **kwargs)

    gw.apply_edit = spy
    try:
        app.execute_btn.click()
    finally:
        del gw.apply_edit
    assert app.message.startswith('changed the model'), app.message
    assert len(losses) == SOLVERS['fast'].steps(40) and app.progress.layout.visibility == 'hidden'
    assert app.loss_label.value.startswith(f'{len(losses)} steps, loss')
    after = grid_pictures(app)
    assert sum(a != b for a, b in zip(before, after, strict=True)) >= 1
    expected = np.asarray(gw.render_image(1).resize((SIZE, SIZE), Image.BICUBIC), dtype=np.float32)
    assert np.abs(shown(app.canvases[1]) - expected).mean() < 6          # repainted from the rewritten model
    assert len(gw.history) == 1 and app.history_box.value == 1 and 'edit' in app.history_box.label

    app.original_btn.click()                                              # the unedited model again
    assert grid_pictures(app) == before and app.original_btn.description == 'Toggle Changed'
    app.original_btn.click()
    assert grid_pictures(app) == after

    app.execute_btn.click()
    assert len(gw.history) == 2 and len(app.history_box.options) == 3
    app.undo_btn.click()
    assert len(gw.history) == 1 and grid_pictures(app) == after and 'undid' in app.message
    assert app.loss_label.value == ''                          # the undone solve's figures are gone
    app.redo_btn.click()
    assert app.loss_label.value == ''
    app.execute_btn.click()
    assert app.loss_label.value.startswith(f'{len(losses)} steps, loss')
    app.revert_btn.click()
    assert app.loss_label.value == ''
    assert gw.history == [] and grid_pictures(app) == before and len(app.history_box.options) == 1
    assert app.history_box.layout.display == 'none'
    app.undo_btn.click()
    assert 'nothing to undo' in app.message


def test_execute_settings_reach_the_rewriter(app, gw, monkeypatch):
    prepare_edit(app)
    seen = {}

    def fake_apply(request, **kwargs):
        seen.update(kwargs, request=request)
        raise RuntimeError('boom')

    monkeypatch.setattr(gw, 'apply_edit', fake_apply)
    app.rank_box.value, app.lr_box.value, app.niter_box.value = 2, 0.01, 7
    app.solver_box.value = 'original'
    app.execute_btn.click()                                               # must not raise
    assert {k: seen[k] for k in ('rank', 'lr', 'niter', 'solver')} == dict(rank=2, lr=0.01, niter=7, solver='original')
    assert seen['request'] == app.request and seen['request'] is not app.request
    assert app.message == 'Execute Change failed: RuntimeError: boom'
    assert app.progress.layout.visibility == 'hidden'


def test_iteration_controls_follow_the_solver(app):
    assert app.solver_box.value == 'fast' and app.niter_box.disabled and app.piter_box.disabled
    app.solver_box.value = 'original'
    assert not app.niter_box.disabled and not app.piter_box.disabled
    assert SOLVERS['original'].steps(123) == 123


def test_set_request_from_code(app):
    prepare_edit(app)
    request = dict(app.request)
    other = GanRewriteApp(app.gw, mask_dir=app.mask_dir, size=SIZE, num_canvases=6)
    other.set_request(request)
    assert other.request == request and other.paste_canvas.value == app.paste_canvas.value
    other.set_request({'paste': [99, request['paste'][1]]})
    assert 'outside the z-sample' in other.message and other.request == request


def test_erase_uses_the_paste_region_and_context(app, gw):
    paint(app, 2, [(20, 20), (40, 40)])
    app.paste_btn.click()
    app.context_btn.click()
    app.erase_btn.click()
    assert app.message.startswith('erased'), app.message
    assert gw.history[-1][0].kind == 'erase'


def test_erase_zeroes_as_many_units_as_the_setting_says(app, gw, monkeypatch):
    assert app.drank_box.value == min(30, gw.k_shape[1]) and app.drank_box.max == gw.k_shape[1]
    asked = []
    real = gw.normdissect_units
    monkeypatch.setattr(gw, 'normdissect_units', lambda pairs, rank: asked.append(rank) or real(pairs, rank))
    paint(app, 2, [(20, 20), (40, 40)])
    app.paste_btn.click()
    app.context_btn.click()
    app.drank_box.value = 3
    app.erase_btn.click()
    assert app.message.startswith('erased'), app.message
    assert asked == [3]


def test_search_and_matches(app, gw):
    paint(app, 2, [(20, 20), (40, 40)])
    app.context_btn.click()
    app.search_btn.click()
    key = gw.multi_key_from_selection(app.request['key'], rank=1)[0]
    assert app.sel == gw.ranking_for_key(key, k=6)[0]
    assert app.numbers_box.value == format_image_numbers(app.sel)
    plain = grid_pictures(app)
    app.matches_btn.click()
    assert app.showing_matches and grid_pictures(app) != plain
    app.matches_btn.click()
    assert grid_pictures(app) == plain

    paint(app, 0, [(10, 10), (20, 20)])
    app.match_btn.click()
    query = gw.query_key_from_selection(*app.request['query'])
    assert app.sel == gw.ranking_for_key(query, k=6)[0]


def test_image_number_box(app):
    app.numbers_box.value = '20-23, 2'
    assert app.sel == [20, 21, 22, 23, 2]
    assert app.canvases[5].layout.display == 'none'
    app.numbers_box.value = '2,99'
    assert app.sel == [20, 21, 22, 23, 2] and 'beyond the z-sample' in app.message


@pytest.mark.parametrize('button, complaint', [
    ('copy_btn', 'nothing is selected'), ('paste_btn', 'nothing is selected'), ('context_btn', 'nothing is selected'),
    ('match_btn', 'nothing is selected'), ('search_btn', 'no context'), ('matches_btn', 'no context'),
    ('execute_btn', 'needs object and paste'), ('erase_btn', 'needs paste'), ('save_btn', 'type a name'),
    ('load_btn', 'type a name'), ('undo_btn', 'nothing to undo')])
def test_user_errors_show_a_message(app, button, complaint):
    getattr(app, button).click()
    assert complaint in app.message and 'color:#b00020' in app.message_line.value


def test_regions_too_small_for_the_layer_are_refused_with_a_reason(app):
    prepare_edit(app)
    speck = np.zeros((1024, 1024), np.float32)
    speck[500, 500] = 1                                  # vanishes at the 8x8 layer (as in the original)
    app.request['object'] = [0, editfile.encode_mask(speck)]
    app.execute_btn.click()
    assert 'object.mask: selects nothing at the 8x8' in app.message


# ---- files ------------------------------------------------------------------------------------------------
def test_save_and_load_round_trip(app, gw, tmp_path):
    prepare_edit(app)
    paint(app, 3, [(30, 30)])
    app.match_btn.click()
    app.name_box.value = 'my_edit'
    app.save_btn.click()
    path = tmp_path / 'masks' / 'my_edit.json'
    assert app.message == f'saved {path} (layer {LAYER}, rank 1, fast)'
    setting = {'layer': LAYER, 'rank': 1, 'solver': 'fast', 'model': {'fingerprint': gw.model_fingerprint()}}
    assert editfile.load_edit(path).to_json() == {**app.request, **setting}     # the regions, then how it was made
    assert json.loads(path.read_text()) == {**app.request, **setting}
    assert 'my_edit' in app.name_box.options

    other = GanRewriteApp(gw, mask_dir=tmp_path / 'masks', size=SIZE, num_canvases=6)
    other.name_box.value = 'my_edit'
    other.load_btn.click()
    assert other.request == app.request and 'loaded my_edit' in other.message
    assert len(other.tray.children) == 1 and other.paste_canvas.value == app.paste_canvas.value
    other.name_box.value = 'nope'
    other.load_btn.click()
    assert "no saved edit named 'nope'" in other.message


def test_files_of_the_original_tool_load_apply_and_save_identically(app, tmp_path):
    source = need_shared(REFERENCE / 'original-edits' / 'church' / 'spire2square.json')
    shutil.copy(source, tmp_path / 'masks.json')
    app.mask_dir.mkdir(parents=True)
    shutil.copy(source, app.mask_dir / 'spire2square.json')
    app.name_box.value = 'spire2square'
    app.load_btn.click()
    original = json.loads(source.read_text())
    assert app.request == original and list(app.request) == list(original)
    app.execute_btn.click()
    assert app.message.startswith('changed the model'), app.message
    app.name_box.value = 'copy_of_spire2square'
    app.save_btn.click()
    saved = (app.mask_dir / 'copy_of_spire2square.json').read_text()
    setting = app.edit_setting()
    assert json.loads(saved) == {**original, **setting}             # the regions as they were, then the setting
    assert saved == json.dumps({**original, **setting}, indent=1)
    assert saved.startswith(source.read_text()[:-2])                  # the original's bytes, up to its closing ]}


def test_a_files_preserve_weight_is_loaded_previewed_executed_and_saved(app, gw):
    """Load keeps the file's `preserve_weight`, Preview and Execute Change use it, Save
    writes it back byte for byte; removing the last preserve region drops it, so the saved file stays valid."""
    from rewrite.formats.settings import PRESERVE_WEIGHT
    weight = 30.0
    plain = {'object': [0, box_url(0.2, 0.2, 0.45, 0.45)], 'paste': [1, box_url(0.5, 0.5, 0.8, 0.8)],
             'key': [[1, box_url(0.5, 0.5, 0.8, 0.8)]], 'preserve': [[3, box_url(0, 0, 0.5, 1)]]}
    app.mask_dir.mkdir(parents=True)
    source = app.mask_dir / 'weighted.json'
    editfile.save_edit(source, {**plain, 'preserve_weight': weight})
    app.name_box.value = 'weighted'
    app.load_btn.click()
    assert app.request == {**plain, 'preserve_weight': weight} and 'loaded weighted' in app.message
    assert app.preserve_panel.weight == weight
    # Preview: the context direction chosen against the preserve keys at the file's weight
    imgnums = list(app.sel)
    context_maps, _ = app.preserve_panel.preview_maps(imgnums)
    keep = [tuple(pair) for pair in plain['preserve']]

    def maps_at(w):
        direction = gw.multi_key_from_selection(plain['key'], rank=1, preserve_pairs=keep, preserve_weight=w)[0]
        return gw.key_response_maps(direction, imgnums)
    assert torch.equal(context_maps, maps_at(weight)) and not torch.equal(context_maps, maps_at(PRESERVE_WEIGHT))
    # Execute Change: the record keeps the file's weight; the same weights as passing it explicitly
    app.execute_btn.click()
    assert app.message.startswith('changed the model'), app.message
    record = gw.history[-1][0]
    assert record.preserve_weight == weight and record.request['preserve_weight'] == weight
    executed = layer_weight(gw)
    gw.revert()
    gw.apply_edit(plain, preserve_weight=weight, **app._settings())
    assert torch.equal(layer_weight(gw), executed)
    gw.revert()
    gw.apply_edit(plain, **app._settings())
    assert not torch.equal(layer_weight(gw), executed)                 # the default weight gives another edit
    gw.revert()
    # Save writes it back: the same bytes as the loaded file, then how the edit is made here
    app.name_box.value = 'copy'
    app.save_btn.click()
    saved = (app.mask_dir / 'copy.json').read_text()
    assert saved.startswith(source.read_text()[:-2]) and json.loads(saved) == {**json.loads(source.read_text()),
                                                                               **app.edit_setting()}
    # the last preserve region removed: the weight goes with it, and the file saves without either
    app.preserve_panel.remove(0)
    assert 'preserve' not in app.request and 'preserve_weight' not in app.request
    app.name_box.value = 'no_preserve'
    app.save_btn.click()
    assert json.loads((app.mask_dir / 'no_preserve.json').read_text()) == {
        **{name: value for name, value in plain.items() if name != 'preserve'}, **app.edit_setting()}


def test_loading_a_file_with_unknown_images_explains(app):
    source = need_shared(REFERENCE / 'original-edits' / 'church' / 'dome2spire.json')
    app.mask_dir.mkdir(parents=True)
    shutil.copy(source, app.mask_dir / 'dome2spire.json')
    app.name_box.value = 'dome2spire'
    app.load_btn.click()
    assert 'outside the z-sample' in app.message and app.request == {}


def test_bad_names_and_broken_files(app):
    prepare_edit(app)
    app.name_box.value = '../escape'
    app.save_btn.click()
    assert 'type a name' in app.message and not app.mask_dir.exists()
    app.mask_dir.mkdir(parents=True)
    (app.mask_dir / 'broken.json').write_text('{"paste": [1, "data:image/png;base64,xx"]}')
    app.name_box.value = 'broken'
    app.load_btn.click()
    assert 'paste' in app.message and 'color:#b00020' in app.message_line.value
    assert app.request['object'][0] == 0                                   # the current edit is kept


def test_export_writes_a_loadable_checkpoint(app, gw, tmp_path):
    prepare_edit(app)
    app.execute_btn.click()
    app.export_box.value = str(tmp_path / 'out' / 'rewritten.pt')
    app.export_btn.click()                                 # a missing folder is an error, never created
    assert 'the folder' in app.message and 'does not exist' in app.message and not (tmp_path / 'out').exists()
    (tmp_path / 'out').mkdir()
    app.export_btn.click()
    assert 'exported' in app.message
    model = load_seq_stylegan(tmp_path / 'out' / 'rewritten.pt', truncation=1.0)     # as the test model
    z = gw.get_zs([1, 2])
    with torch.no_grad():
        assert torch.allclose(model(z), gw.sample_image_from_latent(z), atol=1e-5)
    app.export_box.value = ''
    app.export_btn.click()
    assert 'type the checkpoint file' in app.message


def test_export_asks_before_replacing_and_offers_a_download(app, gw, tmp_path):
    import base64
    import html as htmllib
    import re

    from rewrite.app.parts import download_link
    path = tmp_path / 'rewritten.pt'
    path.write_bytes(b'mine')
    app.export_box.value = str(path)
    app.export_btn.click()                                 # the file exists: asks first, writes nothing
    assert path.read_bytes() == b'mine' and app.confirm_row.layout.display is None
    assert app.message == f'rewritten.pt already exists in {tmp_path}: click Overwrite to replace it, or Keep'
    app.keep_btn.click()
    assert path.read_bytes() == b'mine' and 'kept rewritten.pt: type another file name' in app.message
    assert app.download_link.value == ''
    app.export_btn.click()
    app.overwrite_btn.click()
    assert app.message == f'exported the rewritten generator to {path}' and path.read_bytes() != b'mine'
    # the link carries the file itself (a data: URL: no server needed, as on a Voila page)
    link = re.fullmatch(r'<a download="rewritten.pt" href="data:application/octet-stream;base64,([A-Za-z0-9+/=]+)" '
                        r'title="[^"]*">download rewritten.pt \(\d+\.\d MB\)</a>', app.download_link.value)
    assert link and base64.b64decode(link[1]) == path.read_bytes()
    assert download_link(path, limit=path.stat().st_size - 1) == ''          # too big for a page: no link
    odd = tmp_path / 'a"<b>.pt'
    odd.write_bytes(b'x')
    assert 'download="a&quot;&lt;b&gt;.pt"' in download_link(odd) and htmllib.unescape('&quot;') == '"'


# ---- honest feedback, long solves, history and shortcuts ---------------------------------------
def layer_weight(gw) -> torch.Tensor:
    return gw.target_weights().detach().clone()


def test_image_numbers_label_the_canvases(app):
    assert [label.value for label in app.number_labels] == [f'#{n}' for n in range(6)]
    app.numbers_box.value = '20-23, 2'
    assert [label.value for label in app.number_labels[:5]] == ['#20', '#21', '#22', '#23', '#2']
    assert app.cells[5].layout.display == 'none' and app.cells[4].layout.display is None


def test_a_loss_that_rose_is_a_warning_not_a_success(app, gw, monkeypatch):
    prepare_edit(app)
    real = gw.apply_edit

    def worse(request, **kwargs):
        record = real(request, **kwargs)
        record.initial_loss, record.final_loss = 0.1226, 0.1559          # as measured on the demo model
        return record

    monkeypatch.setattr(gw, 'apply_edit', worse)
    app.execute_btn.click()
    assert app.message.startswith('the loss rose (loss 0.1226 -> 0.1559'), app.message
    assert 'changed the model' not in app.message and 'Undo removes it' in app.message
    assert '#8a4b00' in app.message_line.value and '#1b5e20' not in app.message_line.value
    assert '(rose)' in app.history_box.label

    def rolled_back(request, **kwargs):                                   # what the rewriter does past its tolerance
        record = real(request, **kwargs)
        gw.undo()
        record.initial_loss, record.final_loss, record.rolled_back = 0.1, 0.3, True
        return record

    monkeypatch.setattr(gw, 'apply_edit', rolled_back)
    app.execute_btn.click()
    assert app.message.startswith('the loss rose (loss 0.1 -> 0.3') and 'rolled back: the model is as it was' \
        in app.message and '#8a4b00' in app.message_line.value


def wait_until(condition, seconds: float = 60.0) -> None:
    import time
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, 'timed out'
        time.sleep(0.01)


def test_cancel_stops_a_running_solve_and_leaves_the_model_as_it_was(gw, tmp_path):
    gw.revert()
    app = GanRewriteApp(gw, mask_dir=tmp_path, size=SIZE, num_canvases=6, solver='original', niter=100000)
    prepare_edit(app)
    weight, pictures = layer_weight(gw), grid_pictures(app)
    app.execute_btn.click()                                               # a click: solved in a worker thread
    try:
        wait_until(lambda: app.progress.value > 0)                        # inside the solver's steps
        assert app.solving == 'Execute Change' and not app.cancel_btn.disabled
        assert app.execute_btn.disabled and app.undo_btn.disabled and app.numbers_box.disabled
        assert app.canvases[0].disabled and app.history_box.disabled and app.name_box.disabled
        assert 'rwa-busy' in app._dom_classes                             # the pictures look inactive
        live = [w for w in app._controls() if not w.disabled]             # panels added by others included
        assert live == [] and len(app._controls()) > 30, live
        app.original_btn.click()                                          # clicked mid-run: refused, not queued
        assert 'Toggle Original was not carried out: Execute Change is still running' in app.message
        paint(app, 2, [(5, 5), (20, 20)])                                 # painting is ignored too
        assert app.canvases[2].is_empty
        app.cancel_btn.click()
        assert app.wait(60)
    finally:
        app.cancel_requested.set()
        app.wait(60)
    assert torch.equal(layer_weight(gw), weight) and gw.history == []
    assert app.message == 'Execute Change cancelled: the model is as it was', app.message
    assert not app.showing_original and grid_pictures(app) == pictures  # the mid-run click was not replayed
    assert not app.execute_btn.disabled and not app.niter_box.disabled and app.cancel_btn.disabled
    assert app.progress.layout.visibility == 'hidden' and 'rwa-busy' not in app._dom_classes
    app.cancel_btn.click()
    assert 'nothing to cancel' in app.message


def test_a_background_solve_restores_the_controls_as_they_were(gw, tmp_path):
    gw.revert()
    app = GanRewriteApp(gw, mask_dir=tmp_path, size=SIZE, num_canvases=6)
    prepare_edit(app)
    app.execute_btn.click()
    assert app.wait(120)
    assert app.message.startswith('changed the model') and len(gw.history) == 1
    assert app.niter_box.disabled and app.piter_box.disabled                # still the fast solver's
    assert not app.execute_btn.disabled and not app.canvases[0].disabled and app.cancel_btn.disabled


def test_rewriter_redo_restores_the_exact_weights(gw):
    gw.revert()
    request = {'object': [0, box_url(0.2, 0.2, 0.5, 0.5)], 'paste': [1, box_url(0.4, 0.4, 0.7, 0.7)]}
    original = layer_weight(gw)
    gw.apply_edit(request, solver='fast')
    first = layer_weight(gw)
    gw.apply_edit(request, rank=2, solver='fast')
    second = layer_weight(gw)
    assert gw.undo().rank == 2 and torch.equal(layer_weight(gw), first)
    assert gw.undo().rank == 1 and torch.equal(layer_weight(gw), original)
    assert gw.undo() is None and gw.redo().rank == 1 and torch.equal(layer_weight(gw), first)
    assert gw.redo().rank == 2 and torch.equal(layer_weight(gw), second) and gw.redo() is None
    gw.undo()
    gw.apply_edit(request, solver='fast')                                 # a new edit forgets the undone one
    assert gw.redo() is None and len(gw.history) == 2
    gw.undo()
    gw.revert()
    assert gw.undone == [] and gw.history == [] and torch.equal(layer_weight(gw), original)


def box_url(top: float, left: float, bottom: float, right: float) -> str:
    mask = np.zeros((SIZE, SIZE), np.float32)
    mask[int(top * SIZE):int(bottom * SIZE), int(left * SIZE):int(right * SIZE)] = 1
    return editfile.encode_mask(mask)


def test_shortcuts_redo_and_the_clickable_history(app, gw):
    prepare_edit(app)
    original = layer_weight(gw)
    app.execute_btn.click()
    first, first_pictures = layer_weight(gw), grid_pictures(app)
    app.rank_box.value = 2
    app.execute_btn.click()
    second = layer_weight(gw)
    assert [value for _, value in app.history_box.options] == [0, 1, 2] and app.history_box.value == 2
    assert app.history_box.layout.display is None                         # every state listed, one entry a line

    press(app, 'z', ctrlKey=True)                                         # Ctrl+Z: undo
    assert len(gw.history) == 1 and torch.equal(layer_weight(gw), first) and grid_pictures(app) == first_pictures
    assert 'undone: edit' in app.history_box.options[2][0] and app.history_box.value == 1
    press(app, 'Z', ctrlKey=True, shiftKey=True)                          # Ctrl+Shift+Z: redo
    assert len(gw.history) == 2 and torch.equal(layer_weight(gw), second) and 'redid the edit' in app.message

    app.history_box.value = 0                                             # a click on 'the original model'
    assert gw.history == [] and torch.equal(layer_weight(gw), original) and len(app.history_box.options) == 3
    app.history_box.value = 2                                             # ... and on the last change
    assert len(gw.history) == 2 and torch.equal(layer_weight(gw), second) and app.message == 'now at change 2 of 2'
    app.history_box.value = 1
    press(app, 'y', ctrlKey=True)                                         # Ctrl+Y: redo
    assert torch.equal(layer_weight(gw), second)
    press(app, 'y', ctrlKey=True)
    assert 'nothing to redo' in app.message
    app.go_to(7)
    assert 'no state 7; there are 0..2' in app.message and len(gw.history) == 2
    press(app, 'z')                                                       # no Ctrl: nothing happens
    assert len(gw.history) == 2


def test_save_asks_before_overwriting_a_saved_edit(app):
    prepare_edit(app)
    app.name_box.value = 'mine'
    app.save_btn.click()
    path = app.mask_dir / 'mine.json'
    first = path.read_bytes()
    assert app.confirm_row.layout.display == 'none'
    paint(app, 4, [(10, 10), (30, 30)])
    app.context_btn.click()
    app.save_btn.click()                                                  # the name exists: asks first
    assert path.read_bytes() == first and app.confirm_row.layout.display is None
    assert app.message == (f'mine.json already exists in {app.mask_dir}: click Overwrite to replace it, or Keep')
    assert app.confirm_label.value == ''                          # one message, not the same twice
    app.keep_btn.click()
    assert path.read_bytes() == first and app.confirm_row.layout.display == 'none' and 'kept mine.json' in app.message
    app.save_btn.click()
    app.overwrite_btn.click()
    assert app.message == f'saved {path} (layer {LAYER}, rank 1, fast)' and app.confirm_row.layout.display == 'none'
    assert editfile.load_edit(path).to_json() == {**app.request, **app.edit_setting()} and path.read_bytes() != first
    app.overwrite_btn.click()
    assert 'nothing to overwrite' in app.message
