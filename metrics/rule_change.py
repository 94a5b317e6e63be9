"""Changing the glow world's rule (the paper's section 5.3) and the glow model's card.

    python -m metrics.rule_change [--n 400] [--train 12] [--eval 48] [--threads 1]

1. The rule learned: on N 'glow' data scenes (true labels) and N model samples (z seed 2, truncation 1.0,
   labelled by the glow segmenter): lit windows, glow when lit / not lit, glow placed as the rule says.
2. Dissection of the cause at an early layer (rewrite.experiments.glow.rule.GlowRule: units ranked by IoU with the lit
   windows, the cause's mean direction) on z seed 1.
3. Interventions on held-out samples (z seed 2, drawn with a building, without lit windows or glow): the cause
   added inside the building, in the original model: cause and effect presence.
4. The per-layer search (rewrite.analysis.layersearch.layer_search) for the change that reverses the effect, fitted
   on --train samples (z seed 3), scaled to the same change outside the effect region (--search-budget, below
   what any layer's change needs, so every layer is compared at that same change) and scored
   on the held-out interventions; then the rank-one change at the best layer (key C^-1 k).
5. The rank-one changed model on the held-out interventions: flip rate (glow shown before, lit windows and
   no glow after), mean abs change outside the effect region (images in [-1, 1]), cause presence before and
   after; and on plain samples, glow when lit. The changed model is saved in the checkpoint layout.

Writes metrics/results/rule_change.json, metrics/results/rule_change_layers.png and
utils/demo/weights/GLOW_MODEL_CARD.md.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict
from pathlib import Path

import torch

from metrics.common import RESULTS, setup_torch
from metrics.report import machine_info, pct, rel, write_json
from rewrite.analysis.layersearch import layer_search, scale_to_budget
from rewrite.analysis.rulechange import (
    change_outside,
    changed_model,
    conv_change_rank,
    fit_layer_change,
    key_direction,
    render,
)
from rewrite.experiments.glow.rule import GLOW_MODEL, GLOW_SEGMENTER, MIN_PIXELS, GlowRule, RuleRates, area, present
from utils.demo.scenedata import render_batch
from utils.demo.segmenter import load_segmenter
from utils.fileio import atomic_path, atomic_write_text
from utils.stylegan2 import load_seq_stylegan, save_checkpoint
from utils.zdataset import z_sample_for_model

CARD = GLOW_MODEL.parent / 'GLOW_MODEL_CARD.md'
MAX_RULE_DIFF = 8.0          # points: glow when lit, model vs data
MIN_FLIP = 0.70
MAX_OUTSIDE = 0.03
MAX_CAUSE_DROP = 5.0         # points


def rates_row(r: dict) -> str:
    keys = ('cause', 'effect_when_cause', 'effect_without_cause', 'placed_when_cause')
    return ' | '.join(pct(r[k]) for k in keys)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--model', default=str(GLOW_MODEL))
    ap.add_argument('--n', type=int, default=400, help='samples and data scenes for the rule rates')
    ap.add_argument('--dissect', type=int, default=200)
    ap.add_argument('--train', type=int, default=12, help='samples the changes are fitted on')
    ap.add_argument('--eval', type=int, default=48, help='held-out interventions')
    ap.add_argument('--layers', default='layer4,layer5,layer6,layer7,layer8,layer9,layer10')
    ap.add_argument('--cause-layer', default='layer3')
    ap.add_argument('--strength', type=float, default=8.0)
    ap.add_argument('--budget', type=float, default=MAX_OUTSIDE, help='the rank-one change is scaled to at most this')
    ap.add_argument('--search-budget', type=float, default=0.015, help='every layer of the search is scaled to this')
    ap.add_argument('--steps', type=int, default=40)
    ap.add_argument('--rank-one-steps', type=int, default=100)
    ap.add_argument('--max-scale', type=float, default=3.0,
                    help='the rank-one change may be strengthened up to this factor within --budget')
    ap.add_argument('--out-model', default='runs/glowchurch64-rule-changed.pt')
    ap.add_argument('--threads', type=int, default=1)
    ap.add_argument('--no-card', action='store_true')
    args = ap.parse_args(argv)
    setup_torch(args.threads)
    t0 = time.time()
    model = load_seq_stylegan(args.model, truncation=1.0)
    ckpt = torch.load(args.model, weights_only=True)
    info = ckpt.get('train_info')
    iteration = json.loads(info).get('iterations') if isinstance(info, str) else None
    rule = GlowRule(model, load_segmenter(GLOW_SEGMENTER), args.cause_layer, args.strength)
    log = print

    # 1. the rule learned
    data = render_batch(range(args.n), family='glow')
    data_rates = RuleRates.of(torch.as_tensor(data[1]).long())
    plain = rule.labels(rule.images(z_sample_for_model(model, args.n, seed=2)))
    model_rates = RuleRates.of(plain)
    data_lit = area(torch.as_tensor(data[1]).long(), 'lit_window')
    smallest = int(data_lit[data_lit > 0].min()) if (data_lit > 0).any() else MIN_PIXELS
    model_rates_large = RuleRates.of(plain, cause_pixels=smallest)     # a diagnostic; the goal uses MIN_PIXELS
    log('data', data_rates, '\nmodel', model_rates, f'\nmodel, lit windows >= {smallest} px', model_rates_large)

    # 2. dissection
    found = rule.dissect(z_sample_for_model(model, args.dissect, seed=1))
    log('top units', found.units[:8].tolist(), found.iou[:8].tolist())

    # 3. held-out interventions in the original model
    z_eval, l_eval = rule.candidates(z_sample_for_model(model, 8 * args.eval, seed=2), args.eval)
    z_train, l_train = rule.candidates(z_sample_for_model(model, 8 * args.train, seed=3), args.train)
    keep_z = z_sample_for_model(model, 4, seed=4)
    evaluation = rule.problem(z_eval, l_eval, keep_z)
    problem = rule.problem(z_train, l_train, keep_z)
    ref_labels = rule.labels(evaluation.reference)
    before = dict(n=len(z_eval), cause_before_intervention=float(present(l_eval, 'lit_window').float().mean()),
                  cause_after=float(present(ref_labels, 'lit_window').float().mean()),
                  effect_before_intervention=float(present(l_eval, 'glow').float().mean()),
                  effect_after=float(present(ref_labels, 'glow').float().mean()))
    log('interventions (original model)', before)

    # 4. per-layer search, then the rank-one change at the best layer
    search = layer_search(model, args.layers.split(','), problem, rule.flip, budget=args.search_budget,
                          steps=args.steps, lr=0.01, evaluation=evaluation, progress=log)
    log(search.table(), '\n', search.verdict())
    best = search.best
    d = key_direction(model, best, problem)
    fit = fit_layer_change(model, best, problem, steps=args.rank_one_steps, lr=0.1, direction=d)
    scale, outside = scale_to_budget(model, best, fit.delta, evaluation, args.budget, iters=8,
                                     max_scale=args.max_scale)
    delta = scale * fit.delta
    changed = changed_model(model, best, delta)
    with torch.no_grad():
        after = render(changed, evaluation.z, evaluation.cause).clamp(-1, 1)
    after_labels = rule.labels(after)
    changed_plain = GlowRule(changed, rule.segmenter).labels(
        GlowRule(changed, rule.segmenter).images(z_sample_for_model(model, args.n, seed=2)))
    rank_one = dict(layer=best, rank=conv_change_rank(delta), scale=scale, loss_before=fit.losses[0],
                    loss_after=fit.losses[-1], flip=rule.flip(evaluation.reference, after),
                    flip_n=int(present(ref_labels, 'glow').sum()), change_outside=outside,
                    change_outside_check=change_outside(model, best, delta, evaluation),
                    cause_before=before['cause_after'],
                    cause_after=float(present(after_labels, 'lit_window').float().mean()),
                    effect_after=float(present(after_labels, 'glow').float().mean()),
                    plain_rates=asdict(RuleRates.of(changed_plain)))
    log('rank one', rank_one)
    Path(args.out_model).parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(changed, args.out_model, rule_change=dict(layer=best, cause_layer=args.cause_layer))

    result = dict(model=rel(Path(args.model)), iteration=iteration, args=vars(args),
                  data_rates=asdict(data_rates), model_rates=asdict(model_rates),
                  data_smallest_cause=smallest, model_rates_large_cause=asdict(model_rates_large),
                  dissection=dict(layer=found.layer, units=found.units[:8].tolist(), iou=found.iou[:8].tolist()),
                  interventions=before, layer_search=dict(rows=search.rows, best=best, margin=search.margin,
                                                          verdict=search.verdict()),
                  rank_one=rank_one, seconds=time.time() - t0, machine=machine_info(args.threads))
    write_json(RESULTS / 'rule_change.json', result)
    with atomic_path(RESULTS / 'rule_change_layers.png') as tmp:
        search.plot().save(tmp, format='PNG')
    if not args.no_card:
        atomic_write_text(CARD, card(result, search.table()))
    log(f'{time.time() - t0:.0f} s')
    return result


def card(r: dict, table: str) -> str:
    d, m, o = r['data_rates'], r['model_rates'], r['rank_one']
    rule_ok = abs(m['effect_when_cause'] - d['effect_when_cause']) * 100 <= MAX_RULE_DIFF
    flip_ok = o['flip'] >= MIN_FLIP
    out_ok = o['change_outside'] <= MAX_OUTSIDE
    cause_ok = abs(o['cause_after'] - o['cause_before']) * 100 <= MAX_CAUSE_DROP
    i = r['interventions']

    def ok(b):
        return 'met' if b else '**missed**'

    sd = 100 * (o['flip'] * (1 - o['flip']) / max(o['flip_n'], 1)) ** 0.5     # binomial
    flip_goal = f'>= {100 * MIN_FLIP:.0f}%: {ok(flip_ok)}'
    cause_goal = f'within {MAX_CAUSE_DROP:.0f} points: {ok(cause_ok)}'
    p = o['plain_rates']
    plain = f"{pct(p['effect_when_cause'])} / {pct(p['effect_without_cause'])}"
    large = r.get('model_rates_large_cause')
    large_row = '' if large is None else \
        f"| model, lit windows counted from {r['data_smallest_cause']} px | {rates_row(large)} |\n"
    large_note = '' if large is None else f"""
Diagnostic row: every lit window of the data covers at least {r['data_smallest_cause']} pixels (its smallest), while
the model also draws smaller lit patches (half-drawn windows, yellowish tower tops the segmenter calls lit). Counting
the cause only from the data's smallest area, glow when lit is {pct(large['effect_when_cause'])}, but the samples with
smaller lit patches move to the unlit column and glow when not lit becomes {pct(large['effect_without_cause'])}: the
model ties the glow to windows drawn as the world draws them, and draws the glow for about half of its small lit
patches. The goal is judged on the model's row."""

    return f"""# Glow-rule demo model (`glowchurch64.pt`)

Written by `python -m metrics.rule_change` (figures in `metrics/results/rule_change.json`); model
`{r['model']}`, fine-tune iteration {r['iteration']} (training: `REFLECTION_TRAINING.md`).

## The rule learned
{r['args']['n']} 'glow' data scenes (true labels) and {r['args']['n']} model samples (z seed 2, truncation 1.0,
labelled by `segmenter_glow.pt`). A class is present with >= {MIN_PIXELS} pixels; "placed" = most glow pixels in
the rule's region below the building.

| | lit windows | glow when lit | glow when not lit | glow placed when lit |
| --- | --- | --- | --- | --- |
| data | {rates_row(d)} |
| model | {rates_row(m)} |
{large_row}
Goal (glow when lit within {MAX_RULE_DIFF:.0f} points of the data's, the model's row): {ok(rule_ok)}.{large_note}

## Changing the rule (section 5.3)
Cause dissected at `{r['dissection']['layer']}`: top units by IoU with lit windows {r['dissection']['units'][:5]}
(IoU {', '.join(f'{v:.3f}' for v in r['dissection']['iou'][:5])}); the cause is added by moving the features
along its mean direction (lit minus unlit) inside the building, strength {r['args']['strength']}. At 8x8 a cell that
straddles the building's bottom edge gets the share of it the building covers, so the intervention touches the
top of the effect's region a little; at `layer5` (16x16) the added cause drew lit windows but hardly any glow
(40 samples, strength 8: glow newly drawn in 28% vs 66% at `layer3`): this model ties the glow to the windows early.

Held-out interventions ({i['n']} samples drawn without lit windows or glow, z seed 2), original model: lit windows
{pct(i['cause_before_intervention'])} -> {pct(i['cause_after'])}, glow {pct(i['effect_before_intervention'])} ->
{pct(i['effect_after'])}.

Per-layer search (full change fitted on {r['args']['train']} samples, z seed 3; each scaled to change outside the
effect region <= {r['args']['search_budget']}, in image units of the [-1, 1] range, over the intervened samples outside
the region and 4 plain samples; flip = of the held-out interventions that drew the glow in the original model, the
share drawn with lit windows and no glow by the changed one):

{table}

{r['layer_search']['verdict']}. Plot: `metrics/results/rule_change_layers.png`.

Rank-one change at `{o['layer']}` (key C^-1 k of the effect region; rank {o['rank']}; loss {o['loss_before']:.4f} ->
{o['loss_after']:.4f}; scale {o['scale']:.3f}), on the held-out interventions:

| figure | value | goal |
| --- | --- | --- |
| flip rate (of {o['flip_n']} that showed the glow; sd {sd:.0f} points) | {pct(o['flip'])} | {flip_goal} |
| mean abs change outside the effect region | {o['change_outside']:.4f} | <= {MAX_OUTSIDE}: {ok(out_ok)} |
| lit windows drawn, before -> after | {pct(o['cause_before'])} -> {pct(o['cause_after'])} | {cause_goal} |
| plain samples, changed model: glow when lit / not lit | {plain} | |

Total {r['seconds']:.0f} s on {r['machine'].get('torch_threads', 1)} thread(s) of a shared 2-core CPU.
"""


if __name__ == '__main__':
    main()
