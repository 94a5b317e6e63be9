"""Preserve regions, the edit format: an optional `preserve` field (regions whose layer outputs must stay as
they are), validated as `key`, round-tripped in file order; files without it read as before. The follow-up:
the file's own `preserve_weight` (validated, round-tripped exactly, used by the rewriter unless a weight is
passed)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from test_rewriter import box_mask

from rewrite.formats import editfile

GOOD = box_mask(256, 64, 64, 160, 160)
OTHER = box_mask(256, 0, 0, 64, 64)


def request(**extra) -> dict:
    return {'object': [1, GOOD], 'paste': [2, GOOD], 'key': [[2, GOOD]], **extra}


def test_preserve_parses_and_round_trips_in_file_order(tmp_path):
    obj = {'preserve': [[5, OTHER], [6, GOOD]], **request()}
    parsed = editfile.parse_edit(obj)
    assert [(s.imgnum, s.mask_url) for s in parsed.preserve] == [(5, OTHER), (6, GOOD)]
    assert list(parsed.to_json()) == ['preserve', 'object', 'paste', 'key']
    assert parsed.to_json() == obj
    path = tmp_path / 'e.json'
    editfile.save_edit(path, obj)
    assert json.loads(path.read_text()) == obj
    assert editfile.load_edit(path).preserve == parsed.preserve
    # preserve regions are not context examples
    assert [s.imgnum for s in parsed.context] == [2]


def test_files_without_preserve_read_and_write_as_before():
    parsed = editfile.parse_edit(request())
    assert parsed.preserve == []
    assert 'preserve' not in parsed.to_json()
    assert parsed.to_json() == request()


@pytest.mark.parametrize('value, field, words', [
    ([], 'preserve', 'at least one'),
    ('x', 'preserve', 'list of [imgnum, mask] pairs'),
    ([[1, GOOD], [2]], 'preserve[1]', 'pair'),
    ([[1, GOOD], [-1, GOOD]], 'preserve[1].imgnum', 'non-negative'),
    ([[1, 'data:image/png;base64,@@']], 'preserve[0].mask', ''),
    ([[3.0, GOOD]], 'preserve[0].imgnum', 'int'),
])
def test_malformed_preserve_names_the_field(value, field, words):
    obj = request(preserve=value)
    snapshot = json.dumps(obj)
    with pytest.raises(editfile.EditFileError) as err:
        editfile.parse_edit(obj)
    assert err.value.field == field
    assert words in str(err.value)
    assert json.dumps(obj) == snapshot


def test_preserve_image_numbers_are_checked_against_the_sample():
    with pytest.raises(editfile.EditFileError) as err:
        editfile.parse_edit(request(preserve=[[1, GOOD], [40, GOOD]]), num_images=40)
    assert err.value.field == 'preserve[1].imgnum'


def test_preserve_alone_is_not_an_edit():
    with pytest.raises(editfile.EditFileError) as err:
        editfile.parse_edit({'preserve': [[1, GOOD]]})
    assert err.value.field == 'request'


# ---- the file's own `preserve_weight` --------------------------------------------------

def test_preserve_weight_parses_and_round_trips_exactly(tmp_path):
    for weight in (1.0, 1, 0, 0.25, 1e-3):
        obj = {**request(preserve=[[5, OTHER]]), 'preserve_weight': weight}
        parsed = editfile.parse_edit(obj)
        assert parsed.preserve_weight == weight and type(parsed.preserve_weight) is type(weight)
        assert list(parsed.to_json()) == ['object', 'paste', 'key', 'preserve', 'preserve_weight']
        path = tmp_path / 'e.json'
        editfile.save_edit(path, obj)
        text = path.read_text()
        assert text == json.dumps(obj, indent=1)                      # the writer's layout, the number as written
        assert editfile.load_edit(path).to_json() == obj
        editfile.save_edit(tmp_path / 'again.json', editfile.load_edit(path))
        assert (tmp_path / 'again.json').read_text() == text          # read then written: the same bytes
    # file order is kept wherever the field stands; absent: None and not written
    obj = {'preserve_weight': 0.5, 'preserve': [[5, OTHER]], **request()}
    assert list(editfile.parse_edit(obj).to_json()) == list(obj)
    assert editfile.parse_edit(request(preserve=[[5, OTHER]])).preserve_weight is None
    assert 'preserve_weight' not in editfile.parse_edit(request(preserve=[[5, OTHER]])).to_json()
    # numpy scalars (a UI's) are stored as Python numbers
    parsed = editfile.parse_edit({**request(preserve=[[5, OTHER]]), 'preserve_weight': np.float32(0.5)})
    assert type(parsed.preserve_weight) is float and parsed.to_json()['preserve_weight'] == 0.5


@pytest.mark.parametrize('value, shown', [
    (-0.5, 'float -0.5'), (-1, 'int -1'), (float('nan'), 'float nan'), (float('inf'), 'float inf'),
    (float('-inf'), 'float -inf'), ('1', "str '1'"), (True, 'bool True'), (False, 'bool False'),
    (None, 'null'), ([1], 'list [1]'), (10 ** 400, None),
])
def test_malformed_preserve_weight_is_an_exact_error_and_changes_nothing(value, shown, tmp_path):
    obj = {**request(preserve=[[5, OTHER]]), 'preserve_weight': value}
    snapshot = repr(obj)
    with pytest.raises(editfile.EditFileError) as err:
        editfile.parse_edit(obj)
    assert err.value.field == 'preserve_weight'
    if shown is not None:
        assert str(err.value) == f'preserve_weight: must be a finite number >= 0, got {shown}'
    else:
        assert str(err.value).startswith('preserve_weight: must be a finite number >= 0, got int 1000')
    assert repr(obj) == snapshot
    # saving it writes nothing and leaves an existing file as it was
    path = tmp_path / 'kept.json'
    editfile.save_edit(path, request(preserve=[[5, OTHER]]))
    before = path.read_bytes()
    with pytest.raises(editfile.EditFileError):
        editfile.save_edit(path, obj)
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ['kept.json']


@pytest.mark.parametrize('text, shown', [('NaN', 'float nan'), ('Infinity', 'float inf'), ('-1e-9', 'float -1e-09'),
                                         ('"0.1"', "str '0.1'"), ('true', 'bool True')])
def test_malformed_preserve_weight_in_json_text(text, shown):
    body = json.dumps(request(preserve=[[5, OTHER]]))[:-1] + f', "preserve_weight": {text}}}'
    with pytest.raises(editfile.EditFileError) as err:
        editfile.parse_edit(body)
    assert str(err.value) == f'preserve_weight: must be a finite number >= 0, got {shown}'


def test_preserve_weight_needs_preserve_regions():
    message = ('preserve_weight: is the weight of the preserve regions and needs a non-empty preserve list '
               '(leave the field out instead)')
    obj = request(preserve_weight=1.0)
    with pytest.raises(editfile.EditFileError) as err:
        editfile.parse_edit(obj)
    assert str(err.value) == message and obj == request(preserve_weight=1.0)
    parsed = editfile.parse_edit({**request(preserve=[[5, OTHER]]), 'preserve_weight': 1.0})
    parsed.preserve = []                                  # a programmatic request emptied of its regions
    with pytest.raises(editfile.EditFileError) as err:
        parsed.to_json()
    assert str(err.value) == message


# ---- the rewriter uses the file's weight unless one is passed ------------------------------------------------

@pytest.fixture(scope='module')
def tiny_gw():
    from test_rewriter import LAYER, tiny_model

    from rewrite.core.rewriter import SeqStyleGanRewriter
    from utils.zdataset import z_dataset_for_model
    model = tiny_model()
    return SeqStyleGanRewriter(model, z_dataset_for_model(model, 40), LAYER, progress=False)


def applied(gw, obj, **options):
    """(the rewritten layer's weight, the record) of gw.apply_request(obj, **options), then reverted."""
    record = gw.apply_request(obj, rank=1, solver='fast', **options)
    weight = gw.target_weights().detach().clone()
    gw.revert()
    return weight, record


@pytest.mark.parametrize('kind', ['edit', 'erase'])
def test_apply_request_uses_the_files_preserve_weight(tiny_gw, kind):
    from rewrite.formats.settings import PRESERVE_WEIGHT
    base = request(preserve=[[5, OTHER], [6, box_mask(256, 0, 128, 128, 256)]])
    if kind == 'erase':
        del base['object']
    with_field = {**base, 'preserve_weight': 1.0}
    by_file, record = applied(tiny_gw, with_field)
    by_argument, reference = applied(tiny_gw, base, preserve_weight=1.0)
    assert record.kind == kind and record.preserve_weight == 1.0 == reference.preserve_weight
    assert torch.equal(by_file, by_argument)                          # bit for bit
    assert record.preserve_change == reference.preserve_change
    default, default_record = applied(tiny_gw, base)
    assert default_record.preserve_weight == PRESERVE_WEIGHT and not torch.equal(by_file, default)
    # an explicit number wins over the file's
    explicit, explicit_record = applied(tiny_gw, with_field, preserve_weight=PRESERVE_WEIGHT)
    assert explicit_record.preserve_weight == PRESERVE_WEIGHT and torch.equal(explicit, default)
    # the file's weight 0 ignores its regions, as the argument 0 does
    zero, zero_record = applied(tiny_gw, {**base, 'preserve_weight': 0})
    assert zero_record.preserve_weight is None and torch.equal(zero, applied(tiny_gw, base, preserve_weight=0.0)[0])
    # apply_edit / apply_erase directly read it too
    direct = tiny_gw.apply_edit if kind == 'edit' else tiny_gw.apply_erase
    assert direct(with_field, rank=1, solver='fast').preserve_weight == 1.0
    assert torch.equal(tiny_gw.target_weights(), by_file)
    tiny_gw.revert()
