"""The loop every iterative method shares: step, check the stopping criteria, record samples.

A method supplies a :class:`Stepper` (one step of gradient descent, of an ODE
integrator, of a Riemannian descent); :func:`drive` runs it under a
:class:`~dlngeo.dynamics.base.Stopping` and fills a
:class:`~dlngeo.dynamics.record.Record` through the one
:class:`~dlngeo.dynamics.record.Recorder` (the pymanopt adapter, whose loop
is pymanopt's, uses it too).

**Sampling.** ``record_every = k`` records every ``k``-th iterate (step,
accepted ODE step). ``record_times = [t_0, t_1, ...]`` records on a grid of
flow times instead: continuous methods evaluate their dense output (the
integrator's interpolant) at exactly those times; discrete methods record the
first iterate at or after each grid time, labelled with its own time. The
initial and the final state are always recorded.

**Divergence.** Steps run under ``numpy.errstate(all="ignore")``; a step that
produces NaN/inf (or whose numerical linear algebra fails on such values)
raises :class:`NumericalFailure`, which ends the run with reason
``"diverged"``. A method never raises because its iterates blew up.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.integrate

from ..validation import check_choice, check_nonnegative, check_positive, positive_integer
from .base import Callback, Stopping, Task, flow_stationary_floor
from .events import Event, EventTracker
from .record import Record, Recorder, is_finite_point
from .stopping import gradient_scale

__all__ = [
    "NumericalFailure",
    "Recorder",
    "Stepper",
    "ScipyODEStepper",
    "drive",
    "drive_method",
    "is_finite_point",
    "check_positive",
    "check_nonnegative",
    "check_choice",
    "check_record_options",
]


class NumericalFailure(ArithmeticError):
    """A step produced non-finite numbers: the run stops with ``"diverged"``."""


# ------------------------------------------------------------------ options
def check_record_options(record_every: Any, record_times: Any) -> tuple[int, np.ndarray | None]:
    """Validate ``record_every`` (positive int) and ``record_times`` (non-decreasing, >= 0)."""
    record_every = positive_integer(record_every, "record_every")
    if record_times is None:
        return record_every, None
    try:
        grid = np.asarray(record_times, dtype=float).ravel()
    except (TypeError, ValueError):
        raise ValueError(
            f"record_times must be a sequence of numbers, got {record_times!r}"
        ) from None
    if (
        grid.size == 0
        or not np.all(np.isfinite(grid))
        or np.any(grid < 0)
        or np.any(np.diff(grid) < 0)
    ):
        raise ValueError(
            "record_times must be a non-empty, non-decreasing sequence of finite times >= 0"
        )
    return record_every, grid


# ------------------------------------------------------------------ stepping
class Stepper:
    """One iterative method, stepped by :func:`drive`.

    After :meth:`start` and after every :meth:`step` the attributes describe
    the current iterate: ``t`` (flow time), ``iteration``, ``step_norm``
    (``None`` if unknown) and ``finished`` (an integrator reached its final
    time); ``loss`` and ``gradient_norm`` (``None`` if unknown) are current
    after :meth:`observe`. A method whose loss costs extra (an ODE solver
    whose last evaluation is not at the accepted point, Markov chains)
    evaluates it there; the others have it already and keep the no-op.
    :func:`drive` observes at every recorded iterate, and at every iterate
    only when a stopping criterion needs the loss or the gradient.
    :meth:`point` and :meth:`weights` give the end-to-end point and the
    factors (or ``None``). Continuous methods implement :meth:`interpolate`.
    A stepper that counts its evaluations in a dict ``counts`` reports them
    by :meth:`evaluations`.
    """

    continuous: bool = False
    t: float = 0.0
    iteration: int = 0
    loss: float = float("nan")
    gradient_norm: float | None = None
    step_norm: float | None = None
    finished: bool = False
    #: Smallest relative gradient tolerance resolved (flows: a multiple of rtol); None: never stationary.
    stationary_floor: float | None = 0.0
    #: Depth of the metric of ``gradient_norm`` (``None``: the task's; ``1``: Frobenius).
    metric_depth: int | None = None
    #: False: ``Stopping.divergence_factor`` does not apply (samplers: only non-finite values diverge).
    relative_divergence: bool = True

    def start(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def step(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def point(self) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def weights(self) -> list[np.ndarray] | None:
        return None

    def observe(self) -> None:
        """Make ``loss`` and ``gradient_norm`` those of the current iterate (no-op: always current)."""

    def interpolate(self, t: float) -> tuple[Any, Any]:
        """``(point, weights)`` at flow time ``t`` within the last step (continuous methods)."""
        raise NotImplementedError

    def evaluations(self) -> dict[str, int]:
        """A copy of ``counts`` (loss, gradient, ... evaluations so far); ``{}`` without one."""
        return dict(getattr(self, "counts", {}))

    def info(self) -> dict[str, Any]:
        return {}


class ScipyODEStepper(Stepper):
    """A flow on a flat vector ``y``, integrated by a ``scipy.integrate`` solver one accepted step at a time.

    Subclasses give the vector field as :meth:`rhs` (``-gradient`` at ``y``),
    which counts its evaluations in ``counts`` and stores
    ``(y, loss, gradient norm)`` in ``_cache`` so that an accepted point whose
    right-hand side the solver already evaluated is not evaluated again; and
    :meth:`point` / :meth:`interpolate` (and :meth:`weights`) from ``_y`` and
    the solver's dense output. A solver failure on finite values (a step below
    the spacing of floats) ends the run with ``failure`` set to the solver's
    message; non-finite values raise :class:`NumericalFailure`.

    ``stops``: optional sorted flow times at which the integrator restarts
    (a fresh solver from the current point, as ``solve_ivp`` run segment by
    segment), so that each is an accepted step's end point rather than a
    value of the dense output; the method sets it from ``record_times`` when
    asked (an interpolant can be much less accurate than the steps: DOP853's
    on stiff, saturated modes).
    """

    continuous = True
    stops: np.ndarray | None = None

    def __init__(
        self,
        y0: np.ndarray,
        integrator: str,
        rtol: float,
        atol: float,
        max_step: float,
        t_bound: float,
    ):
        self.y0 = y0
        self._y = y0
        self.counts = {"loss": 0, "gradient": 0}
        self._cache: tuple[Any, float, float] | None = None  # (y, loss, gradient norm)
        self.solver_cls: Any
        if integrator == "RK4":
            from .rk4 import RK4

            self.solver_cls = RK4
        else:
            self.solver_cls = getattr(scipy.integrate, integrator)
        self.options = dict(rtol=rtol, atol=atol, max_step=max_step)
        self.stationary_floor = flow_stationary_floor(rtol)
        self.t_bound = t_bound
        self.solver: Any = None  # the scipy OdeSolver, made by start()
        self._dense: Any = None  # its interpolant of the last step, made on demand

    def rhs(self, t: float, y: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def _observe(self, y: np.ndarray) -> None:
        cache = self._cache
        if cache is None or cache[0] is not y:
            self.rhs(self.t, y)
            cache = self._cache
        assert cache is not None  # rhs() fills the cache
        self.loss, self.gradient_norm = cache[1], cache[2]

    def _solver(self) -> Any:
        """A scipy solver from the current ``(t, y)`` to the next stop (or ``t_bound``)."""
        bound = self.t_bound
        if self.stops is not None:
            ahead = self.stops[(self.stops > self.t) & (self.stops < bound)]
            bound = float(ahead[0]) if ahead.size else bound
        return self.solver_cls(self.rhs, self.t, self._y, bound, **self.options)

    def start(self) -> None:
        self.solver = self._solver()

    def dense_output(self) -> Any:
        """The last step's interpolant, made once per step (DOP853's costs three evaluations)."""
        if self._dense is None:
            self._dense = self.solver.dense_output()
        return self._dense

    def observe(self) -> None:
        self._observe(self._y)

    def step(self) -> None:
        if self.solver.status == "finished":  # at a stop short of t_bound: restart there
            self.solver = self._solver()
        solver = self.solver
        y_old = solver.y
        self._dense = None
        message = solver.step()
        if solver.status == "failed":
            if not np.all(np.isfinite(solver.y)):
                raise NumericalFailure(str(message))
            self.failure = str(message)
            self.finished = True  # reported as "diverged" by the method
        self.iteration += 1
        self.t = float(solver.t)
        self._y = solver.y
        self.step_norm = float(np.linalg.norm(solver.y - y_old))
        if solver.status == "finished" and solver.t_bound == self.t_bound:
            self.finished = True


def drive(
    name: str,
    task: Task,
    stepper: Stepper,
    stopping: Stopping | None,
    callback: Callback | None,
    *,
    record_every: int = 1,
    record_times: np.ndarray | None = None,
    time_kind: str = "flow",
    info: dict | None = None,
    events: Sequence[Event] = (),
) -> Record:
    """Run ``stepper`` until a stopping criterion (or a terminal event) fires; return the :class:`Record`.

    ``events``: :class:`~dlngeo.dynamics.events.Event` crossings to locate
    (:mod:`dlngeo.dynamics.events`).
    """
    stopping = stopping if stopping is not None else Stopping()
    tracker = EventTracker(events, task, stepper) if events else None
    hit: tuple[float, Any, Any] | None = None  # the terminal event's crossing
    recorder = Recorder(name, task, callback, time_kind=time_kind, info=info)
    scale = 1.0  # samplers (stationary_floor None) never stop stationary; chains have no network
    if stepper.stationary_floor is not None and hasattr(task, "network"):
        depth = stepper.metric_depth or task.depth
        scale = gradient_scale(task.loss, task.network.output_shape, depth)
    clock = stopping.start(stepper.stationary_floor, stepper.relative_divergence, scale)
    observe_always = clock.needs_loss or clock.needs_gradient
    grid = record_times
    gi = 0
    reason: str | None = None

    def sample_current() -> str | None:
        """Record the stepper's current point (with its factors and loss); ``"diverged"`` if it cannot be observed."""
        failed: str | None = None
        loss: float | None = None
        try:
            stepper.observe()
            loss = stepper.loss
            clock.note(stepper.gradient_norm)
        except (NumericalFailure, np.linalg.LinAlgError):
            failed, loss = "diverged", float("nan")
        recorder.sample(
            stepper.point(),
            time=stepper.t,
            iteration=stepper.iteration,
            weights=stepper.weights(),
            loss=loss,
        )
        return failed

    def check() -> str | None:
        if observe_always:
            try:
                stepper.observe()
            except (NumericalFailure, np.linalg.LinAlgError):
                return "diverged"
        return clock.check(
            iteration=stepper.iteration,
            loss=stepper.loss if observe_always else None,
            flow_time=stepper.t,
            gradient_norm=stepper.gradient_norm if observe_always else None,
            step_norm=stepper.step_norm,
        )

    with np.errstate(all="ignore"):
        try:
            stepper.start()
        except (NumericalFailure, np.linalg.LinAlgError):
            reason = "diverged"
        if grid is not None:
            while gi < len(grid) and grid[gi] <= stepper.t:
                gi += 1
        failed = sample_current()
        if reason is None:
            reason = failed or check()
        if tracker is not None and reason is None:
            tracker.start()
        while reason is None:
            try:
                stepper.step()
                hit = tracker.after_step() if tracker is not None else None
            except (NumericalFailure, np.linalg.LinAlgError):
                reason = "diverged"
                break
            failed = None
            if grid is not None:
                upto = stepper.t if hit is None else hit[0]  # a terminal event ends the run there
                while gi < len(grid) and grid[gi] <= upto:
                    if stepper.continuous and grid[gi] < stepper.t:
                        try:
                            point, weights = stepper.interpolate(float(grid[gi]))
                        except (NumericalFailure, np.linalg.LinAlgError):
                            point, weights = None, None
                        if point is not None:
                            recorder.sample(
                                point, time=grid[gi], iteration=stepper.iteration, weights=weights
                            )
                    else:
                        failed = sample_current() or failed
                    gi += 1
            elif stepper.iteration % record_every == 0 and hit is None:
                failed = sample_current()
            if hit is not None:
                reason = "event"
                break
            reason = failed or check()
            if reason is None and stepper.finished:
                reason = "end_time"
        if hit is not None:  # the run ends at the terminal event's crossing
            recorder.sample(hit[1], time=hit[0], iteration=stepper.iteration, weights=hit[2])
        elif sample_current() is not None:
            reason = "diverged"

    record = recorder.record
    record.final_point = stepper.point() if hit is None else hit[1]
    record.final_weights = stepper.weights() if hit is None else hit[2]
    if tracker is not None:
        record.events = tracker.hits
        record.info["event_times"] = [[t for t, _, _ in hits] for hits in tracker.hits]
    record.stop_reason = reason
    record.n_iterations = stepper.iteration
    record.evaluations = stepper.evaluations()
    record.wall_time_s = clock.elapsed()
    record.info.update(stepper.info())
    # The norms the stationary test compared (the method's own gradient).
    record.info["initial_gradient_norm"] = clock.initial_gradient_norm
    record.info["gradient_norm"] = clock.gradient_norm
    return record


def drive_method(
    method: Any,
    task: Task,
    stepper: Stepper,
    stopping: Stopping | None,
    callback: Callback | None,
    *,
    info: dict | None = None,
    time_kind: str = "flow",
) -> Record:
    """:func:`drive` under ``method``'s name with its recording options (``record_every``,
    ``record_times``, ``events``, those it has)."""
    return drive(
        method.name,
        task,
        stepper,
        stopping,
        callback,
        record_every=getattr(method, "record_every", 1),
        record_times=getattr(method, "record_times", None),
        events=getattr(method, "events", ()),
        time_kind=time_kind,
        info=info,
    )
