"""How fast the widget answers while and after it rewrites the demo model (CPU), clicks as the browser sends them.

    python metrics/bench_widget_feedback.py [--threads 1] [--repeats 3]

  execute_fast    Execute Change clicked (solved in the worker thread) -> the controls are live again
  cancel          Cancel clicked during the original solver's 2001 steps -> the solve has stopped and
                  the controls are live again (the weights checked bit-identical to before)
  undo, redo      Ctrl+Z / Ctrl+Shift+Z over the pictures -> the 9-sample grid repainted
  history_jump    a click on 'the original model' in the history list after two changes -> repainted
The bundled dome2spire edit (layer 8, rank 3), 9 canvases of 256 px, a z-sample of 200 images (or up to the
edit's largest image number) with its
statistics computed beforehand. Prints a table and writes metrics/results/widget_feedback.json (atomically).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from metrics.common import bundled_request, setup_torch  # noqa: E402
from metrics.report import machine_info, write_json  # noqa: E402
from metrics.timing import Timing, timed  # noqa: E402
from rewrite.app.events import dispatch_dom_event, key_message  # noqa: E402
from rewrite.app.rewriteapp import GanRewriteApp  # noqa: E402
from rewrite.core.rewriter import SeqStyleGanRewriter  # noqa: E402
from utils.stylegan2 import load_seq_stylegan  # noqa: E402
from utils.zdataset import z_dataset_for_model  # noqa: E402

RESULTS = ROOT / 'metrics' / 'results' / 'widget_feedback.json'


def press(app: GanRewriteApp, key: str, **modifiers) -> None:
    dispatch_dom_event(app.key_events, key_message(key, **modifiers))


def click_and_wait(app: GanRewriteApp) -> None:
    app.execute_btn.click()
    if not app.wait(600) or 'loss' not in app.message:
        raise RuntimeError(f'the solve did not end within 10 minutes or failed: {app.message}')


def cancel_once(app: GanRewriteApp, gw) -> float:
    """Starts the original solver, cancels it once it has taken 20 steps; seconds from Cancel to live controls."""
    before = gw.target_weights().detach().clone()
    app.solver_box.value = 'original'
    app.execute_btn.click()
    deadline = time.monotonic() + 600
    while app.progress.value < 20:
        if time.monotonic() > deadline or not app.solving:
            raise RuntimeError(f'the solve did not reach 20 steps: {app.message}')
        time.sleep(0.005)

    def cancel() -> None:
        app.cancel_btn.click()
        app.wait(600)

    _, elapsed = timed(cancel)
    app.solver_box.value = 'fast'
    if not torch.equal(gw.target_weights(), before) or 'cancelled' not in app.message:
        raise RuntimeError(f'cancel left the model changed or said {app.message!r}')
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--threads', type=int, default=1)
    parser.add_argument('--repeats', type=int, default=3)
    args = parser.parse_args()
    setup_torch(args.threads)
    _, layer, rank, request = bundled_request('dome2spire')
    model = load_seq_stylegan('demo', truncation=0.5)
    numbers = [pair[0] for value in request.values() for pair in (value if isinstance(value[0], list) else [value])]
    gw = SeqStyleGanRewriter(model, z_dataset_for_model(model, max(200, max(numbers) + 1)), layer, progress=False)
    _ = gw.stats                                                          # statistics outside the timings
    with tempfile.TemporaryDirectory() as folder:
        app = GanRewriteApp(gw, mask_dir=folder, size=256, num_canvases=9, rank=rank)
        app.set_request(request)
        if app.request != request:
            raise RuntimeError(f'the bundled edit was refused: {app.message}')
        rows = {'execute_fast': [], 'cancel': [], 'undo': [], 'redo': [], 'history_jump': []}
        for _ in range(args.repeats):
            gw.revert()
            rows['execute_fast'].append(timed(lambda: click_and_wait(app))[1])
            rows['cancel'].append(cancel_once(app, gw))
            rows['undo'].append(timed(lambda: press(app, 'z', ctrlKey=True))[1])
            rows['redo'].append(timed(lambda: press(app, 'z', ctrlKey=True, shiftKey=True))[1])
            click_and_wait(app)
            rows['history_jump'].append(timed(lambda: setattr(app.history_box, 'value', 0))[1])
            assert gw.history == [] and len(gw.undone) == 2, app.message
    results = {name: Timing(tuple(seconds)).summary_ms() for name, seconds in rows.items()}
    print(f'{"what":14} {"median ms":>10} {"min":>8} {"max":>8}')
    for name, row in results.items():
        print(f'{name:14} {row["median_ms"]:10.0f} {row["min_ms"]:8.0f} {row["max_ms"]:8.0f}')
    write_json(RESULTS, {'results': results, 'edit': 'dome2spire', 'layer': layer, 'rank': rank,
                         'machine': machine_info(args.threads)})
    print(f'wrote {RESULTS}')


if __name__ == '__main__':
    main()
