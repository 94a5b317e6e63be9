"""what a new user meets first: one set of defaults, messages that name the field, the
value and the fix, CLI options (--threads, --stats-n, erase-only files, progress, a warning when an edit
ends worse), and checkpoints that are not quite what the loader expects."""

from __future__ import annotations

import inspect
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_cli import box, edit_json, run, tiny_files
from test_sampling import TINY

from rewrite.app.rewriteapp import GanRewriteApp
from rewrite.cli import common as cli_common
from rewrite.cli import entry as cli
from rewrite.cli import stats as stats_command
from rewrite.core.history import EditRecord
from rewrite.core.rewriter import DEFAULT_SOLVER, SeqStyleGanRewriter
from rewrite.formats.editfile import EditFileError, encode_mask, parse_edit
from rewrite.formats.savededits import SavedEditError, export_path, saved_edit_path
from utils.stylegan2 import CheckpointMismatchError, SeqStyleGAN2, load_seq_stylegan, save_checkpoint
from utils.stylegan2.checkpoint import DEFAULT_TRUNCATION
from utils.zdataset import z_dataset_for_model

LAYER = 6
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
    """test_cli's tiny checkpoint and edit file, an erase-only file and the model itself."""
    d = tmp_path_factory.mktemp('first_use')
    files = tiny_files(d)
    erase = {key: value for key, value in edit_json().items() if key != 'object'}
    (d / 'erase.json').write_text(json.dumps(erase))
    return files | {'erase': d / 'erase.json', 'model': load_seq_stylegan(files['ckpt'], truncation=1.0)}


def parser_default(command: str, option: str):
    sub = next(a for a in cli.build_parser()._actions if a.dest == 'command')
    return next(a.default for a in sub.choices[command]._actions if a.dest == option)


# ---- 1. one set of defaults ------------------------------------------------------------------------

def test_one_solver_default_everywhere():
    assert DEFAULT_SOLVER == 'fast'
    for function in (SeqStyleGanRewriter.insert, GanRewriteApp.__init__):
        assert inspect.signature(function).parameters['solver'].default == DEFAULT_SOLVER, function
    # apply_edit / apply_erase and the commands: None, the edit file's solver, else DEFAULT_SOLVER
    # (tests/test_edit_setting.py and tests/test_cli_setting.py apply files without one: the fast solver)
    for function in (SeqStyleGanRewriter.apply_edit, SeqStyleGanRewriter.apply_erase):
        assert inspect.signature(function).parameters['solver'].default is None, function
    for command in ('sample', 'apply', 'demo'):
        assert parser_default(command, 'solver') is None, command
        sub = next(a for a in cli.build_parser()._actions if a.dest == 'command')
        help_text = next(a.help for a in sub.choices[command]._actions if a.dest == 'solver')
        assert f"the edit file's solver, else {DEFAULT_SOLVER}" in help_text, command


def test_one_truncation_default_for_the_loader_and_the_command_line():
    assert inspect.signature(load_seq_stylegan).parameters['truncation'].default == DEFAULT_TRUNCATION == 0.5
    for command in ('sample', 'apply', 'stats', 'demo', 'advise'):
        assert parser_default(command, 'truncation') == DEFAULT_TRUNCATION, command
    assert load_seq_stylegan('demo').truncation == 0.5


# ---- 3. command line -------------------------------------------------------------------------------

def test_every_command_takes_threads_and_main_restores_them(tiny, tmp_path, capsys, monkeypatch):
    sub = next(a for a in cli.build_parser()._actions if a.dest == 'command')
    for name, command in sub.choices.items():
        assert any(a.dest == 'threads' for a in command._actions), name
    before = torch.get_num_threads()
    seen = []
    monkeypatch.setattr(stats_command, 'run', lambda args, world: seen.append(torch.get_num_threads()))
    assert run(capsys, 'stats', '--model', tiny['ckpt'], '--layer', LAYER, '--threads', 3)[0] == 0
    assert seen == [3] and torch.get_num_threads() == before
    monkeypatch.setenv('OMP_NUM_THREADS', '2')
    assert cli_common.default_threads() == 2
    monkeypatch.delenv('OMP_NUM_THREADS')
    for cpus, expected in [(1, 1), (2, 1), (6, 3), (64, 8), (None, 1)]:
        monkeypatch.setattr(cli_common.os, 'cpu_count', lambda c=cpus: c)
        assert cli_common.default_threads() == expected


def in_memory(tiny, request: dict, zsample: int, stats_size: int | None = None, erase: bool = False):
    model = load_seq_stylegan(tiny['ckpt'])
    gw = SeqStyleGanRewriter(model, z_dataset_for_model(model, zsample), LAYER, progress=False, stats_size=stats_size)
    record = (gw.apply_erase if erase else gw.apply_edit)(request)
    return gw, record


def test_stats_n_gathers_statistics_over_fewer_images_than_the_image_numbers_need(tiny, tmp_path, capsys):
    request = edit_json()
    request['key'][1][0] = 27                                   # image 27: the z-sample must hold 28 images
    (tmp_path / 'far.json').write_text(json.dumps(request))
    common = ['--model', tiny['ckpt'], '--edit', tmp_path / 'far.json', '--layer', LAYER, '--quiet',
              '--cachedir', tmp_path / 'cache']
    code, _, err = run(capsys, 'apply', *common, '--zsample', 20, '--out', tmp_path / 'e.pt')
    assert code == 2 and 'key[1].imgnum: image 27 is outside' in err and '--zsample 28' in err and '--stats-n' in err
    code, _, err = run(capsys, 'apply', *common, '--zsample', 28, '--stats-n', 40, '--out', tmp_path / 'e.pt')
    assert code == 2 and '--stats-n 40 exceeds --zsample 28' in err and not (tmp_path / 'e.pt').exists()
    code, out, _ = run(capsys, 'apply', *common, '--zsample', 28, '--stats-n', 12, '--out', tmp_path / 'e.pt')
    assert code == 0, out
    gw, _ = in_memory(tiny, request, 28, stats_size=12)
    key = f'convs.{LAYER - 3}.conv.weight'
    saved = torch.load(tmp_path / 'e.pt', weights_only=True)
    assert torch.equal(saved['g_ema'][key], gw.model.checkpoint_state_dict()[key])
    assert json.loads(saved['edit_info'])['stats_n'] == 12
    cached = list((tmp_path / 'cache').glob('*.npz'))
    assert len(cached) == 1
    with np.load(cached[0]) as data:                           # 12 images of 16x16 key pixels
        assert int(data['count']) == 12 * 16 * 16


def test_apply_runs_an_erase_only_file_with_a_progress_bar(tiny, tmp_path, capsys):
    out = tmp_path / 'erased.pt'
    code, stdout, err = run(capsys, 'apply', '--model', tiny['ckpt'], '--edit', tiny['erase'], '--layer', LAYER,
                            '--zsample', 20, '--cachedir', tiny['cache'], '--out', out)
    assert code == 0, err
    assert f'erase applied: layer {LAYER}, solver fast' in stdout and 'solving (fast)' in err
    gw, record = in_memory(tiny, json.loads(tiny['erase'].read_text()), 20, erase=True)
    key = f'convs.{LAYER - 3}.conv.weight'
    assert torch.equal(torch.load(out, weights_only=True)['g_ema'][key], gw.model.checkpoint_state_dict()[key])
    assert record.final_loss < record.initial_loss


def test_an_edit_that_ends_worse_is_reported(tiny, tmp_path, capsys, monkeypatch):
    original = SeqStyleGanRewriter.apply_request

    def worse(self, *args, **kwargs):                         # the loss rises (as it can with the original solver)
        record = original(self, *args, **kwargs)
        record.final_loss = record.initial_loss * 1.25
        return record
    monkeypatch.setattr(SeqStyleGanRewriter, 'apply_request', worse)
    code, _, err = run(capsys, 'apply', '--model', tiny['ckpt'], '--edit', tiny['edit'], '--layer', LAYER,
                       '--zsample', 20, '--cachedir', tiny['cache'], '--quiet', '--out', tmp_path / 'w.pt')
    assert code == 0
    warning = next(line for line in err.splitlines() if 'worse' in line)
    assert warning.startswith('rewrite: warning: the edit ended worse than it started') and '--solver' in warning


def test_api_error_for_an_erase_file_names_apply_request(tiny):
    model = tiny['model']
    gw = SeqStyleGanRewriter(model, z_dataset_for_model(model, 20), LAYER, progress=False)
    with pytest.raises(ValueError, match="both 'object'.*apply_request"):
        gw.apply_edit(json.loads(tiny['erase'].read_text()))
    record = gw.apply_request(json.loads(tiny['erase'].read_text()))
    assert record.kind == 'erase'
    shown = repr(record)
    assert len(shown) < 300 and 'data:image' not in shown and str(record) == shown
    assert "kind='erase'" in shown and f'{record.final_loss:.4g}' in shown and 'steps' in shown
    assert shown.startswith('EditRecord(') and 'rolled back' not in shown and 'rose' not in shown
    assert 'loss 0.5 -> 0.5, rolled back' in repr(EditRecord('edit', 'fast', 1, initial_loss=0.5, final_loss=0.5,
                                                             warning='rose', rolled_back=True))


# ---- 4. messages -----------------------------------------------------------------------------------

def test_layer_given_as_a_string_says_so(tiny):
    model = tiny['model']
    with pytest.raises(ValueError, match=r"layer must be an int among 2\.\.8, got the str '6' \(write 6, without"):
        SeqStyleGanRewriter(model, z_dataset_for_model(model, 4), '6')
    with pytest.raises(ValueError, match='got the float 6.0'):
        model.check_layer(6.0)
    model.check_layer(np.int64(6))                            # numpy integers are integers


def test_all_image_numbers_outside_the_z_sample_in_one_message_query_last():
    request = edit_json() | {'query': [900, encode_mask(box(0, 0, 8, 8))]}
    request['paste'][0], request['key'][1][0] = 400, 500
    request = {'query': request.pop('query'), **request}      # query first in the file
    with pytest.raises(EditFileError) as err:
        parse_edit(request, num_images=20)
    message = str(err.value)
    assert message.index('paste.imgnum 400') < message.index('key[1].imgnum 500') < message.index('query.imgnum 900')
    assert '3 image numbers are outside the z-sample of 20 images (0..19)' in message
    assert 'used only for search' in message and 'at least 901 images' in message
    assert err.value.field == 'paste.imgnum'
    with pytest.raises(EditFileError, match=r'^query\.imgnum: image 900 is outside the z-sample of 20 images '
                                            r'\(0\.\.19\) \(query: used only for search\); a z-sample of at least 901'):
        parse_edit(edit_json() | {'query': [900, encode_mask(box(0, 0, 8, 8))]}, num_images=20)


def test_masks_of_any_size_are_resampled_to_the_layer():
    """A 1024 px edit means the same as its 256 px version (masks are fractions of the image)."""
    big, small = np.zeros((1024, 1024)), np.zeros((256, 256))
    big[256:640, 128:512], small[64:160, 32:128] = 1, 1
    for resolution in (8, 16, 32):
        a = parse_edit({'paste': [1, encode_mask(big)]}).paste.mask_at(resolution)
        b = parse_edit({'paste': [1, encode_mask(small)]}).paste.mask_at(resolution)
        assert torch.allclose(a, b, atol=2 / 255)


@pytest.fixture
def bare_state(tiny):
    return tiny['model'].checkpoint_state_dict()


def test_checkpoint_without_latent_avg(bare_state, tmp_path):
    torch.save({'g_ema': bare_state}, tmp_path / 'nolat.pt')
    model = load_seq_stylegan(tmp_path / 'nolat.pt', truncation=1.0)
    assert all(torch.equal(model.checkpoint_state_dict()[k], v) for k, v in bare_state.items())
    with pytest.raises(CheckpointMismatchError) as err:
        load_seq_stylegan(tmp_path / 'nolat.pt', truncation=0.5)
    message = str(err.value)
    assert 'no latent_avg' in message and 'truncation 0.5' in message
    assert 'truncation=1.0' in message and '--truncation 1' in message and 'missing keys' not in message
    code = cli.main(['sample', '--model', str(tmp_path / 'nolat.pt'), '--n', '1', '--out', str(tmp_path / 's'),
                     '--truncation', '1', '--quiet'])
    assert code == 0
    save_checkpoint(model, tmp_path / 'resaved.pt')                 # still without one: no made-up latent_avg
    assert 'latent_avg' not in torch.load(tmp_path / 'resaved.pt', weights_only=True)
    with pytest.raises(CheckpointMismatchError, match='no latent_avg'):
        load_seq_stylegan(tmp_path / 'resaved.pt')
    model.load_state_dict(bare_state, latent_avg=torch.ones(64))    # given one later: saved again
    save_checkpoint(model, tmp_path / 'given.pt')
    assert torch.equal(torch.load(tmp_path / 'given.pt', weights_only=True)['latent_avg'], torch.ones(64))


def test_data_parallel_prefix_is_stripped_with_a_note(bare_state, tmp_path):
    prefixed = {f'module.{k}': v for k, v in bare_state.items()}
    for name, content in [('bare.pt', prefixed), ('wrapped.pt', {'g_ema': prefixed, 'latent_avg': torch.zeros(64)})]:
        torch.save(content, tmp_path / name)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter('always')
            model = load_seq_stylegan(tmp_path / name, truncation=1.0)
        assert any("starts with 'module.'" in str(w.message) and 'removed' in str(w.message) for w in caught)
        assert all(torch.equal(model.checkpoint_state_dict()[k], v) for k, v in bare_state.items())
    model = SeqStyleGAN2(**TINY)
    model.load_state_dict(prefixed, latent_avg=torch.zeros(64))
    assert torch.equal(model.checkpoint_state_dict()['style.1.weight'], bare_state['style.1.weight'])


def test_a_file_that_is_not_a_checkpoint_is_named(tmp_path, capsys):
    Image.new('RGB', (8, 8)).save(tmp_path / 'photo.png')
    (tmp_path / 'edit.json').write_text('{"paste": []}')
    torch.save(torch.nn.Linear(2, 2), tmp_path / 'module.pt')     # a pickled object, not tensors
    expected = {'photo.png': 'is a PNG image, not a model checkpoint', 'edit.json': 'is a JSON or text file',
                'module.pt': 'pickles Python objects other than tensors'}
    for name, says in expected.items():
        with pytest.raises(ValueError) as err:
            load_seq_stylegan(tmp_path / name)
        message = str(err.value)
        assert says in message and 'weights_only' not in message, message
        code, _, stderr = run(capsys, 'sample', '--model', tmp_path / name, '--n', 1, '--out', tmp_path / 'o')
        assert code == 2 and says in stderr and 'weights_only' not in stderr


# ---- 1/5. the widget's saved edits: bundled ones loadable, Export never creates folders ---------------

def test_bundled_edits_are_listed_and_loadable_in_the_widget(tmp_path):
    bundled = ROOT / 'notebooks' / 'masks' / 'demo'
    (tmp_path / 'masks' / 'demo').mkdir(parents=True)
    for path in bundled.glob('*.json'):
        (tmp_path / 'masks' / 'demo' / path.name).write_bytes(path.read_bytes())
    model = load_seq_stylegan('demo')
    gw = SeqStyleGanRewriter(model, z_dataset_for_model(model, 1000), 8, progress=False)
    app = GanRewriteApp(gw, mask_dir=tmp_path / 'masks', size=64, num_canvases=2)
    assert 'demo/dome2spire_layer8_rank3' in app.name_box.options
    assert set(app.saved_names()) == {f'demo/{path.stem}' for path in bundled.glob('*.json')}
    app.name_box.value = 'demo/dome2spire_layer8_rank3'
    app.load_btn.click()
    assert app.message == 'loaded dome2spire_layer8_rank3 (layer 8, rank 3, fast): click Execute Change to apply it'
    saved = json.loads((bundled / 'dome2spire_layer8_rank3.json').read_text())
    assert app.rank_box.value == 3 and app.request['object'] == saved['object']
    app.name_box.value = 'demo/towertop2tree_layer7'
    app.load_btn.click()
    assert 'made for layer 7' in app.message and 'rewrites layer 8' in app.message
    assert 'Switch to layer 7' in app.message
    assert app.execute_btn.disabled and app.switch_layer_btn.description == 'Switch to layer 7'
    for bad in ('../demo/towertop2tree_layer7', '/etc/passwd', 'a/b/c', ''):
        app.name_box.value = bad
        app.load_btn.click()
        assert 'type a name for the edit' in app.message and 'FOLDER/NAME' in app.message, bad


def test_export_path_refuses_a_missing_folder(tmp_path):
    assert export_path(f' {tmp_path / "g.pt"} ') == tmp_path / 'g.pt'
    with pytest.raises(SavedEditError, match=r'the folder .*nowhere does not exist \(Export does not create'):
        export_path(str(tmp_path / 'nowhere' / 'g.pt'))
    with pytest.raises(SavedEditError, match='type the checkpoint file'):
        export_path(str(tmp_path))
    assert not (tmp_path / 'nowhere').exists()
    assert saved_edit_path(tmp_path, 'demo/x.json') == tmp_path / 'demo' / 'x.json'
    assert saved_edit_path(tmp_path, ' demo/my.edit.v2 ') == tmp_path / 'demo' / 'my.edit.v2.json'
    assert saved_edit_path(tmp_path, 'plain') == tmp_path / 'plain.json'


# ---- 5. side effects of the set-up script --------------------------------------------------------

FAKE_PYTHON = """#!/bin/bash
echo "$*" >> "$LOG"
case "$*" in
  "-c import torch") exit ${HAVE_TORCH:-0} ;;
  *"print(torch.__version__)"*) echo 2.13.0 ;;
  *"print(sys.executable)"*) echo /venv/bin/python ;;
esac
exit 0
"""


@pytest.mark.parametrize('have_torch', [True, False])
def test_install_script_names_its_kernel_and_installs_the_cpu_torch(tmp_path, have_torch):
    """setup/install.sh run against a stand-in python that records what it is asked to do."""
    fake = tmp_path / 'python'
    fake.write_text(FAKE_PYTHON)
    fake.chmod(0o755)
    log = tmp_path / 'calls.log'
    env = {'PATH': os.environ['PATH'], 'PYTHON': str(fake), 'LOG': str(log), 'HAVE_TORCH': '0' if have_torch else '1'}
    proc = subprocess.run(['bash', str(ROOT / 'setup' / 'install.sh')], env=env, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    calls = log.read_text().splitlines()
    kernel = [call for call in calls if call.startswith('-m ipykernel install')]
    assert kernel == ["-m ipykernel install --user --name rewrite --display-name Python (rewrite)"]
    assert "installed the Jupyter kernel 'rewrite'" in proc.stdout and 'other kernels are unchanged' in proc.stdout
    torch_installs = [call for call in calls if call.startswith('-m pip install') and 'torch==' in call]
    if have_torch:
        assert torch_installs == [] and 'keeping the installed torch 2.13.0' in proc.stdout
    else:
        assert torch_installs == ['-m pip install -q --retries 1 torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu']


# ---- 6. packaging: an installed copy has what its commands need; a user's utils.py does not shadow ----

USER_UTILS = "X = 'the user\\'s own utils.py'\n"


def run_python(code: str, cwd: Path, python: str = sys.executable) -> subprocess.CompletedProcess:
    env = os.environ | {'PYTHONPATH': str(ROOT), 'OMP_NUM_THREADS': '1'}
    return subprocess.run([python, '-c', code], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_a_users_utils_py_does_not_shadow_the_toolkit(tmp_path):
    (tmp_path / 'utils.py').write_text(USER_UTILS)
    proc = run_python('import rewrite.core.rewriter, utils.stylegan2; print(utils.stylegan2.__file__)', tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(ROOT / 'utils' / 'stylegan2' / '__init__.py')
    assert f"a module named 'utils' ({tmp_path / 'utils.py'}) comes before" in proc.stderr
    assert 'rename your utils.py' in proc.stderr
    proc = run_python('import utils, rewrite', tmp_path)               # the user's utils imported first
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith('ImportError') and str(tmp_path / 'utils.py') in last
    assert 'rename your utils.py' in last and 'import rewrite before it' in last
    proc = run_python('import rewrite, utils; print(utils.__file__)', ROOT)   # no shadow: no warning
    assert proc.returncode == 0 and proc.stderr == '' and proc.stdout.strip() == str(ROOT / 'utils' / '__init__.py')


def test_notebook_command_copies_the_notebook_and_bundled_edits(tmp_path, capsys):
    dest = tmp_path / 'nb'
    code, out, err = run(capsys, 'notebook', dest)
    assert code == 0, err
    source = ROOT / 'notebooks'
    copied = sorted(str(p.relative_to(dest)) for p in dest.rglob('*') if p.is_file())
    bundled = (source / 'masks' / 'demo').glob('*.json')
    expected = ['rewriting-interface.ipynb', 'reflection-rule-change.ipynb', 'voila.json'] + \
        [f'masks/demo/{p.name}' for p in bundled]
    assert copied == sorted(expected) and 'wrote' in out
    assert all((dest / name).read_bytes() == (source / name).read_bytes() for name in expected)
    (dest / 'rewriting-interface.ipynb').write_text('mine')
    code, _, err = run(capsys, 'notebook', dest)
    assert code == 2 and 'already exist' in err and 'nothing was copied' in err
    assert (dest / 'rewriting-interface.ipynb').read_text() == 'mine'


def source_tree(dest: Path) -> Path:
    """The files git tracks (or would: untracked, not ignored), as they are in the working tree."""
    listed = subprocess.run(['git', 'ls-files', '-z', '--cached', '--others', '--exclude-standard'], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout.split('\0')
    for name in filter(None, listed):
        if (ROOT / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dest / name)
    return dest


def dependency_paths() -> list[str]:
    """The running environment's site-packages folders: where its torch, numpy, ... are installed."""
    import site
    import sysconfig
    paths = [sysconfig.get_paths()['purelib'], sysconfig.get_paths()['platlib'], *site.getsitepackages()]
    if site.ENABLE_USER_SITE:
        paths.append(site.getusersitepackages())
    return list(dict.fromkeys(path for path in paths if Path(path).is_dir()))


@pytest.mark.slow
def test_non_editable_install_runs_demo_and_notebook_from_another_folder(tmp_path):
    """pip install . (not editable, build isolation) into a fresh venv of its own, with its own pip.

    The venv has no system site packages (in a venv the "system" is the base interpreter, which need
    not have torch or `wheel`); the package is built by that venv's pip with build isolation (setuptools
    from the package index pip is configured with) and installed with --no-deps; its dependencies come
    from the running environment's site-packages, appended after the venv's own by a .pth file, so the
    package itself is found in the venv only."""
    src = source_tree(tmp_path / 'src')
    venv = tmp_path / 'venv'
    subprocess.run([sys.executable, '-m', 'venv', str(venv)], check=True, timeout=300)
    python, rewrite_cmd = str(venv / 'bin' / 'python'), str(venv / 'bin' / 'rewrite')
    purelib = subprocess.run([python, '-c', 'import sysconfig; print(sysconfig.get_paths()["purelib"])'],
                             capture_output=True, text=True, check=True, timeout=120).stdout.strip()
    build_env = {k: v for k, v in os.environ.items() if k not in ('PYTHONPATH', 'PIP_NO_INDEX')}
    proc = subprocess.run([python, '-m', 'pip', 'install', '-q', '--no-deps', str(src)],
                          capture_output=True, text=True, timeout=900, env=build_env)
    assert proc.returncode == 0, proc.stderr
    (Path(purelib) / 'zz_test_dependencies.pth').write_text('\n'.join(dependency_paths()) + '\n')
    elsewhere = tmp_path / 'elsewhere'
    elsewhere.mkdir()
    (elsewhere / 'utils.py').write_text(USER_UTILS)                    # and a user's utils.py beside it
    env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'} | {'OMP_NUM_THREADS': '1'}
    located = subprocess.run([python, '-c', 'import rewrite, utils.stylegan2; print(rewrite.__file__); '
                              'print(utils.stylegan2.__file__)'], cwd=elsewhere, env=env, capture_output=True,
                             text=True, timeout=300)
    assert located.returncode == 0, located.stderr
    site = str(venv / 'lib')
    assert all(line.startswith(site) for line in located.stdout.split()), located.stdout
    demo = subprocess.run([rewrite_cmd, 'demo', '--stats-n', '50', '--cachedir', 'cache', '--quiet', '--threads', '1'],
                          cwd=elsewhere, env=env, capture_output=True, text=True, timeout=600)
    assert demo.returncode == 0, demo.stderr
    assert 'demo edit' in demo.stdout and 'dome2spire_layer8_rank3' in demo.stdout
    assert (elsewhere / 'demo_before_after.png').is_file()
    notebook = subprocess.run([rewrite_cmd, 'notebook', 'nb'], cwd=elsewhere, env=env, capture_output=True, text=True,
                              timeout=300)
    assert notebook.returncode == 0, notebook.stderr
    assert (elsewhere / 'nb' / 'rewriting-interface.ipynb').read_bytes() == \
        (ROOT / 'notebooks' / 'rewriting-interface.ipynb').read_bytes()
    installed = list(venv.rglob('*-train.pt'))
    assert installed == [], 'the demo GANs\' training state must not be packaged'


# ---- 5. what the README's commands and the notebook write is git-ignored ---------------------------

def readme_outputs(text: str) -> set[str]:
    """Paths the README's commands write: --out/--cachedir/convert targets, .save('...') and save_checkpoint."""
    found = set(re.findall(r'--out (\S+)', text))
    found |= {folder.rstrip('/') + '/' for folder in re.findall(r'--cachedir (\S+)', text)}
    found |= {folder.rstrip('/') + '/' for folder in re.findall(r'rewrite notebook (\S+)', text)}
    found |= set(re.findall(r"(?:\.save|save_checkpoint\(gw\.model,) ?\(?'([^']+)'", text))
    found |= {folder + '/' for folder in re.findall(r'cachedir="([^"]+)"', text)}
    found |= set(re.findall(r'rewrite convert \S+ (\S+)', text))
    found |= {'demo_before_after.png', 'rewrite-notebook/'}   # the defaults of rewrite demo / rewrite notebook
    return {path for path in found if path not in ('DIR', 'FILE')}


def test_readme_commands_and_the_notebook_write_only_ignored_paths():
    if not (ROOT / '.git').exists():
        pytest.skip('not a git checkout')
    written = readme_outputs((ROOT / 'README.md').read_text())
    assert {'samples/', 'edited/', 'edited.pt', 'edited5.png', 'advice/', 'cache/', 'my-notebook/'} <= written
    notebook = ['notebooks/masks/scripted_example.json', 'notebooks/masks/rewritten.pt', 'notebooks/masks/cache/k.npz',
                'notebooks/scratch/glowchurch64-rule-changed.pt']                 # the reflection notebook's OUT
    paths = sorted(p.rstrip('/') + ('/x' if p.endswith('/') else '') for p in written) + notebook
    proc = subprocess.run(['git', 'check-ignore', '--no-index', *paths], cwd=ROOT, capture_output=True, text=True)
    ignored = set(proc.stdout.split())
    assert [p for p in paths if p not in ignored] == []
    bundled = subprocess.run(['git', 'check-ignore', '--no-index', 'notebooks/masks/demo/dome2spire_layer8_rank3.json'],
                             cwd=ROOT, capture_output=True, text=True)
    assert bundled.returncode == 1, 'the bundled edits must stay tracked'


# ---- 5. Voila: kernels of closed pages are shut down (notebooks/voila.json) -------------------------

def voila_kernels(server_pid: int) -> list[int]:
    """Process ids of the kernels a Voila server started (its ipykernel children)."""
    found = []
    for entry in Path('/proc').iterdir():
        try:
            ppid = int((entry / 'stat').read_text().rsplit(')', 1)[1].split()[1])
            command = (entry / 'cmdline').read_bytes()
        except (OSError, ValueError, IndexError):
            continue
        if ppid == server_pid and b'ipykernel' in command:
            found.append(int(entry.name))
    return found


@pytest.mark.slow
@pytest.mark.skipif(not Path('/proc').is_dir(), reason='counts kernel processes through /proc (Linux)')
def test_voila_config_shuts_down_the_kernels_of_closed_pages(tmp_path):
    """notebooks/voila.json, with its timeouts shortened to seconds, culls the kernels of pages no one has
    open (two page loads without a browser: no kernel connection stays)."""
    voila = pytest.importorskip('voila')
    assert voila
    import nbformat
    from browser.voila_server import free_port, serving

    config = json.loads((ROOT / 'notebooks' / 'voila.json').read_text())
    culling = config['MappingKernelManager']
    assert (culling['cull_idle_timeout'], culling['cull_interval'], culling['cull_connected']) == (600, 60, False)
    culling.update(cull_idle_timeout=3, cull_interval=1)
    (tmp_path / 'voila.json').write_text(json.dumps(config))
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell('print(1)')])
    notebook.metadata['kernelspec'] = {'name': 'python3', 'display_name': 'Python 3', 'language': 'python'}
    nbformat.write(notebook, tmp_path / 'page.ipynb')
    port = free_port()
    command = [sys.executable, '-m', 'voila', '--no-browser', f'--port={port}', '--Voila.ip=127.0.0.1', 'page.ipynb']
    with serving(command, port, tmp_path, {'OMP_NUM_THREADS': '1'}, tmp_path / 'voila.log', timeout=120) as process:
        server = process.pid                                   # `python -m voila` itself, the kernels' parent
        for _ in range(2):
            urllib.request.urlopen(f'http://127.0.0.1:{port}/', timeout=300).read()
        assert len(voila_kernels(server)) == 2
        deadline = time.monotonic() + 60
        while voila_kernels(server) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert voila_kernels(server) == [], (tmp_path / 'voila.log').read_text()[-2000:]


def test_advise_takes_stats_n_too(tiny, tmp_path, capsys):
    common = ['advise', '--model', tiny['ckpt'], '--edit', tiny['edit'], '--layers', LAYER, '--ranks', 1,
              '--zsample', 20, '--heldout', 4, '--cachedir', tmp_path / 'cache', '--quiet', '--out', tmp_path / 'adv']
    code, _, err = run(capsys, *common, '--stats-n', 30)
    assert code == 2 and '--stats-n 30 exceeds --zsample 20' in err and not (tmp_path / 'adv').exists()
    code, out, err = run(capsys, *common, '--stats-n', 8)
    assert code == 0, err
    assert json.loads((tmp_path / 'adv' / 'advice.json').read_text())['stats_n'] == 8
    (cached,) = (tmp_path / 'cache').glob('*.npz')
    with np.load(cached) as data:                              # 8 images of 16x16 key pixels
        assert int(data['count']) == 8 * 16 * 16
    from rewrite.analysis.advisor import advise
    from rewrite.core.rewriter import RewriteError
    with pytest.raises(RewriteError, match=r'stats_size: expected 1\.\.20'):
        advise(tiny['model'], z_dataset_for_model(tiny['model'], 20), json.loads(tiny['edit'].read_text()),
               layers=[LAYER], stats_size=0, progress=False)
