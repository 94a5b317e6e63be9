"""The command line: `python -m rewrite {sample,apply,stats,demo,advise,convert,notebook} ...` (also `rewrite ...`).

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

One module a command (rewrite/cli/<command>.py: NAME, add_parser(sub), run(args, world)); COMMANDS is the
registry build_parser reads, in the order `--help` lists them.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import torch

from rewrite.cli import advise, apply, convert, demo, notebook, sample, sampling, stats
from rewrite.cli.common import (
    COLLECTIVE_TIMEOUT_S,
    EXIT_BAD_INPUT,
    CliError,
    _int_at_least,
    _one_line,
    _Parser,
    default_threads,
    environment_world,
    one_line_warnings,
)
from utils.distributed import (
    process_group,
)

COMMANDS = (sample, apply, stats, demo, advise, convert, notebook)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog='rewrite', description='Rewrite the rules of a StyleGAN2 and sample from it.')
    sub = parser.add_subparsers(dest='command', metavar='{' + ','.join(c.NAME for c in COMMANDS) + '}',
                                parser_class=_Parser)
    sub.required = True
    for command in COMMANDS:
        command.add_parser(sub)
    for command in sub.choices.values():
        command.add_argument('--threads', type=_int_at_least(1), default=default_threads(),
                             help=f'CPU threads torch may use (default {default_threads()}: OMP_NUM_THREADS when '
                                  'set, else half the logical CPUs, at most 8; 1 is best on a busy machine)')
    return parser

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
