"""Serving a notebook with Voila or JupyterLab on a free localhost port, for as long as a `with` block lasts."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen, timeout: float, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f'{process.args[2]} exited with code {process.returncode}:\n{log.read_text()[-3000:]}')
        with contextlib.suppress(OSError), socket.create_connection(('127.0.0.1', port), timeout=1):
            return
        time.sleep(0.2)
    raise TimeoutError(f'{process.args[2]} did not listen on port {port} within {timeout} s:\n'
                       f'{log.read_text()[-3000:]}')


@contextlib.contextmanager
def serve_voila(notebook: Path, env: dict[str, str], log: Path, timeout: float = 120) -> Iterator[str]:
    """Runs `voila notebook` (cells may take up to 10 minutes) and yields its URL; the server and its
    kernel (one process group, started here) are always killed at the end."""
    port = free_port()
    command = [sys.executable, '-m', 'voila', '--no-browser', f'--port={port}', '--Voila.ip=127.0.0.1',
               '--VoilaExecutor.timeout=600', '--show_tracebacks=True', str(notebook.name)]
    with serving(command, port, notebook.parent, env, log, timeout):
        yield f'http://127.0.0.1:{port}/'


# A fresh settings folder: no pop-ups (news, update checks, the kernel choice of a slow start: the notebook's
# own kernel is started) over the page, and every cell kept in the page (by default JupyterLab drops the cells
# scrolled out of view, so a test could not find the widget).
LAB_SETTINGS = {'@jupyterlab/apputils-extension/notification.jupyterlab-settings':
                '{"checkForUpdates": false, "fetchNews": "false"}',
                '@jupyterlab/notebook-extension/tracker.jupyterlab-settings':
                '{"windowingMode": "none", "autoStartDefaultKernel": true}'}


@contextlib.contextmanager
def serve_jupyterlab(notebook: Path, env: dict[str, str], log: Path, timeout: float = 120,
                     app: str = 'jupyterlab') -> Iterator[str]:
    """Runs `jupyter lab` (or, with app='notebook', Notebook 7) on the notebook's folder (a random token,
    fresh settings and workspaces beside the notebook) and yields the URL that opens the notebook;
    killed at the end like Voila."""
    port, token = free_port(), secrets.token_hex(16)
    settings = notebook.parent / '.lab-settings'
    for name, text in LAB_SETTINGS.items():
        (settings / name).parent.mkdir(parents=True, exist_ok=True)
        (settings / name).write_text(text)
    command = [sys.executable, '-m', app, '--no-browser', f'--port={port}', '--ServerApp.ip=127.0.0.1',
               f'--IdentityProvider.token={token}', f'--ServerApp.root_dir={notebook.parent}',
               f'--LabServerApp.user_settings_dir={settings}',
               f'--LabServerApp.workspaces_dir={notebook.parent / ".lab-workspaces"}',
               '--LabApp.extension_manager=readonly', '--allow-root',
               '--KernelSpecManager.allowed_kernelspecs=python3']   # the notebook's kernel only: nothing to choose
    with serving(command, port, notebook.parent, env, log, timeout):
        page = 'lab/tree' if app == 'jupyterlab' else 'notebooks'
        yield f'http://127.0.0.1:{port}/{page}/{notebook.name}?token={token}'


@contextlib.contextmanager
def serving(command: list[str], port: int, cwd: Path, env: dict[str, str], log: Path,
            timeout: float) -> Iterator[subprocess.Popen]:
    """Runs a server command in its own process group until it listens on `port` and yields its process;
    kills the group at the end."""
    with open(log, 'w') as out:
        process = subprocess.Popen(command, cwd=cwd, env={**os.environ, **env}, stdout=out,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for_port(port, process, timeout, log)
        yield process
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=15)
