r"""When a run stops: composable criteria and the default ``stationary`` test.

:class:`Stopping` holds the thresholds (iterations, time, flow time, loss,
gradient norm, step, divergence, stalls) and gives a structured reason code,
one of :data:`~dlngeo.dynamics.record.STOP_REASONS`. Every method but the
samplers stops by default at a stationary point: its gradient norm at most
:data:`STATIONARY_RTOL` of its start (flows: at least
:data:`FLOW_STATIONARY_FACTOR` times their integrator's ``rtol``), or below
:data:`STATIONARY_ATOL` times the task's gradient scale (:func:`gradient_scale`).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..geometry.problem import data_scales

__all__ = [
    "Stopping",
    "STATIONARY_RTOL",
    "STATIONARY_ATOL",
    "FLOW_STATIONARY_FACTOR",
    "flow_stationary_floor",
    "gradient_scale",
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


#: Default floor of the ``stationary`` stop, relative to the task's gradient
#: scale :math:`G` (:func:`gradient_scale`), so that a start that is already
#: stationary up to rounding stops at once (the relative test cannot fire
#: when :math:`\|g_0\|` is itself rounding). At a stationary point the
#: terms of :math:`E'(X^*)` cancel: for a quadratic loss
#: :math:`E'(X^*) = E'(0) + \nabla^2 E[X^*]` with both terms of size
#: :math:`\|E'(0)\|`, so the computed :math:`E'(X^*)` is rounding of size
#: :math:`\sim\varepsilon\sqrt{mn}\,\|E'(0)\|` (one rounding per entry,
#: added in quadrature), and the method's gradient, a linear map of it of
#: norm at most :math:`\sqrt N\,\|X^*\|_2^{(N-1)/N}` (:func:`gradient_scale`),
#: is rounding below :math:`\varepsilon\sqrt{mn}\,G`. For ``m, n`` up to
#: ~1000 that is :math:`2.2\cdot10^{-16}\cdot 10^3 = 2.2\cdot 10^{-13}`
#: times :math:`G`; ``1e-12`` leaves a factor 4.5. With :math:`G` the floor
#: follows the data's units: data scaled by :math:`c` scales both the
#: gradients and :math:`G` by :math:`c^{(2N-1)/N}`.
STATIONARY_ATOL = 1e-12


def gradient_scale(loss: Any, shape: tuple[int, int], depth: int) -> float:
    r"""The size :math:`G` of a method's gradient terms at the data's scale; ``1`` if unknown.

    :math:`G = \sqrt N\,\|E'(0)\|_F\,d^{(N-1)/N}`, with :math:`d` the Cauchy
    step length from :math:`0` (:func:`dlngeo.geometry.problem.data_scales`;
    the size of a minimiser: :math:`\|Y\|_F` for :math:`\tfrac12\|X - Y\|^2`)
    and ``depth`` :math:`N` the depth of the metric in which the method
    measures its gradient (``1`` for the embedded metric). The
    :math:`g_N`-gradient :math:`A_{N,X}(P_T E')` and the gradient of balanced
    factors (:math:`\|W_j\|_2 = \|X\|_2^{1/N}`, :math:`\partial_j E =
    W_{>j}^\top E' W_{<j}^\top`, :math:`N` layers) have norm at most
    :math:`\sqrt N\,\|X\|_2^{(N-1)/N}\,\|E'\|_F`, and :math:`\|X\|_2 \le d`
    up to a factor of order one near a minimiser. ``1`` (an absolute floor,
    the behaviour for data of unit scale) when :math:`E'(0)` or the curvature
    along it is not positive and finite.
    """
    scales = data_scales(shape, loss)
    if scales is None:
        return 1.0
    gradient_at_zero, d = scales
    N = int(depth)
    return float(np.sqrt(N) * gradient_at_zero * d ** ((N - 1) / N))


def stationary_default_text(flow: bool = False) -> str:
    """The default ``stationary`` stop in one line (``dlngeo plugins``, option errors)."""
    rtol = f"gradient_norm_rtol={STATIONARY_RTOL:g}"
    if flow:
        rtol += f" (at least {FLOW_STATIONARY_FACTOR:g} x the integrator's rtol)"
    atol = f"gradient_norm_atol={STATIONARY_ATOL:g} x G"
    return (
        f"stops when stationary, ||grad|| <= {rtol} x ||grad_0|| or {atol}, "
        "G = sqrt(N) ||E'(0)|| d^((N-1)/N) the gradient's scale at the data's size d"
    )


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
        gradient_norm_atol: Floor of the ``stationary`` test, relative to the
            task's gradient scale :math:`G` (:func:`gradient_scale`; absolute
            when :math:`G` is unknown): a start that is stationary up to
            rounding stops at once, at any data scale (see
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

    @classmethod
    def only(cls, **criteria: float) -> Stopping:
        """The given criteria and nothing else: no ``stationary``, divergence or iteration default.

        ``Stopping.only(end_time=T)`` runs a flow to ``T`` whatever happens on the way.
        """
        off: dict[str, float | None] = dict(
            max_iterations=None,
            gradient_norm_rtol=None,
            gradient_norm_atol=None,
            divergence_factor=None,
        )
        return cls(**{**off, **criteria})  # type: ignore[arg-type]

    def start(
        self,
        relative_floor: float | None = 0.0,
        relative_divergence: bool = True,
        gradient_scale: float = 1.0,
    ) -> _StopClock:
        """A clock for one run.

        Args:
            relative_floor: The smallest ``gradient_norm_rtol`` the method
                resolves; ``None``: the method never stops ``stationary`` (a
                sampler, whose iterates do not settle).
            relative_divergence: ``False``: ``divergence_factor`` does not apply
                (a sampler's energy rises from a cold start to its equilibrium
                level by design); only a non-finite loss is ``diverged``.
            gradient_scale: :math:`G` of :func:`gradient_scale`, the unit of
                ``gradient_norm_atol``.
        """
        return _StopClock(self, relative_floor, relative_divergence, gradient_scale)


class _StopClock:
    """Per-run state of a :class:`Stopping`: start time, initial loss, loss history for stalls."""

    def __init__(
        self,
        stopping: Stopping,
        relative_floor: float | None = 0.0,
        relative_divergence: bool = True,
        gradient_scale: float = 1.0,
    ):
        self.stopping = stopping
        self.relative_floor = relative_floor
        self.relative_divergence = relative_divergence
        self.gradient_scale = float(gradient_scale)
        s = stopping
        #: Whether a check needs the current loss (else a driver may pass ``loss=None``).
        self.needs_loss = (
            s.loss_below is not None
            or s.stall_window is not None
            or (relative_divergence and s.divergence_factor is not None)
        )
        #: Whether a check needs the current gradient norm.
        self.needs_gradient = s.gradient_norm_below is not None or (
            relative_floor is not None and bool(s.gradient_norm_rtol or s.gradient_norm_atol)
        )
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
        """``||g|| <= max(rtol ||g_0||, atol G)`` (``False`` when both are off)."""
        s = self.stopping
        if self.relative_floor is None:
            return False
        relative = 0.0
        if s.gradient_norm_rtol and self.initial_gradient_norm is not None:  # 0: off
            rtol = max(s.gradient_norm_rtol, self.relative_floor)
            relative = rtol * self.initial_gradient_norm
        return gradient_norm <= max(relative, (s.gradient_norm_atol or 0.0) * self.gradient_scale)

    def note(self, gradient_norm: float | None) -> None:
        """Keep a finite gradient norm as the last seen (and the first, ``||g_0||``, if none yet)."""
        if gradient_norm is not None and math.isfinite(gradient_norm):
            if self.initial_gradient_norm is None:
                self.initial_gradient_norm = gradient_norm
            self.gradient_norm = gradient_norm

    def check(
        self,
        *,
        iteration: int,
        loss: float | None,
        flow_time: float | None = None,
        gradient_norm: float | None = None,
        step_norm: float | None = None,
    ) -> str | None:
        """The reason code to stop now, or ``None``.

        ``loss=None``: the loss is not known at this iteration (a method that
        evaluates it only where it records, when no criterion needs it:
        :attr:`needs_loss` is false); the loss tests are skipped.
        """
        s = self.stopping
        if loss is not None:
            if not math.isfinite(loss):
                return "diverged"
            if self.initial_loss is None:
                self.initial_loss = loss
            if (
                self.relative_divergence
                and s.divergence_factor is not None
                and loss > s.divergence_factor * max(self.initial_loss, 1e-300)
            ):
                return "diverged"
            if s.loss_below is not None and loss <= s.loss_below:
                return "loss_below"
        if gradient_norm is not None and math.isfinite(gradient_norm):
            self.note(gradient_norm)
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
        if s.stall_window is not None and loss is not None:
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
