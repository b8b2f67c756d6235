r"""Riemannian Levenberg–Marquardt on the rank-r manifold for least squares, in trust-region form.

**Problem.** Matrix completion and matrix sensing are
:math:`E(X) = w\,\|r(X)\|^2` with :math:`r(X) = \mathcal A(X) - b` *linear*
in :math:`X` (:mod:`dlngeo.measurements`); the method minimises :math:`E` on
:math:`M_r` with the Frobenius metric. At :math:`X = U\Sigma V^\top` every
tangent vector is :math:`\xi = A V^\top + U B^\top` with :math:`V^\top B = 0`
(``A`` = ``U M + Up``, ``B`` = ``Vp``), and then
:math:`\|\xi\|_F^2 = \|A\|_F^2 + \|B\|_F^2`: the coordinates ``c = (A, B)`` are
an isometry of :math:`T_X M_r` (Vandereycken 2013). In them

.. math::

    r(X + \xi) = r + J c, \qquad J c = \mathcal A([A, U][V, B]^\top), \qquad
    J^\top y = (Z V,\ (I - V V^\top) Z^\top U),\ Z = \mathcal A^*(y),

``O(|Omega| r)`` per product for completion, and the Riemannian gradient of
:math:`\tfrac12\|r\|^2` is :math:`g = J^\top r`.

**Gauss–Newton model.** The pullback :math:`\tfrac12\|r(R_X(\xi))\|^2` has the
model :math:`m(c) = \tfrac12\|r + J c\|^2`: its Hessian :math:`J^\top J` is the
Riemannian Hessian without the curvature term
:math:`\langle \mathcal A^* r, U_p\Sigma^{-1}V_p^\top\rangle` (Absil, Mahony &
Sepulchre 2008, §8.4.1, Riemannian Gauss–Newton; docs/math.md §8.2), which
vanishes with the residual, so near a zero-residual solution the iteration
converges quadratically; :math:`J^\top J` is positive semidefinite.

**Levenberg–Marquardt as a trust region.** The Levenberg–Marquardt step
:math:`(J^\top J + \lambda I)c = -g` is the minimiser of :math:`m` on the ball
:math:`\|c\| \le \|c(\lambda)\|` (Moré 1978); this method keeps the ball's
radius :math:`\Delta` instead of :math:`\lambda` and solves the model
inexactly by Steihaug–Toint truncated CG (Conn, Gould & Toint 2000, §7.5.1;
Absil, Baker & Gallivan 2007 on manifolds), stopping when the model
residual is below :math:`\|g_k\|\min(\kappa, \|g_k\|/\|g_0\|)` (Eisenstat–Walker
forcing: quadratic local convergence kept) or at the boundary. A step is
accepted when :math:`\rho = (E(X) - E(R_X(\xi))) / (w\,(\|r\|^2 - \|r + Jc\|^2))`
exceeds 0.1; :math:`\Delta` is divided by 4 when :math:`\rho < 1/4` and doubled
when :math:`\rho > 3/4` at the boundary, and is never above
:math:`\tau\,\|X\|_F` (``radius``, scale-free). :math:`R_X` is the metric
projection (second order; Absil & Malick 2012).

**Projected start.** A start close to the rank-deficient matrices (the
default task: a tiny random :math:`X_0`) is where tangent-space models fail:
the curvature of :math:`M_r` is :math:`1/\sigma_r(X)`, the Gauss–Newton model
ignores it, and :math:`T_{X_0}` is spanned by random singular vectors. There,
measured on the default problem, Gauss–Newton steps with any damping rule
tried drift into a valley along which :math:`\sigma_1 \to \infty` while the
loss levels off near ``2e-3`` (9 of 10 seeds); Levin, Kileel & Boumal (2022)
describe such failures of tangent-space methods near rank-deficient points.
So the first step (``projected_start``) is the projected-gradient step on the
variety :math:`M_{\le r}` (P²GD, Schneider & Uschmajew 2015; SVP, Jain, Meka
& Dhillon 2010) with exact line searches:
:math:`Y = P_r(X_0 - \alpha\,\mathcal A^*(r_0))`, :math:`\alpha` minimising
:math:`\|r(X_0 - \alpha \mathcal A^* r_0)\|` (:math:`\alpha = 1` for completion),
then :math:`X_1 = c^\star Y`, the best point on the ray. :math:`P_r` is computed
by ``power_iterations`` steps of block subspace iteration with ``2r``
columns started at :math:`[V_0, \text{Gaussian}]` (Halko, Martinsson & Tropp
2011), so :math:`X_1` is a rank-r point near the exact projection; the step
is kept only if it lowers the loss. Every later step is the trust-region
step above.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..geometry.fixed_rank import FixedRank
from ..geometry.lowrank_ops import retract
from .base import Callback, Method, Stopping, Task
from .driver import NumericalFailure, Stepper, check_positive, check_record_options, drive
from .intrinsic import lowrank_start
from .record import Record

__all__ = ["RiemannianLM", "truncated_cg"]


def truncated_cg(
    jacobian: Any,
    adjoint: Any,
    gradient: tuple[np.ndarray, np.ndarray],
    radius: float,
    rtol: float,
    max_iterations: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool, int]:
    """Steihaug–Toint CG for ``min <g, c> + |J c|^2 / 2`` over ``|c| <= radius``, ``c = (A, B)``.

    ``jacobian(A, B)`` is ``J c``; ``adjoint(y)`` is ``J^T y`` as ``(A, B)``.
    Stops when the model gradient ``J^T J c + g`` is at most ``rtol |g|``, at
    the boundary, or after ``max_iterations``. Returns ``(A, B, J c,
    at_boundary, iterations)``.
    """
    gA, gB = gradient
    eA, eB = np.zeros_like(gA), np.zeros_like(gB)
    Je: np.ndarray | None = None
    rA, rB = gA, gB
    pA, pB = -gA, -gB
    rr = float(np.vdot(rA, rA) + np.vdot(rB, rB))
    target = rtol * np.sqrt(rr)
    ee = ep = 0.0
    pp = rr
    for k in range(1, max_iterations + 1):
        Jp = jacobian(pA, pB)
        curvature = float(Jp @ Jp)
        alpha = rr / curvature if curvature > 0 else np.inf
        if not curvature > 0 or ee + 2 * alpha * ep + alpha * alpha * pp >= radius * radius:
            # to the boundary along p: |e + tau p| = radius
            tau = (-ep + np.sqrt(ep * ep + pp * (radius * radius - ee))) / pp
            eA, eB = eA + tau * pA, eB + tau * pB
            return eA, eB, (tau * Jp if Je is None else Je + tau * Jp), True, k
        eA, eB = eA + alpha * pA, eB + alpha * pB
        Je = alpha * Jp if Je is None else Je + alpha * Jp
        HA, HB = adjoint(Jp)
        rA, rB = rA + alpha * HA, rB + alpha * HB
        rr_new = float(np.vdot(rA, rA) + np.vdot(rB, rB))
        if np.sqrt(rr_new) <= target:
            return eA, eB, Je, False, k
        beta, rr = rr_new / rr, rr_new
        pA, pB = beta * pA - rA, beta * pB - rB
        ee = float(np.vdot(eA, eA) + np.vdot(eB, eB))
        ep = float(np.vdot(eA, pA) + np.vdot(eB, pB))
        pp = float(np.vdot(pA, pA) + np.vdot(pB, pB))
    assert Je is not None  # max_iterations >= 1 and no early return
    return eA, eB, Je, False, max_iterations


class _LMStepper(Stepper):
    def __init__(self, task: Task, method: RiemannianLM):
        loss = task.loss
        if not callable(getattr(loss, "linear_measurements", None)):
            raise ValueError(
                f"loss: riemannian_lm needs a least-squares loss with linear_measurements "
                f"(matrix_completion, matrix_sensing); got {getattr(loss, 'name', type(loss).__name__)!r}"
            )
        self.op = loss.linear_measurements()
        m, n = task.network.output_shape
        rank = int(task.rank or 1)  # Task.__post_init__ has set it
        self.task, self.method = task, method
        self.manifold = FixedRank(m, n, rank)
        self.m, self.n, self.rank = m, n, rank
        (u, s, vt), self.truncation = lowrank_start(task)
        self.counts = {"loss": 0, "gradient": 0, "inner": 0}
        self.rejected = 0
        self.projected = False
        self.stop: str | None = None
        self.u, self.s, self.vt = u, s, vt

    # ------------------------------------------------------------ the point
    def _residual(self, u: np.ndarray, s: np.ndarray, vt: np.ndarray) -> np.ndarray:
        self.counts["loss"] += 1
        return self.op.apply(u * s, vt.T) - self.op.values

    def _set(self, u: np.ndarray, s: np.ndarray, vt: np.ndarray, r: np.ndarray) -> None:
        """Move to ``(u, s, vt)`` with residual ``r``: loss, gradient ``g = J^T r``, its norm."""
        self.u, self.s, self.vt, self.v, self.r = u, s, vt, vt.T, r
        self.res2 = float(r @ r)
        self.loss = self.op.weight * self.res2
        self.g = self._adjoint(r)
        self.counts["gradient"] += 1
        gA, gB = self.g
        g2 = float(np.vdot(gA, gA) + np.vdot(gB, gB))
        self.g_norm = float(np.sqrt(g2))
        self.gradient_norm = 2 * self.op.weight * self.g_norm  # of E = w |r|^2
        if not (np.isfinite(self.loss) and np.isfinite(self.gradient_norm)):
            raise NumericalFailure("non-finite residual or gradient")

    def _jacobian(self, A: np.ndarray, B: np.ndarray) -> np.ndarray:
        return self.op.apply(np.hstack((A, self.u)), np.hstack((self.v, B)))

    def _adjoint(self, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        Z = self.op.adjoint(y)
        ZtU = Z.T @ self.u
        return Z @ self.v, ZtU - self.v @ (self.vt @ ZtU)

    # ------------------------------------------------------------ steps
    def start(self) -> None:
        self._set(self.u, self.s, self.vt, self._residual(self.u, self.s, self.vt))
        self.g0 = self.g_norm if self.g_norm > 0 else 1.0
        self.delta = self._max_radius()

    def _max_radius(self) -> float:
        scale = float(np.sqrt(self.s @ self.s))
        return self.method.radius * scale if scale > 0 else np.inf

    def _projected_step(self) -> bool:
        """The projected-gradient step on ``M_{<=r}`` with exact line searches; True if it lowered the loss."""
        op, u, s, vt, r = self.op, self.u, self.s, self.vt, self.r
        Ar = op.gram(r)
        den = float(Ar @ Ar)
        if not den > 0:
            return False
        alpha = float(r @ Ar) / den
        Z = op.adjoint(
            r
        )  # Y = X - alpha Z, applied to blocks (the sparse workspace stays ours here)
        us = u * s

        def times(W: np.ndarray) -> np.ndarray:
            return us @ (vt @ W) - alpha * (Z @ W)

        def times_t(W: np.ndarray) -> np.ndarray:
            return vt.T @ (us.T @ W) - alpha * (Z.T @ W)

        k = min(2 * self.rank, self.m, self.n)
        rng = np.random.default_rng(0)
        block = np.hstack((self.v, rng.standard_normal((self.n, k - self.rank))))
        Q = np.linalg.qr(times(block))[0]
        for _ in range(self.method.power_iterations):
            Q = np.linalg.qr(times(np.linalg.qr(times_t(Q))[0]))[0]
        P, sigma, Rt = np.linalg.svd(
            times_t(Q), full_matrices=False
        )  # (Q^T Y)^T = P diag(sigma) Rt
        a, sigma, bt = Q @ Rt.T[:, : self.rank], sigma[: self.rank], P[:, : self.rank].T
        measured = op.apply(a * sigma, bt.T)
        den = float(measured @ measured)
        scale = float(measured @ op.values) / den if den > 0 else 0.0
        self.counts["loss"] += 1
        if not (np.isfinite(scale) and scale > 0):
            return False
        r_new = scale * measured - op.values
        if not float(r_new @ r_new) < self.res2:
            return False
        self.step_norm = None
        self._set(a, scale * sigma, bt, r_new)
        self.delta = self._max_radius()
        return True

    def step(self) -> None:
        method = self.method
        if self.res2 == 0 or self.g_norm == 0:
            self.stop, self.finished = "converged", True
            return
        if method.projected_start and self.iteration == 0 and not self.projected:
            self.projected = True
            if self._projected_step():
                self.iteration, self.t = 1, 1.0
                return
        forcing = min(method.forcing, self.g_norm / self.g0)
        for _ in range(method.max_rejections):
            A, B, Jc, boundary, inner = truncated_cg(
                self._jacobian, self._adjoint, self.g, self.delta, forcing, method.max_inner
            )
            self.counts["inner"] += inner
            predicted = -float(self.r @ Jc) - 0.5 * float(Jc @ Jc)
            M = self.u.T @ A
            u, s, vt = retract(self.u, self.s, self.vt, A - self.u @ M, M, B)
            r_new = self._residual(u, s, vt)
            actual = 0.5 * (self.res2 - float(r_new @ r_new))
            rho = actual / predicted if predicted > 0 else -np.inf
            if np.isnan(rho):
                raise NumericalFailure("non-finite trial point")
            if rho < 0.25:
                self.delta /= 4
            elif rho > 0.75 and boundary:
                self.delta *= 2
            if rho > 0.1:
                break
            self.rejected += 1
        else:
            self.stop, self.finished = "stalled", True
            return
        self.step_norm = float(np.sqrt(np.vdot(A, A) + np.vdot(B, B)))
        self._set(u, s, vt, r_new)
        self.delta = min(self.delta, self._max_radius())
        self.iteration += 1
        self.t = float(self.iteration)

    def point(self) -> Any:
        return self.manifold.point(self.u, self.s, self.vt)

    def info(self) -> dict[str, Any]:
        return {
            "start_truncation": self.truncation,
            "rank": self.rank,
            "projected_start": self.projected and self.iteration > 0,
            "rejected_steps": self.rejected,
            "inner_iterations": self.counts["inner"],
            "final_radius": self.delta,
        }


def _positive_int(key: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{key} must be an integer >= {minimum}, got {value!r}")
    return int(value)


class RiemannianLM(Method):
    r"""Riemannian Levenberg–Marquardt (Gauss–Newton trust region) on ``(M_r, Frobenius)`` for least squares.

    See the module docstring for the method. Needs a loss with
    ``linear_measurements()`` (``matrix_completion``, ``matrix_sensing``).

    Args:
        radius: Largest trust radius relative to the point, :math:`\Delta \le \tau\|X\|_F`
            (also the initial radius).
        forcing: :math:`\kappa`, the largest relative tolerance of the inner CG solve.
        max_inner: Inner CG iterations at most per solve.
        max_rejections: Rejected trial steps in a row before the run stops as ``stalled``.
        projected_start: Take the projected-gradient step on :math:`M_{\le r}` first
            (kept only if it lowers the loss).
        power_iterations: Subspace iterations of that step's rank-r projection.
        record_every: Record every ``k``-th accepted step.

    ``Record.times`` are iteration numbers (``time_kind == "iteration"``; the
    projected step is iteration 1); the gradient norm checked by
    ``gradient_norm_below`` is the Frobenius norm of the Riemannian gradient.
    Starts at the rank-``r`` truncation of ``phi(W(0))``.
    """

    name = "riemannian_lm"
    flow_time = False

    def __init__(
        self,
        *,
        radius: float = 0.25,
        forcing: float = 0.1,
        max_inner: int = 200,
        max_rejections: int = 30,
        projected_start: bool = True,
        power_iterations: int = 4,
        record_every: int = 1,
    ):
        self.radius = float(check_positive("radius", radius) or 0.0)
        if not np.isfinite(self.radius):
            raise ValueError(f"radius must be finite, got {radius!r}")
        self.forcing = float(check_positive("forcing", forcing) or 0.0)
        if self.forcing >= 1:
            raise ValueError(f"forcing must be below 1, got {forcing!r}")
        self.max_inner = _positive_int("max_inner", max_inner)
        self.max_rejections = _positive_int("max_rejections", max_rejections)
        if not isinstance(projected_start, (bool, np.bool_)):
            raise ValueError(f"projected_start must be true or false, got {projected_start!r}")
        self.projected_start = bool(projected_start)
        self.power_iterations = _positive_int("power_iterations", power_iterations, 0)
        self.record_every, _ = check_record_options(record_every, None)

    def run(
        self, task: Task, stopping: Stopping | None = None, callback: Callback | None = None
    ) -> Record:
        stepper = _LMStepper(task, self)
        record = drive(
            self.name,
            task,
            stepper,
            stopping,
            callback,
            record_every=self.record_every,
            time_kind="iteration",
            info={"metric": "embedded", "time": "iterate number (no flow time)"},
        )
        if stepper.stop is not None and record.stop_reason == "end_time":
            record.stop_reason = stepper.stop
        return record
