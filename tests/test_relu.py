"""ReLU networks: backpropagation, the linear case, the conserved per-unit balance, the linearisation horizon.

Claims (Du, Hu & Lee 2018; Basu, Mukherjee & Vasudevan 2019):
* ``activation = "linear"`` is today's deep linear network, bit for bit; a
  leaky ReLU of slope 1 runs the ReLU kernel on a linear network and agrees to rounding;
* the ReLU gradient flow conserves every hidden unit's balance (incoming minus
  outgoing squared norm) while G_k moves; GD changes it by exactly
  eta^2 (||d_in||^2 - ||d_out||^2) per step;
* inside the activation region the network is the gated deep linear network:
  the true and the linearised flow agree until the horizon, which is located
  within one dense-output query and within one step of an independent run;
* one sample with a fixed pattern: the deep linear network on the active units.
"""

from __future__ import annotations

import autograd
import autograd.numpy as anp
import numpy as np
import pytest
from dlngeo_plugins.losses import LpRegression, Regression
from richardson import central_difference_bound
from scipy.integrate import solve_ivp

import dlngeo
from dlngeo.dynamics import OverparametrizedFlow, OverparametrizedGD, Stopping, Task
from dlngeo.dynamics.linearisation import initial_signs, linearisation, margin
from dlngeo.dynamics.rk4 import RK4
from dlngeo.relu import OutputLoss, ReLUNetwork, make_network, unit_balance

EPS = np.finfo(float).eps


def _unpack(y, shapes):
    ends = np.cumsum([a * b for a, b in shapes])
    return [y[e - a * b : e].reshape(a, b) for e, (a, b) in zip(ends, shapes)]


def _problem(seed=5, dims=(4, 6, 5, 3), b=8, scale=0.5, activation="relu", slope=None):
    rng = np.random.default_rng(seed)
    net = ReLUNetwork(dims, activation, slope)
    A = rng.standard_normal((dims[0], b))
    B = rng.standard_normal((dims[-1], dims[0])) @ A
    W = [scale * rng.standard_normal(s) / np.sqrt(s[1]) for s in net.shapes]
    return net, OutputLoss(Regression(A=A, B=B)), W


def _reference_loss(A, B, slope, p=2):
    def loss(*ws):
        h = A
        for w in ws[:-1]:
            z = anp.dot(w, h)
            h = anp.where(z > 0, z, slope * z)
        r = anp.dot(ws[-1], h) - B
        return anp.sum(anp.abs(r) ** p) / (p * A.shape[1])

    return loss


@pytest.mark.parametrize(
    "activation,slope,p", [("relu", None, 2), ("leaky_relu", 0.2, 2), ("relu", None, 4)]
)
def test_backpropagation_matches_autograd(activation, slope, p):
    rng = np.random.default_rng(1)
    net = ReLUNetwork((5, 7, 6, 4, 3), activation, slope)
    A, B = rng.standard_normal((5, 20)), rng.standard_normal((3, 20))
    base = Regression(A=A, B=B) if p == 2 else LpRegression(p=p, A=A, B=B)
    W = [rng.standard_normal(s) / np.sqrt(s[1]) for s in net.shapes]
    F, value, grads = net.loss_and_gradients(W, OutputLoss(base))
    reference = _reference_loss(A, B, net.slope, p)
    assert value == pytest.approx(
        float(reference(*W)), rel=1e-13
    )  # rounding of two summation orders
    for k, g in enumerate(grads):
        ref = autograd.grad(reference, k)(*W)
        # Same products in another order: rounding, eps times the size of the terms summed.
        assert np.linalg.norm(g - ref) <= 1e3 * EPS * max(1.0, np.linalg.norm(ref)), k
    assert F.shape == (3, 20)
    # The Hessian on the outputs against a central difference of the gradient, h = 1e-5:
    # truncation estimated by Richardson (tests/richardson.py; zero for p = 2), rounding: each
    # entry of g to ~4 eps relative (a power and a product), two evaluations, over 2h.
    loss = OutputLoss(base)
    Z = rng.standard_normal(F.shape)
    g_norm = np.linalg.norm(loss.gradient(F))

    def difference(h):
        return (loss.gradient(F + h * Z) - loss.gradient(F - h * Z)) / (2 * h)

    fd, bound = central_difference_bound(difference, 1e-5, 4 * EPS * g_norm / 1e-5)
    hvp = loss.hessian_vector_product(F, Z)
    assert np.linalg.norm(hvp - fd) <= bound, (np.linalg.norm(hvp - fd), bound)
    assert bound <= 1e-6 * np.linalg.norm(hvp)  # guard: the check resolves HZ to 1e-6


def test_make_network_and_bad_input():
    assert type(make_network((3, 4, 2))) is dlngeo.DeepLinearNetwork
    assert make_network((3, 4, 2), "leaky_relu", 0.1).slope == 0.1
    with pytest.raises(ValueError, match="activation"):
        make_network((3, 4, 2), "tanh")
    with pytest.raises(ValueError, match="slope"):
        make_network((3, 4, 2), "linear", 0.1)
    with pytest.raises(ValueError, match="slope"):
        ReLUNetwork((3, 4, 2), "relu", 0.5)
    with pytest.raises(ValueError, match="slope"):
        ReLUNetwork((3, 4, 2), "leaky_relu", float("nan"))
    net = ReLUNetwork((3, 4, 2))
    with pytest.raises(ValueError, match="loss"):
        Task(
            loss=Regression(target=np.ones((2, 3))),
            network=net,
            weights0=[np.ones((4, 3)), np.ones((2, 4))],
        )
    with pytest.raises(ValueError, match="end-to-end"):
        net.product([np.ones((4, 3)), np.ones((2, 4))])
    with pytest.raises(ValueError, match="inputs"):
        net.outputs([np.ones((4, 3)), np.ones((2, 4))], np.ones((2, 5)))
    with pytest.raises(ValueError, match="gates"):
        net.outputs([np.ones((4, 3)), np.ones((2, 4))], np.ones((3, 5)), [np.ones((4, 4))])
    with pytest.raises(ValueError, match="output"):
        OutputLoss(
            dlngeo.create_loss("matrix_completion", rows=[0], cols=[0], values=[1.0], shape=(2, 3))
        )


def test_patterns_gates_and_linearised_matrices():
    net, loss, W = _problem()
    A = loss.inputs
    Z = net.pre_activations(W, A)
    P, G = net.patterns(W, A), net.gates(W, A)
    assert [p.shape for p in P] == [(6, 8), (5, 8)]
    assert all(
        np.array_equal(p, z > 0) and np.array_equal(g, p.astype(float)) for p, z, g in zip(P, Z, G)
    )
    # Inside the region the network is exactly the gated linear network, sample by sample.
    X = net.linearised_matrices(W, G)
    F = net.outputs(W, A)
    assert np.array_equal(net.outputs(W, A, G), F)  # the same kernel: bit for bit
    np.testing.assert_allclose(
        np.einsum("bmn,nb->mb", X, A), F, rtol=0, atol=1e2 * EPS * np.abs(F).max()
    )


# ------------------------------------------------------------------ the linear case
def _regression_config(**network):
    config = dlngeo.experiment.load_config(["examples/regression.toml"], base={})
    config["network"].update(network)
    config["methods"] = {
        "overparametrized_gd": {"step": 0.01, "record_every": 50},
        "overparametrized_flow": {"record_every": 5, "rtol": 1e-8, "atol": 1e-10},
        "intrinsic_flow": {"representation": "dense"},
    }
    config["stopping"] = {"end_time": 4.0, "max_iterations": 100000}
    config["metrics"] = ["singular_values", "imbalance", "layer_norms"]
    return config


def test_linear_activation_is_todays_code_path_bit_for_bit():
    today = dlngeo.compare(_regression_config())
    linear = dlngeo.compare(_regression_config(activation="linear"))
    for label, record in today.records.items():
        other = linear.records[label]
        assert other.times == record.times and other.n_iterations == record.n_iterations
        for name, values in record.metrics.items():
            assert all(np.array_equal(a, b) for a, b in zip(values, other.metrics[name])), (
                label,
                name,
            )
        assert np.array_equal(other.final_point, record.final_point)
    assert linear.trajectory_gap[0]["gap"] == today.trajectory_gap[0]["gap"]


def test_leaky_slope_one_runs_the_relu_kernel_on_a_linear_network():
    rng = np.random.default_rng(3)
    dims = (4, 6, 5, 3)
    A, B = rng.standard_normal((4, 30)), rng.standard_normal((3, 30))
    W0 = [0.5 * rng.standard_normal(s) / np.sqrt(s[1]) for s in zip(dims[1:], dims[:-1])]
    linear, leaky = make_network(dims), make_network(dims, "leaky_relu", 1.0)
    regression = Regression(A=A, B=B)
    run = OverparametrizedGD(step=0.05, record_every=10)
    stop = Stopping(max_iterations=50)
    ref = run.run(Task(loss=regression, network=linear, weights0=W0), stop)
    out = run.run(Task(loss=OutputLoss(regression), network=leaky, weights0=W0), stop)
    # 50 steps of a map with Lipschitz constant ~1 + eta ||Hessian|| (~1.1 here), each
    # rounding the products in another order (relative error ~ depth * eps): far below 1e-12.
    for a, b in zip(ref.final_weights, out.final_weights):
        assert np.linalg.norm(a - b) <= 1e-12 * np.linalg.norm(a)
    np.testing.assert_allclose(out.metrics["loss"], ref.metrics["loss"], rtol=1e-12)


# ------------------------------------------------------------------ invariants
def test_gd_per_step_identity_for_units_and_layers():
    """Delta(in_j - out_j) = eta^2 (||d W_k[j,:]||^2 - ||d W_{k+1}[:,j]||^2), exactly, every step."""
    net, loss, W0 = _problem(seed=2, b=30, scale=1.0)
    eta, weights = 0.05, []
    OverparametrizedGD(step=eta).run(
        Task(loss=loss, network=net, weights0=W0),
        Stopping(max_iterations=200),
        lambda state, record: weights.append(state.weights),
    )
    assert len(weights) == 201
    for W, W_next in zip(weights[:-1], weights[1:]):
        grads = net.loss_and_gradients(W, loss)[2]
        for k in range(net.depth - 1):
            lhs = unit_balance(W_next)[k] - unit_balance(W)[k]
            rhs = eta**2 * (np.sum(grads[k] ** 2, axis=1) - np.sum(grads[k + 1] ** 2, axis=0))
            # Rounding: sums of d squares (Higham's gamma_d) of rows/columns of W and of
            # the update W - eta g (one rounding per entry), each ~ (d + 2) eps ||.||^2.
            scale = np.sum(W[k] ** 2, axis=1) + np.sum(W[k + 1] ** 2, axis=0)
            d = max(W[k].shape[1], W[k + 1].shape[0]) + 2
            assert np.all(np.abs(lhs - rhs) <= 4 * d * EPS * scale), k
    # G_k really moves: the off-diagonal part changes by O(1), not O(eta^2).
    G0, G1 = net.imbalance(weights[0]), net.imbalance(weights[-1])
    off = max(np.linalg.norm((g1 - g0) - np.diag(np.diag(g1 - g0))) for g0, g1 in zip(G0, G1))
    assert off >= 1e-2


def _ode_bound(res, rtol, atol, which="linearised"):
    """An a priori bound of DOP853's global error: one unit of the local error control
    (||err||_RMS <= 1, i.e. ||err||_2 <= sqrt(P)(atol + rtol max|y|)) per step, steps <= evaluations."""
    y = np.abs(res.linearised).max()
    return res.evaluations[which] * np.sqrt(res.linearised.shape[1]) * (atol + rtol * y)


def test_relu_flow_conserves_unit_balance_while_G_moves():
    net, loss, W = _problem(seed=5)
    rtol, atol = 1e-10, 1e-12
    res = linearisation(net, W, loss, 4.0, rtol=rtol, atol=atol, step=1e-3)
    assert 0 < res.horizon < 4.0
    b0 = np.concatenate(unit_balance(res.weights(0)))
    before = res.times < res.horizon
    norm = np.linalg.norm(res.true, axis=1).max()
    drift = [
        np.abs(np.concatenate(unit_balance(res.weights(n))) - b0).max()
        for n in range(res.times.size)
    ]
    drift = np.array(drift)
    # Before the horizon the flow is smooth: the quadratic invariant moves by at most
    # 2 ||W|| times DOP853's global error.
    error = _ode_bound(res, rtol, atol)
    assert drift[before].max() <= 2 * norm * error + error**2
    G0 = net.imbalance(res.weights(0))
    moved = [
        max(np.linalg.norm(g - g0) for g, g0 in zip(net.imbalance(res.weights(n)), G0))
        for n in range(res.times.size)
    ]
    assert max(moved) >= 1e-2
    assert max(moved[i] for i in np.nonzero(before)[0]) >= 1e3 * drift[before].max()
    # Past the horizon (RK4, step h, units crossing and sliding along kinks: O(h) error
    # where a step straddles a kink) the balance still holds to the integrator's error,
    # which halves with h, while G_k moves by O(1).
    coarse = linearisation(net, W, loss, 4.0, rtol=rtol, atol=atol, step=2e-3)
    drift_c = max(
        np.abs(np.concatenate(unit_balance(coarse.weights(n))) - b0).max()
        for n in range(coarse.times.size)
    )
    assert drift.max() <= 0.6 * drift_c
    assert max(moved) >= 1e3 * drift.max()


def test_overparametrized_flow_trains_relu_with_rk4():
    net, loss, W = _problem(seed=5, b=30)
    task = Task(
        loss=loss,
        network=net,
        weights0=W,
        metrics={
            name: dlngeo.create_metric(name)
            for name in ("unit_balance", "imbalance_offdiagonal", "growth_rates")
        },
    )
    runs = {
        h: OverparametrizedFlow(integrator="RK4", max_step=h, record_every=int(0.1 / h)).run(
            task, Stopping(end_time=3.0)
        )
        for h in (4e-3, 2e-3)
    }
    for record in runs.values():
        assert (
            record.stop_reason == "end_time"
            and record.metrics["loss"][-1] < 0.8 * record.metrics["loss"][0]
        )
        off = np.array(record.metrics["imbalance_offdiagonal"])
        assert np.abs(off[-1] - off[0]).max() >= 1e-2
        rates = np.array(record.metrics["growth_rates"])
        # Layer norms grow at one rate (the trace of the conserved balance): the spread
        # of exact rates is rounding, ~eps times the terms of <W_k, d_k L>.
        assert np.ptp(rates, axis=1).max() <= 1e-10 * np.abs(rates).max()
    drift = {
        h: np.abs(np.array(r.metrics["unit_balance"]) - r.metrics["unit_balance"][0]).max()
        for h, r in runs.items()
    }
    # O(h) error at the kinks: the drift halves (or better) with h; and it is small next to G's move.
    assert drift[2e-3] <= 0.6 * drift[4e-3]
    with pytest.raises(ValueError, match="max_step"):
        OverparametrizedFlow(integrator="RK4")


def test_rk4_is_fourth_order_with_hermite_dense_output():
    def f(t, y):
        return np.array([y[1], -y[0]])

    errors = []
    for h in (0.1, 0.05):
        sol = solve_ivp(f, (0, 2.0), [1.0, 0.0], method=RK4, max_step=h, dense_output=True)
        errors.append(abs(sol.y[0, -1] - np.cos(2.0)))
        mid = sol.sol(1.03)
        assert abs(mid[0] - np.cos(1.03)) <= 2 * h**4  # Hermite: O(h^4) on a smooth solution
    assert 14 < errors[0] / errors[1] < 18  # 2^4 = 16


# ------------------------------------------------------------------ linearisation
def test_true_and_linearised_flows_agree_until_the_horizon():
    net, loss, W = _problem(seed=5)
    rtol, atol = 1e-10, 1e-12
    res = linearisation(net, W, loss, 2.0, rtol=rtol, atol=atol, step=1e-3)
    before = res.times < res.horizon
    assert before.sum() >= 5 and (~before).sum() >= 5
    # Two DOP853 solutions of one smooth ODE: within twice the a priori global error.
    assert res.gap[before].max() <= 2 * _ode_bound(res, rtol, atol)
    assert np.all(res.changed_samples[before] == 0)
    # After it the trajectories part, and patterns keep changing.
    assert res.gap[-1] >= 1e-3 and res.changed_samples[-1] >= 1
    assert np.all(np.diff(res.gap[~before][:20]) >= 0)


def test_horizon_is_located_within_one_query_and_one_step():
    net, loss, W = _problem(seed=5)
    A = loss.inputs
    signs = initial_signs(net, W, A)
    res = linearisation(net, W, loss, 1.0, step=1e-3)
    t_h, (k, j, i) = res.horizon, res.crossing

    def unpack(y):
        return _unpack(y, res.shapes)

    # One dense-output query: Brent's method stops within xtol = 4 eps t of the root of
    # the interpolated margin; a query 1e-9 t_h to either side has the right sign
    # (the margin's slope times 1e-9 t_h is far above its rounding).
    delta = 1e-9 * t_h
    assert margin(net, unpack(res.before(t_h - delta)), A, signs) > 0
    after = np.asarray(net.pre_activations(unpack(res.before(t_h)), A)[k - 1])[j, i]
    assert abs(after) <= 1e3 * EPS * np.abs(net.pre_activations(W, A)[k - 1]).max()
    # One step: an independent fixed-step RK4 run changes pattern in the step containing t_h.
    h = 1e-3
    y0 = np.concatenate([w.ravel() for w in W])

    def rhs(_t, y):
        return -np.concatenate([g.ravel() for g in net.loss_and_gradients(unpack(y), loss)[2]])

    sol = solve_ivp(rhs, (0, 2 * t_h), y0, method=RK4, max_step=h)
    first = next(n for n, y in enumerate(sol.y.T) if margin(net, unpack(y), A, signs) <= 0)
    # RK4's error in Z (O(h^4) ~ 1e-12) over the crossing speed |dZ/dt| moves the step by << h.
    assert sol.t[first - 1] < t_h <= sol.t[first]


def test_one_sample_one_pattern_is_the_deep_linear_network_on_the_active_units():
    rng = np.random.default_rng(7)
    dims = (3, 5, 4, 2)
    net = ReLUNetwork(dims)
    a = np.abs(rng.standard_normal((3, 1)))
    W = [np.abs(rng.standard_normal(s)) / np.sqrt(s[1]) for s in net.shapes]
    W[0][1] *= -1  # unit 2 of layer 1 is off on the sample: it drops out
    y = np.array([[1.0], [2.0]])
    loss = OutputLoss(Regression(A=a, B=y))
    keep = [np.arange(3), np.array([0, 2, 3, 4]), np.arange(4), np.arange(2)]
    reduced = [W[k][np.ix_(keep[k + 1], keep[k])] for k in range(3)]
    dln = dlngeo.DeepLinearNetwork([3, 4, 4, 2])
    dln_loss = Regression(A=a, B=y)
    # The vector field: the same to rounding, zero on the dead unit's row and column.
    F, value, grads = net.loss_and_gradients(W, loss)
    X = dln.product(reduced)
    ref = dln.gradients(reduced, dln_loss.gradient(X))
    assert value == pytest.approx(dln_loss.value(X), rel=1e2 * EPS)
    for k in range(3):
        g = grads[k][np.ix_(keep[k + 1], keep[k])]
        assert np.linalg.norm(g - ref[k]) <= 1e2 * EPS * np.linalg.norm(ref[k])
    assert not grads[0][1].any() and not grads[1][:, 1].any()
    # The dead unit's pre-activation is watched (it is negative); a sample dead below
    # a layer is not: its pre-activations there are zero until a unit below turns on.
    assert initial_signs(net, W, a)[0][1, 0] == -1
    dead = [w.copy() for w in W]
    dead[0][:] = -np.abs(dead[0])
    assert not initial_signs(net, dead, a)[1].any()
    assert margin(net, dead, a, initial_signs(net, dead, a)) > 0
    # The trajectories, while the pattern holds: the DLN flow on the active units.
    rtol, atol = 1e-10, 1e-12
    res = linearisation(net, W, loss, 3.0, rtol=rtol, atol=atol)
    last = int(np.searchsorted(res.times, res.horizon)) - 1
    assert last >= 10
    task = Task(loss=dln_loss, network=dln, weights0=reduced)
    flow = OverparametrizedFlow(integrator="DOP853", rtol=rtol, atol=atol)
    record = flow.run(task, Stopping(end_time=float(res.times[last])))
    Wt = res.weights(last)
    assert not np.array_equal(Wt[0], W[0])
    # Two DOP853 solutions of one ODE (in two parametrizations): twice the a priori error.
    bound = 2 * _ode_bound(res, rtol, atol)
    for k in range(3):
        assert np.abs(Wt[k][np.ix_(keep[k + 1], keep[k])] - record.final_weights[k]).max() <= bound
    assert np.array_equal(Wt[0][1], W[0][1])  # the dead unit does not move


# ------------------------------------------------------------------ configs
def test_config_activation_runs_and_bad_values_name_the_key(tmp_path):
    from dlngeo.experiment import ConfigError

    config = _regression_config(activation="relu")
    config["methods"].pop("intrinsic_flow")
    config["methods"]["overparametrized_flow"] = {
        "integrator": "RK4",
        "max_step": 0.01,
        "record_every": 20,
    }
    config["gap"] = []
    config["metrics"] = ["unit_balance", "pattern_changes", "growth_rates", "distance_to_target"]
    result = dlngeo.compare(config)
    assert result.problem["activation"] == "relu"
    for record in result.records.values():
        assert record.stop_reason == "end_time"
        assert record.metrics["loss"][-1] < record.metrics["loss"][0]
        assert record.metrics["pattern_changes"][0] == 0
    bad = [
        ({"activation": "tanh"}, "network.activation"),
        ({"activation": "relu", "slope": 0.1}, "network.slope"),
    ]
    for network, key in bad:
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            dlngeo.compare(_regression_config(**network))
    with pytest.raises(ConfigError, match=r"methods\.intrinsic_flow"):
        dlngeo.compare(_regression_config(activation="relu"))


def test_cli_runs_the_relu_example_config(tmp_path):
    from dlngeo.cli import main

    argv = ["run", "examples/relu_regression.toml", "--no-progress", "--no-plots"]
    short = ["--set", "stopping.end_time=1.0"]
    assert main([*argv, *short, "--out", str(tmp_path / "a")]) == 0
    from dlngeo.results import read_results

    results = read_results(tmp_path / "a" / "results.json")
    assert results["problem"]["activation"] == "relu"
    assert set(results["methods"]) == {"overparametrized_gd", "overparametrized_flow"}
    assert (
        main([*argv, *short, "--set", "methods.intrinsic_flow={}", "--out", str(tmp_path / "b")])
        == 2
    )


# ------------------------------------------------------------------ phases
def test_phases_and_drift_by_phase_on_known_curves():
    from dlngeo.dynamics.phases import drift_by_phase, phases

    t = np.linspace(0.0, 30.0, 3001)
    # Three bumps of heights s^2/2 for s = 3, 1.5, 0.75 over a small background.
    rate = 1e-4 + sum(
        0.5 * s**2 * np.exp(-((t - c) ** 2)) for s, c in ((3, 5), (1.5, 12), (0.75, 20))
    )
    ph = phases(t, rate)
    # peaks are read on the grid t: exact to one spacing
    np.testing.assert_allclose(ph["peak_times"], [5.0, 12.0, 20.0], atol=t[1] - t[0])
    names = [name for name, _, _ in ph["intervals"]]
    assert names == ["plateau", "burst 1", "burst 2", "burst 3", "saturation"]
    starts = [a for _, a, _ in ph["intervals"]]
    ends = [b for _, _, b in ph["intervals"]]
    assert starts[0] == 0.0 and ends[-1] == 30.0 and ends[:-1] == starts[1:]
    # 2% of the top (4.5) is crossed where exp(-(t-5)^2) = 0.02: t = 5 -+ 1.98.
    assert abs(ph["plateau_end"] - (5 - np.sqrt(np.log(50)))) <= t[1] - t[0]
    # Two layers drifting apart linearly in time: the spread changes by the phase's length.
    layers = np.stack([t, 2 * t], axis=1)
    rows = drift_by_phase(ph["intervals"], t, spread=layers, flat=np.ones_like(layers))
    for row in rows:
        assert row["spread"] == pytest.approx(row["end"] - row["start"], abs=2 * (t[1] - t[0]))
        assert row["flat"] == 0.0
    with pytest.raises(ValueError, match="rate"):
        phases(t, rate[:-1])
    with pytest.raises(ValueError, match="samples"):
        drift_by_phase(ph["intervals"], t, x=np.ones(5))


# ------------------------------------------------------------ imbalance_drift
def _drift_state(net, weights, initial):
    from types import SimpleNamespace

    return SimpleNamespace(weights=weights, network=net, data={"initial_weights": initial})


def test_imbalance_drift_is_the_gd_identity_for_linear_and_moves_for_relu():
    """imbalance_drift = max_k ||G_k - G_k(0)||_F / (||W_k||^2 + ||W_{k+1}||^2): for a linear
    network one GD step moves G_k by exactly eta^2 (g_{k+1}^T g_{k+1} - g_k g_k^T); summed over
    steps that bounds the linear drift (triangle inequality), while a ReLU network's G_k moves by O(1).
    """
    from dlngeo.dynamics.overparametrized import factor_loss_and_gradients

    metric = dlngeo.create_metric("imbalance_drift")
    relu, loss, W0 = _problem(seed=2, b=30, scale=1.0)
    linear = make_network(relu.dims, "linear")
    base = loss.base if hasattr(loss, "base") else loss
    assert metric(_drift_state(linear, W0, W0)) == 0.0
    eta = 0.1
    g = factor_loss_and_gradients(linear, W0, base)[2]
    W1 = [W - eta * d for W, d in zip(W0, g)]
    expected, tol = 0.0, 0.0
    for k in range(linear.depth - 1):
        change = eta**2 * (g[k + 1].T @ g[k + 1] - g[k] @ g[k].T)
        s1 = float(np.sum(W1[k] ** 2) + np.sum(W1[k + 1] ** 2))
        s0 = float(np.sum(W0[k] ** 2) + np.sum(W0[k + 1] ** 2))
        expected = max(expected, np.linalg.norm(change) / s1)
        # Rounding: the update (one rounding per entry) and the two Gram matrices
        # (sums of d products, Higham's gamma_d), each ~ (d + 2) eps ||W||^2, relative to s1.
        d = max(W0[k].shape[1], W0[k + 1].shape[0]) + 2
        tol = max(tol, 8 * d * EPS * (s0 + s1) / s1)
    assert expected >= 1e6 * tol  # the identity is not lost in the rounding
    assert abs(metric(_drift_state(linear, W1, W0)) - expected) <= tol
    # Many steps: the linear drift stays below the summed per-step moves; ReLU's G_k moves O(1).
    runs = {}
    for net, task_loss in ((linear, base), (relu, loss)):
        weights = []
        OverparametrizedGD(step=0.05).run(
            Task(loss=task_loss, network=net, weights0=W0),
            Stopping(max_iterations=200),
            lambda state, record, w=weights: w.append(state.weights),
        )
        runs[net.activation] = weights
    WT = runs["linear"][-1]
    bound = 0.0
    for k in range(linear.depth - 1):
        moved = sum(
            0.05**2 * (np.sum(gk[k] ** 2) + np.sum(gk[k + 1] ** 2))
            for gk in (factor_loss_and_gradients(linear, W, base)[2] for W in runs["linear"][:-1])
        )
        bound = max(bound, moved / float(np.sum(WT[k] ** 2) + np.sum(WT[k + 1] ** 2)))
    assert metric(_drift_state(linear, WT, W0)) <= bound * (1 + 1e-6)
    # The ReLU network moves G_k past anything the linear per-step identity allows.
    assert metric(_drift_state(relu, runs["relu"][-1], W0)) > bound


def test_imbalance_drift_from_a_config_starts_at_zero():
    import dlngeo.experiment  # noqa: F401  (_regression_config reads a config file)

    config = _regression_config(activation="relu")
    config["methods"] = {"overparametrized_gd": {"step": 0.01, "record_every": 50}}
    config["gap"] = []
    config["metrics"] = ["imbalance_drift"]
    record = dlngeo.compare(config).records["overparametrized_gd"]
    assert record.metrics["imbalance_drift"][0] == 0.0
    assert record.metrics["imbalance_drift"][-1] > 0.0


def test_linearisation_is_solve_ivp_with_a_terminal_event():
    # The driver's event search is solve_ivp's (Brent on the step's interpolant, xtol = rtol
    # = 4 eps): the same steps and the same crossing, to rounding.
    net, loss, W = _problem(seed=5)
    rtol, atol = 1e-10, 1e-12
    res = linearisation(net, W, loss, 1.0, rtol=rtol, atol=atol, step=1e-3)
    A, shapes = loss.inputs, res.shapes
    signs = initial_signs(net, W, A)

    def rhs(_t, y):
        grads = net.loss_and_gradients(_unpack(y, shapes), loss)[2]
        return -np.concatenate([g.ravel() for g in grads])

    def event(_t, y):
        return margin(net, _unpack(y, shapes), A, signs)

    event.terminal, event.direction = True, -1
    y0 = np.concatenate([w.ravel() for w in W])
    sol = solve_ivp(
        rhs, (0, 1.0), y0, method="DOP853", rtol=rtol, atol=atol, events=event, dense_output=True
    )
    t_h = sol.t_events[0][0]
    assert abs(res.horizon - t_h) <= 8 * EPS * t_h
    before = res.times <= res.horizon
    assert before.sum() >= 5
    ref = sol.sol(res.times[before]).T
    assert np.abs(res.true[before] - ref).max() <= 1e2 * EPS * np.abs(ref).max()
