"""The README's Python example runs as written (in a scratch folder)."""

from __future__ import annotations

import os
import re

import pytest
from conftest import ROOT


def python_blocks(text: str) -> list[str]:
    return re.findall(r'```python\n(.*?)```', text, flags=re.S)


@pytest.mark.slow
def test_readme_python_example_runs(tmp_path, monkeypatch):
    block = python_blocks((ROOT / 'README.md').read_text())[0]
    (tmp_path / 'notebooks').symlink_to(ROOT / 'notebooks')
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv('OMP_NUM_THREADS', os.environ.get('OMP_NUM_THREADS', '1'))
    namespace: dict = {}
    exec(compile(block, 'README.md', 'exec'), namespace)
    record = namespace['record']
    assert record.final_loss < record.initial_loss
    assert (tmp_path / 'edited5.png').is_file() and (tmp_path / 'edited.pt').is_file()
    assert any((tmp_path / 'cache').iterdir())
