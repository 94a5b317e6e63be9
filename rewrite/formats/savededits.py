"""The widget's folder of saved edits and its Export target: names, paths and what an edit's name says.

An edit is saved as MASK_DIR/NAME.json; one level of sub-folders is listed and loadable as FOLDER/NAME
(the notebook's masks/demo/ holds the bundled edits, so 'demo/dome2spire_layer8_rank3' loads one). Names
are letters, digits, '.', '_' and '-' (no '..', no absolute paths), so nothing outside MASK_DIR is read
or written. Export writes into an existing folder only: a typo must not create folders.
"""

from __future__ import annotations

import re
from pathlib import Path

__all__ = ['export_path', 'NAME_PATTERN', 'notebook_files', 'NOTEBOOK_NAME', 'notebooks_dir',
           'RULE_NOTEBOOK_NAME', 'saved_edit_names', 'saved_edit_path', 'SavedEditError']

NAME_PATTERN = re.compile(r'^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$')


class SavedEditError(ValueError):
    """A name or path the widget cannot use; the message says what was expected."""


def saved_edit_names(mask_dir: Path) -> list[str]:
    """'NAME' for MASK_DIR/NAME.json, then 'FOLDER/NAME' for MASK_DIR/FOLDER/NAME.json (sorted)."""
    if not mask_dir.is_dir():
        return []
    top = sorted(path.stem for path in mask_dir.glob('*.json') if NAME_PATTERN.match(path.stem))
    nested = sorted(f'{path.parent.name}/{path.stem}' for path in mask_dir.glob('*/*.json')
                    if NAME_PATTERN.match(path.parent.name) and NAME_PATTERN.match(path.stem))
    return top + nested


def saved_edit_path(mask_dir: Path, name: str | None) -> Path:
    """MASK_DIR/NAME.json or MASK_DIR/FOLDER/NAME.json for a typed name ('.json' optional)."""
    name = (name or '').strip()
    if name.endswith('.json'):
        name = name[:-5]
    parts = name.split('/')
    if len(parts) > 2 or not all(NAME_PATTERN.match(part) and part not in ('.', '..') for part in parts):
        raise SavedEditError(f'type a name for the edit: NAME or FOLDER/NAME (letters, digits, ".", "_" or "-"; '
                             f'one folder level inside {mask_dir}, e.g. demo/dome2spire_layer8_rank3), got {name!r}')
    return mask_dir.joinpath(*parts[:-1], f'{parts[-1]}.json')


def export_path(text: str | None) -> Path:
    """The checkpoint file Export writes: a file name in a folder that exists (it is not created)."""
    path = Path((text or '').strip()).expanduser()
    if not path.name or path.is_dir():
        raise SavedEditError('type the checkpoint file to write, e.g. masks/rewritten.pt')
    if not path.parent.is_dir():
        raise SavedEditError(f'export: the folder {path.parent} does not exist (Export does not create folders): '
                             'create it first or choose an existing folder, e.g. masks/rewritten.pt')
    return path


NOTEBOOK_NAME = 'rewriting-interface.ipynb'
RULE_NOTEBOOK_NAME = 'reflection-rule-change.ipynb'      # section 5.3: changing a contextual rule


def notebooks_dir() -> Path:
    """The demonstration notebook and the bundled edits (masks/demo/): the checkout's notebooks/ folder, or
    its installed copy, the package data rewrite/notebooks/ of a non-editable install."""
    package = Path(__file__).resolve().parents[1]              # rewrite/
    installed = package / 'notebooks'
    return installed if (installed / NOTEBOOK_NAME).is_file() else package.parent / 'notebooks'


def notebook_files(dest: Path) -> list[tuple[Path, Path]]:
    """(source, target) of what `rewrite notebook DEST` copies: the two notebooks (the interface and the rule
    change), voila.json (Voila shuts down the kernels of closed tabs after 10 idle minutes when started in that
    folder) and masks/demo/*.json."""
    source = notebooks_dir()
    files = [(source / name, dest / name) for name in (NOTEBOOK_NAME, RULE_NOTEBOOK_NAME, 'voila.json')]
    bundled = sorted((source / 'masks' / 'demo').glob('*.json'))
    return files + [(path, dest / 'masks' / 'demo' / path.name) for path in bundled]
