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

Defaults, threads and limits
----------------------------
The commands write only where `--out` (or `--cachedir`) says; in a checkout, the README's paths above (`samples/`,
`edited/`, `edited.pt`, `cache/`, ...) and the notebook's `notebooks/masks/` files (besides the bundled `demo/`) are
git-ignored. One set of defaults: the `fast` solver (`--solver original` is the paper's 2001 Adam steps, with a
progress bar, minutes on a CPU), truncation 0.5 (`--truncation`; the same default as `load_seq_stylegan`;
`SeqStyleGAN2(...)` and `model_from_checkpoint` keep 1.0). `--layer`, `--rank`, `--solver` and `--niter` default to
what the edit file records (its other solver options are used with its solver); a file that records no layer needs
`--layer`, and a `--layer` other than the file's applies the edit there anyway and says so on stderr (`rewrite:
warning: --layer 6 overrides the layer 8 ...`). `--edit demo/NAME` names a bundled edit as the widget's Load does.
`apply` and `sample` print the change's held-out change (and a `rewrite: warning:` line above the damage threshold).
A file with an erase (`paste` without `object`) or only `key` regions runs too (`apply_request`). A change that ends
with a higher loss than it started is kept and reported on stderr (`rewrite: warning: ...`); one more than 50% above
its start (`rewrite.core.history.LOSS_TOLERANCE`) is rolled back: the API warns and sets `record.rolled_back`, the
command line stops with exit status 2 and writes nothing. Image numbers index the `--zsample` (default 1000); an
edit that refers to image 5000 needs `--zsample 5001`, and `--stats-n 1000` then gathers the key statistics over the
first 1000 images only (the error for out-of-range image numbers lists them all and says so). (Timings:
metrics/README.md.) Masks are fractions of the image: a mask of any square size (the widget paints 256 px whatever
the model) is resampled to the layer, so a 1024 px edit applied to a 256 px model means what its 256 px version
would.

**Threads.** Every command takes `--threads N` (default: `OMP_NUM_THREADS` when set, else half the logical CPUs, at
most 8). torch's own default, one thread per core, crawls when anything else uses the CPU (metrics/README.md has an
example). In the notebook set `THREADS` in the parameters cell (it calls `torch.set_num_threads`), or start Jupyter
with `OMP_NUM_THREADS=1 jupyter lab` on a busy machine.

**Limits.** Sizes are checked before anything is allocated, each with a message naming its limit: `--zsample` and
`stats --n` at most 100000 (`MAX_ZSAMPLE`), the advisor's `--heldout` at most 1000
(`rewrite.analysis.advisor.MAX_HELDOUT`), at most 100 regions in each of an edit file's `key` and `preserve` lists
(`rewrite.formats.fields.MAX_REGIONS`), `preserve_weight` between 0 and 1000
(`rewrite.formats.settings.MAX_PRESERVE_WEIGHT`; a weight of 1 already removes a rank-1 edit). `convert` refuses a
destination that is the source itself (by any name: a hard link or a symlink to it) or that cannot be written,
before reading the pickle; `notebook` copies all of its files or none. An edit interrupted with Ctrl-C, however many
times, leaves the weights as they were.

One module a command (rewrite/cli/<command>.py: NAME, add_parser(sub), run(args, world)); COMMANDS is the
registry build_parser reads, in the order `--help` lists them.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import torch

from rewrite.cli import advise, apply, common, convert, demo, notebook, sample, sampling, stats
from utils.distributed import process_group

__all__ = ['build_parser', 'COMMANDS', 'main']

COMMANDS = (sample, apply, stats, demo, advise, convert, notebook)


def build_parser() -> argparse.ArgumentParser:
    parser = common.Parser(prog='rewrite', description='Rewrite the rules of a StyleGAN2 and sample from it.')
    sub = parser.add_subparsers(dest='command', metavar='{' + ','.join(c.NAME for c in COMMANDS) + '}',
                                parser_class=common.Parser)
    sub.required = True
    for command in COMMANDS:
        command.add_parser(sub)
    for command in sub.choices.values():
        command.add_argument('--threads', type=common.int_at_least(1), default=common.default_threads(),
                             help=f'CPU threads torch may use (default {common.default_threads()}: '
                                  'OMP_NUM_THREADS when '
                                  'set, else half the logical CPUs, at most 8; 1 is best on a busy machine)')
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs one command with --threads torch threads (restored afterwards); returns the exit status
    (0 ok, 2 bad input)."""
    threads = torch.get_num_threads()
    try:
        args = build_parser().parse_args(argv)
        torch.set_num_threads(args.threads)
        world = common.environment_world()
        with common.one_line_warnings(), process_group(world, timeout_s=common.COLLECTIVE_TIMEOUT_S):
            args.run(args, world)
    except (common.CliError, sampling.SampleFolderError) as e:
        print(f'rewrite: error: {common.one_line(e)}', file=sys.stderr)
        return common.EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print('rewrite: interrupted (no partial file is left; a sample run resumes where it stopped)', file=sys.stderr)
        return 130
    finally:
        torch.set_num_threads(threads)
    return 0


if __name__ == '__main__':
    sys.exit(main())
