"""Low-rank starts and factored sums for the methods on the rank-r manifold.

* :func:`lowrank_start`: the rank-``r`` truncated SVD of a task's end-to-end
  start, from its factors (never forming ``m x n``) or from a width-free
  task's start.
* :func:`truncate`: the best rank-``r`` approximation of ``left @ right.T``
  (:func:`dlngeo.geometry.lowrank_ops.truncate`, re-exported).
* :class:`StageSums`: the sums ``X + h sum_j w_j K_j`` of a Runge–Kutta step
  with factored stages, whose column sets are nested: the two orthonormal
  bases are extended stage by stage (block Gram–Schmidt, applied twice), so
  the truncation of each stage costs ``O((m + n) q c)`` for ``c`` new
  columns instead of a QR of all ``q`` columns, ``O((m + n) q^2)``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.linalg

from ..geometry.lowrank_ops import svd_of_product, truncate
from ..lowrank import Factored, is_lowrank_point
from .base import Task

__all__ = ["lowrank_start", "top_singular_by_gram", "truncate", "StageSums"]


def lowrank_start(
    task: Task, rank: int | None = None, *, gram: bool = False
) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray], float]:
    """The rank-``r`` truncated SVD of ``phi(W(0))`` computed from the factors, and the relative truncation error.

    A width-free task (no factors) gives its end-to-end start, truncated.

    The product is split at the narrowest hidden width ``d_j``:
    ``X = (W_N .. W_{j+1}) (W_j .. W_1)``, so only ``m x d_j`` and ``d_j x n``
    matrices are formed; when ``d_j >= min(m, n)`` the ``m x n`` product is
    no larger than those and its SVD is taken directly (no QR of the factors);
    with ``gram`` (and ``r < min(m, n)``), by :func:`top_singular_by_gram` instead.
    """
    net = task.network
    rank = task.rank if rank is None else rank
    if task.weights0 is None:  # width-free task: the start itself
        start = task.start
        if is_lowrank_point(start):
            u, s, vt = start  # s non-increasing (Task checked it)
        else:
            u, s, vt = np.linalg.svd(start, full_matrices=False)
        total = float(np.linalg.norm(s))
        dropped = float(np.linalg.norm(s[rank:]))
        point = (u[:, :rank].copy(), s[:rank].copy(), vt[:rank].copy())
        return point, (dropped / total if total > 0 else 0.0)
    W = task.weights0
    # Split at the narrowest width d_j (0 < j < N when there are hidden layers).
    j = int(np.argmin(net.dims[1:-1])) + 1 if net.depth > 1 else 1
    L: np.ndarray | None = W[-1]  # W_N .. W_{j+1}: m x d_j
    for w in W[j:-1][::-1]:
        L = L @ w
    if j == net.depth:  # depth 1: X = W_1, no split
        L, R = None, W[0]
    else:
        R = W[0]  # W_j .. W_1: d_j x n
        for w in W[1:j]:
            R = w @ R
    if L is not None and L.shape[1] >= min(L.shape[0], R.shape[1]):
        # The split width is no narrower than X: QR of the factors saves nothing, form X.
        L, R = None, L @ R
    if L is None and gram and rank is not None and rank < min(R.shape):
        (a, s, bt), dropped = top_singular_by_gram(R, rank)
        total = float(np.linalg.norm(R))
        return (a, s, bt), (dropped / total if total > 0 else 0.0)
    if L is None:
        a, s, bt = np.linalg.svd(R, full_matrices=False)
        total = float(np.linalg.norm(s))
        dropped = float(np.linalg.norm(s[rank:]))
        return (a[:, :rank], s[:rank].copy(), bt[:rank]), (dropped / total if total > 0 else 0.0)
    u, s, vt = svd_of_product(L, R.T, rank)
    total = float(np.linalg.norm(s))
    dropped = float(np.linalg.norm(s[rank:]))
    return (u, s[:rank].copy(), vt), (dropped / total if total > 0 else 0.0)


def top_singular_by_gram(
    X: np.ndarray, rank: int
) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray], float]:
    """The rank-``rank`` truncated SVD of a dense ``X`` from the top eigenvectors of its smaller Gram matrix.

    ``Q``: the top ``rank`` eigenvectors of ``X Xᵀ`` (LAPACK ``dsyevr``, only
    those computed), then the SVD of the small ``Qᵀ X`` (Rayleigh–Ritz), so the
    result is an exact SVD of ``Q Qᵀ X``. Its error is that of the subspace:
    the angle is about ``eps σ₁² / (σ_r² − σ_{r+1}²)`` (Davis–Kahan with the
    eigensolver's backward error ``eps ‖X Xᵀ‖``), against ``eps σ₁ / (σ_r − σ_{r+1})``
    for a full SVD: a factor ``σ₁ / (σ_r + σ_{r+1})`` apart, at a third of the
    cost for ``r << min(m, n)``. Also returns ``‖X − Q Qᵀ X‖_F``, the dropped part.
    """
    if X.shape[0] > X.shape[1]:
        (b, s, at), dropped = top_singular_by_gram(X.T, rank)
        return (at.T, s, b.T), dropped
    m = X.shape[0]
    scale = float(np.max(np.abs(X))) if X.size else 0.0
    if not scale > 0:
        return (np.eye(m, rank), np.zeros(rank), np.eye(rank, X.shape[1])), 0.0
    Xs = X / scale  # no overflow or underflow in X Xᵀ
    _, Q = scipy.linalg.eigh(
        Xs @ Xs.T, subset_by_index=[m - rank, m - 1], driver="evr", check_finite=False
    )
    QtX = Q.T @ Xs
    a, s, bt = np.linalg.svd(QtX, full_matrices=False)
    dropped = float(np.linalg.norm(Xs - Q @ QtX)) * scale
    return (Q @ a, s * scale, bt), dropped


def _fro(left: np.ndarray, right: np.ndarray) -> float:
    """``||left @ right.T||_F`` from the two Gram matrices."""
    return float(np.sqrt(max(np.sum((left.T @ left) * (right.T @ right)), 0.0)))


def _extend(Q: np.ndarray, R: np.ndarray, C: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(Q', R')`` with ``Q' R' = [Q R, C]``, ``Q'`` orthonormal: classical Gram–Schmidt twice, then QR.

    Columns of ``C`` in ``span(Q)`` to rounding (tangent stages share ``u`` and
    ``v`` with the point) add no basis vector: a pivoted QR keeps the
    numerically independent remainder only.

    Once the columns would outnumber the rows (small matrices), a full QR of
    ``[Q R, C]`` instead (its ``Q`` is square).
    """
    if Q.shape[1] + C.shape[1] > Q.shape[0]:
        return np.linalg.qr(np.hstack((Q @ R, C)))
    P = Q.T @ C
    D = C - Q @ P
    P2 = Q.T @ D  # the second pass restores orthogonality to working precision
    D -= Q @ P2
    # Columns of C already in span(Q) leave rounding noise in D: keep only the
    # numerically independent part (pivoted QR), or Q would lose orthonormality.
    Qc, Rc, pivots = scipy.linalg.qr(D, mode="economic", pivoting=True)
    tol = max(D.shape) * np.finfo(float).eps * max(float(np.max(np.abs(C), initial=0.0)), 1e-300)
    tol *= np.sqrt(C.shape[0])
    keep = int(np.sum(np.abs(np.diag(Rc)) > tol))
    Rk = np.zeros((keep, C.shape[1]))
    Rk[:, pivots] = Rc[:keep]
    top = np.hstack((R, P + P2))
    bottom = np.hstack((np.zeros((keep, R.shape[1])), Rk))
    return np.hstack((Q, Qc[:, :keep])), np.vstack((top, bottom))


class StageSums:
    """Factored ``X + h sum_j w_j K_j`` over stages ``K_1, K_2, ...`` added one at a time.

    ``X = (u, s, vt)``; each ``K_j`` is a :class:`~dlngeo.lowrank.Factored`
    matrix. The left factors ``[u s, K_1.left, ...]`` and the right factors
    ``[v, K_1.right, ...]`` are kept as ``Q R`` with orthonormal ``Q``;
    weights only scale columns of the small ``R``.
    """

    def __init__(self, X: Any):
        u, s, vt = X
        self.QL, self.RL = np.linalg.qr(u * s)
        self.QR, self.RR = np.linalg.qr(vt.T)
        self.widths = [s.shape[0]]

    def add(self, K: Factored) -> None:
        self.QL, self.RL = _extend(self.QL, self.RL, K.left)
        self.QR, self.RR = _extend(self.QR, self.RR, K.right)
        self.widths.append(K.left.shape[1])

    def _cores(self, h: float, weights: Any, with_x: bool) -> tuple[np.ndarray, np.ndarray]:
        weights = list(weights)
        scale = [np.full(self.widths[0], 1.0 if with_x else 0.0)]
        scale += [np.full(w, h * c) for w, c in zip(self.widths[1:], weights)]
        k = sum(self.widths[: len(weights) + 1])
        return self.RL[:, :k] * np.concatenate(scale), self.RR[:, :k]

    def combine(
        self, h: float, weights: Any, rank: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Best rank-``rank`` approximation of ``X + h sum_j weights_j K_j`` (the first ``len(weights)`` stages)."""
        left, right = self._cores(h, weights, True)
        a, s, bt = np.linalg.svd(left @ right.T)
        return self.QL @ a[:, :rank], s[:rank], bt[:rank] @ self.QR.T

    def norm(self, h: float, weights: Any) -> float:
        """``||h sum_j weights_j K_j||_F`` (without ``X``)."""
        left, right = self._cores(h, weights, False)
        return float(np.linalg.norm(left @ right.T))
