"""`rewrite apply`: an edit applied and the rewritten generator saved."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rewrite.cli import common
from rewrite.cli.editspec import edit_spec_from_args, edit_summary, run_edit, spec_rewriter
from utils.distributed import World
from utils.generators import save_generator

__all__ = ['add_parser', 'NAME', 'run']

NAME = 'apply'


def add_parser(sub) -> argparse.ArgumentParser:
    """The `apply` command's parser, added to the subparsers `sub`."""
    p = sub.add_parser('apply', help='apply an edit and save the rewritten generator (checkpoint layout)')
    common.add_model_args(p)
    common.add_edit_args(p, edit_required=True)
    p.add_argument('--out', type=Path, required=True, help='the .pt file to write')
    return common.finish_parser(p, run)


def run(args, world: World) -> None:
    common.single_process(world, 'apply')
    device = common.pick_device(args.device, world)
    model = common.load_model(args.model, args.truncation, device)
    spec = edit_spec_from_args(args, model)
    common.check_writable_file(args.out, '--out')
    gw = spec_rewriter(model, spec)
    record = run_edit(gw, spec)
    info = spec.describe() | {'edit_file': str(args.edit), 'truncation': args.truncation,
                              'initial_loss': record.initial_loss, 'final_loss': record.final_loss}
    save_generator(gw.model, args.out, edit_info=json.dumps(info))
    print(f'{edit_summary(record)}; wrote {args.out}')
