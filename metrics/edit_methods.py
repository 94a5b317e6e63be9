"""The paper's quantitative comparison of editing methods, on the demo world.

    python -m metrics.edit_methods [--n 1000] [--niter 2001] [--zero-units 8]

On the bundled dome-to-spire edit (notebooks/masks/demo/dome2spire_layerN.json, remade first when it was
made for another checkpoint), each method edits a fresh copy of the demo generator at the file's layer:

- ours, rank 1, original solver (Adam, --niter iterations, projection every 10), with the release's
  settings and with its projected-gradient option (low_rank_gradient=True)
- ours, rank 1, fast solver
- ours, full rank: the original solver without the low-rank constraint (low_rank_insert=False)
- fine-tuning all weights on the pasted image (apply_overfit, --niter iterations)
- zeroing units, dissection style: the --zero-units key channels with the largest normalised response in
  the context regions (normdissect_units) lose their weights (zero() on those unit directions)

and, for the watermark erase, ours (original and fast solvers) and zeroing the top watermark units.
Every edited model is scored on --n held-out z's (seed 2, truncation 1.0) against the unedited model on the
same z's (definitions in utils/demo/measures.py): effectiveness, the change outside the edited class's region
(mean absolute pixel change, segmenter-feature change, label change), the Frechet distance of segmenter
features to the unedited samples, and the seconds the edit took (statistics gathered beforehand).
Acceptance: the original- and fast-solver rows of dome to spire agree in effectiveness within 5 points
(checked for both original rows; the same checks on the erase are reported too).

Writes metrics/results/edit_methods.json, edit_methods.md and edit_methods.png (effectiveness against
the change outside, per method).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from metrics.common import (
    EDIT_TRUNCATION,
    EVAL_SEED,
    EVAL_TRUNCATION,
    RESULTS,
    ZSAMPLE,
    add_snapshot_args,
    bundled_request,
    sample,
)
from metrics.demo_edit_files import bundled_preserve_weight
from metrics.demo_regions import EditPlan, PreservePlan
from metrics.edit_methods_report import plot, preserve_report, report
from metrics.make_demo_edits import PLAN, PRESERVE_PLANS, apply_plan, open_snapshot, score_plan
from metrics.report import machine_info, pct, rel, write_json
from rewrite.core.history import EditRecord
from rewrite.core.rewriter import SeqStyleGanRewriter
from rewrite.formats.registry import IterativeOptions
from rewrite.formats.settings import PRESERVE_WEIGHT
from utils.demo.measures import REGION_RADIUS
from utils.fileio import atomic_write_text
from utils.zdataset import z_dataset_for_model, z_sample_for_model

MAX_SOLVER_GAP = 0.05           # original vs fast solver effectiveness, as a share
PITER = IterativeOptions.piter     # the original solver's projection interval (rewrite/formats/registry.py)


@dataclass(frozen=True)
class Method:
    """A way to carry out an edit request on a rewriter's model."""

    name: str
    run: Callable[[SeqStyleGanRewriter, EditPlan, dict, argparse.Namespace], EditRecord]


def ours(solver: str, low_rank: bool = True, projected_gradient: bool = False, rank: int = 1) -> Callable:
    def run(gw, plan, request, opts):
        saved = gw.low_rank_insert, gw.low_rank_gradient
        gw.low_rank_insert, gw.low_rank_gradient = low_rank, projected_gradient
        try:
            return apply_plan(gw, plan, request, rank=rank, solver=solver, niter=opts.niter)
        finally:
            gw.low_rank_insert, gw.low_rank_gradient = saved
    return run


def fine_tune(gw, plan, request, opts) -> EditRecord:
    return gw.apply_overfit(request, niter=opts.niter)


def zero_units(gw, plan, request, opts) -> EditRecord:
    """Dissection-style: zero the weights of the top context units of the layer's input."""
    pairs = [(imgnum, mask) for imgnum, mask in request['key']]
    units = gw.normdissect_units(pairs, opts.zero_units)
    directions = torch.zeros(len(units), gw.k_shape[1])
    directions[torch.arange(len(units)), units.cpu()] = 1.0
    return gw.zero(directions)


ORIGINAL = 'ours, rank 1, original solver'
ORIGINAL_PROJECTED = 'ours, rank 1, original solver, projected gradient'
FAST = 'ours, rank 1, fast solver'
REPLACE_METHODS = (
    Method(ORIGINAL, ours('original')),
    Method(ORIGINAL_PROJECTED, ours('original', projected_gradient=True)),
    Method(FAST, ours('fast')),
    Method('ours, full rank, original solver', ours('original', low_rank=False)),
    Method('fine-tune all weights', fine_tune),
    Method('zero top units (dissection)', zero_units),
)
ERASE_METHODS = (
    Method(ORIGINAL, ours('original')),
    Method(ORIGINAL_PROJECTED, ours('original', projected_gradient=True)),
    Method(FAST, ours('fast')),
    Method('zero top units (dissection)', zero_units),
)


# ---------------------------------------------------------------------------------------------------
# running
# ---------------------------------------------------------------------------------------------------

def compare(snapshot, segmenter, name: str, methods, opts) -> dict:
    """Every method on the bundled edit `name` (plus the fast solver at its bundled rank when that is not 1):
    {'file', 'layer', 'rank', 'rows': [...]}."""
    plan = PLAN[name]
    path, layer, rank, request = bundled_request(name)
    if rank != 1:                                             # the bundled setting, beside the rank-1 rows
        methods = (*methods, Method(f'ours, rank {rank} (bundled setting), fast solver', ours('fast', rank=rank)))
    model = snapshot.model(EDIT_TRUNCATION)
    gw = SeqStyleGanRewriter(model, z_dataset_for_model(model, ZSAMPLE), layer, progress=False)
    _ = gw.stats                                              # gathered once, outside the timings
    z = z_sample_for_model(model, opts.n, seed=EVAL_SEED)
    before = sample(model, z, segmenter, opts.batch, f'{name}: unedited', EVAL_TRUNCATION)
    rows = []
    for method in methods:
        gw.revert()
        t0 = time.perf_counter()
        record = method.run(gw, plan, request, opts)
        seconds = time.perf_counter() - t0
        after = sample(gw.model, z, segmenter, opts.batch, f'{name}: {method.name}', EVAL_TRUNCATION)
        rows.append({'method': method.name, 'seconds': seconds, 'final_loss': record.final_loss,
                     **score_plan(plan, segmenter, before, after)})
        print(f'{name}: {method.name}: effectiveness {pct(rows[-1]["effectiveness"])}, '
              f'change outside {rows[-1]["mean_abs_change_outside"]:.4f}, {seconds:.1f} s')
    return {'file': rel(path), 'layer': layer, 'rank': rank, 'rows': rows}


def solver_agreement(rows: list[dict], original: str = ORIGINAL) -> dict:
    """Whether the `original` solver row's and the fast solver's effectiveness agree within MAX_SOLVER_GAP."""
    by_name = {r['method']: r['effectiveness'] for r in rows}
    gap = abs(by_name[original] - by_name[FAST])
    return {'original': original, 'gap_points': 100 * gap if np.isfinite(gap) else None,
            'max_points': 100 * MAX_SOLVER_GAP, 'pass': bool(gap <= MAX_SOLVER_GAP) if np.isfinite(gap) else None}


def compare_preserve(snapshot, segmenter, pplan: PreservePlan, opts) -> dict:
    """The bundled edit of `pplan` (with preserve regions) without them (preserve_weight 0: bit for bit the
    edit without the field) and with them (the weight make_demo_edits chose with the file), per solver, at
    rank 1 and the bundled rank."""
    path, layer, rank, request = bundled_request(pplan.name)
    chosen = bundled_preserve_weight(pplan.name, path)
    model = snapshot.model(EDIT_TRUNCATION)
    gw = SeqStyleGanRewriter(model, z_dataset_for_model(model, ZSAMPLE), layer, progress=False)
    _ = gw.stats
    z = z_sample_for_model(model, opts.n, seed=EVAL_SEED)
    before = sample(model, z, segmenter, opts.batch, f'{pplan.name}: unedited', EVAL_TRUNCATION)
    rows = []
    for solver in ('original', 'fast'):
        for r in sorted({1, rank}):
            for weight in (0.0, chosen):
                gw.revert()
                record = apply_plan(gw, pplan.plan, request, rank=r, solver=solver, niter=opts.niter,
                                    preserve_weight=weight)
                after = sample(gw.model, z, segmenter, opts.batch, None, EVAL_TRUNCATION)
                rows.append({'solver': solver, 'rank': r, 'preserve_weight': weight, 'seconds': record.seconds,
                             'final_loss': record.final_loss, 'preserve_change': record.preserve_change,
                             'rolled_back': bool(getattr(record, 'rolled_back', False)),
                             **score_plan(pplan.plan, segmenter, before, after)})
                print(f'{pplan.name}: {solver} rank {r} preserve_weight {weight:g}: effectiveness '
                      f'{pct(rows[-1]["effectiveness"])}, collateral {pct(rows[-1].get("collateral", float("nan")))}, '
                      f'change outside {rows[-1]["mean_abs_change_outside"]:.4f}, {record.seconds:.1f} s', flush=True)
    return {'file': rel(path), 'layer': layer, 'rank': rank, 'preserve_weight': chosen,
            'preserve_regions': len(request['preserve']), 'rows': rows}


def run_preserve(snapshot, segmenter, opts) -> dict:
    """Every bundled edit with preserve regions (or those of opts.only; the others' results kept from the last
    run on this checkpoint with the same settings), without and with them: edit_methods_preserve.{json,md}."""
    settings = {'n': opts.n, 'niter': opts.niter, 'batch': opts.batch, 'preserve_weight': PRESERVE_WEIGHT,
                'edit_truncation': EDIT_TRUNCATION, 'eval_truncation': EVAL_TRUNCATION, 'eval_seed': EVAL_SEED}
    last = opts.out_dir / 'edit_methods_preserve.json'
    old = json.loads(last.read_text()) if opts.only and last.is_file() else {}
    if opts.only and (old.get('checkpoint', {}).get('sha256') != snapshot.sha256 or old.get('settings') != settings):
        raise SystemExit('--only needs the last edit_methods_preserve.json made for this checkpoint with the same '
                         '--n / --niter / --batch: run without --only')
    edits = {p.name: compare_preserve(snapshot, segmenter, p, opts) if not opts.only or p.name in opts.only
             else old['edits'][p.name] for p in PRESERVE_PLANS}
    res = {'checkpoint': snapshot.describe(), 'machine': machine_info(opts.threads), 'settings': settings,
           'edits': edits}
    write_json(opts.out_dir / 'edit_methods_preserve.json', res)
    text = preserve_report(res)
    atomic_write_text(opts.out_dir / 'edit_methods_preserve.md', text)
    print(text)
    return res


# ---------------------------------------------------------------------------------------------------
# tables and the plot
# ---------------------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------------------------------

def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--n', type=int, default=1000, help='held-out samples that score each method')
    p.add_argument('--niter', type=int, default=2001, help='iterations of the original solver and of fine-tuning')
    p.add_argument('--zero-units', type=int, default=8, help='units zeroed by the dissection baseline')
    p.add_argument('--preserve', action='store_true',
                   help='only the bundled edits with preserve regions, without and with them: '
                        'edit_methods_preserve.{json,md}')
    p.add_argument('--only', nargs='+', choices=[pp.name for pp in PRESERVE_PLANS], default=None,
                   help='with --preserve: measure only these edits again (the others are kept from the last run)')
    p.add_argument('--report-only', action='store_true',
                   help='only rewrite edit_methods.md and .png from the last edit_methods.json (with --preserve: '
                        'edit_methods_preserve.md from edit_methods_preserve.json)')
    add_snapshot_args(p, RESULTS)
    return p.parse_args(argv)


def main(argv=None) -> dict:
    opts = parse_args(argv)
    if opts.report_only and opts.preserve:
        res = json.loads((opts.out_dir / 'edit_methods_preserve.json').read_text())
        atomic_write_text(opts.out_dir / 'edit_methods_preserve.md', preserve_report(res))
        return res
    if opts.report_only:
        res = json.loads((opts.out_dir / 'edit_methods.json').read_text())
        write_report(res, opts.out_dir)
        return res
    snapshot, segmenter, _ = open_snapshot(opts)
    if opts.preserve:
        return run_preserve(snapshot, segmenter, opts)
    res = {'checkpoint': snapshot.describe(), 'machine': machine_info(opts.threads),
           'settings': {'n': opts.n, 'niter': opts.niter, 'zero_units': opts.zero_units, 'batch': opts.batch,
                        'edit_truncation': EDIT_TRUNCATION, 'eval_truncation': EVAL_TRUNCATION,
                        'eval_seed': EVAL_SEED, 'region_radius': REGION_RADIUS}}
    res['dome2spire'] = compare(snapshot, segmenter, 'dome2spire', REPLACE_METHODS, opts)
    res['erase_watermark'] = compare(snapshot, segmenter, 'erase_watermark', ERASE_METHODS, opts)
    for name in ('dome2spire', 'erase_watermark'):
        res[name]['solver_agreement'] = [solver_agreement(res[name]['rows'], original)
                                         for original in (ORIGINAL, ORIGINAL_PROJECTED)]
    agree = res['dome2spire']['solver_agreement']
    res['acceptance'] = {'original_and_fast_agree_on_dome2spire': agree[0]['pass'],
                         'original_projected_gradient_and_fast_agree_on_dome2spire': agree[1]['pass']}
    write_json(opts.out_dir / 'edit_methods.json', res)
    write_report(res, opts.out_dir)
    return res


def write_report(res: dict, out_dir: Path) -> None:
    """edit_methods.png and edit_methods.md from the figures (as in edit_methods.json)."""
    plot(res, out_dir / 'edit_methods.png', [m.name for m in REPLACE_METHODS])
    text = report(res)
    atomic_write_text(out_dir / 'edit_methods.md', text)
    print(text)
    print(f'wrote {rel(out_dir)}/edit_methods.{{json,md,png}}')


if __name__ == '__main__':
    main()
