"""Error bounds for central differences that follow from the difference itself (Richardson).

A central difference of step ``h`` is ``D(h) = D(0) + c h^2 + O(h^4) + rounding(h)``
(first derivative: ``(f(x + h) - f(x - h)) / (2h)``; second: ``(f(x + h) - 2 f(x) +
f(x - h)) / h^2``). The same difference at ``2h`` gives ``D(2h) - D(h) = 3 c h^2 +
O(h^4)`` plus the two roundings, so ``|D(2h) - D(h)| / 3`` estimates the truncation
error of ``D(h)`` without knowing ``f''' `` (or ``f''''``); the rounding of ``D(h)`` is
at most the rounding of the differenced values over the step's power, given by the
caller. The bound is ``K = 10`` times their sum: ``K`` covers the ``O(h^4)`` term and
the estimate's own error (its rounding enters ``D(2h) - D(h)`` too), as long as
``c h^2`` is the leading error, i.e. the next term is below a tenth of it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

K = 10.0


def central_difference_bound(
    difference: Callable[[float], Any], h: float, rounding: float
) -> tuple[Any, float]:
    """``(D(h), bound)`` with ``||D(h) - D(0)|| <= bound`` (module docs); norms are Frobenius."""
    d_h = np.asarray(difference(h), dtype=float)
    d_2h = np.asarray(difference(2 * h), dtype=float)
    return d_h, K * (float(np.linalg.norm(d_2h - d_h)) / 3 + rounding)


def derivatives_along_retraction(
    problem: Any, x: Any, d: Any, cost_rounding: float, h1: float = 1e-4, h2: float = 1e-3
) -> tuple[float, float, float, float]:
    """First and second derivatives of ``t -> f(R_x(t d))`` at 0, each with its error bound.

    ``cost_rounding`` bounds the rounding of one cost value (retraction included). The
    first derivative is ``<grad f, d>`` for any retraction; the second is ``<Hess f[d], d>``
    for a second-order retraction, and for :class:`~dlngeo.DLNFixedRank`, whose Hessian is
    that of the pullback ``f o R_x`` (its module docs), at any point. Returns
    ``(first, first_bound, second, second_bound)``; steps ``h1``, ``h2`` balance the
    truncation ``~ h^2`` against the rounding ``~ 1/h`` and ``~ 1/h^2``.
    """
    man, f = problem.manifold, problem.cost
    f0 = f(x)

    def first(h: float) -> float:
        return (f(man.retraction(x, h * d)) - f(man.retraction(x, -h * d))) / (2 * h)

    def second(h: float) -> float:
        return (f(man.retraction(x, h * d)) - 2 * f0 + f(man.retraction(x, -h * d))) / h**2

    d1, b1 = central_difference_bound(first, h1, 2 * cost_rounding / (2 * h1))
    d2, b2 = central_difference_bound(second, h2, 4 * cost_rounding / h2**2)
    return float(d1), b1, float(d2), b2


def assert_derivatives_along_retraction(
    problem: Any, x: Any, d: Any, cost_rounding: float, gradient: Any = None, hessian: Any = None
) -> None:
    """``<grad f, d>`` and ``<Hess f[d], d>`` equal the derivatives along the retraction, within
    their bounds (:func:`derivatives_along_retraction`), and the bounds resolve them (to 1e-6
    and 1e-4 of their size, or of 1). ``gradient``/``hessian`` default to ``problem``'s."""
    man = problem.manifold
    gradient = problem.riemannian_gradient(x) if gradient is None else gradient
    hessian = problem.riemannian_hessian(x, d) if hessian is None else hessian
    d1, b1, d2, b2 = derivatives_along_retraction(problem, x, d, cost_rounding)
    assert abs(d1 - man.inner_product(x, gradient, d)) <= b1, (d1, b1)
    assert abs(d2 - man.inner_product(x, hessian, d)) <= b2, (d2, b2)
    assert b1 <= 1e-6 * max(1.0, abs(d1)) and b2 <= 1e-4 * max(1.0, abs(d2)), (b1, b2)
