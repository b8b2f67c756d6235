"""StageSums: the Runge–Kutta stage sums with incrementally orthonormalized bases equal the direct truncation."""

from __future__ import annotations

import numpy as np
import pytest

from dlngeo.dynamics.lowrank_steps import StageSums, _fro, truncate
from dlngeo.lowrank import Factored

EPS = np.finfo(float).eps


@pytest.mark.parametrize("shape", [(200, 150), (24, 30)])
def test_stage_sums_equal_the_direct_truncation(shape):
    rng = np.random.default_rng(0)
    m, n = shape
    r = 2
    u, _ = np.linalg.qr(rng.standard_normal((m, r)))
    v, _ = np.linalg.qr(rng.standard_normal((n, r)))
    s = np.array([2.0, 1.0])
    stages = []
    for j in range(7):
        # Stages share columns with X (u, v) exactly or nearly, as tangent stages do.
        uj = u if j == 0 else np.linalg.qr(u + 1e-3 * rng.standard_normal((m, r)))[0]
        stages.append(
            Factored(
                np.hstack((rng.standard_normal((m, r)), uj)),
                np.hstack((v, rng.standard_normal((n, r)))),
            )
        )
    sums = StageSums((u, s, v.T))
    for K in stages:
        sums.add(K)
    h, w = 0.1, rng.standard_normal(7)
    # Both are the best rank-2 approximation of the same matrix (a gap between its
    # singular values 2 and 3), computed through orthonormal bases: equal to
    # rounding, eps times the number of columns times the size of the sum.
    for count in (1, 4, 7):
        a = sums.combine(h, w[:count], r)
        lefts = [u * s] + [h * c * K.left for c, K in zip(w[:count], stages)]
        rights = [v] + [K.right for K in stages[:count]]
        b = truncate(np.hstack(lefts), np.hstack(rights), r)
        A, B = (a[0] * a[1]) @ a[2], (b[0] * b[1]) @ b[2]
        scale = np.linalg.norm(np.hstack(lefts)) * np.linalg.norm(np.hstack(rights))
        assert np.linalg.norm(A - B) <= 100 * EPS * scale
        np.testing.assert_allclose(a[0].T @ a[0], np.eye(r), atol=100 * EPS)
    dense = sum(h * c * K.left @ K.right.T for c, K in zip(w, stages))
    expected = _fro(
        np.hstack([h * c * K.left for c, K in zip(w, stages)]), np.hstack([K.right for K in stages])
    )
    assert sums.norm(h, w) == pytest.approx(np.linalg.norm(dense), rel=1e-12)
    assert expected == pytest.approx(np.linalg.norm(dense), rel=1e-12)
    assert np.linalg.norm(sums.QL.T @ sums.QL - np.eye(sums.QL.shape[1])) <= 100 * EPS
    assert np.linalg.norm(sums.QR.T @ sums.QR - np.eye(sums.QR.shape[1])) <= 100 * EPS
