"""Issue 13, the edit format: an optional `preserve` field (regions whose layer outputs must stay as
they are), validated as `key`, round-tripped in file order; files without it read as before."""

from __future__ import annotations

import json

import pytest
from test_rewriter import box_mask

from rewrite import editfile

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
