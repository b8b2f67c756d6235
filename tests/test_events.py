"""Events: zero crossings of a function of the state, located on a flow's dense output (dlngeo.dynamics.events)."""

import numpy as np
import pytest
from scipy.integrate import solve_ivp

import dlngeo
from dlngeo.dynamics.base import Stopping, Task
from dlngeo.dynamics.events import Event

EPS = np.finfo(float).eps
OFF = dict(gradient_norm_rtol=None, gradient_norm_atol=None, max_iterations=None)


def _task():
    rng = np.random.default_rng(1)
    net = dlngeo.DeepLinearNetwork([4, 3, 3, 5])
    Y = rng.standard_normal((5, 4))
    loss = dlngeo.create_loss("regression", target=Y)
    W0 = net.balanced(0.3 * rng.standard_normal((5, 4)), rng=rng, rank=3)
    return Task(loss=loss, network=net, weights0=W0), Y


@pytest.mark.parametrize("name", ["overparametrized_flow", "intrinsic_flow"])
def test_a_terminal_event_ends_the_flow_where_the_loss_crosses_its_level(name):
    task, _ = _task()
    level = 0.5 * task.loss.value(task.X0)
    event = Event(lambda state: state.loss.value(state.point) - level, terminal=True, direction=-1)
    options = {"integrator": "DOP853", "rtol": 1e-10, "atol": 1e-12, "events": [event]}
    if name == "intrinsic_flow":
        options["representation"] = "dense"
    record = dlngeo.create_solver(name, **options).run(task, Stopping(end_time=50.0, **OFF))
    assert record.stop_reason == "event"
    ((t_star, point, weights),) = record.events[0]
    assert record.times[-1] == t_star and record.info["event_times"] == [[t_star]]
    assert np.array_equal(record.final_point, point)
    assert (weights is None) == (name == "intrinsic_flow")
    loss, times = record.metrics["loss"], record.times
    assert loss[-2] > level  # the step before had not crossed
    # Brent stops within 4 eps t* in time: |E - level| <= |dE/dt| 4 eps t*, with |dE/dt| near t*
    # the secant over the last partial step times 10 (its change within one step), plus the
    # loss's rounding (16 eps).
    rate = (loss[-2] - loss[-1]) / (times[-1] - times[-2])
    assert abs(record.final_loss - level) <= 10 * rate * 4 * EPS * t_star + 16 * EPS * level


def test_a_non_terminal_event_finds_the_crossing_solve_ivp_finds_and_leaves_the_run_alone():
    """The factor flow with DOP853 is the integrator solve_ivp steps: the same accepted steps give the
    same crossing, to Brent's tolerance and rounding of the two dense outputs."""
    task, Y = _task()
    net = task.network
    level = 0.3 * task.loss.value(task.X0)
    g = Event(lambda state: state.loss.value(state.point) - level, direction=-1)
    kw = {"integrator": "DOP853", "rtol": 1e-10, "atol": 1e-12, "record_times": [1.0, 2.0]}
    with_event = dlngeo.create_solver("overparametrized_flow", events=[g], **kw).run(
        task, Stopping(end_time=3.0, **OFF)
    )
    plain = dlngeo.create_solver("overparametrized_flow", **kw).run(
        task, Stopping(end_time=3.0, **OFF)
    )
    assert with_event.stop_reason == plain.stop_reason == "end_time"
    assert with_event.metrics["loss"] == plain.metrics["loss"]  # the run is not changed
    ((t_star, _, W_star),) = with_event.events[0]

    shapes = net.shapes
    sizes = np.cumsum([0] + [a * b for a, b in shapes])
    unpack = lambda w: [w[a:b].reshape(s) for a, b, s in zip(sizes[:-1], sizes[1:], shapes)]

    def rhs(_t, w):
        W = unpack(w)
        return -np.concatenate([G.ravel() for G in net.gradients(W, net.product(W) - Y)])

    def crossing(_t, w):
        return task.loss.value(net.product(unpack(w))) - level

    crossing.direction = -1
    w0 = np.concatenate([W.ravel() for W in task.weights0])
    sol = solve_ivp(rhs, (0, 3.0), w0, method="DOP853", rtol=1e-10, atol=1e-12, events=[crossing])
    # Both locate a root of the same g on interpolants of the same steps (up to the rounding of
    # the two gradient codes, ~eps per step, carried ~10x by the flow): 1e-9 relative in time.
    assert t_star == pytest.approx(sol.t_events[0][0], rel=1e-9)
    assert task.loss.value(net.product(W_star)) == pytest.approx(level, rel=1e-9)


def test_bad_events_are_refused_naming_events():
    with pytest.raises(ValueError, match="events"):
        dlngeo.create_solver("overparametrized_flow", events=[lambda state: 0.0])
    with pytest.raises(ValueError, match="direction"):
        Event(lambda state: 0.0, direction=2)
