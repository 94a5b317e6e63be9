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
    collateral_text,
    generate,
    sample,
    tile,
)
from metrics.make_demo_edits import EFFECTIVENESS_TOLERANCE, PLAN, apply_plan, open_snapshot, score_plan
from metrics.report import fmt, machine_info, markdown_table, pct, rel, write_json
from rewrite.core.rewriter import SeqStyleGanRewriter
from utils import imgviz
from utils.demo import Segmenter, render_batch
from utils.demo.measures import REGION_RADIUS, Samples, frechet, presence_rates, segmenter_features
from utils.demo.scenes import images_to_tensor
from utils.demo.segmenter import vote_tops
from utils.demo.train_gan import DATA_OFFSET
from utils.fileio import atomic_path, atomic_write_text
from utils.zdataset import z_dataset_for_model, z_sample_for_model

PRESENCE_CLASSES = ('dome', 'spire', 'flattop', 'tree', 'watermark')
MAX_PRESENCE_DIFF = 8.0         # points
MIN_IMAGES_PER_S = 100.0
MIN_SPIRE_EFFECTIVENESS = 0.60  # share of samples with a dome that show a spire where it was
MAX_TOWER_CHANGE = 0.05
MAX_WATERMARK_AFTER = 0.03
MAX_WATERMARK_CHANGE = 0.03
MIN_WATERMARK_BEFORE = 0.10     # below this the model draws too few watermarks to test erasing them
EARLY_NOTE = '\nFigures of an early snapshot miss their goals: rerun the command below when training has gone on.\n'
MISSED_NOTES = WEIGHTS / 'MISSED_GOALS.md'  # hand-written: what was tried for the goals a snapshot misses
CARD = WEIGHTS / 'MODEL_CARD.md'
METRICS = WEIGHTS / 'demo_metrics.json'
GRID = WEIGHTS / 'samples_grid.png'
ADVICE = Path(__file__).parent / 'results' / 'advise_benchmark.json'    # python -m metrics.advise_benchmark


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

def presence_table(fid: dict) -> str:
    p = fid['presence']
    return markdown_table(
        ['class', 'data (true labels)', 'data (segmenter)', 'model (segmenter)', 'model - data', 'within 8 points',
         'model (per-pixel labels, no vote)'],
        [[c, pct(p['data_true_labels'][c]), pct(p['data'][c]), pct(p['model'][c]),
          f'{fid["presence_diff_points"][c]:+.1f}', abs(fid['presence_diff_points'][c]) <= MAX_PRESENCE_DIFF,
          pct(p['model_pixel_labels'][c])]
         for c in PRESENCE_CLASSES])


def frechet_table(fid: dict) -> str:
    half = fid['n'] // 2
    f = fid['frechet']
    return markdown_table(['pair', 'samples', 'Frechet distance'], [
        ['model vs data', f'{fid["n"]} vs {fid["n"]}', fmt(f['model_vs_data'], 2)],
        ['model half vs data half', f'{half} vs {half}', fmt(f['model_half_vs_data_half'], 2)],
        ['data half vs data half (floor)', f'{half} vs {half}', fmt(f['data_half_vs_data_half'], 2)]])


def edit_table(edits: dict) -> str:
    d2s, wm = edits['dome2spire'], edits['erase_watermark']
    return markdown_table(
        ['edit', 'layer', 'rank', 'samples (with source)', 'effectiveness', 'rate before -> after',
         'collateral: flat tops turned spire (samples)',
         'mean abs change outside', 'feature change outside', 'label change outside', 'seconds'],
        [['dome2spire', d2s['layer'], d2s['rank'], f'{d2s["n"]} ({d2s["n_with_source"]})',
          pct(d2s['effectiveness']), '',
          collateral_text(d2s), fmt(d2s['mean_abs_change_outside'], 4), fmt(d2s['feature_change_outside'], 4),
          pct(d2s['label_change_outside']), fmt(d2s['edit_seconds'], 1)],
         ['erase_watermark', wm['layer'], wm['rank'], f'{wm["n"]} ({wm["n_with_source"]})', pct(wm['effectiveness']),
          f'{pct(wm["rate_before"])} -> {pct(wm["rate_after"])}', '', fmt(wm['mean_abs_change_outside'], 4),
          fmt(wm['feature_change_outside'], 4), pct(wm['label_change_outside']), fmt(wm['edit_seconds'], 1)]])


def goals_table(rows: list[dict]) -> str:
    return markdown_table(['goal', 'measured', 'result'], [[r['goal'], r['value'], r['pass']] for r in rows])


def model_card(res: dict) -> str:
    ck, info, arch = res['checkpoint'], res['train_info'], res['architecture']
    fid, speed = res['fidelity'], res['speed']
    passed = sum(r['pass'] is True for r in res['goals'])
    untestable = sum(r['pass'] is None for r in res['goals'])
    hours = info.get('wall_seconds', 0) / 3600
    return f"""# Demo generator: toy-church StyleGAN2, 64 px

`toychurch64.pt` is a small StyleGAN2 trained on the CPU on the procedural toy-church scenes of
`utils/demo/scenes.py`, so that the rewriting tool can be tried without downloading a release model.
Load it with `load_seq_stylegan('demo')` (truncation 0.5, the toolkit's default; `truncation=1.0` for
untruncated samples). This card and `demo_metrics.json` were written by
`python -m metrics.demo_world --n {fid['n']}` from checkpoint `{ck['sha256']}` (sha256 prefix of the file),
training iteration {info.get('iterations')}. **{passed} of {len(res['goals'])} goals pass** on this snapshot
({untestable} not measurable).

## Model

| | |
| --- | --- |
| architecture | SeqStyleGAN2 (split modulated convs, rewritable), {arch['size']} px |
| style_dim / mapping layers | {arch['style_dim']} / {arch['n_mlp']} |
| channels | {channels_text(arch['channels'])} |
| styled conv layers | layer2 .. layer{arch['last_layer']} ({arch['layer_resolutions']}) |
| parameters | {arch['parameters']:,} |
| weights | EMA generator, noise maps stored (const), `latent_avg` = mean of 4096 mapped z's |

## Training

| | |
| --- | --- |
| data | fresh renders of scenes {DATA_OFFSET:,}.. (never the held-out scenes 0..999,999 used here) |
| iterations | {info.get('iterations')} (batch {info.get('batch')}) |
| wall time | {info.get('wall_seconds')} s ({hours:.1f} h) on a shared CPU |
| optimiser | Adam(0, 0.99), lr {info.get('lr')}, non-saturating loss, lazy R1 {info.get('r1')}, \
style mixing {info.get('mixing')}, EMA |
| command | `python -m utils.demo.train_gan` (resumable; see its `--help`) |

## Samples

![samples](samples_grid.png)

z-sample images 0..63 (`z_sample_for_model(model, 64)`, seed 1), truncation 1.0, 64 px.

## Fidelity to the data (by the demo segmenter)

A class is present when it covers at least 4 pixels of the segmenter's label map, after each tower top
(an 8-connected region of dome, spire and flat-top pixels) is given the kind most of its pixels have: the
world has one kind of top per tower, and on the model's soft images the per-pixel labels of one top often
mix kinds (blurred crenellations read partly as dome). The vote leaves the data's labels unchanged; the
last column shows the model's rates without it. Data: scenes
0..{fid['n'] - 1}; model: {fid['n']} z-samples (seed 1) at truncation 1.0. Goal: every difference within
{MAX_PRESENCE_DIFF:g} points.

{presence_table(fid)}

Frechet distance of the segmenter's 192-d pooled features (`Segmenter.features`); the data-half pair is
the floor a perfect model would reach at that sample size.

{frechet_table(fid)}

## Sampling speed

{speed['best_images_per_s']:.1f} images/s at batch {speed['batch']} in the fastest of {speed['repeats']} timed
batches (median {speed['images_per_s']:.1f}), {res['machine']['torch_threads']} torch thread(s), truncation 1.0,
const noise. The CPU was shared with other jobs (load average {res['machine']['load_average_1_5_15']} when the
run began), so the goal (>= {MIN_IMAGES_PER_S:g} images/s) is judged on the fastest batch, the least disturbed;
by this process's CPU time (the rate with a core to itself) it is {speed['images_per_cpu_s']:.1f} images/s.

## Edit quality (the paper's section 5.1, on the demo world)

The bundled edits (`notebooks/masks/demo/`, made by `python -m metrics.make_demo_edits` with the tool
itself for this checkpoint, at the tool's truncation {EDIT_TRUNCATION}) applied with the fast solver at the
layer and rank in their file names (of the settings within {100 * EFFECTIVENESS_TOLERANCE:.0f} points of the
most effective, the one that changed least outside the edited region), scored on
{res['edits']['dome2spire']['n']} held-out z's (seed {EVAL_SEED}) at truncation {EVAL_TRUNCATION} (the model's full
distribution, where the data has about 25% watermarks), every image segmented before and after the edit
(64 px label maps, each tower top voted to one kind as above):

- **effectiveness** (dome2spire): among samples with a dome before, the share with at least 4 pixels that
  are spire after the edit, were not spire before, and lie within {REGION_RADIUS} px of the dome (square
  dilation); (erase): among samples with a watermark before, the share without one after.
- **tower region**: dome, spire and flattop pixels, plus the tower body column below them (in each column,
  from a top pixel down through building, window and door pixels until another class), taken before and
  after the edit, united and dilated by {REGION_RADIUS} px. The **watermark region**: watermark pixels
  before or after, dilated by {REGION_RADIUS} px.
- **mean abs change outside**: mean |after - before| over the channels of every pixel outside the region,
  images in [-1, 1], pooled over all samples. **Feature change outside**: relative L2 change of the
  segmenter features when only the outside is edited (the region's unedited pixels put back). **Label
  change outside**: share of outside pixels whose segmenter label changed.

{edit_table(res['edits'])}
{advisor_note(ck['sha256'])}
## Goals

{goals_table(res['goals'])}
{'' if passed == len(res['goals']) else missed_goals_note(ck['sha256'])}
## Regenerate

    python -m metrics.demo_world          # this card, demo_metrics.json, samples_grid.png (remakes stale edits)
    python -m metrics.edit_methods        # metrics/results/edit_methods.{{json,md,png}}
{preserve_note(ck['sha256'])}"""


def advisor_note(sha256: str, results: Path = ADVICE) -> str:
    """The label-free layer/rank advisor's validation table (metrics/advise_benchmark.md), when its results
    were made for this checkpoint; else nothing."""
    table = report_for_checkpoint(results, sha256)
    if not table:
        return ''
    return ('\n### Which layer and rank, without labels (`rewrite advise`)\n\n'
            'The advisor (`rewrite/analysis/advisor.py`, no labels) against the setting make_demo_edits chooses with '
            'segmenter labels\n(its rule and held-out z\'s, seed 3) over layers 5-8 x ranks 1-3, from '
            '`python -m metrics.advise_benchmark`\n(the benchmark edits of metrics/make_advise_edits.py: the '
            'tune part, which the score may be chosen on,\nand the held-out part, only measured on):\n\n'
            + table + '\n')


def missed_goals_note(sha256: str, notes: Path = MISSED_NOTES) -> str:
    """What was tried for the missed goals: the notes file, when it was written for this checkpoint (its
    first line is `<!-- checkpoint: SHA256 -->`); else a pointer to the regeneration command."""
    text = notes.read_text() if notes.is_file() else ''
    first, _, rest = text.partition('\n')
    if first.strip() != f'<!-- checkpoint: {sha256} -->':
        return EARLY_NOTE
    return f'\n## What was tried for the missed goals\n\n{rest.strip()}\n\n'


PRESERVE_RESULTS = Path(__file__).parent / 'results' / 'edit_methods_preserve.json'   # edit_methods --preserve


def preserve_note(sha256: str, results: Path = PRESERVE_RESULTS) -> str:
    """The bundled edits with and without preserve regions (metrics/results/edit_methods_preserve.md),
    when made for this checkpoint; else nothing."""
    text = report_for_checkpoint(results, sha256)
    if not text:
        return ''
    body = text.partition('\n')[2].strip().replace('\n## ', '\n### ')            # its title dropped, sections nested
    return '\n## Rules that respect their context: preserve regions\n\n' + body + '\n'


def report_for_checkpoint(results: Path, sha256: str) -> str:
    """The Markdown beside a results JSON (same name, .md) when the JSON was made for checkpoint `sha256`;
    else ''."""
    try:
        if json.loads(results.read_text())['checkpoint']['sha256'] != sha256:
            return ''
        return results.with_suffix('.md').read_text().strip()
    except (OSError, ValueError, KeyError, TypeError):
        return ''


def architecture(model) -> dict:
    layers = model.layer_numbers
    return {'size': model.size, 'style_dim': model.style_dim, 'n_mlp': model.n_mlp,
            'channels': dict(model.channels), 'last_layer': layers[-1],
            'layer_resolutions': ', '.join(f'{n}: {model.layer_resolution(n)}' for n in layers),
            'parameters': sum(p.numel() for p in model.parameters())}


def channels_text(channels: dict) -> str:
    widths = set(channels.values())
    return f'{widths.pop()} at every resolution' if len(widths) == 1 else str(channels)


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
