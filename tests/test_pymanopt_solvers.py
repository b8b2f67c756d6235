"""pymanopt's own solvers on FixedRank and DLNFixedRank, and where pymanopt's FixedRankEmbedded fails.

The completion loss here is a small stand-alone one (the real one is a
plugin): value and gradient from the observed entries only (a sparse
``E'(X)``), Hessian-vector products on factored directions through
:func:`dlngeo.lowrank.entries`, never an ``m x n`` matrix.
"""

import autograd.numpy as anp
import numpy as np
import pymanopt
import pytest
import scipy.sparse as sp
from pymanopt.manifolds import FixedRankEmbedded
from pymanopt.optimizers import ConjugateGradient, SteepestDescent, TrustRegions

import dlngeo
from dlngeo.losses import Loss
from dlngeo.lowrank import entries


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
    ``typical_dist = sqrt(k)``, which our manifolds set on the scale of a unit
    step in the factors (pymanopt's FixedRankEmbedded uses the dimension).
    """
    loss, truth, start = _completion_problem()
    m, n, k = 60, 50, 4
    man = dlngeo.FixedRank(m, n, k) if depth is None else dlngeo.DLNFixedRank(m, n, k, depth)
    problem = dlngeo.problem(man, loss)
    assert loss.value(start) > 1.0  # the start is not already the answer
    result = TrustRegions(verbosity=0, max_iterations=50, min_gradient_norm=1e-10).run(
        problem, initial_point=man.point(*start)
    )
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
    assert result.cost <= 1e-12 * np.sum(Y**2), (result.cost, result.stopping_criterion)
