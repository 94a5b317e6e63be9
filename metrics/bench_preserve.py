"""Timings of preserve regions on the demo model (not tests: a table and a JSON file).

    python -m metrics.bench_preserve [--threads 2] [--repeats 3]

- the fast solver on each bundled edit with preserve regions (notebooks/masks/demo/*_preserve_layer*.json), at
  its layer and rank, with and without the regions (key statistics gathered beforehand); goal < 2 s;
- the widget's Preview over 32 samples (context and preserve response maps, heat overlays); goal < 1.5 s;
- what the before / after strip adds to Execute Change in the widget (after the grid's repaint: the panel's
  held-out samples and the preserve examples rendered by the edited model, the originals cached as after the
  first Execute; and the first one, which renders the originals too).
Medians of --repeats runs; writes metrics/results/preserve_bench.json (or --out).
"""

from __future__ import annotations

import argparse
import functools
import json
from pathlib import Path

import ipywidgets  # noqa: F401  (the widget's import cost stays out of the timings)

from metrics.common import EDIT_DIR, EDIT_TRUNCATION, RESULTS, ZSAMPLE, edit_setting, setup_torch
from metrics.report import machine_info, markdown_table, write_json
from metrics.timing import repeat_timing
from rewrite.core.rewriter import SeqStyleGanRewriter
from rewrite.formats.settings import PRESERVE_WEIGHT
from utils.stylegan2 import load_seq_stylegan
from utils.zdataset import z_dataset_for_model

SOLVE_GOAL_S, PREVIEW_GOAL_S = 2.0, 1.5


def solve_once(gw, apply, request: dict, rank: int, weight: float) -> None:
    apply(request, rank=rank, solver='fast', preserve_weight=weight)
    gw.revert()


def strip_seconds(app, record, repeats: int) -> tuple[float, float]:
    """(the first before / after strip after a change, the median of `repeats` later ones): each after the
    app's refresh (untimed), as Execute Change shows it."""
    strip = functools.partial(app.preserve_panel.after_change, record)
    first = repeat_timing(strip, 1, setup=app.refresh).median
    return first, repeat_timing(strip, repeats, setup=app.refresh).median


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--repeats', type=int, default=3)
    p.add_argument('--preview-n', type=int, default=32)
    p.add_argument('--out', default=str(RESULTS / 'preserve_bench.json'))
    opts = p.parse_args(argv)
    setup_torch(opts.threads)
    model = load_seq_stylegan('demo', truncation=EDIT_TRUNCATION)
    zds = z_dataset_for_model(model, ZSAMPLE)
    rows, res = [], {'machine': machine_info(opts.threads), 'preserve_weight': PRESERVE_WEIGHT, 'edits': {}}
    from rewrite.app.rewriteapp import GanRewriteApp
    for path in sorted(EDIT_DIR.glob('*_preserve_layer*.json')):
        layer, rank = edit_setting(path)
        request = json.loads(path.read_text())
        gw = SeqStyleGanRewriter(model, zds, layer, progress=False)
        _ = gw.stats
        apply = gw.apply_erase if 'object' not in request else gw.apply_edit
        seconds = {}
        for weight in (0.0, PRESERVE_WEIGHT):
            seconds[weight] = repeat_timing(functools.partial(solve_once, gw, apply, request, rank, weight),
                                            opts.repeats).median
        app = GanRewriteApp(gw, size=64, num_canvases=opts.preview_n, background=False)
        app.set_request(request)
        preview = repeat_timing(app.preserve_panel.preview, opts.repeats).median
        record = apply(request, rank=rank, solver='fast', preserve_weight=PRESERVE_WEIGHT)
        strip_first, strip = strip_seconds(app, record, opts.repeats)
        gw.revert()
        res['edits'][path.name] = {'layer': layer, 'rank': rank, 'preserve_regions': len(request['preserve']),
                                   'fast_s_without': seconds[0.0], 'fast_s_with': seconds[PRESERVE_WEIGHT],
                                   'preview_s': preview, 'preview_n': opts.preview_n, 'strip_s': strip,
                                   'strip_first_s': strip_first, 'strip_heldout': app.preserve_panel.heldout}
        rows.append([path.name, layer, rank, len(request['preserve']), f'{seconds[0.0]:.2f}',
                     f'{seconds[PRESERVE_WEIGHT]:.2f}', 'pass' if seconds[PRESERVE_WEIGHT] < SOLVE_GOAL_S else 'FAIL',
                     f'{preview:.2f}', 'pass' if preview < PREVIEW_GOAL_S else 'FAIL',
                     f'{strip:.2f} ({strip_first:.2f})'])
    print(markdown_table(['edit', 'layer', 'rank', 'preserve regions', 'fast s without', 'fast s with',
                          f'< {SOLVE_GOAL_S:g} s', f'preview {opts.preview_n} s', f'< {PREVIEW_GOAL_S:g} s',
                          'strip after Execute s (first)'], rows))
    write_json(Path(opts.out), res)
    return res


if __name__ == '__main__':
    main()
