"""The bundled demo edit files and their provenance (for metrics/make_demo_edits.py): the setting fields written
into each file, stamping existing files from their names, the provenance JSON and whether the files are current
for a snapshot.
"""

from __future__ import annotations

import json
from pathlib import Path

from metrics.common import RESULTS, ZSAMPLE, Snapshot
from metrics.report import ROOT, rel
from rewrite.formats import editfile
from rewrite.formats.settings import PRESERVE_WEIGHT

PROVENANCE = RESULTS / 'demo_edits.json'

PRESERVE_PROVENANCE = RESULTS / 'demo_preserve_edits.json'

PROCEDURE = 7                   # bump when choosing or scoring changes: older edit files are then remade


def with_preserve_weight(request: dict, weight: float) -> dict:
    """A copy of the request with the `preserve_weight` field (right after `preserve`) set to the chosen
    weight, so that the widget and the CLI apply the file as it was measured."""
    out = {}
    for name, value in request.items():
        if name != 'preserve_weight':
            out[name] = value
        if name == 'preserve':
            out['preserve_weight'] = float(weight)
    return out


def setting_fields(layer: int, rank: int, fingerprint: str, model_name: str = 'demo') -> dict:
    """The edit-file fields that record how a bundled edit was made: the layer and rank chosen, the fast solver
    with its defaults (make_demo_edits applies every setting so), the demo model's weights fingerprint."""
    return {'layer': int(layer), 'rank': int(rank), 'solver': 'fast',
            'model': {'fingerprint': fingerprint, 'name': model_name}}


def stamped(request: dict, fields: dict) -> dict:
    """The request with `fields` set (after its regions; those already there keep their place)."""
    return {**request, **fields}


def stamp_edits(edit_dir: Path, fingerprint: str, model_name: str = 'demo') -> list[Path]:
    """Writes the setting fields into every NAME_layerN[_rankR].json of `edit_dir` from its name (the regions
    and every other field unchanged; a file already stamped the same is rewritten with the same bytes)."""
    written = []
    for path in sorted(Path(edit_dir).glob('*.json')):
        layer, rank = editfile.setting_from_name(path)
        if layer is None:
            continue
        request = editfile.load_edit(path, num_images=ZSAMPLE).to_json()
        editfile.save_edit(path, stamped(request, setting_fields(layer, rank, fingerprint, model_name)),
                           num_images=ZSAMPLE)
        written.append(path)
    return written


def write_edit(out_dir: Path, name: str, layer: int, rank: int, request: dict,
               fingerprint: str | None = None) -> Path:
    """Writes NAME_layerN[_rankR].json (validated, atomic; with the setting fields when the model's
    `fingerprint` is given) and removes the files of other settings."""
    path = Path(out_dir) / editfile.name_for_setting(name, layer, rank)
    if fingerprint is not None:
        request = stamped(request, setting_fields(layer, rank, fingerprint))
    editfile.save_edit(path, request, num_images=ZSAMPLE)
    for stale in Path(out_dir).glob(f'{name}_layer*.json'):
        if stale != path:
            stale.unlink()
    return path


def describe_regions(regions: dict) -> dict:
    obj = regions['object']
    return {'object': None if obj is None else {'imgnum': obj.imgnum, 'pixels': obj.area},
            'paste': {'imgnum': regions['paste'].imgnum, 'pixels': regions['paste'].area},
            'key': [{'imgnum': r.imgnum, 'pixels': r.area} for r in regions['key']]}


def read_provenance(provenance: Path = PROVENANCE) -> dict | None:
    try:
        return json.loads(Path(provenance).read_text())
    except (OSError, ValueError):
        return None


def bundled_preserve_weight(name: str, path: Path, provenance: Path = PRESERVE_PROVENANCE) -> float:
    """The preserve_weight make_preserve_edits chose with the bundled edit `name` at `path` (from its
    provenance); PRESERVE_WEIGHT when the provenance does not name that file or records no weight."""
    edit = (read_provenance(provenance) or {}).get('edits', {}).get(name, {})
    return float(edit.get('preserve_weight', PRESERVE_WEIGHT)) if edit.get('file') == rel(path) else PRESERVE_WEIGHT


def edits_are_current(snapshot: Snapshot, provenance: Path = PROVENANCE) -> bool:
    """True when the bundled edits were made for this checkpoint by this procedure and their files exist."""
    record = read_provenance(provenance)
    if not record or record.get('procedure') != PROCEDURE:
        return False
    if record.get('checkpoint', {}).get('sha256') != snapshot.sha256:
        return False
    return all((ROOT / e['file']).is_file() for e in record['edits'].values())
