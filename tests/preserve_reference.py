"""Issue 13: SHA-256 of the rewritten weight that edit files *without* `preserve` give, for the
bit-identity test (tests/test_preserve_method.py). Recipe (one thread, so the float sums are the same):

- demo: the bundled files of notebooks/masks/demo at the layer their name records, the demo model at
  truncation 0.5, z_dataset_for_model(model, 1000), key statistics over the first 50 z's; the fast
  solver (default options) at the file's rank and at rank 1, the original solver (20 steps) at its rank;
- orig: the original tool's 28 edit files (../shared/reference/original-edits) on the size-256 layout
  checkpoint of seed 5 at truncation 0.5, statistics over 6 z's, rank 1; fast and original (3 steps).

`python tests/preserve_reference.py` rewrites tests/data/no_preserve_reference_sha256.json (only to be run
on the code whose results are the reference; it was run on the code before issue 13's method). Float
kernels differ between CPU instruction sets, so the file records the platform it was made on (`_platform`).
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
DEMO_EDITS = ROOT / 'notebooks' / 'masks' / 'demo'
REFERENCE_FILE = ROOT / 'tests' / 'data' / 'no_preserve_reference_sha256.json'
ORIGINAL_NITER = {'demo': 20, 'orig': 3}


def platform() -> str:
    """What the float results depend on besides the code: torch's version and CPU kernel level."""
    return f'torch {torch.__version__}, cpu {torch.backends.cpu.get_cpu_capability()}'


def weight_hash(weight: torch.Tensor) -> str:
    return hashlib.sha256(weight.detach().cpu().contiguous().numpy().tobytes()).hexdigest()


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


def compute_hashes(kind: str, rewriter_for, cases) -> dict[str, str]:
    """Hashes of the weight after each case; rewriter_for(layer) -> a SeqStyleGanRewriter (reverted after)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = {}
        for key, layer, path, solver, rank in cases:
            gw = rewriter_for(layer)
            gw.apply_request(json.loads(path.read_text()), rank=rank, solver=solver, niter=ORIGINAL_NITER[kind])
            out[key] = weight_hash(gw.target_weights())
            gw.revert()
        return out
    finally:
        torch.set_num_threads(threads)


def rewriters(model, stats_size: int):
    """layer -> a SeqStyleGanRewriter of `model` (made once per layer) over z_dataset_for_model(model, 1000)."""
    from rewrite.ganrewrite import SeqStyleGanRewriter
    from utils.zdataset import z_dataset_for_model
    zds = z_dataset_for_model(model, 1000)
    cache = {}

    def get(layer):
        if layer not in cache:
            cache[layer] = SeqStyleGanRewriter(model, zds, layer, stats_size=stats_size, progress=False)
        return cache[layer]
    return get


def demo_rewriters():
    from utils.stylegan2 import load_seq_stylegan
    return rewriters(load_seq_stylegan('demo', truncation=0.5), 50)


def orig_rewriters(checkpoint: dict):
    from utils.stylegan2 import model_from_checkpoint
    return rewriters(model_from_checkpoint(checkpoint, truncation=0.5), 6)


def orig_cases(folder: Path) -> Iterator[tuple[str, int, Path, str, int]]:
    for path in sorted(folder.glob('*/*.json')):
        for solver in ('fast', 'original'):
            yield f'orig/{path.parent.name}/{path.name}/{solver}', orig_layer(path), path, solver, 1


def main() -> None:
    sys.path.insert(0, str(ROOT / 'tests'))
    from conftest import REFERENCE, layout_checkpoint

    from utils.fileio import atomic_write_text
    hashes = {'_platform': platform()}
    hashes.update(compute_hashes('demo', demo_rewriters(), demo_cases()))
    hashes.update(compute_hashes('orig', orig_rewriters(layout_checkpoint(256, seed=5)),
                                 orig_cases(REFERENCE / 'original-edits')))
    atomic_write_text(REFERENCE_FILE, json.dumps(hashes, indent=1) + '\n')
    print(f'{len(hashes)} hashes -> {REFERENCE_FILE}')


if __name__ == '__main__':
    main()
