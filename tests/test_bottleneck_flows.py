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
