"""The g_N kernel: A_{N,X} against its defining sum of fractional matrix powers (docs/math.md §3)."""

import numpy as np
import pytest
import scipy.sparse as sp

from dlngeo.geometry import (
    kernel_matrix,
    metric_operator,
    metric_operator_svd,
    metric_operator_tangent,
    riemannian_gradient_tangent,
    tangent_inner_product,
)
from dlngeo.lowrank import Factored, tangent_to_factored

DEPTHS = [1, 2, 3, 4, 6]
EPS = np.finfo(float).eps


def _psd_power(P, a):
    """``P**a`` for a PSD matrix by eigendecomposition, with ``0**0 = 1`` and exact zeros kept at zero."""
    lam, Q = np.linalg.eigh(P)
    tol = max(P.shape) * np.finfo(float).eps * max(lam.max(), 1e-300) * 10
    lam = np.where(lam > tol, lam, 0.0)
    with np.errstate(divide="ignore"):
        powered = np.ones_like(lam) if a == 0 else np.where(lam > 0, lam**a, 0.0)
    return (Q * powered) @ Q.T


def defining_sum(X, Z, depth):
    """``sum_k (XX^T)^{(N-k)/N} Z (X^TX)^{(k-1)/N}``, straight from the definition."""
    left, right = X @ X.T, X.T @ X
    return sum(
        _psd_power(left, (depth - k) / depth) @ Z @ _psd_power(right, (k - 1) / depth)
        for k in range(1, depth + 1)
    )


def _low_rank(rng, m, n, r, s=None):
    u = np.linalg.qr(rng.standard_normal((m, r)))[0]
    v = np.linalg.qr(rng.standard_normal((n, r)))[0]
    s = np.sort(rng.uniform(0.5, 2.0, r))[::-1] if s is None else np.asarray(s, dtype=float)
    return u, s, v.T


def _projectors(u, vt):
    Pu, Pv = u @ u.T, vt.T @ vt
    normal = lambda Z: (Z - Pu @ Z) @ (np.eye(Pv.shape[0]) - Pv)  # noqa: E731
    return normal


CASES = {
    "square full rank": (5, 5, 5, None),
    "tall full rank": (6, 4, 4, None),
    "wide full rank": (3, 5, 3, None),
    "rank deficient": (6, 5, 2, None),
    "repeated": (5, 4, 4, [1.5, 1.5, 1.5, 0.7]),
    "repeated, rank deficient": (5, 6, 3, [1.0, 1.0, 1.0]),
    "identity": (4, 4, 4, [1.0, 1.0, 1.0, 1.0]),
    "rank one": (4, 3, 1, [2.0]),
}


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("depth", DEPTHS)
def test_metric_operator_equals_defining_sum(case, depth):
    m, n, r, s = CASES[case]
    rng = np.random.default_rng(depth * 100 + len(case))
    u, s, vt = _low_rank(rng, m, n, r, s)
    X = (u * s) @ vt
    Z = rng.standard_normal((m, n))
    reference = defining_sum(X, Z, depth)
    scale = np.linalg.norm(reference)
    for out in (
        metric_operator(X, Z, depth),
        metric_operator_svd(u, s, vt, Z, depth),  # the rank-r form, never seeing the zeros
        metric_operator_svd(u, s, vt, sp.csr_matrix(Z), depth),
        metric_operator_svd(u, s, vt, Factored(Z, np.eye(n)), depth),
    ):
        assert np.all(np.isfinite(out))
        # rounding: N <= 6 terms, each <= ||A Z|| (positive weights in the singular basis), each
        # to ~ 4 n eps (two eigh, two products, n <= 6; s^2 in [0.25, 4]): 4 N n eps ~ 3e-14
        assert np.linalg.norm(out - reference) <= 1e-13 * scale, case


@pytest.mark.parametrize("depth", [2, 3, 5])
def test_range_and_kernel_are_tangent_and_normal_space(depth):
    rng = np.random.default_rng(depth)
    u, s, vt = _low_rank(rng, 7, 6, 3)
    X = (u * s) @ vt
    normal = _projectors(u, vt)
    Z = rng.standard_normal((7, 6))
    AZ = metric_operator(X, Z, depth)
    scale = np.linalg.norm(AZ)
    # rounding: A's eigenvectors and the projectors are orthonormal to ~ n eps, n = 7: 7 eps ~ 2e-15
    assert np.linalg.norm(normal(AZ)) <= 1e-14 * scale  # maps into T_X M_r
    assert np.linalg.norm(metric_operator(X, normal(Z), depth)) <= 1e-14 * scale  # kills N_X
    assert (
        np.linalg.norm(metric_operator(X, Z - normal(Z), depth) - AZ) <= 1e-14 * scale
    )  # A P_T = A
    # N = 1 is the identity on everything, normal space included.
    assert np.linalg.norm(metric_operator(X, Z, 1) - Z) <= 1e-14 * np.linalg.norm(Z)


@pytest.mark.parametrize("depth", [1, 2, 4])
def test_powers_inverse_and_square_root(depth):
    rng = np.random.default_rng(10 + depth)
    u, s, vt = _low_rank(rng, 6, 5, 2, [1.3, 1.3])
    X = (u * s) @ vt
    normal = _projectors(u, vt)
    Z = rng.standard_normal((6, 5))
    PtZ = Z - normal(Z) if depth > 1 else Z
    # rounding ~ c n eps kappa, n = 6, kappa(A on T_X) = N <= 4 at s = (1.3, 1.3), c ~ 4: 2e-14
    inv = metric_operator(X, Z, depth, power=-1)
    assert np.linalg.norm(metric_operator(X, inv, depth) - PtZ) <= 1e-13 * np.linalg.norm(Z)
    root = metric_operator(X, Z, depth, power=0.5)
    assert np.linalg.norm(
        metric_operator(X, root, depth, power=0.5) - metric_operator(X, Z, depth)
    ) <= 1e-13 * np.linalg.norm(Z)
    # Self-adjoint and positive on the tangent space.
    W = rng.standard_normal((6, 5))
    # rounding of A and of two inner products: ~ n eps ||W|| ||A Z||, n = 6
    AZ = metric_operator(X, Z, depth)
    assert abs(
        np.sum(W * AZ) - np.sum(metric_operator(X, W, depth) * Z)
    ) <= 6 * EPS * np.linalg.norm(W) * np.linalg.norm(AZ)
    assert np.sum(PtZ * metric_operator(X, Z, depth)) > 0


def test_no_nan_at_zero_and_repeated_singular_values():
    for depth in DEPTHS:
        for X in (
            np.zeros((3, 4)),
            np.eye(4),
            np.diag([2.0, 2.0, 0.0]),
            np.diag([1e-300, 1.0, 1.0]),
        ):
            Z = np.arange(X.size, dtype=float).reshape(X.shape)
            out = metric_operator(X, Z, depth)
            assert np.all(np.isfinite(out))
            # rounding as in the first test (n <= 4); the floor 1 covers A Z = 0
            assert np.linalg.norm(out - defining_sum(X, Z, depth)) <= 1e-13 * max(
                1.0, np.linalg.norm(out)
            )
    # The zero matrix: A = 0 for N >= 2 (every term has a positive power of 0), identity for N = 1.
    assert np.array_equal(metric_operator(np.zeros((2, 3)), np.ones((2, 3)), 3), np.zeros((2, 3)))
    assert np.array_equal(metric_operator(np.zeros((2, 3)), np.ones((2, 3)), 1), np.ones((2, 3)))


@pytest.mark.parametrize("depth", [1, 2, 3, 7, 32])
def test_kernel_matrix_is_the_geometric_sum(depth):
    # Distinct, nearly equal (relative gap 1e-12 .. 1e-4), equal, tiny and zero singular values.
    base = np.array([3.0, 1.0, 0.25, 1e-8, 0.0])
    s = np.concatenate([base, 1.0 + np.array([1e-12, 1e-8, 1e-4]), [3.0]])
    K = kernel_matrix(s, s, depth)
    p = s ** (2.0 / depth)
    exact = np.zeros_like(K)
    for k in range(1, depth + 1):
        # 0**0 = 1 by numpy's convention, as the formula needs.
        exact += np.outer(p ** (depth - k), p ** (k - 1))
    assert np.all(np.isfinite(K))
    # rounding: p = s^(2/N) carries eps, its powers <= (N - 1) eps, over positive terms: ~ N eps
    # on each side (the geometric-sum form and this sum), 2e-15 N ~ 9 N eps in all
    assert np.all(np.abs(K - exact) <= 2e-15 * depth * np.abs(exact) + 1e-300), np.max(
        np.abs(K - exact) / np.maximum(exact, 1e-300)
    )
    # rounding: N p^(N-1) with p to eps/2: ~ (N - 1) eps/2 + 2 eps <= 4e-15 at N = 32
    np.testing.assert_allclose(
        np.diag(K)[:4], depth * s[:4] ** (2.0 * (depth - 1) / depth), rtol=1e-14
    )
    assert K[4, 4] == (1.0 if depth == 1 else 0.0)


@pytest.mark.parametrize("depth", [1, 2, 3, 5])
def test_tangent_coordinates_agree_with_the_dense_operator(depth):
    rng = np.random.default_rng(20 + depth)
    u, s, vt = _low_rank(rng, 7, 5, 3, [2.0, 0.9, 0.9])
    X = (u * s) @ vt
    normal = _projectors(u, vt)
    G = rng.standard_normal((7, 5))
    # Riemannian gradient = A(P_T G) = A(G) for N >= 2, in (Up, M, Vp) coordinates.
    Up, M, Vp = riemannian_gradient_tangent(u, s, vt, G, depth)
    # rounding: one projection I - u u^T, ~ n eps ||Up||, n = 7
    assert np.linalg.norm(u.T @ Up) <= 7 * EPS * np.linalg.norm(Up)
    assert np.linalg.norm(vt @ Vp) <= 7 * EPS * np.linalg.norm(Vp)
    dense = tangent_to_factored((u, s, vt), (Up, M, Vp)).to_dense()
    expected = metric_operator(X, G - normal(G), depth)
    # rounding ~ c n eps kappa, n = 7, kappa(A on T_X) <= N (2/0.9)^2 ~ 25: ~ 4e-14 with c = 1
    assert np.linalg.norm(dense - expected) <= 1e-13 * np.linalg.norm(expected)
    for G_form in (sp.csr_matrix(G), Factored(G, np.eye(5))):
        for a, b in zip(riemannian_gradient_tangent(u, s, vt, G_form, depth), (Up, M, Vp)):
            # the same arithmetic on G's other forms: a few products' rounding, ~ n eps, n = 7
            assert np.linalg.norm(a - b) <= 1e-14 * np.linalg.norm(b) + 1e-15
    # A^{power} on tangent coordinates vs the dense operator, and the metric <a, A^{-1} b>.
    xi = (Up, M, Vp)
    xi_dense = tangent_to_factored((u, s, vt), xi).to_dense()
    for power in (1.0, -1.0, 0.5):
        out = tangent_to_factored(
            (u, s, vt), metric_operator_tangent(s, *xi, depth, power)
        ).to_dense()
        ref = metric_operator(X, xi_dense, depth, power)
        assert np.linalg.norm(out - ref) <= 1e-13 * np.linalg.norm(ref)
    eta = riemannian_gradient_tangent(u, s, vt, rng.standard_normal((7, 5)), depth)
    eta_dense = tangent_to_factored((u, s, vt), eta).to_dense()
    g = tangent_inner_product(s, xi, eta, depth)
    assert abs(g - np.sum(xi_dense * metric_operator(X, eta_dense, depth, -1))) <= 1e-13 * abs(g)
    assert abs(g - tangent_inner_product(s, eta, xi, depth)) <= 1e-13 * abs(g)
    # g_N(grad, xi) = <G, xi>: the defining property of the Riemannian gradient (docs/math.md §3).
    assert abs(
        tangent_inner_product(s, (Up, M, Vp), eta, depth) - np.sum(G * eta_dense)
    ) <= 1e-13 * np.linalg.norm(G) * np.linalg.norm(eta_dense)


@pytest.mark.parametrize("depth", [2, 6])
def test_rank_argument_reads_x_as_a_point_of_the_rank_r_manifold(depth):
    """A rank-r X perturbed at the 1e-10 level: rank=r gives the rank-r operator at its truncation."""
    rng = np.random.default_rng(depth)
    u, s, vt = _low_rank(rng, 6, 5, 2)
    noise = 1e-10 * rng.standard_normal((6, 5))
    X = (u * s) @ vt + noise
    Z = rng.standard_normal((6, 5))
    uu, ss, vv = np.linalg.svd(X, full_matrices=False)
    reference = metric_operator_svd(uu[:, :2], ss[:2], vv[:2], Z, depth)
    out = metric_operator(X, Z, depth, rank=2)
    # rounding only (the same rank-2 truncation on both sides): ~ n eps, n = 6
    assert np.linalg.norm(out - reference) <= 1e-14 * np.linalg.norm(reference)
    # Without it the error-level singular values e enter K as e**(2/N) (5e-4 at N = 6).
    gap = np.linalg.norm(metric_operator(X, Z, depth) - reference) / np.linalg.norm(reference)
    assert gap >= 0.1 * 1e-10 ** (2 / depth), gap
    assert np.array_equal(metric_operator(X, Z, depth, rank=5), metric_operator(X, Z, depth))
    for bad in (-1, 6, 1.5, True):
        with pytest.raises(ValueError, match="rank"):
            metric_operator(X, Z, depth, rank=bad)


def test_bad_input():
    X = np.eye(3)
    for depth in (0, -1, 1.5, True, "2", None):
        with pytest.raises(ValueError, match="depth"):
            metric_operator(X, X, depth)
        with pytest.raises(ValueError, match="depth"):
            kernel_matrix(np.ones(2), np.ones(2), depth)
    bad = X.copy()
    bad[0, 1] = np.nan
    with pytest.raises(ValueError, match="X"):
        metric_operator(bad, X, 2)
    with pytest.raises(ValueError, match="X"):
        metric_operator(np.full((2, 2), np.inf), np.eye(2), 2)
    with pytest.raises(ValueError, match="X"):
        metric_operator(np.ones(3), np.ones(3), 2)
    with pytest.raises(ValueError, match="Z"):
        metric_operator(X, np.ones((3, 2)), 2)


def test_benchmark_script_runs_at_tiny_sizes(monkeypatch, capsys):
    """benchmarks/bench_kernel.py stays runnable (tiny grid; the real figures come from running it)."""
    import importlib.util
    import pathlib

    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.setenv(var, "1")  # restored after the test
    path = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "bench_kernel.py"
    spec = importlib.util.spec_from_file_location("bench_kernel", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    rows = bench.main(
        [
            "--m",
            "6",
            "--n",
            "5",
            "--rank",
            "2",
            "--depths",
            "2",
            "3",
            "--widths",
            "4",
            "8",
            "--budget",
            "0.002",
        ]
    )
    assert [(r["depth"], r["width"]) for r in rows] == [(2, 4), (2, 8), (3, 4), (3, 8)]
    assert all(r[key] > 0 for r in rows for key in ("step", "dense", "tangent", "gradient"))
    assert "step/dense" in capsys.readouterr().out
    with pytest.raises(ValueError, match="depths"):
        bench.main(["--depths", "1"])


def test_kernel_matrix_takes_batch_axes():
    """K[..., i, j] over leading batch axes equals the per-item matrix (depths 1 and 3, with zeros and ties)."""
    rng = np.random.default_rng(7)
    s = np.abs(rng.standard_normal((4, 2, 3)))
    s[0, 0, 1] = s[0, 0, 0]  # a tie
    s[1, 1, 2] = 0.0  # a zero
    for depth in (1, 3):
        K = kernel_matrix(s, s, depth)
        assert K.shape == (4, 2, 3, 3)
        for idx in np.ndindex(4, 2):
            np.testing.assert_array_equal(K[idx], kernel_matrix(s[idx], s[idx], depth))
