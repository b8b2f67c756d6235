r"""The equilibrium law of the singular values, by quadrature.

At inverse temperature ``beta`` the end-to-end matrix of a network whose
weights are spread over the balanced manifold with density
:math:`\propto e^{-\beta L(W)}` has density :math:`\propto e^{-\beta E(X) + S(X)}`
with respect to :math:`d\mathrm{vol}_{g_N}` (docs/math.md §6, coarea formula for
the Riemannian submersion ``phi``). On full-rank ``m x n`` matrices,
:math:`d\mathrm{vol}_{g_N} = \prod_{i \le m, j \le n} K_{ij}^{-1/2}\, dX` (``K`` over
the padded grid) and :math:`dX = \prod_{a<b}|s_a^2 - s_b^2| \prod_a s_a^{|m-n|}\,
ds\, dU\, dV`. For a rotation-invariant energy ``E(X) = e(s)`` the
(unordered) singular values therefore have the Lebesgue density

.. math::

    p(s) \propto \exp\big(-\beta e(s) + S(s)\big) \prod_{i,j} K_{ij}^{-1/2}
        \prod_{a<b} |s_a^2 - s_b^2| \prod_a s_a^{|m-n|}.

:class:`SingularValueLaw` tabulates it on a grid of the layer singular values
``lambda = s^{1/N}`` (where the density is smooth: the :math:`s^{-(N-1)/N}`
singularity of :math:`K_{aa}^{-1/2}` at ``s = 0`` is absorbed by
:math:`ds = N\lambda^{N-1} d\lambda`) and gives the marginal laws of the
largest and smallest singular value (for Kolmogorov–Smirnov tests), and
approximate draws (for starting chains near equilibrium). With
``entropic=False`` it is the law *without* :math:`e^{S}` (Brownian motion on
``(M, g_N)`` plus the gradient of ``E`` only).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..validation import integer_between
from .entropy import batched_kernel, check_beta, entropy_from_singular_values

__all__ = ["log_density_singular_values", "SingularValueLaw"]


def log_density_singular_values(
    s: np.ndarray,
    *,
    beta: float,
    depth: int,
    shape: tuple[int, int],
    energy: Callable[[np.ndarray], np.ndarray],
    widths: Sequence[int] | None = None,
    entropic: bool = True,
    rank: int | None = None,
) -> np.ndarray:
    r"""Unnormalized log-density of the unordered singular values ``s[..., :r]``, ``r = min(m, n)``.

    Args:
        s: ``(..., r)`` singular values (``> 0``), ``r = rank``.
        beta: Inverse temperature.
        depth: ``N``.
        shape: ``(m, n)`` of ``X``.
        energy: ``e(s)``: the energy as a function of the singular values, batched over leading axes.
        widths: Hidden widths for the entropy (default ``min(m, n)``).
        entropic: Include :math:`e^{S}` (the law of the network); ``False`` drops it.
        rank: ``r``: the law on the rank-r manifold ``M_r`` (default ``min(m, n)``: full rank).
            Then ``K`` runs over the tangent blocks only (not ``i, j > r``) and the
            Jacobian is :math:`\prod_{a<b}|s_a^2 - s_b^2| \prod_a s_a^{m+n-2r}`.
    """
    beta = check_beta(beta)
    m, n = int(shape[0]), int(shape[1])
    s = np.asarray(s, dtype=float)
    r = min(m, n) if rank is None else integer_between(rank, "rank", 1, min(m, n))
    if s.shape[-1] != r:
        raise ValueError(
            f"s must have rank = {r} singular values in its last axis, got {s.shape[-1]}"
        )
    lead = s.shape[:-1]
    rows = np.concatenate((s, np.zeros((*lead, m - r))), axis=-1)
    cols = np.concatenate((s, np.zeros((*lead, n - r))), axis=-1)
    with np.errstate(divide="ignore"):
        logK_grid = np.log(batched_kernel(rows, cols, depth))
        logK = np.sum(logK_grid[..., :r, :], axis=(-2, -1)) + np.sum(
            logK_grid[..., r:, :r], axis=(-2, -1)
        )
        iu = np.triu_indices(r, 1)
        sq = s**2
        logJ = np.sum(np.log(np.abs(sq[..., iu[0]] - sq[..., iu[1]])), axis=-1) + (
            m + n - 2 * r
        ) * np.sum(np.log(s), axis=-1)
    out = -beta * np.asarray(energy(s), dtype=float) - 0.5 * logK + logJ
    if entropic:
        hidden = [min(m, n)] * (depth - 1) if widths is None else list(widths)
        out = out + entropy_from_singular_values(s, depth, hidden)
    return out


class SingularValueLaw:
    """The equilibrium law of the singular values of ``X`` (full rank, or on ``M_rank``), tabulated on a grid.

    Args:
        beta, depth, shape, energy, widths, entropic: as in :func:`log_density_singular_values`.
        upper: Largest singular value of the grid (the density must be negligible beyond it).
        n_grid: Grid points per axis (midpoint rule in ``lambda = s^{1/N}``); ``r <= 3`` recommended.
        rank: The rank ``r`` of the manifold (default ``min(m, n)``).

    Raises:
        ValueError: the grid cuts off more than ``1e-7`` of the mass (``upper`` too small).
    """

    def __init__(
        self,
        *,
        beta: float,
        depth: int,
        shape: tuple[int, int],
        energy: Callable[[np.ndarray], np.ndarray],
        upper: float,
        widths: Sequence[int] | None = None,
        entropic: bool = True,
        n_grid: int = 120,
        rank: int | None = None,
    ):
        self.depth = int(depth)
        self.shape = (int(shape[0]), int(shape[1]))
        r = min(self.shape) if rank is None else int(rank)
        self.rank = r
        N = self.depth
        L = float(upper) ** (1.0 / N)
        h = L / n_grid
        lam = (np.arange(n_grid) + 0.5) * h
        self.edges_lambda = np.arange(n_grid + 1) * h
        self.edges = self.edges_lambda**N
        grids = np.meshgrid(*([lam] * r), indexing="ij")
        lam_pts = np.stack(grids, axis=-1)  # (n,)*r + (r,)
        s = lam_pts**N
        logp = log_density_singular_values(
            s,
            beta=beta,
            depth=N,
            shape=self.shape,
            energy=energy,
            widths=widths,
            entropic=entropic,
            rank=r,
        ) + np.sum(np.log(N * lam_pts ** (N - 1)), axis=-1)
        logp = np.where(np.isfinite(logp), logp, -np.inf)
        w = np.exp(logp - logp.max())
        mass = w / w.sum()
        self._mass = mass
        self._lam = lam
        self._h = h
        # mass in the outermost slab (any coordinate in the last cell)
        outer = 1.0 - mass[(slice(0, -1),) * r].sum()
        if outer > 1e-7:
            raise ValueError(f"upper = {upper} cuts off {outer:.2e} of the mass; raise upper")
        cum = mass
        for axis in range(r):
            cum = np.cumsum(cum, axis=axis)
        k = np.arange(n_grid)
        below = cum[(k,) * r]  # P(all lambda < edge k+1)
        self._F_max = np.concatenate(([0.0], below))
        rev = mass
        for axis in range(r):
            rev = np.flip(np.cumsum(np.flip(rev, axis=axis), axis=axis), axis=axis)
        above = rev[(k,) * r]  # P(all lambda >= edge k)
        self._F_min = np.concatenate((1.0 - above, [1.0]))

    def cdf_max(self, x: Any) -> np.ndarray:
        """CDF of the largest singular value (linear in ``lambda`` within a cell)."""
        lam = np.asarray(x, dtype=float).clip(0.0) ** (1.0 / self.depth)
        return np.interp(lam, self.edges_lambda, self._F_max)

    def cdf_min(self, x: Any) -> np.ndarray:
        """CDF of the smallest singular value."""
        lam = np.asarray(x, dtype=float).clip(0.0) ** (1.0 / self.depth)
        return np.interp(lam, self.edges_lambda, self._F_min)

    def pdf(self, which: str = "max") -> tuple[np.ndarray, np.ndarray]:
        """``(s, density)`` of the largest (``"max"``) or smallest (``"min"``) singular value at cell centres."""
        F = {"max": self._F_max, "min": self._F_min}[which]
        centres = ((self.edges_lambda[:-1] + self.edges_lambda[1:]) / 2) ** self.depth
        return centres, np.diff(F) / np.diff(self.edges)

    def sample(self, rng: np.random.Generator | int | None, size: int) -> np.ndarray:
        """``size`` approximate draws (grid cell by mass, uniform within the cell in ``lambda``), sorted descending."""
        rng = np.random.default_rng(rng)
        flat = self._mass.ravel()
        idx = rng.choice(flat.size, size=size, p=flat / flat.sum())
        cells = np.stack(np.unravel_index(idx, self._mass.shape), axis=-1)
        lam = (cells + rng.uniform(size=cells.shape)) * self._h
        return np.sort(lam**self.depth, axis=-1)[:, ::-1]
