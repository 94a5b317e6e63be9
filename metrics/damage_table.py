"""The damage measure (rewrite/core/damage.py) on edits applied at the layer they were made for and at others: the
figures DAMAGE_THRESHOLD was chosen from.

    python -m metrics.damage_table [--threads 1] [--samples 8] [--layout-size 64] [--stats-n 200]
    python -m metrics.damage_table --no-demo --only multikey_water --out damage_table_context_only

Rows: the bundled demo edits (notebooks/masks/demo/, on the demo model at truncation 0.5, as `python -m rewrite
apply` loads it), each at the layer it records and at the other layers of --demo-layers, with its recorded rank;
and the original tool's 28 edit files (../shared/reference/original-edits) on the tests' layout checkpoint
(random weights of a trained model's scale, `tests/conftest.py:layout_checkpoint`, truncation 0.5) at layers 6, 8
and 10 with rank 1 (the original notebook made its church edits at layer 8; the dome2castle_layer6 files say 6).
Each edit is applied with the fast solver (apply_request, allow_other_layer) and reverted; the damage probe's
figures are recorded: held-out change (DAMAGE_SAMPLES held-out samples, outside where the rule acts) and the
change inside the paste region. Writes metrics/results/damage_table.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

from metrics.common import setup_torch
from metrics.report import ROOT, fmt, machine_info, markdown_table, rel, write_json
from rewrite.core.damage import DAMAGE_SAMPLES, DAMAGE_THRESHOLD
from rewrite.core.rewriter import SeqStyleGanRewriter
from rewrite.formats import editfile
from rewrite.formats.savededits import notebooks_dir
from utils.fileio import atomic_write_text
from utils.generators import load_generator
from utils.stylegan2.checkpoint import model_from_checkpoint
from utils.stylegan2.synthetic import synthetic_checkpoint
from utils.zdataset import z_dataset_for_model

RESULTS = ROOT / 'metrics' / 'results'
ORIGINAL_EDITS = ROOT.parent / 'shared' / 'reference' / 'original-edits'
ZSAMPLE = 1000


def wanted(name: str, only: list[str] | None) -> bool:
    return only is None or any(part in name for part in only)


def original_layer(path: Path) -> int:
    """The layer an original edit was made at: the one its name says (dome2castle_layer6_...), else 8."""
    return 6 if '_layer6' in path.stem else 8


def measure(gw: SeqStyleGanRewriter, request: dict, rank: int) -> dict:
    """Applies the request at gw's layer (allowed to be another than the file's), records the damage, reverts."""
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', RuntimeWarning)
        try:
            record = gw.apply_request(request, rank=rank, solver='fast', allow_other_layer=True)
        except Exception as e:  # noqa: BLE001 - a setting that cannot run is listed with the reason
            return {'error': ' '.join(str(e).split())[:120]}
    gw.revert()
    return {'kind': record.kind, 'heldout_change': record.heldout_change, 'paste_change': record.paste_change,
            'initial_loss': record.initial_loss, 'final_loss': record.final_loss, 'rolled_back': record.rolled_back}


def sweep(model, edits: list[tuple[str, Path, int, int]], layers, stats_n: int | None, samples: int,
          source: str, cachedir: Path | None) -> list[dict]:
    """(name, file, recorded layer, rank) edits, each at every layer of `layers` -> rows."""
    zds = z_dataset_for_model(model, ZSAMPLE, seed=1)
    rows = []
    for layer in layers:
        gw = SeqStyleGanRewriter(model, zds, layer, cachedir=cachedir, progress=False, stats_size=stats_n,
                                 damage_samples=samples)
        for name, path, recorded, rank in edits:
            request = editfile.load_edit(path, num_images=ZSAMPLE).to_json()
            t0 = time.perf_counter()
            row = {'source': source, 'edit': name, 'layer': layer, 'recorded_layer': recorded,
                   'right_layer': layer == recorded, 'rank': rank, **measure(gw, request, rank),
                   'seconds': round(time.perf_counter() - t0, 2)}
            print(row_line(row), flush=True)
            rows.append(row)
    return rows


def row_line(row: dict) -> str:
    if 'error' in row:
        return f"{row['source']} {row['edit']} L{row['layer']}: {row['error']}"
    return (f"{row['source']} {row['edit']} L{row['layer']} ({'right' if row['right_layer'] else 'other'}) "
            f"R{row['rank']}: held-out {row['heldout_change']:.4f}, paste {fmt(row['paste_change'], 4)}")


def table(rows: list[dict]) -> str:
    body = [[r['source'], r['edit'], r['layer'], 'yes' if r['right_layer'] else '', r['rank'],
             r.get('error', fmt(r.get('heldout_change'), 4)), fmt(r.get('paste_change'), 4),
             'warn' if (r.get('heldout_change') or 0) > DAMAGE_THRESHOLD else ''] for r in rows]
    return markdown_table(['model', 'edit', 'layer', 'its layer', 'rank', 'held-out change', 'paste change',
                           f'> {DAMAGE_THRESHOLD:g}'], body)


def summary(rows: list[dict]) -> str:
    """Per model and layer kind (the edit's own layer, another): how many, the held-out change's range and
    median, and how many are above the threshold."""
    body = []
    for source in dict.fromkeys(r['source'] for r in rows):
        for right in (True, False):
            values = sorted(r['heldout_change'] for r in rows if r['source'] == source and r['right_layer'] == right
                            and r.get('heldout_change') is not None)
            if values:
                above = sum(v > DAMAGE_THRESHOLD for v in values)
                body.append([source, 'its layer' if right else 'another layer', len(values), fmt(values[0], 4),
                             fmt(values[len(values) // 2], 4), fmt(values[-1], 4), f'{above} of {len(values)}'])
    return markdown_table(['model', 'applied at', 'edits', 'min', 'median', 'max', f'> {DAMAGE_THRESHOLD:g}'], body)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--threads', type=int, default=1)
    p.add_argument('--samples', type=int, default=DAMAGE_SAMPLES, help='held-out samples per change')
    p.add_argument('--demo-layers', type=int, nargs='+', default=[5, 6, 7, 8])
    p.add_argument('--layout-size', type=int, default=64, help='size of the layout checkpoint (64 or 256)')
    p.add_argument('--layout-layers', type=int, nargs='+', default=[6, 8, 10])
    p.add_argument('--stats-n', type=int, default=200,
                   help='key statistics of the layout checkpoint over the first N z\'s (the demo model: all 1000)')
    p.add_argument('--cachedir', type=Path, default=Path('cache'))
    p.add_argument('--no-original', action='store_true', help='the bundled edits only')
    p.add_argument('--no-demo', action='store_true', help="the original tool's edits only")
    p.add_argument('--only', nargs='+', default=None, help='only the edits whose name contains one of these')
    p.add_argument('--out', default='damage_table', help='name of the results (metrics/results/OUT.{json,md})')
    return p.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    setup_torch(args.threads)
    t0 = time.perf_counter()
    demo_dir = notebooks_dir() / 'masks' / 'demo'
    bundled = []
    for path in sorted(demo_dir.glob('*.json')) if not args.no_demo else []:
        setting = editfile.load_edit(path).setting()
        layer, rank = editfile.setting_from_name(path)
        bundled.append((path.stem, path, setting.get('layer', layer), setting.get('rank', rank)))
    bundled = [edit for edit in bundled if wanted(edit[0], args.only)]
    rows = sweep(load_generator('demo', truncation=0.5), bundled, args.demo_layers, None, args.samples, 'demo',
                 args.cachedir) if bundled else []
    if not args.no_original and ORIGINAL_EDITS.is_dir():
        layout = json.loads((ORIGINAL_EDITS.parent / f'stylegan2-checkpoint-layout-{args.layout_size}.json')
                            .read_text())['g_ema']
        model = model_from_checkpoint(synthetic_checkpoint(layout), truncation=0.5)
        originals = [(f'{path.parent.name}/{path.stem}', path, original_layer(path), 1)
                     for path in sorted(ORIGINAL_EDITS.glob('*/*.json'))
                     if wanted(f'{path.parent.name}/{path.stem}', args.only)]
        rows += sweep(model, originals, args.layout_layers, args.stats_n, args.samples,
                      f'layout {args.layout_size}', args.cachedir)
    out = {'machine': machine_info(args.threads), 'threshold': DAMAGE_THRESHOLD, 'samples': args.samples,
           'seconds': round(time.perf_counter() - t0, 1), 'rows': rows}
    write_json(RESULTS / f'{args.out}.json', out)
    text = table(rows) + '\n\n' + summary(rows)
    atomic_write_text(RESULTS / f'{args.out}.md', text + '\n')
    print(text)
    print(f'wrote {rel(RESULTS / args.out)}.json and .md ({out["seconds"]} s)')


if __name__ == '__main__':
    main()
