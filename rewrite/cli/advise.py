"""`rewrite advise`: a label-free sweep of layers and ranks for an edit (rewrite/analysis/advisor.py)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rewrite.analysis import advisor
from rewrite.cli import common, sampling
from rewrite.cli.editspec import check_stats_n, resolve_edit_path
from rewrite.core.rewriter import RewriteError
from utils.distributed import World
from utils.fileio import atomic_write_text
from utils.zdataset import z_dataset_for_model

__all__ = ['add_parser', 'NAME', 'run']

NAME = 'advise'


def add_parser(sub) -> argparse.ArgumentParser:
    """The `advise` command's parser, added to the subparsers `sub`."""
    p = sub.add_parser('advise', help='suggest a --layer and --rank for an edit (a label-free sweep)',
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description='Applies the edit with the fast solver at every layer of --layers and rank\n'
                                   'of --ranks and scores each setting from the model and the edit alone (no\n'
                                   'labels), on --heldout samples that are not in the z-sample (drawn at\n'
                                   '--heldout-truncation, default 1: the model\'s whole distribution):\n'
                                   '  fit    share of the goal loss at the layer that the edit removed (0..1)\n'
                                   '  paste  mean |pixel change| inside the pasted region of the paste image\n'
                                   '  reach  mean |pixel change| of held-out samples where the context key '
                                   'responds\n         strongly (the pixels the new rule should change)\n'
                                   '  leak   mean |pixel change| of held-out samples away from what the edit is\n'
                                   '         about: outside the pixels that look like the source or the object\n'
                                   '         (nearest exemplar patch, below) before or after (should stay 0)\n'
                                   '  preserve  mean |pixel change| in the edit\'s preserve regions, if any\n'
                                   '  size   relative change of the layer\'s weight, |W\' - W| / |W|\n'
                                   '  attain how far the held-out targets went where the edit asked, not just how\n'
                                   '         much they changed, in the output image\'s 3x3 RGB patches at 32x32\n'
                                   '         (the same space for every layer), compared with exemplar patches of\n'
                                   '         the edit\'s own regions (object, source: paste and context, other):\n'
                                   '         an edit, the share of the targets\' distance to the nearest object\n'
                                   '         patch that it closed (1: all the way, 0: no closer, negative:\n'
                                   '         further away); an erase, the share of the source-like targets\'\n'
                                   '         source-likeness d_rep / (d_rep + d_source) that it removed\n'
                                   '         (d_rep: to the nearest patch of what should replace them, around\n'
                                   '         the targets in the same image or around the paste region; 0:\n'
                                   '         removes nothing, 1: the targets look like their surroundings)\n'
                                   '  effect reach x fit (ranks the table only when no held-out target exists)\n'
                                   '  score  the ranking: of the settings whose attain is within '
                                   f'{round(100 * advisor.ATTAIN_TOLERANCE)}% of\n         the best\'s, the '
                                   'one that leaks least is best (score 1..2, higher leaks\n         less); the '
                                   'others score attain / best attain (0..1)\n'
                                   '  not sure  printed when the ranking is not firm: the first setting wins too\n'
                                   '         few resamples of the held-out samples (the top settings are within\n'
                                   '         noise), or the attainment barely spreads across the settings\n'
                                   'Pixel changes are of images in [-1, 1], averaged over RGB. Writes\n'
                                   'DIR/advice.json (the table) and DIR/advice.png (first row: held-out samples;\n'
                                   'then for each of the --top settings the edited samples and their leak maps:\n'
                                   'change in red, the rule\'s targets outlined in green), and prints the\n'
                                   'first setting\'s --layer/--rank: a shortlist\'s head, not a verdict (on edits\n'
                                   'it was not tuned on it agreed with a segmenter\'s choice less than half the time:\n'
                                   'metrics/README.md).')
    common.add_model_args(p)
    p.add_argument('--edit', type=Path, required=True, help=common.EDIT_HELP)
    p.add_argument('--layers', type=int, nargs='+', default=None,
                   help='layers to try (default: every layer; those too small for the masks are listed as skipped)')
    p.add_argument('--ranks', type=common.int_at_least(1), nargs='+', default=[1, 2, 3],
                   help='ranks to try (default 1 2 3)')
    p.add_argument('--heldout', type=common.int_between(1, advisor.MAX_HELDOUT, 'MAX_HELDOUT'),
                   default=advisor.HELDOUT_N,
                   help=f'held-out samples that score each setting (default {advisor.HELDOUT_N}, at most '
                        f'{advisor.MAX_HELDOUT})')
    p.add_argument('--heldout-truncation', type=common.finite_float, default=advisor.HELDOUT_TRUNCATION,
                   help='truncation of the held-out samples (default 1: the whole distribution; the edit '
                        'itself uses --truncation)')
    common.add_stats_args(p)
    p.add_argument('--top', type=common.int_at_least(1), default=3, help='settings shown in the picture (default 3)')
    p.add_argument('--out', type=Path, required=True, help='folder for advice.json and advice.png')
    return common.finish_parser(p, run)


def run(args, world: World) -> None:
    """Sweeps layers x ranks for --edit; prints the table, writes advice.json and advice.png in --out."""
    common.single_process(world, 'advise')
    args.edit = resolve_edit_path(args.edit)
    check_stats_n(args)
    device = common.pick_device(args.device, world)
    model = common.load_model(args.model, args.truncation, device)
    for layer in args.layers or []:
        common.check_layer(model, layer)
    try:
        request = advisor.read_request(args.edit)         # validated by advise, before anything is written
        advisor.check_request(request, args.zsample)
    except RewriteError as e:
        raise common.CliError(f'bad --edit {args.edit}: {common.one_line(e)}') from None
    common.check_writable_dir(args.out, '--out')
    cachedir = common.cachedir_from(args)
    zds = z_dataset_for_model(model, size=args.zsample, seed=1)
    try:
        advice = advisor.advise(model, zds, request, layers=args.layers, ranks=args.ranks, cachedir=cachedir,
                                heldout=args.heldout, heldout_truncation=args.heldout_truncation,
                                progress=not args.quiet, stats_size=args.stats_n)
    except RewriteError as e:
        raise common.CliError(f'cannot advise on --edit {args.edit}: {common.one_line(e)}') from None
    args.out.mkdir(parents=True, exist_ok=True)
    info = {'edit_file': str(args.edit), 'model': str(args.model), 'truncation': args.truncation,
            'zsample': args.zsample, 'stats_n': args.stats_n}
    atomic_write_text(args.out / 'advice.json', json.dumps(info | advice.to_json(), indent=1) + '\n')
    wrote = [args.out / 'advice.json']
    if advice.best is not None:
        sampling.write_png(advisor.advice_picture(advice, top=args.top), args.out / 'advice.png')
        wrote.append(args.out / 'advice.png')
    print(advice.text_table())
    if advice.best is None:
        print('no setting worked (see the table)')
    else:
        print(f'first in the ranking: --layer {advice.best.layer} --rank {advice.best.rank}'
              + ('' if advice.sure else ' (not sure: compare the first rows, see above)'))
        print(f'the ranking is a shortlist, not a verdict: look at the first rows in {args.out / "advice.png"} '
              'before choosing')
    print(f'sweep {advice.seconds:.1f}s; wrote {", ".join(str(p) for p in wrote)}')
