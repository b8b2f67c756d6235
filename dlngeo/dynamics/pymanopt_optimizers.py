r"""pymanopt's optimizers as dlngeo runs them, adapted by subclassing.

* :class:`AdaptiveLineSearcher`: pymanopt's adaptive line search, restarted
  from its initial step after a failed search.
* :class:`RelativeTrustRegions`: pymanopt's ``TrustRegions`` whose inner
  truncated-CG solve stops at a residual measured relative to the gradient
  at the start, so that its iterates do not depend on the units of the cost.
* :func:`monitored`: a subclass of any of pymanopt's optimizers whose
  stopping test also asks a dlngeo monitor (the criteria of
  :class:`~dlngeo.dynamics.Stopping`).

pymanopt's own files are not touched.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pymanopt.optimizers as po

__all__ = ["AdaptiveLineSearcher", "RelativeTrustRegions", "monitored", "OPTIMIZERS"]


class AdaptiveLineSearcher(po.line_search.AdaptiveLineSearcher):
    """pymanopt's adaptive line search, restarted from the initial step after a failure.

    pymanopt 2.2.1 stores ``2 * alpha`` as the next trial step; after a failed
    search ``alpha = 0``, so every later search tries the step 0 and the solver
    never moves again. Here a stored 0 is discarded.
    """

    def search(self, objective, manifold, x, d, f0, df0):
        if self._oldalpha is not None and not self._oldalpha > 0:
            self._oldalpha = None
        return super().search(objective, manifold, x, d, f0, df0)


class RelativeTrustRegions(po.TrustRegions):
    r"""Riemannian trust regions (Absil, Baker & Gallivan 2007) with a unit-free inner stopping test.

    At the iterate :math:`x_k` with gradient :math:`g_k`, the truncated
    conjugate gradient (Steihaug–Toint) that solves the trust-region
    subproblem stops, unless it leaves the region or meets negative
    curvature, once its residual satisfies

    .. math::

        \|r_j\| \le \|g_k\| \min\!\big(\kappa,\ (\|g_k\| / \|g_0\|)^{\theta}\big),

    where :math:`g_0` is the gradient at the start. pymanopt (as Manopt)
    uses :math:`\min(\kappa, \|g_k\|^\theta)`, with :math:`\|g_k\|` in the
    cost's own units: for a cost whose gradients are small numbers (a mean
    squared error over :math:`10^6` entries has :math:`\|g\| \sim 10^{-4}`)
    the superlinear branch then asks for a relative residual of
    :math:`10^{-4}` at the first step, far from the solution where the
    quadratic model is no better than a few digits, and most inner
    iterations are wasted; scaling the cost by :math:`\alpha` changes every
    step. Here the forcing term is invariant under :math:`f \to \alpha f`,
    and since it is :math:`\min(\kappa, C\|g_k\|^\theta)` with the constant
    :math:`C = \|g_0\|^{-\theta}`, the local convergence theory of Absil,
    Baker & Gallivan (2007, §4: order :math:`\min(1 + \theta, 2)`)
    holds unchanged. The stopping test of dlngeo's ``stationary`` criterion
    is relative to the same :math:`\|g_0\|`.

    Args:
        kappa: :math:`\kappa \in (0, 1)`, the linear forcing (pymanopt's default ``0.1``).
        theta: :math:`\theta > 0`, the superlinear exponent (pymanopt's default ``1``).
        *args, **kwargs: pymanopt's ``TrustRegions`` arguments.

    The reference :math:`\|g_0\|` is the gradient norm at the point of the
    first inner solve of each :meth:`run`. Implementation: pymanopt's inner
    solver is called with :math:`\theta = 0` (so its
    :math:`\|r_0\|^\theta = 1`) and :math:`\kappa` replaced by the forcing
    term above; its stop labels then always read "linear".
    """

    def __init__(self, *args: Any, kappa: float = 0.1, theta: float = 1.0, **kwargs: Any):
        if not 0 < kappa < 1:
            raise ValueError(f"kappa must be in (0, 1), got {kappa!r}")
        if not theta > 0:
            raise ValueError(f"theta must be positive, got {theta!r}")
        super().__init__(*args, kappa=kappa, theta=theta, **kwargs)
        self.reference_gradient_norm: float | None = None
        #: ``(forcing term, Hessian-vector products)`` of every inner solve of the last run.
        self.inner_solves: list[tuple[float, int]] = []

    def run(self, problem, **kwargs):
        self.reference_gradient_norm = None
        self.inner_solves = []
        return super().run(problem, **kwargs)

    def forcing(self, gradient_norm: float) -> float:
        r""":math:`\min(\kappa, (\|g_k\| / \|g_0\|)^\theta)` (``kappa`` while :math:`\|g_0\|` is 0 or unknown)."""
        reference = self.reference_gradient_norm
        if reference is None or not reference > 0 or not gradient_norm < reference:
            return float(self.kappa)
        return float(min(self.kappa, (gradient_norm / reference) ** self.theta))

    def _truncated_conjugate_gradient(
        self, problem, x, fgradx, eta, Delta, theta, kappa, mininner, maxinner
    ):
        gradient_norm = float(problem.manifold.norm(x, fgradx))
        if self.reference_gradient_norm is None:
            self.reference_gradient_norm = gradient_norm
        forcing = self.forcing(gradient_norm)
        result = super()._truncated_conjugate_gradient(
            problem, x, fgradx, eta, Delta, 0.0, forcing, mininner, maxinner
        )
        self.inner_solves.append((forcing, int(result[2]) + 1))  # pymanopt returns the last index
        return result


def monitored(cls: type) -> type:
    """A subclass of the pymanopt optimizer ``cls`` whose stopping test also asks ``self.monitor``.

    The monitor (set on the instance; ``None``: pymanopt's criteria only) sees
    the gradient norm pymanopt tested (``monitor.tested_gradient_norm``) and
    returns a ``"dlngeo:<code>"`` reason or ``None`` from
    ``monitor.check(iteration, gradient_norm, step_size)``.
    """

    class Monitored(cls):  # type: ignore[misc, valid-type]
        monitor: Any = None

        def _check_stopping_criterion(
            self,
            *,
            start_time,
            iteration=-1,
            gradient_norm=np.inf,
            step_size=np.inf,
            cost_evaluations=-1,
        ):
            if self.monitor is not None:
                self.monitor.tested_gradient_norm = float(gradient_norm)
            reason = super()._check_stopping_criterion(
                start_time=start_time,
                iteration=iteration,
                gradient_norm=gradient_norm,
                step_size=step_size,
                cost_evaluations=cost_evaluations,
            )
            if reason is None and self.monitor is not None:
                reason = self.monitor.check(iteration, gradient_norm, step_size)
            return reason

    Monitored.__name__ = cls.__name__
    return Monitored


#: dlngeo's solver names -> the monitored pymanopt optimizer classes.
OPTIMIZERS = {
    "riemannian_sd": monitored(po.SteepestDescent),
    "riemannian_cg": monitored(po.ConjugateGradient),
    "riemannian_tr": monitored(RelativeTrustRegions),
}
