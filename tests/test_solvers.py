"""The registered methods: options, pymanopt solvers on matrix completion, reason codes, low-rank cost."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

import dlngeo
from dlngeo.dynamics.base import Method, Stopping, Task
from dlngeo.dynamics.record import STOP_REASONS, Record
from dlngeo.dynamics.riemannian import pymanopt_reason

SOLVERS = (
    "overparametrized_gd",
    "overparametrized_flow",
    "intrinsic_flow",
    "riemannian_gd",
    "riemannian_sd",
    "riemannian_cg",
    "riemannian_tr",
    "riemannian_lm",
    "group_rmsprop",
)


def completion_task(
    size=30, rank=2, observations=300, depth=3, init_scale=1e-3, seed=0, dims=None
) -> Task:
    """The quick default comparison: Arora et al. 2019 completion shrunk (docs/math.md §5)."""
    rng = np.random.default_rng(seed)
    M = dlngeo.create_sampler("low_rank_target", shape=(size, size), rank=rank).sample(rng)
    rows, cols = dlngeo.create_sampler(
        "uniform_mask", shape=(size, size), size=observations
    ).sample(rng)
    loss = dlngeo.create_loss(
        "matrix_completion", rows=rows, cols=cols, values=M[rows, cols], shape=(size, size)
    )
    net = dlngeo.DeepLinearNetwork(dims or (size,) * (depth + 1))
    weights = dlngeo.create_sampler("gaussian", init_scale=init_scale).sample(rng, net)
    return Task(loss=loss, network=net, weights0=weights, rank=rank, data={"target": M})


@pytest.fixture(scope="module")
def task():
    return completion_task()


# ---------------------------------------------------------------- registry and options
def test_all_methods_are_registered_by_the_builtin_plugin():
    available = dlngeo.available("solver")
    for name in SOLVERS:
        assert available[name][0] == "dlngeo_plugins.solvers"
        method = dlngeo.create_solver(name)
        assert isinstance(method, Method) and method.name == name


@pytest.mark.parametrize(
    "name, options, field",
    [
        ("overparametrized_gd", {"step": -0.1}, "step"),
        ("overparametrized_gd", {"step": 0.0}, "step"),
        ("overparametrized_gd", {"noise": -1.0}, "noise"),
        ("overparametrized_gd", {"record_every": 0}, "record_every"),
        ("overparametrized_gd", {"batch_size": 0}, "batch_size"),
        (
            "overparametrized_gd",
            {"batch_size": 10, "gradient_sampler": lambda loss, X, rng: loss.gradient(X)},
            "batch_size",
        ),
        ("overparametrized_gd", {"stepsize": 0.1}, "stepsize"),
        ("overparametrized_flow", {"rtol": -1e-8}, "rtol"),
        ("overparametrized_flow", {"integrator": "Euler"}, "integrator"),
        ("intrinsic_flow", {"representation": "sparse"}, "representation"),
        ("intrinsic_flow", {"representation": "lowrank", "integrator": "Radau"}, "integrator"),
        ("intrinsic_flow", {"atol": float("nan")}, "atol"),
        ("intrinsic_flow", {"record_times": [1.0, 0.5]}, "record_times"),
        ("riemannian_gd", {"step": -1}, "step"),
        ("riemannian_gd", {"metric": "frobenius"}, "metric"),
        ("riemannian_sd", {"initial_step_size": -1.0}, "initial_step_size"),
        ("riemannian_cg", {"beta_rule": "Newton"}, "beta_rule"),
        ("riemannian_cg", {"trust_radius": 1.0}, "trust_radius"),  # a TR option is unknown to CG
        ("riemannian_tr", {"trust_radius": -1.0}, "trust_radius"),
        ("riemannian_tr", {"max_inner": 0}, "max_inner"),
        ("riemannian_tr", {"metric": "flat"}, "metric"),
        ("group_rmsprop", {"lr": 0.0}, "lr"),
        ("group_rmsprop", {"alpha": 1.0}, "alpha"),
        ("group_rmsprop", {"eps": -1.0}, "eps"),
        ("group_rmsprop", {"step": 0.1}, "step"),  # its step option is lr
    ],
)
def test_bad_options_raise_value_error_naming_the_option(name, options, field):
    with pytest.raises(ValueError, match=field):
        dlngeo.create_solver(name, **options)


def test_factories_list_their_options():
    from dlngeo_plugins.solvers import SOLVERS as TABLE

    assert set(TABLE) == set(SOLVERS)
    assert TABLE["overparametrized_gd"][1] == (
        "step",
        "gradient_sampler",
        "batch_size",
        "noise",
        "seed",
        "record_every",
        "record_times",
    )
    assert (
        "representation" in TABLE["intrinsic_flow"][1]
        and "rtol" in TABLE["overparametrized_flow"][1]
    )
    for name in ("riemannian_sd", "riemannian_cg", "riemannian_tr"):
        assert "metric" in TABLE[name][1]


# ---------------------------------------------------------------- pymanopt solvers on completion
@pytest.fixture(scope="module")
def default_task():
    """The default comparison's problem: 100 x 100, rank 5, 2000 observations, depth 3, init 1e-3."""
    return completion_task(size=100, rank=5, observations=2000)


@pytest.mark.parametrize("problem", ["task", "default_task"])
@pytest.mark.parametrize("metric", ["dln", "embedded"])
def test_trust_regions_solves_completion(request, problem, metric):
    task = request.getfixturevalue(problem)
    record = dlngeo.create_solver("riemannian_tr", metric=metric).run(
        task, Stopping(max_iterations=200, loss_below=1e-12)
    )
    assert record.stop_reason == "loss_below"
    assert record.final_loss <= 1e-12
    # the same loss re-evaluated at the same point: summation order at most, ~ log2(k) eps
    assert task.loss.value(record.final_point) == pytest.approx(
        record.final_loss, rel=1e-12, abs=1e-300
    )
    # Recovery, not just fit: the target is found from a third (a fifth) of its entries. A mean
    # loss <= 1e-12 is an rms residual <= 1e-6 on Omega; ||X - M|| / ||M|| is that over the
    # square root of the restricted eigenvalue of (mn/k) P_T P_Omega P_T, O(1) here: 1e-5
    X = dlngeo.lowrank.to_dense(record.final_point)
    assert np.linalg.norm(X - task.data["target"]) <= 1e-5 * np.linalg.norm(task.data["target"])
    assert record.time_kind == "iteration" and record.times == [float(i) for i in record.iterations]
    assert record.evaluations["hessian"] > 0
    assert record.n_iterations < 100


@pytest.fixture(scope="module")
def near_task(task):
    """The completion problem started near its solution (target + 5 % noise, balanced factors)."""
    M = task.data["target"]
    X0 = M + 0.05 * np.random.default_rng(5).standard_normal(M.shape)
    net = task.network
    return Task(
        loss=task.loss, network=net, weights0=net.balanced(X0, rng=1), rank=2, data=task.data
    )


def _final_gradient_norm(record, task, metric):
    m, n = task.network.output_shape
    manifold = (
        dlngeo.DLNFixedRank(m, n, task.rank, task.depth)
        if metric == "dln"
        else dlngeo.FixedRank(m, n, task.rank)
    )
    point = record.final_point
    return manifold.norm(
        point, manifold.euclidean_to_riemannian_gradient(point, task.loss.gradient(point))
    )


@pytest.mark.parametrize("name", ["riemannian_cg", "riemannian_sd"])
@pytest.mark.parametrize("metric", ["dln", "embedded"])
def test_first_order_solvers_reach_gradient_tolerance(near_task, name, metric):
    tolerance = 1e-6
    record = dlngeo.create_solver(name, metric=metric).run(
        near_task, Stopping(max_iterations=2000, gradient_norm_below=tolerance)
    )
    assert record.stop_reason == "gradient_norm_below", record.info["pymanopt_stopping_criterion"]
    assert record.info["gradient_norm"] < tolerance
    final = _final_gradient_norm(record, near_task, metric)
    # CG: the same gradient re-evaluated at the same point, up to rounding (~ n eps per entry;
    # the residuals ~ 1e-6 lose ~ eps ||X|| / 1e-6 ~ 1e-10 at most if re-formed otherwise).
    # SD: an accepted Armijo step t moves the gradient by <= t ||Hess|| ||grad||; t ||Hess|| = O(1).
    if name == "riemannian_cg":  # CG stops at the point whose gradient it tested
        assert final == pytest.approx(record.info["gradient_norm"], rel=1e-10)
    else:  # SD returns the point one (descent) step after it
        assert final < 10 * tolerance


@pytest.mark.parametrize("metric", ["dln", "embedded"])
def test_conjugate_gradients_from_small_init(task, metric):
    """From the 1e-3 Gaussian init CG reaches the tolerance (SD on g_N does not: it follows the slow flow)."""
    record = dlngeo.create_solver("riemannian_cg", metric=metric).run(
        task, Stopping(max_iterations=1000, gradient_norm_below=1e-6)
    )
    assert record.stop_reason == "gradient_norm_below"
    assert _final_gradient_norm(record, task, metric) < 1e-6
    # near a nondegenerate minimum loss <= ||grad||^2 / (2 mu), mu the restricted curvature,
    # ~ 2 / (mn) ~ 2e-3 for the mean loss: ~ 2.5e-10, 1e-8 allows mu 40x smaller
    assert record.final_loss < 1e-8


def test_pymanopt_criteria_map_to_reason_codes(task):
    tr = dlngeo.create_solver("riemannian_tr")
    record = tr.run(task, Stopping(max_iterations=3))
    assert record.stop_reason == "max_iterations" and record.n_iterations == 3
    record = dlngeo.create_solver("riemannian_cg").run(
        task, Stopping(max_iterations=None, max_time=0.0)
    )
    assert record.stop_reason == "max_time"
    record = dlngeo.create_solver("riemannian_sd").run(
        task, Stopping(max_iterations=None, step_below=1e3)
    )
    assert record.stop_reason == "step_below"
    record = dlngeo.create_solver("riemannian_cg").run(
        task, Stopping(max_iterations=None, stall_window=3, stall_tolerance=0.99)
    )
    assert record.stop_reason == "stalled"
    assert (
        pymanopt_reason("Terminated - min grad norm reached after 3 iterations, 0.01 seconds.")
        == "gradient_norm_below"
    )
    assert (
        pymanopt_reason("Terminated - max iterations reached after 0.10 seconds.")
        == "max_iterations"
    )
    assert pymanopt_reason("Terminated - max time reached after 7 iterations.") == "max_time"
    assert (
        pymanopt_reason("Terminated - min step_size reached after 9 iterations, 0.01 seconds.")
        == "step_below"
    )
    assert pymanopt_reason("Terminated - max cost evals reached after 1.00 seconds.") == "converged"
    assert pymanopt_reason("dlngeo:loss_below") == "loss_below"


def test_pymanopt_records_and_callback(task):
    calls = []
    record = dlngeo.create_solver("riemannian_sd", record_every=5).run(
        task,
        Stopping(max_iterations=23),
        callback=lambda state, rec: calls.append((state.iteration, state.time)),
    )
    assert isinstance(record, Record) and record.stop_reason == "max_iterations"
    assert record.iterations[:-1] == list(range(0, 23, 5)) and record.iterations[-1] == 23
    assert [c[0] for c in calls] == record.iterations
    # Steepest descent's times: accumulated line-search steps, increasing, a flow time.
    assert record.time_kind == "flow" and np.all(np.diff(record.times) > 0)
    assert record.evaluations["gradient"] >= 23 and record.evaluations["loss"] >= 23
    assert record.wall_time_s > 0
    assert record.to_dict()["stop_reason"] in STOP_REASONS


def test_same_start_for_every_method(task):
    """Every end-to-end method starts at the rank-r truncation of phi(W(0))."""
    u, s, vt = np.linalg.svd(task.X0)
    expected = (u[:, :2] * s[:2]) @ vt[:2]
    probe = Task(
        loss=task.loss,
        network=task.network,
        weights0=task.weights0,
        rank=2,
        metrics={"X": lambda state: state.dense()},
    )
    for name in (
        "riemannian_gd",
        "riemannian_sd",
        "riemannian_cg",
        "riemannian_tr",
        "intrinsic_flow",
    ):
        options = {"representation": "lowrank"} if name == "intrinsic_flow" else {}
        record = dlngeo.create_solver(name, **options).run(probe, Stopping(max_iterations=1))
        assert record.iterations[0] == 0 and record.times[0] == 0.0
        # two rank-2 SVD truncations: Wedin, ~ n eps s_1 / (s_2 - s_3), n = 30
        bound = 30 * np.finfo(float).eps * s[0] / (s[1] - s[2])
        assert np.linalg.norm(record.metrics["X"][0] - expected) <= bound * np.linalg.norm(
            expected
        ), name
    record = dlngeo.create_solver("overparametrized_gd").run(probe, Stopping(max_iterations=1))
    np.testing.assert_array_equal(record.metrics["X"][0], task.X0)


def test_lowrank_methods_never_form_m_by_n():
    """3000 x 3000 completion at rank 3 through a bottleneck: every step is O((m+n) r^2 + |Omega| r)."""
    size = 3000
    task = completion_task(
        size=size, rank=3, observations=20_000, dims=(size, 3, 3, size), init_scale=1.0
    )
    dense_bytes = size * size * 8
    runs = [
        ("intrinsic_flow", {"representation": "lowrank"}),
        ("riemannian_gd", {"step": 1.0}),
        ("riemannian_sd", {}),
        ("riemannian_cg", {}),
        ("riemannian_tr", {}),
        ("riemannian_tr", {"metric": "embedded"}),
    ]
    for name, options in runs:
        method = dlngeo.create_solver(name, **options)
        tracemalloc.start()
        try:
            record = method.run(task, Stopping(max_iterations=2))
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert record.n_iterations == 2 and np.isfinite(record.final_loss)
        assert peak < dense_bytes / 4, (name, peak)


def test_default_comparison_methods_run_through_the_registry(task):
    """The methods of the default comparison with the options it may pass, on the same task."""
    stopping = Stopping(max_iterations=50)
    for name, options in [
        ("overparametrized_gd", {"step": 1.0, "record_every": 10}),
        ("overparametrized_flow", {"record_times": [0.0, 1.0, 2.0], "end_time": 2.0}),
        ("intrinsic_flow", {"record_times": [0.0, 1.0, 2.0], "end_time": 2.0}),
        ("riemannian_gd", {"step": 1.0}),
    ]:
        record = dlngeo.create_solver(name, **options).run(task, stopping)
        assert record.stop_reason in ("max_iterations", "end_time")
        assert record.metrics["loss"][-1] <= record.metrics["loss"][0]


def test_minibatch_gradient_is_unbiased_and_full_batch_is_gd(task):
    from dlngeo.dynamics.overparametrized import EntryMinibatch

    X = task.X0 + 0.1
    G = task.loss.gradient(X).toarray()
    sampler = EntryMinibatch(30)
    rng = np.random.default_rng(0)
    draws = np.array([sampler(task.loss, X, rng).toarray() for _ in range(2000)])
    mean, std = draws.mean(axis=0), draws.std(axis=0) / np.sqrt(len(draws))
    observed = G != 0
    z = (mean[observed] - G[observed]) / std[observed]
    # unbiased: z-scores ~ N(0, 1), so their rms has standard error 1 / sqrt(2 n): 5 of them
    assert np.all(mean[~observed] == 0) and np.sqrt(np.mean(z**2)) < 1 + 5 / np.sqrt(2 * z.size)
    stopping = Stopping(max_iterations=30)
    full = dlngeo.create_solver("overparametrized_gd", step=1.0, batch_size=300).run(task, stopping)
    gd = dlngeo.create_solver("overparametrized_gd", step=1.0).run(task, stopping)
    # batch = all 300 observations: the same gradient, at most summed in another order (~ eps a
    # step, ~ 1e-14 over 30 steps); 1e-12 leaves the steps' amplification (step L ~ 1)
    for a, b in zip(full.final_weights, gd.final_weights):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15)
    sgd = dlngeo.create_solver("overparametrized_gd", step=1.0, batch_size=50, seed=3).run(
        task, Stopping(max_iterations=300)
    )
    assert sgd.final_loss < 0.5 * sgd.metrics["loss"][0]
    assert sgd.info["batch_size"] == 50


def test_group_rmsprop_is_the_rule_applied_to_factor_gd(task):
    """The registered solver takes the steps of GroupRMSprop by hand, and its flow time is their sum."""
    from dlngeo.dynamics.factor_gradients import factor_loss_and_gradients
    from dlngeo.dynamics.group_rmsprop import GroupRMSprop

    steps = 25
    record = dlngeo.create_solver("group_rmsprop", lr=1e-2).run(
        task, Stopping(max_iterations=steps, gradient_norm_rtol=None)
    )
    assert record.stop_reason == "max_iterations" and record.n_iterations == steps
    rule, W, t = GroupRMSprop(1e-2), [w.copy() for w in task.weights0], [0.0]
    for _ in range(steps):
        _, _, grads = factor_loss_and_gradients(task.network, W, task.loss)
        eta = rule.step_size(grads)
        W = [w - eta * g for w, g in zip(W, grads)]
        t.append(t[-1] + eta)
    # Same operations in the same order, up to in-place vs new arrays: equal to rounding
    # (a few eps of each factor's size).
    eps = np.finfo(float).eps
    for a, b in zip(record.final_weights, W):
        assert np.max(np.abs(a - b)) <= 16 * eps * np.max(np.abs(b))
    assert np.allclose(record.times, t, rtol=16 * eps, atol=0)
