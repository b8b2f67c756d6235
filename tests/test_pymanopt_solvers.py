"""pymanopt's own solvers on FixedRank and DLNFixedRank, and where pymanopt's FixedRankEmbedded fails.

The completion loss here is a small stand-alone one (the real one is a
plugin): value and gradient from the observed entries only (a sparse
``E'(X)``), Hessian-vector products on factored directions through
:func:`dlngeo.lowrank.entries`, never an ``m x n`` matrix.
"""

import functools

import autograd.numpy as anp
import numpy as np
import pymanopt
import pytest
import scipy.sparse as sp
from pymanopt.manifolds import FixedRankEmbedded
from pymanopt.optimizers import ConjugateGradient, SteepestDescent, TrustRegions

import dlngeo
from dlngeo.geometry.fixed_rank import TangentVector
from dlngeo.losses import Loss
from dlngeo.lowrank import entries, to_dense


class Completion(Loss):
    """E(X) = ½ Σ_{(i,j) ∈ Ω} (X_ij − M_ij)²."""

    name = "completion (test)"

    def __init__(self, rows, cols, values, shape):
        self.rows, self.cols, self.values, self.shape = rows, cols, values, shape

    def _sparse(self, data):
        return sp.csr_matrix((data, (self.rows, self.cols)), shape=self.shape)

    def value(self, X):
        r = entries(X, self.rows, self.cols) - self.values
        return 0.5 * float(r @ r)

    def gradient(self, X):
        return self._sparse(entries(X, self.rows, self.cols) - self.values)

    def hessian_vector_product(self, X, Z):
        return self._sparse(entries(Z, self.rows, self.cols))


def _completion_problem(seed=1, m=60, n=50, k=4, fraction=0.4):
    rng = np.random.default_rng(seed)
    truth = rng.standard_normal((m, k)) @ rng.standard_normal((k, n)) / np.sqrt(k)
    observed = rng.choice(m * n, int(fraction * m * n), replace=False)
    rows, cols = np.divmod(observed, n)
    loss = Completion(rows, cols, truth[rows, cols], (m, n))
    # Spectral start: top-k SVD of the observed matrix rescaled by 1 / (fraction observed).
    rescaled = loss._sparse(truth[rows, cols]).toarray() * (m * n / len(observed))
    u, s, vt = np.linalg.svd(rescaled, full_matrices=False)
    return loss, truth, (u[:, :k], s[:k], vt[:k])


@pytest.mark.parametrize("depth", [None, 1, 2, 3, 4])
def test_trust_regions_solves_completion(depth):
    """60 x 50, rank 4, 40 % observed: cost <= 1e-12 within 50 outer iterations, from a spectral start.

    The trust radius is pymanopt's default, ``typical_dist / 8`` growing to at most
    ``typical_dist``, which dlngeo.problem sets to the data's scale (pymanopt's
    FixedRankEmbedded uses the dimension).
    """
    loss, truth, start = _completion_problem()
    m, n, k = 60, 50, 4
    man = dlngeo.FixedRank(m, n, k) if depth is None else dlngeo.DLNFixedRank(m, n, k, depth)
    problem = dlngeo.problem(man, loss)
    assert loss.value(start) > 1.0  # the start is not already the answer
    result = TrustRegions(verbosity=0, max_iterations=50, min_gradient_norm=1e-10).run(
        problem, initial_point=man.point(*start)
    )
    # at TR's stop ||grad|| < 1e-10, so cost <= ||grad||^2 / (2 lam) and ||X - truth|| <=
    # ||grad|| / (sqrt(a_min) lam) (see _error_bound): they need lam >= 5e-9 and ~1e-6
    assert result.cost <= 1e-12, (result.cost, result.stopping_criterion)
    assert result.iterations <= 50
    # It recovered the low-rank matrix, not merely fitted the observed entries.
    X = dlngeo.lowrank.to_dense(result.point)
    assert np.linalg.norm(X - truth) <= 1e-6 * np.linalg.norm(truth)
    assert problem.evaluations["hessian"] > 0


def test_pymanopt_trust_regions_fails_on_fixed_rank_embedded_ours_succeeds():
    """pymanopt's FixedRankEmbedded + autograd: TrustRegions raises 'shape-mismatch for sum'."""
    rng = np.random.default_rng(0)
    m, n, k = 8, 6, 2
    Y = rng.standard_normal((m, k)) @ rng.standard_normal((k, n))
    theirs = FixedRankEmbedded(m, n, k)

    @pymanopt.function.autograd(theirs)
    def cost(u, s, vt):
        return 0.5 * anp.sum((u @ anp.diag(s) @ vt - Y) ** 2)

    np.random.seed(0)
    start = theirs.random_point()
    with pytest.raises(ValueError, match="shape-mismatch for sum"):
        TrustRegions(verbosity=0, max_iterations=5).run(
            pymanopt.Problem(theirs, cost), initial_point=start
        )

    ours = dlngeo.FixedRank(m, n, k)
    for man in (ours, dlngeo.DLNFixedRank(m, n, k, 3)):
        problem = dlngeo.problem(man, lambda X: 0.5 * anp.sum((X - Y) ** 2))
        result = TrustRegions(verbosity=0, max_iterations=50, min_gradient_norm=1e-10).run(
            problem, initial_point=man.point(*start)
        )
        # Hessian = identity on T: cost <= ||grad||^2 / (2 a_min) < 5e-21 / a_min, a_min >= 5e-3
        assert result.cost <= 1e-18, result.stopping_criterion


@pytest.mark.parametrize("optimizer", [SteepestDescent, ConjugateGradient])
@pytest.mark.parametrize("depth", [None, 2, 3])
def test_first_order_solvers_run_on_both_manifolds(optimizer, depth):
    """SteepestDescent and ConjugateGradient through dlngeo.problem, with an autograd cost of X."""
    rng = np.random.default_rng(3)
    m, n, k = 8, 6, 2
    Y = rng.standard_normal((m, k)) @ rng.standard_normal((k, n))
    man = dlngeo.FixedRank(m, n, k) if depth is None else dlngeo.DLNFixedRank(m, n, k, depth)
    problem = dlngeo.problem(man, lambda X: 0.5 * anp.sum((X - Y) ** 2))
    np.random.seed(1)
    start = man.random_point()
    result = optimizer(verbosity=0, max_iterations=2000, min_gradient_norm=1e-8).run(
        problem, initial_point=start
    )
    # Hessian = identity on T: cost <= ||grad||^2 / (2 a_min) ~ 5e-17 / a_min at the 1e-8 test
    assert result.cost <= 1e-12 * np.sum(Y**2), (result.cost, result.stopping_criterion)


# ------------------------------------------- TrustRegions' defaults at every data scale
def _scaled_completion(seed, m, n, k, scale, fraction=0.35):
    """Entries of size ``scale``: truth = scale * G H / sqrt(k), 35 % observed, spectral start."""
    rng = np.random.default_rng(seed)
    truth = scale * (rng.standard_normal((m, k)) @ rng.standard_normal((k, n))) / np.sqrt(k)
    observed = rng.choice(m * n, int(fraction * m * n), replace=False)
    rows, cols = np.divmod(observed, n)
    loss = Completion(rows, cols, truth[rows, cols], (m, n))
    rescaled = loss._sparse(truth[rows, cols]).toarray() * (m * n / len(observed))
    u, s, vt = np.linalg.svd(rescaled, full_matrices=False)
    return loss, truth, (u[:, :k], s[:k], vt[:k])


@functools.cache
def _error_bound(seed, m, n, k, depth, gradient_tolerance):
    """Relative error, times the data's scale, of a point where TR stops with ||grad|| < tolerance.

    At the truth E' = 0 and the Riemannian Hessian is P_T P_Omega P_T, whose smallest
    eigenvalue lam is sigma_min(J_Omega)^2 for an orthonormal basis J of T (rows: the observed
    entries). Near it P_T E'(X) = Hess[X - truth] + O(||X - truth||^2), so
    ||X - truth|| <= ||P_T E'|| / lam; in g_N, ||grad||_{g_N} >= sqrt(a_min) ||P_T E'|| with
    a_min = s_min^{2(N-1)/N} the smallest eigenvalue of A_{N,X}. A factor 2 covers the
    second-order remainder (relatively O(||X - truth|| / s_min), below 1e-4 here). Computed at
    scale 1; at scale c, lam does not change while ||truth|| scales by c and sqrt(a_min) by
    c^{(N-1)/N}, so the bound is this over c^{1 + (N-1)/N}.
    """
    loss, truth, _ = _scaled_completion(seed, m, n, k, 1.0)
    U, s, Vt = np.linalg.svd(truth)
    u, v, u_perp, v_perp = U[:, :k], Vt[:k].T, U[:, k:], Vt[k:].T
    r, c = loss.rows, loss.cols
    J = np.hstack(
        [
            np.einsum("ia,ib->iab", u[r], v[c]).reshape(len(r), -1),
            np.einsum("ia,ib->iab", u_perp[r], v[c]).reshape(len(r), -1),
            np.einsum("ia,ib->iab", u[r], v_perp[c]).reshape(len(r), -1),
        ]
    )
    lam = np.linalg.svd(J, compute_uv=False)[-1] ** 2
    N = 1 if depth is None else depth
    a_min = s[k - 1] ** (2 * (N - 1) / N)
    return 2 * gradient_tolerance / (np.sqrt(a_min) * lam * np.linalg.norm(truth))


# Seed 18: from the random point at Frobenius norm scale / 10 (e33ebfc) TR ran off on (M_3, g_2)
# and (M_3, g_3); from DLNFixedRank.random_point's tenth in g_N-length it converges.
TR_CASES = [(45, 70, 3, seed) for seed in (0, 1, 2, 3, 18)] + [
    (100, 100, 5, seed) for seed in (0, 1)
]
# From its random_point, TrustRegions on (M_3, g_3) runs off along a valley of the completion
# problem on the 45 x 70 instance of seed 1, at every data scale alike (s_1 grows without
# bound while s_1 ||P_Omega(u_1 v_1^T)|| stays bounded, the cost decreasing to a positive
# limit). pymanopt's own FixedRankEmbedded with the ambient-gradient fix falls into it from
# its random_point on this instance too, at every scale (benchmarks/bench_tr_convergence.py,
# which also finds seed 18 failing on (M_3, g_N)); the mechanism is shown on a 3 x 3
# instance in test_completion_valley.py and docs/math.md §8.5.
VALLEY = pytest.mark.xfail(
    strict=True,
    reason="a valley of fixed-rank completion (non-closed sublevel set), not a scale effect",
)


def _tr_case_marks(start, depth, m, seed):
    if start == "random_point" and depth == 3 and (m, seed) == (45, 1):
        return [VALLEY]
    return []


# The valley case runs at scale 1 only: a failing run takes all 300 iterations, and TR is
# scale-equivariant (test_trust_regions_is_scale_equivariant); the benchmark finds it failing
# at 1e-2 and 1e2 alike.
TR_PARAMS = [
    pytest.param(start, depth, scale, m, n, k, seed, marks=_tr_case_marks(start, depth, m, seed))
    for start in ("random_point", "spectral")
    for depth in (None, 2, 3)
    for scale in (1e-2, 1.0, 1e2)
    for (m, n, k, seed) in TR_CASES
    if scale == 1.0 or not _tr_case_marks(start, depth, m, seed)
]


@pytest.mark.parametrize("start, depth, scale, m, n, k, seed", TR_PARAMS)
def test_trust_regions_defaults_converge_at_every_data_scale(start, depth, scale, m, n, k, seed):
    """pymanopt's TrustRegions with its defaults solves completion with entries of size 1e-2 .. 1e2.

    The radius (typical_dist) and random_point follow the data's scale, which dlngeo.problem
    reads off the loss (the Cauchy step from 0). The run must stop by TR's own gradient test
    (pymanopt's default min_gradient_norm 1e-6, in the manifold's metric), and the relative
    error is then bounded by that tolerance over the Hessian's smallest eigenvalue
    (_error_bound). max_iterations=300 only shortens a failing run (the default is 1000).
    On today's main (embedded metric): random starts fail at 1e-2 and 1e2, spectral at 1e2.
    """
    loss, truth, spectral = _scaled_completion(seed, m, n, k, scale)
    man = dlngeo.FixedRank(m, n, k) if depth is None else dlngeo.DLNFixedRank(m, n, k, depth)
    problem = dlngeo.problem(man, loss)
    optimizer = TrustRegions(verbosity=0, max_iterations=300)
    np.random.seed(seed)
    if start == "random_point":
        result = optimizer.run(problem)  # TR's default start: problem.manifold.random_point()
    else:
        result = optimizer.run(problem, initial_point=man.point(*spectral))
    assert "min grad norm" in result.stopping_criterion, result.stopping_criterion
    error = np.linalg.norm(to_dense(result.point) - truth) / np.linalg.norm(truth)
    N = 1 if depth is None else depth
    bound = _error_bound(seed, m, n, k, depth, optimizer._min_gradient_norm)
    bound /= scale ** (1 + (N - 1) / N)
    assert error <= bound, (error, bound, result.iterations)


@pytest.mark.parametrize("depth", [None, 3])
@pytest.mark.parametrize("seed", [0, 1])
def test_trust_regions_is_scale_equivariant(depth, seed):
    """Data scaled by c: TR's iterates from TR's default start are c times those at scale 1.

    E(cX; cM) = c^2 E(X; M) for completion, the retraction, projections, Hessian and g_N
    geometry are homogeneous, and typical_dist, random_point follow the Cauchy scale, which
    scales by c. With c a power of 2 the scaling is exact in floating point; what remains is
    pymanopt's rho regularization (1e3 eps max(1, |f|)) and the spacing(1) added to singular
    values by the retraction, relative perturbations <= 1e3 eps = 2.2e-13 per iteration;
    1e-9 over 6 iterations allows an amplification of 700 per iteration.
    On today's main typical_dist = sqrt(k) and random_point ignore the data's scale.
    """
    m, n, k = 45, 70, 3
    finals = {}
    for c in (2.0**-7, 1.0, 2.0**7):
        loss, truth, _ = _scaled_completion(seed, m, n, k, c)
        man = dlngeo.FixedRank(m, n, k) if depth is None else dlngeo.DLNFixedRank(m, n, k, depth)
        np.random.seed(seed)
        result = TrustRegions(verbosity=0, max_iterations=6).run(dlngeo.problem(man, loss))
        finals[c] = to_dense(result.point) / c
    reference = finals[1.0]
    for c, X in finals.items():
        assert np.linalg.norm(X - reference) <= 1e-9 * np.linalg.norm(reference), c


@pytest.mark.parametrize("depth", [1, 2, 3, 5])
def test_dln_random_point_is_a_tenth_of_the_data_in_g_N_length(depth):
    """random_point on (M_k, g_N) with a known scale: a tenth of the data's size in g_N-length.

    The g_N-length of the ray tau -> tau X, tau in [0, rho], is N rho^{1/N} ||X||_{g_N(X)}
    (||X||_{g_N(tau X)} = tau^{-(N-1)/N} ||X||_{g_N(X)}, DLNFixedRank.random_point). It is
    checked here from the manifold's own norm: the homogeneity at three values of tau (to
    rounding, a few eps per factor), and the length of the start against that of the same
    direction at the data's Frobenius size, 1/10 (rounding). depth 1 is FixedRank's start,
    the same draw. On e33ebfc every depth started at Frobenius norm scale / 10.
    """
    scale = 7.0
    man = dlngeo.DLNFixedRank(9, 8, 3, depth, scale=scale)
    np.random.seed(4)
    u, s, vt = man.random_point()
    np.random.seed(4)
    flat = dlngeo.FixedRank(9, 8, 3, scale=scale).random_point()
    np.testing.assert_array_equal(u, flat[0])
    np.testing.assert_allclose(s, flat[1] * 10.0 ** (1 - depth), rtol=1e-15)

    def norm_of_ray(tau, sv):
        point = man.point(u, tau * sv, vt)  # the ray's direction X, as a tangent vector at tau X
        return man.norm(point, TangentVector(np.zeros_like(u), np.diag(sv), np.zeros_like(vt.T)))

    direction = s * scale / np.linalg.norm(s)  # the same direction at the data's size
    for tau in (1e-3, 0.1, 1.0):
        assert norm_of_ray(tau, direction) == pytest.approx(
            tau ** (-(depth - 1) / depth) * norm_of_ray(1.0, direction), rel=1e-13
        )
    rho = np.linalg.norm(s) / scale
    length_start = depth * rho ** (1 / depth) * norm_of_ray(1.0, direction)
    length_data = depth * norm_of_ray(1.0, direction)
    assert length_start / length_data == pytest.approx(0.1, rel=1e-13)
