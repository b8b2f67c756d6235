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

__all__ = ["Task", "Stopping", "Method", "Callback"]

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
        """The end-to-end start ``phi(W(0))`` (dense ``m x n``)."""
        if self.weights0 is None:
            return to_dense(self.start)
        return self.network.product(self.weights0)

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
    """Composable stopping criteria; ``None`` disables one.

    Attributes:
        max_iterations: Iterations (steps) at most.
        max_time: Wall-clock seconds at most.
        end_time: Flow time at which a flow stops (``t = eta k`` for discrete methods).
        loss_below: Stop once the loss is at or below this.
        gradient_norm_below: Stop once the (Riemannian) gradient norm is below this.
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

    def start(self) -> _StopClock:
        return _StopClock(self)


class _StopClock:
    """Per-run state of a :class:`Stopping`: start time, initial loss, loss history for stalls."""

    def __init__(self, stopping: Stopping):
        self.stopping = stopping
        self.started = time.perf_counter()
        self.initial_loss: float | None = None
        self.history: list[float] = []

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

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
        if (
            s.gradient_norm_below is not None
            and gradient_norm is not None
            and gradient_norm < s.gradient_norm_below
        ):
            return "gradient_norm_below"
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
    #: True when ``Record.times`` are flow times (comparable across flows), False
    #: when they are iteration numbers (``Record.time_kind == "iteration"``).
    flow_time: bool = True

    def run(
        self,
        task: Task,
        stopping: Stopping | None = None,
        callback: Callback | None = None,
    ) -> Record:  # pragma: no cover - abstract
        raise NotImplementedError
