"""Edit files: the JSON requests saved by the rewriting UI, their masks, validation and atomic saving.

An edit request is a JSON object with some of these fields (the format of the original tool's saved edits)::

    object: [imgnum, mask]            region to copy
    paste:  [imgnum, mask]            where the copy is pasted
    key:    [[imgnum, mask], ...]     context examples (absent: the paste region is the only one)
    query:  [imgnum, mask]            region used for search/matching
    preserve: [[imgnum, mask], ...]   regions whose layer outputs must stay as they are (optional; the
                                      original tool ignores fields it does not know)
    preserve_weight: number           the weight of the preserve regions' term (optional, only with
                                      `preserve`; a finite number >= 0; absent: the rewriter's default,
                                      rewrite.core.preserve.PRESERVE_WEIGHT; 0 ignores the regions)

How the edit was made (all optional; the original tool ignores fields it does not know, and a file
without them means what it always meant: the layer, rank and solver come from the caller)::

    layer: int                        the layer N (layerN) the edit was made for (>= 0)
    rank: int                         the rank of the weight change (>= 1)
    solver: name                      a registered solver (rewrite.formats.registry.SOLVERS: fast, original, linear)
    solver_options: {name: value}     the solver's options that differ from its defaults (only with
                                      `solver`; names and values as rewrite.formats.registry.SOLVERS[solver].options)
    model: {"fingerprint": hex, "name": text}
                                      the generator the edit was made on: the SHA-256 of its weights
                                      before the edit (rewrite.core.statistics.weights_fingerprint: 64 lowercase
                                      hex digits) and, optionally, a human-readable name

`imgnum` indexes the seeded z-sample; `mask` is a ``data:image/png;base64,...`` URL of a square RGBA PNG
whose unpainted pixels are (0, 0, 0, 0) and painted ones white with an alpha fading at the brush edge.

How a mask is read (the original tool's decoding, reproduced exactly so its files mean the same here):

- Decoding: strip ``data:image/...;base64,``, base64-decode, open the PNG, convert to RGB (RGBA -> RGB
  drops alpha without compositing, so every painted pixel is (255, 255, 255) whatever its alpha, every
  unpainted one black), then resize with PIL's bilinear filter (a separable triangle on pixel centres,
  half-pixel convention, whose support widens by the scale factor when shrinking: antialiased; no
  ``align_corners``), rounded back to 8 bits; the red channel / 255 (float32) is the mask.
- Resolution: key (context) and query masks are decoded at the rewritten layer's input feature map,
  object and paste masks at its output; a region is ``area > 0`` and its box is
  ``(top, left, bottom + 1, right + 1)`` (``(0, 0, 0, 0)`` when empty). Without ``key`` the paste
  region is the only context; a mask is empty when its full-size red channel sums to 0.
- Writing: ``json.dump(request, f, indent=1)`` (no trailing newline), fields in the order they were
  set; an emptied key list is removed.

Because of the 8-bit rounding small regions vanish at low resolution: one painted pixel of a 1024 mask
weighs about 255 / 128**2 < 0.5 at 8x8, 16x16 and 32x32 and rounds to 0 (it shows from 64x64 up).

Decisions of this module:

- ``imgnum`` must be a non-negative int (any ``numbers.Integral``, e.g. numpy ints from a UI, is stored as
  ``int``); bool and floats, even integral ones like 3.0, are rejected: the original UI always wrote ints
  and accepting 3.0 would make a file read then written differ.
- The mask URL must start with exactly ``data:image/png;base64,`` (what a browser canvas writes), the
  base64 must be strict (no whitespace) and decode to a PNG of 1..MAX_MASK_SIZE pixels square, in a
  8-bit mode (1, L, LA, P, RGB, RGBA). A mask with nothing painted (red channel all 0) is an error.
- ``key``, when present, must list at least one pair (the UI deletes an emptied key list); unknown fields
  and fields given twice in JSON text are errors, so what is read is exactly what will be written.
- Pairs may be lists or tuples (the original UI kept tuples in memory).
- ``key`` and ``preserve`` list at most MAX_REGIONS (100) regions each, checked before any mask is decoded
  (each region costs a full image's keys and layer outputs when the edit runs).
- ``preserve_weight`` must be a finite real number in [0, MAX_PRESERVE_WEIGHT] (1000; bool, NaN, infinities,
  larger numbers and strings are rejected)
  and is an error without ``preserve`` (a weight of nothing; the UI drops it with the last region). It is
  kept as written (an int stays an int) so that a file read then written is the same; the rewriter uses
  it when no weight is passed explicitly (an explicit one wins).
- ``layer`` is an int >= 0 and ``rank`` an int >= 1 (bool and floats such as 3.0 rejected, as for imgnum);
  ``solver`` a registered solver's name; ``solver_options`` an object whose names are that solver's options
  (bool options take true/false, integer ones ints, number ones finite numbers, kept as written; ``ridges``
  a non-empty list of positive numbers), checked as the solver checks them; ``model`` an object with
  ``fingerprint`` (required) and ``name`` (optional, 1..200 characters), nothing else.

Every failure raises EditFileError, whose ``field`` names the culprit (``request``, ``paste``,
``key[2].mask``, ``object.imgnum``, ...), and nothing is modified.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from rewrite.formats.fields import (
    check_count,
    check_model,
    check_region_count,
    check_solver,
    check_solver_options,
    check_weight,
    parse_key,
)
from rewrite.formats.jsontext import json_value, loads_strict, read_edit_bytes, read_edit_json
from rewrite.formats.selection import Selection, bounding_box, parse_pair, selection_from_mask
from utils.fileio import atomic_path
from utils.masks import (  # the mask codec, re-exported as part of this module's API
    MASK_URL_PREFIX,
    MAX_MASK_SIZE,
    FieldError,
    decode_mask_rgba,
    describe_value,
    encode_mask,
    mask_from_url,
    positive_int,
    resize_mask,
    union_masks,
)

EditFileError = FieldError      # the error of every malformed request or mask

__all__ = ['FIELDS', 'MASK_URL_PREFIX', 'MAX_MASK_SIZE', 'EditFileError', 'EditRequest', 'Selection',
           'bounding_box', 'decode_mask_rgba', 'encode_mask', 'load_edit', 'mask_from_url', 'name_for_setting',
           'parse_edit', 'read_edit_bytes', 'read_edit_json', 'resize_mask', 'save_edit', 'selection_from_mask',
           'setting_from_name', 'union_masks', 'validate_request']

FIELDS = ('object', 'paste', 'key', 'query', 'preserve', 'preserve_weight', 'layer', 'rank', 'solver',
          'solver_options', 'model')
LIST_FIELDS = ('key', 'preserve')
PAIR_FIELDS = ('object', 'paste', 'query')
EDIT_FIELDS = ('object', 'paste', 'key')
SETTING_FIELDS = ('layer', 'rank', 'solver', 'solver_options', 'model')    # how the edit was made
VALUE_FIELDS = ('preserve_weight', *SETTING_FIELDS)                        # fields that hold no selections


SETTING_IN_NAME = re.compile(r'_layer(\d+)(?:_rank(\d+))?$')


def setting_from_name(path: str | os.PathLike) -> tuple[int | None, int]:
    """(layer N, rank R) that an edit file's name records: NAME_layerN.json, NAME_layerN_rankR.json
    (the bundled demo edits are named so; the format itself has no such fields). Layer None when the
    name says none; rank 1 unless the name says otherwise."""
    m = SETTING_IN_NAME.search(Path(path).stem)
    if not m:
        return None, 1
    return int(m[1]), int(m[2]) if m[2] else 1


def name_for_setting(name: str, layer: int, rank: int = 1) -> str:
    """The file name that records (layer, rank): the inverse of setting_from_name."""
    return f'{name}_layer{layer}' + (f'_rank{rank}' if rank != 1 else '') + '.json'


# ---------------------------------------------------------------------------------------------------------
# Selections and requests
# ---------------------------------------------------------------------------------------------------------


@dataclass
class EditRequest:
    """A parsed edit request. `field_order` is the order of the fields in the file, kept for writing back."""

    object: Selection | None = None
    paste: Selection | None = None
    key: list[Selection] = field(default_factory=list)
    query: Selection | None = None
    preserve: list[Selection] = field(default_factory=list)
    preserve_weight: float | None = None     # the preserve regions' weight the file asks for (None: absent)
    layer: int | None = None                 # how the edit was made (None: not recorded)
    rank: int | None = None
    solver: str | None = None
    solver_options: dict | None = None       # the solver's options that differ from its defaults
    model: dict | None = None                # {'fingerprint': SHA-256 of the weights before, 'name': ...}
    field_order: tuple[str, ...] = field(default=FIELDS, compare=False, repr=False)

    def __post_init__(self):
        self.key = list(self.key)
        self.preserve = list(self.preserve)
        self.field_order = tuple(self.field_order)
        self._check_structure()

    def _check_structure(self) -> None:
        for name in PAIR_FIELDS:
            value = getattr(self, name)
            if value is not None and not isinstance(value, Selection):
                raise EditFileError(name, f'must be a Selection or None, got {describe_value(value)}')
        for name in LIST_FIELDS:
            selections = getattr(self, name)
            if not isinstance(selections, list):
                raise EditFileError(name, f'must be a list of Selections, got {describe_value(selections)}')
            check_region_count(len(selections), name)
            for index, selection in enumerate(selections):
                if not isinstance(selection, Selection):
                    raise EditFileError(f'{name}[{index}]', f'must be a Selection, got {describe_value(selection)}')
        if self.object is None and self.paste is None and not self.key:
            raise EditFileError('request', 'needs at least one of object, paste or key')
        if self.preserve_weight is not None:
            self.preserve_weight = check_weight(self.preserve_weight)
            if not self.preserve:
                raise EditFileError('preserve_weight', 'is the weight of the preserve regions and needs a '
                                                       'non-empty preserve list (leave the field out instead)')
        if self.layer is not None:
            self.layer = check_count(self.layer, 'layer', 0)
        if self.rank is not None:
            self.rank = check_count(self.rank, 'rank', 1)
        if self.solver is not None:
            self.solver = check_solver(self.solver)
        if self.solver_options is not None:
            self.solver_options = check_solver_options(self.solver_options, self.solver)
        if self.model is not None:
            self.model = check_model(self.model)
        if not set(self.field_order) <= set(FIELDS) or len(set(self.field_order)) != len(self.field_order):
            raise ValueError(f'field_order must list distinct names among {FIELDS}, got {self.field_order}')

    @property
    def context(self) -> list[Selection]:
        """The context examples: the key list, or [paste] when there is none (as the original's apply_edit)."""
        if self.key:
            return list(self.key)
        return [self.paste] if self.paste is not None else []

    def present_fields(self) -> list[str]:
        """Names of the fields set, in file order (those missing from field_order last, in FIELDS order)."""
        order = [*self.field_order, *(name for name in FIELDS if name not in self.field_order)]
        return [name for name in order
                if (getattr(self, name) if name in LIST_FIELDS else getattr(self, name) is not None)]

    def selection_fields(self) -> list[str]:
        """The present fields that hold selections (present_fields less preserve_weight and the settings)."""
        return [name for name in self.present_fields() if name not in VALUE_FIELDS]

    def setting(self) -> dict:
        """How the edit was made, as far as the file records it: {'layer', 'rank', 'solver',
        'solver_options', 'model'} of those present (solver_options and model copied)."""
        return {name: (dict(getattr(self, name)) if name in ('solver_options', 'model') else getattr(self, name))
                for name in SETTING_FIELDS if getattr(self, name) is not None}

    def selections(self) -> Iterator[tuple[str, Selection]]:
        """(field path, selection) for every selection, in file order: ('paste', s), ('key[0]', s), ..."""
        for name in self.selection_fields():
            if name in LIST_FIELDS:
                yield from ((f'{name}[{index}]', selection) for index, selection in enumerate(getattr(self, name)))
            else:
                yield name, getattr(self, name)

    def check(self, num_images: int | None = None, resolution: int | None = None) -> None:
        """Raises EditFileError if an image number is outside a z-sample of `num_images`, or a mask
        selects nothing at the feature-map `resolution` where it is used."""
        self._check_structure()
        if num_images is not None:
            num_images = positive_int(num_images, 'num_images')
        if resolution is not None:
            resolution = positive_int(resolution, 'resolution')
        if num_images is not None:
            self._check_image_numbers(num_images)
        for where, selection in self.selections():
            if resolution is not None and not selection.mask_at(resolution).any():
                raise EditFileError(f'{where}.mask', f'selects nothing at the {resolution}x{resolution} feature-map '
                                                     'resolution (the painted area vanishes when resized '
                                                     'bilinearly); paint a larger region')

    def _check_image_numbers(self, num_images: int) -> None:
        """One EditFileError listing every image number outside a z-sample of `num_images` (the fields the
        edit uses first, 'query', used only for search, last) and the z-sample size that would hold them."""
        outside = sorted(((where.startswith('query'), where, s.imgnum) for where, s in self.selections()
                          if s.imgnum >= num_images), key=lambda item: item[0])
        if not outside:
            return
        needed = max(imgnum for _, _, imgnum in outside) + 1
        sample = f'the z-sample of {num_images} images (0..{num_images - 1})'
        if len(outside) == 1:
            is_query, _, imgnum = outside[0]
            raise EditFileError(f'{outside[0][1]}.imgnum', f'image {imgnum} is outside {sample}'
                                + (' (query: used only for search)' if is_query else '')
                                + f'; a z-sample of at least {needed} images holds it')
        listed = ', '.join(f'{where}.imgnum {imgnum}' + (' (query: used only for search)' if is_query else '')
                           for is_query, where, imgnum in outside)
        raise EditFileError(f'{outside[0][1]}.imgnum', f'{len(outside)} image numbers are outside {sample}: '
                                                       f'{listed}; a z-sample of at least {needed} images holds them')

    def to_json(self) -> dict:
        """The JSON object in the original's layout: same fields, same order, same mask URLs."""
        self._check_structure()
        return {name: (json_value(getattr(self, name)) if name in VALUE_FIELDS else
                       [selection.to_json() for selection in getattr(self, name)] if name in LIST_FIELDS
                       else getattr(self, name).to_json())
                for name in self.present_fields()}

    @classmethod
    def from_json(cls, obj: Mapping, num_images: int | None = None, resolution: int | None = None) -> EditRequest:
        """Parses and validates a JSON object (a dict; pairs may be lists or tuples); `obj` is not modified."""
        if not isinstance(obj, Mapping):
            raise EditFileError('request', f'must be a JSON object, got {describe_value(obj)}')
        for name in obj:
            if name not in FIELDS:
                raise EditFileError(str(name), f'unknown field (expected some of {", ".join(FIELDS)})')
        if not any(name in obj for name in EDIT_FIELDS):
            raise EditFileError('request', f'needs at least one of object, paste or key, got {list(obj) or "none"}')
        for name in LIST_FIELDS:                 # counted before any mask is decoded
            if isinstance(obj.get(name), (list, tuple)):
                check_region_count(len(obj[name]), name)
        pairs = {name: parse_pair(obj[name], name) for name in PAIR_FIELDS if name in obj}
        key = parse_key(obj['key']) if 'key' in obj else []
        preserve = parse_key(obj['preserve'], 'preserve') if 'preserve' in obj else []
        weight = check_weight(obj['preserve_weight']) if 'preserve_weight' in obj else None
        solver = check_solver(obj['solver']) if 'solver' in obj else None
        setting = {'layer': check_count(obj['layer'], 'layer', 0) if 'layer' in obj else None,
                   'rank': check_count(obj['rank'], 'rank', 1) if 'rank' in obj else None,
                   'solver': solver,
                   'solver_options': (check_solver_options(obj['solver_options'], solver)
                                      if 'solver_options' in obj else None),
                   'model': check_model(obj['model']) if 'model' in obj else None}
        request = cls(**pairs, key=key, preserve=preserve, preserve_weight=weight, **setting, field_order=tuple(obj))
        request.check(num_images, resolution)
        return request


# ---------------------------------------------------------------------------------------------------------
# Reading and writing
# ---------------------------------------------------------------------------------------------------------


def validate_request(request: Mapping | EditRequest, num_images: int | None = None,
                     layer_resolution: int | None = None) -> EditRequest:
    """An in-memory request (a dict as the UI builds it, or an EditRequest) checked and parsed.

    `num_images`: size of the z-sample the image numbers index; `layer_resolution`: the feature-map size
    where masks are used (where a layer's input and output sizes differ, pass the smaller).
    """
    if isinstance(request, EditRequest):
        request.check(num_images, layer_resolution)
        return request
    return EditRequest.from_json(request, num_images, layer_resolution)


def parse_edit(obj: Mapping | str | Path, num_images: int | None = None,
               layer_resolution: int | None = None) -> EditRequest:
    """An edit request from a dict, JSON text or a file; see validate_request.

    A str whose first non-blank character is '{' or '[' is JSON text; any other str, or a pathlib.Path,
    is the path of an edit file (OSError if it cannot be read).
    """
    if isinstance(obj, str) and obj.lstrip()[:1] in ('{', '['):
        return validate_request(loads_strict(obj), num_images, layer_resolution)
    if isinstance(obj, (str, Path)):
        return load_edit(obj, num_images, layer_resolution)
    return validate_request(obj, num_images, layer_resolution)


def load_edit(path: str | os.PathLike, num_images: int | None = None,
              layer_resolution: int | None = None) -> EditRequest:
    """Reads and validates an edit file; errors in the file name it (OSError if it cannot be read)."""
    path = Path(path)
    raw = read_edit_bytes(path)
    try:
        return validate_request(loads_strict(raw.decode('utf-8')), num_images, layer_resolution)
    except UnicodeDecodeError as err:
        raise EditFileError('request', f'{path} is not UTF-8 text ({err.reason})') from None
    except EditFileError as err:
        raise EditFileError(err.field, f'{err.reason} (in {path})') from None


def save_edit(path: str | os.PathLike, request: Mapping | EditRequest, num_images: int | None = None,
              layer_resolution: int | None = None) -> EditRequest:
    """Validates `request` and writes it atomically (temp file in the same folder + os.replace): on any
    error nothing is written and an existing file is left as it was. Returns the parsed request."""
    parsed = validate_request(request, num_images, layer_resolution)
    text = json.dumps(parsed.to_json(), indent=1)
    path = Path(path)
    mode = path.stat().st_mode & 0o777 if path.is_file() else 0o644
    with atomic_path(path, mode) as tmp:
        tmp.write_text(text, encoding='utf-8')
    return parsed
