r"""Low-rank primitives with leading batch axes: tangent projection, ambient form, retraction.

A point of the rank-``r`` manifold :math:`M_r \subset \mathbb R^{m\times n}` is
``(U, s, Vt)`` with :math:`X = U \operatorname{diag}(s) V^\top`; a tangent vector
at it is ``(Up, M, Vp)`` with :math:`U^\top U_p = 0`, :math:`V^\top V_p = 0` and
ambient form :math:`\xi = U M V^\top + U_p V^\top + U V_p^\top` (pymanopt's
layout, Vandereycken 2013). Every function here takes stacks: ``U`` of shape
``(..., m, r)``, ``s`` ``(..., r)``, ``Vt`` ``(..., r, n)``, ``Up`` ``(..., m, r)``,
``M`` ``(..., r, r)``, ``Vp`` ``(..., n, r)``; the leading axes (chains of a
sampler, say) broadcast as in :func:`numpy.matmul`. With no leading axes they
are the single-point operations of :class:`~dlngeo.geometry.FixedRank`
(``projection``, ``embedding``, ``retraction``), to rounding.

* :func:`tangent_project`: :math:`P_T Z = (P_{U^\perp} Z V,\ U^\top Z V,\ P_{V^\perp} Z^\top U)`.
* :func:`tangent_to_ambient`: :math:`\xi = L R^\top` with
  ``L = [U M + Up, U]``, ``R = [V, Vp]`` (``m x 2r`` and ``n x 2r``).
* :func:`retract`: the metric projection of :math:`X + \xi` onto :math:`M_r`
  (a second-order retraction, Absil & Malick 2012) from a ``2r x 2r`` SVD;
  a single float64 point calls LAPACK directly (:func:`thin_qr`, ``dgesdd``:
  the routines numpy calls, without its per-call checks, which dominate at
  small sizes).
* :func:`truncate`: the best rank-``r`` approximation of :math:`L R^\top`
  (QR of both factors and a small SVD; Eckart–Young).
"""

from __future__ import annotations

import numpy as np
from scipy.linalg import lapack

from ..lowrank import tangent_to_factored

__all__ = [
    "tangent_project",
    "tangent_from_products",
    "tangent_to_ambient",
    "retract",
    "thin_qr",
    "truncate",
    "svd_of_product",
]


def _t(A: np.ndarray) -> np.ndarray:
    return np.swapaxes(A, -1, -2)


def tangent_from_products(
    U: np.ndarray, V: np.ndarray, ZV: np.ndarray, ZtU: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``P_T Z`` as ``(Up, M, Vp)`` from the products ``ZV = Z V`` and ``ZtU = Z^T U``.

    For an ambient ``Z`` that is applied to vectors rather than formed (sparse,
    factored: :func:`dlngeo.lowrank.ambient_matmul`); ``V = Vt^T``.
    """
    M = _t(U) @ ZV
    return ZV - U @ M, M, ZtU - V @ _t(M)


def tangent_project(
    U: np.ndarray, Vt: np.ndarray, Z: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r"""Orthogonal projection of dense ambient matrices ``Z`` (``(..., m, n)``) onto the tangent spaces."""
    V = _t(Vt)
    return tangent_from_products(U, V, Z @ V, _t(Z) @ U)


def tangent_to_ambient(
    U: np.ndarray, Vt: np.ndarray, Up: np.ndarray, M: np.ndarray, Vp: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Ambient form of ``(Up, M, Vp)`` as factors ``(L, R)``, ``xi = L @ R^T``, never forming ``m x n``.

    :func:`dlngeo.lowrank.tangent_to_factored` on stacks.
    """
    left, right = tangent_to_factored((U, None, Vt), (Up, M, Vp))
    return left, right


def retract(
    U: np.ndarray,
    s: np.ndarray,
    Vt: np.ndarray,
    Up: np.ndarray,
    M: np.ndarray,
    Vp: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r"""Metric projection of :math:`X + \xi` onto :math:`M_r`: the rank-r truncated SVD, in ``O((m + n) r^2)``.

    With :math:`U_p = Q_u R_u`, :math:`V_p = Q_v R_v` (``U^T Q_u = 0`` since
    ``U^T Up = 0``), :math:`X + \xi = [U, Q_u]\, T\, [V, Q_v]^\top` with
    :math:`T = \begin{pmatrix}\operatorname{diag}(s) + M & R_v^\top\\ R_u & 0\end{pmatrix}`;
    the truncated SVD of ``T`` gives that of :math:`X + \xi`.
    """
    r = U.shape[-1]
    one = (U, Vt, Up, M, Vp)
    if all(isinstance(A, np.ndarray) and A.ndim == 2 and A.dtype == np.float64 for A in one) and (
        isinstance(s, np.ndarray) and s.ndim == 1
    ):
        return _retract_one(U, s, Vt, Up, M, Vp)
    batch = np.broadcast_shapes(U.shape[:-2], s.shape[:-1], M.shape[:-2])
    Qu, Ru = np.linalg.qr(Up)
    Qv, Rv = np.linalg.qr(Vp)
    T = np.zeros((*batch, 2 * r, 2 * r))
    T[..., :r, :r] = M
    T[..., np.arange(r), np.arange(r)] += s
    T[..., :r, r:] = _t(Rv)
    T[..., r:, :r] = Ru
    Ut, St, Vtt = np.linalg.svd(T)
    U_new = np.concatenate((U, Qu), axis=-1) @ Ut[..., :, :r]
    V_new = np.concatenate((_t(Vt), Qv), axis=-1) @ _t(Vtt)[..., :, :r]
    return U_new, St[..., :r], _t(V_new)


def _retract_one(
    u: np.ndarray, s: np.ndarray, vt: np.ndarray, Up: np.ndarray, M: np.ndarray, Vp: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`retract` at one point, through LAPACK directly."""
    r = s.shape[0]
    Qu, Ru = thin_qr(Up)
    Qv, Rv = thin_qr(Vp)
    T = np.zeros((2 * r, 2 * r))
    T[:r, :r] = M
    T[np.arange(r), np.arange(r)] += s
    T[:r, r:] = Rv.T
    T[r:, :r] = Ru
    Ut, St, Vtt, info = lapack.dgesdd(T, full_matrices=0)
    if info != 0:
        raise np.linalg.LinAlgError(f"dgesdd failed (info {info})")
    u_new = u @ Ut[:r, :r] + Qu @ Ut[r:, :r]
    # V_new row-major (n x r) and vt its transposed view, as the batched path returns
    # it: gathers over Omega read one row of V per entry (a row-major vt would cost r
    # cache lines per entry; measured, riemannian_cg at 10^4 x 10^4 took 4.3 s, not 2.5 s).
    v_new = vt.T @ Vtt[:r, :r].T + Qv @ Vtt[:r, r:].T
    return u_new, St[:r], v_new.T


_LOWER: dict[int, tuple[np.ndarray, np.ndarray]] = {}


def thin_qr(A: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Thin QR of a tall float64 ``A`` (``m >= n``) by LAPACK ``dgeqrf`` + ``dorgqr``: ``Q`` (m x n), ``R`` (n x n)."""
    factored, tau, _, info = lapack.dgeqrf(A)
    if info != 0:
        raise np.linalg.LinAlgError(f"dgeqrf failed (info {info})")
    n = A.shape[1]
    R = factored[:n].copy()
    if n not in _LOWER:  # the strictly lower triangle's indices, cached (np.triu rebuilds a mask)
        _LOWER[n] = np.tril_indices(n, -1)
    R[_LOWER[n]] = 0.0
    Q, _, info = lapack.dorgqr(factored, tau)
    if info != 0:
        raise np.linalg.LinAlgError(f"dorgqr failed (info {info})")
    return Q, R


def truncate(
    left: np.ndarray, right: np.ndarray, rank: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Best rank-``rank`` approximation ``(u, s, vt)`` of ``left @ right^T`` (QR of both factors + a small SVD)."""
    u, s, vt = svd_of_product(left, right, rank)
    return u, s[..., :rank], vt


def svd_of_product(
    left: np.ndarray, right: np.ndarray, rank: int | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The thin SVD of ``left @ right^T`` from the QR of both factors and the SVD of ``R_l R_r^T``.

    Returns every singular value, and the first ``rank`` singular vectors
    (all when ``rank`` is ``None``); ``O((m + n) q^2)`` for ``q`` columns.
    """
    Ql, Rl = np.linalg.qr(left)
    Qr, Rr = np.linalg.qr(right)
    a, s, bt = np.linalg.svd(Rl @ _t(Rr))
    keep = slice(None) if rank is None else slice(None, rank)
    return Ql @ a[..., :, keep], s, bt[..., keep, :] @ _t(Qr)
