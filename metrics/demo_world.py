"""The demo model's figures: fidelity to its data, sampling speed, a sample grid, and edit quality.

    python -m metrics.demo_world [--n 2000] [--edit-n N] [--threads 1]

Writes utils/demo/weights/MODEL_CARD.md, utils/demo/weights/demo_metrics.json and
utils/demo/weights/samples_grid.png from one read of the demo checkpoint (it is overwritten while training
goes on). The bundled edits (notebooks/masks/demo/) are remade first when they were made for another
checkpoint (metrics.make_demo_edits; --keep-edits only warns).

- Fidelity, by the demo segmenter: presence rates of dome, spire, flattop, tree and watermark in N data
  scenes (render_batch(range(N)), held out from training) and N model samples (z seed 1, truncation 1.0),
  their difference in points (goal: each within 8); the Frechet distance of the segmenter's features,
  model vs data, beside data-half vs data-half (and model-half vs data-half, the same sample size).
- Speed: images/s at batch 32 after a warm-up: the fastest of --speed-repeats timed batches (the CPU is
  shared; the median is reported too).
- Edit quality (the paper's section 5.1 on the demo world; definitions in utils/demo/measures.py): the bundled
  dome-to-spire edit and watermark erase (fast solver, at the layer and rank their file names record; made at
  the tool's truncation 0.5), scored on N held-out z's (seed 2) at truncation 1.0: effectiveness and the
  change outside the edited region.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from metrics.common import (
    EDIT_TRUNCATION,
    EVAL_SEED,
    EVAL_TRUNCATION,
    WEIGHTS,
    ZSAMPLE,
    Snapshot,
    add_snapshot_args,
    bundled_request,
    generate,
    sample,
    tile,
)
from metrics.demo_world_card import (
    MAX_PRESENCE_DIFF,
    MAX_TOWER_CHANGE,
    MAX_WATERMARK_AFTER,
    MAX_WATERMARK_CHANGE,
    MIN_IMAGES_PER_S,
    MIN_SPIRE_EFFECTIVENESS,
    MIN_WATERMARK_BEFORE,
    MISSED_NOTES,
    PRESENCE_CLASSES,
    edit_table,
    frechet_table,
    goals_table,
    model_card,
    presence_table,
)
from metrics.make_demo_edits import PLAN, apply_plan, open_snapshot, score_plan
from metrics.report import fmt, machine_info, pct, rel, write_json
from rewrite.core.rewriter import SeqStyleGanRewriter
from utils import imgviz
from utils.demo import Segmenter, render_batch
from utils.demo.measures import REGION_RADIUS, Samples, frechet, presence_rates, segmenter_features
from utils.demo.scenedata import images_to_tensor
from utils.demo.segmenter import vote_tops
from utils.fileio import atomic_path, atomic_write_text
from utils.zdataset import z_dataset_for_model, z_sample_for_model

CARD = WEIGHTS / 'MODEL_CARD.md'
METRICS = WEIGHTS / 'demo_metrics.json'
GRID = WEIGHTS / 'samples_grid.png'


# ---------------------------------------------------------------------------------------------------
# measurements
# ---------------------------------------------------------------------------------------------------

def data_samples(n: int, segmenter: Segmenter, chunk: int = 250) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(images [N, 3, 64, 64] in [-1, 1], true labels, segmenter labels) of scenes 0 .. n-1."""
    images, truth = [], []
    for start in range(0, n, chunk):
        im, lab = render_batch(range(start, min(n, start + chunk)))
        images.append(images_to_tensor(im))
        truth.append(torch.from_numpy(lab.astype(np.int64)))
    images = torch.cat(images)
    return images, torch.cat(truth), segmenter.segment(images, vote=True)


def fidelity(snapshot: Snapshot, segmenter: Segmenter, n: int, batch: int) -> dict:
    """Presence rates and Frechet distances, model (truncation 1.0) vs data, by the segmenter."""
    model = snapshot.model(1.0)
    images = generate(model, z_sample_for_model(model, n, seed=1), batch, desc='model samples')
    pixel_labels = segmenter.segment(images)
    fake = Samples(images, vote_tops(pixel_labels))
    real_images, real_truth, real_labels = data_samples(n, segmenter)
    rates = {'data': presence_rates(real_labels, PRESENCE_CLASSES),
             'data_true_labels': presence_rates(real_truth, PRESENCE_CLASSES),
             'model': presence_rates(fake.labels, PRESENCE_CLASSES),
             'model_pixel_labels': presence_rates(pixel_labels, PRESENCE_CLASSES)}
    diff = {c: 100 * (rates['model'][c] - rates['data'][c]) for c in PRESENCE_CLASSES}
    f_fake, f_real = segmenter_features(segmenter, fake.images), segmenter_features(segmenter, real_images)
    half = n // 2
    return {'n': n, 'model_truncation': 1.0, 'model_z_seed': 1, 'data_scenes': f'0..{n - 1}',
            'presence': rates, 'presence_diff_points': diff,
            'frechet': {'model_vs_data': frechet(f_fake, f_real),
                        'model_half_vs_data_half': frechet(f_fake[:half], f_real[half:]),
                        'data_half_vs_data_half': frechet(f_real[:half], f_real[half:])}}


def sampling_speed(model: torch.nn.Module, batch: int = 32, repeats: int = 20) -> dict:
    """images/s of model(z) at `batch` over `repeats` timed batches: by the median and the fastest
    wall-clock time, and by the median CPU time of this process (what the work costs when it has a
    core to itself)."""
    z = z_sample_for_model(model, batch, seed=3)
    wall, cpu = [], []
    with torch.no_grad():
        model(z)                                                  # warm-up
        for _ in range(repeats):
            t0, c0 = time.perf_counter(), time.process_time()
            model(z)
            wall.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
    median = statistics.median(wall)
    return {'batch': batch, 'repeats': repeats, 'median_seconds': median, 'images_per_s': batch / median,
            'best_images_per_s': batch / min(wall), 'images_per_cpu_s': batch / statistics.median(cpu),
            'truncation': 1.0, 'noise': 'const'}


def save_grid(model: torch.nn.Module, path: Path, n: int = 64) -> None:
    """An 8x8 grid of z-sample images 0 .. n-1."""
    grid = tile(imgviz.to_uint8_batch(generate(model, z_sample_for_model(model, n))), cols=8)
    with atomic_path(path) as tmp:
        Image.fromarray(grid).save(tmp, format='PNG', optimize=True)


def edit_quality(snapshot: Snapshot, segmenter: Segmenter, n: int, batch: int) -> dict:
    """Scores of the bundled dome-to-spire edit and watermark erase (fast solver, each at its file's layer and rank)."""
    model = snapshot.model(EDIT_TRUNCATION)
    zds = z_dataset_for_model(model, ZSAMPLE)
    z = z_sample_for_model(model, n, seed=EVAL_SEED)
    before = sample(model, z, segmenter, batch, 'unedited samples', EVAL_TRUNCATION)
    results = {}
    for name in ('dome2spire', 'erase_watermark'):
        path, layer, rank, request = bundled_request(name)
        gw = SeqStyleGanRewriter(model, zds, layer, progress=False)
        record = apply_plan(gw, PLAN[name], request, rank=rank, solver='fast')
        after = sample(gw.model, z, segmenter, batch, f'{name} samples', EVAL_TRUNCATION)
        results[name] = {'file': rel(path), 'layer': layer, 'rank': rank, 'solver': 'fast',
                         'edit_seconds': record.seconds, 'edit_truncation': EDIT_TRUNCATION,
                         'eval_truncation': EVAL_TRUNCATION, 'z_seed': EVAL_SEED,
                         **score_plan(PLAN[name], segmenter, before, after)}
    return results


def goals(fid: dict, speed: dict, edits: dict) -> list[dict]:
    """Every goal with its measured value and pass (True), fail (False) or not measurable (None)."""
    rows = [{'goal': f'{c} presence within {MAX_PRESENCE_DIFF:g} points of the data',
             'value': f'{d:+.1f} points', 'pass': abs(d) <= MAX_PRESENCE_DIFF}
            for c, d in fid['presence_diff_points'].items()]
    rows.append({'goal': f'sampling speed >= {MIN_IMAGES_PER_S:g} images/s (batch {speed["batch"]}, fastest batch)',
                 'value': f'{speed["best_images_per_s"]:.1f} images/s (median {speed["images_per_s"]:.1f}, '
                          f'per CPU second {speed["images_per_cpu_s"]:.1f})',
                 'pass': speed['best_images_per_s'] >= MIN_IMAGES_PER_S})
    d2s, wm = edits['dome2spire'], edits['erase_watermark']
    rows.append({'goal': f'dome2spire: effectiveness >= {pct(MIN_SPIRE_EFFECTIVENESS)}',
                 'value': pct(d2s['effectiveness']),
                 'pass': bool(d2s['effectiveness'] >= MIN_SPIRE_EFFECTIVENESS)})
    rows.append({'goal': f'dome2spire: mean abs change outside towers <= {MAX_TOWER_CHANGE}',
                 'value': fmt(d2s['mean_abs_change_outside'], 4),
                 'pass': bool(d2s['mean_abs_change_outside'] <= MAX_TOWER_CHANGE)})
    testable = wm['rate_before'] >= MIN_WATERMARK_BEFORE
    rows.append({'goal': f'erase: watermark rate from about 25% to <= {pct(MAX_WATERMARK_AFTER)} '
                         f'(n/a when the model draws < {pct(MIN_WATERMARK_BEFORE)})',
                 'value': f'{pct(wm["rate_before"])} -> {pct(wm["rate_after"])}',
                 'pass': bool(wm['rate_after'] <= MAX_WATERMARK_AFTER) if testable else None})
    rows.append({'goal': f'erase: mean abs change outside the watermark <= {MAX_WATERMARK_CHANGE}',
                 'value': fmt(wm['mean_abs_change_outside'], 4),
                 'pass': bool(wm['mean_abs_change_outside'] <= MAX_WATERMARK_CHANGE)})
    return rows


# ---------------------------------------------------------------------------------------------------
# the card
# ---------------------------------------------------------------------------------------------------


def architecture(model) -> dict:
    layers = model.layer_numbers
    return {'size': model.size, 'style_dim': model.style_dim, 'n_mlp': model.n_mlp,
            'channels': dict(model.channels), 'last_layer': layers[-1],
            'layer_resolutions': ', '.join(f'{n}: {model.layer_resolution(n)}' for n in layers),
            'parameters': sum(p.numel() for p in model.parameters())}


# ---------------------------------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------------------------------

def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--n', type=int, default=2000, help='samples for fidelity (model and data, each)')
    p.add_argument('--edit-n', type=int, default=None, help='samples that score the edits (default: --n)')
    p.add_argument('--speed-repeats', type=int, default=20)
    p.add_argument('--card-only', action='store_true',
                   help=f'only rewrite the card from the last {METRICS.name} (e.g. after editing {MISSED_NOTES.name})')
    add_snapshot_args(p, WEIGHTS, 'where the card, JSON and grid go')
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.card_only:                              # the notes changed: rewrite the card from the last figures
        res = json.loads((args.out_dir / METRICS.name).read_text())
        atomic_write_text(args.out_dir / CARD.name, model_card(res))
        print(f'wrote {rel(args.out_dir / CARD.name)} from {rel(args.out_dir / METRICS.name)}')
        return res
    snapshot, segmenter, provenance = open_snapshot(args)
    model = snapshot.model(1.0)
    res = {'checkpoint': snapshot.describe(), 'train_info': snapshot.train_info, 'architecture': architecture(model),
           'machine': machine_info(args.threads),
           'settings': {'n': args.n, 'edit_n': args.edit_n or args.n, 'batch': args.batch,
                        'region_radius': REGION_RADIUS, 'edit_truncation': EDIT_TRUNCATION,
                        'eval_truncation': EVAL_TRUNCATION},
           'bundled_edits': provenance and {k: {'file': e['file'], 'layer': e['layer'], 'rank': e.get('rank', 1)}
                                            for k, e in provenance['edits'].items()}}
    res['speed'] = sampling_speed(model, args.batch, args.speed_repeats)
    save_grid(model, args.out_dir / GRID.name)
    res['fidelity'] = fidelity(snapshot, segmenter, args.n, args.batch)
    res['edits'] = edit_quality(snapshot, segmenter, args.edit_n or args.n, args.batch)
    res['goals'] = goals(res['fidelity'], res['speed'], res['edits'])
    write_json(args.out_dir / METRICS.name, res)
    atomic_write_text(args.out_dir / CARD.name, model_card(res))
    print(presence_table(res['fidelity']), frechet_table(res['fidelity']), edit_table(res['edits']),
          goals_table(res['goals']), sep='\n\n')
    print(f'\nwrote {rel(args.out_dir / CARD.name)}, {rel(args.out_dir / METRICS.name)}, '
          f'{rel(args.out_dir / GRID.name)}')
    return res


if __name__ == '__main__':
    main()
