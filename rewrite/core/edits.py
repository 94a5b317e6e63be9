"""Running an edit: parse the request, gather its context and preserve regions, build the goal, run the
registered solver and record what happened (an EditRecord), atomically (rewrite/core/history.py).

Each function takes the rewriter (`gw`, the `Rewriter` protocol below) and goes through its public methods
(object_from_selection, multi_key_from_selection, insert, ...), so a subclass or a test that replaces one
of them changes what every edit does:

    record = edits.apply_edit(gw, json.load(open('dome2spire.json')), rank=1, solver='fast')
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F

from rewrite.core.damage import Damage
from rewrite.core.history import EditRecord
from rewrite.core.preserve import PreserveSet
from rewrite.core.solvers.problem import InsertProblem, projected_conv
from rewrite.formats import editfile, settings
from rewrite.formats import registry as methods
from utils.geometry import centered_location, paste_clip_at_center, positive_bounding_box
from utils.stylegan2 import DataBag

__all__ = ['ADAM_SETTINGS', 'apply_edit', 'apply_erase', 'apply_overfit', 'apply_request', 'check_layer',
           'check_model', 'checked_context', 'context_pairs', 'damage_before', 'file_setting', 'insert',
           'parse', 'preserve_pairs', 'preserve_set', 'record_damage', 'Rewriter', 'run_insert', 'Setting',
           'solver_run', 'solver_settings', 'zero']


class Rewriter(Protocol):
    """What the edit steps use of a rewriter (SeqStyleGanRewriter is one): its public methods only, so a
    subclass or a test that replaces one of them changes what every edit does (the original's subclass hooks).
    Shapes: keys [B, I, h, w] and values [B, O, H, W] in DataBags, context directions [rank, I]."""
    model: torch.nn.Module
    num_images: int
    layernum: int
    key_method: str
    use_linear_insert: bool
    low_rank_insert: bool
    low_rank_gradient: bool
    history: list
    damage_probe: object | None
    k_shape: tuple
    v_shape: tuple
    x_shape: tuple

    # the layer and its weight
    def target(self, key: DataBag) -> torch.Tensor: ...
    def target_with_weight(self, weight: torch.Tensor, key: DataBag) -> torch.Tensor: ...
    def target_layer(self, key: DataBag) -> object: ...
    def target_weights(self) -> torch.nn.Parameter: ...
    def sample_styles(self) -> torch.Tensor: ...
    def model_fingerprint(self, current: bool = False) -> str: ...
    # samples and regions
    def get_z(self, imgnum: int) -> torch.Tensor: ...
    def get_zs(self, imgnums) -> torch.Tensor: ...
    def context_model(self, z: torch.Tensor) -> DataBag: ...
    def sample_image_from_latent(self, z: torch.Tensor) -> torch.Tensor: ...
    def area(self, mask, resolution: int, field: str) -> torch.Tensor: ...
    def keys_and_weights(self, pairs, field: str) -> tuple: ...
    # goals and context
    def object_from_selection(self, imgnum: int, mask) -> tuple: ...
    def paste_from_selection(self, imgnum: int, mask, obj_acts, obj_area) -> tuple: ...
    def erase_from_selection(self, imgnum: int, mask, context_pairs, drank: int) -> tuple: ...
    def multi_key_from_selection(self, pairs, rank: int = 1, **how) -> torch.Tensor: ...
    def preserve_from_selection(self, pairs) -> PreserveSet: ...
    def checked_context(self, context) -> torch.Tensor: ...
    # solving and the history
    def insert(self, key: DataBag, val: torch.Tensor, context: torch.Tensor, **settings) -> list[float]: ...
    def apply_edit(self, request, rank: int | None = None, **settings) -> EditRecord: ...
    def apply_erase(self, request, rank: int | None = None, **settings) -> EditRecord: ...
    def atomic_edit(self, record: EditRecord, names=None): ...
    def keep_the_better(self, record: EditRecord, saved: dict) -> None: ...


def parse(request, num_images: int) -> editfile.EditRequest:
    """The request (a dict in the edit-file format, or a path to one) checked against a z-sample of
    `num_images`; any problem is a settings.RewriteError naming it."""
    try:
        return editfile.parse_edit(request, num_images=num_images)
    except editfile.EditFileError as e:
        raise settings.RewriteError(str(e)) from e
    except (OSError, ValueError) as e:
        reason = getattr(e, 'strerror', None) or e
        raise settings.RewriteError(f'request: cannot read the edit file {str(request)[:80]!r} ({reason})') from e

ADAM_SETTINGS = ('niter', 'piter', 'lr')       # passed as arguments; a file's other solver options are keywords


@dataclass
class Setting:
    """What an edit runs with: the caller's explicit values, else the edit file's own fields (`layer`, `rank`,
    `solver`, `solver_options`), else the defaults (rank 1, DEFAULT_SOLVER, the solver's options)."""
    rank: int
    solver: str
    niter: int
    piter: int
    lr: float
    solver_options: dict = field(default_factory=dict)


def file_setting(gw: Rewriter, req: editfile.EditRequest, rank: int | None, solver: str | None,
                 niter: int | None, piter: int | None, lr: float | None, solver_options: dict,
                 allow_other_layer: bool) -> Setting:
    """The setting of an edit of `req` (see Setting). A file that records another layer than the rewriter's is
    refused (settings.RewriteError naming both) unless allow_other_layer, which applies it and warns; a file made on
    other weights (`model.fingerprint`) warns: its image numbers mean other images there."""
    check_layer(gw, req, allow_other_layer)
    check_model(gw, req)
    solver = solver if solver is not None else req.solver if req.solver is not None else methods.DEFAULT_SOLVER
    settings.check_choice(solver, methods.SOLVERS, 'solver')
    recorded = dict(req.solver_options or {}) if solver == req.solver else {}
    adam = {name: recorded.pop(name) for name in ADAM_SETTINGS if name in recorded}
    adam_defaults = asdict(settings.IterativeOptions())                    # niter 2001, piter 10, lr 0.05
    given = {'niter': niter, 'piter': piter, 'lr': lr}
    values = {name: given[name] if given[name] is not None else adam.get(name, adam_defaults[name])
              for name in ADAM_SETTINGS}
    rank = rank if rank is not None else req.rank if req.rank is not None else 1
    return Setting(rank, solver, **values, solver_options={**recorded, **solver_options})


def check_layer(gw: Rewriter, req: editfile.EditRequest, allow_other_layer: bool) -> None:
    """Refuses (or, allow_other_layer, warns about) a file recording another layer than the rewriter's."""
    if req.layer is None or req.layer == gw.layernum:
        return
    if not allow_other_layer:
        raise settings.RewriteError(f'the edit was made for layer {req.layer}, and this rewriter rewrites layer '
                           f'{gw.layernum}: build a rewriter for layer {req.layer} (the same model, layernum='
                           f'{req.layer}), or pass allow_other_layer=True to apply it at layer {gw.layernum} anyway')
    warnings.warn(f'applying an edit made for layer {req.layer} at layer {gw.layernum} (allow_other_layer=True): '
                  'its regions and rank were chosen for the other layer', RuntimeWarning, stacklevel=5)


def check_model(gw: Rewriter, req: editfile.EditRequest) -> None:
    """Warns when the file records a model fingerprint that is neither the rewriter's original weights nor
    its current ones."""
    if req.model is None:
        return
    recorded = req.model['fingerprint']
    if recorded == gw.model_fingerprint() or (gw.history and recorded == gw.model_fingerprint(current=True)):
        return
    name = f' ({req.model["name"]})' if 'name' in req.model else ''
    warnings.warn(f'the edit was made on another model{name}: its weights fingerprint {recorded[:12]}... is not '
                  f"this model's {gw.model_fingerprint()[:12]}... (a different checkpoint: image numbers mean "
                  'other images there)', RuntimeWarning, stacklevel=5)


def context_pairs(req: editfile.EditRequest, single_key: int = -1) -> list:
    """The request's context regions [(imgnum, mask)] (only number `single_key` when >= 0)."""
    pairs = [(s.imgnum, s.mask_url) for s in req.context]
    if not pairs:
        raise settings.RewriteError('the request has no context: give key regions or a paste region')
    if single_key >= 0:
        if single_key >= len(pairs):
            raise settings.RewriteError(f'single_key {single_key} is out of range: {len(pairs)} context regions')
        pairs = [pairs[single_key]]
    return pairs


def preserve_pairs(req: editfile.EditRequest, preserve_weight: float) -> list:
    """The request's preserve regions [(imgnum, mask)] (none when preserve_weight is 0)."""
    if not settings.real_number(preserve_weight, 0.0, strict=False) or preserve_weight > settings.MAX_PRESERVE_WEIGHT:
        raise settings.RewriteError('preserve_weight must be a finite number between 0 and '
                                    f'{settings.MAX_PRESERVE_WEIGHT:g} (MAX_PRESERVE_WEIGHT), not {preserve_weight!r}')
    return [(s.imgnum, s.mask_url) for s in req.preserve] if preserve_weight > 0 else []


def checked_context(context, weight: torch.Tensor) -> torch.Tensor:
    """Context directions [rank, I] (I: the key width of the weight [1, O, I, k, k]), finite, on the
    weight's device and dtype."""
    width = weight.shape[2]
    if not torch.is_tensor(context) or context.dim() != 2 or not 1 <= context.shape[0] <= width \
            or context.shape[1] != width:
        shape = tuple(context.shape) if torch.is_tensor(context) else type(context).__name__
        raise settings.RewriteError(f'context must be a tensor [rank, {width}] with 1 <= rank <= {width} '
                           f'(this layer has {width} input channels), not {shape}')
    if not context.is_floating_point() or not torch.isfinite(context).all():
        raise settings.RewriteError('context must hold finite floating-point numbers (it has NaN, inf or is not float)')
    return context.to(weight)


def solver_run(gw: Rewriter, solver: str) -> methods.Solver:
    """The registry's solver that runs `solver` ('original' runs as 'linear' with use_linear_insert)."""
    return methods.SOLVERS['linear' if solver == 'original' and gw.use_linear_insert else solver]


def solver_settings(gw: Rewriter, niter: int, piter: int, lr: float, solver_options: dict) -> dict:
    """Every setting a solver may take: the Adam ones, the rewriter's projection flags, the solver's own."""
    return {'niter': niter, 'piter': piter, 'lr': lr, 'low_rank_insert': gw.low_rank_insert,
            'low_rank_gradient': gw.low_rank_gradient, **solver_options}


def insert(gw: Rewriter, key: DataBag, val: torch.Tensor, context: torch.Tensor, niter: int,
           piter: int, lr: float, update_callback: Callable | None, solver: str,
           preserve_set: PreserveSet | None, preserve_weight: float, solver_options: dict) -> list[float]:
    """Changes the layer weight (in place) so target(key) ~ val [1, O, h, w], within span(context rows
    [rank, I]); returns the solver's losses. See SeqStyleGanRewriter.insert."""
    settings.check_choice(solver, methods.SOLVERS, 'solver')
    settings.check_options(niter=niter, piter=piter, lr=lr)
    if methods.SOLVERS[solver].check is not None:
        methods.SOLVERS[solver].check(solver_options)
    context = gw.checked_context(context)
    run = solver_run(gw, solver)
    if preserve_set is not None and not run.preserve_regions:
        raise settings.RewriteError(f"preserve regions need the 'fast' or the 'original' solver, not {run.name!r}")
    styles = solver_options.pop('styles', None)
    problem = InsertProblem(gw.target, gw.target_with_weight, gw.target_layer,
                            gw.sample_styles if styles is None else lambda: styles, gw.target_weights(),
                            key, val, context, preserve_set, preserve_weight)
    return run.run(problem, run.configure(**solver_settings(gw, niter, piter, lr, solver_options)), update_callback)


def preserve_set(gw: Rewriter, pairs) -> PreserveSet:
    """The preserve regions [(imgnum, mask)] at the target layer: the full images' key bag (batch [M]),
    the layer's outputs [M, O, H, W] and the masks [M, H, W] at the value resolution."""
    weight = torch.stack([gw.area(m, gw.v_shape[2], f'preserve[{j}]') for j, (_, m) in enumerate(pairs)])
    with torch.no_grad():
        key = gw.context_model(gw.get_zs([i for i, _ in pairs]))
        return PreserveSet(key, gw.target(key), weight)


def apply_edit(gw: Rewriter, request, rank: int | None, niter: int | None, piter: int | None,
               lr: float | None, update_callback: Callable | None, single_key: int, solver: str | None,
               preserve_weight: float | None, solver_options: dict, allow_other_layer: bool = False) -> EditRecord:
    """Copy the request's `object`, paste it at `paste`, with its `key` regions (or the paste) as context.
    See SeqStyleGanRewriter.apply_edit."""
    req = parse(request, gw.num_images)
    if req.object is None or req.paste is None:
        raise settings.RewriteError("an edit needs both 'object' (what to copy) and 'paste' (where to paste it); "
                           "for an erase ('paste' without 'object') or a context-only request use "
                           "apply_request, which dispatches on what the request holds")
    s = file_setting(gw, req, rank, solver, niter, piter, lr, solver_options, allow_other_layer)
    rank, solver, niter, piter, lr, solver_options = s.rank, s.solver, s.niter, s.piter, s.lr, s.solver_options
    settings.check_options(niter=niter, piter=piter, lr=lr)
    preserve_weight = settings.preserve_weight_for(preserve_weight, req.preserve_weight)
    keep = preserve_pairs(req, preserve_weight)
    obj_acts, obj_area, _, _ = gw.object_from_selection(req.object.imgnum, req.object.mask_url)
    goal_in, goal_out, _, _ = gw.paste_from_selection(req.paste.imgnum, req.paste.mask_url, obj_acts, obj_area)
    context = gw.multi_key_from_selection(context_pairs(req, single_key), rank=rank,
                                          preserve_pairs=keep, preserve_weight=preserve_weight)
    return run_insert(gw, 'edit', req, goal_in, goal_out, context, rank, niter, piter, lr,
                      update_callback, solver, solver_options, keep, preserve_weight)


def apply_erase(gw: Rewriter, request, rank: int | None, drank: int, niter: int | None,
                piter: int | None, lr: float | None, update_callback: Callable | None, solver: str | None,
                preserve_weight: float | None, solver_options: dict, allow_other_layer: bool = False) -> EditRecord:
    """Remove what the `key` context regions show from the `paste` region (its top `drank` units zeroed).
    See SeqStyleGanRewriter.apply_erase."""
    req = parse(request, gw.num_images)
    if req.paste is None:
        raise settings.RewriteError("an erase needs a 'paste' region (what to erase)")
    s = file_setting(gw, req, rank, solver, niter, piter, lr, solver_options, allow_other_layer)
    rank, solver, niter, piter, lr, solver_options = s.rank, s.solver, s.niter, s.piter, s.lr, s.solver_options
    pairs = context_pairs(req)
    if not 1 <= drank <= gw.k_shape[1]:
        raise settings.RewriteError(f'drank must be between 1 and {gw.k_shape[1]}, not {drank}')
    preserve_weight = settings.preserve_weight_for(preserve_weight, req.preserve_weight)
    keep = preserve_pairs(req, preserve_weight)
    goal_in, goal_out = gw.erase_from_selection(req.paste.imgnum, req.paste.mask_url, pairs, drank)
    context = gw.multi_key_from_selection(pairs, rank=rank, preserve_pairs=keep, preserve_weight=preserve_weight)
    return run_insert(gw, 'erase', req, goal_in, goal_out, context, rank, niter, piter, lr,
                      update_callback, solver, solver_options, keep, preserve_weight)


def apply_request(gw: Rewriter, request, rank: int | None, options: dict) -> EditRecord:
    """Whatever a saved request describes: an edit, an erase, or (context only) the context zeroed."""
    req = parse(request, gw.num_images)
    if req.object is not None and req.paste is not None:
        return gw.apply_edit(req.to_json(), rank=rank, **options)
    if req.paste is not None:
        return gw.apply_erase(req.to_json(), rank=rank, **options)
    check_layer(gw, req, bool(options.get('allow_other_layer', False)))
    check_model(gw, req)
    rank = rank if rank is not None else req.rank if req.rank is not None else 1
    pairs = context_pairs(req)
    context = gw.multi_key_from_selection(pairs, rank=rank)
    before = damage_before(gw, req)
    checked = gw.checked_context(context)
    record = zero(gw, context, 0.0, measure=lambda made: record_damage(gw, made, req, pairs, checked, before))
    record.request = req.to_json()
    return record


def run_insert(gw: Rewriter, kind: str, req: editfile.EditRequest, goal_in: DataBag,
               goal_out: torch.Tensor, context: torch.Tensor, rank: int, niter: int, piter: int, lr: float,
               update_callback: Callable | None, solver: str, solver_options: dict, keep_pairs=(),
               preserve_weight: float = 0.0) -> EditRecord:
    """Runs gw.insert towards the goal (keys goal_in, values goal_out [1, O, h, w]) within the context
    [rank, I], atomically, and records the losses, the options (registry defaults filled in), the
    preserve regions' change and the context."""
    options = solver_run(gw, solver).recorded(**solver_settings(gw, niter, piter, lr, solver_options))
    record = EditRecord(kind=kind, solver=solver, rank=rank, layer=gw.layernum, request=req.to_json(),
                        key_method=gw.key_method, options=options)
    keep = gw.preserve_from_selection(keep_pairs) if keep_pairs else None
    if keep is not None:
        record.preserve_weight = float(preserve_weight)
    with torch.no_grad():
        record.initial_loss = F.l1_loss(gw.target(goal_in), goal_out).item()
    before = damage_before(gw, req)
    with gw.atomic_edit(record) as saved:
        record.losses = gw.insert(goal_in, goal_out, context, niter=niter, piter=piter, lr=lr,
                                  update_callback=update_callback, solver=solver, preserve_set=keep,
                                  preserve_weight=preserve_weight, **solver_options)
        if keep is not None:
            with torch.no_grad():
                record.preserve_change = keep.change(gw.target(keep.key)).item()
        with torch.no_grad():
            record.final_loss = F.l1_loss(gw.target(goal_in), goal_out).item()
        if not np.isfinite(record.final_loss):
            raise FloatingPointError('the edit produced non-finite outputs (the weights were restored)')
        gw.keep_the_better(record, saved)
        # inside the atomic section: an interrupt while measuring undoes the edit too (nothing half-reported)
        record_damage(gw, record, req, context_pairs(req), context, before)
    record.context = context.detach().cpu()
    return record


def damage_before(gw: Rewriter, req: editfile.EditRequest) -> tuple | None:
    """The damage probe's (keys, images) before a change (None when the rewriter measures no damage)."""
    if gw.damage_probe is None:
        return None
    return gw.damage_probe.before(req.paste.imgnum if req.paste is not None else None)


def record_damage(gw: Rewriter, record: EditRecord, req: editfile.EditRequest, pairs, context: torch.Tensor,
                  before: tuple | None) -> Damage | None:
    """Measures the change just made (rewrite/core/damage.py) on held-out samples outside where the rule of
    `context` [rank, I] acts, and inside the request's paste region; keeps it in the record and warns (a
    RuntimeWarning) when it exceeds the threshold. Nothing is measured for a rolled-back change."""
    probe = gw.damage_probe
    if probe is None or before is None or record.rolled_back:
        return None
    keys, images = before
    paste_imgnum = req.paste.imgnum if req.paste is not None else None
    after = probe.after(keys, paste_imgnum)
    context_keys, weights = gw.keys_and_weights(pairs)
    size = int(after.shape[-1])
    acting = probe.acting(keys, context, context_keys, weights, size)
    paste = gw.area(req.paste.mask_url, size, 'paste') if req.paste is not None else None
    damage = probe.measure(images, after, acting, paste)
    record.heldout_change, record.paste_change = damage.heldout, damage.paste
    record.damage_threshold = damage.threshold
    record.damage_warning = damage.warning(record.kind)
    if record.damage_warning:
        warnings.warn(record.damage_warning, RuntimeWarning, stacklevel=5)
    return damage


def zero(gw: Rewriter, context: torch.Tensor, amount: float,
         measure: Callable[[EditRecord], object] | None = None) -> EditRecord:
    """Sets the weight's component along the context rows [rank, I] to `amount` (0: forget them);
    `measure(record)` runs on the changed weights inside the same atomic section (an interrupt undoes both)."""
    context = gw.checked_context(context)
    if not settings.real_number(amount, -np.inf, True):
        raise settings.RewriteError(f'amount must be a finite number, not {amount!r}')
    record = EditRecord(kind='zero', solver='closed-form', rank=context.shape[0], layer=gw.layernum)
    with gw.atomic_edit(record), torch.no_grad():
        weight = gw.target_weights()
        ortho = weight - projected_conv(weight, context)
        weight[...] = ortho + amount * projected_conv(torch.ones_like(weight), context)
        if measure is not None:
            measure(record)
    return record


def apply_overfit(gw: Rewriter, request, niter: int, lr: float,
                  update_callback: Callable | None) -> EditRecord:
    """Baseline: fine-tune every weight of the generator so the paste image shows the pasted pixels."""
    req = parse(request, gw.num_images)
    if req.object is None or req.paste is None:
        raise settings.RewriteError("overfitting needs both 'object' and 'paste'")
    res = gw.x_shape[2]
    obj_area = gw.area(req.object.mask_url, res, 'object')
    with torch.no_grad():
        obj_img = gw.sample_image_from_latent(gw.get_z(req.object.imgnum))
        t, l, b, r = positive_bounding_box(obj_area)
        z = gw.get_z(req.paste.imgnum)
        goal, (t2, l2, b2, r2) = paste_clip_at_center(
            gw.sample_image_from_latent(z), obj_img[:, :, t:b, l:r],
            centered_location(gw.area(req.paste.mask_url, res, 'paste')), obj_area[t:b, l:r])
    params = dict(gw.model.named_parameters())
    record = EditRecord(kind='overfit', solver='adam-all-weights', rank=-1, request=req.to_json(),
                        layer=gw.layernum)
    with gw.atomic_edit(record, names=list(params)):
        gw.model.requires_grad_(True)
        try:
            optimizer = torch.optim.Adam(params.values(), lr=lr)
            for it in range(niter):
                out = gw.model(z)
                loss = F.l1_loss(out[:, :, t2:b2, l2:r2], goal[:, :, t2:b2, l2:r2])
                if not torch.isfinite(loss):
                    raise FloatingPointError(f'overfitting loss became {loss.item()} at iteration {it}')
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                record.losses.append(loss.item())
                if update_callback is not None:
                    update_callback(it, loss.item())
        finally:
            gw.model.requires_grad_(False)
            for p in params.values():
                p.grad = None
        record.final_loss = record.losses[-1] if record.losses else float('nan')
    return record
