r"""The embedded manifold of rank-k matrices, taking ambient Euclidean gradients.

Points are ``(u, s, vt)`` with ``X = u diag(s) vt``; tangent vectors are
``(Up, M, Vp)`` with ``u^T Up = 0``, ``vt Vp = 0`` and ambient form
:math:`\xi = u M v^\top + U_p v^\top + u V_p^\top` (pymanopt's layout,
Vandereycken 2013). The metric is the Frobenius one of
:math:`\mathbb R^{m \times n}`.

Differences from pymanopt's :class:`~pymanopt.manifolds.FixedRankEmbedded`
(every method keeps the parent's signature, return type and meaning):

* ``euclidean_to_riemannian_gradient`` takes either an **ambient** gradient
  :math:`E'(X)` of an explicit type (a 2-d array, scipy.sparse,
  :class:`~dlngeo.lowrank.Factored` or :class:`~dlngeo.lowrank.AmbientTriple`)
  and projects it, :math:`P_T E' = (P_{u^\perp} E' v,\ u^\top E' v,\ P_{v^\perp} E'^\top u)`,
  or, like the parent, pymanopt's partial derivatives ``[du, ds, dvt]`` of a
  cost written as a function of ``(u, s, vt)`` (a bare list or tuple), which
  it converts without dividing by :math:`s_j^2 - s_i^2`
  (:mod:`dlngeo.geometry.factor_partials`); pymanopt's version is NaN at
  repeated singular values.
* ``euclidean_to_riemannian_hessian`` is the Riemannian Hessian with the
  curvature (Weingarten) term of Vandereycken 2013, §2.3 / Manopt's
  ``fixedrankembeddedfactory``:

  .. math::

      \operatorname{Hess} f[\xi] = P_T(\nabla^2 f[\xi])
        + \big(P_{u^\perp} E' V_p \operatorname{diag}(s)^{-1},\ 0,\
               P_{v^\perp} E'^\top U_p \operatorname{diag}(s)^{-1}\big),

  from an ambient gradient and Hessian-vector product, or from partial
  derivatives taken along :meth:`factor_direction`. pymanopt's
  ``TrustRegions`` runs on it (pymanopt's own class raises ``shape-mismatch
  for sum`` there).
* Products are applied right to left (``u @ (u.T @ Up)``), so no method forms
  an ``m x m`` or ``m x n`` array (pymanopt's ``to_tangent_space`` and
  ``_apply_ambient`` do).
* ``typical_dist`` and ``random_point`` follow the data's ``scale`` when it is
  known (:func:`dlngeo.problem` sets it); without it they are pymanopt's.

The retraction is the metric projection of :math:`X + \xi` onto the manifold
(a second-order retraction, Absil & Malick 2012), computed as in pymanopt
from a ``2k x 2k`` SVD. pymanopt's ``check_retraction`` needs an exponential
map, which this manifold does not have in closed form; the tests run it
against a numerically integrated geodesic (slope 3).
"""

from __future__ import annotations

import copy
from typing import Any, TypeAlias

import numpy as np
from pymanopt.manifolds import FixedRankEmbedded
from pymanopt.manifolds.fixed_rank import _FixedRankPoint, _FixedRankTangentVector

from ..lowrank import (
    AmbientTriple,
    ambient_matmul,
    ambient_rmatmul,
    is_ambient,
    tangent_to_factored,
)
from ..validation import check_positive, positive_integer
from .factor_partials import (
    factor_direction,
    factor_hessian_to_tangent,
    is_partials,
    partials_to_tangent,
)
from .lowrank_ops import retract, tangent_from_products

__all__ = ["FixedRank"]

TangentVector: TypeAlias = _FixedRankTangentVector
Point: TypeAlias = _FixedRankPoint


def _check_shape(m: Any, n: Any, k: Any) -> tuple[int, int, int]:
    m, n, k = positive_integer(m, "m"), positive_integer(n, "n"), positive_integer(k, "k")
    if k > min(m, n):
        raise ValueError(f"k = {k} exceeds min(m, n) = {min(m, n)}")
    return int(m), int(n), int(k)


class FixedRank(FixedRankEmbedded):
    r"""Rank-``k`` ``m x n`` matrices with the embedded (Frobenius) metric.

    Args:
        m: Rows.
        n: Columns.
        k: Rank, ``1 <= k <= min(m, n)``; ``k = min(m, n)`` is the open set of
            full-rank matrices.
        scale: The Frobenius norm of a typical point (the data's scale), or
            ``None`` (unknown). :func:`dlngeo.problem` estimates it from the
            loss (:meth:`with_scale`). It sets :attr:`typical_dist` and the
            size of :meth:`random_point`.
    """

    def __init__(self, m: int, n: int, k: int, scale: float | None = None):
        m, n, k = _check_shape(m, n, k)
        super().__init__(m, n, k)
        self._scale = check_positive("scale", scale, allow_none=True)
        self._name = f"Embedded manifold of {m}x{n} matrices of rank {k} (ambient gradients)"

    @property
    def shape(self) -> tuple[int, int]:
        """``(m, n)``."""
        return (self._m, self._n)

    @property
    def rank(self) -> int:
        return self._k

    @property
    def scale(self) -> float | None:
        """The Frobenius norm of a typical point, or ``None``."""
        return self._scale

    def with_scale(self, scale: float | None) -> FixedRank:
        """A copy of this manifold with :attr:`scale` set (the original is left as it is)."""
        other = copy.copy(self)
        other._scale = check_positive("scale", scale, allow_none=True)
        return other

    @property
    def typical_dist(self) -> float:
        r"""The trust-region radius scale: ``scale / sqrt(k)`` if :attr:`scale` is known, else pymanopt's ``dim``.

        pymanopt's ``TrustRegions`` takes its largest radius
        :math:`\bar\Delta` = ``typical_dist`` and starts at
        :math:`\bar\Delta / 8`. Its ``FixedRankEmbedded`` uses the dimension,
        a number of coordinates rather than a length: a radius that does not
        follow the data, too long for data of size ``1e-2`` and too short for
        data of size ``1e2`` once the dimension is small. Since :math:`E(cX)`
        for data scaled by ``c`` is :math:`c^2 E(X)` in the quadratic case,
        and the retraction, projections and Hessian are homogeneous, trust
        regions whose radius and start scale with ``c`` take exactly the same
        steps at every ``c``. So the radius is a length of the point: the size
        of one of its ``k`` rank-one components, ``scale / sqrt(k)`` for a
        point of Frobenius norm ``scale`` with equal singular values (one
        step can create or remove a component). For matrix completion
        ``scale`` is :math:`\|P_\Omega(M)\|_F` (:func:`dlngeo.problem`).
        """
        if self._scale is None:
            return float(self.dim)
        return self._scale / float(np.sqrt(self._k))

    # ---------------------------------------------------------- projections
    def projection(self, point: Any, vector: Any) -> TangentVector:
        """Orthogonal projection of an ambient matrix onto the tangent space at ``point``.

        ``vector`` is a 2-d array, scipy.sparse, :class:`~dlngeo.lowrank.Factored`,
        :class:`~dlngeo.lowrank.AmbientTriple`, or (as in pymanopt) a bare
        tuple ``(U, S, V)`` meaning ``U @ S @ V.T`` with ``S`` a matrix.
        """
        if is_partials(vector):
            U, S, V = (np.asarray(a, dtype=float) for a in vector)
            if S.ndim != 2:
                raise ValueError(
                    "vector: a bare tuple is pymanopt's (U, S, V) = U @ S @ V.T with S a matrix, "
                    f"got S of shape {S.shape}; pass dlngeo.lowrank.Factored for other forms"
                )
            vector = AmbientTriple(U, S, V)
        elif not is_ambient(vector):
            raise ValueError(
                "vector must be an ambient m x n matrix (array, scipy.sparse, Factored, "
                f"AmbientTriple or pymanopt's (U, S, V)), got {type(vector).__name__}"
            )
        u, _, vt = point
        v = vt.T
        ZV, ZtU = ambient_matmul(vector, v), ambient_rmatmul(vector, u)
        return TangentVector(*tangent_from_products(u, v, ZV, ZtU))

    def to_tangent_space(self, point: Any, vector: Any) -> TangentVector:
        """pymanopt's ``to_tangent_space``, applied right to left (no ``m x m`` / ``n x n`` array)."""
        u, _, vt = point
        Up = vector.Up - u @ (u.T @ vector.Up)
        Vp = vector.Vp - vt.T @ (vt @ vector.Vp)
        return TangentVector(Up, vector.M, Vp)

    def _apply_ambient(self, vector: Any, matrix: np.ndarray) -> np.ndarray:
        """pymanopt's ``vector @ matrix`` for ``(U, S, V)`` tuples too, right to left."""
        if is_partials(vector):
            U, S, V = vector
            return U @ (S @ (V.T @ matrix))
        return ambient_matmul(vector, matrix)

    def _apply_ambient_transpose(self, vector: Any, matrix: np.ndarray) -> np.ndarray:
        """pymanopt's ``vector.T @ matrix`` for ``(U, S, V)`` tuples too, right to left."""
        if is_partials(vector):
            U, S, V = vector
            return V @ (S.T @ (U.T @ matrix))
        return ambient_rmatmul(vector, matrix)

    def euclidean_to_riemannian_gradient(
        self, point: Any, euclidean_gradient: Any
    ) -> TangentVector:
        """Riemannian gradient from an ambient ``E'(X)`` or from pymanopt's ``[du, ds, dvt]``.

        No division by singular-value gaps for a cost of ``X``
        (:mod:`dlngeo.geometry.factor_partials`).
        """
        if is_partials(euclidean_gradient):
            return TangentVector(*partials_to_tangent(point, euclidean_gradient))
        if not is_ambient(euclidean_gradient):
            raise ValueError(
                "euclidean_gradient must be an ambient m x n matrix (array, scipy.sparse, "
                "Factored, AmbientTriple) or pymanopt's partial derivatives [du, ds, dvt], "
                f"got {type(euclidean_gradient).__name__}"
            )
        return self.projection(point, euclidean_gradient)

    def weingarten(self, point: Any, tangent_vector: Any, normal_vector: Any) -> TangentVector:
        """Curvature term ``(P_{u perp} Z Vp / s, 0, P_{v perp} Z^T Up / s)`` (Vandereycken 2013)."""
        if not is_ambient(normal_vector):
            raise ValueError(
                "normal_vector must be an ambient m x n matrix (array, scipy.sparse, Factored, "
                f"AmbientTriple), got {type(normal_vector).__name__}"
            )
        u, s, vt = point
        v = vt.T
        A = ambient_matmul(normal_vector, tangent_vector.Vp) / s
        B = ambient_rmatmul(normal_vector, tangent_vector.Up) / s
        return TangentVector(A - u @ (u.T @ A), np.zeros((self._k, self._k)), B - v @ (v.T @ B))

    def factor_direction(
        self, point: Any, tangent_vector: Any
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """A direction ``(du, ds, dvt)`` in pymanopt's cost coordinates whose ambient velocity is ``tangent_vector``.

        Take Hessian-vector products of a cost of ``(u, s, vt)`` along it and
        pass them to :meth:`euclidean_to_riemannian_hessian`
        (:func:`dlngeo.problem` does this for pymanopt cost functions).
        """
        return factor_direction(point, tangent_vector)

    def euclidean_to_riemannian_hessian(
        self, point: Any, euclidean_gradient: Any, euclidean_hessian: Any, tangent_vector: Any
    ) -> TangentVector:
        """``P_T(E''[xi]) + W(xi, E')``; the tangent part of ``E'`` drops out of the curvature term.

        Either both of ``euclidean_gradient``, ``euclidean_hessian`` are
        ambient (the Hessian-vector product along ``embedding(tangent_vector)``),
        or both are pymanopt's partial derivatives, the second taken along
        :meth:`factor_direction` ``(point, tangent_vector)``.
        """
        if is_partials(euclidean_hessian) or is_partials(euclidean_gradient):
            if not (is_partials(euclidean_hessian) and is_partials(euclidean_gradient)):
                raise ValueError(
                    "euclidean_hessian: partial derivatives need the gradient as partial "
                    "derivatives too (and ambient needs ambient)"
                )
            return TangentVector(
                *factor_hessian_to_tangent(
                    point, euclidean_gradient, euclidean_hessian, tangent_vector
                )
            )
        # The Weingarten map only sees the normal part of E'; applied to the
        # whole gradient the tangent part contributes P_{u perp}(u M v^T + ...)Vp = 0
        # and likewise on the other side, so no explicit normal projection is needed.
        return self.projection(point, euclidean_hessian) + self.weingarten(
            point, tangent_vector, euclidean_gradient
        )

    def embedding(self, point: Any, tangent_vector: Any) -> AmbientTriple:
        """Ambient form ``(U, S, V)``, ``U @ S @ V.T = u M vt + Up vt + u Vp^T``, as pymanopt's (``S`` = I)."""
        left, right = tangent_to_factored(point, tangent_vector)
        return AmbientTriple(left, np.eye(2 * self._k), right)

    def transport(self, point_a: Any, point_b: Any, tangent_vector_a: Any) -> TangentVector:
        """Vector transport by projection of the ambient vector onto ``T_{point_b}``."""
        return self.projection(point_b, tangent_to_factored(point_a, tangent_vector_a))

    def retraction(self, point: Any, tangent_vector: Any) -> Point:
        """Metric projection of ``X + xi`` (second order); singular values kept positive."""
        u, s, vt = point
        U, S, Vt = retract(u, s, vt, *tangent_vector)
        return Point(U, S + np.spacing(1), Vt)

    def random_point(self) -> Point:
        """Haar-random frames, singular values uniform in ``[1, 2]`` (distinct a.s.).

        When :attr:`scale` is known they are rescaled to Frobenius norm
        ``scale / 10``, so that pymanopt's solvers started here see the same
        problem whatever the data's units (with :attr:`typical_dist`, trust
        regions are then exactly scale-equivariant). The factor 1/10 is a
        measured choice, not derived: on 45 x 70 rank-3 completion from 35 %
        of the entries, TrustRegions (default radius :attr:`typical_dist`)
        from 32 random points of norm ``c * scale`` failed 1, 1, 1, 0, 2 and 6
        times for c = 0.003, 0.01, 0.03, 0.1, 0.3, 1 (the failures run off
        along a nearly unobserved direction, one singular value growing
        without bound, at every data scale alike).
        """
        u = self._stiefel_m.random_point()
        vt = self._stiefel_n.random_point().T
        s = np.sort(np.random.uniform(1.0, 2.0, size=self._k))[::-1]
        if self._scale is not None:
            s = s * (0.1 * self._scale / np.linalg.norm(s))
        return Point(u, s, vt)

    def point(self, u: np.ndarray, s: np.ndarray, vt: np.ndarray) -> Point:
        """Wrap arrays as a manifold point (no copy)."""
        return Point(
            np.asarray(u, dtype=float), np.asarray(s, dtype=float), np.asarray(vt, dtype=float)
        )

    def from_matrix(self, X: np.ndarray) -> Point:
        """The rank-k truncated SVD of a dense matrix as a point."""
        X = np.asarray(X, dtype=float)
        if X.shape != self.shape:
            raise ValueError(f"X has shape {X.shape}, expected {self.shape}")
        if not np.all(np.isfinite(X)):
            raise ValueError("X must be finite")
        u, s, vt = np.linalg.svd(X, full_matrices=False)
        k = self._k
        if s[k - 1] <= max(X.shape) * np.finfo(float).eps * s[0]:
            raise ValueError(f"X has numerical rank below k = {k}")
        return Point(u[:, :k], s[:k], vt[:k])
