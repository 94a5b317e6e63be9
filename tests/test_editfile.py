"""Edit files: the original UI's files, mask decoding against an independent recipe, encoding round trips,
validation of malformed requests (property-based), atomic saving."""

from __future__ import annotations

import base64
import copy
import io
import json
import os
import struct
import tempfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import REFERENCE, need_shared
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from rewrite.formats.editfile import (
    FIELDS,
    MASK_URL_PREFIX,
    SETTING_FIELDS,
    EditFileError,
    EditRequest,
    Selection,
    decode_mask_rgba,
    encode_mask,
    load_edit,
    mask_from_url,
    parse_edit,
    resize_mask,
    save_edit,
    selection_from_mask,
    union_masks,
    validate_request,
)
from rewrite.formats.registry import SOLVERS

EDITS = REFERENCE / 'original-edits'
PROPERTY = settings(derandomize=True, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# ------------------------------------------------------------------------------------------------------------
# Independent helpers: PNG data URLs written and read with PIL directly, following the documented recipe.
# ------------------------------------------------------------------------------------------------------------

def url_of_bytes(data: bytes) -> str:
    return 'data:image/png;base64,' + base64.b64encode(data).decode('ascii')


def png_bytes(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format='PNG')
    return buffer.getvalue()


def png_url(pixels: np.ndarray) -> str:
    return url_of_bytes(png_bytes(pixels))


def painted(size: int, top: int, left: int, bottom: int, right: int, edge_alpha: int = 90) -> np.ndarray:
    """RGBA as the UI paints it: a white rectangle whose border ring has a faded alpha."""
    rgba = np.zeros((size, size, 4), np.uint8)
    rgba[top:bottom, left:right] = (255, 255, 255, edge_alpha)
    rgba[top + 1:bottom - 1, left + 1:right - 1, 3] = 255
    return rgba


def reference_mask(url: str, resolution: int) -> np.ndarray:
    """The original's renormalize.from_url(url, target='pt', size=(res, res))[0], re-done with PIL."""
    data = base64.b64decode(url.split(',', 1)[1])
    image = Image.open(io.BytesIO(data)).convert('RGB').resize((resolution, resolution), Image.BILINEAR)
    return np.asarray(image)[..., 0].astype(np.float32) / 255


def naive_bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
    rows = [y for y in range(mask.shape[0]) if any(mask[y, x] > 0 for x in range(mask.shape[1]))]
    cols = [x for x in range(mask.shape[1]) if any(mask[y, x] > 0 for y in range(mask.shape[0]))]
    return (rows[0], cols[0], rows[-1] + 1, cols[-1] + 1) if rows else (0, 0, 0, 0)


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack('>I', len(data)) + kind + data + struct.pack('>I', zlib.crc32(kind + data))


def chunk_spans(data: bytes) -> dict[bytes, tuple[int, int]]:
    """{chunk type: (start of its data, end of its data)} of the first chunk of each type."""
    spans, pos = {}, 8
    while pos < len(data):
        (length,) = struct.unpack('>I', data[pos:pos + 4])
        spans.setdefault(data[pos + 4:pos + 8], (pos + 8, pos + 8 + length))
        pos += 12 + length
    return spans


MASKS = {name: png_url(painted(16, *box)) for name, box in
         {'a': (2, 3, 9, 10), 'b': (5, 5, 14, 12), 'c': (0, 0, 6, 6), 'd': (8, 1, 16, 15)}.items()}


def valid_request() -> dict:
    return {'query': [3, MASKS['a']], 'object': [3, MASKS['a']], 'key': [[7, MASKS['c']], [9, MASKS['d']]],
            'paste': [5, MASKS['b']]}


def reference_files() -> list[Path]:
    files = sorted(need_shared(EDITS).glob('*/*.json'))
    assert files, f'no edit files under {EDITS}'
    return files


# ------------------------------------------------------------------------------------------------------------
# The original tool's files
# ------------------------------------------------------------------------------------------------------------

def test_reference_files_parse_and_round_trip(tmp_path):
    for path in reference_files():
        text = path.read_text()
        raw = json.loads(text)
        request = load_edit(path, num_images=1000, layer_resolution=8)
        assert request.to_json() == raw
        assert list(request.to_json()) == list(raw), 'field order must be kept'
        out = tmp_path / path.name
        save_edit(out, request)
        assert out.read_text() == text.removesuffix('\n'), f'{path}: written file differs'
        assert load_edit(out) == request
        expected_context = raw.get('key', [raw['paste']] if 'paste' in raw else [])
        assert [[s.imgnum, s.mask_url] for s in request.context] == expected_context


def test_reference_masks_decode_like_the_original_recipe():
    for path in reference_files():
        for where, selection in load_edit(path).selections():
            for resolution in (8, 16, 32, 64, selection.size):
                expected = reference_mask(selection.mask_url, resolution)
                got = selection.mask_at(resolution)
                assert got.dtype == torch.float32 and got.shape == (resolution, resolution)
                assert np.array_equal(got.numpy(), expected), f'{path.name} {where} at {resolution}'
                assert selection.bbox_at(resolution) == naive_bbox(expected)
            assert np.array_equal(mask_from_url(selection.mask_url, 32).numpy(), reference_mask(selection.mask_url, 32))


# ------------------------------------------------------------------------------------------------------------
# Decoding
# ------------------------------------------------------------------------------------------------------------

def test_alpha_is_dropped_as_the_original_convert_rgb_did():
    faint, opaque = painted(16, 4, 4, 12, 12), painted(16, 4, 4, 12, 12)
    faint[..., 3] = np.where(faint[..., 3] > 0, 1, 0)
    opaque[..., 3] = np.where(opaque[..., 3] > 0, 255, 0)
    for resolution in (4, 16):
        assert torch.equal(mask_from_url(png_url(faint), resolution), mask_from_url(png_url(opaque), resolution))
    assert mask_from_url(png_url(faint), 16).unique().tolist() == [0.0, 1.0]
    black_but_opaque = np.zeros((16, 16, 4), np.uint8)
    black_but_opaque[..., 3] = 255
    with pytest.raises(EditFileError, match=r'^mask: nothing is painted'):
        Selection(0, png_url(black_but_opaque))


@PROPERTY
@given(size=st.integers(2, 40), resolution=st.integers(1, 48), seed=st.integers(0, 2**31 - 1))
def test_decoding_agrees_with_torch_antialiased_bilinear(size, resolution, seed):
    """PIL's bilinear (half-pixel, antialiased when shrinking) matches torch's, up to PIL's 8-bit rounding
    after each of its two passes (rows, then columns)."""
    rng = np.random.default_rng(seed)
    red = (rng.random((size, size)) < 0.4).astype(np.uint8) * 255
    url = png_url(np.stack([red, red, red, red], axis=-1))
    reference = F.interpolate(torch.from_numpy(red / 255.0)[None, None], size=(resolution, resolution),
                              mode='bilinear', align_corners=False, antialias=resolution < size)[0, 0]
    got = mask_from_url(url, resolution).double()
    assert (got - reference).abs().max().item() <= 1 / 255 + 1e-6
    assert ((got * 255) - (got * 255).round()).abs().max().item() < 1e-4


def test_single_pixel_of_a_1024_mask_vanishes_at_low_resolution():
    rgba = np.zeros((1024, 1024, 4), np.uint8)
    rgba[500, 700] = 255
    url = png_url(rgba)
    for resolution in (8, 16, 32, 64, 256):
        vanishes = not reference_mask(url, resolution).any()
        assert vanishes == (resolution <= 32)
        request = {'paste': [0, url]}
        if vanishes:
            with pytest.raises(EditFileError, match=rf'^paste\.mask: selects nothing at the {resolution}x'):
                parse_edit(request, layer_resolution=resolution)
        else:
            assert parse_edit(request, layer_resolution=resolution).paste.bbox_at(resolution) == \
                naive_bbox(reference_mask(url, resolution))


# ------------------------------------------------------------------------------------------------------------
# Encoding
# ------------------------------------------------------------------------------------------------------------

@PROPERTY
@given(mask=st.integers(1, 32).flatmap(lambda n: st.lists(st.booleans(), min_size=n * n, max_size=n * n)))
def test_binary_mask_round_trip(mask):
    size = int(round(len(mask) ** 0.5))
    binary = np.array(mask, dtype=bool).reshape(size, size)
    url = encode_mask(torch.from_numpy(binary))
    assert torch.equal(mask_from_url(url, size), torch.from_numpy(binary.astype(np.float32)))
    rgba = decode_mask_rgba(url)
    expected = np.zeros((size, size, 4), np.uint8)
    expected[binary] = 255
    assert np.array_equal(rgba, expected)


@PROPERTY
@given(size=st.integers(1, 32), seed=st.integers(0, 2**31 - 1), zero_fraction=st.floats(0, 1))
def test_soft_mask_round_trip_keeps_the_support_and_alpha(size, seed, zero_fraction):
    rng = np.random.default_rng(seed)
    soft = rng.random((size, size)) * (rng.random((size, size)) >= zero_fraction)
    soft[0, 0] = 1e-6  # a tiny weight still counts as painted
    url = encode_mask(soft)
    assert np.array_equal(mask_from_url(url, size).numpy(), (soft > 0).astype(np.float32))
    rgba = decode_mask_rgba(url)
    assert np.array_equal(rgba[..., :3], np.where(soft[..., None] > 0, 255, 0).repeat(3, axis=-1))
    expected_alpha = np.where(soft > 0, np.maximum(1, np.round(soft * 255)), 0)
    assert np.array_equal(rgba[..., 3], expected_alpha)
    assert np.array_equal(reference_mask(url, max(1, size // 2)), mask_from_url(url, max(1, size // 2)).numpy())


@PROPERTY
@given(size=st.integers(1, 40), resolution=st.integers(1, 48), seed=st.integers(0, 2**31 - 1))
def test_resize_mask_matches_torch_antialiased_bilinear(size, resolution, seed):
    mask = np.random.default_rng(seed).random((size, size))
    reference = F.interpolate(torch.from_numpy(mask)[None, None], size=(resolution, resolution),
                              mode='bilinear', align_corners=False, antialias=resolution < size)[0, 0]
    got = resize_mask(mask, resolution)
    assert got.dtype == torch.float32 and got.shape == (resolution, resolution)
    assert torch.allclose(got.double(), reference, atol=1e-6)


def test_resize_mask_closed_forms():
    assert torch.equal(resize_mask(np.full((7, 7), 0.25), 3), torch.full((3, 3), 0.25))
    mask = np.random.default_rng(0).random((9, 9))
    assert torch.equal(resize_mask(mask, 9), torch.from_numpy(mask.astype(np.float32)))


def test_encode_with_size_resizes_first():
    mask = np.zeros((8, 8))
    mask[2:5, 3:7] = 1
    url = encode_mask(mask, size=32)
    assert decode_mask_rgba(url).shape == (32, 32, 4)
    assert url == encode_mask(resize_mask(mask, 32))
    assert np.array_equal(mask_from_url(url, 32).numpy(), (resize_mask(mask, 32).numpy() > 0).astype(np.float32))


@pytest.mark.parametrize('bad, message', [
    (np.zeros((4, 5)), 'square'), (np.zeros((3, 3, 3)), '2-d'), (np.full((3, 3), 1.5), r'\[0, 1\]'),
    (np.full((3, 3), np.nan), 'finite'), ('not an array', '2-d'), (np.zeros((0, 0)), 'square'),
])
def test_encode_mask_rejects_bad_arrays(bad, message):
    with pytest.raises(EditFileError, match=rf'^mask: .*{message}'):
        encode_mask(bad)


def test_selection_from_mask_and_union():
    rng = np.random.default_rng(1)
    masks = [rng.random((6, 6)) * (rng.random((6, 6)) < 0.3) for _ in range(3)]
    union = union_masks(masks)
    naive = [[max(float(m[y, x]) for m in masks) for x in range(6)] for y in range(6)]
    assert torch.allclose(union, torch.tensor(naive, dtype=torch.float32))
    selection = selection_from_mask(4, union)
    assert selection.imgnum == 4 and selection.size == 6
    assert torch.equal(selection.mask_at(6), (union > 0).float())
    assert selection == Selection(4, selection.mask_url) and hash(selection) == hash(Selection(4, selection.mask_url))
    with pytest.raises(EditFileError, match='^mask: nothing is painted'):
        selection_from_mask(4, np.zeros((6, 6)))
    with pytest.raises(ValueError, match='one shape'):
        union_masks([np.zeros((3, 3)), np.zeros((4, 4))])
    with pytest.raises(ValueError, match='at least one'):
        union_masks([])


# ------------------------------------------------------------------------------------------------------------
# Parsing valid requests
# ------------------------------------------------------------------------------------------------------------

def test_valid_request_parses_in_every_form(tmp_path):
    raw = valid_request()
    request = parse_edit(raw, num_images=10, layer_resolution=4)
    assert [request.object.imgnum, request.paste.imgnum, request.query.imgnum] == [3, 5, 3]
    assert [s.imgnum for s in request.context] == [7, 9]
    assert request.to_json() == raw and list(request.to_json()) == list(raw)
    assert parse_edit(json.dumps(raw)) == request
    path = tmp_path / 'edit.json'
    path.write_text(json.dumps(raw))
    assert parse_edit(path) == parse_edit(str(path)) == parse_edit(f'  {json.dumps(raw)}') == request
    assert load_edit(str(path)) == request
    with pytest.raises(FileNotFoundError):
        parse_edit(str(tmp_path / 'missing.json'))
    ui_style = {'object': (np.int64(3), MASKS['a']), 'paste': (5, MASKS['b'])}
    parsed = validate_request(ui_style)
    assert parsed.to_json() == {'object': [3, MASKS['a']], 'paste': [5, MASKS['b']]}
    assert type(parsed.to_json()['object'][0]) is int
    assert [s.imgnum for s in parsed.context] == [5]
    assert validate_request(parsed, num_images=6) is parsed


@pytest.mark.parametrize('fields', [('object',), ('paste',), ('key',), ('key', 'query'), ('query', 'paste'),
                                    ('object', 'paste'), ('paste', 'object', 'key')])
def test_any_edit_field_suffices_and_order_is_kept(fields):
    raw = {name: valid_request()[name] for name in fields}
    request = parse_edit(raw)
    assert list(request.to_json()) == list(fields)
    assert request.context == (request.key or ([request.paste] if request.paste else []))


def test_programmatic_request_uses_canonical_order():
    object_, paste = Selection(1, MASKS['a']), Selection(2, MASKS['b'])
    request = EditRequest(paste=paste, object=object_)
    assert list(request.to_json()) == [name for name in FIELDS if name in ('object', 'paste')]
    with pytest.raises(EditFileError, match='^request: needs at least one of object, paste or key'):
        EditRequest(query=object_)
    with pytest.raises(EditFileError, match=r'^key\[1\]: must be a Selection'):
        EditRequest(key=[paste, 'x'])


@pytest.mark.parametrize('kwargs', [{'num_images': 0}, {'num_images': True}, {'layer_resolution': 0},
                                    {'layer_resolution': 2.0}])
def test_bad_limits_are_argument_errors(kwargs):
    with pytest.raises(ValueError, match='must be a positive int') as info:
        parse_edit(valid_request(), **kwargs)
    assert not isinstance(info.value, EditFileError)


# ------------------------------------------------------------------------------------------------------------
# Malformed requests: mutations of a valid request, each naming the field at fault
# ------------------------------------------------------------------------------------------------------------

garbage = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=12)
not_a_sequence = garbage.filter(lambda v: not isinstance(v, list))
not_an_index = garbage.filter(lambda v: isinstance(v, bool) or not isinstance(v, int) or v < 0) | \
    st.sampled_from([3.0, 0.0, -1, True, False, '3', [3], {'imgnum': 3}]) | st.integers(max_value=-1)
not_a_url = garbage.filter(lambda v: not (isinstance(v, str) and v.startswith(MASK_URL_PREFIX))) | \
    st.sampled_from(['data:image/jpeg;base64,' + MASKS['a'].split(',')[1], MASKS['a'].upper(),
                     ' ' + MASKS['a'], MASKS['a'].replace('png', 'gif', 1), ''])


def not_a_setting(name: str):
    """Values the setting field `name` refuses with an error naming the field itself."""
    if name in ('layer', 'rank'):
        low = 0 if name == 'layer' else 1
        return garbage.filter(lambda v: isinstance(v, bool) or not isinstance(v, int) or v < low) | \
            st.sampled_from([3.0, True, '7', [7], low - 1]) | st.integers(max_value=low - 1)
    if name == 'solver':
        return garbage.filter(lambda v: not (isinstance(v, str) and v in SOLVERS)) | \
            st.sampled_from(['Fast', 'fast ', '', 'adam'])
    return garbage.filter(lambda v: not isinstance(v, dict))       # solver_options, model: objects


def pair_paths(request: dict) -> list[tuple[str, list]]:
    """(field path, the [imgnum, mask] list) for every pair in the request."""
    paths = [(name, request[name]) for name in ('object', 'paste', 'query') if name in request]
    return paths + [(f'key[{index}]', pair) for index, pair in enumerate(request.get('key', []))]


def bad_png_url(draw) -> str:
    good = png_bytes(painted(16, 2, 3, 9, 10))
    idat_start, _ = chunk_spans(good)[b'IDAT']
    ihdr = good[8:33]
    end = png_chunk(b'IEND', b'')
    kind = draw(st.sampled_from(['random bytes', 'jpeg', 'gif', 'truncated', 'bad zlib', 'non-square', 'huge',
                                 'too big', 'corrupt ihdr', '16-bit', 'empty rgba', 'empty gray']))
    if kind == 'random bytes':
        data = draw(st.binary(max_size=64).filter(lambda b: not b.startswith(b'\x89PNG\r\n\x1a\n')))
    elif kind in ('jpeg', 'gif'):
        buffer = io.BytesIO()
        Image.fromarray(painted(16, 2, 3, 9, 10)[..., :3]).save(buffer, format=kind.upper())
        data = buffer.getvalue()
    elif kind == 'truncated':
        data = good[:draw(st.integers(8, idat_start + 1))]
    elif kind == 'bad zlib':
        data = good[:8] + ihdr + png_chunk(b'IDAT', b'\x00' * draw(st.integers(0, 40))) + end
    elif kind == 'non-square':
        width, height = draw(st.tuples(st.integers(1, 20), st.integers(1, 20)).filter(lambda s: s[0] != s[1]))
        data = png_bytes(np.full((height, width, 4), 255, np.uint8))
    elif kind in ('huge', 'too big'):
        side = draw(st.integers(4097, 2**31 - 1) if kind == 'huge' else st.integers(4097, 6000))
        data = good[:8] + png_chunk(b'IHDR', struct.pack('>IIBBBBB', side, side, 8, 6, 0, 0, 0)) + \
            png_chunk(b'IDAT', b'') + end
    elif kind == 'corrupt ihdr':
        flipped = bytearray(good)
        flipped[draw(st.integers(16, 28))] ^= 1 << draw(st.integers(0, 7))
        data = bytes(flipped)
    elif kind == '16-bit':
        data = png_bytes(np.full((8, 8), 65535, np.uint16))
    elif kind == 'empty rgba':
        data = png_bytes(np.zeros((draw(st.integers(1, 24)),) * 2 + (4,), np.uint8))
    else:
        data = png_bytes(np.zeros((draw(st.integers(1, 24)),) * 2, np.uint8))
    return url_of_bytes(data)


def bad_base64_url(draw) -> str:
    body = MASKS['b'][len(MASK_URL_PREFIX):]
    if draw(st.booleans()):
        at = draw(st.integers(0, len(body)))
        body = body[:at] + draw(st.sampled_from(list('!@#$%^&*~ \n\t.,-_'))) + body[at:]
    else:
        body = body[:len(body) - draw(st.integers(1, 3))]
    return MASK_URL_PREFIX + body


@st.composite
def malformed_requests(draw) -> tuple[object, str, dict]:
    """(request, the field its error must name, parse_edit keyword arguments)."""
    request = valid_request()
    pairs = pair_paths(request)
    where, pair = draw(st.sampled_from(pairs))
    kind = draw(st.sampled_from(['top type', 'no edit field', 'unknown field', 'field garbage', 'setting garbage',
                                 'pair length', 'key empty', 'key element', 'imgnum', 'imgnum range', 'mask type',
                                 'base64', 'png', 'vanishing']))
    if kind == 'top type':
        return draw(garbage.filter(lambda v: not isinstance(v, (dict, str)))), 'request', {}  # a str is a path
    if kind == 'no edit field':
        trimmed = {'query': request['query']} if draw(st.booleans()) else {}
        return trimmed, 'request', {}
    if kind == 'unknown field':
        name = draw(st.text(min_size=1, max_size=8).filter(lambda s: s not in FIELDS))
        request[name] = draw(garbage)
        return request, name, {}
    if kind == 'field garbage':
        name = draw(st.sampled_from([name for name in FIELDS if name not in SETTING_FIELDS]))
        request[name] = draw(not_a_sequence)
        return request, name, {}
    if kind == 'setting garbage':         # how the edit was made: a value no field accepts
        name = draw(st.sampled_from(SETTING_FIELDS))
        if name == 'solver_options':
            request['solver'] = draw(st.sampled_from(list(SOLVERS)))
        request[name] = draw(not_a_setting(name))
        return request, name, {}
    if kind == 'pair length':
        pair[:] = draw(st.lists(garbage, max_size=5).filter(lambda v: len(v) != 2))
        return request, where, {}
    if kind == 'key empty':
        request['key'] = []
        return request, 'key', {}
    if kind == 'key element':
        index = draw(st.integers(0, len(request['key'])))
        request['key'].insert(index, draw(not_a_sequence))
        return request, f'key[{index}]', {}
    if kind == 'imgnum':
        pair[0] = draw(not_an_index)
        return request, f'{where}.imgnum', {}
    if kind == 'imgnum range':
        num_images = draw(st.integers(10, 1000))
        pair[0] = draw(st.integers(num_images, 10 * num_images))
        return request, f'{where}.imgnum', {'num_images': num_images}
    if kind == 'mask type':
        pair[1] = draw(not_a_url)
        return request, f'{where}.mask', {}
    if kind == 'base64':
        pair[1] = bad_base64_url(draw)
        return request, f'{where}.mask', {}
    if kind == 'png':
        pair[1] = bad_png_url(draw)
        return request, f'{where}.mask', {}
    rgba = np.zeros((1024, 1024, 4), np.uint8)
    rgba[draw(st.integers(0, 1023)), draw(st.integers(0, 1023))] = 255
    pair[1] = png_url(rgba)
    resolution = draw(st.sampled_from([1, 2, 4, 8, 16, 32]))
    assert not reference_mask(pair[1], resolution).any(), 'the reference recipe must lose this pixel'
    return request, f'{where}.mask', {'layer_resolution': resolution}


def assert_names_field(err: EditFileError, field: str) -> None:
    assert err.field == field, f'{err} should name {field!r}'
    assert str(err).startswith(f'{field}: ') and err.reason


@pytest.mark.slow
@settings(PROPERTY, max_examples=900)
@given(case=malformed_requests())
def test_malformed_requests_raise_naming_the_field_and_are_not_mutated(case):
    obj, field, kwargs = case
    before = copy.deepcopy(obj)
    with pytest.raises(EditFileError) as info:
        parse_edit(obj, **kwargs)
    assert_names_field(info.value, field)
    assert obj == before


@settings(PROPERTY, max_examples=250)
@given(case=malformed_requests())
def test_malformed_json_text_and_files_raise_and_write_nothing(case):
    obj, field, kwargs = case
    text = json.dumps(obj)
    if text.startswith(('{', '[')):
        with pytest.raises(EditFileError) as info:
            parse_edit(text, **kwargs)
        assert_names_field(info.value, field)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / 'edit.json'
        path.write_text(text)
        with pytest.raises(EditFileError) as info:
            load_edit(path, **kwargs)
        assert_names_field(info.value, field)
        assert str(path) in info.value.reason
        target = Path(folder) / 'saved.json'
        with pytest.raises(EditFileError):
            save_edit(target, obj, **kwargs)
        assert sorted(os.listdir(folder)) == ['edit.json']


@pytest.mark.parametrize('text, field, message', [
    ('{"paste": [1, "x"], ', 'request', 'not valid JSON'),
    ('[' * 100000, 'request', 'nested too deeply'),
    ('{"paste": [1, "x"], "paste": [2, "y"]}', 'paste', 'appears twice'),
    ('{"paste": [NaN, "x"]}', 'paste.imgnum', 'non-negative int'),
])
def test_bad_json_text(text, field, message):
    with pytest.raises(EditFileError, match=message) as info:
        parse_edit(text)
    assert_names_field(info.value, field)


def test_non_utf8_file_is_an_edit_error(tmp_path):
    path = tmp_path / 'edit.json'
    path.write_bytes(b'{"paste": \xff}')
    with pytest.raises(EditFileError, match='not UTF-8') as info:
        load_edit(path)
    assert_names_field(info.value, 'request')


# ------------------------------------------------------------------------------------------------------------
# Saving
# ------------------------------------------------------------------------------------------------------------

def test_save_writes_the_original_layout(tmp_path):
    raw = valid_request()
    path = tmp_path / 'edit.json'
    returned = save_edit(path, raw)
    assert path.read_text() == json.dumps(raw, indent=1)
    assert load_edit(path) == returned == parse_edit(raw)
    assert sorted(os.listdir(tmp_path)) == ['edit.json']


def test_failed_validation_leaves_no_file_and_keeps_an_existing_one(tmp_path):
    bad = valid_request()
    bad['key'][1][1] = MASKS['a'][:-5]
    new = tmp_path / 'new.json'
    with pytest.raises(EditFileError, match=r'^key\[1\]\.mask: bad base64'):
        save_edit(new, bad)
    assert not new.exists() and os.listdir(tmp_path) == []
    old = tmp_path / 'old.json'
    old.write_text('previous content')
    with pytest.raises(EditFileError, match=r'^object\.imgnum: image 12 is outside'):
        save_edit(old, {'object': [12, MASKS['a']]}, num_images=10)
    assert old.read_text() == 'previous content' and os.listdir(tmp_path) == ['old.json']


def test_failed_write_keeps_an_existing_file_and_leaves_no_temp(tmp_path, monkeypatch):
    old = tmp_path / 'old.json'
    old.write_text('previous content')

    def failing_replace(src, dst):
        raise OSError('disk full')
    monkeypatch.setattr(os, 'replace', failing_replace)
    with pytest.raises(OSError, match='disk full'):
        save_edit(old, valid_request())
    assert old.read_text() == 'previous content' and os.listdir(tmp_path) == ['old.json']
