"""The widget's Advise panel (rewrite/app/advisepanel.py), driven by clicks as the browser drives it: the sweep
with the app's progress bar, the table against advise() called directly, a clicked row's setting applied."""

from __future__ import annotations

import pytest
import torch
from test_rewriteapp import SIZE, paint, prepare_edit

from rewrite.analysis.advisor import advise
from rewrite.app.advisepanel import AdvisePanel, parse_layers
from rewrite.app.rewriteapp import GanRewriteApp, UserError
from rewrite.core.rewriter import SeqStyleGanRewriter
from utils.stylegan2 import SeqStyleGAN2
from utils.zdataset import z_dataset_for_model

LAYER, HELDOUT = 4, 6


@pytest.fixture(scope='module')
def gw():
    torch.manual_seed(0)
    model = SeqStyleGAN2(32, style_dim=64, n_mlp=2, channels={4: 32, 8: 32, 16: 32, 32: 32})
    return SeqStyleGanRewriter(model.eval(), z_dataset_for_model(model, 24), LAYER, progress=False)


@pytest.fixture
def app(gw, tmp_path):
    gw.revert()
    app = GanRewriteApp(gw, mask_dir=tmp_path / 'masks', size=SIZE, num_canvases=6, background=False)
    app.advise_panel.heldout = HELDOUT
    return app


def weights(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_the_app_shows_the_panel(app):
    assert isinstance(app.advise_panel, AdvisePanel) and app.advise_panel in app.children
    assert app.advise_panel.layers_box.value == '2-6'          # the app's layer 4 and two on either side


def test_advise_shows_the_table_and_a_clicked_row_applies_its_setting(app, gw):
    prepare_edit(app)
    panel = app.advise_panel
    panel.layers_box.value = '4-5'
    before = weights(gw.model)
    panel.advise_btn.click()
    assert 'advice on the unedited model: layer' in app.message, app.message
    assert (app.progress.max, app.progress.value) == (6, 6) and 'advise: layer' in app.loss_label.value
    # the same table as advise() called directly on the same model and request
    expected = advise(gw.model, gw.zds, app.request, layers=[4, 5], ranks=(1, 2, 3), heldout=HELDOUT, progress=False)
    got = panel.advice.table
    assert [(c.layer, c.rank) for c in got] == [(c.layer, c.rank) for c in expected.table]
    assert [c.score for c in got] == pytest.approx([c.score for c in expected.table], nan_ok=True)
    assert len(panel.rows.children) == 6 and len(panel.row_buttons) == 6
    for button, row, cand in zip(panel.row_buttons, panel.rows.children, got, strict=True):
        assert button.description == f'Use L{cand.layer} R{cand.rank}'
        assert f'layer {cand.layer} rank {cand.rank}' in row.children[1].value
    assert all(torch.equal(v, before[k]) for k, v in gw.model.state_dict().items())     # advising changes nothing
    assert panel.advice.sure == expected.sure and panel.advice.doubt == expected.doubt
    assert panel.note.value == ('' if expected.sure else f'<b>not sure:</b> {expected.doubt}'.replace("'", '&#x27;'))

    # a row of the app's own layer: the rank is set, the rewriter stays
    own = next(i for i, c in enumerate(got) if c.layer == LAYER and c.rank != app.rank_box.value)
    panel.row_buttons[own].click()
    assert app.gw is gw and app.rank_box.value == got[own].rank
    assert f'using layer {LAYER} rank {got[own].rank}' in app.message
    # a row of another layer: the app switches to a rewriter of that layer on the same weights and z-sample
    other = next(i for i, c in enumerate(got) if c.layer == 5)
    panel.row_buttons[other].click()
    assert app.gw is not gw and app.gw.layernum == 5 and app.gw.zds is gw.zds
    assert app.rank_box.value == got[other].rank and app.rank_box.max == app.gw.k_shape[1]
    assert all(torch.equal(v, before[k]) for k, v in app.gw.model.state_dict().items())
    # and Execute Change then rewrites layer 5
    app.execute_btn.click()
    assert 'changed the model' in app.message, app.message
    changed = [k for k, v in app.gw.model.state_dict().items() if not torch.equal(v, before[k])]
    assert changed == ['layer5.sconv.mconv.dconv.weight']


def test_an_unsure_advice_says_so_above_the_table(app):
    from rewrite.analysis.advisor import Advice, Candidate
    panel = app.advise_panel
    table = [Candidate(4, 1, fit=0.5, reach=0.1, attain=0.9, leak=0.01, score=2.0),
             Candidate(5, 1, fit=0.5, reach=0.1, attain=0.9, leak=0.01, score=1.9)]
    panel.advice = Advice(table, 6, 17, 1.0, sure=False, doubt='the top settings are within noise <of each other>')
    panel._show_table()
    assert panel.note.value == '<b>not sure:</b> the top settings are within noise &lt;of each other&gt;'
    assert len(panel.rows.children) == 2
    panel.advice = Advice(table, 6, 17, 1.0)
    panel._show_table()
    assert panel.note.value == ''


def test_switching_layers_with_a_change_applied_is_refused(app, gw):
    prepare_edit(app)
    app.advise_panel.layers_box.value = '5'
    app.advise_panel.advise_btn.click()
    app.execute_btn.click()
    assert len(gw.history) == 1
    app.advise_panel.row_buttons[0].click()
    assert app.gw is gw and 'undo or revert the applied changes before switching to layer 5' in app.message


@pytest.mark.parametrize('text, message', [('', 'type the layers'), ('4-x', "'4-x'"), ('9', '9 is not a styled'),
                                           ('5-4', 'runs backwards')])
def test_bad_layers_are_named(app, text, message):
    prepare_edit(app)
    app.advise_panel.layers_box.value = text
    app.advise_panel.advise_btn.click()
    assert message in app.message and app.advise_panel.advice is None


def test_advise_needs_a_paste(app):
    paint(app, 0, [(14, 14), (26, 22)])
    app.context_btn.click()
    app.advise_panel.advise_btn.click()
    assert 'Advise needs paste' in app.message and app.advise_panel.advice is None


def test_parse_layers():
    assert parse_layers('5-7, 3', [2, 3, 4, 5, 6, 7, 8]) == [5, 6, 7, 3]
    assert parse_layers('4,4', [4]) == [4]
    with pytest.raises(UserError, match='layers 2..8'):
        parse_layers('1', [2, 3, 4, 5, 6, 7, 8])
