"""Entropy of the balanced fibre and free energy (docs/math.md §6, §6.1-6.2)."""

from math import gamma, pi, sqrt

import numpy as np
import pytest
from richardson import central_difference_bound

from dlngeo.geometry.kernel import kernel_matrix
from dlngeo.thermodynamics import entropy, free_energy, log_orbit_volume_gram, orbit_length_crofton
from dlngeo.thermodynamics.entropy import (
    batched_kernel,
    entropic_force,
    entropy_from_singular_values,
    log_orthogonal_group_volume,
    log_stiefel_volume,
)
from dlngeo.thermodynamics.orbit import _thin, orbit_frames, orbit_jacobian

EPS = np.finfo(float).eps


def _gram_rounding(X, N, widths=None):
    """Rounding bound for ``entropy - log_orbit_volume_gram`` (absolute).

    ``1/2 log det(J^T J)`` moves by at most ``D kappa(J) |dJ| / |J|`` under a
    perturbation ``dJ`` of its ``D`` columns; ``J`` is computed to a few eps
    relative, so the Gram route carries ~``D kappa(J) eps``. The closed form is
    a sum of logarithms: eps times the sum of their sizes. 16 eps covers the
    few roundings per entry.
    """
    _, s, _ = _thin(X)
    J = orbit_jacobian(s, orbit_frames(X, N, widths, np.random.default_rng(0)), N)
    sv = np.linalg.svd(J, compute_uv=False)
    terms = abs(entropy(X, N, widths=widths)) + J.shape[1]
    return 16 * EPS * (J.shape[1] * sv[0] / sv[-1] + terms)


def _rank_r_point(rng, m, n, r, low=0.4, high=2.5):
    u, _ = np.linalg.qr(rng.standard_normal((m, r)))
    v, _ = np.linalg.qr(rng.standard_normal((n, r)))
    s = np.sort(rng.uniform(low, high, r))[::-1]
    return u, s, v.T


# ----------------------------------------------------------------- constants
def test_orthogonal_group_volume_literature_values():
    # c_2 = 4 sqrt2 pi (two circles of radius sqrt2); c_3 = 32 sqrt2 pi^2 (= 446.647309 in docs/math.md §6.1).
    assert np.exp(log_orthogonal_group_volume(2)) == pytest.approx(4 * sqrt(2) * pi, rel=1e-14)
    assert np.exp(log_orthogonal_group_volume(3)) == pytest.approx(32 * sqrt(2) * pi**2, rel=1e-14)
    assert np.exp(log_orthogonal_group_volume(3)) == pytest.approx(446.647309, rel=1e-8)
    # St(d, 1) is the unit sphere S^{d-1}.
    for d in (2, 3, 5):
        assert np.exp(log_stiefel_volume(d, 1)) == pytest.approx(
            2 * pi ** (d / 2) / gamma(d / 2), rel=1e-14
        )


# --------------------------------------------------- closed form vs Gram det
@pytest.mark.parametrize("d,N", [(2, 2), (3, 2), (3, 3), (4, 4), (4, 5), (5, 3), (2, 6)])
def test_square_entropy_matches_gram_determinant(d, N):
    rng = np.random.default_rng(10 * d + N)
    for _ in range(3):
        X = rng.standard_normal((d, d))
        closed = entropy(X, N)
        numeric = log_orbit_volume_gram(X, N, rng=rng)
        assert abs(closed - numeric) <= _gram_rounding(X, N)
    # the closed form is the documented one: 1/2 sum_{i<j} log K_ij + (N - 1) log c_d
    s = np.linalg.svd(X, compute_uv=False)
    K = kernel_matrix(s, s, N)
    iu = np.triu_indices(d, 1)
    expected = 0.5 * np.sum(np.log(K[iu])) + (N - 1) * log_orthogonal_group_volume(d)
    assert closed == pytest.approx(expected, rel=1e-13)


@pytest.mark.parametrize(
    "dims,r",
    [
        ([5, 6, 6, 4], 2),  # rank deficient, wide hidden layers
        ([4, 5, 7, 5, 3], 3),  # rectangular, full rank of the narrowest end
        ([3, 2, 2], 1),  # rank 1 in a 2 x 3 matrix
        ([2, 3, 2], 2),  # square, hidden layer wider than the ends
        ([6, 4, 5], 3),  # bottleneck of width 4 around rank 3
        ([4, 3, 3, 4], 3),  # bottleneck equal to the rank
        ([3, 3, 3], 3),  # square full rank given as (u, s, vt)
    ],
)
def test_rank_r_entropy_matches_gram_determinant(dims, r):
    rng = np.random.default_rng(sum(dims) + r)
    N = len(dims) - 1
    for _ in range(3):
        point = _rank_r_point(rng, dims[-1], dims[0], r)
        closed = entropy(point, N, widths=dims[1:-1])
        numeric = log_orbit_volume_gram(point, N, widths=dims[1:-1], rng=rng)
        assert abs(closed - numeric) <= _gram_rounding(point, N, dims[1:-1])


def test_dense_rectangular_default_widths_match_gram():
    rng = np.random.default_rng(3)
    X = rng.standard_normal((3, 5))  # rank 3, default hidden widths min(m, n) = 3
    for N in (2, 3):
        gap = entropy(X, N) - log_orbit_volume_gram(X, N, rng=1)
        assert abs(gap) <= _gram_rounding(X, N)
    gap = entropy(X, 3, widths=[4, 6]) - log_orbit_volume_gram(X, 3, widths=[4, 6], rng=2)
    assert abs(gap) <= _gram_rounding(X, 3, [4, 6])


def test_gram_volume_does_not_depend_on_the_frames():
    rng = np.random.default_rng(4)
    point = _rank_r_point(rng, 4, 5, 2)
    values = [log_orbit_volume_gram(point, 3, widths=[4, 3], rng=k) for k in range(4)]
    assert np.ptp(values) <= 2 * _gram_rounding(point, 3, [4, 3])  # two Gram routes' rounding


# ------------------------------------------------------------ Monte Carlo
@pytest.mark.parametrize(
    "case",
    ["square_2x2", "rank1_2x3", "scalar_width2"],
)
def test_crofton_monte_carlo_length_within_error_bar(case):
    rng = np.random.default_rng(5)
    if case == "square_2x2":
        X, widths = rng.standard_normal((2, 2)), None
    elif case == "rank1_2x3":
        X, widths = _rank_r_point(rng, 2, 3, 1), [2]
    else:
        X, widths = np.array([[1.7]]), [2]
    exact = np.exp(entropy(X, 2, widths=widths))
    estimate, stderr = orbit_length_crofton(X, 2, widths=widths, n_directions=20000, rng=11)
    assert stderr < 0.01 * exact  # the estimate is informative
    assert abs(estimate - exact) <= 4.0 * stderr
    if case == "square_2x2":
        # the constant c_2 matters: without it the volume would be off by 4 sqrt2 pi
        s = np.linalg.svd(X, compute_uv=False)
        assert exact == pytest.approx(4 * sqrt(2) * pi * sqrt(s[0] + s[1]), rel=1e-13)


def test_crofton_refuses_higher_dimensional_fibres():
    with pytest.raises(ValueError, match="one-dimensional"):
        orbit_length_crofton(np.eye(3), 2)


# ------------------------------------------------- coinciding and zero values
@pytest.mark.parametrize("N", [2, 3, 7])
def test_entropy_finite_and_continuous_at_coinciding_singular_values(N):
    rng = np.random.default_rng(6)
    U, _ = np.linalg.qr(rng.standard_normal((3, 3)))
    V, _ = np.linalg.qr(rng.standard_normal((3, 3)))
    S0 = entropy(U @ np.diag([1.5, 1.5, 1.5]) @ V.T, N)
    assert np.isfinite(S0)
    # the Gram determinant is well defined there too
    assert S0 == pytest.approx(
        log_orbit_volume_gram((U, np.array([1.5, 1.5, 1.5]), V.T), N, rng=1), rel=1e-10
    )
    for eps in (1e-4, 1e-8, 1e-12):
        S = entropy_from_singular_values(np.array([1.5 + eps, 1.5, 1.5 - eps]), N, [3] * (N - 1))
        # S is symmetric in the singular values, so its gradient at s = (1.5, 1.5, 1.5) is along
        # (1, 1, 1) and the zero-sum perturbation moves S only at second order: the bound allows a
        # second derivative up to 2 (N + 1) along (1, 0, -1), plus the rounding of S (~1e-13).
        assert abs(S - S0) <= (N + 1) * eps**2 + 1e-13


def test_entropy_boundary_values():
    # Square, one zero singular value: finite, the limit from the full-rank side.
    S_zero = entropy_from_singular_values(np.array([2.0, 1.0, 0.0]), 3)
    S_near = entropy_from_singular_values(np.array([2.0, 1.0, 1e-12]), 3)
    # K_ij depends on s_3 through p_3 = s_3^(2/N): S moves by O(s^(2/N)) = 1e-8 at s = 1e-12, N = 3,
    # with a coefficient (a sum of 1 / K_ij-weighted terms at p = 0) below 10.
    assert np.isfinite(S_zero) and S_near == pytest.approx(S_zero, abs=1e-7)
    # Two zero singular values: K = 0, S = -inf.
    assert entropy_from_singular_values(np.array([2.0, 0.0, 0.0]), 3) == -np.inf
    # Excess hidden width: s^{(d_k - r)/N} -> 0, S = -inf; decreasing to it like (excess/N) log s.
    assert entropy_from_singular_values(np.array([2.0, 0.0]), 3, [3, 4]) == -np.inf
    a = entropy_from_singular_values(np.array([2.0, 1e-6]), 3, [3, 4])
    b = entropy_from_singular_values(np.array([2.0, 1e-8]), 3, [3, 4])
    assert a - b == pytest.approx((3 / 3) * np.log(100.0), rel=1e-4)
    # depth 1: the fibre is a point
    assert entropy(np.diag([3.0, 1.0]), 1) == 0.0


# ------------------------------------------------------------ entropic force
@pytest.mark.parametrize(
    "N,widths,s",
    [
        (2, None, [2.0, 1.1, 0.5]),
        (3, None, [2.0, 1.1, 0.5]),
        (5, [4, 3, 6, 3], [1.7, 1.2, 0.3]),
        (4, [3, 3, 5], [0.9, 0.8]),
    ],
)
def test_entropic_force_is_K_diag_times_gradient(N, widths, s):
    s = np.array(s)
    f = entropic_force(s, N, widths)
    K = kernel_matrix(s, s, N)
    for a in range(s.size):

        def difference(h, a=a):
            e = np.zeros_like(s)
            e[a] = h
            return (
                entropy_from_singular_values(s + e, N, widths)
                - entropy_from_singular_values(s - e, N, widths)
            ) / (2 * h)

        # central difference, h = 1e-6: truncation by Richardson (tests/richardson.py);
        # rounding: S is a sum of ~n^2 logarithms, each to ~2 eps |log|, so ~ n^2 eps (|S| + n^2)
        # per value, two values over 2h
        S0 = abs(entropy_from_singular_values(s, N, widths))
        n2 = s.size**2
        dS, bound = central_difference_bound(difference, 1e-6, n2 * EPS * (S0 + n2) / 1e-6)
        assert abs(f[a] - K[a, a] * dS) <= K[a, a] * bound, (f[a], K[a, a] * dS, bound)
        assert bound <= 1e-6 * abs(dS)  # guard: resolves dS to 1e-6


def test_entropic_force_matches_mathnotes_formula_and_is_stable():
    s = np.array([1.9, 1.3, 0.4])
    N = 3
    f = entropic_force(s, N)
    p = s ** (2 / N)
    ref = [
        sum(
            N * s[i] ** (3 - 2 / N) / (s[i] ** 2 - s[j] ** 2) - s[i] / (p[i] - p[j])
            for j in range(3)
            if j != i
        )
        for i in range(3)
    ]
    np.testing.assert_allclose(f, ref, rtol=1e-12)
    # coinciding: finite, the limit h(1) = (N - 1)/2 per pair
    f_eq = entropic_force(np.array([1.2, 1.2]), N)
    assert np.allclose(f_eq, 1.2 ** (1 - 2 / N) * (N - 1) / 2, rtol=1e-14)
    f_near = entropic_force(np.array([1.2 + 1e-9, 1.2]), N)
    assert np.allclose(f_near, f_eq, rtol=1e-7)
    # large dynamic range: no overflow
    assert np.all(np.isfinite(entropic_force(np.array([1e150, 1e-150]), 50)))


def test_batched_kernel_matches_kernel_matrix():
    rng = np.random.default_rng(8)
    s = rng.uniform(0, 2, (5, 3))
    t = np.concatenate((s, np.zeros((5, 1))), axis=1)
    for N in (1, 2, 3):
        Kb = batched_kernel(s, t, N)
        for c in range(5):
            np.testing.assert_array_equal(Kb[c], kernel_matrix(s[c], t[c], N))


# --------------------------------------------------------------- free energy
def test_free_energy_is_energy_minus_entropy_over_beta():
    from dlngeo import loss_from_autograd

    X = np.array([[1.0, 0.3], [-0.2, 0.8]])
    loss = loss_from_autograd(lambda Y: 0.5 * (Y**2).sum())
    for beta in (0.5, 2.0, 1e6):
        assert free_energy(X, loss, beta, 3) == pytest.approx(
            loss.value(X) - entropy(X, 3) / beta, rel=1e-14
        )


# ----------------------------------------------------------------- bad input
def test_bad_input_names_the_argument():
    from dlngeo import loss_from_autograd

    loss = loss_from_autograd(lambda Y: (Y**2).sum())
    with pytest.raises(ValueError, match="X must be finite"):
        entropy(np.array([[np.nan, 0.0], [0.0, 1.0]]), 2)
    with pytest.raises(ValueError, match="depth"):
        entropy(np.eye(2), 0)
    with pytest.raises(ValueError, match="widths"):
        entropy(np.eye(3), 3, widths=[3])
    with pytest.raises(ValueError, match="widths"):
        entropy(np.eye(3), 2, widths=[2])  # below the rank
    with pytest.raises(ValueError, match="s: singular values"):
        entropy((np.eye(2), np.array([1.0, -1.0]), np.eye(2)), 2)
    for beta in (0.0, -1.0, np.inf, np.nan, "hot"):
        with pytest.raises(ValueError, match="beta"):
            free_energy(np.eye(2), loss, beta, 2)


# ------------------------------------------------------------------ plugins
def _collect(hook):
    got = {}

    def register(name, factory, description=""):
        assert description
        got[name] = factory

    hook(register=register)
    return got


def test_plugin_registers_entropy_and_free_energy_metrics():
    from dlngeo_plugins import thermodynamics as plugin

    from dlngeo.state import State
    from dlngeo.thermodynamics.langevin import QuadraticEnergy

    got = _collect(plugin.dlngeo_register_metrics)
    assert set(got) == {"entropy", "free_energy"}
    X = np.array([[2.0, 0.3], [0.1, 0.9]])
    state = State(point=X, depth=3, loss=QuadraticEnergy(0.5))
    assert got["entropy"]()(state) == entropy(X, 3)
    assert got["entropy"](widths=[4, 5])(state) == entropy(X, 3, widths=[4, 5])
    assert got["free_energy"](beta=4.0)(state) == pytest.approx(
        0.5 * np.sum(X**2) - entropy(X, 3) / 4.0, rel=1e-14
    )
    # rank option: a dense rank-1 matrix evaluated on M_1
    u = np.array([[0.6], [0.8]])
    low = State(point=(u * 1.5) @ np.array([[1.0, 0.0]]), depth=2)
    assert got["entropy"](rank=1)(low) == pytest.approx(
        entropy((u, np.array([1.5]), np.array([[1.0, 0.0]])), 2), rel=1e-12
    )
    with pytest.raises(ValueError, match="beta"):
        got["free_energy"]()
    with pytest.raises(ValueError, match="beta"):
        got["free_energy"](beta=-1.0)
    with pytest.raises(ValueError, match="state.loss"):
        got["free_energy"](beta=1.0)(State(point=X, depth=3))


def test_entropy_metric_through_the_plugin_manager():
    import dlngeo
    from dlngeo.state import State

    X = np.diag([1.7, 0.4, 0.2])
    assert dlngeo.create_metric("entropy")(State(point=X, depth=4)) == entropy(X, 4)
    assert dlngeo.create_metric("free_energy", beta=2.0)(
        State(point=X, depth=4, loss=lambda Y: 0.0)
    ) == pytest.approx(-entropy(X, 4) / 2.0, rel=1e-14)
