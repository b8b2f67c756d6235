"""The Langevin samplers are steppers of the one driver: one recorder, one stopping path."""

import numpy as np
import pytest

from dlngeo.dynamics import driver
from dlngeo.dynamics.base import Stopping
from dlngeo.thermodynamics.chains import ChainStepper
from dlngeo.thermodynamics.langevin import (
    OverparametrizedLangevin,
    QuadraticEnergy,
    RiemannianLangevin,
)
from dlngeo.thermodynamics.mala import RiemannianMALA

LOW_RANK = (np.eye(3)[:, :2], np.array([2.0, 1.0]), np.eye(3)[:2])


@pytest.mark.parametrize(
    "cls, start",
    [
        (RiemannianLangevin, np.eye(2) * 2),
        (OverparametrizedLangevin, np.eye(2) * 2),
        (RiemannianLangevin, LOW_RANK),
    ],
)
def test_a_diverged_run_records_its_last_finite_state(cls, start):
    loss = QuadraticEnergy(50.0)
    rec = cls(step=1.0, n_steps=200, record_every=2).sample(
        0, loss=loss, start=start, depth=3, beta=1.0
    )
    assert rec.stop_reason == "diverged" and rec.n_iterations < 200
    # the driver records the final state: the last sample is the returned point
    assert rec.iterations[-1] == rec.n_iterations
    X = rec.final_point
    if isinstance(X, tuple):
        X = (X[0] * X[1]) @ X[2]
    assert np.all(np.isfinite(X))
    # one chain: the recorded mean is the value itself (it may overflow to inf at a finite X)
    with np.errstate(over="ignore"):
        assert rec.metrics["loss"][-1] == loss.value(X)
    assert rec.evaluations["loss"] == len(rec.times)


def test_every_sampler_runs_through_drive(monkeypatch):
    seen = []
    real = driver.drive

    def spy(name, task, stepper, *args, **kwargs):
        seen.append((name, isinstance(stepper, ChainStepper)))
        return real(name, task, stepper, *args, **kwargs)

    monkeypatch.setattr("dlngeo.thermodynamics.chains.drive", spy)
    kw = dict(loss=QuadraticEnergy(), depth=2, beta=1.0)
    for sampler, start in [
        (RiemannianLangevin(step=1e-3, n_steps=4), np.eye(2)),
        (RiemannianLangevin(step=1e-3, n_steps=4), LOW_RANK),
        (RiemannianMALA(step=1e-2, n_steps=4), np.eye(2)),
        (OverparametrizedLangevin(step=1e-3, n_steps=4), np.eye(2)),
    ]:
        rec = sampler.sample(1, start=start, **kw)
        assert rec.n_iterations == 4 and rec.iterations == [0, 1, 2, 3, 4]
        np.testing.assert_array_equal(
            rec.times,
            1e-3 * np.arange(5) if sampler.name != "riemannian_mala" else 1e-2 * np.arange(5),
        )
    assert seen == [
        ("riemannian_langevin", True),
        ("riemannian_langevin", True),
        ("riemannian_mala", True),
        ("overparametrized_langevin", True),
    ]


def test_keep_samples_is_visible_to_the_callback_and_stacked_at_the_end():
    lengths = []
    rec = RiemannianLangevin(step=1e-3, n_steps=6, record_every=2, keep_samples=True).sample(
        3,
        loss=QuadraticEnergy(),
        start=np.eye(2),
        depth=2,
        beta=1.0,
        chains=3,
        callback=lambda state, record: lengths.append(len(record.info["singular_values"])),
    )
    assert lengths == [1, 2, 3, 4]
    assert rec.info["singular_values"].shape == (4, 3, 2)
    np.testing.assert_array_equal(
        rec.info["singular_values"][-1], np.linalg.svd(rec.final_point, compute_uv=False)
    )


# ------------------------------------------------------ the caller's Stopping
SAMPLERS = [
    (RiemannianLangevin, np.eye(2) * 2),
    (RiemannianLangevin, LOW_RANK),
    (RiemannianMALA, np.eye(2) * 2),
    (OverparametrizedLangevin, np.eye(2) * 2),
]


@pytest.mark.parametrize("cls, start", SAMPLERS)
def test_a_sampler_stops_at_the_callers_end_time_and_max_time(cls, start):
    kw = dict(loss=QuadraticEnergy(), start=start, depth=2, beta=100.0)
    sampler = cls(step=1e-3, n_steps=1000, record_every=7)
    rec = sampler.sample(0, stopping=Stopping(end_time=0.05), **kw)
    # t = h k reaches 0.05 at k = 50 (to rounding: the clock allows 1e-12 relative).
    assert rec.stop_reason == "end_time" and rec.n_iterations == 50
    assert rec.times[-1] == pytest.approx(0.05, rel=1e-12) and rec.iterations[-1] == 50
    rec = sampler.sample(0, stopping=Stopping(max_time=0.0), **kw)
    assert rec.stop_reason == "max_time" and rec.n_iterations == 0
    # n_steps stays the budget when the stopping allows more.
    rec = cls(step=1e-3, n_steps=20).sample(0, stopping=Stopping(max_iterations=10**6), **kw)
    assert rec.stop_reason == "max_iterations" and rec.n_iterations == 20


@pytest.mark.parametrize("cls, start", SAMPLERS)
def test_a_sampler_stops_at_the_first_iterate_whose_energy_is_below_loss_below(cls, start):
    """Same seed, same chain (observing draws nothing): the stop is the first crossing of a full record."""
    kw = dict(loss=QuadraticEnergy(), start=start, depth=2, beta=1e4)
    full = cls(step=1e-3, n_steps=400, record_every=1).sample(0, **kw)
    energy = np.asarray(full.metrics["loss"])
    level = 0.5 * (energy[0] + energy[-1])  # crossed on the way down from E_0 = 5 (or 8)
    first = int(np.nonzero(energy <= level)[0][0])
    assert 0 < first < 400
    rec = cls(step=1e-3, n_steps=400, record_every=50).sample(
        0, stopping=Stopping(loss_below=level), **kw
    )
    assert rec.stop_reason == "loss_below" and rec.n_iterations == first
    assert rec.metrics["loss"][-1] == energy[first]


@pytest.mark.parametrize("cls, start", SAMPLERS)
def test_divergence_factor_does_not_stop_a_chain_warming_up(cls, start):
    """From the minimum (E_0 = 0 up to the start's rounding) the energy rises to ~ dim / beta: not a divergence."""
    target = start[0] * start[1] @ start[2] if isinstance(start, tuple) else start
    kw = dict(loss=QuadraticEnergy(target=target), start=start, depth=2, beta=1.0)
    rec = cls(step=1e-3, n_steps=30).sample(0, stopping=Stopping(divergence_factor=1.0), **kw)
    assert rec.stop_reason == "max_iterations" and rec.n_iterations == 30
    assert rec.metrics["loss"][-1] > rec.metrics["loss"][0]


def test_the_sampler_solvers_take_the_stopping_of_dlngeo_run():
    import dlngeo
    from dlngeo.dynamics.base import Task

    net = dlngeo.DeepLinearNetwork([2, 2, 2])
    loss = dlngeo.create_loss("regression", target=np.diag([1.0, 0.5]))
    task = Task(loss=loss, network=net, start=np.eye(2) * 2)
    for name in ("riemannian_langevin", "riemannian_mala", "overparametrized_langevin"):
        solver = dlngeo.create_solver(name, beta=1e4, step=1e-3, record_every=1)
        full = solver.run(task, Stopping(max_iterations=300))
        energy = np.asarray(full.metrics["loss"])
        level = 0.5 * (energy[0] + energy[-1])
        first = int(np.nonzero(energy <= level)[0][0])
        rec = solver.run(task, Stopping(max_iterations=300, loss_below=level))
        assert rec.stop_reason == "loss_below" and rec.n_iterations == first, name
