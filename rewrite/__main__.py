"""Command line: `python -m rewrite {sample,apply,stats,demo,advise,convert,notebook} ...` (also `rewrite ...`).

    rewrite sample --model church.pt --n 10000 --out samples/clean
    rewrite sample --model church.pt --edit dome2spire.json --layer 8 --n 10000 --out samples/spire
    rewrite apply  --model church.pt --edit dome2spire.json --layer 8 --out church-spire.pt
    rewrite stats  --model church.pt --layer 8 --n 1000
    rewrite demo
    rewrite notebook my-notebook/      # the notebook and the bundled edits, copied out of the package
    torchrun --nproc_per_node=4 -m rewrite -- sample ...  # images split across processes (i % 4 == rank)

Under torchrun put `--` before the command (torchrun's own parser would take --n and --start), or
use their spellings --num-images and --first.

Every input is checked before anything is written; a bad one ends the run with one line on stderr
and exit status 2. Every command takes --threads (default: OMP_NUM_THREADS, else half the logical CPUs, at
most 8); the defaults are those of the library: the fast solver (DEFAULT_SOLVER) and truncation 0.5
(DEFAULT_TRUNCATION).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import os
import re
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from utils.fileio import atomic_write_bytes, atomic_write_text
from utils.generators import load_generator, save_generator
from utils.stylegan2 import SeqStyleGAN2, rewrite_site, save_checkpoint
from utils.stylegan2.checkpoint import DEFAULT_TRUNCATION
from utils.zdataset import z_dataset_for_model

from . import advisor, sampling
from .distributed import (
    World,
    all_agree,
    barrier,
    broadcast_module,
    process_group,
    world_from_env,
)
from .editfile import EditFileError, load_edit, setting_from_name
from .ganrewrite import DEFAULT_SOLVER, RewriteError, SeqStyleGanRewriter
from .methods import SOLVERS
from .preserve import MAX_PRESERVE_WEIGHT, PRESERVE_WEIGHT, preserve_weight_for
from .savededits import SavedEditError, notebook_files, notebooks_dir, saved_edit_path
from .statistics import KeyStatistics, cache_filename, cache_problem, gather_key_statistics, weights_fingerprint

DEFAULT_ZSAMPLE = 1000              # the original's z-sample for statistics and image numbers
MAX_ZSAMPLE = 100_000               # --zsample / stats --n at most (z [N, 512] and a statistics pass over all N)
DEMO_EDIT_DIR = notebooks_dir() / 'masks' / 'demo'        # the checkout's, or the installed package data
DEMO_LAYER = 6
EXIT_BAD_INPUT = 2
COLLECTIVE_TIMEOUT_S = 6 * 3600     # other ranks wait while rank 0 applies an edit


class CliError(Exception):
    """Bad input: reported as one line on stderr, exit status 2."""


def default_cachedir() -> Path:
    """Where key statistics are cached unless --cachedir says otherwise (files are keyed by weights)."""
    base = os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
    return Path(base) / 'gan-rewriting' / 'keystats'


# ---------------------------------------------------------------------------------------------------
# argument parsing
# ---------------------------------------------------------------------------------------------------

class _Parser(argparse.ArgumentParser):
    """argparse whose usage errors are one line (raised as CliError) instead of usage + message."""

    def error(self, message: str):
        raise CliError(f'{message} (see {self.prog} --help)')


def _int_at_least(low: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f'expected an integer, got {text!r}') from None
        if value < low:
            raise argparse.ArgumentTypeError(f'must be >= {low}, got {value}')
        return value
    return parse


def _int_between(low: int, high: int, limit: str) -> Callable[[str], int]:
    """An integer option in [low, high], checked before anything is allocated (`limit`: the constant's name)."""
    at_least = _int_at_least(low)

    def parse(text: str) -> int:
        value = at_least(text)
        if value > high:
            raise argparse.ArgumentTypeError(f'must be at most {high} ({limit}), got {value}')
        return value
    return parse


def _finite_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'expected a number, got {text!r}') from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f'must be a finite number >= 0, got {text}')
    return value


def _add_model_args(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument('--model', required=required, default=None if required else 'demo',
                   help="checkpoint file, 'demo', or a release name (church, faces, horse, ...)")
    p.add_argument('--truncation', type=_finite_float, default=DEFAULT_TRUNCATION,
                   help=f'truncation psi (default {DEFAULT_TRUNCATION}, as the original release)')
    p.add_argument('--device', default=None, help='torch device (default: cuda:LOCAL_RANK if available, else cpu)')


EDIT_HELP = ("edit file (JSON saved by the rewriting UI), or demo/NAME for a bundled edit (as the widget's Load "
             "names them)")


def _add_edit_args(p: argparse.ArgumentParser, edit_required: bool) -> None:
    p.add_argument('--edit', type=Path, required=edit_required, help=EDIT_HELP)
    p.add_argument('--layer', type=int, default=None,
                   help="the layer N to rewrite (layerN); default: the layer the edit file records (a different "
                        "--layer applies the edit there anyway and says so)")
    p.add_argument('--rank', type=_int_at_least(1), default=None,
                   help="rank of the weight change (default: the edit file's rank, else 1)")
    _add_solver_args(p)
    _add_stats_args(p)


def _add_solver_args(p: argparse.ArgumentParser) -> None:
    p.add_argument('--solver', choices=list(SOLVERS), default=None,
                   help='; '.join(f'{s.name}: {s.summary}' for s in SOLVERS.values())
                   + f" (default: the edit file's solver, else {DEFAULT_SOLVER})")
    p.add_argument('--niter', type=_int_at_least(1), default=None,
                   help="iterations of the 'original' and 'linear' solvers (default: the edit file's, else 2001)")
    p.add_argument('--preserve-weight', type=_finite_float, default=None,
                   help="weight of the edit file's 'preserve' regions (outputs kept as they are; 0 ignores "
                        "them; default: the file's 'preserve_weight' field, else "
                        f"{PRESERVE_WEIGHT}); a number given here wins over the file's")


def _add_stats_args(p: argparse.ArgumentParser, stats_n: bool = True) -> None:
    p.add_argument('--zsample', type=_int_between(1, MAX_ZSAMPLE, 'MAX_ZSAMPLE'), default=DEFAULT_ZSAMPLE,
                   help=f'size of the seeded z-sample indexed by image numbers (default {DEFAULT_ZSAMPLE}, '
                        f'at most {MAX_ZSAMPLE})')
    if stats_n:
        p.add_argument('--stats-n', type=_int_at_least(1), default=None,
                       help='gather the key statistics over the first N images of the z-sample only (default: '
                            'all of it); lets an edit that refers to image 5000 (--zsample 5001) use 1000')
    p.add_argument('--cachedir', type=Path, default=None,
                   help=f'key statistics cache (default {default_cachedir()})')


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog='rewrite', description='Rewrite the rules of a StyleGAN2 and sample from it.')
    sub = parser.add_subparsers(dest='command', metavar='{sample,apply,stats,demo,advise,convert,notebook}',
                                parser_class=_Parser)
    sub.required = True

    p = sub.add_parser('sample', help='write images 0..n-1 of a (possibly edited) generator as PNGs',
                       description='Writes DIR/{i:06d}.png for i in [start, start + n) and DIR/grid.png '
                                   '(the first 64). Image i is drawn from z_sample_for_model(model, 1, '
                                   'seed=i + seed_offset). Resumable: complete images are kept.')
    _add_model_args(p)
    _add_edit_args(p, edit_required=False)
    p.add_argument('--n', '--num-images', type=_int_at_least(1), required=True, dest='n',
                   help='number of images (--num-images: the same, for torchrun, whose parser takes --n)')
    p.add_argument('--out', type=Path, required=True, help='output folder')
    p.add_argument('--batch', type=_int_at_least(1), default=8, help='images per forward pass (default 8)')
    p.add_argument('--start', '--first', type=_int_at_least(0), default=0, dest='start',
                   help='first image number (default 0; --first: the same, for torchrun, whose parser takes --start)')
    p.add_argument('--seed-offset', type=_int_at_least(0), default=0,
                   help=f'added to each image number to get its seed (default 0; the original used '
                        f'{sampling.FID_SEED_OFFSET} for its held-out FID set)')
    p.add_argument('--quiet', action='store_true', help='no progress bars')
    p.set_defaults(run=run_sample)

    p = sub.add_parser('apply', help='apply an edit and save the rewritten generator (checkpoint layout)')
    _add_model_args(p)
    _add_edit_args(p, edit_required=True)
    p.add_argument('--out', type=Path, required=True, help='the .pt file to write')
    p.add_argument('--quiet', action='store_true', help='no progress bars')
    p.set_defaults(run=run_apply)

    p = sub.add_parser('stats', help="precompute a layer's key statistics cache",
                       description='Gathers the second moment of layerN\'s keys over the seeded z-sample '
                                   '(float64, summed across torchrun processes) and caches it.')
    _add_model_args(p)
    p.add_argument('--layer', type=int, required=True, help='the layer N (layerN)')
    p.add_argument('--n', '--num-images', type=_int_between(1, MAX_ZSAMPLE, 'MAX_ZSAMPLE'), default=DEFAULT_ZSAMPLE,
                   dest='zsample', help=f'z-sample size (default {DEFAULT_ZSAMPLE}, at most {MAX_ZSAMPLE})')
    p.add_argument('--cachedir', type=Path, default=None, help=f'cache folder (default {default_cachedir()})')
    p.add_argument('--batch', type=_int_at_least(1), default=8,
                   help='images per forward pass (default 8, as the rewriter; quantiles depend on it)')
    p.add_argument('--quiet', action='store_true', help='no progress bars')
    p.set_defaults(run=run_stats)

    p = sub.add_parser('demo', help='apply a bundled edit to the demo model; write a before/after grid',
                       description=f'Applies an edit from {DEMO_EDIT_DIR} to the bundled demo generator, '
                                   'writes a before/after grid PNG and prints the edit\'s metrics.')
    _add_model_args(p, required=False)
    p.add_argument('--edit', type=Path, default=None,
                   help=EDIT_HELP + ' (default: the first bundled demo edit)')
    p.add_argument('--layer', type=int, default=None,
                   help=f'layer to rewrite (default: the layer the edit file records, else layerN in its file name, '
                        f'else {DEMO_LAYER})')
    p.add_argument('--rank', type=_int_at_least(1), default=None,
                   help="rank of the weight change (default: the edit file's rank, else rankR in its file name, "
                        "else 1)")
    _add_solver_args(p)
    _add_stats_args(p)
    p.add_argument('--images', type=_int_at_least(1), default=8, help='image pairs in the grid (default 8)')
    p.add_argument('--out', type=Path, default=Path('demo_before_after.png'), help='grid PNG to write')
    p.add_argument('--quiet', action='store_true', help='no progress bars')
    p.set_defaults(run=run_demo)

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
                                   '         further away); an erase, the same share of the targets\' distance\n'
                                   '         to what should replace them (the nearest patch around the targets\n'
                                   '         in the same image or around the paste region)\n'
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
                                   'suggested --layer/--rank.')
    _add_model_args(p)
    p.add_argument('--edit', type=Path, required=True, help=EDIT_HELP)
    p.add_argument('--layers', type=int, nargs='+', default=None,
                   help='layers to try (default: every layer; those too small for the masks are listed as skipped)')
    p.add_argument('--ranks', type=_int_at_least(1), nargs='+', default=[1, 2, 3], help='ranks to try (default 1 2 3)')
    p.add_argument('--heldout', type=_int_between(1, advisor.MAX_HELDOUT, 'MAX_HELDOUT'), default=advisor.HELDOUT_N,
                   help=f'held-out samples that score each setting (default {advisor.HELDOUT_N}, at most '
                        f'{advisor.MAX_HELDOUT})')
    p.add_argument('--heldout-truncation', type=_finite_float, default=advisor.HELDOUT_TRUNCATION,
                   help='truncation of the held-out samples (default 1: the whole distribution; the edit '
                        'itself uses --truncation)')
    _add_stats_args(p)
    p.add_argument('--top', type=_int_at_least(1), default=3, help='settings shown in the picture (default 3)')
    p.add_argument('--out', type=Path, required=True, help='folder for advice.json and advice.png')
    p.add_argument('--quiet', action='store_true', help='no progress bars')
    p.set_defaults(run=run_advise)

    p = sub.add_parser('convert', help="convert an NVlabs StyleGAN2-ADA .pkl to the {'g_ema', 'latent_avg'} .pt layout",
                       description='Reads IN.pkl as data (nothing it carries runs) and writes OUT.pt atomically.')
    p.add_argument('source', type=Path, help='the NVlabs network-snapshot-*.pkl')
    p.add_argument('dest', type=Path, help='the .pt file to write')
    p.set_defaults(run=run_convert)

    p = sub.add_parser('notebook', help='copy the demonstration notebook and the bundled edits into a folder',
                       description=f'Copies {notebooks_dir() / "rewriting-interface.ipynb"}, '
                                   f'{notebooks_dir() / "reflection-rule-change.ipynb"} and the bundled edits '
                                   '(masks/demo/*.json) into DIR, for an installed package whose files live in '
                                   'site-packages. Existing files are never replaced.')
    p.add_argument('dest', type=Path, nargs='?', default=Path('rewrite-notebook'),
                   help='the folder to copy into (default ./rewrite-notebook; created if missing)')
    p.set_defaults(run=run_notebook)
    for command in sub.choices.values():
        command.add_argument('--threads', type=_int_at_least(1), default=default_threads(),
                             help=f'CPU threads torch may use (default {default_threads()}: OMP_NUM_THREADS when '
                                  'set, else half the logical CPUs, at most 8; 1 is best on a busy machine)')
    return parser


def default_threads() -> int:
    """--threads default: OMP_NUM_THREADS when it is a positive integer, else half the logical CPUs
    (1..8). torch's own default (one per core) crawls when anything else uses the CPU."""
    env = os.environ.get('OMP_NUM_THREADS', '').strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    return max(1, min(8, (os.cpu_count() or 2) // 2))


def run_notebook(args: argparse.Namespace, world) -> None:
    """notebook [DIR]: the notebook and masks/demo/*.json copied into DIR (nothing replaced)."""
    single_process(world, 'notebook')
    check_writable_dir(args.dest, 'DIR')
    files = notebook_files(args.dest)
    missing = [str(source) for source, _ in files if not source.is_file()]
    if missing:
        raise CliError(f'the package has no {", ".join(missing)}: reinstall it (pip install .)')
    existing = [str(target) for _, target in files if os.path.lexists(target)]
    if existing:
        raise CliError(f'{", ".join(existing)} already exist(s): nothing was copied; choose another DIR or move them')
    for _, target in files:                     # every folder on the way, before anything is copied
        for folder in reversed(target.relative_to(args.dest).parents):
            folder = args.dest / folder
            if os.path.lexists(folder) and not folder.is_dir():
                raise CliError(f'{folder} exists and is not a folder (it would hold {target.name}): nothing was '
                               'copied; choose another DIR or move it')
    try:
        copy_all_or_nothing(files)
    except OSError as e:
        raise CliError(f'cannot copy into {args.dest} ({e.strerror or e}): nothing was copied') from None
    print(f'wrote {files[0][1]}, {files[1][1]}, {files[2][1]} and {len(files) - 3} bundled edits in '
          f'{args.dest / "masks" / "demo"}; '
          f'open it with `jupyter lab {files[0][1]}` (kernel "Python (rewrite)" if setup/install.sh installed it), '
          f'or `cd {args.dest} && voila {files[0][1].name}`')


def copy_all_or_nothing(files: list[tuple[Path, Path]]) -> None:
    """Copies each (source, target) atomically, creating folders; on any failure the files and folders
    made so far are removed again, so a copy is complete or absent."""
    made: list[Path] = []
    try:
        for source, target in files:
            made += [folder for folder in reversed(target.parents) if not os.path.lexists(folder)]
            target.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(target, source.read_bytes())
            made.append(target)
    except BaseException:
        for path in reversed(made):
            with contextlib.suppress(OSError):
                if path.is_dir() and not path.is_symlink():
                    path.rmdir()
                else:
                    path.unlink()
        raise


def run_convert(args: argparse.Namespace, world) -> None:
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


# ---------------------------------------------------------------------------------------------------
# validation (nothing is written until all of it passed)
# ---------------------------------------------------------------------------------------------------

def _one_line(text: str) -> str:
    return ' '.join(str(text).split())


def load_model(spec: str, truncation: float, device: torch.device) -> SeqStyleGAN2:
    """The generator named by --model (of any registered family, utils/generators.py), or CliError."""
    try:
        model = load_generator(spec, truncation=truncation)
    except (FileNotFoundError, ValueError, RuntimeError) as e:
        raise CliError(f'cannot load --model {spec}: {_one_line(e)}') from None
    return model.to(device)


def check_layer(model: SeqStyleGAN2, layer: int) -> None:
    try:
        rewrite_site(model, layer)
    except ValueError as e:
        raise CliError(f'--layer: {e}') from None


def load_edit_request(path: Path, model: SeqStyleGAN2, layer: int, zsample: int) -> dict:
    """The edit file as a validated JSON dict (image numbers within the z-sample, masks non-empty at the layer)."""
    try:
        request = load_edit(path, num_images=zsample, layer_resolution=rewrite_site(model, layer).mask_resolution)
    except OSError as e:
        raise CliError(f'cannot read --edit {path}: {e.strerror or e}') from None
    except EditFileError as e:
        needed = re.search(r'a z-sample of at least (\d+) images', str(e))
        fix = (f'; pass --zsample {needed[1]} (image numbers index the z-sample; --stats-n N still gathers '
               'the key statistics over its first N images only)') if needed else ''
        raise CliError(f'bad --edit {path}: {_one_line(e)}{fix}') from None
    return request.to_json()


def _nearest_existing(path: Path) -> Path:
    path = path.absolute()
    while not os.path.lexists(path) and path != path.parent:      # a dangling symlink stops the walk
        path = path.parent
    return path


def check_writable_dir(path: Path, what: str) -> None:
    """`path` is, or can be created as, a folder we can write into (probed with an invisible temp file)."""
    if path.exists() and not path.is_dir():
        raise CliError(f'{what} {path} exists and is not a folder')
    base = _nearest_existing(path)
    if base.is_symlink() and not base.exists():
        raise CliError(f'{what} {path} cannot be created: {base} is a dangling symbolic link')
    if not base.is_dir():
        raise CliError(f'{what} {path} cannot be created: {base} is not a folder')
    try:
        with tempfile.TemporaryFile(dir=base):
            pass
    except OSError as e:
        raise CliError(f'{what} {path} is not writable ({e.strerror or e})') from None


def check_writable_file(path: Path, what: str) -> None:
    if path.is_dir():
        raise CliError(f'{what} {path} is a folder, expected a file name')
    if path.exists() and not path.is_file():
        raise CliError(f'{what} {path} exists and is not a regular file (a device or FIFO is never replaced)')
    check_writable_dir(path.parent, f'the folder of {what}')


def environment_world() -> World:
    try:
        return world_from_env()
    except ValueError as e:
        raise CliError(str(e)) from None


def pick_device(requested: str | None, world: World) -> torch.device:
    if requested is None:
        return world.device()
    try:
        device = torch.device(requested)
        torch.empty(0, device=device)
    except (RuntimeError, ValueError) as e:
        raise CliError(f'--device {requested}: {_one_line(e)}') from None
    return device


def _cachedir(args) -> Path:
    path = args.cachedir if args.cachedir is not None else default_cachedir()
    check_writable_dir(path, '--cachedir')
    return path


def single_process(world: World, command: str) -> None:
    if world.is_distributed:
        raise CliError(f'{command} runs in one process: launch it without torchrun')


# ---------------------------------------------------------------------------------------------------
# the rewriter
# ---------------------------------------------------------------------------------------------------

@dataclass
class EditSpec:
    """A validated edit to make: request (JSON dict), layer and solver settings."""
    request: dict
    layer: int
    rank: int
    solver: str
    niter: int
    zsample: int
    cachedir: Path
    progress: bool
    stats_n: int | None = None
    preserve_weight: float = PRESERVE_WEIGHT
    other_layer: bool = False           # --layer differs from the layer the edit file records: applied anyway

    def describe(self) -> dict:
        """What defines the edit's result (the request by its hash)."""
        text = json.dumps(self.request, sort_keys=True).encode()
        described = {'request_sha256': hashlib.sha256(text).hexdigest(), 'layer': self.layer, 'rank': self.rank,
                     'solver': self.solver, 'niter': self.niter, 'zsample': self.zsample}
        described |= {'preserve_weight': self.preserve_weight} if 'preserve' in self.request else {}
        return described | ({'stats_n': self.stats_n} if self.stats_n is not None else {})


def check_stats_n(args) -> None:
    """--stats-n (statistics over the first N images of the z-sample) fits in --zsample."""
    if args.stats_n is not None and args.stats_n > args.zsample:
        raise CliError(f'--stats-n {args.stats_n} exceeds --zsample {args.zsample}: the key statistics are '
                       f'gathered over the first --stats-n images of the z-sample; pass --stats-n <= {args.zsample}')


def resolve_edit_path(path: Path) -> Path:
    """--edit as given, or, when no such file exists, demo/NAME[.json] resolved to the bundled edit of that name
    (the name the widget's Load takes)."""
    if path.exists() or path.parts[:1] != ('demo',):
        return path
    try:
        bundled = saved_edit_path(DEMO_EDIT_DIR.parent, path.as_posix())
    except SavedEditError as e:
        raise CliError(f'--edit {path}: {e}') from None
    if not bundled.is_file():
        known = ', '.join(f'demo/{p.stem}' for p in sorted(DEMO_EDIT_DIR.glob('*.json'))) or 'none'
        raise CliError(f'--edit {path}: no such file, and no bundled edit of that name (bundled: {known})')
    return bundled


def read_setting(path: Path) -> dict:
    """The fields of the edit file that record how it was made (layer, rank, solver, solver_options, model)."""
    try:
        return load_edit(path).setting()
    except OSError as e:
        raise CliError(f'cannot read --edit {path}: {e.strerror or e}') from None
    except EditFileError as e:
        raise CliError(f'bad --edit {path}: {_one_line(e)}') from None


def edit_spec_from_args(args, model: SeqStyleGAN2) -> EditSpec | None:
    """The validated edit of --edit/--layer (None without --edit). --layer, --rank, --solver and --niter
    default to what the edit file records; a --layer other than the file's applies it there and says so."""
    if args.edit is None:
        if args.layer is not None:
            raise CliError('--layer is given without --edit')
        return None
    args.edit = resolve_edit_path(args.edit)
    recorded = read_setting(args.edit)
    layer = args.layer if args.layer is not None else recorded.get('layer')
    if layer is None:
        raise CliError(f'--edit {args.edit} records no layer: pass --layer N')
    other_layer = 'layer' in recorded and layer != recorded['layer']
    check_layer(model, layer)
    request = load_edit_request(args.edit, model, layer, args.zsample)
    rank = args.rank if args.rank is not None else recorded.get('rank', 1)
    channels = rewrite_site(model, layer).in_channels
    if rank > channels:
        raise CliError(f'--rank {rank} exceeds the {channels} input channels of layer {layer}')
    check_stats_n(args)
    solver = args.solver if args.solver is not None else recorded.get('solver', DEFAULT_SOLVER)
    options = recorded.get('solver_options', {}) if solver == recorded.get('solver') else {}
    niter = args.niter if args.niter is not None else options.get('niter', 2001)
    weight = preserve_weight_for(args.preserve_weight, request.get('preserve_weight'))
    if weight > MAX_PRESERVE_WEIGHT:
        raise CliError(f'--preserve-weight {weight:g} is above {MAX_PRESERVE_WEIGHT:g} (MAX_PRESERVE_WEIGHT: '
                       'a weight of 1 already removes a rank-1 edit)')
    if other_layer:
        print(f'rewrite: warning: --layer {layer} overrides the layer {recorded["layer"]} that {args.edit} records: '
              f'the edit is applied at layer {layer} anyway (its regions and rank were chosen for layer '
              f'{recorded["layer"]}; leave --layer out to use that one)', file=sys.stderr)
    return EditSpec(request, layer, rank, solver, niter, args.zsample, _cachedir(args),
                    not args.quiet, args.stats_n, weight, other_layer)


def make_rewriter(model: SeqStyleGAN2, layer: int, zsample: int, cachedir: Path, progress: bool,
                  batch_size: int = 8, stats_n: int | None = None) -> SeqStyleGanRewriter:
    zds = z_dataset_for_model(model, size=zsample, seed=1)
    return SeqStyleGanRewriter(model, zds, layer, cachedir=cachedir, progress=progress, batch_size=batch_size,
                               stats_size=stats_n)


def spec_rewriter(model: SeqStyleGAN2, spec: EditSpec, progress: bool = True) -> SeqStyleGanRewriter:
    """The rewriter the edit `spec` runs in (its .model is a copy of `model`)."""
    return make_rewriter(model, spec.layer, spec.zsample, spec.cachedir, spec.progress and progress,
                         stats_n=spec.stats_n)


def run_edit(gw: SeqStyleGanRewriter, spec: EditSpec):
    """Applies the edit file's request to gw.model (copy and paste, erase, or context only: apply_request)
    with a progress bar of the solver's steps; warns on stderr when the loss ended above where it started.
    Returns the EditRecord."""
    _ = gw.stats                                # key statistics first: they have their own progress bar
    steps = SOLVERS[spec.solver].steps(spec.niter)
    with tqdm(total=steps, desc=f'solving ({spec.solver})', disable=not spec.progress, leave=False) as bar:
        def progress(_step: int, loss: float) -> None:
            bar.set_postfix_str(f'loss {loss:.4g}', refresh=False)
            bar.update(1)
        try:
            with warnings.catch_warnings():       # a rise is reported below, once; so is another layer
                warnings.filterwarnings('ignore', message='the goal loss rose', category=RuntimeWarning)
                warnings.filterwarnings('ignore', message='applying an edit made for layer', category=RuntimeWarning)
                record = gw.apply_request(spec.request, rank=spec.rank, niter=spec.niter, solver=spec.solver,
                                          update_callback=progress, preserve_weight=spec.preserve_weight,
                                          allow_other_layer=spec.other_layer)
        except (RewriteError, FloatingPointError) as e:
            raise CliError(f'the edit cannot be applied: {_one_line(e)}') from None
    if record.rolled_back:                      # far worse than no change: refused, nothing is written
        raise CliError(f'the edit cannot be applied: {record.warning} (--solver, --niter, --layer, --rank)')
    if record.final_loss > record.initial_loss:
        print(f'rewrite: warning: the {record.kind} ended worse than it started (loss {record.initial_loss:.4g} -> '
              f'{record.final_loss:.4g}, solver {record.solver}); the result is kept: try another --solver, '
              '--layer or --rank', file=sys.stderr)
    return record


def edit_summary(record) -> str:
    if record.kind == 'zero':
        damage = '' if record.heldout_change is None else f'; {damage_text(record)}'
        return f'context rule removed: layer {record.layer}, rank {record.rank} in {record.seconds:.1f}s{damage}'
    kept = ('' if record.preserve_change is None else
            f'; preserve regions changed {record.preserve_change:.4g} (weight {record.preserve_weight:g})')
    damage = '' if record.heldout_change is None else f'; {damage_text(record)}'
    return (f'{record.kind} applied: layer {record.layer}, solver {record.solver}, rank {record.rank}, loss '
            f'{record.initial_loss:.4g} -> {record.final_loss:.4g} in {record.seconds:.1f}s{kept}{damage}')


def damage_text(record) -> str:
    """'held-out change 0.012 (inside the paste region 0.21), below the damage threshold 0.05' or 'above ...'."""
    inside = '' if record.paste_change is None else f' (inside the paste region {record.paste_change:.3f})'
    side = 'above' if record.damage_warning else 'below'
    return (f'held-out change {record.heldout_change:.3f}{inside}, {side} the damage threshold '
            f'{record.damage_threshold:g}')


def edited_model_on_every_rank(model: SeqStyleGAN2, spec: EditSpec, world: World) -> SeqStyleGAN2:
    """Every rank gathers its share of the key statistics into the cache; rank 0 applies the edit and the
    other ranks receive its weights, so every rank samples the same model."""
    gw = spec_rewriter(model, spec, progress=world.is_main)
    if world.is_distributed:
        cached_statistics(gw, spec.cachedir, world)
    if world.is_main:
        print(edit_summary(run_edit(gw, spec)), file=sys.stderr)
    broadcast_module(gw.model, world)
    return gw.model.eval()


# ---------------------------------------------------------------------------------------------------
# commands
# ---------------------------------------------------------------------------------------------------

def sample_settings(args, model: SeqStyleGAN2, spec: EditSpec | None) -> dict:
    """What defines the images in a sample folder: a resumed run must match it."""
    settings = {'weights': weights_fingerprint(model), 'size': model.size, 'truncation': args.truncation,
                'noise_mode': getattr(model, 'noise_mode', 'const'), 'seed_offset': args.seed_offset,
                'pixels': sampling.PIXEL_FORMAT}
    if spec is not None:
        settings['edit'] = spec.describe()
    return settings


def run_sample(args, world: World) -> None:
    device = pick_device(args.device, world)
    model = load_model(args.model, args.truncation, device)
    spec = edit_spec_from_args(args, model)
    check_writable_dir(args.out, '--out')
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


def run_apply(args, world: World) -> None:
    single_process(world, 'apply')
    device = pick_device(args.device, world)
    model = load_model(args.model, args.truncation, device)
    spec = edit_spec_from_args(args, model)
    check_writable_file(args.out, '--out')
    gw = spec_rewriter(model, spec)
    record = run_edit(gw, spec)
    info = spec.describe() | {'edit_file': str(args.edit), 'truncation': args.truncation,
                              'initial_loss': record.initial_loss, 'final_loss': record.final_loss}
    save_generator(gw.model, args.out, edit_info=json.dumps(info))
    print(f'{edit_summary(record)}; wrote {args.out}')


def run_stats(args, world: World) -> None:
    device = pick_device(args.device, world)
    model = load_model(args.model, args.truncation, device)
    check_layer(model, args.layer)
    cachedir = _cachedir(args)
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


def cached_statistics(gw: SeqStyleGanRewriter, cachedir: Path, world: World) -> tuple[Path, KeyStatistics | None]:
    """Makes sure the rewriter's key statistics are in `cachedir`, gathered across every rank when they are
    not: (the cache file, the statistics gathered now, or None when they were cached already)."""
    zs, meta = statistics_inputs(gw)
    path = cachedir / cache_filename(meta)
    problem = cache_problem(path)
    if problem is not None:                     # before the pass, not after it
        raise CliError(f'--cachedir: {problem}')
    if all_agree(KeyStatistics.load(path, meta) is not None, world):
        return path, None
    stats = gather_statistics(gw, zs, world)
    if world.is_main:
        stats.save(path, meta)
    barrier(world)
    return path, stats


def statistics_inputs(gw: SeqStyleGanRewriter) -> tuple[torch.Tensor, dict]:
    """(the z's [N, D] the rewriter gathers statistics over, its cache key)."""
    return gw.statistics_zs(), gw.cache_meta()


def gather_statistics(gw: SeqStyleGanRewriter, zs: torch.Tensor, world: World) -> KeyStatistics:
    """KeyStatistics of the rewriter's layer over zs [N, D], the batches split across ranks
    (`rewrite.statistics.gather_key_statistics` with `world`: the same C on every rank, quantiles on rank 0)."""
    moment, quantiles = gather_key_statistics(lambda z: gw.context_model(z.to(gw.device)).fmap, zs, gw.batch_size,
                                              progress=gw.progress, world=world)
    return KeyStatistics(moment, quantiles)


# ---------------------------------------------------------------------------------------------------
# demo
# ---------------------------------------------------------------------------------------------------

def demo_edit_file(requested: Path | None) -> Path:
    if requested is not None:
        return resolve_edit_path(requested)
    found = sorted(DEMO_EDIT_DIR.glob('*.json'))
    if not found:
        raise CliError(f'no bundled demo edit: {DEMO_EDIT_DIR} has no *.json file (pass --edit FILE)')
    return found[0]


def demo_setting(layer: int | None, rank: int | None, edit_path: Path) -> tuple[int, int | None]:
    """(layer, rank): the ones asked for, else those the edit file records, else those its file name records
    (NAME_layerN[_rankR]; rank None: the file's own, see edit_spec_from_args)."""
    recorded = read_setting(edit_path) if edit_path.is_file() else {}     # a missing file is reported later
    named_layer, named_rank = setting_from_name(edit_path)
    if layer is None:
        layer = recorded.get('layer', named_layer if named_layer is not None else DEMO_LAYER)
    if rank is None and 'rank' not in recorded:
        rank = named_rank
    return layer, rank


def request_images(request: dict) -> list[int]:
    """The image numbers an edit request refers to."""
    pairs = [request[name] for name in ('object', 'paste', 'query') if name in request] + request.get('key', [])
    return sorted({int(pair[0]) for pair in pairs})


def run_demo(args, world: World) -> None:
    single_process(world, 'demo')
    device = pick_device(args.device, world)
    model = load_model(args.model, args.truncation, device)
    args.edit = demo_edit_file(args.edit)
    args.layer, args.rank = demo_setting(args.layer, args.rank, args.edit)
    spec = edit_spec_from_args(args, model)
    check_writable_file(args.out, '--out')
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


# ---------------------------------------------------------------------------------------------------
# advise
# ---------------------------------------------------------------------------------------------------

def run_advise(args, world: World) -> None:
    """Sweeps layers x ranks for --edit; prints the table, writes advice.json and advice.png in --out."""
    single_process(world, 'advise')
    args.edit = resolve_edit_path(args.edit)
    check_stats_n(args)
    device = pick_device(args.device, world)
    model = load_model(args.model, args.truncation, device)
    for layer in args.layers or []:
        check_layer(model, layer)
    try:
        request = advisor.read_request(args.edit)         # validated by advise, before anything is written
        advisor.check_request(request, args.zsample)
    except RewriteError as e:
        raise CliError(f'bad --edit {args.edit}: {_one_line(e)}') from None
    check_writable_dir(args.out, '--out')
    cachedir = _cachedir(args)
    zds = z_dataset_for_model(model, size=args.zsample, seed=1)
    try:
        advice = advisor.advise(model, zds, request, layers=args.layers, ranks=args.ranks, cachedir=cachedir,
                                heldout=args.heldout, heldout_truncation=args.heldout_truncation,
                                progress=not args.quiet, stats_size=args.stats_n)
    except RewriteError as e:
        raise CliError(f'cannot advise on --edit {args.edit}: {_one_line(e)}') from None
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
        print(f'suggested: --layer {advice.best.layer} --rank {advice.best.rank}'
              + ('' if advice.sure else ' (not sure: compare the first rows, see above)'))
    print(f'sweep {advice.seconds:.1f}s; wrote {", ".join(str(p) for p in wrote)}')


# ---------------------------------------------------------------------------------------------------
# entry point
# ---------------------------------------------------------------------------------------------------

@contextlib.contextmanager
def one_line_warnings() -> Iterator[None]:
    """Warnings print as single 'rewrite: warning: ...' lines on stderr."""
    def show(message, category, filename, lineno, file=None, line=None):
        print(f'rewrite: warning: {_one_line(message)}', file=sys.stderr)
    with warnings.catch_warnings():
        warnings.showwarning = show
        yield


def main(argv: Sequence[str] | None = None) -> int:
    """Runs one command with --threads torch threads (restored afterwards); returns the exit status
    (0 ok, 2 bad input)."""
    threads = torch.get_num_threads()
    try:
        args = build_parser().parse_args(argv)
        torch.set_num_threads(args.threads)
        world = environment_world()
        with one_line_warnings(), process_group(world, timeout_s=COLLECTIVE_TIMEOUT_S):
            args.run(args, world)
    except (CliError, sampling.SampleFolderError) as e:
        print(f'rewrite: error: {_one_line(e)}', file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print('rewrite: interrupted (no partial file is left; a sample run resumes where it stopped)', file=sys.stderr)
        return 130
    finally:
        torch.set_num_threads(threads)
    return 0


if __name__ == '__main__':
    sys.exit(main())
