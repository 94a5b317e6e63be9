"""Benchmark of the rewriter on a size-256 config-f StyleGAN2 (random weights of realistic scale).

For each layer: seconds to gather the key statistics over N z's against a bare forward pass of
the context piece over the same z's (goal: statistics at >= 0.9 of the bare throughput), and the
original insert (2001 Adam iterations) against the fast solver: seconds and final loss (goal: fast
>= 20x faster with a loss <= the original's). Prints a markdown table, writes JSON.

    python -m metrics.bench_rewriter [--n 1000] [--layers 8 6 10] [--niter 2001] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from metrics.report import machine_info, write_json
from metrics.timing import interleaved_timings
from rewrite.core.rewriter import SeqStyleGanRewriter
from rewrite.core.statistics import gather_key_statistics
from rewrite.formats import editfile
from utils.stylegan2 import SeqStyleGAN2
from utils.zdataset import z_dataset_for_model

ROOT = Path(__file__).resolve().parents[1]
SHARED_EDIT = ROOT.parent / 'shared' / 'reference' / 'original-edits' / 'church' / 'dome2spire.json'


def realistic_generator(seed: int = 0) -> SeqStyleGAN2:
    """config-f 256 with the value scales of a trained model (modulation biases near 1, noise on)."""
    torch.manual_seed(seed)
    model = SeqStyleGAN2(256, channel_multiplier=2, truncation=0.5)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith('modulation.bias'):
                p.copy_(1 + 0.2 * torch.randn_like(p))
            elif name.endswith(('noise.weight', 'activate.bias')):
                p.copy_(0.05 + 0.1 * torch.randn_like(p).abs())
    return model.eval()


def edit_request() -> dict:
    if SHARED_EDIT.is_file():
        return json.loads(SHARED_EDIT.read_text())
    box = np.zeros((256, 256), np.float32)
    box[96:160, 96:160] = 1
    paste = np.zeros((256, 256), np.float32)
    paste[32:96, 140:204] = 1
    return {'object': [3, editfile.encode_mask(box)], 'paste': [5, editfile.encode_mask(paste)]}


def bench_layer(model, zds, layer: int, n: int, niter: int, repeats: int, request: dict) -> dict:
    gw = SeqStyleGanRewriter(model, zds, layer, progress=False)
    zs = zds.tensors[0][:n]
    batch = gw.batch_size

    def bare():
        with torch.no_grad():
            for i in range(0, n, batch):
                gw.context_model(zs[i:i + batch]).fmap.sum()

    def stats():
        gather_key_statistics(lambda z: gw.context_model(z).fmap, zs, batch, progress=False)

    bare()                                                    # warm-up
    t_bare, t_stats = (t.median for t in interleaved_timings([bare, stats], repeats))
    gw.keys.statistics = gw.collect_statistics()
    original = gw.apply_edit(request, rank=1, niter=niter, solver='original')
    gw.undo()
    fast = gw.apply_edit(request, rank=1, solver='fast')
    gw.undo()
    return {'layer': layer, 'keys': list(gw.k_shape[1:]), 'n': n, 'bare_seconds': t_bare, 'stats_seconds': t_stats,
            'stats_throughput_ratio': t_bare / t_stats, 'original_seconds': original.seconds,
            'original_niter': niter, 'original_final_loss': original.final_loss, 'fast_seconds': fast.seconds,
            'fast_final_loss': fast.final_loss, 'speedup': original.seconds / fast.seconds,
            'initial_loss': original.initial_loss}


def table(rows: list[dict]) -> str:
    lines = ['| layer | keys (C, H, W) | stats s / bare s (N) | throughput ratio | original s (iters) | '
             'fast s | speed-up | loss: initial / original / fast |', '|' + '---|' * 8]
    for r in rows:
        lines.append(f"| {r['layer']} | {tuple(r['keys'])} | {r['stats_seconds']:.1f} / {r['bare_seconds']:.1f} "
                     f"({r['n']}) | {r['stats_throughput_ratio']:.2f} | {r['original_seconds']:.1f} "
                     f"({r['original_niter']}) | {r['fast_seconds']:.2f} | {r['speedup']:.0f}x | "
                     f"{r['initial_loss']:.4f} / {r['original_final_loss']:.4f} / {r['fast_final_loss']:.4f} |")
    return '\n'.join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--n', type=int, default=1000, help='z-sample size for the statistics')
    p.add_argument('--layers', type=int, nargs='+', default=[8, 6, 10])
    p.add_argument('--niter', type=int, default=2001)
    p.add_argument('--repeats', type=int, default=3)
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--out', default=str(ROOT / 'metrics' / 'results' / 'rewriter_bench.json'))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = realistic_generator()
    zds = z_dataset_for_model(model, max(args.n, 1000))
    request = edit_request()
    rows = []
    for layer in args.layers:
        rows.append(bench_layer(model, zds, layer, args.n, args.niter, args.repeats, request))
        print(table(rows[-1:]), flush=True)
    print(table(rows))
    write_json(Path(args.out), {'machine': machine_info(), 'args': vars(args), 'rows': rows})


if __name__ == '__main__':
    main()
