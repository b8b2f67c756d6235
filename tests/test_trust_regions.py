"""riemannian_tr: the unit-free inner stopping test, and the completion Hessian-vector product it uses.

RelativeTrustRegions stops the inner truncated CG at a residual relative to
the start's gradient; MatrixCompletion's Hessian-vector product gathers in
the CSR order of Omega. Both must leave the mathematics as it was: the
products equal the plain gather and the finite differences of the gradient
to rounding, pymanopt's Taylor check still gives slope 3, and the inner
solves meet their documented residuals.
"""

import numpy as np
import pytest
import scipy.sparse as sp
from pymanopt.optimizers import TrustRegions
from pymanopt_checks import hessian_properties
from richardson import assert_derivatives_along_retraction

import dlngeo
from dlngeo.dynamics import Stopping, Task
from dlngeo.dynamics.pymanopt_optimizers import RelativeTrustRegions
from dlngeo.lowrank import AmbientTriple, Factored, entries, to_dense

EPS = np.finfo(float).eps


def _completion(seed, m, n, k, count, normalization="mean", shuffle=True):
    """Rank-k completion from ``count`` entries, in random (not CSR) order when ``shuffle``."""
    rng = np.random.default_rng(seed)
    truth = rng.standard_normal((m, k)) @ rng.standard_normal((k, n)) / np.sqrt(k)
    observed = rng.choice(m * n, count, replace=False)
    if not shuffle:
        observed = np.sort(observed)
    rows, cols = np.divmod(observed, n)
    loss = dlngeo.create_loss(
        "matrix_completion",
        rows=rows,
        cols=cols,
        values=truth[rows, cols],
        shape=(m, n),
        normalization=normalization,
    )
    return loss, truth, rng


def _plain_hvp(loss, Z):
    """The product as it was: gather in the order of ``rows``/``cols``, then permute to CSR."""
    return loss._sparse(loss.scale * entries(Z, loss.rows, loss.cols))


def _directions(rng, m, n, k):
    L, R = rng.standard_normal((m, 2 * k)), rng.standard_normal((n, 2 * k))
    dense = rng.standard_normal((m, n))
    return {
        "factored": (Factored(L, R), np.abs(L) @ np.abs(R).T),
        "triple": (
            AmbientTriple(L, np.eye(2 * k), R),
            np.abs(L) @ np.abs(R).T,
        ),
        "point": (
            (L[:, :k], np.abs(R[0, :k]), R[:, :k].T),
            np.abs(L[:, :k]) @ (np.abs(R[0, :k])[:, None] * np.abs(R[:, :k].T)),
        ),
        "dense": (dense, np.abs(dense)),
        "sparse": (sp.csr_array(dense * (rng.random((m, n)) < 0.3)), np.abs(dense)),
    }


@pytest.mark.parametrize("shuffle", [True, False])
@pytest.mark.parametrize("kind", ["factored", "triple", "point", "dense", "sparse"])
def test_completion_hvp_equals_the_plain_gather(kind, shuffle):
    """The CSR-order product equals the former one entry by entry, on the same sparsity pattern."""
    m, n, k = 40, 30, 3
    loss, truth, rng = _completion(0, m, n, k, 500, shuffle=shuffle)
    X = (np.linalg.qr(rng.standard_normal((m, k)))[0], np.ones(k), np.eye(k, n))
    Z, magnitude = _directions(rng, m, n, k)[kind]
    new, old = loss.hessian_vector_product(X, Z), _plain_hvp(loss, Z)
    assert isinstance(new, sp.csr_array) and new.shape == (m, n)
    assert np.array_equal(new.indptr, old.indptr) and np.array_equal(new.indices, old.indices)
    # Each entry is the same sum of q <= 2k = 6 products, possibly added in another order:
    # |difference| <= 2 q eps sum_a |L_ia R_ja| (times the scale 2/|Omega|).
    bound = 2 * 6 * EPS * loss.scale * magnitude[loss.rows, loss.cols]
    diff = np.abs(new.toarray() - old.toarray())[loss.rows, loss.cols]
    assert np.all(diff <= bound)


def test_completion_hvp_is_the_difference_of_gradients():
    """E' is affine for completion: E'(X + Z) - E'(X) = c P_Omega(Z), the product, to rounding."""
    m, n, k = 40, 30, 3
    loss, truth, rng = _completion(1, m, n, k, 600)
    X = rng.standard_normal((m, n))
    Z = rng.standard_normal((m, n))
    difference = (loss.gradient(X + Z) - loss.gradient(X)).toarray()
    product = loss.hessian_vector_product(X, Z).toarray()
    # Each gradient entry is c (X_ij - M_ij), rounded relatively by eps; the difference of two
    # carries ~ 2 eps c (|X| + |Z| + |M|) per entry, and X + Z one more eps c |X + Z|.
    bound = 4 * EPS * loss.scale * (np.abs(X) + np.abs(Z) + np.abs(truth))
    assert np.all(np.abs(difference - product) <= bound)


@pytest.mark.parametrize("depth", [None, 2, 3])
def test_completion_riemannian_hessian_passes_pymanopt_checks(depth):
    """Slope 3 of pymanopt's second-order Taylor check with the completion loss, both metrics.

    Observations in random order, so the CSR-order product is exercised; the point is far from
    the solution, so the Weingarten (curvature) term with E' is large.
    """
    m, n, k = 20, 15, 3
    loss, _, rng = _completion(2, m, n, k, 150)
    man = dlngeo.FixedRank(m, n, k) if depth is None else dlngeo.DLNFixedRank(m, n, k, depth)
    prob = dlngeo.problem(man, loss)
    np.random.seed(3)
    x = man.random_point()
    d = man.random_tangent_vector(x)
    # What pymanopt's Taylor check shows as slopes 2 and 3: <grad f, d> and <Hess f[d], d> are
    # the derivatives of f along the retraction (Richardson-bounded central differences).
    # Rounding of one cost value: a mean of 150 squared residuals (<= 150 eps |f|) at a point
    # the retraction's QR and small SVD moved by ~10 eps ||X||, changing f by ||E'|| times that:
    # 256 eps (|f| + ||E'|| ||X||), with ||E'|| = ||grad of the loss|| in the ambient space.
    X = to_dense(x)
    ambient = loss.gradient(X)
    ambient = ambient.toarray() if sp.issparse(ambient) else np.asarray(ambient)
    rounding = 256 * EPS * (abs(prob.cost(x)) + np.linalg.norm(ambient) * np.linalg.norm(X))
    assert_derivatives_along_retraction(prob, x, d, rounding)
    props = hessian_properties(prob, x, rng)
    # relative rounding of sums over <= 150 observed entries and widths <= 20: ~ 150 eps ~ 3e-14
    assert props["tangent"] <= 1e-13, props
    assert props["linearity"] <= 1e-13, props
    assert props["symmetry"] <= 1e-13, props


# ------------------------------------------------------------------ the inner stopping test
def test_forcing_term_is_relative_to_the_start():
    tr = RelativeTrustRegions(kappa=0.2, theta=0.5)
    assert tr.forcing(1e-3) == 0.2  # no reference yet
    tr.reference_gradient_norm = 4e-4
    assert tr.forcing(8e-4) == 0.2  # gradient above the start's: linear
    assert tr.forcing(4e-6) == pytest.approx(0.1, rel=1e-15)  # (1e-2)^0.5
    tr.reference_gradient_norm = 0.0
    assert tr.forcing(0.0) == 0.2


@pytest.mark.parametrize("kappa, theta, field", [(1.0, 1.0, "kappa"), (0.1, 0.0, "theta")])
def test_bad_forcing_options(kappa, theta, field):
    with pytest.raises(ValueError, match=field):
        RelativeTrustRegions(kappa=kappa, theta=theta)
    with pytest.raises(ValueError, match=field):
        dlngeo.create_solver("riemannian_tr", kappa=kappa, theta=theta)


class _Recording(RelativeTrustRegions):
    """Keeps every inner solve's gradient, forcing term, model step's H eta and stop reason."""

    def run(self, problem, **kwargs):
        self.solves = []
        return super().run(problem, **kwargs)

    def _truncated_conjugate_gradient(self, problem, x, fgradx, *args):
        result = super()._truncated_conjugate_gradient(problem, x, fgradx, *args)
        self.solves.append((problem.manifold, x, fgradx, self.inner_solves[-1][0], result))
        return result


@pytest.mark.parametrize("depth", [None, 3])
def test_inner_solves_meet_the_relative_residual(depth):
    """Every inner solve stopped on its residual has ||g + H eta|| <= forcing ||g||, forcing as documented."""
    m, n, k = 60, 50, 4
    loss, truth, rng = _completion(4, m, n, k, 1200)
    man = dlngeo.FixedRank(m, n, k) if depth is None else dlngeo.DLNFixedRank(m, n, k, depth)
    prob = dlngeo.problem(man, loss)
    np.random.seed(4)
    tr = _Recording(verbosity=0, max_iterations=40, min_gradient_norm=1e-14)
    result = tr.run(prob)
    assert np.linalg.norm(to_dense(result.point) - truth) <= 1e-8 * np.linalg.norm(truth)
    g0 = man.norm(tr.solves[0][1], tr.solves[0][2])
    stopped_on_residual = 0
    for manifold, x, g, forcing, (_, Heta, _, stop) in tr.solves:
        g_norm = manifold.norm(x, g)
        assert forcing == (min(0.1, g_norm / g0) if g_norm < g0 else 0.1)  # theta = 1
        if stop in (tr.REACHED_TARGET_LINEAR, tr.REACHED_TARGET_SUPERLINEAR):
            stopped_on_residual += 1
            # tCG's residual is g + H eta updated by the same additions as H eta: they differ by
            # rounding, <= (inner steps) eps (||g|| + sum |alpha H delta|) ~ 1e-12 ||g|| here.
            residual = manifold.norm(x, g + Heta)
            assert residual <= forcing * g_norm + 1e-12 * g_norm
    assert stopped_on_residual >= 3


def _tr_run(loss, start, rank, **options):
    m, n = loss.shape
    net = dlngeo.DeepLinearNetwork((n, rank, m))
    task = Task(loss=loss, network=net, start=start, rank=rank)
    stopping = Stopping(max_iterations=12, gradient_norm_rtol=0, gradient_norm_atol=0)
    return dlngeo.create_solver("riemannian_tr", record_every=1, **options).run(task, stopping)


@pytest.mark.parametrize("metric", ["embedded", "dln"])
def test_trust_regions_steps_do_not_depend_on_the_units_of_the_loss(metric):
    """The mean and the sum normalizations differ by the factor 2/|Omega| = 2^-8: same iterates.

    The scaling is exact in floating point (a power of 2), and the radius follows the Cauchy
    scale, which does not change; so every step coincides, up to pymanopt's rho regularization
    1e3 eps max(1, |f|), which only enters accept/radius decisions (ratios compared with 1/4,
    3/4, 1/10): the iterates agree to rounding of the shared arithmetic, 1e-12 relative.
    On the former main the inner solve stopped at min(kappa, ||g||) ||g|| in the loss's units:
    with the embedded metric the mean normalization took more inner iterations and other
    iterates (on g_N this small problem's solves all stopped at kappa or the region's edge).
    """
    m, n, k, count = 40, 30, 3, 512
    runs = {}
    for normalization in ("mean", "sum"):
        loss, truth, rng = _completion(5, m, n, k, count, normalization)
        start = (np.linalg.qr(rng.standard_normal((m, k)))[0], np.ones(k), np.eye(k, n))
        runs[normalization] = _tr_run(loss, start, k, metric=metric)
    mean, total = runs["mean"], runs["sum"]
    assert mean.evaluations["hessian"] == total.evaluations["hessian"]
    assert sum(mean.info["inner_iterations"]) == mean.evaluations["hessian"]
    assert len(mean.info["inner_iterations"]) == mean.n_iterations
    X, Y = to_dense(mean.final_point), to_dense(total.final_point)
    assert np.linalg.norm(X - Y) <= 1e-12 * np.linalg.norm(Y)
    losses = np.asarray(mean.metrics["loss"]), np.asarray(total.metrics["loss"]) * 2.0 / count
    assert len(losses[0]) >= 6 and np.allclose(*losses, rtol=1e-12, atol=0)


def test_fewer_inner_iterations_than_pymanopt_on_a_mean_squared_error():
    """A mean squared error over many entries has a small gradient; pymanopt's absolute test over-solves.

    Same start, same radius, same solution to 1e-10: dlngeo's relative test needs fewer
    Hessian-vector products than pymanopt's TrustRegions.
    """
    m, n, k = 150, 120, 4
    loss, truth, rng = _completion(6, m, n, k, 6000)
    start = (np.linalg.qr(rng.standard_normal((m, k)))[0], np.ones(k), np.eye(k, n))
    ours = dlngeo.problem(dlngeo.FixedRank(m, n, k), loss)
    theirs = dlngeo.problem(dlngeo.FixedRank(m, n, k), loss)
    points = {}
    for label, optimizer, prob in (
        ("ours", RelativeTrustRegions, ours),
        ("pymanopt", TrustRegions, theirs),
    ):
        result = optimizer(verbosity=0, max_iterations=100, min_gradient_norm=1e-14).run(
            prob, initial_point=prob.manifold.point(*start)
        )
        points[label] = to_dense(result.point)
        assert np.linalg.norm(points[label] - truth) <= 1e-10 * np.linalg.norm(truth), label
    assert ours.evaluations["hessian"] < theirs.evaluations["hessian"]


@pytest.mark.parametrize("metric", ["embedded", "dln"])
def test_trust_regions_run_never_forms_m_by_n(metric):
    """A whole riemannian_tr run at m = n = 3000, rank 4, 30000 entries stays within
    2x the observations + O((m + n) k): no m x m or m x n array (72 MB here) anywhere.

    Bound: the run holds a few arrays over Omega (residual, gradient data, one product's
    entries, the CSR row index: <= 6 x 240 kB) and pymanopt's tCG about a dozen tangent
    vectors of (m + n) k doubles (192 kB each); 60 of those blocks (11.5 MB) is far
    above what the run needs and far below one m x n array.
    """
    import tracemalloc

    m = n = 3000
    k, count = 4, 30000
    loss, _, rng = _completion(7, m, n, k, count)
    start = (np.linalg.qr(rng.standard_normal((m, k)))[0], np.ones(k), np.eye(k, n))
    net = dlngeo.DeepLinearNetwork((n, k, m))
    task = Task(loss=loss, network=net, start=start, rank=k)
    solver = dlngeo.create_solver("riemannian_tr", record_every=10**6, metric=metric)
    tracemalloc.start()
    record = solver.run(task, Stopping(max_iterations=4))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert record.evaluations["hessian"] >= 4
    observations = 3 * 8 * count
    assert peak <= 2 * observations + 60 * (m + n) * k * 8, peak


def test_residual_is_computed_once_per_point_not_per_product(monkeypatch):
    """TR asks for E' at x once per Hessian-vector product; the residual behind it is computed once per point.

    Counted on the loss module's gathers over Omega in the order of ``rows`` (the residual's;
    the products gather in CSR order): one pass per new point (cost and gradient at the same
    point share it), +1 for the data scales at X = 0, while the products are many more.
    """
    import sys

    m, n, k = 60, 50, 4
    loss, _, rng = _completion(8, m, n, k, 1200)
    module = sys.modules[type(loss).__module__]
    passes = {"residual": 0, "product": 0}
    gather = module.entries

    def counted(Z, rows, cols):
        passes["residual" if rows is loss.rows else "product"] += 1
        return gather(Z, rows, cols)

    monkeypatch.setattr(module, "entries", counted)
    start = (np.linalg.qr(rng.standard_normal((m, k)))[0], np.ones(k), np.eye(k, n))
    record = _tr_run(loss, start, k, metric="embedded")
    ev = record.evaluations
    # One product per Hessian evaluation, +1 for the data scales' product at X = 0 (asked for
    # the manifold's scale and the stationary stop's gradient scale, computed once).
    assert passes["product"] == ev["hessian"] + 1 >= 3 * record.n_iterations
    # New points: X = 0 (Cauchy scale), the start, and one proposal per iteration.
    assert passes["residual"] <= record.n_iterations + 2
