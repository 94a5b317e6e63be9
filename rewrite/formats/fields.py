"""The checks of an edit request's value fields (preserve_weight, layer, rank, solver, solver_options, model)
and of its region lists, each raising EditFileError that names the field (rewrite/formats/editfile.py).
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Mapping
from dataclasses import fields

from rewrite.formats.registry import SOLVERS
from rewrite.formats.selection import Selection, parse_pair
from rewrite.formats.settings import MAX_PRESERVE_WEIGHT, RewriteError, check_options
from utils.masks import FieldError as EditFileError
from utils.masks import describe_value  # the mask codec, re-exported as part of this module's API

__all__ = ['check_count', 'check_model', 'check_option', 'check_region_count', 'check_solver',
           'check_solver_options', 'check_weight', 'FINGERPRINT', 'MAX_MODEL_NAME', 'MAX_REGIONS',
           'parse_key']

FINGERPRINT = re.compile(r'^[0-9a-f]{64}$')


MAX_MODEL_NAME = 200


MAX_REGIONS = 100          # regions in one list field (key, preserve) of a request


def check_weight(value: object, name: str = 'preserve_weight') -> int | float:
    """A finite real number >= 0 (not bool), kept as given: an int stays an int (numpy scalars become
    Python ones), so that writing it back gives the same text."""
    expected = 'must be a finite number >= 0'
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise EditFileError(name, f'{expected}, got {describe_value(value)}')
    value = int(value) if isinstance(value, numbers.Integral) else float(value)
    try:
        finite = math.isfinite(value)          # an int too large for a float overflows
    except OverflowError:
        finite = False
    if not finite or value < 0:
        raise EditFileError(name, f'{expected}, got {describe_value(value)}')
    if value > MAX_PRESERVE_WEIGHT:
        raise EditFileError(name, f'must be at most {MAX_PRESERVE_WEIGHT:g} (MAX_PRESERVE_WEIGHT), '
                                  f'got {describe_value(value)}')
    return value


def check_count(value: object, name: str, low: int) -> int:
    """An int >= low (any numbers.Integral but bool, stored as int): `layer` (low 0) and `rank` (low 1)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise EditFileError(name, f'must be an int >= {low}, got {describe_value(value)}')
    return int(value)


def check_solver(value: object) -> str:
    """A registered solver's name (the registry read when called: a newly registered solver counts)."""
    if not isinstance(value, str) or value not in SOLVERS:
        raise EditFileError('solver', f'must be one of {", ".join(SOLVERS)}, got {describe_value(value)}')
    return value


def check_option(value: object, default: object, where: str) -> object:
    """One solver option, typed as its default (bool, int, number, or a tuple of positive numbers)."""
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise EditFileError(where, f'must be true or false, got {describe_value(value)}')
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
            raise EditFileError(where, f'must be an int >= 0, got {describe_value(value)}')
        return int(value)
    if isinstance(default, tuple):
        if not isinstance(value, (list, tuple)) or not value:
            raise EditFileError(where, f'must be a non-empty list of positive numbers, got {describe_value(value)}')
        return [check_weight(item, f'{where}[{index}]') for index, item in enumerate(value)]
    return check_weight(value, where)


def check_solver_options(value: object, solver: str | None) -> dict:
    """The solver's options that differ from its defaults: names of its options, values of their types,
    checked as the solver checks them; kept as written (ints stay ints)."""
    if solver is None:
        raise EditFileError('solver_options', 'are the options of a solver and need the solver field '
                                              '(leave the field out instead)')
    if not isinstance(value, Mapping):
        raise EditFileError('solver_options',
                            f'must be an object of option names and values, got {describe_value(value)}')
    registered = SOLVERS[solver]
    defaults = {f.name: f.default for f in fields(registered.options)}
    options = {}
    for name, option in value.items():
        if name not in defaults:
            raise EditFileError(f'solver_options.{name}', f'is not an option of the {solver!r} solver '
                                                          f'(expected some of {", ".join(defaults)})')
        options[name] = check_option(option, defaults[name], f'solver_options.{name}')
    try:
        if registered.check is not None:
            registered.check(options)
        if 'niter' in defaults:                       # the Adam solvers' steps, interval and rate
            check_options(**{name: options.get(name, defaults[name]) for name in ('niter', 'piter', 'lr')})
    except (RewriteError, TypeError, ValueError) as err:
        raise EditFileError('solver_options', str(err)) from None
    return options


def check_model(value: object) -> dict:
    """{'fingerprint': 64 lowercase hex digits, 'name': optional text}, in the order given."""
    if not isinstance(value, Mapping):
        raise EditFileError('model', f'must be an object with a fingerprint (and a name), got {describe_value(value)}')
    for name in value:
        if name not in ('fingerprint', 'name'):
            raise EditFileError(f'model.{name}', 'unknown field (expected fingerprint and, optionally, name)')
    if 'fingerprint' not in value:
        raise EditFileError('model.fingerprint', 'is missing (the SHA-256 of the weights, 64 hex digits)')
    fingerprint = value['fingerprint']
    if not isinstance(fingerprint, str) or not FINGERPRINT.match(fingerprint):
        raise EditFileError('model.fingerprint', f'must be a SHA-256 of 64 lowercase hex digits, got '
                                                 f'{describe_value(fingerprint)}')
    if 'name' in value:
        name = value['name']
        if not isinstance(name, str) or not 0 < len(name) <= MAX_MODEL_NAME:
            raise EditFileError('model.name',
                                f'must be text of 1..{MAX_MODEL_NAME} characters, got {describe_value(name)}')
    return dict(value)


def parse_key(value: object, name: str = 'key') -> list[Selection]:
    """A list field (`key` or `preserve`): at least one [imgnum, mask] pair."""
    if not isinstance(value, (list, tuple)):
        raise EditFileError(name, f'must be a list of [imgnum, mask] pairs, got {describe_value(value)}')
    if not value:
        raise EditFileError(name, 'must list at least one [imgnum, mask] pair (leave the field out instead)')
    check_region_count(len(value), name)
    return [parse_pair(pair, f'{name}[{index}]') for index, pair in enumerate(value)]


def check_region_count(count: int, name: str) -> None:
    if count > MAX_REGIONS:
        raise EditFileError(name, f'lists {count} regions; a request has at most {MAX_REGIONS} (MAX_REGIONS) in '
                                  'each of key and preserve')
