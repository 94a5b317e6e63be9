"""Atomic file writes: write to a temp file in the target's folder, then rename over the target.

Temp files are named `.NAME.<pid>-<host>.<random>.tmp<suffixes>` (host: 8 hex digits of the host
name's hash), so they can be owned by pattern: each write first removes the temps of the same target
left by a writer that died (its pid no longer runs on this host) or older than STALE_TEMP_SECONDS
(whatever the host, for shared folders; also the pid-less `.NAME.<random>.tmp*` of earlier versions).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

__all__ = ['atomic_path', 'atomic_write_bytes', 'atomic_write_text', 'folder_problem', 'remove_stale_temps',
           'STALE_TEMP_SECONDS']

STALE_TEMP_SECONDS = 24 * 3600      # a temp this old is stale even if its pid runs (reused pids, other hosts)


def _host_tag() -> str:
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):     # no such process (or no such pid number at all)
        return False
    except PermissionError:                         # another user's process
        return True
    return True


def remove_stale_temps(path: str | os.PathLike, now: float | None = None) -> list[Path]:
    """Removes the temps of atomic writes to `path` whose writer died or that are older than
    STALE_TEMP_SECONDS; returns the paths removed. Only names of this module's pattern are touched."""
    path = Path(path)
    suffix = re.escape('.tmp' + ''.join(path.suffixes))
    # this module's names; also its earlier ones without pid and host (`.NAME.<random>.tmp*`: age rule only)
    pattern = re.compile(rf'\.{re.escape(path.name)}\.(?:(\d+)-([0-9a-f]{{8}})\.)?[A-Za-z0-9_]{{8}}{suffix}')
    now = time.time() if now is None else now
    removed = []
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(path.parent):
            match = pattern.fullmatch(entry.name)
            if not match or not entry.is_file(follow_symlinks=False):
                continue
            with contextlib.suppress(FileNotFoundError):
                dead = match[1] is not None and match[2] == _host_tag() and not _pid_alive(int(match[1]))
                if dead or now - entry.stat(follow_symlinks=False).st_mtime > STALE_TEMP_SECONDS:
                    os.unlink(entry.path)
                    removed.append(Path(entry.path))
    return removed


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, mode: int = 0o644, bulk: bool = False) -> Iterator[Path]:
    """Yields a temp path beside `path` (`.NAME.XXXX.tmp.SUFFIX`); on success it replaces `path` (with
    permissions `mode`), on any error it is removed and `path` is left as it was.

    bulk=True: one of many regenerable files in a folder (numbered samples): not flushed to disk, and
    the folder is not scanned for stale temps on every write (that scan grows with the folder: 21 ms a
    write among 20,000 files); the caller removes stale temps once (`rewrite.cli.sampling.remove_stale_temps`).

        with atomic_path('out.npz') as tmp:
            numpy.savez(tmp, ...)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not bulk:
        remove_stale_temps(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f'.{path.name}.{os.getpid()}-{_host_tag()}.',
                               suffix='.tmp' + ''.join(path.suffixes))
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        if not bulk:
            with open(tmp, 'rb+') as f:
                os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def folder_problem(path: str | os.PathLike) -> str | None:
    """Why `path` is not, and cannot be created as, a folder this process can write into; None when it can.
    Checked without creating anything (the write probe is an unnamed temp file): the nearest part of the
    path that exists must be a folder (not a file, a device or a dangling symbolic link) that takes files."""
    path = Path(path).absolute()
    base = path
    while not os.path.lexists(base) and base != base.parent:
        base = base.parent
    if base.is_symlink() and not base.exists():
        return f'{base} is a dangling symbolic link'
    if not base.is_dir():
        return f'{path} exists and is not a folder' if base == path else f'{base} is not a folder'
    try:
        with tempfile.TemporaryFile(dir=base):
            pass
    except OSError as e:
        return f'{base} is not writable ({e.strerror or e})'
    return None


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode('utf-8'))
