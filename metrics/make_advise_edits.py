"""Makes the edit advisor's benchmark edits: several kinds, two fixed parts (tune / held-out).

    python -m metrics.make_advise_edits [--out-dir metrics/benchmark/advise] [--dilate 1]

Every edit is chosen from the demo segmenter's labels of the z-sample (truncation 0.5, z_dataset_for_model(model,
1000)) by make_demo_edits' region choice (the clearest single regions; see its module docstring), optionally
only among the image numbers of `images` (a half-open range), so that benchmark edits also come from other
parts of the z-sample than the bundled ones. The bundled edits (notebooks/masks/demo/) are read as they are.

Kinds: 'replace' (one tower top for another), 'erase' (the tool's erase: what the context regions show
removed from the paste region), 'add' (an object copied into a place where it is not: onto the watermark,
a door, a tree). The split is fixed here, before the score that is validated on it: the advisor's measures
and ranking may be chosen on the TUNE part only; the HELD_OUT part is only measured on.

Writes NAME.json per edit (validated, atomic) and plans.json (the plans, the regions chosen, the checkpoint).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from metrics.common import EDIT_TRUNCATION, ZSAMPLE, bundled_request, load_snapshot, sample, setup_torch
from metrics.demo_edit_files import describe_regions
from metrics.demo_regions import EditPlan, Region, build_request, choose_regions
from metrics.make_demo_edits import PLAN, WINDOWS
from metrics.report import ROOT, rel, write_json
from rewrite.formats import editfile
from utils.demo import load_segmenter
from utils.stylegan2.checkpoint import DEMO_CHECKPOINT
from utils.zdataset import z_dataset_for_model

BENCH_DIR = ROOT / 'metrics' / 'benchmark' / 'advise'
LATE = (500, ZSAMPLE)           # the second half of the z-sample: the bundled edits' regions come mostly from the first


@dataclass(frozen=True)
class BenchEdit:
    """One benchmark edit: `plan` (make_demo_edits' EditPlan: what to copy, where, what should appear),
    its kind ('replace', 'erase', 'add'), its part ('tune' or 'heldout'), and the image numbers its regions
    are chosen from (None: the whole z-sample); bundled: read from notebooks/masks/demo/ instead."""

    plan: EditPlan
    kind: str
    part: str
    images: tuple[int, int] | None = None
    bundled: bool = False

    @property
    def name(self) -> str:
        return self.plan.name


def _p(name, obj, paste, dst, keys=32, into=None) -> EditPlan:
    return EditPlan(name, object=obj, paste=paste, dst=dst, keys=keys, into=into)


# Fixed before the advisor's erase and confidence measures were written (the tune part holds the 6 edits the
# earlier scores were chosen on, plus one erase and one addition; everything else is held out).
EDITS = (
    # ---- tune ------------------------------------------------------------------------------------------------
    BenchEdit(PLAN['dome2spire'], 'replace', 'tune', bundled=True),
    BenchEdit(PLAN['towertop2tree'], 'replace', 'tune', bundled=True),
    BenchEdit(PLAN['erase_watermark'], 'erase', 'tune', bundled=True),
    BenchEdit(_p('flattop2dome', ('dome',), ('flattop',), 'dome'), 'replace', 'tune'),
    BenchEdit(_p('spire2flattop', ('flattop',), ('spire',), 'flattop'), 'replace', 'tune'),
    BenchEdit(_p('dome2tree', ('tree',), ('dome',), 'tree'), 'replace', 'tune'),
    BenchEdit(WINDOWS, 'erase', 'tune'),
    BenchEdit(_p('watermark2tree', ('tree',), ('watermark',), 'tree', keys=16), 'add', 'tune'),
    # added to the tune part later (before any score was chosen on them), of objects no held-out edit erases or
    # adds, so that the tune part has more than two erases to choose an erase measure on
    BenchEdit(_p('erase_flattops', None, ('flattop',), None, keys=16), 'erase', 'tune'),
    BenchEdit(_p('erase_windows_late', None, ('window',), None, keys=16, into='building'), 'erase', 'tune',
              images=LATE),
    BenchEdit(_p('watermark2flattop', ('flattop',), ('watermark',), 'flattop', keys=16), 'add', 'tune'),
    # ---- held out --------------------------------------------------------------------------------------------
    BenchEdit(_p('spire2dome', ('dome',), ('spire',), 'dome'), 'replace', 'heldout'),
    BenchEdit(_p('flattop2tree', ('tree',), ('flattop',), 'tree'), 'replace', 'heldout'),
    BenchEdit(_p('dome2flattop', ('flattop',), ('dome',), 'flattop'), 'replace', 'heldout'),
    BenchEdit(_p('flattop2spire', ('spire',), ('flattop',), 'spire'), 'replace', 'heldout'),
    BenchEdit(_p('spire2tree', ('tree',), ('spire',), 'tree'), 'replace', 'heldout'),
    BenchEdit(_p('dome2spire_late', ('spire',), ('dome',), 'spire'), 'replace', 'heldout', images=LATE),
    BenchEdit(_p('erase_trees', None, ('tree',), None, keys=16), 'erase', 'heldout'),
    BenchEdit(_p('erase_spires', None, ('spire',), None, keys=16), 'erase', 'heldout'),
    BenchEdit(_p('erase_doors_late', None, ('door',), None, keys=16), 'erase', 'heldout', images=LATE),
    BenchEdit(_p('erase_domes_late', None, ('dome',), None, keys=16), 'erase', 'heldout', images=LATE),
    BenchEdit(_p('door2window', ('window',), ('door',), 'window', keys=16), 'add', 'heldout'),
    BenchEdit(_p('tree2spire_late', ('spire',), ('tree',), 'spire', keys=16), 'add', 'heldout', images=LATE),
)
BENCH = {e.name: e for e in EDITS}
KINDS = ('replace', 'erase', 'add')
PARTS = ('tune', 'heldout')


def regions_in(plan: EditPlan, labels: torch.Tensor, images: tuple[int, int] | None) -> dict:
    """choose_regions over the z-sample's labels [Z, H, W], or only over image numbers images[0]..images[1]-1
    (the regions' image numbers still index the whole z-sample)."""
    if images is None:
        return choose_regions(plan, labels)
    lo, hi = images
    if not 0 <= lo < hi <= len(labels):
        raise ValueError(f'{plan.name}: images {images} outside the z-sample (0..{len(labels)})')
    found = choose_regions(plan, labels[lo:hi])

    def shift(r):
        return None if r is None else Region(r.imgnum + lo, r.mask)
    return {'object': shift(found['object']), 'paste': shift(found['paste']), 'key': [shift(r) for r in found['key']]}


def edit_path(name: str, folder: Path = BENCH_DIR) -> Path:
    return Path(folder) / f'{name}.json'


def requests(folder: Path = BENCH_DIR, names=None) -> dict[str, dict]:
    """{name: request} of the benchmark edits (the bundled ones from notebooks/masks/demo/, the rest from
    `folder`); FileNotFoundError naming the script when one is missing."""
    out = {}
    for e in EDITS:
        if names is not None and e.name not in names:
            continue
        if e.bundled:
            out[e.name] = bundled_request(e.name)[3]
            continue
        path = edit_path(e.name, folder)
        if not path.is_file():
            raise FileNotFoundError(f'{rel(path)} is missing: run python -m metrics.make_advise_edits')
        out[e.name] = json.loads(path.read_text())
    return out


def make(snapshot, segmenter, out_dir: Path = BENCH_DIR, dilate_px: int = 1, batch: int = 32) -> dict:
    """Chooses and writes every non-bundled benchmark edit; returns (and writes) plans.json's record."""
    model = snapshot.model(EDIT_TRUNCATION)
    pool = sample(model, z_dataset_for_model(model, ZSAMPLE).tensors[0], segmenter, batch, desc='z-sample')
    record = {'checkpoint': snapshot.describe(), 'truncation': EDIT_TRUNCATION, 'zsample': ZSAMPLE,
              'dilate_px': dilate_px, 'edits': {}}
    for e in EDITS:
        entry = {'kind': e.kind, 'part': e.part, 'images': e.images, 'plan': asdict(e.plan)}
        if e.bundled:
            entry['file'] = rel(bundled_request(e.name)[0])
        else:
            regions = regions_in(e.plan, pool.labels, e.images)
            path = edit_path(e.name, out_dir)
            editfile.save_edit(path, build_request(regions, dilate_px), num_images=ZSAMPLE)
            entry |= {'file': rel(path), 'regions': describe_regions(regions)}
        record['edits'][e.name] = entry
    write_json(Path(out_dir) / 'plans.json', record)
    return record


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--out-dir', type=Path, default=BENCH_DIR)
    p.add_argument('--dilate', type=int, default=1, help='pixels (at 64 px) the masks grow beyond the regions')
    p.add_argument('--batch', type=int, default=32)
    p.add_argument('--threads', type=int, default=1)
    p.add_argument('--checkpoint', type=Path, default=DEMO_CHECKPOINT)
    return p.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    setup_torch(args.threads)
    record = make(load_snapshot(args.checkpoint), load_segmenter(), args.out_dir, args.dilate, args.batch)
    for name, e in record['edits'].items():
        regions = e.get('regions')
        where = '' if not regions else f' (paste image {regions["paste"]["imgnum"]}, {len(regions["key"])} keys)'
        print(f'{e["part"]:8s} {e["kind"]:8s} {name}: {e["file"]}{where}')


if __name__ == '__main__':
    main()
