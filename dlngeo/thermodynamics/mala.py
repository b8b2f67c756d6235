r"""Metropolis-adjusted Riemannian Langevin (MALA) on full-rank matrices with ``g_N``.

The RLE proposal :math:`Y = X + h\,b(X) + \sqrt{2h/\beta}\,A_X^{1/2}\xi`
(:mod:`.rle`), accepted with the Metropolis–Hastings probability against the
density of :math:`e^{-\beta E + S}\,d\mathrm{vol}_{g_N}` with respect to ``dX``,
:math:`\pi(X) \propto e^{-\beta E + S}\prod_{ij}K_{ij}^{-1/2}` (docs/math.md §6): the
chain's stationary law is exact for any step.
"""

from __future__ import annotations

import time as _time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..dynamics.record import Record
from .entropy import entropy_from_singular_values
from .langevin import _batch_call, _check_depth, _check_start, _Sampler, _to_dense_gradient
from .rle import Geometry, drift_basis

__all__ = ["RiemannianMALA"]


class RiemannianMALA(_Sampler):
    r"""Metropolis-adjusted RLE: exact sampling of exp(-beta E + S) dvol_g for any step (dense full rank).

    Target :math:`e^{-\beta E + S} d\mathrm{vol}_{g_N}`.

    Proposal :math:`Y = X + h\,b(X) + \sqrt{2h/\beta}\,A_X^{1/2}\xi` with the RLE drift ``b``
    (``drift`` option), accepted with probability
    :math:`\min(1, \pi(Y) q(X|Y) / (\pi(X) q(Y|X)))`,
    :math:`\log\pi = -\beta E + S - \tfrac12\sum_{ij}\log K_{ij}`,
    :math:`q(Y|X) = \mathcal N(X + h b(X), (2h/\beta) A_X)`.
    ``record.info["acceptance_rate"]`` is the fraction of accepted proposals.
    """

    name = "riemannian_mala"

    def _log_target(
        self,
        geo: Geometry,
        E: np.ndarray,
        beta: float,
        depth: int,
        widths: Sequence[int] | None,
        shape: tuple[int, int],
    ) -> np.ndarray:
        hidden = widths if widths is not None else [min(shape)] * (depth - 1)
        with np.errstate(divide="ignore", invalid="ignore"):
            S = entropy_from_singular_values(geo.s, depth, hidden)
            return -beta * E + S - 0.5 * geo.logdetK

    @np.errstate(
        over="ignore", invalid="ignore"
    )  # divergence is reported as stop_reason = "diverged"
    def sample(
        self,
        rng: Any,
        *,
        loss: Any,
        start: Any,
        depth: int,
        metrics: dict[str, Callable] | None = None,
        callback: Callable | None = None,
        **options: Any,
    ) -> Record:
        """Run the chains; return a :class:`~dlngeo.dynamics.record.Record` (see :class:`RiemannianLangevin`)."""
        o = self._options(options)
        depth = _check_depth(depth)
        seed = rng if isinstance(rng, (int, np.integer)) else None
        rng = np.random.default_rng(rng)
        X = _check_start(start, o["chains"])
        single = np.ndim(start) == 2 and o["chains"] == 1
        C, m, n = X.shape
        batched = bool(getattr(loss, "batched", False))
        beta, h, widths = o["beta"], o["step"], o["widths"]
        grad = lambda Y: _batch_call(batched, lambda Z: _to_dense_gradient(loss.gradient(Z)), Y)  # noqa: E731
        value = lambda Y: _batch_call(batched, loss.value, Y)  # noqa: E731
        record = Record(
            method=self.name,
            info={"beta": beta, "step": h, "chains": C, "drift": o["drift"], "seed": seed},
        )
        t0 = _time.perf_counter()
        self._record_point(record, X, loss, batched, o, depth, 0, metrics, callback)
        geo = Geometry(X, depth)
        logpi = self._log_target(geo, value(X), beta, depth, widths, (m, n))
        bX = drift_basis(geo, grad(X), beta, depth, widths, o["drift"])
        accepted = 0
        noise_scale = np.sqrt(2.0 * h / beta)
        it = 0
        for it in range(1, o["n_steps"] + 1):
            xi = rng.standard_normal(X.shape)
            Y = X + geo.from_basis(h * bX + noise_scale * np.sqrt(geo.K) * geo.to_basis(xi))
            ok = np.all(np.isfinite(Y), axis=(1, 2))
            Ysafe = np.where(ok[:, None, None], Y, X)
            geoY = Geometry(Ysafe, depth)
            logpiY = self._log_target(geoY, value(Ysafe), beta, depth, widths, (m, n))
            bY = drift_basis(geoY, grad(Ysafe), beta, depth, widths, o["drift"])
            fwd = -0.5 * np.sum(geo.to_basis(xi) ** 2, axis=(1, 2)) - 0.5 * geo.logdetK
            back_res = geoY.to_basis(X - Ysafe) - h * bY
            with np.errstate(divide="ignore", invalid="ignore"):
                bwd = (
                    -(beta / (4.0 * h)) * np.sum(back_res**2 / geoY.K, axis=(1, 2))
                    - 0.5 * geoY.logdetK
                )
                log_ratio = logpiY - logpi + bwd - fwd
            log_ratio = np.where(ok & np.isfinite(log_ratio), log_ratio, -np.inf)
            accept = np.log(rng.uniform(size=C)) < log_ratio
            accepted += int(accept.sum())
            X = np.where(accept[:, None, None], Ysafe, X)
            a3 = accept[:, None, None]
            geo.U = np.where(a3, geoY.U, geo.U)
            geo.Vt = np.where(a3, geoY.Vt, geo.Vt)
            geo.s = np.where(accept[:, None], geoY.s, geo.s)
            geo.K = np.where(a3, geoY.K, geo.K)
            geo.logdetK = np.where(accept, geoY.logdetK, geo.logdetK)
            logpi = np.where(accept, logpiY, logpi)
            bX = np.where(a3, bY, bX)
            if it % o["record_every"] == 0 or it == o["n_steps"]:
                self._record_point(record, X, loss, batched, o, depth, it, metrics, callback)
        record.info["acceptance_rate"] = accepted / max(1, it * C)
        record.evaluations = {"gradient": (it + 1) * C, "loss": (it + 1) * C}
        return self._finish(record, X, single, t0, it)
