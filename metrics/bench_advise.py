"""Times the edit advisor's sweep (rewrite/analysis/advisor.py) with the key statistics cached.

    python -m metrics.bench_advise [--threads 2] [--edits dome2spire erase_watermark towertop2tree] [--repeats 1]

Per bundled edit: one sweep of layers 5-8 x ranks 1-3 (12 settings, 48 held-out samples) to gather or read the
statistics (not timed), then `--repeats` timed sweeps: wall seconds (metrics/timing.py) and the process's CPU
seconds, plus the seconds of the ranking and its bootstrap confidence alone (re-run on the sweep's table).
Goal: <= 60 s wall per sweep on 2 threads. Writes metrics/results/advise_bench.json.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from metrics.common import EDIT_TRUNCATION, RESULTS, ZSAMPLE, bundled_request, load_snapshot, setup_torch
from metrics.report import machine_info, markdown_table, write_json
from metrics.timing import Timing, timed
from rewrite.analysis.advisor import advise, confidence, score_candidates
from utils.stylegan2.checkpoint import DEMO_CHECKPOINT
from utils.zdataset import z_dataset_for_model

OUT = RESULTS / 'advise_bench.json'
GOAL_SECONDS = 60.0


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--edits', nargs='+', default=['dome2spire', 'erase_watermark', 'towertop2tree'])
    p.add_argument('--repeats', type=int, default=1)
    p.add_argument('--cachedir', type=Path, default=None, help='key statistics cache (default: a fresh temp folder)')
    p.add_argument('--checkpoint', type=Path, default=DEMO_CHECKPOINT)
    p.add_argument('--out', type=Path, default=OUT)
    args = p.parse_args(argv)
    setup_torch(args.threads)
    model = load_snapshot(args.checkpoint).model(EDIT_TRUNCATION)
    zds = z_dataset_for_model(model, ZSAMPLE)
    cachedir = Path(args.cachedir or tempfile.mkdtemp(prefix='advise-stats-'))
    rows = []
    for name in args.edits:
        request = bundled_request(name)[3]

        def sweep(request=request):
            return advise(model, zds, request, layers=[5, 6, 7, 8], ranks=(1, 2, 3), cachedir=cachedir,
                          progress=False)
        sweep()                                             # statistics gathered or read: not timed
        walls, cpus = [], []
        for _ in range(args.repeats):
            c0 = time.process_time()
            advice, wall = timed(sweep)
            walls.append(wall)
            cpus.append(time.process_time() - c0)
        _, ranking = timed(lambda table=advice.table: confidence(score_candidates(table)))
        t = Timing(tuple(walls))
        rows.append({'edit': name, 'wall_s': list(t.seconds), 'median_wall_s': t.median, 'cpu_s': cpus,
                     'ranking_and_confidence_s': ranking, 'settings': len(advice.table),
                     'goal_met': t.median <= GOAL_SECONDS})
        print(f'{name}: {t.median:.1f}s wall, {cpus[-1]:.1f}s CPU, ranking + confidence {ranking:.3f}s', flush=True)
    result = {'threads': args.threads, 'goal_seconds': GOAL_SECONDS, 'machine': machine_info(args.threads),
              'rows': rows}
    write_json(args.out, result)
    print(markdown_table(['edit', 'wall s (median)', 'CPU s', 'ranking + confidence s', 'goal <= 60 s'],
                         [[r['edit'], f'{r["median_wall_s"]:.1f}', f'{r["cpu_s"][-1]:.1f}',
                          f'{r["ranking_and_confidence_s"]:.3f}', 'met' if r['goal_met'] else 'NOT met']
                          for r in rows]))
    print(f'wrote {args.out}')


if __name__ == '__main__':
    main()
