"""The flows and descents of dlngeo.dynamics against each other and against the theory (docs/math.md §2-3)."""

from __future__ import annotations

import numpy as np
import pytest

import dlngeo
from dlngeo.dynamics.base import Stopping, Task
from dlngeo.dynamics.driver import check_record_options
from dlngeo.dynamics.intrinsic import IntrinsicFlow, lowrank_start, truncate
from dlngeo.dynamics.overparametrized import (
    OverparametrizedFlow,
    OverparametrizedGD,
    factor_loss_and_gradients,
)
from dlngeo.dynamics.record import STOP_REASONS
from dlngeo.dynamics.riemannian import RiemannianGD
from dlngeo.losses import Loss
from dlngeo.lowrank import to_dense


class Quadratic(Loss):
    """E(X) = ½‖X − Y‖² (fast, no autograd)."""

    name = "quadratic"

    def __init__(self, Y: np.ndarray):
        self.Y = Y
        self.shape = Y.shape

    def value(self, X):
        return self.value_and_gradient(X)[0]

    def gradient(self, X):
        return self.value_and_gradient(X)[1]

    def value_and_gradient(self, X):
        R = to_dense(X) - self.Y
        return 0.5 * float(np.sum(R * R)), R


class Repulsive(Loss):
    """E(X) = −½‖X‖²: the flow blows up (in finite time for N ≥ 2)."""

    name = "repulsive"

    def value(self, X):
        return -0.5 * float(np.sum(to_dense(X) ** 2))

    def gradient(self, X):
        return -to_dense(X)


def rel(a, b) -> float:
    a, b = to_dense(a), to_dense(b)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def make_task(dims, rank, *, seed=0, scale=0.3, balanced=True) -> Task:
    rng = np.random.default_rng(seed)
    net = dlngeo.DeepLinearNetwork(dims)
    m, n = net.output_shape
    Y = rng.standard_normal((m, n))
    if balanced:
        X0 = scale * rng.standard_normal((m, rank)) @ rng.standard_normal((rank, n))
        weights = net.balanced(X0, rng=seed + 1)
    else:
        weights = [scale * rng.standard_normal(shape) for shape in net.shapes]
    return Task(loss=Quadratic(Y), network=net, weights0=weights, rank=rank)


FULL = ((4, 4, 4, 4), 4)  # square, full rank, depth 3
BOTTLENECK = ((5, 3, 2, 4), 2)  # 4 x 5 end-to-end, rank <= 2, depth 3
T = 2.0
GRID = np.linspace(0.0, T, 5)


def _flow_runs(task, rtol):
    stopping = Stopping(max_iterations=None, end_time=T)
    atol = 1e-2 * rtol
    return {
        "over": OverparametrizedFlow(
            integrator="DOP853", rtol=rtol, atol=atol, record_times=GRID
        ).run(task, stopping),
        "dense": IntrinsicFlow(
            representation="dense", integrator="DOP853", rtol=rtol, atol=atol, record_times=GRID
        ).run(task, stopping),
        "lowrank": IntrinsicFlow(
            representation="lowrank", rtol=rtol, atol=atol, record_times=GRID
        ).run(task, stopping),
    }


@pytest.fixture(scope="module")
def flows():
    """Factor flow, dense and low-rank intrinsic flows (rtol 1e-10) on both networks.

    Each is also run at rtol 1e-12 (``"ref"``): the global error follows the
    tolerance proportionally, so the difference estimates the rtol 1e-10 run's
    global error (``_error``). Two flows are then compared at K = 10 times the
    sum of their estimated errors (K for the estimate's own error), plus rounding.
    """
    out = {}
    for key, (dims, rank) in (("full", FULL), ("bottleneck", BOTTLENECK)):
        task = make_task(dims, rank)
        task.metrics = {"X": lambda state: state.dense().copy()}
        out[key] = {"task": task, **_flow_runs(task, 1e-10), "ref": _flow_runs(task, 1e-12)}
    return out


K = 10
EPS = np.finfo(float).eps


def _error(runs, name):
    """Estimated relative global error of ``runs[name]`` at each grid time (see ``flows``)."""
    run, ref = runs[name], runs["ref"][name]
    return np.array([rel(a, b) for a, b in zip(run.metrics["X"], ref.metrics["X"])])


def _agree(runs, a, b, guard):
    """``runs[a]`` and ``runs[b]`` agree at every grid time to K x their estimated errors + rounding."""
    gaps = np.array([rel(x, y) for x, y in zip(runs[a].metrics["X"], runs[b].metrics["X"])])
    bound = K * (_error(runs, a) + _error(runs, b)) + 16 * EPS
    assert np.all(gaps <= bound), (gaps, bound)
    assert bound.max() <= guard, bound  # the comparison is as tight as the tolerances promise


# ---------------------------------------------------------------- flows agree
@pytest.mark.parametrize("case", ["full", "bottleneck"])
def test_balanced_start_intrinsic_flow_equals_factor_flow(flows, case):
    """Arora, Cohen & Hazan 2018, Thm 1: phi(W(t)) = X(t) from a balanced start."""
    runs = flows[case]
    over, dense = runs["over"], runs["dense"]
    assert over.stop_reason == dense.stop_reason == "end_time"
    assert over.times == dense.times == list(GRID)  # both sampled on the flow-time grid
    # At every grid time (the solvers' dense outputs), ||phi(W(t)) - X(t)|| / ||X(t)||, at the
    # flows' estimated errors: rtol 1e-10 over T = 2 gives ~1e-9. The dense flow keeps the rank
    # of its start, so on the bottleneck no error-level singular value enters K: as tight as full.
    _agree(runs, "over", "dense", guard=1e-7)
    assert rel(over.final_point, dense.final_point) == pytest.approx(
        rel(over.metrics["X"][-1], dense.metrics["X"][-1]), rel=1e-6, abs=1e-15
    )  # the final points are the last grid samples
    # The flow moved: the check is not vacuous.
    assert rel(over.final_point, runs["task"].X0) > 0.1


def test_lowrank_intrinsic_flow_equals_dense_on_bottleneck(flows):
    runs = flows["bottleneck"]
    low, dense = runs["lowrank"], runs["dense"]
    assert low.info["representation"] == "lowrank" and dense.info["representation"] == "dense"
    assert low.times == list(GRID)
    _agree(runs, "lowrank", "dense", guard=1e-5)  # the dense flow's error-level e^(2/N), as above
    _agree(runs, "lowrank", "over", guard=1e-7)
    u, s, vt = low.final_point
    assert u.shape == (4, 2) and s.shape == (2,) and vt.shape == (2, 5)
    np.testing.assert_allclose(u.T @ u, np.eye(2), atol=1e-12)
    assert low.info["start_truncation"] <= 1e-12  # a balanced rank-2 start is exactly on M_2


def test_lowrank_flow_dense_output_matches_grid(flows):
    """Grid samples come from the retracted interpolant: compare with the factor flow's dense output."""
    runs = flows["bottleneck"]
    low = runs["lowrank"]
    # Interior grid times fall inside steps: interpolated, retracted, and still exact to the
    # tolerance (the estimated errors include the interpolation's).
    assert set(low.iterations) != set(range(len(low.iterations)))
    _agree(runs, "lowrank", "over", guard=1e-7)


def test_unbalanced_start_shows_a_gap():
    """Off the balanced manifold the factor flow is not the intrinsic flow (the comparison's point)."""
    task = make_task(*FULL, balanced=False, scale=0.7, seed=3)
    stopping = Stopping(max_iterations=None, end_time=1.0)
    over = OverparametrizedFlow(rtol=1e-10, atol=1e-12).run(task, stopping)
    dense = IntrinsicFlow(representation="dense", rtol=1e-10, atol=1e-12).run(task, stopping)
    assert rel(over.final_point, dense.final_point) > 1e-3


# ---------------------------------------------------------------- discrete methods track the flow
def test_gradient_descent_tracks_flow_to_first_order(flows):
    """‖φ(W_GD(T)) − X(T)‖ = O(η): halving η halves the gap."""
    runs = flows["full"]
    task, reference = runs["task"], runs["over"].final_point
    gaps = []
    for eta in (0.02, 0.01, 0.005):
        record = OverparametrizedGD(step=eta).run(task, Stopping(max_iterations=None, end_time=T))
        assert record.stop_reason == "end_time"
        assert record.times[-1] == pytest.approx(T, rel=1e-12)
        assert record.n_iterations == round(T / eta)
        np.testing.assert_allclose(record.times, eta * np.asarray(record.iterations), rtol=1e-14)
        gaps.append(rel(record.final_point, reference))
    # Euler's global error C eta + D eta^2 gives q = gap(eta) / gap(eta / 2) = 2 + (D / C) eta:
    # the window allows |D / C| eta <= 0.1 at the largest step. The reference's error
    # (rtol 1e-10, ~1e-9) and rounding move q by < 1e-5.
    ratios = [gaps[0] / gaps[1], gaps[1] / gaps[2]]
    assert all(1.9 <= q <= 2.1 for q in ratios), (gaps, ratios)
    assert gaps[-1] < 1e-2


def test_riemannian_gd_is_euler_of_intrinsic_flow(flows):
    runs = flows["bottleneck"]
    task, reference = runs["task"], runs["dense"].final_point
    gaps = [
        rel(
            RiemannianGD(step=eta).run(task, Stopping(max_iterations=None, end_time=T)).final_point,
            reference,
        )
        for eta in (0.01, 0.005, 0.0025)
    ]
    # q = 2 + (D / C) eta + O(eta^2) as in the factor-GD test above: the window allows
    # |D / C| eta <= 0.1 at the largest step, and the deviation from 2 must halve with eta
    # (up to the O(eta^2) term, a quarter of it at most): the error is first order.
    ratios = [gaps[0] / gaps[1], gaps[1] / gaps[2]]
    assert all(1.9 <= q <= 2.1 for q in ratios), (gaps, ratios)
    assert abs((ratios[0] - 2) - 2 * (ratios[1] - 2)) <= 0.25 * abs(ratios[0] - 2), ratios


def test_gd_conserves_imbalance_to_second_order():
    """G_k drifts by O(η²) per step (docs/math.md §2): over a fixed time, O(η)."""
    task = make_task(*FULL, balanced=False, scale=0.5, seed=4)
    net = task.network
    G0 = net.imbalance(task.weights0)
    drift = []
    for eta in (0.01, 0.005):
        W = (
            OverparametrizedGD(step=eta)
            .run(task, Stopping(max_iterations=None, end_time=0.5))
            .final_weights
        )
        drift.append(max(np.linalg.norm(a - b) for a, b in zip(net.imbalance(W), G0)))
    # O(eta) drift over a fixed time: halving eta halves it, 2 (1 + O(eta)) with |O(eta)| <= 0.1.
    assert 1.8 <= drift[0] / drift[1] <= 2.2


def test_factor_gradients_match_network_gradients():
    task = make_task(*BOTTLENECK, balanced=False)
    W = task.weights0
    X, value, grads = factor_loss_and_gradients(task.network, W, task.loss)
    # The same products and sums in other orders: rounding (a few eps per factor).
    np.testing.assert_allclose(X, task.network.product(W), rtol=1e-14)
    assert value == pytest.approx(task.loss.value(X), rel=1e-14)
    for a, b in zip(grads, task.network.gradients(W, task.loss.gradient(X))):
        np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-15)


# ---------------------------------------------------------------- stochastic GD
def test_sgd_with_exact_sampler_and_no_noise_is_gd():
    task = make_task(*FULL)
    stopping = Stopping(max_iterations=20)
    gd = OverparametrizedGD(step=0.01).run(task, stopping)
    exact = OverparametrizedGD(
        step=0.01, gradient_sampler=lambda loss, X, rng: loss.gradient(X)
    ).run(task, stopping)
    for a, b in zip(gd.final_weights, exact.final_weights):
        np.testing.assert_array_equal(a, b)


def test_noise_is_seeded_and_has_the_right_size():
    task = make_task(*FULL)
    stopping = Stopping(max_iterations=50)
    a = OverparametrizedGD(step=0.01, noise=0.1, seed=7).run(task, stopping)
    b = OverparametrizedGD(step=0.01, noise=0.1, seed=7).run(task, stopping)
    c = OverparametrizedGD(step=0.01, noise=0.1, seed=8).run(task, stopping)
    clean = OverparametrizedGD(step=0.01).run(task, stopping)
    for x, y in zip(a.final_weights, b.final_weights):
        np.testing.assert_array_equal(x, y)
    assert any(not np.array_equal(x, y) for x, y in zip(a.final_weights, c.final_weights))
    # Accumulated noise after t = 0.5: std 0.1 * sqrt(0.5) per entry (to first order the
    # drift is the same). 16*3 entries: the RMS deviation is within 30 % of it.
    dev = np.concatenate([(x - y).ravel() for x, y in zip(a.final_weights, clean.final_weights)])
    assert 0.7 * 0.1 * np.sqrt(0.5) < np.sqrt(np.mean(dev**2)) < 1.3 * 0.1 * np.sqrt(0.5)


# ---------------------------------------------------------------- stopping and records
def test_stop_reason_codes():
    task = make_task(*FULL)
    gd = OverparametrizedGD(step=0.05)
    assert gd.run(task, Stopping(max_iterations=7)).stop_reason == "max_iterations"
    r = gd.run(task, Stopping(max_iterations=None, loss_below=1e-8))
    assert r.stop_reason == "loss_below" and r.final_loss <= 1e-8
    assert r.metrics["loss"][-2] > 1e-8  # stopped at the first iterate below
    r = gd.run(task, Stopping(max_iterations=None, gradient_norm_below=1e-5))
    assert r.stop_reason == "gradient_norm_below"
    r = gd.run(task, Stopping(max_iterations=None, step_below=1e-6))
    assert r.stop_reason == "step_below"
    # The loss decreases geometrically to 0: it stalls only at rounding, after the
    # gradient is stationary; the stall test alone, without the stationary one.
    no_stationary = dict(gradient_norm_rtol=None, gradient_norm_atol=None)
    r = gd.run(
        task,
        Stopping(max_iterations=None, stall_window=5, stall_tolerance=1e-3, **no_stationary),
    )
    assert r.stop_reason == "stalled"
    assert gd.run(task, Stopping(max_iterations=None, max_time=0.0)).stop_reason == "max_time"
    r = IntrinsicFlow(representation="lowrank").run(
        task, Stopping(max_iterations=None, end_time=0.3)
    )
    assert r.stop_reason == "end_time" and r.times[-1] == pytest.approx(0.3, rel=1e-12)
    r = OverparametrizedFlow(end_time=0.3).run(task, Stopping(max_iterations=None))
    assert r.stop_reason == "end_time" and r.times[-1] == pytest.approx(0.3, rel=1e-12)


@pytest.mark.parametrize(
    "method",
    [
        OverparametrizedGD(step=10.0),
        RiemannianGD(step=10.0),
        RiemannianGD(step=10.0, metric="embedded"),
    ],
    ids=["gd", "rgd", "rgd-embedded"],
)
def test_huge_step_diverges_without_raising(method):
    task = make_task(*FULL)
    task.metrics = {"top_singular_value": lambda state: float(state.singular_values()[0])}
    record = method.run(task, Stopping(max_iterations=10_000))
    assert record.stop_reason == "diverged"
    assert record.n_iterations < 10_000
    assert (
        len(record.times)
        == len(record.metrics["loss"])
        == len(record.metrics["top_singular_value"])
    )


@pytest.mark.parametrize("representation", ["dense", "lowrank"])
def test_blowing_up_flow_stops_with_diverged(representation):
    task = make_task(*FULL)
    task.loss = Repulsive()
    record = IntrinsicFlow(representation=representation, rtol=1e-4, atol=1e-8).run(
        task, Stopping(max_iterations=100_000, end_time=100.0)
    )
    assert record.stop_reason == "diverged"
    assert record.times[-1] < 100.0


def test_factor_flow_blow_up_stops_with_diverged():
    task = make_task(*FULL)
    task.loss = Repulsive()
    record = OverparametrizedFlow(rtol=1e-4, atol=1e-8).run(
        task, Stopping(max_iterations=100_000, end_time=100.0)
    )
    assert record.stop_reason == "diverged"


def test_record_every_and_callback():
    task = make_task(*FULL)
    seen = []
    record = OverparametrizedGD(step=0.01, record_every=10).run(
        task,
        Stopping(max_iterations=45),
        callback=lambda state, rec: seen.append(
            (state.iteration, state.time, state.weights is not None)
        ),
    )
    assert record.iterations == [0, 10, 20, 30, 40, 45]
    assert [s[0] for s in seen] == record.iterations
    assert all(s[2] for s in seen)
    # times: i * step, or a sum of <= 45 steps: <= 45 eps / 2 relative
    np.testing.assert_allclose(record.times, 0.01 * np.array(record.iterations), rtol=1e-14)
    assert record.evaluations == {"loss": 46, "gradient": 46}
    assert record.stop_reason in STOP_REASONS
    summary = record.to_dict()
    assert summary["time_kind"] == "flow" and summary["iterations"] == 45


def test_record_times_on_discrete_method_take_first_iterate_after():
    task = make_task(*FULL)
    record = OverparametrizedGD(step=0.03, record_times=[0.0, 0.1, 0.5]).run(
        task, Stopping(max_iterations=None, end_time=0.6)
    )
    assert record.iterations == [0, 4, 17, 20]
    # times: i * step, or a sum of <= 20 steps: <= 20 eps / 2 relative
    np.testing.assert_allclose(record.times, [0.0, 0.12, 0.51, 0.6], rtol=1e-14)


def test_record_options_are_validated():
    with pytest.raises(ValueError, match="record_every"):
        check_record_options(0, None)
    with pytest.raises(ValueError, match="record_times"):
        check_record_options(1, [0.5, 0.1])


def test_lowrank_start_from_factors_without_the_product():
    task = make_task((30, 40, 3, 50, 20), 3, balanced=False, scale=0.5)
    (u, s, vt), truncation = lowrank_start(task)
    # rounding: singular values to ~ n eps s_1 (n = 50), i.e. n eps s_1 / s_i relative (1e-12
    # for s_1 / s_i <= 90); X0 has rank 3 (bottleneck), so the discarded part is rounding only
    np.testing.assert_allclose(
        (u * s) @ vt, task.X0, rtol=1e-12, atol=1e-13 * np.linalg.norm(task.X0)
    )
    assert truncation <= 1e-14
    (u2, s2, vt2), truncation2 = lowrank_start(task, rank=2)
    u_, s_, vt_ = np.linalg.svd(task.X0)
    np.testing.assert_allclose(s2, s_[:2], rtol=1e-12)
    assert truncation2 == pytest.approx(s_[2] / np.linalg.norm(s_), rel=1e-10)


def test_truncate_is_the_best_rank_r_approximation():
    rng = np.random.default_rng(2)
    L, R = rng.standard_normal((12, 6)), rng.standard_normal((9, 6))
    u, s, vt = truncate(L, R, 3)
    U, S, Vt = np.linalg.svd(L @ R.T)
    # rounding: ~ n eps ||X|| s_1 / (s_3 - s_4) for the rank-3 subspace, n = 12
    np.testing.assert_allclose((u * s) @ vt, (U[:, :3] * S[:3]) @ Vt[:3], atol=1e-12)


@pytest.mark.parametrize("integrator, order", [("RK23", 3), ("RK45", 5)])
def test_projected_runge_kutta_keeps_its_order(integrator, order):
    """Constant steps (first_step = max_step = h, tolerances that accept every step):
    the retracted scheme converges with the order of its tableau (Kieri & Vandereycken 2019)."""
    task = make_task(*BOTTLENECK)
    stopping = Stopping(max_iterations=None, end_time=1.0)
    # Reference: the factor flow from the balanced start (smooth, and exact by ACH18 Thm 1).
    reference = (
        OverparametrizedFlow(integrator="DOP853", rtol=1e-13, atol=1e-15)
        .run(task, stopping)
        .final_point
    )
    errors = []
    for steps in (10, 20, 40):
        h = 1.0 / steps
        record = IntrinsicFlow(
            representation="lowrank",
            integrator=integrator,
            rtol=1e6,
            atol=1e6,
            first_step=h,
            max_step=h,
        ).run(task, stopping)
        assert record.info["rejected_steps"] == 0 and steps <= record.n_iterations <= steps + 1
        errors.append(rel(record.final_point, reference))
    slopes = np.log2(np.array(errors[:-1]) / np.array(errors[1:]))
    # The slopes estimate an integer, the order: with error C h^p (1 + g h + O(h^2)) a slope
    # over (h, h/2) is p + g h / (2 ln 2) + O(h^2), so its O(h) part halves with h and the
    # extrapolation 2 s_2 - s_1 removes it. The test is that the nearest integer is the
    # tableau's order: |estimate - p| < 1/2, the boundary between p and p - 1 (a lost order).
    estimate = 2 * slopes[1] - slopes[0]
    assert abs(estimate - order) < 0.5, (errors, slopes, estimate)
    assert np.all(slopes > order - 0.5), (errors, slopes)  # and no slope says p - 1


@pytest.mark.parametrize("name", ["overparametrized_flow", "intrinsic_flow"])
def test_a_flow_evaluates_its_loss_between_records_only_when_a_criterion_needs_it(name):
    """The driver observes an ODE stepper's accepted point only where it records, unless the
    stopping needs the loss or the gradient there: same trajectory, fewer right-hand sides."""
    rng = np.random.default_rng(0)
    net = dlngeo.DeepLinearNetwork([4, 3, 3, 5])
    loss = dlngeo.create_loss("regression", target=rng.standard_normal((5, 4)))
    task = Task(loss=loss, network=net, weights0=[0.5 * rng.standard_normal(s) for s in net.shapes])
    options = {"integrator": "LSODA", "record_times": [0.1, 0.5, 1.0]}
    if name == "intrinsic_flow":
        options["representation"] = "dense"
    solver = dlngeo.create_solver(name, **options)
    off = dict(gradient_norm_rtol=None, gradient_norm_atol=None, max_iterations=None)
    lazy = solver.run(task, Stopping(end_time=1.0, divergence_factor=None, **off))
    eager = solver.run(task, Stopping(end_time=1.0, divergence_factor=1e300, **off))
    assert lazy.stop_reason == eager.stop_reason == "end_time"
    assert lazy.times == eager.times and lazy.n_iterations == eager.n_iterations
    assert lazy.metrics["loss"] == eager.metrics["loss"]  # the same steps, bit for bit
    # LSODA's last evaluation is not at the accepted point: observing it costs one per step.
    assert lazy.evaluations["gradient"] < eager.evaluations["gradient"]


def test_stopping_only_turns_every_default_off_but_the_given_criteria():
    only = Stopping.only(end_time=2.0)
    assert (only.end_time, only.max_iterations, only.divergence_factor) == (2.0, None, None)
    assert only.gradient_norm_rtol is None and only.gradient_norm_atol is None
    assert Stopping.only(loss_below=1e-3, max_iterations=5).max_iterations == 5
    with pytest.raises(ValueError, match="stopping.end_time"):
        Stopping.only(end_time=-1.0)
