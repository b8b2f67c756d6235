r"""Kernels of the Riemannian Levenberg–Marquardt method (:mod:`dlngeo.dynamics.gauss_newton`).

* :func:`truncated_cg`: Steihaug–Toint CG on a Gauss–Newton model
  :math:`\langle g, c\rangle + \tfrac12\|Jc\|^2` in a ball, preconditioned, on
  flat coordinate vectors (one numpy operation per vector update).
* :func:`top_singular`: the top-``r`` singular triplets of a matrix given by
  its products, by block subspace iteration (Halko, Martinsson & Tropp 2011,
  Alg. 4.4).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.linalg import blas, lapack

from ..geometry.lowrank_ops import thin_qr as qr

__all__ = ["truncated_cg", "top_singular"]


def truncated_cg(
    normal: Callable[[np.ndarray], tuple[float, np.ndarray]],
    gradient: np.ndarray,
    radius: float,
    rtol: float,
    max_iterations: int,
    precondition: Callable[[np.ndarray], np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray, bool, int]:
    """Steihaug–Toint CG for ``min <g, c> + |J c|^2 / 2`` over ``|c|_M <= radius``.

    ``normal(p)`` is ``(|J p|^2, J^T J p)`` (the product may be a work array that
    the next call overwrites); ``precondition(x)`` is ``M^{-1} x`` for a
    symmetric positive definite ``M`` (default the identity), which also
    defines the trust region's norm ``|c|_M = sqrt(c^T M c)`` (Conn, Gould &
    Toint 2000, Alg. 7.5.1, preconditioned); ``c``, ``g``: flat float64 vectors.
    Stops when the model gradient ``H c + g`` (``H = J^T J``) is at most
    ``rtol |g|`` (Euclidean norms), on the boundary (the step is then the point
    where the last CG direction crosses it), or after ``max_iterations``.
    Returns ``(c, H c, on_boundary, iterations)``; the model decrease is
    ``-(<g, c> + <c, H c> / 2)``.

    ``|c|_M^2``, ``<c, p>_M`` and ``|p|_M^2`` follow CG's recurrences (as Manopt's
    ``tCG``: ``<c_k, r_k> = 0`` and ``<p_k, r_{k+1}> = 0`` in exact arithmetic),
    and ``H c`` is the model residual minus ``g``, so an iteration costs one
    ``J^T J`` product, one preconditioning and four in-place vector updates
    (BLAS ``daxpy``).
    """
    c = np.zeros_like(gradient)
    res = gradient.copy()  # H c + g
    z = res if precondition is None else precondition(res)
    p = -z
    rr = float(res @ res)
    rz = rr if precondition is None else float(res @ z)
    target2 = rtol * rtol * rr
    cc = cp = 0.0
    pp = rz
    r2 = radius * radius
    for k in range(1, max_iterations + 1):
        curvature, Hp = normal(p)
        alpha = rz / curvature if curvature > 0 else np.inf
        if not curvature > 0 or cc + alpha * (2 * cp + alpha * pp) >= r2:
            tau = (np.sqrt(cp * cp + pp * (r2 - cc)) - cp) / pp  # |c + tau p|_M = radius
            _axpy(p, c, tau)
            _axpy(Hp, res, tau)
            return c, res - gradient, True, k
        _axpy(p, c, alpha)
        _axpy(Hp, res, alpha)
        rr = float(res @ res)
        if rr <= target2:
            return c, res - gradient, False, k
        if precondition is None:
            z, rz_new = res, rr
        else:
            z = precondition(res)
            rz_new = float(res @ z)
        beta = rz_new / rz
        p *= beta
        p -= z
        cc += alpha * (2 * cp + alpha * pp)
        cp = beta * (cp + alpha * pp)
        pp = rz_new + beta * beta * pp
        rz = rz_new
    return c, res - gradient, False, max_iterations


def _axpy(x: np.ndarray, y: np.ndarray, a: float) -> None:
    """``y += a x`` in place (one BLAS call, no temporary)."""
    if blas.daxpy(x, y, a=a) is not y:  # only for a y that is not a contiguous float64 vector
        raise TypeError("_axpy needs a contiguous float64 y")


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
