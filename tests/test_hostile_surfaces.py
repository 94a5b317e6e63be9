"""Hostile input on the newer surfaces: `rewrite convert` and NVlabs .pkl files, repeated interrupts during an
edit, the statistics cache folder, preserve fields, `rewrite advise` and `rewrite notebook`. Each case gets
a clear error naming the file or field and what was expected (or the right behaviour), no traceback, the
user's files byte-identical and the weights bit-identical."""

from __future__ import annotations

import os
import re
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
    from rewrite.cli import convert

    def refuse(*args, **kwargs):
        raise AssertionError('the conversion started before the destination was checked')
    monkeypatch.setattr(convert, 'load_model', refuse)


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
from rewrite.core.history import EditHistory

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

    from rewrite.core.rewriter import SeqStyleGanRewriter
    from utils.zdataset import z_dataset_for_model
    model = tiny_model()
    return SeqStyleGanRewriter(model, z_dataset_for_model(model, 16), LAYER, cachedir=cachedir, progress=False)


def _unusable_cache(tmp_path, case: str) -> Path:
    """A cache folder (or, for 'file_is_folder', a folder whose cache file name is taken by a folder)."""
    (tmp_path / 'plain').write_text('x')
    if case.startswith('dangling'):
        (tmp_path / 'gone').symlink_to(tmp_path / 'nowhere')
    if case == 'file_is_folder':
        from rewrite.core.statistics import cache_filename
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

    import rewrite.core.contextkeys as contextkeys
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

    from rewrite.core.statistics import cache_filename
    from utils.stylegan2 import SeqStyleGAN2, save_checkpoint
    torch.manual_seed(0)
    save_checkpoint(SeqStyleGAN2(**SMALL), tmp_path / 'small.pt')
    (tmp_path / 'edit.json').write_text(json.dumps(edit_json()))
    cache = {'file_is_folder': tmp_path / 'cache', 'dangling': tmp_path / 'gone', 'dev_null': Path('/dev/null')}[case]
    (tmp_path / 'gone').symlink_to(tmp_path / 'nowhere')
    if case == 'file_is_folder':                   # every cache file name the commands will use is a folder
        from rewrite.cli.common import load_model
        from rewrite.cli.editspec import make_rewriter
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


# ---- NVlabs .pkl files: claims bounded by the file, every field checked by name -------------------------

def legacy_storage_blob(values, claim: int | None = None) -> bytes:
    """A float32 storage as a legacy torch.save stream (what NVlabs' pickles embed per storage), written
    here field by field; `claim`: the element count its declaration states (default: the true one)."""
    import io
    import pickle
    import struct

    import numpy as np
    import torch
    data = np.ascontiguousarray(values, dtype='<f4').reshape(-1)
    claim = data.size if claim is None else claim
    out = io.BytesIO()
    for header in (torch.serialization.MAGIC_NUMBER, torch.serialization.PROTOCOL_VERSION,
                   {'protocol_version': 1001, 'little_endian': True, 'type_sizes': {'short': 2, 'int': 4, 'long': 4}}):
        pickle.dump(header, out, protocol=2)
    marker = object()

    class Declaration(pickle.Pickler):
        def persistent_id(self, obj):
            return ('storage', torch.FloatStorage, 'key0', 'cpu', claim, None) if obj is marker else None
    Declaration(out, protocol=2).dump(marker)
    pickle.dump(['key0'], out, protocol=2)
    out.write(struct.pack('<q', data.size) + data.tobytes())
    return out.getvalue()


class ClaimedTensor:
    """A tensor of `shape` and `stride` over a storage blob (for hostile views and declarations)."""

    def __init__(self, blob: bytes, shape: tuple, stride: tuple):
        self.blob, self.shape, self.stride = blob, shape, stride


def write_ada_pickle(data, path: Path) -> Path:
    """Pickles what read_ada_pickle returned back into NVlabs' layout (persistence records, legacy storage
    blobs), without NVlabs' code: the globals are written by name only."""
    import collections
    import pickle
    import types

    import torch

    from utils.stylegan2.ada_unpickler import PersistentRecord, _PlainDict
    persistence = types.ModuleType('torch_utils.persistence')

    def _reconstruct_persistent_obj(meta):
        raise AssertionError('never called: written by name')
    _reconstruct_persistent_obj.__module__ = 'torch_utils.persistence'
    _reconstruct_persistent_obj.__qualname__ = '_reconstruct_persistent_obj'
    persistence._reconstruct_persistent_obj = _reconstruct_persistent_obj
    package = types.ModuleType('torch_utils')
    package.persistence = persistence

    class Writer(pickle.Pickler):
        def reducer_override(self, obj):
            if isinstance(obj, PersistentRecord):
                return _reconstruct_persistent_obj, ({'type': 'class', 'version': 6, 'module_src': obj.module_src,
                                                      'class_name': obj.class_name, 'state': obj.state},)
            if isinstance(obj, _PlainDict):
                return dict, (), None, None, iter(obj.items())
            if isinstance(obj, torch.Tensor):
                t = obj.detach().float().contiguous()
                obj = ClaimedTensor(legacy_storage_blob(t.numpy()), tuple(t.shape), tuple(t.stride()))
            if isinstance(obj, ClaimedTensor):
                storage = _Blob(obj.blob)
                return torch._utils._rebuild_tensor_v2, (storage, 0, obj.shape, obj.stride, False,
                                                         collections.OrderedDict())
            if isinstance(obj, _Blob):
                return torch.storage._load_from_bytes, (obj.blob,)
            return NotImplemented

    saved = {name: sys.modules.get(name) for name in ('torch_utils', 'torch_utils.persistence')}
    sys.modules.update({'torch_utils': package, 'torch_utils.persistence': persistence})
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 20000))
    try:
        with open(path, 'wb') as f:
            Writer(f, protocol=4).dump(data)
    finally:
        sys.setrecursionlimit(limit)
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module
    return path


class _Blob:
    def __init__(self, blob: bytes):
        self.blob = blob


def ada_data():
    from utils.stylegan2.ada_pickle import read_ada_pickle
    return read_ada_pickle(need_shared(PKL))


def test_the_test_writer_round_trips_the_reference_pickle(tmp_path):
    """The writer the hostile files below are made with: ada64.pkl rewritten reads back to the same checkpoint."""
    import io
    import warnings

    import torch

    from utils.stylegan2.ada_pickle import read_ada_checkpoint
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        ours = read_ada_checkpoint(write_ada_pickle(ada_data(), tmp_path / 'again.pkl'))
        ref = read_ada_checkpoint(need_shared(PKL))
    assert sorted(ours['g_ema']) == sorted(ref['g_ema'])
    assert all(torch.equal(ours['g_ema'][k], v) for k, v in ref['g_ema'].items())
    assert torch.equal(ours['latent_avg'], ref['latent_avg']) and ours['conv_clamp'] == ref['conv_clamp']
    storage = torch.load(io.BytesIO(legacy_storage_blob(torch.arange(6.0).numpy())), weights_only=True)
    assert storage.tolist() == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]


PKL_PEAK = r'''
import resource, sys, warnings
resource.setrlimit(resource.RLIMIT_AS, (int(sys.argv[2]) * 2 ** 20,) * 2)
from utils.stylegan2 import load_seq_stylegan
warnings.simplefilter('ignore')
try:
    load_seq_stylegan(sys.argv[1])
    print('LOADED')
except ValueError as e:
    print('ERROR', ' '.join(str(e).split()))
except MemoryError:
    print('MEMORYERROR')
hwm = [line for line in open('/proc/self/status') if line.startswith('VmHWM:')][0]
print('PEAK_MB', int(hwm.split()[1]) / 1024)
'''
CAP_MB = 6000          # the children's address-space cap: torch alone maps about 1.5 GB of it


@pytest.mark.parametrize('case', ['stride0_16384', 'stride0_4T', 'declared_14G', 'declared_4T'])
def test_pkl_claims_are_bounded_by_what_the_file_holds(tmp_path, case):
    import re

    import numpy as np
    data = ada_data()
    fc = data['G_ema'].child('mapping').child('fc0')
    shape, stride, claim = {'stride0_16384': ((16384, 16384), (0, 0), None),
                            'stride0_4T': ((2 ** 20, 2 ** 20), (0, 1), None),
                            'declared_14G': ((512, 512), (512, 1), 3_600_000_000),
                            'declared_4T': ((512, 512), (512, 1), 10 ** 12)}[case]
    weight = fc.parameters['weight'].numpy()
    values = {'stride0_16384': weight.reshape(-1)[:1], 'stride0_4T': np.resize(weight, 2 ** 20)}.get(case, weight)
    fc.parameters['weight'] = ClaimedTensor(legacy_storage_blob(values, claim), shape, stride)
    path = write_ada_pickle(data, tmp_path / 'claim.pkl')
    assert path.stat().st_size < 32 * 2 ** 20
    out = run_child(PKL_PEAK, str(path), str(CAP_MB))
    assert 'ERROR' in out and str(path) in out, out
    expected = ('broadcast or overlapping view' if case.startswith('stride0')
                else 'declares .* bytes of storage but holds only')
    assert re.search(expected, out), out
    assert float(out.split('PEAK_MB')[1]) < 900, out


def _field_case(data, where: str, name: str, value, state: bool = False):
    record = data['G_ema']
    for part in where.split('.')[1:] if '.' in where else []:
        record = record.child(part)
    if state:
        record.state[name] = value
    else:
        record.state['_init_kwargs'] = {**record.init_kwargs, name: value}


FIELD_CASES = [
    ('G_ema.synthesis', 'img_resolution', [64], 'img_resolution is a list of 1 items, expected an integer'),
    ('G_ema.synthesis', 'img_resolution', 'x', "img_resolution is 'x', expected an integer"),
    ('G_ema.synthesis', 'img_resolution', 64.5, 'img_resolution is 64.5, expected an integer'),
    ('G_ema.synthesis', 'img_resolution', True, 'img_resolution is True, expected an integer'),
    ('G_ema.synthesis', 'img_resolution', 2 ** 40, 'img_resolution is 1099511627776, expected an integer between'),
    ('G_ema.synthesis', 'img_resolution', 48, 'img_resolution 48 is not a power of two'),
    ('G_ema.synthesis', 'img_channels', [3], 'img_channels is a list of 1 items, expected an integer'),
    ('G_ema.synthesis', 'img_channels', 'x', "img_channels is 'x', expected an integer"),
    ('G_ema.synthesis', 'img_channels', 3.0, 'img_channels is 3.0, expected an integer'),
    ('G_ema.mapping.fc0', 'lr_multiplier', [0.01], 'lr_multiplier is a list of 1 items, expected a positive finite'),
    ('G_ema.mapping.fc0', 'lr_multiplier', 'x', "lr_multiplier is 'x', expected a positive finite number"),
    ('G_ema.mapping.fc0', 'lr_multiplier', float('nan'), 'lr_multiplier is nan, expected a positive finite number'),
    ('G_ema.mapping.fc0', 'activation', ['lrelu'], 'activation is a list of 1 items, expected a string'),
    ('G_ema.mapping', 'num_ws', [10], 'num_ws is a list of 1 items, expected an integer'),
    ('G_ema.mapping', 'num_ws', '10', "num_ws is '10', expected an integer"),
    ('G_ema.mapping', 'num_ws', 10.5, 'num_ws is 10.5, expected an integer'),
    ('G_ema.mapping', 'w_dim', 'x', "w_dim is 'x', expected an integer"),
    ('G_ema.mapping', 'w_dim', 511, 'w_dim is 511 but the mapping network makes 512'),
    ('G_ema.mapping', 'z_dim', [512], 'z_dim is a list of 1 items, expected an integer'),
    ('G_ema.synthesis.b8.conv0', 'conv_clamp', [256], 'conv_clamp is a list of 1 items, expected a positive finite'),
    ('G_ema.synthesis.b8.conv0', 'conv_clamp', 'x', "conv_clamp is 'x', expected a positive finite number"),
    ('G_ema.synthesis.b8.conv0', 'use_noise', 'yes', "use_noise is 'yes', expected True or False"),
    ('G_ema.synthesis.b8', 'use_fp16', [1], 'use_fp16 is a list of 1 items, expected True or False'),
    ('G_ema.synthesis.b8', 'architecture', ['skip'], 'architecture is a list of 1 items, expected a string'),
    ('G_ema.synthesis.b8', 'resample_filter', 'x', "resample_filter is 'x', not supported"),
    ('G_ema.synthesis.b8', 'resample_filter', [1, 'a', 3, 1], 'resample_filter is a list of 4 items, not supported'),
    ('G_ema', 'c_dim', 'x', "c_dim is 'x', expected an integer"),
]


@pytest.mark.filterwarnings('ignore:G_ema computes')
@pytest.mark.parametrize('where, name, value, message', FIELD_CASES,
                         ids=[f'{c[1]}={c[2]!r}' for c in FIELD_CASES])
def test_every_pkl_field_is_checked_by_name(tmp_path, capsys, where, name, value, message):
    import re
    data = ada_data()
    _field_case(data, where, name, value)
    path = write_ada_pickle(data, tmp_path / 'field.pkl')
    before = path.read_bytes()
    code, _, err = cli(capsys, 'convert', path, tmp_path / 'out.pt')
    one_line_error(code, err)
    assert message in err and str(path) in err, err
    assert re.search(rf'{re.escape(where.split(".")[0])}', err), err
    assert path.read_bytes() == before and not (tmp_path / 'out.pt').exists()


@pytest.mark.parametrize('case', ['deep_filter', 'deep_top', 'cyclic'])
def test_deep_or_cyclic_pkl_data_is_a_clear_error(tmp_path, case):
    from utils.stylegan2 import load_seq_stylegan
    from utils.stylegan2.ada_unpickler import MAX_NESTING, AdaPickleError
    path = tmp_path / f'{case}.pkl'
    if case == 'deep_filter':
        data = ada_data()
        nested: list = [1, 3, 3, 1]
        for _ in range(3000):
            nested = [nested]
        _field_case(data, 'G_ema.synthesis.b8', 'resample_filter', nested)
        write_ada_pickle(data, path)
    elif case == 'deep_top':                     # a list 100000 levels deep, written as opcodes
        path.write_bytes(b'\x80\x02' + b']' * 100000 + b'a' * 99999 + b'.')
    else:                                        # a list that contains itself
        path.write_bytes(b'\x80\x02]q\x00h\x00a}q\x01X\x05\x00\x00\x00G_emaq\x02h\x00s\x86.')
    message = 'contains itself' if case == 'cyclic' else f'nests more than {MAX_NESTING} levels deep'
    with pytest.raises(AdaPickleError, match=message):
        load_seq_stylegan(path)


def test_a_damaged_g_ema_is_an_error_not_a_fallback_to_g(tmp_path):
    import warnings

    from utils.stylegan2 import load_seq_stylegan
    from utils.stylegan2.ada_pickle import AdaPickleError
    for damaged in (None, 'x', {'weights': 1}):
        data = ada_data()
        data['G_ema'] = damaged
        path = write_ada_pickle(data, tmp_path / 'damaged.pkl')
        with pytest.raises(AdaPickleError, match=r'G_ema is .*expected a network record .*G, the raw training '
                                                 'generator, is not used in its place'):
            load_seq_stylegan(path)
    data = ada_data()
    del data['G_ema']                            # no G_ema at all: G, with a warning (documented)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter('always')
        load_seq_stylegan(write_ada_pickle(data, tmp_path / 'g_only.pkl'))
    assert any('has no G_ema: using G' in str(w.message) for w in seen)


# ---- preserve fields: a documented range for the weight, a documented limit on regions --------------------

@pytest.fixture(scope='module')
def edit_setup():
    sys.path.insert(0, str(ROOT / 'tests'))
    from test_hostile_input import _edit_setup
    return _edit_setup()


def _weights(gw) -> dict:
    return {n: t.clone() for n, t in gw.model.state_dict().items()}


def _unchanged(gw, before) -> bool:
    import torch
    return all(torch.equal(t, before[n]) for n, t in gw.model.state_dict().items()) and not gw.history


@pytest.mark.parametrize('weight', [1e308, 1000.5, float('inf')])
def test_a_huge_preserve_weight_is_refused_before_work(edit_setup, weight):
    from rewrite.core.rewriter import RewriteError
    from rewrite.formats.settings import MAX_PRESERVE_WEIGHT
    gw, request = edit_setup
    assert MAX_PRESERVE_WEIGHT == 1000
    request = request | {'preserve': [request['key'][1]]}
    before = _weights(gw)
    with pytest.raises(RewriteError, match=r'preserve_weight must be a finite number between 0 and 1000 '
                                           r'\(MAX_PRESERVE_WEIGHT\)'):
        gw.apply_edit(request, solver='fast', preserve_weight=weight)
    with pytest.raises(RewriteError, match='preserve_weight must be a finite number between 0 and 1000'):
        gw.multi_key_from_selection(request['key'], rank=1, preserve_pairs=request['preserve'], preserve_weight=weight)
    if weight < float('inf'):
        with pytest.raises(RewriteError, match=r'preserve_weight: must be (at most 1000|a finite number)'):
            gw.apply_edit(request | {'preserve_weight': weight}, solver='fast')
    assert _unchanged(gw, before)
    gw.apply_edit(request, solver='fast', preserve_weight=MAX_PRESERVE_WEIGHT)   # the limit itself works
    gw.revert()


@pytest.mark.parametrize('where', ['file', 'option'])
def test_cli_refuses_a_huge_preserve_weight_in_one_line(tmp_path, capsys, where):
    import json

    import torch
    sys.path.insert(0, str(ROOT / 'tests'))
    from test_cli import edit_json
    from test_sampling import TINY as SMALL

    from utils.stylegan2 import SeqStyleGAN2, save_checkpoint
    torch.manual_seed(0)
    save_checkpoint(SeqStyleGAN2(**SMALL), tmp_path / 'small.pt')
    request = edit_json()
    request['preserve'] = [request['key'][1]]
    if where == 'file':
        request['preserve_weight'] = 1e308
    (tmp_path / 'edit.json').write_text(json.dumps(request))
    before = _tree(tmp_path)
    extra = ['--preserve-weight', '1e308'] if where == 'option' else []
    code, _, err = cli(capsys, 'apply', '--model', tmp_path / 'small.pt', '--edit', tmp_path / 'edit.json',
                       '--layer', 6, '--zsample', 20, '--cachedir', tmp_path / 'cache', '--quiet',
                       '--out', tmp_path / 'e.pt', *extra)
    one_line_error(code, err)
    assert ('preserve_weight: must be at most 1000' if where == 'file' else '--preserve-weight 1e+308 is above 1000') \
        in err, err
    assert _tree(tmp_path) == before


@pytest.mark.parametrize('field, count', [('preserve', 20000), ('key', 101)])
def test_region_counts_are_limited_before_any_mask_is_decoded(tmp_path, monkeypatch, field, count):
    import json

    import rewrite.formats.selection as selection
    from rewrite.formats.editfile import EditFileError, load_edit
    from rewrite.formats.fields import MAX_REGIONS
    sys.path.insert(0, str(ROOT / 'tests'))
    from test_cli import edit_json
    request = edit_json()
    request[field] = [request['paste']] * count
    path = tmp_path / 'many.json'
    path.write_text(json.dumps(request))
    decoded = []
    open_png = selection.open_png
    monkeypatch.setattr(selection, 'open_png', lambda url: decoded.append(1) or open_png(url))
    with pytest.raises(EditFileError, match=rf'{field}: lists {count} regions; a request has at most '
                                            rf'{MAX_REGIONS} \(MAX_REGIONS\)'):
        load_edit(path)
    assert MAX_REGIONS == 100 and decoded == []
    request[field] = [request['paste']] * MAX_REGIONS          # the limit itself is accepted
    path.write_text(json.dumps(request))
    assert len(getattr(load_edit(path), field)) == MAX_REGIONS


# ---- `rewrite advise`: the edit-file reader, bounded reads, documented limits -----------------------------

@pytest.fixture()
def small_model_and_edit(tmp_path) -> tuple[Path, Path]:
    import json

    import torch
    sys.path.insert(0, str(ROOT / 'tests'))
    from test_cli import edit_json
    from test_sampling import TINY as SMALL

    from utils.stylegan2 import SeqStyleGAN2, save_checkpoint
    torch.manual_seed(0)
    save_checkpoint(SeqStyleGAN2(**SMALL), tmp_path / 'small.pt')
    (tmp_path / 'edit.json').write_text(json.dumps(edit_json()))
    return tmp_path / 'small.pt', tmp_path / 'edit.json'


def _advise_edit_case(tmp_path, edit: Path, case: str) -> tuple[Path, str]:
    text = edit.read_text()
    if case == 'fifo':
        os.mkfifo(tmp_path / 'fifo.json')
        return tmp_path / 'fifo.json', 'is not a regular file'
    if case == 'dev_zero':
        return Path('/dev/zero'), 'is not a regular file'
    if case == 'deep':
        (tmp_path / 'deep.json').write_text('[' * 100000 + ']' * 100000)
        return tmp_path / 'deep.json', 'JSON nested too deeply'
    paste = text[text.index('"paste"'):text.index(', "key"')]
    (tmp_path / 'twice.json').write_text(text[:-1] + ', ' + paste + '}')
    return tmp_path / 'twice.json', 'paste: appears twice in the JSON object'


@pytest.mark.parametrize('case', ['fifo', 'dev_zero', 'deep', 'duplicate_paste'])
def test_advise_reads_edits_as_apply_does(tmp_path, capsys, small_model_and_edit, case):
    """The same one-line error from `advise` and `apply`; advise on a FIFO in a child with a time limit (it used to
    hang; apply reads it in this process, as tests/test_hostile_input.py's FIFO case does)."""
    model, edit = small_model_and_edit
    path, message = _advise_edit_case(tmp_path, edit, case)
    before = _tree(tmp_path)
    for command in ('advise', 'apply'):
        out = tmp_path / ('advice' if command == 'advise' else 'e.pt')
        args = [command, '--model', model, '--edit', path, '--zsample', 20, '--cachedir', tmp_path / 'cache',
                '--quiet', '--out', out, '--threads', 1]
        args += ['--layers', 6, '--ranks', 1, '--heldout', 2] if command == 'advise' else ['--layer', 6]
        if case == 'fifo' and command == 'advise':
            proc = subprocess.run([sys.executable, '-m', 'rewrite', *map(str, args)], cwd=ROOT, env=clean_env(),
                                  capture_output=True, text=True, timeout=300)
            code, err = proc.returncode, proc.stderr
        else:
            code, _, err = cli(capsys, *args)
        one_line_error(code, err)
        assert message in err, (command, err)
    assert _tree(tmp_path) == before


@pytest.mark.parametrize('option, value, limit', [('--heldout', 100_000_000, 'MAX_HELDOUT'),
                                                  ('--zsample', 1_000_000_000, 'MAX_ZSAMPLE')])
def test_advise_sizes_are_limited_before_allocating(tmp_path, capsys, small_model_and_edit, option, value, limit):
    from rewrite.analysis import advisor
    from rewrite.cli import common
    model, edit = small_model_and_edit
    before = _tree(tmp_path)
    code, _, err = cli(capsys, 'advise', '--model', model, '--edit', edit, '--cachedir', tmp_path / 'cache',
                       '--out', tmp_path / 'advice', option, value)
    one_line_error(code, err)
    high = advisor.MAX_HELDOUT if option == '--heldout' else common.MAX_ZSAMPLE
    assert f'{option}: must be at most {high} ({limit}), got {value}' in err, err
    assert _tree(tmp_path) == before


def test_advise_api_refuses_a_huge_heldout_and_a_duplicated_field(small_model_and_edit):
    import torch

    from rewrite.analysis.advisor import MAX_HELDOUT, advise, read_request
    from rewrite.core.rewriter import RewriteError
    from utils.stylegan2 import load_seq_stylegan
    from utils.zdataset import z_dataset_for_model
    model_path, edit = small_model_and_edit
    model = load_seq_stylegan(model_path)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(RewriteError, match=rf'heldout: expected a number of samples between 1 and {MAX_HELDOUT} '
                                           r'\(MAX_HELDOUT\), got 100000000'):
        advise(model, z_dataset_for_model(model, 20), str(edit), layers=[6], ranks=(1,), heldout=100_000_000)
    text = edit.read_text()
    with pytest.raises(RewriteError, match='paste: appears twice'):
        read_request(text[:-1] + ', "paste": ' + text[text.index('"paste": ') + 9:text.index(', "key"')] + '}')
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


# ---- `rewrite notebook DIR`: all or nothing ------------------------------------------------------------

@pytest.mark.parametrize('case', ['dangling', 'dangling_inside', 'masks_is_a_file', 'demo_is_a_file'])
def test_notebook_refuses_unusable_folders_before_copying(tmp_path, capsys, case):
    dest = tmp_path / 'nb'
    if case == 'dangling':
        dest.symlink_to(tmp_path / 'nowhere')
        expected = 'is a dangling symbolic link'
    elif case == 'dangling_inside':
        dest.mkdir()
        (dest / 'masks').symlink_to(tmp_path / 'nowhere')
        expected = 'masks exists and is not a folder'
    else:
        dest.mkdir()
        if case == 'demo_is_a_file':
            (dest / 'masks').mkdir()
        (dest / 'masks' if case == 'masks_is_a_file' else dest / 'masks' / 'demo').write_text('mine')
        expected = 'exists and is not a folder'
    before = _tree(tmp_path)
    code, _, err = cli(capsys, 'notebook', dest)
    one_line_error(code, err)
    assert expected in err, err
    assert case == 'dangling' or 'nothing was copied' in err, err
    assert _tree(tmp_path) == before


def test_notebook_copy_that_fails_midway_leaves_nothing(tmp_path, capsys, monkeypatch):
    import rewrite.cli.notebook as main
    dest = tmp_path / 'nb'
    dest.mkdir()
    (dest / 'notes.txt').write_text('mine')
    before = _tree(tmp_path)
    write = main.atomic_write_bytes
    calls = []

    def fail_third(path, data):
        calls.append(path)
        if len(calls) == 3:
            raise OSError(28, 'No space left on device')
        write(path, data)
    monkeypatch.setattr(main, 'atomic_write_bytes', fail_third)
    code, _, err = cli(capsys, 'notebook', dest)
    one_line_error(code, err)
    assert 'No space left on device' in err and 'nothing was copied' in err, err
    assert len(calls) == 3 and _tree(tmp_path) == before
    monkeypatch.setattr(main, 'atomic_write_bytes', write)
    code, out, err = cli(capsys, 'notebook', dest)             # and then it works
    assert code == 0 and (dest / 'rewriting-interface.ipynb').is_file() and (dest / 'notes.txt').read_text() == 'mine'


# ---- z-samples of other dtypes ---------------------------------------------------------------------------

@pytest.mark.parametrize('dtype', ['bfloat16', 'float16'])
def test_low_precision_z_samples_work_like_their_float32_values(tmp_path, dtype):
    """A z-sample in bfloat16 or float16 is used as its values in float32: the statistics (and their cache file)
    and the edit are those of the float32 z-sample of the same values."""
    import torch
    from torch.utils.data import TensorDataset
    sys.path.insert(0, str(ROOT / 'tests'))
    from test_hostile_input import _edit_setup
    from test_rewriter import LAYER, tiny_model

    from rewrite.core.rewriter import SeqStyleGanRewriter
    from utils.zdataset import z_dataset_for_model
    _, request = _edit_setup()
    model = tiny_model()
    low = z_dataset_for_model(model, 40).tensors[0].to(getattr(torch, dtype))
    gws = [SeqStyleGanRewriter(model, TensorDataset(z), LAYER, progress=False, cachedir=tmp_path / 'cache')
           for z in (low, low.float())]
    assert gws[0].zds.tensors[0].dtype == torch.float32 and torch.equal(gws[0].zds.tensors[0], low.float())
    assert gws[0].cache_meta() == gws[1].cache_meta()
    assert torch.equal(gws[0].c_matrix, gws[1].c_matrix)
    records = [gw.apply_edit(request, solver='fast') for gw in gws]
    assert records[0].final_loss == records[1].final_loss < records[0].initial_loss
    assert torch.equal(gws[0].target_weights(), gws[1].target_weights())
    assert len(list((tmp_path / 'cache').glob('*.npz'))) == 1


@pytest.mark.filterwarnings('ignore:G_ema computes')
@pytest.mark.parametrize('where, name, shape', [('G_ema.synthesis.b8.conv0', 'noise_strength', (2,)),
                                                ('G_ema.synthesis.b8.torgb', 'bias', (4,))])
def test_pkl_parameters_of_the_wrong_size_name_themselves(where, name, shape):
    import torch

    from utils.stylegan2.ada_pickle import AdaPickleError, ada_checkpoint
    data = ada_data()
    record = data['G_ema']
    for part in where.split('.')[1:]:
        record = record.child(part)
    record.parameters[name] = torch.zeros(shape)
    with pytest.raises(AdaPickleError, match=rf'{re.escape(where)}\.{name} has shape \({shape[0]},\); expected'):
        ada_checkpoint(data)


@pytest.mark.parametrize('kind', ['edit', 'erase', 'context only'])
def test_an_interrupt_while_the_damage_is_measured_undoes_the_change(kind, monkeypatch):
    """The held-out damage is measured inside the edit's atomic section: an interrupt there (after the solve)
    leaves every weight bit-identical and no history, as an interrupt during the solve does."""
    import torch
    from test_hostile_input import _edit_setup

    from rewrite.core.damage import DamageProbe
    gw, request = _edit_setup()
    assert gw.damage_probe is not None
    request = {'edit': request, 'erase': {'paste': request['paste'], 'key': request['key']},
               'context only': {'key': request['key']}}[kind]
    before = {n: t.clone() for n, t in gw.model.state_dict().items()}
    measured = []

    def interrupted(self, *args, **kwargs):
        measured.append(any(not torch.equal(t, before[n]) for n, t in gw.model.state_dict().items()))
        raise KeyboardInterrupt

    monkeypatch.setattr(DamageProbe, 'measure', interrupted)
    with pytest.raises(KeyboardInterrupt):
        gw.apply_request(request, solver='fast')
    assert measured == [True], 'the damage is measured on the changed weights'
    assert all(torch.equal(t, before[n]) for n, t in gw.model.state_dict().items()) and not gw.history
