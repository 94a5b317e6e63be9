"""Serving a notebook with Voila on a free localhost port, for as long as a `with` block lasts."""

from __future__ import annotations

import contextlib
import os
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
            raise RuntimeError(f'voila exited with code {process.returncode}:\n{log.read_text()[-3000:]}')
        with contextlib.suppress(OSError), socket.create_connection(('127.0.0.1', port), timeout=1):
            return
        time.sleep(0.2)
    raise TimeoutError(f'voila did not listen on port {port} within {timeout} s:\n{log.read_text()[-3000:]}')


@contextlib.contextmanager
def serve_voila(notebook: Path, env: dict[str, str], log: Path, timeout: float = 120) -> Iterator[str]:
    """Runs `voila notebook` (cells may take up to 10 minutes) and yields its URL; the server and its
    kernel (one process group, started here) are always killed at the end."""
    port = free_port()
    command = [sys.executable, '-m', 'voila', '--no-browser', f'--port={port}', '--Voila.ip=127.0.0.1',
               '--VoilaExecutor.timeout=600', '--show_tracebacks=True', str(notebook.name)]
    with open(log, 'w') as out:
        process = subprocess.Popen(command, cwd=notebook.parent, env={**os.environ, **env}, stdout=out,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for_port(port, process, timeout, log)
        yield f'http://127.0.0.1:{port}/'
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=15)
