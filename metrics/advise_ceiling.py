"""The ground truth measured again on the advisor's own held-out samples: the bound and the ceiling.

    scores = oracle_scores(edit, segmenter, advice)     # advice: advise(..., keep_renders=True)
    retaken(scores)                                    # the setting the ground truth's rule names there
    expected_ceiling(kept, gts, edits)                 # its passes, averaged over resamples of the samples

The advisor (rewrite/analysis/advisor.py) is judged against the demo segmenter's ground truth on 400 z's
(metrics/advise_benchmark.py: the advised setting within 5 points of the best's effectiveness and at most 1.25
times its change outside). The same segmenter, measures and selection rule (`best_setting`), taken on the
sweep's own held-out renders (other z's), name a setting too; judged as the advisor is, how often it passes is
the ceiling a label-free advisor measuring on its own samples can be expected to reach. One draw of samples
gives one figure; `expected_ceiling` averages the passes over bootstrap resamples of the held-out samples
(each image's terms of both measures, `plan_terms`).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from metrics.advise_benchmark import judge, plan_region, plan_scores
from metrics.demo_regions import EditPlan
from metrics.make_advise_edits import PARTS, BenchEdit
from metrics.make_demo_edits import best_setting
from utils.demo import Segmenter
from utils.demo.measures import REGION_RADIUS, Samples, class_mask, present, replaced
from utils.demo.scenes import CLASSES

Setting = tuple[int, int]
ROUNDS = 200                # resamples of the held-out samples behind expected_ceiling


def plan_terms(plan: EditPlan, before: Samples, after: Samples, radius: int = REGION_RADIUS) -> np.ndarray:
    """float64 [4, N]: per image the numerator and denominator of advise_benchmark.plan_scores' two pooled
    measures (effectiveness: hit and counted, or for an erase with `into` turned and source pixels; change
    outside: the sum of |after - before| over the channels of the pixels outside the region, and their count
    times the channels), so that sums over any images give those measures on just them."""
    n_ch = before.images.shape[1]
    if plan.dst is not None:
        had = present(before.labels, plan.paste)
        hit = replaced(before.labels, after.labels, plan.paste, plan.dst, radius) & had
        eff_num, eff_den = hit.double(), had.double()
    else:
        src = class_mask(before.labels, plan.paste)
        if plan.into is not None:
            turned = (after.labels == CLASSES.index(plan.into)) & src
            eff_num, eff_den = turned.flatten(1).sum(1).double(), src.flatten(1).sum(1).double()
        else:
            had, has = present(before.labels, plan.paste), present(after.labels, plan.paste)
            eff_num, eff_den = (had & ~has).double(), had.double()
    outside = (~plan_region(plan, before.labels, after.labels, radius)).unsqueeze(1).double()
    out_num = ((after.images.double() - before.images.double()).abs() * outside).flatten(1).sum(1)
    out_den = outside.flatten(1).sum(1) * n_ch
    return torch.stack([eff_num, eff_den, out_num, out_den]).numpy()


def oracle_scores(edit: BenchEdit, segmenter: Segmenter, advice) -> dict[str, dict]:
    """The ground truth's segmenter and measures (advise_benchmark.plan_scores) on the sweep's own held-out
    renders (advice from advise(keep_renders=True)): {'oracle': {'layer rank': effectiveness},
    'oracle_outside': {'layer rank': mean abs change outside}, 'oracle_terms': {'layer rank': plan_terms as
    lists}}."""
    before = advice.before_renders.float()
    labelled = Samples(before, segmenter.segment(before, vote=True))
    out = {'oracle': {}, 'oracle_outside': {}, 'oracle_terms': {}}
    for c in advice.table:
        if c.ok:
            key = f'{c.layer} {c.rank}'
            images = c.previews['renders'].float()
            after = Samples(images, segmenter.segment(images, vote=True))
            scores = plan_scores(edit.plan, labelled, after)
            out['oracle'][key] = scores['effectiveness']
            out['oracle_outside'][key] = scores['mean_abs_change_outside']
            out['oracle_terms'][key] = plan_terms(edit.plan, labelled, after).tolist()
    return out


def retaken(entry: dict) -> Setting:
    """The ground truth's rule (`best_setting`) on its measures of the sweep's own renders (entry: with
    'oracle' and 'oracle_outside', as oracle_scores)."""
    return best_setting({tuple(map(int, key.split())): {'effectiveness': eff,
                                                        'mean_abs_change_outside': entry['oracle_outside'][key]}
                         for key, eff in entry['oracle'].items()})


def resampled_picks(terms: dict[str, list], rounds: int = ROUNDS, seed: int = 0) -> list[Setting]:
    """The setting `retaken` names on each of `rounds` resamples (with replacement, seeded) of the held-out
    samples; terms: {'layer rank': plan_terms [4, N]}."""
    keys = sorted(terms)
    t = np.stack([np.asarray(terms[k], np.float64) for k in keys])                  # [S, 4, N]
    idx = np.random.default_rng(seed).integers(0, t.shape[-1], size=(rounds, t.shape[-1]))
    sums = t[:, :, idx].sum(-1)                                                     # [S, 4, rounds]
    with np.errstate(invalid='ignore', divide='ignore'):
        eff, out = sums[:, 0] / sums[:, 1], sums[:, 2] / sums[:, 3]
    return [retaken({'oracle': {k: float(eff[s, b]) if math.isfinite(eff[s, b]) else math.nan
                                for s, k in enumerate(keys)},
                     'oracle_outside': {k: float(out[s, b]) for s, k in enumerate(keys)}})
            for b in range(rounds)]


def expected_ceiling(kept: dict, gts: dict, edits: list[BenchEdit], rounds: int = ROUNDS) -> dict[str, list]:
    """{part: [expected passes, edits]}: per edit the share of `rounds` resamples of its held-out samples on
    which the ground truth's rule names a setting that passes (advise_benchmark.judge against gts), summed
    over the part's edits. kept: {edit name: entry with 'oracle_terms'}."""
    out = {}
    for part in PARTS:
        mine = [e for e in edits if e.part == part]
        shares = [np.mean([judge(gts[e.name], s)['pass'] for s in resampled_picks(kept[e.name]['oracle_terms'],
                                                                                     rounds)]) for e in mine]
        out[part] = [float(np.sum(shares)), len(mine)]
    return out
