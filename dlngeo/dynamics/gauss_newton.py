r"""Riemannian Gauss–Newton / Levenberg–Marquardt on the rank-r manifold, for least-squares losses.

Matrix completion and matrix sensing are :math:`E(X) = w\,\|r(X)\|^2` with a
residual :math:`r` that is *linear* in :math:`X`. On :math:`M_r` the only
nonlinearity is the manifold, so the Gauss–Newton model on the tangent space
at :math:`X = u\,\mathrm{diag}(s)\,v^\top` is exact up to the retraction: for
:math:`\xi = A v^\top + u B^\top` (every tangent vector has this form;
Vandereycken 2013), :math:`r(X + \xi) = r(X) + J c` with
:math:`c = (A, B)` and a Jacobian :math:`J` that has ``2 r`` nonzeros a row
for completion (``O(|Omega| r)`` to build and to apply). Each iteration solves
the Levenberg–Marquardt normal equations

.. math::

    (J^\top J + \lambda I)\,c = -J^\top r

by preconditioned conjugate gradients (block-Jacobi: the ``r x r`` diagonal
blocks of :math:`J^\top J`, one per row of ``A`` and of ``B``; an inexact
solve with forcing term :math:`\eta_k = \min(\eta, \|r_k\|/\|r_0\|)`), and
moves to :math:`R_X(\xi)` with the metric-projection retraction of
:class:`~dlngeo.FixedRank`. The damping is :math:`\lambda_k = \mu_k\,\bar d\,\|r_k\|/\|r_0\|`
(:math:`\bar d` the mean diagonal of :math:`J^\top J`): proportional to the
residual as in Fan & Yuan (2005), which keeps the local convergence quadratic
on zero-residual problems (Yamashita & Fukushima 2001), with :math:`\mu_k`
driven by the standard trust ratio :math:`\rho` of actual to predicted decrease
(divided by 4 when :math:`\rho > 3/4`, down to ``min_damping``; multiplied by
4 when :math:`\rho < 1/4`; the step is accepted when :math:`\rho > 10^{-4}`).
The Riemannian Gauss–Newton method for completion is Zilber & Nadler (2022,
GNMR) in these coordinates; Absil, Mahony & Sepulchre (2008, §8.4) give the
Riemannian Gauss–Newton and Levenberg–Marquardt framework.

The loss supplies ``tangent_linearization(point)``
(:class:`~dlngeo.losses.TangentLinearization`); the built-in
``matrix_completion`` and ``matrix_sensing`` do. Far from a solution (a tiny
random start at a low sampling rate) the Gauss–Newton model ignores the
curvature of :math:`M_r` and may creep instead of converging; from a spectral
start it converges in a few iterations.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..geometry.fixed_rank import FixedRank, TangentVector
from ..validation import positive_integer
from .base import Callback, Method, Stopping, Task
from .driver import (
    NumericalFailure,
    Stepper,
    check_positive,
    check_record_options,
    drive_method,
)
from .intrinsic import lowrank_start
from .record import Record

__all__ = ["RiemannianLM", "block_pcg"]


def block_pcg(
    jacobian: Any,
    blocks: np.ndarray,
    rhs: np.ndarray,
    damping: float,
    rtol: float,
    max_iterations: int,
) -> tuple[np.ndarray, int]:
    """Solve ``(J^T J + damping I) c = rhs`` by CG preconditioned with the inverse diagonal blocks.

    Stops when ``||residual|| <= rtol ||rhs||`` or after ``max_iterations``;
    returns ``(c, iterations)``. ``blocks``: ``(b, q, q)`` with ``b q = len(rhs)``.
    """
    q = blocks.shape[1]
    inverse = np.linalg.inv(blocks + damping * np.eye(q))
    x = np.zeros_like(rhs)
    residual = rhs.copy()
    target = rtol * float(np.sqrt(rhs @ rhs))
    z = np.matmul(inverse, residual.reshape(-1, q, 1)).ravel()
    p = z.copy()
    rz = float(residual @ z)
    jacobian_t = jacobian.T
    for k in range(1, max_iterations + 1):
        Ap = jacobian_t @ (jacobian @ p) + damping * p
        curvature = float(p @ Ap)
        if not curvature > 0:
            return x, k - 1
        alpha = rz / curvature
        x += alpha * p
        residual -= alpha * Ap
        if float(np.sqrt(residual @ residual)) <= target:
            return x, k
        z = np.matmul(inverse, residual.reshape(-1, q, 1)).ravel()
        rz, rz_old = float(residual @ z), rz
        p = z + (rz / rz_old) * p
    return x, max_iterations


class _LMStepper(Stepper):
    metric_depth = 1  # ||P_T E'||_F: the embedded metric

    def __init__(self, task: Task, method: RiemannianLM):
        loss = task.loss
        if not callable(getattr(loss, "tangent_linearization", None)):
            raise ValueError(
                f"loss: riemannian_lm needs a least-squares loss with tangent_linearization "
                f"(matrix_completion, matrix_sensing); got {getattr(loss, 'name', type(loss).__name__)!r}"
            )
        m, n = task.network.output_shape
        rank = int(task.rank or 1)  # Task.__post_init__ has set it
        self.task, self.method, self.loss_fn = task, method, loss
        self.manifold = FixedRank(m, n, rank)
        self.m, self.n, self.rank = m, n, rank
        start, self.truncation = lowrank_start(task)
        self.X: Any = self.manifold.point(*start)
        self.mu = method.damping
        self.counts = {"loss": 0, "gradient": 0, "inner": 0}
        self.rejected = 0
        self.stop: str | None = None

    def _linearize(self) -> None:
        lin = self.loss_fn.tangent_linearization(self.X)
        self.counts["gradient"] += 1
        self.lin = lin
        r = lin.residual
        self.res2 = float(r @ r)
        self.res_norm = float(np.sqrt(self.res2))
        self.loss = lin.weight * self.res2
        self.g = np.asarray(lin.jacobian.T @ r).ravel()  # J^T r, the gradient in (A, B) / (2 w)
        m, rank = self.m, self.rank
        Ga = self.g[: m * rank].reshape(m, rank)
        Gb = self.g[m * rank :].reshape(self.n, rank)
        M = self.X[0].T @ Ga
        # ||P_T E'(X)||_F with E' = 2 w A*(r): (A*(r) v, A*(r)^T u) are Ga, Gb; u^T A*(r) v = M counted twice.
        norm2 = float(np.sum(Ga * Ga) + np.sum(Gb * Gb) - np.sum(M * M))
        self.gradient_norm = 2 * lin.weight * float(np.sqrt(max(norm2, 0.0)))
        self.mean_diagonal = float(np.trace(lin.blocks, axis1=1, axis2=2).sum()) / self.g.size
        if not (np.isfinite(self.loss) and np.isfinite(self.gradient_norm)):
            raise NumericalFailure("non-finite residual or gradient")

    def start(self) -> None:
        self._linearize()
        self.r0 = self.res_norm if self.res_norm > 0 else 1.0

    def _tangent(self, c: np.ndarray) -> TangentVector:
        u, _, vt = self.X
        v = vt.T
        A = c[: self.m * self.rank].reshape(self.m, self.rank)
        B = c[self.m * self.rank :].reshape(self.n, self.rank)
        uA, vB = u.T @ A, v.T @ B
        return TangentVector(A - u @ uA, uA + vB.T, B - v @ vB)

    def step(self) -> None:
        method, lin = self.method, self.lin
        if self.res_norm == 0 or not np.any(self.g):
            self.stop, self.finished = "converged", True
            return
        relative = self.res_norm / self.r0
        forcing = min(method.forcing, relative)
        for _ in range(method.max_rejections):
            damping = self.mu * self.mean_diagonal * relative
            c, inner = block_pcg(
                lin.jacobian, lin.blocks, -self.g, damping, forcing, method.max_inner
            )
            self.counts["inner"] += inner
            Jc = np.asarray(lin.jacobian @ c).ravel()
            predicted = -float(lin.residual @ Jc) - 0.5 * float(Jc @ Jc)
            tangent = self._tangent(c)
            Y = self.manifold.retraction(self.X, tangent)
            r_new = self.loss_fn.residual(Y)
            self.counts["loss"] += 1
            actual = 0.5 * (self.res2 - float(r_new @ r_new))
            rho = actual / predicted if predicted > 0 else -np.inf
            if not np.isfinite(rho) and not rho == -np.inf:
                raise NumericalFailure("non-finite trial point")
            if rho < 0.25:
                self.mu *= 4.0
            elif rho > 0.75:
                self.mu = max(self.mu / 4.0, method.min_damping)
            if rho > 1e-4:
                break
            self.rejected += 1
        else:
            self.stop, self.finished = "stalled", True
            return
        self.step_norm = float(
            np.sqrt(np.sum(tangent.Up**2) + np.sum(tangent.M**2) + np.sum(tangent.Vp**2))
        )
        self.X = Y
        self.iteration += 1
        self.t = float(self.iteration)
        self._linearize()

    def point(self) -> Any:
        return self.X

    def info(self) -> dict[str, Any]:
        return {
            "start_truncation": self.truncation,
            "rank": self.rank,
            "rejected_steps": self.rejected,
            "inner_iterations": self.counts["inner"],
            "final_damping": self.mu,
        }


class RiemannianLM(Method):
    r"""Riemannian Levenberg–Marquardt (damped Gauss–Newton) on ``(M_r, Frobenius)`` for least squares.

    Args:
        damping: Initial :math:`\mu_0` of :math:`\lambda = \mu\,\bar d\,\|r\|/\|r_0\|`.
        min_damping: Floor of :math:`\mu` (0 allows pure Gauss–Newton steps near a solution).
        forcing: Largest relative tolerance of the inner CG solve.
        max_inner: Inner CG iterations at most per solve.
        max_rejections: Rejected trial steps in a row before the run stops as ``stalled``.
        record_every: Record every ``k``-th accepted step.

    ``Record.times`` are iteration numbers (``time_kind == "iteration"``); the
    gradient norm checked by ``gradient_norm_below`` is the Frobenius norm of
    the Riemannian gradient. Starts at the rank-``r`` truncation of ``phi(W(0))``.
    """

    name = "riemannian_lm"
    flow_time = False

    def __init__(
        self,
        *,
        damping: float = 1.0,
        min_damping: float = 1e-2,
        forcing: float = 0.1,
        max_inner: int = 200,
        max_rejections: int = 30,
        record_every: int = 1,
    ):
        self.damping = float(check_positive("damping", damping) or 0.0)
        if isinstance(min_damping, bool) or not (
            isinstance(min_damping, (int, float)) and 0 <= min_damping < np.inf
        ):
            raise ValueError(
                f"min_damping must be a non-negative finite number, got {min_damping!r}"
            )
        self.min_damping = float(min_damping)
        self.forcing = float(check_positive("forcing", forcing) or 0.0)
        if self.forcing >= 1:
            raise ValueError(f"forcing must be below 1, got {forcing!r}")
        self.max_inner = positive_integer(max_inner, "max_inner")
        self.max_rejections = positive_integer(max_rejections, "max_rejections")
        self.record_every, _ = check_record_options(record_every, None)

    def run(
        self, task: Task, stopping: Stopping | None = None, callback: Callback | None = None
    ) -> Record:
        stepper = _LMStepper(task, self)
        record = drive_method(
            self,
            task,
            stepper,
            stopping,
            callback,
            time_kind="iteration",
            info={"metric": "embedded", "time": "iterate number (no flow time)"},
        )
        if stepper.stop is not None and record.stop_reason == "end_time":
            record.stop_reason = stepper.stop
        return record
