"""The demonstration notebook runs top to bottom headless (nbclient), on the bundled demo model."""

from __future__ import annotations

import copy
from pathlib import Path

import nbformat
import pytest
import torch
from nbclient import NotebookClient

from rewrite.formats import editfile
from rewrite.formats.editfile import setting_from_name
from utils.stylegan2 import SeqStyleGAN2, save_checkpoint
from utils.stylegan2.checkpoint import DEFAULT_TRUNCATION

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / 'notebooks' / 'rewriting-interface.ipynb'


def with_parameters(nb: nbformat.NotebookNode, **values) -> nbformat.NotebookNode:
    """A copy of the notebook with a cell setting `values` right after its 'parameters' cell (as papermill does)."""
    nb = copy.deepcopy(nb)
    index = next(i for i, cell in enumerate(nb.cells) if 'parameters' in cell.metadata.get('tags', []))
    source = '\n'.join(f'{name} = {value!r}' for name, value in values.items())
    nb.cells.insert(index + 1, nbformat.v4.new_code_cell(source, metadata={'tags': ['injected-parameters']}))
    return nb


def parameterized_copy(notebook: Path, folder: Path, **values) -> Path:
    """folder/<the notebook's name>: a copy of `notebook` with `values` set after its parameters cell."""
    path = folder / notebook.name
    nbformat.write(with_parameters(nbformat.read(notebook, as_version=4), **values), path)
    return path


def with_example_run(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """The notebook with its 'example' cell run on purpose (as a user removing the '#' does)."""
    cell = next(cell for cell in nb.cells if 'example' in cell.metadata.get('tags', []))
    assert cell.source.lstrip().startswith('# run_example()'), 'the example must not run by itself'
    cell.source = 'run_example()'
    return nb


def execute(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    NotebookClient(nb, timeout=600, kernel_name='python3',
                   resources={'metadata': {'path': str(NOTEBOOK.parent)}}).execute()
    return nb


def outputs_of(nb, mime: str) -> list:
    return [out for cell in nb.cells if cell.cell_type == 'code' for out in cell.get('outputs', [])
            if mime in out.get('data', {})]


def text_of(nb) -> str:
    return ''.join(out.get('text', '') for cell in nb.cells if cell.cell_type == 'code'
                   for out in cell.get('outputs', []) if out.get('output_type') == 'stream')


def test_parameters_are_at_the_top_with_the_demo_defaults():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    first_code = next(cell for cell in nb.cells if cell.cell_type == 'code')
    assert 'parameters' in first_code.metadata.get('tags', [])
    namespace: dict = {}
    exec(first_code.source, namespace)
    assert (namespace['MODEL'], namespace['TRUNCATION'], namespace['LAYER']) == ('demo', DEFAULT_TRUNCATION, 8)
    bundled = sorted((NOTEBOOK.parent / namespace['MASK_DIR'] / 'demo').glob('*.json'))
    assert namespace['LAYER'] == setting_from_name(bundled[0])[0]      # dome2spire_layer8_rank3: the first one
    assert all(not cell.get('outputs') for cell in nb.cells if cell.cell_type == 'code')   # stored clean


def test_notebook_opens_clean(tmp_path):
    """Run All (and Voila) shows the unedited model: no example applied, nothing saved or exported."""
    mask_dir = tmp_path / 'masks'
    nb = execute(with_parameters(nbformat.read(NOTEBOOK, as_version=4), SAMPLE_SIZE=60, NUM_CANVASES=4,
                                 CANVAS_SIZE=128, MASK_DIR=str(mask_dir)))
    assert outputs_of(nb, 'application/vnd.jupyter.widget-view+json'), 'the app was not displayed'
    text = text_of(nb)
    assert '64 px generator, layer 8' in text and 'changed the model' not in text
    assert not outputs_of(nb, 'image/png')
    assert not mask_dir.exists() or not [p for p in mask_dir.rglob('*') if p.suffix in ('.json', '.pt')]


def test_notebook_runs_top_to_bottom_with_the_example(tmp_path):
    mask_dir = tmp_path / 'masks'
    nb = with_parameters(nbformat.read(NOTEBOOK, as_version=4), SAMPLE_SIZE=60, NUM_CANVASES=4, CANVAS_SIZE=128,
                         MASK_DIR=str(mask_dir))
    execute(with_example_run(nb))
    assert outputs_of(nb, 'application/vnd.jupyter.widget-view+json'), 'the app was not displayed'
    assert len(outputs_of(nb, 'image/png')) == 2, 'before/after strips are missing'
    text = text_of(nb)
    assert '64 px generator, layer 8' in text
    assert 'changed the model' in text and f'saved {mask_dir / "scripted_example.json"}' in text
    saved = editfile.load_edit(mask_dir / 'scripted_example.json')
    assert saved.object.imgnum == 0 and saved.paste.imgnum == 1
    assert (mask_dir / 'rewritten.pt').is_file()


@pytest.mark.slow
def test_notebook_works_with_any_checkpoint_path(tmp_path):
    torch.manual_seed(1)
    path = tmp_path / 'tiny.pt'
    save_checkpoint(SeqStyleGAN2(32, style_dim=64, n_mlp=2, channels={4: 32, 8: 32, 16: 32, 32: 32}), path)
    nb = with_parameters(nbformat.read(NOTEBOOK, as_version=4), MODEL=str(path), TRUNCATION=1.0, LAYER=4,
                         SAMPLE_SIZE=30, NUM_CANVASES=4, CANVAS_SIZE=64, MASK_DIR=str(tmp_path / 'masks'))
    execute(with_example_run(nb))
    text = text_of(nb)
    assert '32 px generator, layer 4' in text and 'changed the model' in text
