"""`rewrite convert IN.pkl OUT.pt`: an NVlabs StyleGAN2-ADA snapshot read as data and written as a checkpoint."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch

from rewrite.cli.common import CliError, check_writable_file, load_model
from utils.stylegan2 import save_checkpoint

__all__ = ['add_parser', 'check_convert_paths', 'NAME', 'run']

NAME = 'convert'


def add_parser(sub) -> argparse.ArgumentParser:
    """The `convert` command's parser, added to the subparsers `sub`."""
    p = sub.add_parser('convert', help="convert an NVlabs StyleGAN2-ADA .pkl to the {'g_ema', 'latent_avg'} .pt layout",
                       description='Reads IN.pkl as data (nothing it carries runs) and writes OUT.pt atomically.')
    p.add_argument('source', type=Path, help='the NVlabs network-snapshot-*.pkl')
    p.add_argument('dest', type=Path, help='the .pt file to write')
    p.set_defaults(run=run)
    return p


def run(args: argparse.Namespace, world) -> None:
    """convert IN.pkl OUT.pt: load_seq_stylegan(IN.pkl) then save_checkpoint (conv_clamp kept)."""
    if args.source.suffix.lower() != '.pkl':
        raise CliError(f'convert: {args.source} is not a .pkl file (NVlabs StyleGAN2-ADA snapshot expected)')
    check_convert_paths(args.source, args.dest)
    model = load_model(str(args.source), truncation=1.0, device=torch.device('cpu'))
    if world.is_main:
        save_checkpoint(model, args.dest)
        print(f'wrote {args.dest}: {model.size} px, style_dim {model.style_dim}, conv_clamp {model.conv_clamp}')


def check_convert_paths(source: Path, dest: Path) -> None:
    """Before any conversion work: the source is a regular file and the destination a writable file name
    that is not the source itself (the same file by any name: a hard link or a symlink to it)."""
    if not source.is_file():
        raise CliError(f'convert: {source} is not a readable file')
    try:
        same = dest.exists() and os.path.samefile(source, dest)
    except OSError as e:
        raise CliError(f'convert: cannot check DEST {dest} ({e.strerror or e})') from None
    if same:
        raise CliError(f'convert: DEST {dest} is the source file {source} (the same file): writing it would '
                       'replace the pickle; choose another file name, e.g. '
                       f'{source.with_suffix(".pt").name}')
    check_writable_file(dest, 'DEST')
