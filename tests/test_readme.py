"""The README's Python example and its shell commands run as written (in scratch folders)."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

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


# ---- the shell commands ------------------------------------------------------------------------------

SMALL_N = 8                       # image counts above this are lowered to it (README says so)
COUNT_OPTIONS = ('--n', '--num-images')
# commands left out, each with the reason (README names them too); every entry must match a README command
EXCLUDED = {
    ('bash', 'setup/install.sh'): 'installs packages (network, root)',
    ('bash', 'setup/run-tests.sh'): 'runs the whole test suite, this test included',
    ('python', '-m', 'venv'): 'creates a virtual environment',
    ('.', '.venv/bin/activate'): 'activates that environment (a shell builtin)',
    ('pip', 'install'): 'installs packages from the network',
    ('python', '-m', 'rewrite', 'advise'): 'minutes (a 12-setting sweep per layer); tests/test_advisor.py runs it',
    ('python', '-m', 'pytest'): 'runs tests, this test included',
}


def placeholder_files(folder: Path) -> None:
    """The README's stand-ins: E.json (any edit file) and an NVlabs snapshot."""
    from conftest import REFERENCE, need_shared
    shutil.copy(ROOT / 'notebooks' / 'masks' / 'demo' / 'dome2spire_layer8_rank3.json', folder / 'E.json')
    (folder / 'network-snapshot-001000.pkl').symlink_to(need_shared(REFERENCE / 'oracle' / 'ada64.pkl'))


def shell_blocks(text: str) -> list[list[list[str]]]:
    """The commands of each of the README's ```bash blocks, as argument lists, in order (comments
    dropped, `a && b` split in two)."""
    blocks = []
    for block in re.findall(r'```bash\n(.*?)```', text, flags=re.S):
        commands = []
        for line in block.replace('\\\n', ' ').splitlines():
            words = shlex.split(line, comments=True)
            while words:
                cut = words.index('&&') if '&&' in words else len(words)
                commands.append(words[:cut])
                words = words[cut + 1:]
        blocks.append(commands)
    return blocks


def shell_commands(text: str) -> list[list[str]]:
    return [command for block in shell_blocks(text) for command in block]


def small(command: list[str]) -> list[str]:
    """The command with every image count above SMALL_N lowered to SMALL_N."""
    out = list(command)
    for i, word in enumerate(out[:-1]):
        if word in COUNT_OPTIONS and int(out[i + 1]) > SMALL_N:
            out[i + 1] = str(SMALL_N)
    return out


def excluded(command: list[str]) -> tuple[str, ...] | None:
    return next((prefix for prefix in EXCLUDED if tuple(command[:len(prefix)]) == prefix), None)


def scratch(tmp_path: Path, name: str) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    (folder / 'notebooks').symlink_to(ROOT / 'notebooks')
    return folder


def run_command(command: list[str], cwd: Path) -> subprocess.CompletedProcess:
    program = sys.executable if command[0] == 'python' else shutil.which(command[0])
    assert program, f'{command[0]} is not on PATH (setup/install.sh installs it)'
    env = dict(os.environ, OMP_NUM_THREADS='1', XDG_CACHE_HOME=str(cwd / '.cache'),
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get('PYTHONPATH', '')]))
    return subprocess.run([program, *command[1:]], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def test_command_extraction_and_the_size_rule():
    text = 'x\n```bash\na --n 10000 b   # c && d\ne && f --num-images 3 \\\n  --x 1\n```\n```python\nno\n```\n'
    assert shell_commands(text) == [['a', '--n', '10000', 'b'], ['e'], ['f', '--num-images', '3', '--x', '1']]
    assert small(['a', '--n', '10000', '--num-images', '9', '--rank', '3000']) == \
        ['a', '--n', '8', '--num-images', '8', '--rank', '3000']
    commands = shell_commands((ROOT / 'README.md').read_text())
    assert any(c[0] == 'torchrun' for c in commands)
    for prefix in EXCLUDED:                         # no stale exclusions
        assert any(excluded(c) == prefix for c in commands), prefix


def test_ci_runs_the_readme_set_up_block():
    """.ci/run extracts the commands of README's set-up block with an awk program: run it on README and
    compare with that block as this test reads it; the commands install, then run the whole suite."""
    script = (ROOT / '.ci' / 'run').read_text()
    program = re.search(r"awk '(.*?)' README.md", script, flags=re.S).group(1)
    proc = subprocess.run(['awk', program, str(ROOT / 'README.md')], capture_output=True, text=True, check=True)
    text = (ROOT / 'README.md').read_text()
    set_up = shell_blocks(text[text.index('## Set-up'):])[0]
    extracted = [command for line in proc.stdout.splitlines() for command in shell_commands(f'```bash\n{line}\n```')]
    assert extracted == set_up
    assert set_up[0] == ['bash', 'setup/install.sh'] and set_up[-1] == ['bash', 'setup/run-tests.sh']
    assert 'python3 -m venv' in script and '--system-site-packages' not in script


@pytest.mark.slow
def test_readme_shell_commands_run_as_written(tmp_path):
    """Every command of the README's bash blocks, exit status 0: each block in its own scratch folder,
    its commands in order (later ones use what earlier ones wrote, as a reader's would)."""
    ran = []
    for index, block in enumerate(shell_blocks((ROOT / 'README.md').read_text())):
        folder = scratch(tmp_path, f'block{index}')
        placeholder_files(folder)
        for command in block:
            if excluded(command):
                continue
            proc = run_command(small(command), folder)
            assert proc.returncode == 0, f'{shlex.join(command)}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}'
            ran.append((folder, command))
    assert any(c[0] == 'torchrun' for _, c in ran) and len(ran) >= 8
    outputs = {name for folder, _ in ran for name in ('demo_before_after.png', 'mine-edited.pt', 'edited.pt')
               if (folder / name).is_file()}
    assert outputs == {'demo_before_after.png', 'mine-edited.pt', 'edited.pt'}


@pytest.mark.slow
def test_the_torchrun_line_writes_what_one_process_writes(tmp_path):
    """The README's torchrun line (small size) against the same command run by one process: the same
    files, byte for byte (image i is drawn from seed i whichever rank draws it)."""
    (line,) = [c for c in shell_commands((ROOT / 'README.md').read_text()) if c[0] == 'torchrun']
    at = line.index('-m')
    single = ['python', *line[at:]]                 # python -m rewrite sample ... without torchrun
    outputs = {}
    for name, command in (('torchrun', line), ('single', single)):
        folder = scratch(tmp_path, name)
        proc = run_command(small(command), folder)
        assert proc.returncode == 0, f'{shlex.join(command)}\n{proc.stderr[-3000:]}'
        out = folder / command[command.index('--out') + 1]
        outputs[name] = {p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.is_file()}
    assert sorted(outputs['torchrun']) == sorted(outputs['single'])
    assert len([n for n in outputs['single'] if n.endswith('.png')]) == SMALL_N + 1      # + the contact sheet
    assert outputs['torchrun'] == outputs['single']
