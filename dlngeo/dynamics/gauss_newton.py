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
converges quadratically when the inner solves are exact (order :math:`\min(1 + \theta, 2)` with the forcing below); :math:`J^\top J` is positive semidefinite.

**Levenberg–Marquardt as a trust region.** The Levenberg–Marquardt step
:math:`(J^\top J + \lambda I)c = -g` is the minimiser of :math:`m` on the ball
:math:`\|c\| \le \|c(\lambda)\|` (Moré 1978); this method keeps the ball's
radius :math:`\Delta` instead of :math:`\lambda` and solves the model
inexactly by Steihaug–Toint truncated CG (Conn, Gould & Toint 2000, §7.5.1;
Absil, Baker & Gallivan 2007 on manifolds), stopping when the model
residual is below :math:`\|g_k\|\min(\kappa, (\|g_k\|/\|g_0\|)^\theta)` (forcing
relative to the start, as in :class:`dlngeo.dynamics.pymanopt_optimizers`; local
convergence of order :math:`\min(1 + \theta, 2)`, Absil, Baker & Gallivan 2007, §4)
or at the boundary. The default :math:`\theta = 1/2` does not over-solve the last
steps (3·10^4 x 3·10^4 completion, rank 10, 3·10^6 entries: 31 inner iterations
in 6 steps against 55 with :math:`\theta = 1`). CG is preconditioned by the
diagonal :math:`D` of :math:`J^\top J` (``op.diagonal``; Jacobi,
:math:`M^{-1} = P D^{-1} P` with :math:`P` the projection onto :math:`V^\top B = 0`,
scaled to mean 1), and the ball is in its norm :math:`\|c\|_M` (Conn, Gould &
Toint 2000, Alg. 7.5.1). A step is
accepted when :math:`\rho = (E(X) - E(R_X(\xi))) / (w\,(\|r\|^2 - \|r + Jc\|^2))`
exceeds 0.1; :math:`\Delta` is divided by 4 when :math:`\rho < 1/4` and doubled
when :math:`\rho > 3/4` at the boundary, and is never above
:math:`\tau\,\|X\|_F` (``radius``, default 0.5, scale-free). :math:`R_X` is the metric
projection (second order; Absil & Malick 2012).

**Projected start.** A start close to the rank-deficient matrices (the
default task: a tiny random :math:`X_0`) is where tangent-space models fail:
the curvature of :math:`M_r` is :math:`1/\sigma_r(X)`, the Gauss–Newton model
ignores it, and :math:`T_{X_0}` is spanned by random singular vectors. There,
measured on the default problem, Gauss–Newton steps with any damping rule
tried drift into a valley along which :math:`\sigma_1 \to \infty` while the
loss levels off near ``2e-3`` (9 of 10 seeds); Levin, Kileel & Boumal (2022)
describe such failures of tangent-space methods near rank-deficient points.
So the first ``projected_steps`` steps (default 2) are projected-gradient
steps on the variety :math:`M_{\le r}` (P²GD, Schneider & Uschmajew 2015; SVP,
Jain, Meka & Dhillon 2010): :math:`Y = P_r(X_k - \alpha\,\mathcal A^*(r_k))`,
then :math:`X_{k+1} = c^\star Y`, the best point on the ray (exact line
search). The first step's :math:`\alpha` minimises
:math:`\|r(X_0 - \alpha \mathcal A^* r_0)\|` (:math:`\alpha = 1` for
completion; from a tiny :math:`X_0` the ray search makes its size
irrelevant); later ones take SVP's step :math:`\alpha = 3/(4p)`, the default
of its authors' code, with :math:`1/p = mn / \sum_i \|A_i\|_F^2` (``mn/|Ω|``
for completion: the scale that makes :math:`\mathcal A` an isometry on
average). :math:`P_r` is computed by ``power_iterations`` steps of block
subspace iteration with ``2r`` columns started at
:math:`[V_k, \text{Gaussian}]` (Halko, Martinsson & Tropp 2011), so each
:math:`X_{k+1}` is a rank-r point near the exact projection; a step is kept
only if it lowers the loss, and the first that does not ends the projected
steps. Every later step is the trust-region step above. The start itself,
the truncated SVD of :math:`\phi(W(0))`, is taken from the top eigenvectors
of its Gram matrix (:func:`dlngeo.dynamics.lowrank_steps.top_singular_by_gram`).

**Measured robustness** (the default problem of ``dlngeo compare``, its own
start, loss 1e-6 within 2000 iterations): all of seeds 0–199, in 6–9
iterations (the two projected steps included; 29 inner CG iterations on
average, 39 without the preconditioner). With one projected step and ``radius = 0.1`` (the previous
defaults) 196 of them, in 15–27 iterations; with one projected step and
``radius = 0.5``, 192; the others end in the valley above. The method is not globally convergent: the second projected step is
what kept these seeds out of the valley, measured, not proved.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from ..geometry.fixed_rank import FixedRank
from ..geometry.lowrank_ops import retract
from ..validation import positive_integer
from .base import Callback, Method, Stopping, Task
from .driver import NumericalFailure, Stepper, check_positive, check_record_options, drive_method
from .gn_kernels import top_singular, truncated_cg
from .intrinsic import lowrank_start
from .record import Record

__all__ = ["RiemannianLM"]


class _LMStepper(Stepper):
    metric_depth = 1  # ||P_T E'||_F: the embedded metric

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
        (u, s, vt), self.truncation = lowrank_start(task, gram=True)
        self.counts = {"loss": 0, "gradient": 0, "inner": 0}
        self._Jp: np.ndarray | None = None  # work arrays of _normal
        self._Hp = np.empty((m + n) * rank)
        self.rejected = 0
        self.projected, self.projecting = 0, True  # projected steps taken; still taking them
        self.stop: str | None = None
        self.u, self.s, self.vt = u, s, vt

    # ------------------------------------------------------------ the point
    def _residual(self, u: np.ndarray, s: np.ndarray, vt: np.ndarray) -> np.ndarray:
        self.counts["loss"] += 1
        return self.op.apply(u * s, vt.T) - self.op.values

    def _set(self, u: np.ndarray, s: np.ndarray, vt: np.ndarray, r: np.ndarray) -> None:
        """Move to ``(u, s, vt)`` with residual ``r``: loss, gradient ``g = J^T r``, its norm."""
        m, n, k = self.m, self.n, self.rank
        self.u, self.s, self.vt, self.v, self.r = u, s, vt, vt.T, r
        self._dinv: np.ndarray | None = None
        # Work arrays of J c = A([A, u] [v, B]^T): the halves u and v are fixed at this point.
        self._left = np.empty((m, 2 * k))
        self._left[:, k:] = u
        # [v, B], row-major: the sparse gather reads each of its rows as one run.
        self._right = np.empty((n, 2 * k))
        self._right[:, :k] = self.v
        self.res2 = float(r @ r)
        self.loss = self.op.weight * self.res2
        self.g = self._adjoint(r)
        self.counts["gradient"] += 1
        self.g_norm = float(np.sqrt(self.g @ self.g))
        diagonal = getattr(self.op, "diagonal", None)  # an operator without it: no preconditioner
        if self.method.preconditioner == "diagonal" and diagonal is not None:
            # M^{-1} = P D^{-1} P, D the diagonal of J^T J (the projection P onto
            # V^T B = 0 left out of D), scaled to mean 1 so that |c|_M ~ |c|.
            dA, dB = diagonal(u, self.v)
            d = np.concatenate((dA.ravel(), dB.ravel()))
            mean = float(np.mean(d))
            self._dinv = mean / np.maximum(d, _TINY * mean) if mean > 0 else None
        self.gradient_norm = 2 * self.op.weight * self.g_norm  # of E = w |r|^2
        if not (np.isfinite(self.loss) and np.isfinite(self.gradient_norm)):
            raise NumericalFailure("non-finite residual or gradient")

    def _split(self, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Views ``(A, B)`` of a flat coordinate vector ``c``."""
        mk = self.m * self.rank
        return c[:mk].reshape(self.m, self.rank), c[mk:].reshape(self.n, self.rank)

    def _jacobian(self, c: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """``J c = A(A v^T + u B^T)``, as ``op.measure`` gives it (a vector or a masked matrix)."""
        A, B = self._split(c)
        k = self.rank
        self._left[:, :k] = A
        self._right[:, k:] = B
        return self.op.measure(self._left, self._right, out)

    def _normal(self, p: np.ndarray) -> tuple[float, np.ndarray]:
        """``(|J p|^2, J^T J p)`` in the stepper's work arrays (overwritten by the next call)."""
        Jp = self._Jp = self._jacobian(p, self._Jp)
        return float(np.vdot(Jp, Jp)), self._adjoint(Jp, self._Hp)

    def _adjoint(self, y: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """``J^T y = (Z v, (I - v v^T) Z^T u)``, ``Z = A^*(y)``, flat (in ``out`` if given)."""
        Z = self.op.adjoint(y)
        if out is None:
            out = np.empty((self.m + self.n) * self.rank)
        A, B = self._split(out)
        if isinstance(Z, np.ndarray):  # written in place (a sparse Z has no out=)
            np.matmul(Z, self.v, out=A)
            np.matmul(Z.T, self.u, out=B)
        else:
            A[...], B[...] = Z @ self.v, Z.T @ self.u
        B -= self.v @ (self.vt @ B)
        return out

    def _precondition(self, x: np.ndarray) -> np.ndarray:
        """``P D^{-1} P x`` (``x`` already in the coordinates' range: ``V^T B = 0``)."""
        z = self._dinv * x
        B = z[self.m * self.rank :].reshape(self.n, self.rank)
        B -= self.v @ (self.vt @ B)
        return z

    # ------------------------------------------------------------ steps
    def start(self) -> None:
        self._set(self.u, self.s, self.vt, self._residual(self.u, self.s, self.vt))
        self.g0 = self.g_norm if self.g_norm > 0 else 1.0
        self.delta = self._max_radius()

    def _max_radius(self) -> float:
        scale = float(np.sqrt(self.s @ self.s))
        return self.method.radius * scale if scale > 0 else np.inf

    def _projected_step(self, alpha: float | None = None) -> bool:
        """One projected-gradient step on ``M_{<=r}``, step ``alpha`` (None: exact line search); True if it lowered the loss."""
        op, u, s, vt, r = self.op, self.u, self.s, self.vt, self.r
        if alpha is None:
            Ar = op.gram(r)
            den = float(Ar @ Ar)
            if not den > 0:
                return False
            alpha = float(r @ Ar) / den
        Z = op.adjoint(r)  # Y = X - alpha Z; no other adjoint is taken until this step ends
        us = u * s
        a_ = alpha

        def times(W: np.ndarray) -> np.ndarray:
            return us @ (vt @ W) - a_ * (Z @ W)

        def times_t(W: np.ndarray) -> np.ndarray:
            return vt.T @ (us.T @ W) - a_ * (Z.T @ W)

        k = min(2 * self.rank, self.m, self.n)
        noise = _gaussian_block(self.n, k - self.rank)
        a, sigma, bt = top_singular(
            times, times_t, np.hstack((self.v, noise)), self.rank, self.method.power_iterations
        )
        measured = op.apply(a * sigma, bt.T)
        self.counts["loss"] += 1
        den = float(measured @ measured)
        scale = float(measured @ op.values) / den if den > 0 else 0.0
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
        if self.projecting and self.projected < method.projected_steps:
            # The first step by exact line search; later ones SVP's step 3 / (4 p).
            isotropic = getattr(self.op, "isotropic_scale", None)  # 0: no later projected steps
            alpha = None if self.projected == 0 else 0.75 * (isotropic() if isotropic else 0.0)
            if (alpha is None or alpha > 0) and self._projected_step(alpha):
                self.projected += 1
                self.iteration += 1
                self.t = float(self.iteration)
                return
        self.projecting = False
        forcing = min(method.forcing, (self.g_norm / self.g0) ** method.theta)
        for _ in range(method.max_rejections):
            precondition = None if self._dinv is None else self._precondition
            c, Hc, boundary, inner = truncated_cg(
                self._normal,
                self.g,
                self.delta,
                forcing,
                method.max_inner,
                precondition,
            )
            self.counts["inner"] += inner
            # The model's decrease: <r, J c> = <g, c> and |J c|^2 = <c, H c>.
            predicted = -float(self.g @ c) - 0.5 * float(c @ Hc)
            A, B = self._split(c)
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
        self.step_norm = float(np.sqrt(c @ c))
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
            "projected_steps": self.projected,
            "rejected_steps": self.rejected,
            "inner_iterations": self.counts["inner"],
            "final_radius": self.delta,
        }


#: Floor of the preconditioner's diagonal, relative to its mean (coordinates no measurement sees).
_TINY = 1e-12


@functools.lru_cache(maxsize=8)
def _gaussian_block(rows: int, cols: int) -> np.ndarray:
    """A fixed Gaussian ``rows x cols`` block (seed 0), made once per shape; read-only."""
    block = np.random.default_rng(0).standard_normal((rows, cols))
    block.flags.writeable = False
    return block


class RiemannianLM(Method):
    r"""Riemannian Levenberg–Marquardt (Gauss–Newton trust region) on ``(M_r, Frobenius)`` for least squares.

    See the module docstring for the method. Needs a loss with
    ``linear_measurements()`` (``matrix_completion``, ``matrix_sensing``).

    Args:
        radius: Largest trust radius relative to the point, :math:`\Delta \le \tau\|X\|_F`
            (also the initial radius).
        forcing: :math:`\kappa`, the largest relative tolerance of the inner CG solve.
        theta: :math:`\theta > 0`, the exponent of the forcing term
            :math:`\min(\kappa, (\|g_k\|/\|g_0\|)^\theta)` (1: quadratic local convergence).
        max_inner: Inner CG iterations at most per solve.
        max_rejections: Rejected trial steps in a row before the run stops as ``stalled``.
        projected_steps: Projected-gradient steps on :math:`M_{\le r}` first, at most
            (each kept only if it lowers the loss; 0: none).
        power_iterations: Subspace iterations of their rank-r projections.
        preconditioner: ``"diagonal"`` (the diagonal of the Gauss–Newton matrix,
            Jacobi) or ``"none"``; it also sets the trust region's norm.
        record_every: Record every ``k``-th accepted step.

    ``Record.times`` are iteration numbers (``time_kind == "iteration"``; the
    projected steps are the first iterations); the gradient norm checked by
    ``gradient_norm_below`` is the Frobenius norm of the Riemannian gradient.
    Starts at the rank-``r`` truncation of ``phi(W(0))``.
    """

    name = "riemannian_lm"
    flow_time = False

    def __init__(
        self,
        *,
        radius: float = 0.5,
        forcing: float = 0.1,
        theta: float = 0.5,
        max_inner: int = 200,
        max_rejections: int = 30,
        projected_steps: int = 2,
        power_iterations: int = 2,
        preconditioner: str = "diagonal",
        record_every: int = 1,
    ):
        self.radius = float(check_positive("radius", radius) or 0.0)
        if not np.isfinite(self.radius):
            raise ValueError(f"radius must be finite, got {radius!r}")
        self.forcing = float(check_positive("forcing", forcing) or 0.0)
        if self.forcing >= 1:
            raise ValueError(f"forcing must be below 1, got {forcing!r}")
        self.theta = float(check_positive("theta", theta) or 0.0)
        self.max_inner = positive_integer(max_inner, "max_inner")
        self.max_rejections = positive_integer(max_rejections, "max_rejections")
        self.projected_steps = positive_integer(projected_steps, "projected_steps", 0)
        self.power_iterations = positive_integer(power_iterations, "power_iterations", 0)
        if preconditioner not in ("diagonal", "none"):
            raise ValueError(f"preconditioner must be 'diagonal' or 'none', got {preconditioner!r}")
        self.preconditioner = preconditioner
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
