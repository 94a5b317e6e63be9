"""An edit file records how it was made (`layer`, `rank`, `solver`, `solver_options`, `model`): each field
validated with an error naming it, round-tripped exactly, ignored by the original tool's reader; the
rewriter uses them (its rank, solver and options when none are passed; another layer refused unless
allow_other_layer; another model warns) and measures every change's damage on held-out samples."""

from __future__ import annotations

import json
import warnings

import pytest
import torch
from test_rewriter import LAYER, box_mask, tiny_model

from rewrite.core.damage import DAMAGE_THRESHOLD
from rewrite.core.rewriter import SeqStyleGanRewriter
from rewrite.core.statistics import weights_fingerprint
from rewrite.formats import editfile
from rewrite.formats.savededits import notebooks_dir
from rewrite.formats.settings import RewriteError
from utils.zdataset import z_dataset_for_model, z_sample_for_model

GOOD = box_mask(256, 64, 64, 160, 160)
OTHER = box_mask(256, 0, 0, 64, 64)
FINGERPRINT = 'ab' * 32
BUNDLED = sorted((notebooks_dir() / 'masks' / 'demo').glob('*.json'))


def request(**extra) -> dict:
    return {'object': [1, GOOD], 'paste': [2, GOOD], 'key': [[2, GOOD]], **extra}


SETTING = {'layer': 7, 'rank': 3, 'solver': 'fast', 'solver_options': {'polish': 100, 'ridges': [0.1, 0.01]},
           'model': {'fingerprint': FINGERPRINT, 'name': 'demo'}}


# ---- the fields ---------------------------------------------------------------------------------------------

def test_setting_fields_parse_and_round_trip_exactly(tmp_path):
    for extra in (SETTING, {'layer': 0}, {'rank': 1, 'solver': 'original',
                                          'solver_options': {'lr': 0.01, 'niter': 50, 'low_rank_gradient': True}},
                  {'model': {'name': 'x', 'fingerprint': FINGERPRINT}}, {'solver': 'linear', 'solver_options': {}}):
        obj = {**extra, **request()} if 'layer' in extra else request(**extra)     # any place in the file
        parsed = editfile.parse_edit(obj)
        assert parsed.to_json() == obj and list(parsed.to_json()) == list(obj)
        assert parsed.setting() == {name: extra[name] for name in editfile.SETTING_FIELDS if name in extra}
        path = tmp_path / 'e.json'
        editfile.save_edit(path, obj)
        text = path.read_text()
        assert text == json.dumps(obj, indent=1)
        editfile.save_edit(tmp_path / 'again.json', editfile.load_edit(path))
        assert (tmp_path / 'again.json').read_text() == text                 # read then written: the same bytes
    # an int option stays an int, a float a float (the text is the same after a round trip)
    parsed = editfile.parse_edit(request(solver='fast', solver_options={'polish_lr': 1, 'max_change': 2.5}))
    assert type(parsed.solver_options['polish_lr']) is int and type(parsed.solver_options['max_change']) is float


def test_files_without_the_fields_read_and_write_as_before():
    parsed = editfile.parse_edit(request())
    assert parsed.setting() == {} and parsed.to_json() == request()
    assert (parsed.layer, parsed.rank, parsed.solver, parsed.solver_options, parsed.model) == (None,) * 5


@pytest.mark.parametrize('extra, field, message', [
    ({'layer': -1}, 'layer', 'must be an int >= 0, got int -1'),
    ({'layer': 7.0}, 'layer', 'must be an int >= 0, got float 7.0'),
    ({'layer': True}, 'layer', 'must be an int >= 0, got bool True'),
    ({'layer': '7'}, 'layer', "must be an int >= 0, got str '7'"),
    ({'layer': None}, 'layer', 'must be an int >= 0, got null'),
    ({'rank': 0}, 'rank', 'must be an int >= 1, got int 0'),
    ({'rank': 2.5}, 'rank', 'must be an int >= 1, got float 2.5'),
    ({'rank': [3]}, 'rank', 'must be an int >= 1, got list [3]'),
    ({'solver': 'adam'}, 'solver', "must be one of fast, original, linear, got str 'adam'"),
    ({'solver': 3}, 'solver', 'must be one of fast, original, linear, got int 3'),
    ({'solver_options': {'polish': 3}}, 'solver_options', 'need the solver field'),
    ({'solver': 'fast', 'solver_options': [1]}, 'solver_options', 'must be an object'),
    ({'solver': 'fast', 'solver_options': {'niter': 3}}, 'solver_options.niter', "not an option of the 'fast'"),
    ({'solver': 'fast', 'solver_options': {'polish': -1}}, 'solver_options.polish', 'must be an int >= 0'),
    ({'solver': 'fast', 'solver_options': {'polish': 2.0}}, 'solver_options.polish', 'must be an int >= 0'),
    ({'solver': 'fast', 'solver_options': {'polish_lr': 0}}, 'solver_options', 'polish_lr must be a finite number > 0'),
    ({'solver': 'fast', 'solver_options': {'polish_lr': float('nan')}}, 'solver_options.polish_lr', 'finite'),
    ({'solver': 'fast', 'solver_options': {'ridges': []}}, 'solver_options.ridges', 'non-empty list'),
    ({'solver': 'fast', 'solver_options': {'ridges': [0.1, 'x']}}, 'solver_options.ridges[1]', 'finite number'),
    ({'solver': 'fast', 'solver_options': {'ridges': [0.1, 0]}}, 'solver_options', 'ridges must be'),
    ({'solver': 'original', 'solver_options': {'low_rank_gradient': 1}}, 'solver_options.low_rank_gradient',
     'must be true or false'),
    ({'solver': 'original', 'solver_options': {'piter': 0}}, 'solver_options', 'piter must be a positive integer'),
    ({'solver': 'linear', 'solver_options': {'lr': -1}}, 'solver_options.lr', 'finite number >= 0'),
    ({'model': 'demo'}, 'model', 'must be an object'),
    ({'model': {}}, 'model.fingerprint', 'is missing'),
    ({'model': {'fingerprint': 'AB' * 32}}, 'model.fingerprint', '64 lowercase hex'),
    ({'model': {'fingerprint': 'ab' * 31}}, 'model.fingerprint', '64 lowercase hex'),
    ({'model': {'fingerprint': FINGERPRINT, 'name': ''}}, 'model.name', '1..200 characters'),
    ({'model': {'fingerprint': FINGERPRINT, 'name': 'x' * 201}}, 'model.name', '1..200 characters'),
    ({'model': {'fingerprint': FINGERPRINT, 'size': 64}}, 'model.size', 'unknown field'),
])
def test_malformed_setting_names_the_field_and_changes_nothing(extra, field, message, tmp_path):
    obj = request(**extra)
    snapshot = repr(obj)
    with pytest.raises(editfile.EditFileError) as err:
        editfile.parse_edit(obj)
    assert err.value.field == field and str(err.value).startswith(f'{field}: ')
    assert message in str(err.value)
    assert repr(obj) == snapshot
    path = tmp_path / 'kept.json'
    editfile.save_edit(path, request())
    before = path.read_bytes()
    with pytest.raises(editfile.EditFileError):
        editfile.save_edit(path, obj)
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ['kept.json']


# ---- the original tool reads the files as before ---------------------------------------------------------------

def original_read(path) -> tuple:
    """What the original tool takes from a saved edit: its UI's load_from_name is `json.load(f)` into the
    request, and its rewriter's apply_edit / apply_erase read `request['object']`, `request['paste']` and
    `request.get('key', [(p_imgnum, p_mask)])` (the UI also shows `query` when present): fields it does not
    know are never looked at."""
    with open(path) as f:
        req = json.load(f)
    p_imgnum, p_mask = req['paste']
    obj = tuple(req['object']) if 'object' in req else None
    keys = [tuple(pair) for pair in req.get('key', [(p_imgnum, p_mask)])]
    return obj, (p_imgnum, p_mask), keys, req.get('query')


def original_save(path, request: dict) -> None:
    """The original UI's save_as_name: json.dump(self.request, f, indent=1)."""
    with open(path, 'w') as f:
        json.dump(request, f, indent=1)


@pytest.mark.parametrize('path', BUNDLED, ids=lambda p: p.stem)
def test_the_original_reader_reads_stamped_files_as_their_regions(path, tmp_path):
    stamped = json.loads(path.read_text())
    regions = {name: value for name, value in stamped.items() if name not in editfile.SETTING_FIELDS}
    original_save(tmp_path / 'regions.json', regions)
    assert original_read(path) == original_read(tmp_path / 'regions.json')
    # what the original writes back after loading a stamped file, this tool reads with the same fields
    original_save(tmp_path / 'resaved.json', json.loads(path.read_text()))
    assert editfile.load_edit(tmp_path / 'resaved.json').to_json() == editfile.load_edit(path).to_json()


# ---- the rewriter uses them -------------------------------------------------------------------------------------

@pytest.fixture(scope='module')
def gw():
    model = tiny_model()
    return SeqStyleGanRewriter(model, z_dataset_for_model(model, 40), LAYER, progress=False)


def weights_after(gw, obj, **options) -> tuple[torch.Tensor, object]:
    """(the rewritten weight, the record) of gw.apply_request(obj, **options), then reverted."""
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', RuntimeWarning)          # damage on a random model: tested below
        record = gw.apply_request(obj, **options)
    weight = gw.target_weights().detach().clone()
    gw.revert()
    return weight, record


@pytest.mark.parametrize('kind', ['edit', 'erase'])
def test_the_files_rank_solver_and_options_are_used_bit_for_bit(gw, kind):
    base = request() if kind == 'edit' else {'paste': [2, GOOD], 'key': [[2, GOOD]]}
    stamped = {**base, 'layer': LAYER, 'rank': 2, 'solver': 'fast', 'solver_options': {'polish': 20}}
    by_file, record = weights_after(gw, stamped)
    explicit, reference = weights_after(gw, base, rank=2, solver='fast', polish=20)
    assert torch.equal(by_file, explicit)
    assert (record.rank, record.solver, record.options, record.layer) == (2, 'fast', reference.options, LAYER)
    # explicit arguments win over the file's
    other, other_record = weights_after(gw, stamped, rank=1, polish=5)
    assert other_record.rank == 1 and other_record.options['polish'] == 5
    assert torch.equal(other, weights_after(gw, base, rank=1, solver='fast', polish=5)[0])
    # the original solver's recorded Adam settings and flags
    adam = {**base, 'rank': 1, 'solver': 'original', 'solver_options': {'niter': 7, 'lr': 0.01, 'piter': 3}}
    by_file, record = weights_after(gw, adam)
    assert torch.equal(by_file, weights_after(gw, base, rank=1, solver='original', niter=7, lr=0.01, piter=3)[0])
    assert record.options['niter'] == 7 and record.options['lr'] == 0.01 and len(record.losses) == 7
    # a file without the fields: rank 1, the fast solver, as before
    plain, plain_record = weights_after(gw, base)
    assert (plain_record.rank, plain_record.solver) == (1, 'fast')
    assert torch.equal(plain, weights_after(gw, base, rank=1, solver='fast')[0])


def test_another_layer_is_refused_naming_both_unless_allowed(gw):
    stamped = request(layer=LAYER + 1, rank=1)
    before = gw.target_weights().detach().clone()
    for apply in (gw.apply_request, gw.apply_edit):
        with pytest.raises(RewriteError, match=f'made for layer {LAYER + 1}.*rewrites layer {LAYER}'):
            apply(stamped)
        assert torch.equal(gw.target_weights(), before) and not gw.history
    with pytest.raises(RewriteError, match=f'layer {LAYER + 1}'):
        gw.apply_request({'key': [[2, GOOD]], 'layer': LAYER + 1})           # context only (zero) too
    with pytest.warns(RuntimeWarning, match=f'made for layer {LAYER + 1} at layer {LAYER}'):
        record = gw.apply_request(stamped, allow_other_layer=True)
    assert record.layer == LAYER and len(gw.history) == 1
    gw.revert()


def test_a_model_fingerprint_mismatch_warns(gw):
    own = gw.model_fingerprint()
    assert own == weights_fingerprint(tiny_model())                        # the weights before any edit
    with warnings.catch_warnings():
        warnings.simplefilter('error', RuntimeWarning)
        warnings.filterwarnings('ignore', message='the edit changed held-out samples')
        gw.apply_request(request(model={'fingerprint': own}))                # the same model: silent
    gw.revert()
    with pytest.warns(RuntimeWarning, match=r'made on another model \(church\).*image numbers mean other images'):
        gw.apply_request(request(model={'fingerprint': FINGERPRINT, 'name': 'church'}))
    gw.revert()


def test_setting_records_what_the_widget_and_cli_write(gw):
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', RuntimeWarning)
        record = gw.apply_request(request(), rank=2, solver='fast', polish=20)
    setting = gw.setting(record)
    gw.revert()
    assert setting == {'layer': LAYER, 'rank': 2, 'solver': 'fast', 'solver_options': {'polish': 20},
                       'model': {'fingerprint': gw.model_fingerprint()}}
    again, _ = weights_after(gw, {**request(), **setting})
    assert torch.equal(again, weights_after(gw, request(), rank=2, solver='fast', polish=20)[0])


# ---- damage, measured after every change -------------------------------------------------------------------------

def test_every_change_records_its_damage_against_an_independent_computation(gw):
    from rewrite.core.damage import ACTS_AT
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        record = gw.apply_request(request(), rank=1)
    probe = gw.damage_probe
    # independently: render the held-out samples from z with the original and the edited weights
    z = z_sample_for_model(gw.model, probe.samples, seed=probe.seed)
    after = gw.model(z).double()
    with gw.original_model():
        before = gw.model(z).double()
    keys = gw.context_model(z).fmap.double()                                 # [n, I, h, w]
    d = record.context.double()
    response = torch.einsum('ri,nihw->nrhw', d, keys).norm(dim=1)
    ctx_keys, ctx_weights = gw.keys_and_weights([(2, GOOD)])
    own = (ctx_keys.double() @ d.t()).norm(dim=1)[ctx_weights > 0]
    acts = (response >= ACTS_AT * own.median()).double()[:, None]
    acts = torch.nn.functional.max_pool2d(acts, 3, 1, 1)
    acts = torch.nn.functional.interpolate(acts, size=before.shape[-2:], mode='nearest')[:, 0] > 0
    change = (after - before).abs().mean(1)
    expected = change[~acts].mean().item()
    assert record.heldout_change == pytest.approx(expected, rel=1e-4, abs=1e-6)
    paste = editfile.mask_from_url(GOOD, before.shape[-1]).double()
    z_paste = gw.get_z(2)
    after_paste = gw.model(z_paste).double()
    with gw.original_model():
        before_paste = gw.model(z_paste).double()
    inside = ((after_paste - before_paste).abs().mean(1)[0] * paste).sum() / paste.sum()
    assert record.paste_change == pytest.approx(inside.item(), rel=1e-4, abs=1e-6)
    assert record.damage_threshold == DAMAGE_THRESHOLD
    damaged = record.heldout_change > DAMAGE_THRESHOLD
    assert bool(record.damage_warning) == damaged
    warned = [str(w.message) for w in caught if 'held-out samples' in str(w.message)]
    assert warned == ([record.damage_warning] if damaged else [])
    assert 'held-out change' in repr(record)
    gw.revert()


def test_a_second_change_reuses_the_renders_of_the_first_and_measures_the_same():
    """The probe keeps the renders of the weights a change ended at, keyed by their SHA-256: the next change
    renders once instead of twice, a change that ends at kept weights renders nothing, other weights are rendered
    anew; every kept render equals a fresh render of the same weights, bit for bit."""
    from rewrite.core.damage import DamageProbe
    model = tiny_model()
    gw = SeqStyleGanRewriter(model, z_dataset_for_model(model, 40), LAYER, progress=False)
    probe = gw.damage_probe
    other = request(paste=[3, OTHER], key=[[3, OTHER]])
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', RuntimeWarning)
        first = gw.apply_request(request(), rank=1)
        assert probe.rendered == 2
        gw.apply_request(other, rank=1)
        assert probe.rendered == 4                     # another paste image: renders are keyed by it too
        third = gw.apply_request(other, rank=1)
        assert probe.rendered == 5                     # starts where the last change ended: one render
        gw.undo()
        again = gw.apply_request(other, rank=1)        # the third change again, from the same weights
        assert probe.rendered == 5 and again.heldout_change == third.heldout_change
        fresh = DamageProbe(gw.pieces)                 # keeps nothing
        keys, now = fresh.before(3)
        assert torch.equal(now, probe.renders[(probe.state(), 3)][1])
        with torch.no_grad():
            gw.target_weights().add_(0.01)             # weights no change ended at
        assert not torch.equal(probe.before(3)[1], now) and probe.rendered == 6
        assert torch.equal(probe.before(3)[1], fresh.render(keys)) and probe.rendered == 6
    assert first.heldout_change is not None


def test_damage_above_the_threshold_warns_and_at_or_below_it_does_not():
    from rewrite.core.damage import Damage
    for heldout, threshold, damaged in ((0.02, 0.05, False), (0.05, 0.05, False), (0.0501, 0.05, True)):
        damage = Damage(heldout, 0.5, 8, 0.1, threshold=threshold)
        assert damage.exceeds == damaged and bool(damage.warning('erase')) == damaged
    warning = Damage(0.148, 0.5, 8, 0.1, threshold=0.05).warning('erase')
    assert warning.startswith('the erase changed held-out samples by 0.148') and 'threshold 0.05' in warning
    assert Damage(0.1, 0.4, 8, 0.1).ratio == pytest.approx(0.25) and Damage(0.1, None, 8, 0.1).ratio is None


def test_a_context_only_request_zeroes_the_rule_and_records_its_damage(gw):
    obj = {'key': [[2, GOOD], [3, OTHER]], 'layer': LAYER, 'rank': 2}
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', RuntimeWarning)
        record = gw.apply_request(obj)
    assert (record.kind, record.rank, record.layer) == ('zero', 2, LAYER)
    assert record.heldout_change is not None and record.paste_change is None and record.request == obj
    gw.revert()


def test_damage_can_be_switched_off(gw):
    model = tiny_model()
    quiet = SeqStyleGanRewriter(model, z_dataset_for_model(model, 40), LAYER, progress=False, damage_samples=0)
    with warnings.catch_warnings():
        warnings.simplefilter('error', RuntimeWarning)
        record = quiet.apply_request(request(), rank=1)
    assert record.heldout_change is None and record.damage_warning == ''
    with pytest.raises(RewriteError, match='damage_samples'):
        SeqStyleGanRewriter(model, z_dataset_for_model(model, 40), LAYER, progress=False, damage_samples=-1)


# ---- the bundled edits carry the fields --------------------------------------------------------------------

def test_the_bundled_edits_are_their_regions_stamped_with_the_demo_models_setting(tmp_path):
    from metrics.demo_edit_files import stamp_edits
    from utils.generators import load_generator
    fingerprint = weights_fingerprint(load_generator('demo', truncation=0.5))
    for path in BUNDLED:
        recorded = editfile.load_edit(path)
        layer, rank = editfile.setting_from_name(path)
        assert recorded.setting() == {'layer': layer, 'rank': rank, 'solver': 'fast',
                                      'model': {'fingerprint': fingerprint, 'name': 'demo'}}
        regions = {k: v for k, v in recorded.to_json().items() if k not in editfile.SETTING_FIELDS}
        editfile.save_edit(tmp_path / path.name, regions)
    stamped = stamp_edits(tmp_path, fingerprint)
    assert [p.name for p in stamped] == [p.name for p in BUNDLED]
    for path in BUNDLED:                                       # stamping the regions gives the bundled bytes
        assert (tmp_path / path.name).read_bytes() == path.read_bytes()
