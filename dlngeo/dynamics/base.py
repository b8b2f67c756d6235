"""What every method shares: the task it runs on, stopping criteria (:mod:`.stopping`, re-exported), and the Method base class.

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

import functools
import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..lowrank import is_lowrank_point, to_dense
from ..network import DeepLinearNetwork
from ..state import State
from .record import Record
from .stopping import (
    FLOW_STATIONARY_FACTOR,
    STATIONARY_ATOL,
    STATIONARY_RTOL,
    Stopping,
    flow_stationary_floor,
    stationary_default_text,
)

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
    "method_class",
    "stopping_note",
]

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
    #: The name of its integrator's relative tolerance option (a flow integrated
    #: to a tolerance, whose ``stationary`` test resolves only a multiple of it:
    #: :data:`FLOW_STATIONARY_FACTOR`), or ``None``.
    rtol_option: str | None = None
    #: False for a method that never stops ``stationary`` (a sampler).
    stops_stationary: bool = True

    def run(
        self,
        task: Task,
        stopping: Stopping | None = None,
        callback: Callback | None = None,
    ) -> Record:  # pragma: no cover - abstract
        raise NotImplementedError


def method_class(factory: Any) -> type[Method] | None:
    """The :class:`Method` subclass a solver factory builds, read from the code (``None`` if unknown).

    A factory is the class itself, a wrapper of it (``functools.wraps``,
    ``functools.partial``), or a function whose return annotation names it.
    """
    seen = inspect.unwrap(factory)
    while isinstance(seen, functools.partial):
        seen = inspect.unwrap(seen.func)
    if isinstance(seen, type):
        return seen if issubclass(seen, Method) else None
    try:
        returned = typing.get_type_hints(seen).get("return")
    except Exception:  # noqa: BLE001 - an unresolvable annotation: unknown
        return None
    return returned if isinstance(returned, type) and issubclass(returned, Method) else None


def stopping_note(factory: Any) -> str:
    """The default stop of the method ``factory`` builds, in one line, from its declared capabilities.

    ``""`` for a method that never stops ``stationary`` (:attr:`Method.stops_stationary`);
    the flows' wording for one with an integrator tolerance (:attr:`Method.rtol_option`).
    """
    cls = method_class(factory)
    if cls is not None and not cls.stops_stationary:
        return ""
    return stationary_default_text(flow=cls is not None and cls.rtol_option is not None)
