"""What every metrics script reports with: the machine it ran on, JSON written atomically, markdown tables."""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch

from utils.fileio import atomic_write_text

ROOT = Path(__file__).resolve().parents[1]


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo where there is one)."""
    try:
        for line in Path('/proc/cpuinfo').read_text().splitlines():
            if line.startswith('model name'):
                return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or 'unknown'


def machine_info(threads: int | None = None) -> dict:
    """The machine, the software and how loaded it was (threads: the torch threads used; default the current)."""
    load = os.getloadavg() if hasattr(os, 'getloadavg') else None
    return {'cpu_model': cpu_model(), 'cpu_count': os.cpu_count(), 'platform': platform.platform(),
            'machine': platform.machine(), 'python': platform.python_version(), 'torch': torch.__version__,
            'torch_threads': torch.get_num_threads() if threads is None else threads,
            'mkldnn': torch.backends.mkldnn.is_available(),
            'load_average_1_5_15': [round(x, 2) for x in load] if load else None,
            'note': 'shared CPU: other jobs (GAN training, other engineers) ran at the same time'}


def rel(path: Path) -> str:
    """`path` relative to the project root when inside it."""
    path = Path(path).resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def write_json(path: Path, obj) -> None:
    """obj as indented JSON, written atomically (numpy and torch scalars as numbers, paths relative)."""
    atomic_write_text(path, json.dumps(obj, indent=1, default=_jsonable) + '\n')


def write_report(out: Path, result: dict, markdown: str) -> None:
    """result as JSON at `out` and `markdown` beside it (.md), both atomically; prints the markdown and where."""
    write_json(out, result)
    atomic_write_text(out.with_suffix('.md'), markdown)
    print(markdown)
    print(f'wrote {out} and {out.with_suffix(".md")}')


def _jsonable(value):
    if isinstance(value, (np.generic, torch.Tensor)):
        return value.item()
    if isinstance(value, Path):
        return rel(value)
    raise TypeError(f'not JSON serialisable: {type(value).__name__}')


def fmt(value, digits: int = 3) -> str:
    """A table cell: floats to `digits` decimals, nan and None as n/a, booleans as pass/FAIL."""
    if value is None:
        return 'n/a'
    if isinstance(value, bool):
        return 'pass' if value else 'FAIL'
    if isinstance(value, float):
        return 'n/a' if not np.isfinite(value) else f'{value:.{digits}f}'
    return str(value)


def pct(value: float) -> str:
    return 'n/a' if not np.isfinite(value) else f'{100 * value:.1f}%'


def markdown_table(header: Sequence[str], rows: Iterable[Sequence]) -> str:
    """A markdown table; cells through `fmt` (pass strings to format a column otherwise)."""
    lines = ['| ' + ' | '.join(header) + ' |', '|' + '|'.join(' --- ' for _ in header) + '|']
    lines += ['| ' + ' | '.join(fmt(c) for c in row) + ' |' for row in rows]
    return '\n'.join(lines)
