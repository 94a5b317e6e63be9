"""Makes the bundled edits of the demo model with the tool itself, as a user of the painting UI would.

    python -m metrics.make_demo_edits [--layers 5 6 7 8] [--ranks 1 2 3] [--eval-n 400] [--keys K] [--dilate 1]

Procedure (deterministic): draw the demo model's z-sample (z_dataset_for_model(model, 1000), truncation
0.5 as the tool shows it; image numbers index it), segment it with the demo segmenter, and per edit:

- object (what to copy): the clearest region of the object class, i.e. the largest 4-connected component
  over all images that is a single object (its box spans at most half the image each way and does not
  touch the image border);
- paste (where): the clearest region of the paste classes in another image, extended upward to the
  object's height when the object is taller (so the copy stands on the paste region's base, as a user
  would paint a spire on a dome's tower);
- key (context): the paste region and the next clearest regions of the paste classes in other images
  (the plan's count in all, or --keys); an erase has no object, its paste is one watermark and its keys several.

Masks are the segmenter's regions dilated by --dilate pixels (as a painter would), scaled to 256x256 as the
original UI painted them, written with rewrite.formats.editfile. Each edit is applied (fast solver) at every layer of
--layers with every rank of --ranks and scored on --eval-n held-out samples (z seed 3, truncation 1.0: the
model's full distribution, whose class rates are the data's; see utils/demo/measures.py for the measures; the
metrics that report the edits score them on other z's, seed 2). The setting is chosen as a user would compare
them: of the settings within EFFECTIVENESS_TOLERANCE (5 points) of the most effective one, the one that
changes least outside the edited region (a higher rank gives the change more freedom, so it is chosen only
where it works better or disturbs less). The chosen setting is written into the file (its `layer`, `rank`,
`solver` and `model` fields: what the CLI, the widget and the API apply it with) and names it
`NAME_layerN.json` (rank 1) or `NAME_layerN_rankR.json` in notebooks/masks/demo/. `--stamp` writes those
fields into the existing files from their names, leaving their regions as they are. The choices and scores go to
metrics/results/demo_edits.json with the checkpoint's hash: `ensure_current_edits` remakes the edits when the
checkpoint (or PROCEDURE) changed.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from metrics.common import (
    EDIT_DIR,
    EDIT_TRUNCATION,
    EVAL_TRUNCATION,
    SELECTION_SEED,
    ZSAMPLE,
    Snapshot,
    load_snapshot,
    sample,
    setup_torch,
)
from metrics.demo_edit_files import (
    PRESERVE_PROVENANCE,
    PROCEDURE,
    PROVENANCE,
    describe_regions,
    edits_are_current,
    read_provenance,
    stamp_edits,
    with_preserve_weight,
    write_edit,
)
from metrics.demo_regions import (
    MASK_SIZE,
    EditPlan,
    PreservePlan,
    build_request,
    choose_regions,
    painted,
    pixel_erase_scores,
    preserve_regions,
)
from metrics.report import fmt, markdown_table, pct, rel, write_json
from rewrite.core.history import EditRecord
from rewrite.core.rewriter import RewriteError, SeqStyleGanRewriter
from rewrite.core.statistics import weights_fingerprint
from rewrite.formats.settings import PRESERVE_WEIGHT
from utils.demo import Segmenter, load_segmenter
from utils.demo.measures import TOPS, Samples, erase_scores, replacement_scores
from utils.demo.scenes import CLASSES
from utils.stylegan2.checkpoint import DEMO_CHECKPOINT
from utils.zdataset import z_dataset_for_model, z_sample_for_model

EFFECTIVENESS_TOLERANCE = 0.05  # settings this close to the most effective count as equally effective
PRESERVE_WEIGHTS = (PRESERVE_WEIGHT, 0.3, 1.0)   # the preserve_weight values make_preserve_edits tries


PLANS = (
    EditPlan('dome2spire', object=('spire',), paste=('dome',), dst='spire', keys=32),
    EditPlan('towertop2tree', object=('tree',), paste=TOPS, dst='tree', keys=32),
    EditPlan('erase_watermark', object=None, paste=('watermark',), dst=None, keys=16),
)
PLAN = {p.name: p for p in PLANS}
WINDOWS = EditPlan('erase_windows', object=None, paste=('window',), dst=None, keys=16, into='building')


PRESERVE_PLANS = (
    PreservePlan('dome2spire_preserve', PLAN['dome2spire'], keep=('flattop',), absent=('dome',)),
    PreservePlan('erase_watermark_preserve', PLAN['erase_watermark'], keep=CLASSES, absent=('watermark',),
                 clear=False),
    PreservePlan('erase_windows_preserve', WINDOWS, keep=('building',), absent=(), clear=False),
)


# ---------------------------------------------------------------------------------------------------
# choosing regions and painting masks
# ---------------------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------------------
# applying and scoring
# ---------------------------------------------------------------------------------------------------

def apply_plan(gw: SeqStyleGanRewriter, plan: EditPlan, request, rank: int = 1, solver: str = 'fast',
               **options) -> EditRecord:
    """Applies an edit of `plan` at `rank` to gw.model."""
    if plan.object is None:
        return gw.apply_erase(request, rank=rank, solver=solver, **options)
    return gw.apply_edit(request, rank=rank, solver=solver, **options)


def score_plan(plan: EditPlan, segmenter: Segmenter, before: Samples, after: Samples) -> dict:
    """The plan's scores; a replacement of some tower tops is also scored on the other kinds of top."""
    if plan.into is not None:
        return pixel_erase_scores(segmenter, before, after, plan.paste[0], plan.into)
    if plan.dst is None:
        return erase_scores(segmenter, before, after, plan.paste[0])
    others = tuple(t for t in TOPS if t not in plan.paste and t != plan.dst) if set(plan.paste) <= set(TOPS) else ()
    return replacement_scores(segmenter, before, after, plan.paste, plan.dst, others=others)


Setting = tuple                         # (layer, rank) or (layer, rank, preserve_weight)


def best_setting(scores: dict[Setting, dict]) -> Setting:
    """The (layer, rank) a user would settle on (see the module docstring): of the settings whose
    effectiveness is within EFFECTIVENESS_TOLERANCE of the best (nan counts lowest), the one with the
    least change outside the edited region (ties: the lower rank, then the lower layer, then the lower
    preserve_weight when the settings have one)."""
    usable = {setting: s for setting, s in scores.items() if 'error' not in s}
    if not usable:
        raise RuntimeError(f'the edit failed at every setting: { {k: s["error"] for k, s in scores.items()} }')

    def effectiveness(setting):
        eff = usable[setting].get('effectiveness', float('nan'))
        return eff if np.isfinite(eff) else -1.0

    best = max(effectiveness(s) for s in usable)
    near = [s for s in usable if effectiveness(s) >= best - EFFECTIVENESS_TOLERANCE]
    return min(near, key=lambda s: (usable[s].get('mean_abs_change_outside', float('inf')), s[1], s[0], *s[2:]))


def score_settings(model, zds, plans: Sequence[EditPlan], requests: dict, layers: Sequence[int],
                   ranks: Sequence[int], segmenter: Segmenter, eval_z: torch.Tensor, before: Samples,
                   batch: int, weights: Sequence[float] | None = None) -> dict:
    """{plan name: {setting: scores}} for every plan applied at every layer and rank (fast solver); the
    setting is (layer, rank), or with `weights` (layer, rank, preserve_weight) for each of them."""
    scores = {p.name: {} for p in plans}
    for layer in layers:
        gw = SeqStyleGanRewriter(model, zds, layer, progress=False)
        for plan in plans:
            for rank in ranks:
                for weight in (None,) if weights is None else weights:
                    setting = (layer, rank) if weight is None else (layer, rank, weight)
                    options = {} if weight is None else {'preserve_weight': weight}
                    gw.revert()
                    try:
                        record = apply_plan(gw, plan, requests[plan.name], rank=rank, **options)
                    except RewriteError as e:
                        scores[plan.name][setting] = {'error': str(e)}
                        continue
                    desc = f'{plan.name} layer {layer} rank {rank}' + ('' if weight is None else f' weight {weight:g}')
                    after = sample(gw.model, eval_z, segmenter, batch, desc, EVAL_TRUNCATION)
                    scores[plan.name][setting] = score_plan(plan, segmenter, before, after) | {
                        'final_loss': record.final_loss, 'seconds': record.seconds}
    return scores


# ---------------------------------------------------------------------------------------------------
# making the files
# ---------------------------------------------------------------------------------------------------

def make_edits(snapshot: Snapshot, segmenter: Segmenter, layers: Sequence[int] = (5, 6, 7, 8),
               ranks: Sequence[int] = (1, 2, 3), eval_n: int = 400, n_keys: int | None = None, dilate_px: int = 1,
               truncation: float = EDIT_TRUNCATION, batch: int = 32, out_dir: Path = EDIT_DIR,
               provenance: Path = PROVENANCE, plans: Sequence[EditPlan] = PLANS) -> dict:
    """Chooses, scores and writes the edits; returns the provenance record (also written)."""
    model = snapshot.model(truncation)
    zds = z_dataset_for_model(model, ZSAMPLE)
    pool = sample(model, zds.tensors[0], segmenter, batch, desc='z-sample')
    regions = {p.name: choose_regions(p, pool.labels, n_keys) for p in plans}
    requests = {name: build_request(r, dilate_px) for name, r in regions.items()}
    eval_z = z_sample_for_model(model, eval_n, seed=SELECTION_SEED)
    before = sample(model, eval_z, segmenter, batch, 'held-out samples', EVAL_TRUNCATION)
    scores = score_settings(model, zds, plans, requests, layers, ranks, segmenter, eval_z, before, batch)
    record = {'procedure': PROCEDURE, 'checkpoint': snapshot.describe(), 'truncation': truncation, 'zsample': ZSAMPLE,
              'eval_n': eval_n, 'selection_seed': SELECTION_SEED, 'eval_truncation': EVAL_TRUNCATION,
              'layers_tried': list(layers), 'ranks_tried': list(ranks),
              'effectiveness_tolerance': EFFECTIVENESS_TOLERANCE,
              'dilate_px': dilate_px, 'mask_size': MASK_SIZE, 'solver': 'fast', 'edits': {}}
    for plan in plans:
        layer, rank = best_setting(scores[plan.name])
        path = write_edit(out_dir, plan.name, layer, rank, requests[plan.name],
                          weights_fingerprint(snapshot.model()))
        record['edits'][plan.name] = {'file': rel(path), 'layer': layer, 'rank': rank,
                                      'regions': describe_regions(regions[plan.name]),
                                      'scores': [{'layer': lay, 'rank': r, **s}
                                                 for (lay, r), s in scores[plan.name].items()]}
    write_json(provenance, record)
    return record


def make_preserve_edits(snapshot: Snapshot, segmenter: Segmenter, layers: Sequence[int] = (7, 8),
                        ranks: Sequence[int] = (1, 3, 4), eval_n: int = 400, dilate_px: int = 1,
                        truncation: float = EDIT_TRUNCATION, batch: int = 32, out_dir: Path = EDIT_DIR,
                        provenance: Path = PRESERVE_PROVENANCE, plans: Sequence[PreservePlan] = PRESERVE_PLANS,
                        weights: Sequence[float] = PRESERVE_WEIGHTS) -> dict:
    """The bundled edits with preserve regions: each PreservePlan's regions chosen as make_edits
    chooses them plus its preserve regions, every (layer, rank, preserve_weight) scored (fast solver) and
    the best written as NAME_layerN[_rankR].json (the selection rule of best_setting); the chosen weight
    goes to the file (its `preserve_weight` field) and to the provenance (bundled_preserve_weight reads
    it). Edits of other plans already in `provenance` stay there."""
    model = snapshot.model(truncation)
    zds = z_dataset_for_model(model, ZSAMPLE)
    pool = sample(model, zds.tensors[0], segmenter, batch, desc='z-sample')
    requests, described = {}, {}
    for pplan in plans:
        regions = choose_regions(pplan.plan, pool.labels)
        keep = preserve_regions(pplan, pool.labels, regions)
        requests[pplan.plan.name] = build_request(regions, dilate_px) | {
            'preserve': [[r.imgnum, painted(r.mask, 0 if not pplan.clear else dilate_px)] for r in keep]}
        described[pplan.plan.name] = describe_regions(regions) | {
            'preserve': [{'imgnum': r.imgnum, 'pixels': r.area} for r in keep]}
    eval_z = z_sample_for_model(model, eval_n, seed=SELECTION_SEED)
    before = sample(model, eval_z, segmenter, batch, 'held-out samples', EVAL_TRUNCATION)
    scores = score_settings(model, zds, [p.plan for p in plans], requests, layers, ranks, segmenter, eval_z,
                            before, batch, weights=weights)
    old = read_provenance(provenance) or {}
    kept = old.get('edits', {}) if old.get('checkpoint', {}).get('sha256') == snapshot.sha256 else {}
    record = {'checkpoint': snapshot.describe(), 'truncation': truncation, 'zsample': ZSAMPLE, 'eval_n': eval_n,
              'selection_seed': SELECTION_SEED, 'layers_tried': list(layers), 'ranks_tried': list(ranks),
              'preserve_weights_tried': list(weights), 'dilate_px': dilate_px, 'solver': 'fast',
              'edits': {k: v for k, v in kept.items() if k not in {p.name for p in plans}}}
    for pplan in plans:
        name = pplan.plan.name
        layer, rank, weight = best_setting(scores[name])
        path = write_edit(out_dir, pplan.name, layer, rank, with_preserve_weight(requests[name], weight),
                          weights_fingerprint(snapshot.model()))
        record['edits'][pplan.name] = {'file': rel(path), 'plan': name, 'layer': layer, 'rank': rank,
                                       'preserve_weight': weight, 'regions': described[name],
                                       'tried': {'layers': list(layers), 'ranks': list(ranks),
                                                 'preserve_weights': list(weights)},
                                       'scores': [{'layer': lay, 'rank': r, 'preserve_weight': w, **s}
                                                  for (lay, r, w), s in scores[name].items()]}
    write_json(provenance, record)
    return record


def open_snapshot(opts):
    """The start of every demo-world script (options from common.add_snapshot_args): torch set up,
    the checkpoint read once, the segmenter, and the bundled edits brought up to date.
    Returns (snapshot, segmenter, edits provenance)."""
    setup_torch(opts.threads)
    snapshot, segmenter = load_snapshot(opts.checkpoint), load_segmenter()
    print(f'checkpoint {snapshot.sha256}, iteration {snapshot.train_info.get("iterations")}')
    provenance = ensure_current_edits(snapshot, segmenter, remake=not opts.keep_edits, batch=opts.batch)
    return snapshot, segmenter, provenance


def ensure_current_edits(snapshot: Snapshot, segmenter: Segmenter, remake: bool = True, **options) -> dict:
    """The provenance of the bundled edits, remade first when they were made for another checkpoint."""
    if not edits_are_current(snapshot):
        if not remake:
            print('warning: the bundled demo edits were made for another checkpoint snapshot '
                  '(run python -m metrics.make_demo_edits)')
        else:
            print(f'the bundled demo edits are not from this procedure for checkpoint {snapshot.sha256}: remaking them')
            return make_edits(snapshot, segmenter, **options)
    return read_provenance()


def summary_table(record: dict) -> str:
    rows = []
    for name, e in record['edits'].items():
        for s in e['scores']:
            setting = ('layer', 'rank', 'preserve_weight')
            chosen = all(s.get(k) == e.get(k) for k in setting)
            weight = f' (preserve_weight {s["preserve_weight"]:g})' if 'preserve_weight' in s else ''
            rows.append([name + weight, s['layer'], s['rank'], 'yes' if chosen else '',
                         s.get('error', pct(s.get('effectiveness', float('nan')))),
                         s.get('n_with_source', ''), pct(s['collateral']) if 'collateral' in s else '',
                         fmt(s.get('mean_abs_change_outside', float('nan')), 4)])
    return markdown_table(['edit', 'layer', 'rank', 'chosen', 'effectiveness', 'n with source', 'collateral',
                           'mean abs change outside'], rows)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--layers', type=int, nargs='+', default=[5, 6, 7, 8])
    p.add_argument('--ranks', type=int, nargs='+', default=None,
                   help='ranks of the weight change to try (default: 1 2 3; with --preserve 1 3 4)')
    p.add_argument('--eval-n', type=int, default=400, help='held-out samples that score each setting')
    p.add_argument('--keys', type=int, default=None,
                   help="context regions per edit (default: each plan's, 32 for tower tops, 16 for the watermark)")
    p.add_argument('--dilate', type=int, default=1, help='pixels (at 64 px) the masks grow beyond the regions')
    p.add_argument('--truncation', type=float, default=EDIT_TRUNCATION)
    p.add_argument('--batch', type=int, default=32)
    p.add_argument('--threads', type=int, default=1)
    p.add_argument('--checkpoint', type=Path, default=DEMO_CHECKPOINT, help='generator (default: the demo model)')
    p.add_argument('--out-dir', type=Path, default=EDIT_DIR)
    p.add_argument('--provenance', type=Path, default=None,
                   help=f'default: {rel(PROVENANCE)}, with --preserve {rel(PRESERVE_PROVENANCE)}')
    p.add_argument('--preserve', action='store_true',
                   help='make the edits with preserve regions instead (dome2spire_preserve, erase_watermark_preserve, '
                        'erase_windows_preserve)')
    p.add_argument('--preserve-weights', type=float, nargs='+', default=list(PRESERVE_WEIGHTS),
                   help='with --preserve: the preserve_weight values tried with each layer and rank')
    p.add_argument('--stamp', action='store_true',
                   help='only write the setting fields (layer and rank from the file name, solver fast, the '
                        "checkpoint's weights fingerprint) into the existing edits of --out-dir; regions unchanged")
    p.add_argument('--only', nargs='+', choices=[pp.name for pp in PRESERVE_PLANS], default=None,
                   help='with --preserve: remake only these edits (the others stay in the provenance)')
    return p.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    setup_torch(args.threads)
    snapshot = load_snapshot(args.checkpoint)
    if args.stamp:
        name = 'demo' if Path(args.checkpoint).resolve() == DEMO_CHECKPOINT.resolve() else Path(args.checkpoint).name
        for path in stamp_edits(args.out_dir, weights_fingerprint(snapshot.model()), name):
            print(f'stamped {rel(path)}')
        return
    if args.preserve:
        args.provenance = args.provenance or PRESERVE_PROVENANCE
        plans = [p for p in PRESERVE_PLANS if args.only is None or p.name in args.only]
        record = make_preserve_edits(snapshot, load_segmenter(), layers=args.layers, ranks=args.ranks or (1, 3, 4),
                                     eval_n=args.eval_n, dilate_px=args.dilate, truncation=args.truncation,
                                     batch=args.batch, out_dir=args.out_dir, provenance=args.provenance,
                                     plans=plans, weights=args.preserve_weights)
    else:
        args.provenance = args.provenance or PROVENANCE
        record = make_edits(snapshot, load_segmenter(), layers=args.layers, ranks=args.ranks or (1, 2, 3),
                            eval_n=args.eval_n,
                            n_keys=args.keys, dilate_px=args.dilate, truncation=args.truncation, batch=args.batch,
                            out_dir=args.out_dir, provenance=args.provenance)
    print(f'checkpoint {snapshot.sha256} (iteration {snapshot.train_info.get("iterations")})')
    print(summary_table(record))
    for e in record['edits'].values():
        print(f'wrote {e["file"]}')
    print(f'wrote {rel(args.provenance)}')


if __name__ == '__main__':
    main()
