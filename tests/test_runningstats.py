"""Running statistics against naive float64 computations."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from numerics import U32, gamma

from utils.runningstats import QuantileSample, SecondMoment, upper_block_gram


def features(n: int, c: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.relu(torch.randn(n, c, generator=gen)) * torch.rand(c, generator=gen) * 3 + 0.1


@pytest.mark.parametrize('blocks', [1, 3, 4])
def test_upper_block_gram_is_the_upper_part_of_xtx(blocks):
    x = features(300, 50).double()
    got = upper_block_gram(x, blocks)
    full = x.t() @ x
    assert torch.allclose(torch.triu(got), torch.triu(full), rtol=1e-12, atol=1e-9)


def test_second_moment_matches_float64_over_batches():
    batches = [features(5000, 96, s) for s in range(3)] + [features(17, 96, 9)]
    stat = SecondMoment()
    for b in batches:
        stat.add(b)
    x = torch.cat(batches).double().numpy()          # the same float32 values, exactly, in float64
    c = x.T @ x / len(x)
    assert stat.count == len(x)
    # Each entry is a float32 dot product over chunks of at most stat.chunk rows, chunk sums added in
    # float64. The features are non-negative, so |x|^T |x| = x^T x and the bound is relative per entry.
    n = stat.chunk
    rel = np.abs(stat.moment().numpy() - c) / c
    assert rel.max() <= gamma(n), rel.max()
    # rounding errors behave as random in practice: their typical size is sqrt(n) u (Higham, 2002, sec. 3.1)
    assert np.sqrt((rel ** 2).mean()) <= np.sqrt(n) * U32
    assert np.all(np.abs(stat.mean_square().numpy() / (x ** 2).mean(0) - 1) <= gamma(n))
    # the mean is accumulated in float64: exact up to float64 rounding of N terms
    assert np.allclose(stat.mean().numpy(), x.mean(0), rtol=len(x) * 2.0 ** -53, atol=0)
    exact = SecondMoment()
    exact.add(torch.cat(batches).double())
    assert np.abs(exact.moment().numpy() - c).max() / np.abs(c).max() <= 1e-12


def test_second_moment_of_exactly_representable_products_is_exact():
    """Small integers: every float32 product and partial sum is exact, whatever the BLAS kernel."""
    gen = torch.Generator().manual_seed(4)
    x = torch.randint(-8, 9, (3000, 40), generator=gen).float()
    stat = SecondMoment(chunk=1000)
    stat.add(x)
    xd = x.double()
    assert torch.equal(stat.moment(), (xd.t() @ xd) / 3000)      # integer sums < 2^24: no rounding
    assert torch.equal(stat.mean(), xd.sum(0) / 3000)


def test_merge_equals_one_pass_and_state_round_trip():
    a, b = features(700, 20, 1), features(300, 20, 2)
    one = SecondMoment()
    one.add(torch.cat([a, b]))
    left, right = SecondMoment(), SecondMoment()
    left.add(a)
    right.add(b)
    left.merge(SecondMoment(right.state_dict()))
    assert left.count == 1000
    # other chunkings of the same rows: both within the float32 bound of the exact moment
    c = one.moment().numpy()
    assert np.abs(left.moment().numpy() - c).max() <= 2 * gamma(1000) * np.diag(c).max()
    with pytest.raises(ValueError, match='no samples'):
        SecondMoment().moment()
    with pytest.raises(ValueError, match=r'\[N, C\]'):
        SecondMoment().add(torch.zeros(3))


def test_quantiles_match_numpy():
    x = features(4000, 5, 3)
    qs = QuantileSample(per_batch=100_000)
    qs.add(x)
    levels = [0.0, 0.1, 0.5, 0.9, 1.0]
    want = np.quantile(x.numpy(), levels, axis=0).T
    assert np.allclose(qs.quantiles(levels).numpy(), want, rtol=1e-3, atol=1e-3)
    cdf = qs.normalize(x.t())
    empirical = (x.t()[:, :, None] >= x.t()[:, None, :]).float().mean(2)      # naive CDF
    assert (cdf - empirical).abs().max() < 2e-3


def test_quantile_sample_keeps_copies_not_views():
    x = features(4096, 8, 5)
    qs = QuantileSample(per_batch=64)
    qs.add(x)
    assert qs.rows[0].untyped_storage().data_ptr() != x.untyped_storage().data_ptr()
    assert qs.rows[0].untyped_storage().nbytes() == 64 * 8 * 4          # only the kept rows


def test_quantile_rows_of_batches_merged_in_order_equal_adding_the_batches():
    """What a process sends (batch_rows) and the merging process keeps (add_rows) is what add() keeps,
    the capacity cut included."""
    gen = torch.Generator().manual_seed(3)
    batches = [torch.randn(n, 5, generator=gen) for n in (700, 64, 1500, 33, 900)]
    direct, merged = QuantileSample(capacity=1000, per_batch=256), QuantileSample(capacity=1000, per_batch=256)
    for x in batches:
        direct.add(x)
    sent = {b: merged.batch_rows(x) for b, x in reversed(list(enumerate(batches)))}   # any order of arrival
    for _, rows in sorted(sent.items()):
        merged.add_rows(rows)
    assert merged.kept == direct.kept == 1000
    assert torch.equal(torch.cat(merged.rows), torch.cat(direct.rows))
    assert torch.equal(merged.table(), direct.table())
