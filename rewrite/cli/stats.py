"""`rewrite stats`: a layer's key statistics gathered and cached."""

from __future__ import annotations

import argparse
from pathlib import Path

from rewrite.cli import common
from rewrite.cli.editspec import cached_statistics, make_rewriter
from utils.distributed import World

__all__ = ['add_parser', 'NAME', 'run']

NAME = 'stats'


def add_parser(sub) -> argparse.ArgumentParser:
    """The `stats` command's parser, added to the subparsers `sub`."""
    p = sub.add_parser('stats', help="precompute a layer's key statistics cache",
                       description='Gathers the second moment of layerN\'s keys over the seeded z-sample '
                                   '(float64, summed across torchrun processes) and caches it.')
    common.add_model_args(p)
    p.add_argument('--layer', type=int, required=True, help='the layer N (layerN)')
    p.add_argument('--n', '--num-images', type=common.int_between(1, common.MAX_ZSAMPLE, 'MAX_ZSAMPLE'),
                   default=common.DEFAULT_ZSAMPLE, dest='zsample',
                   help=f'z-sample size (default {common.DEFAULT_ZSAMPLE}, at most {common.MAX_ZSAMPLE})')
    p.add_argument('--cachedir', type=Path, default=None, help=f'cache folder (default {common.default_cachedir()})')
    p.add_argument('--batch', type=common.int_at_least(1), default=8,
                   help='images per forward pass (default 8, as the rewriter; quantiles depend on it)')
    return common.finish_parser(p, run)


def run(args, world: World) -> None:
    device = common.pick_device(args.device, world)
    model = common.load_model(args.model, args.truncation, device)
    common.check_layer(model, args.layer)
    cachedir = common.cachedir_from(args)
    gw = make_rewriter(model, args.layer, args.zsample, cachedir, progress=not args.quiet and world.is_main,
                       batch_size=args.batch)
    path, stats = cached_statistics(gw, cachedir, world)
    if not world.is_main:
        return
    if stats is None:
        print(f'statistics already cached: {path}')
    else:
        print(f'layer {args.layer}: second moment of {stats.count} keys x {stats.c_matrix.shape[0]} channels '
              f'over {len(gw.statistics_zs())} images in {world.size} process(es); wrote {path}')
