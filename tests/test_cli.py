"""The `python -m rewrite` command line: sample, apply, stats, demo; resuming; torchrun; bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from numerics import gamma, gram_atol
from test_sampling import TINY, folder_bytes, numpy_uint8, read_png, reference_images

from rewrite.cli import common as cli_common
from rewrite.cli import demo as demo_command
from rewrite.cli import entry as cli
from rewrite.cli import sampling
from rewrite.core.rewriter import SeqStyleGanRewriter
from rewrite.formats.editfile import encode_mask
from utils.runningstats import SecondMoment
from utils.stylegan2 import SeqStyleGAN2, model_from_checkpoint, read_checkpoint, save_checkpoint
from utils.zdataset import z_dataset_for_model

ROOT = Path(__file__).resolve().parents[1]
LAYER, ZSAMPLE, NITER, TRUNC = 6, 20, 60, 0.5


# ---- fixtures and helpers ----------------------------------------------------------------------------

def box(t, l, b, r, size=32) -> np.ndarray:  # noqa: E741
    mask = np.zeros((size, size))
    mask[t:b, l:r] = 1
    return mask


def edit_json() -> dict:
    """Copy a region of image 3 into image 5, with images 5 and 7 as context (32 px masks)."""
    return {'object': [3, encode_mask(box(4, 4, 16, 16))], 'paste': [5, encode_mask(box(10, 10, 24, 24))],
            'key': [[5, encode_mask(box(10, 10, 24, 24))], [7, encode_mask(box(0, 0, 16, 16))]]}


@pytest.fixture(scope='module')
def files(tmp_path_factory):
    return tiny_files(tmp_path_factory.mktemp('cli'))


def tiny_files(d: Path) -> dict:
    """A tiny checkpoint (with a latent_avg, so truncation matters) and an edit file for it, in folder d."""
    torch.manual_seed(0)
    model = SeqStyleGAN2(**TINY)
    model.latents.latent_avg.copy_(torch.randn(TINY['style_dim']))
    save_checkpoint(model, d / 'tiny.pt')
    (d / 'edit.json').write_text(json.dumps(edit_json()))
    return {'ckpt': d / 'tiny.pt', 'edit': d / 'edit.json', 'cache': d / 'cache'}


def load(path, truncation=TRUNC) -> SeqStyleGAN2:
    return model_from_checkpoint(read_checkpoint(path), truncation=truncation)


def run(capsys, *args) -> tuple[int, str, str]:
    """main() in-process: (exit status, stdout, stderr). Unless the call names --threads, the command runs
    with this process's thread count, so its float32 results compare bit for bit with in-process API calls
    (the CLI's own default, half the CPUs, would sum in another order)."""
    argv = [str(a) for a in args]
    if argv and not argv[0].startswith('-') and '--threads' not in argv and '--help' not in argv:
        argv += ['--threads', str(torch.get_num_threads())]
    code = cli.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def subprocess_env() -> dict:
    return os.environ | {'PYTHONPATH': str(ROOT), 'OMP_NUM_THREADS': '1'}


def run_subprocess(*args, launcher=(sys.executable, '-m', 'rewrite')) -> subprocess.CompletedProcess:
    return subprocess.run([*launcher, *map(str, args)], cwd=ROOT, env=subprocess_env(), capture_output=True,
                          text=True, timeout=600)


def torchrun(nproc: int) -> tuple[str, ...]:
    return (sys.executable, '-m', 'torch.distributed.run', '--standalone', f'--nproc_per_node={nproc}',
            '-m', 'rewrite', '--')


def edit_args(files, niter=NITER) -> list:
    return ['--edit', files['edit'], '--layer', LAYER, '--solver', 'original', '--niter', niter,
            '--zsample', ZSAMPLE,
            '--cachedir', files['cache'], '--quiet']


def in_memory_edit(files, rank: int = 1) -> SeqStyleGAN2:
    """The edited generator made directly with the rewriter, as the CLI should."""
    model = load(files['ckpt'])
    gw = SeqStyleGanRewriter(model, z_dataset_for_model(model, ZSAMPLE), LAYER, progress=False)
    gw.apply_edit(json.loads(files['edit'].read_text()), rank=rank, niter=NITER, solver='original')
    return gw.model


def tree(path: Path) -> dict:
    return {str(p.relative_to(path)): (p.read_bytes() if p.is_file() else None) for p in sorted(path.rglob('*'))}


# ---- sample ------------------------------------------------------------------------------------------

def test_sample_writes_the_model_images_and_grid(files, tmp_path, capsys):
    out = tmp_path / 'out'
    code, stdout, _ = run(capsys, 'sample', '--model', files['ckpt'], '--n', 10, '--out', out, '--batch', 4, '--quiet')
    assert code == 0 and '10 images' in stdout
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted([f'{i:06d}.png' for i in range(10)] + ['grid.png', 'sample.json'])
    ref = reference_images(load(files['ckpt']), list(range(10)), batch=4)
    for i in range(10):
        np.testing.assert_array_equal(read_png(out / f'{i:06d}.png'), ref[i])
    grid = read_png(out / 'grid.png')
    assert grid.shape == (2 * 32, 8 * 32, 3)
    np.testing.assert_array_equal(grid[32:, 32:64], ref[9])
    assert (grid[32:, 64:] == 0).all()


def test_truncation_start_and_seed_offset(files, tmp_path, capsys):
    out = tmp_path / 'out'
    code, _, _ = run(capsys, 'sample', '--model', files['ckpt'], '--n', 3, '--start', 5, '--seed-offset',
                     sampling.FID_SEED_OFFSET, '--truncation', 1.0, '--out', out, '--batch', 3, '--quiet')
    assert code == 0
    assert sorted(p.name for p in out.glob('0*.png')) == ['000005.png', '000006.png', '000007.png']
    ref = reference_images(load(files['ckpt'], truncation=1.0), [5, 6, 7], 3, sampling.FID_SEED_OFFSET)
    for i in (5, 6, 7):
        np.testing.assert_array_equal(read_png(out / f'{i:06d}.png'), ref[i])


def test_subprocess_run_equals_in_process_run(files, tmp_path, capsys):
    a, b = tmp_path / 'a', tmp_path / 'b'
    assert run(capsys, 'sample', '--model', files['ckpt'], '--n', 9, '--out', a, '--batch', 4, '--quiet')[0] == 0
    proc = run_subprocess('sample', '--model', files['ckpt'], '--n', 9, '--out', b, '--batch', 4)
    assert proc.returncode == 0, proc.stderr
    assert 'img/s' in proc.stderr                       # the progress bar reports images/s
    assert folder_bytes(a) == folder_bytes(b)


def test_resume_after_interrupt_gives_the_same_files(files, tmp_path, capsys, monkeypatch):
    clean, resumed = tmp_path / 'clean', tmp_path / 'resumed'
    args = ['--model', files['ckpt'], '--n', 12, '--batch', 4, '--quiet']
    assert run(capsys, 'sample', *args, '--out', clean)[0] == 0
    real_write, calls = sampling.write_png, []

    def write_then_stop(array, path):
        if len(calls) == 5:
            raise KeyboardInterrupt
        calls.append(path)
        real_write(array, path)

    monkeypatch.setattr(sampling, 'write_png', write_then_stop)
    code, _, err = run(capsys, 'sample', *args, '--out', resumed)
    assert code == 130 and len(err.strip().splitlines()) == 1 and 'resumes' in err
    assert len(list(resumed.glob('0*.png'))) == 5 and not (resumed / 'grid.png').exists()
    monkeypatch.setattr(sampling, 'write_png', real_write)
    code, stdout, _ = run(capsys, 'sample', *args, '--out', resumed)
    assert code == 0 and '7 new' in stdout
    assert folder_bytes(resumed) == folder_bytes(clean)


@pytest.mark.slow
def test_resume_after_kill_gives_the_same_files(files, tmp_path, capsys):
    n, killed_at = 400, 20
    out = tmp_path / 'killed'
    proc = subprocess.Popen([sys.executable, '-m', 'rewrite', 'sample', '--model', str(files['ckpt']), '--n', str(n),
                             '--batch', '1', '--out', str(out), '--quiet'], cwd=ROOT, env=subprocess_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while (not out.is_dir() or len(list(out.glob('0*.png'))) < killed_at) and time.time() < deadline:
        time.sleep(0.005)
    proc.kill()
    proc.wait()
    assert proc.returncode == -9, 'the run ended before it could be killed'
    assert len(list(out.glob('0*.png'))) < n
    assert run(capsys, 'sample', '--model', files['ckpt'], '--n', n, '--batch', 1, '--out', out, '--quiet')[0] == 0
    clean = tmp_path / 'clean'
    assert run(capsys, 'sample', '--model', files['ckpt'], '--n', n, '--batch', 1, '--out', clean, '--quiet')[0] == 0
    assert folder_bytes(out) == folder_bytes(clean)


# ---- apply, reload, sample edited ----------------------------------------------------------------

def test_apply_reload_and_sample_match_the_in_memory_edit(files, tmp_path, capsys):
    edited_pt = tmp_path / 'edited.pt'
    code, stdout, _ = run(capsys, 'apply', '--model', files['ckpt'], *edit_args(files), '--out', edited_pt)
    assert code == 0 and 'wrote' in stdout
    reference = in_memory_edit(files)
    ckpt = read_checkpoint(edited_pt)
    key = f'convs.{LAYER - 3}.conv.weight'
    assert torch.equal(ckpt['g_ema'][key], reference.checkpoint_state_dict()[key])
    assert not torch.equal(ckpt['g_ema'][key], read_checkpoint(files['ckpt'])['g_ema'][key])
    info = json.loads(torch.load(edited_pt, weights_only=True)['edit_info'])
    assert (info['layer'], info['niter'], info['truncation']) == (LAYER, NITER, TRUNC)

    indices = list(range(8))
    ref = reference_images(reference, indices, batch=4)
    plain = reference_images(load(files['ckpt']), indices, batch=4)
    assert any(not np.array_equal(ref[i], plain[i]) for i in indices)
    variants = {'reloaded': ['--model', edited_pt], 'direct': ['--model', files['ckpt'], *edit_args(files)]}
    for out_name, args in variants.items():
        out = tmp_path / out_name
        code, _, _ = run(capsys, 'sample', *args, '--n', 8, '--batch', 4, '--out', out, '--quiet')
        assert code == 0
        for i in indices:
            np.testing.assert_array_equal(read_png(out / f'{i:06d}.png'), ref[i])


@pytest.mark.slow
def test_apply_via_subprocess_then_sample_the_export(files, tmp_path):
    edited_pt = tmp_path / 'edited.pt'
    proc = run_subprocess('apply', '--model', files['ckpt'], *edit_args(files), '--out', edited_pt)
    assert proc.returncode == 0, proc.stderr
    proc = run_subprocess('sample', '--model', edited_pt, '--n', 4, '--batch', 4, '--out', tmp_path / 's', '--quiet')
    assert proc.returncode == 0, proc.stderr
    ref = reference_images(in_memory_edit(files), list(range(4)), batch=4)
    for i in range(4):
        np.testing.assert_array_equal(read_png(tmp_path / 's' / f'{i:06d}.png'), ref[i])


def test_apply_uses_the_edit_files_preserve_weight(files, tmp_path, capsys):
    """without --preserve-weight the file's `preserve_weight` is used (and printed); a
    --preserve-weight given wins; a file without the field uses PRESERVE_WEIGHT."""
    from rewrite.formats.settings import PRESERVE_WEIGHT
    plain = {**edit_json(), 'preserve': [[9, encode_mask(box(0, 0, 32, 32))]]}
    (tmp_path / 'plain.json').write_text(json.dumps(plain))
    (tmp_path / 'weighted.json').write_text(json.dumps({**plain, 'preserve_weight': 50}))
    key = f'convs.{LAYER - 3}.conv.weight'

    def apply(name, *extra):
        out = tmp_path / f'{name}{len(extra)}.pt'
        code, stdout, err = run(capsys, 'apply', '--model', files['ckpt'], '--edit', tmp_path / f'{name}.json',
                                '--layer', LAYER, '--solver', 'fast', '--zsample', ZSAMPLE, '--cachedir',
                                files['cache'], '--quiet', *extra, '--out', out)
        assert code == 0, err
        info = json.loads(torch.load(out, weights_only=True)['edit_info'])
        return read_checkpoint(out)['g_ema'][key], stdout, info['preserve_weight']

    by_file, printed, recorded = apply('weighted')
    assert '(weight 50)' in printed and recorded == 50
    by_flag, printed, recorded = apply('plain', '--preserve-weight', '50')
    assert '(weight 50)' in printed and recorded == 50
    assert torch.equal(by_file, by_flag)
    default, printed, recorded = apply('plain')
    assert f'(weight {PRESERVE_WEIGHT:g})' in printed and recorded == PRESERVE_WEIGHT
    assert not torch.equal(default, by_file)
    overridden, printed, recorded = apply('weighted', '--preserve-weight', str(PRESERVE_WEIGHT))
    assert f'(weight {PRESERVE_WEIGHT:g})' in printed and recorded == PRESERVE_WEIGHT
    assert torch.equal(overridden, default)


def test_preserve_weight_help_says_the_file_weight_is_the_default(capsys):
    from rewrite.formats.settings import PRESERVE_WEIGHT
    for command in ('apply', 'sample', 'demo'):
        with pytest.raises(SystemExit):
            cli.main([command, '--help'])
        text = ' '.join(capsys.readouterr().out.split())
        assert ("default: the file's 'preserve_weight' field, else "
                f"{PRESERVE_WEIGHT}); a number given here wins over the file's") in text


# ---- stats -------------------------------------------------------------------------------------------

def reference_second_moment(model: SeqStyleGAN2, layer: int, n: int) -> np.ndarray:
    """sum over the z-sample's key pixels of k k^T, float64, from a hook on the layer's conv input."""
    z = torch.from_numpy(np.random.RandomState(1).standard_normal(n * model.style_dim).reshape(n, -1)).float()
    keys = []
    hook = model.get_submodule(f'layer{layer}.sconv.mconv.dconv').register_forward_pre_hook(
        lambda _m, inputs: keys.append(inputs[0]['fmap'].detach().numpy().astype(np.float64)))
    with torch.no_grad():
        for i in range(n):
            model(z[i:i + 1])
    hook.remove()
    flat = np.concatenate([k.transpose(0, 2, 3, 1).reshape(-1, k.shape[1]) for k in keys])
    return flat.T @ flat, flat.shape[0]


def cached_moment(path: Path) -> SecondMoment:
    with np.load(path) as data:
        return SecondMoment({k: torch.from_numpy(np.asarray(data[k])) for k in ('count', 'sum_xxt', 'sum_x')})


def test_stats_cache_matches_reference_and_the_rewriter_uses_it(files, tmp_path, capsys):
    cache = tmp_path / 'cache'
    code, stdout, _ = run(capsys, 'stats', '--model', files['ckpt'], '--layer', LAYER, '--n', 12, '--cachedir', cache,
                          '--batch', 5, '--quiet')
    assert code == 0 and 'wrote' in stdout
    [path] = list(cache.glob('*.npz'))
    sxx, count = reference_second_moment(load(files['ckpt']), LAYER, 12)
    moment = cached_moment(path)
    assert moment.count == count == 12 * 16 * 16
    c = moment.moment().numpy()
    # float32 products of at most one batch's rows (5 images x 16 x 16 keys) at a time, summed in float64
    np.testing.assert_allclose(c, sxx / count, rtol=0, atol=gram_atol(sxx / count, 5 * 16 * 16))
    mtime = path.stat().st_mtime_ns
    code, stdout, _ = run(capsys, 'stats', '--model', files['ckpt'], '--layer', LAYER, '--n', 12, '--cachedir', cache)
    assert code == 0 and 'already cached' in stdout and path.stat().st_mtime_ns == mtime

    model = load(files['ckpt'])
    fresh = SeqStyleGanRewriter(model, z_dataset_for_model(model, 12), LAYER, batch_size=5, progress=False)
    own = fresh.collect_statistics()          # computed by the rewriter itself, not cached
    cached = SeqStyleGanRewriter(model, z_dataset_for_model(model, 12), LAYER, cachedir=cache, progress=False)
    stats = cached.collect_statistics()
    # other batch sizes: each is within the float32 bound of the exact moment (chunks <= 4096 rows)
    np.testing.assert_allclose(stats.c_matrix.numpy(), own.c_matrix.numpy(), rtol=0,
                               atol=2 * gram_atol(own.c_matrix.numpy(), SecondMoment().chunk))
    np.testing.assert_array_equal(stats.unit_quantiles.table().numpy(), own.unit_quantiles.table().numpy())


# ---- torchrun ----------------------------------------------------------------------------------------

@pytest.mark.slow
def test_torchrun_sample_equals_one_process(files, tmp_path, capsys):
    for name, extra in [('plain', []), ('edited', edit_args(files))]:
        one, two = tmp_path / f'{name}1', tmp_path / f'{name}2'
        args = ['sample', '--model', files['ckpt'], *extra, '--n', 11, '--batch', 3, '--quiet']
        assert run(capsys, *args, '--out', one)[0] == 0
        proc = run_subprocess(*args, '--out', two, launcher=torchrun(2))
        assert proc.returncode == 0, proc.stderr
        assert '6 new from rank 0 of 2' in proc.stdout          # rank 0 drew images 0, 2, ..., 10
        assert folder_bytes(one) == folder_bytes(two)


@pytest.mark.slow
def test_torchrun_stats_equal_one_process(files, tmp_path, capsys):
    args = ['stats', '--model', files['ckpt'], '--layer', LAYER, '--n', 13, '--batch', 4, '--quiet']
    assert run(capsys, *args, '--cachedir', tmp_path / 'one')[0] == 0
    proc = run_subprocess(*args, '--cachedir', tmp_path / 'two', launcher=torchrun(2))
    assert proc.returncode == 0, proc.stderr
    assert 'in 2 process(es)' in proc.stdout
    [a], [b] = list((tmp_path / 'one').glob('*.npz')), list((tmp_path / 'two').glob('*.npz'))
    assert a.name == b.name
    one, two = cached_moment(a), cached_moment(b)
    assert one.count == two.count == 13 * 16 * 16
    # the same batches, float32 products per batch (4 x 16 x 16 rows; another process may pick another
    # kernel or thread split), float64 sums: both within the float32 bound of the exact moment
    c = one.moment().numpy()
    np.testing.assert_allclose(two.moment().numpy(), c, rtol=0, atol=2 * gram_atol(c, 4 * 16 * 16))
    np.testing.assert_allclose(two.mean().numpy(), one.mean().numpy(), rtol=0,
                               atol=2 * gamma(4 * 16 * 16) * np.sqrt(np.diag(c)).max())
    a, b = dict(np.load(a)), dict(np.load(b))
    assert set(a) == set(b)
    np.testing.assert_array_equal(a['quantile_table'], b['quantile_table'])
    assert str(a['meta']) == str(b['meta'])


# ---- demo --------------------------------------------------------------------------------------------

def test_demo_with_an_edit_writes_before_after_grid(files, tmp_path, capsys):
    grid_path = tmp_path / 'demo.png'
    code, stdout, _ = run(capsys, 'demo', '--model', files['ckpt'], *edit_args(files), '--solver', 'original',
                          '--out', grid_path)
    assert code == 0 and 'relative change' in stdout and 'loss' in stdout
    grid = read_png(grid_path)
    assert grid.shape == (2 * 32, 8 * 32, 3)
    shown = [3, 5, 7, 0, 1, 2, 4, 6]                    # the edit's images first, then the others
    z = torch.from_numpy(np.random.RandomState(1).standard_normal(ZSAMPLE * 64).reshape(ZSAMPLE, 64)).float()
    with torch.no_grad():
        before = numpy_uint8(load(files['ckpt'])(z[shown]))
        after = numpy_uint8(in_memory_edit(files)(z[shown]))
    for col in range(8):
        np.testing.assert_array_equal(grid[:32, 32 * col:32 * col + 32], before[col])
        np.testing.assert_array_equal(grid[32:, 32 * col:32 * col + 32], after[col])


def test_demo_takes_layer_and_rank_from_the_edit_file_name(files, tmp_path, capsys):
    named = tmp_path / f'edit_layer{LAYER}_rank2.json'
    named.write_bytes(files['edit'].read_bytes())
    grid_path = tmp_path / 'demo.png'
    code, stdout, _ = run(capsys, 'demo', '--model', files['ckpt'], '--edit', named, '--niter', NITER,
                          '--zsample', ZSAMPLE, '--cachedir', files['cache'], '--quiet', '--solver', 'original',
                          '--out', grid_path)
    assert code == 0 and f'on layer {LAYER}, rank 2' in stdout and 'rank 2, loss' in stdout
    shown = [3, 5, 7, 0, 1, 2, 4, 6]
    z = torch.from_numpy(np.random.RandomState(1).standard_normal(ZSAMPLE * 64).reshape(ZSAMPLE, 64)).float()
    with torch.no_grad():
        after = numpy_uint8(in_memory_edit(files, rank=2)(z[shown]))
    np.testing.assert_array_equal(read_png(grid_path)[32:], np.concatenate(list(after), axis=1))
    # flags still win over the name
    assert demo_command.demo_setting(3, 1, named) == (3, 1)
    assert demo_command.demo_setting(None, None, named) == (LAYER, 2)
    assert demo_command.demo_setting(None, None, tmp_path / 'plain.json') == (cli_common.DEMO_LAYER, 1)


def test_demo_without_bundled_edits_says_so(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(cli_common, 'DEMO_EDIT_DIR', tmp_path / 'masks' / 'demo')
    code, stdout, err = run(capsys, 'demo', '--out', tmp_path / 'demo.png')
    assert code == 2 and len(err.splitlines()) == 1 and 'no bundled demo edit' in err
    assert not (tmp_path / 'demo.png').exists()


@pytest.mark.parametrize('command', ['sample', 'apply', 'stats', 'demo'])
def test_help(command, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main([command, '--help'])
    assert exc.value.code == 0 and f'usage: rewrite {command}' in capsys.readouterr().out


# ---- bad input ---------------------------------------------------------------------------------------

def bad_cases(files, tmp: Path) -> dict[str, list]:
    (tmp / 'garbage.pt').write_bytes(b'not a checkpoint')
    (tmp / 'afile').write_text('x')
    (tmp / 'adir').mkdir()
    dot = np.zeros((1024, 1024))
    dot[500:502, 500:502] = 1              # vanishes at the 16x16 layer (made for a high-resolution layer)
    (tmp / 'dot.json').write_text(json.dumps(edit_json() | {'paste': [5, encode_mask(dot)]}))
    (tmp / 'broken.json').write_text('{"object": [3, ')
    (tmp / 'unknown.json').write_text(json.dumps(edit_json() | {'colour': 1}))
    out = ['--out', tmp / 'out', '--cachedir', tmp / 'cache']
    model = ['--model', files['ckpt']]
    edit = ['--edit', files['edit'], '--layer', LAYER, '--zsample', ZSAMPLE]
    return {
        'missing model': ['sample', '--model', tmp / 'nope.pt', '--n', 2, *out],
        'not a checkpoint': ['apply', '--model', tmp / 'garbage.pt', *edit, '--out', tmp / 'e.pt'],
        'layer out of range': ['apply', *model, '--edit', files['edit'], '--layer', 99, '--out', tmp / 'e.pt'],
        'stats layer out of range': ['stats', *model, '--layer', 1, '--cachedir', tmp / 'cache'],
        'edit for another resolution': ['sample', *model, '--edit', tmp / 'dot.json', '--layer', LAYER, '--n', 2, *out],
        'malformed edit': ['apply', *model, '--edit', tmp / 'broken.json', '--layer', LAYER, '--out', tmp / 'e.pt'],
        'unknown edit field': ['sample', *model, '--edit', tmp / 'unknown.json', '--layer', LAYER, '--n', 2, *out],
        'missing edit': ['apply', *model, '--edit', tmp / 'nope.json', '--layer', LAYER, '--out', tmp / 'e.pt'],
        'image outside z-sample': ['apply', *model, '--edit', files['edit'], '--layer', LAYER, '--zsample', 4,
                                   '--out', tmp / 'e.pt'],
        'edit without layer': ['sample', *model, '--edit', files['edit'], '--n', 2, *out],
        'layer without edit': ['sample', *model, '--layer', LAYER, '--n', 2, *out],
        'out under a file': ['sample', *model, '--n', 2, '--out', tmp / 'afile' / 'sub'],
        'apply out is a folder': ['apply', *model, *edit, '--out', tmp / 'adir'],
        'cachedir under a file': ['apply', *model, *edit, '--out', tmp / 'e.pt', '--cachedir', tmp / 'afile' / 'c'],
        'zero images': ['sample', *model, '--n', 0, *out],
        'negative batch': ['sample', *model, '--n', 2, '--batch', -1, *out],
        'nan truncation': ['sample', *model, '--n', 2, '--truncation', 'nan', *out],
        'rank too large': ['apply', *model, *edit, '--rank', 1000, '--out', tmp / 'e.pt'],
        'missing required': ['apply', *model],
        'unknown command': ['paint'],
        'no command': [],
    }


CASE_NAMES = ['missing model', 'not a checkpoint', 'layer out of range', 'stats layer out of range',
              'edit for another resolution', 'malformed edit', 'unknown edit field', 'missing edit',
              'image outside z-sample', 'edit without layer', 'layer without edit', 'out under a file',
              'apply out is a folder', 'cachedir under a file', 'zero images', 'negative batch', 'nan truncation',
              'rank too large', 'missing required', 'unknown command', 'no command']


@pytest.mark.parametrize('case', CASE_NAMES)
def test_bad_input_one_line_and_nothing_written(case, files, tmp_path, capsys):
    cases = bad_cases(files, tmp_path)
    assert sorted(cases) == sorted(CASE_NAMES)
    args = cases[case]
    before = tree(tmp_path)
    code, stdout, err = run(capsys, *args)
    assert code == 2
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith('rewrite') and 'error' in lines[0], err
    assert 'Traceback' not in err and stdout == ''
    assert tree(tmp_path) == before


@pytest.mark.parametrize('case', ['missing model', 'malformed edit', 'edit for another resolution', 'zero images'])
def test_bad_input_in_a_real_process(case, files, tmp_path):
    args = bad_cases(files, tmp_path)[case]
    before = tree(tmp_path)
    proc = run_subprocess(*args)
    assert proc.returncode == 2
    assert len(proc.stderr.splitlines()) == 1, proc.stderr
    assert proc.stdout == '' and tree(tmp_path) == before


def test_sample_folder_of_another_run_is_refused(files, tmp_path, capsys):
    out = tmp_path / 'out'
    assert run(capsys, 'sample', '--model', files['ckpt'], '--n', 2, '--out', out, '--quiet')[0] == 0
    before = tree(tmp_path)
    code, _, err = run(capsys, 'sample', '--model', files['ckpt'], '--n', 4, '--truncation', 1.0, '--out', out)
    assert code == 2 and len(err.splitlines()) == 1 and 'truncation' in err
    assert tree(tmp_path) == before
