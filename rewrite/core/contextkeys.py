"""Context keys of a layer: the key statistics over the z-sample (C, ZCA, unit quantiles; gathered on first
use, cached on disk), the keys of selected regions, and the context directions D [rank, I] made of them by
a key method (rewrite/formats/registry.py's KEY_METHODS) or, with preserve regions, by rewrite/core/preserve.py.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import torch

from rewrite.core import keymethods
from rewrite.core.pieces import LayerPieces
from rewrite.core.preserve import context_directions
from rewrite.core.statistics import (
    KeyStatistics,
    cache_filename,
    cache_meta,
    cache_problem,
    cache_unwritable_warning,
    flatten_keys,
    gather_key_statistics,
)
from rewrite.formats import registry as methods
from rewrite.formats.settings import (
    MAX_PRESERVE_WEIGHT,
    PRESERVE_WEIGHT,
    RewriteError,
    check_choice,
    check_rank,
    real_number,
)

__all__ = ['ContextKeys']


class ContextKeys:
    """The keys of `pieces`' layer. Statistics over the first `stats_size` z's, cached in `cachedir` (if given)."""

    def __init__(self, pieces: LayerPieces, stats_size: int, cachedir: Path | None, progress: bool):
        self.pieces, self.stats_size, self.cachedir, self.progress = pieces, stats_size, cachedir, progress
        self.statistics: KeyStatistics | None = None       # gathered (or loaded) on first use of stats

    @property
    def stats(self) -> KeyStatistics:
        if self.statistics is None:
            self.statistics = self.collect_statistics()
        return self.statistics

    def statistics_zs(self) -> torch.Tensor:
        """The z's [N, D] the key statistics are gathered over (the first stats_size of the z-sample)."""
        return self.pieces.all_zs()[:self.stats_size]

    def cache_meta(self) -> dict:
        """What the key statistics depend on (their cache key)."""
        zs = self.statistics_zs().detach().cpu().contiguous()
        raw = (zs.numpy().tobytes() if zs.dtype != torch.bfloat16            # numpy has no bfloat16: its bits
               else b'bfloat16' + zs.view(torch.int16).numpy().tobytes())
        seed = 'z' + hashlib.sha256(raw).hexdigest()[:16]
        model = self.pieces.model
        return cache_meta(self.pieces.context_model, self.pieces.layernum, len(zs), seed,
                          getattr(model, 'truncation', 1.0), getattr(model, 'noise_mode', 'const'))

    def collect_statistics(self, indices: Sequence[int] | None = None) -> KeyStatistics:
        """C (float64), ZCA, unit mean squares and quantiles over the z-sample (or the images `indices`);
        cached when possible."""
        meta = self.cache_meta() if indices is None else None
        path = self.cachedir / cache_filename(meta) if (self.cachedir and meta) else None
        if path is not None and path.is_file():
            cached = KeyStatistics.load(path, meta)
            if cached is not None:
                return cached
        problem = cache_problem(path) if path is not None else None
        if problem is not None:                  # found before the pass: the statistics stay in memory
            cache_unwritable_warning(path, problem)
            path = None
        zs = self.statistics_zs() if indices is None else self.pieces.get_zs(list(indices))
        device, context_model = self.pieces.device, self.pieces.context_model
        moment, quantiles = gather_key_statistics(lambda z: context_model(z.to(device)).fmap, zs,
                                                  self.pieces.batch_size, progress=self.progress)
        stats = KeyStatistics(moment, quantiles)
        if path is not None:
            try:
                stats.save(path, meta)
            except OSError as e:                 # the disk filled, or the folder changed during the pass
                cache_unwritable_warning(path, f'{path}: {e.strerror or e}')
        return stats

    def keys_and_weights(self, pairs, field: str = 'key') -> tuple[torch.Tensor, torch.Tensor]:
        """Per-pixel keys [N, I] and mask weights [N] of the selected pixels of every (imgnum, mask) pair."""
        obs, weights = [], []
        for j, (imgnum, mask) in enumerate(pairs):
            with torch.no_grad():
                keys = self.pieces.context_model(self.pieces.get_z(imgnum)).fmap
            w = self.pieces.area(mask, self.pieces.k_shape[2], f'{field}[{j}]').reshape(-1)
            sel = w > 0
            obs.append(flatten_keys(keys)[sel])
            weights.append(w[sel])
        return torch.cat(obs), torch.cat(weights)

    def directions(self, pairs, rank: int, key_method: str, preserve_pairs=(),
                   preserve_weight: float = PRESERVE_WEIGHT) -> torch.Tensor:
        """Orthonormal context directions D [rank, I] of the regions `pairs` by `key_method`; with preserve
        regions (key_method 'zca' only) and preserve_weight > 0, `rewrite.core.preserve.context_directions`."""
        check_choice(key_method, methods.KEY_METHODS, 'key_method')
        check_rank(rank, self.pieces.k_shape[1])
        if preserve_pairs and not (real_number(preserve_weight, 0.0, strict=False)
                                   and preserve_weight <= MAX_PRESERVE_WEIGHT):
            raise RewriteError(f'preserve_weight must be a finite number between 0 and {MAX_PRESERVE_WEIGHT:g} '
                               f'(MAX_PRESERVE_WEIGHT), not {preserve_weight!r}')
        if not pairs:
            raise RewriteError('no context regions were given')
        obs, w = self.keys_and_weights(pairs)
        with torch.no_grad():
            if key_method == 'zca' and preserve_pairs and preserve_weight > 0:
                if rank > obs.shape[0]:
                    raise RewriteError(f'rank {rank} exceeds the {obs.shape[0]} selected key pixels')
                pobs, pw = self.keys_and_weights(preserve_pairs, 'preserve')
                c_matrix = self.stats.c_matrix.to(obs.device)
                return context_directions(obs, w, c_matrix, rank, pobs, pw, preserve_weight)
            return methods.KEY_METHODS[key_method].directions(self.stats, obs, w, rank)

    def query_key(self, imgnum: int, mask) -> torch.Tensor:
        """The unit covariance-adjusted direction C^-1 mean(k) of a region's keys [I]."""
        with torch.no_grad():
            keys = self.pieces.context_model(self.pieces.get_z(imgnum)).fmap[0]
            area = self.pieces.area(mask, self.pieces.k_shape[2], 'query')
            mean = (keys * area[None]).sum((1, 2)) / (1e-10 + area.sum())
        k = keymethods.covariance_adjusted(self.stats.c_matrix, mean)
        return k / (1e-10 + k.norm())

    def normdissect_units(self, pairs, rank: int) -> torch.Tensor:
        """The `rank` units with the largest mean squared response (normalised by their mean square over the
        z-sample) in the regions `pairs`."""
        obs, w = self.keys_and_weights(pairs)
        scale = self.stats.unit_mean_square.to(obs.device).clamp(min=1e-20)
        score = ((obs.double() ** 2 / scale[None]) * w[:, None]).sum(0) / w.sum()
        return score.argsort(descending=True)[:rank]
