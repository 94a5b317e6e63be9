"""Atomic file writes: write to a temp file in the target's folder, then rename over the target."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, mode: int = 0o644, fsync: bool = True) -> Iterator[Path]:
    """Yields a temp path beside `path` (`.NAME.XXXX.tmp.SUFFIX`); on success it replaces `path` (with
    permissions `mode`; flushed to disk first unless fsync=False, for bulk outputs that can be
    regenerated), on any error it is removed and `path` is left as it was.

        with atomic_path('out.npz') as tmp:
            numpy.savez(tmp, ...)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f'.{path.name}.', suffix='.tmp' + ''.join(path.suffixes))
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        if fsync:
            with open(tmp, 'rb+') as f:
                os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode('utf-8'))
