"""Matrices that are never formed: low-rank points and factored ambient directions.

A point of the rank-r manifold is a triple ``(u, s, vt)`` with
``X = u @ diag(s) @ vt`` (pymanopt's layout). An ambient direction may be a
dense array, a scipy.sparse matrix (the gradient of matrix completion), a
:class:`Factored` matrix ``left @ right.T`` (a tangent vector of the rank-r
manifold in ambient form), an :class:`AmbientTriple` ``U @ S @ V.T``
(pymanopt's ambient form of a tangent vector, what
:meth:`~dlngeo.FixedRank.embedding` returns), or a :class:`SparsePlusLowRank`
matrix ``sparse + left @ right.T`` (the gradient of a regularised completion
loss, e.g. ``P_Omega(X - M) + lam X`` at a low-rank ``X``). The helpers here
apply any of them to a block of vectors and evaluate them at index pairs
without forming ``m x n``; products are taken right to left, so nothing
``m x m`` or ``m x n`` appears.

A bare ``tuple`` or ``list`` of three arrays is a **point** ``(u, s, vt)``
here; ambient matrices in factored form always carry their type
(:class:`Factored`, :class:`AmbientTriple`, :class:`SparsePlusLowRank`), so
the two are never confused.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, NamedTuple, Union

import numpy as np
import scipy.sparse as sp

__all__ = [
    "Factored",
    "SparsePlusLowRank",
    "AmbientTriple",
    "is_ambient",
    "ambient_inner",
    "is_lowrank_point",
    "to_dense",
    "ambient_matmul",
    "ambient_rmatmul",
    "entries",
    "point_shape",
    "tangent_to_factored",
]


class Factored(NamedTuple):
    """The ``m x n`` matrix ``left @ right.T`` (``left``: m x q, ``right``: n x q)."""

    left: np.ndarray
    right: np.ndarray

    @property
    def shape(self) -> tuple[int, int]:
        return (self.left.shape[0], self.right.shape[0])

    def to_dense(self) -> np.ndarray:
        return self.left @ self.right.T


@dataclass(frozen=True, eq=False)
class SparsePlusLowRank:
    r"""The ``m x n`` matrix ``sparse + left @ right.T``, never formed.

    The ambient gradient of a loss that is sparse plus a low-rank term, e.g.
    matrix completion with a Frobenius penalty,
    :math:`E'(X) = \tfrac{2}{|\Omega|} P_\Omega(X - M) + \lambda X` at
    ``X = u diag(s) vt``: ``SparsePlusLowRank.of(P, (u, s, vt), lam)``. The
    manifolds' projections and the g_N kernel take it like any ambient matrix
    and never form it: at a rank-r point that costs ``O(nnz r + (m + n) q r)``.
    Code that needs the dense matrix (the factor gradients of a dense network,
    the dense Langevin samplers) gets it from ``numpy.asarray``.

    Args:
        sparse: ``m x n`` scipy.sparse matrix (or array).
        left: ``m x q`` array.
        right: ``n x q`` array.
    """

    sparse: Any
    left: np.ndarray
    right: np.ndarray

    def __post_init__(self) -> None:
        if not sp.issparse(self.sparse):
            raise ValueError(
                f"sparse must be a scipy.sparse matrix, got {type(self.sparse).__name__}"
            )
        left = np.asarray(self.left, dtype=float)
        right = np.asarray(self.right, dtype=float)
        if left.ndim != 2 or right.ndim != 2 or left.shape[1] != right.shape[1]:
            raise ValueError(
                f"left and right must be m x q and n x q arrays, got shapes {left.shape} and {right.shape}"
            )
        if (left.shape[0], right.shape[0]) != tuple(self.sparse.shape):
            raise ValueError(
                f"left @ right.T has shape {(left.shape[0], right.shape[0])}, sparse has shape {self.sparse.shape}"
            )
        object.__setattr__(self, "sparse", self.sparse.tocsr())
        object.__setattr__(self, "left", left)
        object.__setattr__(self, "right", right)

    @classmethod
    def of(cls, sparse: Any, lowrank: Any, scale: float = 1.0) -> SparsePlusLowRank:
        """``sparse + scale * lowrank`` for a :class:`Factored`, :class:`AmbientTriple` or ``(u, s, vt)`` ``lowrank``."""
        if isinstance(lowrank, AmbientTriple):
            lowrank = lowrank.to_factored()
        if isinstance(lowrank, Factored):
            return cls(sparse, scale * lowrank.left, lowrank.right)
        if is_lowrank_point(lowrank):
            u, s, vt = lowrank
            return cls(sparse, scale * np.asarray(u) * np.asarray(s), np.asarray(vt).T)
        raise ValueError(
            f"lowrank must be a Factored or AmbientTriple matrix or a (u, s, vt) point, got {type(lowrank).__name__}"
        )

    @property
    def shape(self) -> tuple[int, int]:
        return (self.left.shape[0], self.right.shape[0])

    def to_dense(self) -> np.ndarray:
        return self.sparse.toarray() + self.left @ self.right.T

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        dense = self.to_dense()
        return dense if dtype is None else dense.astype(dtype)


class AmbientTriple(NamedTuple):
    """The ``m x n`` matrix ``U @ S @ V.T`` (pymanopt's ``(U, S, V)`` layout; ``S`` is a matrix).

    :meth:`dlngeo.FixedRank.embedding` returns a tangent vector in this form,
    as pymanopt's ``FixedRankEmbedded.embedding`` does (``S`` the identity).
    """

    U: np.ndarray
    S: np.ndarray
    V: np.ndarray

    @property
    def shape(self) -> tuple[int, int]:
        return (self.U.shape[0], self.V.shape[0])

    def to_dense(self) -> np.ndarray:
        return self.U @ (self.S @ self.V.T)

    def to_factored(self) -> Factored:
        """The same matrix as ``Factored(U @ S, V)``."""
        return Factored(self.U @ self.S, self.V)


Ambient = Union[  # noqa: UP007 (runtime alias)
    np.ndarray, sp.spmatrix, sp.sparray, Factored, AmbientTriple, SparsePlusLowRank
]


def is_ambient(Z: Any) -> bool:
    """True for the explicit ambient types: a 2-d array, scipy.sparse, :class:`Factored`, :class:`AmbientTriple`, :class:`SparsePlusLowRank`."""
    return (
        isinstance(Z, (Factored, AmbientTriple, SparsePlusLowRank))
        or sp.issparse(Z)
        or (isinstance(Z, np.ndarray) and Z.ndim == 2)
    )


def is_lowrank_point(X: Any) -> bool:
    """True for a ``(u, s, vt)`` triple (tuple, list or pymanopt point), never a typed ambient matrix."""
    return (
        isinstance(X, (tuple, list))
        and len(X) == 3
        and not isinstance(X, (Factored, AmbientTriple))
    )


def point_shape(X: Any) -> tuple[int, int]:
    """``(m, n)`` of a dense matrix or of a ``(u, s, vt)`` point."""
    if is_lowrank_point(X):
        return (np.shape(X[0])[0], np.shape(X[2])[1])
    return tuple(np.shape(X))  # type: ignore[return-value]


def to_dense(X: Any) -> np.ndarray:
    """Dense ``m x n`` array of a point, a factored or a sparse matrix."""
    if is_lowrank_point(X):
        u, s, vt = X
        return (np.asarray(u) * np.asarray(s)) @ np.asarray(vt)
    if isinstance(X, (Factored, AmbientTriple, SparsePlusLowRank)):
        return X.to_dense()
    if sp.issparse(X):
        return X.toarray()
    return np.asarray(X, dtype=float)


def ambient_matmul(Z: Any, B: np.ndarray) -> np.ndarray:
    """``Z @ B`` for dense, sparse, factored, sparse-plus-low-rank ``Z`` or a ``(u, s, vt)`` point."""
    if isinstance(Z, SparsePlusLowRank):
        return np.asarray(Z.sparse @ B) + Z.left @ (Z.right.T @ B)
    if isinstance(Z, Factored):
        return Z.left @ (Z.right.T @ B)
    if isinstance(Z, AmbientTriple):
        return Z.U @ (Z.S @ (Z.V.T @ B))
    if is_lowrank_point(Z):
        u, s, vt = Z
        return u @ (s[:, None] * (vt @ B))
    if sp.issparse(Z):
        return np.asarray(Z @ B)
    return np.asarray(Z) @ B


def ambient_rmatmul(Z: Any, A: np.ndarray) -> np.ndarray:
    """``Z.T @ A`` for dense, sparse, factored, sparse-plus-low-rank ``Z`` or a ``(u, s, vt)`` point."""
    if isinstance(Z, SparsePlusLowRank):
        return np.asarray(Z.sparse.T @ A) + Z.right @ (Z.left.T @ A)
    if isinstance(Z, Factored):
        return Z.right @ (Z.left.T @ A)
    if isinstance(Z, AmbientTriple):
        return Z.V @ (Z.S.T @ (Z.U.T @ A))
    if is_lowrank_point(Z):
        u, s, vt = Z
        return vt.T @ (s[:, None] * (u.T @ A))
    if sp.issparse(Z):
        return np.asarray(Z.T @ A)
    return np.asarray(Z).T @ A


def refill_csr(template: sp.csr_array, data: np.ndarray) -> sp.csr_array:
    """A CSR matrix with ``template``'s pattern and the values ``data`` (in its storage order).

    ``scipy.sparse`` validates the index arrays of every matrix it builds, a
    fixed cost of ~15 us that dominates a small loss's gradient. A loss whose
    gradients share one validated pattern (matrix completion) builds them
    here instead: a shallow copy of ``template`` with its own copies of the
    index arrays (so nothing is aliased) and ``data`` as its values.
    """
    out = copy.copy(template)
    out.data = data
    out.indices = template.indices.copy()
    out.indptr = template.indptr.copy()
    return out


#: Index pairs gathered at a time by :func:`entries`: the two ``CHUNK x r`` blocks stay in
#: cache, which makes the chunked gather several times faster than one big gather
#: (and bounds its temporaries) once there are more than a few thousand pairs.
CHUNK = 2048


def entries(Z: Any, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """``Z[rows, cols]`` for dense, factored or ``(u, s, vt)`` ``Z``, in ``O(len(rows) r)`` when factored.

    Factored forms are gathered in chunks of :data:`CHUNK` pairs, so the
    temporaries stay ``O(CHUNK r)`` however many pairs are asked for.
    """
    if isinstance(Z, np.ndarray):
        return Z[rows, cols]
    if is_lowrank_point(Z):
        u, s, vt = Z
        # Scale the m x r factor once, then gather: (u * s)[rows] costs m r + |rows| r,
        # u[rows] * s costs 2 |rows| r and a second |rows| x r temporary.
        return _gather_rows(np.asarray(u) * s, np.asarray(vt).T, rows, cols)
    if isinstance(Z, AmbientTriple):
        Z = Z.to_factored()
    if isinstance(Z, Factored):
        return _gather_rows(Z.left, Z.right, rows, cols)
    if isinstance(Z, SparsePlusLowRank):
        return entries(Z.sparse, rows, cols) + _gather_rows(Z.left, Z.right, rows, cols)
    if sp.issparse(Z):
        return np.asarray(Z.tocsr()[rows, cols]).ravel()
    return np.asarray(Z)[rows, cols]


def _gather_rows(
    left: np.ndarray, right: np.ndarray, rows: np.ndarray, cols: np.ndarray
) -> np.ndarray:
    """``sum_a left[rows, a] * right[cols, a]``, gathered in chunks of :data:`CHUNK` pairs."""
    count = len(rows)
    if count <= CHUNK:
        return np.einsum("ij,ij->i", np.take(left, rows, axis=0), np.take(right, cols, axis=0))
    out = np.empty(count, dtype=np.result_type(left, right))
    for lo in range(0, count, CHUNK):
        hi = min(lo + CHUNK, count)
        out[lo:hi] = np.einsum(
            "ij,ij->i", np.take(left, rows[lo:hi], axis=0), np.take(right, cols[lo:hi], axis=0)
        )
    return out


def tangent_to_factored(point: Any, tangent: Any) -> Factored:
    """Ambient form of a tangent vector ``(Up, M, Vp)`` at ``(u, s, vt)``.

    ``Z = u M vt + Up vt + u Vp^T = [u M + Up, u] @ [v, Vp]^T``.
    """
    u, _, vt = point
    Up, M, Vp = tangent
    # Leading batch axes broadcast (dlngeo.geometry.lowrank_ops.tangent_to_ambient).
    return Factored(
        np.concatenate((u @ M + Up, u), axis=-1),
        np.concatenate((np.swapaxes(vt, -1, -2), Vp), axis=-1),
    )


def ambient_inner(A: Any, B: Any) -> float:
    """Frobenius inner product ``<A, B>`` of two ambient matrices (dense, sparse, factored), never forming a
    dense ``m x n`` from a sparse or factored one."""
    if isinstance(A, SparsePlusLowRank):
        A, B = B, A
    if isinstance(B, SparsePlusLowRank):  # <A, S + L R^T> = <A, S> + <A, L R^T>
        return ambient_inner(A, B.sparse) + ambient_inner(A, Factored(B.left, B.right))
    if sp.issparse(A) or sp.issparse(B):
        S, Z = (A, B) if sp.issparse(A) else (B, A)
        S = sp.coo_array(S)
        return float(np.dot(S.data, entries(Z, S.row, S.col)))
    if isinstance(A, (Factored, AmbientTriple)):
        A, B = B, A
    if isinstance(B, AmbientTriple):
        B = B.to_factored()
    if isinstance(B, Factored):
        # <A, L R^T> = trace(L^T A R), with A applied to R first.
        return float(np.sum(B.left * ambient_matmul(A, B.right)))
    return float(np.vdot(np.asarray(A), np.asarray(B)))
