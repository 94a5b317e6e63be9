"""The command line and an edit file that records how it was made: no --layer / --rank / --solver needed, a
different --layer applies it there and says so, --edit demo/NAME resolves the bundled edits as the widget's Load
does, another model warns, and the change's damage is printed (a warning above the threshold)."""

from __future__ import annotations

import json

import pytest
import torch
from test_cli import LAYER, ZSAMPLE, edit_json, run, tiny_files

from rewrite.cli import editspec as cli
from rewrite.formats.savededits import notebooks_dir
from utils.generators import load_generator

BUNDLED = notebooks_dir() / 'masks' / 'demo'


@pytest.fixture(scope='module')
def files(tmp_path_factory):
    return tiny_files(tmp_path_factory.mktemp('cli'))


def weights(path) -> dict[str, torch.Tensor]:
    return load_generator(str(path), truncation=0.5).state_dict()


def same_weights(a, b) -> bool:
    wa, wb = weights(a), weights(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def apply(capsys, files, tmp_path, edit, *extra, out='e.pt') -> tuple[int, str, str]:
    return run(capsys, 'apply', '--model', files['ckpt'], '--edit', edit, '--zsample', ZSAMPLE, '--cachedir',
               files['cache'], '--quiet', '--out', tmp_path / out, *extra)


def test_apply_takes_layer_rank_solver_and_options_from_the_file(files, tmp_path, capsys):
    stamped = tmp_path / 'stamped.json'
    stamped.write_text(json.dumps(edit_json() | {'layer': LAYER, 'rank': 2, 'solver': 'original',
                                                 'solver_options': {'niter': 15, 'lr': 0.02}}))
    code, out, err = apply(capsys, files, tmp_path, stamped, out='file.pt')
    assert code == 0, err
    assert f'layer {LAYER}, solver original, rank 2' in out and 'held-out change' in out
    plain = tmp_path / 'plain.json'
    plain.write_text(json.dumps(edit_json()))
    code, _, err = apply(capsys, files, tmp_path, plain, '--layer', LAYER, '--rank', 2, '--solver', 'original',
                         '--niter', 15, out='explicit.pt')
    assert code == 0, err
    # --niter sets the Adam steps; the file's lr is an option of its own: pass it through the API to compare
    code, _, err = apply(capsys, files, tmp_path, stamped, '--layer', LAYER, '--rank', 2, out='same.pt')
    assert code == 0 and same_weights(tmp_path / 'file.pt', tmp_path / 'same.pt')
    without_lr = tmp_path / 'without_lr.json'
    without_lr.write_text(json.dumps(edit_json() | {'layer': LAYER, 'rank': 2, 'solver': 'original',
                                                    'solver_options': {'niter': 15}}))
    code, _, err = apply(capsys, files, tmp_path, without_lr, out='without_lr.pt')
    assert code == 0 and same_weights(tmp_path / 'without_lr.pt', tmp_path / 'explicit.pt')
    assert not same_weights(tmp_path / 'file.pt', tmp_path / 'explicit.pt')     # the file's lr 0.02 was used


def test_a_different_layer_is_applied_and_said_on_stderr(files, tmp_path, capsys):
    stamped = tmp_path / 'stamped.json'
    stamped.write_text(json.dumps(edit_json() | {'layer': LAYER}))
    code, out, err = apply(capsys, files, tmp_path, stamped, '--layer', LAYER - 1)
    assert code == 0, err
    lines = [line for line in err.splitlines() if 'overrides' in line]
    assert len(lines) == 1 and lines[0].startswith('rewrite: warning: ')
    assert f'--layer {LAYER - 1} overrides the layer {LAYER}' in lines[0]
    assert f'layer {LAYER - 1}, solver fast' in out


def test_a_file_without_a_layer_needs_layer(files, tmp_path, capsys):
    code, out, err = apply(capsys, files, tmp_path, files['edit'])
    assert code == 2 and 'records no layer: pass --layer N' in err and out == ''
    assert not (tmp_path / 'e.pt').exists()


def test_another_model_warns_on_stderr(files, tmp_path, capsys):
    other = tmp_path / 'other.json'
    other.write_text(json.dumps(edit_json() | {'layer': LAYER, 'model': {'fingerprint': 'cd' * 32, 'name': 'x'}}))
    code, _, err = apply(capsys, files, tmp_path, other)
    assert code == 0 and 'rewrite: warning: the edit was made on another model (x)' in err


def test_damage_above_the_threshold_is_a_warning_on_stderr(files, tmp_path, capsys, monkeypatch):
    import rewrite.core.damage as damage
    monkeypatch.setattr(damage, 'DAMAGE_THRESHOLD', 0.0)           # every change is damage at threshold 0
    stamped = tmp_path / 'stamped.json'
    stamped.write_text(json.dumps(edit_json() | {'layer': LAYER}))
    code, out, err = apply(capsys, files, tmp_path, stamped)
    assert code == 0
    warned = [line for line in err.splitlines() if 'held-out samples' in line]
    assert len(warned) == 1 and warned[0].startswith('rewrite: warning: the edit changed held-out samples by ')
    assert 'above the damage threshold 0' in out


@pytest.mark.parametrize('name', ['demo/towertop2tree_layer7', 'demo/towertop2tree_layer7.json'])
def test_edit_demo_name_resolves_the_bundled_edit(name):
    assert cli.resolve_edit_path(cli.Path(name)) == BUNDLED / 'towertop2tree_layer7.json'


def test_edit_demo_name_that_does_not_exist_lists_the_bundled(files, tmp_path, capsys):
    code, _, err = apply(capsys, files, tmp_path, 'demo/nope')
    assert code == 2 and 'no bundled edit of that name' in err and 'demo/towertop2tree_layer7' in err
    code, _, err = apply(capsys, files, tmp_path, 'demo/../x')
    assert code == 2 and len(err.splitlines()) == 1


@pytest.mark.slow
def test_a_stamped_bundled_edit_needs_no_arguments_and_gives_the_recorded_settings_weights(tmp_path, capsys):
    """The acceptance: `apply --model demo --edit <bundled>` (no layer, no rank) gives the weights of passing the
    recorded values, and the same as the unstamped file with them, computed here in the same run."""
    bundled = BUNDLED / 'erase_watermark_layer7_rank3.json'
    recorded = json.loads(bundled.read_text())
    assert (recorded['layer'], recorded['rank'], recorded['solver']) == (7, 3, 'fast')
    unstamped = tmp_path / 'unstamped.json'
    unstamped.write_text(json.dumps({k: v for k, v in recorded.items()
                                     if k not in ('layer', 'rank', 'solver', 'model')}))
    common = ['--model', 'demo', '--stats-n', 100, '--cachedir', tmp_path / 'cache', '--quiet']
    code, out, err = run(capsys, 'apply', *common, '--edit', 'demo/erase_watermark_layer7_rank3', '--out',
                         tmp_path / 'bare.pt')
    assert code == 0 and 'layer 7, solver fast, rank 3' in out, err
    assert 'another model' not in err                                        # the demo model's own fingerprint
    code, _, err = run(capsys, 'apply', *common, '--edit', bundled, '--layer', 7, '--rank', 3, '--out',
                       tmp_path / 'explicit.pt')
    assert code == 0, err
    code, _, err = run(capsys, 'apply', *common, '--edit', unstamped, '--layer', 7, '--rank', 3, '--out',
                       tmp_path / 'unstamped.pt')
    assert code == 0, err
    assert same_weights(tmp_path / 'bare.pt', tmp_path / 'explicit.pt')
    assert same_weights(tmp_path / 'bare.pt', tmp_path / 'unstamped.pt')
