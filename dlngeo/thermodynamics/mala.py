r"""Metropolis-adjusted Riemannian Langevin (MALA) on full-rank matrices with ``g_N``.

The RLE proposal :math:`Y = X + h\,b(X) + \sqrt{2h/\beta}\,A_X^{1/2}\xi`
(:mod:`.rle`), accepted with the Metropolis–Hastings probability against the
density of :math:`e^{-\beta E + S}\,d\mathrm{vol}_{g_N}` with respect to ``dX``,
:math:`\pi(X) \propto e^{-\beta E + S}\prod_{ij}K_{ij}^{-1/2}` (docs/math.md §6): the
chain's stationary law is exact for any step.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..dynamics.base import Stopping
from ..dynamics.record import Record
from .chains import DenseChainStepper, batch_call, dense_gradient, run_chains
from .entropy import entropy_from_singular_values
from .langevin import _check_start, _Sampler
from .rle import Geometry, drift_basis

__all__ = ["RiemannianMALA"]


def _log_target(
    geo: Geometry, E: np.ndarray, beta: float, depth: int, hidden: Sequence[int]
) -> np.ndarray:
    """``log pi = -beta E + S - (1/2) sum log K`` (the density with respect to ``dX``)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        S = entropy_from_singular_values(geo.s, depth, hidden)
        return -beta * E + S - 0.5 * geo.logdetK


class _MALAStepper(DenseChainStepper):
    """One RLE proposal per chain and step, accepted by Metropolis–Hastings (never diverges: a
    non-finite proposal is rejected)."""

    def __init__(self, rng, loss, X, depth, options, single):
        super().__init__(loss, X, depth, options, single)
        self.rng = rng
        self.widths_option = options["widths"]
        self.drift = options["drift"]
        self.accepted = 0

    def _value(self, Y: np.ndarray) -> np.ndarray:
        return batch_call(self.batched, self.loss_fn.value, Y)

    def _grad(self, Y: np.ndarray) -> np.ndarray:
        return batch_call(self.batched, lambda Z: dense_gradient(self.loss_fn.gradient(Z)), Y)

    def start(self) -> None:
        self.observe()
        X, depth = self.X, self.depth
        self.geo = Geometry(X, depth)
        self.logpi = _log_target(self.geo, self._value(X), self.beta, depth, self.widths)
        self.bX = drift_basis(
            self.geo, self._grad(X), self.beta, depth, self.widths_option, self.drift
        )

    def step(self) -> None:
        X, geo, h, beta, depth = self.X, self.geo, self.h, self.beta, self.depth
        noise_scale = np.sqrt(2.0 * h / beta)
        xi = self.rng.standard_normal(X.shape)
        Y = X + geo.from_basis(h * self.bX + noise_scale * np.sqrt(geo.K) * geo.to_basis(xi))
        ok = np.all(np.isfinite(Y), axis=(1, 2))
        Ysafe = np.where(ok[:, None, None], Y, X)
        geoY = Geometry(Ysafe, depth)
        logpiY = _log_target(geoY, self._value(Ysafe), beta, depth, self.widths)
        bY = drift_basis(geoY, self._grad(Ysafe), beta, depth, self.widths_option, self.drift)
        fwd = -0.5 * np.sum(geo.to_basis(xi) ** 2, axis=(1, 2)) - 0.5 * geo.logdetK
        back_res = geoY.to_basis(X - Ysafe) - h * bY
        with np.errstate(divide="ignore", invalid="ignore"):
            bwd = (
                -(beta / (4.0 * h)) * np.sum(back_res**2 / geoY.K, axis=(1, 2)) - 0.5 * geoY.logdetK
            )
            log_ratio = logpiY - self.logpi + bwd - fwd
        log_ratio = np.where(ok & np.isfinite(log_ratio), log_ratio, -np.inf)
        accept = np.log(self.rng.uniform(size=self.chains)) < log_ratio
        self.accepted += int(accept.sum())
        self.X = np.where(accept[:, None, None], Ysafe, X)
        a3 = accept[:, None, None]
        geo.U = np.where(a3, geoY.U, geo.U)
        geo.Vt = np.where(a3, geoY.Vt, geo.Vt)
        geo.s = np.where(accept[:, None], geoY.s, geo.s)
        geo.K = np.where(a3, geoY.K, geo.K)
        geo.logdetK = np.where(accept, geoY.logdetK, geo.logdetK)
        self.logpi = np.where(accept, logpiY, self.logpi)
        self.bX = np.where(a3, bY, self.bX)
        self._advance()

    def evaluations(self) -> dict[str, int]:
        return {
            "gradient": (self.iteration + 1) * self.chains,
            "loss": (self.iteration + 1) * self.chains,
        }

    def info(self) -> dict[str, Any]:
        return {"acceptance_rate": self.accepted / max(1, self.iteration * self.chains)}


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
        stopping: Stopping | None = None,
        **options: Any,
    ) -> Record:
        """Run the chains; return a :class:`~dlngeo.dynamics.record.Record` (see :class:`RiemannianLangevin`)."""
        o, depth, seed, rng = self._begin(rng, depth, options)
        X = _check_start(start, o["chains"])
        single = np.ndim(start) == 2 and o["chains"] == 1
        stepper = _MALAStepper(rng, loss, X, depth, o, single)
        info = {"beta": o["beta"], "step": o["step"], "chains": X.shape[0], "drift": o["drift"]}
        info["seed"] = seed
        return run_chains(
            self.name, stepper, metrics=metrics, callback=callback, info=info, stopping=stopping
        )
