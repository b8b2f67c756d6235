r"""The embedded manifold of rank-k matrices, taking ambient Euclidean gradients.

Points are ``(u, s, vt)`` with ``X = u diag(s) vt``; tangent vectors are
``(Up, M, Vp)`` with ``u^T Up = 0``, ``vt Vp = 0`` and ambient form
:math:`\xi = u M v^\top + U_p v^\top + u V_p^\top` (pymanopt's layout,
Vandereycken 2013). The metric is the Frobenius one of
:math:`\mathbb R^{m \times n}`.

Differences from pymanopt's :class:`~pymanopt.manifolds.FixedRankEmbedded`:

* ``euclidean_to_riemannian_gradient`` takes the **ambient** gradient
  :math:`E'(X)` (dense, scipy.sparse, or :class:`~dlngeo.lowrank.Factored`)
  and projects it: :math:`P_T E' = (P_{u^\perp} E' v,\ u^\top E' v,\ P_{v^\perp} E'^\top u)`.
  pymanopt's version takes derivatives with respect to ``(u, s, vt)`` and
  divides by :math:`s_j^2 - s_i^2`, which is NaN at repeated singular values.
* ``euclidean_to_riemannian_hessian`` is the Riemannian Hessian with the
  curvature (Weingarten) term of Vandereycken 2013, §2.3 / Manopt's
  ``fixedrankembeddedfactory``:

  .. math::

      \operatorname{Hess} f[\xi] = P_T(\nabla^2 f[\xi])
        + \big(P_{u^\perp} E' V_p \operatorname{diag}(s)^{-1},\ 0,\
               P_{v^\perp} E'^\top U_p \operatorname{diag}(s)^{-1}\big),

  so that pymanopt's ``TrustRegions`` runs on it (pymanopt's own class raises
  ``shape-mismatch for sum`` there).

The retraction is the metric projection of :math:`X + \xi` onto the manifold
(a second-order retraction, Absil & Malick 2012), computed as in pymanopt
from a ``2k x 2k`` SVD. pymanopt's ``check_retraction`` needs an exponential
map, which this manifold does not have in closed form; the tests run it
against a numerically integrated geodesic (slope 3).
"""

from __future__ import annotations

from typing import Any, TypeAlias

import numpy as np
from pymanopt.manifolds import FixedRankEmbedded
from pymanopt.manifolds.fixed_rank import _FixedRankPoint, _FixedRankTangentVector

from ..lowrank import Factored, ambient_matmul, ambient_rmatmul
from ..validation import positive_integer

__all__ = ["FixedRank"]

TangentVector: TypeAlias = _FixedRankTangentVector
Point: TypeAlias = _FixedRankPoint


def _check_shape(m: Any, n: Any, k: Any) -> tuple[int, int, int]:
    m, n, k = positive_integer(m, "m"), positive_integer(n, "n"), positive_integer(k, "k")
    if k > min(m, n):
        raise ValueError(f"k = {k} exceeds min(m, n) = {min(m, n)}")
    return int(m), int(n), int(k)


class FixedRank(FixedRankEmbedded):
    """Rank-``k`` ``m x n`` matrices with the embedded (Frobenius) metric.

    Args:
        m: Rows.
        n: Columns.
        k: Rank, ``1 <= k <= min(m, n)``; ``k = min(m, n)`` is the open set of
            full-rank matrices.
    """

    def __init__(self, m: int, n: int, k: int):
        m, n, k = _check_shape(m, n, k)
        super().__init__(m, n, k)
        self._name = f"Embedded manifold of {m}x{n} matrices of rank {k} (ambient gradients)"

    @property
    def shape(self) -> tuple[int, int]:
        """``(m, n)``."""
        return (self._m, self._n)

    @property
    def rank(self) -> int:
        return self._k

    @property
    def typical_dist(self) -> float:
        # pymanopt's FixedRankEmbedded uses the dimension, far above the scale
        # of a unit-norm data matrix; TrustRegions then wanders (docs/design.md §6).
        return float(np.sqrt(self._k))

    # ---------------------------------------------------------- projections
    def projection(self, point: Any, vector: Any) -> TangentVector:
        """Orthogonal projection of an ambient matrix onto the tangent space at ``point``.

        ``vector`` is dense, scipy.sparse, :class:`~dlngeo.lowrank.Factored`,
        pymanopt's ambient triple ``(U, S, V)`` (``U @ S @ V.T``, ``S`` a matrix)
        or a low-rank point ``(u, s, vt)`` (``s`` a vector).
        """
        if (
            isinstance(vector, (tuple, list))
            and not isinstance(vector, Factored)
            and len(vector) == 3
        ):
            U, S, V = (np.asarray(a) for a in vector)
            vector = Factored(U * S, V.T) if S.ndim == 1 else Factored(U @ S, V)
        u, _, vt = point
        v = vt.T
        ZV = ambient_matmul(vector, v)
        ZtU = ambient_rmatmul(vector, u)
        M = u.T @ ZV
        return TangentVector(ZV - u @ M, M, ZtU - v @ M.T)

    def euclidean_to_riemannian_gradient(
        self, point: Any, euclidean_gradient: Any
    ) -> TangentVector:
        """Project the ambient gradient ``E'(X)``: no division by singular-value gaps."""
        return self.projection(point, euclidean_gradient)

    def weingarten(self, point: Any, tangent_vector: Any, normal_vector: Any) -> TangentVector:
        """Curvature term ``(P_{u perp} Z Vp / s, 0, P_{v perp} Z^T Up / s)`` (Vandereycken 2013)."""
        u, s, vt = point
        v = vt.T
        A = ambient_matmul(normal_vector, tangent_vector.Vp) / s
        B = ambient_rmatmul(normal_vector, tangent_vector.Up) / s
        return TangentVector(A - u @ (u.T @ A), np.zeros((self._k, self._k)), B - v @ (v.T @ B))

    def euclidean_to_riemannian_hessian(
        self, point: Any, euclidean_gradient: Any, euclidean_hessian: Any, tangent_vector: Any
    ) -> TangentVector:
        """``P_T(E''[xi]) + W(xi, E')``; the tangent part of ``E'`` drops out of the curvature term."""
        # The Weingarten map only sees the normal part of E'; applied to the
        # whole gradient the tangent part contributes P_{u perp}(u M v^T + ...)Vp = 0
        # and likewise on the other side, so no explicit normal projection is needed.
        return self.projection(point, euclidean_hessian) + self.weingarten(
            point, tangent_vector, euclidean_gradient
        )

    def embedding(self, point: Any, tangent_vector: Any) -> Factored:
        """Ambient form of a tangent vector as a :class:`~dlngeo.lowrank.Factored` matrix."""
        u, _, vt = point
        return Factored(
            np.hstack((u @ tangent_vector.M + tangent_vector.Up, u)),
            np.hstack((vt.T, tangent_vector.Vp)),
        )

    def transport(self, point_a: Any, point_b: Any, tangent_vector_a: Any) -> TangentVector:
        """Vector transport by projection of the ambient vector onto ``T_{point_b}``."""
        return self.projection(point_b, self.embedding(point_a, tangent_vector_a))

    def retraction(self, point: Any, tangent_vector: Any) -> Point:
        """Metric projection of ``X + xi`` (second order); singular values kept positive."""
        u, s, vt = point
        du, ds, dvt = tangent_vector
        k = self._k
        Qu, Ru = np.linalg.qr(du)
        Qv, Rv = np.linalg.qr(dvt)
        T = np.block([[np.diag(s) + ds, Rv.T], [Ru, np.zeros((Ru.shape[0], Rv.shape[0]))]])
        Ut, St, Vt = np.linalg.svd(T)
        U = np.hstack((u, Qu)) @ Ut[:, :k]
        V = np.hstack((vt.T, Qv)) @ Vt.T[:, :k]
        return Point(U, St[:k] + np.spacing(1), V.T)

    def random_point(self) -> Point:
        """Haar-random frames and singular values uniform in ``[1, 2]`` (distinct a.s.)."""
        u = self._stiefel_m.random_point()
        vt = self._stiefel_n.random_point().T
        s = np.sort(np.random.uniform(1.0, 2.0, size=self._k))[::-1]
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
