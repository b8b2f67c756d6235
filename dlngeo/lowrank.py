"""Matrices that are never formed: low-rank points and factored ambient directions.

A point of the rank-r manifold is a triple ``(u, s, vt)`` with
``X = u @ diag(s) @ vt`` (pymanopt's layout). An ambient direction may be a
dense array, a scipy.sparse matrix (the gradient of matrix completion), or a
:class:`Factored` matrix ``left @ right.T`` (a tangent vector of the rank-r
manifold in ambient form). The helpers here apply any of them to a block of
vectors and evaluate them at index pairs without forming ``m x n``.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Union

import numpy as np
import scipy.sparse as sp

__all__ = [
    "Factored",
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


Ambient = Union[np.ndarray, sp.spmatrix, sp.sparray, Factored]  # noqa: UP007 (runtime alias)


def is_lowrank_point(X: Any) -> bool:
    """True for a ``(u, s, vt)`` triple (tuple, list or pymanopt point)."""
    return isinstance(X, (tuple, list)) and len(X) == 3 and not isinstance(X, Factored)


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
    if isinstance(X, Factored):
        return X.to_dense()
    if sp.issparse(X):
        return X.toarray()
    return np.asarray(X, dtype=float)


def ambient_matmul(Z: Any, B: np.ndarray) -> np.ndarray:
    """``Z @ B`` for dense, sparse, factored ``Z`` or a ``(u, s, vt)`` point."""
    if isinstance(Z, Factored):
        return Z.left @ (Z.right.T @ B)
    if is_lowrank_point(Z):
        u, s, vt = Z
        return u @ (s[:, None] * (vt @ B))
    if sp.issparse(Z):
        return np.asarray(Z @ B)
    return np.asarray(Z) @ B


def ambient_rmatmul(Z: Any, A: np.ndarray) -> np.ndarray:
    """``Z.T @ A`` for dense, sparse, factored ``Z`` or a ``(u, s, vt)`` point."""
    if isinstance(Z, Factored):
        return Z.right @ (Z.left.T @ A)
    if is_lowrank_point(Z):
        u, s, vt = Z
        return vt.T @ (s[:, None] * (u.T @ A))
    if sp.issparse(Z):
        return np.asarray(Z.T @ A)
    return np.asarray(Z).T @ A


#: Index pairs gathered at a time by :func:`entries`: the two ``CHUNK x r`` blocks stay in
#: cache, which makes the chunked gather several times faster than one big gather
#: (and bounds its temporaries) once there are more than a few thousand pairs.
CHUNK = 2048


def entries(Z: Any, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """``Z[rows, cols]`` for dense, factored or ``(u, s, vt)`` ``Z``, in ``O(len(rows) r)`` when factored.

    Factored forms are gathered in chunks of :data:`CHUNK` pairs, so the
    temporaries stay ``O(CHUNK r)`` however many pairs are asked for.
    """
    if is_lowrank_point(Z):
        u, s, vt = Z
        # Scale the m x r factor once, then gather: (u * s)[rows] costs m r + |rows| r,
        # u[rows] * s costs 2 |rows| r and a second |rows| x r temporary.
        return _gather_rows(np.asarray(u) * s, np.asarray(vt).T, rows, cols)
    if isinstance(Z, Factored):
        return _gather_rows(Z.left, Z.right, rows, cols)
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
    return Factored(np.hstack((u @ M + Up, u)), np.hstack((vt.T, Vp)))
