"""Rewriting a deep generative model: edit one layer of a generator so a copy/paste/context selection becomes a rule.

The toolkit's second top-level package is `utils` (utils.stylegan2, utils.nethook, ...), a name a user's own
`utils.py` beside a notebook or script would take first on sys.path. Importing `rewrite` makes sure `utils` is
this toolkit's package: when another `utils` would be found first it loads the toolkit's one under that name and
warns (naming the other file); when another `utils` is already imported it raises ImportError saying what to do.
So import `rewrite` (or anything in it) before `utils.*`, or rename your own utils.py.
"""

from __future__ import annotations

import importlib.util
import sys
import warnings
from pathlib import Path

__all__ = ['ensure_own_utils']

OWN_UTILS = Path(__file__).resolve().parents[1] / 'utils' / '__init__.py'


def _same_file(path: str | None) -> bool:
    return path is not None and Path(path).resolve() == OWN_UTILS


def ensure_own_utils() -> None:
    """Makes `import utils` give this toolkit's package (see the module docstring)."""
    loaded = sys.modules.get('utils')
    if loaded is not None:
        where = getattr(loaded, '__file__', None)
        if not _same_file(where):
            raise ImportError(f"another module named 'utils' is already imported ({where}); "
                              f"this toolkit needs its own utils package ({OWN_UTILS.parent}): rename your utils.py "
                              "(e.g. to my_utils.py), or import rewrite before it")
        return
    found = importlib.util.find_spec('utils')
    if found is not None and _same_file(found.origin):
        return
    spec = importlib.util.spec_from_file_location('utils', OWN_UTILS,
                                                  submodule_search_locations=[str(OWN_UTILS.parent)])
    module = importlib.util.module_from_spec(spec)
    sys.modules['utils'] = module
    spec.loader.exec_module(module)
    other = found.origin if found is not None else 'an entry of sys.path'
    warnings.warn(f"a module named 'utils' ({other}) comes before this toolkit's utils package on sys.path; the "
                  f"toolkit's ({OWN_UTILS.parent}) was loaded under that name, so `import utils` now gives it: "
                  'rename your utils.py (e.g. to my_utils.py) to use both', stacklevel=2)


ensure_own_utils()

from rewrite import _moved  # noqa: E402  (after ensure_own_utils: the moved modules import utils)

_moved.install()
