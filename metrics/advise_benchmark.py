"""Validates the label-free edit advisor (rewrite/analysis/advisor.py) against the segmenter's ground truth.

    python -m metrics.advise_benchmark [--edits NAME ...] [--parts tune heldout] [--layers 5 6 7 8] [--threads 1]

The edits: metrics/make_advise_edits.py's benchmark (the bundled edits and edits of three kinds, replace,
erase and add, some with their regions from the second half of the z-sample), split there into a `tune` part
(the advisor's measures and ranking may be chosen on it) and a `heldout` part (only measured), both fixed
before the score they validate. Over the same grid of layers x ranks, per edit:

- ground truth: make_demo_edits' measures (effectiveness and mean abs change outside on its held-out z's,
  seed 3, truncation 1.0, segmenter labels; utils/demo/measures.py) and its selection rule (`best_setting`:
  of the settings within 5 points of the most effective, the one changing least outside). The bundled edits'
  scores are read from metrics/results/demo_edits.json when it was made for this checkpoint over this grid;
  the others' are read from advise_groundtruth.json when scored there on at least --eval-n z's, else computed
  here (`score_grid`: the two measures the rule needs only, each edit cached as it finishes, so an
  interrupted run resumes). Each row says how many z's its ground truth used.
- the advisor: `advise(model, zds, request, layers, ranks)` (fast solver, no labels, its own held-out z's).
- goal per edit: the advised setting's effectiveness within 5 points of the ground-truth best's, and its
  change outside at most 1.25 times the best's. Also the Spearman correlation of the advisor's score with
  a ground-truth score built by the same rule (1 + (1 - change outside / largest) for the settings within
  5 points of the most effective, effectiveness / most effective for the rest), and whether the advisor
  called itself unsure.
- leave-one-kind-out: for each kind, the attainment tolerance of the ranking chosen (from TOLERANCES, by
  passes) on the tune edits of the other kinds, then the edits of that kind ranked with it.
- cost: the wall time of each sweep with the key statistics already cached (the first sweep of each
  layer gathers them; the `stats_seconds` column is that one-off cost).

Each edit's sweep is kept in advise_benchmark.partial.json as it finishes (a rerun with the same edits,
grid and score resumes there). Writes metrics/results/advise_benchmark.json and advise_benchmark.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

from metrics.common import (
    EDIT_TRUNCATION,
    EVAL_TRUNCATION,
    RESULTS,
    SELECTION_SEED,
    ZSAMPLE,
    load_snapshot,
    sample,
    setup_torch,
)
from metrics.demo_edit_files import PROCEDURE, PROVENANCE, read_provenance
from metrics.demo_regions import EditPlan
from metrics.make_advise_edits import BENCH, BENCH_DIR, EDITS, KINDS, PARTS, BenchEdit, requests
from metrics.make_demo_edits import EFFECTIVENESS_TOLERANCE, apply_plan, best_setting
from metrics.report import machine_info, markdown_table, pct, write_json, write_report
from rewrite.analysis import advisor
from rewrite.analysis.advisor import Candidate, advise, score_candidates
from rewrite.core.rewriter import RewriteError, SeqStyleGanRewriter
from utils.demo import Segmenter, load_segmenter
from utils.demo.measures import (
    REGION_RADIUS,
    Samples,
    class_mask,
    dilate,
    effectiveness,
    mean_abs_change_outside,
    present,
    tower,
)
from utils.demo.scenes import CLASSES
from utils.stylegan2.checkpoint import DEMO_CHECKPOINT
from utils.zdataset import z_dataset_for_model, z_sample_for_model

GROUNDTRUTH = RESULTS / 'advise_groundtruth.json'
OUT_JSON = RESULTS / 'advise_benchmark.json'
OUTSIDE_FACTOR = 1.25
TOLERANCES = (0.1, 0.2, 0.3, 0.4, 0.5)     # leave-one-kind-out chooses the ranking's tolerance among these


Setting = tuple[int, int]


def _keyed(scores: list[dict]) -> dict[Setting, dict]:
    return {(s['layer'], s['rank']): {k: v for k, v in s.items() if k not in ('layer', 'rank')} for s in scores}


def _listed(scores: dict[Setting, dict]) -> list[dict]:
    return [{'layer': lay, 'rank': r, **s} for (lay, r), s in sorted(scores.items())]


def bundled_groundtruth(name: str, sha: str, grid: set[Setting]) -> dict[Setting, dict] | None:
    """make_demo_edits' own scores of a bundled edit, when made for this checkpoint over (at least) this grid."""
    record = read_provenance(PROVENANCE)
    if not record or record.get('procedure') != PROCEDURE or record['checkpoint'].get('sha256') != sha:
        return None
    entry = record['edits'].get(name)
    scores = _keyed(entry['scores']) if entry else {}
    return {s: scores[s] for s in grid} if grid <= set(scores) else None


def plan_region(plan: EditPlan, before: torch.Tensor, after: torch.Tensor,
                radius: int = REGION_RADIUS) -> torch.Tensor:
    """bool [N, H, W]: where the ground truth does not count change as change outside, from the labels before
    and after the edit: the towers (a replacement or addition) or the erased class, before or after, dilated."""
    if plan.dst is not None:
        return dilate(tower(before) | tower(after), radius)
    return dilate(class_mask(before, plan.paste) | class_mask(after, plan.paste), radius)


def plan_scores(plan: EditPlan, before: Samples, after: Samples, radius: int = REGION_RADIUS) -> dict:
    """The two measures the ground truth's rule needs, as make_demo_edits.score_plan defines them (without the
    segmenter-feature ones): effectiveness (a replacement or addition: samples whose source region now shows
    `dst`; an erase: samples whose class is gone, or with `into` its pixels that now show `into`) and the mean
    abs change outside the edit region (the towers, or the erased class, before or after, dilated)."""
    if plan.dst is not None:
        eff, n = effectiveness(before.labels, after.labels, plan.paste, plan.dst, radius)
    else:
        src = class_mask(before.labels, plan.paste)
        if plan.into is not None:
            n = int(src.sum())
            turned = int(((after.labels == CLASSES.index(plan.into)) & src).sum())
            eff = turned / n if n else math.nan
        else:
            had, has = present(before.labels, plan.paste), present(after.labels, plan.paste)
            n = int(had.sum())
            eff = float((had & ~has).sum()) / n if n else math.nan
    return {'n': len(before.labels), 'n_with_source': n, 'effectiveness': eff,
            'mean_abs_change_outside': mean_abs_change_outside(
                before.images, after.images, plan_region(plan, before.labels, after.labels, radius))}


def score_grid(model, zds, edit: BenchEdit, request: dict, layers, ranks, segmenter: Segmenter, eval_z,
               before: Samples, batch: int) -> dict[Setting, dict]:
    """{(layer, rank): plan_scores} of one edit applied at every setting (fast solver)."""
    out = {}
    for layer in layers:
        gw = SeqStyleGanRewriter(model, zds, layer, progress=False)
        for rank in ranks:
            gw.revert()
            try:
                apply_plan(gw, edit.plan, request, rank=rank)
            except RewriteError as e:
                out[(layer, rank)] = {'error': str(e)}
                continue
            after = sample(gw.model, eval_z, segmenter, batch, None, EVAL_TRUNCATION)
            out[(layer, rank)] = plan_scores(edit.plan, before, after)
    return out


def groundtruth(snapshot, segmenter, edits: list[BenchEdit], requests: dict, layers, ranks, eval_n: int,
                batch: int) -> tuple[dict[str, dict[Setting, dict]], dict[str, int]]:
    """({edit: {(layer, rank): scores}}, {edit: z's scored on}): read when scored on at least eval_n z's,
    else computed (score_grid) and cached one edit at a time (an interrupted run keeps what it finished)."""
    grid = {(lay, r) for lay in layers for r in ranks}
    cache = {}
    try:
        cache = json.loads(GROUNDTRUTH.read_text())
    except (OSError, ValueError):
        pass
    if cache.get('checkpoint') != snapshot.sha256 or cache.get('procedure') != PROCEDURE:
        cache = {'checkpoint': snapshot.sha256, 'procedure': PROCEDURE, 'edits': {}}
    bundled_n = (read_provenance(PROVENANCE) or {}).get('eval_n') or 0
    out, used, todo = {}, {}, []
    for e in edits:
        known = bundled_groundtruth(e.name, snapshot.sha256, grid) if e.bundled and bundled_n >= eval_n else None
        n = bundled_n
        cached = cache['edits'].get(e.name)
        if known is None and cached and cached['request'] == requests[e.name] and \
                cached.get('eval_n', cache.get('eval_n', 0)) >= eval_n and grid <= set(_keyed(cached['scores'])):
            known = {s: _keyed(cached['scores'])[s] for s in grid}
            n = cached.get('eval_n', cache.get('eval_n'))
        if known is None:
            todo.append(e)
        else:
            out[e.name], used[e.name] = known, n
    if todo:
        model = snapshot.model(EDIT_TRUNCATION)
        zds = z_dataset_for_model(model, ZSAMPLE)
        eval_z = z_sample_for_model(model, eval_n, seed=SELECTION_SEED)
        before = sample(model, eval_z, segmenter, batch, 'held-out samples', EVAL_TRUNCATION)
        for e in todo:
            t0 = time.perf_counter()
            out[e.name] = score_grid(model, zds, e, requests[e.name], layers, ranks, segmenter, eval_z, before, batch)
            used[e.name] = eval_n
            cache['edits'][e.name] = {'request': requests[e.name], 'eval_n': eval_n,
                                      'scores': _listed(out[e.name])}
            write_json(GROUNDTRUTH, cache)
            print(f'ground truth of {e.name} ({eval_n} z\'s): {time.perf_counter() - t0:.0f}s', flush=True)
    return out, used


def rule_scores(gt: dict[Setting, dict]) -> dict[Setting, float]:
    """The ground truth's ordering as a number per setting (see the module docstring)."""
    eff = {s: v.get('effectiveness', math.nan) for s, v in gt.items() if 'error' not in v}
    eff = {s: e if math.isfinite(e) else -1.0 for s, e in eff.items()}
    top = max(eff.values())
    near = [s for s in eff if eff[s] >= top - EFFECTIVENESS_TOLERANCE]
    worst = max(gt[s]['mean_abs_change_outside'] for s in near)
    return {s: (1 + (1 - gt[s]['mean_abs_change_outside'] / worst)) if s in near else max(eff[s], 0) / top
            for s in eff}


def judge(gt: dict[Setting, dict], advised: Setting | None) -> dict:
    """The goal for one advised setting against the ground truth."""
    best = best_setting(gt)
    g_best, g_adv = gt[best], gt.get(advised, {}) if advised is not None else {}
    eff_ok = advised is not None and g_adv.get('effectiveness', -1) >= g_best['effectiveness'] - EFFECTIVENESS_TOLERANCE
    out_ok = advised is not None and g_adv.get('mean_abs_change_outside', math.inf) <= \
        OUTSIDE_FACTOR * g_best['mean_abs_change_outside']
    return {'groundtruth_best': list(best), 'advised': list(advised) if advised else None,
            'gt_best_effectiveness': g_best['effectiveness'],
            'gt_best_change_outside': g_best['mean_abs_change_outside'],
            'advised_effectiveness': g_adv.get('effectiveness', math.nan),
            'advised_change_outside': g_adv.get('mean_abs_change_outside', math.nan),
            'effectiveness_ok': bool(eff_ok), 'outside_ok': bool(out_ok), 'pass': bool(eff_ok and out_ok)}


def compare(name: str, gt: dict[Setting, dict], advice: dict) -> dict:
    """One benchmark row: the goal, the Spearman correlation with the ground truth's ordering and whether the
    advisor was sure; advice: Advice.to_json()."""
    best = advice['best']
    row = {'edit': name} | judge(gt, (best['layer'], best['rank']) if best else None)
    truth = rule_scores(gt)
    pairs = [(c['score'], truth[(c['layer'], c['rank'])]) for c in advice['table']
             if c['skipped'] is None and c['score'] is not None and (c['layer'], c['rank']) in truth]
    rho = float(spearmanr(*zip(*pairs)).statistic) if len(pairs) > 2 else math.nan
    return row | {'spearman': rho, 'sure': advice.get('sure', True), 'doubt': advice.get('doubt')}


def candidates(advice_json: dict, terms: dict | None = None) -> list[Candidate]:
    """The sweep's table back as Candidates (measures as measured; skipped settings kept), with their
    per-image terms when given ({'layer rank': {'attain': [num, den], 'leak': [num, den]}})."""
    fields = {f for f in Candidate.__dataclass_fields__ if f not in ('previews', 'terms')}
    out = []
    for row in advice_json['table']:
        kept = {k: (math.nan if v is None and k not in ('skipped', 'preserve_leak') else v)
                for k, v in row.items() if k in fields}
        t = (terms or {}).get(f'{row["layer"]} {row["rank"]}') or {}
        out.append(Candidate(**kept, terms={k: tuple(np.asarray(x) for x in v) for k, v in t.items()}))
    return out


def ranked(entry: dict, tolerance: float = advisor.ATTAIN_TOLERANCE) -> dict:
    """A kept sweep ranked again by the advisor's present rule and confidence (the measures are kept, the
    ranking is not): Advice.to_json()'s best, table, sure, doubt and win_share."""
    table = score_candidates(candidates(entry['advice'], entry.get('terms')), tolerance=tolerance)
    sure, doubt, share = advisor.confidence(table, tolerance)
    best = table[0] if table and table[0].ok else None
    return {'best': None if best is None else {'layer': best.layer, 'rank': best.rank},
            'table': [c.to_json() for c in table], 'sure': sure, 'doubt': doubt, 'win_share': share,
            'attain_tolerance': tolerance}


def reranked(advice_json: dict, tolerance: float) -> Setting | None:
    """The setting the advisor's ranking picks from a saved sweep with another attainment tolerance."""
    table = score_candidates(candidates(advice_json), tolerance=tolerance)
    return (table[0].layer, table[0].rank) if table and table[0].ok else None


def leave_one_kind_out(rows: list[dict], advices: dict, gts: dict) -> list[dict]:
    """Per kind: the tolerance (of TOLERANCES) that passes most tune edits of the other kinds (ties: the one
    nearest the advisor's own), and the passes of that kind's edits (each part) ranked with it."""
    out = []
    for kind in KINDS:
        mine = [r for r in rows if BENCH[r['edit']].kind == kind]
        if not mine:
            continue
        train = [r for r in rows if BENCH[r['edit']].kind != kind and BENCH[r['edit']].part == 'tune']

        def passes(tol, among):
            return sum(judge(gts[r['edit']], reranked(advices[r['edit']], tol))['pass'] for r in among)
        tol = max(TOLERANCES, key=lambda t: (passes(t, train), -abs(t - advisor.ATTAIN_TOLERANCE)))
        entry = {'kind': kind, 'tolerance': tol, 'tune_other_kinds_passed': passes(tol, train),
                 'tune_other_kinds': len(train)}
        for part in PARTS:
            among = [r for r in mine if BENCH[r['edit']].part == part]
            entry[part] = [passes(tol, among), len(among)]
        out.append(entry)
    return out


def sweep_key(name: str, request: dict, layers, ranks, heldout: int) -> str:
    """What a kept sweep must match to be reused: the edit, its request, the grid and the advisor's measures."""
    version = advisor.SCORE_VERSION['edit' if 'object' in request else 'erase']
    text = json.dumps([name, request, list(layers), list(ranks), heldout, version], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def sweeps(edits: list[BenchEdit], reqs: dict, model, zds, layers, ranks, heldout: int, cachedir: Path,
           partial: Path) -> dict[str, dict]:
    """{edit: {'key', 'advice': Advice.to_json(), 'seconds'}}: the advisor's sweep of every edit, kept in
    `partial` as each finishes and reused while its key (edit, request, grid, measures) matches. The first
    sweep to run gathers (or reads) every layer's statistics first ('stats_seconds' in the result)."""
    try:
        kept = json.loads(partial.read_text()) if partial.is_file() else {}
    except ValueError:
        kept = {}
    stats_ready = False
    for e in edits:
        key = sweep_key(e.name, reqs[e.name], layers, ranks, heldout)
        if kept.get(e.name, {}).get('key') == key and 'terms' in kept[e.name]:
            continue
        if not stats_ready:
            t0 = time.perf_counter()
            advise(model, zds, reqs[e.name], layers=layers, ranks=ranks[:1], cachedir=cachedir, progress=False,
                   heldout=heldout)                  # gathers (or reads) every layer's statistics
            kept['stats_seconds'] = time.perf_counter() - t0
            stats_ready = True
        advice = advise(model, zds, reqs[e.name], layers=layers, ranks=ranks, cachedir=cachedir,
                        progress=False, heldout=heldout)
        print(f'{e.name} ({e.part}, {e.kind}): {advice.seconds:.1f}s\n{advice.text_table()}', flush=True)
        kept[e.name] = {'key': key, 'advice': advice.to_json(), 'seconds': advice.seconds,
                        'terms': {f'{c.layer} {c.rank}': {k: [np.asarray(v).tolist() for v in t]
                                                          for k, t in c.terms.items()} for c in advice.table}}
        write_json(partial, kept)
    return kept


def run(edits: list[BenchEdit], layers, ranks, eval_n: int, batch: int, threads: int, checkpoint: Path,
        cachedir: Path | None, heldout: int, folder: Path, partial: Path) -> dict:
    setup_torch(threads)
    snapshot, segmenter = load_snapshot(checkpoint), load_segmenter()
    reqs = requests(folder, {e.name for e in edits})
    gts, gt_n = groundtruth(snapshot, segmenter, edits, reqs, layers, ranks, eval_n, batch)
    model = snapshot.model(EDIT_TRUNCATION)
    zds = z_dataset_for_model(model, ZSAMPLE)
    cachedir = Path(cachedir or tempfile.mkdtemp(prefix='advise-stats-'))
    done = sweeps(edits, reqs, model, zds, layers, ranks, heldout, cachedir, partial)
    rows, advices = [], {}
    for e in edits:
        advices[e.name] = ranked(done[e.name])
        row = compare(e.name, gts[e.name], advices[e.name]) | {
            'sweep_seconds': done[e.name]['seconds'], 'kind': e.kind, 'part': e.part, 'groundtruth_n': gt_n[e.name]}
        rows.append(row)
        print(f'{e.name} ({e.part}, {e.kind}): advised {row["advised"]}, ground truth {row["groundtruth_best"]}, '
              f'{"pass" if row["pass"] else "FAIL"}{"" if row["sure"] else " (unsure)"}, '
              f'spearman {row["spearman"]:.2f}, {row["sweep_seconds"]:.1f}s', flush=True)
    return {'checkpoint': snapshot.describe(), 'layers': list(layers), 'ranks': list(ranks), 'eval_n': eval_n,
            'heldout': heldout, 'threads': threads, 'stats_seconds': done.get('stats_seconds'),
            'effectiveness_tolerance': EFFECTIVENESS_TOLERANCE, 'outside_factor': OUTSIDE_FACTOR,
            'score_version': dict(advisor.SCORE_VERSION), 'attain_tolerance': advisor.ATTAIN_TOLERANCE,
            'parts': {part: [e.name for e in edits if e.part == part] for part in PARTS},
            'kinds': {e.name: e.kind for e in edits},
            'machine': machine_info(threads), 'rows': rows,
            'leave_one_kind_out': leave_one_kind_out(rows, advices, gts),
            'advice': advices, 'groundtruth': {name: _listed(gt) for name, gt in gts.items()}}


def table(result: dict, part: str) -> str:
    rows = [[f'{r["edit"]} ({r["kind"]})',
             'L{} R{}'.format(*r['advised']) if r['advised'] else 'none',
             'L{} R{}'.format(*r['groundtruth_best']),
             f'{pct(r["advised_effectiveness"])} / {pct(r["gt_best_effectiveness"])}',
             f'{r["advised_change_outside"]:.4f} / {r["gt_best_change_outside"]:.4f}',
             'pass' if r['pass'] else 'FAIL', 'yes' if r['sure'] else 'no', f'{r["spearman"]:.2f}',
             f'{r["sweep_seconds"]:.1f}']
            for r in result['rows'] if r['part'] == part]
    return markdown_table(['edit (kind)', 'advised', 'ground-truth best', 'effectiveness advised / best',
                           'change outside advised / best', 'goal', 'sure', 'Spearman', 'sweep s'], rows)


def summary(result: dict) -> str:
    """Both parts' tables, the passes per part and kind, and leave-one-kind-out."""
    lines = []
    for part in PARTS:
        rows = [r for r in result['rows'] if r['part'] == part]
        if not rows:
            continue
        kinds = ', '.join(f'{k} {sum(r["pass"] for r in rows if r["kind"] == k)}/'
                          f'{sum(r["kind"] == k for r in rows)}' for k in KINDS if any(r['kind'] == k for r in rows))
        sure = [r for r in rows if r['sure']]
        lines += [f'### {part} part\n', table(result, part), '',
                  f'{part}: {sum(r["pass"] for r in rows)} of {len(rows)} edits pass ({kinds}); '
                  f'sure on {len(sure)} (of them {sum(r["pass"] for r in sure)} pass); mean Spearman '
                  f'{np.nanmean([r["spearman"] for r in rows]):.2f}', '']
    loko = result.get('leave_one_kind_out') or []
    if loko:
        lines += ['### leave one kind out\n', markdown_table(
            ['kind left out', 'tolerance chosen on the other kinds (tune passes)', 'tune part', 'held-out part'],
            [[e['kind'], f'{e["tolerance"]:g} ({e["tune_other_kinds_passed"]}/{e["tune_other_kinds"]})',
              '{}/{}'.format(*e['tune']), '{}/{}'.format(*e['heldout'])] for e in loko]), '']
    stats = result['stats_seconds']
    lines.append(f'statistics of {len(result["layers"])} layers '
                 f'{"(cached)" if stats is None else f"{stats:.1f}s"} once; '
                 f'{result["threads"]} thread(s); sweeps {min(r["sweep_seconds"] for r in result["rows"]):.1f}-'
                 f'{max(r["sweep_seconds"] for r in result["rows"]):.1f}s')
    return '\n'.join(lines) + '\n'


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--edits', nargs='+', default=None, choices=list(BENCH), help='default: every benchmark edit')
    p.add_argument('--parts', nargs='+', default=list(PARTS), choices=list(PARTS))
    p.add_argument('--layers', type=int, nargs='+', default=[5, 6, 7, 8])
    p.add_argument('--ranks', type=int, nargs='+', default=[1, 2, 3])
    p.add_argument('--eval-n', type=int, default=200,
                   help="ground truth's held-out samples (at least; scores kept from more are reused)")
    p.add_argument('--heldout', type=int, default=48, help="the advisor's held-out samples")
    p.add_argument('--batch', type=int, default=32)
    p.add_argument('--threads', type=int, default=1)
    p.add_argument('--checkpoint', type=Path, default=DEMO_CHECKPOINT)
    p.add_argument('--cachedir', type=Path, default=None, help='key statistics cache (default: a fresh temp folder)')
    p.add_argument('--edit-dir', type=Path, default=BENCH_DIR, help='the benchmark edits (make_advise_edits)')
    p.add_argument('--out', type=Path, default=OUT_JSON)
    p.add_argument('--kept', type=Path, default=None,
                   help="the kept sweeps (default: the --out file's name with .partial.json)")
    return p.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    edits = [e for e in EDITS if e.part in args.parts and (args.edits is None or e.name in args.edits)]
    if not edits:
        raise SystemExit('no benchmark edit selected')
    partial = args.kept or args.out.with_suffix('.partial.json')
    result = run(edits, args.layers, args.ranks, args.eval_n, args.batch, args.threads, args.checkpoint,
                 args.cachedir, args.heldout, args.edit_dir, partial)
    write_report(args.out, result, summary(result))


if __name__ == '__main__':
    main()
