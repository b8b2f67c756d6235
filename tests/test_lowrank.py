"""SparsePlusLowRank: a sparse-plus-low-rank ambient matrix that the projections take without forming m x n."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

import dlngeo
from dlngeo.geometry.kernel import metric_operator, metric_operator_svd
from dlngeo.lowrank import (
    Factored,
    SparsePlusLowRank,
    ambient_matmul,
    ambient_rmatmul,
    entries,
    to_dense,
)
from dlngeo.network import DeepLinearNetwork

# Every comparison below is between two evaluations of the same sums in a
# different order (sparse and factored parts apart, or the dense matrix):
# they differ by rounding, a few eps times the size of the terms. With terms
# of size O(1)-O(10) and sums of at most ~100 terms, 1e-12 relative (plus
# 1e-12 absolute for entries that cancel) leaves a margin of ~50 over that.
RTOL, ATOL = 1e-12, 1e-12


def _example(rng, m=9, n=7, q=3, nnz=20):
    rows = rng.choice(m * n, size=nnz, replace=False)
    S = sp.csr_matrix((rng.standard_normal(nnz), (rows // n, rows % n)), shape=(m, n))
    return SparsePlusLowRank(S, rng.standard_normal((m, q)), rng.standard_normal((n, q)))


def _point(rng, m, n, r):
    u, _ = np.linalg.qr(rng.standard_normal((m, r)))
    v, _ = np.linalg.qr(rng.standard_normal((n, r)))
    return u, np.sort(rng.uniform(1.0, 2.0, r))[::-1], v.T


def test_products_entries_and_dense_agree_with_the_dense_matrix():
    rng = np.random.default_rng(0)
    Z = _example(rng)
    dense = Z.sparse.toarray() + Z.left @ Z.right.T
    assert np.array_equal(to_dense(Z), dense) and np.array_equal(np.asarray(Z), dense)
    assert Z.shape == dense.shape
    B, A = rng.standard_normal((7, 4)), rng.standard_normal((9, 4))
    assert np.allclose(ambient_matmul(Z, B), dense @ B, rtol=RTOL, atol=ATOL)
    assert np.allclose(ambient_rmatmul(Z, A), dense.T @ A, rtol=RTOL, atol=ATOL)
    rows, cols = rng.integers(0, 9, 15), rng.integers(0, 7, 15)
    assert np.allclose(entries(Z, rows, cols), dense[rows, cols], rtol=RTOL, atol=ATOL)


def test_of_builds_sparse_plus_a_scaled_point_or_factored_matrix():
    rng = np.random.default_rng(1)
    S = _example(rng).sparse
    point = _point(rng, 9, 7, 2)
    Z = SparsePlusLowRank.of(S, point, 0.3)
    assert np.allclose(to_dense(Z), S.toarray() + 0.3 * to_dense(point), rtol=RTOL, atol=ATOL)
    F = Factored(rng.standard_normal((9, 2)), rng.standard_normal((7, 2)))
    assert np.allclose(
        to_dense(SparsePlusLowRank.of(S, F)), S.toarray() + F.to_dense(), rtol=RTOL, atol=ATOL
    )


@pytest.mark.parametrize(
    "args, field",
    [
        ((np.eye(3), np.ones((3, 1)), np.ones((3, 1))), "sparse"),
        ((sp.eye(3, format="csr"), np.ones((3, 1)), np.ones((3, 2))), "left and right"),
        ((sp.eye(3, format="csr"), np.ones((4, 1)), np.ones((3, 1))), "left @ right.T"),
    ],
)
def test_bad_parts_are_one_line_value_errors(args, field):
    with pytest.raises(ValueError, match=f"^{field}"):
        SparsePlusLowRank(*args)
    with pytest.raises(ValueError, match="^lowrank"):
        SparsePlusLowRank.of(sp.eye(3, format="csr"), np.ones((3, 3)))


@pytest.mark.parametrize("depth", [1, 3])
def test_manifold_projections_and_the_kernel_take_it_as_the_dense_matrix(depth):
    rng = np.random.default_rng(2)
    Z = _example(rng)
    dense = to_dense(Z)
    point = _point(rng, 9, 7, 2)
    for manifold in (dlngeo.FixedRank(9, 7, 2), dlngeo.DLNFixedRank(9, 7, 2, depth)):
        got = manifold.euclidean_to_riemannian_gradient(point, Z)
        want = manifold.euclidean_to_riemannian_gradient(point, dense)
        for a, b in zip(got, want):
            assert np.allclose(a, b, rtol=RTOL, atol=ATOL)
        got = manifold.projection(point, Z)
        want = manifold.projection(point, dense)
        for a, b in zip(got, want):
            assert np.allclose(a, b, rtol=RTOL, atol=ATOL)
    u, s, vt = point
    assert np.allclose(
        metric_operator_svd(u, s, vt, Z, depth),
        metric_operator_svd(u, s, vt, dense, depth),
        rtol=RTOL,
        atol=ATOL,
    )
    X = to_dense(point)
    assert np.allclose(
        metric_operator(X, Z, depth, rank=2),
        metric_operator(X, dense, depth, rank=2),
        rtol=RTOL,
        atol=ATOL,
    )
    network = DeepLinearNetwork([7, 5, 4, 9])
    weights = [rng.standard_normal(shape) for shape in network.shapes]
    for a, b in zip(network.gradients(weights, Z), network.gradients(weights, dense)):
        assert np.allclose(a, b, rtol=RTOL, atol=ATOL)


def test_a_regularised_completion_gradient_on_a_huge_manifold_is_projected_without_forming_it():
    """m = n = 10^6: the dense gradient would take 8 TB; the projection takes milliseconds."""
    rng = np.random.default_rng(3)
    m = n = 10**6
    r, nnz, lam = 2, 50, 0.1
    rows, cols = rng.integers(0, m, nnz), rng.integers(0, n, nnz)
    u, _ = np.linalg.qr(rng.standard_normal((m, r)))
    v, _ = np.linalg.qr(rng.standard_normal((n, r)))
    point = (u, np.array([2.0, 1.0]), v.T)
    residual = entries(point, rows, cols) - 1.0
    P = sp.csr_matrix((residual, (rows, cols)), shape=(m, n))
    G = SparsePlusLowRank.of(P, point, lam)
    Up, M, Vp = dlngeo.FixedRank(m, n, r).euclidean_to_riemannian_gradient(point, G)
    # The tangent part of lam * X is lam * diag(s) in the middle block; the
    # sparse part contributes u^T P v, computed here from its nonzeros alone.
    UtPv = (u[rows].T * residual) @ v[cols]
    assert np.allclose(M, UtPv + lam * np.diag(point[1]), rtol=RTOL, atol=ATOL)
    assert Up.shape == (m, r) and Vp.shape == (n, r)
    # Orthogonality to rounding: u^T Up sums 10^6 products of size ~1e-3 * |Up|,
    # an error ~ eps * sqrt(m) * |Up| ~ 1e-13 for |Up| ~ 1; 1e-10 leaves room.
    assert np.allclose(u.T @ Up, 0, atol=1e-10) and np.allclose(v.T @ Vp, 0, atol=1e-10)


def test_refill_csr_has_the_template_pattern_and_shares_no_index_array():
    from dlngeo.lowrank import refill_csr

    rng = np.random.default_rng(0)
    template = sp.csr_array(sp.random(7, 5, density=0.4, random_state=1))
    data = rng.standard_normal(template.nnz)
    out = refill_csr(template, data)
    expected = sp.csr_array((data, template.indices, template.indptr), shape=template.shape)
    assert np.array_equal(out.toarray(), expected.toarray())
    out.indices[:] = 0  # writing into the copy leaves the template alone
    out.indptr[:] = 0
    assert np.array_equal(template.indices, expected.indices)
    assert np.array_equal(template.indptr, expected.indptr)


@pytest.mark.parametrize("count", [10, 150])  # density 10/300 (CSR products) and 1/2 (dense)
def test_factor_gradients_of_a_sparse_gradient_match_the_dense_ones(count):
    from dlngeo.dynamics.factor_gradients import (
        DENSE_GRADIENT_FRACTION,
        factor_loss_and_gradients,
    )

    rng = np.random.default_rng(count)
    m, n = 15, 20
    flat = rng.choice(m * n, size=count, replace=False)
    rows, cols = flat // n, flat % n
    loss = dlngeo.create_loss(
        "matrix_completion", rows=rows, cols=cols, values=rng.standard_normal(count), shape=(m, n)
    )
    assert (count >= DENSE_GRADIENT_FRACTION * m * n) == (count == 150)
    net = dlngeo.DeepLinearNetwork([n, 6, 6, m])
    W = [rng.standard_normal(s) for s in net.shapes]
    X, value, grads = factor_loss_and_gradients(net, W, loss)
    reference = net.gradients(W, loss.gradient(net.product(W)).toarray())
    assert value == loss.value(net.product(W))
    # Two orders of the same sums (<= 20 terms, 3 products) of O(1) numbers: rounding
    # ~ 20 x 3 x eps = 1.3e-14 relative to the largest entry; bound 1e-13.
    for g, r in zip(grads, reference):
        assert np.max(np.abs(g - r)) <= 1e-13 * max(1.0, np.max(np.abs(r)))
