"""``intrinsic_flow(restart_at_record_times=True)``: every sample is an accepted step end point.

The driver restarts the scipy integrator at each record time, which is
``solve_ivp`` run segment by segment between them; without the option the
samples come from the integrator's dense output.
"""

import numpy as np
import pytest
from scipy.integrate import solve_ivp

import dlngeo
from dlngeo.dynamics.base import Stopping, Task


def _task():
    rng = np.random.default_rng(4)
    Y = rng.standard_normal((4, 3))
    loss = dlngeo.create_loss("regression", target=Y)
    X0 = 0.05 * rng.standard_normal((4, 3))
    net = dlngeo.DeepLinearNetwork([3, 3, 3, 4])
    return Task(loss=loss, network=net, start=X0, metrics={"point": lambda s: s.point}), Y


def _dop853(times, **options):
    """The dense intrinsic flow by DOP853 at rtol 1e-10, atol 1e-12, recording at ``times``."""
    return dlngeo.create_solver(
        "intrinsic_flow",
        representation="dense",
        integrator="DOP853",
        rtol=1e-10,
        atol=1e-12,
        record_times=times,
        **options,
    )


def test_restarted_flow_is_solve_ivp_segment_by_segment():
    task, Y = _task()
    times = np.array([0.0, 0.3, 0.7, 0.71, 1.5, 4.0])
    solver = _dop853(times, restart_at_record_times=True)
    record = solver.run(task, Stopping.only(end_time=float(times[-1])))
    assert record.stop_reason == "end_time"
    assert record.times == list(times)  # nothing but the requested times: each one a step end
    got = np.array(record.sampled("point", times))

    rank = task.start_rank

    def rhs(_t, x):
        X = x.reshape(Y.shape)
        return -dlngeo.metric_operator(X, X - Y, 3, rank=rank).ravel()

    x, t, expected = task.X0.ravel(), 0.0, [task.X0]
    for t_next in times[1:]:
        sol = solve_ivp(rhs, (t, t_next), x, method="DOP853", rtol=1e-10, atol=1e-12)
        x, t = sol.y[:, -1], t_next
        expected.append(x.reshape(Y.shape))
    # The same steps in the same order (the same vector field up to the association of its
    # products: a few eps per evaluation), so the same trajectory to far below the tolerance.
    assert np.abs(got - np.array(expected)).max() <= 1e-13 * np.abs(expected).max()
    # The dense-output run differs (other steps, interpolated samples), each of the two by
    # at most its global error: per step a local error below rtol |X| + atol, carried by the
    # linearised flow, which grows it no faster than X grows while the modes are learned
    # (the relative error is kept) and shrinks it near the minimum; a factor 10 for the
    # interpolant's own error.
    dense = _dop853(times).run(task, Stopping.only(end_time=float(times[-1])))
    other = np.array(dense.sampled("point", times))
    steps = record.n_iterations + dense.n_iterations
    bound = 10 * steps * (1e-10 * np.abs(got).max() + 1e-12)
    assert 0 < np.abs(other - got).max() <= bound


def test_restart_option_is_checked():
    with pytest.raises(ValueError, match="restart_at_record_times"):
        dlngeo.create_solver("intrinsic_flow", restart_at_record_times="yes")
    task, _ = _task()
    solver = dlngeo.create_solver(
        "intrinsic_flow", representation="lowrank", record_times=[1.0], restart_at_record_times=True
    )
    with pytest.raises(ValueError, match="restart_at_record_times"):
        solver.run(task, Stopping.only(end_time=1.0))


def test_dense_output_is_made_once_per_step():
    # DOP853's interpolant costs three extra evaluations; sampling many record times within
    # one step must pay them once for that step, not once per sample.
    task, _ = _task()
    options = dict(representation="dense", integrator="DOP853", rtol=1e-8, atol=1e-10)
    T = 4.0
    stop = Stopping.only(end_time=T)
    many = dlngeo.create_solver(
        "intrinsic_flow", record_times=np.linspace(0, T, 400), **options
    ).run(task, stop)
    few = dlngeo.create_solver("intrinsic_flow", record_times=[T], **options).run(task, stop)
    assert many.n_iterations == few.n_iterations  # record times do not change the steps
    assert many.n_iterations < 100  # many samples per step
    extra = many.evaluations["gradient"] - few.evaluations["gradient"]
    # Three per step, plus one: the last point's loss, evaluated again after the
    # interpolant's stages took the cache (one per sample would be 1200).
    assert extra <= 3 * many.n_iterations + 1, (extra, many.n_iterations)
