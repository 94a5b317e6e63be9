"""Responsiveness of the rewriting interface on the demo model (CPU), median of repeats.

    python metrics/bench_widget.py [--model demo] [--layer 6] [--repeats 7]

Measures, driving GanRewriteApp with the messages the browser sends:
  stroke       one mouse-move event on a 256 px canvas -> the mask painted and the frame re-encoded
               (the Python side of 'stroke to updated mask on screen'; the browser then swaps one JPEG)
  grid32       repainting a grid of 32 samples from a changed model (generator + 32 encodes)
  execute      Execute Change with the fast solver, click to repainted grid (9 samples), and the
               rewriter's own share of it (apply_edit)
Prints a table and writes metrics/results/widget.json (atomically).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from metrics.report import machine_info, write_json  # noqa: E402
from metrics.timing import Timing, repeat_timing  # noqa: E402
from rewrite import editfile  # noqa: E402
from rewrite.app.events import dispatch_dom_event, mouse_message  # noqa: E402
from rewrite.app.rewriteapp import GanRewriteApp  # noqa: E402
from rewrite.core.rewriter import SeqStyleGanRewriter  # noqa: E402
from utils.stylegan2 import load_seq_stylegan  # noqa: E402
from utils.zdataset import z_dataset_for_model  # noqa: E402

GOALS_MS = {'stroke': 100, 'grid32': 1500, 'execute': 3000}
RESULTS = ROOT / 'metrics' / 'results' / 'widget.json'


def box(size: int, top: float, left: float, bottom: float, right: float) -> str:
    mask = np.zeros((size, size), np.float32)
    mask[int(top * size):int(bottom * size), int(left * size):int(right * size)] = 1
    return editfile.encode_mask(mask)


def bench_stroke(app: GanRewriteApp, repeats: int) -> dict:
    """Per mouse-move event, along a long stroke (each event paints a new segment)."""
    canvas = app.canvases[0]
    events = canvas.events
    dispatch_dom_event(events, mouse_message('mousedown', 20, 20, canvas.size))
    points = iter((20 + (i * 7) % 200, 20 + (i * 3) % 200) for i in range(10 ** 6))
    result = repeat_timing(lambda: dispatch_dom_event(events, mouse_message('mousemove', *next(points), canvas.size)),
                           repeats * 20).summary_ms()
    dispatch_dom_event(events, mouse_message('mouseup', 30, 30, canvas.size))
    return result


def bench_grid(app: GanRewriteApp, repeats: int) -> dict:
    """Repaint after a model change (what follows Execute, Undo or Revert)."""
    return repeat_timing(app.refresh, repeats).summary_ms()


def bench_execute(gw, mask_dir: Path, repeats: int, size: int) -> tuple[dict, dict]:
    app = GanRewriteApp(gw, mask_dir=mask_dir, size=size, num_canvases=9, solver='fast')
    app.set_request({'object': [0, box(size, 0.25, 0.25, 0.6, 0.6)], 'paste': [1, box(size, 0.2, 0.4, 0.55, 0.75)]})
    seconds = []

    def execute():
        app.execute()
        if not app.message.startswith('changed the model'):
            raise RuntimeError(app.message)
        seconds.append(gw.history[-1][0].seconds)

    app.execute()                                    # warm-up: key statistics are gathered on first use
    total = repeat_timing(execute, repeats, setup=gw.revert).summary_ms()
    return total, Timing(tuple(seconds)).summary_ms()


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--model', default='demo')
    parser.add_argument('--truncation', type=float, default=0.5)
    parser.add_argument('--layer', type=int, default=6)
    parser.add_argument('--sample-size', type=int, default=1000)
    parser.add_argument('--size', type=int, default=256, help='canvas side in pixels')
    parser.add_argument('--repeats', type=int, default=7)
    parser.add_argument('--out', type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    model = load_seq_stylegan(args.model, truncation=args.truncation)
    gw = SeqStyleGanRewriter(model, z_dataset_for_model(model, size=args.sample_size), args.layer, progress=False)
    with tempfile.TemporaryDirectory() as mask_dir:
        grid_app = GanRewriteApp(gw, mask_dir=mask_dir, size=args.size, num_canvases=32)
        stroke = bench_stroke(grid_app, args.repeats)
        grid = bench_grid(grid_app, args.repeats)
        execute, apply_only = bench_execute(gw, Path(mask_dir), args.repeats, args.size)
    rows = {'stroke': stroke, 'grid32': grid, 'execute': execute, 'execute_apply_edit_only': apply_only}
    results = {
        'model': args.model, 'layer': args.layer, 'sample_size': args.sample_size, 'canvas_size': args.size,
        'generator_size': model.size, 'machine': machine_info(),
        'measurements': {name: {**row, 'goal_ms': GOALS_MS.get(name)} for name, row in rows.items()},
    }
    print(f'{"measurement":<26} {"median ms":>10} {"min":>8} {"max":>8} {"goal":>7}  n')
    for name, row in results['measurements'].items():
        goal = f'<{row["goal_ms"]}' if row['goal_ms'] else ''
        print(f'{name:<26} {row["median_ms"]:>10.1f} {row["min_ms"]:>8.1f} {row["max_ms"]:>8.1f} {goal:>7}  '
              f'{row["repeats"]}')
    print(f'({model.size} px demo model, layer {args.layer}, {args.sample_size} samples, {args.size} px canvases, '
          f'{torch.get_num_threads()} torch threads, load average {os.getloadavg()[0]:.1f})')
    write_json(args.out, results)
    return results


if __name__ == '__main__':
    main()
