"""A pymanopt user's own cost of ``(u, s, vt)`` on FixedRank and DLNFixedRank.

``@pymanopt.function.autograd(manifold) def cost(u, s, vt)`` makes pymanopt
hand the manifold the list ``[du, ds, dvt]`` of partial derivatives. It must
give the Riemannian gradient (and, through :func:`dlngeo.problem`, the
Hessian) of the ambient path, at distinct, repeated and nearly repeated
singular values; a bare list/tuple is never read as a matrix.
"""

import autograd.numpy as anp
import numpy as np
import pymanopt
import pytest
from pymanopt.manifolds import FixedRankEmbedded
from pymanopt.optimizers import ConjugateGradient
from richardson import assert_derivatives_along_retraction

import dlngeo
from dlngeo.lowrank import Factored, to_dense

M_, N_, K_ = 9, 7, 3
GEOMETRIES = [None, 2, 3]  # None: the embedded metric (FixedRank); else DLNFixedRank's depth


def _manifold(depth, m=M_, n=N_, k=K_):
    return dlngeo.FixedRank(m, n, k) if depth is None else dlngeo.DLNFixedRank(m, n, k, depth)


def _costs(manifold, Y):
    def of_X(X):
        return 0.5 * anp.sum((X - Y) ** 2) + 0.25 * anp.sum(X**4)

    @pymanopt.function.autograd(manifold)
    def of_factors(u, s, vt):
        return of_X((u * s) @ vt)

    return of_X, of_factors


def _point(manifold, singular_values, seed):
    rng = np.random.default_rng(seed)
    u = np.linalg.qr(rng.standard_normal((manifold.shape[0], manifold.rank)))[0]
    v = np.linalg.qr(rng.standard_normal((manifold.shape[1], manifold.rank)))[0]
    return manifold.point(u, np.asarray(singular_values, dtype=float), v.T)


SPECTRA = {
    "distinct": [2.0, 1.5, 1.0],
    "repeated": [1.0, 1.0, 1.0],  # orthogonal / balanced inits have exactly this
    "nearly repeated": [1.0, 1.0 + 1e-12, 1.0 - 1e-12],
}


def _max_difference(a, b):
    return max(float(np.max(np.abs(p - q))) for p, q in zip(a, b))


def _size(a):
    return max(float(np.max(np.abs(p))) for p in a)


@pytest.mark.parametrize("spectrum", list(SPECTRA))
@pytest.mark.parametrize("depth", GEOMETRIES)
def test_pymanopt_problem_gradient_is_the_ambient_one(depth, spectrum):
    """pymanopt.Problem(manifold, cost of (u, s, vt)) gives grad = A_N(P_T E'), to rounding.

    Both sides are products of length <= m + n with divisions by s_i in [1, 2] only (no gaps):
    they agree to a small multiple of (m + n) eps = 3.6e-15 relative to the gradient's size;
    1e-13 leaves a factor 30. pymanopt's conversion is 0/0 at "repeated" and off by
    ~eps / 1e-12 at "nearly repeated"; on today's main the list was read as a matrix.
    """
    Y = np.random.default_rng(1).standard_normal((M_, N_))
    man = _manifold(depth)
    of_X, of_factors = _costs(man, Y)
    x = _point(man, SPECTRA[spectrum], seed=2)
    theirs = pymanopt.Problem(man, of_factors).riemannian_gradient(x)
    ours = dlngeo.problem(man, of_X).riemannian_gradient(x)
    assert _max_difference(theirs, ours) <= 1e-13 * _size(ours)


@pytest.mark.parametrize("spectrum", list(SPECTRA))
@pytest.mark.parametrize("depth", GEOMETRIES)
def test_factor_cost_hessian_is_the_ambient_one(depth, spectrum):
    """dlngeo.problem(manifold, cost of (u, s, vt)): Hessian-vector products equal the ambient path's.

    Same rounding argument as for the gradient (second derivatives are again products of
    length <= m + n divided by s_i only).
    """
    Y = np.random.default_rng(3).standard_normal((M_, N_))
    man = _manifold(depth)
    of_X, of_factors = _costs(man, Y)
    x = _point(man, SPECTRA[spectrum], seed=4)
    theirs = dlngeo.problem(man, of_factors)
    ours = dlngeo.problem(man, of_X)
    assert _max_difference(theirs.riemannian_gradient(x), ours.riemannian_gradient(x)) <= (
        1e-13 * _size(ours.riemannian_gradient(x))
    )
    np.random.seed(5)
    for _ in range(3):
        xi = man.random_tangent_vector(x)
        h_ours = ours.riemannian_hessian(x, xi)
        assert _max_difference(theirs.riemannian_hessian(x, xi), h_ours) <= 1e-13 * _size(h_ours)


@pytest.mark.parametrize("spectrum", ["distinct", "repeated"])
@pytest.mark.parametrize("depth", GEOMETRIES)
def test_pymanopt_checks_on_the_factor_cost(depth, spectrum):
    """pymanopt.Problem's gradient and dlngeo.problem's Hessian of a cost of (u, s, vt) are right.

    What pymanopt's check_gradient and check_hessian show as slopes 2 and 3, checked with a
    tolerance of its own: the first and second derivatives of t -> f(R_x(t d)) by central
    differences, bounded by a Richardson estimate of the truncation and the rounding
    (tests/richardson.py). Before the fix of this idiom pymanopt's gradient check gave
    slope 1 here (the derivative list read as a matrix): a gradient wrong by O(1).
    """
    Y = np.random.default_rng(6).standard_normal((M_, N_))
    man = _manifold(depth)
    _, of_factors = _costs(man, Y)
    x = _point(man, SPECTRA[spectrum], seed=7)
    np.random.seed(8)
    d = man.random_tangent_vector(x)
    # rounding of one cost: sums of 35 terms up to |f| at a point the retraction moved by
    # ~10 eps ||X||, E' = X - Y + X^3: 64 eps (|f| + ||E'|| ||X||) (as in tests/test_manifolds.py)
    X = to_dense(x)
    rounding = (
        64
        * np.finfo(float).eps
        * (abs(of_factors(*x)) + np.linalg.norm(X - Y + X**3) * np.linalg.norm(X))
    )
    theirs, ours = pymanopt.Problem(man, of_factors), dlngeo.problem(man, of_factors)
    assert_derivatives_along_retraction(
        ours, x, d, rounding, gradient=theirs.riemannian_gradient(x)
    )


def test_pymanopt_problem_with_conjugate_gradient_reaches_eckart_young():
    """CG on pymanopt.Problem(FixedRank, ½||u diag(s) vt - Y||²) reaches ½ Σ_{i>k} σ_i(Y)².

    At the best rank-k approximation the Riemannian Hessian's smallest eigenvalue is
    mu = 1 - σ_{k+1}/σ_k, so where CG stops with gradient norm g the excess cost is at most
    g² / (2 mu) to second order, plus the rounding of the cost itself (a sum of m n squares:
    m n eps ||Y||²). On today's main CG stopped at 50x the optimum.
    """
    rng = np.random.default_rng(9)
    Y = rng.standard_normal((M_, N_))
    sigma = np.linalg.svd(Y, compute_uv=False)
    optimum = 0.5 * float(np.sum(sigma[K_:] ** 2))
    mu = 1 - sigma[K_] / sigma[K_ - 1]
    assert mu > 1e-2  # a well-separated minimum
    man = dlngeo.FixedRank(M_, N_, K_)

    @pymanopt.function.autograd(man)
    def cost(u, s, vt):
        return 0.5 * anp.sum((u @ anp.diag(s) @ vt - Y) ** 2)

    np.random.seed(10)
    result = ConjugateGradient(verbosity=0, min_gradient_norm=1e-9, max_iterations=5000).run(
        pymanopt.Problem(man, cost)
    )
    g = result.gradient_norm
    assert g <= 1e-6, result.stopping_criterion
    rounding = M_ * N_ * np.finfo(float).eps * float(np.sum(Y**2))
    assert abs(result.cost - optimum) <= g**2 / (2 * mu) + rounding


def test_pymanopt_problem_hessian_is_refused_by_autograd_as_for_pymanopts_class():
    """pymanopt's Problem takes Hessian-vector products along ``embedding`` (an ambient (U, S, V)).

    That is pymanopt's own return type, kept, and not a direction in (u, s, vt); autograd then
    raises exactly as it does for FixedRankEmbedded. dlngeo.problem is the way to the Hessian.
    """
    Y = np.random.default_rng(11).standard_normal((M_, N_))
    for man in (FixedRankEmbedded(M_, N_, K_), dlngeo.FixedRank(M_, N_, K_)):
        _, of_factors = _costs(man, Y)
        np.random.seed(12)
        x = man.random_point()
        xi = man.random_tangent_vector(x)
        with pytest.raises(ValueError, match="shape-mismatch for sum"):
            pymanopt.Problem(man, of_factors).riemannian_hessian(x, xi)


def test_ambient_inputs_are_typed_and_bare_tuples_are_partials_or_an_error():
    """A bare 3-tuple is pymanopt's [du, ds, dvt] (shape-checked), never a matrix."""
    man = dlngeo.FixedRank(M_, N_, K_)
    x = _point(man, SPECTRA["distinct"], seed=13)
    rng = np.random.default_rng(14)
    G = rng.standard_normal((M_, N_))
    u, s, vt = x
    # The chain rule's partials of <G, X> are (G V S, diag(U^T G V), S U^T G): same gradient.
    partials = [G @ vt.T * s, np.diag(u.T @ G @ vt.T), s[:, None] * (u.T @ G)]
    # rounding, as in the gradient test above: ~ (m + n) eps ||G||; 1e-13 leaves a factor 30
    for form in (partials, tuple(partials)):
        assert _max_difference(
            man.euclidean_to_riemannian_gradient(x, form), man.projection(x, G)
        ) <= 1e-13 * np.linalg.norm(G)
    # Low-rank ambient matrices must say so: Factored or AmbientTriple.
    F = Factored(rng.standard_normal((M_, 2)), rng.standard_normal((N_, 2)))
    assert _max_difference(
        man.euclidean_to_riemannian_gradient(x, F), man.projection(x, to_dense(F))
    ) <= 1e-13 * np.linalg.norm(to_dense(F))
    # The form of today's main (a point-like (u, s, vt) read as u diag(s) vt) is refused.
    W = (rng.standard_normal((M_, 2)), rng.standard_normal(2), rng.standard_normal((2, N_)))
    with pytest.raises(ValueError, match="euclidean_gradient"):
        man.euclidean_to_riemannian_gradient(x, W)
    for bad in ("G", 1.0, [G], np.ones(M_)):
        with pytest.raises(ValueError, match="euclidean_gradient"):
            man.euclidean_to_riemannian_gradient(x, bad)
    with pytest.raises(ValueError, match="euclidean_gradient"):
        dlngeo.DLNFixedRank(M_, N_, K_, 2).euclidean_to_riemannian_gradient(x, W)
    # Partial Hessians need partial gradients.
    with pytest.raises(ValueError, match="euclidean_hessian"):
        man.euclidean_to_riemannian_hessian(x, G, partials, man.random_tangent_vector(x))


def test_partials_of_a_cost_of_the_factors_follow_pymanopt_and_are_undefined_at_ties():
    """A cost that depends on (u, s, vt) beyond X (pymanopt's own test uses random partials).

    At distinct singular values our gradient is pymanopt's (its general formula); it equals
    FixedRankEmbedded's to rounding (gaps >= 0.25 here, so no amplification).
    """
    rng = np.random.default_rng(15)
    man = dlngeo.FixedRank(M_, N_, K_)
    x = _point(man, SPECTRA["distinct"], seed=16)
    partials = (
        rng.standard_normal((M_, K_)),
        rng.standard_normal(K_),
        rng.standard_normal((K_, N_)),
    )
    theirs = FixedRankEmbedded(M_, N_, K_).euclidean_to_riemannian_gradient(x, partials)
    ours = man.euclidean_to_riemannian_gradient(x, partials)
    assert _max_difference(theirs, ours) <= 1e-13 * _size(theirs)
    # At a tie such a cost has no gradient (the factors are not unique); we stay finite.
    tied = _point(man, SPECTRA["repeated"], seed=16)
    assert all(np.all(np.isfinite(a)) for a in man.euclidean_to_riemannian_gradient(tied, partials))
