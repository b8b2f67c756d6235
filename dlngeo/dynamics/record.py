"""The Record of a run: time series of metrics, final point, stop reason, cost.

Every method (flows, descents, pymanopt solvers, Langevin samplers) returns
one, filled by the one :class:`Recorder` (the task's metrics at each sample).
``to_dict()`` gives the JSON summary written to ``results.json``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..lowrank import is_lowrank_point

if TYPE_CHECKING:
    from .base import Callback, Task

__all__ = ["Record", "Recorder", "STOP_REASONS", "TIME_KINDS", "is_finite_point", "to_json_value"]

#: Structured stop reason codes shared by every method.
STOP_REASONS = (
    "max_iterations",
    "max_time",
    "loss_below",
    "gradient_norm_below",
    "stationary",  # gradient norm <= rtol * its start value (Stopping.gradient_norm_rtol)
    "step_below",
    "diverged",
    "stalled",
    "end_time",  # an ODE integration reached its final time
    "converged",  # a solver's own convergence test (pymanopt)
    "event",  # a terminal event's crossing (dlngeo.dynamics.events)
    "interrupted",  # Ctrl-C during dlngeo.experiment.compare: the samples so far
)

#: What ``Record.times`` means. ``"flow"``: the flow time of the gradient
#: flow the method follows (ODE time; ``eta * k`` for a constant step
#: ``eta``; the accumulated step sizes for a line search). ``"iteration"``:
#: the method has no flow time (conjugate gradients, trust regions) and
#: ``times`` repeats the iteration numbers.
TIME_KINDS = ("flow", "iteration")


def to_json_value(value: Any) -> Any:
    """Plain JSON value of ``value``: arrays to lists, numpy scalars to Python, NaN/inf to ``None``.

    The one converter of the package: :meth:`Record.to_dict` and the results
    file (:mod:`dlngeo.results`) both use it. Dictionary keys become strings;
    any other object becomes its ``repr``.
    """
    if isinstance(value, np.ndarray):
        return to_json_value(value.tolist())
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): to_json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json_value(v) for v in value]
    if isinstance(value, (str, int, bool)) or value is None:
        return value
    return repr(value)


@dataclass
class Record:
    """What one run of one method produced.

    Attributes:
        method: Method name (as registered).
        times: Flow time of each sample (``eta * k`` for discrete methods).
        iterations: Iteration number of each sample.
        metrics: Metric name -> list of values, aligned with ``times``.
        final_point: End-to-end point at the end (dense or ``(u, s, vt)``).
        final_weights: Factors at the end, for overparametrized methods.
        stop_reason: One of :data:`STOP_REASONS`.
        n_iterations: Iterations (steps, solver iterations, ODE steps) taken.
        evaluations: Counts, e.g. ``{"loss": .., "gradient": .., "hessian": ..}``.
        wall_time_s: Wall-clock seconds.
        info: Anything else (acceptance rate, seed, options).
        time_kind: One of :data:`TIME_KINDS`: whether ``times`` is a flow time
            (comparable across methods following the same flow) or just the
            iteration count.
        events: For each event of the run, its crossings ``(time, point, weights)``
            (:mod:`dlngeo.dynamics.events`; not in :meth:`to_dict`, which has
            ``info["event_times"]``).
    """

    method: str
    times: list[float] = field(default_factory=list)
    iterations: list[int] = field(default_factory=list)
    metrics: dict[str, list[Any]] = field(default_factory=dict)
    final_point: Any = None
    final_weights: list[np.ndarray] | None = None
    stop_reason: str = "max_iterations"
    n_iterations: int = 0
    evaluations: dict[str, int] = field(default_factory=dict)
    wall_time_s: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)
    time_kind: str = "flow"
    events: list[list[tuple[float, Any, Any]]] = field(default_factory=list)

    def append(self, time: float, iteration: int, values: dict[str, Any]) -> None:
        """Add one sample of every metric."""
        self.times.append(float(time))
        self.iterations.append(int(iteration))
        for name, value in values.items():
            self.metrics.setdefault(name, []).append(value)

    def sampled(self, metric: str, times: Any) -> list[Any]:
        """The values of ``metric`` at ``times``, each a recorded time (``record_times`` and the start)."""
        recorded = dict(zip(self.times, self.metrics[metric]))
        return [recorded[float(t)] for t in times]

    @property
    def final_loss(self) -> float:
        series = self.metrics.get("loss")
        return float(series[-1]) if series else float("nan")

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary (no final point; non-finite numbers as ``None``)."""
        return {
            "method": self.method,
            "final_loss": self.final_loss,
            "iterations": self.n_iterations,
            "evaluations": to_json_value(self.evaluations),
            "wall_time_s": self.wall_time_s,
            "stop_reason": self.stop_reason,
            "time_kind": self.time_kind,
            "metrics": {
                "time": list(self.times),
                "iteration": list(self.iterations),
                **to_json_value(self.metrics),
            },
            "info": to_json_value(self.info),
        }


def is_finite_point(point: Any) -> bool:
    """True when every entry of a dense point, a ``(u, s, vt)`` point or a list of factors is finite."""
    if point is None:
        return True
    if is_lowrank_point(point) or isinstance(point, list):
        return all(bool(np.all(np.isfinite(np.asarray(a)))) for a in point)
    return bool(np.all(np.isfinite(np.asarray(point))))


class Recorder:
    """Evaluates the task's metrics on states and appends them to a :class:`Record`.

    Metrics that fail on a non-finite point record NaN (a diverged run is
    still recorded); on a finite point their errors propagate.
    """

    def __init__(
        self,
        name: str,
        task: Task,
        callback: Callback | None,
        *,
        time_kind: str = "flow",
        info: dict | None = None,
    ):
        self.task = task
        self.callback = callback
        self.record = Record(method=name, time_kind=time_kind, info=dict(info or {}))
        self._last: tuple[int, float] | None = None

    def sample(
        self,
        point: Any,
        *,
        time: float,
        iteration: int,
        weights: Any = None,
        loss: float | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        """Record one sample (skipped if the same ``(iteration, time)`` was just recorded)."""
        key = (int(iteration), float(time))
        if self._last == key:
            return
        self._last = key
        task = self.task
        state = task.state(point, weights=weights, time=float(time), iteration=int(iteration))
        finite = is_finite_point(point) and is_finite_point(weights)
        values: dict[str, Any] = {}
        if "loss" not in task.metrics:
            values["loss"] = (
                float(loss)
                if loss is not None
                else self._safe(lambda: float(task.loss.value(point)), finite)
            )
        for name, metric in task.metrics.items():
            values[name] = self._safe(lambda m=metric: m(state), finite)
        if extra:
            values.update(extra)
        self.record.append(time, iteration, values)
        if self.callback is not None:
            self.callback(state, self.record)

    @staticmethod
    def _safe(fn: Any, finite: bool) -> Any:
        if finite:
            return fn()
        try:
            with np.errstate(all="ignore"):
                return fn()
        except (ArithmeticError, ValueError, np.linalg.LinAlgError):
            return float("nan")
