"""The module paths of earlier releases, kept working: `import rewrite.ganrewrite`, `from rewrite import editfile`,
`from rewrite.rewriteapp import GanRewriteApp`, ... give the module at its new place (the same module object, so
a name patched through either path is patched for both). Importing an old path costs nothing until it is used.

    MOVED['ganrewrite']          # 'rewrite.core.rewriter'
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys

__all__ = ['install', 'MOVED', 'MovedModuleFinder']

MOVED: dict[str, str] = {
    'ganrewrite': 'rewrite.core.rewriter', 'pieces': 'rewrite.core.pieces', 'contextkeys': 'rewrite.core.contextkeys',
    'keymethods': 'rewrite.core.keymethods', 'goals': 'rewrite.core.goals', 'edits': 'rewrite.core.edits',
    'history': 'rewrite.core.history', 'render': 'rewrite.core.render', 'statistics': 'rewrite.core.statistics',
    'preserve': 'rewrite.core.preserve', 'damage': 'rewrite.core.damage', 'solvers': 'rewrite.core.solvers',
    'checks': 'rewrite.formats.settings', 'methods': 'rewrite.formats.registry', 'editfile': 'rewrite.formats.editfile',
    'savededits': 'rewrite.formats.savededits', 'geometry': 'utils.geometry', 'distributed': 'utils.distributed',
    'advisor': 'rewrite.analysis.advisor', 'rulechange': 'rewrite.analysis.rulechange',
    'rewriteapp': 'rewrite.app.rewriteapp', 'preservepanel': 'rewrite.app.preservepanel',
    'advisepanel': 'rewrite.app.advisepanel', 'sampling': 'rewrite.cli.sampling',
    'glowrule': 'rewrite.experiments.glow.rule', 'ruleprober': 'rewrite.experiments.glow.prober',
}


class MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds `rewrite.<old name>` and loads it as the module at its new path."""

    def find_spec(self, fullname: str, path=None, target=None):
        package, _, name = fullname.rpartition('.')
        if package == 'rewrite' and name in MOVED:
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec):
        module = importlib.import_module(MOVED[spec.name.rpartition('.')[2]])
        spec.loader_state = module.__spec__          # the import machinery gives the module the old path's spec
        return module

    def exec_module(self, module) -> None:
        module.__spec__ = module.__spec__.loader_state if module.__spec__.loader_state else module.__spec__


def install() -> None:
    """Adds the finder once (importing `rewrite` does this)."""
    if not any(isinstance(f, MovedModuleFinder) for f in sys.meta_path):
        sys.meta_path.append(MovedModuleFinder())
