"""The import rule of the code base, checked on its sources (a short AST check, no import is executed).

Layers, lowest first; a module may import its own layer and the layers below, never one above:

    utils  <-  rewrite.formats  <-  rewrite.core  <-  rewrite.analysis  <-  {rewrite.app, rewrite.cli}
           <-  rewrite.experiments  <-  metrics

rewrite.app and rewrite.cli are peers that do not import each other. `utils.demo` (the demo world) is imported
only by itself, rewrite.experiments and metrics; ipywidgets only by rewrite.app, utils.paintwidget and
rewrite.experiments (the glow world's prober). No two modules import each other, directly or in a circle
(imports inside functions count; imports under `if TYPE_CHECKING:` do not). The package roots `rewrite`
(its __init__, the compatibility finder `_moved`) and `rewrite.__main__` (the command line) stand outside.
Each rule is shown to fail on a forbidden import added to a copy of the real sources.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ['utils', 'rewrite.formats', 'rewrite.core', 'rewrite.analysis', 'rewrite.app|rewrite.cli',
          'rewrite.experiments', 'metrics']
OUTSIDE = {'rewrite', 'rewrite._moved', 'rewrite.__main__'}
DEMO_USERS = ('utils.demo', 'rewrite.experiments', 'metrics')
WIDGET_USERS = ('rewrite.app', 'utils.paintwidget', 'rewrite.experiments', 'metrics')


def sources(root: Path = ROOT) -> dict[str, str]:
    """Every module of the layered packages: dotted name -> source text."""
    found = {}
    for package in ('utils', 'rewrite', 'metrics'):
        for path in sorted((root / package).rglob('*.py')):
            parts = path.relative_to(root).with_suffix('').parts
            name = '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)
            found[name] = path.read_text()
    return found


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + '.')


def layer_of(module: str) -> int | None:
    """The index of `module`'s layer in LAYERS (None: outside the layers, or not this project's)."""
    if module in OUTSIDE:
        return None
    for index, layer in enumerate(LAYERS):
        if any(_under(module, prefix) for prefix in layer.split('|')):
            return index
    return None


def _type_checking_block(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and 'TYPE_CHECKING' in ast.unparse(node.test)


def imports_of(name: str, source: str, known: set[str]) -> list[tuple[str, int]]:
    """The modules `name` imports ((module, line)), resolved against the `known` module names; a `from X import y`
    where X.y is a module counts as importing X.y."""
    is_package = any(k.startswith(name + '.') for k in known)
    package = name if is_package else name.rpartition('.')[0]
    found = []

    def visit(node: ast.AST) -> None:
        if _type_checking_block(node):
            return
        if isinstance(node, ast.Import):
            found.extend((alias.name, node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ''
            if node.level:
                parent = package.split('.')
                parent = parent[:len(parent) - node.level + 1]
                base = '.'.join(parent + ([base] if base else []))
            for alias in node.names:
                sub = f'{base}.{alias.name}'
                found.append((sub if sub in known else base, node.lineno))
        for child in ast.iter_child_nodes(node):
            visit(child)
    visit(ast.parse(source))
    return found


def violations(modules: dict[str, str]) -> list[str]:
    """Every breach of the rules above, one line each ('' when none)."""
    known = set(modules)
    graph: dict[str, set[str]] = {}
    problems = []
    for name, source in modules.items():
        here = layer_of(name)
        graph[name] = set()
        if re.search(r"sys\.path\.(insert|append)\([^)]*'tests'", source):
            problems.append(f'{name} puts tests/ on sys.path (code never imports the tests)')
        for target, line in imports_of(name, source, known):
            top = target.split('.')[0]
            if top == 'ipywidgets' and not any(_under(name, p) for p in WIDGET_USERS):
                problems.append(f'{name}:{line} imports ipywidgets (only {", ".join(WIDGET_USERS)} may)')
            if top not in ('utils', 'rewrite', 'metrics', 'tests'):
                continue
            if top == 'tests':
                problems.append(f'{name}:{line} imports {target} (code never imports the tests)')
                continue
            if _under(target, 'utils.demo') and not any(_under(name, p) for p in DEMO_USERS):
                problems.append(f'{name}:{line} imports {target} (the demo world: only {", ".join(DEMO_USERS)} may)')
            there = layer_of(target)
            if here is not None and there is not None:
                if there > here:
                    problems.append(f'{name}:{line} imports {target}, a layer above ({LAYERS[there]} over '
                                    f'{LAYERS[here]})')
                elif there == here and '|' in LAYERS[here] and target.split('.')[:2] != name.split('.')[:2]:
                    problems.append(f'{name}:{line} imports {target}: {LAYERS[here]} do not import each other')
            resolved = next((m for m in (target, target.rpartition('.')[0]) if m in known), None)
            if resolved is not None and resolved != name:
                graph[name].add(resolved)
    problems += [f'import circle: {" -> ".join(cycle)}' for cycle in cycles(graph)]
    return problems


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One circle for each strongly connected group of modules (Tarjan), as a closed path. A package importing
    its own submodules (its __init__ re-exporting them) is not a circle: those edges are left out."""
    edges = {a: {b for b in bs if not b.startswith(a + '.')} for a, bs in graph.items()}
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def strong(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                out.append(_closed_path(sorted(group), edges))
    for v in sorted(edges):
        if v not in index:
            strong(v)
    return out


def _closed_path(group: list[str], edges: dict[str, set[str]]) -> list[str]:
    """A path from group[0] back to itself inside the group (breadth first)."""
    start, members = group[0], set(group)
    came = {start: None}
    queue = [start]
    while queue:
        v = queue.pop(0)
        for w in sorted(edges.get(v, ())):
            if w == start:
                path = [v]
                while came[path[-1]] is not None:
                    path.append(came[path[-1]])
                return list(reversed(path)) + [start]
            if w in members and w not in came:
                came[w] = v
                queue.append(w)
    return group + [start]


@pytest.fixture(scope='module')
def tree() -> dict[str, str]:
    return sources()


def test_the_code_base_keeps_the_import_rule(tree):
    assert {'rewrite.core.rewriter', 'rewrite.formats.editfile', 'rewrite.app.rewriteapp', 'rewrite.cli.entry',
            'utils.generators.site', 'metrics.advise_benchmark'} <= set(tree)
    assert violations(tree) == []


def _with(tree: dict[str, str], module: str, line: str) -> dict[str, str]:
    changed = dict(tree)
    changed[module] = tree[module] + '\n' + line + '\n'
    return changed


@pytest.mark.parametrize('module, line, complaint', [
    ('rewrite.core.edits', 'from rewrite.app.rewriteapp import GanRewriteApp', 'a layer above'),
    ('rewrite.formats.editfile', 'from rewrite.core import history', 'a layer above'),
    ('utils.masks', 'import rewrite.formats.editfile', 'a layer above'),
    ('rewrite.analysis.advisor', 'from rewrite.cli.common import CliError', 'a layer above'),
    ('rewrite.app.base', 'from rewrite.cli import sampling', 'do not import each other'),
    ('rewrite.cli.sample', 'from rewrite.experiments.glow import rule', 'a layer above'),
    ('rewrite.core.statistics', 'from utils.demo import scenes', 'the demo world'),
    ('rewrite.cli.common', 'import ipywidgets', 'only rewrite.app'),
    ('metrics.bench_widget', 'from tests.test_rewriteapp import SIZE', 'never imports the tests'),
    ('metrics.bench_widget', "sys.path.insert(0, str(ROOT / 'tests'))", 'never imports the tests'),
])
def test_a_forbidden_import_is_reported(tree, module, line, complaint):
    found = violations(_with(tree, module, line))
    assert len(found) >= 1 and all(module in f for f in found if 'circle' not in f), found
    assert any(complaint in f for f in found), found


def test_an_import_circle_is_reported(tree):
    """history is imported by edits; history importing edits back closes a circle (same layer, so only the
    circle rule sees it)."""
    found = violations(_with(tree, 'rewrite.core.history', '    from rewrite.core import edits'))
    assert any(f.startswith('import circle:') and 'rewrite.core.edits' in f and 'rewrite.core.history' in f
               for f in found), found
    under_type_checking = 'from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from rewrite.core import edits'
    assert violations(_with(tree, 'rewrite.core.history', under_type_checking)) == []


def test_imports_resolve_relative_and_submodule_forms():
    known = {'pkg', 'pkg.a', 'pkg.b', 'pkg.sub', 'pkg.sub.c'}
    assert imports_of('pkg.sub.c', 'from .. import a\nfrom ..b import x\nfrom . import c\n', known) == [
        ('pkg.a', 1), ('pkg.b', 2), ('pkg.sub.c', 3)]
    assert imports_of('pkg', 'from .sub import c\nimport os\n', known) == [('pkg.sub.c', 1), ('os', 2)]
    assert cycles({'a': {'b'}, 'b': {'c'}, 'c': {'a'}, 'd': {'a'}}) == [['a', 'b', 'c', 'a']]
    assert cycles({'p': {'p.x'}, 'p.x': {'p'}}) == []
