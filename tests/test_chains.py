"""The Langevin samplers are steppers of the one driver: one recorder, one stopping path."""

import numpy as np
import pytest

from dlngeo.dynamics import driver
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
