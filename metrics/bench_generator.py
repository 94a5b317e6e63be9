"""Benchmark of SeqStyleGAN2 inference on the CPU: images/s, FLOPs per image, GFLOP/s, seq vs fused.

    python metrics/bench_generator.py                 # full run: config-f 256 (batch 1, 8), demo 64 (batch 32)
    python metrics/bench_generator.py --quick         # a tiny smoke run (not written unless --out given)
    python metrics/bench_generator.py --profile       # also: where each mode spends its time (batch 8, 256 px)

Timing: per (model, batch, threads) both modes share one set of random weights and one z batch;
after warm-up, each repeat times one forward pass of each mode, alternating which goes first, and
images/s is batch / median time. FLOPs are counted analytically from the architecture as executed by
each mode (multiply-adds of mapping, modulation affines, weight scaling, style application, convs,
transposed convs, blurs, demodulation; noise, bias and activation are left out), 1 MAC = 2 FLOPs, and
cross-checked against torch.utils.flop_counter.FlopCounterMode (which sees only the mm and conv
ops). Writes metrics/results/generator_bench.json (machine info, every timing) and prints a
markdown table.
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from metrics.report import machine_info, markdown_table, write_json  # noqa: E402
from metrics.timing import Timing, interleaved_timings, repeat_timing  # noqa: E402
from utils.stylegan2 import SeqStyleGAN2, ops  # noqa: E402

CONFIGS = {
    'config-f-256': dict(size=256, style_dim=512, n_mlp=8, channel_multiplier=2),
    'demo-64': dict(size=64, style_dim=128, n_mlp=4, channels={4: 64, 8: 64, 16: 64, 32: 64, 64: 64}),
    'tiny-32': dict(size=32, style_dim=64, n_mlp=2, channels={4: 32, 8: 32, 16: 32, 32: 32}),
}
FULL_PLAN = [('config-f-256', (1, 8)), ('demo-64', (32,))]
QUICK_PLAN = [('tiny-32', (1, 8))]
BLUR_TAPS = 16          # the 4x4 FIR kernel
DEFAULT_OUT = ROOT / 'metrics' / 'results' / 'generator_bench.json'


# ---------------------------------------------------------------------------------------------------
# analytic multiply-add counts
# ---------------------------------------------------------------------------------------------------

def styled_conv_macs(c_in: int, c_out: int, style_dim: int, res: int, upsample: bool, mode: str, batch: int,
                     k: int = 3, demodulate: bool = True) -> dict[str, float]:
    """Multiply-adds per image of one modulated conv as `mode` executes it, by category.

    res: output resolution. Upsampling convs are a stride-2 transposed conv from res/2 to res+1,
    then the 4x4 blur down to res. Per-batch work (weight scaling, seq's weight energy) is divided by batch.
    """
    r_in = res // 2 if upsample else res
    conv_out = 2 * r_in + k - 2 if upsample else res
    weight = c_out * c_in * k * k
    macs = {'modulation': style_dim * c_in,                                 # the style affine (a matmul)
            'weight_scale': (style_dim * c_in + weight) / batch,            # equalized-lr scaling of both weights
            'conv_transpose' if upsample else 'conv': r_in * r_in * weight}
    if upsample:
        macs['blur'] = BLUR_TAPS * c_out * res * res
    if mode == 'seq':
        macs['style_apply'] = c_in * r_in * r_in                              # fmap * style
        if demodulate:    # sum_k W^2 (per batch); style^2 @ energy^T (a matmul); rsqrt; out * d
            macs['demodulation'] = (weight + c_out * c_in) / batch + c_in + c_out + c_out * conv_out ** 2
            macs['demodulation_matmul'] = c_in * c_out
    else:
        macs['style_apply'] = weight                                         # W * style, per sample
        if demodulate:    # sum (W s)^2, rsqrt, (W s) * d
            macs['demodulation'] = 2 * weight + c_out
    return macs


def generator_macs(model: SeqStyleGAN2, mode: str, batch: int) -> dict[str, float]:
    """Multiply-adds per image of the whole generator, by category."""
    total: dict[str, float] = defaultdict(float)
    d, ch = model.style_dim, model.channels

    def add(parts: dict[str, float], prefix: str = '') -> None:
        for key, value in parts.items():
            total[prefix + key] += value

    total['mapping'] = model.n_mlp * d * d
    total['weight_scale'] = model.n_mlp * d * d / batch
    add(styled_conv_macs(ch[4], ch[4], d, 4, False, mode, batch))
    add(styled_conv_macs(ch[4], 3, d, 4, False, mode, batch, k=1, demodulate=False), 'to_rgb.')
    res = 8
    while res <= model.size:
        add(styled_conv_macs(ch[res // 2], ch[res], d, res, True, mode, batch))
        add(styled_conv_macs(ch[res], ch[res], d, res, False, mode, batch))
        add(styled_conv_macs(ch[res], 3, d, res, False, mode, batch, k=1, demodulate=False), 'to_rgb.')
        total['upsample_rgb'] += 3 * BLUR_TAPS * res * res                     # zero insertion + 4x4 FIR
        res *= 2
    return dict(total)


def flop_counter_macs(parts: dict[str, float]) -> float:
    """The part of the analytic count that FlopCounterMode sees (mm and conv ops), per image."""
    seen = ('mapping', 'modulation', 'conv', 'conv_transpose', 'blur', 'upsample_rgb', 'demodulation_matmul')
    return sum(v for k, v in parts.items() if k.split('.')[-1] in seen)


def measured_flops(model: SeqStyleGAN2, z: torch.Tensor) -> float:
    """FLOPs per image counted by FlopCounterMode over one forward pass."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(z)
    return counter.get_total_flops() / z.shape[0]


# ---------------------------------------------------------------------------------------------------
# timing
# ---------------------------------------------------------------------------------------------------

def build_pair(config: dict, seed: int = 0) -> dict[str, SeqStyleGAN2]:
    """A seq and a fused generator with the same random weights."""
    torch.manual_seed(seed)
    seq = SeqStyleGAN2(**config).eval()
    return {'seq': seq, 'fused': seq.fused_copy().eval()}


def time_modes(models: dict[str, SeqStyleGAN2], z: torch.Tensor, repeats: int, warmup: int) -> dict[str, Timing]:
    """Seconds per forward pass (no grad) of each mode; repeats alternate which mode goes first."""
    with torch.no_grad():
        for _ in range(warmup):
            for model in models.values():
                model(z)
        timings = interleaved_timings([functools.partial(m, z) for m in models.values()], repeats, alternate=True)
    return dict(zip(models, timings))


def bench_case(name: str, batch: int, threads: int, repeats: int, warmup: int) -> list[dict]:
    """One row per mode for a (config, batch, threads) case."""
    torch.set_num_threads(threads)
    models = build_pair(CONFIGS[name])
    z = torch.randn(batch, models['seq'].style_dim, generator=torch.Generator().manual_seed(1))
    times = time_modes(models, z, repeats, warmup)
    rows = []
    for mode, model in models.items():
        parts = generator_macs(model, mode, batch)
        macs = sum(parts.values())
        seconds = times[mode].median
        counted = measured_flops(model, z)
        rows.append({
            'config': name, 'batch': batch, 'threads': threads, 'mode': mode,
            'images_per_s': batch / seconds, 'ms_per_image': 1000 * seconds / batch,
            'seconds_per_forward': list(times[mode].seconds),
            'gflop_per_image': 2 * macs / 1e9,
            'gflop_per_image_by_part': {k: 2 * v / 1e9 for k, v in sorted(parts.items())},
            'flop_counter_gflop_per_image': counted / 1e9,
            'flop_counter_check': counted / (2 * flop_counter_macs(parts)),
            'achieved_gflop_per_s': 2 * macs / 1e9 * batch / seconds,
        })
    ratio = rows[0]['images_per_s'] / rows[1]['images_per_s']
    for row in rows:
        row['seq_over_fused'] = ratio
    return rows


# ---------------------------------------------------------------------------------------------------
# where the time goes
# ---------------------------------------------------------------------------------------------------

def module_self_times(model: SeqStyleGAN2, z: torch.Tensor, repeats: int = 3) -> dict[str, float]:
    """Median seconds per forward spent in each module class (its own work, children excluded)."""
    inclusive: dict[torch.nn.Module, float] = {}
    starts: dict[torch.nn.Module, float] = {}

    def pre(module, _inputs):
        starts[module] = time.perf_counter()

    def post(module, _inputs, _output):
        inclusive[module] = inclusive.get(module, 0.0) + time.perf_counter() - starts.pop(module)

    handles = [m.register_forward_pre_hook(pre) for m in model.modules()]
    handles += [m.register_forward_hook(post) for m in model.modules()]
    runs = []
    try:
        for _ in range(repeats + 1):
            inclusive.clear()
            with torch.no_grad():
                model(z)
            by_class: dict[str, float] = defaultdict(float)
            for module, seconds in inclusive.items():
                children = sum(inclusive.get(c, 0.0) for c in module.children())
                by_class[type(module).__name__] += seconds - children
            runs.append(by_class)
    finally:
        for h in handles:
            h.remove()
    return {k: statistics.median(run.get(k, 0.0) for run in runs[1:]) for k in runs[-1]}


def seq_and_fused_pieces(x: torch.Tensor, w: torch.Tensor, style: torch.Tensor, scale: float,
                         upsample: bool) -> dict[str, Callable[[], torch.Tensor]]:
    """The pieces of one modulated conv, as calls: x [B, I, H, W], w [O, I, k, k], style [B, I]."""
    out = ops.plain_conv(x, w, scale, upsample)
    return {
        'seq.style_apply': lambda: x * style[:, :, None, None],
        'seq.conv': lambda: ops.plain_conv(x, w, scale, upsample),
        'seq.demodulation': lambda: out * ops.demodulation(w, style, scale)[:, :, None, None],
        'fused.modulated_conv': lambda: ops.fused_modulated_conv(x, w, style, scale, True, upsample),
    }


def layer_op_times(model: SeqStyleGAN2, batch: int, repeats: int = 3) -> Iterator[dict]:
    """Per styled conv layer: seconds of seq's pieces (style apply, conv, demodulation) vs the fused conv."""
    gen = torch.Generator().manual_seed(0)
    for name in model.layer_numbers:
        conv = model.rewrite_site(name).conv_module()
        w = conv.weight[0].detach()
        r_in = model.layer_resolution(name) // (2 if conv.upsample else 1)
        x = torch.randn(batch, w.shape[1], r_in, r_in, generator=gen)
        style = torch.randn(batch, w.shape[1], generator=gen)
        row = {'layer': name, 'c_in': w.shape[1], 'c_out': w.shape[0], 'res_in': r_in, 'upsample': conv.upsample}
        with torch.no_grad():
            for key, fn in seq_and_fused_pieces(x, w, style, conv.scale, conv.upsample).items():
                fn()                                                   # warm-up
                row[key] = repeat_timing(fn, repeats).median
        row['seq_total'] = row['seq.style_apply'] + row['seq.conv'] + row['seq.demodulation']
        yield row


def profile_report(name: str, batch: int, threads: int, repeats: int) -> dict:
    torch.set_num_threads(threads)
    models = build_pair(CONFIGS[name])
    z = torch.randn(batch, models['seq'].style_dim, generator=torch.Generator().manual_seed(1))
    return {'config': name, 'batch': batch, 'threads': threads,
            'module_seconds': {mode: module_self_times(m, z, repeats) for mode, m in models.items()},
            'layers': list(layer_op_times(models['seq'], batch, repeats))}


# ---------------------------------------------------------------------------------------------------
# reporting
# ---------------------------------------------------------------------------------------------------

def throughput_table(rows: list[dict]) -> str:
    return markdown_table(
        ['model', 'batch', 'threads', 'mode', 'images/s', 'ms/image', 'GFLOP/image', 'GFLOP/s', 'seq/fused'],
        [[r['config'], r['batch'], r['threads'], r['mode'], f"{r['images_per_s']:.3g}", f"{r['ms_per_image']:.4g}",
          f"{r['gflop_per_image']:.4g}", f"{r['achieved_gflop_per_s']:.3g}", f"{r['seq_over_fused']:.3f}"]
         for r in rows])


def profile_table(report: dict) -> str:
    lines = [f"Where the time goes ({report['config']}, batch {report['batch']}, {report['threads']} threads), "
             'seconds per forward, by module class (self time):', '',
             '| module | seq | fused |', '|---|---:|---:|']
    seq, fused = report['module_seconds']['seq'], report['module_seconds']['fused']
    for key in sorted(set(seq) | set(fused), key=lambda k: -max(seq.get(k, 0), fused.get(k, 0))):
        lines.append(f'| {key} | {seq.get(key, 0):.3f} | {fused.get(key, 0):.3f} |')
    lines += ['', 'Per layer, seconds: seq = style_apply + conv + demodulation vs the fused modulated conv:', '',
              '| layer | in->out | res in | up | style_apply | conv | demod | seq total | fused |',
              '|---:|---|---:|---|---:|---:|---:|---:|---:|']
    for r in report['layers']:
        lines.append(f"| {r['layer']} | {r['c_in']}->{r['c_out']} | {r['res_in']} | {'y' if r['upsample'] else ''} | "
                     f"{r['seq.style_apply']:.4f} | {r['seq.conv']:.4f} | {r['seq.demodulation']:.4f} | "
                     f"{r['seq_total']:.4f} | {r['fused.modulated_conv']:.4f} |")
    return '\n'.join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--threads', type=int, nargs='+', default=[2, 1], help='torch threads to test (default 2 1)')
    p.add_argument('--repeats', type=int, default=5, help='timed forward passes per mode (default 5)')
    p.add_argument('--warmup', type=int, default=1, help='untimed forward passes per mode first (default 1)')
    p.add_argument('--quick', action='store_true', help='a tiny model only (smoke test)')
    p.add_argument('--profile', action='store_true', help='also break the time down (config-f 256, batch 8)')
    p.add_argument('--out', type=Path, default=None, help=f'JSON to write (default {DEFAULT_OUT}; none with --quick)')
    p.add_argument('--note', default='shared machine: a GAN training job and other engineers ran concurrently',
                   help='recorded in the JSON')
    args = p.parse_args(argv)
    plan = QUICK_PLAN if args.quick else FULL_PLAN
    out = args.out if args.out is not None else (None if args.quick else DEFAULT_OUT)
    info = machine_info()
    started = time.time()
    rows = []
    for name, batches in plan:
        for batch in batches:
            for threads in args.threads:
                rows += bench_case(name, batch, threads, args.repeats, args.warmup)
                print('\n'.join(throughput_table(rows[-2:]).splitlines()[2:]), flush=True)
    print()
    print(throughput_table(rows))
    result = {'machine': info | {'loadavg_after': list(os.getloadavg()), 'note': args.note},
              'method': {'timing': f'median of {args.repeats} forward passes per mode after {args.warmup} warm-up, '
                                   'modes alternating; images/s = batch / median seconds',
                         'flops': 'analytic multiply-adds x 2 (see gflop_per_image_by_part), cross-checked with '
                                  'FlopCounterMode (mm + conv only; flop_counter_check = counted / analytic part)'},
               'seconds': time.time() - started, 'rows': rows}
    if args.profile:
        name = 'tiny-32' if args.quick else 'config-f-256'
        result['profile'] = profile_report(name, 8, args.threads[0], max(1, min(args.repeats, 3)))
        print()
        print(profile_table(result['profile']))
    if out is not None:
        write_json(out, result)
        print(f'\nwrote {out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
