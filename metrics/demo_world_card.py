"""The demo model's card (utils/demo/weights/MODEL_CARD.md), written by metrics/demo_world.py: its tables
(presence, Frechet distance, edits, goals), the notes on the advisor, the missed goals and preserve regions,
and the architecture in words.
"""

from __future__ import annotations

import json
from pathlib import Path

from metrics.common import EDIT_TRUNCATION, EVAL_SEED, EVAL_TRUNCATION, WEIGHTS, collateral_text
from metrics.make_demo_edits import EFFECTIVENESS_TOLERANCE
from metrics.report import fmt, markdown_table, pct
from utils.demo.measures import REGION_RADIUS
from utils.demo.train_gan import DATA_OFFSET

EARLY_NOTE = '\nFigures of an early snapshot miss their goals: rerun the command below when training has gone on.\n'

PRESENCE_CLASSES = ('dome', 'spire', 'flattop', 'tree', 'watermark')
MAX_PRESENCE_DIFF = 8.0         # points
MIN_IMAGES_PER_S = 100.0
MIN_SPIRE_EFFECTIVENESS = 0.60  # share of samples with a dome that show a spire where it was
MAX_TOWER_CHANGE = 0.05
MAX_WATERMARK_AFTER = 0.03
MAX_WATERMARK_CHANGE = 0.03
MIN_WATERMARK_BEFORE = 0.10     # below this the model draws too few watermarks to test erasing them


MISSED_NOTES = WEIGHTS / 'MISSED_GOALS.md'  # hand-written: what was tried for the goals a snapshot misses


ADVICE = Path(__file__).parent / 'results' / 'advise_benchmark.json'    # python -m metrics.advise_benchmark


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


def channels_text(channels: dict) -> str:
    widths = set(channels.values())
    return f'{widths.pop()} at every resolution' if len(widths) == 1 else str(channels)
