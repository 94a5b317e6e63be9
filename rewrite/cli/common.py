"""What every command shares: its errors, argument types and groups, threads, model loading and the checks of paths."""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

from rewrite.core.rewriter import DEFAULT_SOLVER
from rewrite.formats.registry import SOLVERS
from rewrite.formats.savededits import notebooks_dir
from rewrite.formats.settings import PRESERVE_WEIGHT
from utils.distributed import World, world_from_env
from utils.generators import load_generator
from utils.stylegan2 import SeqStyleGAN2, rewrite_site
from utils.stylegan2.checkpoint import DEFAULT_TRUNCATION

__all__ = ['check_layer', 'check_writable_dir', 'check_writable_file', 'CliError', 'COLLECTIVE_TIMEOUT_S',
           'default_cachedir', 'default_threads', 'DEFAULT_ZSAMPLE', 'DEMO_EDIT_DIR', 'DEMO_LAYER',
           'EDIT_HELP', 'environment_world', 'EXIT_BAD_INPUT', 'finish_parser', 'load_model', 'MAX_ZSAMPLE',
           'one_line_warnings', 'pick_device', 'single_process']

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


class Parser(argparse.ArgumentParser):
    """argparse whose usage errors are one line (raised as CliError) instead of usage + message."""

    def error(self, message: str):
        raise CliError(f'{message} (see {self.prog} --help)')


def int_at_least(low: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f'expected an integer, got {text!r}') from None
        if value < low:
            raise argparse.ArgumentTypeError(f'must be >= {low}, got {value}')
        return value
    return parse


def int_between(low: int, high: int, limit: str) -> Callable[[str], int]:
    """An integer option in [low, high], checked before anything is allocated (`limit`: the constant's name)."""
    at_least = int_at_least(low)

    def parse(text: str) -> int:
        value = at_least(text)
        if value > high:
            raise argparse.ArgumentTypeError(f'must be at most {high} ({limit}), got {value}')
        return value
    return parse


def finite_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'expected a number, got {text!r}') from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f'must be a finite number >= 0, got {text}')
    return value


def add_model_args(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument('--model', required=required, default=None if required else 'demo',
                   help="checkpoint file, 'demo', or a release name (church, faces, horse, ...)")
    p.add_argument('--truncation', type=finite_float, default=DEFAULT_TRUNCATION,
                   help=f'truncation psi (default {DEFAULT_TRUNCATION}, as the original release)')
    p.add_argument('--device', default=None, help='torch device (default: cuda:LOCAL_RANK if available, else cpu)')

EDIT_HELP = ("edit file (JSON saved by the rewriting UI), or demo/NAME for a bundled edit (as the widget's Load "
             "names them)")


def add_edit_args(p: argparse.ArgumentParser, edit_required: bool) -> None:
    p.add_argument('--edit', type=Path, required=edit_required, help=EDIT_HELP)
    p.add_argument('--layer', type=int, default=None,
                   help="the layer N to rewrite (layerN); default: the layer the edit file records (a different "
                        "--layer applies the edit there anyway and says so)")
    p.add_argument('--rank', type=int_at_least(1), default=None,
                   help="rank of the weight change (default: the edit file's rank, else 1)")
    add_solver_args(p)
    add_stats_args(p)


def add_solver_args(p: argparse.ArgumentParser) -> None:
    p.add_argument('--solver', choices=list(SOLVERS), default=None,
                   help='; '.join(f'{s.name}: {s.summary}' for s in SOLVERS.values())
                   + f" (default: the edit file's solver, else {DEFAULT_SOLVER})")
    p.add_argument('--niter', type=int_at_least(1), default=None,
                   help="iterations of the 'original' and 'linear' solvers (default: the edit file's, else 2001)")
    p.add_argument('--preserve-weight', type=finite_float, default=None,
                   help="weight of the edit file's 'preserve' regions (outputs kept as they are; 0 ignores "
                        "them; default: the file's 'preserve_weight' field, else "
                        f"{PRESERVE_WEIGHT}); a number given here wins over the file's")


def add_stats_args(p: argparse.ArgumentParser, stats_n: bool = True) -> None:
    p.add_argument('--zsample', type=int_between(1, MAX_ZSAMPLE, 'MAX_ZSAMPLE'), default=DEFAULT_ZSAMPLE,
                   help=f'size of the seeded z-sample indexed by image numbers (default {DEFAULT_ZSAMPLE}, '
                        f'at most {MAX_ZSAMPLE})')
    if stats_n:
        p.add_argument('--stats-n', type=int_at_least(1), default=None,
                       help='gather the key statistics over the first N images of the z-sample only (default: '
                            'all of it); lets an edit that refers to image 5000 (--zsample 5001) use 1000')
    p.add_argument('--cachedir', type=Path, default=None,
                   help=f'key statistics cache (default {default_cachedir()})')


def default_threads() -> int:
    """--threads default: OMP_NUM_THREADS when it is a positive integer, else half the logical CPUs
    (1..8). torch's own default (one per core) crawls when anything else uses the CPU."""
    env = os.environ.get('OMP_NUM_THREADS', '').strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    return max(1, min(8, (os.cpu_count() or 2) // 2))


def one_line(text: str) -> str:
    return ' '.join(str(text).split())


def load_model(spec: str, truncation: float, device: torch.device) -> SeqStyleGAN2:
    """The generator named by --model (of any registered family, utils/generators/families.py), or CliError."""
    try:
        model = load_generator(spec, truncation=truncation)
    except (FileNotFoundError, ValueError, RuntimeError) as e:
        raise CliError(f'cannot load --model {spec}: {one_line(e)}') from None
    return model.to(device)


def check_layer(model: SeqStyleGAN2, layer: int) -> None:
    try:
        rewrite_site(model, layer)
    except ValueError as e:
        raise CliError(f'--layer: {e}') from None


def nearest_existing(path: Path) -> Path:
    path = path.absolute()
    while not os.path.lexists(path) and path != path.parent:      # a dangling symlink stops the walk
        path = path.parent
    return path


def check_writable_dir(path: Path, what: str) -> None:
    """`path` is, or can be created as, a folder we can write into (probed with an invisible temp file)."""
    if path.exists() and not path.is_dir():
        raise CliError(f'{what} {path} exists and is not a folder')
    base = nearest_existing(path)
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
        raise CliError(f'--device {requested}: {one_line(e)}') from None
    return device


def cachedir_from(args) -> Path:
    path = args.cachedir if args.cachedir is not None else default_cachedir()
    check_writable_dir(path, '--cachedir')
    return path


def single_process(world: World, command: str) -> None:
    if world.is_distributed:
        raise CliError(f'{command} runs in one process: launch it without torchrun')


@contextlib.contextmanager
def one_line_warnings() -> Iterator[None]:
    """Warnings print as single 'rewrite: warning: ...' lines on stderr."""
    def show(message, category, filename, lineno, file=None, line=None):
        print(f'rewrite: warning: {one_line(message)}', file=sys.stderr)
    with warnings.catch_warnings():
        warnings.showwarning = show
        yield


def finish_parser(p: argparse.ArgumentParser, run) -> argparse.ArgumentParser:
    """A command's last options: --quiet (no progress bars), and `run(args, world)` as what the command does."""
    p.add_argument('--quiet', action='store_true', help='no progress bars')
    p.set_defaults(run=run)
    return p
