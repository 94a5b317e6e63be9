"""Issue 13, the method: context directions against preserve keys vs a naive generalized eigen-solve."""

from __future__ import annotations

import numpy as np
import scipy.linalg
import torch

from rewrite.preserve import context_directions


def test_context_direction_is_the_naive_generalized_eigenvector():
    rng = np.random.RandomState(0)
    i = 12
    basis = rng.randn(i, i)
    c = basis @ basis.T / i + 0.1 * np.eye(i)
    keys, w = rng.randn(30, i), rng.rand(30) + 0.1
    pkeys, pw = rng.randn(20, i), rng.rand(20) + 0.1
    for strength in (0.0, 1.0, 30.0):
        a = (keys * w[:, None] ** 2).T @ keys
        b = c + strength * (pkeys * pw[:, None]).T @ pkeys / pw.sum()
        _, vecs = scipy.linalg.eigh(a, b)
        ref = vecs[:, -1] / np.linalg.norm(vecs[:, -1])
        d = context_directions(torch.tensor(keys), torch.tensor(w), torch.tensor(c), 1,
                               torch.tensor(pkeys), torch.tensor(pw), strength)[0].double().numpy()
        assert abs(d @ ref) >= 0.9999
        assert d @ (keys * w[:, None]).sum(0) > 0
        # rank 2 spans the top two generalized eigenvectors
        d2 = context_directions(torch.tensor(keys), torch.tensor(w), torch.tensor(c), 2,
                                torch.tensor(pkeys), torch.tensor(pw), strength).double().numpy()
        assert np.allclose(d2 @ d2.T, np.eye(2), atol=1e-6)
        for v in vecs[:, -2:].T:
            v = v / np.linalg.norm(v)
            assert np.linalg.norm(d2 @ v) >= 0.9999


def test_strong_preserve_turns_the_direction_away_from_preserve_keys():
    rng = np.random.RandomState(1)
    i = 10
    c = np.eye(i)
    shared = rng.randn(i)
    keys = shared + 0.3 * rng.randn(25, i)
    pkeys = shared[None] * rng.rand(15, 1)                    # preserve keys along the shared part only
    w, pw = np.ones(25), np.ones(15)
    loose = context_directions(torch.tensor(keys), torch.tensor(w), torch.tensor(c), 1)[0].double().numpy()
    strict = context_directions(torch.tensor(keys), torch.tensor(w), torch.tensor(c), 1,
                                torch.tensor(pkeys), torch.tensor(pw), 1e4)[0].double().numpy()
    unit = shared / np.linalg.norm(shared)
    assert abs(strict @ unit) < 0.05 < abs(loose @ unit)
