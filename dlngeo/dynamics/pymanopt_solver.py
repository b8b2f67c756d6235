r"""pymanopt's solvers on the rank-r manifold, watched and stopped by dlngeo.

:class:`PymanoptSolver` runs pymanopt's ``SteepestDescent``,
``ConjugateGradient`` and ``TrustRegions`` (Absil, Baker & Gallivan 2007;
its inner solve stopped relative to the start's gradient,
:class:`~dlngeo.dynamics.pymanopt_optimizers.RelativeTrustRegions`) on
:class:`~dlngeo.DLNFixedRank` (``metric="dln"``, the metric :math:`g_N`) or
:class:`~dlngeo.FixedRank` (``metric="embedded"``, Frobenius), through
:func:`dlngeo.problem` (ambient gradients; the loss never forms ``m x n``
when it can work on ``(u, s, vt)``). pymanopt runs its own loop; dlngeo
watches it through the problem (every Riemannian gradient evaluation is a
new iterate: it is recorded there) and through the optimizer's stopping
test (subclassed to add dlngeo's criteria: ``loss_below``, ``stationary``,
``diverged``, ``stalled`` ...). pymanopt's criteria map to reason codes
(:func:`pymanopt_reason`): max time -> ``max_time``, max iterations ->
``max_iterations``, min grad norm -> ``gradient_norm_below``, min step size
-> ``step_below``, anything else -> ``converged``. pymanopt's own gradient
test (``min_gradient_norm``, absolute, ``1e-6`` by default in pymanopt) is
given ``gradient_norm_below`` or ``0`` (off): the default stop at a
stationary point is dlngeo's relative ``stationary`` test, whose
:math:`\|g_0\|` is the gradient norm at the start point (TrustRegions runs
its first test only after its first step).

Times. SteepestDescent moves by :math:`R_X(-\alpha\,\operatorname{grad})`; its record's
``times`` are the accumulated :math:`\sum \alpha_k` (flow time of the gradient
flow of the chosen metric). ConjugateGradient and TrustRegions have no flow
time: their ``times`` are the iterate numbers and ``record.time_kind`` is
``"iteration"``. A sample's ``iteration`` is the number of accepted steps;
``record.n_iterations`` is pymanopt's iteration count (TrustRegions counts
rejected steps too). ``record.info["gradient_norm"]`` is the gradient norm
pymanopt tested last; SteepestDescent tests it *before* its last step, so its
final point is one step beyond the point that met ``gradient_norm_below``.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
import pymanopt.optimizers as po

from ..geometry.fixed_rank import FixedRank
from ..geometry.problem import AmbientProblem
from ..validation import check_choice, check_positive, positive_integer
from .base import Callback, Method, Stopping, Task
from .driver import (
    NumericalFailure,
    Recorder,
    check_record_options,
    is_finite_point,
)
from .intrinsic import lowrank_start
from .pymanopt_optimizers import OPTIMIZERS, AdaptiveLineSearcher
from .record import Record
from .riemannian_gd import METRICS, manifold_for
from .stopping import gradient_scale

__all__ = ["PymanoptSolver", "PYMANOPT_SOLVERS", "pymanopt_reason"]


def pymanopt_reason(message: str | None) -> str:
    """The reason code of a pymanopt ``stopping_criterion`` string (or of dlngeo's own ``dlngeo:<code>``)."""
    if not message:
        return "converged"
    if message.startswith("dlngeo:"):
        return message.split(":", 1)[1]
    text = message.lower()
    for needle, code in (
        ("max time", "max_time"),
        ("max iterations", "max_iterations"),
        ("min grad norm", "gradient_norm_below"),
        ("min step_size", "step_below"),
    ):
        if needle in text:
            return code
    return "converged"


class _Monitor:
    """Sees every new iterate (through the problem) and adds dlngeo's criteria to pymanopt's."""

    def __init__(
        self,
        recorder: Recorder,
        clock: Any,
        manifold: FixedRank,
        record_every: int,
        flow_time: bool,
        loss: Any,
    ):
        self.recorder, self.clock, self.manifold = recorder, clock, manifold
        self.record_every, self.flow_time, self.loss = record_every, flow_time, loss
        self.accepted = -1  # index of the latest iterate
        self.t = 0.0
        self.point: Any = None
        self.value = float("nan")
        self.costs: list[tuple[Any, float]] = []
        self.recorded_extra = 0  # loss evaluations made only for recording
        self.failed_searches = 0
        self.tested_gradient_norm = float("nan")  # the gradient norm pymanopt tested last

    def cost_of(self, point: Any) -> float:
        for p, v in self.costs:
            if p is point:
                return v
        self.recorded_extra += 1
        return float(self.loss.value(point))

    def remember_cost(self, point: Any, value: float) -> None:
        self.costs = [(point, float(value))] + self.costs[:3]

    def on_iterate(self, point: Any, gradient: Any) -> None:
        if point is self.point:
            return  # a failed line search returned the same point: not a new iterate
        self.accepted += 1
        self.point = point
        self.value = self.cost_of(point)
        self.gradient_norm = float(self.manifold.norm(point, gradient))
        if self.accepted == 0 and np.isfinite(self.gradient_norm):
            # ||g_0|| of the stationary test is the start's (TrustRegions tests first after a step).
            self.clock.initial_gradient_norm = self.gradient_norm
        if self.accepted % self.record_every == 0:
            t = self.t if self.flow_time else float(self.accepted)
            self.recorder.sample(
                point, time=t, iteration=self.accepted, loss=self.value, extra=None
            )
        if not (np.isfinite(self.value) and np.isfinite(self.gradient_norm)):
            raise NumericalFailure("non-finite loss or gradient")

    def check(self, iteration: int, gradient_norm: float, step_size: float) -> str | None:
        # A line search that fails returns step 0 and the same point; twice in a row
        # (the second time from a fresh initial step) the method is stuck.
        self.failed_searches = self.failed_searches + 1 if step_size == 0 else 0
        if self.failed_searches >= 2:
            return "dlngeo:stalled"
        if self.flow_time and np.isfinite(step_size) and gradient_norm > 0:
            self.t += step_size / gradient_norm  # x+ = R(x - alpha grad), alpha = |step| / |grad|
        reason = self.clock.check(
            iteration=iteration,
            loss=self.value,
            flow_time=self.t if self.flow_time else None,
            gradient_norm=gradient_norm if np.isfinite(gradient_norm) else None,
            step_norm=step_size if np.isfinite(step_size) else None,
        )
        return None if reason is None else f"dlngeo:{reason}"


class _MonitoredProblem(AmbientProblem):
    """:class:`~dlngeo.geometry.problem.AmbientProblem` that reports costs and new iterates to a monitor."""

    def __init__(self, manifold: FixedRank, loss: Any, monitor: _Monitor):
        super().__init__(manifold, loss)
        self.monitor = monitor

    @property
    def cost(self):
        return _reporting(super().cost, self.monitor.remember_cost)

    @property
    def riemannian_gradient(self):
        return _reporting(super().riemannian_gradient, self.monitor.on_iterate)


def _reporting(function: Any, report: Any) -> Any:
    """``function(point)``, after which ``report(point, value)`` is called with its value."""

    def reported(point):
        value = function(point)
        report(point, value)
        return value

    return reported


PYMANOPT_SOLVERS = tuple(OPTIMIZERS)


class PymanoptSolver(Method):
    """pymanopt's SteepestDescent / ConjugateGradient / TrustRegions on ``(M_r, g_N)`` or ``(M_r, Frobenius)``.

    Args:
        solver: ``"riemannian_sd"``, ``"riemannian_cg"`` or ``"riemannian_tr"``.
        metric: ``"dln"`` (:class:`~dlngeo.DLNFixedRank` of the task's depth) or
            ``"embedded"`` (:class:`~dlngeo.FixedRank`).
        record_every: Record every ``k``-th iterate (accepted step).
        initial_step_size: SD/CG: the line searcher's first trial step norm.
        beta_rule: CG: pymanopt's beta rule (``"HestenesStiefel"``, ``"PolakRibiere"``,
            ``"FletcherReeves"``, ``"HagerZhang"``, ``"LiuStorey"``).
        trust_radius: TR: the largest trust radius ``Delta_bar`` (default: the
            problem manifold's ``typical_dist``, the data's scale in the metric).
        initial_radius: TR: ``Delta0`` (default ``trust_radius / 8``).
        max_inner: TR: inner (truncated CG) iterations at most (default: the manifold dimension).
        min_inner: TR: inner iterations at least.
        kappa: TR: the linear forcing term ``kappa`` of the inner solve, in ``(0, 1)``.
        theta: TR: its superlinear exponent ``theta > 0``: the inner solve at ``x_k`` stops at a
            residual ``||g_k|| min(kappa, (||g_k|| / ||g_0||)^theta)``, relative to the
            start's gradient ``g_0``
            (:class:`~dlngeo.dynamics.pymanopt_optimizers.RelativeTrustRegions`);
            ``record.info["inner_iterations"]`` lists the inner iterations (Hessian-vector
            products) of each outer one.

    pymanopt's own criteria receive the stopping's ``max_iterations``,
    ``max_time``, ``gradient_norm_below`` (norm in the chosen metric) and
    ``step_below``; dlngeo's other criteria are checked at every pymanopt
    iteration.
    """

    def __init__(
        self,
        solver: str,
        *,
        metric: str = "dln",
        record_every: int = 1,
        initial_step_size: float | None = None,
        beta_rule: str = "HestenesStiefel",
        trust_radius: float | None = None,
        initial_radius: float | None = None,
        max_inner: int | None = None,
        min_inner: int = 1,
        kappa: float = 0.1,
        theta: float = 1.0,
    ):
        self.name = check_choice("solver", solver, PYMANOPT_SOLVERS)
        #: Only steepest descent has a flow time (the accumulated line-search steps).
        self.flow_time = self.name == "riemannian_sd"
        self.metric = check_choice("metric", metric, METRICS)
        self.record_every, _ = check_record_options(record_every, None)
        self.initial_step_size = check_positive(
            "initial_step_size", initial_step_size, allow_none=True
        )
        self.beta_rule = check_choice(
            "beta_rule", beta_rule, tuple(po.conjugate_gradient.BETA_RULES)
        )
        self.trust_radius = check_positive("trust_radius", trust_radius, allow_none=True)
        self.initial_radius = check_positive("initial_radius", initial_radius, allow_none=True)
        self.max_inner = None if max_inner is None else positive_integer(max_inner, "max_inner")
        self.min_inner = positive_integer(min_inner, "min_inner")
        self.kappa = check_positive("kappa", kappa)
        if not self.kappa < 1:
            raise ValueError(f"kappa must be in (0, 1), got {kappa!r}")
        self.theta = check_positive("theta", theta)

    def _optimizer(self, stopping: Stopping) -> Any:
        common = dict(
            max_time=np.inf if stopping.max_time is None else stopping.max_time,
            max_iterations=sys.maxsize
            if stopping.max_iterations is None
            else int(stopping.max_iterations),
            min_gradient_norm=0.0
            if stopping.gradient_norm_below is None
            else stopping.gradient_norm_below,
            min_step_size=0.0 if stopping.step_below is None else stopping.step_below,
            max_cost_evaluations=sys.maxsize,
            verbosity=0,
            log_verbosity=0,
        )
        cls = OPTIMIZERS[self.name]
        if self.name == "riemannian_tr":
            return cls(kappa=self.kappa, theta=self.theta, **common)
        step = (
            {} if self.initial_step_size is None else {"initial_step_size": self.initial_step_size}
        )
        if self.name == "riemannian_sd":
            return cls(line_searcher=po.line_search.BackTrackingLineSearcher(**step), **common)
        return cls(beta_rule=self.beta_rule, line_searcher=AdaptiveLineSearcher(**step), **common)

    def run(
        self, task: Task, stopping: Stopping | None = None, callback: Callback | None = None
    ) -> Record:
        stopping = stopping if stopping is not None else Stopping()
        manifold = manifold_for(task, self.metric)
        flow_time = self.name == "riemannian_sd"
        info: dict[str, Any] = {"metric": self.metric, "solver": self.name}
        if flow_time:
            info["time"] = "sum of line-search steps alpha_k, x+ = R(x - alpha grad)"
        else:
            info["time"] = "iterate number (no flow time)"
        recorder = Recorder(
            self.name, task, callback, time_kind="flow" if flow_time else "iteration", info=info
        )
        scale = gradient_scale(task.loss, task.network.output_shape, getattr(manifold, "depth", 1))
        clock = stopping.start(gradient_scale=scale)
        monitor = _Monitor(recorder, clock, manifold, self.record_every, flow_time, task.loss)
        problem = _MonitoredProblem(manifold, task.loss, monitor)
        start, truncation = lowrank_start(task)
        x0 = manifold.point(*start)
        optimizer = self._optimizer(stopping)
        optimizer.monitor = monitor
        kwargs: dict[str, Any] = {}
        if self.name == "riemannian_tr":
            kwargs = dict(
                mininner=self.min_inner,
                maxinner=self.max_inner,
                Delta_bar=self.trust_radius,
                Delta0=self.initial_radius,
            )
        with np.errstate(all="ignore"):
            try:
                result = optimizer.run(problem, initial_point=x0, **kwargs)
                reason = pymanopt_reason(result.stopping_criterion)
                point, n_iterations = result.point, int(result.iterations)
                message = result.stopping_criterion
            except (
                NumericalFailure,
                np.linalg.LinAlgError,
                FloatingPointError,
                ValueError,
                ZeroDivisionError,
            ) as error:
                if (
                    monitor.point is not None
                    and is_finite_point(monitor.point)
                    and np.isfinite(monitor.value)
                    and not isinstance(
                        error,
                        (
                            NumericalFailure,
                            np.linalg.LinAlgError,
                            FloatingPointError,
                            ZeroDivisionError,
                        ),
                    )
                ):
                    raise
                reason = "diverged"
                point, n_iterations = (
                    (monitor.point if monitor.point is not None else x0),
                    monitor.accepted,
                )
                message = f"{type(error).__name__}: {error}"
            # Final sample (pymanopt's last point may not have had its gradient evaluated).
            if monitor.point is not point or monitor.accepted % self.record_every != 0:
                value = monitor.cost_of(point) if is_finite_point(point) else float("nan")
                t = (
                    monitor.t
                    if flow_time
                    else float(max(monitor.accepted, 0) + (monitor.point is not point))
                )
                recorder.sample(
                    point,
                    time=t,
                    iteration=max(monitor.accepted, 0) + (monitor.point is not point),
                    loss=value,
                )
        record = recorder.record
        record.final_point = point
        record.stop_reason = reason
        record.n_iterations = n_iterations
        ev = problem.evaluations
        record.evaluations = {
            "loss": ev["cost"],
            "gradient": ev["gradient"],
            "hessian": ev["hessian"],
        }

        record.wall_time_s = clock.elapsed()
        record.info.update(
            {
                "pymanopt_stopping_criterion": message,
                "start_truncation": truncation,
                "rank": task.rank,
                "accepted_steps": max(monitor.accepted, 0),
                "gradient_norm": monitor.tested_gradient_norm,
                "initial_gradient_norm": clock.initial_gradient_norm,
            }
        )
        if self.name == "riemannian_tr":
            record.info["inner_iterations"] = [count for _, count in optimizer.inner_solves]
        return record
