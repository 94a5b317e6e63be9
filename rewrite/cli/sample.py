"""`rewrite sample`: images 0..n-1 of a (possibly edited) generator written as PNGs (torchrun splits them)."""

from __future__ import annotations

import argparse
from pathlib import Path

from rewrite.cli import common, sampling
from rewrite.cli.editspec import EditSpec, edit_spec_from_args, edited_model_on_every_rank
from rewrite.core.statistics import weights_fingerprint
from utils.distributed import World, barrier
from utils.stylegan2 import SeqStyleGAN2

__all__ = ['add_parser', 'NAME', 'run', 'sample_settings']

NAME = 'sample'


def add_parser(sub) -> argparse.ArgumentParser:
    """The `sample` command's parser, added to the subparsers `sub`."""
    p = sub.add_parser('sample', help='write images 0..n-1 of a (possibly edited) generator as PNGs',
                       description='Writes DIR/{i:06d}.png for i in [start, start + n) and DIR/grid.png '
                                   '(the first 64). Image i is drawn from z_sample_for_model(model, 1, '
                                   'seed=i + seed_offset). Resumable: complete images are kept.')
    common.add_model_args(p)
    common.add_edit_args(p, edit_required=False)
    p.add_argument('--n', '--num-images', type=common.int_at_least(1), required=True, dest='n',
                   help='number of images (--num-images: the same, for torchrun, whose parser takes --n)')
    p.add_argument('--out', type=Path, required=True, help='output folder')
    p.add_argument('--batch', type=common.int_at_least(1), default=8, help='images per forward pass (default 8)')
    p.add_argument('--start', '--first', type=common.int_at_least(0), default=0, dest='start',
                   help='first image number (default 0; --first: the same, for torchrun, whose parser takes --start)')
    p.add_argument('--seed-offset', type=common.int_at_least(0), default=0,
                   help=f'added to each image number to get its seed (default 0; the original used '
                        f'{sampling.FID_SEED_OFFSET} for its held-out FID set)')
    return common.finish_parser(p, run)


def sample_settings(args, model: SeqStyleGAN2, spec: EditSpec | None) -> dict:
    """What defines the images in a sample folder: a resumed run must match it."""
    settings = {'weights': weights_fingerprint(model), 'size': model.size, 'truncation': args.truncation,
                'noise_mode': getattr(model, 'noise_mode', 'const'), 'seed_offset': args.seed_offset,
                'pixels': sampling.PIXEL_FORMAT}
    if spec is not None:
        settings['edit'] = spec.describe()
    return settings


def run(args, world: World) -> None:
    device = common.pick_device(args.device, world)
    model = common.load_model(args.model, args.truncation, device)
    spec = edit_spec_from_args(args, model)
    common.check_writable_dir(args.out, '--out')
    settings = sample_settings(args, model, spec)
    sampling.check_manifest(args.out, settings)
    if spec is not None:
        model = edited_model_on_every_rank(model, spec, world)
    args.out.mkdir(parents=True, exist_ok=True)
    if world.is_main:
        sampling.write_manifest(args.out, settings)
    indices = list(range(args.start, args.start + args.n))
    desc = f'sampling (rank 0 of {world.size})' if world.is_distributed else 'sampling'
    written = sampling.sample_to_folder(model, args.out, world.shard(indices), args.batch, args.seed_offset,
                                        progress=not args.quiet and world.is_main, desc=desc)
    barrier(world)
    if world.is_main:
        grid = sampling.write_contact_sheet(args.out, indices)
        print(f'{len(indices)} images in {args.out} ({len(written)} new from rank 0 of {world.size}); '
              f'contact sheet {grid}')
