"""Other attainment measures for the advisor, re-scored on the benchmark's sweeps (none adopted).

    python -m metrics.advise_variants [--edits NAME ...] [--threads 2]

The advisor (rewrite/analysis/advisor.py) ranks a sweep's settings by a label-free attainment, then the
leak. Its benchmark (metrics/advise_benchmark.py) shows the attainment is what misses the goal. This script
keeps each benchmark edit's sweep (`advise(..., keep_renders=True)`: every setting's edited held-out
images) and scores it again with each variant below, from the held-out images before and after the edit
and the request alone (no labels), the advisor's own leak and ranking rule kept. Per variant, separately
for the edits (replace, add) and the erases, the attainment tolerance is chosen on the tune part (most
passes; ties: nearest the advisor's own), and the held-out part's passes are read with it. Spearman: of the
attainment with the ground truth's effectiveness across the settings, the mean over the part's edits.

Variants (targets: the held-out pixels whose nearest exemplar is the source before the edit, in the
variant's space, so the same at every layer):

- current: the advisor's attainment as it is.
- likeness (space, pooling): each target's source-likeness d_goal / (d_goal + d_source) (goal: the nearest
  object exemplar for an edit; for an erase the nearest patch of what should replace it, the image's own
  surroundings of its targets and the paste image's surround, `replacement_distance`), the share of it the
  edit removed: pooled over every target, averaged per image, or at each image's most source-like target.
- still source-like (space): the share of the targets whose nearest exemplar is no longer the source
  (an erase: nor nearer the replacement).
- spaces: each pixel's 3x3 RGB neighbourhood on 32x32, 16x16 or 8x8 area-averaged images, or 5x5 on 32x32.
- one-shot segmenter: metrics/oneshot_segmenter.py's RequestSegmenter (the request's masks spread to 512
  samples through the generator's features, then a small conv net trained on them), read as the ground
  truth reads its segmenter ('counted': an edit, the share of held-out images with the source whose
  source region, grown by 3 pixels, newly shows at least 4 object pixels; an erase, the share where fewer
  than 4 source pixels remain) or graded (an edit: the object probability gained there per source pixel;
  an erase: the share of the source probability removed there); also trained with copy-paste augmentation
  (half of each batch, shifts up to 20 pixels).

Two last rows are not label-free and are no variants: the ground truth's own segmenter and measure
(advise_benchmark.plan_scores' effectiveness) on the same 48 held-out renders, the bound a label-free
attainment could reach with this leak and ranking; and the ground truth's measures (effectiveness and change
outside) and its own rule (`best_setting`) on those renders, the ceiling any advisor measuring on its own
held-out samples could reach: how often the ground truth, taken again on other z's of that number, names a
setting that passes against itself (metrics/advise_ceiling.py; below the table, that figure averaged over
resamples of the held-out samples).

`--only-bound` scores the advisor's attainment, the bound and the ceiling only (e.g. with `--heldout 400 --out
metrics/results/advise_bound_h400.json`: do they rise with more held-out samples?).

Each finished edit is kept in advise_variants.partial.json (a rerun resumes). Writes
metrics/results/advise_variants.{json,md}.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import hashlib
import json
import math
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

from metrics.advise_benchmark import candidates, groundtruth, judge
from metrics.advise_ceiling import ROUNDS, expected_ceiling, oracle_scores, retaken
from metrics.common import EDIT_TRUNCATION, RESULTS, ZSAMPLE, load_snapshot, setup_torch
from metrics.make_advise_edits import BENCH, BENCH_DIR, EDITS, PARTS, BenchEdit, requests
from metrics.oneshot_segmenter import RequestSegmenter, SegmenterOptions
from metrics.report import machine_info, markdown_table, write_json, write_report
from rewrite.analysis import advisor
from rewrite.analysis.advise_measures import (
    SURROUND_RING,
    PatchGoal,
    patches,
    replacement_distance,
    source_likeness,
    surround_ring,
)
from rewrite.analysis.advisor import advise, score_candidates
from rewrite.core.pieces import all_zs
from rewrite.formats import editfile
from utils.demo import Segmenter, load_segmenter
from utils.masks import dilate
from utils.stylegan2.checkpoint import DEMO_CHECKPOINT
from utils.zdataset import z_dataset_for_model

OUT_JSON = RESULTS / 'advise_variants.json'
TOLERANCES = (0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5)
SPACES = {'3x3 RGB at 32': (3, 32), '3x3 RGB at 16': (3, 16), '3x3 RGB at 8': (3, 8), '5x5 RGB at 32': (5, 32)}
POOLINGS = ('pooled', 'per image', 'most source-like')
PRESENT_PIXELS = 4          # as the ground truth: a class shows in an image with at least 4 pixels (64 px)
NEAR_RADIUS = 3             # and an object replaces the source within 3 pixels of it
GROUPS = {'edits': ('replace', 'add'), 'erases': ('erase',)}
SEGMENTERS = {'': SegmenterOptions(), ' with copy-paste': SegmenterOptions(paste_share=0.5)}
ORACLE = "the ground truth's segmenter on the same samples (labels: a bound, not a variant)"
RETAKEN = "the ground truth's measures and rule on the same samples (labels: the ceiling, not a variant)"

Setting = tuple[int, int]


def neighbourhoods(size: int, res: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """The variant's space: images -> `patches(images, res, size)` ([N, 3 size^2, r, r])."""
    return functools.partial(patches, res=res, size=size)


def likeness_attainments(goal: PatchGoal, before: torch.Tensor, after: torch.Tensor) -> dict[str, float]:
    """{pooling: attainment} and 'still source-like' of one setting; before, after: features [N, F, r, r]
    in goal's space."""
    d0, d1 = goal.distances_of(before), goal.distances_of(after)
    src = goal.looks_like(d0, 'source')
    erase = 'object' not in goal.exemplars
    if erase:
        ring = surround_ring(src, src, SURROUND_RING)
        g0 = replacement_distance(before, before, src, ring, goal.exemplars['surround'])
        g1 = replacement_distance(after, before, src, ring, goal.exemplars['surround'])
    else:
        g0, g1 = d0['object'], d1['object']
    s0 = torch.where(src, source_likeness(g0, d0['source']), 0.0).double()
    s1 = torch.where(src, source_likeness(g1, d1['source']), 0.0).double()
    has = src.flatten(1).any(1)
    num, den = s1.flatten(1).sum(1)[has], s0.flatten(1).sum(1)[has]
    most0 = torch.where(src, s0, -1.0).flatten(1).max(1).values[has]
    most1 = torch.where(src, s1, -1.0).flatten(1).max(1).values[has]
    still = src & (d1['source'] < g1) if erase else src & (d1['source'] < d1['object'])
    still &= d1['source'] <= d1['other']
    out = {'pooled': 1 - float(num.sum() / den.sum()) if den.sum() > 0 else math.nan,
           'per image': float((1 - num[den > 0] / den[den > 0]).mean()) if (den > 0).any() else math.nan,
           'most source-like': 1 - float(most1.sum() / most0.sum()) if most0.sum() > 0 else math.nan,
           'still': 1 - float(still.sum()) / float(src.sum()) if src.any() else math.nan}
    return out


def segmenter_attainments(seg: RequestSegmenter, before: torch.Tensor, after: torch.Tensor) -> dict[str, float]:
    """{'counted', 'graded'} of one setting (see the module docstring); before, after: images [N, 3, H, W]."""
    p0, p1 = seg.probabilities(before), seg.probabilities(after)
    l0, l1 = p0.argmax(1), p1.argmax(1)
    s = seg.kinds.index('source')
    src = l0 == s
    had = src.flatten(1).sum(1) >= PRESENT_PIXELS
    near = dilate(src, NEAR_RADIUS)
    if 'object' in seg.kinds:
        o = seg.kinds.index('object')
        new = (l1 == o) & (l0 != o) & near
        hit = new.flatten(1).sum(1) >= PRESENT_PIXELS
        gained = ((p1[:, o] - p0[:, o]).clamp(min=0) * near).flatten(1).sum(1)
        graded = float(gained[had].sum() / src.flatten(1).sum(1)[had].sum()) if had.any() else math.nan
    else:
        hit = (l1 == s).flatten(1).sum(1) < PRESENT_PIXELS
        kept, was = (p1[:, s] * near).flatten(1).sum(1), (p0[:, s] * near).flatten(1).sum(1)
        graded = 1 - float(kept[had].sum() / was[had].sum()) if had.any() else math.nan
    counted = float((hit & had).sum()) / float(had.sum()) if had.any() else math.nan
    return {'counted': counted, 'graded': graded}


def variant_names() -> list[str]:
    names = ['current']
    for space in SPACES:
        names += [f'likeness, {space}, {pooling}' for pooling in POOLINGS] + [f'still source-like, {space}']
    return names + [f'one-shot segmenter{extra}, {reading}'
                    for extra in SEGMENTERS for reading in ('counted', 'graded')]


def score_edit(model, zds, edit: BenchEdit, request: dict, layers, ranks, heldout: int, cachedir: Path,
               segmenter: Segmenter) -> dict:
    """One edit's sweep and every variant's attainment per setting: {'advice': Advice.to_json(), 'attain':
    {variant: {'layer rank': value}}, 'oracle' and 'oracle_outside': oracle_scores, 'segmenter': its
    pseudo-label shares, 'seconds': {...}}."""
    t0 = time.perf_counter()
    advice = advise(model, zds, request, layers=layers, ranks=ranks, cachedir=cachedir, progress=False,
                    heldout=heldout, keep_renders=True)
    t1 = time.perf_counter()
    req = editfile.parse_edit(request, num_images=len(zds))
    z_all = all_zs(zds)
    before = advice.before_renders.float()
    attain = {name: {} for name in variant_names()}
    goals = {space: PatchGoal.build(model, z_all, req, features=neighbourhoods(*spec))
             for space, spec in SPACES.items()}
    segs = {extra: RequestSegmenter.build(model, z_all, req, truncation=advice.heldout_truncation, options=opts)
            for extra, opts in SEGMENTERS.items()}
    t2 = time.perf_counter()
    feats_before = {space: neighbourhoods(*spec)(before) for space, spec in SPACES.items()}
    for c in advice.table:
        if not c.ok:
            continue
        key = f'{c.layer} {c.rank}'
        after = c.previews['renders'].float()
        attain['current'][key] = c.attain
        for space, spec in SPACES.items():
            got = likeness_attainments(goals[space], feats_before[space], neighbourhoods(*spec)(after))
            for pooling in POOLINGS:
                attain[f'likeness, {space}, {pooling}'][key] = got[pooling]
            attain[f'still source-like, {space}'][key] = got['still']
        for extra, seg in segs.items():
            for reading, value in segmenter_attainments(seg, before, after).items():
                attain[f'one-shot segmenter{extra}, {reading}'][key] = value
    return {'advice': advice.to_json(), 'attain': attain, **oracle_scores(edit, segmenter, advice),
            'segmenter': segs[''].pseudo_share,
            'seconds': {'sweep': t1 - t0, 'segmenter': t2 - t1, 'variants': time.perf_counter() - t2}}


def pick(advice_json: dict, attain: dict[str, float], tolerance: float) -> Setting | None:
    """The advisor's ranking of the kept sweep with its attainment replaced by `attain` ({'layer rank': value})."""
    table = candidates(advice_json)
    for c in table:
        c.attain = attain.get(f'{c.layer} {c.rank}', math.nan)
    best = score_candidates(table, tolerance=tolerance)[0]
    return (best.layer, best.rank) if best.ok else None


def evaluate(kept: dict, gts: dict, edits: list[BenchEdit], names: list[str] | None = None) -> list[dict]:
    """Per variant (names; default every variant, the bound and the ceiling) and group: the tolerance chosen on
    the tune part (None for the ceiling, which uses the ground truth's rule), the passes of each part, the mean
    Spearman."""
    def attain_of(entry: dict, name: str) -> dict[str, float]:
        return entry['oracle'] if name in (ORACLE, RETAKEN) else entry['attain'][name]

    rows = []
    for name in names or [*variant_names(), ORACLE, RETAKEN]:
        row = {'variant': name}
        for group, kinds in GROUPS.items():
            mine = [e for e in edits if e.kind in kinds]

            def passes(tol, part, mine=mine, name=name):
                def chosen(entry):
                    return retaken(entry) if name == RETAKEN else pick(entry['advice'], attain_of(entry, name), tol)
                return sum(judge(gts[e.name], chosen(kept[e.name]))['pass'] for e in mine if e.part == part)
            tol = None if name == RETAKEN else max(
                TOLERANCES, key=lambda t: (passes(t, 'tune'), -abs(t - advisor.ATTAIN_TOLERANCE)))
            row[group] = {'tolerance': tol, **{part: [passes(tol, part), sum(e.part == part for e in mine)]
                                               for part in PARTS}}
        for part in PARTS:
            rhos = []
            for e in edits:
                if e.part != part:
                    continue
                att = attain_of(kept[e.name], name)
                pairs = [(att[f'{lay} {r}'], gts[e.name][(lay, r)]['effectiveness']) for (lay, r) in gts[e.name]
                         if math.isfinite(att.get(f'{lay} {r}', math.nan))
                         and math.isfinite(gts[e.name][(lay, r)].get('effectiveness', math.nan))]
                if len(pairs) > 2 and len({a for a, _ in pairs}) > 1:
                    rhos.append(float(spearmanr(*zip(*pairs)).statistic))
            row[f'spearman_{part}'] = float(np.mean(rhos)) if rhos else math.nan
        rows.append(row)
    return rows


def edit_key(name: str, request: dict, layers, ranks, heldout: int) -> str:
    """What a kept edit must match to be reused: the edit, its request, the grid, the advisor's measures, the
    segmenters' options and the variants."""
    text = json.dumps([name, request, list(layers), list(ranks), heldout, dict(advisor.SCORE_VERSION),
                       {k: dataclasses.asdict(v) for k, v in SEGMENTERS.items()}, variant_names()], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def bound_only(model, zds, edit: BenchEdit, request: dict, layers, ranks, heldout: int, cachedir: Path,
               segmenter: Segmenter) -> dict:
    """One edit's sweep scored by the advisor's attainment and the ground truth's measures only (no variant):
    as score_edit."""
    t0 = time.perf_counter()
    advice = advise(model, zds, request, layers=layers, ranks=ranks, cachedir=cachedir, progress=False,
                    heldout=heldout, keep_renders=True)
    current = {f'{c.layer} {c.rank}': c.attain for c in advice.table if c.ok}
    return {'advice': advice.to_json(), 'attain': {'current': current},
            **oracle_scores(edit, segmenter, advice), 'seconds': {'sweep': time.perf_counter() - t0}}


def run(edits: list[BenchEdit], layers, ranks, heldout: int, eval_n: int, threads: int, checkpoint: Path,
        cachedir: Path | None, folder: Path, partial: Path, only_bound: bool = False) -> dict:
    setup_torch(threads)
    snapshot = load_snapshot(checkpoint)
    reqs = requests(folder, {e.name for e in edits})
    segmenter = load_segmenter()
    gts, gt_n = groundtruth(snapshot, segmenter, edits, reqs, layers, ranks, eval_n, batch=32)
    model = snapshot.model(EDIT_TRUNCATION)
    zds = z_dataset_for_model(model, ZSAMPLE)
    cachedir = Path(cachedir or tempfile.mkdtemp(prefix='advise-stats-'))
    try:
        kept = json.loads(partial.read_text()) if partial.is_file() else {}
    except ValueError:
        kept = {}
    for e in edits:
        key = edit_key(e.name, reqs[e.name], layers, ranks, heldout) + ('-bound' if only_bound else '')
        if only_bound and kept.get(e.name, {}).get('key') != key:
            kept[e.name] = {'key': key, **bound_only(model, zds, e, reqs[e.name], layers, ranks, heldout, cachedir,
                                                     segmenter)}
            write_json(partial, kept)
        elif kept.get(e.name, {}).get('key') != key:
            kept[e.name] = {'key': key, **score_edit(model, zds, e, reqs[e.name], layers, ranks, heldout, cachedir,
                                                     segmenter)}
            write_json(partial, kept)
        elif 'oracle_terms' not in kept[e.name]:     # kept before the ceiling was measured: sweep once more
            advice = advise(model, zds, reqs[e.name], layers=layers, ranks=ranks, cachedir=cachedir, progress=False,
                            heldout=heldout, keep_renders=True)
            kept[e.name].update(oracle_scores(e, segmenter, advice))
            write_json(partial, kept)
        took = ', '.join(f'{k} {v:.1f}s' for k, v in kept[e.name]['seconds'].items())
        print(f'{e.name} ({e.part}, {e.kind}): {took}', flush=True)
    return {'checkpoint': snapshot.describe(), 'layers': list(layers), 'ranks': list(ranks), 'heldout': heldout,
            'groundtruth_n': gt_n, 'threads': threads, 'machine': machine_info(threads),
            'tolerances': list(TOLERANCES),
            'segmenter_options': {k or 'plain': dataclasses.asdict(v) for k, v in SEGMENTERS.items()},
            'parts': {part: [e.name for e in edits if e.part == part] for part in PARTS},
            'only_bound': only_bound,
            'rows': evaluate(kept, gts, edits, ['current', ORACLE, RETAKEN] if only_bound else None),
            'ceiling_expected': expected_ceiling(kept, gts, edits),
            'edits': {e.name: {k: kept[e.name].get(k)
                               for k in ('attain', 'oracle', 'oracle_outside', 'segmenter', 'seconds')}
                      for e in edits}}


def summary(result: dict) -> str:
    def cell(g):
        tol = 'its rule' if g['tolerance'] is None else f'{g["tolerance"]:g}'
        return f'{tol}, ' + ', '.join('{}/{}'.format(*g[part]) for part in PARTS)
    rows = [[r['variant'], cell(r['edits']), cell(r['erases']),
             f'{r["spearman_tune"]:.2f} / {r["spearman_heldout"]:.2f}'] for r in result['rows']]
    ceiling = result.get('ceiling_expected')
    expected = '' if not ceiling else (
        f'\nThe ceiling expected over {ROUNDS} resamples of the held-out samples (metrics/advise_ceiling.py): '
        + ', '.join(f'{part} {ceiling[part][0]:.1f} of {ceiling[part][1]}' for part in PARTS) + '\n')
    return markdown_table(['variant', 'edits: tol, tune, held-out', 'erases: tol, tune, held-out',
                           'Spearman tune / held-out'], rows) + '\n' + expected


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--edits', nargs='+', default=None, choices=list(BENCH), help='default: every benchmark edit')
    p.add_argument('--layers', type=int, nargs='+', default=[5, 6, 7, 8])
    p.add_argument('--ranks', type=int, nargs='+', default=[1, 2, 3])
    p.add_argument('--heldout', type=int, default=48, help="the advisor's held-out samples")
    p.add_argument('--eval-n', type=int, default=400, help="ground truth's z's (advise_benchmark's, reused)")
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--checkpoint', type=Path, default=DEMO_CHECKPOINT)
    p.add_argument('--cachedir', type=Path, default=None, help='key statistics cache (default: a fresh temp folder)')
    p.add_argument('--edit-dir', type=Path, default=BENCH_DIR, help='the benchmark edits (make_advise_edits)')
    p.add_argument('--only-bound', action='store_true',
                   help='score the advisor\'s attainment, the bound and the ceiling only (no variant; e.g. with a '
                        'larger --heldout)')
    p.add_argument('--out', type=Path, default=OUT_JSON)
    return p.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    edits = [e for e in EDITS if args.edits is None or e.name in args.edits]
    result = run(edits, args.layers, args.ranks, args.heldout, args.eval_n, args.threads, args.checkpoint,
                 args.cachedir, args.edit_dir, args.out.with_suffix('.partial.json'), args.only_bound)
    write_report(args.out, result, summary(result))


if __name__ == '__main__':
    main()
