"""The batched low-rank primitives equal the single-point operations, chain by chain, to rounding."""

import numpy as np
import pytest

from dlngeo.dynamics.intrinsic import truncate as truncate_single
from dlngeo.geometry import FixedRank
from dlngeo.geometry.lowrank_ops import (
    retract,
    tangent_from_products,
    tangent_project,
    tangent_to_ambient,
    truncate,
)

EPS = np.finfo(float).eps
# Rounding bound: both sides form the same products of unit-scale matrices in a
# different order (batched vs 2-D BLAS calls); the QR / SVD steps are backward
# stable, and the singular values of the test points are separated by >= 0.2
# (so the truncated factors are conditioned by 1 / gap <= 5). 100 eps covers
# a dozen roundings times that condition. Sums of k terms of unit size get a
# further factor k (k = m or n for the projections, 3r for the ambient form, up
# to 30 for the product of three factors of the retraction / truncation).
TOL = 100 * EPS


def _points(rng, batch, m, n, r):
    """Points with Haar frames and singular values in [1, 3] separated by >= 0.2."""
    U = np.linalg.qr(rng.standard_normal((*batch, m, r)))[0]
    V = np.linalg.qr(rng.standard_normal((*batch, n, r)))[0]
    s = 1.0 + 0.2 * np.arange(r)[::-1] + 0.1 * rng.uniform(size=(*batch, r))
    return U, s, np.swapaxes(V, -1, -2)


@pytest.mark.parametrize("batch", [(), (4,), (2, 3)])
@pytest.mark.parametrize("m, n, r", [(6, 5, 2), (4, 7, 3)])
def test_batched_primitives_match_fixed_rank(batch, m, n, r):
    rng = np.random.default_rng(3)
    U, s, Vt = _points(rng, batch, m, n, r)
    Z = rng.standard_normal((*batch, m, n))
    Up, M, Vp = tangent_project(U, Vt, Z)
    L, R = tangent_to_ambient(U, Vt, Up, M, Vp)
    xi = L @ np.swapaxes(R, -1, -2)
    Un, sn, Vtn = retract(U, s, Vt, 0.3 * Up, 0.3 * M, 0.3 * Vp)
    manifold = FixedRank(m, n, r)
    for idx in np.ndindex(*batch):
        point = (U[idx], s[idx], Vt[idx])
        ref = manifold.projection(point, Z[idx])
        for got, want in zip((Up[idx], M[idx], Vp[idx]), (ref.Up, ref.M, ref.Vp)):
            assert np.abs(got - want).max() <= TOL * np.abs(Z[idx]).max() * max(m, n)
        assert np.abs(xi[idx] - manifold.embedding(point, ref).to_dense()).max() <= TOL * 10
        u1, s1, vt1 = manifold.retraction(point, 0.3 * ref)
        # FixedRank.retraction adds spacing(1) to s: a rounding-size shift
        np.testing.assert_allclose(sn[idx], s1, rtol=0, atol=TOL * 10)
        np.testing.assert_allclose(
            (Un[idx] * sn[idx]) @ Vtn[idx], (u1 * s1) @ vt1, rtol=0, atol=TOL * 30
        )


def test_projection_from_products_and_idempotence():
    rng = np.random.default_rng(5)
    U, s, Vt = _points(rng, (3,), 5, 6, 2)
    Z = rng.standard_normal((3, 5, 6))
    V = np.swapaxes(Vt, 1, 2)
    direct = tangent_project(U, Vt, Z)
    products = tangent_from_products(U, V, Z @ V, np.swapaxes(Z, 1, 2) @ U)
    for a, b in zip(direct, products):
        assert np.array_equal(a, b)
    L, R = tangent_to_ambient(U, Vt, *direct)
    again = tangent_project(U, Vt, L @ np.swapaxes(R, 1, 2))  # P_T is a projection
    for a, b in zip(direct, again):
        assert np.abs(a - b).max() <= TOL * 30


@pytest.mark.parametrize("batch", [(), (3,), (2, 2)])
def test_batched_truncate_matches_the_single_one_and_eckart_young(batch):
    rng = np.random.default_rng(7)
    left = rng.standard_normal((*batch, 8, 5))
    right = rng.standard_normal((*batch, 6, 5))
    u, s, vt = truncate(left, right, 2)
    for idx in np.ndindex(*batch):
        u1, s1, vt1 = truncate_single(left[idx], right[idx], 2)
        np.testing.assert_allclose(s[idx], s1, rtol=TOL * 10, atol=0)
        X = left[idx] @ right[idx].T
        sv = np.linalg.svd(X, compute_uv=False)
        np.testing.assert_allclose(s[idx], sv[:2], rtol=TOL * 100, atol=0)
        approx = (u[idx] * s[idx]) @ vt[idx]
        # Eckart–Young: the error is the norm of the dropped singular values
        err = np.linalg.norm(X - approx)
        assert abs(err - np.linalg.norm(sv[2:])) <= TOL * 100 * np.linalg.norm(X)
