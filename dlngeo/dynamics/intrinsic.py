r"""The intrinsic (end-to-end) flow :math:`\dot X = -A_{N,X}(E'(X))`, dense and on the rank-r manifold.

Arora, Cohen & Hazan (2018, Theorem 1); Bah, Rauhut, Terstiege &
Westdickenberg (2021): from a balanced start the product of the factor flow
solves this ODE, which is the Riemannian gradient flow of :math:`E` on
:math:`(M_r, g_N)` (docs/math.md §3). Flow time is the ODE time, the same time
as the factor flow's.

**Dense** (``representation="dense"``): the ODE for :math:`X \in \mathbb R^{m\times n}`
is integrated by a ``scipy.integrate`` solver; the right-hand side is
:func:`dlngeo.geometry.metric_operator` (one SVD, ``O(mn min(m, n))``) at the
rank of :math:`X(0)` (:attr:`Task.start_rank`, ``record.info["rank"]``), which the
flow keeps: the singular values beyond it are the integrator's error, not
part of the point.

**Low rank** (``representation="lowrank"``): points ``(u, s, vt)`` of
:math:`M_r`; the vector field :math:`F(Y) = -\operatorname{grad}_{g_N} E(Y)`
comes from :func:`dlngeo.geometry.kernel.riemannian_gradient_tangent`
(ambient gradient applied to ``r`` vectors, ``O((m+n) r^2)``, ``O(|\Omega| r)``
for completion) and is tangent at ``Y``. The integrator is a *projected
Runge–Kutta method* (Kieri & Vandereycken 2019, "Projection methods for
dynamical low-rank approximation of high-dimensional problems", CMAM): each
stage and the update are retracted to :math:`M_r` by the metric projection
(truncated SVD) :math:`\mathcal R`,

.. math::

    Y_i = \mathcal R\big(X_n + h \textstyle\sum_{j<i} a_{ij} K_j\big),\quad K_i = F(Y_i),\qquad
    X_{n+1} = \mathcal R\big(X_n + h \textstyle\sum_i b_i K_i\big),

which keeps the order of the underlying scheme when the exact solution stays
on :math:`M_r`, as here. The Butcher tableaux and the embedded error
estimators are scipy's ``RK23`` (Bogacki–Shampine) and ``RK45``
(Dormand–Prince), read from ``scipy.integrate.RK23`` / ``RK45``; the dense
output is scipy's interpolant, retracted. The sums are kept factored
(``m x q`` times ``q x n``, ``q <= r + 2 r s`` for ``s`` stages); their column
sets are nested from stage to stage, so the orthonormal bases are extended
stage by stage (:class:`~dlngeo.dynamics.lowrank_steps.StageSums`) and each
truncation costs ``O((m+n) q r)``; nothing ``m x n`` is formed. Step-size
control: the error ``h \sum_i e_i K_i`` is measured in the Frobenius norm
against ``atol * sqrt(mn) + rtol * ||X||_F`` (``atol`` keeps its per-entry
meaning on average), with scipy's safety factor and bounds.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.integrate

from ..geometry.kernel import metric_operator, riemannian_gradient_tangent, tangent_inner_product
from ..lowrank import Factored, tangent_to_factored, to_dense
from .base import Callback, Method, Stopping, Task, flow_stationary_floor
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
from .factor_flow import ODE_INTEGRATORS, _check_ode_options, _finish_flow, _t_bound
from .lowrank_steps import StageSums, _fro, lowrank_start, truncate
from .record import Record

__all__ = ["IntrinsicFlow", "lowrank_start", "truncate", "LOWRANK_INTEGRATORS"]

#: Embedded Runge–Kutta pairs available on the rank-r manifold.
LOWRANK_INTEGRATORS = ("RK45", "RK23")


# ---------------------------------------------------------------- dense
class _DenseIntrinsicStepper(ScipyODEStepper):
    """The intrinsic flow on ``vec(X)``; the gradient norm is ``||grad E||_{g_N}``."""

    def __init__(
        self, task: Task, integrator: str, rtol: float, atol: float, max_step: float, t_bound: float
    ):
        super().__init__(task.X0.ravel().copy(), integrator, rtol, atol, max_step, t_bound)
        self.task = task
        self.depth = task.depth
        self.rank = task.start_rank
        self.shape = task.network.output_shape

    def rhs(self, t: float, y: np.ndarray) -> np.ndarray:
        if not np.all(np.isfinite(y)):
            raise NumericalFailure("non-finite X")
        X = y.reshape(self.shape)
        value, G = self.task.loss.value_and_gradient(X)
        self.counts["loss"] += 1
        self.counts["gradient"] += 1
        # Dense like X (O(mn), below the SVD's O(mn min(m, n))): products at BLAS speed.
        G = to_dense(G)
        # At the flow's rank r: X(t) is rank r only up to the integrator's error e, which
        # would enter K as e**(2/N) and make the flow stiff and wrong (metric_operator).
        F = metric_operator(X, G, self.depth, rank=self.rank)
        # ||grad||_{g_N}^2 = <E'(X), A(E'(X))>.
        gnorm2 = float(np.sum(F * G))
        if not (np.isfinite(value) and np.all(np.isfinite(F))):
            raise NumericalFailure("non-finite loss or gradient")
        self._cache = (y, float(value), float(np.sqrt(max(gnorm2, 0.0))))
        return -F.ravel()

    def point(self) -> np.ndarray:
        return self._y.reshape(self.shape).copy()

    def interpolate(self, t: float) -> tuple[Any, Any]:
        return self.dense_output()(t).reshape(self.shape), None

    def info(self) -> dict[str, Any]:
        return {"rank": self.rank}


# ---------------------------------------------------------------- low rank
class _LowRankIntrinsicStepper(Stepper):
    """Projected embedded Runge–Kutta on (u, s, vt) with adaptive steps (module docstring)."""

    continuous = True
    SAFETY, MIN_FACTOR, MAX_FACTOR = 0.9, 0.2, 10.0

    def __init__(
        self,
        task: Task,
        integrator: str,
        rtol: float,
        atol: float,
        max_step: float,
        t_bound: float,
        first_step: float | None,
    ):
        tableau = getattr(scipy.integrate, integrator)
        self.A, self.B, self.C, self.E, self.P = (
            tableau.A,
            tableau.B,
            tableau.C,
            tableau.E,
            tableau.P,
        )
        self.n_stages = tableau.n_stages
        self.error_order = tableau.error_estimator_order
        self.error_exponent = -1.0 / (self.error_order + 1)
        self.task, self.depth, self.rank = task, task.depth, int(task.rank or 1)
        m, n = task.network.output_shape
        self.root_mn = float(np.sqrt(m * n))
        self.rtol, self.atol, self.max_step, self.t_bound = rtol, atol, max_step, t_bound
        self.stationary_floor = flow_stationary_floor(rtol)
        self.first_step = first_step
        self.counts = {"loss": 0, "gradient": 0}
        self.X, self.truncation = lowrank_start(task)
        self.rejected = 0

    # F(Y) = -grad_{g_N} E(Y) as a factored ambient matrix; also loss and ||grad||_{g_N}.
    def field(self, Y: Any, with_value: bool = False) -> tuple[Factored, float | None, float]:
        u, s, vt = Y
        if not (np.all(np.isfinite(s)) and np.all(np.isfinite(u)) and np.all(np.isfinite(vt))):
            raise NumericalFailure("non-finite point")
        loss = self.task.loss
        if with_value:
            value, G = loss.value_and_gradient(Y)
            self.counts["loss"] += 1
        else:
            value, G = None, loss.gradient(Y)
        self.counts["gradient"] += 1
        Up, M, Vp = riemannian_gradient_tangent(u, s, vt, G, self.depth)
        # ||grad||_{g_N}^2 = g_N(grad, grad), only where the driver needs it (accepted points).
        gnorm2 = np.nan
        if with_value and np.all(s > 0):
            gnorm2 = tangent_inner_product(s, (Up, M, Vp), (Up, M, Vp), self.depth)
        F = tangent_to_factored(Y, (-Up, -M, -Vp))
        if not (np.all(np.isfinite(F.left)) and np.all(np.isfinite(F.right))):
            raise NumericalFailure("non-finite vector field")
        if value is not None and not np.isfinite(value):
            raise NumericalFailure("non-finite loss")
        return (
            F,
            (None if value is None else float(value)),
            float(np.sqrt(max(gnorm2, 0.0))) if np.isfinite(gnorm2) else float("nan"),
        )

    def combine(
        self, X: Any, h: float, weights: Any, K: list[Factored]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``R(X + h sum_j w_j K_j)`` without forming the sum."""
        u, s, vt = X
        lefts, rights = [u * s], [vt.T]
        for w, k in zip(weights, K):
            if w != 0.0:
                lefts.append((h * w) * k.left)
                rights.append(k.right)
        return truncate(np.hstack(lefts), np.hstack(rights), self.rank)  # type: ignore[arg-type]  # Task.rank is set in __post_init__

    def norm(self, X: Any) -> float:
        return float(np.linalg.norm(X[1]))

    def start(self) -> None:
        self.f, self.loss, self.gradient_norm = self.field(self.X, with_value=True)  # type: ignore[assignment]
        h = self.first_step if self.first_step is not None else self._initial_step()
        self.h = min(h, self.max_step, self.t_bound - self.t)

    def _initial_step(self) -> float:
        # scipy.integrate._ivp.common.select_initial_step with our norms.
        scale = self.atol * self.root_mn + self.rtol * self.norm(self.X)
        d0 = self.norm(self.X) / scale
        d1 = _fro(self.f.left, self.f.right) / scale
        h0 = 1e-6 if d0 < 1e-5 or d1 < 1e-5 else 0.01 * d0 / d1
        h0 = min(h0, self.t_bound - self.t)
        X1 = self.combine(self.X, h0, [1.0], [self.f])
        f1, _, _ = self.field(X1)
        diff = Factored(np.hstack((f1.left, -self.f.left)), np.hstack((f1.right, self.f.right)))
        d2 = _fro(diff.left, diff.right) / scale / h0
        order = self.error_order
        if d1 <= 1e-15 and d2 <= 1e-15:
            h1 = max(1e-6, h0 * 1e-3)
        else:
            h1 = (0.01 / max(d1, d2)) ** (1.0 / (order + 1))
        return min(100 * h0, h1)

    def step(self) -> None:
        X0, f0, t = self.X, self.f, self.t
        rejected_once = False
        while True:
            h = min(self.h, self.max_step, self.t_bound - t)
            if h <= 10 * np.spacing(max(t, 1.0)):
                self.failure = "required step size is below the spacing of floats"
                self.finished = True
                return
            K = [f0]
            sums = StageSums(X0)
            sums.add(f0)
            for i in range(1, self.n_stages):
                Y = sums.combine(h, self.A[i, :i], self.rank)
                K.append(self.field(Y)[0])
                sums.add(K[-1])
            X1 = sums.combine(h, self.B, self.rank)
            f1, loss1, gnorm1 = self.field(X1, with_value=True)
            K.append(f1)
            sums.add(f1)
            err = sums.norm(h, self.E)
            scale = self.atol * self.root_mn + self.rtol * max(self.norm(X0), self.norm(X1))
            ratio = err / scale
            if not np.isfinite(ratio):
                raise NumericalFailure("non-finite error estimate")
            if ratio < 1:
                factor = (
                    self.MAX_FACTOR
                    if ratio == 0
                    else min(self.MAX_FACTOR, self.SAFETY * ratio**self.error_exponent)
                )
                if rejected_once:
                    factor = min(1.0, factor)
                self.h = h * factor
                break
            self.rejected += 1
            rejected_once = True
            self.h = h * max(self.MIN_FACTOR, self.SAFETY * ratio**self.error_exponent)
        self._last = (sums, h, t)
        self.X, self.f, self.loss, self.gradient_norm = X1, f1, loss1, gnorm1  # type: ignore[assignment]
        self.t = t + h if t + h < self.t_bound else self.t_bound
        self.iteration += 1
        # Frobenius distance of the two points, from factors.
        self.step_norm = _fro(
            np.hstack((X1[0] * X1[1], -X0[0] * X0[1])), np.hstack((X1[2].T, X0[2].T))
        )
        if self.t >= self.t_bound:
            self.finished = True

    def interpolate(self, t: float) -> tuple[Any, Any]:
        sums, h, t0 = self._last
        x = (t - t0) / h
        powers = np.cumprod(np.full(self.P.shape[1], x))
        weights = self.P @ powers  # w_j(x) = sum_l P[j, l] x^{l+1}
        return sums.combine(h, weights, self.rank), None

    def point(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.X

    def info(self) -> dict[str, Any]:
        return {
            "rejected_steps": self.rejected,
            "start_truncation": self.truncation,
            "rank": self.rank,
        }


class IntrinsicFlow(Method):
    """The end-to-end flow :math:`\\dot X = -A_{N,X}(E'(X))`, dense or on the rank-r manifold.

    Args:
        representation: ``"dense"`` (``X`` as an ``m x n`` array, scipy ODE
            solver), ``"lowrank"`` (``(u, s, vt)`` at the task's rank, projected
            embedded Runge–Kutta), or ``"auto"``: low rank when the task's rank is
            below ``min(m, n)``.
        integrator: Dense: one of :data:`~dlngeo.dynamics.overparametrized.ODE_INTEGRATORS`;
            low rank: ``"RK45"`` (Dormand–Prince 5(4)) or ``"RK23"`` (Bogacki–Shampine 3(2)).
        rtol, atol: Tolerances (dense: componentwise as in ``solve_ivp``; low rank:
            Frobenius, see the module docs).
        max_step: Largest step.
        first_step: Low rank only: the first step (default: scipy's heuristic).
        end_time: Default final flow time when the stopping has none.
        record_every, record_times: See :mod:`dlngeo.dynamics.driver`.
        restart_at_record_times: Dense only: restart the integrator at each of
            ``record_times`` (``solve_ivp`` segment by segment), so that every
            sample is an accepted step, not the dense output (DOP853's
            interpolant is far less accurate than its steps on stiff, saturated
            modes); costs a restart per sample.
        events: :class:`~dlngeo.dynamics.events.Event` crossings to locate on
            the dense output (``record.events``; a terminal one ends the run).

    The low-rank flow starts at the rank-``r`` truncation of ``phi(W(0))``; its
    relative truncation error is ``record.info["start_truncation"]``.
    """

    name = "intrinsic_flow"
    flow_time = True
    follows = "intrinsic"
    samples_at_times = True
    rtol_option = "rtol"

    def __init__(
        self,
        *,
        representation: str = "auto",
        integrator: str = "RK45",
        rtol: float = 1e-7,
        atol: float = 1e-10,
        max_step: float = np.inf,
        first_step: float | None = None,
        end_time: float | None = None,
        record_every: int = 1,
        record_times: Any = None,
        restart_at_record_times: bool = False,
        events: Sequence[Event] | None = None,
    ):
        self.representation = check_choice(
            "representation", representation, ("auto", "dense", "lowrank")
        )
        self.integrator = check_choice("integrator", integrator, ODE_INTEGRATORS)
        if self.representation == "lowrank" and integrator not in LOWRANK_INTEGRATORS:
            raise ValueError(
                f"integrator must be one of {LOWRANK_INTEGRATORS} for representation='lowrank', got {integrator!r}"
            )
        self.rtol, self.atol, self.max_step = _check_ode_options(rtol, atol, max_step)
        self.first_step = check_positive("first_step", first_step, allow_none=True)
        self.end_time = check_positive("end_time", end_time, allow_none=True)
        self.record_every, self.record_times = check_record_options(record_every, record_times)
        self.events = check_events(events)
        if not isinstance(restart_at_record_times, bool):
            raise ValueError(
                f"restart_at_record_times must be True or False, got {restart_at_record_times!r}"
            )
        self.restart_at_record_times = restart_at_record_times

    def resolved_representation(self, task: Task) -> str:
        if self.representation != "auto":
            return self.representation
        m, n = task.network.output_shape
        lowrank = task.rank < min(m, n) and self.integrator in LOWRANK_INTEGRATORS  # type: ignore[operator]  # Task.rank is set in __post_init__
        return "lowrank" if lowrank else "dense"

    def run(
        self, task: Task, stopping: Stopping | None = None, callback: Callback | None = None
    ) -> Record:
        stopping = stopping if stopping is not None else Stopping()
        t_bound = _t_bound(stopping, self.end_time)
        representation = self.resolved_representation(task)
        if representation == "dense":
            dense = _DenseIntrinsicStepper(
                task, self.integrator, self.rtol, self.atol, self.max_step, t_bound
            )
            if self.restart_at_record_times:
                dense.stops = self.record_times
            stepper: Stepper = dense
        elif self.restart_at_record_times:
            raise ValueError("restart_at_record_times: only for representation='dense'")
        else:
            stepper = _LowRankIntrinsicStepper(
                task, self.integrator, self.rtol, self.atol, self.max_step, t_bound, self.first_step
            )
        info = {
            "representation": representation,
            "integrator": self.integrator,
            "rtol": self.rtol,
            "atol": self.atol,
            "time": "ODE time",
        }
        record = drive_method(self, task, stepper, stopping, callback, info=info)
        return _finish_flow(record, stepper)
