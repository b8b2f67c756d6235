r"""Langevin samplers: the Riemannian Langevin equation on :math:`(M, g_N)` and Langevin on the factors.

**RLE** (Menon 2024; docs/math.md §6, §6.3). The diffusion on the
full-rank ``m x n`` matrices with the metric :math:`g_N` whose stationary law is
:math:`\propto e^{-\beta E + S}\, d\mathrm{vol}_{g_N}` is, in matrix coordinates (Itô),

.. math::

    dX = \Big[-A_X(E'(X)) + \beta^{-1}\big(\operatorname{grad}_{g_N} S + D(X)\big)\Big] dt
         + \sqrt{2/\beta}\, A_X^{1/2}(dB),
    \qquad D(X) = (N-1)\, X (X^\top X)^{-1/N},

:math:`\operatorname{grad}_{g_N} S = U \operatorname{diag}(f) V^\top` with ``f`` the
:func:`~dlngeo.thermodynamics.entropy.entropic_force`. ``D = div A + A grad log sqrt(g)``
is the Itô drift of Brownian motion on ``(M, g_N)``; it has the same form for
rectangular full-rank ``X`` (the terms of the padded blocks cancel; checked
against finite differences in the tests). :math:`A_X` is diagonal in the
singular basis with eigenvalues :math:`K_{ij}` (:mod:`dlngeo.geometry.kernel`);
the drift, the noise and the Euler schemes are in :mod:`.rle`.

* :class:`RiemannianLangevin`: Euler–Maruyama with a fixed step (singular
  values stepped in ``s^{1/N}`` by default, see the class).
  ``drift="full"`` is the RLE above. Diagnostics: ``"no_entropy"`` drops
  :math:`\operatorname{grad} S` (samples :math:`e^{-\beta E} d\mathrm{vol}_g`, the law
  without the orbit volume); ``"naive"`` is preconditioned SGLD with drift
  :math:`-A E'` only (no Itô/divergence term, as in geoopt's Riemannian SGLD):
  its stationary law is wrong, and the tests show a KS test detects it.
* :class:`~dlngeo.thermodynamics.mala.RiemannianMALA` (:mod:`.mala`): the same
  proposal, then Metropolis–Hastings against
  :math:`\pi(X) \propto e^{-\beta E + S} \prod_{ij} K_{ij}^{-1/2}` (the density
  with respect to ``dX``); exact for any step. Reports the acceptance rate.
* :class:`OverparametrizedLangevin`: :math:`dW_k = -\nabla_{W_k} L\,dt + \sqrt{2/\beta}\,dB_k`
  on the factors (from a balanced start); its ``X = phi(W)`` has a different law
  (the weights are not confined to the balanced manifold).

All samplers run ``chains`` independent chains at once (a ``(chains, m, n)``
array and one batched SVD per step). Each is a stepper
(:class:`~dlngeo.thermodynamics.chains.ChainStepper`) run by the one driver,
:func:`dlngeo.dynamics.driver.drive`: the records, the stop reasons and the
handling of a diverged step are the driver's (:mod:`.chains`). :class:`RiemannianLangevin` also runs on
the rank-r manifold from a low-rank point ``(u, s, vt)`` (tangent drift plus
the metric-projection retraction, :mod:`.lowrank_langevin`);
:class:`~dlngeo.thermodynamics.mala.RiemannianMALA` and :class:`OverparametrizedLangevin` do not
(``NotImplementedError``: a MALA on ``M_r`` needs the proposal density of the
retraction, which is not derived here).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..dynamics.base import Stopping
from ..dynamics.record import Record
from ..lowrank import is_lowrank_point
from ..network import DeepLinearNetwork
from ..validation import check_choice, positive_integer, positive_number
from ..validation import check_depth as _check_depth
from .chains import ChainStepper, DenseChainStepper, dense_gradient, run_chains
from .entropy import check_beta
from .lowrank_langevin import LowRankRLEStepper, check_lowrank_start
from .rle import DRIFTS, SCHEMES, DenseRLEStepper, rle_drift

__all__ = [
    "QuadraticEnergy",
    "RiemannianLangevin",
    "OverparametrizedLangevin",
    "rle_drift",
    "DRIFTS",
    "SCHEMES",
]


class QuadraticEnergy:
    r""":math:`E(X) = c\,\|X - T\|_F^2`, vectorised over leading axes (``batched = True``)."""

    batched = True

    def __init__(self, coefficient: float = 1.0, target: Any = None):
        self.coefficient = float(coefficient)
        self.target = None if target is None else np.asarray(target, dtype=float)
        self.name = "quadratic"

    def _res(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=float)
        return X if self.target is None else X - self.target

    def value(self, X: Any) -> Any:
        v = self.coefficient * np.sum(self._res(X) ** 2, axis=(-2, -1))
        return float(v) if np.ndim(v) == 0 else v

    def gradient(self, X: Any) -> np.ndarray:
        return 2.0 * self.coefficient * self._res(X)

    def __call__(self, X: Any) -> Any:
        return self.value(X)


# ---------------------------------------------------------------- validation
def _check_start(start: Any, chains: int) -> np.ndarray:
    if is_lowrank_point(start):
        raise NotImplementedError(
            "this sampler does not run at low-rank points (u, s, vt) of M_r (riemannian_langevin does): "
            "pass a dense full-rank start"
        )
    X = np.asarray(start, dtype=float)
    if X.ndim not in (2, 3):
        raise ValueError(
            f"start must be an m x n array or a (chains, m, n) stack, got shape {X.shape}"
        )
    if not np.all(np.isfinite(X)):
        raise ValueError("start must be finite")
    if X.ndim == 2:
        X = np.broadcast_to(X, (chains, *X.shape)).copy()
    s = np.linalg.svd(X, compute_uv=False)
    if np.any(s[:, -1] <= 0.0):
        raise ValueError(
            "start must have full rank min(m, n) (the dense samplers live on full-rank matrices)"
        )
    return X


# ------------------------------------------------------------------ samplers
class _Sampler:
    """Shared options, validation and recording."""

    name = "langevin"
    kind = "langevin"

    def __init__(
        self,
        beta: float = 1.0,
        step: float = 1e-3,
        n_steps: int = 1000,
        chains: int = 1,
        widths: Sequence[int] | None = None,
        record_every: int | None = None,
        keep_samples: bool = False,
        drift: str = "full",
        scheme: str = "layer",
    ):
        self.options = dict(
            beta=beta,
            step=step,
            n_steps=n_steps,
            chains=chains,
            widths=widths,
            record_every=record_every,
            keep_samples=keep_samples,
            drift=drift,
            scheme=scheme,
        )
        self._validate(self.options)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.options.items())})"

    @staticmethod
    def _validate(o: dict[str, Any]) -> dict[str, Any]:
        o = dict(o)
        o["beta"] = check_beta(o["beta"])
        o["step"] = positive_number(o["step"], "step")
        o["n_steps"] = positive_integer(o["n_steps"], "n_steps", 0)
        o["chains"] = positive_integer(o["chains"], "chains")
        if o["record_every"] is None:
            o["record_every"] = max(1, o["n_steps"] // 100)
        o["record_every"] = positive_integer(o["record_every"], "record_every")
        o["drift"] = check_choice("drift", o["drift"], DRIFTS)
        o["scheme"] = check_choice("scheme", o["scheme"], SCHEMES)
        return o

    def _options(self, overrides: dict[str, Any]) -> dict[str, Any]:
        unknown = set(overrides) - set(self.options)
        if unknown:
            raise ValueError(f"unknown sampler option(s): {sorted(unknown)}")
        o = self._validate({**self.options, **overrides})
        if o["scheme"] != "layer" and self.name != "riemannian_langevin":
            raise ValueError(
                f"scheme applies to riemannian_langevin only, got scheme={o['scheme']!r}"
            )
        return o

    def _begin(self, rng: Any, depth: int, options: dict[str, Any]):
        """Validated options, depth, the seed (when ``rng`` is one) and the generator."""
        o = self._options(options)
        seed = rng if isinstance(rng, (int, np.integer)) else None
        return o, _check_depth(depth), seed, np.random.default_rng(rng)


class RiemannianLangevin(_Sampler):
    """Euler–Maruyama for the Riemannian Langevin equation on (M_r, g_N), dense full rank or low rank.

    Options (factory or ``sample`` keywords): ``beta``, ``step``, ``n_steps``,
    ``chains``, ``widths`` (hidden widths for the entropy), ``record_every``,
    ``keep_samples`` (keep every recorded chain's singular values in
    ``record.info["singular_values"]``), ``drift`` (``"full"``; diagnostics
    ``"no_entropy"``, ``"naive"``), ``scheme``.

    Schemes (dense points). The drift is exact (zero probability flux for the
    target law, checked by finite differences); the discretization matters
    near the singular set ``s_min = 0``, which the square process crosses and
    where the equilibrium density of ``s_min`` behaves like ``s^{-(N-1)/N}``.

    * ``"matrix"``: Euler–Maruyama in ``X``. Its error near ``s = 0`` decays
      like ``h^{1/N}``-ish: for ``E = ||X||^2``, ``beta = 1``, 2 x 2, ``N = 2`` the
      error of ``P(s_min < 0.02) = 0.234`` is 0.067 / 0.039 / 0.016 at steps
      ``2e-3 / 5e-4 / 1.25e-4``; for ``N = 3`` a KS test of ``s_min`` fails at
      ``h = 5e-4`` (p ~ 1e-19 with 1000 chains).
    * ``"layer"`` (default): the same Euler step for the frames, but the
      singular values stepped in ``lambda = s^{1/N}``, where their equation has
      additive noise and is regular at zero (:func:`~dlngeo.thermodynamics.rle.layer_step`); the KS tests
      of ``s_max`` and ``s_min`` pass at ``h = 1e-3`` for 2 x 2 / 3 x 3,
      ``N = 2, 3``. Chains near a coincidence ``s_a = s_b`` (stiff repulsion)
      take the matrix step. Costs about 1.3 matrix steps (the SVD of the new
      point is carried from the step's frames). What remains is the usual
      ``O(h)`` Euler bias: for ``E = ||X - diag(1.5, 0.8)||^2 / 2``, ``beta = 6``,
      ``N = 3``, ``E[||X||^2 | det X > 0]`` is about 2% high at ``h = 1e-3``.

    Low-rank points ``(u, s, vt)`` run on ``M_r`` (:mod:`.lowrank_langevin`).
    :class:`~dlngeo.thermodynamics.mala.RiemannianMALA` samples the same law exactly.
    """

    name = "riemannian_langevin"

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
        """Run the chains; return a :class:`~dlngeo.dynamics.record.Record`.

        ``start``: a dense full-rank ``m x n`` matrix or a ``(chains, m, n)`` stack;
        or a low-rank point ``(u, s, vt)`` (``s > 0``), or stacks
        ``(chains, m, r), (chains, r), (chains, r, n)``: the chains then stay on
        ``M_r``. ``record.final_point`` has the form of ``start`` (one chain:
        a single matrix / point). Stops with ``stop_reason = "diverged"`` when a
        chain becomes non-finite or loses rank (``K`` has a zero; on ``M_r``:
        ``s_r <= 1e-12 s_1``); ``final_point`` is then the last finite state, and
        the record's last sample. ``stopping``: a :class:`~dlngeo.Stopping` that
        can end the run before ``n_steps`` (``end_time``, ``max_time``,
        ``loss_below`` on the mean energy, ...; :mod:`dlngeo.thermodynamics.chains`).
        """
        o, depth, seed, rng = self._begin(rng, depth, options)
        info = {"beta": o["beta"], "step": o["step"], "chains": o["chains"], "drift": o["drift"]}
        if is_lowrank_point(start):
            U, s, Vt = check_lowrank_start(start, o["chains"])
            m, r, n = U.shape[1], U.shape[2], Vt.shape[2]
            widths = o["widths"] if o["widths"] is not None else [min(m, n)] * (depth - 1)
            if any(w < r for w in widths):
                raise ValueError(f"widths must be >= the rank {r}")
            single = np.ndim(start[1]) == 1 and o["chains"] == 1
            stepper: ChainStepper = LowRankRLEStepper(
                rng, loss, (U, s, Vt), depth, o, single, widths
            )
            info.update(chains=U.shape[0], seed=seed, rank=r)
        else:
            X = _check_start(start, o["chains"])
            single = np.ndim(start) == 2 and o["chains"] == 1
            stepper = DenseRLEStepper(rng, loss, X, depth, o, single)
            info.update(chains=X.shape[0], seed=seed)
        return run_chains(
            self.name, stepper, metrics=metrics, callback=callback, info=info, stopping=stopping
        )


class _FactorStepper(DenseChainStepper):
    """Noisy gradient descent on the factors of ``C`` networks (one list of factors per chain)."""

    def __init__(self, rng, loss, net, weights, depth, options, single):
        X = np.stack([net.product(W) for W in weights])
        super().__init__(loss, X, depth, options, single, list(net.dims[1:-1]), batched=False)
        self.rng, self.net, self.W = rng, net, weights
        self.scale = np.sqrt(2.0 * self.h / self.beta)

    def weights(self) -> list[np.ndarray]:
        return self.W[0]

    def step(self) -> None:
        h, scale, net, rng = self.h, self.scale, self.net, self.rng
        new = []
        for W, x in zip(self.W, self.X):
            grads = net.gradients(W, dense_gradient(self.loss_fn.gradient(x)))
            new.append(
                [Wk - h * gk + scale * rng.standard_normal(Wk.shape) for Wk, gk in zip(W, grads)]
            )
        Xn = np.stack([net.product(W) for W in new])
        if not np.all(np.isfinite(Xn)):
            self._fail("a chain became non-finite")
        self.W, self.X = new, Xn
        self._advance()


class OverparametrizedLangevin(_Sampler):
    r"""Euclidean Langevin on the factors at inverse temperature beta (noisy gradient descent).

    :math:`W_k \leftarrow W_k - h\nabla_{W_k}L + \sqrt{2h/\beta}\,\xi_k`.

    Starts from a balanced factorization of ``start`` (hidden frames from
    ``rng``); hidden widths from ``widths`` (default ``min(m, n)``). Records
    the metrics of ``X = phi(W)``; ``record.final_weights`` holds the factors
    (of the first chain).
    """

    name = "overparametrized_langevin"

    @np.errstate(
        over="ignore", invalid="ignore"
    )  # divergence is reported as stop_reason = "diverged"
    def sample(
        self,
        rng: Any,
        *,
        loss: Any,
        start: Any = None,
        depth: int,
        metrics: dict[str, Callable] | None = None,
        callback: Callable | None = None,
        stopping: Stopping | None = None,
        weights: Sequence[np.ndarray] | None = None,
        **options: Any,
    ) -> Record:
        """Run the chains; return a :class:`~dlngeo.dynamics.record.Record`.

        ``weights``: initial factors ``W_1 .. W_N`` (every chain starts there;
        ``start`` is then ignored); default: a balanced factorization of ``start``.
        """
        o, depth, seed, rng = self._begin(rng, depth, options)
        if weights is not None:
            if len(weights) != depth:
                raise ValueError(f"weights must hold N = {depth} factors, got {len(weights)}")
            dims = (np.shape(weights[0])[1], *(np.shape(W)[0] for W in weights))
            net = DeepLinearNetwork(dims)
            W0 = net.check_weights(weights)
            if not all(np.all(np.isfinite(W)) for W in W0):
                raise ValueError("weights must be finite")
            weights_c = [[W.copy() for W in W0] for _ in range(o["chains"])]
            single = o["chains"] == 1
        else:
            X0 = _check_start(start, o["chains"])
            single = np.ndim(start) == 2 and o["chains"] == 1
            _, m, n = X0.shape
            hidden = list(o["widths"]) if o["widths"] is not None else [min(m, n)] * (depth - 1)
            if len(hidden) != depth - 1:
                raise ValueError(f"widths must list the N - 1 = {depth - 1} hidden widths")
            net = DeepLinearNetwork((n, *hidden, m))
            weights_c = [net.balanced(x, rng=rng) for x in X0]
        stepper = _FactorStepper(rng, loss, net, weights_c, depth, o, single)
        info = {"beta": o["beta"], "step": o["step"], "chains": len(weights_c), "seed": seed}
        info["dims"] = net.dims
        return run_chains(
            self.name, stepper, metrics=metrics, callback=callback, info=info, stopping=stopping
        )
