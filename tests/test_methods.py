"""The registries of key methods and solvers (rewrite/formats/registry.py): one source for names, defaults and step
counts, read by the rewriter, the CLI and the widget; the EditRecord keeps the key method and every option."""

from __future__ import annotations

import inspect
import types

import numpy as np
import pytest
from test_rewrite_site import TinyPGAN, square

from rewrite.app.parts import SOLVER_CHOICES
from rewrite.cli.entry import build_parser
from rewrite.core import edits
from rewrite.core.rewriter import KEY_METHODS, SOLVERS, RewriteError, SeqStyleGanRewriter
from rewrite.core.solvers.fast import insert_fast
from rewrite.formats import editfile
from rewrite.formats import registry as methods
from rewrite.formats.registry import FastOptions, IterativeOptions
from utils.zdataset import z_dataset_for_model


def test_fast_options_are_the_solvers_defaults():
    params = inspect.signature(insert_fast).parameters
    for name, value in vars(FastOptions()).items():
        assert params[name].default == value, name


def test_iterative_options_are_the_rewriters_defaults():
    # apply_edit's niter / piter / lr default to None: the edit file's, else IterativeOptions' defaults
    params = inspect.signature(SeqStyleGanRewriter.apply_edit).parameters
    for name in vars(IterativeOptions()):
        assert params[name].default is None, name
    req = editfile.EditRequest(key=[editfile.selection_from_mask(0, np.ones((8, 8)))])
    gw = types.SimpleNamespace(layernum=6)
    setting = edits.file_setting(gw, req, None, 'original', None, None, None, {}, False)
    assert {name: getattr(setting, name) for name in vars(IterativeOptions())} == vars(IterativeOptions())


def test_every_reader_lists_the_registries():
    assert SOLVERS == SOLVER_CHOICES == tuple(methods.SOLVERS) == ('fast', 'original', 'linear')
    assert KEY_METHODS == tuple(methods.KEY_METHODS) == ('zca', 'svd', 'mean', 'gandissect')
    solver_action = next(a for a in build_parser()._subparsers._group_actions[0].choices['apply']._actions
                         if a.dest == 'solver')
    assert list(solver_action.choices) == list(SOLVERS)
    assert all(s.summary in ' '.join(solver_action.help.split()) for s in methods.SOLVERS.values())


def test_steps_follow_the_options():
    assert methods.SOLVERS['fast'].steps(40) == 8 * 4 + 300
    assert methods.SOLVERS['fast'].steps(40, rounds=2, polish=10, ridges=(1.0,), lr=0.1) == 2 * 1 + 10
    assert methods.SOLVERS['original'].steps(123) == methods.SOLVERS['linear'].steps(123) == 123


@pytest.mark.parametrize('solver', ['fast', 'original'])
def test_edit_record_keeps_key_method_and_every_option(solver):
    model = TinyPGAN()
    gw = SeqStyleGanRewriter(model, z_dataset_for_model(model, 8), layernum=2, progress=False, key_method='svd')
    request = {'object': [0, square(8, 1, 1, 3)], 'paste': [1, square(8, 4, 4, 3)]}
    options = {'polish': 7, 'ridges': [0.1]} if solver == 'fast' else {'niter': 30, 'piter': 5}
    record = gw.apply_edit(request, solver=solver, **options)
    assert record.key_method == 'svd'
    if solver == 'fast':
        assert record.options == {'rounds': 8, 'polish': 7, 'polish_lr': 0.03, 'ridges': [0.1], 'max_change': 3.0,
                                  'preserve': 0.0}
        assert len(record.losses) == methods.SOLVERS['fast'].steps(0, **options)
    else:
        assert record.options == {'niter': 30, 'piter': 5, 'lr': 0.05, 'low_rank_insert': True,
                                  'low_rank_gradient': False}
    with pytest.raises(RewriteError, match="unknown option 'polsh' of the 'fast' solver"):
        gw.apply_edit(request, solver='fast', polsh=3)


def test_a_registered_key_method_and_solver_run_by_name(monkeypatch):
    """Adding a key method or a solver is one registry entry: the rewriter dispatches by name."""
    import warnings

    import torch

    from rewrite.core.solvers.problem import projected_conv
    model = TinyPGAN()
    gw = SeqStyleGanRewriter(model, z_dataset_for_model(model, 8), layernum=2, progress=False)

    def first_units(stats, keys, weights, rank):
        return torch.eye(keys.shape[1])[:rank]
    calls = []

    def nudge(problem, options, update_callback):
        """W += lr * the all-ones weight projected onto the context (a stand-in solver)."""
        calls.append(options)
        with torch.no_grad():
            problem.weight += options.lr * projected_conv(torch.ones_like(problem.weight), problem.context)
        return [0.0]
    monkeypatch.setitem(methods.KEY_METHODS, 'units', methods.KeyMethod('units', 'the first units', first_units))
    monkeypatch.setitem(methods.SOLVERS, 'nudge', methods.Solver('nudge', 'a fixed step', nudge, IterativeOptions,
                                                                 preserve_regions=False))
    pairs = [(1, square(8, 4, 4, 3))]
    assert torch.equal(gw.multi_key_from_selection(pairs, rank=2, key_method='units'), torch.eye(12)[:2])
    w0 = gw.target_weights().detach().clone()
    request = {'object': [0, square(8, 1, 1, 3)], 'paste': [1, square(8, 4, 4, 3)]}
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', RuntimeWarning)       # a fixed step may raise the goal loss a little
        record = gw.apply_edit(request, rank=2, solver='nudge', lr=1e-3, niter=5)
    assert calls == [IterativeOptions(niter=5, piter=10, lr=1e-3)] and record.solver == 'nudge'
    assert record.options == {'niter': 5, 'piter': 10, 'lr': 1e-3}
    change = gw.target_weights().detach() - w0
    expected = 1e-3 * projected_conv(torch.ones_like(w0), record.context.to(w0))
    assert record.rolled_back or torch.allclose(change, expected, atol=1e-6)     # float32 rounding of W
    with pytest.raises(RewriteError, match="solver must be one of .*'nudge'"):
        gw.apply_edit(request, solver='nope')
