"""Fixed-rank completion has valleys to infinity: a property of the problem, not of a manifold class.

The smallest instance (docs/math.md §8.5): ``M = x x^T``, ``x = (3, 1, 1)``,
every entry observed but ``(1, 1)``, rank 1, ``E(X) = ½ Σ_Ω (X_ij − M_ij)²``.
Its minimum is ``E(M) = 0``. On the rank-1 matrices with ``X_11 < 0``:

* ``X_t = c c^T / t``, ``c = (t, 3, 3)``, ``t < 0``, fits row 1 and column 1
  exactly and has ``X_ij = 9 / t`` on the 2 x 2 block, so
  ``E(X_t) = 2 (1 − 9/t)²``: strictly decreasing to ``2`` as ``t → −∞``, with
  ``||X_t|| → ∞``;
* ``E > 2`` everywhere there: a rank-1 ``X`` has ``X_11 X_ij = X_1j X_i1``; if
  some ``X_1j`` or ``X_i1`` (``i, j ≥ 2``) is ``≤ 0`` its error is ``≥ 3`` and
  ``E ≥ 4.5``; otherwise ``X_ij < 0`` on the block and each of its four errors
  exceeds ``1``;
* the wall ``X_11 = 0`` has ``E ≥ 9`` (then ``X_1j X_i1 = 0`` for all
  ``i, j ≥ 2``: row 1 or column 1 is zero off ``(1, 1)``).

So the sublevel set ``{E ≤ 2 + δ}`` has, for every ``δ > 0``, an unbounded
part in ``X_11 < 0`` whose infimum ``2`` is attained nowhere (a limit point of
the non-closed image of the rank-1 matrices under ``P_Ω``), separated from
the minimum by a wall of height 9; a gradient flow started there with
``E < 9`` descends forever and never reaches the minimum, and its gradient
tends to 0 (any gradient test calls it stationary). The 45 x 70 rank-3
instance of ``test_pymanopt_solvers.py`` (seed 1) is the same effect in a
larger pattern (``benchmarks/bench_tr_convergence.py``).
"""

from __future__ import annotations

import numpy as np
import pymanopt
import pytest
from pymanopt.manifolds import FixedRankEmbedded
from pymanopt.manifolds.fixed_rank import _FixedRankPoint, _FixedRankTangentVector
from pymanopt.optimizers import TrustRegions

import dlngeo
from dlngeo.lowrank import to_dense

X = np.array([3.0, 1.0, 1.0])
M = np.outer(X, X)
ROWS, COLS = (a.ravel() for a in np.indices((3, 3)))
OBSERVED = ~((ROWS == 0) & (COLS == 0))
ROWS, COLS = ROWS[OBSERVED], COLS[OBSERVED]


def energy(X: np.ndarray) -> float:
    r = X[ROWS, COLS] - M[ROWS, COLS]
    return 0.5 * float(r @ r)


def gradient(X: np.ndarray) -> np.ndarray:
    G = np.zeros((3, 3))
    G[ROWS, COLS] = X[ROWS, COLS] - M[ROWS, COLS]
    return G


def valley(t: float) -> np.ndarray:
    """``X_t = c c^T / t``, ``c = (t, 3, 3)``."""
    c = np.array([t, 3.0, 3.0])
    return np.outer(c, c) / t


def rank_one(X: np.ndarray):
    u, s, vt = np.linalg.svd(X)
    return _FixedRankPoint(u[:, :1], s[:1], vt[:1])


class AmbientFixedRankEmbedded(FixedRankEmbedded):
    """pymanopt's own class with a dense ambient Euclidean gradient (and the curvature term)."""

    def euclidean_to_riemannian_gradient(self, point, euclidean_gradient):
        return self.projection(point, euclidean_gradient)

    def euclidean_to_riemannian_hessian(self, point, egrad, ehess, tangent_vector):
        u, s, vt = point
        normal = egrad - u @ (u.T @ egrad)
        normal = normal - (normal @ vt.T) @ vt
        curvature = _FixedRankTangentVector(
            normal @ tangent_vector.Vp / s, np.zeros((1, 1)), normal.T @ tangent_vector.Up / s
        )
        return self.projection(point, ehess) + curvature


def _problem(kind: str):
    if kind == "pymanopt":
        manifold = AmbientFixedRankEmbedded(3, 3, 1)

        @pymanopt.function.numpy(manifold)
        def cost(u, s, vt):
            return energy(u @ np.diag(s) @ vt)

        @pymanopt.function.numpy(manifold)
        def egrad(u, s, vt):
            return gradient(u @ np.diag(s) @ vt)

        @pymanopt.function.numpy(manifold)
        def ehess(u, s, vt, U, S, V):
            H = np.zeros((3, 3))
            Z = U @ S @ V.T
            H[ROWS, COLS] = Z[ROWS, COLS]
            return H

        return pymanopt.Problem(manifold, cost, euclidean_gradient=egrad, euclidean_hessian=ehess)
    manifold = dlngeo.FixedRank(3, 3, 1) if kind == "embedded" else dlngeo.DLNFixedRank(3, 3, 1, 3)
    return dlngeo.problem(manifold, lambda Z: 0.5 * ((Z - M)[OBSERVED.reshape(3, 3)] ** 2).sum())


def test_the_cost_decreases_along_the_valley_to_a_positive_limit_and_the_minimum_is_zero():
    assert energy(M) == 0.0
    ts = -(10.0 ** np.arange(0, 9))  # t = -1 .. -1e8
    values = np.array([energy(valley(t)) for t in ts])
    # E(X_t) = 2 (1 - 9/t)^2: residuals 9/t - 1 (and exact zeros) with relative rounding
    # ~ 2 eps, so E to ~ 5 eps = 1e-15 relative; 1e-13 leaves a factor 100
    np.testing.assert_allclose(values, 2 * (1 - 9 / ts) ** 2, rtol=1e-13)
    assert np.all(np.diff(values) < 0) and np.all(values > 2.0)
    assert values[-1] - 2.0 <= 4 * 9 / 1e8 * 1.01  # 2 (1 + 9/|t|)^2 - 2 ~ 36 / |t|
    norms = [np.linalg.norm(valley(t)) for t in ts]
    assert norms[-1] >= 1e8  # ||X_t|| >= |X_11| = |t|: the valley runs off to infinity
    # The Riemannian (Frobenius) gradient tends to 0: at X_t, u, v -> e_1 up to O(1/|t|), E'
    # lives on the 2 x 2 block with entries 9/t - 1, and P_T E' = u u^T E' + E' v v^T - ...
    # has norm <= ||u^T E'|| + ||E' v|| <= 2 sqrt(2) * 2 * (3 / ||c||) * (1 + 9/|t|),
    # ||c|| >= |t|: below 12 sqrt(2) * 1.09 / |t| < 20 / |t| for |t| >= 100.
    manifold = dlngeo.FixedRank(3, 3, 1)
    for t in ts[2:]:
        point = rank_one(valley(t))
        grad = manifold.projection(point, gradient(valley(t)))
        assert manifold.norm(point, grad) <= 20 / abs(t), t


def test_the_valley_half_lies_above_its_limit_behind_a_wall():
    """E > 2 on every rank-1 X with X_11 < 0, and E >= 9 where X_11 = 0 (module docs' proof)."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((20000, 3)) * rng.choice([0.1, 1.0, 10.0], size=(20000, 1))
    b = rng.standard_normal((20000, 3)) * rng.choice([0.1, 1.0, 10.0], size=(20000, 1))
    # fit row 1 and column 1 on half of the samples: the valley's own shape
    fitted = rng.random(20000) < 0.5
    b[fitted, 1:] = 3.0 / a[fitted, :1]
    a[fitted, 1:] = 3.0 / b[fitted, :1]
    a[:, 0] = -np.abs(a[:, 0])
    b[:, 0] = np.abs(b[:, 0])  # X_11 = a_1 b_1 < 0
    values = np.array([energy(np.outer(p, q)) for p, q in zip(a, b)])
    assert values.min() > 2.0
    # the wall: a_1 = 0 (row 1 zero) or b_1 = 0 (column 1 zero)
    a[:, 0] = 0.0
    assert min(energy(np.outer(p, q)) for p, q in zip(a, b)) >= 9.0


@pytest.mark.parametrize("kind", ["embedded", "g3", "pymanopt"])
def test_trust_regions_follow_the_valley(kind):
    """From X_{-10} (E = 7.22 < 9, the wall), TR descends along the valley and runs off.

    A flow cannot cross the wall (module docs); TR's accepted steps decrease E too, and
    here none jumps across: it ends with X_11 far below 0 and E in (2, 7.22), on our
    manifolds (either metric) and on pymanopt's own class alike.
    """
    problem = _problem(kind)
    start = rank_one(valley(-10.0))
    result = TrustRegions(verbosity=0, max_iterations=100).run(problem, initial_point=start)
    X_end = to_dense(result.point)
    assert 2.0 < energy(X_end) < energy(valley(-10.0))
    assert X_end[0, 0] < -100.0


@pytest.mark.parametrize("kind", ["embedded", "g3", "pymanopt"])
def test_random_starts_fall_into_the_valley_on_every_class(kind):
    """TR's default random_point: some of 40 seeds end in the valley on every class, all others at M.

    Measured once (300 iterations, seeds 0-49): 5 of 50 (embedded), 5 of 50 (g_3), 12 of 50
    (pymanopt's class with the ambient-gradient fix, its own random_point) fail; each failure
    is the valley: X_11 < 0 and E just above 2. That no class converges from every random point is what makes it a
    property of the problem.
    """
    problem = _problem(kind)
    outcomes = []
    for seed in range(40):
        np.random.seed(seed)
        result = TrustRegions(verbosity=0, max_iterations=100).run(problem)
        X_end = to_dense(result.point)
        outcomes.append((energy(X_end), X_end[0, 0]))
    # converged: at TR's gradient stop (1e-6) the cost is ~1e-12 or below
    failed = [(e, x11) for e, x11 in outcomes if e > 1e-8]
    assert failed, "no random start fell into the valley"
    assert len(failed) < len(outcomes)
    for e, x11 in failed:
        assert x11 < 0 and 2.0 < e < 2.2, (e, x11)
