"""Width-free tasks: a balanced network given by its end-to-end start, depth and widths alone."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from least_squares import completion

import dlngeo
from dlngeo.dynamics import Stopping, Task
from dlngeo.lowrank import to_dense

EPS = np.finfo(float).eps


def problem(size=(30, 24), rank=2, observations=300, seed=0):
    loss, M = completion(size, rank, observations, seed)
    u, s, vt = np.linalg.svd(M, full_matrices=False)
    start = (u[:, :rank], 1e-2 * s[:rank] / s[0], vt[:rank])  # balanced start of scale 1e-2
    return loss, start


def test_width_free_intrinsic_flow_equals_the_factor_based_balanced_run():
    loss, start = problem()
    net = dlngeo.DeepLinearNetwork((24, 40, 40, 30))
    factors = Task(loss, net, net.balanced(start, rng=1, rank=2), rank=2)
    width_free = Task(loss, net, start=start)
    assert width_free.width_free and width_free.rank == 2
    stop = Stopping(end_time=30.0, max_iterations=None)
    flow = dict(representation="lowrank", rtol=1e-8, atol=1e-12, record_times=[10.0, 30.0])
    a = dlngeo.create_solver("intrinsic_flow", **flow).run(factors, stop)
    b = dlngeo.create_solver("intrinsic_flow", **flow).run(width_free, stop)
    Xa, Xb = to_dense(a.final_point), to_dense(b.final_point)
    # The two starts are the same matrix up to the rounding of the factor product
    # (~ N eps ||X||); the integrator then takes the same steps, so the runs differ
    # by that rounding carried along, far inside the integrator's tolerance rtol ||X||.
    assert np.linalg.norm(Xa - Xb) <= 1e-8 * np.linalg.norm(Xa)
    assert a.n_iterations == b.n_iterations
    np.testing.assert_allclose(a.metrics["loss"], b.metrics["loss"], rtol=1e-8)


def test_width_free_intrinsic_flow_follows_the_balanced_factor_flow():
    loss, start = problem()
    net = dlngeo.DeepLinearNetwork((24, 40, 40, 30))
    width_free = Task(loss, net, start=start)
    stop = Stopping(end_time=30.0, max_iterations=None)
    rtol = 1e-9
    factor = dlngeo.create_solver("overparametrized_flow", rtol=rtol, atol=1e-13).run(
        width_free, stop
    )  # forms balanced factors on demand
    intrinsic = dlngeo.create_solver(
        "intrinsic_flow", representation="lowrank", rtol=rtol, atol=1e-13
    ).run(width_free, stop)
    X_factor = net.product(factor.final_weights)
    X_intrinsic = to_dense(intrinsic.final_point)
    # Arora-Cohen-Hazan (2018): from a balanced start phi(W(t)) solves the intrinsic
    # ODE exactly; the two numerical solutions each carry a global error of at most
    # (accepted steps) x (local tolerance rtol ||X||) when errors do not grow.
    steps = factor.n_iterations + intrinsic.n_iterations
    bound = steps * rtol * np.linalg.norm(X_intrinsic)
    assert np.linalg.norm(X_factor - X_intrinsic) <= bound


def test_width_free_task_never_forms_a_factor():
    loss, start = problem()
    wide = dlngeo.DeepLinearNetwork((24,) + (10**6,) * 7 + (30,))  # depth 8, width 10^6
    task = Task(loss, wide, start=start)
    tracemalloc.start()
    record = dlngeo.create_solver("intrinsic_flow", representation="lowrank").run(
        task, Stopping(end_time=5.0, max_iterations=None)
    )
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert record.stop_reason == "end_time"
    assert peak < 8 * 10**6 * 10  # one factor at this width would be 10^6 x 10^6 floats
    assert record.info["start_truncation"] == 0.0


def test_width_free_start_validation():
    loss, start = problem()
    net = dlngeo.DeepLinearNetwork((24, 40, 30))
    with pytest.raises(ValueError, match="^weights0"):
        Task(loss, net)
    with pytest.raises(ValueError, match="^start"):
        Task(loss, net, net.balanced(start, rng=0, rank=2), start=start)
    with pytest.raises(ValueError, match="^start"):
        Task(loss, net, start=np.zeros((24, 30)))
    with pytest.raises(ValueError, match="^start"):
        Task(loss, net, start=(start[0][:5], start[1], start[2]))
    narrow = dlngeo.DeepLinearNetwork((24, 1, 30))
    with pytest.raises(ValueError, match="^start: rank 2 exceeds"):
        Task(loss, narrow, start=start)
    with pytest.raises(ValueError, match="^start must be finite"):
        Task(loss, net, start=(start[0], np.array([np.nan, 1.0]), start[2]))


def test_width_free_task_gives_balanced_factors_on_demand():
    loss, start = problem()
    net = dlngeo.DeepLinearNetwork((24, 40, 40, 30))
    task = Task(loss, net, start=start, seed=4)
    weights = task.initial_weights()
    # phi(W) = start to rounding of the product (N factors, each exact to ~eps).
    X = to_dense(start)
    assert np.linalg.norm(net.product(weights) - X) <= 10 * net.depth * EPS * np.linalg.norm(X)
    for G in net.imbalance(weights):
        assert np.linalg.norm(G) <= 10 * net.depth * EPS * np.linalg.norm(X) ** (2 / net.depth)
    np.testing.assert_array_equal(task.X0, X)
    record = dlngeo.create_solver("overparametrized_gd", step=0.5).run(
        task, Stopping(max_iterations=3)
    )
    assert record.n_iterations == 3 and record.final_loss < record.metrics["loss"][0]
