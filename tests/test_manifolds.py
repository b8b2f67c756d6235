"""FixedRank and DLNFixedRank pass pymanopt's own checks, with the slopes asserted.

The gradient check must show slope 2 and the Hessian check slope 3 along the
retraction; the Hessian must be tangent, linear and symmetric in the
manifold's own metric; g_N(grad f, xi) = Df(X)[xi]; the retraction is a
second-order retraction of the embedded geometry (checked with pymanopt's
``check_retraction`` against a numerically integrated exponential map).
"""

import contextlib
import io
import re

import autograd.numpy as anp
import numpy as np
import pytest
import scipy.sparse as sp
from pymanopt.manifolds import FixedRankEmbedded
from pymanopt_checks import (
    hessian_properties,
    numpy2_diagnostics,
    run_pymanopt_checks,
)
from richardson import assert_derivatives_along_retraction, central_difference_bound
from scipy.integrate import solve_ivp

import dlngeo
from dlngeo.geometry import metric_operator
from dlngeo.lowrank import AmbientTriple, Factored, to_dense

M, N = 7, 5
EPS = np.finfo(float).eps


def _cost(Y):
    # Non-polynomial along the retraction (rank k < min(m, n)) and of degree 4 along
    # the straight line of the full-rank case, so the quadratic model is never exact.
    def cost(X):
        return 0.5 * anp.sum((X - Y) ** 2) + 0.25 * anp.sum(X**4)

    return cost


def _cost_rounding(prob, x, Y):
    """Rounding of one value of _cost(Y) at a retracted point near x.

    The sums of 35 terms of size up to |f| (<= 35 eps |f|), at a point that the retraction's
    QR and small SVD moved by ~10 eps ||X|| (changing f by ||E'|| times that),
    E' = X - Y + X^3: 64 eps (|f| + ||E'|| ||X||).
    """
    X = to_dense(x)
    G = X - Y + X**3
    return 64 * EPS * (abs(prob.cost(x)) + np.linalg.norm(G) * np.linalg.norm(X))


def _manifold(k, depth):
    return dlngeo.FixedRank(M, N, k) if depth is None else dlngeo.DLNFixedRank(M, N, k, depth)


GEOMETRIES = [(k, depth) for k in (2, 5) for depth in (None, 1, 2, 3, 5)]


@pytest.mark.parametrize("k, depth", GEOMETRIES)
def test_gradient_and_hessian_checks(k, depth):
    """<grad f, d> and <Hess f[d], d> are the derivatives of f along the retraction, both metrics.

    What pymanopt's check_directional_derivative shows as slopes 2 and 3, checked with a
    tolerance of its own: central differences of t -> f(R_x(t d)) with a Richardson
    estimate of their truncation and a bound on their rounding (tests/richardson.py).
    """
    np.random.seed(100 + k + (depth or 0))
    rng = np.random.default_rng(k)
    man = _manifold(k, depth)
    Y = rng.standard_normal((M, N))
    prob = dlngeo.problem(man, _cost(Y))
    x = man.random_point()
    d = man.random_tangent_vector(x)
    assert abs(man.norm(x, d) - 1.0) <= 1e-14  # d / ||d||: a norm's rounding, ~ log2(n) eps
    assert_derivatives_along_retraction(prob, x, d, _cost_rounding(prob, x, Y))
    props = hessian_properties(prob, x, rng)
    # relative rounding: a few products of width n = 7, ~ n eps each: 1e-14 ~ 45 eps
    assert props["tangent"] <= 1e-14, props
    assert props["linearity"] <= 1e-14, props
    assert props["symmetry"] <= 1e-14, props


def test_pymanopt_check_gradient_and_hessian_run_and_report_small_residuals():
    """pymanopt's own check_gradient / check_hessian, which crash under numpy 2 without the helper."""
    np.random.seed(0)
    man = dlngeo.DLNFixedRank(M, N, 2, 3)
    prob = dlngeo.problem(man, _cost(np.random.default_rng(0).standard_normal((M, N))))
    x = man.random_point()
    d = man.random_tangent_vector(x)
    if int(np.__version__.split(".")[0]) >= 2:
        from pymanopt.tools.diagnostics import check_gradient

        with pytest.raises((TypeError, ValueError)), contextlib.redirect_stdout(io.StringIO()):
            import matplotlib

            matplotlib.use("Agg")
            check_gradient(prob, x, d)  # unpatched identify_linear_piece
    text = run_pymanopt_checks(prob, x, d)
    numbers = [
        float(v)
        for v in re.findall(r"(?:Residual|close to 0|very close to 0): (\S+?)\.?$", text, re.M)
    ]
    assert len(numbers) == 3, text  # gradient residual, Hessian residual, linearity residual
    # absolute rounding of O(1 .. 10) quantities of width n = 7: ~ 10 n eps ~ 2e-14
    assert max(abs(v) for v in numbers) <= 1e-13, text
    symmetry = float(re.search(r"= (\S+)\.\n", text).group(1))
    assert abs(symmetry) <= 1e-13, text


@pytest.mark.parametrize("k, depth", [(2, 1), (2, 3), (5, 4)])
def test_riemannian_gradient_represents_the_differential(k, depth):
    """g_N(grad f, xi) = Df(X)[xi] = <E'(X), xi>, also for a sparse ambient gradient."""
    np.random.seed(k * depth)
    rng = np.random.default_rng(k * depth)
    man = dlngeo.DLNFixedRank(M, N, k, depth)
    x = man.random_point()
    Y = rng.standard_normal((M, N))
    cost = _cost(Y)
    prob = dlngeo.problem(man, cost)
    grad = prob.riemannian_gradient(x)
    G = prob.euclidean_gradient(x)
    mask = rng.random((M, N)) < 0.4
    for _ in range(5):
        xi = man.random_tangent_vector(x)
        xi_dense = man.embedding(x, xi).to_dense()
        exact = float(np.sum(G * xi_dense))
        # rounding: A and A^{-1} (n eps kappa(A), kappa <= N (s_1 / s_k)^2) and two inner products
        assert abs(man.inner_product(x, grad, xi) - exact) <= 1e-13 * np.linalg.norm(
            G
        ) * np.linalg.norm(xi_dense)
        # ... and the same number from finite differences of f along the retraction, h = 1e-4:
        # truncation by Richardson (tests/richardson.py); rounding of each cost: a 35-term sum of
        # terms up to |f|-size (<= 35 eps |f|) at a point the retraction's SVD moved by
        # <= 10 eps ||X|| (changing f by ||E'|| times that): 64 eps (|f| + ||E'|| ||X||),
        # two costs over 2h
        f0 = abs(prob.cost(x))
        X_norm = float(np.linalg.norm(x[1]))

        def difference(h, xi=xi):
            return (
                prob.cost(man.retraction(x, h * xi)) - prob.cost(man.retraction(x, -h * xi))
            ) / (2 * h)

        rounding = 64 * EPS * (f0 + np.linalg.norm(G) * X_norm) / 1e-4
        fd, bound = central_difference_bound(difference, 1e-4, rounding)
        assert abs(fd - exact) <= bound, (abs(fd - exact), bound)
        assert bound <= 1e-6 * max(1.0, abs(exact))  # guard: resolves Df to 1e-6
        # A sparse gradient gives the same Riemannian gradient as its dense form.
        S = sp.csr_matrix(G * mask)
        a = man.euclidean_to_riemannian_gradient(x, S)
        b = man.euclidean_to_riemannian_gradient(x, S.toarray())
        # the same products by another kernel: ~ n eps ||G||, ||G|| ~ 1
        assert all(np.allclose(p, q, rtol=0, atol=1e-14) for p, q in zip(a, b))


@pytest.mark.parametrize("k", [2, 5])
def test_depth_one_is_the_embedded_geometry(k):
    np.random.seed(k)
    rng = np.random.default_rng(k)
    flat, dln = dlngeo.FixedRank(M, N, k), dlngeo.DLNFixedRank(M, N, k, 1)
    cost = _cost(rng.standard_normal((M, N)))
    pf, pd = dlngeo.problem(flat, cost), dlngeo.problem(dln, cost)
    x = flat.random_point()
    a, b = flat.random_tangent_vector(x), flat.random_tangent_vector(x)
    # N = 1, A = I: the same inner product up to a rounding of |<a, b>| <= 1 (unit vectors)
    assert abs(flat.inner_product(x, a, b) - dln.inner_product(x, a, b)) <= 1e-15
    for u, v in zip(pf.riemannian_gradient(x), pd.riemannian_gradient(x)):
        assert np.array_equal(u, v)
    for u, v in zip(pf.riemannian_hessian(x, a), pd.riemannian_hessian(x, a)):
        assert np.allclose(u, v, rtol=0, atol=1e-14)


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_hessian_at_a_critical_point_along_a_network_curve(depth):
    """At a critical point the model Hessian is the Hessian of g_N, whatever curve is used.

    X* = the best rank-k approximation of Y is critical for f = ½||X - Y||² on M_k,
    with a normal (non-zero) E'(X*), so the curvature term is tested. The curve
    t -> phi(W + tV) of a bottlenecked network stays in M_k but is not the
    retraction: d²/dt² f there must equal g_N(H xi, xi), xi = d phi(V).
    """
    rng = np.random.default_rng(depth)
    k = 2
    u = np.linalg.qr(rng.standard_normal((M, N)))[0]
    vt = np.linalg.qr(rng.standard_normal((N, N)))[0].T
    s = np.array([3.0, 2.5, 2.0, 1.9, 1.8])  # a large tail: E'(X*) = -(Y - X*) is far from 0
    Y = (u * s) @ vt
    man = dlngeo.DLNFixedRank(M, N, k, depth)
    x = man.point(u[:, :k], s[:k], vt[:k])
    prob = dlngeo.problem(man, lambda X: 0.5 * anp.sum((X - Y) ** 2))
    # rounding: P_T(X* - Y) ~ n eps ||Y|| (n = 7), measured in g_N: times sqrt(a_max),
    # a_max = N s_1^(2(N-1)/N) with s_1 = 3
    sqrt_a_max = np.sqrt(depth * 3.0 ** (2 * (depth - 1) / depth))
    assert man.norm(x, prob.riemannian_gradient(x)) <= 7 * EPS * sqrt_a_max * np.linalg.norm(Y)
    net = dlngeo.DeepLinearNetwork((N, 4, k, 3, M))
    W = net.balanced(x, rng=rng)
    V = [rng.standard_normal(w.shape) for w in W]

    def difference(h):
        curve = [net.product([w + t * v for w, v in zip(W, V)]) for t in (-h, 0.0, h)]
        return (
            prob.cost(man.from_matrix(curve[0]))
            - 2 * prob.cost(x)
            + prob.cost(man.from_matrix(curve[2]))
        ) / h**2

    xi = man.projection(
        x,
        sum(  # exact d phi(V): sum over layers, no finite difference
            net.product([v if j == i else w for j, (w, v) in enumerate(zip(W, V))])
            for i in range(net.depth)
        ),
    )
    quad = man.inner_product(x, prob.riemannian_hessian(x, xi), xi)
    # second difference, h = 1e-4: truncation by Richardson (tests/richardson.py); rounding of
    # each cost 64 eps (|f| + ||E'|| ||X||) (as in test_riemannian_gradient_represents_the_
    # differential: the sum and the truncated SVD of from_matrix), four costs' worth over h^2
    G0 = prob.euclidean_gradient(x)
    scale = abs(prob.cost(x)) + np.linalg.norm(G0) * np.linalg.norm(x[1])
    second, bound = central_difference_bound(difference, 1e-4, 4 * 64 * EPS * scale / 1e-8)
    assert abs(second - quad) <= bound, (abs(second - quad), bound)
    assert bound <= 1e-5 * abs(quad)  # guard: resolves the second derivative to 1e-5
    # The curvature term matters here: without it the answer would be ||xi||_F^2.
    assert abs(quad - np.linalg.norm(man.embedding(x, xi).to_dense()) ** 2) >= 1e-3 * abs(
        quad
    )  # 100x the guard above


# ------------------------------------------------------------------ retraction
class _NumericalExponential:
    """A numerically integrated exponential map and a local distance, so that pymanopt's check_retraction can run.

    No fixed-rank manifold has a closed-form exponential map, and pymanopt's
    ``check_retraction`` needs one (``exp``) and a distance (``dist``).
    ``exp(x, v)`` integrates the geodesic with initial velocity ``v`` (DOP853,
    rtol 1e-13, the displacement ``X - X_0`` as state so that short geodesics
    keep their relative accuracy). By homogeneity, ``exp(x, t v) = gamma_v(t)``:
    a call along the direction of the previous one reads the same dense-output
    solution at ``t`` instead of integrating again (check_retraction calls
    ``exp(x, v)`` first, then ``exp(x, t v)`` for 251 values of ``t``). ``dist``
    is the metric norm of the ambient difference at the first point, which
    equals the geodesic distance to relative ``O(dist)``: it does not change
    the slope being measured.
    """

    _cache = None

    def geodesic(self, X0, V0):  # pragma: no cover - abstract
        raise NotImplementedError

    def exp(self, point, tangent_vector):
        X0 = to_dense(point)
        V = self.embedding(point, tangent_vector).to_dense()
        cache = self._cache
        if cache is not None and np.array_equal(cache[0], X0):
            V0 = cache[1]
            t = np.sum(V * V0) / np.sum(V0 * V0)
            if 0.0 <= t <= 1.0 and np.linalg.norm(V - t * V0) <= 1e-14 * np.linalg.norm(V):
                return self.from_matrix(X0 + cache[2](t).reshape(X0.shape))
        solution = self.geodesic(X0, V)
        self._cache = (X0, V, lambda t: solution.sol(t)[: X0.size])
        return self.from_matrix(X0 + solution.y[: X0.size, -1].reshape(X0.shape))

    def _solve(self, rhs, size, second_half):
        y0 = np.concatenate([np.zeros(size), second_half.ravel()])
        solution = solve_ivp(
            rhs, (0.0, 1.0), y0, method="DOP853", rtol=1e-13, atol=1e-20, dense_output=True
        )
        assert solution.success
        return solution


class _FixedRankWithGeodesics(_NumericalExponential, dlngeo.FixedRank):
    """Embedded metric: the geodesic's acceleration is the second fundamental form (Absil & Malick 2012),

    :math:`\\ddot X = \\mathrm{II}(\\dot X, \\dot X) = 2 P_{U^\\perp}\\dot X V S^{-1} U^\\top \\dot X P_{V^\\perp}`.
    """

    def geodesic(self, X0, V0):
        m, n, k = self._m, self._n, self._k

        def rhs(t, y):
            D, V = y[: m * n].reshape(m, n), y[m * n :].reshape(m, n)
            u, s, vt = np.linalg.svd(X0 + D, full_matrices=False)
            u, s, vt = u[:, :k], s[:k], vt[:k]
            Up = V @ vt.T - u @ (u.T @ V @ vt.T)
            Vp = V.T @ u - vt.T @ (vt @ V.T @ u)
            return np.concatenate([V.ravel(), (2 * (Up / s) @ Vp.T).ravel()])

        return self._solve(rhs, m * n, V0)

    def dist(self, point_a, point_b):
        return float(np.linalg.norm(to_dense(point_a) - to_dense(point_b)))


def _divided_differences(lam, a):
    """First divided differences of ``lambda -> lambda**a`` (Daleckii-Krein), positive ``lam``."""
    li, lj = lam[:, None], lam[None, :]
    # sqrt(eps): the quotient's cancellation eps / gap against the derivative's error ~ gap
    close = np.abs(li - lj) <= 1e-8 * np.maximum(li, lj)
    with np.errstate(divide="ignore", invalid="ignore"):
        quotient = (li**a - lj**a) / (li - lj)
    return np.where(close, a * np.maximum(li, lj) ** (a - 1.0), quotient)


def hamiltonian_gradient(X, P, depth):
    """``d/dX`` of ``H = ½ <P, A_X(P)>`` for invertible square ``X``, from the defining sum.

    ``H = ½ Σ_k tr(P^T L^{a_k} P R^{b_k})``, ``L = XX^T``, ``R = X^TX``; the derivative of
    ``L^a`` is Daleckii-Krein's, and ``dL = dX X^T + X dX^T``, ``dR = dX^T X + X^T dX``.
    """
    L, R = X @ X.T, X.T @ X
    lam_l, U = np.linalg.eigh(L)
    lam_r, V = np.linalg.eigh(R)
    GL, GR = np.zeros_like(L), np.zeros_like(R)
    for k in range(1, depth + 1):
        a, b = (depth - k) / depth, (k - 1) / depth
        S = P @ ((V * lam_r**b) @ V.T) @ P.T
        T = P.T @ ((U * lam_l**a) @ U.T) @ P
        GL += U @ (_divided_differences(lam_l, a) * (U.T @ S @ U)) @ U.T
        GR += V @ (_divided_differences(lam_r, b) * (V.T @ T @ V)) @ V.T
    return GL @ X + X @ GR


class _DLNFullRankWithGeodesics(_NumericalExponential, dlngeo.DLNFixedRank):
    """g_N on the open set of invertible square matrices: geodesics from Hamilton's equations

    of ``H(X, P) = ½ <P, A_X(P)>`` (the cometric is ``A``): ``dX/dt = A_X(P)``,
    ``dP/dt = -dH/dX``, ``P(0) = A^{-1}(V_0)``.
    """

    def geodesic(self, X0, V0):
        size, shape, depth = X0.size, X0.shape, self.depth

        def rhs(t, y):
            X, P = X0 + y[:size].reshape(shape), y[size:].reshape(shape)
            return np.concatenate(
                [metric_operator(X, P, depth).ravel(), -hamiltonian_gradient(X, P, depth).ravel()]
            )

        return self._solve(rhs, size, metric_operator(X0, V0, depth, power=-1))

    def dist(self, point_a, point_b):
        A = to_dense(point_a)
        D = to_dense(point_b) - A
        return float(np.sqrt(np.sum(D * metric_operator(A, D, self.depth, power=-1))))


def _check_retraction_slope(manifold):
    from pymanopt.tools.diagnostics import check_retraction

    with numpy2_diagnostics(), contextlib.redirect_stdout(io.StringIO()) as out:
        check_retraction(manifold)
    return float(re.search(r"the slope is: (\S+)\.\n", out.getvalue()).group(1)), out.getvalue()


def test_pymanopt_check_retraction_embedded_metric():
    """pymanopt's check_retraction on FixedRank: slope 3, the metric projection is a second-order retraction."""
    np.random.seed(1)
    slope, text = _check_retraction_slope(_FixedRankWithGeodesics(5, 4, 2))
    # pymanopt's fitted slope estimates an integer, the retraction's order + 1; a fit's
    # deviation from it (the next order over pymanopt's window) has no tolerance of its own, so
    # the test is the nearest integer: |slope - 3| < 1/2 tells a second-order retraction from
    # a first-order one (slope 2). test_retraction_properties checks the t^2 term itself.
    assert abs(slope - 3.0) < 0.5, text


def test_hamiltonian_gradient_matches_finite_differences():
    rng = np.random.default_rng(0)
    X, P, D = (rng.standard_normal((3, 3)) for _ in range(3))
    for depth in (2, 3):
        H = lambda Y: 0.5 * np.sum(P * metric_operator(Y, P, depth))  # noqa: E731

        def difference(h, H=H):
            return (H(X + h * D) - H(X - h * D)) / (2 * h)

        # h = 1e-5: truncation by Richardson (tests/richardson.py); rounding of H: A_{N,X} from
        # an SVD of a 3 x 3 matrix (~ 10 eps kappa relative, kappa = s_1 / s_3) and a 9-term
        # sum, two values over 2h
        s = np.linalg.svd(X, compute_uv=False)
        rounding = 2 * (10 * s[0] / s[-1] + 9) * EPS * abs(H(X)) / (2 * 1e-5)
        fd, bound = central_difference_bound(difference, 1e-5, rounding)
        exact = np.sum(D * hamiltonian_gradient(X, P, depth))
        assert abs(fd - exact) <= bound, (abs(fd - exact), bound)
        assert bound <= 1e-6 * abs(fd)  # guard: resolves the derivative to 1e-6


@pytest.mark.parametrize("depth", [2, 3])
def test_pymanopt_check_retraction_dln_metric_full_rank(depth):
    """pymanopt's check_retraction on DLNFixedRank (square, full rank): slope 2.

    There M_k is open, the retraction is X + xi, and the g_N geodesic bends
    (its Christoffel symbols do not vanish): a first-order retraction for g_N,
    which is what pymanopt requires ("at least 2"); we claim no more. For
    k < min(m, n) the g_N geodesics are not integrated here.
    """
    np.random.seed(depth)
    slope, text = _check_retraction_slope(_DLNFullRankWithGeodesics(3, 3, 3, depth))
    # the nearest integer (see test_pymanopt_check_retraction_embedded_metric): first order,
    # not second (3), and a retraction (not 1)
    assert abs(slope - 2.0) < 0.5, text


@pytest.mark.parametrize("k, depth", [(2, None), (3, None), (2, 3), (5, 2)])
def test_retraction_properties(k, depth):
    """Direct properties of R: R(x, 0) = x; first and second order; rank k with orthonormal factors.

    First order (any metric): R(x, t xi) - X - t xi = O(t^2), so dR/dt at 0
    is xi. Second order for the embedded metric: the t^2 term is exactly
    (t^2 / 2) II(xi, xi) = t^2 Up S^{-1} Vp^T, the geodesic's normal
    acceleration, so R(x, t xi) - X - t xi - t^2 Up S^{-1} Vp^T = O(t^3) and
    its tangent part P_T(R(x, t xi) - X - t xi) is O(t^3). Checked by the
    coefficient of t^2 itself, with a Richardson bound on the O(t) error. pymanopt's
    ``check_retraction`` cannot run on the manifold as shipped because it
    needs an exponential map, which no fixed-rank manifold has in closed form
    (FixedRank deliberately defines none); the test above runs it against a
    numerically integrated geodesic. DLNFixedRank uses the same map: a
    retraction is a first-order notion independent of the metric, and we
    claim no second-order property in g_N (its exponential map is not known).
    """
    np.random.seed(10 * k + (depth or 0))
    man = _manifold(k, depth)
    x = man.random_point()
    X = to_dense(x)
    xi = man.random_tangent_vector(x)
    xi_dense = man.embedding(x, xi).to_dense()
    normal_acc = (xi.Up / x[1]) @ xi.Vp.T
    # rounding of an SVD round trip, ~ n eps ||X|| (n = 7, ||X|| ~ 1), as for the factors below
    assert np.linalg.norm(to_dense(man.retraction(x, man.zero_vector(x))) - X) <= 1e-14
    ts = np.logspace(-3.5, -1.5, 9)
    first = []
    for t in ts:
        y = man.retraction(x, t * xi)
        u, s, vt = y
        assert u.shape == (M, k) and s.shape == (k,) and vt.shape == (k, N)
        assert (
            np.linalg.norm(u.T @ u - np.eye(k)) <= 1e-14
            and np.linalg.norm(vt @ vt.T - np.eye(k)) <= 1e-14
        )
        assert np.all(s > 0) and np.all(np.diff(s) <= 0)
        first.append(np.linalg.norm(to_dense(y) - X - t * xi_dense))
    if k == min(M, N):
        # Full rank: the manifold is open, the normal space is {0} and R(x, xi) = X + xi.
        assert max(first) <= 1e-14
        assert np.linalg.norm(normal_acc) <= 1e-14
    else:
        # E(t) = R(x, t xi) - X - t xi = t^2 N + t^3 C + O(t^4) with N = normal_acc claimed, so
        # D(t) = E(t) / t^2 = N + t C + O(t^2) and D(2t) - D(t) = t C + O(t^2) estimates the
        # error of D(t) (Richardson for an O(t) error); rounding: E from an SVD round trip,
        # ~ n eps ||X|| (n = 7) and a subtraction, over t^2. K = 10 as in tests/richardson.py.
        # The tangent part P_T E(t) / t^2 = t P_T C + O(t^2) (P_T N = 0), with the same estimate.
        def scaled(t):
            delta = to_dense(man.retraction(x, t * xi)) - X - t * xi_dense
            tangent = man.embedding(x, man.projection(x, delta)).to_dense()
            return delta / t**2, tangent / t**2

        t0 = 1e-3
        (D1, T1), (D2, T2) = scaled(t0), scaled(2 * t0)
        rounding = 2 * 7 * EPS * np.linalg.norm(X) / t0**2
        bound = 10 * (np.linalg.norm(D2 - D1) + rounding)
        assert np.linalg.norm(D1 - normal_acc) <= bound, (np.linalg.norm(D1 - normal_acc), bound)
        tangent_bound = 10 * (np.linalg.norm(T2 - T1) + rounding)
        assert np.linalg.norm(T1) <= tangent_bound, (np.linalg.norm(T1), tangent_bound)
        # guards: a wrong t^2 term, or a tangent one, of 1 % of ||N|| would be seen
        assert max(bound, tangent_bound) <= 1e-2 * np.linalg.norm(normal_acc)
    if depth is not None:
        flat = dlngeo.FixedRank(M, N, k)
        assert all(
            np.array_equal(p, q) for p, q in zip(man.retraction(x, xi), flat.retraction(x, xi))
        )


@pytest.mark.parametrize("k, depth", [(2, None), (2, 3), (5, 2)])
def test_transport_projection_random_and_zero(k, depth):
    np.random.seed(k + (depth or 0))
    man = _manifold(k, depth)
    x = man.random_point()
    xi, eta = man.random_tangent_vector(x), man.random_tangent_vector(x)
    y = man.retraction(x, 0.3 * eta)
    moved = man.transport(x, y, xi)
    u, _, vt = y
    # rounding ~ n eps ||xi|| (n = 7, unit xi); linearity with coefficients 2, 3: ~ 5 n eps kappa
    assert np.linalg.norm(u.T @ moved.Up) <= 1e-14 and np.linalg.norm(vt @ moved.Vp) <= 1e-14
    # Linear in the vector; the identity when the points coincide.
    combo = man.transport(x, y, 2.0 * xi - 3.0 * eta)
    lin = 2.0 * moved - 3.0 * man.transport(x, y, eta)
    assert all(np.allclose(p, q, rtol=0, atol=1e-13) for p, q in zip(combo, lin))
    same = man.transport(x, x, xi)
    assert all(np.allclose(p, q, rtol=0, atol=1e-14) for p, q in zip(same, xi))
    # Projection of ambient forms (dense, sparse, factored, pymanopt's (U, S, V)) agree.
    Z = np.random.default_rng(0).standard_normal((M, N))
    ref = man.projection(x, Z)  # the forms agree to Z's SVD rounding, ~ n eps ||Z|| ~ 1e-14
    U, S, V = np.linalg.svd(Z, full_matrices=False)
    forms = (
        sp.csr_matrix(Z),
        Factored(U * S, V.T),
        (U, np.diag(S), V.T),
        AmbientTriple(U, np.diag(S), V.T),
    )
    for form in forms:
        assert all(
            np.allclose(p, q, rtol=0, atol=1e-13) for p, q in zip(man.projection(x, form), ref)
        )
    # A bare tuple with a vector S is neither pymanopt's (U, S, V) nor an ambient type.
    with pytest.raises(ValueError, match="vector"):
        man.projection(x, (U, S, V))
    zero = man.zero_vector(x)
    assert man.norm(x, zero) == 0.0
    assert man.typical_dist > 0 and man.dim == (M + N - k) * k


# ----------------------------------------------------- pymanopt's own failure
def test_pymanopt_gradient_is_nan_at_repeated_singular_values_ours_is_not():
    """pymanopt's FixedRankEmbedded divides by s_j^2 - s_i^2; at s = (1, 1) that is 0/0."""
    import pymanopt

    rng = np.random.default_rng(5)
    k = 2
    Y = rng.standard_normal((M, N))
    u = np.linalg.qr(rng.standard_normal((M, k)))[0]
    vt = np.linalg.qr(rng.standard_normal((N, k)))[0].T
    s = np.ones(k)  # balanced / orthogonal inits have exactly this

    theirs = FixedRankEmbedded(M, N, k)

    @pymanopt.function.autograd(theirs)
    def cost(u_, s_, vt_):
        return 0.5 * anp.sum((u_ @ anp.diag(s_) @ vt_ - Y) ** 2)

    point = theirs.random_point()
    point = type(point)(u, s, vt)
    with np.errstate(all="ignore"):
        bad = pymanopt.Problem(theirs, cost).riemannian_gradient(point)
    assert np.isnan(bad.M).any()

    ours = dlngeo.FixedRank(M, N, k)
    good = dlngeo.problem(ours, lambda X: 0.5 * anp.sum((X - Y) ** 2)).riemannian_gradient(
        ours.point(u, s, vt)
    )
    G = (u * s) @ vt - Y
    assert all(np.all(np.isfinite(a)) for a in good)
    expected = ours.projection(ours.point(u, s, vt), G)
    # the same projection of G, by another route: ~ n eps ||G||, n = 7
    assert all(np.allclose(a, b, rtol=0, atol=1e-14) for a, b in zip(good, expected))


# ------------------------------------------------------------------ bad input
def test_bad_input():
    for args, word in [
        ((4, 3, 5), "k"),
        ((4, 3, 0), "k"),
        ((0, 3, 1), "m"),
        ((4, 2.0, 1), "n"),
        ((4, 3, True), "k"),
    ]:
        with pytest.raises(ValueError, match=word):
            dlngeo.FixedRank(*args)
        with pytest.raises(ValueError, match=word):
            dlngeo.DLNFixedRank(*args, 2)
    for depth in (0, -2, 1.5, None):
        with pytest.raises(ValueError, match="depth"):
            dlngeo.DLNFixedRank(4, 3, 2, depth)
    man = dlngeo.FixedRank(4, 3, 2)
    with pytest.raises(ValueError, match="X"):
        man.from_matrix(np.full((4, 3), np.nan))
    with pytest.raises(ValueError, match="X"):
        man.from_matrix(np.ones((3, 4)))
    with pytest.raises(ValueError, match="X"):
        man.from_matrix(np.outer(np.ones(4), np.ones(3)))  # rank 1 < k
    with pytest.raises(ValueError, match="manifold"):
        dlngeo.problem(FixedRankEmbedded(4, 3, 2), lambda X: anp.sum(X**2))


# --------------------------------------------------- nothing m x m or m x n is formed
@pytest.mark.parametrize("depth", [None, 3])
def test_tangent_space_operations_never_form_m_by_m_or_m_by_n(depth):
    """to_tangent_space, _apply_ambient(_transpose) on (U, S, V), random_tangent_vector, embedding,
    projection and transport of a factored vector, at m = n = 3000, k = 4: the peak numpy
    allocation stays O((m + n) k). pymanopt's to_tangent_space forms u @ u.T (72 MB here).

    Bound: the arrays of one call are a few m x k / n x k blocks (96 kB each); 40 of them
    (3.8 MB) is far below one m x n array (72 MB) and far above what the products need.
    """
    import tracemalloc

    m = n = 3000
    k = 4
    man = dlngeo.FixedRank(m, n, k) if depth is None else dlngeo.DLNFixedRank(m, n, k, depth)
    np.random.seed(0)
    x = man.random_point()
    rng = np.random.default_rng(0)
    raw = type(man.zero_vector(x))(
        rng.standard_normal((m, k)), rng.standard_normal((k, k)), rng.standard_normal((n, k))
    )
    B = rng.standard_normal((n, k))
    calls = {
        "to_tangent_space": lambda: man.to_tangent_space(x, raw),
        "random_tangent_vector": lambda: man.random_tangent_vector(x),
        "embedding + projection": lambda: man.projection(x, man.embedding(x, raw)),
        "transport": lambda: man.transport(x, man.retraction(x, 1e-3 * raw), raw),
        "_apply_ambient": lambda: man._apply_ambient(tuple(man.embedding(x, raw)), B),
        "_apply_ambient_transpose": lambda: man._apply_ambient_transpose(
            tuple(man.embedding(x, raw)), rng.standard_normal((m, k))
        ),
    }
    bound = 40 * max(m, n) * k * 8
    for name, call in calls.items():
        tracemalloc.start()
        call()
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert peak <= bound, (name, peak)
