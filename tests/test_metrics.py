"""The demo-world measures on small inputs with answers worked out by hand, and the bundled demo edits."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from metrics import common, report
from metrics.demo_edit_files import (
    PROCEDURE,
    bundled_preserve_weight,
    edits_are_current,
    with_preserve_weight,
    write_edit,
)
from metrics.demo_regions import Region, clearest_regions, largest_component, painted, stand_on_base
from metrics.demo_world import goals
from metrics.demo_world_card import EARLY_NOTE, missed_goals_note
from metrics.make_demo_edits import EFFECTIVENESS_TOLERANCE, PLAN, apply_plan, best_setting
from rewrite.core.rewriter import SeqStyleGanRewriter
from rewrite.formats import editfile
from rewrite.formats.settings import PRESERVE_WEIGHT
from utils.demo import CLASSES, load_segmenter
from utils.demo.measures import (
    TOPS,
    class_mask,
    collateral,
    dilate,
    effectiveness,
    feature_change_outside,
    label_change_outside,
    mean_abs_change_outside,
    presence_rates,
    replaced,
    tower,
)
from utils.stylegan2 import SeqStyleGAN2, load_seq_stylegan, save_checkpoint
from utils.zdataset import z_dataset_for_model, z_sample_for_model

ID = {name: i for i, name in enumerate(CLASSES)}


def label_map(rows: list[str]) -> torch.Tensor:
    """A label map from text: one character per pixel (s sky, g ground, b building, w window, o door,
    d dome, p spire, f flattop, t tree, m watermark)."""
    code = dict(s='sky', g='ground', b='building', w='window', o='door', d='dome', p='spire', f='flattop',
                t='tree', m='watermark')
    return torch.tensor([[ID[code[c]] for c in row] for row in rows])


# ---------------------------------------------------------------------------------------------------
# regions
# ---------------------------------------------------------------------------------------------------

def test_dilate_is_a_square_clipped_at_the_border():
    mask = torch.zeros(6, 6, dtype=torch.bool)
    mask[2, 2] = mask[0, 5] = True
    grown = dilate(mask, 1)
    expected = torch.zeros(6, 6, dtype=torch.bool)
    expected[1:4, 1:4] = True
    expected[0:2, 4:6] = True
    assert torch.equal(grown, expected)
    assert torch.equal(dilate(mask, 0), mask)
    assert dilate(mask[None].repeat(3, 1, 1), 2).shape == (3, 6, 6)


def test_tower_is_the_tops_and_the_body_column_below_them():
    labels = label_map([
        'sssssss',
        'ssdsssp',
        'sdddssp',
        'bbbbbbb',
        'bwbbtbb',
        'bbbbbbb',
        'ggggggg',
    ])
    expected = torch.tensor([
        [0, 0, 0, 0, 0, 0, 0],
        [0, 0, 1, 0, 0, 0, 1],
        [0, 1, 1, 1, 0, 0, 1],
        [0, 1, 1, 1, 0, 0, 1],
        [0, 1, 1, 1, 0, 0, 1],
        [0, 1, 1, 1, 0, 0, 1],
        [0, 0, 0, 0, 0, 0, 0],
    ], dtype=torch.bool)
    assert torch.equal(tower(labels), expected)
    assert torch.equal(tower(labels[None].repeat(2, 1, 1)), expected[None].repeat(2, 1, 1))


def test_tower_column_stops_at_another_class():
    labels = label_map([
        'sfs',
        'sbs',
        'sts',
        'sbs',
    ])
    assert tower(labels)[:, 1].tolist() == [True, True, False, False]


# ---------------------------------------------------------------------------------------------------
# measures
# ---------------------------------------------------------------------------------------------------

def test_presence_needs_four_pixels():
    a = label_map(['dddss', 'sssss'])                  # 3 dome pixels: absent
    b = label_map(['dddds', 'sssmm'])                  # 4 dome pixels: present; 2 watermark: absent
    rates = presence_rates(torch.stack([a, b]), ('dome', 'watermark', 'sky'))
    assert rates == {'dome': 0.5, 'watermark': 0.0, 'sky': 1.0}


def test_effectiveness_counts_new_spires_where_domes_were():
    before = torch.stack([
        label_map(['sddss', 'sddss', 'sssss']),       # a dome, becomes a spire: success
        label_map(['sddss', 'sddss', 'sssss']),       # a dome that stays: failure
        label_map(['sssss', 'sssss', 'sssss']),       # no dome: not counted
        label_map(['sddpp', 'sddpp', 'sssss']),       # a dome beside a spire that was there already
    ])
    after = torch.stack([
        label_map(['sppss', 'sppss', 'sssss']),
        label_map(['sddss', 'sddss', 'sssss']),
        label_map(['pppps', 'sssss', 'sssss']),
        label_map(['sddpp', 'sddpp', 'sssss']),
    ])
    eff, n = effectiveness(before, after, ('dome',), 'spire', radius=1)
    assert n == 3
    assert eff == pytest.approx(1 / 3)
    assert replaced(before, after, ('dome',), 'spire', radius=1).tolist() == [True, False, False, False]


def test_collateral_counts_other_tops_turned_without_a_source():
    before = torch.stack([
        label_map(['sffss', 'sffss', 'sssss']),       # a flat top only, becomes a spire: collateral
        label_map(['sffss', 'sffss', 'sssss']),       # a flat top only, stays
        label_map(['sffdd', 'sffdd', 'sssss']),       # flat top beside a dome: not a bystander
        label_map(['sssss', 'sssss', 'sssss']),       # no top at all
    ])
    after = torch.stack([
        label_map(['sppss', 'sppss', 'sssss']),
        label_map(['sffss', 'sffss', 'sssss']),
        label_map(['spppp', 'spppp', 'sssss']),
        label_map(['sssss', 'sssss', 'sssss']),
    ])
    rate, n = collateral(before, after, ('dome',), ('flattop',), 'spire', radius=1)
    assert (rate, n) == (0.5, 2)
    rate, n = collateral(before[3:], after[3:], ('dome',), ('flattop',), 'spire', radius=1)
    assert n == 0 and rate != rate                    # nan: nothing to count


def test_replacement_must_be_near_the_source():
    before = label_map(['d' * 2 + 's' * 8] * 4)[None]
    after = label_map(['d' * 2 + 's' * 2 + 'p' * 2 + 's' * 4] * 4)[None]    # spire 3 px right of the dome
    assert not replaced(before, after, ('dome',), 'spire', radius=2)[0]
    assert replaced(before, after, ('dome',), 'spire', radius=3)[0]


def test_mean_abs_change_outside_by_hand():
    before = torch.zeros(2, 3, 4, 4)
    after = before.clone()
    region = torch.zeros(2, 4, 4, dtype=torch.bool)
    region[0, :2, :2] = True                                  # 4 pixels inside, 28 outside
    after[0, :, :2, :2] = 0.9                                 # inside: ignored
    after[1, 0, 3, 3] = 0.6                                   # outside, one channel
    after[0, 2, 0, 3] = -0.3                                  # outside, one channel
    assert mean_abs_change_outside(before, after, region) == pytest.approx(0.9 / (3 * 28))


def test_label_change_outside_by_hand():
    before = label_map(['ssss', 'gggg'])[None]
    after = label_map(['tsss', 'gggm'])[None]
    region = torch.zeros(1, 2, 4, dtype=torch.bool)
    region[0, 0, 0] = True                                   # the tree is inside; the watermark is outside
    assert label_change_outside(before, after, region) == pytest.approx(1 / 7)


def test_feature_change_outside_ignores_changes_inside():
    segmenter = load_segmenter()
    g = torch.Generator().manual_seed(0)
    before = torch.rand(3, 3, 64, 64, generator=g) * 2 - 1
    region = torch.zeros(3, 64, 64, dtype=torch.bool)
    region[:, 10:30, 10:30] = True
    inside_only = torch.where(region[:, None], -before, before)
    assert feature_change_outside(segmenter, before, inside_only, region) == 0.0
    everywhere = (before + 0.5).clamp(-1, 1)
    assert feature_change_outside(segmenter, before, everywhere, region) > 0.01


def test_class_mask_of_several_classes():
    labels = label_map(['dpfs'])
    assert class_mask(labels, TOPS).tolist() == [[True, True, True, False]]


# ---------------------------------------------------------------------------------------------------
# choosing regions for the bundled edits
# ---------------------------------------------------------------------------------------------------

def test_largest_component_is_a_clear_single_object():
    mask = np.zeros((16, 16), bool)
    mask[2:4, 2:4] = True                  # 4 px, clear
    mask[6:9, 6:9] = True                  # 9 px, clear: chosen
    mask[10:16, 0:3] = True                # 18 px but touches the border
    assert largest_component(mask).sum() == 9
    big = np.zeros((16, 16), bool)
    big[2:12, 2:5] = True                  # 10 rows > half of 16
    assert largest_component(big) is None
    assert largest_component(np.zeros((16, 16), bool)) is None


def test_clearest_regions_are_sorted_and_exclude_images():
    labels = torch.full((3, 8, 8), ID['sky'])
    labels[0, 2:4, 2:4] = ID['dome']                    # 4 px
    labels[1, 2:5, 2:4] = ID['dome']                    # 6 px
    labels[2, 2:5, 2:4] = ID['spire']                   # 6 px, another class
    found = clearest_regions(labels, ('dome',))
    assert [(r.imgnum, r.area) for r in found] == [(1, 6), (0, 4)]
    assert [r.imgnum for r in clearest_regions(labels, ('dome', 'spire'), exclude=(1,))] == [2, 0]


def test_stand_on_base_extends_the_paste_upward_to_the_object_height():
    paste = np.zeros((10, 10), bool)
    paste[6:8, 4:6] = True
    obj = np.zeros((10, 10), bool)
    obj[1:6, 2] = True                                   # 5 rows tall
    expected = np.zeros((10, 10), bool)
    expected[3:8, 4:6] = True
    assert np.array_equal(stand_on_base(paste, obj), expected)
    assert np.array_equal(stand_on_base(paste, obj[:2]), paste)   # a shorter object: unchanged


def test_painted_mask_is_the_dilated_region_at_256():
    mask = np.zeros((64, 64), bool)
    mask[10:12, 20:23] = True
    url = painted(mask, dilate_px=1)
    decoded = editfile.mask_from_url(url, 256).numpy() > 0
    expected = np.kron(dilate(torch.from_numpy(mask), 1).numpy(), np.ones((4, 4))) > 0
    assert np.array_equal(decoded, expected)


def test_best_setting_prefers_effectiveness_then_preservation():
    scores = {(5, 1): {'effectiveness': 0.4, 'mean_abs_change_outside': 0.02},
              (6, 1): {'effectiveness': 0.6, 'mean_abs_change_outside': 0.05},
              (7, 1): {'effectiveness': 0.6, 'mean_abs_change_outside': 0.03},
              (8, 1): {'error': 'the mask selects nothing'}}
    assert best_setting(scores) == (7, 1)
    assert best_setting({(5, 1): {'effectiveness': float('nan'), 'mean_abs_change_outside': 0.0},
                         (6, 1): {'effectiveness': 0.0, 'mean_abs_change_outside': 0.1}}) == (6, 1)
    with pytest.raises(RuntimeError):
        best_setting({(8, 1): {'error': 'no'}})


def test_best_setting_takes_the_least_change_among_the_nearly_most_effective():
    tol = EFFECTIVENESS_TOLERANCE
    scores = {(6, 1): {'effectiveness': 0.50, 'mean_abs_change_outside': 0.02},
              (7, 1): {'effectiveness': 0.70 - tol / 2, 'mean_abs_change_outside': 0.03},
              (7, 2): {'effectiveness': 0.70, 'mean_abs_change_outside': 0.04},
              (7, 3): {'effectiveness': 0.70 - tol / 4, 'mean_abs_change_outside': 0.03},
              (8, 2): {'error': 'rank 2 exceeds the selected pixels'}}
    assert best_setting(scores) == (7, 1)                     # within the tolerance; least change; lower rank
    scores[7, 1]['effectiveness'] = 0.70 - 2 * tol           # now clearly less effective
    assert best_setting(scores) == (7, 3)
    scores[7, 3]['mean_abs_change_outside'] = 0.05
    assert best_setting(scores) == (7, 2)


def test_best_setting_over_preserve_weights_and_the_weight_read_back(tmp_path):
    scores = {(7, 3, 0.1): {'effectiveness': 0.96, 'mean_abs_change_outside': 0.029},
              (7, 4, 1.0): {'effectiveness': 0.94, 'mean_abs_change_outside': 0.020},     # within 5 points
              (7, 3, 3.0): {'effectiveness': 0.80, 'mean_abs_change_outside': 0.015},     # less effective
              (7, 4, 0.3): {'effectiveness': 0.95, 'mean_abs_change_outside': 0.020}}     # tie: lower weight
    assert best_setting(scores) == (7, 4, 0.3)
    del scores[7, 4, 0.3]
    assert best_setting(scores) == (7, 4, 1.0)
    edit = tmp_path / 'e_layer7_rank4.json'
    prov = tmp_path / 'prov.json'
    prov.write_text(json.dumps({'edits': {'e': {'file': report.rel(edit), 'preserve_weight': 1.0}}}))
    assert bundled_preserve_weight('e', edit, prov) == 1.0
    assert bundled_preserve_weight('e', tmp_path / 'e_layer7_rank3.json', prov) == PRESERVE_WEIGHT   # another file
    assert bundled_preserve_weight('other', edit, prov) == PRESERVE_WEIGHT
    assert bundled_preserve_weight('e', edit, tmp_path / 'missing.json') == PRESERVE_WEIGHT


def test_the_chosen_preserve_weight_goes_into_the_file(tmp_path):
    """make_preserve_edits writes the chosen weight right after `preserve`; the bundled
    files with preserve regions carry the weight their provenance records (none recorded: no field)."""
    mask = editfile.encode_mask(np.ones((8, 8), np.float32))
    request = {'paste': [0, mask], 'key': [[1, mask]], 'preserve': [[2, mask]], 'query': [3, mask]}
    weighted = with_preserve_weight(request, 1)
    assert list(weighted) == ['paste', 'key', 'preserve', 'preserve_weight', 'query']
    assert weighted['preserve_weight'] == 1.0 and type(weighted['preserve_weight']) is float
    assert 'preserve_weight' not in request                                      # a copy
    assert list(with_preserve_weight(weighted, 0.3).values())[3] == 0.3          # replaced, in place
    path = write_edit(tmp_path, 'e', 7, 4, weighted)
    assert editfile.load_edit(path).preserve_weight == 1.0
    provenance = report.ROOT / 'metrics' / 'results' / 'demo_preserve_edits.json'
    edits = json.loads(provenance.read_text())['edits']
    assert edits, 'no bundled edits with preserve regions'
    for name, entry in edits.items():
        path = report.ROOT / entry['file']
        text = path.read_text()
        parsed = editfile.load_edit(path)
        assert parsed.preserve_weight == entry.get('preserve_weight'), name
        assert parsed.preserve_weight is None or parsed.preserve_weight == bundled_preserve_weight(name, path)
        assert text == json.dumps(parsed.to_json(), indent=1)                   # the module's writer's layout
    assert edits['erase_watermark_preserve']['preserve_weight'] == 1.0


def test_write_edit_names_the_setting_and_removes_other_settings(tmp_path):
    request = {'paste': [0, editfile.encode_mask(np.ones((8, 8), np.float32))],
               'key': [[1, editfile.encode_mask(np.ones((8, 8), np.float32))]]}
    first = write_edit(tmp_path, 'erase', 7, 1, request)
    assert first.name == 'erase_layer7.json' and common.edit_setting(first) == (7, 1)
    second = write_edit(tmp_path, 'erase', 6, 2, request)
    assert second.name == 'erase_layer6_rank2.json' and common.edit_setting(second) == (6, 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ['erase_layer6_rank2.json']
    assert common.bundled_edit('erase', tmp_path) == second


# ---------------------------------------------------------------------------------------------------
# the scripts' plumbing
# ---------------------------------------------------------------------------------------------------

def test_goals_pass_fail_and_not_measurable():
    fid = {'presence_diff_points': {'dome': -8.0, 'spire': 8.5}}
    speed = {'batch': 32, 'images_per_s': 90.0, 'best_images_per_s': 120.0, 'images_per_cpu_s': 130.0}
    edits = {'dome2spire': {'effectiveness': 0.59, 'mean_abs_change_outside': 0.05},
             'erase_watermark': {'rate_before': 0.05, 'rate_after': 0.0, 'mean_abs_change_outside': 0.031}}
    result = [r['pass'] for r in goals(fid, speed, edits)]
    assert result == [True, False, True, False, True, None, False]


def test_missed_goals_note_only_for_the_checkpoint_it_was_written_for(tmp_path):
    notes = tmp_path / 'MISSED_GOALS.md'
    assert missed_goals_note('abc', notes) == EARLY_NOTE                 # no notes file
    notes.write_text('<!-- checkpoint: abc -->\nTried a lower rank: 0.04.\n')
    text = missed_goals_note('abc', notes)
    assert '## What was tried' in text and 'Tried a lower rank: 0.04.' in text and 'checkpoint:' not in text
    assert missed_goals_note('def', notes) == EARLY_NOTE                 # written for another checkpoint


def test_edit_settings_are_chosen_on_other_zs_than_the_reported_scores():
    """make_demo_edits picks layer and rank on z's that the card and the methods table do not score on."""
    model = SeqStyleGAN2(8, style_dim=16, n_mlp=1, channels={4: 8, 8: 8})
    chosen_on = z_sample_for_model(model, 400, seed=common.SELECTION_SEED)
    scored_on = z_sample_for_model(model, 2000, seed=common.EVAL_SEED)
    edit_sample = z_sample_for_model(model, common.ZSAMPLE, seed=1)
    for other in (scored_on, edit_sample):
        assert torch.cdist(chosen_on, other).min() > 1e-3


def test_snapshot_reads_train_info_once(tmp_path):
    torch.manual_seed(0)
    model = SeqStyleGAN2(8, style_dim=16, n_mlp=1, channels={4: 8, 8: 8})
    path = tmp_path / 'g.pt'
    save_checkpoint(model, path, train_info=json.dumps({'iterations': 250, 'wall_seconds': 60}))
    snap = common.load_snapshot(path)
    assert snap.train_info == {'iterations': 250, 'wall_seconds': 60}
    assert snap.describe()['iterations'] == 250 and len(snap.sha256) == 16
    z = torch.randn(2, 16)
    with torch.no_grad():
        assert torch.allclose(snap.model(1.0)(z), model(z), atol=1e-6)


def test_edit_setting_from_file_name(tmp_path):
    assert common.edit_setting(tmp_path / 'dome2spire_layer6.json') == (6, 1)
    assert common.edit_setting(tmp_path / 'dome2spire_layer8_rank3.json') == (8, 3)
    for bad in ('dome2spire.json', 'dome2spire_rank2.json'):
        with pytest.raises(ValueError, match='does not say its layer'):
            common.edit_setting(tmp_path / bad)
    (tmp_path / 'a_layer5.json').write_text('{}')
    (tmp_path / 'a_layer7_rank2.json').write_text('{}')
    with pytest.raises(FileNotFoundError):
        common.bundled_edit('a', tmp_path)


def test_markdown_cells():
    table = report.markdown_table(['a', 'b'], [[0.12345, True], [float('nan'), None]])
    assert table.splitlines()[2:] == ['| 0.123 | pass |', '| n/a | n/a |']


# ---------------------------------------------------------------------------------------------------
# the bundled edit files
# ---------------------------------------------------------------------------------------------------

@pytest.fixture(scope='module')
def demo_model():
    torch.set_num_threads(1)
    return load_seq_stylegan('demo', truncation=common.EDIT_TRUNCATION)


@pytest.mark.parametrize('name', sorted(PLAN))
def test_bundled_edit_parses_and_applies(name, demo_model):
    path = common.bundled_edit(name)
    request = editfile.load_edit(path, num_images=common.ZSAMPLE)
    assert (request.object is None) == (PLAN[name].object is None)
    assert request.paste is not None and len(request.context) >= 1
    assert all(s.size == 256 for _, s in request.selections())
    layer, rank = common.edit_setting(path)
    gw = SeqStyleGanRewriter(demo_model, z_dataset_for_model(demo_model, common.ZSAMPLE), layer,
                             stats_size=64, progress=False)
    w0 = gw.target_weights().detach().clone()
    record = apply_plan(gw, PLAN[name], json.loads(path.read_text()), rank=rank, solver='fast')
    assert np.isfinite(record.final_loss)
    assert not torch.equal(gw.target_weights(), w0)
    assert torch.isfinite(gw.target_weights()).all()


def test_region_dataclass_area():
    assert Region(3, np.eye(4, dtype=bool)).area == 4


def test_edits_are_current_needs_same_checkpoint_procedure_and_files(tmp_path):
    snap = common.Snapshot(tmp_path / 'g.pt', 'abc123', {})
    path = tmp_path / 'prov.json'

    def write(sha='abc123', procedure=PROCEDURE, file='pyproject.toml'):
        path.write_text(json.dumps({'procedure': procedure, 'checkpoint': {'sha256': sha},
                                    'edits': {'x': {'file': file, 'layer': 6}}}))

    write()
    assert edits_are_current(snap, path)
    write(sha='other')
    assert not edits_are_current(snap, path)
    write(procedure=PROCEDURE - 1)
    assert not edits_are_current(snap, path)
    write(file='no/such/edit_layer6.json')
    assert not edits_are_current(snap, path)
    assert not edits_are_current(snap, tmp_path / 'missing.json')
