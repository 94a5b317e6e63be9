"""Statistics of a layer's keys (the per-pixel input vectors of its convolution) over a z-sample.

The second moment C = E[k k^T] (uncentered, float64) defines which key directions are common;
its ZCA matrix C^-1/2 whitens keys, and C^-1 k gives covariance-adjusted query directions.
Results are cached as .npz, keyed by a fingerprint of every weight the keys depend on, the layer,
the sample size, the seed and the truncation, so a cache made for other weights is never reused.
Each file carries a SHA-256 of its arrays (`checksum`), checked on read with the arrays' consistency:
a damaged file is reported by a warning and recomputed, never used. The checksum guards against accidents
(a truncated write, a flipped bit, a file copied over another), not against an attacker: whoever can write
the cache folder can recompute it, so keep the cache folder as private as the model.

A cache that cannot be written (`cache_problem`: the folder is a file, lies under a file, is read-only or a
dangling symbolic link, or the cache file's name is taken by a folder) is found before the statistics are
gathered; the rewriter then warns and keeps them in memory only.
"""

from __future__ import annotations

import hashlib
import os
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from utils.distributed import World, all_reduce_sum, gather_to_main
from utils.fileio import atomic_path, folder_problem
from utils.runningstats import QuantileSample, SecondMoment

__all__ = ['arrays_checksum', 'atomic_savez', 'cache_filename', 'cache_meta', 'cache_problem',
           'cache_unwritable_warning', 'flatten_keys', 'gather_key_statistics', 'KeyStatistics',
           'reduce_moment', 'solve_moment', 'STATS_VERSION', 'weights_fingerprint', 'zca_from_moment']

STATS_VERSION = 2                   # 2: content checksum in the file


def weights_fingerprint(module: torch.nn.Module) -> str:
    """SHA-256 over the names, shapes and bytes of every parameter and buffer of `module`."""
    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f'{name}:{tuple(t.shape)}:{t.dtype}'.encode())
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    return h.hexdigest()


def flatten_keys(fmap: torch.Tensor) -> torch.Tensor:
    """[B, C, H, W] -> per-pixel key vectors [B*H*W, C]."""
    return fmap.permute(0, 2, 3, 1).reshape(-1, fmap.shape[1])


def gather_key_statistics(key_fn: Callable[[torch.Tensor], torch.Tensor], zs: torch.Tensor,
                          batch_size: int = 16, quantiles: bool = True, progress: bool = True,
                          world: World | None = None) -> tuple[SecondMoment, QuantileSample | None]:
    """Runs key_fn(z batch) -> keys [B, C, H, W] over zs [N, D] and accumulates the statistics.

    With a `world` of several processes the batches (zs[b*B:(b+1)*B], B = batch_size, as one process
    takes them) are split across ranks (b % size == rank): the second moments are summed (float64
    all-reduce), so every rank gets the same C, and each batch's quantile rows go to rank 0, which
    merges them in batch order as one process would; the quantiles are on rank 0 only (None elsewhere)."""
    world = world or World()
    moment = SecondMoment()
    qs = QuantileSample() if quantiles else None
    starts = range(0, len(zs), batch_size)
    pending = {}                                   # batch number -> its quantile rows (several processes)
    with torch.no_grad():
        for b in tqdm(world.shard(range(len(starts))), desc='key statistics', disable=not progress, leave=False):
            flat = flatten_keys(key_fn(zs[starts[b]:starts[b] + batch_size]))
            moment.add(flat)
            if qs is not None and world.is_distributed:
                pending[b] = qs.batch_rows(flat)
            elif qs is not None:
                qs.add(flat)
    if not world.is_distributed:
        return moment, qs
    if qs is not None:
        for _, rows in sorted(gather_to_main(pending, world).items()):
            qs.add_rows(rows)
    return reduce_moment(moment, world), qs if world.is_main else None


def reduce_moment(moment: SecondMoment, world: World) -> SecondMoment:
    """The SecondMoment summed over all ranks (float64 sums and counts)."""
    state = moment.state_dict()
    count = all_reduce_sum(torch.tensor([state['count']], dtype=torch.float64), world)
    return SecondMoment({'count': int(count.item()), 'sum_xxt': all_reduce_sum(state['sum_xxt'], world),
                         'sum_x': all_reduce_sum(state['sum_x'], world)})


def zca_from_moment(c: torch.Tensor, eps: float = 1e-20) -> torch.Tensor:
    """C^-1/2 via the eigendecomposition of the symmetric moment (float64 in, float64 out)."""
    evals, evecs = torch.linalg.eigh(c.double())
    return (evecs * evals.clamp(min=eps).rsqrt()[None, :]) @ evecs.t()


def solve_moment(c: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """C^-1 k by a least-squares solve (stable when C is ill-conditioned). k [C] or [N, C]."""
    rhs = k.double()[:, None] if k.dim() == 1 else k.double().t()
    sol = torch.linalg.lstsq(c.double().cpu(), rhs.cpu(), driver='gelsd').solution.to(k.device)
    return (sol[:, 0] if k.dim() == 1 else sol.t()).to(k.dtype)


class KeyStatistics:
    """C, its ZCA matrix, per-unit mean squares and quantiles, for one layer's keys."""

    def __init__(self, moment: SecondMoment, quantiles: QuantileSample | None = None):
        self.second_moment = moment
        self.c_matrix = moment.moment()                    # float64 [C, C]
        self.zca_matrix = zca_from_moment(self.c_matrix)   # float64 [C, C]
        self.unit_mean_square = moment.mean_square()       # float64 [C]
        self.unit_quantiles = quantiles
        self.count = moment.count

    def save(self, path: str | os.PathLike, meta: dict) -> None:
        arrays = {k: np.asarray(v) for k, v in self.second_moment.state_dict().items()}
        if self.unit_quantiles is not None:
            arrays['quantile_table'] = self.unit_quantiles.table().numpy()
        arrays['meta'] = np.array(repr(sorted(meta.items())))
        arrays['checksum'] = np.array(arrays_checksum(arrays))
        atomic_savez(path, **arrays)

    @classmethod
    def load(cls, path: str | os.PathLike, meta: dict) -> KeyStatistics | None:
        """The cached statistics at `path`, or None if absent or made for other inputs. A file that is
        unreadable, fails its checksum or holds inconsistent arrays also gives None, with a warning; so does
        a path that is not a regular file (a folder, a FIFO: never opened), which cache_problem reports."""
        if not os.path.isfile(path):
            return None
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {name: data[name] for name in data.files}
        except FileNotFoundError:
            return None
        except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile) as e:   # truncated or corrupted
            return _damaged(path, f'unreadable ({type(e).__name__}: {e})')
        if 'meta' not in arrays or str(arrays['meta']) != repr(sorted(meta.items())):
            return None                                   # another version or other inputs: recompute
        checksum = arrays.pop('checksum', None)
        if checksum is None or str(checksum) != arrays_checksum(arrays):
            return _damaged(path, 'content checksum does not match')
        problem = _inconsistency(arrays)
        if problem:
            return _damaged(path, problem)
        moment = SecondMoment({'count': int(arrays['count']), 'sum_xxt': torch.from_numpy(arrays['sum_xxt']),
                               'sum_x': torch.from_numpy(arrays['sum_x'])})
        qs = QuantileSample()
        qs.load_state_dict({'table': torch.from_numpy(arrays['quantile_table'])})
        return cls(moment, qs)


def arrays_checksum(arrays: dict[str, np.ndarray]) -> str:
    """SHA-256 over the names, dtypes, shapes and bytes of `arrays` (in name order)."""
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f'{name}:{a.dtype.str}:{a.shape}:'.encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _inconsistency(arrays: dict[str, np.ndarray]) -> str:
    """What is wrong with a cache's arrays ('' if nothing): counts, dtypes, shapes, finiteness."""
    missing = {'count', 'sum_xxt', 'sum_x', 'quantile_table'} - set(arrays)
    if missing:                                   # both writers store the quantile table
        return f'missing arrays {sorted(missing)}'
    count, sum_xxt, sum_x, table = (arrays[k] for k in ('count', 'sum_xxt', 'sum_x', 'quantile_table'))
    c = sum_x.shape[0] if sum_x.ndim == 1 else -1
    if not (count.ndim == 0 and count.dtype.kind in 'iu' and int(count) > 0):
        return f'count must be a positive integer, got {count!r}'
    if not (sum_xxt.dtype == np.float64 and sum_x.dtype == np.float64 and table.dtype.kind == 'f'):
        return f'dtypes must be float64 / float64 / float, got {sum_xxt.dtype} / {sum_x.dtype} / {table.dtype}'
    if not (sum_xxt.shape == (c, c) and table.ndim == 2 and table.shape[0] == c):
        return f'inconsistent shapes {sum_xxt.shape} / {sum_x.shape} / {table.shape}'
    if not (np.isfinite(sum_xxt).all() and np.isfinite(sum_x).all() and np.isfinite(table).all()):
        return 'non-finite values'
    return ''


def _damaged(path: str | os.PathLike, problem: str) -> None:
    warnings.warn(f'statistics cache {path} is damaged ({problem}); recomputing', RuntimeWarning, stacklevel=3)
    return None


def cache_meta(context_model: torch.nn.Module, layernum: int, zs_size: int, seed, truncation: float,
               noise_mode: str) -> dict:
    return {'version': STATS_VERSION, 'weights': weights_fingerprint(context_model), 'layer': int(layernum),
            'size': int(zs_size), 'seed': str(seed), 'truncation': float(truncation), 'noise': noise_mode}


def cache_filename(meta: dict) -> str:
    return (f"keystats-layer{meta['layer']}-n{meta['size']}-seed{meta['seed']}-t{meta['truncation']:g}-"
            f"{meta['weights'][:16]}.npz")


def cache_problem(path: str | os.PathLike) -> str | None:
    """Why the statistics cache file `path` cannot be written, before any work: its folder is not (and
    cannot be created as) a writable folder, or the name is taken by something other than a regular file
    (a folder, a FIFO, a device); None when it can be written."""
    path = Path(path)
    if os.path.lexists(path) and not path.is_file():
        kind = ('a folder' if path.is_dir() else 'a dangling symbolic link' if not path.exists()
                else 'not a regular file')
        return f'the cache file {path} is {kind}'
    problem = folder_problem(path.parent)
    return None if problem is None else f'the cache folder {path.parent} cannot be used: {problem}'


def cache_unwritable_warning(path: str | os.PathLike, problem: str) -> None:
    warnings.warn(f'statistics cache not written ({problem}); the statistics are kept in memory only and '
                  'gathered again next time', RuntimeWarning, stacklevel=3)


def atomic_savez(path: str | os.PathLike, **arrays) -> None:
    with atomic_path(path) as tmp:
        np.savez(tmp, **arrays)
