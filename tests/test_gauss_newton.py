"""Riemannian Levenberg–Marquardt (riemannian_lm), residual caching and the low-rank entries gather."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from least_squares import completion, sensing

import dlngeo
from dlngeo.dynamics.base import Stopping, Task
from dlngeo.dynamics.gauss_newton import _LMStepper
from dlngeo.lowrank import entries, to_dense

EPS = np.finfo(float).eps


def spectral_task(loss, shape, rank, seed=0, depth=2):
    """A task on ``loss`` starting at the weighted spectral start (the top-r SVD of the rescaled data)."""
    rng = np.random.default_rng(seed)
    net = dlngeo.DeepLinearNetwork((shape[1],) + (max(shape),) * (depth - 1) + (shape[0],))
    weights = dlngeo.create_sampler("spectral", init_scale=1.0, rank=rank, weighted=True).sample(
        rng, network=net, loss=loss
    )
    return Task(loss=loss, network=net, weights0=weights, rank=rank)


def tangent_jacobian_floor(loss, point):
    """Smallest nonzero singular value of the tangent Jacobian at ``point`` (its null space: the r^2 redundancy)."""
    J = loss.tangent_linearization(point).jacobian
    J = J.toarray() if hasattr(J, "toarray") else np.asarray(J)
    sv = np.linalg.svd(J, compute_uv=False)
    rank = point[1].size
    return sv[J.shape[1] - rank * rank - 1]


@pytest.mark.parametrize("problem", ["completion", "sensing"])
def test_lm_converges_and_agrees_with_trust_regions(problem):
    loss, M = completion() if problem == "completion" else sensing()
    task = spectral_task(loss, loss.shape, rank=2)
    # to the rounding floor: the stationary stop (relative 1e-6) would end both runs earlier
    stop = Stopping(
        loss_below=1e-26, max_iterations=200, gradient_norm_rtol=0, gradient_norm_atol=0
    )
    lm = dlngeo.create_solver("riemannian_lm").run(task, stop)
    tr = dlngeo.create_solver("riemannian_tr", metric="embedded").run(task, stop)
    assert lm.stop_reason == "loss_below" and tr.stop_reason == "loss_below"
    X_lm, X_tr = to_dense(lm.final_point), to_dense(tr.final_point)
    # Both points fit the data to residual norm ||r|| <= sqrt(1e-26 / w); near the
    # (isolated) solution ||X - X*||_F <= ||r|| / sigma_min(J restricted to the
    # tangent space), up to the second-order term of the retraction, so the two
    # solutions differ by at most the sum of the two bounds (doubled for that term).
    floor = tangent_jacobian_floor(loss, lm.final_point)
    residuals = [np.linalg.norm(loss.residual(rec.final_point)) for rec in (lm, tr)]
    bound = 2 * sum(residuals) / floor + 10 * EPS * np.linalg.norm(M) * max(M.shape)
    assert np.linalg.norm(X_lm - X_tr) <= bound
    assert np.linalg.norm(X_lm - M) <= bound  # and both are the planted matrix
    assert lm.n_iterations <= tr.n_iterations  # Gauss–Newton: a handful of steps


def test_lm_record_protocol():
    loss, _ = completion()
    task = spectral_task(loss, loss.shape, rank=2)
    rec = dlngeo.create_solver("riemannian_lm", record_every=2).run(
        task, Stopping(max_iterations=3)
    )
    assert rec.stop_reason == "max_iterations" and rec.n_iterations == 3
    assert rec.time_kind == "iteration" and rec.iterations == [0, 2, 3]
    assert rec.metrics["loss"][-1] == pytest.approx(loss.value(rec.final_point), rel=1e-12)
    assert rec.evaluations["inner"] == rec.info["inner_iterations"] > 0


def test_lm_gradient_norm_is_the_riemannian_gradient_norm():
    loss, _ = completion()
    task = spectral_task(loss, loss.shape, rank=2)
    rec = dlngeo.create_solver("riemannian_lm").run(task, Stopping(gradient_norm_below=1e300))
    manifold = dlngeo.FixedRank(*loss.shape, 2)
    point = rec.final_point
    expected = manifold.norm(point, manifold.projection(point, loss.gradient(point)))
    stepper = _LMStepper(task, dlngeo.create_solver("riemannian_lm"))
    stepper.start()
    # Same point (the start); the two computations differ by rounding of O(|Omega|) sums.
    assert stepper.gradient_norm == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(
    "options, field",
    [
        ({"radius": 0}, "radius"),
        ({"radius": float("inf")}, "radius"),
        ({"forcing": 1.5}, "forcing"),
        ({"theta": 0}, "theta"),
        ({"theta": float("inf")}, "theta"),
        ({"projected_start": "yes"}, "projected_start"),
        ({"power_iterations": -1}, "power_iterations"),
        ({"max_inner": 0}, "max_inner"),
        ({"max_rejections": 1.5}, "max_rejections"),
        ({"record_every": 0}, "record_every"),
    ],
)
def test_lm_rejects_bad_options(options, field):
    with pytest.raises(ValueError, match=field):
        dlngeo.create_solver("riemannian_lm", **options)


def test_lm_rejects_a_loss_without_linearization():
    target = np.outer(np.arange(1.0, 5.0), np.arange(1.0, 4.0))
    loss = dlngeo.create_loss("regression", target=target)
    net = dlngeo.DeepLinearNetwork((3, 4, 4))
    weights = dlngeo.create_sampler("gaussian", init_scale=1e-2).sample(0, net)
    with pytest.raises(ValueError, match="^loss: riemannian_lm"):
        dlngeo.create_solver("riemannian_lm").run(Task(loss, net, weights, rank=1))


def test_tangent_jacobian_is_the_derivative_of_the_residual():
    for loss, _ in (completion(), sensing()):
        m, n = loss.shape
        rng = np.random.default_rng(5)
        u, _ = np.linalg.qr(rng.standard_normal((m, 2)))
        v, _ = np.linalg.qr(rng.standard_normal((n, 2)))
        point = (u, np.array([3.0, 1.5]), v.T)
        lin = loss.tangent_linearization(point)
        A, B = rng.standard_normal((m, 2)), rng.standard_normal((n, 2))
        c = np.concatenate((A.ravel(), B.ravel()))
        X = to_dense(point) + A @ v.T + u @ B.T
        exact = loss.residual(X) - lin.residual  # the residual is linear in X
        # Both sides sum O(r) products per entry: rounding ~ eps * sum of magnitudes.
        np.testing.assert_allclose(lin.jacobian @ c, exact, atol=1e3 * EPS * np.abs(X).max())


# ---------------------------------------------------------------- residual cache, entries
def test_completion_cost_and_gradient_share_one_pass(monkeypatch):
    loss, _ = completion()
    fresh, _ = completion()
    calls = []
    module = sys.modules[type(loss).__module__]  # wherever the registered loss is defined
    original = module.entries
    monkeypatch.setattr(module, "entries", lambda *a: calls.append(1) or original(*a))
    rng = np.random.default_rng(0)
    u, _ = np.linalg.qr(rng.standard_normal((30, 2)))
    v, _ = np.linalg.qr(rng.standard_normal((24, 2)))
    point = (u, np.array([2.0, 1.0]), v.T)
    value = loss.value(point)
    gradient = loss.gradient(point)
    assert len(calls) == 1
    # Identical to a loss that never saw the point (the same arithmetic).
    assert value == fresh.value(point)
    np.testing.assert_array_equal(gradient.toarray(), fresh.gradient(point).toarray())
    # Singular values changed in place, or new arrays, are recomputed.
    point[1][0] = 3.0
    before = len(calls)
    changed = loss.value(point)
    assert len(calls) == before + 1
    assert changed == fresh.value(point)
    before = len(calls)
    loss.value((u.copy(), point[1], point[2]))
    assert len(calls) == before + 1


def test_entries_gathers_scaled_rows_equal_to_the_old_path_to_rounding():
    rng = np.random.default_rng(2)
    u = rng.standard_normal((50, 4))
    s = np.array([1e3, 10.0, 1.0, 1e-3])
    vt = rng.standard_normal((4, 40))
    rows, cols = rng.integers(0, 50, 500), rng.integers(0, 40, 500)
    new = entries((u, s, vt), rows, cols)
    old = np.einsum("ij,ij->i", u[rows] * s, vt.T[cols])
    # The two differ only in the order of the two multiplications of each term:
    # at most one rounding (eps/2 relative) per term, r terms.
    bound = 4 * EPS * np.einsum("ij,ij->i", np.abs(u[rows] * s), np.abs(vt.T[cols]))
    assert np.all(np.abs(new - old) <= bound)
    np.testing.assert_allclose(new, (u * s @ vt)[rows, cols], rtol=0, atol=bound.max() * 4)


def test_entries_in_chunks_equal_one_gather():
    from dlngeo import lowrank

    rng = np.random.default_rng(4)
    u, vt = rng.standard_normal((300, 3)), rng.standard_normal((3, 200))
    s = np.array([3.0, 2.0, 1.0])
    count = 3 * lowrank.CHUNK + 17
    rows, cols = rng.integers(0, 300, count), rng.integers(0, 200, count)
    # Each entry is the same r-term einsum, whichever chunk it falls in: equal bit for bit.
    one = np.einsum("ij,ij->i", (u * s)[rows], vt.T[cols])
    np.testing.assert_array_equal(entries((u, s, vt), rows, cols), one)
