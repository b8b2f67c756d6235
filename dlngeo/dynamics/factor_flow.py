r"""The gradient flow on the factors, :math:`\dot W = -\nabla L(W)`, by a scipy ODE solver.

:class:`OverparametrizedFlow` integrates the flow with one of
``scipy.integrate``'s ODE solvers (the classes ``solve_ivp`` uses: ``RK45``,
``DOP853``, ``RK23``, ``Radau``, ``BDF``, ``LSODA``), stepped one accepted step
at a time so that stopping is checked after every step; flow time is the ODE
time, and ``record_times`` are evaluated with the solver's dense output. The
helpers for the solver options and for reporting an integrator failure are
shared with the intrinsic flow (:mod:`.intrinsic`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from .base import Callback, Method, Stopping, Task
from .driver import (
    NumericalFailure,
    ScipyODEStepper,
    Stepper,
    check_choice,
    check_positive,
    check_record_options,
    drive_method,
)
from .events import Event, check_events
from .factor_gradients import factor_loss_and_gradients
from .record import Record

__all__ = ["OverparametrizedFlow", "ODE_INTEGRATORS"]

#: ``scipy.integrate`` solver classes accepted as ``integrator``.
ODE_INTEGRATORS = ("RK45", "DOP853", "RK23", "Radau", "BDF", "LSODA")


class _FactorFlowStepper(ScipyODEStepper):
    """The factor flow on the concatenated ``vec(W_1), ..., vec(W_N)``."""

    def __init__(
        self, task: Task, integrator: str, rtol: float, atol: float, max_step: float, t_bound: float
    ):
        super().__init__(
            np.concatenate([w.ravel() for w in task.initial_weights()]),
            integrator,
            rtol,
            atol,
            max_step,
            t_bound,
        )
        self.task = task
        self.shapes = task.network.shapes
        self.sizes = [a * b for a, b in self.shapes]
        self.offsets = np.cumsum([0] + self.sizes)

    def unpack(self, y: np.ndarray) -> list[np.ndarray]:
        return [
            y[a:b].reshape(s) for a, b, s in zip(self.offsets[:-1], self.offsets[1:], self.shapes)
        ]

    def rhs(self, t: float, y: np.ndarray) -> np.ndarray:
        if not np.isfinite(y).all():
            raise NumericalFailure("non-finite factors")
        _, value, grads = factor_loss_and_gradients(
            self.task.network, self.unpack(y), self.task.loss
        )
        self.counts["loss"] += 1
        self.counts["gradient"] += 1
        out = -np.concatenate([g.ravel() for g in grads])
        if not (math.isfinite(value) and np.isfinite(out).all()):
            raise NumericalFailure("non-finite loss or gradient")
        # sqrt(out . out): numpy.linalg.norm's own formula for a real vector, without its checks.
        self._cache = (y, float(value), math.sqrt(float(out @ out)))
        return out

    def point(self) -> np.ndarray:
        return self.task.point(self.unpack(self._y))

    def weights(self) -> list[np.ndarray]:
        return [w.copy() for w in self.unpack(self._y)]

    def interpolate(self, t: float) -> tuple[Any, Any]:
        y = self.dense_output()(t)
        W = [w.copy() for w in self.unpack(y)]
        return self.task.point(W), W


def _check_ode_options(rtol: Any, atol: Any, max_step: Any) -> tuple[float, float, float]:
    """The scipy solver options of a flow: positive ``rtol``, ``atol``, ``max_step`` (``None`` or ``inf``: no bound)."""
    rtol, atol = check_positive("rtol", rtol), check_positive("atol", atol)
    return (
        rtol,
        atol,
        np.inf if max_step is None or max_step == np.inf else check_positive("max_step", max_step),
    )


class OverparametrizedFlow(Method):
    """The gradient flow on the factors, :math:`\\dot W = -\\nabla L(W)`, by a scipy ODE solver.

    Args:
        integrator: One of :data:`ODE_INTEGRATORS` (scipy.integrate's classes;
            ``solve_ivp(method=...)`` names), or ``"RK4"``: fixed-step
            :class:`~dlngeo.dynamics.rk4.RK4` with step ``max_step``, for the
            flow of a ReLU network (its right-hand side jumps at the kinks,
            where an adaptive step can collapse).
        rtol, atol: The solver's relative and absolute tolerances (componentwise,
            as in ``solve_ivp``; unused by ``RK4``).
        max_step: Largest step (flow time); ``RK4``'s step (required).
        end_time: Default final flow time when the stopping has no ``end_time``
            (``None``: integrate until another criterion stops the run).
        record_every: Record every ``k``-th accepted step.
        record_times: Record at these flow times (dense output) instead.
        events: :class:`~dlngeo.dynamics.events.Event` crossings to locate on
            the dense output (``record.events``; a terminal one ends the run).

    Iterations are accepted ODE steps; ``evaluations`` counts right-hand sides.
    Non-finite values, a loss blow-up, or a solver failure ("required step
    size is less than spacing between numbers": a finite-time singularity)
    stop with ``"diverged"``.
    """

    name = "overparametrized_flow"
    flow_time = True
    follows = "overparametrized"
    samples_at_times = True
    rtol_option = "rtol"
    overparametrized = True
    supports_activation = True

    def __init__(
        self,
        *,
        integrator: str = "RK45",
        rtol: float = 1e-7,
        atol: float = 1e-10,
        max_step: float = np.inf,
        end_time: float | None = None,
        record_every: int = 1,
        record_times: Any = None,
        events: Sequence[Event] | None = None,
    ):
        self.integrator = check_choice("integrator", integrator, (*ODE_INTEGRATORS, "RK4"))
        self.rtol, self.atol, self.max_step = _check_ode_options(rtol, atol, max_step)
        if integrator == "RK4" and not np.isfinite(self.max_step):
            raise ValueError("max_step: integrator RK4 needs its fixed step as max_step")
        self.end_time = check_positive("end_time", end_time, allow_none=True)
        self.record_every, self.record_times = check_record_options(record_every, record_times)
        self.events = check_events(events)

    def run(
        self, task: Task, stopping: Stopping | None = None, callback: Callback | None = None
    ) -> Record:
        stopping = stopping if stopping is not None else Stopping()
        t_bound = _t_bound(stopping, self.end_time)
        stepper = _FactorFlowStepper(
            task, self.integrator, self.rtol, self.atol, self.max_step, t_bound
        )
        return _finish_flow(
            drive_method(
                self,
                task,
                stepper,
                stopping,
                callback,
                info={
                    "integrator": self.integrator,
                    "rtol": self.rtol,
                    "atol": self.atol,
                    "time": "ODE time",
                },
            ),
            stepper,
        )


def _t_bound(stopping: Stopping, end_time: float | None) -> float:
    if stopping.end_time is not None:
        return float(stopping.end_time)
    return float(end_time) if end_time is not None else np.inf


def _finish_flow(record: Record, stepper: Stepper) -> Record:
    """Report an integrator failure as ``diverged``, with the solver's message in ``info``.

    An explicit integrator fails only when the step size it needs falls below
    the spacing of floats: the solution's derivatives exploded (a finite-time
    singularity), which is what ``diverged`` means for a flow.
    """
    failure = getattr(stepper, "failure", None)
    if failure is not None:
        record.info["solver_message"] = failure
        if record.stop_reason == "end_time":
            record.stop_reason = "diverged"
    return record
