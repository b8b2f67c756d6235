r"""The g_N kernel: the operator :math:`A_{N,X}` and its powers in SVD coordinates.

This module is the one numerical heart of dlngeo. The end-to-end flow, the
manifold :class:`~dlngeo.DLNFixedRank`, the Riemannian Langevin sampler and
the entropy all call it.

For the depth-``N`` network with end-to-end matrix :math:`X` (Arora, Cohen &
Hazan 2018, Theorem 1; Bah, Rauhut, Terstiege & Westdickenberg 2021),

.. math::

    A_{N,X}(Z) = \sum_{k=1}^{N} (XX^\top)^{(N-k)/N}\, Z\, (X^\top X)^{(k-1)/N}.

With the full SVD :math:`X = U \operatorname{diag}(s) V^\top` (``s`` padded with
zeros) and :math:`p_i = s_i^{2/N}`, the operator is diagonal in the basis
:math:`u_i v_j^\top`:

.. math::

    U^\top A_{N,X}(Z) V = K \circ (U^\top Z V), \qquad
    K_{ij} = \sum_{k=1}^{N} p_i^{N-k} p_j^{k-1} \quad (0^0 = 1).

``K`` is evaluated in the stable form
:math:`K_{ij} = p_{\max}^{N-1}\,\operatorname{expm1}(-N\delta)/\operatorname{expm1}(-\delta)`,
:math:`\delta = \log p_{\max} - \log p_{\min}`, which is exact to rounding
for coinciding singular values (``K_ii = N s_i^{2(N-1)/N}``), for a zero one
(``K = p_{\max}^{N-1}``), and for two zeros (``K = 0`` when ``N >= 2``; the
normal space of the rank-r manifold is the kernel of ``A``).

Every function takes a real ``power``: ``1`` gives :math:`A`, ``-1`` its
inverse on the tangent space of the rank-r manifold (the pseudo-inverse: zero on
the normal space), ``1/2`` the square root used for Langevin noise. The
metric is :math:`g_N(\xi, \eta) = \langle \xi, A^{-1}(\eta) \rangle`.

Costs: dense ``O(mn min(m, n))`` (one SVD); at rank ``r`` ``O((m + n) r^2)``
plus one application of the ambient matrix ``Z`` to ``r`` vectors.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

from ..lowrank import Factored, ambient_matmul, ambient_rmatmul
from ..validation import check_depth as _check_depth
from ..validation import integer_between
from .lowrank_ops import tangent_from_products

__all__ = [
    "kernel_matrix",
    "column_weights",
    "metric_operator",
    "metric_operator_svd",
    "metric_operator_tangent",
    "riemannian_gradient_tangent",
    "tangent_inner_product",
]


def kernel_matrix(s_rows: np.ndarray, s_cols: np.ndarray, depth: int) -> np.ndarray:
    r"""The eigenvalues :math:`K_{ij}` of :math:`A_{N,X}` in the basis :math:`u_i v_j^\top`.

    Args:
        s_rows: Singular values attached to the left singular vectors ``u_i``
            (non-negative; zeros for padding).
        s_cols: Singular values attached to the right singular vectors ``v_j``.
            Leading axes of ``s_rows`` and ``s_cols`` are batch axes and
            broadcast: ``K[..., i, j] = K(s_rows[..., i], s_cols[..., j])``.
        depth: ``N >= 1``.

    Returns:
        The ``len(s_rows) x len(s_cols)`` array
        :math:`K_{ij} = \sum_{k=1}^N p_i^{N-k} p_j^{k-1}`, ``p = s^{2/N}``, ``0^0 = 1``.
    """
    n = _check_depth(depth)
    a = np.asarray(s_rows, dtype=float)[..., :, None]
    b = np.asarray(s_cols, dtype=float)[..., None, :]
    if n == 1:
        return np.ones(np.broadcast_shapes(a.shape, b.shape))
    hi = np.maximum(a, b)
    lo = np.minimum(a, b)
    with np.errstate(divide="ignore", invalid="ignore"):
        # delta = log p_hi - log p_lo >= 0 (inf when lo == 0).
        delta = (2.0 / n) * (np.log(hi) - np.log(lo))
        ratio = np.expm1(-n * delta) / np.expm1(-delta)  # sum_{k<N} q^k, q = p_lo/p_hi
    ratio = np.where(delta == 0.0, float(n), ratio)
    ratio = np.where(np.isinf(delta), 1.0, ratio)
    scale = hi ** (2.0 * (n - 1) / n)
    return np.where(hi > 0.0, scale * ratio, 0.0)


def column_weights(s: np.ndarray, depth: int) -> np.ndarray:
    r"""The mixed-block eigenvalues :math:`c_a = s_a^{2(N-1)/N}` (``K_{a j}`` for ``s_j = 0``)."""
    n = _check_depth(depth)
    return np.asarray(s, dtype=float) ** (2.0 * (n - 1) / n)


def _pow(values: np.ndarray, power: float) -> np.ndarray:
    """``values ** power``, with zero kept at zero for negative powers (pseudo-inverse)."""
    if power == 1:
        return values
    with np.errstate(divide="ignore"):
        out = np.power(values, power)
    if power < 0:
        out = np.where(values > 0, out, 0.0)
    return out


def metric_operator_svd(
    u: np.ndarray,
    s: np.ndarray,
    vt: np.ndarray,
    Z: Any,
    depth: int,
    power: float = 1.0,
) -> np.ndarray:
    r"""Apply :math:`A_{N,X}^{\,power}` to an ambient ``Z`` at ``X = u diag(s) vt``.

    ``u`` (m x k) and ``vt`` (k x n) have orthonormal columns / rows; every
    singular value of ``X`` not in ``s`` is zero. ``Z`` is a dense array, a
    scipy.sparse matrix, or a :class:`~dlngeo.lowrank.Factored` matrix.
    Returns a dense ``m x n`` array:

    .. math::

        U(K^{p} \circ U^\top Z V)V^\top + P_{U^\perp} Z V c^{p} V^\top
        + U c^{p} U^\top Z P_{V^\perp} + [N = 1]\, P_{U^\perp} Z P_{V^\perp}.
    """
    n = _check_depth(depth)
    v = vt.T
    ZV = ambient_matmul(Z, v)  # m x k
    ZtU = ambient_rmatmul(Z, u)  # n x k
    UtZV = u.T @ ZV
    K = _pow(kernel_matrix(s, s, n), power)
    c = _pow(column_weights(s, n), power)
    left = ZV - u @ UtZV  # P_{U perp} Z V
    right = ZtU - v @ UtZV.T  # P_{V perp} Z^T U
    out = u @ (K * UtZV) @ vt + (left * c) @ vt + u @ (right * c).T
    if n == 1:
        # Identity on the normal block as well.
        dense = (
            Z.toarray()
            if sp.issparse(Z)
            else (Z.to_dense() if isinstance(Z, Factored) else np.asarray(Z))
        )
        out = out + dense - u @ (u.T @ dense) - (dense @ v) @ vt + u @ (u.T @ dense @ v) @ vt
    return out


def metric_operator(
    X: np.ndarray, Z: Any, depth: int, power: float = 1.0, rank: int | None = None
) -> np.ndarray:
    r"""Dense :math:`A_{N,X}^{\,power}(Z)`, the sum of fractional matrix powers in SVD form.

    Args:
        X: The end-to-end matrix (m x n, finite).
        Z: Ambient direction (dense, sparse or :class:`~dlngeo.lowrank.Factored`).
        depth: ``N >= 1``.
        power: ``1`` for :math:`A`, ``-1`` for its pseudo-inverse, ``0.5`` for the square root.
        rank: If given, ``X`` is taken as a point of the rank-``r`` manifold:
            only its top ``r`` singular triplets are used, the rest are zeros.
            Use this for flows on a bottlenecked network, whose ``X(t)`` is rank
            ``r`` only up to the integrator's error ``e``: without it that error
            enters ``K`` as ``e**(2/N)`` (a relative error ``5e-4`` in the mixed
            blocks at ``e = 1e-10``, ``N = 6``) and makes the flow stiff.

    Returns:
        A dense ``m x n`` array. No NaN at repeated or zero singular values.

    Singular values of ``X`` below ``max(m, n) * eps * s_max`` (the numerical-rank
    tolerance of :func:`numpy.linalg.matrix_rank`) are taken as exact zeros: an
    SVD determines them only to rounding, and ``K`` depends on them through
    ``s**(2/N)``, which would turn rounding noise of ``1e-16`` into a relative
    error of ``1e-16**(1/N)`` in the mixed blocks of a rank-deficient ``X``.
    Pass the factors to :func:`metric_operator_svd` to use them as given.
    """
    X = np.asarray(X, dtype=float)
    if X.ndim != 2 or not np.all(np.isfinite(X)):
        raise ValueError("X must be a finite 2-D array")
    shape = Z.shape if not isinstance(Z, Factored) else (Z.left.shape[0], Z.right.shape[0])
    if tuple(shape) != X.shape:
        raise ValueError(f"Z has shape {tuple(shape)}, expected {X.shape}")
    if rank is not None:
        rank = integer_between(rank, "rank", 0, min(X.shape))
    u, s, vt = np.linalg.svd(X, full_matrices=False)
    if rank is not None:
        u, s, vt = u[:, :rank], s[:rank], vt[:rank]
    if s.size:
        s = np.where(s > max(X.shape) * np.finfo(float).eps * s[0], s, 0.0)
    return metric_operator_svd(u, s, vt, Z, depth, power)


def metric_operator_tangent(
    s: np.ndarray, Up: np.ndarray, M: np.ndarray, Vp: np.ndarray, depth: int, power: float = 1.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r""":math:`A^{\,power}` on a tangent vector ``(Up, M, Vp)`` of the rank-r manifold at ``(u, s, vt)``.

    In these coordinates :math:`A` is diagonal (docs/math.md §3):
    :math:`(U_p c^{p},\ K_r^{p} \circ M,\ V_p c^{p})`, ``c = s^{2(N-1)/N}``.
    Requires ``s > 0`` for negative powers.
    """
    K = kernel_matrix(s, s, depth) ** power
    c = column_weights(s, depth) ** power
    return Up * c, K * M, Vp * c


def riemannian_gradient_tangent(
    u: np.ndarray, s: np.ndarray, vt: np.ndarray, G: Any, depth: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r"""``grad_{g_N} E = A_{N,X}(P_T E'(X))`` in tangent coordinates ``(Up, M, Vp)``.

    ``G`` is the ambient Euclidean gradient (dense, sparse or factored). Cost:
    one product of ``G`` with ``r`` vectors on each side plus ``O((m+n) r^2)``.
    """
    v = vt.T
    Up, M, Vp = tangent_from_products(u, v, ambient_matmul(G, v), ambient_rmatmul(G, u))
    return metric_operator_tangent(s, Up, M, Vp, depth, 1.0)


def tangent_inner_product(
    s: np.ndarray,
    a: tuple[np.ndarray, np.ndarray, np.ndarray],
    b: tuple[np.ndarray, np.ndarray, np.ndarray],
    depth: int,
) -> float:
    r""":math:`g_N(a, b) = \langle a, A^{-1} b \rangle` for tangent vectors in ``(Up, M, Vp)`` form."""
    Up, M, Vp = metric_operator_tangent(s, *b, depth, power=-1.0)
    return float(np.sum(a[0] * Up) + np.sum(a[1] * M) + np.sum(a[2] * Vp))
