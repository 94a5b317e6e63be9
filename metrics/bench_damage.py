"""Times what the damage probe adds to an edit (not a test: a table and a JSON file).

    python -m metrics.bench_damage --threads 1

The original tool's dome2spire edit applied three times in a row (rank 1, fast solver, layer 8) to a 256 px config-f
layout with random weights of a trained model's scale (`utils.stylegan2.synthetic`; the layout file comes from
../shared), by a rewriter without the probe and by one with it (DAMAGE_SAMPLES held-out samples). An untimed first
edit gathers the statistics and renders the samples before and after it, then is reverted: change 1 repeats it from
the same weights, so both of its renders are kept ones; each later change starts where the last ended and renders
once. The ratio is against the rewriter without the probe, run in the same process. Writes
metrics/results/damage_bench.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import warnings

import torch

from metrics.report import ROOT, machine_info, markdown_table, write_json
from rewrite.core import SeqStyleGanRewriter
from rewrite.core.damage import DAMAGE_SAMPLES
from utils.stylegan2.checkpoint import model_from_checkpoint
from utils.stylegan2.synthetic import synthetic_checkpoint
from utils.zdataset import z_dataset_for_model

REFERENCE = ROOT.parent / 'shared' / 'reference'
OUT = ROOT / 'metrics' / 'results' / 'damage_bench.json'


def edit_times(samples: int, changes: int, cachedir: str) -> list[float]:
    """Seconds of each of `changes` consecutive edits by a rewriter with `samples` damage samples (0: no probe)."""
    layout = json.loads((REFERENCE / 'stylegan2-checkpoint-layout-256.json').read_text())['g_ema']
    model = model_from_checkpoint(synthetic_checkpoint(layout, seed=5), truncation=0.5)
    gw = SeqStyleGanRewriter(model, z_dataset_for_model(model, 1000), layernum=8, cachedir=cachedir, progress=False,
                             damage_samples=samples)
    request = json.loads((REFERENCE / 'original-edits' / 'church' / 'dome2spire.json').read_text())
    gw.apply_request(request, rank=1, solver='fast')          # statistics gathered (or read), not timed
    gw.revert()
    times = []
    for _ in range(changes):
        start = time.perf_counter()
        gw.apply_request(request, rank=1, solver='fast')
        times.append(time.perf_counter() - start)
    return times


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--threads', type=int, default=1)
    parser.add_argument('--changes', type=int, default=3, help='consecutive edits timed (default 3)')
    parser.add_argument('--cachedir', default=str(ROOT / 'cache'), help='key statistics cache')
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    warnings.simplefilter('ignore', RuntimeWarning)
    plain = edit_times(0, args.changes, args.cachedir)
    probed = edit_times(DAMAGE_SAMPLES, args.changes, args.cachedir)
    base = statistics.median(plain)
    rows = [['without the probe', *[f'{t:.1f}' for t in plain], f'{base:.1f}', '1.0'],
            [f'with it ({DAMAGE_SAMPLES} samples)', *[f'{t:.1f}' for t in probed],
             f'{statistics.median(probed[1:]):.1f}', f'{statistics.median(probed[1:]) / base:.1f}']]
    header = ['rewriter', *[f'change {k + 1} s' for k in range(args.changes)], 'median of later s', 'ratio']
    print(markdown_table(header, rows))
    write_json(OUT, {'threads': args.threads, 'machine': machine_info(args.threads), 'without_probe_s': plain,
                     'with_probe_s': probed, 'damage_samples': DAMAGE_SAMPLES})


if __name__ == '__main__':
    main()
