"""Do two revisions of the code make the same edits? Every bundled edit file (and, with ../shared, every edit file of
the original tool) is applied by this checkout and by REV (extracted with `git archive` into a temporary folder),
each in a child process of its own on one thread, and the edited generators' weights are compared bit for bit.
Both children run in the same invocation on the same machine, so a refactoring that changes no arithmetic must
give identical weights; nothing measured on another machine is compared.

    python -m metrics.same_edits --against f5bfa98            # the last commit before the packages were layered

Both revisions are driven through the API names every release keeps (`rewrite.ganrewrite.SeqStyleGanRewriter`,
`apply_request`, `utils.stylegan2.load_seq_stylegan` / `model_from_checkpoint`). The original tool's files are
applied at rank 1 with the fast solver to a 256 px config-f layout with random weights of a trained model's scale
(`utils.stylegan2.synthetic`), at the layer their name gives (6 or 8), as tests/test_rewriter_reference.py does.
Prints a table and writes metrics/results/same_edits.json; exits 1 when any weight differs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from metrics.report import ROOT, machine_info, markdown_table, write_json
from rewrite.formats import editfile
from rewrite.formats.savededits import notebooks_dir
from utils.stylegan2.synthetic import synthetic_checkpoint

ORIGINAL_EDITS = ROOT.parent / 'shared' / 'reference' / 'original-edits'
LAYOUT = ROOT.parent / 'shared' / 'reference' / 'stylegan2-checkpoint-layout-256.json'
OUT = ROOT / 'metrics' / 'results' / 'same_edits.json'

# What each child runs: apply every job with the API both revisions keep, print each edited model's SHA-256.
CHILD = r'''
import hashlib, json, sys, warnings
tree, jobs_path, cachedir = sys.argv[1:4]
sys.path.insert(0, tree)
import torch
import rewrite                                                     # noqa: F401  (its own utils first)
from rewrite.ganrewrite import SeqStyleGanRewriter
from utils.stylegan2 import load_seq_stylegan, model_from_checkpoint
from utils.zdataset import z_dataset_for_model
torch.set_num_threads(1)
out = {}


def job_hash(model):
    digest = hashlib.sha256()
    for name, value in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


for job in json.load(open(jobs_path)):
    if job['model'] == 'demo':
        model = load_seq_stylegan('demo', truncation=0.5)
    else:
        model = model_from_checkpoint(torch.load(job['model'], weights_only=True), truncation=0.5)
    gw = SeqStyleGanRewriter(model, z_dataset_for_model(model, job['zsample']), layernum=job['layer'],
                             cachedir=cachedir, progress=False, damage_samples=0)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        record = gw.apply_request(json.load(open(job['path'])), **job['options'])
    edited = job_hash(gw.model)                                    # the rewriter edits its own copy
    out[job['name']] = {'sha256': edited, 'final_loss': record.final_loss, 'kind': record.kind,
                        'changed': edited != job_hash(model)}
print(json.dumps(out))
'''


def original_layer(path: Path) -> int:
    """The layer an original edit was made at: the one its name says (dome2castle_layer6_...), else 8."""
    return 6 if '_layer6' in path.stem else 8


def jobs(folder: Path, original: bool) -> list[dict]:
    """The edits to apply: the bundled ones at their recorded setting; the original tool's at rank 1, fast."""
    found = []
    for path in sorted((notebooks_dir() / 'masks' / 'demo').glob('*.json')):
        layer, _ = editfile.setting_from_name(path)
        layer = editfile.load_edit(path).setting().get('layer', layer)
        found.append({'name': f'demo/{path.stem}', 'model': 'demo', 'path': str(path), 'layer': layer,
                      'zsample': 1000, 'options': {}})
    if original and ORIGINAL_EDITS.is_dir():
        ckpt = folder / 'layout256.pt'
        torch.save(synthetic_checkpoint(json.loads(LAYOUT.read_text())['g_ema'], seed=5), ckpt)
        for path in sorted(ORIGINAL_EDITS.glob('*/*.json')):
            found.append({'name': f'{path.parent.name}/{path.stem}', 'model': str(ckpt), 'path': str(path),
                          'layer': original_layer(path), 'zsample': 1000, 'options': {'rank': 1, 'solver': 'fast'}})
    return found


def extract(rev: str, folder: Path) -> Path:
    """REV's files (git archive) in folder/tree."""
    tree = folder / 'tree'
    tree.mkdir()
    archive = subprocess.run(['git', '-C', str(ROOT), 'archive', rev], capture_output=True, check=True).stdout
    subprocess.run(['tar', '-x', '-C', str(tree)], input=archive, check=True)
    return tree


def run_child(tree: Path, jobs_path: Path, cachedir: Path) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=str(tree))
    return subprocess.Popen([sys.executable, '-c', CHILD, str(tree), str(jobs_path), str(cachedir)], cwd=tree,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--against', required=True, help='the revision to compare with (a commit, tag or branch)')
    parser.add_argument('--no-original', action='store_true', help="only the bundled edits (not ../shared's)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix='same-edits-') as tmp:
        folder = Path(tmp)
        listed = jobs(folder, not args.no_original)
        jobs_path = folder / 'jobs.json'
        jobs_path.write_text(json.dumps(listed))
        old_tree = extract(args.against, folder)
        children = {'this checkout': run_child(ROOT, jobs_path, folder / 'cache-new'),
                    args.against: run_child(old_tree, jobs_path, folder / 'cache-old')}
        results = {}
        for label, child in children.items():          # both run at once, one thread each
            out, err = child.communicate()
            if child.returncode != 0:
                print(f'{label}: failed\n{err[-3000:]}', file=sys.stderr)
                return 2
            results[label] = json.loads(out.strip().splitlines()[-1])
    new, old = results['this checkout'], results[args.against]
    rows = [[job['name'], job['layer'], new[job['name']]['kind'],
             'yes' if new[job['name']]['changed'] else 'NO', new[job['name']]['sha256'][:16],
             'identical' if new[job['name']]['sha256'] == old[job['name']]['sha256'] else 'DIFFERENT']
            for job in listed]
    print(markdown_table(['edit', 'layer', 'kind', 'weights changed', 'edited weights SHA-256 (this checkout)',
                          f'vs {args.against}'], rows))
    same = sum(r[-1] == 'identical' and r[3] == 'yes' for r in rows)
    print(f'\n{same} of {len(rows)} edits change the weights and give bit-identical weights in both revisions')
    write_json(OUT, {'against': args.against, 'machine': machine_info(), 'edits': len(rows), 'identical': same,
                     'rows': rows})
    return 0 if same == len(rows) else 1


if __name__ == '__main__':
    sys.exit(main())
