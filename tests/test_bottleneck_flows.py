"""The dense intrinsic flow on a bottlenecked network, with every integrator, against the factor flow.

On dims (6, 7, 2, 7, 7, 5) the end-to-end matrix is 5 x 6 of rank <= 2. The
dense flow integrates all 30 entries; its vector field must be the metric
operator at rank 2 (``metric_operator(..., rank=task.rank)``): without the
rank, the integrator's error ``e`` in the three normal singular values enters
the kernel as ``e**(2/N)`` and the flow is stiff and wrong (Arora, Cohen &
Hazan 2018, Theorem 1 says the two flows coincide from a balanced start).
"""

from __future__ import annotations

import numpy as np
import pytest

import dlngeo
from dlngeo.dynamics.base import Stopping, Task
from dlngeo.dynamics.intrinsic import IntrinsicFlow
from dlngeo.dynamics.overparametrized import ODE_INTEGRATORS, OverparametrizedFlow
from dlngeo.lowrank import to_dense

DIMS = (6, 7, 2, 7, 7, 5)
RANK = 2
T = 0.3
RTOL, ATOL = 1e-8, 1e-10
# Each integrator keeps its local error per step below rtol |X| + atol (entries of X
# are O(1), so atol is negligible). Its global error is C * rtol, with C the flow's
# error propagation over [0, T] (e^{L T}, L <= ||A_{N,X}|| ||E''|| ~ s_max^{2-2/N} ~ 3
# here: e^{0.9} ~ 2.5) times how far an embedded estimate (one order lower) may
# understate the true local error (a factor up to ~40): 100 * rtol.
GAP = 100 * RTOL
# A step count far above what a non-stiff integration of 30 unknowns over T = 0.3
# at rtol 1e-8 needs (RK23, the lowest order, ~ T (C / rtol)^{1/3} ~ 1e3 steps); the
# stiffness of the rank-blind vector field drives Radau, BDF, LSODA and RK23 past it.
MAX_STEPS = 3000


def _task() -> Task:
    rng = np.random.default_rng(0)
    net = dlngeo.DeepLinearNetwork(DIMS)
    m, n = net.output_shape
    target = rng.standard_normal((m, n))
    X0 = 0.5 * rng.standard_normal((m, RANK)) @ rng.standard_normal((RANK, n))
    loss = dlngeo.create_loss("regression", target=target)
    return Task(loss=loss, network=net, weights0=net.balanced(X0, rng=1), rank=RANK)


@pytest.fixture(scope="module")
def reference():
    """The factor flow to a much tighter tolerance (error ~1e-11, far below GAP)."""
    task = _task()
    record = OverparametrizedFlow(integrator="DOP853", rtol=1e-12, atol=1e-14).run(
        task, Stopping(max_iterations=None, end_time=T)
    )
    assert record.stop_reason == "end_time"
    return task, record


@pytest.mark.parametrize("integrator", ODE_INTEGRATORS)
def test_dense_intrinsic_flow_on_a_bottleneck_equals_the_factor_flow(reference, integrator):
    task, factor = reference
    record = IntrinsicFlow(representation="dense", integrator=integrator, rtol=RTOL, atol=ATOL).run(
        task, Stopping(max_iterations=MAX_STEPS, end_time=T)
    )
    assert record.info["representation"] == "dense"
    assert record.stop_reason == "end_time", (record.stop_reason, record.n_iterations)
    X, X_ref = to_dense(record.final_point), to_dense(factor.final_point)
    gap = np.linalg.norm(X - X_ref) / np.linalg.norm(X_ref)
    assert gap <= GAP, gap
    # Not vacuous: the flow moved by O(1).
    assert np.linalg.norm(X_ref - task.X0) / np.linalg.norm(X_ref) > 0.5


@pytest.mark.parametrize("integrator", ["Radau", "BDF", "LSODA", "DOP853"])
def test_auto_picks_the_dense_flow_for_integrators_without_a_lowrank_scheme(integrator):
    assert IntrinsicFlow(integrator=integrator).resolved_representation(_task()) == "dense"


def test_the_dense_flow_keeps_the_rank_of_its_start_not_a_lower_task_rank():
    """A full-width network (task rank 2 for the low-rank methods) from a full-rank start:
    the dense flow must move every singular value (the quick default comparison)."""
    rng = np.random.default_rng(3)
    net = dlngeo.DeepLinearNetwork((5, 5, 5, 5))
    target = rng.standard_normal((5, 5))
    X0 = 0.3 * rng.standard_normal((5, 5))
    loss = dlngeo.create_loss("regression", target=target)
    task = Task(loss=loss, network=net, weights0=net.balanced(X0, rng=4), rank=2)
    stopping = Stopping(max_iterations=MAX_STEPS, end_time=T)
    factor = OverparametrizedFlow(integrator="DOP853", rtol=1e-12, atol=1e-14).run(task, stopping)
    dense = IntrinsicFlow(representation="dense", integrator="BDF", rtol=RTOL, atol=ATOL).run(
        task, stopping
    )
    assert dense.info["rank"] == 5 and dense.stop_reason == "end_time"
    X, X_ref = to_dense(dense.final_point), to_dense(factor.final_point)
    assert np.linalg.norm(X - X_ref) <= GAP * np.linalg.norm(X_ref)
    # ... while a rank-2 start in the same network keeps rank 2.
    task2 = Task(
        loss=loss, network=net, weights0=net.balanced(X0 @ _projector(X0, 2), rng=4), rank=2
    )
    assert IntrinsicFlow(representation="dense").run(task2, stopping).info["rank"] == 2


def _projector(X: np.ndarray, r: int) -> np.ndarray:
    """Projector onto the top-r right singular vectors of X."""
    vt = np.linalg.svd(X)[2][:r]
    return vt.T @ vt
