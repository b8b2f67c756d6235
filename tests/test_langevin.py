"""Riemannian Langevin samplers (docs/math.md §6, §6.3): drift, stationary law, beta -> inf, records."""

import numpy as np
import pytest
from scipy.integrate import solve_ivp
from scipy.linalg import fractional_matrix_power
from scipy.stats import kstest

from dlngeo.geometry.kernel import kernel_matrix, metric_operator, metric_operator_svd
from dlngeo.thermodynamics import entropy
from dlngeo.thermodynamics.equilibrium import SingularValueLaw, log_density_singular_values
from dlngeo.thermodynamics.langevin import (
    OverparametrizedLangevin,
    QuadraticEnergy,
    RiemannianLangevin,
)
from dlngeo.thermodynamics.mala import RiemannianMALA
from dlngeo.thermodynamics.rle import Geometry, rle_drift


def _haar(rng, C, d):
    Q, R = np.linalg.qr(rng.standard_normal((C, d, d)))
    return Q * np.sign(np.diagonal(R, axis1=1, axis2=2))[:, None, :]


def _draw(law, rng, C, d):
    """Matrices with Haar frames and singular values drawn from a tabulated law."""
    s = law.sample(rng, C)
    return _haar(rng, C, d) @ (s[:, :, None] * _haar(rng, C, d))


def _law(d, N, entropic=True):
    return SingularValueLaw(
        beta=1.0,
        depth=N,
        shape=(d, d),
        energy=lambda s: np.sum(s**2, -1),
        upper=5.5,
        n_grid=100 if d == 2 else 48,
        entropic=entropic,
    )


# ------------------------------------------------------------- the operator
def test_batched_operator_matches_kernel_module():
    rng = np.random.default_rng(0)
    for shape in [(3, 3), (2, 4), (4, 2)]:
        X = rng.standard_normal((5, *shape))
        Z = rng.standard_normal((5, *shape))
        geo = Geometry(X, 3)
        for power in (1.0, 0.5):
            batched = geo.from_basis(geo.K**power * geo.to_basis(Z))
            for c in range(5):
                u, s, vt = np.linalg.svd(X[c], full_matrices=False)
                ref = metric_operator_svd(u, s, vt, Z[c], 3, power)
                assert np.abs(batched[c] - ref).max() <= 1e-12 * np.abs(ref).max()


def test_layer_step_carries_a_valid_svd_of_the_new_point():
    from dlngeo.thermodynamics.rle import carry_svd, drift_basis, layer_step

    rng = np.random.default_rng(1)
    for shape in [(3, 3), (2, 4), (4, 2)]:
        X = rng.standard_normal((50, *shape))
        if shape[0] == shape[1]:
            X[0] = np.diag(
                [1.0, 1.0 + 1e-12, 0.5]
            )  # a near coincidence: the chain takes the matrix step
        geo = Geometry(X, 3)
        xi = geo.to_basis(rng.standard_normal(X.shape))
        b = drift_basis(geo, 2 * X, 1.0, 3, None, "full")
        step_b = 0.01 * b + np.sqrt(0.02) * np.sqrt(geo.K) * xi
        out_b, frames = layer_step(geo, b, step_b, xi, 0.01, 1.0, 3, "full")
        X_new = geo.from_basis(out_b)
        U, s, Vt = carry_svd(geo, X_new, frames)
        r = min(shape)
        np.testing.assert_allclose((U[:, :, :r] * s[:, None, :]) @ Vt[:, :r, :], X_new, atol=1e-12)
        np.testing.assert_allclose(
            np.swapaxes(U, 1, 2) @ U, np.broadcast_to(np.eye(shape[0]), U.shape), atol=1e-12
        )
        np.testing.assert_allclose(
            Vt @ np.swapaxes(Vt, 1, 2), np.broadcast_to(np.eye(shape[1]), Vt.shape), atol=1e-12
        )
        assert np.all(s >= 0) and np.all(np.diff(s, axis=1) <= 0)
        np.testing.assert_allclose(s, np.linalg.svd(X_new, compute_uv=False), atol=1e-12)


# ----------------------------------------------------------------- the drift
def _energy(X, T):
    """A non-rotation-invariant energy (so that U^T E' V is not diagonal) and its gradient."""
    return 0.5 * np.sum((X - T) ** 2) + 0.1 * np.sum(X**4), (X - T) + 0.4 * X**3


def _log_target(X, N, beta, widths, T):
    m, n = X.shape
    s = np.linalg.svd(X, compute_uv=False)
    rows = np.concatenate((s, np.zeros(m - s.size)))
    cols = np.concatenate((s, np.zeros(n - s.size)))
    return (
        -beta * _energy(X, T)[0]
        + entropy(X, N, widths=widths)
        - 0.5 * np.sum(np.log(kernel_matrix(rows, cols, N)))
    )


def _A_matrix(X, N):
    m, n = X.shape
    cols = []
    for k in range(m * n):
        E = np.zeros(m * n)
        E[k] = 1.0
        cols.append(metric_operator(X, E.reshape(m, n), N).ravel())
    return np.array(cols).T


@pytest.mark.parametrize(
    "m,n,N,widths",
    [
        (2, 2, 2, None),
        (2, 2, 3, None),
        (3, 3, 3, None),
        (2, 3, 3, None),
        (3, 2, 4, None),
        (2, 3, 2, [4]),
    ],
)
def test_drift_has_zero_probability_flux(m, n, N, widths):
    """b = beta^-1 (div A + A grad log pi): the Fokker-Planck flux of the target law vanishes."""
    beta = 1.3
    rng = np.random.default_rng(m + 10 * n + 100 * N)
    X = rng.standard_normal((m, n))
    T = rng.standard_normal((m, n))
    b = rle_drift(X, _energy(X, T)[1], beta, N, widths=widths).ravel()

    def residual(h):
        divA = np.zeros(m * n)
        grad_log = np.zeros(m * n)
        for c in range(m * n):
            E = np.zeros(m * n)
            E[c] = h
            E = E.reshape(m, n)
            divA += (_A_matrix(X + E, N)[:, c] - _A_matrix(X - E, N)[:, c]) / (2 * h)
            grad_log[c] = (
                _log_target(X + E, N, beta, widths, T) - _log_target(X - E, N, beta, widths, T)
            ) / (2 * h)
        return b - (divA + _A_matrix(X, N) @ grad_log) / beta

    # Central differences: error c h^2 + rounding. r(2h) - r(h) = 3 c h^2 estimates the
    # truncation (Richardson); rounding is eps / h times the differenced values, summed over
    # the m n directions. K = 10 for the estimate's own error (the O(h^4) term).
    h = 1e-5
    r_h, r_2h = residual(h), residual(2 * h)
    A = np.abs(_A_matrix(X, N)).max()
    log_pi = abs(_log_target(X, N, beta, widths, T))
    rounding = 8 * m * n * np.finfo(float).eps / h * (A + A * (log_pi + 1) / beta)
    bound = 10 * (np.abs(r_2h - r_h).max() / 3 + rounding)
    assert np.abs(r_h).max() <= bound, (np.abs(r_h).max(), bound)
    assert bound <= 1e-6 * np.abs(b).max()  # guard: the check resolves b to 1e-6


@pytest.mark.parametrize("m,n,N", [(3, 3, 2), (3, 3, 4), (2, 4, 3)])
def test_brownian_drift_is_N_minus_1_X_XtX_power(m, n, N):
    rng = np.random.default_rng(1)
    X = rng.standard_normal((m, n))
    D = rle_drift(X, np.zeros_like(X), 1.0, N, drift="no_entropy")
    expected = (N - 1) * X @ np.real(fractional_matrix_power(X.T @ X, -1.0 / N))
    if n > m:  # X^T X is singular: use the SVD form U diag(s^{1-2/N}) V^T
        u, s, vt = np.linalg.svd(X, full_matrices=False)
        expected = (N - 1) * (u * s ** (1 - 2 / N)) @ vt
    np.testing.assert_allclose(D, expected, atol=1e-10)


# ---------------------------------------------------------- stationary law
CASES = [(2, 2), (2, 3), (3, 2), (3, 3)]


@pytest.mark.parametrize("d,N", CASES)
def test_mala_samples_the_singular_value_law(d, N):
    """Start from the law *without* e^S (KS fails), run MALA: both extreme singular values pass."""
    law, wrong = _law(d, N), _law(d, N, entropic=False)
    rng = np.random.default_rng(d * 10 + N)
    X0 = _draw(wrong, rng, 800, d)
    s0 = np.linalg.svd(X0, compute_uv=False)
    assert min(kstest(s0[:, 0], law.cdf_max).pvalue, kstest(s0[:, -1], law.cdf_min).pvalue) < 1e-4
    steps = 600 if (d, N) == (3, 3) else 250  # acceptance ~0.2 there: slower mixing
    rec = RiemannianMALA(step=0.01, n_steps=steps, record_every=steps).sample(
        7, loss=QuadraticEnergy(1.0), start=X0, depth=N, beta=1.0, chains=800
    )
    assert 0.2 < rec.info["acceptance_rate"] < 0.95
    s = np.linalg.svd(rec.final_point, compute_uv=False)
    assert kstest(s[:, 0], law.cdf_max).pvalue > 0.01
    assert kstest(s[:, -1], law.cdf_min).pvalue > 0.01


def _rle_pvalues(d, N, drift, seed, scheme="layer", chains=600, steps=500):
    """KS p-values of (s_max, s_min) after ``steps`` RLE steps of 1e-3 from (approximately) the law."""
    law = _law(d, N)
    X0 = _draw(law, np.random.default_rng(seed), chains, d)
    rec = RiemannianLangevin(
        step=1e-3, n_steps=steps, record_every=steps, drift=drift, scheme=scheme
    ).sample(seed, loss=QuadraticEnergy(1.0), start=X0, depth=N, beta=1.0, chains=chains)
    s = np.linalg.svd(rec.final_point, compute_uv=False)
    return kstest(s[:, 0], law.cdf_max).pvalue, kstest(s[:, -1], law.cdf_min).pvalue


@pytest.mark.parametrize("d,N", CASES)
def test_small_step_rle_keeps_the_singular_value_law(d, N):
    """The default scheme (singular values stepped in s^{1/N}): both extreme singular values pass."""
    assert min(_rle_pvalues(d, N, "full", seed=5)) > 0.01


def test_rle_with_wider_hidden_layers_keeps_its_law():
    """Hidden widths above the rank add (d_k - r) log s / N to S: a repulsion from s = 0."""
    widths = [3, 2]
    law = SingularValueLaw(
        beta=1.0,
        depth=3,
        shape=(2, 2),
        energy=lambda s: np.sum(s**2, -1),
        upper=5.0,
        n_grid=150,
        widths=widths,
    )
    X0 = _draw(law, np.random.default_rng(0), 600, 2)
    rec = RiemannianLangevin(widths=widths, step=1e-3, n_steps=500, record_every=500).sample(
        0, loss=QuadraticEnergy(1.0), start=X0, depth=3, beta=1.0, chains=600
    )
    s = np.linalg.svd(rec.final_point, compute_uv=False)
    assert (
        kstest(s[:, 0], law.cdf_max).pvalue > 0.01 and kstest(s[:, -1], law.cdf_min).pvalue > 0.01
    )


def test_matrix_euler_step_is_biased_near_det_zero_but_keeps_the_largest_singular_value_at_depth_2():
    """The plain Euler step in X: s_max passes at N = 2; s_min fails at N = 3 (bias ~ h^{1/N} near s = 0)."""
    assert _rle_pvalues(2, 2, "full", seed=5, scheme="matrix")[0] > 0.01
    assert _rle_pvalues(2, 3, "full", seed=5, scheme="matrix")[1] < 1e-4


@pytest.mark.parametrize("d,N", [(2, 2), (3, 3)])
def test_rle_without_the_divergence_term_fails_the_same_test(d, N):
    assert max(_rle_pvalues(d, N, "naive", seed=5)) < 1e-6


def test_rle_without_the_entropic_force_fails_the_same_test():
    assert max(_rle_pvalues(2, 3, "no_entropy", seed=5)) < 1e-4


# ------------------------------------------------------------- beta -> inf
def test_rle_converges_to_the_intrinsic_gradient_flow_as_beta_grows():
    rng = np.random.default_rng(2)
    target = np.array([[1.5, 0.2], [0.1, 0.8]])
    loss = QuadraticEnergy(0.5, target)
    X0 = rng.standard_normal((2, 2)) * 0.6
    N, T, h = 3, 1.0, 1e-3
    times = np.arange(0, 1001, 50) * h

    def flow(t, x):
        X = x.reshape(2, 2)
        return -metric_operator(X, loss.gradient(X), N).ravel()

    ref = solve_ivp(flow, (0, T), X0.ravel(), t_eval=times, rtol=1e-10, atol=1e-12).y.T.reshape(
        -1, 2, 2
    )
    gaps = []
    for beta in (1e2, 1e4, 1e6):
        rec = RiemannianLangevin(step=h, n_steps=1000, record_every=50, keep_samples=False).sample(
            5, loss=loss, start=X0, depth=N, beta=beta, metrics={"X": lambda st: st.point.copy()}
        )
        path = np.array(rec.metrics["X"])
        gaps.append(np.max(np.linalg.norm(path - ref, axis=(1, 2))))
    # The noise is O(beta^-1/2): a factor 10 per factor 100 in beta (measured 9.0 and 11.0) down to the
    # Euler floor O(h) (2.2e-3 at beta = 1e12).
    assert gaps[0] > 5 * gaps[1] and gaps[1] > 5 * gaps[2] and gaps[2] < 5e-3, gaps


def test_overparametrized_langevin_at_large_beta_follows_the_intrinsic_flow():
    target = np.array([[1.2, 0.0], [0.3, 0.7]])
    loss = QuadraticEnergy(0.5, target)
    X0 = np.array([[0.3, 0.1], [-0.05, 0.25]])
    N, h, steps = 3, 1e-3, 500

    def flow(t, x):
        X = x.reshape(2, 2)
        return -metric_operator(X, loss.gradient(X), N).ravel()

    ref = solve_ivp(flow, (0, h * steps), X0.ravel(), rtol=1e-10, atol=1e-12).y[:, -1].reshape(2, 2)
    rec = OverparametrizedLangevin(step=h, n_steps=steps, beta=1e12).sample(
        0, loss=loss, start=X0, depth=N
    )
    # Euler's error is C h + O(h^2): the run at h / 2 estimates it (Richardson), error(h) =
    # 2 |X_h - X_(h/2)| up to O(h) relative (a factor 2 allowed). The noise at beta = 1e12 adds
    # sqrt(2 h steps / beta) ~ 1e-6 per entry (10 of it allowed); the reference, rtol 1e-10.
    half = OverparametrizedLangevin(step=h / 2, n_steps=2 * steps, beta=1e12).sample(
        0, loss=loss, start=X0, depth=N
    )
    euler = 2 * np.linalg.norm(rec.final_point - half.final_point)
    noise = 2 * np.sqrt(2 * h * steps / 1e12)
    assert np.linalg.norm(rec.final_point - ref) <= 2 * euler + 10 * noise
    assert euler <= 1e-3  # guard: the flow moves 0.45, so this is a tight comparison
    W = rec.final_weights
    assert np.allclose(W[2] @ W[1] @ W[0], rec.final_point)


# ------------------------------------------------------ records and input
def test_records_are_reproducible_and_complete():
    X0 = np.array([[1.0, 0.2], [0.1, 0.7]])
    a = RiemannianMALA(step=0.05, n_steps=40, record_every=10).sample(
        11, loss=QuadraticEnergy(), start=X0, depth=2, beta=2.0, chains=3
    )
    b = RiemannianMALA(step=0.05, n_steps=40, record_every=10).sample(
        11, loss=QuadraticEnergy(), start=X0, depth=2, beta=2.0, chains=3
    )
    np.testing.assert_array_equal(a.final_point, b.final_point)
    assert a.final_point.shape == (3, 2, 2)
    assert a.iterations == [0, 10, 20, 30, 40] and a.n_iterations == 40
    assert set(a.metrics) == {"loss", "entropy", "free_energy"}
    assert 0.0 <= a.info["acceptance_rate"] <= 1.0 and a.info["seed"] == 11
    r = RiemannianLangevin(step=1e-3, n_steps=5).sample(
        1, loss=QuadraticEnergy(), start=X0, depth=2, beta=1.0
    )
    assert r.final_point.shape == (2, 2) and r.stop_reason == "max_iterations"
    loss, entropy = np.array(r.metrics["loss"]), np.array(r.metrics["entropy"])
    # the same difference, a rounding or two of its terms' size (it may cancel)
    scale = 4 * np.finfo(float).eps * np.max(np.abs(loss) + np.abs(entropy))
    np.testing.assert_allclose(r.metrics["free_energy"], loss - entropy / 1.0, rtol=0, atol=scale)
    r.to_dict()


def test_non_autograd_loss_is_evaluated_per_chain():
    from dlngeo import loss_from_autograd

    loss = loss_from_autograd(lambda Y: 0.5 * (Y**2).sum(), shape=(2, 2))
    a = RiemannianLangevin(step=1e-3, n_steps=20).sample(
        4, loss=loss, start=np.eye(2), depth=3, beta=1.0, chains=2
    )
    b = RiemannianLangevin(step=1e-3, n_steps=20).sample(
        4, loss=QuadraticEnergy(0.5), start=np.eye(2), depth=3, beta=1.0, chains=2
    )
    np.testing.assert_allclose(a.final_point, b.final_point, rtol=1e-12)


def test_divergence_stops_with_reason_not_nan():
    rec = RiemannianLangevin(step=1.0, n_steps=200).sample(
        0, loss=QuadraticEnergy(50.0), start=np.eye(2) * 2, depth=3, beta=1.0
    )
    assert rec.stop_reason == "diverged"
    assert np.all(np.isfinite(rec.final_point)) and rec.n_iterations < 200
    over = OverparametrizedLangevin(step=1.0, n_steps=200).sample(
        0, loss=QuadraticEnergy(50.0), start=np.eye(2) * 2, depth=3, beta=1.0
    )
    assert over.stop_reason == "diverged" and np.all(np.isfinite(over.final_point))


@pytest.mark.parametrize("cls", [RiemannianLangevin, RiemannianMALA, OverparametrizedLangevin])
def test_bad_input_names_the_argument(cls):
    run = lambda **kw: cls().sample(
        0, **{"loss": QuadraticEnergy(), "start": np.eye(2), "depth": 2, **kw}
    )  # noqa: E731
    for beta in (0.0, -1.0, np.inf, np.nan):
        with pytest.raises(ValueError, match="beta"):
            run(beta=beta)
    for step in (0.0, -1e-3, np.nan):
        with pytest.raises(ValueError, match="step"):
            run(step=step)
    with pytest.raises(ValueError, match="start must be finite"):
        run(start=np.array([[np.inf, 0.0], [0.0, 1.0]]))
    with pytest.raises(ValueError, match="start must have full rank"):
        run(start=np.zeros((2, 2)))
    with pytest.raises(ValueError, match="drift"):
        run(drift="geoopt")
    if cls is not OverparametrizedLangevin:
        with pytest.raises(ValueError, match="scheme"):
            run(scheme="milstein")
    with pytest.raises(ValueError, match="n_steps"):
        run(n_steps=-1)
    with pytest.raises(ValueError, match="unknown sampler option"):
        run(temperature=1.0)
    if cls is not RiemannianLangevin:
        with pytest.raises(NotImplementedError, match="low-rank"):
            run(start=(np.eye(2)[:, :1], np.array([1.0]), np.eye(2)[:1]))
    with pytest.raises(ValueError, match="beta"):
        cls(beta=0.0)


def test_plugin_registers_the_samplers():
    from dlngeo_plugins import thermodynamics as plugin

    got = {}
    plugin.dlngeo_register_samplers(
        register=lambda name, factory, description="": got.setdefault(name, factory)
    )
    assert set(got) == {"riemannian_langevin", "riemannian_mala", "overparametrized_langevin"}
    for name, factory in got.items():
        sampler = factory(step=1e-3, n_steps=3)
        assert sampler.kind == "langevin" and sampler.name == name
        rec = sampler.sample(0, loss=QuadraticEnergy(), start=np.eye(2), depth=2, beta=1.0)
        assert rec.method == name and rec.n_iterations == 3


def test_samplers_through_the_plugin_manager():
    import dlngeo

    sampler = dlngeo.create_sampler("riemannian_mala", step=0.05, n_steps=5)
    assert isinstance(sampler, RiemannianMALA)


def test_samplers_registered_as_solvers_run_on_a_task():
    from dlngeo_plugins import thermodynamics as plugin

    from dlngeo import DeepLinearNetwork
    from dlngeo.dynamics.base import Stopping, Task

    got = {}
    plugin.dlngeo_register_solvers(
        register=lambda name, factory, description="": got.setdefault(name, factory)
    )
    assert set(got) == {"riemannian_langevin", "riemannian_mala", "overparametrized_langevin"}
    net = DeepLinearNetwork((2, 3, 2))
    W0 = net.balanced(np.array([[0.9, 0.1], [0.0, 0.5]]), rng=0)
    task = Task(
        loss=QuadraticEnergy(0.5, np.diag([1.5, 0.8])),
        network=net,
        weights0=W0,
        metrics={"X": lambda st: np.array(st.point)},
    )
    seen = []
    for name, factory in got.items():
        method = factory(beta=1e8, step=1e-3)
        assert method.overparametrized == (name == "overparametrized_langevin")
        rec = method.run(
            task, Stopping(end_time=0.2), lambda state, record: seen.append(state.time)
        )
        # times: i * step or a sum of 200 steps, <= 200 eps / 2 relative
        assert (
            rec.stop_reason == "end_time"
            and rec.n_iterations == 200
            and rec.times[-1] == pytest.approx(0.2, rel=1e-13)
        )
        # the start and the final point are the product of the factors, up to its rounding
        # (or an SVD's for the intrinsic chain): ~ n eps ||X||, n <= 6
        X0 = net.product(W0)
        assert np.allclose(rec.metrics["X"][0], X0, rtol=0, atol=1e-14 * np.linalg.norm(X0))
        if name == "overparametrized_langevin":
            X = rec.final_point
            assert np.allclose(
                net.product(rec.final_weights), X, rtol=0, atol=1e-14 * np.linalg.norm(X)
            )
    assert seen and seen[-1] == pytest.approx(0.2, rel=1e-13)
    # a bottleneck network: riemannian_langevin runs on M_1
    net1 = DeepLinearNetwork((2, 1, 2))
    W1 = net1.balanced(np.array([[0.9, 0.3], [0.3, 0.1]]), rng=0)
    task1 = Task(loss=QuadraticEnergy(0.5, np.diag([1.5, 0.8])), network=net1, weights0=W1)
    rec = got["riemannian_langevin"](beta=10.0).run(task1, Stopping(max_iterations=20), None)
    assert rec.info["rank"] == 1 and len(rec.final_point[1]) == 1 and rec.n_iterations == 20
    with pytest.raises(ValueError, match="beta"):
        got["riemannian_mala"](beta=0.0)


# ---------------------------------------------------------- rank-r manifold
def _stiefel(rng, C, m, r):
    Q, R = np.linalg.qr(rng.standard_normal((C, m, r)))
    return Q * np.sign(np.diagonal(R, axis1=1, axis2=2))[:, None, :]


def test_lowrank_retraction_and_drift_match_the_geometry_modules():
    from dlngeo.geometry.fixed_rank import FixedRank
    from dlngeo.geometry.kernel import riemannian_gradient_tangent
    from dlngeo.thermodynamics.lowrank_langevin import lowrank_tangent_drift, retract

    rng = np.random.default_rng(3)
    C, m, n, r = 4, 5, 4, 2
    U, Vt = _stiefel(rng, C, m, r), np.swapaxes(_stiefel(rng, C, n, r), 1, 2)
    s = np.sort(rng.uniform(0.5, 2.0, (C, r)), axis=1)[:, ::-1].copy()
    G = rng.standard_normal((C, m, n))
    (dUp, dM, dVp), _, _ = lowrank_tangent_drift(U, s, Vt, G, 1.0, 3, None, "naive")
    Up = rng.standard_normal((C, m, r))
    Up -= U @ (np.swapaxes(U, 1, 2) @ Up)
    Vp = rng.standard_normal((C, n, r))
    Vp -= np.swapaxes(Vt, 1, 2) @ (Vt @ Vp)
    M = rng.standard_normal((C, r, r))
    Ur, sr, Vtr = retract(U, s, Vt, 0.1 * Up, 0.1 * M, 0.1 * Vp)
    manifold = FixedRank(m, n, r)
    for c in range(C):
        ref = riemannian_gradient_tangent(U[c], s[c], Vt[c], G[c], 3)
        for a, b in zip((dUp[c], dM[c], dVp[c]), ref):
            np.testing.assert_allclose(a, -b, atol=1e-12)
        from pymanopt.manifolds.fixed_rank import _FixedRankTangentVector

        point = manifold.retraction(
            manifold.point(U[c], s[c], Vt[c]),
            _FixedRankTangentVector(0.1 * Up[c], 0.1 * M[c], 0.1 * Vp[c]),
        )
        np.testing.assert_allclose(
            (Ur[c] * sr[c]) @ Vtr[c], (point[0] * point[1]) @ point[2], atol=1e-13
        )


def _lowrank_law_pvalues(m, n, r, N, widths, drift, seed=2, chains=600):
    law = SingularValueLaw(
        beta=1.0,
        depth=N,
        shape=(m, n),
        energy=lambda s: np.sum(s**2, -1),
        upper=5.0,
        n_grid=300 if r == 1 else 80,
        rank=r,
        widths=widths,
    )
    rng = np.random.default_rng(seed)
    start = (
        _stiefel(rng, chains, m, r),
        law.sample(rng, chains),
        np.swapaxes(_stiefel(rng, chains, n, r), 1, 2),
    )
    rec = RiemannianLangevin(
        widths=widths, drift=drift, step=1e-3, n_steps=600, record_every=600
    ).sample(seed, loss=QuadraticEnergy(1.0), start=start, depth=N, beta=1.0, chains=chains)
    assert rec.stop_reason == "max_iterations" and rec.info["rank"] == r
    s = rec.final_point[1]
    return kstest(s[:, 0], law.cdf_max).pvalue, kstest(s[:, -1], law.cdf_min).pvalue


@pytest.mark.parametrize("m,n,r,N,widths", [(2, 2, 1, 3, None), (3, 3, 2, 3, [4, 5])])
def test_lowrank_rle_keeps_the_law_on_the_rank_r_manifold(m, n, r, N, widths):
    """RLE on (M_r, g_N) (tangent drift + metric-projection retraction): KS on s_max and s_min."""
    assert min(_lowrank_law_pvalues(m, n, r, N, widths, "full")) > 0.01


def test_lowrank_rle_without_the_divergence_term_fails():
    assert max(_lowrank_law_pvalues(2, 2, 1, 3, None, "naive")) < 1e-6


def test_lowrank_rank_collapse_and_blow_up_stop_as_diverged():
    u, vt = np.eye(3)[:, :2], np.eye(3)[:2]
    collapse = RiemannianLangevin(step=1e-3, n_steps=10).sample(
        0, loss=QuadraticEnergy(), start=(u, np.array([1.0, 1e-14]), vt), depth=3, beta=1e30
    )
    assert collapse.stop_reason == "diverged" and collapse.n_iterations == 0
    blow = RiemannianLangevin(step=1.0, n_steps=200).sample(
        0, loss=QuadraticEnergy(50.0), start=(u, np.array([2.0, 1.0]), vt), depth=3, beta=1.0
    )
    assert blow.stop_reason == "diverged" and np.all(np.isfinite(blow.final_point[1]))
    with pytest.raises(ValueError, match="s > 0"):
        RiemannianLangevin().sample(
            0, loss=QuadraticEnergy(), start=(u, np.array([1.0, 0.0]), vt), depth=3
        )


# ------------------------------------------------------- the quadrature law
@pytest.mark.parametrize("shape", [(2, 2), (3, 2), (2, 4)])
def test_quadrature_law_at_depth_one_is_the_gaussian_matrix_law(shape):
    """N = 1: K = 1, S = 0, so X ~ exp(-beta ||X||^2) has i.i.d. N(0, 1/(2 beta)) entries: exact samples."""
    beta = 2.0
    law = SingularValueLaw(
        beta=beta,
        depth=1,
        shape=shape,
        energy=lambda s: np.sum(s**2, -1),
        upper=4.0,
        n_grid=200 if min(shape) == 2 else 60,
    )
    X = np.random.default_rng(0).standard_normal((20000, *shape)) / np.sqrt(2 * beta)
    s = np.linalg.svd(X, compute_uv=False)
    assert kstest(s[:, 0], law.cdf_max).pvalue > 0.01
    assert kstest(s[:, -1], law.cdf_min).pvalue > 0.01
    # and it has power: the law of X / 1.05 fails
    assert kstest(s[:, 0] / 1.05, law.cdf_max).pvalue < 1e-6


def test_quadrature_law_rejects_a_too_small_box():
    with pytest.raises(ValueError, match="upper"):
        SingularValueLaw(
            beta=1.0, depth=2, shape=(2, 2), energy=lambda s: np.sum(s**2, -1), upper=1.0
        )


# ------------------------------------------- a non-rotation-invariant energy
def _two_by_two_law(beta, depth, t=(1.5, 0.8), n=600, upper=3.0):
    r"""The law of X for E = |X - diag(t)|^2 / 2 on 2 x 2 matrices, reduced to two variables.

    X = a R(th1) + g R(th2) J (J = diag(1, -1), a, g >= 0): s = (a + g, |a - g|),
    det X = a^2 - g^2, ||X||^2 = 2(a^2 + g^2), <X, diag(t)> = 2(t+ a cos th1 + t- g cos th2),
    dX ~ a g da dg dth1 dth2. The angles are von Mises(kappa = 2 beta t+- (a, g)) given (a, g),
    and (a, g) has the density of log_density_singular_values times I0(k1) I0(k2).
    Returns the grid (a, g, k1, k2, weights) over both signs of a - g.
    """
    from scipy.special import i0e

    tp, tm = (t[0] + t[1]) / 2, (t[0] - t[1]) / 2
    u = (np.arange(n) + 0.5) * upper / n  # s1 = a + g
    f = (np.arange(n) + 0.5) / n  # s2 = u f^N (regularizes the s2^{-(N-1)/N} singularity)
    U, F = np.meshgrid(u, f, indexing="ij")
    S2 = U * F**depth
    jac = U * depth * F ** (depth - 1)
    logd = log_density_singular_values(
        np.stack((U, S2), axis=-1),
        beta=beta,
        depth=depth,
        shape=(2, 2),
        energy=lambda s: 0.5 * np.sum(s**2, axis=-1),
    )
    out = []
    for sign in (1.0, -1.0):  # det > 0: a > g
        a, g = (U + sign * S2) / 2, (U - sign * S2) / 2
        k1, k2 = 2 * beta * tp * a, 2 * beta * tm * g
        logw = logd + k1 + k2 + np.log(i0e(k1) * i0e(k2)) + np.log(jac)
        out.append((a.ravel(), g.ravel(), k1.ravel(), k2.ravel(), logw.ravel()))
    a, g, k1, k2, logw = (np.concatenate(z) for z in zip(*out))
    w = np.exp(logw - logw.max())
    return a, g, k1, k2, w / w.sum()


def _two_by_two_moments(a, g, k1, k2, w):
    from scipy.special import i0e, i1e

    pos = a > g
    x11 = a * i1e(k1) / i0e(k1) + g * i1e(k2) / i0e(k2)
    return {
        "X11|det>0": np.sum(w * x11 * pos) / np.sum(w * pos),
        "|X|^2|det>0": np.sum(w * 2 * (a**2 + g**2) * pos) / np.sum(w * pos),
        "P(det<0)": np.sum(w * ~pos),
    }


def _two_by_two_draw(rng, a, g, k1, k2, w, C):
    i = rng.choice(a.size, size=C, p=w)
    th1, th2 = rng.vonmises(0.0, k1[i]), rng.vonmises(0.0, k2[i])
    R = lambda th: np.stack(
        (np.stack((np.cos(th), -np.sin(th)), -1), np.stack((np.sin(th), np.cos(th)), -1)), -2
    )  # noqa: E731
    return a[i, None, None] * R(th1) + g[i, None, None] * R(th2) @ np.diag([1.0, -1.0])


def test_quadrature_of_the_two_by_two_law_reproduces_the_reference_numbers():
    # docs/math.md §6.3 (2 x 2, N = 2, beta = 6): E[X11 | det > 0] = 1.3934, P(det < 0) = 0.107
    m = _two_by_two_moments(*_two_by_two_law(6.0, 2, n=800))
    assert m["X11|det>0"] == pytest.approx(1.3934, abs=5e-4)
    assert m["P(det<0)"] == pytest.approx(0.107, abs=1e-3)


@pytest.mark.parametrize("sampler", ["mala", "rle"])
def test_samplers_keep_the_law_of_a_non_invariant_energy(sampler):
    """E = |X - diag(1.5, 0.8)|^2 / 2, N = 3, beta = 6: frames matter; start exactly at the law."""
    beta, N, C = 6.0, 3, 1000
    grid = _two_by_two_law(beta, N)
    ref = _two_by_two_moments(*grid)
    X0 = _two_by_two_draw(np.random.default_rng(0), *grid, C)
    loss = QuadraticEnergy(0.5, np.diag([1.5, 0.8]))
    if sampler == "mala":
        rec = RiemannianMALA(step=0.05, n_steps=200, record_every=200).sample(
            1, loss=loss, start=X0, depth=N, beta=beta, chains=C
        )
        assert rec.info["acceptance_rate"] > 0.5
    else:
        # the Euler bias here is ~2% of E|X|^2 at h = 1e-3 (2.5 sigma with 6000 chains), ~O(h)
        rec = RiemannianLangevin(step=5e-4, n_steps=800, record_every=800).sample(
            1, loss=loss, start=X0, depth=N, beta=beta, chains=C
        )
    X = rec.final_point
    pos = np.linalg.det(X) > 0
    x11, sq = X[pos, 0, 0], np.sum(X[pos] ** 2, axis=(1, 2))
    assert abs(x11.mean() - ref["X11|det>0"]) < 4 * x11.std() / np.sqrt(pos.sum())
    assert abs(sq.mean() - ref["|X|^2|det>0"]) < 4 * sq.std() / np.sqrt(pos.sum())
    p = 1 - pos.mean()
    assert abs(p - ref["P(det<0)"]) < 4 * np.sqrt(ref["P(det<0)"] * (1 - ref["P(det<0)"]) / C)
