r"""Langevin samplers: the Riemannian Langevin equation on :math:`(M, g_N)` and Langevin on the factors.

**RLE** (Menon 2024; MATH.md §6, MATH-NOTES §5.3). The diffusion on the
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
array and one batched SVD per step). :class:`RiemannianLangevin` also runs on
the rank-r manifold from a low-rank point ``(u, s, vt)`` (tangent drift plus
the metric-projection retraction, :mod:`.lowrank_langevin`);
:class:`~dlngeo.thermodynamics.mala.RiemannianMALA` and :class:`OverparametrizedLangevin` do not
(``NotImplementedError``: a MALA on ``M_r`` needs the proposal density of the
retraction, which is not derived here).
"""

from __future__ import annotations

import time as _time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..dynamics.record import Record
from ..lowrank import is_lowrank_point
from ..network import DeepLinearNetwork
from ..state import State
from ..validation import check_depth as _check_depth
from ..validation import positive_number
from .entropy import check_beta, entropy_from_singular_values
from .lowrank_langevin import check_lowrank_start, lowrank_step
from .rle import DRIFTS, SCHEMES, Geometry, carry_svd, drift_basis, layer_step, rle_drift

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
def _check_step(step: Any) -> float:
    return positive_number(step, "step")


def _check_count(value: Any, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


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


def _batch_call(fn_batched: bool, fn: Callable[[np.ndarray], Any], X: np.ndarray) -> np.ndarray:
    if fn_batched:
        return np.asarray(fn(X), dtype=float)
    return np.stack([np.asarray(fn(x), dtype=float) for x in X])


def _to_dense_gradient(G: Any) -> np.ndarray:
    if hasattr(G, "toarray"):
        return G.toarray()
    if hasattr(G, "to_dense"):
        return G.to_dense()
    return np.asarray(G, dtype=float)


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
        o["step"] = _check_step(o["step"])
        o["n_steps"] = _check_count(o["n_steps"], "n_steps", 0)
        o["chains"] = _check_count(o["chains"], "chains", 1)
        if o["record_every"] is None:
            o["record_every"] = max(1, o["n_steps"] // 100)
        o["record_every"] = _check_count(o["record_every"], "record_every", 1)
        if o["drift"] not in DRIFTS:
            raise ValueError(f"drift must be one of {DRIFTS}, got {o['drift']!r}")
        if o["scheme"] not in SCHEMES:
            raise ValueError(f"scheme must be one of {SCHEMES}, got {o['scheme']!r}")
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

    def _record_point(
        self,
        record: Record,
        X: np.ndarray,
        loss: Any,
        batched: bool,
        o: dict,
        depth: int,
        it: int,
        metrics: dict[str, Callable[[State], Any]] | None,
        callback: Callable | None = None,
        weights: list[np.ndarray] | None = None,
    ) -> None:
        E = _batch_call(batched, loss.value, X)
        s = np.linalg.svd(X, compute_uv=False)
        hidden = o["widths"] if o["widths"] is not None else [min(X.shape[1:])] * (depth - 1)
        values = {"loss": float(np.mean(E))}
        if all(
            w >= s.shape[-1] for w in hidden
        ):  # else X (full rank) is not a product of these widths
            S = entropy_from_singular_values(s, depth, hidden)
            values["entropy"] = float(np.mean(S))
            values["free_energy"] = float(np.mean(E - S / o["beta"]))
        t = it * o["step"]
        state = State(point=X[0], loss=loss, weights=weights, depth=depth, time=t, iteration=it)
        for name, metric in (
            metrics or {}
        ).items():  # the caller's metrics (chain 0) take precedence
            values[name] = metric(state)
        record.append(t, it, values)
        if o["keep_samples"]:
            record.info.setdefault("singular_values", []).append(s)
        if callback is not None:
            callback(state, record)

    @staticmethod
    def _finish(record: Record, X: Any, single: bool, start_time: float, it: int) -> Record:
        """Final point (one chain or the stack; a tuple of stacks for low-rank points), counts, wall time."""
        if isinstance(X, tuple):
            record.final_point = tuple(a[0].copy() if single else a.copy() for a in X)
        else:
            record.final_point = X[0].copy() if single else X.copy()
        record.n_iterations = it
        record.wall_time_s = _time.perf_counter() - start_time
        if "singular_values" in record.info:
            record.info["singular_values"] = np.stack(record.info["singular_values"])
        return record


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
        **options: Any,
    ) -> Record:
        """Run the chains; return a :class:`~dlngeo.dynamics.record.Record`.

        ``start``: a dense full-rank ``m x n`` matrix or a ``(chains, m, n)`` stack;
        or a low-rank point ``(u, s, vt)`` (``s > 0``), or stacks
        ``(chains, m, r), (chains, r), (chains, r, n)``: the chains then stay on
        ``M_r``. ``record.final_point`` has the form of ``start`` (one chain:
        a single matrix / point). Stops with ``stop_reason = "diverged"`` when a
        chain becomes non-finite or loses rank (``K`` has a zero; on ``M_r``:
        ``s_r <= 1e-12 s_1``); ``final_point`` is then the last finite state.
        """
        o = self._options(options)
        depth = _check_depth(depth)
        seed = rng if isinstance(rng, (int, np.integer)) else None
        rng = np.random.default_rng(rng)
        if is_lowrank_point(start):
            return self._sample_lowrank(rng, seed, loss, start, depth, metrics, callback, o)
        X = _check_start(start, o["chains"])
        single = np.ndim(start) == 2 and o["chains"] == 1
        C, m, n = X.shape
        batched = bool(getattr(loss, "batched", False))
        beta, h = o["beta"], o["step"]
        record = Record(
            method=self.name,
            info={"beta": beta, "step": h, "chains": C, "drift": o["drift"], "seed": seed},
        )
        t0 = _time.perf_counter()
        self._record_point(record, X, loss, batched, o, depth, 0, metrics, callback)
        noise_scale = np.sqrt(2.0 * h / beta)
        it = 0
        carried = None  # the SVD of X from the previous layer step
        excess = o["widths"] is not None and any(w > min(m, n) for w in o["widths"])
        for it in range(1, o["n_steps"] + 1):
            G = _batch_call(batched, lambda Y: _to_dense_gradient(loss.gradient(Y)), X)
            # a fresh SVD every 64 steps keeps the carried frames orthonormal to rounding
            geo = Geometry(X, depth, None if it % 64 == 1 else carried)
            xi = geo.to_basis(
                rng.standard_normal(X.shape)
            )  # U^T dB V: the ambient increments in the singular basis
            b = drift_basis(geo, G, beta, depth, o["widths"], o["drift"])
            step_b = h * b + noise_scale * np.sqrt(geo.K) * xi
            carried = None
            if o["scheme"] == "layer" and depth > 1:
                out_b, frames = layer_step(geo, b, step_b, xi, h, beta, depth, o["drift"], excess)
                X_new = geo.from_basis(out_b)
                if np.all(np.isfinite(X_new)):
                    carried = carry_svd(geo, X_new, frames)
            else:
                X_new = X + geo.from_basis(step_b)
            if not np.all(np.isfinite(X_new)) or np.any(geo.K <= 0):
                record.stop_reason = "diverged"
                it -= 1
                break
            X = X_new
            if it % o["record_every"] == 0 or it == o["n_steps"]:
                self._record_point(record, X, loss, batched, o, depth, it, metrics, callback)
        record.evaluations = {"gradient": it * C, "loss": len(record.times) * C}
        return self._finish(record, X, single, t0, it)

    def _sample_lowrank(self, rng, seed, loss, start, depth, metrics, callback, o) -> Record:
        """The RLE on ``(M_r, g_N)`` from a ``(u, s, vt)`` point (or stacks of them): see :mod:`.lowrank_langevin`."""
        U, s, Vt = check_lowrank_start(start, o["chains"])
        single = np.ndim(start[1]) == 1 and o["chains"] == 1
        C, m, r = U.shape
        n = Vt.shape[2]
        widths = o["widths"] if o["widths"] is not None else [min(m, n)] * (depth - 1)
        if any(w < r for w in widths):
            raise ValueError(f"widths must be >= the rank {r}")
        batched = bool(getattr(loss, "batched", False))
        beta, h = o["beta"], o["step"]
        record = Record(
            method=self.name,
            info={
                "beta": beta,
                "step": h,
                "chains": C,
                "drift": o["drift"],
                "seed": seed,
                "rank": r,
            },
        )
        t0 = _time.perf_counter()

        def points(U, s, Vt):
            return [(U[c], s[c], Vt[c]) for c in range(C)]

        def energy(U, s, Vt):
            if batched:
                return np.asarray(loss.value((U * s[:, None, :]) @ Vt), dtype=float)
            return np.array([float(loss.value(p)) for p in points(U, s, Vt)])

        def gradient(U, s, Vt):
            if batched:
                return np.asarray(loss.gradient((U * s[:, None, :]) @ Vt), dtype=float)
            return [loss.gradient(p) for p in points(U, s, Vt)]

        def record_point(it):
            E = energy(U, s, Vt)
            S = entropy_from_singular_values(s, depth, widths)
            values = {
                "loss": float(np.mean(E)),
                "entropy": float(np.mean(S)),
                "free_energy": float(np.mean(E - S / beta)),
            }
            state = State(
                point=(U[0], s[0], Vt[0]), loss=loss, depth=depth, time=it * h, iteration=it
            )
            for name, metric in (metrics or {}).items():
                values[name] = metric(state)
            record.append(it * h, it, values)
            if o["keep_samples"]:
                record.info.setdefault("singular_values", []).append(s.copy())
            if callback is not None:
                callback(state, record)

        record_point(0)
        it = 0
        for it in range(1, o["n_steps"] + 1):
            U_new, s_new, Vt_new = lowrank_step(
                rng,
                U,
                s,
                Vt,
                gradient(U, s, Vt),
                beta=beta,
                step=h,
                depth=depth,
                widths=widths,
                drift=o["drift"],
            )
            finite = (
                np.all(np.isfinite(U_new))
                and np.all(np.isfinite(s_new))
                and np.all(np.isfinite(Vt_new))
            )
            if not finite or np.any(
                s_new[:, -1] <= 1e-12 * s_new[:, 0]
            ):  # left M_r (rank collapse)
                record.stop_reason = "diverged"
                it -= 1
                break
            U, s, Vt = U_new, s_new, Vt_new
            if it % o["record_every"] == 0 or it == o["n_steps"]:
                record_point(it)
        record.evaluations = {"gradient": it * C, "loss": len(record.times) * C}
        return self._finish(record, (U, s, Vt), single, t0, it)


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
        weights: Sequence[np.ndarray] | None = None,
        **options: Any,
    ) -> Record:
        """Run the chains; return a :class:`~dlngeo.dynamics.record.Record`.

        ``weights``: initial factors ``W_1 .. W_N`` (every chain starts there;
        ``start`` is then ignored); default: a balanced factorization of ``start``.
        """
        o = self._options(options)
        depth = _check_depth(depth)
        seed = rng if isinstance(rng, (int, np.integer)) else None
        rng = np.random.default_rng(rng)
        if weights is not None:
            if len(weights) != depth:
                raise ValueError(f"weights must hold N = {depth} factors, got {len(weights)}")
            dims = (np.shape(weights[0])[1], *(np.shape(W)[0] for W in weights))
            net = DeepLinearNetwork(dims)
            W0 = net.check_weights(weights)
            if not all(np.all(np.isfinite(W)) for W in W0):
                raise ValueError("weights must be finite")
            C = o["chains"]
            weights_c = [[W.copy() for W in W0] for _ in range(C)]
            X0 = np.stack([net.product(W) for W in weights_c])
            single = C == 1
            o["widths"] = list(dims[1:-1])
        else:
            X0 = _check_start(start, o["chains"])
            single = np.ndim(start) == 2 and o["chains"] == 1
            C, m, n = X0.shape
            hidden = list(o["widths"]) if o["widths"] is not None else [min(m, n)] * (depth - 1)
            if len(hidden) != depth - 1:
                raise ValueError(f"widths must list the N - 1 = {depth - 1} hidden widths")
            net = DeepLinearNetwork((n, *hidden, m))
            weights_c = [net.balanced(x, rng=rng) for x in X0]
        batched = False
        beta, h = o["beta"], o["step"]
        scale = np.sqrt(2.0 * h / beta)
        record = Record(
            method=self.name,
            info={"beta": beta, "step": h, "chains": C, "seed": seed, "dims": net.dims},
        )
        t0 = _time.perf_counter()
        X = np.stack([net.product(W) for W in weights_c])
        self._record_point(record, X, loss, batched, o, depth, 0, metrics, callback, weights_c[0])
        it = 0
        for it in range(1, o["n_steps"] + 1):
            new = []
            for W, x in zip(weights_c, X):
                grads = net.gradients(W, _to_dense_gradient(loss.gradient(x)))
                new.append(
                    [
                        Wk - h * gk + scale * rng.standard_normal(Wk.shape)
                        for Wk, gk in zip(W, grads)
                    ]
                )
            Xn = np.stack([net.product(W) for W in new])
            if not np.all(np.isfinite(Xn)):
                record.stop_reason = "diverged"
                it -= 1
                break
            weights_c, X = new, Xn
            if it % o["record_every"] == 0 or it == o["n_steps"]:
                self._record_point(
                    record, X, loss, batched, o, depth, it, metrics, callback, weights_c[0]
                )
        record.final_weights = [W.copy() for W in weights_c[0]]
        record.evaluations = {"gradient": it * C, "loss": len(record.times) * C}
        return self._finish(record, X, single, t0, it)
