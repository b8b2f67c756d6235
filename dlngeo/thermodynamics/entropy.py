r"""Boltzmann entropy of the deep linear network and its free energy.

The balanced fibre (group orbit) over an end-to-end matrix ``X`` of rank ``r``,
``X = U diag(s) V^T`` (thin SVD), in a network of widths
``(d_0, d_1, ..., d_{N-1}, d_N)`` with every hidden width ``d_k >= r`` is

.. math::

    O_X = \{ W_k = Q_k \Lambda Q_{k-1}^\top :\ Q_k \in \mathrm{St}(d_k, r),\ k = 1..N-1 \},
    \qquad Q_0 = V,\ Q_N = U,\ \Lambda = \operatorname{diag}(s)^{1/N}

(docs/math.md §6; Menon & Yu 2024). Its volume in the metric induced by the
Frobenius metric of the weights is (docs/math.md §6.1; the square case is
Menon & Yu's Theorem 4, with the square root)

.. math::

    \operatorname{vol}(O_X) = \prod_{k=1}^{N-1} \operatorname{vol}_F(\mathrm{St}(d_k, r))
        \prod_{a<b\le r} \sqrt{K_{ab}}
        \prod_{k=1}^{N-1} \prod_{a=1}^{r} \big(\sqrt2\, s_a^{1/N}\big)^{d_k - r},

with :math:`K_{ab} = (s_a^2 - s_b^2)/(s_a^{2/N} - s_b^{2/N})` the eigenvalues of
:math:`A_{N,X}` (:func:`dlngeo.geometry.kernel.kernel_matrix`, finite at
coinciding singular values). The entropy is :math:`S(X) = \log
\operatorname{vol}(O_X)`. For a square network of width ``d`` and full-rank
``X`` it reduces to

.. math:: S(X) = \tfrac12 \sum_{i<j} \log K_{ij} + (N-1) \log c_d,

:math:`c_d = \operatorname{vol}_F(O(d)) = 2^{d(d-1)/4}\, 2^d \pi^{d(d+1)/4} /
\prod_{k=1}^d \Gamma(k/2)` (``c_2 = 4\sqrt2\pi``, ``c_3 = 32\sqrt2\pi^2``): the
volume of the orthogonal group in the metric induced by the Frobenius norm
of ``d x d`` matrices. Every case (square, rectangular, bottleneck, rank
deficient) is the same formula; :mod:`dlngeo.thermodynamics.orbit` checks it
against the numerical Gram determinant of the orbit map and a Monte-Carlo
(Crofton) estimate of the orbit's length.

Boundary values: at a zero singular value the point leaves ``M_r``; the value
returned is the limit from ``M_r``. It is ``-inf`` when a hidden width
exceeds ``r`` (a factor ``s_a^{(d_k - r)/N}``) or when two singular values
vanish (``K_{ab} = 0``); in the square case a single zero singular value
leaves ``S`` finite (``K_{ab} -> s_a^{2(N-1)/N}``).

The free energy at inverse temperature ``beta`` is :math:`F = E - S/\beta`
(Menon 2024).
"""

from __future__ import annotations

from collections.abc import Sequence
from math import lgamma, log, pi
from typing import Any

import numpy as np

from ..geometry.kernel import kernel_matrix
from ..lowrank import is_lowrank_point, point_shape
from ..validation import check_depth as _check_depth
from ..validation import positive_integers, positive_number

__all__ = [
    "log_stiefel_volume",
    "log_orthogonal_group_volume",
    "entropy_constant",
    "entropy",
    "entropy_from_singular_values",
    "entropic_force",
    "free_energy",
    "batched_kernel",
    "check_beta",
]


def check_beta(beta: Any) -> float:
    """``beta`` as a float, or ``ValueError`` naming it (must be finite and > 0)."""
    return positive_number(beta, "beta")


def log_stiefel_volume(d: int, r: int) -> float:
    r"""``log vol_F(St(d, r))``: the Stiefel manifold of ``d x r`` orthonormal frames.

    The metric is the one induced by the Frobenius norm of ``d x r`` matrices.
    The usual (fibration) volume :math:`\prod_{k=d-r+1}^{d} 2\pi^{k/2}/\Gamma(k/2)`
    measures :math:`Q\Omega` with :math:`\|\Omega\|^2 = \sum_{a<b}\Omega_{ab}^2`;
    the Frobenius norm counts each of the :math:`r(r-1)/2` skew coordinates twice,
    hence the factor :math:`2^{r(r-1)/4}`. ``St(d, d) = O(d)``; ``St(d, 1) = S^{d-1}``.
    """
    if r < 0 or d < r:
        raise ValueError(f"Stiefel manifold St(d={d}, r={r}) needs 0 <= r <= d")
    out = r * (r - 1) / 4.0 * log(2.0)
    for k in range(d - r + 1, d + 1):
        out += log(2.0) + (k / 2.0) * log(pi) - lgamma(k / 2.0)
    return out


def log_orthogonal_group_volume(d: int) -> float:
    r"""``log c_d``, :math:`c_d = \operatorname{vol}_F(O(d))` (``c_2 = 4\sqrt2\pi``, ``c_3 = 32\sqrt2\pi^2``)."""
    return log_stiefel_volume(d, d)


def _hidden_widths(widths: Sequence[int] | None, depth: int, rank: int, default: int) -> list[int]:
    if widths is None:
        hidden = [default] * (depth - 1)
    else:
        try:
            hidden = [w for w in widths]
        except TypeError:
            raise ValueError(
                f"widths must be a sequence of the N - 1 hidden widths, got {widths!r}"
            ) from None
        if len(hidden) != depth - 1:
            raise ValueError(
                f"widths must list the N - 1 = {depth - 1} hidden widths d_1..d_(N-1), got {len(hidden)}"
            )
        hidden = positive_integers(hidden, "widths")
    for k, w in enumerate(hidden, start=1):
        if w < rank:
            raise ValueError(f"widths: hidden width d_{k} = {w} is below the rank {rank} of X")
    return hidden


def entropy_constant(widths: Sequence[int], rank: int) -> float:
    r""":math:`\sum_k \log \operatorname{vol}_F(\mathrm{St}(d_k, r))`, the part of ``S`` independent of ``X``."""
    return float(sum(log_stiefel_volume(int(w), int(rank)) for w in widths))


def batched_kernel(s_rows: np.ndarray, s_cols: np.ndarray, depth: int) -> np.ndarray:
    r""":func:`~dlngeo.geometry.kernel.kernel_matrix` for a batch: ``K[..., i, j] = K(s_rows[..., i], s_cols[..., j])``.

    ``kernel_matrix`` takes leading batch axes itself; this wrapper only
    insists that the two batches have the same shape.
    """
    a = np.asarray(s_rows, dtype=float)
    b = np.asarray(s_cols, dtype=float)
    lead = a.shape[:-1]
    if b.shape[:-1] != lead:
        raise ValueError(f"s_rows and s_cols batch shapes differ: {a.shape} vs {b.shape}")
    return kernel_matrix(a, b, depth)


def _check_singular_values(s: Any) -> np.ndarray:
    s = np.asarray(s, dtype=float)
    if s.ndim < 1:
        raise ValueError("s must have at least one axis (the singular values)")
    if not np.all(np.isfinite(s)):
        raise ValueError("X must be finite (got non-finite singular values)")
    if np.any(s < 0):
        raise ValueError("s: singular values must be >= 0")
    return s


def entropy_from_singular_values(
    s: Any, depth: int, widths: Sequence[int] | None = None
) -> np.ndarray | float:
    r"""``S`` from the ``r`` singular values ``s[..., :]`` of a rank-r point (batched over leading axes).

    Args:
        s: Singular values, shape ``(..., r)``, ``>= 0``.
        depth: ``N >= 1``.
        widths: Hidden widths ``d_1 .. d_{N-1}`` (each ``>= r``); default all ``r``.

    Returns:
        ``S`` with the leading shape of ``s`` (a float for 1-D ``s``).
    """
    n = _check_depth(depth)
    s = _check_singular_values(s)
    r = s.shape[-1]
    hidden = _hidden_widths(widths, n, r, r)
    const = entropy_constant(hidden, r)
    if n == 1 or r == 0:
        out = np.full(s.shape[:-1], const)
        return float(out) if out.ndim == 0 else out
    K = batched_kernel(s, s, n)
    iu = np.triu_indices(r, 1)
    with np.errstate(divide="ignore"):
        pairs = 0.5 * np.sum(np.log(K[..., iu[0], iu[1]]), axis=-1)
        excess = sum(w - r for w in hidden)
        stretch = excess * np.sum(0.5 * log(2.0) + np.log(s) / n, axis=-1) if excess else 0.0
    out = const + pairs + stretch
    return float(out) if np.ndim(out) == 0 else out


def _pair_force_ratio(t: np.ndarray, n: int) -> np.ndarray:
    r""":math:`h(t) = N/(1-t^N) - 1/(1-t)`, evaluated as a ratio of positive polynomials.

    For ``t <= 1``: :math:`h = \sum_{j=0}^{N-2}(N-1-j)t^j / \sum_{k=0}^{N-1}t^k`;
    for ``t > 1`` with ``q = 1/t``: :math:`h = q\sum_{i=0}^{N-2}(i+1)q^i / \sum_k q^k`.
    ``h(0) = N - 1``, ``h(1) = (N - 1)/2``, ``h(inf) = 0``.
    """
    t = np.asarray(t, dtype=float)
    small = t <= 1.0
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        q = np.where(small, t, 1.0 / t)
    q = np.where(np.isfinite(q), q, 0.0)
    num_small = np.polyval(
        np.arange(1, n, dtype=float), q
    )  # sum (N-1-j) q^j  (coefficients high->low: 1..N-1)
    num_large = q * np.polyval(np.arange(n - 1, 0, -1, dtype=float), q)  # q sum (i+1) q^i
    den = np.polyval(np.ones(n), q)
    return np.where(small, num_small, num_large) / den


def entropic_force(s: Any, depth: int, widths: Sequence[int] | None = None) -> np.ndarray:
    r"""The diagonal of :math:`\operatorname{grad}_{g_N} S` in the singular basis: ``K_aa dS/ds_a``.

    :math:`\operatorname{grad}_{g_N} S = U \operatorname{diag}(f) V^\top` with (docs/math.md §6.2,
    plus the stretch term of excess hidden widths)

    .. math::

        f_a = \sum_{b\ne a}\Big[\frac{N s_a^{3-2/N}}{s_a^2-s_b^2} - \frac{s_a}{s_a^{2/N}-s_b^{2/N}}\Big]
              + \Big(\sum_k (d_k - r)\Big) s_a^{1-2/N}
            = s_a^{1-2/N}\Big[\sum_{b\ne a} h\big((s_b/s_a)^{2/N}\big) + \sum_k (d_k-r)\Big],

    with :func:`_pair_force_ratio` ``h``: finite at coinciding singular values
    (``h(1) = (N-1)/2``) and at ``s_b = 0``.

    Args:
        s: Singular values ``(..., r)``, ``> 0``.
        depth: ``N``.
        widths: Hidden widths (default all ``r``).
    """
    n = _check_depth(depth)
    s = _check_singular_values(s)
    r = s.shape[-1]
    hidden = _hidden_widths(widths, n, r, r)
    if n == 1:
        return np.zeros_like(s)
    excess = float(sum(w - r for w in hidden))
    sa = s[..., :, None]
    sb = s[..., None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(sa == sb, 1.0, (sb / sa) ** (2.0 / n))
    t = np.where(np.isnan(t), 1.0, t)
    h = _pair_force_ratio(t, n)
    off = ~np.eye(r, dtype=bool)
    total = np.sum(np.where(off, h, 0.0), axis=-1) + excess
    return s ** (1.0 - 2.0 / n) * total


def _point_singular_values(X: Any) -> tuple[np.ndarray, tuple[int, int]]:
    if is_lowrank_point(X):
        u, s, vt = X
        s = np.asarray(s, dtype=float)
        if s.ndim != 1:
            raise ValueError("X: the s of a (u, s, vt) point must be 1-D")
        shape = point_shape(X)
        return s, (int(shape[0]), int(shape[1]))
    Xd = np.asarray(X, dtype=float)
    if Xd.ndim != 2:
        raise ValueError(f"X must be a 2-D array or a (u, s, vt) point, got shape {Xd.shape}")
    if not np.all(np.isfinite(Xd)):
        raise ValueError("X must be finite")
    return np.linalg.svd(Xd, compute_uv=False), Xd.shape


def entropy(X: Any, depth: int, *, widths: Sequence[int] | None = None) -> float:
    r"""Boltzmann entropy :math:`S(X) = \log \operatorname{vol}(O_X)` of the balanced fibre over ``X``.

    Args:
        X: A dense ``m x n`` matrix (a point of the full-rank manifold, rank
            ``min(m, n)``) or a low-rank point ``(u, s, vt)`` of ``M_r``,
            ``r = len(s)``.
        depth: ``N >= 1``.
        widths: Hidden widths ``d_1 .. d_{N-1}``, each ``>= r``. Default:
            ``min(m, n)`` for every hidden layer.

    Returns:
        ``S`` (nats), with the constant :math:`\sum_k \log\operatorname{vol}_F(\mathrm{St}(d_k, r))`;
        square full rank: :math:`\tfrac12\sum_{i<j}\log K_{ij} + (N-1)\log c_d`.
        Finite at coinciding singular values; the limit from ``M_r`` at zero
        singular values (see the module docstring).

    Raises:
        ValueError: Non-finite ``X``, negative ``s``, bad ``depth`` or ``widths``.
    """
    n = _check_depth(depth)
    s, (m, k) = _point_singular_values(X)
    if widths is None:
        widths = [min(m, k)] * (n - 1)
    return float(entropy_from_singular_values(s, n, widths))


def free_energy(
    X: Any, loss: Any, beta: float, depth: int, *, widths: Sequence[int] | None = None
) -> float:
    r"""Free energy :math:`F_\beta(X) = E(X) - \beta^{-1} S(X)` (Menon 2024).

    Args:
        X: Dense matrix or ``(u, s, vt)`` point.
        loss: A :class:`~dlngeo.losses.Loss` (or any object with ``value``, or a callable of ``X``).
        beta: Inverse temperature, ``> 0``.
        depth: ``N``.
        widths: Hidden widths (see :func:`entropy`).
    """
    b = check_beta(beta)
    value = loss.value(X) if hasattr(loss, "value") else loss(X)
    return float(value) - entropy(X, depth, widths=widths) / b
