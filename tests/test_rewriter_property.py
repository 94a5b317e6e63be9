"""Property-based: malformed requests give a clear error and leave the weights bit-identical."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_rewriter import LAYER, box_mask, tiny_model

from rewrite.core.rewriter import SeqStyleGanRewriter
from utils.zdataset import z_dataset_for_model

FIELDS = ('object', 'paste', 'key', 'query', 'preserve')
GOOD_MASK = box_mask(256, 64, 64, 160, 160)
VANISHING = box_mask(1024, 0, 0, 1, 1)             # one pixel of 1024: nothing at 16x16
PROPERTY = settings(max_examples=1100, derandomize=True, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

junk = st.one_of(st.none(), st.booleans(), st.integers(-5, 5000), st.floats(allow_nan=True),
                 st.text(max_size=12), st.lists(st.integers(), max_size=3),
                 st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
                 st.sampled_from(['data:image/png;base64,', 'data:image/png;base64,@@@@',
                                  'data:image/png;base64,' + 'QUJD' * 4, VANISHING,
                                  'data:image/jpeg;base64,' + GOOD_MASK.split(',')[1]]))


def valid() -> dict:
    return {'object': [1, GOOD_MASK], 'paste': [2, GOOD_MASK], 'key': [[2, GOOD_MASK], [3, GOOD_MASK]]}


@st.composite
def malformed(draw):
    request = valid()
    kind = draw(st.sampled_from(['field', 'pair', 'imgnum', 'mask', 'key', 'preserve', 'drop', 'whole']))
    field = draw(st.sampled_from(['object', 'paste']))
    if kind == 'field':
        request[draw(st.sampled_from(FIELDS))] = draw(junk)
    elif kind == 'pair':
        request[field] = draw(st.lists(st.one_of(st.integers(0, 3), st.just(GOOD_MASK), junk), max_size=4)
                              .filter(lambda p: len(p) != 2))
    elif kind == 'imgnum':
        request[field][0] = draw(st.one_of(st.integers(max_value=-1), st.integers(min_value=40), st.floats(),
                                           st.text(max_size=3), st.booleans()))
    elif kind == 'mask':
        request[field][1] = draw(junk.filter(lambda m: m != GOOD_MASK))
    elif kind == 'key':
        j = draw(st.integers(0, 1))
        request['key'][j] = draw(st.one_of(junk, st.lists(junk, min_size=2, max_size=2)))
    elif kind == 'preserve':                           # malformed preserve regions
        good = [[4, GOOD_MASK], [5, GOOD_MASK]]
        j = draw(st.integers(0, 1))
        good[j] = draw(st.one_of(junk, st.lists(junk, min_size=2, max_size=2).filter(lambda p: p[1] != VANISHING),
                                 st.tuples(st.integers(min_value=40), st.just(GOOD_MASK))))
        request['preserve'] = draw(st.sampled_from([good, [], 'x', {'0': good[0]}]))
    elif kind == 'drop':
        for f in draw(st.lists(st.sampled_from(['object', 'paste']), min_size=1, unique=True)):
            request.pop(f)
        request.pop('key', None) if draw(st.booleans()) else None
        if 'paste' in request and 'object' not in request:
            request['paste'][1] = VANISHING            # still invalid as an erase: nothing selected
    else:
        request = draw(st.one_of(junk, st.lists(junk, max_size=3)))
    return request


@pytest.fixture(scope='module')
def gw():
    model = tiny_model(3)
    rewriter = SeqStyleGanRewriter(model, z_dataset_for_model(model, 40), LAYER, progress=False)
    _ = rewriter.c_matrix                                   # statistics once, outside the examples
    return rewriter


@pytest.mark.slow
@PROPERTY
@given(request=malformed())
def test_malformed_requests_raise_clear_errors_and_change_nothing(gw, request):
    before = {k: v.clone() for k, v in gw.model.state_dict().items()}
    snapshot = copy.deepcopy(request)
    with pytest.raises((ValueError, TypeError)) as err:
        if isinstance(request, dict) and 'object' not in request and 'paste' in request:
            gw.apply_erase(request, drank=3, niter=2)
        else:
            gw.apply_edit(request, niter=2)
    message = str(err.value)
    assert len(message) > 10 and '\n' not in message.strip()
    assert any(word in message for word in (*FIELDS, 'request', 'image number', 'mask', 'context', 'edit'))
    assert request == snapshot or (isinstance(request, float) and np.isnan(request))
    after = gw.model.state_dict()
    assert all(np.array_equal(before[k].numpy(), after[k].numpy()) for k in before)
    assert gw.history == []


# ---- malformed `preserve` entries alone (1000 cases): an error naming preserve[i], nothing changed ------
bad_imgnum = st.one_of(st.integers(max_value=-1), st.integers(min_value=40, max_value=10 ** 6), st.floats(),
                       st.text(max_size=3), st.booleans(), st.none())
bad_pair = st.one_of(junk, st.lists(st.one_of(st.integers(0, 39), st.just(GOOD_MASK), junk), max_size=4)
                     .filter(lambda p: len(p) != 2),
                     st.tuples(bad_imgnum, st.just(GOOD_MASK)),
                     st.tuples(st.integers(0, 39), junk.filter(lambda m: m != GOOD_MASK)),   # VANISHING among them
                     st.tuples(bad_imgnum, junk))


@st.composite
def malformed_preserve(draw) -> tuple[dict, list[int] | None]:
    """(a request, valid but for its `preserve` field; the indices of the malformed entries, or None when the
    field itself is not a list of pairs)."""
    request = valid() if draw(st.booleans()) else {'paste': [2, GOOD_MASK], 'key': [[3, GOOD_MASK]]}
    if draw(st.integers(0, 9)) == 0:                                  # the field itself
        request['preserve'] = draw(st.one_of(junk, st.just([]), st.lists(junk, max_size=3)))
        return request, None
    entries = [[n, GOOD_MASK] for n in draw(st.lists(st.integers(0, 39), max_size=3))]
    bad = []
    for _ in range(draw(st.integers(1, 2))):
        at = draw(st.integers(0, len(entries)))
        entries.insert(at, draw(bad_pair))
        bad = [b + (b >= at) for b in bad] + [at]
    request['preserve'] = entries
    return request, sorted(bad)


@pytest.mark.slow
@settings(PROPERTY, max_examples=1000)
@given(case=malformed_preserve())
def test_malformed_preserve_entries_raise_errors_naming_them_and_change_nothing(gw, case):
    request, bad = case
    before = {k: v.clone() for k, v in gw.model.state_dict().items()}
    snapshot = repr(request)
    with pytest.raises((ValueError, TypeError)) as err:
        if 'object' not in request:
            gw.apply_erase(request, drank=3, niter=2)
        else:
            gw.apply_edit(request, niter=2)
    message = str(err.value)
    assert '\n' not in message.strip() and 'preserve' in message
    if bad is not None:
        assert any(f'preserve[{j}]' in message for j in bad), (message, bad)
    assert repr(request) == snapshot
    after = gw.model.state_dict()
    assert all(np.array_equal(before[k].numpy(), after[k].numpy()) for k in before)
    assert gw.history == []
