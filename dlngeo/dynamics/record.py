"""The Record of a run: time series of metrics, final point, stop reason, cost.

Every method (flows, descents, pymanopt solvers, Langevin samplers) returns
one. ``to_dict()`` gives the JSON summary written to ``results.json``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["Record", "STOP_REASONS", "TIME_KINDS", "to_json_value"]

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

    def append(self, time: float, iteration: int, values: dict[str, Any]) -> None:
        """Add one sample of every metric."""
        self.times.append(float(time))
        self.iterations.append(int(iteration))
        for name, value in values.items():
            self.metrics.setdefault(name, []).append(value)

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
