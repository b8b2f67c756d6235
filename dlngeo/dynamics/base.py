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

from ..network import DeepLinearNetwork
from ..state import State
from .record import Record

__all__ = ["Task", "Stopping", "Method", "Callback"]

#: ``callback(state, record) -> None``; called at every recorded sample.
Callback = Callable[[State, Record], None]


@dataclass
class Task:
    """One problem that several methods run on.

    Attributes:
        loss: The :class:`~dlngeo.losses.Loss`.
        network: The :class:`~dlngeo.DeepLinearNetwork` (its depth is the metric's ``N``).
        weights0: Initial factors ``W_1 .. W_N``.
        rank: Rank ``r`` of the end-to-end manifold for the low-rank methods
            (default: ``network.rank_bound``).
        metrics: Metric name -> callable of a :class:`~dlngeo.state.State`.
        data: Problem data handed to metrics (``target``, test indices, ...).
        seed: Seed for methods that draw random numbers.
    """

    loss: Any
    network: DeepLinearNetwork
    weights0: list[np.ndarray]
    rank: int | None = None
    metrics: dict[str, Callable[[State], Any]] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    seed: int = 0

    def __post_init__(self) -> None:
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
    def X0(self) -> np.ndarray:
        """The end-to-end start ``phi(W(0))`` (a nonlinear network: its outputs ``F(W(0))``)."""
        return self.point(self.weights0)

    def point(self, weights: list[np.ndarray]) -> np.ndarray:
        """``phi(W)``; for a nonlinear network, its outputs on the loss's inputs (``loss.inputs``)."""
        if self.network.activation == "linear":
            return self.network.product(weights)
        return self.network.outputs(weights, self.loss.inputs)  # type: ignore[attr-defined]

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
    #: True for methods that also train nonlinear networks (``network.activation``).
    supports_activation: bool = False
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
