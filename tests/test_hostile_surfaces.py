"""Hostile input on the newer surfaces: `rewrite convert` and NVlabs .pkl files, repeated interrupts during an
edit, the statistics cache folder, preserve fields, `rewrite advise` and `rewrite notebook`. Each case gets
a clear error naming the file or field and what was expected (or the right behaviour), no traceback, the
user's files byte-identical and the weights bit-identical."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REFERENCE, need_shared

ROOT = Path(__file__).resolve().parents[1]
PKL = REFERENCE / 'oracle' / 'ada64.pkl'


def clean_env() -> dict:
    """A child's environment: variables other tests leave behind must not change what it does."""
    return {'PATH': os.environ.get('PATH', ''), 'HOME': os.environ.get('HOME', '/'), 'PYTHONPATH': str(ROOT),
            'OMP_NUM_THREADS': '1'}


def run_child(script: str, *args: str, timeout: int = 600) -> str:
    done = subprocess.run([sys.executable, '-c', script, *args], cwd=ROOT, env=clean_env(), capture_output=True,
                          text=True, timeout=timeout)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def cli(capsys, *argv) -> tuple[int, str, str]:
    from rewrite import __main__ as main
    code = main.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(code: int, err: str) -> None:
    assert code == 2 and err.count('\n') == 1 and err.startswith('rewrite: error:'), err
    assert 'Traceback' not in err


# ---- `rewrite convert`: the destination is checked before any work -----------------------------------

@pytest.fixture()
def pkl_copy(tmp_path) -> Path:
    path = tmp_path / 'snapshot.pkl'
    shutil.copyfile(need_shared(PKL), path)
    return path


@pytest.fixture()
def no_conversion(monkeypatch):
    """Fails the test if the conversion (loading the pickle) starts."""
    from rewrite import __main__ as main

    def refuse(*args, **kwargs):
        raise AssertionError('the conversion started before the destination was checked')
    monkeypatch.setattr(main, 'load_model', refuse)


@pytest.mark.parametrize('how', ['same', 'hardlink', 'symlink', 'relative'])
def test_convert_onto_its_own_source_is_refused(tmp_path, pkl_copy, capsys, monkeypatch, no_conversion, how):
    data = pkl_copy.read_bytes()
    dest = {'same': pkl_copy, 'hardlink': tmp_path / 'link.pkl', 'symlink': tmp_path / 'sym.pt',
            'relative': Path('.') / pkl_copy.name}[how]
    if how == 'hardlink':
        os.link(pkl_copy, dest)
    elif how == 'symlink':
        dest.symlink_to(pkl_copy)
    monkeypatch.chdir(tmp_path)
    code, _, err = cli(capsys, 'convert', pkl_copy, dest)
    one_line_error(code, err)
    assert 'is the source file' in err and str(dest) in err
    assert pkl_copy.read_bytes() == data
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted({pkl_copy.name, dest.name})


@pytest.mark.parametrize('case', ['folder', 'under_a_file', 'proc', 'device'])
def test_convert_destinations_that_cannot_be_written_are_refused_first(tmp_path, pkl_copy, capsys, no_conversion,
                                                                       case):
    (tmp_path / 'a-folder').mkdir()
    (tmp_path / 'plain').write_text('x')
    dest = {'folder': tmp_path / 'a-folder', 'under_a_file': tmp_path / 'plain' / 'out.pt',
            'proc': Path('/proc/out.pt'), 'device': Path('/dev/null')}[case]
    expected = {'folder': 'is a folder, expected a file name', 'under_a_file': 'is not a folder',
                'proc': 'is not writable', 'device': 'is not a regular file'}[case]
    code, _, err = cli(capsys, 'convert', pkl_copy, dest)
    one_line_error(code, err)
    assert expected in err and 'DEST' in err, err
    assert (tmp_path / 'plain').read_text() == 'x' and not any((tmp_path / 'a-folder').iterdir())


def test_convert_still_writes_a_new_file(tmp_path, pkl_copy, capsys):
    import torch
    data = pkl_copy.read_bytes()
    code, out, err = cli(capsys, 'convert', pkl_copy, tmp_path / 'out.pt')
    assert code == 0 and 'wrote' in out, err
    assert pkl_copy.read_bytes() == data
    assert set(torch.load(tmp_path / 'out.pt', weights_only=True)) >= {'g_ema', 'latent_avg'}


# ---- repeated interrupts during an edit -------------------------------------------------------------

SIGINT_TRIALS = r'''
import os, random, signal, sys, threading, time
sys.path.insert(0, 'tests')
import torch
from test_hostile_input import _edit_setup

niter, seed, trials, gap = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
gw, request = _edit_setup()
_ = gw.stats
before = {n: t.clone() for n, t in gw.model.state_dict().items()}
durations = []
for _ in range(2):
    t0 = time.perf_counter()
    gw.apply_edit(request, solver='original', niter=niter)
    durations.append(time.perf_counter() - t0)
    gw.revert()
duration = min(durations)
rng = random.Random(seed)


def send(offset):
    time.sleep(offset)
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(gap)
    os.kill(os.getpid(), signal.SIGINT)


def settle(thread):
    """Waits for the sender, absorbing a second interrupt that arrives after apply_edit has returned."""
    while True:
        try:
            thread.join()
            time.sleep(0.02)
            return
        except KeyboardInterrupt:
            continue


for trial in range(trials):
    thread = threading.Thread(target=send, args=(rng.uniform(0.05, 0.9) * duration,))
    outcome = 'done'
    try:
        try:
            thread.start()
            gw.apply_edit(request, solver='original', niter=niter)
        except KeyboardInterrupt:
            outcome = 'interrupted'
        settle(thread)
    except KeyboardInterrupt:
        settle(thread)
    same = all(torch.equal(t, before[n]) for n, t in gw.model.state_dict().items())
    print('TRIAL', outcome, 'same' if same else 'changed', len(gw.history), flush=True)
    gw.revert()
'''


@pytest.mark.slow
def test_two_interrupts_at_random_offsets_leave_the_weights_bit_identical():
    """20 trials: two SIGINTs 0.3 ms apart at a random point of an `original` solve. An interrupted edit
    leaves every weight bit-identical and no history; one that finished first is committed whole."""
    out = run_child(SIGINT_TRIALS, '100', '7', '20', '0.0003')
    trials = [line.split()[1:] for line in out.splitlines() if line.startswith('TRIAL')]
    assert len(trials) == 20, out
    for outcome, weights, history in trials:
        assert (outcome, weights, history) in {('interrupted', 'same', '0'), ('done', 'changed', '1')}, out
    assert any(outcome == 'interrupted' for outcome, _, _ in trials), out


SIGINT_IN_RESTORE = r'''
import os, signal, sys, time
sys.path.insert(0, 'tests')
import torch
from test_hostile_input import _edit_setup
from rewrite.history import EditHistory

gw, request = _edit_setup()
before = {n: t.clone() for n, t in gw.model.state_dict().items()}
restore = EditHistory._restore


def restore_under_fire(self, saved):          # a second SIGINT exactly as the restore begins
    os.kill(os.getpid(), signal.SIGINT)
    restore(self, saved)


EditHistory._restore = restore_under_fire
for source in ('signal', 'callback'):
    def interrupt(it, loss):
        if it == 5:
            if source == 'callback':
                raise KeyboardInterrupt
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)
    try:
        try:
            gw.apply_edit(request, solver='original', niter=50, update_callback=interrupt)
            print('RESULT', source, 'finished')
        except KeyboardInterrupt:
            same = all(torch.equal(t, before[n]) for n, t in gw.model.state_dict().items())
            print('RESULT', source, 'interrupted', 'same' if same else 'changed', len(gw.history))
    except KeyboardInterrupt:
        print('RESULT', source, 'escaped')
'''


def test_a_second_interrupt_during_the_restore_waits_for_it():
    out = run_child(SIGINT_IN_RESTORE)
    assert 'RESULT signal interrupted same 0' in out, out
    assert 'RESULT callback interrupted same 0' in out, out


# ---- the statistics cache folder --------------------------------------------------------------------

def _rewriter(cachedir):
    sys.path.insert(0, str(ROOT / 'tests'))
    from test_rewriter import LAYER, tiny_model

    from rewrite.ganrewrite import SeqStyleGanRewriter
    from utils.zdataset import z_dataset_for_model
    model = tiny_model()
    return SeqStyleGanRewriter(model, z_dataset_for_model(model, 16), LAYER, cachedir=cachedir, progress=False)


def _unusable_cache(tmp_path, case: str) -> Path:
    """A cache folder (or, for 'file_is_folder', a folder whose cache file name is taken by a folder)."""
    (tmp_path / 'plain').write_text('x')
    if case.startswith('dangling'):
        (tmp_path / 'gone').symlink_to(tmp_path / 'nowhere')
    if case == 'file_is_folder':
        from rewrite.statistics import cache_filename
        (tmp_path / 'cache' / cache_filename(_rewriter(None).cache_meta())).mkdir(parents=True)
    return {'file': tmp_path / 'plain', 'under_a_file': tmp_path / 'plain' / 'cache', 'read_only': Path('/proc/cache'),
            'dev_null': Path('/dev/null'), 'dangling': tmp_path / 'gone', 'dangling_parent': tmp_path / 'gone' / 'c',
            'file_is_folder': tmp_path / 'cache'}[case]


def _tree(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else None for p in sorted(folder.rglob('*'))}


CACHE_CASES = ['file', 'under_a_file', 'read_only', 'dev_null', 'dangling', 'dangling_parent', 'file_is_folder']


@pytest.mark.parametrize('case', CACHE_CASES)
def test_an_unwritable_cache_is_found_before_the_pass_and_the_statistics_kept(tmp_path, monkeypatch, case):
    import warnings

    import torch

    import rewrite.contextkeys as contextkeys
    cachedir = _unusable_cache(tmp_path, case)
    before = _tree(tmp_path)
    gather = contextkeys.gather_key_statistics
    gw = _rewriter(cachedir)
    with warnings.catch_warnings(record=True) as seen:
        def gather_after_the_check(*args, **kwargs):
            assert seen, 'the statistics pass started before the cache folder was checked'
            return gather(*args, **kwargs)
        monkeypatch.setattr(contextkeys, 'gather_key_statistics', gather_after_the_check)
        warnings.simplefilter('always')
        stats = gw.stats
    assert len(seen) == 1 and 'statistics cache not written' in str(seen[0].message), [str(w.message) for w in seen]
    assert 'kept in memory' in str(seen[0].message)
    reference = _rewriter(None).stats
    assert torch.equal(stats.c_matrix, reference.c_matrix)
    assert _tree(tmp_path) == before


@pytest.mark.parametrize('case', ['file_is_folder', 'dangling', 'dev_null'])
def test_cli_stats_and_apply_with_an_unusable_cache(tmp_path, capsys, case):
    import json

    import torch
    sys.path.insert(0, str(ROOT / 'tests'))
    from test_cli import edit_json
    from test_sampling import TINY as SMALL

    from rewrite.statistics import cache_filename
    from utils.stylegan2 import SeqStyleGAN2, save_checkpoint
    torch.manual_seed(0)
    save_checkpoint(SeqStyleGAN2(**SMALL), tmp_path / 'small.pt')
    (tmp_path / 'edit.json').write_text(json.dumps(edit_json()))
    cache = {'file_is_folder': tmp_path / 'cache', 'dangling': tmp_path / 'gone', 'dev_null': Path('/dev/null')}[case]
    (tmp_path / 'gone').symlink_to(tmp_path / 'nowhere')
    if case == 'file_is_folder':                   # every cache file name the commands will use is a folder
        from rewrite.__main__ import load_model, make_rewriter
        model = load_model(str(tmp_path / 'small.pt'), 0.5, torch.device('cpu'))
        for n in (12, 20):
            (cache / cache_filename(make_rewriter(model, 6, n, cache, False).cache_meta())).mkdir(parents=True)
    before = _tree(tmp_path)
    code, _, err = cli(capsys, 'stats', '--model', tmp_path / 'small.pt', '--layer', 6, '--n', 12, '--cachedir', cache,
                       '--quiet')
    one_line_error(code, err)
    assert '--cachedir' in err and ('is a folder' in err or 'dangling' in err or 'not a folder' in err), err
    assert _tree(tmp_path) == before
    code, out, err = cli(capsys, 'apply', '--model', tmp_path / 'small.pt', '--edit', tmp_path / 'edit.json',
                         '--layer', 6, '--zsample', 20, '--cachedir', cache, '--quiet', '--out', tmp_path / 'e.pt')
    assert 'Traceback' not in err
    if case == 'file_is_folder':                   # the folder is usable, the one file is not: warned, kept in memory
        assert code == 0 and 'statistics cache not written' in err and 'wrote' in out, err
        assert (tmp_path / 'e.pt').is_file()
    else:
        one_line_error(code, err)
        assert '--cachedir' in err
