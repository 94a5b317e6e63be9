"""`rewrite demo`: a bundled edit applied to the demo model, a before/after grid written and its metrics printed."""

from __future__ import annotations

import argparse
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from rewrite.cli import common, sampling
from rewrite.cli.editspec import (
    EditSpec,
    edit_spec_from_args,
    edit_summary,
    read_setting,
    resolve_edit_path,
    run_edit,
    spec_rewriter,
)
from rewrite.core.rewriter import SeqStyleGanRewriter
from rewrite.formats.editfile import setting_from_name
from utils.distributed import World
from utils.stylegan2 import SeqStyleGAN2

__all__ = ['add_parser', 'demo_edit_file', 'demo_metrics', 'demo_setting', 'NAME', 'preserve_difference',
           'request_images', 'run']

NAME = 'demo'


def add_parser(sub) -> argparse.ArgumentParser:
    """The `demo` command's parser, added to the subparsers `sub`."""
    p = sub.add_parser('demo', help='apply a bundled edit to the demo model; write a before/after grid',
                       description=f'Applies an edit from {common.DEMO_EDIT_DIR} to the bundled demo generator, '
                                   'writes a before/after grid PNG and prints the edit\'s metrics.')
    common.add_model_args(p, required=False)
    p.add_argument('--edit', type=Path, default=None,
                   help=common.EDIT_HELP + ' (default: the first bundled demo edit)')
    p.add_argument('--layer', type=int, default=None,
                   help=f'layer to rewrite (default: the layer the edit file records, else layerN in its file name, '
                        f'else {common.DEMO_LAYER})')
    p.add_argument('--rank', type=common.int_at_least(1), default=None,
                   help="rank of the weight change (default: the edit file's rank, else rankR in its file name, "
                        "else 1)")
    common.add_solver_args(p)
    common.add_stats_args(p)
    p.add_argument('--images', type=common.int_at_least(1), default=8, help='image pairs in the grid (default 8)')
    p.add_argument('--out', type=Path, default=Path('demo_before_after.png'), help='grid PNG to write')
    return common.finish_parser(p, run)


def demo_edit_file(requested: Path | None) -> Path:
    if requested is not None:
        return resolve_edit_path(requested)
    found = sorted(common.DEMO_EDIT_DIR.glob('*.json'))
    if not found:
        raise common.CliError(f'no bundled demo edit: {common.DEMO_EDIT_DIR} has no *.json file (pass --edit FILE)')
    return found[0]


def demo_setting(layer: int | None, rank: int | None, edit_path: Path) -> tuple[int, int | None]:
    """(layer, rank): the ones asked for, else those the edit file records, else those its file name records
    (NAME_layerN[_rankR]; rank None: the file's own, see edit_spec_from_args)."""
    recorded = read_setting(edit_path) if edit_path.is_file() else {}     # a missing file is reported later
    named_layer, named_rank = setting_from_name(edit_path)
    if layer is None:
        layer = recorded.get('layer', named_layer if named_layer is not None else common.DEMO_LAYER)
    if rank is None and 'rank' not in recorded:
        rank = named_rank
    return layer, rank


def request_images(request: dict) -> list[int]:
    """The image numbers an edit request refers to."""
    pairs = [request[name] for name in ('object', 'paste', 'query') if name in request] + request.get('key', [])
    return sorted({int(pair[0]) for pair in pairs})


def run(args, world: World) -> None:
    common.single_process(world, 'demo')
    device = common.pick_device(args.device, world)
    model = common.load_model(args.model, args.truncation, device)
    args.edit = demo_edit_file(args.edit)
    args.layer, args.rank = demo_setting(args.layer, args.rank, args.edit)
    spec = edit_spec_from_args(args, model)
    common.check_writable_file(args.out, '--out')
    gw = spec_rewriter(model, spec)
    unkept = preserve_difference(gw, spec)
    record = run_edit(gw, spec)
    used = request_images(spec.request)
    shown = (used + [i for i in range(args.zsample) if i not in used])[:args.images]
    z = gw.get_zs(shown)
    with torch.no_grad():
        before, after = sampling.to_uint8(model(z)), sampling.to_uint8(gw.model(z))
    sampling.write_png(sampling.contact_sheet(list(before) + list(after), cols=len(shown)), args.out)
    print(f'demo edit {args.edit} on layer {spec.layer}, rank {spec.rank}')
    for line in demo_metrics(model, gw, record, before, after, shown):
        print(line)
    if unkept is not None:
        print(unkept)
    print(f'wrote {args.out} (top row: images {shown} of the original model; bottom row: the edited model)')


def preserve_difference(gw: SeqStyleGanRewriter, spec: EditSpec) -> str | None:
    """For an edit file with preserve regions (and a weight > 0): how much the same edit without them
    (--preserve-weight 0) changes those regions' layer outputs (applied and undone); else None."""
    if not spec.request.get('preserve') or spec.preserve_weight == 0:
        return None
    keep = gw.preserve_from_selection([tuple(pair) for pair in spec.request['preserve']])
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', RuntimeWarning)
        gw.apply_request(spec.request, rank=spec.rank, niter=spec.niter, solver=spec.solver, preserve_weight=0.0)
    with torch.no_grad():
        change = keep.change(gw.target_model(keep.key).fmap).item()
    gw.undo()
    return f'without its preserve regions (--preserve-weight 0) the edit would change them {change:.4g}'


def demo_metrics(original: SeqStyleGAN2, gw: SeqStyleGanRewriter, record, before: np.ndarray,
                 after: np.ndarray, shown: Sequence[int]) -> Iterator[str]:
    """Lines describing the edit: its loss, the relative weight change, the pixel change per image."""
    w0 = original.get_submodule(gw.firstlayer).weight.detach()
    change = (gw.target_weights().detach() - w0).norm() / w0.norm()
    diff = np.abs(before.astype(np.int16) - after.astype(np.int16)).mean(axis=(1, 2, 3))
    yield edit_summary(record)
    yield f'relative change of the layer {gw.layernum} weight: {change.item():.4g}'
    yield 'mean |pixel change| (0-255) per image: ' + ', '.join(
        f'{i}: {d:.2f}' for i, d in zip(shown, diff, strict=True))
