r"""pymanopt's partial derivatives ``[du, ds, dvt]`` turned into tangent vectors, without dividing by gaps.

A pymanopt user writes the cost as a function of the factors,
``@pymanopt.function.autograd(manifold) def cost(u, s, vt)``, and pymanopt's
autograd backend hands the manifold the list of partial derivatives
``[du, ds, dvt]`` (and, for Hessian-vector products, the derivative of that
list along a direction in the same coordinates). This module converts them.

**Gradient.** When the cost is a function of :math:`X = U S V^\top`,
:math:`F(u, s, v^\top) = f(u\,\mathrm{diag}(s)\,v^\top)`, the chain rule gives,
with :math:`E' = \nabla f(X)`,

.. math::

    du = E' V S, \qquad dvt = S U^\top E', \qquad ds = \operatorname{diag}(U^\top E' V),

so :math:`E'V = du\,S^{-1}`, :math:`E'^\top U = dvt^\top S^{-1}` and
:math:`U^\top E' V = U^\top du\,S^{-1} = S^{-1} dvt\,V`. The projection
:math:`P_T E' = (P_{u^\perp} E' V,\ U^\top E' V,\ P_{v^\perp} E'^\top U)` follows
with divisions by :math:`s_i` only. pymanopt's ``FixedRankEmbedded`` uses
only the Stiefel-tangent parts of ``du`` and ``dvt`` (the skew parts of
:math:`U^\top du` and :math:`V^\top dvt^\top`), from which
:math:`U^\top E' V` can only be recovered by dividing by
:math:`s_j^2 - s_i^2`: NaN at repeated singular values.

pymanopt's formula is also right for a cost that depends on the factors
beyond :math:`X` (its own test feeds random partials): then the two
estimates :math:`U^\top du\,S^{-1}` and :math:`S^{-1} dvt\,V` disagree, and
:func:`partials_to_tangent` uses pymanopt's formula, whose extra term is the
cost's dependence on the choice of factors. Where :math:`s_i = s_j` such a
cost is not a function on the manifold (the factors are not unique), it has
no Riemannian gradient there, and the pair gets the value of the cost of
:math:`X`. The two estimates are taken as equal when they differ by at most
``sqrt(eps)`` of their size: rounding separates them by about
:math:`(m + n)\,\varepsilon\,\|E'\|`, far below that unless the tangent part
of :math:`E'` is itself at rounding level (there pymanopt's formula is used,
which is then as accurate as pymanopt's own).

**Hessian.** Along the factor direction returned by :func:`factor_direction`,

.. math::

    (\delta u, \delta s, \delta v^\top) = \big((U_p + U M) S^{-1},\ 0,\ S^{-1} V_p^\top\big),
    \qquad \delta u\, S V^\top + U \operatorname{diag}(\delta s) V^\top + U S\, \delta v^\top = \xi,

the derivative of the partials is (with :math:`E'' = D E'(X)[\xi]`)

.. math::

    hu = E'' V S + E' V_p, \qquad hvt = S U^\top E'' + (U_p + U M)^\top E',

so the embedded Riemannian Hessian :math:`P_T(E'') + W(\xi, E')`
(Vandereycken 2013, with the Weingarten term
:math:`(P_{u^\perp} E' V_p S^{-1}, 0, P_{v^\perp} E'^\top U_p S^{-1})`) is

.. math::

    \big(P_{u^\perp} hu\, S^{-1},\
         U^\top hu\, S^{-1} - S^{-1} dvt\, V_p S^{-1},\
         P_{v^\perp}(hvt^\top S^{-1} - dvt^\top S^{-1} M S^{-1})\big),

again with divisions by :math:`s_i` only. (It assumes a cost of :math:`X`.)
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["is_partials", "partials_to_tangent", "factor_direction", "factor_hessian_to_tangent"]

#: Relative disagreement below which ``U^T du S^-1`` and ``S^-1 dvt V`` are taken as equal.
CONSISTENCY_TOLERANCE = float(np.sqrt(np.finfo(float).eps))


def is_partials(value: Any) -> bool:
    """True for a bare ``list``/``tuple`` of three arrays (pymanopt's partial derivatives)."""
    return type(value) in (list, tuple) and len(value) == 3


def _check_partials(point: Any, partials: Any, field: str) -> tuple[np.ndarray, ...]:
    u, s, vt = point
    shapes = (u.shape, s.shape, vt.shape)
    arrays = tuple(np.asarray(a, dtype=float) for a in partials)
    if tuple(a.shape for a in arrays) != shapes:
        raise ValueError(
            f"{field}: a bare list/tuple is read as pymanopt's partial derivatives [du, ds, dvt] "
            f"with shapes {shapes}, got {tuple(a.shape for a in arrays)}; pass an ambient "
            "matrix as an array, a scipy.sparse matrix or dlngeo.lowrank.Factored/AmbientTriple"
        )
    return arrays


def partials_to_tangent(point: Any, partials: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The embedded Riemannian gradient ``(Up, M, Vp)`` from pymanopt's ``[du, ds, dvt]`` (module docs)."""
    u, s, vt = point
    du, ds, dvt = _check_partials(point, partials, "euclidean_gradient")
    v = vt.T
    EV = du / s  # E' V
    EtU = dvt.T / s  # E'^T U
    A1 = u.T @ EV  # U^T E' V from du
    A2 = EtU.T @ v  # U^T E' V from dvt
    Up = EV - u @ A1
    Vp = EtU - v @ A2.T
    M = 0.5 * (A1 + A2)
    defect = np.linalg.norm(A1 - A2) + np.linalg.norm(np.diag(A1) - ds)
    size = np.linalg.norm(A1) + np.linalg.norm(A2) + np.linalg.norm(ds)
    if defect > CONSISTENCY_TOLERANCE * size:
        # A cost of the factors themselves: pymanopt's formula (skew parts only).
        utdu = u.T @ du
        vtdv = vt @ dvt.T
        numerator = (utdu - utdu.T) * s[np.newaxis, :] + s[:, np.newaxis] * (vtdv - vtdv.T)
        gap = s[np.newaxis, :] ** 2 - s[:, np.newaxis] ** 2
        defined = gap != 0
        M = np.where(defined, numerator / np.where(defined, gap, 1.0), M)
    M[np.diag_indices_from(M)] = ds
    return Up, M, Vp


def factor_direction(point: Any, tangent_vector: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(du, ds, dvt)`` with ``du S V^T + U diag(ds) V^T + U S dvt = xi``: ``((Up + U M) S^-1, 0, S^-1 Vp^T)``."""
    u, s, vt = point
    Up, M, Vp = tangent_vector
    return (Up + u @ M) / s, np.zeros_like(s), Vp.T / s[:, np.newaxis]


def factor_hessian_to_tangent(
    point: Any, gradient_partials: Any, hessian_partials: Any, tangent_vector: Any
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Embedded Riemannian Hessian from partials along :func:`factor_direction` ``(tangent_vector)``."""
    u, s, vt = point
    _, _, dvt = _check_partials(point, gradient_partials, "euclidean_gradient")
    hu, _, hvt = _check_partials(point, hessian_partials, "euclidean_hessian")
    _, M, Vp = tangent_vector
    v = vt.T
    HU = hu / s  # E'' V + E' Vp S^-1
    EtU = dvt.T / s  # E'^T U
    Up_h = HU - u @ (u.T @ HU)
    M_h = u.T @ HU - (EtU.T @ Vp) / s
    W = hvt.T / s - (EtU @ M) / s  # E''^T U + E'^T Up S^-1 (+ a part along v)
    Vp_h = W - v @ (vt @ W)
    return Up_h, M_h, Vp_h
