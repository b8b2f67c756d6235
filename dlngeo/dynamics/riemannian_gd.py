r"""Constant-step Riemannian gradient descent on the rank-r manifold.

:class:`RiemannianGD` iterates

.. math:: X_{k+1} = R_{X_k}\bigl(-\eta\,\operatorname{grad}_{g} E(X_k)\bigr)

with a constant step :math:`\eta` and the retraction of :class:`~dlngeo.FixedRank`
(metric projection). With ``metric="dln"`` the metric :math:`g` is :math:`g_N`
of the task's depth and the iteration is the explicit Euler scheme of the
intrinsic flow :math:`\dot X = -A_{N,X}(E'(X))` on :math:`(M_r, g_N)` (Bah et
al. 2021), so its flow time is :math:`t = \eta k`, comparable with the flows';
``metric="embedded"`` is Riemannian GD for the Frobenius metric (Vandereycken
2013). :func:`manifold_for` gives the manifold of either metric (the pymanopt
adapter, :mod:`dlngeo.dynamics.pymanopt_solver`, uses it too).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..geometry.dln_fixed_rank import DLNFixedRank
from ..geometry.fixed_rank import FixedRank
from ..validation import check_choice, check_positive
from .base import Callback, Method, Stopping, Task
from .driver import (
    NumericalFailure,
    Stepper,
    check_record_options,
    drive_method,
    is_finite_point,
)
from .intrinsic import lowrank_start
from .record import Record

__all__ = ["RiemannianGD", "manifold_for"]

METRICS = ("dln", "embedded")


def manifold_for(task: Task, metric: str) -> FixedRank:
    """``DLNFixedRank(m, n, r, N)`` for ``metric="dln"``, ``FixedRank(m, n, r)`` for ``"embedded"``."""
    m, n = task.network.output_shape
    if metric == "dln":
        return DLNFixedRank(m, n, task.rank, task.depth)  # type: ignore[arg-type]  # Task.rank is set in __post_init__
    return FixedRank(m, n, task.rank)  # type: ignore[arg-type]  # Task.rank is set in __post_init__


# ------------------------------------------------------------------ constant-step GD
class _RGDStepper(Stepper):
    gradient_norm: float  # set by _evaluate at every point

    def __init__(self, task: Task, manifold: FixedRank, step: float):
        self.task, self.manifold, self.eta = task, manifold, step
        self.metric_depth = getattr(manifold, "depth", 1)
        start, self.truncation = lowrank_start(task)
        self.X = manifold.point(*start)
        self.counts = {"loss": 0, "gradient": 0}

    def _evaluate(self) -> None:
        if not is_finite_point(self.X):
            raise NumericalFailure("non-finite point")
        value, G = self.task.loss.value_and_gradient(self.X)
        self.counts["loss"] += 1
        self.counts["gradient"] += 1
        self.grad = self.manifold.euclidean_to_riemannian_gradient(self.X, G)
        self.loss = float(value)
        self.gradient_norm = float(self.manifold.norm(self.X, self.grad))
        if not (np.isfinite(self.loss) and np.isfinite(self.gradient_norm)):
            raise NumericalFailure("non-finite loss or gradient")

    def start(self) -> None:
        self._evaluate()

    def step(self) -> None:
        self.X = self.manifold.retraction(self.X, self.grad * (-self.eta))
        self.step_norm = self.eta * self.gradient_norm
        self.iteration += 1
        self.t = self.eta * self.iteration
        self._evaluate()

    def point(self) -> Any:
        return self.X

    def info(self) -> dict[str, Any]:
        return {"start_truncation": self.truncation, "rank": self.task.rank}


class RiemannianGD(Method):
    """Constant-step Riemannian gradient descent on ``(M_r, g_N)`` (Euler for the intrinsic flow).

    Args:
        step: ``eta > 0``; flow time of iterate ``k`` is ``eta * k``.
        metric: ``"dln"`` (g_N of the task's depth) or ``"embedded"`` (Frobenius).
        record_every, record_times: See :mod:`dlngeo.dynamics.driver`.

    Starts at the rank-``r`` truncation of ``phi(W(0))``; the gradient norm
    checked by ``gradient_norm_below`` is the norm in the chosen metric.
    """

    name = "riemannian_gd"
    #: ``Record.times`` are flow times (``eta * k``).
    flow_time = True
    follows = "intrinsic"
    step_option = "step"

    def __init__(
        self,
        step: float = 1e-2,
        *,
        metric: str = "dln",
        record_every: int = 1,
        record_times: Any = None,
    ):
        self.step = check_positive("step", step)
        self.metric = check_choice("metric", metric, METRICS)
        self.record_every, self.record_times = check_record_options(record_every, record_times)

    def run(
        self, task: Task, stopping: Stopping | None = None, callback: Callback | None = None
    ) -> Record:
        stepper = _RGDStepper(task, manifold_for(task, self.metric), self.step)
        return drive_method(
            self,
            task,
            stepper,
            stopping,
            callback,
            info={"step": self.step, "metric": self.metric, "time": "t = step * iteration"},
        )
