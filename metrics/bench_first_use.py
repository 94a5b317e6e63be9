"""What `rewrite apply` costs a new user on the demo model: the whole z-sample's key statistics vs `--stats-n`,
and the fast solver vs the original one, each from a cold statistics cache.

    python -m metrics.bench_first_use --threads 1 2      # prints a table, writes metrics/results/first_use.json

Each row runs `rewrite apply` in-process on the bundled dome2spire edit (layer 8, rank 3; its image numbers
reach 996, so --zsample is 1000) with a fresh --cachedir, and reports the wall time and the edit's loss,
for each --threads count (on a busy machine fewer threads can be faster: the README's threads advice).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import tempfile
from pathlib import Path

from metrics.report import machine_info, markdown_table, write_json
from metrics.timing import timed
from rewrite import __main__ as cli

EDIT = Path(__file__).resolve().parents[1] / 'notebooks' / 'masks' / 'demo' / 'dome2spire_layer8_rank3.json'
OUT = Path(__file__).resolve().parent / 'results' / 'first_use.json'
SETTINGS = [('fast', None), ('fast', 200), ('original', 200)]      # (solver, --stats-n)


def run_apply(solver: str, stats_n: int | None, threads: int) -> dict:
    """One cold `rewrite apply`: {'seconds', 'loss', 'status'}."""
    with tempfile.TemporaryDirectory() as scratch:
        args = ['apply', '--model', 'demo', '--edit', str(EDIT), '--layer', '8', '--rank', '3', '--solver', solver,
                '--zsample', '1000', '--cachedir', f'{scratch}/cache', '--out', f'{scratch}/e.pt', '--quiet',
                '--threads', str(threads)] + (['--stats-n', str(stats_n)] if stats_n else [])
        out, err = io.StringIO(), io.StringIO()

        def quiet_apply() -> int:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                return cli.main(args)

        status, seconds = timed(quiet_apply)
    loss = re.search(r'loss (\S+) -> (\S+)', out.getvalue())
    return {'seconds': seconds, 'status': status, 'loss': f'{loss[1]} -> {loss[2]}' if loss else err.getvalue()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--threads', type=int, nargs='+', default=[1], help='torch thread counts (default 1)')
    args = parser.parse_args()
    rows = []
    for threads in args.threads:
        for solver, stats_n in SETTINGS:
            result = run_apply(solver, stats_n, threads)
            rows.append({'threads': threads, 'solver': solver, 'stats_n': stats_n or 1000} | result)
            print(rows[-1], flush=True)
    print(markdown_table(['threads', 'solver', 'statistics over', 'seconds (cold cache)', 'loss', 'exit status'],
                         [[str(r['threads']), r['solver'], f"{r['stats_n']} images", r['seconds'], r['loss'],
                           str(r['status'])] for r in rows]))
    write_json(OUT, {'machine': machine_info(), 'edit': EDIT, 'rows': rows})
    print(f'wrote {OUT}')


if __name__ == '__main__':
    main()
