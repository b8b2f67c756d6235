r"""The Riemannian Langevin equation on the rank-r manifold :math:`(M_r, g_N)`, ``r < min(m, n)``.

Derived as in docs/math.md §6.5 (and checked by the stationary-law tests): on
``M_r`` at ``X = U diag(s) V^T`` the Riemannian volume in singular-value
coordinates is :math:`\prod_{a,b\le r}K_{ab}^{-1/2}\prod_a c_a^{-q/2}
\prod_{a<b}|s_a^2-s_b^2|\prod_a s_a^{q}\,ds\,dU\,dV`, ``c_a = s_a^{2(N-1)/N}``,
``q = m + n - 2r``. The Brownian drift :math:`\Delta_{g_N} X` then has the
*tangent* part

.. math:: P_T D(X) = (N-1)\, U \operatorname{diag}(s^{1-2/N}) V^\top

(the ``q``-terms of the volume and of the Hessian of :math:`s_a` cancel, as
in the rectangular full-rank case), and a normal part (the mean curvature of
``M_r`` contracted with :math:`A`) that the metric-projection retraction
produces by itself: :math:`R_X(\xi) = X + \xi + \tfrac12 \mathrm{II}(\xi, \xi) + O(\xi^3)`
and :math:`\mathbb E\,\tfrac12\mathrm{II}(\xi,\xi) = \beta^{-1} h\,\mathrm{II}:A`.
One step, in pymanopt's ``(Up, M, Vp)`` tangent coordinates:

.. math::

    \xi = h\Big[-A(P_T E') + \beta^{-1}U\operatorname{diag}\big(f + (N-1)s^{1-2/N}\big)V^\top\Big]
          + \sqrt{2h/\beta}\,A^{1/2}(P_T\, dB),
    \qquad X \leftarrow R_X(\xi),

with ``f`` the :func:`~dlngeo.thermodynamics.entropy.entropic_force` of the
rank-r entropy (hidden widths ``d_k >= r`` enter through ``sum_k (d_k - r)``)
and :math:`A` diagonal in these coordinates
(:func:`~dlngeo.geometry.kernel.metric_operator_tangent`: ``c`` on ``Up``, ``Vp``,
``K_r`` on ``M``). The stationary law is
:math:`\propto e^{-\beta E + S}\,d\mathrm{vol}_{g_N}` on ``M_r``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..geometry.kernel import column_weights
from ..geometry.lowrank_ops import retract, tangent_from_products, tangent_project
from ..lowrank import ambient_matmul, ambient_rmatmul
from .chains import ChainStepper
from .entropy import batched_kernel, entropic_force

__all__ = [
    "check_lowrank_start",
    "lowrank_tangent_drift",
    "retract",
    "lowrank_step",
    "LowRankRLEStepper",
]


def check_lowrank_start(start: Any, chains: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(U, s, Vt)`` stacks ``(C, m, r), (C, r), (C, r, n)`` from a point or a stack of points."""
    u, s, vt = (np.asarray(a, dtype=float) for a in start)
    if s.ndim == 1:
        u, s, vt = (np.broadcast_to(a, (chains, *a.shape)).copy() for a in (u, s, vt))
    if (
        u.ndim != 3
        or s.ndim != 2
        or vt.ndim != 3
        or u.shape[2] != s.shape[1]
        or vt.shape[1] != s.shape[1]
    ):
        raise ValueError(
            "start: a low-rank point must be (u, s, vt) with shapes (m, r), (r,), (r, n)"
        )
    if not (np.all(np.isfinite(u)) and np.all(np.isfinite(s)) and np.all(np.isfinite(vt))):
        raise ValueError("start must be finite")
    if np.any(s <= 0):
        raise ValueError("start must have s > 0 (a point of the rank-r manifold)")
    return u, s, vt


def _tangent_of_gradient(
    U: np.ndarray, Vt: np.ndarray, G: Any
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``P_T G`` in ``(Up, M, Vp)`` coordinates; ``G`` a dense stack or a list of ambient matrices."""
    if isinstance(G, np.ndarray):
        return tangent_project(U, Vt, G)
    V = np.swapaxes(Vt, 1, 2)
    GV = np.stack([ambient_matmul(g, v) for g, v in zip(G, V)])
    GtU = np.stack([ambient_rmatmul(g, u) for g, u in zip(G, U)])
    return tangent_from_products(U, V, GV, GtU)


def lowrank_tangent_drift(
    U: np.ndarray,
    s: np.ndarray,
    Vt: np.ndarray,
    G: Any,
    beta: float,
    depth: int,
    widths: Sequence[int] | None,
    drift: str,
) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray], np.ndarray, np.ndarray]:
    """The RLE drift on ``M_r`` in ``(Up, M, Vp)`` coordinates, with ``K_r`` and ``c``."""
    K = batched_kernel(s, s, depth)  # (C, r, r)
    c = column_weights(s, depth)  # (C, r)
    Up, M, Vp = _tangent_of_gradient(U, Vt, G)
    dUp, dM, dVp = -Up * c[:, None, :], -K * M, -Vp * c[:, None, :]
    if drift != "naive" and depth > 1:
        diag = (depth - 1) * s ** (1.0 - 2.0 / depth)
        if drift == "full":
            diag = diag + entropic_force(s, depth, widths)
        r = s.shape[1]
        dM = dM.copy()
        dM[:, np.arange(r), np.arange(r)] += diag / beta
    return (dUp, dM, dVp), K, c


def lowrank_step(
    rng: np.random.Generator,
    U: np.ndarray,
    s: np.ndarray,
    Vt: np.ndarray,
    G: Any,
    *,
    beta: float,
    step: float,
    depth: int,
    widths: Sequence[int] | None,
    drift: str,
):
    """One Euler–Maruyama + retraction step of the RLE on ``M_r`` for every chain."""
    (dUp, dM, dVp), K, c = lowrank_tangent_drift(U, s, Vt, G, beta, depth, widths, drift)
    C, m, r = U.shape
    n = Vt.shape[2]
    V = np.swapaxes(Vt, 1, 2)
    # P_T of an ambient Brownian increment, in (Up, M, Vp): independent Gaussian blocks.
    Zu = rng.standard_normal((C, m, r))
    Zv = rng.standard_normal((C, n, r))
    Zm = rng.standard_normal((C, r, r))
    nUp = Zu - U @ (np.swapaxes(U, 1, 2) @ Zu)
    nVp = Zv - V @ (np.swapaxes(V, 1, 2) @ Zv)
    scale = np.sqrt(2.0 * step / beta)
    sc = np.sqrt(c)[:, None, :]
    Up = step * dUp + scale * sc * nUp
    M = step * dM + scale * np.sqrt(K) * Zm
    Vp = step * dVp + scale * sc * nVp
    return retract(U, s, Vt, Up, M, Vp)


class LowRankRLEStepper(ChainStepper):
    """The RLE on ``(M_r, g_N)`` for stacks ``(C, m, r), (C, r), (C, r, n)`` (:func:`lowrank_step`).

    A step whose result is non-finite or leaves ``M_r`` (``s_r <= 1e-12 s_1``)
    is not taken: the run stops ``diverged``.
    """

    def __init__(
        self,
        rng: np.random.Generator,
        loss: Any,
        point: tuple[np.ndarray, np.ndarray, np.ndarray],
        depth: int,
        options: dict[str, Any],
        single: bool,
        widths: Sequence[int],
    ):
        self.U, self.s, self.Vt = point
        super().__init__(loss, depth, options, self.U.shape[0], single, widths)
        self.rng = rng
        self.batched = bool(getattr(loss, "batched", False))
        self.drift = options["drift"]

    def _points(self) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        return [(self.U[c], self.s[c], self.Vt[c]) for c in range(self.chains)]

    def energies(self) -> np.ndarray:
        if self.batched:
            return np.asarray(
                self.loss_fn.value((self.U * self.s[:, None, :]) @ self.Vt), dtype=float
            )
        return np.array([float(self.loss_fn.value(p)) for p in self._points()])

    def singular_values(self) -> np.ndarray:
        return self.s.copy()

    def chain0(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return (self.U[0], self.s[0], self.Vt[0])

    def final(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.chain0() if self.single else (self.U, self.s, self.Vt)

    def start(self) -> None:
        self.observe()

    def step(self) -> None:
        U, s, Vt = self.U, self.s, self.Vt
        if self.batched:
            G: Any = np.asarray(self.loss_fn.gradient((U * s[:, None, :]) @ Vt), dtype=float)
        else:
            G = [self.loss_fn.gradient(p) for p in self._points()]
        U_new, s_new, Vt_new = lowrank_step(
            self.rng,
            U,
            s,
            Vt,
            G,
            beta=self.beta,
            step=self.h,
            depth=self.depth,
            widths=self.widths,
            drift=self.drift,
        )
        finite = np.all(np.isfinite(U_new)) and np.all(np.isfinite(s_new))
        if not (finite and np.all(np.isfinite(Vt_new))) or np.any(
            s_new[:, -1] <= 1e-12 * s_new[:, 0]
        ):
            self._fail("a chain became non-finite or left M_r (rank collapse)")
        self.U, self.s, self.Vt = U_new, s_new, Vt_new
        self._advance()
