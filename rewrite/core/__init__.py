"""The engine: one layer of a generator rewritten as a linear associative memory.

    rewriter.py     SeqStyleGanRewriter, the facade (one method a step, each a line or two)
    pieces.py       the generator cut at the rewrite site; the z-sample; masks at the layer
    statistics.py   key statistics (second moment, quantiles) gathered over the z-sample, cached
    contextkeys.py  keys of the selected regions; keymethods.py: their directions (zca, svd, mean, gandissect)
    goals.py        the copy / paste goal: keys and values the edit should map
    preserve.py     preserve regions: generalized eigen-directions, the preserve term
    solvers/        the solvers of an insert (fast closed form, the paper's Adam, the linear one)
    edits.py        running one edit: request -> goals -> solver -> record, atomically
    history.py      EditRecord, the edit history: atomic edits, rollback, undo / redo / revert
    damage.py       the damage probe: how far an edit moved the images away from its regions
    render.py       response maps, search, pictures

What the engine does
--------------------
- Key statistics: the uncentered second moment C of the layer's key vectors over the z-sample
  (float32 Gram products of the upper block-triangle, summed in float64; batched, progress bar), its
  ZCA matrix C^-1/2, C^-1 k by a least-squares solve, unit mean
  squares and quantiles; cached as `.npz` keyed by a SHA-256 of every weight the keys depend on, the
  layer, the z-sample, the truncation and the noise mode (a cache made for other weights is never used).
  Each file's SHA-256 checksum guards against accidents (a truncated write, a damaged file), not against
  an attacker who can write the cache folder; a cache folder that cannot be written is reported before
  the statistics are gathered, which are then kept in memory (a warning).
- Context keys: `multi_key_from_selection(pairs, rank, key_method='zca'|'svd'|'mean'|'gandissect')`.
- Goals: `object_from_selection`, `paste_from_selection` (tight crops, alpha blending, upsampling
  layers too), `erase_from_selection` (normdissect units).
- Solvers (`rewrite/core/solvers/`): `original` (the paper's Adam on the weight, re-projected onto the
  context rows every `piter` steps; `gw.low_rank_gradient = True` projects the gradients as well, the
  release's option that makes it converge), `linear` (Adam on the low-rank coefficient), `fast`
  (closed-form weighted least squares through the inverted leaky ReLU with the demodulation
  re-estimated, reweighted towards L1 over a few ridge strengths, then a short Adam polish on the
  exact explicit loss). Optionally (`preserve=0.3`, say; default 0, off) the fast solver's loss also
  counts how much the change rescales *every other* image through the demodulation (over 64 styles
  of the z-sample): a rank-1 change leaves keys orthogonal to the context alone before
  demodulation, but it still adds energy to each output channel's weight, which dims that channel
  everywhere. The term trades effectiveness for preservation (the iteration-18600 demo model's
  16-region dome -> spire, `preserve=0.3`: change outside 0.022 -> 0.014, converted domes 50% -> 35%),
  so it is off by default.
- `apply_edit`, `apply_erase`, `apply_request` (dispatches on what a saved file holds), `zero`,
  `apply_overfit` (baseline: fine-tune all weights). Every edit is atomic: a bad request, an
  interrupt or a non-finite loss restores the weights and raises a clear error. Edits compose;
  `undo()`, `revert()`, `with gw.original_model():`.
- How an edit was made travels with it: an edit file may record its `layer`, `rank`, `solver`,
  `solver_options` and `model` (below). Without explicit `rank`, `solver`, `niter`, `piter`, `lr` or solver
  options, `apply_edit` / `apply_erase` / `apply_request` use the file's (else rank 1 and the fast solver,
  as for a file without the fields). A rewriter of another layer refuses a file that records a layer
  (`RewriteError` naming both layers); `allow_other_layer=True` applies it there and warns. A file whose
  `model.fingerprint` is not this model's weights warns (a different checkpoint: its image numbers mean
  other images). `gw.setting(record)` gives the fields to write for an applied record, `gw.model_fingerprint()`
  the SHA-256 of the original weights (`rewrite.core.statistics.weights_fingerprint`).
- Damage, measured after every change (`rewrite/core/damage.py`): 8 held-out samples (z's apart from the
  z-sample; `damage_samples=` of the rewriter, 0 turns it off) are rendered from the rewritten layer on
  before and after the change, and the record carries `heldout_change` (their mean absolute pixel change,
  images in [-1, 1], outside where the rule acts: away from the pixels whose keys answer to the context
  directions at least half as strongly as the median pixel of the request's own context regions, grown by one
  key pixel) and `paste_change` (the same inside the request's paste region of its paste image, what it was
  asked to change). A `heldout_change` above `DAMAGE_THRESHOLD` (0.05) sets `record.damage_warning` and warns
  (`RuntimeWarning`); the command line prints it as `rewrite: warning: ...`, the widget in amber with an
  Undo button. How the threshold was chosen: `metrics/README.md`.
- Preserve regions: an edit file's optional `preserve` field (`[[imgnum, mask], ...]`, like
  `key`; the original tool ignores it) lists regions whose layer outputs must stay as they are.
  `apply_edit` / `apply_erase(..., preserve_weight=0.1)` (the default; 0 ignores them, bit for bit the
  edit without the field; `python -m rewrite apply/sample/demo --preserve-weight W`) then (a) chooses
  the `zca` context directions as the top generalized eigenvectors of the context energy against
  C + preserve_weight * P (P: the preserve keys' mean k k^T; `rewrite/core/preserve.py`), and (b) adds
  preserve_weight times the preserve regions' mask-weighted L1 output change to the solver's loss: in
  the fast solver as extra least-squares rows (their demodulation from each region's own style,
  re-estimated each round) and in the polish's exact loss; in the original solver as a term of its Adam
  loss. `EditRecord.preserve_weight` / `.preserve_change` record the weight and that change.
  A file may carry its own weight, `"preserve_weight": W` (a number >= 0, only with `preserve`): used when
  no weight is passed (`preserve_weight=None`, no `--preserve-weight`; the widget's Preview and Execute too).
  `gw.preserve_from_selection(pairs)` gives the regions' keys, outputs and masks (`PreserveSet`).
  In the widget (`rewrite/app/preservepanel.py`): **Add to Preserve** (its own tray, blue; each region also
  outlined in blue on its sample in the grid; a second region painted on the same sample joins the first; a
  click on the tray removes a picture; saved and loaded with the edit), **Preview** (heat maps drawn on the
  grid's own samples, with a legend: where the context answers, red, and where the preserve keys answer,
  blue; a second click or the next stroke takes them off) and **Changes** (its own titled section under the
  pictures: a row of the samples before the edit above a row of them after it, the most changed held-out
  samples then the preserve examples, each captioned with its image number and change; shown by itself after
  each Execute Change or Erase).
- Search and pictures: `query_key_from_selection`, `ranking_for_key`, `key_response_maps`,
  `render_image(_batch)` with heatmap/mask overlays, `sample_image_from_latent`.

Edit files (`rewrite/formats/editfile.py`) are read and written in the original tool's JSON format
(`object`, `paste`, `key`, `query`; masks as RGBA PNG data URLs decoded as the original did: PNG ->
RGB -> PIL bilinear resize -> red / 255). Malformed files give an error naming the field. Optional fields
record how the edit was made (the original tool reads a request with `json.load` and looks only at the
fields it knows, so it reads these files as their regions): `layer` (int >= 0), `rank` (int >= 1), `solver`
(`fast`, `original` or `linear`), `solver_options` (that solver's options that differ from its defaults,
e.g. `{"niter": 500, "lr": 0.02}`; only with `solver`), `preserve_weight` (above) and `model`
(`{"fingerprint": SHA-256 of the generator's weights before the edit, "name": "demo"}`); read then written, a
file gives the same bytes. The widget's Save, `metrics/make_demo_edits.py` and the bundled edits write them.
"""

from rewrite.core.rewriter import SeqStyleGanRewriter

__all__ = ['SeqStyleGanRewriter']
