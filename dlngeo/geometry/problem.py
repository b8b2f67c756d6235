"""pymanopt problems from a cost on matrices, for :class:`FixedRank` and :class:`DLNFixedRank`.

pymanopt's :class:`~pymanopt.Problem` hands a cost the point's arrays and
expects gradients with respect to them; on ``(u, s, vt)`` those are the wrong
objects (they divide by singular-value gaps). :func:`problem` instead asks
the loss for its **ambient** gradient and Hessian-vector product and lets the
manifold convert them, so pymanopt's SteepestDescent, ConjugateGradient and
TrustRegions run unchanged.
"""

from __future__ import annotations

from typing import Any

import pymanopt

from ..losses import Loss, as_loss
from .fixed_rank import FixedRank

__all__ = ["problem", "AmbientProblem"]


class AmbientProblem(pymanopt.Problem):
    """A :class:`pymanopt.Problem` whose gradients come from a :class:`~dlngeo.losses.Loss`.

    Counts cost, gradient and Hessian-vector evaluations in ``evaluations``.
    """

    def __init__(self, manifold: FixedRank, loss: Loss):
        self.loss = loss
        self.evaluations = {"cost": 0, "gradient": 0, "hessian": 0}
        self._gradient_cache: tuple[Any, Any] | None = None

        @pymanopt.function.numpy(manifold)
        def cost(u, s, vt):
            self.evaluations["cost"] += 1
            return loss.value((u, s, vt))

        super().__init__(manifold, cost)

    @property
    def euclidean_gradient(self):
        def euclidean_gradient(point):
            # One-entry cache: TrustRegions asks for the gradient at the same
            # point once per Hessian-vector product.
            cached = self._gradient_cache
            if cached is not None and cached[0] is point:
                return cached[1]
            self.evaluations["gradient"] += 1
            gradient = self.loss.gradient(point)
            self._gradient_cache = (point, gradient)
            return gradient

        return euclidean_gradient

    @property
    def riemannian_gradient(self):
        def riemannian_gradient(point):
            return self.manifold.euclidean_to_riemannian_gradient(
                point, self.euclidean_gradient(point)
            )

        return riemannian_gradient

    @property
    def riemannian_hessian(self):
        def riemannian_hessian(point, tangent_vector):
            self.evaluations["hessian"] += 1
            ehess = self.loss.hessian_vector_product(
                point, self.manifold.embedding(point, tangent_vector)
            )
            return self.manifold.euclidean_to_riemannian_hessian(
                point, self.euclidean_gradient(point), ehess, tangent_vector
            )

        return riemannian_hessian


def problem(manifold: FixedRank, cost: Any) -> AmbientProblem:
    """Build a pymanopt problem on ``manifold`` from a cost that is a function of the matrix ``X``.

    Args:
        manifold: A :class:`~dlngeo.FixedRank` or :class:`~dlngeo.DLNFixedRank`.
        cost: A :class:`~dlngeo.losses.Loss` (value, ambient gradient,
            Hessian-vector product) or an autograd-differentiable function of
            the dense ``X`` (wrapped by :func:`~dlngeo.loss_from_autograd`).
    """
    if not isinstance(manifold, FixedRank):
        raise ValueError(
            f"manifold must be a dlngeo FixedRank or DLNFixedRank, got {type(manifold).__name__}"
        )
    return AmbientProblem(manifold, as_loss(cost))
