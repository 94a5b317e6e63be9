"""Edit files read as strict JSON: bounded reads of regular files only, no field given twice, integers too long
to convert kept as text (`LongInteger`), values made plain (numpy scalars, tuples) before writing.
"""

from __future__ import annotations

import json
import os
import stat

from utils.masks import FieldError as EditFileError

__all__ = ['json_value', 'loads_strict', 'LongInteger', 'MAX_EDIT_BYTES', 'MAX_INT_DIGITS', 'parse_int',
           'read_edit_bytes', 'read_edit_json', 'reject_duplicates']

MAX_EDIT_BYTES = 256 * 2 ** 20     # 256 MiB: the original tool's files are < 100 kB (a few 1024 px masks)


MAX_INT_DIGITS = 1000      # longer JSON integers are not converted (see LongInteger)


def json_value(value: object) -> object:
    """A value field as written: objects and lists copied (one level deeper for solver_options' lists)."""
    if isinstance(value, dict):
        return {name: list(item) if isinstance(item, (list, tuple)) else item for name, item in value.items()}
    return value


def reject_duplicates(pairs: list[tuple[str, object]]) -> dict:
    result = {}
    for name, value in pairs:
        if name in result:
            raise EditFileError(name, 'appears twice in the JSON object')
        result[name] = value
    return result


class LongInteger:
    """A JSON integer too long to convert (Python raises an internal ValueError past 4300 digits): kept as
    a placeholder, so that the field holding it is named when it is validated."""

    def __init__(self, digits: int):
        self.digits = digits

    def __repr__(self) -> str:
        return f'<integer of {self.digits} digits>'


def parse_int(text: str) -> int | LongInteger:
    digits = len(text.lstrip('-'))
    return LongInteger(digits) if digits > MAX_INT_DIGITS else int(text)


def loads_strict(text: str) -> object:
    try:
        return json.loads(text, object_pairs_hook=reject_duplicates, parse_int=parse_int)
    except json.JSONDecodeError as err:
        raise EditFileError('request', f'not valid JSON ({err.msg} at line {err.lineno} column {err.colno})') from None
    except RecursionError:
        raise EditFileError('request', 'JSON nested too deeply') from None


def read_edit_bytes(path: str | os.PathLike, limit: int | None = None) -> bytes:
    """The bytes of an edit file, read with a bound: a FIFO, device (/dev/zero) or folder is refused
    without blocking (EditFileError 'request'), as is a file over `limit` bytes (MAX_EDIT_BYTES)."""
    limit = MAX_EDIT_BYTES if limit is None else limit
    fd = os.open(path, os.O_RDONLY | getattr(os, 'O_NONBLOCK', 0))
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise EditFileError('request', f'{path} is not a regular file (a FIFO, device or folder cannot be '
                                       'an edit file)')
    with os.fdopen(fd, 'rb') as f:
        if info.st_size > limit:
            raise EditFileError('request', f'{path} has {info.st_size} bytes; an edit file has at most {limit}')
        data = f.read(limit + 1)
    if len(data) > limit:
        raise EditFileError('request', f'{path} has more than {limit} bytes; an edit file has at most {limit}')
    return data


def read_edit_json(obj: str | os.PathLike) -> object:
    """The JSON value of an edit (JSON text, or the path of a file), read as load_edit reads it, before
    validation: bounded reads of regular files only, fields given twice and too deep nesting refused
    (EditFileError 'request'); OSError if the file cannot be read."""
    if isinstance(obj, str) and obj.lstrip()[:1] in ('{', '['):
        return loads_strict(obj)
    raw = read_edit_bytes(obj)
    try:
        return loads_strict(raw.decode('utf-8'))
    except UnicodeDecodeError as err:
        raise EditFileError('request', f'{obj} is not UTF-8 text ({err.reason})') from None
