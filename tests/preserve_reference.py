"""The bundled and the original tool's edit files as test cases, for the test that an edit file *without*
`preserve` gives, bit for bit, the weights of the same file *with* preserve regions applied at
preserve_weight 0 (tests/test_preserve_method.py). Both sides are computed in the same run on the same host,
one thread, so the float sums are the same; nothing is recorded between runs (float kernels differ between
CPUs).

- demo: the bundled files of notebooks/masks/demo at the layer their name records, the demo model at
  truncation 0.5, z_dataset_for_model(model, 1000), key statistics over the first 50 z's; the fast
  solver (default options) at the file's rank and at rank 1, the original solver (20 steps) at its rank;
- orig: the original tool's 28 edit files (../shared/reference/original-edits) on the size-256 layout
  checkpoint of seed 5 at truncation 0.5, statistics over 6 z's, rank 1; fast, and original (3 steps) for 4.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
DEMO_EDITS = ROOT / 'notebooks' / 'masks' / 'demo'
ORIGINAL_NITER = {'demo': 20, 'orig': 3}


def _layer_and_rank(path: Path) -> tuple[int, int]:
    """NAME_layerN[_rankR].json -> (N, R or 1)."""
    parts = path.stem.split('_')
    layer = next(int(p[5:]) for p in parts if p.startswith('layer') and p[5:].isdigit())
    rank = next((int(p[4:]) for p in parts if p.startswith('rank') and p[4:].isdigit()), 1)
    return layer, rank


def demo_cases() -> Iterator[tuple[str, int, Path, str, int]]:
    """(key, layer, path, solver, rank) for the bundled demo edits that have no preserve regions."""
    for path in sorted(DEMO_EDITS.glob('*.json')):
        if 'preserve' in json.loads(path.read_text()):
            continue
        layer, rank = _layer_and_rank(path)
        settings = [('fast', rank), ('original', rank)] + ([('fast', 1)] if rank != 1 else [])
        for solver, r in settings:
            yield f'demo/{path.name}/{solver}/rank{r}', layer, path, solver, r


def orig_layer(path: Path) -> int:
    """church: 8 unless the name says otherwise; faces: 6 (as tests/test_rewriter_reference.py)."""
    if 'layer' in path.stem:
        return int(path.stem.split('layer')[1].split('_')[0])
    return 6 if path.parent.name == 'faces' else 8


def with_zero_weight_preserve(request: dict) -> dict:
    """The request with preserve regions (its own context regions, else its paste region): applied at
    preserve_weight 0 these must change nothing."""
    regions = request.get('key') or [request['paste']]
    return {**request, 'preserve': [list(region) for region in regions]}


def weights_after(rewriter_for, cases, variant=lambda request: request, **options) -> dict[str, torch.Tensor]:
    """The target weight after each case (a copy); rewriter_for(layer) -> a SeqStyleGanRewriter (reverted after).
    `variant` maps the file's request to the one applied; `options` go to apply_request."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = {}
        for key, layer, path, solver, rank in cases:
            gw = rewriter_for(layer)
            niter = ORIGINAL_NITER['orig' if key.startswith('orig/') else 'demo']
            gw.apply_request(variant(json.loads(path.read_text())), rank=rank, solver=solver, niter=niter, **options)
            out[key] = gw.target_weights().detach().clone()
            gw.revert()
        return out
    finally:
        torch.set_num_threads(threads)


def rewriters(model, stats_size: int):
    """layer -> a SeqStyleGanRewriter of `model` (made once per layer) over z_dataset_for_model(model, 1000)."""
    from rewrite.core.rewriter import SeqStyleGanRewriter
    from utils.zdataset import z_dataset_for_model
    zds = z_dataset_for_model(model, 1000)
    cache = {}

    def get(layer):
        if layer not in cache:
            cache[layer] = SeqStyleGanRewriter(model, zds, layer, stats_size=stats_size, progress=False,
                                               damage_samples=0)          # weights only: no damage renders
        return cache[layer]
    return get


def demo_rewriters():
    from utils.stylegan2 import load_seq_stylegan
    return rewriters(load_seq_stylegan('demo', truncation=0.5), 50)


def orig_rewriters(checkpoint: dict):
    from utils.stylegan2 import model_from_checkpoint
    return rewriters(model_from_checkpoint(checkpoint, truncation=0.5), 6)


def orig_cases(folder: Path) -> Iterator[tuple[str, int, Path, str, int]]:
    """Every file with the fast solver; every 7th with the original solver too (same path through preserve)."""
    for index, path in enumerate(sorted(folder.glob('*/*.json'))):
        for solver in ('fast', 'original') if index % 7 == 0 else ('fast',):
            yield f'orig/{path.parent.name}/{path.name}/{solver}', orig_layer(path), path, solver, 1
