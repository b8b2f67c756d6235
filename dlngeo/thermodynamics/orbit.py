r"""Numerical volume of the balanced fibre: Gram determinant and Monte Carlo.

These routines check :func:`dlngeo.thermodynamics.entropy.entropy` without
using its formula.

*Gram determinant.* The orbit map
:math:`\Psi(Q_1, \dots, Q_{N-1}) = (Q_k \Lambda Q_{k-1}^\top)_{k=1}^{N}`
(``Q_0 = V``, ``Q_N = U``) is injective on the product of Stiefel manifolds
and equivariant, so :math:`\operatorname{vol}(O_X) = \prod_k
\operatorname{vol}_F(\mathrm{St}(d_k, r)) \cdot \sqrt{\det J^\top J}` where
``J`` is the differential of ``Psi`` on an orthonormal basis of the tangent
space (``Q Omega`` with the Frobenius-unit skew matrices ``(E_ab - E_ba)/sqrt 2``,
and ``Q_perp E_ia``) at any point, e.g. Haar-random frames. ``W`` is linear in
each ``Q_k``, so ``J`` is exact (no finite differences).

*Monte Carlo (Crofton).* When the fibre is a curve (``N = 2`` with
``dim St(d_1, r) = 1``: ``r = 2 = d_1``, or ``r = 1``, ``d_1 = 2``), each of its
components is an ellipse ``theta -> c + a cos(theta) + b sin(theta)`` in weight
space. The Cauchy–Crofton formula gives its total length as
:math:`L = \mathbb E_u[\int \#(\gamma \cap \{\langle u, x\rangle = p\})\,dp]\,/\,\mathbb E|u_1|`
with ``u`` uniform on the unit sphere of weight space; the ``p``-integral of
the crossing count of an ellipse is ``4 * sqrt(<u,a>^2 + <u,b>^2)``. The
estimate averages over random directions and reports its standard error.
"""

from __future__ import annotations

from collections.abc import Sequence
from math import lgamma, pi, sqrt
from typing import Any

import numpy as np
from scipy.linalg import null_space

from ..lowrank import is_lowrank_point
from ..network import haar_stiefel
from .entropy import log_stiefel_volume

__all__ = [
    "orbit_frames",
    "orbit_weights",
    "orbit_jacobian",
    "log_orbit_volume_gram",
    "orbit_length_crofton",
]


def _thin(X: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if is_lowrank_point(X):
        u, s, vt = (np.asarray(a, dtype=float) for a in X)
        return u, s, vt
    Xd = np.asarray(X, dtype=float)
    if Xd.ndim != 2 or not np.all(np.isfinite(Xd)):
        raise ValueError("X must be a finite 2-D array or a (u, s, vt) point")
    u, s, vt = np.linalg.svd(Xd, full_matrices=False)
    return u, s, vt


def _dims(X: Any, depth: int, widths: Sequence[int] | None) -> tuple[list[int], int]:
    u, s, vt = _thin(X)
    r = len(s)
    hidden = (
        [min(u.shape[0], vt.shape[1])] * (depth - 1) if widths is None else [int(w) for w in widths]
    )
    if len(hidden) != depth - 1 or any(w < r for w in hidden):
        raise ValueError(
            f"widths must be N - 1 = {depth - 1} hidden widths >= rank {r}, got {widths!r}"
        )
    return [vt.shape[1], *hidden, u.shape[0]], r


def orbit_frames(
    X: Any, depth: int, widths: Sequence[int] | None, rng: np.random.Generator
) -> list[np.ndarray]:
    """``[Q_0 = V, Q_1, .., Q_{N-1}, Q_N = U]`` with Haar-random hidden frames (``d_k x r``)."""
    u, s, vt = _thin(X)
    dims, r = _dims(X, depth, widths)
    frames = [vt.T]
    for d in dims[1:-1]:
        frames.append(haar_stiefel(rng, d, r))
    frames.append(u)
    return frames


def orbit_weights(s: np.ndarray, frames: list[np.ndarray], depth: int) -> list[np.ndarray]:
    """The fibre point ``W_k = Q_k diag(s)^{1/N} Q_{k-1}^T``."""
    lam = np.asarray(s, dtype=float) ** (1.0 / depth)
    return [(frames[k + 1] * lam) @ frames[k].T for k in range(depth)]


def orbit_jacobian(s: np.ndarray, frames: list[np.ndarray], depth: int) -> np.ndarray:
    """``J``: columns are ``d Psi`` (flattened ``W_1 .. W_N``) on an orthonormal tangent basis."""
    lam = np.asarray(s, dtype=float) ** (1.0 / depth)
    r = lam.size
    columns = []
    for k in range(1, depth):
        Q = frames[k]
        d = Q.shape[0]
        Qp = null_space(Q.T)  # d x (d - r), orthonormal complement of the frame
        directions = []
        for a in range(r):
            for b in range(a + 1, r):
                Om = np.zeros((r, r))
                Om[a, b], Om[b, a] = -1.0 / sqrt(2.0), 1.0 / sqrt(2.0)
                directions.append(Q @ Om)
        for i in range(d - r):
            for a in range(r):
                B = np.zeros((d - r, r))
                B[i, a] = 1.0
                directions.append(Qp @ B)
        for dQ in directions:
            # W_k = Q_k L Q_{k-1}^T depends on Q_k; W_{k+1} = Q_{k+1} L Q_k^T as well.
            blocks = []
            for j in range(depth):
                if j + 1 == k:  # W_j+1 with Q_{j+1} = Q_k moving (0-based W index j = k - 1)
                    blocks.append(((dQ * lam) @ frames[k - 1].T).ravel())
                elif j == k:  # W_{k+1} = Q_{k+1} L Q_k^T
                    blocks.append(((frames[k + 1] * lam) @ dQ.T).ravel())
                else:
                    blocks.append(np.zeros(frames[j + 1].shape[0] * frames[j].shape[0]))
            columns.append(np.concatenate(blocks))
    if not columns:
        return np.zeros((sum(frames[j + 1].shape[0] * frames[j].shape[0] for j in range(depth)), 0))
    return np.stack(columns, axis=1)


def log_orbit_volume_gram(
    X: Any,
    depth: int,
    *,
    widths: Sequence[int] | None = None,
    rng: np.random.Generator | int | None = None,
) -> float:
    r"""``log vol(O_X)`` from the Gram determinant of the orbit map at Haar-random frames.

    :math:`\sum_k \log\operatorname{vol}_F(\mathrm{St}(d_k, r)) + \tfrac12 \log\det(J^\top J)`.
    """
    rng = np.random.default_rng(rng)
    dims, r = _dims(X, depth, widths)
    _, s, _ = _thin(X)
    frames = orbit_frames(X, depth, widths, rng)
    J = orbit_jacobian(s, frames, depth)
    const = sum(log_stiefel_volume(d, r) for d in dims[1:-1])
    if J.shape[1] == 0:
        return float(const)
    sign, logdet = np.linalg.slogdet(J.T @ J)
    if sign <= 0:
        return float("-inf")
    return float(const + 0.5 * logdet)


def orbit_length_crofton(
    X: Any,
    depth: int,
    *,
    widths: Sequence[int] | None = None,
    n_directions: int = 20000,
    rng: np.random.Generator | int | None = None,
) -> tuple[float, float]:
    """Monte-Carlo (Cauchy–Crofton) estimate of the length of a one-dimensional fibre.

    Returns:
        ``(estimate, standard_error)`` of ``vol(O_X)`` (a length).

    Raises:
        ValueError: the fibre is not a curve (needs ``N = 2`` and
            ``(r, d_1) in {(2, 2), (1, 2)}``).
    """
    rng = np.random.default_rng(rng)
    dims, r = _dims(X, depth, widths)
    if depth != 2 or (r, dims[1]) not in {(2, 2), (1, 2)}:
        raise ValueError(
            "orbit_length_crofton needs a one-dimensional fibre: depth 2 and (rank, d_1) in {(2, 2), (1, 2)}"
        )
    u, s, vt = _thin(X)
    lam = s**0.5
    V, U = vt.T, u
    # Components: Q(theta) = R(theta) E with E in {I, diag(1, -1)} (r = 2), or q(theta) = (cos, sin) (r = 1).
    if r == 2:
        bases = [np.eye(2), np.diag([1.0, -1.0])]
    else:
        bases = [np.ones((1, 1))]
    ellipses = []
    for E in bases:
        # Q(theta) = C cos + S sin with C, S constant d_1 x r matrices.
        if r == 2:
            C, Sm = E, np.array([[0.0, -1.0], [1.0, 0.0]]) @ E
        else:
            C, Sm = np.array([[1.0], [0.0]]), np.array([[0.0], [1.0]])

        def weights(Q: np.ndarray) -> np.ndarray:
            return np.concatenate((((Q * lam) @ V.T).ravel(), ((U * lam) @ Q.T).ravel()))

        ellipses.append((weights(C), weights(Sm)))  # W is linear in Q: W(theta) = a cos + b sin
    D = ellipses[0][0].size
    mean_abs = np.exp(lgamma(D / 2.0) - lgamma((D + 1) / 2.0)) / sqrt(pi)  # E|u_1| on S^{D-1}
    g = rng.standard_normal((n_directions, D))
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    counts = np.zeros(n_directions)
    for a, b in ellipses:
        counts += 4.0 * np.hypot(g @ a, g @ b)
    samples = counts / mean_abs
    return float(samples.mean()), float(samples.std(ddof=1) / sqrt(n_directions))
