"""`rewrite notebook [DIR]`: the notebooks and the bundled edits copied out of the package."""

from __future__ import annotations

import argparse
import contextlib
import os
from pathlib import Path

from rewrite.cli.common import CliError, check_writable_dir, single_process
from rewrite.formats.savededits import notebook_files, notebooks_dir
from utils.fileio import atomic_write_bytes

__all__ = ['add_parser', 'copy_all_or_nothing', 'NAME', 'run']

NAME = 'notebook'


def add_parser(sub) -> argparse.ArgumentParser:
    """The `notebook` command's parser, added to the subparsers `sub`."""
    p = sub.add_parser('notebook', help='copy the demonstration notebook and the bundled edits into a folder',
                       description=f'Copies {notebooks_dir() / "rewriting-interface.ipynb"}, '
                                   f'{notebooks_dir() / "reflection-rule-change.ipynb"} and the bundled edits '
                                   '(masks/demo/*.json) into DIR, for an installed package whose files live in '
                                   'site-packages. Existing files are never replaced.')
    p.add_argument('dest', type=Path, nargs='?', default=Path('rewrite-notebook'),
                   help='the folder to copy into (default ./rewrite-notebook; created if missing)')
    p.set_defaults(run=run)
    return p


def run(args: argparse.Namespace, world) -> None:
    """notebook [DIR]: the notebook and masks/demo/*.json copied into DIR (nothing replaced)."""
    single_process(world, 'notebook')
    check_writable_dir(args.dest, 'DIR')
    files = notebook_files(args.dest)
    missing = [str(source) for source, _ in files if not source.is_file()]
    if missing:
        raise CliError(f'the package has no {", ".join(missing)}: reinstall it (pip install .)')
    existing = [str(target) for _, target in files if os.path.lexists(target)]
    if existing:
        raise CliError(f'{", ".join(existing)} already exist(s): nothing was copied; choose another DIR or move them')
    for _, target in files:                     # every folder on the way, before anything is copied
        for folder in reversed(target.relative_to(args.dest).parents):
            folder = args.dest / folder
            if os.path.lexists(folder) and not folder.is_dir():
                raise CliError(f'{folder} exists and is not a folder (it would hold {target.name}): nothing was '
                               'copied; choose another DIR or move it')
    try:
        copy_all_or_nothing(files)
    except OSError as e:
        raise CliError(f'cannot copy into {args.dest} ({e.strerror or e}): nothing was copied') from None
    print(f'wrote {files[0][1]}, {files[1][1]}, {files[2][1]} and {len(files) - 3} bundled edits in '
          f'{args.dest / "masks" / "demo"}; '
          f'open it with `jupyter lab {files[0][1]}` (kernel "Python (rewrite)" if setup/install.sh installed it), '
          f'or `cd {args.dest} && voila {files[0][1].name}`')


def copy_all_or_nothing(files: list[tuple[Path, Path]]) -> None:
    """Copies each (source, target) atomically, creating folders; on any failure the files and folders
    made so far are removed again, so a copy is complete or absent."""
    made: list[Path] = []
    try:
        for source, target in files:
            made += [folder for folder in reversed(target.parents) if not os.path.lexists(folder)]
            target.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(target, source.read_bytes())
            made.append(target)
    except BaseException:
        for path in reversed(made):
            with contextlib.suppress(OSError):
                if path.is_dir() and not path.is_symlink():
                    path.rmdir()
                else:
                    path.unlink()
        raise
