"""The module paths of earlier releases still work after the packages were layered (rewrite/_moved.py): each old
path gives the very module at its new place, in a fresh interpreter too, and the entry points are unchanged."""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import subprocess
import sys

import pytest
from conftest import ROOT

from rewrite._moved import MOVED


@pytest.mark.parametrize('old, new', sorted(MOVED.items()))
def test_an_old_path_is_the_module_at_its_new_place(old, new):
    moved = importlib.import_module(f'rewrite.{old}')
    assert moved is importlib.import_module(new)
    assert moved.__name__ == new and moved.__spec__.name == new       # the module keeps its own name


def test_a_name_patched_through_the_old_path_is_patched_for_the_new(monkeypatch):
    import rewrite.history as old_history

    import rewrite.core.history as history
    monkeypatch.setattr(old_history, 'LOSS_TOLERANCE', 0.25)
    assert history.LOSS_TOLERANCE == 0.25


def test_the_imports_users_wrote_before_work_in_a_fresh_interpreter():
    code = '\n'.join([
        'from rewrite.ganrewrite import SeqStyleGanRewriter',
        'from rewrite.rewriteapp import GanRewriteApp',
        'from rewrite import editfile',
        'from rewrite.methods import SOLVERS',
        'from utils.stylegan2 import SeqStyleGAN2, DataBag, RewriteSite, TargetLayer, rewrite_site',
        'from utils import zdataset, nethook',
        'import rewrite.core.rewriter, rewrite.app.rewriteapp, rewrite.formats.editfile, utils.generators.site',
        'assert SeqStyleGanRewriter is rewrite.core.rewriter.SeqStyleGanRewriter',
        'assert GanRewriteApp is rewrite.app.rewriteapp.GanRewriteApp',
        'assert editfile is rewrite.formats.editfile and "fast" in SOLVERS',
        'assert RewriteSite is utils.generators.site.RewriteSite and DataBag is utils.generators.site.DataBag',
        'print("ok")'])
    done = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == 'ok', done.stderr


def test_the_command_line_entry_points():
    import rewrite.cli
    scripts = {e.name: e for e in importlib.metadata.entry_points(group='console_scripts')}
    assert scripts['rewrite'].load() is rewrite.cli.main
    done = subprocess.run([sys.executable, '-m', 'rewrite', '--help'], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0 and '{sample,apply,stats,demo,advise,convert,notebook}' in done.stdout
    bad = subprocess.run([sys.executable, '-m', 'rewrite', 'sample', '--n', '0'], cwd=ROOT, capture_output=True,
                         text=True, timeout=300)
    assert bad.returncode == 2 and bad.stderr.startswith('rewrite: error:')


def test_an_unknown_old_name_is_still_an_import_error():
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module('rewrite.no_such_module')


def test_the_command_line_makes_openmp_wait_passively_unless_told_otherwise():
    """Set before torch is imported (it is read when OpenMP starts); a user's own OMP_WAIT_POLICY is kept."""
    code = 'import os, sys, rewrite.cli; print(os.environ["OMP_WAIT_POLICY"], "torch" in sys.modules)'
    env = {k: v for k, v in os.environ.items() if k != 'OMP_WAIT_POLICY'}
    for preset, expected in ((None, 'PASSIVE'), ('ACTIVE', 'ACTIVE')):
        run_env = env if preset is None else {**env, 'OMP_WAIT_POLICY': preset}
        done = subprocess.run([sys.executable, '-c', code], cwd=ROOT, env=run_env, capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 0 and done.stdout.split() == [expected, 'True'], done.stderr
    before_torch = 'import os, rewrite, sys; assert "torch" not in sys.modules; import rewrite.cli'
    assert subprocess.run([sys.executable, '-c', before_torch], cwd=ROOT, env=env, timeout=300).returncode == 0
