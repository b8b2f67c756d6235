r"""pymanopt problems from a cost on matrices, for :class:`FixedRank` and :class:`DLNFixedRank`.

pymanopt's :class:`~pymanopt.Problem` hands a cost the point's arrays and
expects gradients with respect to them; on ``(u, s, vt)`` those are awkward
objects (pymanopt's conversion divides by singular-value gaps, and a sparse
gradient would be densified). :func:`problem` instead asks
the loss for its **ambient** gradient and Hessian-vector product and lets the
manifold convert them, so pymanopt's SteepestDescent, ConjugateGradient and
TrustRegions run unchanged.

A cost written the pymanopt way, ``@pymanopt.function.autograd(manifold)
def cost(u, s, vt)``, also works: with ``pymanopt.Problem(manifold, cost)``
the manifold converts pymanopt's partial derivatives into the right
gradient (:mod:`dlngeo.geometry.factor_partials`), but pymanopt's Problem
takes Hessian-vector products along ``manifold.embedding(point, xi)``, which
is an ambient ``(U, S, V)`` triple (pymanopt's own return type) and not a
direction in the cost's arguments, so autograd stops with ``shape-mismatch
for sum`` exactly as with pymanopt's class. ``dlngeo.problem(manifold, cost)``
takes them along :meth:`~dlngeo.FixedRank.factor_direction` instead and so
gives the Hessian too.

**Scale.** The problem's manifold is ``manifold.with_scale(d)`` (unless the
manifold has a scale already), with :math:`d` the length of the Cauchy step
from :math:`X = 0`: for :math:`g = E'(0)`,
:math:`d = \|g\|_F^3 / \langle g, \nabla^2 E(0)[g]\rangle`, the distance from
the origin to the minimum of the quadratic model along :math:`-g`. For
matrix completion :math:`d = \|P_\Omega(M)\|_F`; for :math:`E(X) =
\tfrac12\|X - Y\|^2` it is :math:`\|Y\|_F`. It costs one gradient and one
Hessian-vector product at ``(u, 0, vt)``. TrustRegions' default radius and
start then follow the data's size (:attr:`~dlngeo.FixedRank.typical_dist`).
When the model is not convex at zero along ``-g`` the scale stays unset
(pymanopt's defaults), as it does for a pymanopt cost function of ``(u, s, vt)``.
"""

from __future__ import annotations

import weakref
from typing import Any

import numpy as np
import pymanopt
from pymanopt.autodiff import Function

from ..losses import Loss, as_loss
from ..lowrank import ambient_inner, is_ambient, tangent_to_factored
from .fixed_rank import FixedRank

__all__ = ["problem", "AmbientProblem", "FactorCostProblem", "cauchy_scale", "data_scales"]


#: data_scales per loss object and shape: a run asks twice (the manifold's scale and the
#: stationary stop's gradient scale), and each answer costs a gradient and a product at 0.
_SCALES: weakref.WeakKeyDictionary[Loss, dict[tuple[int, int], Any]] = weakref.WeakKeyDictionary()


def data_scales(shape: tuple[int, int], loss: Loss) -> tuple[float, float] | None:
    """``(||E'(0)||_F, d)``, ``d = ||g||^3 / <g, E''(0)[g]>`` with ``g = E'(0)`` (module docs).

    ``None`` if either is not positive and finite (or the loss is undefined at ``X = 0``).
    Computed once per loss object and shape (the loss's data are taken as fixed).
    """
    key = (int(shape[0]), int(shape[1]))
    try:
        cache = _SCALES.setdefault(loss, {})
    except TypeError:  # a loss that cannot be weakly referenced: no cache
        cache = {}
    if key not in cache:
        cache[key] = _data_scales(key, loss)
    return cache[key]


def _data_scales(shape: tuple[int, int], loss: Loss) -> tuple[float, float] | None:
    m, n = shape
    zero = (np.eye(m, 1), np.zeros(1), np.eye(1, n))
    try:
        with np.errstate(all="ignore"):
            g = loss.gradient(zero)
            if not is_ambient(g):
                return None
            gg = ambient_inner(g, g)
            curvature = ambient_inner(g, loss.hessian_vector_product(zero, g))
    except (ValueError, ArithmeticError, np.linalg.LinAlgError):
        return None  # a loss undefined at X = 0: its errors show at the first real evaluation
    if not (np.isfinite(gg) and np.isfinite(curvature) and gg > 0 and curvature > 0):
        return None
    return float(np.sqrt(gg)), float(gg**1.5 / curvature)


def cauchy_scale(manifold: FixedRank, loss: Loss) -> float | None:
    """``||g||^3 / <g, E''(0)[g]>`` with ``g = E'(0)`` (module docs), or ``None`` if not positive and finite."""
    scales = data_scales(manifold.shape, loss)
    return None if scales is None else scales[1]


class AmbientProblem(pymanopt.Problem):
    """A :class:`pymanopt.Problem` whose gradients come from a :class:`~dlngeo.losses.Loss`.

    Counts cost, gradient and Hessian-vector evaluations in ``evaluations``.
    """

    def __init__(self, manifold: FixedRank, loss: Loss):
        self.loss = loss
        self.evaluations = {"cost": 0, "gradient": 0, "hessian": 0}
        self._gradient_cache: tuple[Any, Any] | None = None
        if manifold.scale is None:
            manifold = manifold.with_scale(cauchy_scale(manifold, loss))

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
                point, tangent_to_factored(point, tangent_vector)
            )
            return self.manifold.euclidean_to_riemannian_hessian(
                point, self.euclidean_gradient(point), ehess, tangent_vector
            )

        return riemannian_hessian


class FactorCostProblem(pymanopt.Problem):
    """A :class:`pymanopt.Problem` for a pymanopt cost function of ``(u, s, vt)``, with its Hessian.

    The gradient is pymanopt's own (partial derivatives converted by the
    manifold); Hessian-vector products are taken along
    :meth:`~dlngeo.FixedRank.factor_direction`, where pymanopt's Problem
    would use ``embedding`` and fail.
    """

    def __init__(self, manifold: FixedRank, cost: Function):
        super().__init__(manifold, cost)
        self._factor_hessian = cost.get_hessian_operator()

    @property
    def riemannian_hessian(self):
        def riemannian_hessian(point, tangent_vector):
            direction = self.manifold.factor_direction(point, tangent_vector)
            partials = self._factor_hessian(*point, *direction)
            return self.manifold.euclidean_to_riemannian_hessian(
                point, self.euclidean_gradient(point), partials, tangent_vector
            )

        return riemannian_hessian


def problem(manifold: FixedRank, cost: Any) -> AmbientProblem | FactorCostProblem:
    """Build a pymanopt problem on ``manifold``.

    Args:
        manifold: A :class:`~dlngeo.FixedRank` or :class:`~dlngeo.DLNFixedRank`.
        cost: A :class:`~dlngeo.losses.Loss` (value, ambient gradient,
            Hessian-vector product), an autograd-differentiable function of
            the dense ``X`` (wrapped by :func:`~dlngeo.loss_from_autograd`),
            or a pymanopt cost function of ``(u, s, vt)``
            (``@pymanopt.function.autograd(manifold)``; it must depend on
            them only through ``u diag(s) vt`` for the Hessian).
    """
    if not isinstance(manifold, FixedRank):
        raise ValueError(
            f"manifold must be a dlngeo FixedRank or DLNFixedRank, got {type(manifold).__name__}"
        )
    if isinstance(cost, Function):
        return FactorCostProblem(manifold, cost)
    return AmbientProblem(manifold, as_loss(cost))
