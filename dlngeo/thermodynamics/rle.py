r"""The dense Riemannian Langevin step: drift, the singular basis, and the two Euler schemes.

In the singular basis of ``X = U diag(s) V^T`` (full SVD, ``s`` padded with
zeros) the metric operator :math:`A_X` is diagonal with eigenvalues
:math:`K_{ij}` (:func:`dlngeo.geometry.kernel.kernel_matrix`, batched here by
:func:`~dlngeo.thermodynamics.entropy.batched_kernel`), so the RLE drift is

.. math::

    U^\top b V = -K \circ (U^\top E' V)
        + \beta^{-1}\operatorname{diag}\big(f + (N-1)s^{1-2/N}\big)

and its noise is :math:`\sqrt{2h/\beta}\,\sqrt{K}\circ(U^\top \xi V)`. Everything
is batched over chains: ``(C, m, n)`` stacks and one batched SVD per step.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..validation import check_depth as _check_depth
from .chains import DenseChainStepper, batch_call, dense_gradient
from .entropy import batched_kernel, check_beta, entropic_force

__all__ = [
    "DRIFTS",
    "SCHEMES",
    "Geometry",
    "drift_basis",
    "layer_step",
    "carry_svd",
    "rle_drift",
    "DenseRLEStepper",
]

#: Drift variants of the Euler–Maruyama RLE (``"full"`` is the RLE; the others are diagnostics).
DRIFTS = ("full", "no_entropy", "naive")
#: Euler–Maruyama schemes of the dense RLE: in ``X``, or with the singular values stepped in ``s^{1/N}``.
SCHEMES = ("matrix", "layer")


class Geometry:
    """Batched SVD of ``X`` (``(C, m, n)``) and the kernel ``K`` on the padded grid."""

    def __init__(
        self,
        X: np.ndarray,
        depth: int,
        svd: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
    ):
        C, m, n = X.shape
        self.U, self.s, self.Vt = np.linalg.svd(X, full_matrices=True) if svd is None else svd
        r = self.s.shape[-1]
        rows = np.concatenate((self.s, np.zeros((C, m - r))), axis=1)
        cols = np.concatenate((self.s, np.zeros((C, n - r))), axis=1)
        self.K = batched_kernel(rows, cols, depth)  # (C, m, n)
        with np.errstate(divide="ignore"):
            self.logdetK = np.sum(np.log(self.K), axis=(1, 2))
        self.r = r

    def to_basis(self, Z: np.ndarray) -> np.ndarray:
        """``U^T Z V``."""
        return np.swapaxes(self.U, 1, 2) @ Z @ np.swapaxes(self.Vt, 1, 2)

    def from_basis(self, Zb: np.ndarray) -> np.ndarray:
        """``U Zb V^T``."""
        return self.U @ Zb @ self.Vt


def _diag_embed(values: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    C, r = values.shape
    out = np.zeros((C, *shape))
    idx = np.arange(r)
    out[:, idx, idx] = values
    return out


def drift_basis(
    geo: Geometry, G: np.ndarray, beta: float, depth: int, widths: Sequence[int] | None, drift: str
) -> np.ndarray:
    """The RLE drift in the singular basis ``U^T b V``."""
    out = -geo.K * geo.to_basis(G)
    if drift == "naive" or depth == 1:
        return out
    diag = (depth - 1) * geo.s ** (1.0 - 2.0 / depth)  # D(X)
    if drift == "full":
        diag = diag + entropic_force(geo.s, depth, widths)
    m, n = G.shape[1:]
    return out + _diag_embed(diag / beta, (m, n))


def layer_step(
    geo: Geometry,
    b: np.ndarray,
    step_b: np.ndarray,
    xi: np.ndarray,
    h: float,
    beta: float,
    depth: int,
    drift: str,
    singular_at_zero: bool = False,
) -> tuple[np.ndarray, tuple]:
    r"""One step with the singular values advanced in the layer coordinates ``lambda = s^{1/N}``.

    The Euler step ``diag(s) + step_b`` (singular basis) is split: its
    off-diagonal part rotates the frames (the SVD of ``diag(s) + offdiag(step_b)``,
    with the signs that keep the rotation near the identity), and the singular
    values take an Euler step of their own equation written in ``lambda``,

    .. math::

        d\lambda_a = \tfrac1N s_a^{1/N-1}\big[b_{aa} - D_a/\beta + o_a/\beta\big]dt
                     + \sqrt{2/(N\beta)}\,dB_{aa},
        \qquad o_a = \sum_{j \ne a} \frac{(K_{aj} + K_{ja}) s_a}{s_a^2 - s_j^2}
                     + (m + n - 2r)\, s_a^{1 - 2/N},

    where ``o`` is the Itô drift of ``s_a`` from the off-diagonal noise (the
    Hessian of ``s_a`` contracted with ``A``) and Itô's rule for ``s -> s^{1/N}``
    turns the Brownian drift ``D_a = (N-1) s_a^{1-2/N}`` into exactly the
    term it cancels. The noise is additive and the equation regular at
    ``s_a = 0``, where the matrix Euler step is biased; ``lambda`` is signed, so a
    singular value crossing zero flips the singular direction, as ``X`` crosses
    ``det X = 0``.

    Returns:
        The new point in the singular basis of the old one, and
        ``(U2, s_new, Vt2, ok)`` for :func:`carry_svd` (``ok``: the chains that
        took the layer step; the others took the matrix step).
    """
    C, m, n = step_b.shape
    r = geo.r
    idx = np.arange(r)
    s = geo.s
    Y = step_b.copy()
    Y[:, idx, idx] = s
    U2, _, Vt2 = np.linalg.svd(Y, full_matrices=True)
    # keep the frames near the identity (no spurious sign flips)
    su = np.sign(np.diagonal(U2, axis1=1, axis2=2)[:, :r])
    sv = np.sign(np.diagonal(Vt2, axis1=1, axis2=2)[:, :r])
    su = np.where(su == 0, 1.0, su)
    sv = np.where(sv == 0, 1.0, sv)
    U2 = U2.copy()
    Vt2 = Vt2.copy()
    U2[:, :, :r] *= su[:, None, :]
    Vt2[:, :r, :] *= sv[:, :, None]
    K = geo.K
    with np.errstate(divide="ignore", invalid="ignore"):
        sa, sj = s[:, :, None], s[:, None, :]
        pair = (K[:, :r, :r] + np.swapaxes(K[:, :r, :r], 1, 2)) * sa / (sa**2 - sj**2)
        pair = np.where(np.eye(r, dtype=bool), 0.0, pair)
        ito = np.sum(pair, axis=2) + (m + n - 2 * r) * s ** (1.0 - 2.0 / depth)
        D = (depth - 1) * s ** (1.0 - 2.0 / depth)
        b_diag = b[:, idx, idx] - (0.0 if drift == "naive" else D / beta)
        lam = s ** (1.0 / depth)
        rate = (b_diag + ito / beta) * s ** (1.0 / depth - 1.0) / depth
        if drift == "naive":
            rate = rate - (depth - 1) / (depth * beta * lam)
        lam_new = lam + h * rate + np.sqrt(2.0 * h / (depth * beta)) * xi[:, idx, idx]
        s_new = np.sign(lam_new) * np.abs(lam_new) ** depth
        # Near a coincidence the pair repulsion o_a ~ 1/(s_a - s_j) is stiff: there the
        # chain takes the matrix step (whose SVD resolves the repulsion by itself).
        gap = np.abs(lam[:, :, None] - lam[:, None, :])
        gap = np.where(np.eye(r, dtype=bool), np.inf, gap).min(axis=2)
        if m != n or drift == "naive" or singular_at_zero:
            gap = np.minimum(gap, np.abs(lam))  # the rate has a 1/lambda term there
        ok = np.all(np.isfinite(s_new) & (h * np.abs(rate) <= 0.25 * gap), axis=1)
    core = np.zeros((C, m, n))
    core[:, idx, idx] = np.where(ok[:, None], s_new, 0.0)
    out = U2 @ core @ Vt2
    # a chain at an exact coincidence (infinite repulsion): plain matrix Euler step
    out = np.where(ok[:, None, None], out, _diag_embed(s, (m, n)) + step_b)
    return out, (U2, np.where(ok[:, None], s_new, 0.0), Vt2, ok)


def carry_svd(
    geo: Geometry, X_new: np.ndarray, frames: tuple
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The SVD of the new point from the layer step's frames (no new SVD, except for fallback chains).

    ``X_new = (U U2) diag(s_new) (Vt2 Vt)`` with signed ``s_new``: flip the
    right singular vector of a negative value, then sort by magnitude.
    """
    U2, s_new, Vt2, ok = frames
    r = geo.r
    U = geo.U @ U2
    Vt = Vt2 @ geo.Vt
    sign = np.where(s_new < 0, -1.0, 1.0)
    Vt[:, :r, :] *= sign[:, :, None]
    s_abs = np.abs(s_new)
    order = np.argsort(-s_abs, axis=1, kind="stable")
    s_sorted = np.take_along_axis(s_abs, order, axis=1)
    U[:, :, :r] = np.take_along_axis(U[:, :, :r], order[:, None, :], axis=2)
    Vt[:, :r, :] = np.take_along_axis(Vt[:, :r, :], order[:, :, None], axis=1)
    if not np.all(ok):
        bad = ~ok
        Ub, sb, Vtb = np.linalg.svd(X_new[bad], full_matrices=True)
        U[bad], s_sorted[bad], Vt[bad] = Ub, sb, Vtb
    return U, s_sorted, Vt


def rle_drift(
    X: np.ndarray,
    gradient: np.ndarray,
    beta: float,
    depth: int,
    *,
    widths: Sequence[int] | None = None,
    drift: str = "full",
) -> np.ndarray:
    r"""The RLE drift :math:`-A_X(E') + \beta^{-1}(\operatorname{grad}_{g_N} S + D(X))` at a dense ``X`` (or a stack)."""
    X = np.asarray(X, dtype=float)
    single = X.ndim == 2
    Xb = X[None] if single else X
    Gb = np.asarray(gradient, dtype=float)
    Gb = Gb[None] if single else Gb
    geo = Geometry(Xb, _check_depth(depth))
    out = geo.from_basis(drift_basis(geo, Gb, check_beta(beta), depth, widths, drift))
    return out[0] if single else out


class DenseRLEStepper(DenseChainStepper):
    """Euler–Maruyama for the RLE on dense full-rank ``(C, m, n)`` stacks (``scheme`` ``"layer"`` or ``"matrix"``).

    A step whose result is non-finite, or taken where ``K`` has a zero (a
    chain lost rank), is not taken: the run stops ``diverged``.
    """

    def __init__(
        self,
        rng: np.random.Generator,
        loss: Any,
        X: np.ndarray,
        depth: int,
        options: dict[str, Any],
        single: bool,
    ):
        super().__init__(loss, X, depth, options, single)
        self.rng = rng
        self.widths_option = options["widths"]
        self.drift = options["drift"]
        self.scheme = options["scheme"]
        self.noise_scale = np.sqrt(2.0 * self.h / self.beta)
        self.excess = self.widths_option is not None and any(w > self.rank for w in self.widths)
        self.carried: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    def step(self) -> None:
        it = self.iteration + 1
        X, h, beta, depth = self.X, self.h, self.beta, self.depth
        G = batch_call(self.batched, lambda Y: dense_gradient(self.loss_fn.gradient(Y)), X)
        # a fresh SVD every 64 steps keeps the carried frames orthonormal to rounding
        geo = Geometry(X, depth, None if it % 64 == 1 else self.carried)
        # U^T dB V: the ambient increments in the singular basis
        xi = geo.to_basis(self.rng.standard_normal(X.shape))
        b = drift_basis(geo, G, beta, depth, self.widths_option, self.drift)
        step_b = h * b + self.noise_scale * np.sqrt(geo.K) * xi
        carried = None
        if self.scheme == "layer" and depth > 1:
            out_b, frames = layer_step(geo, b, step_b, xi, h, beta, depth, self.drift, self.excess)
            X_new = geo.from_basis(out_b)
            if np.all(np.isfinite(X_new)):
                carried = carry_svd(geo, X_new, frames)
        else:
            X_new = X + geo.from_basis(step_b)
        if not np.all(np.isfinite(X_new)) or np.any(geo.K <= 0):
            self._fail("a chain became non-finite or lost rank")
        self.X, self.carried = X_new, carried
        self._advance()
