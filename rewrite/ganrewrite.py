"""SeqStyleGanRewriter: rewriting one convolution layer of a generator as an associative memory.

The layer's plain conv (the generator's rewrite site, utils/stylegan2/site.py) maps keys k (its input features,
one vector per pixel) to values v (the features after demodulation, noise and activation). A user's
selections give (a) goal pairs: the keys of a region should now produce pasted values, and (b) a
context: a low-rank subspace D of key space, chosen with the keys' second moment C, in which
the weight may change (W' = W + Lambda D), so that other rules are disturbed as little as possible.

    gw = SeqStyleGanRewriter(model, z_dataset_for_model(model, 1000), layernum=8)
    record = gw.apply_edit(json.load(open('dome2spire.json')), rank=1, solver='fast')
    image = gw.render_image(5)

The rewriter is a facade over one module per part: pieces.py (the generator cut at the rewrite site, the
z-sample, masks), contextkeys.py (key statistics, keys of regions, context directions by key method),
goals.py (copy / paste / erase goals), history.py (atomic edits, rollback, undo / redo / revert) and
render.py (response maps, search, pictures); the solvers and key methods are registered in methods.py.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from utils.stylegan2 import DataBag, rewrite_site

from . import editfile, keymethods, methods
from .checks import RewriteError, check_choice, check_fast_options, check_options, real_number
from .contextkeys import ContextKeys
from .geometry import centered_location, paste_clip_at_center, positive_bounding_box
from .goals import Goals
from .history import LOSS_TOLERANCE, EditHistory
from .pieces import EDIT_DTYPES, LayerPieces
from .preserve import PRESERVE_WEIGHT, PreserveSet
from .render import Renderer, key_response
from .solvers import EditRecord, InsertProblem, TargetLayer, projected_conv
from .statistics import KeyStatistics

__all__ = ['DEFAULT_SOLVER', 'EDIT_DTYPES', 'ERASE_UNITS', 'KEY_METHODS', 'LOSS_TOLERANCE', 'SOLVERS',
           'RewriteError', 'SeqStyleGanRewriter', 'check_fast_options', 'check_options']

KEY_METHODS = tuple(methods.KEY_METHODS)      # the registries' names (rewrite/methods.py)
SOLVERS = tuple(methods.SOLVERS)
DEFAULT_SOLVER = methods.DEFAULT_SOLVER  # the one default of apply_edit/apply_erase, the CLI and the widget
ERASE_UNITS = 30        # apply_erase's default drank, the original's (its layers had 512 units)


class SeqStyleGanRewriter:
    """Rewrites layer `layernum` of a copy of `model` (a generator with `rewrite_site(layernum)`, e.g. a
    SeqStyleGAN2; the site says where to cut it and which conv to edit).

    zds: the z-sample (TensorDataset, e.g. z_dataset_for_model(model, 1000)); image numbers in
    requests index it. Statistics of the layer's keys over zds (or its first `stats_size` z's, for
    a quick preview) are gathered on first use and cached in `cachedir` (if given).
    """

    def __init__(self, model, zds, layernum: int, cachedir: str | Path | None = None,
                 low_rank_insert: bool = True, low_rank_gradient: bool = False,
                 use_linear_insert: bool = False, tight_paste: bool = True, alpha_area: bool = True,
                 key_method: str = 'zca', batch_size: int = 8, progress: bool = True,
                 stats_size: int | None = None):
        try:
            rewrite_site(model, layernum)                 # a clear error before anything is copied
        except ValueError as e:
            raise RewriteError(str(e)) from None
        check_choice(key_method, methods.KEY_METHODS, 'key_method')
        self.layernum = layernum
        self.cachedir = None if cachedir is None else Path(cachedir)
        self.low_rank_insert, self.low_rank_gradient = low_rank_insert, low_rank_gradient
        self.use_linear_insert = use_linear_insert
        self.key_method, self.batch_size, self.progress = key_method, batch_size, progress
        self.zds = zds
        if stats_size is not None and not 0 < stats_size <= len(zds):
            raise RewriteError(f'stats_size must be between 1 and {len(zds)}, not {stats_size}')
        self.stats_size = stats_size or len(zds)
        self.model = copy.deepcopy(model).eval()
        self.model.requires_grad_(False)
        if getattr(self.model, 'noise_mode', 'const') == 'random':
            self.model.noise_mode = 'const'           # goals and statistics must be reproducible
        self.pieces = p = LayerPieces(self.model, zds, layernum, batch_size)
        self.device, self.site, self.conv, self.weight_name = p.device, p.site, p.conv, p.weight_name
        self.firstlayer, self.lastlayer = p.firstlayer, p.lastlayer
        self.context_model, self.target_model, self.rendering_model = p.context_model, p.target_model, p.rendering_model
        self.k_shape, self.v_shape, self.x_shape = p.k_shape, p.v_shape, p.x_shape
        self.keys = ContextKeys(p, self.stats_size, self.cachedir, progress)
        self.goals = Goals(p, tight_paste, alpha_area)
        self.renderer = Renderer(p, progress)
        self.edits = EditHistory(self.model, self.firstlayer + '.weight', self.renderer.clear)
        self.original_state = self.edits.original_state
        self.history, self.undone = self.edits.history, self.edits.undone   # [(record, weights)], for undo / redo

    # ---- the z-sample and the pieces ----------------------------------------------------------
    @property
    def num_images(self) -> int:
        return self.pieces.num_images

    def get_z(self, imgnum: int) -> torch.Tensor:
        """z [1, D] of image `imgnum`."""
        return self.pieces.get_z(imgnum)

    def get_zs(self, imgnums: Sequence[int]) -> torch.Tensor:
        return self.pieces.get_zs(imgnums)

    def sample_image_from_latent(self, z: torch.Tensor) -> torch.Tensor:
        """Images [B, 3, H, W] of the (edited) model for z [B, D]."""
        return self.pieces.image(z)

    def target_weights(self) -> torch.nn.Parameter:
        """The rewritten weight [1, O, I, k, k] (shared with self.model)."""
        return self.conv.weight

    def area(self, mask, resolution: int, field: str = 'mask') -> torch.Tensor:
        """A mask (data URL, or array [H, W] in [0, 1]) at `resolution`, as the original decoded it."""
        return self.pieces.area(mask, resolution, field)

    # ---- key statistics and context keys (rewrite/contextkeys.py) ------------------------------
    @property
    def stats(self) -> KeyStatistics:
        return self.keys.stats

    @property
    def c_matrix(self) -> torch.Tensor:
        """The keys' uncentered second moment C, float64 [I, I]."""
        return self.stats.c_matrix

    @property
    def zca_matrix(self) -> torch.Tensor:
        return self.stats.zca_matrix

    def cache_meta(self) -> dict:
        """What the key statistics depend on (their cache key)."""
        return self.keys.cache_meta()

    def collect_statistics(self, indices: Sequence[int] | None = None) -> KeyStatistics:
        """C (float64), ZCA, unit mean squares and quantiles over the z-sample; cached when possible."""
        return self.keys.collect_statistics(indices)

    def statistics_zs(self) -> torch.Tensor:
        """The z's [N, D] the key statistics are gathered over (the first stats_size of the z-sample)."""
        return self.keys.statistics_zs()

    def sample_styles(self, n: int = 64) -> torch.Tensor:
        """The target layer's styles [n, I] for the first n z's of the statistics sample (mapping
        network and the layer's modulation only)."""
        return self.site.styles(self.statistics_zs()[:n].to(self.device))

    def covariance_adjusted_query_key(self, k: torch.Tensor) -> torch.Tensor:
        """C^-1 k by a stable solve; k [I] or [N, I]."""
        return keymethods.covariance_adjusted(self.c_matrix, k)

    def zca_whitened_query_key(self, k: torch.Tensor) -> torch.Tensor:
        """C^-1/2 k; k [I] or [N, I]."""
        return keymethods.zca_whitened(self.zca_matrix, k)

    def keys_and_weights(self, pairs, field: str = 'key') -> tuple[torch.Tensor, torch.Tensor]:
        """Per-pixel keys [N, I] and mask weights [N] of the selected pixels of every (imgnum, mask) pair."""
        return self.keys.keys_and_weights(pairs, field)

    def multi_key_from_selection(self, imgnum_mask_pairs, rank: int = 1, key_method: str | None = None,
                                 preserve_pairs=(), preserve_weight: float = PRESERVE_WEIGHT) -> torch.Tensor:
        """Orthonormal context directions D [rank, I] from the selected regions' keys. With preserve
        regions ([(imgnum, mask), ...]; key_method 'zca' only) and preserve_weight > 0, the top
        generalized eigenvectors of the context energy against C + preserve_weight * P (P: the preserve
        keys' second moment; `rewrite.preserve.context_directions`): directions that answer to the
        context and as little as possible to the preserve keys."""
        return self.keys.directions(imgnum_mask_pairs, rank, key_method or self.key_method, preserve_pairs,
                                    preserve_weight)

    def query_key_from_selection(self, imgnum: int, mask) -> torch.Tensor:
        """The unit covariance-adjusted direction C^-1 mean(k) of a region's keys [I]."""
        return self.keys.query_key(imgnum, mask)

    def normdissect_units(self, imgnum_mask_pairs, rank: int) -> torch.Tensor:
        """The `rank` units with the largest mean squared response (normalised by their mean
        square over the z-sample) in the given regions."""
        return self.keys.normdissect_units(imgnum_mask_pairs, rank)

    # ---- goals from selections (rewrite/goals.py) ----------------------------------------------
    def object_from_selection(self, imgnum: int, mask):
        """Copied values: (activations [1, O, h, w] in the region's box, its mask [h, w], the
        full value bag, the box)."""
        c = self.goals.copied(imgnum, mask)
        return c.values, c.area, c.output, c.box

    def paste_from_selection(self, imgnum: int, mask, obj_acts, obj_area):
        """(goal keys bag, goal values [1, O, h, w], the full pasted values, the pasted box)."""
        goal = self.goals.pasted(imgnum, mask, obj_acts, obj_area)
        return goal.key, goal.val, goal.full, goal.box

    def erase_from_selection(self, imgnum: int, mask, context_pairs, drank: int):
        """Goal: the region's keys produce what the layer gives with the top `drank`
        (normdissect) units of the context zeroed."""
        goal = self.goals.erased(imgnum, mask, lambda: self.normdissect_units(context_pairs, drank))
        return goal.key, goal.val

    # ---- rewriting -----------------------------------------------------------------------------
    def _target(self, key: DataBag) -> torch.Tensor:
        return self.pieces.target(key)

    def _target_layer(self, key: DataBag) -> TargetLayer:
        return self.site.target_layer(key)

    def insert(self, key: DataBag, val: torch.Tensor, context: torch.Tensor, niter: int = 2001,
               piter: int = 10, lr: float = 0.05, update_callback: Callable | None = None,
               solver: str = DEFAULT_SOLVER, preserve_set: PreserveSet | None = None,
               preserve_weight: float = 0.0, **solver_options) -> list[float]:
        """Changes the layer weight (in place) so target(key) ~ val, within span(context rows); with
        preserve_set, the loss adds preserve_weight * the preserve regions' mask-weighted L1 change."""
        check_choice(solver, methods.SOLVERS, 'solver')
        check_options(niter=niter, piter=piter, lr=lr)
        if solver == 'fast':
            check_fast_options(solver_options)
        context = self.checked_context(context)
        run = methods.SOLVERS[self._solver_run(solver)]
        if preserve_set is not None and not run.preserve_regions:
            raise RewriteError(f"preserve regions need the 'fast' or the 'original' solver, not {run.name!r}")
        styles = solver_options.pop('styles', None)
        problem = InsertProblem(self._target, self.pieces.target_with_weight, self._target_layer,
                                self.sample_styles if styles is None else lambda: styles, self.target_weights(),
                                key, val, context, preserve_set, preserve_weight)
        return run.run(problem, run.configure(**self._settings(niter, piter, lr, solver_options)), update_callback)

    def _settings(self, niter: int, piter: int, lr: float, solver_options: dict) -> dict:
        """Every setting a solver may take: the Adam ones, the rewriter's projection flags, the solver's own."""
        return {'niter': niter, 'piter': piter, 'lr': lr, 'low_rank_insert': self.low_rank_insert,
                'low_rank_gradient': self.low_rank_gradient, **solver_options}

    def _solver_run(self, solver: str) -> str:
        """The registry's solver that runs `solver` ('original' runs as 'linear' with use_linear_insert)."""
        return 'linear' if solver == 'original' and self.use_linear_insert else solver

    def checked_context(self, context) -> torch.Tensor:
        """Context directions [rank, I] (I: the layer's key width), finite, on the weight's device and dtype."""
        width = self.k_shape[1]
        if not torch.is_tensor(context) or context.dim() != 2 or not 1 <= context.shape[0] <= width \
                or context.shape[1] != width:
            shape = tuple(context.shape) if torch.is_tensor(context) else type(context).__name__
            raise RewriteError(f'context must be a tensor [rank, {width}] with 1 <= rank <= {width} '
                               f'(this layer has {width} input channels), not {shape}')
        if not context.is_floating_point() or not torch.isfinite(context).all():
            raise RewriteError('context must hold finite floating-point numbers (it has NaN, inf or is not float)')
        return context.to(self.target_weights())

    def _parse(self, request) -> editfile.EditRequest:
        try:
            return editfile.parse_edit(request, num_images=self.num_images)
        except editfile.EditFileError as e:
            raise RewriteError(str(e)) from e
        except (OSError, ValueError) as e:
            reason = getattr(e, 'strerror', None) or e
            raise RewriteError(f'request: cannot read the edit file {str(request)[:80]!r} ({reason})') from e

    def _context_pairs(self, req: editfile.EditRequest, single_key: int = -1):
        pairs = [(s.imgnum, s.mask_url) for s in req.context]
        if not pairs:
            raise RewriteError('the request has no context: give key regions or a paste region')
        if single_key >= 0:
            if single_key >= len(pairs):
                raise RewriteError(f'single_key {single_key} is out of range: {len(pairs)} context regions')
            pairs = [pairs[single_key]]
        return pairs

    def apply_edit(self, request, rank: int = 1, niter: int = 2001, piter: int = 10, lr: float = 0.05,
                   update_callback: Callable | None = None, single_key: int = -1, solver: str = DEFAULT_SOLVER,
                   preserve_weight: float = PRESERVE_WEIGHT, **solver_options) -> EditRecord:
        """Copy `object`, paste at `paste`, with `key` regions (or the paste) as context.

        With `preserve` regions in the request and preserve_weight > 0 (0: ignore them), the context
        directions turn away from the preserve keys and the solver's loss adds preserve_weight times
        their outputs' mask-weighted L1 change; the record keeps the weight and that change.

        request: a dict in the edit-file format (or a path to one). solver: 'fast' (DEFAULT_SOLVER, the
        closed-form solver, seconds on a CPU), 'original' (the paper's niter Adam steps) or 'linear'.
        Atomic: on a bad request, an interrupt or a non-finite loss the weights are restored and an
        error is raised."""
        req = self._parse(request)
        if req.object is None or req.paste is None:
            raise RewriteError("an edit needs both 'object' (what to copy) and 'paste' (where to paste it); "
                               "for an erase ('paste' without 'object') or a context-only request use "
                               "apply_request, which dispatches on what the request holds")
        check_choice(solver, methods.SOLVERS, 'solver')
        check_options(niter=niter, piter=piter, lr=lr)
        keep = self._preserve_pairs(req, preserve_weight)
        obj_acts, obj_area, _, _ = self.object_from_selection(req.object.imgnum, req.object.mask_url)
        goal_in, goal_out, _, _ = self.paste_from_selection(req.paste.imgnum, req.paste.mask_url, obj_acts, obj_area)
        context = self.multi_key_from_selection(self._context_pairs(req, single_key), rank=rank,
                                                preserve_pairs=keep, preserve_weight=preserve_weight)
        return self._run_insert('edit', req, goal_in, goal_out, context, rank, niter, piter, lr,
                                update_callback, solver, solver_options, keep, preserve_weight)

    def apply_erase(self, request, rank: int = 1, drank: int = ERASE_UNITS, niter: int = 2001, piter: int = 10,
                    lr: float = 0.05, update_callback: Callable | None = None, solver: str = DEFAULT_SOLVER,
                    preserve_weight: float = PRESERVE_WEIGHT, **solver_options) -> EditRecord:
        """Remove what the `key` context regions show from the `paste` region (its top units zeroed);
        `preserve` regions and preserve_weight as in apply_edit."""
        req = self._parse(request)
        if req.paste is None:
            raise RewriteError("an erase needs a 'paste' region (what to erase)")
        pairs = self._context_pairs(req)
        if not 1 <= drank <= self.k_shape[1]:
            raise RewriteError(f'drank must be between 1 and {self.k_shape[1]}, not {drank}')
        keep = self._preserve_pairs(req, preserve_weight)
        goal_in, goal_out = self.erase_from_selection(req.paste.imgnum, req.paste.mask_url, pairs, drank)
        context = self.multi_key_from_selection(pairs, rank=rank, preserve_pairs=keep, preserve_weight=preserve_weight)
        return self._run_insert('erase', req, goal_in, goal_out, context, rank, niter, piter, lr,
                                update_callback, solver, solver_options, keep, preserve_weight)

    def apply_request(self, request, rank: int = 1, **options) -> EditRecord:
        """Carries out whatever a saved request describes: copy and paste (`object` + `paste`) ->
        apply_edit; an erase (`paste` without `object`) -> apply_erase; context only (`key`) ->
        zero the context directions (forget that rule)."""
        req = self._parse(request)
        if req.object is not None and req.paste is not None:
            return self.apply_edit(req.to_json(), rank=rank, **options)
        if req.paste is not None:
            return self.apply_erase(req.to_json(), rank=rank, **options)
        context = self.multi_key_from_selection(self._context_pairs(req), rank=rank)
        return self.zero(context)

    def _preserve_pairs(self, req: editfile.EditRequest, preserve_weight: float) -> list:
        """The request's preserve regions [(imgnum, mask)] (none when preserve_weight is 0)."""
        if not real_number(preserve_weight, 0.0, strict=False):
            raise RewriteError(f'preserve_weight must be a non-negative finite number, not {preserve_weight!r}')
        return [(s.imgnum, s.mask_url) for s in req.preserve] if preserve_weight > 0 else []

    def preserve_from_selection(self, pairs) -> PreserveSet:
        """The preserve regions [(imgnum, mask)] at the target layer: the full images' key bag
        (batch [M]), the layer's outputs [M, O, H, W] and the masks [M, H, W] at the value resolution."""
        weight = torch.stack([self.area(m, self.v_shape[2], f'preserve[{j}]') for j, (_, m) in enumerate(pairs)])
        with torch.no_grad():
            key = self.context_model(self.get_zs([i for i, _ in pairs]))
            return PreserveSet(key, self._target(key), weight)

    def _solver_record(self, solver: str, niter: int, piter: int, lr: float, solver_options: dict) -> dict:
        """Every option the solver ran with (its registry defaults filled in), for the EditRecord."""
        return methods.SOLVERS[self._solver_run(solver)].recorded(**self._settings(niter, piter, lr, solver_options))

    def _run_insert(self, kind, req, goal_in, goal_out, context, rank, niter, piter, lr,
                    update_callback, solver, solver_options, preserve_pairs=(),
                    preserve_weight: float = 0.0) -> EditRecord:
        record = EditRecord(kind=kind, solver=solver, rank=rank, request=req.to_json(), key_method=self.key_method,
                            options=self._solver_record(solver, niter, piter, lr, solver_options))
        keep = self.preserve_from_selection(preserve_pairs) if preserve_pairs else None
        if keep is not None:
            record.preserve_weight = float(preserve_weight)
        with torch.no_grad():
            record.initial_loss = F.l1_loss(self._target(goal_in), goal_out).item()
        with self._atomic_edit(record) as saved:
            record.losses = self.insert(goal_in, goal_out, context, niter=niter, piter=piter, lr=lr,
                                        update_callback=update_callback, solver=solver, preserve_set=keep,
                                        preserve_weight=preserve_weight, **solver_options)
            if keep is not None:
                with torch.no_grad():
                    record.preserve_change = keep.change(self._target(keep.key)).item()
            with torch.no_grad():
                record.final_loss = F.l1_loss(self._target(goal_in), goal_out).item()
            if not np.isfinite(record.final_loss):
                raise FloatingPointError('the edit produced non-finite outputs (the weights were restored)')
            self.edits.keep_the_better(record, saved)
        record.context = context.detach().cpu()
        return record

    def zero(self, context: torch.Tensor, amount: float = 0.0) -> EditRecord:
        """Sets the weight's component along the context rows to `amount` (0: forget them)."""
        context = self.checked_context(context)
        if not real_number(amount, -np.inf, True):
            raise RewriteError(f'amount must be a finite number, not {amount!r}')
        record = EditRecord(kind='zero', solver='closed-form', rank=context.shape[0])
        with self._atomic_edit(record), torch.no_grad():
            weight = self.target_weights()
            ortho = weight - projected_conv(weight, context)
            weight[...] = ortho + amount * projected_conv(torch.ones_like(weight), context)
        return record

    def apply_overfit(self, request, niter: int = 2001, lr: float = 0.01,
                      update_callback: Callable | None = None) -> EditRecord:
        """Baseline: fine-tune every weight of the generator so the paste image shows the pasted pixels."""
        req = self._parse(request)
        if req.object is None or req.paste is None:
            raise RewriteError("overfitting needs both 'object' and 'paste'")
        res = self.x_shape[2]
        obj_area = self.area(req.object.mask_url, res, 'object')
        with torch.no_grad():
            obj_img = self.sample_image_from_latent(self.get_z(req.object.imgnum))
            t, l, b, r = positive_bounding_box(obj_area)
            z = self.get_z(req.paste.imgnum)
            goal, (t2, l2, b2, r2) = paste_clip_at_center(
                self.sample_image_from_latent(z), obj_img[:, :, t:b, l:r],
                centered_location(self.area(req.paste.mask_url, res, 'paste')), obj_area[t:b, l:r])
        params = dict(self.model.named_parameters())
        record = EditRecord(kind='overfit', solver='adam-all-weights', rank=-1, request=req.to_json())
        with self._atomic_edit(record, names=list(params)):
            self.model.requires_grad_(True)
            try:
                optimizer = torch.optim.Adam(params.values(), lr=lr)
                for it in range(niter):
                    out = self.model(z)
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
                self.model.requires_grad_(False)
                for p in params.values():
                    p.grad = None
            record.final_loss = record.losses[-1] if record.losses else float('nan')
        return record

    # ---- history (rewrite/history.py) ----------------------------------------------------------
    def _atomic_edit(self, record: EditRecord, names: Sequence[str] | None = None):
        """Snapshot the parameters an edit changes; restore them on any error or interrupt."""
        return self.edits.atomic_edit(record, names)

    def _keep_the_better(self, record: EditRecord, saved: dict[str, torch.Tensor]) -> None:
        """Warn on a rise of the goal loss; roll back a rise above LOSS_TOLERANCE (EditHistory.keep_the_better)."""
        self.edits.keep_the_better(record, saved)

    def undo(self) -> EditRecord | None:
        """Restores the weights from before the last edit; returns its record (None if none)."""
        return self.edits.undo()

    def redo(self) -> EditRecord | None:
        """Re-applies the last undone edit (a new edit or revert() forgets undone ones); returns its
        record (None if there is none)."""
        return self.edits.redo()

    def revert(self) -> None:
        """Restores the original model (all edits undone and forgotten)."""
        self.edits.revert()

    def original_model(self):
        """Within the block (a context manager), the model has its original weights (for 'Toggle original')."""
        return self.edits.original_model()

    # ---- search and pictures (rewrite/render.py) -----------------------------------------------
    def key_response(self, fmap: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
        """fmap [N, I, h, w] . key [I] -> [N, h, w]."""
        return key_response(fmap.to(self.device), key)

    def key_response_maps(self, key: torch.Tensor, imgnums: Sequence[int]) -> torch.Tensor:
        """Response k . key at every key pixel: [N, h, w]."""
        return self.renderer.key_response_maps(key, imgnums)

    def ranking_for_key(self, key: torch.Tensor, k: int = 12):
        """(the k image numbers whose strongest response to `key` is highest, response quantiles
        [101] over every pixel of the z-sample)."""
        return self.renderer.ranking_for_key(key, k)

    def image_with_values(self, imgnum: int, values: torch.Tensor) -> torch.Tensor:
        """Image [3, H, W] of `imgnum` with the rewritten layer's output replaced by values [1, O, h, w]
        (e.g. paste_from_selection's pasted values: what a goal looks like), rendered by the rest."""
        return self.renderer.image_with_values(imgnum, values)

    def render_image(self, imgnum: int, key: torch.Tensor | None = None, level: float | None = None,
                     mask=None, **kwargs) -> Image.Image:
        """The (edited) model's image `imgnum`, optionally with the region where the key's response
        exceeds `level`, or a mask, outlined."""
        return self.render_image_batch([imgnum], key=key, level=level, mask=mask, **kwargs)[0]

    def render_image_batch(self, imgnums: Sequence[int], key: torch.Tensor | None = None,
                           level: float | None = None, mask=None, **kwargs) -> list[Image.Image]:
        return self.renderer.render_image_batch(imgnums, key=key, level=level, mask=mask, **kwargs)
