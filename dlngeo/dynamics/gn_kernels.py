r"""Kernels of the Riemannian Levenberg–Marquardt method (:mod:`dlngeo.dynamics.gauss_newton`).

* :func:`truncated_cg`: Steihaug–Toint CG on a Gauss–Newton model
  :math:`\langle g, c\rangle + \tfrac12\|Jc\|^2` in a ball, on flat coordinate
  vectors (one numpy operation per vector update).
* :func:`top_singular`: the top-``r`` singular triplets of a matrix given by
  its products, by block subspace iteration (Halko, Martinsson & Tropp 2011,
  Alg. 4.4).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.linalg import lapack

from ..geometry.lowrank_ops import thin_qr as qr

__all__ = ["truncated_cg", "top_singular"]


def truncated_cg(
    jacobian: Callable[[np.ndarray], np.ndarray],
    adjoint: Callable[[np.ndarray], np.ndarray],
    gradient: np.ndarray,
    radius: float,
    rtol: float,
    max_iterations: int,
) -> tuple[np.ndarray, np.ndarray, bool, int]:
    """Steihaug–Toint CG for ``min <g, c> + |J c|^2 / 2`` over ``|c| <= radius``.

    ``jacobian(c)`` is ``J c`` (any array whose ``numpy.vdot`` is that of ``J c``);
    ``adjoint(y)`` is ``J^T y`` of such an array (``c``, ``g``: flat vectors).
    Stops when the model gradient ``J^T J c + g`` is at most ``rtol |g|``, on
    the boundary (the step is then the point where the last CG direction
    crosses it), or after ``max_iterations`` (Conn, Gould & Toint 2000,
    Alg. 7.5.1). Returns ``(c, J c, on_boundary, iterations)``.
    """
    c = np.zeros_like(gradient)
    Jc: np.ndarray | None = None
    res = gradient.copy()
    p = -gradient
    rr = float(res @ res)
    target2 = rtol * rtol * rr
    cc = cp = 0.0
    pp = rr
    r2 = radius * radius
    for k in range(1, max_iterations + 1):
        Jp = jacobian(p)
        curvature = float(np.vdot(Jp, Jp))
        alpha = rr / curvature if curvature > 0 else np.inf
        if not curvature > 0 or cc + alpha * (2 * cp + alpha * pp) >= r2:
            tau = (np.sqrt(cp * cp + pp * (r2 - cc)) - cp) / pp  # |c + tau p| = radius
            c += tau * p
            return c, (tau * Jp if Jc is None else Jc + tau * Jp), True, k
        c += alpha * p
        if Jc is None:
            Jc = alpha * Jp
        else:
            Jc += alpha * Jp
        res += alpha * adjoint(Jp)
        rr_new = float(res @ res)
        if rr_new <= target2:
            return c, Jc, False, k
        p *= rr_new / rr
        p -= res
        rr = rr_new
        cc, cp, pp = float(c @ c), float(c @ p), float(p @ p)
    assert Jc is not None  # at least one interior iteration ran
    return c, Jc, False, max_iterations


def _svd(T: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    U, S, Vt, info = lapack.dgesdd(T, full_matrices=0)
    if info != 0:
        raise np.linalg.LinAlgError(f"dgesdd failed (info {info})")
    return U, S, Vt


def top_singular(
    times: Callable[[np.ndarray], np.ndarray],
    times_t: Callable[[np.ndarray], np.ndarray],
    start: np.ndarray,
    rank: int,
    iterations: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Top-``rank`` singular triplets ``(a, sigma, bt)`` of ``Y`` from ``times(W) = Y W``, ``times_t(W) = Y^T W``.

    Block subspace iteration from the ``n x k`` block ``start`` (``k >= rank``):
    ``Q = orth(Y start)``, then ``iterations`` times ``Q = orth(Y orth(Y^T Q))``,
    and the SVD of ``Q^T Y``. The error of the rank-``rank`` part decays like
    ``(sigma_{k+1} / sigma_rank)^(2 iterations + 1)``.
    """
    Q = qr(times(start))[0]
    for _ in range(iterations):
        Q = qr(times(qr(times_t(Q))[0]))[0]
    P, sigma, Rt = _svd(times_t(Q))  # Y^T Q = P diag(sigma) Rt, so Y ~ Q Rt^T diag(sigma) P^T
    return Q @ Rt[:rank].T, sigma[:rank], P[:, :rank].T
