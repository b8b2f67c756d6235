"""What every method shares: the task it runs on, stopping criteria, and the Method base class.

A :class:`Task` is one problem: a loss on ``m x n`` matrices, the network
whose factors the overparametrized methods train, the initial factors, and
the metrics to record. The end-to-end start of every method is
``network.product(weights0)``: the factor methods and the end-to-end methods
start from exactly the same matrix.

A :class:`Method` runs on a task and returns a :class:`~dlngeo.dynamics.record.Record`.
Stopping is composable: :class:`Stopping` holds the thresholds and gives a
structured reason code (one of :data:`~dlngeo.dynamics.record.STOP_REASONS`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..lowrank import is_lowrank_point, to_dense
from ..network import DeepLinearNetwork
from ..state import State
from .record import Record

__all__ = [
    "Task",
    "Stopping",
    "Method",
    "Callback",
    "STATIONARY_RTOL",
    "STATIONARY_ATOL",
    "FLOW_STATIONARY_FACTOR",
    "flow_stationary_floor",
    "stationary_default_text",
]

#: Default relative gradient tolerance of the ``stationary`` stop.
#:
#: Chosen from what every method resolves in double precision. The computed
#: gradient norm near a minimum :math:`X^*` is exact up to the rounding of the
#: terms that cancel in it, :math:`\sim\varepsilon\|E'(X^*)\|` (times the
#: metric's factors), while :math:`\|g_0\|` is of the size of
#: :math:`\|E'(X_0)\|` from a generic start: constant-step descents and
#: trust regions go down to :math:`10^{-13}`-ish ratios. The line-search
#: methods (pymanopt's SteepestDescent, ConjugateGradient) are the tightest
#: of the discrete ones: their Armijo test compares costs, which resolves a
#: decrease :math:`\alpha\|g\|^2` only above the cost's rounding
#: :math:`\varepsilon|E|`, i.e. gradients down to
#: :math:`\|g\|/\|g_0\| \approx \sqrt{\varepsilon E^*/E_0} \approx 1.5\cdot 10^{-8}`
#: when the minimum :math:`E^*` is of the size of :math:`E_0` (then they fail two
#: line searches and stop ``stalled``). ``1e-6`` leaves a factor 100 for the
#: condition of the problem; at :math:`\|g\| = 10^{-6}\|g_0\|` the loss is
#: within :math:`\sim 10^{-12}` (relative) of the minimum. Flows resolve only
#: their integrator's tolerance: they use at least
#: :data:`FLOW_STATIONARY_FACTOR` times their ``rtol``.
STATIONARY_RTOL = 1e-6

#: A flow integrated with relative tolerance ``rtol`` keeps each step's local
#: error at :math:`\approx \mathrm{rtol}\,|y|`; near a minimum its computed
#: point is resolved only to that, and its gradient to
#: :math:`\|\nabla^2\|\,\mathrm{rtol}\,|y|`, which relative to :math:`\|g_0\|`
#: (:math:`\approx \|\nabla^2\|\,|y_0 - y^*|`) is about ``rtol`` times the
#: problem's condition. The flows' ``stationary`` test uses
#: ``max(gradient_norm_rtol, min(FLOW_STATIONARY_FACTOR * rtol, 1e-3))``: a
#: factor 100 for that condition; a gradient above ``1e-3`` of its start is
#: never called stationary (a flow run with a huge ``rtol`` as a fixed-step
#: scheme stops on its other criteria).
FLOW_STATIONARY_FACTOR = 100.0


def flow_stationary_floor(rtol: float) -> float:
    """The smallest relative gradient tolerance a flow integrated at ``rtol`` resolves."""
    return min(FLOW_STATIONARY_FACTOR * rtol, 1e-3)


#: Default absolute floor of the ``stationary`` stop, so that a start that is
#: already stationary up to rounding stops at once (the relative test cannot
#: fire when :math:`\|g_0\|` is itself rounding). The rounding of a computed
#: gradient norm is :math:`\sim\varepsilon\sqrt{mn}\,\|E'\|` times the
#: metric's (or the factors') norms: for data of unit scale and ``m, n`` up
#: to ~1000, at most :math:`2\cdot10^{-16}\cdot 10^3\cdot 5 = 10^{-12}` (a
#: 12 x 10 regression at its minimum, depth 4: :math:`2\cdot 10^{-14}`). It
#: is absolute: for data far below unit scale (entries :math:`\ll 10^{-3}`)
#: set it lower.
STATIONARY_ATOL = 1e-12


def stationary_default_text(flow: bool = False) -> str:
    """The default ``stationary`` stop in one line (``dlngeo plugins``, option errors)."""
    rtol = f"gradient_norm_rtol={STATIONARY_RTOL:g}"
    if flow:
        rtol += f" (at least {FLOW_STATIONARY_FACTOR:g} x the integrator's rtol)"
    return f"stops when stationary, ||grad|| <= {rtol} x ||grad_0|| or gradient_norm_atol={STATIONARY_ATOL:g}"


#: ``callback(state, record) -> None``; called at every recorded sample.
Callback = Callable[[State, Record], None]


@dataclass
class Task:
    """One problem that several methods run on.

    A task is built from the initial factors ``weights0``, or **width-free**
    from an end-to-end start ``start`` alone (``weights0=None``): the network
    is then the balanced one with ``phi(W(0)) = start`` (every imbalance
    ``G_k = 0``), which is fully described by its end-to-end matrix
    (Arora, Cohen & Hazan 2018): its factor flow's product *is* the intrinsic
    flow from ``start``, so the end-to-end methods run without ever forming a
    factor, whatever the widths. Factor methods on a width-free task form
    balanced factors on demand (:meth:`initial_weights`).

    Attributes:
        loss: The :class:`~dlngeo.losses.Loss`.
        network: The :class:`~dlngeo.DeepLinearNetwork` (its depth is the metric's ``N``).
        weights0: Initial factors ``W_1 .. W_N``, or ``None`` for a width-free task.
        rank: Rank ``r`` of the end-to-end manifold for the low-rank methods
            (default: ``network.rank_bound``).
        metrics: Metric name -> callable of a :class:`~dlngeo.state.State`.
        data: Problem data handed to metrics (``target``, test indices, ...).
        seed: Seed for methods that draw random numbers.
        start: The end-to-end start of a width-free task: a dense ``m x n``
            array or a low-rank point ``(u, s, vt)`` (default rank: ``len(s)``).
    """

    loss: Any
    network: DeepLinearNetwork
    weights0: list[np.ndarray] | None = None
    rank: int | None = None
    metrics: dict[str, Callable[[State], Any]] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    start: Any = None

    def __post_init__(self) -> None:
        if self.weights0 is None:
            if self.start is None:
                raise ValueError(
                    "weights0: give the initial factors, or start= (the end-to-end start "
                    "of a balanced network)"
                )
            self.start = _check_start(self.start, self.network)
            if self.rank is None and is_lowrank_point(self.start):
                self.rank = min(len(self.start[1]), self.network.rank_bound)
        elif self.start is not None:
            raise ValueError("start: give either the factors weights0 or an end-to-end start")
        else:
            self.weights0 = self.network.check_weights(self.weights0)
        if self.network.activation != "linear" and not hasattr(self.loss, "inputs"):
            raise ValueError(
                f"loss: a {self.network.activation} network needs a loss on its outputs with inputs"
                f" (dlngeo.relu.OutputLoss), got {type(self.loss).__name__}"
            )
        if self.rank is None:
            self.rank = self.network.rank_bound
        if not 1 <= self.rank <= self.network.rank_bound:
            raise ValueError(
                f"rank {self.rank} must be between 1 and the narrowest width {self.network.rank_bound}"
            )

    @property
    def depth(self) -> int:
        return self.network.depth

    @property
    def width_free(self) -> bool:
        """True when the task holds an end-to-end start and no factors."""
        return self.weights0 is None

    @property
    def X0(self) -> np.ndarray:
        """The end-to-end start ``phi(W(0))`` (a nonlinear network: its outputs ``F(W(0))``)."""
        if self.weights0 is None:
            return to_dense(self.start)
        return self.point(self.weights0)

    def point(self, weights: list[np.ndarray]) -> np.ndarray:
        """``phi(W)``; for a nonlinear network, its outputs on the loss's inputs (``loss.inputs``)."""
        if self.network.activation == "linear":
            return self.network.product(weights)
        return self.network.outputs(weights, self.loss.inputs)  # type: ignore[attr-defined]

    @property
    def start_rank(self) -> int:
        """The numerical rank of ``phi(W(0))``, at most the narrowest width: the rank the dense flow keeps.

        The intrinsic flow's vector field is tangent to the rank stratum of
        ``X``, so ``rank X(t) = rank X(0)`` (Bah et al. 2021). Numerically it is
        the number of singular values above ``max(m, n) * eps * s_max`` (as
        :func:`numpy.linalg.matrix_rank`): ``rank`` for a start on ``M_r`` (a
        balanced rank-``r`` start, a width-``r`` bottleneck), the narrowest
        width for a generic start (where a lower ``rank``, meant for the
        low-rank methods, would freeze the part of ``X`` beyond it).
        """
        X0 = self.X0
        s = np.linalg.svd(X0, compute_uv=False)
        if s.size == 0 or s[0] == 0:
            return 0
        numerical = int(np.sum(s > max(X0.shape) * np.finfo(float).eps * s[0]))
        return min(numerical, self.network.rank_bound)

    def initial_weights(self) -> list[np.ndarray]:
        """The initial factors; for a width-free task, balanced factors of ``start`` (formed now).

        The hidden frames of the balanced factorization are drawn from ``seed``;
        every choice gives the same end-to-end trajectory.
        """
        if self.weights0 is not None:
            return self.weights0
        return self.network.balanced(self.start, rng=self.seed, rank=self.rank)

    def state(
        self, point: Any, *, weights: Any = None, time: float = 0.0, iteration: int = 0
    ) -> State:
        return State(
            point=point,
            loss=self.loss,
            weights=weights,
            network=self.network,
            depth=self.network.depth,
            time=time,
            iteration=iteration,
            data=self.data,
        )

    def evaluate(self, state: State) -> dict[str, Any]:
        """All metrics of the task at ``state`` (``loss`` always included)."""
        values: dict[str, Any] = {}
        if "loss" not in self.metrics:
            values["loss"] = float(self.loss.value(state.point))
        for name, metric in self.metrics.items():
            values[name] = metric(state)
        return values


def _check_start(start: Any, network: DeepLinearNetwork) -> Any:
    """``start`` as a float array or a ``(u, s, vt)`` point with ``s`` non-increasing, or ``ValueError``."""
    m, n = network.output_shape
    if is_lowrank_point(start):
        u, s, vt = (np.asarray(a, dtype=float) for a in start)
        if u.ndim != 2 or s.ndim != 1 or vt.ndim != 2:
            raise ValueError(
                "start: a low-rank start is (u, s, vt) with u, vt matrices, s a vector"
            )
        if u.shape != (m, s.size) or vt.shape != (s.size, n):
            raise ValueError(
                f"start: (u, s, vt) of shapes {u.shape}, {s.shape}, {vt.shape} do not make "
                f"the network's {m} x {n} end-to-end matrix"
            )
        if s.size > network.rank_bound:
            raise ValueError(
                f"start: rank {s.size} exceeds the narrowest width {network.rank_bound}"
            )
        if not all(np.all(np.isfinite(a)) for a in (u, s, vt)):
            raise ValueError("start must be finite")
        order = np.argsort(-s, kind="stable")
        return (u[:, order], s[order], vt[order])
    X = np.asarray(start, dtype=float)
    if X.shape != (m, n):
        raise ValueError(f"start has shape {X.shape}, the network maps to ({m}, {n})")
    if not np.all(np.isfinite(X)):
        raise ValueError("start must be finite")
    return X


@dataclass
class Stopping:
    r"""Composable stopping criteria; ``None`` disables one.

    Attributes:
        max_iterations: Iterations (steps) at most.
        max_time: Wall-clock seconds at most.
        end_time: Flow time at which a flow stops (``t = eta k`` for discrete methods).
        loss_below: Stop once the loss is at or below this.
        gradient_norm_below: Stop once the (Riemannian) gradient norm is below this
            (absolute, in the units of the method's gradient).
        gradient_norm_rtol: ``stationary`` once the method's gradient norm
            :math:`\|g_k\| \le \max(\mathrm{rtol}\,\|g_0\|,\ \mathrm{atol})`,
            relative to its norm at the start, as Manopt's and pymanopt's
            gradient tests (there absolute). :math:`g` is the method's own
            gradient: the factor gradient for the factor methods, the Riemannian
            gradient in the chosen metric for the end-to-end ones. On by default
            so that a method whose minimum lies above ``loss_below`` stops there;
            the default is what every method resolves (:data:`STATIONARY_RTOL`);
            flows use at least ``FLOW_STATIONARY_FACTOR * rtol`` of their
            integrator. Langevin samplers never stop on it. A gradient test
            cannot tell a saddle from a minimum: a run that passes a saddle
            closer than this (saddle-to-saddle dynamics from a tiny start)
            stops there; set it lower, or ``0`` (off), for such runs.
        gradient_norm_atol: Absolute floor of the ``stationary`` test: a start
            that is stationary up to rounding stops at once (see
            :data:`STATIONARY_ATOL`).
        step_below: Stop once a step's norm is below this.
        divergence_factor: ``diverged`` once the loss exceeds this multiple of
            the initial loss (or is NaN / inf).
        stall_window: ``stalled`` when the loss improved by less than
            ``stall_tolerance`` (relative) over this many iterations.
        stall_tolerance: See ``stall_window``.
    """

    max_iterations: int | None = 10_000
    max_time: float | None = None
    end_time: float | None = None
    loss_below: float | None = None
    gradient_norm_below: float | None = None
    gradient_norm_rtol: float | None = STATIONARY_RTOL
    gradient_norm_atol: float | None = STATIONARY_ATOL
    step_below: float | None = None
    divergence_factor: float | None = 1e6
    stall_window: int | None = None
    stall_tolerance: float = 1e-12

    def __post_init__(self) -> None:
        for name in (
            "max_iterations",
            "max_time",
            "end_time",
            "loss_below",
            "gradient_norm_below",
            "gradient_norm_rtol",
            "gradient_norm_atol",
            "step_below",
            "divergence_factor",
            "stall_window",
        ):
            value = getattr(self, name)
            if value is not None and (
                not isinstance(value, (int, float))
                or isinstance(value, bool)
                or value < 0
                or not math.isfinite(value)
            ):
                raise ValueError(
                    f"stopping.{name} must be a non-negative finite number, got {value!r}"
                )

    def start(self, relative_floor: float | None = 0.0) -> _StopClock:
        """A clock for one run.

        Args:
            relative_floor: The smallest ``gradient_norm_rtol`` the method
                resolves; ``None``: the method never stops ``stationary`` (a
                sampler, whose iterates do not settle).
        """
        return _StopClock(self, relative_floor)


class _StopClock:
    """Per-run state of a :class:`Stopping`: start time, initial loss, loss history for stalls."""

    def __init__(self, stopping: Stopping, relative_floor: float | None = 0.0):
        self.stopping = stopping
        self.relative_floor = relative_floor
        self.started = time.perf_counter()
        self.initial_loss: float | None = None
        #: The first finite gradient norm the clock saw (``||g_0||`` of the stationary test).
        self.initial_gradient_norm: float | None = None
        #: The last finite gradient norm the clock saw.
        self.gradient_norm: float | None = None
        self.history: list[float] = []

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def stationary(self, gradient_norm: float) -> bool:
        """``||g|| <= max(rtol ||g_0||, atol)`` (``False`` when both are off)."""
        s = self.stopping
        if self.relative_floor is None:
            return False
        relative = 0.0
        if s.gradient_norm_rtol and self.initial_gradient_norm is not None:  # 0: off
            rtol = max(s.gradient_norm_rtol, self.relative_floor)
            relative = rtol * self.initial_gradient_norm
        return gradient_norm <= max(relative, s.gradient_norm_atol or 0.0)

    def check(
        self,
        *,
        iteration: int,
        loss: float,
        flow_time: float | None = None,
        gradient_norm: float | None = None,
        step_norm: float | None = None,
    ) -> str | None:
        """The reason code to stop now, or ``None``."""
        s = self.stopping
        if not math.isfinite(loss):
            return "diverged"
        if self.initial_loss is None:
            self.initial_loss = loss
        if s.divergence_factor is not None and loss > s.divergence_factor * max(
            self.initial_loss, 1e-300
        ):
            return "diverged"
        if s.loss_below is not None and loss <= s.loss_below:
            return "loss_below"
        if gradient_norm is not None and math.isfinite(gradient_norm):
            if self.initial_gradient_norm is None:
                self.initial_gradient_norm = gradient_norm
            self.gradient_norm = gradient_norm
            if s.gradient_norm_below is not None and gradient_norm < s.gradient_norm_below:
                return "gradient_norm_below"
            if self.stationary(gradient_norm):
                return "stationary"
        if (
            s.step_below is not None
            and step_norm is not None
            and iteration > 0
            and step_norm < s.step_below
        ):
            return "step_below"
        if s.stall_window is not None:
            self.history.append(loss)
            if len(self.history) > s.stall_window:
                old = self.history[-s.stall_window - 1]
                if old - loss <= s.stall_tolerance * max(abs(old), 1e-300):
                    return "stalled"
        if (
            s.end_time is not None
            and flow_time is not None
            and flow_time >= s.end_time * (1 - 1e-12)
        ):
            return "end_time"
        if s.max_iterations is not None and iteration >= s.max_iterations:
            return "max_iterations"
        if s.max_time is not None and self.elapsed() >= s.max_time:
            return "max_time"
        return None


class Method:
    """Base class of everything ``dlngeo compare`` can run.

    Subclasses set ``name`` and implement :meth:`run`. Options are given to
    the constructor (the registered factory) and validated there.
    """

    name: str = "method"
    #: True for methods that train the factors (their Record has final_weights).
    overparametrized: bool = False
    #: True for methods that also train nonlinear networks (``network.activation``).
    supports_activation: bool = False
    #: True when ``Record.times`` are flow times (comparable across flows), False
    #: when they are iteration numbers (``Record.time_kind == "iteration"``).
    flow_time: bool = True
    #: The gradient flow whose trajectory the method approximates at its record
    #: times: ``"overparametrized"`` (the factors' flow), ``"intrinsic"`` (the
    #: end-to-end flow on ``(M_r, g_N)``) or ``None``; the default trajectory gaps.
    follows: str | None = None
    #: True when ``record_times`` are evaluated exactly (a dense output), so that
    #: ``dlngeo compare`` can sample it at its gap partner's times.
    samples_at_times: bool = False
    #: The name of its step-size option (a positive number), or ``None``.
    step_option: str | None = None

    def run(
        self,
        task: Task,
        stopping: Stopping | None = None,
        callback: Callback | None = None,
    ) -> Record:  # pragma: no cover - abstract
        raise NotImplementedError
