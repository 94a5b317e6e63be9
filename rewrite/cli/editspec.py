"""An edit as the command line makes it: --edit / --layer / --rank / solver flags checked into an EditSpec, the
rewriter built for it (statistics gathered once across torchrun processes) and the edit run."""

from __future__ import annotations

import hashlib
import json
import re
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from rewrite.cli import common
from rewrite.core.rewriter import DEFAULT_SOLVER, RewriteError, SeqStyleGanRewriter
from rewrite.core.statistics import KeyStatistics, cache_filename, cache_problem, gather_key_statistics
from rewrite.formats.editfile import EditFileError, load_edit
from rewrite.formats.registry import SOLVERS
from rewrite.formats.savededits import SavedEditError, saved_edit_path
from rewrite.formats.settings import MAX_PRESERVE_WEIGHT, PRESERVE_WEIGHT, preserve_weight_for
from utils.distributed import World, all_agree, barrier, broadcast_module
from utils.stylegan2 import SeqStyleGAN2, rewrite_site
from utils.zdataset import z_dataset_for_model

__all__ = ['cached_statistics', 'check_stats_n', 'damage_text', 'edit_spec_from_args', 'edit_summary',
           'edited_model_on_every_rank', 'EditSpec', 'gather_statistics', 'load_edit_request',
           'make_rewriter', 'read_setting', 'resolve_edit_path', 'run_edit', 'spec_rewriter',
           'statistics_inputs']


def load_edit_request(path: Path, model: SeqStyleGAN2, layer: int, zsample: int) -> dict:
    """The edit file as a validated JSON dict (image numbers within the z-sample, masks non-empty at the layer)."""
    try:
        request = load_edit(path, num_images=zsample, layer_resolution=rewrite_site(model, layer).mask_resolution)
    except OSError as e:
        raise common.CliError(f'cannot read --edit {path}: {e.strerror or e}') from None
    except EditFileError as e:
        needed = re.search(r'a z-sample of at least (\d+) images', str(e))
        fix = (f'; pass --zsample {needed[1]} (image numbers index the z-sample; --stats-n N still gathers '
               'the key statistics over its first N images only)') if needed else ''
        raise common.CliError(f'bad --edit {path}: {common.one_line(e)}{fix}') from None
    return request.to_json()


@dataclass
class EditSpec:
    """A validated edit to make: request (JSON dict), layer and solver settings."""
    request: dict
    layer: int
    rank: int
    solver: str
    niter: int
    zsample: int
    cachedir: Path
    progress: bool
    stats_n: int | None = None
    preserve_weight: float = PRESERVE_WEIGHT
    other_layer: bool = False           # --layer differs from the layer the edit file records: applied anyway

    def describe(self) -> dict:
        """What defines the edit's result (the request by its hash)."""
        text = json.dumps(self.request, sort_keys=True).encode()
        described = {'request_sha256': hashlib.sha256(text).hexdigest(), 'layer': self.layer, 'rank': self.rank,
                     'solver': self.solver, 'niter': self.niter, 'zsample': self.zsample}
        described |= {'preserve_weight': self.preserve_weight} if 'preserve' in self.request else {}
        return described | ({'stats_n': self.stats_n} if self.stats_n is not None else {})


def check_stats_n(args) -> None:
    """--stats-n (statistics over the first N images of the z-sample) fits in --zsample."""
    if args.stats_n is not None and args.stats_n > args.zsample:
        raise common.CliError(f'--stats-n {args.stats_n} exceeds --zsample {args.zsample}: the key statistics are '
                       f'gathered over the first --stats-n images of the z-sample; pass --stats-n <= {args.zsample}')


def resolve_edit_path(path: Path) -> Path:
    """--edit as given, or, when no such file exists, demo/NAME[.json] resolved to the bundled edit of that name
    (the name the widget's Load takes)."""
    if path.exists() or path.parts[:1] != ('demo',):
        return path
    try:
        bundled = saved_edit_path(common.DEMO_EDIT_DIR.parent, path.as_posix())
    except SavedEditError as e:
        raise common.CliError(f'--edit {path}: {e}') from None
    if not bundled.is_file():
        known = ', '.join(f'demo/{p.stem}' for p in sorted(common.DEMO_EDIT_DIR.glob('*.json'))) or 'none'
        raise common.CliError(f'--edit {path}: no such file, and no bundled edit of that name (bundled: {known})')
    return bundled


def read_setting(path: Path) -> dict:
    """The fields of the edit file that record how it was made (layer, rank, solver, solver_options, model)."""
    try:
        return load_edit(path).setting()
    except OSError as e:
        raise common.CliError(f'cannot read --edit {path}: {e.strerror or e}') from None
    except EditFileError as e:
        raise common.CliError(f'bad --edit {path}: {common.one_line(e)}') from None


def edit_spec_from_args(args, model: SeqStyleGAN2) -> EditSpec | None:
    """The validated edit of --edit/--layer (None without --edit). --layer, --rank, --solver and --niter
    default to what the edit file records; a --layer other than the file's applies it there and says so."""
    if args.edit is None:
        if args.layer is not None:
            raise common.CliError('--layer is given without --edit')
        return None
    args.edit = resolve_edit_path(args.edit)
    recorded = read_setting(args.edit)
    layer = args.layer if args.layer is not None else recorded.get('layer')
    if layer is None:
        raise common.CliError(f'--edit {args.edit} records no layer: pass --layer N')
    other_layer = 'layer' in recorded and layer != recorded['layer']
    common.check_layer(model, layer)
    request = load_edit_request(args.edit, model, layer, args.zsample)
    rank = args.rank if args.rank is not None else recorded.get('rank', 1)
    channels = rewrite_site(model, layer).in_channels
    if rank > channels:
        raise common.CliError(f'--rank {rank} exceeds the {channels} input channels of layer {layer}')
    check_stats_n(args)
    solver = args.solver if args.solver is not None else recorded.get('solver', DEFAULT_SOLVER)
    options = recorded.get('solver_options', {}) if solver == recorded.get('solver') else {}
    niter = args.niter if args.niter is not None else options.get('niter', 2001)
    weight = preserve_weight_for(args.preserve_weight, request.get('preserve_weight'))
    if weight > MAX_PRESERVE_WEIGHT:
        raise common.CliError(f'--preserve-weight {weight:g} is above {MAX_PRESERVE_WEIGHT:g} (MAX_PRESERVE_WEIGHT: '
                       'a weight of 1 already removes a rank-1 edit)')
    if other_layer:
        print(f'rewrite: warning: --layer {layer} overrides the layer {recorded["layer"]} that {args.edit} records: '
              f'the edit is applied at layer {layer} anyway (its regions and rank were chosen for layer '
              f'{recorded["layer"]}; leave --layer out to use that one)', file=sys.stderr)
    return EditSpec(request, layer, rank, solver, niter, args.zsample, common.cachedir_from(args),
                    not args.quiet, args.stats_n, weight, other_layer)


def make_rewriter(model: SeqStyleGAN2, layer: int, zsample: int, cachedir: Path, progress: bool,
                  batch_size: int = 8, stats_n: int | None = None) -> SeqStyleGanRewriter:
    zds = z_dataset_for_model(model, size=zsample, seed=1)
    return SeqStyleGanRewriter(model, zds, layer, cachedir=cachedir, progress=progress, batch_size=batch_size,
                               stats_size=stats_n)


def spec_rewriter(model: SeqStyleGAN2, spec: EditSpec, progress: bool = True) -> SeqStyleGanRewriter:
    """The rewriter the edit `spec` runs in (its .model is a copy of `model`)."""
    return make_rewriter(model, spec.layer, spec.zsample, spec.cachedir, spec.progress and progress,
                         stats_n=spec.stats_n)


def run_edit(gw: SeqStyleGanRewriter, spec: EditSpec):
    """Applies the edit file's request to gw.model (copy and paste, erase, or context only: apply_request)
    with a progress bar of the solver's steps; warns on stderr when the loss ended above where it started.
    Returns the EditRecord."""
    _ = gw.stats                                # key statistics first: they have their own progress bar
    steps = SOLVERS[spec.solver].steps(spec.niter)
    with tqdm(total=steps, desc=f'solving ({spec.solver})', disable=not spec.progress, leave=False) as bar:
        def progress(_step: int, loss: float) -> None:
            bar.set_postfix_str(f'loss {loss:.4g}', refresh=False)
            bar.update(1)
        try:
            with warnings.catch_warnings():       # a rise is reported below, once; so is another layer
                warnings.filterwarnings('ignore', message='the goal loss rose', category=RuntimeWarning)
                warnings.filterwarnings('ignore', message='applying an edit made for layer', category=RuntimeWarning)
                record = gw.apply_request(spec.request, rank=spec.rank, niter=spec.niter, solver=spec.solver,
                                          update_callback=progress, preserve_weight=spec.preserve_weight,
                                          allow_other_layer=spec.other_layer)
        except (RewriteError, FloatingPointError) as e:
            raise common.CliError(f'the edit cannot be applied: {common.one_line(e)}') from None
    if record.rolled_back:                      # far worse than no change: refused, nothing is written
        raise common.CliError(f'the edit cannot be applied: {record.warning} (--solver, --niter, --layer, --rank)')
    if record.final_loss > record.initial_loss:
        print(f'rewrite: warning: the {record.kind} ended worse than it started (loss {record.initial_loss:.4g} -> '
              f'{record.final_loss:.4g}, solver {record.solver}); the result is kept: try another --solver, '
              '--layer or --rank', file=sys.stderr)
    return record


def edit_summary(record) -> str:
    if record.kind == 'zero':
        damage = '' if record.heldout_change is None else f'; {damage_text(record)}'
        return f'context rule removed: layer {record.layer}, rank {record.rank} in {record.seconds:.1f}s{damage}'
    kept = ('' if record.preserve_change is None else
            f'; preserve regions changed {record.preserve_change:.4g} (weight {record.preserve_weight:g})')
    damage = '' if record.heldout_change is None else f'; {damage_text(record)}'
    return (f'{record.kind} applied: layer {record.layer}, solver {record.solver}, rank {record.rank}, loss '
            f'{record.initial_loss:.4g} -> {record.final_loss:.4g} in {record.seconds:.1f}s{kept}{damage}')


def damage_text(record) -> str:
    """'held-out change 0.012 (inside the paste region 0.21), below the damage threshold 0.05' or 'above ...'."""
    inside = '' if record.paste_change is None else f' (inside the paste region {record.paste_change:.3f})'
    side = 'above' if record.damage_warning else 'below'
    return (f'held-out change {record.heldout_change:.3f}{inside}, {side} the damage threshold '
            f'{record.damage_threshold:g}')


def edited_model_on_every_rank(model: SeqStyleGAN2, spec: EditSpec, world: World) -> SeqStyleGAN2:
    """Every rank gathers its share of the key statistics into the cache; rank 0 applies the edit and the
    other ranks receive its weights, so every rank samples the same model."""
    gw = spec_rewriter(model, spec, progress=world.is_main)
    if world.is_distributed:
        cached_statistics(gw, spec.cachedir, world)
    if world.is_main:
        print(edit_summary(run_edit(gw, spec)), file=sys.stderr)
    broadcast_module(gw.model, world)
    return gw.model.eval()


def cached_statistics(gw: SeqStyleGanRewriter, cachedir: Path, world: World) -> tuple[Path, KeyStatistics | None]:
    """Makes sure the rewriter's key statistics are in `cachedir`, gathered across every rank when they are
    not: (the cache file, the statistics gathered now, or None when they were cached already)."""
    zs, meta = statistics_inputs(gw)
    path = cachedir / cache_filename(meta)
    problem = cache_problem(path)
    if problem is not None:                     # before the pass, not after it
        raise common.CliError(f'--cachedir: {problem}')
    if all_agree(KeyStatistics.load(path, meta) is not None, world):
        return path, None
    stats = gather_statistics(gw, zs, world)
    if world.is_main:
        stats.save(path, meta)
    barrier(world)
    return path, stats


def statistics_inputs(gw: SeqStyleGanRewriter) -> tuple[torch.Tensor, dict]:
    """(the z's [N, D] the rewriter gathers statistics over, its cache key)."""
    return gw.statistics_zs(), gw.cache_meta()


def gather_statistics(gw: SeqStyleGanRewriter, zs: torch.Tensor, world: World) -> KeyStatistics:
    """KeyStatistics of the rewriter's layer over zs [N, D], the batches split across ranks
    (`rewrite.core.statistics.gather_key_statistics` with `world`: the same C on every rank, quantiles on rank 0)."""
    moment, quantiles = gather_key_statistics(lambda z: gw.context_model(z.to(gw.device)).fmap, zs, gw.batch_size,
                                              progress=gw.progress, world=world)
    return KeyStatistics(moment, quantiles)
