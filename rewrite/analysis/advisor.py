"""Which layer, which rank? A label-free edit advisor.

    advice = advise(model, zds, request, layers=None, ranks=(1, 2, 3), cachedir='cache')
    print(advice.text_table())
    best = advice.best                 # Candidate(layer=8, rank=3, ...), or None when nothing worked

For every layer (default: every styled conv layer whose feature maps are large enough for the
request's masks to select something; a layer that cannot hold them is kept in the table with the
reason) and every rank, the request is applied with the fast solver to a fresh rewriter of that
layer (one rewriter per layer, so the key statistics are gathered or read from `cachedir` once per
layer; `gw.revert()` between ranks) and scored from the model and the request alone, no labels:

fit, paste, reach, leak (and preserve_leak), size, attain and effect; rewrite/analysis/advise_measures.py defines
each (`Probe.measure`). Attainment, the one the ranking reads first, is measured in a space downstream of
every layer (the output image's 3x3 RGB patches, labelled by the request's own regions), so that settings
at different layers compare; for an erase it is a graded, label-free source-likeness removed against the
targets' surroundings.

Held-out samples are drawn at `heldout_truncation` (default 1: the model's whole distribution, where the
rule must hold as well); the edit, the paste image and preserve regions use the model's own truncation.

Ranking (the rule make_demo_edits uses with segmenter labels, with label-free stand-ins): attainment is
read on the scale from doing nothing (0, by construction: no change closes no distance) to the strongest
setting of the sweep (the best attainment); of the settings within ATTAIN_TOLERANCE of the best on that
scale, the one that leaks least wins; `score` orders the whole table the same way: 1 + (1 - leak / largest
leak) for those near the best (in [1, 2]), attain / best attain for the rest (in [0, 1)). With preserve
regions, leak is the larger of the two leaks. Without any held-out target the effect replaces attainment
(near: within EFFECT_TOLERANCE of the largest effect). Skipped or failed settings score nan and come last.

How sure (`confidence`): the ranking is repeated on BOOTSTRAP resamples of the held-out samples (each
setting's attainment and leak pooled over the resampled images); the advice is called unsure when the
first setting wins fewer than SURE_SHARE of them (the top settings are within noise of each other), when
every setting's attainment is within the tolerance of the best (it barely spreads, so the leak alone
decides), or when the best attainment is below MIN_ATTAIN (no setting moves the targets far). `Advice.sure`
and `Advice.doubt` (the reason, with the settings that share the wins) say so.

How well it picks: metrics/advise_benchmark.py compares the advised setting with the demo segmenter's
ground truth on benchmark edits of three kinds, split into a part the measures and ranking were chosen on
and a part only measured on; metrics/README.md gives the figures (the held-out part misses its goal).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import MappingProxyType

import numpy as np
import torch
from tqdm.auto import tqdm

from rewrite.analysis.advise_measures import (  # noqa: F401  (names the advisor has always offered)
    PATCH_EXEMPLARS,
    PATCH_RES,
    PREVIEW,
    SURROUND_RING,
    TARGET_QUANTILE,
    PatchGoal,
    Probe,
    change_map,
    pasted_region,
    patch_targets,
    patches,
    render,
    replacement_distance,
    source_likeness,
    surround_ring,
    target_maps,
    weighted_mean_change,
)
from rewrite.analysis.advise_pictures import ROW_LABEL_WIDTH, advice_picture, change_picture  # noqa: F401
from rewrite.core.pieces import float_zs
from rewrite.core.rewriter import RewriteError, SeqStyleGanRewriter
from rewrite.formats import editfile
from utils.generators.site import rewrite_site
from utils.imgviz import to_uint8_batch

HELDOUT_SEED = 17           # held-out z's: apart from the z-sample (seed 1) and the demo metrics' (2, 3)
HELDOUT_N = 48
MAX_HELDOUT = 1000          # held-out samples at most: each is rendered and kept ([N, 3, H, W] float32, twice)
HELDOUT_TRUNCATION = 1.0    # held-out samples: the model's whole distribution
EFFECT_TOLERANCE = 0.15     # settings whose effect is within this share of the best count as equally effective
ATTAIN_TOLERANCE = 0.3      # settings whose attainment is within this share of the best's count as equal
BOOTSTRAP = 200             # resamples of the held-out samples that test the ranking's winner
SURE_SHARE = 0.6            # the winner must win at least this share of the resamples
MIN_ATTAIN = 0.05           # a best attainment below this moves nothing far enough to rank by
SCORE_VERSION = MappingProxyType({'edit': 2, 'erase': 3})  # per kind of request: bump when its measures change

ProgressCallback = Callable[[int, int, str], None]


@dataclass
class Candidate:
    """One (layer, rank) of the sweep and its label-free scores (nan where not measured).

    previews (not in to_json): uint8 [PREVIEW, H, W, 3] edited held-out images and float [PREVIEW, H, W]
    change maps, and the bool [PREVIEW, H, W] target maps, for pictures. terms (not in to_json): per held-out
    image the numerators and denominators [N] of the pooled attainment and leak ({'attain': (num, den),
    'leak': (num, den)}), for `confidence`."""

    layer: int
    rank: int
    fit: float = math.nan
    paste: float = math.nan
    reach: float = math.nan
    leak: float = math.nan
    attain: float = math.nan
    preserve_leak: float | None = None
    size: float = math.nan
    effect: float = math.nan
    score: float = math.nan
    initial_loss: float = math.nan
    final_loss: float = math.nan
    seconds: float = 0.0
    skipped: str | None = None
    previews: dict = field(default_factory=dict, repr=False, compare=False)
    terms: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def ok(self) -> bool:
        return self.skipped is None

    @property
    def total_leak(self) -> float:
        """The leak the ranking uses: held-out leak, or the preserve regions' when that is larger."""
        if self.preserve_leak is None or not math.isfinite(self.preserve_leak):
            return self.leak
        return max(self.leak, self.preserve_leak)

    def to_json(self) -> dict:
        out = {k: v for k, v in asdict(self).items() if k not in ('previews', 'terms')}
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in out.items()}


@dataclass
class Advice:
    """The sweep's table (best first; skipped settings last) and its best setting (None if none worked)."""

    table: list[Candidate]
    heldout_n: int
    heldout_seed: int
    seconds: float
    before_previews: np.ndarray | None = field(default=None, repr=False)
    heldout_truncation: float | None = None
    sure: bool = True
    doubt: str | None = None
    win_share: float | None = None
    before_renders: torch.Tensor | None = field(default=None, repr=False)   # advise(keep_renders=True) only

    @property
    def best(self) -> Candidate | None:
        return self.table[0] if self.table and self.table[0].ok else None

    def to_json(self) -> dict:
        best = self.best
        return {'best': None if best is None else {'layer': best.layer, 'rank': best.rank},
                'heldout_n': self.heldout_n, 'heldout_seed': self.heldout_seed,
                'heldout_truncation': self.heldout_truncation, 'seconds': self.seconds,
                'effect_tolerance': EFFECT_TOLERANCE, 'target_quantile': TARGET_QUANTILE,
                'patch_res': PATCH_RES, 'attain_tolerance': ATTAIN_TOLERANCE,
                'sure': self.sure, 'doubt': self.doubt, 'win_share': self.win_share,
                'table': [c.to_json() for c in self.table]}

    def text_table(self) -> str:
        """The table as aligned text, best first."""
        head = ['layer', 'rank', 'score', 'attain', 'effect', 'fit', 'paste', 'reach', 'leak', 'preserve', 'size',
                's']
        rows = []
        for c in self.table:
            if not c.ok:
                rows.append([str(c.layer), str(c.rank), 'skipped: ' + c.skipped])
                continue
            rows.append([str(c.layer), str(c.rank), _num(c.score, 3), _num(c.attain, 3), _num(c.effect, 4),
                         _num(c.fit, 3),
                         _num(c.paste, 4), _num(c.reach, 4), _num(c.leak, 4),
                         '-' if c.preserve_leak is None else _num(c.preserve_leak, 4), _num(c.size, 4),
                         f'{c.seconds:.1f}'])
        widths = [max(len(r[i]) for r in [head] + [r for r in rows if len(r) > i]) for i in range(len(head))]
        lines = ['  '.join(h.rjust(w) for h, w in zip(head, widths))]
        for r in rows:
            cells = [x.rjust(w) for x, w in zip(r, widths)] if len(r) == len(head) else [
                r[0].rjust(widths[0]), r[1].rjust(widths[1]), r[2]]
            lines.append('  '.join(cells))
        if not self.sure:
            lines.append(f'not sure: {self.doubt}')
        return '\n'.join(lines)


def _num(value: float, digits: int) -> str:
    return 'n/a' if value is None or not math.isfinite(value) else f'{value:.{digits}f}'


# ---------------------------------------------------------------------------------------------------
# the request
# ---------------------------------------------------------------------------------------------------

def read_request(request: Mapping | str | os.PathLike) -> dict:
    """The request as a JSON dict (from a dict, JSON text or a file); RewriteError naming the problem.

    Text and files are read by the edit-file reader (rewrite/formats/editfile.py), as `rewrite apply` reads them:
    a bounded read of a regular file only (a FIFO or /dev/zero is refused without blocking), fields given
    twice and JSON nested too deeply are errors."""
    if isinstance(request, Mapping):
        return dict(request)
    if not isinstance(request, (str, os.PathLike)):
        raise RewriteError(f'request: expected an edit (dict, JSON text or file), got {type(request).__name__}')
    is_text = isinstance(request, str) and request.lstrip()[:1] in ('{', '[')
    where = 'request' if is_text else str(request)
    try:
        obj = editfile.read_edit_json(request)
    except editfile.EditFileError as e:
        raise RewriteError(str(e)) from None
    except OSError as e:
        raise RewriteError(f'request: cannot read the edit file {str(request)[:80]!r} '
                           f'({e.strerror or e})') from None
    if not isinstance(obj, dict):
        raise RewriteError(f'request: {where} must hold a JSON object, got {type(obj).__name__}')
    return obj


def check_request(request: dict, num_images: int) -> editfile.EditRequest:
    """The parsed request (every field, `preserve` and `preserve_weight` too, checked by the edit-file
    reader as the rewriter will); RewriteError when malformed or when it has no paste region (the advisor
    scores how the paste example changed)."""
    try:
        req = editfile.parse_edit(request, num_images=num_images)
    except editfile.EditFileError as e:
        raise RewriteError(str(e)) from None
    if req.paste is None:
        raise RewriteError("paste: the advisor needs a 'paste' region (an edit or an erase), the request has none")
    return req


def layer_skip_reason(req: editfile.EditRequest, model, layer: int) -> str | None:
    """Why `layer` cannot carry the request (a mask selects nothing at its resolution), or None."""
    try:
        req.check(resolution=rewrite_site(model, layer).mask_resolution)
    except editfile.EditFileError as e:
        return f'{e.field}: {e.reason}'
    return None


# ---------------------------------------------------------------------------------------------------
# the ranking and how sure it is
# ---------------------------------------------------------------------------------------------------


def score_candidates(table: Sequence[Candidate], tolerance: float = ATTAIN_TOLERANCE) -> list[Candidate]:
    """Fills effect and score (see the module docstring; `tolerance`: the attainment tolerance) and returns
    the table best first."""
    usable = [c for c in table if c.ok and math.isfinite(c.reach) and math.isfinite(c.fit)]
    for c in usable:
        c.effect = c.reach * max(c.fit, 0.0)
    if usable:
        if all(math.isfinite(c.attain) for c in usable):
            goal = {id(c): c.attain for c in usable}
            top = max(goal.values())
            near = [c for c in usable if goal[id(c)] >= top - tolerance * abs(top)]
        else:                                   # no held-out targets: the reach x fit rule
            goal = {id(c): c.effect for c in usable}
            top = max(goal.values())
            near = [c for c in usable if top > 0 and goal[id(c)] >= (1 - EFFECT_TOLERANCE) * top]
        worst = max((c.total_leak for c in near if math.isfinite(c.total_leak)), default=0.0)
        for c in usable:
            if c in near:
                c.score = 1.0 + (1.0 - c.total_leak / worst if worst > 0 else 1.0)
            else:
                c.score = max(goal[id(c)], 0.0) / top if top > 0 else 0.0

    def order(c: Candidate):
        return (-c.score if math.isfinite(c.score) else math.inf, c.rank, c.layer)
    return sorted(table, key=order)


def winners(attain: np.ndarray, leak: np.ndarray, tolerance: float = ATTAIN_TOLERANCE) -> np.ndarray:
    """int [B]: per row the index of the winning setting by the ranking rule (of the settings whose attainment
    is within `tolerance` of the row's best, the one that leaks least; ties: the earlier). attain, leak:
    [B, S] (nan: never wins)."""
    a = np.where(np.isfinite(attain), attain, -np.inf)
    top = a.max(1, keepdims=True)
    near = a >= top - tolerance * np.abs(top)
    return np.where(near & np.isfinite(leak), leak, np.inf).argmin(1)


def confidence(table: Sequence[Candidate], tolerance: float = ATTAIN_TOLERANCE, rounds: int = BOOTSTRAP,
               seed: int = 0) -> tuple[bool, str | None, float | None]:
    """(sure, doubt, win share) of a ranked table (best first; see the module docstring): the ranking
    repeated on `rounds` resamples (with replacement, seeded) of the held-out samples, from each setting's
    per-image attainment and leak terms. Unsure, with the reason, when the first setting wins fewer than
    SURE_SHARE of them, when every setting's attainment is within the tolerance of the best, or when the
    best attainment is below MIN_ATTAIN. A table without attainments (or its terms) is judged on the spread
    alone; win share None then."""
    usable = [c for c in table if c.ok and math.isfinite(c.attain)]
    if not usable or not table[0].ok or table[0] not in usable:
        return True, None, None
    attains = np.array([c.attain for c in usable])
    top = float(attains.max())
    reasons = []
    if top < MIN_ATTAIN:
        reasons.append(f'no setting moves the targets far (best attain {top:.3f})')
    elif len(usable) > 1 and attains.min() >= top - tolerance * abs(top):
        reasons.append(f'the attainment barely spreads ({attains.min():.3f}-{top:.3f}, every setting within '
                       f'{round(100 * tolerance)}% of the best): the leak alone decides')
    share = None
    if len(usable) > 1 and all(c.terms.get('attain') is not None and c.terms.get('leak') is not None
                               for c in usable):
        n = len(usable[0].terms['attain'][0])
        idx = np.random.default_rng(seed).integers(0, n, size=(rounds, n))

        def pooled(key):
            num = np.stack([np.asarray(c.terms[key][0], np.float64) for c in usable])     # [S, N]
            den = np.stack([np.asarray(c.terms[key][1], np.float64) for c in usable])
            with np.errstate(invalid='ignore', divide='ignore'):
                return (num[:, idx].sum(-1) / den[:, idx].sum(-1)).T                   # [B, S]
        leak = pooled('leak')
        pres = np.array([c.preserve_leak if c.preserve_leak is not None and math.isfinite(c.preserve_leak)
                         else -np.inf for c in usable])
        wins = np.bincount(winners(pooled('attain'), np.maximum(leak, pres), tolerance), minlength=len(usable))
        share = float(wins[0]) / rounds
        if share < SURE_SHARE:
            rivals = [f'L{usable[k].layer} R{usable[k].rank} {wins[k] / rounds:.0%}'
                      for k in np.argsort(-wins, kind='stable') if wins[k] > 0][:3]
            reasons.append('the top settings are within noise of each other (wins over '
                           f'{rounds} resamples of the held-out samples: {", ".join(rivals)})')
    return not reasons, '; '.join(reasons) or None, share


# ---------------------------------------------------------------------------------------------------
# the sweep
# ---------------------------------------------------------------------------------------------------

def default_layers(model) -> list[int]:
    return list(model.layer_numbers)


def advise(model, zds, request, layers: Sequence[int] | None = None, ranks: Sequence[int] = (1, 2, 3),
           cachedir: str | Path | None = None, heldout: int = HELDOUT_N, heldout_seed: int = HELDOUT_SEED,
           progress: bool = True, callback: ProgressCallback | None = None, batch: int = 16,
           heldout_truncation: float | None = HELDOUT_TRUNCATION, stats_size: int | None = None,
           keep_renders: bool = False, **solver_options) -> Advice:
    """Applies `request` at every (layer, rank) with the fast solver and scores it without labels.

    model: a SeqStyleGAN2 (or any generator with a rewrite site); it is never changed (each layer's
    rewriter edits a copy).
    zds: the z-sample image numbers index. request: an edit dict, JSON text or file path.
    layers: default every layer whose resolution lets the masks select something (others are listed as
    skipped with the reason). callback(done, total, 'layer L rank R') after each setting.
    heldout_truncation: the truncation the held-out samples are drawn at (default 1: the model's whole
    distribution, where the rule must hold too; None: the model's own); the edit itself, the paste image
    and preserve regions use the model's own. stats_size: gather each layer's key statistics over the first
    stats_size z's of zds only (default all; as SeqStyleGanRewriter's). keep_renders: each candidate keeps
    every edited held-out image in previews['renders'] (float16 [heldout, 3, H, W]; `Advice.before_renders`
    holds the unedited ones), for re-scoring the sweep with other measures.
    solver_options go to the fast solver (e.g. preserve=0.3). Returns an Advice, best first.
    """
    t0 = time.perf_counter()
    if isinstance(heldout, bool) or not isinstance(heldout, int) or not 1 <= heldout <= MAX_HELDOUT:
        raise RewriteError(f'heldout: expected a number of samples between 1 and {MAX_HELDOUT} (MAX_HELDOUT), '
                           f'got {heldout!r}')
    zds = float_zs(zds)
    raw = read_request(request)
    req = check_request(raw, len(zds))
    raw = {name: value for name, value in raw.items() if name not in editfile.SETTING_FIELDS}   # the sweep's own
    preserve = list(req.preserve)
    layers = default_layers(model) if layers is None else list(layers)
    ranks = list(ranks)
    if not layers or not ranks:
        raise RewriteError('layers and ranks must each list at least one value')
    for lay in layers:
        if isinstance(lay, bool) or not isinstance(lay, (int, np.integer)):
            raise RewriteError(f'layers: expected layer numbers, got {lay!r}')
        try:
            rewrite_site(model, int(lay))
        except ValueError as e:
            raise RewriteError(f'layers: {e}') from None
    for r in ranks:
        if isinstance(r, bool) or not isinstance(r, (int, np.integer)) or r < 1:
            raise RewriteError(f'ranks: expected positive integers, got {r!r}')
    if stats_size is not None and (isinstance(stats_size, bool) or not isinstance(stats_size, int)
                                   or not 1 <= stats_size <= len(zds)):
        raise RewriteError(f'stats_size: expected 1..{len(zds)} (the z-sample size) or None, got {stats_size!r}')

    probe = Probe.build(model, zds, req, preserve, heldout, heldout_seed, batch, heldout_truncation, keep_renders)
    table, total, done = [], len(layers) * len(ranks), 0
    bar = tqdm(total=total, desc='advise', disable=not progress, leave=False)
    try:
        for layer in layers:
            reason = layer_skip_reason(req, model, layer)
            gw, targets = None, None
            if reason is None:
                try:
                    gw = SeqStyleGanRewriter(model, zds, layer, cachedir=cachedir, progress=False,
                                             stats_size=stats_size, damage_samples=0)
                    targets = target_maps(gw, req, probe.z, probe.before.shape[-1], batch, heldout_truncation)
                except RewriteError as e:
                    reason = str(e)
            for rank in ranks:
                cand = Candidate(layer=layer, rank=rank)
                if reason is not None:
                    cand.skipped = reason
                else:
                    probe.measure(cand, gw, raw, rank, targets, solver_options)
                table.append(cand)
                done += 1
                bar.update(1)
                if callback is not None:
                    callback(done, total, f'layer {layer} rank {rank}')
    finally:
        bar.close()
    ranked = score_candidates(table)
    sure, doubt, share = confidence(ranked)
    return Advice(ranked, heldout, heldout_seed, time.perf_counter() - t0, to_uint8_batch(probe.before[:PREVIEW]),
                  heldout_truncation, sure=sure, doubt=doubt, win_share=share,
                  before_renders=probe.before.half() if keep_renders else None)
