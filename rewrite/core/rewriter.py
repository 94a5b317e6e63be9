"""SeqStyleGanRewriter: rewriting one convolution layer of a generator as an associative memory.

The layer's plain conv (the generator's rewrite site, utils/generators/site.py) maps keys k (its input features,
one vector per pixel) to values v (the features after demodulation, noise and activation). A user's
selections give (a) goal pairs: the keys of a region should now produce pasted values, and (b) a
context: a low-rank subspace D of key space, chosen with the keys' second moment C, in which
the weight may change (W' = W + Lambda D), so that other rules are disturbed as little as possible.

    gw = SeqStyleGanRewriter(model, z_dataset_for_model(model, 1000), layernum=8)
    record = gw.apply_edit(json.load(open('dome2spire.json')), rank=1, solver='fast')
    image = gw.render_image(5)

The rewriter is a facade over one module per part: pieces.py (the generator cut at the rewrite site, the
z-sample, masks), contextkeys.py (key statistics, keys of regions, context directions by key method),
goals.py (copy / paste / erase goals), edits.py (running an edit: request, context, goal, solver, record),
history.py (atomic edits, rollback, undo / redo / revert) and render.py (response maps, search, pictures);
the solvers and key methods are registered in methods.py.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from PIL import Image

from rewrite.core import edits, keymethods
from rewrite.core.contextkeys import ContextKeys
from rewrite.core.damage import DAMAGE_SAMPLES, DamageProbe
from rewrite.core.goals import Goals
from rewrite.core.history import LOSS_TOLERANCE, EditHistory, EditRecord
from rewrite.core.pieces import EDIT_DTYPES, LayerPieces, float_zs
from rewrite.core.preserve import PreserveSet
from rewrite.core.render import Renderer, key_response
from rewrite.core.statistics import KeyStatistics, weights_fingerprint
from rewrite.formats import editfile
from rewrite.formats import registry as methods
from rewrite.formats.settings import PRESERVE_WEIGHT, RewriteError, check_choice, check_fast_options, check_options
from utils.generators.site import TargetLayer
from utils.stylegan2 import DataBag, rewrite_site

__all__ = ['DEFAULT_SOLVER', 'EDIT_DTYPES', 'ERASE_UNITS', 'KEY_METHODS', 'LOSS_TOLERANCE', 'SOLVERS',
           'RewriteError', 'SeqStyleGanRewriter', 'check_fast_options', 'check_options']

KEY_METHODS = tuple(methods.KEY_METHODS)      # the registries' names (rewrite/formats/registry.py)
SOLVERS = tuple(methods.SOLVERS)
DEFAULT_SOLVER = methods.DEFAULT_SOLVER  # the one default of apply_edit/apply_erase, the CLI and the widget
ERASE_UNITS = 30        # apply_erase's default drank, the original's (its layers had 512 units)


class SeqStyleGanRewriter:
    """Rewrites layer `layernum` of a copy of `model` (a generator with `rewrite_site(layernum)`, e.g. a
    SeqStyleGAN2; the site says where to cut it and which conv to edit).

    zds: the z-sample (TensorDataset, e.g. z_dataset_for_model(model, 1000)); image numbers in
    requests index it. Statistics of the layer's keys over zds (or its first `stats_size` z's, for
    a quick preview) are gathered on first use and cached in `cachedir` (if given).

    After every change the damage probe (rewrite/core/damage.py) measures it on `damage_samples` held-out samples
    (0: not measured); `model_name`: a human-readable name of the model, written into saved edit files.
    """

    def __init__(self, model, zds, layernum: int, cachedir: str | Path | None = None,
                 low_rank_insert: bool = True, low_rank_gradient: bool = False,
                 use_linear_insert: bool = False, tight_paste: bool = True, alpha_area: bool = True,
                 key_method: str = methods.DEFAULT_KEY_METHOD, batch_size: int = 8, progress: bool = True,
                 stats_size: int | None = None, damage_samples: int = DAMAGE_SAMPLES, model_name: str | None = None):
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
        self.zds = zds = float_zs(zds)                  # bfloat16 / float16 z's: their values in float32
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
        if isinstance(damage_samples, bool) or not isinstance(damage_samples, int) or damage_samples < 0:
            raise RewriteError(f'damage_samples must be an integer >= 0, not {damage_samples!r}')
        self.damage_probe = DamageProbe(p, damage_samples) if damage_samples else None
        self.model_name = model_name
        self._fingerprint: str | None = None

    def model_fingerprint(self, current: bool = False) -> str:
        """SHA-256 of the original model's weights (rewrite.core.statistics.weights_fingerprint; computed once), or
        of the current ones: what an edit file's `model.fingerprint` records."""
        if current:
            return weights_fingerprint(self.model)
        if self._fingerprint is None:
            with self.original_model():
                self._fingerprint = weights_fingerprint(self.model)
        return self._fingerprint

    def setting(self, record: EditRecord | None = None) -> dict:
        """The edit-file fields that record how an edit is made here: layer, and from `record` its rank,
        solver and the solver options that differ from the defaults; model: the original weights' fingerprint
        and model_name (when known)."""
        fields: dict = {'layer': self.layernum}
        if record is not None and record.solver in methods.SOLVERS:
            fields |= {'rank': int(record.rank), 'solver': record.solver}
            changed = methods.SOLVERS[record.solver].differing(record.options)
            if changed:
                fields['solver_options'] = changed
        model = {'fingerprint': self.model_fingerprint()}
        if self.model_name:
            model['name'] = self.model_name
        return fields | {'model': model}

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

    # ---- key statistics and context keys (rewrite/core/contextkeys.py) ------------------------------
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
        keys' second moment; `rewrite.core.preserve.context_directions`): directions that answer to the
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

    # ---- goals from selections (rewrite/core/goals.py) ----------------------------------------------
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
    def target(self, key: DataBag) -> torch.Tensor:
        """The target piece's output [B, O, H, W] on the key bag `key` (the layer as it is now)."""
        return self.pieces.target(key)

    def target_with_weight(self, weight: torch.Tensor, key: DataBag) -> torch.Tensor:
        """The target piece's output with another conv weight [1, O, I, k, k] (for the solvers)."""
        return self.pieces.target_with_weight(weight, key)

    def target_layer(self, key: DataBag) -> TargetLayer:
        """The target piece as the fast solver models it, on the goal key bag `key`."""
        return self.site.target_layer(key)

    def insert(self, key: DataBag, val: torch.Tensor, context: torch.Tensor, niter: int = 2001,
               piter: int = 10, lr: float = 0.05, update_callback: Callable | None = None,
               solver: str = DEFAULT_SOLVER, preserve_set: PreserveSet | None = None,
               preserve_weight: float = 0.0, **solver_options) -> list[float]:
        """Changes the layer weight (in place) so target(key) ~ val, within span(context rows); with
        preserve_set, the loss adds preserve_weight * the preserve regions' mask-weighted L1 change."""
        return edits.insert(self, key, val, context, niter=niter, piter=piter, lr=lr, update_callback=update_callback,
                            solver=solver, preserve_set=preserve_set, preserve_weight=preserve_weight,
                            solver_options=solver_options)

    def checked_context(self, context) -> torch.Tensor:
        """Context directions [rank, I] (I: the layer's key width), finite, on the weight's device and dtype."""
        return edits.checked_context(context, self.target_weights())

    def _parse(self, request) -> editfile.EditRequest:
        return edits.parse(request, self.num_images)

    def apply_edit(self, request, rank: int | None = None, niter: int | None = None, piter: int | None = None,
                   lr: float | None = None, update_callback: Callable | None = None, single_key: int = -1,
                   solver: str | None = None, preserve_weight: float | None = None, allow_other_layer: bool = False,
                   **solver_options) -> EditRecord:
        """Copy `object`, paste at `paste`, with `key` regions (or the paste) as context.

        With `preserve` regions in the request and preserve_weight > 0 (0: ignore them), the context
        directions turn away from the preserve keys and the solver's loss adds preserve_weight times
        their outputs' mask-weighted L1 change; the record keeps the weight and that change.
        preserve_weight None: the request's `preserve_weight` field, else PRESERVE_WEIGHT (a number
        passed here wins over the file's).

        request: a dict in the edit-file format (or a path to one). solver: 'fast' (DEFAULT_SOLVER, the
        closed-form solver, seconds on a CPU), 'original' (the paper's niter Adam steps) or 'linear'.
        rank, solver, niter, piter, lr and the solver's options left out (None): the file's own `rank`,
        `solver` and `solver_options` when it records them, else rank 1, DEFAULT_SOLVER, niter 2001, piter
        10, lr 0.05 and the solver's defaults. A file that records another `layer` is refused (RewriteError
        naming both layers) unless allow_other_layer=True, which applies it here and warns; a file whose
        `model.fingerprint` is not this model's warns. The record carries the change's damage on held-out
        samples (heldout_change, paste_change; a warning above DAMAGE_THRESHOLD, rewrite/core/damage.py).
        Atomic: on a bad request, an interrupt or a non-finite loss the weights are restored and an
        error is raised (rewrite/core/edits.py runs it)."""
        return edits.apply_edit(self, request, rank=rank, niter=niter, piter=piter, lr=lr,
                                update_callback=update_callback, single_key=single_key, solver=solver,
                                preserve_weight=preserve_weight, solver_options=solver_options,
                                allow_other_layer=allow_other_layer)

    def apply_erase(self, request, rank: int | None = None, drank: int = ERASE_UNITS, niter: int | None = None,
                    piter: int | None = None, lr: float | None = None, update_callback: Callable | None = None,
                    solver: str | None = None, preserve_weight: float | None = None, allow_other_layer: bool = False,
                    **solver_options) -> EditRecord:
        """Remove what the `key` context regions show from the `paste` region (its top units zeroed);
        `preserve` regions, preserve_weight, the file's own setting and allow_other_layer as in apply_edit."""
        return edits.apply_erase(self, request, rank=rank, drank=drank, niter=niter, piter=piter, lr=lr,
                                 update_callback=update_callback, solver=solver, preserve_weight=preserve_weight,
                                 solver_options=solver_options, allow_other_layer=allow_other_layer)

    def apply_request(self, request, rank: int | None = None, preserve_weight: float | None = None,
                      **options) -> EditRecord:
        """Carries out whatever a saved request describes: copy and paste (`object` + `paste`) ->
        apply_edit; an erase (`paste` without `object`) -> apply_erase; context only (`key`) ->
        zero the context directions (forget that rule). `options` go to apply_edit / apply_erase; without
        preserve_weight the request's own `preserve_weight` (else PRESERVE_WEIGHT) is used; without rank,
        solver, niter, ..., the file's own (see apply_edit; allow_other_layer too)."""
        return edits.apply_request(self, request, rank, {'preserve_weight': preserve_weight, **options})

    def preserve_from_selection(self, pairs) -> PreserveSet:
        """The preserve regions [(imgnum, mask)] at the target layer: the full images' key bag
        (batch [M]), the layer's outputs [M, O, H, W] and the masks [M, H, W] at the value resolution."""
        return edits.preserve_set(self, pairs)

    def zero(self, context: torch.Tensor, amount: float = 0.0) -> EditRecord:
        """Sets the weight's component along the context rows to `amount` (0: forget them)."""
        return edits.zero(self, context, amount)

    def apply_overfit(self, request, niter: int = 2001, lr: float = 0.01,
                      update_callback: Callable | None = None) -> EditRecord:
        """Baseline: fine-tune every weight of the generator so the paste image shows the pasted pixels."""
        return edits.apply_overfit(self, request, niter, lr, update_callback)

    # ---- history (rewrite/core/history.py) ----------------------------------------------------------
    def atomic_edit(self, record: EditRecord, names: Sequence[str] | None = None):
        """Snapshot the parameters an edit changes; restore them on any error or interrupt."""
        return self.edits.atomic_edit(record, names)

    def keep_the_better(self, record: EditRecord, saved: dict[str, torch.Tensor]) -> None:
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

    # ---- search and pictures (rewrite/core/render.py) -----------------------------------------------
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
