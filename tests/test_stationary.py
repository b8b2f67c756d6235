"""Every method stops at a stationary point by default (stop reason ``stationary``).

The problem: a rank-3 model (network (10, 6, 3, 6, 12)) of rank-8 data
``Y = U diag(3 .. 1) V^T`` (12 x 10), ``E = ||X - Y||^2 / 2``. Its minimum on
the rank-3 matrices is the truncated SVD of ``Y`` (Eckart–Young),
``E* = sum_{i > 3} s_i^2 / 2 > 0``: no ``loss_below`` fires and, before the
stationary test existed, every method ran to ``max_iterations`` /
``max_time`` (pymanopt's TrustRegions for 4,000+ iterations at gradient
norm 1e-15).
"""

from __future__ import annotations

import numpy as np
import pytest

import dlngeo
from dlngeo.dynamics.base import (
    STATIONARY_ATOL,
    STATIONARY_RTOL,
    Stopping,
    Task,
    flow_stationary_floor,
)
from dlngeo.dynamics.intrinsic import lowrank_start
from dlngeo.dynamics.overparametrized import factor_loss_and_gradients
from dlngeo.dynamics.record import STOP_REASONS
from dlngeo.dynamics.riemannian import manifold_for
from dlngeo.lowrank import to_dense

DIMS, RANK = (10, 6, 3, 6, 12), 3
S = np.linspace(3.0, 1.0, 8)  # the data's singular values
E_STAR = 0.5 * float(np.sum(S[RANK:] ** 2))
# Smallest eigenvalue of the Riemannian Hessian (Frobenius metric) of ||X - Y||^2/2 on
# the rank-3 matrices at the truncated SVD: 1 - s_4 / s_3 (the mixed blocks couple
# s_i, i <= 3, with s_j, j > 3, through 1 - s_j / s_i; Absil & Malick 2012 / the
# fixed-rank Hessian's Weingarten term).
MU = 1.0 - S[RANK] / S[RANK - 1]
# The iterations each method needs to reduce its gradient by 1e-6 (flows: 1e-5) are a
# few hundred at most (linear rate ~ 1 - step * MU * s^{2-2/N}); the bound is 10 times
# that and far below Stopping's default of 10,000 that the old main ran into.
MAX_ITERATIONS = 5000

METHODS = {
    "overparametrized_gd": {"step": 0.05},
    "overparametrized_flow": {},
    "intrinsic_flow-dense": {"representation": "dense", "integrator": "LSODA"},
    "intrinsic_flow-lowrank": {"representation": "lowrank"},
    "riemannian_gd": {"step": 0.05},
    "riemannian_sd": {},
    "riemannian_cg": {},
    "riemannian_tr": {},
    "riemannian_gd-embedded": {"step": 0.05, "metric": "embedded"},
    "riemannian_sd-embedded": {"metric": "embedded"},
    "riemannian_cg-embedded": {"metric": "embedded"},
    "riemannian_tr-embedded": {"metric": "embedded"},
}
FLOWS = ("overparametrized_flow", "intrinsic_flow")


def _data(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    m, n = DIMS[-1], DIMS[0]
    U = np.linalg.qr(rng.standard_normal((m, S.size)))[0]
    V = np.linalg.qr(rng.standard_normal((n, S.size)))[0]
    return (U * S) @ V.T


def _task(X0: np.ndarray | None = None, seed: int = 0) -> Task:
    rng = np.random.default_rng(seed + 1)
    net = dlngeo.DeepLinearNetwork(DIMS)
    m, n = net.output_shape
    if X0 is None:
        X0 = 0.5 * rng.standard_normal((m, RANK)) @ rng.standard_normal((RANK, n)) / np.sqrt(n)
    loss = dlngeo.create_loss("regression", target=_data(seed))
    return Task(loss=loss, network=net, weights0=net.balanced(X0, rng=seed + 2), rank=RANK)


def _method(key: str):
    return dlngeo.create_solver(key.split("-")[0], **METHODS[key])


def _frobenius_gradient_norm(task: Task, X) -> float:
    """||P_T(X - Y)||_F on the rank-3 matrices at X: one currency for every method."""
    u, s, vt = np.linalg.svd(to_dense(X), full_matrices=False)
    u, vt = u[:, :RANK], vt[:RANK]
    R = to_dense(X) - task.loss.target
    P = u @ (u.T @ R) + (R @ vt.T) @ vt - u @ (u.T @ R @ vt.T) @ vt
    return float(np.linalg.norm(P))


def _own_gradient_norm(key: str, task: Task, record) -> float:
    """The method's own gradient norm at its final point, recomputed from the point."""
    if record.final_weights is not None:  # factor methods: the factor gradient
        _, _, grads = factor_loss_and_gradients(task.network, record.final_weights, task.loss)
        return float(np.sqrt(sum(np.sum(g * g) for g in grads)))
    manifold = manifold_for(task, METHODS[key].get("metric", "dln"))
    X = record.final_point
    point = manifold.point(*X) if isinstance(X, tuple) else manifold.point(*_svd(X))
    grad = manifold.euclidean_to_riemannian_gradient(point, task.loss.gradient(point))
    return float(manifold.norm(point, grad))


def _svd(X):
    u, s, vt = np.linalg.svd(X, full_matrices=False)
    return u[:, :RANK], s[:RANK], vt[:RANK]


@pytest.fixture(scope="module")
def runs():
    out = {}
    for key in METHODS:
        task = _task()
        out[key] = (task, _method(key).run(task, Stopping(max_iterations=MAX_ITERATIONS)))
    return out


def test_stationary_is_a_reason_code_and_on_by_default():
    assert "stationary" in STOP_REASONS
    stopping = Stopping()
    assert stopping.gradient_norm_rtol == STATIONARY_RTOL
    assert stopping.gradient_norm_atol == STATIONARY_ATOL


@pytest.mark.parametrize("key", list(METHODS))
def test_every_method_stops_at_the_stationary_point(runs, key):
    task, record = runs[key]
    assert record.stop_reason == "stationary", (record.stop_reason, record.n_iterations)
    assert record.n_iterations < MAX_ITERATIONS
    # The threshold the method promises: rtol (flows: at least 100 times their rtol).
    rtol = STATIONARY_RTOL
    if key.split("-")[0] in FLOWS:
        rtol = max(rtol, flow_stationary_floor(1e-7))  # the flows' default rtol
    g0, g = record.info["initial_gradient_norm"], record.info["gradient_norm"]
    assert g <= rtol * g0
    # Recomputed from the final point. (SteepestDescent tests its gradient before its
    # last step, so its final point is one step further, where nothing bounds the
    # gradient by the tested one; the checks below cover it.)
    if not key.startswith("riemannian_sd"):
        assert _own_gradient_norm(key, task, record) <= (1 + 1e-9) * rtol * g0
    # The same point in one currency, the Frobenius Riemannian gradient on the rank-3
    # matrices. Each method's own norm is the g_N norm (metric="embedded": the Frobenius
    # one itself; for balanced factors the factor gradient has the g_N norm), which
    # differs from the Frobenius one by the square root of A_{N,X}'s eigenvalues,
    # ~ s^{(N-1)/N} for s between the start's smallest (0.39) and the end's largest
    # (3): the ratios differ by < (3 / 0.39)^{3/4} < 5, so gF / gF0 < 5 * 1e-5 < 1e-3.
    X = to_dense(record.final_point)
    gF = _frobenius_gradient_norm(task, X)
    assert gF <= 1e-3 * _frobenius_gradient_norm(task, task.X0)
    # ... and the loss is the best rank-3 loss E* (Eckart–Young) up to the second-order
    # bound E - E* <= ||grad||^2 / (2 MU), with a factor 2 for the higher-order terms;
    # below E* only by what X has beyond rank 3 (the dense flow integrates all entries):
    # E(X) >= E(X_3) - ||X - X_3|| ||X_3 - Y|| >= E* - ||X - X_3|| ||X_3 - Y||.
    u, s, vt = _svd(X)
    X3 = (u * s) @ vt
    below = np.linalg.norm(X - X3) * np.linalg.norm(X3 - task.loss.target)
    rounding = 1e-13 * E_STAR
    assert E_STAR - below - rounding <= record.final_loss <= E_STAR + gF**2 / MU + rounding


@pytest.mark.parametrize("key", list(METHODS))
def test_loss_below_still_wins_when_reached_first(key):
    task = _task()
    # Between the start's loss and the minimum: reached long before stationarity.
    target_loss = E_STAR + 0.1 * (task.loss.value(task.X0) - E_STAR)
    record = _method(key).run(task, Stopping(max_iterations=MAX_ITERATIONS, loss_below=target_loss))
    assert record.stop_reason == "loss_below"
    assert record.final_loss <= target_loss


@pytest.mark.parametrize(
    "key", ["overparametrized_gd", "intrinsic_flow-lowrank", "riemannian_gd", "riemannian_tr"]
)
def test_a_stationary_start_stops_at_once(key):
    """At the truncated SVD of Y the gradient is rounding (< atol): stop at the first test."""
    u, s, vt = np.linalg.svd(_data(), full_matrices=False)
    task = _task(X0=(u[:, :RANK] * s[:RANK]) @ vt[:RANK])
    start, _ = lowrank_start(task)
    assert _frobenius_gradient_norm(task, to_dense(start)) < STATIONARY_ATOL
    record = _method(key).run(task, Stopping(max_iterations=MAX_ITERATIONS))
    assert record.stop_reason == "stationary"
    # pymanopt tests first after its first iteration; the others at the start.
    assert record.n_iterations <= (1 if key == "riemannian_tr" else 0)


@pytest.mark.parametrize("off", [None, 0.0])  # None from Python, 0 from a TOML config
@pytest.mark.parametrize("key", ["riemannian_tr", "overparametrized_flow"])
def test_stationary_test_can_be_switched_off(key, off):
    # TrustRegions is stationary after ~15 iterations and the flow after ~350 steps.
    n = {"riemannian_tr": 50, "overparametrized_flow": 1000}[key]
    stopping = Stopping(max_iterations=n, gradient_norm_rtol=off, gradient_norm_atol=off)
    record = _method(key).run(_task(), stopping)
    assert record.stop_reason == "max_iterations" and record.n_iterations == n


def test_langevin_samplers_do_not_stop_on_the_gradient():
    """Samplers draw from exp(-beta E): a small gradient is no reason to stop sampling."""
    u, s, vt = np.linalg.svd(_data(), full_matrices=False)
    task = _task(X0=(u[:, :RANK] * s[:RANK]) @ vt[:RANK])  # start at the minimum
    sampler = dlngeo.create_solver("overparametrized_langevin", beta=1e8, step=1e-4)
    record = sampler.run(task, Stopping(max_iterations=20))
    assert record.stop_reason == "max_iterations" and record.n_iterations == 20


def test_noisy_gradient_descent_samples_and_does_not_stop_on_the_gradient():
    u, s, vt = np.linalg.svd(_data(), full_matrices=False)
    task = _task(X0=(u[:, :RANK] * s[:RANK]) @ vt[:RANK])  # start at the minimum
    record = dlngeo.create_solver("overparametrized_gd", step=1e-3, noise=1e-8).run(
        task, Stopping(max_iterations=20)
    )
    assert record.stop_reason == "max_iterations" and record.n_iterations == 20


def test_plugins_listing_and_option_errors_show_the_default(capsys):
    from dlngeo.cli import main

    assert main(["plugins", "--kind", "solver"]) == 0
    out = capsys.readouterr().out
    assert "gradient_norm_rtol" in out and f"{STATIONARY_RTOL:g}" in out
    # the floor is relative to the data's gradient scale G, and the text says so
    assert f"gradient_norm_atol={STATIONARY_ATOL:g} x G, G = sqrt(N) ||E'(0)||" in out
    with pytest.raises(ValueError, match=f"gradient_norm_rtol={STATIONARY_RTOL:g}"):
        dlngeo.create_solver("riemannian_tr", stepp=1)


# ------------------------------------------------ the floor follows the data's scale
def _scaled_task(c: float, stationary: bool) -> Task:
    """The module's problem with data ``c Y`` and start ``c X0`` (or the best rank-3 ``c X_3``)."""
    net = dlngeo.DeepLinearNetwork(DIMS)
    Y = c * _data()
    if stationary:
        u, s, vt = np.linalg.svd(Y, full_matrices=False)
        X0 = (u[:, :RANK] * s[:RANK]) @ vt[:RANK]
    else:
        rng = np.random.default_rng(1)
        m, n = net.output_shape
        X0 = c * 0.5 * rng.standard_normal((m, RANK)) @ rng.standard_normal((RANK, n)) / np.sqrt(n)
    loss = dlngeo.create_loss("regression", target=Y)
    return Task(loss=loss, network=net, weights0=net.balanced(X0, rng=2), rank=RANK)


SCALE_KEYS = ["riemannian_tr", "riemannian_tr-embedded", "riemannian_cg", "intrinsic_flow-lowrank"]


@pytest.mark.parametrize("c", [1e-4, 1e4])
@pytest.mark.parametrize("key", SCALE_KEYS)
def test_a_stationary_start_stops_at_once_at_any_data_scale(key, c):
    """Data c Y, start at its best rank-3 approximation: the gradient is rounding, stop at once.

    The rounding of the method's gradient there scales like the gradient, c^{(2N-1)/N} (N = 4,
    or 1 for the embedded metric), and so does the floor gradient_norm_atol * G. On e33ebfc the
    floor was 1e-12 absolute: at c = 1e4 the rounding (~1e-16 * c^{7/4} ~ 1e-9) stays above it
    and the run went on until max_iterations.
    """
    task = _scaled_task(c, stationary=True)
    record = _method(key).run(task, Stopping(max_iterations=200))
    assert record.stop_reason == "stationary", (record.stop_reason, record.n_iterations)
    assert record.n_iterations <= (1 if key.startswith("riemannian_") else 0)


@pytest.mark.parametrize("c", [1e-4, 1e4])
@pytest.mark.parametrize(
    "key",
    ["riemannian_gd", "overparametrized_gd", "riemannian_tr", "riemannian_tr-embedded"]
    + ["intrinsic_flow-lowrank"],
)
def test_the_stationary_stop_does_not_fire_early_at_any_data_scale(key, c):
    """Data c Y from a generic start: the stop is the relative test, ||g|| <= rtol ||g_0||.

    rtol = 1e-8 (tighter than the default; flows: their floor 100 x rtol; not the line-search
    methods, which resolve ~1.5e-8 only, see STATIONARY_RTOL). The floor atol * G
    is 1e-12 of the gradient's scale G, far below rtol * ||g_0|| at every c (||g_0|| is a
    fixed fraction of G, as both scale like c^{(2N-1)/N}), so the run goes on until the
    relative test. The constant steps follow the curvature in the metric, which scales like
    c^{2(N-1)/N} (E ~ c^2, g_N-lengths ~ c^{1/N}): step 0.05 c^{-3/2}. On e33ebfc, at
    c = 1e-4 and depth 4, ||g_0|| ~ 2 c^{7/4} ~ 1e-7 and the absolute floor 1e-12 fired at
    ||g|| ~ 1e-5 ||g_0|| (the linearly converging GD methods stop there; trust regions and
    CG happen to jump past it).
    """
    task = _scaled_task(c, stationary=False)
    options = dict(METHODS[key])
    if "step" in options:
        options["step"] *= c ** (-2 * (task.depth - 1) / task.depth)
    method = dlngeo.create_solver(key.split("-")[0], **options)
    record = method.run(task, Stopping(max_iterations=MAX_ITERATIONS, gradient_norm_rtol=1e-8))
    assert record.stop_reason == "stationary", (record.stop_reason, record.n_iterations)
    rtol = 1e-8
    if key.split("-")[0] in FLOWS:
        rtol = max(rtol, flow_stationary_floor(1e-7))  # the flows' default rtol
    g0, g = record.info["initial_gradient_norm"], record.info["gradient_norm"]
    assert g <= rtol * g0, (g / g0, record.n_iterations)
