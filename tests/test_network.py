"""DeepLinearNetwork: product, gradients and imbalance against autograd; balanced factorizations; bad input."""

import autograd
import autograd.numpy as anp
import numpy as np
import pytest
import scipy.sparse as sp

import dlngeo
from dlngeo.lowrank import Factored

EPS = np.finfo(float).eps

# Bottlenecked (hidden width below min(m, n)), widening, and plain shapes.
DIMS = [(5, 3, 4), (4, 6, 2, 5, 3), (3, 3, 3, 3), (6, 2, 7), (4, 5, 5, 5, 5, 3), (3, 4)]


def _weights(net, rng):
    return [rng.standard_normal(shape) / np.sqrt(shape[1]) for shape in net.shapes]


def _energy(Y):
    # A non-quadratic energy so that E'(X) depends on X in more than an affine way.
    def energy(X):
        return 0.5 * anp.sum((X - Y) ** 2) + 0.1 * anp.sum(X**4)

    return energy


@pytest.mark.parametrize("dims", DIMS)
def test_product_and_gradients_match_autograd(dims):
    rng = np.random.default_rng(sum(dims))
    net = dlngeo.DeepLinearNetwork(dims)
    W = _weights(net, rng)
    m, n = net.output_shape
    energy = _energy(rng.standard_normal((m, n)))

    def product(*ws):
        X = ws[0]
        for w in ws[1:]:
            X = anp.dot(w, X)
        return X

    X = net.product(W)
    assert X.shape == (m, n)
    # rounding: N <= 5 products of width <= 7, O(1) entries (weights scaled 1/sqrt(n)): N n eps
    np.testing.assert_allclose(X, product(*W), rtol=0, atol=1e-14)

    loss = lambda *ws: energy(product(*ws))  # noqa: E731
    reference = [autograd.grad(loss, k)(*W) for k in range(net.depth)]
    G = autograd.grad(energy)(X)
    for form in (G, sp.csr_matrix(G), Factored(*_split(G))):
        grads = net.gradients(W, form)
        assert len(grads) == net.depth
        for k, (g, ref) in enumerate(zip(grads, reference)):
            assert g.shape == net.shapes[k]
            # rounding: forward and backward chains, ~ 2 N n eps ~ 70 eps (N <= 5, n <= 7), plus
            # the SVD split of G for Factored (~ n eps): 1e-13 ~ 450 eps
            assert np.linalg.norm(g - ref) <= 1e-13 * max(1.0, np.linalg.norm(ref)), (k, type(form))


def _split(G):
    u, s, vt = np.linalg.svd(G, full_matrices=False)
    return u * s, vt.T


@pytest.mark.parametrize("dims", DIMS)
def test_imbalance_and_layer_norms_match_autograd_definitions(dims):
    rng = np.random.default_rng(1 + sum(dims))
    net = dlngeo.DeepLinearNetwork(dims)
    W = _weights(net, rng)
    G = net.imbalance(W)
    assert len(G) == net.depth - 1
    for k, Gk in enumerate(G):
        expected = W[k + 1].T @ W[k + 1] - W[k] @ W[k].T
        assert Gk.shape == (dims[k + 1], dims[k + 1])
        # rounding: an entry of a Gram product errs by <= n eps times its largest diagonal
        # entry (Cauchy-Schwarz), one per side
        diagonals = np.sum(W[k + 1] ** 2, axis=0).max() + np.sum(W[k] ** 2, axis=1).max()
        atol = max(dims) * EPS * diagonals
        np.testing.assert_allclose(Gk, expected, rtol=0, atol=atol)
    # rounding: a sum of <= 35 positive squares (pairwise or dot, ~ log2(35) eps), halved by sqrt
    np.testing.assert_allclose(net.layer_norms(W), [np.sqrt(np.sum(w * w)) for w in W], rtol=1e-15)


@pytest.mark.parametrize("dims", DIMS)
@pytest.mark.parametrize("rank", [1, 2])
def test_balanced_factorization(dims, rank):
    rng = np.random.default_rng(7 * sum(dims) + rank)
    net = dlngeo.DeepLinearNetwork(dims)
    m, n = net.output_shape
    rank = min(rank, net.rank_bound)
    X = rng.standard_normal((m, rank)) @ rng.standard_normal((rank, n))
    for W in (
        net.balanced(X, rng=rng),
        net.balanced(np.linalg.svd(X, full_matrices=False), rng=3, rank=rank),
    ):
        assert [w.shape for w in W] == net.shapes
        # rounding: X's SVD, the random orthogonal factors' QR and N products, each ~ n eps
        # relative (prod ||W_k||_2 = ||X||_2 when balanced): (N + 2) n eps
        n_max = max(dims)
        assert np.linalg.norm(net.product(W) - X) <= (net.depth + 2) * n_max * EPS * np.linalg.norm(
            X
        )
        # rounding: two Gram products of factors with singular values s^(1/N): 2 n eps s_1^(2/N)
        gram = np.linalg.norm(X, 2) ** (2 / net.depth)
        for Gk in net.imbalance(W):
            assert np.abs(Gk).max() <= 2 * n_max * EPS * gram
        # Balanced: every layer carries the same singular values s^{1/N}, so equal norms, each
        # to ~ n eps (its orthogonal factors' rounding): 2 n eps between two.
        norms = net.layer_norms(W)
        np.testing.assert_allclose(norms, norms[0], rtol=2 * n_max * EPS)


def test_balanced_full_rank_and_repeated_singular_values():
    net = dlngeo.DeepLinearNetwork((4, 4, 4, 4))
    for X in (np.eye(4), 2.0 * np.linalg.qr(np.random.default_rng(0).standard_normal((4, 4)))[0]):
        W = net.balanced(X, rng=0)
        # rounding as in test_balanced_factorization, N = 3, n = 4, ||X||_2 = 1 or 2
        assert np.linalg.norm(net.product(W) - X) <= 5 * 4 * EPS * np.linalg.norm(X)
        gram = np.linalg.norm(X, 2) ** (2 / 3)
        assert max(np.abs(G).max() for G in net.imbalance(W)) <= 2 * 4 * EPS * gram


def test_balanced_is_reproducible_from_a_seed():
    net = dlngeo.DeepLinearNetwork((4, 5, 3))
    X = np.random.default_rng(0).standard_normal((3, 4))
    a, b = net.balanced(X, rng=11), net.balanced(X, rng=np.random.default_rng(11))
    for wa, wb in zip(a, b):
        assert np.array_equal(wa, wb)


def test_depth_one_product_is_a_copy():
    net = dlngeo.DeepLinearNetwork((3, 2))
    W = [np.ones((2, 3))]
    X = net.product(W)
    X += 1.0
    assert np.array_equal(W[0], np.ones((2, 3)))
    G = np.full((2, 3), 2.0)
    grad = net.gradients(W, G)[0]
    assert np.array_equal(grad, G) and grad is not G


def test_attributes():
    net = dlngeo.DeepLinearNetwork([4, 6, np.int64(2), 3])
    assert net.depth == 3 and net.dims == (4, 6, 2, 3)
    assert net.shapes == [(6, 4), (2, 6), (3, 2)]
    assert net.rank_bound == 2 and net.output_shape == (3, 4)


# ------------------------------------------------------------------ bad input
@pytest.mark.parametrize(
    "dims, word",
    [
        ((3,), "dims"),
        ((), "dims"),
        (5, "dims"),
        ((3, 0, 2), "dims"),
        ((3, -1), "dims"),
        ((3, 2.5), "dims"),
        ((3, "4"), "dims"),
        ((3, True), "dims"),
    ],
)
def test_bad_dims(dims, word):
    with pytest.raises(ValueError, match=word):
        dlngeo.DeepLinearNetwork(dims)


def test_bad_weights_and_gradients():
    net = dlngeo.DeepLinearNetwork((4, 3, 2))
    W = [np.ones((3, 4)), np.ones((2, 3))]
    with pytest.raises(ValueError, match="weights"):
        net.product(W[:1])
    with pytest.raises(ValueError, match="weights"):
        net.product([np.ones((3, 4)), np.ones((3, 2))])
    with pytest.raises(ValueError, match="weights"):
        net.imbalance([np.ones((4, 3)), np.ones((2, 3))])
    with pytest.raises(ValueError, match="weights"):
        net.product(None)
    with pytest.raises(ValueError, match="euclidean_gradient"):
        net.gradients(W, np.ones((4, 2)))


def test_bad_balanced_input():
    net = dlngeo.DeepLinearNetwork((4, 2, 3))
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="X"):
        net.balanced(rng.standard_normal((3, 4)))  # rank 3 > bottleneck 2
    with pytest.raises(ValueError, match="X"):
        net.balanced(rng.standard_normal((4, 3)))  # wrong shape
    X = rng.standard_normal((3, 2)) @ rng.standard_normal((2, 4))
    X[0, 0] = np.inf
    with pytest.raises(ValueError, match="X"):
        net.balanced(X)
    with pytest.raises(ValueError, match="rank"):
        net.balanced(np.zeros((3, 4)), rank=-1)


def test_relative_imbalance_is_zero_when_balanced_and_near_one_half_for_gaussian_layers():
    rng = np.random.default_rng(0)
    net = dlngeo.DeepLinearNetwork((100, 100, 100, 100))
    X = rng.standard_normal((100, 5)) @ rng.standard_normal((5, 100)) * 1e-3
    # a balanced factorization in floating point: rounding, a few eps per layer product
    assert net.relative_imbalance(net.balanced(X, rng=rng)) <= 100 * net.depth * np.finfo(float).eps
    gaussian = [rng.standard_normal((100, 100)) for _ in range(3)]
    # independent n x n Gaussian layers: ||W W^T - V^T V||_F ~ sqrt(2) n^1.5 and each term
    # ~ sqrt(2) n^1.5, so delta -> 1/2 with O(1/n) bias (1/(8n)) and fluctuations: 5/n, n = 100
    assert abs(net.relative_imbalance(gaussian) - 0.5) <= 5 / 100
    # at most 1 (triangle inequality), attained when one side vanishes
    assert net.relative_imbalance([gaussian[0], np.zeros((100, 100)), gaussian[2]]) == 1.0
    assert dlngeo.DeepLinearNetwork((4, 3)).relative_imbalance([np.ones((3, 4))]) == 0.0
