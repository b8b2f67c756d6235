r"""Markov chains as steppers of the one driver: the Langevin samplers' run loop and records.

Every sampler (:class:`~dlngeo.thermodynamics.langevin.RiemannianLangevin`
dense and on :math:`M_r`, :class:`~dlngeo.thermodynamics.mala.RiemannianMALA`,
:class:`~dlngeo.thermodynamics.langevin.OverparametrizedLangevin`) is a
:class:`ChainStepper`: ``C`` chains advanced together, one
:class:`~dlngeo.dynamics.driver.Stepper` step per sampler step. :func:`run_chains`
runs it with :func:`dlngeo.dynamics.driver.drive` for at most ``n_steps``
steps under the caller's :class:`~dlngeo.dynamics.base.Stopping` (default: no
other criterion), so the samplers share the driver's loop, its
:class:`~dlngeo.dynamics.driver.Recorder` and its stopping path: ``end_time``
(flow time ``t = h k``), ``max_time``, ``loss_below`` (on ``mean_c E_c``) and
``stall_window`` apply as to any method. A chain never stops ``stationary``
(its iterates do not settle) and ``divergence_factor`` does not apply (its
energy rises from a cold start to the equilibrium level by design): only a
non-finite step is ``diverged``.

**Records.** The chains' energies ``E_c`` and the entropies ``S_c`` of their
singular values are evaluated where the driver observes (:meth:`ChainStepper.observe`):
at the initial state, every ``record_every``-th step and the last one, and at
every step only when a stopping criterion needs the loss. The record holds
``loss = mean_c E_c`` and, when every hidden width is at least the rank,
``entropy = mean_c S_c`` and ``free_energy = mean_c (E_c - S_c / beta)``; the
caller's metrics are evaluated on chain 0 (and take precedence over these
names). ``keep_samples`` keeps every recorded stack of singular values in
``record.info["singular_values"]``.

**Divergence.** A step whose result is non-finite (or leaves the manifold)
is not taken: it raises :class:`~dlngeo.dynamics.driver.NumericalFailure`, the
run stops with ``"diverged"``, and the last finite state is recorded and
returned.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..dynamics.base import Stopping
from ..dynamics.driver import NumericalFailure, Stepper, drive
from ..dynamics.record import Record
from ..state import State
from .entropy import entropy_from_singular_values

__all__ = ["ChainStepper", "DenseChainStepper", "run_chains", "batch_call", "dense_gradient"]


def batch_call(fn_batched: bool, fn: Callable[[np.ndarray], Any], X: np.ndarray) -> np.ndarray:
    """``fn`` on a ``(C, m, n)`` stack: at once when ``fn`` is vectorised, else chain by chain."""
    if fn_batched:
        return np.asarray(fn(X), dtype=float)
    return np.stack([np.asarray(fn(x), dtype=float) for x in X])


def dense_gradient(G: Any) -> np.ndarray:
    """The dense array of an ambient gradient (dense, scipy.sparse, factored)."""
    if hasattr(G, "toarray"):
        return G.toarray()
    if hasattr(G, "to_dense"):
        return G.to_dense()
    return np.asarray(G, dtype=float)


class ChainStepper(Stepper):
    """``C`` chains of a sampler with a fixed step ``h``; flow time ``t = h k``.

    Subclasses implement :meth:`start`, :meth:`step` (call :meth:`_advance`
    after a step that was taken, :meth:`_fail` instead of taking a non-finite
    one), :meth:`energies` (``(C,)``),
    :meth:`singular_values` (``(C, k)``), :meth:`chain0` and :meth:`final`.

    Args:
        loss: The energy ``E``.
        depth: ``N``.
        options: The sampler's validated options (``beta``, ``step``,
            ``n_steps``, ``record_every``, ``keep_samples``).
        chains: ``C``.
        single: Whether the result is one chain (``final_point`` a single point).
        widths: Hidden widths of the entropy.
    """

    def __init__(
        self,
        loss: Any,
        depth: int,
        options: dict[str, Any],
        chains: int,
        single: bool,
        widths: Sequence[int],
    ):
        self.stationary_floor = None  # a chain's iterates do not settle
        self.relative_divergence = False  # only a non-finite step diverges
        self.loss_fn = loss
        self.depth = depth
        self.beta = options["beta"]
        self.h = options["step"]
        self.n_steps = options["n_steps"]
        self.record_every = options["record_every"]
        self.keep_samples = options["keep_samples"]
        self.chains = chains
        self.single = single
        self.widths = list(widths)
        self.observed: dict[str, float] = {}
        self._observed_at = -1
        self._energy_evaluations = 0
        self._samples: list[np.ndarray] = []

    # ------------------------------------------------------------ subclass API
    def energies(self) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def singular_values(self) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def chain0(self) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def final(self) -> Any:  # pragma: no cover - abstract
        """The chains' state as a point or a stack (a tuple of stacks at low rank)."""
        raise NotImplementedError

    @property
    def has_entropy(self) -> bool:
        """The entropy is defined when every hidden width is at least the rank."""
        return True

    # ------------------------------------------------------------ shared
    def point(self) -> Any:
        return self.final()

    def observe(self) -> None:
        """Evaluate the energies, singular values and entropies at the current state (once per iteration)."""
        if self._observed_at == self.iteration:
            return
        self._observed_at = self.iteration
        E = self.energies()
        self._energy_evaluations += 1
        self._singular_values = s = self.singular_values()
        self.loss = float(np.mean(E))
        if self.has_entropy:
            S = entropy_from_singular_values(s, self.depth, self.widths)
            self.observed = {
                "entropy": float(np.mean(S)),
                "free_energy": float(np.mean(E - S / self.beta)),
            }

    def keep(self) -> None:
        """With ``keep_samples``, keep the observed singular values (called once per record)."""
        if self.keep_samples:
            self.observe()
            self._samples.append(self._singular_values)

    def _advance(self) -> None:
        """Count a step that was taken."""
        self.iteration += 1
        self.t = self.iteration * self.h

    def _fail(self, reason: str) -> None:
        """Keep the last finite state (it is the final record) and stop ``diverged``."""
        raise NumericalFailure(reason)

    def evaluations(self) -> dict[str, int]:
        return {
            "gradient": self.iteration * self.chains,
            "loss": self._energy_evaluations * self.chains,
        }


class DenseChainStepper(ChainStepper):
    """Chains on a dense ``(C, m, n)`` stack ``X``; hidden widths default to ``min(m, n)``.

    ``batched``: whether the energy is evaluated on the stack at once (default:
    the loss's ``batched`` flag) or chain by chain.
    """

    def __init__(
        self,
        loss: Any,
        X: np.ndarray,
        depth: int,
        options: dict[str, Any],
        single: bool,
        widths: Sequence[int] | None = None,
        batched: bool | None = None,
    ):
        C, m, n = X.shape
        self.rank = min(m, n)
        if widths is None:
            widths = (
                options["widths"] if options["widths"] is not None else [self.rank] * (depth - 1)
            )
        super().__init__(loss, depth, options, C, single, widths)
        self.X = X
        self.batched = bool(getattr(loss, "batched", False)) if batched is None else batched

    @property
    def has_entropy(self) -> bool:
        return all(w >= self.rank for w in self.widths)  # else X is not a product of these widths

    def energies(self) -> np.ndarray:
        return batch_call(self.batched, self.loss_fn.value, self.X)

    def singular_values(self) -> np.ndarray:
        return np.linalg.svd(self.X, compute_uv=False)

    def chain0(self) -> np.ndarray:
        return self.X[0]

    def final(self) -> np.ndarray:
        return self.X[0] if self.single else self.X

    def start(self) -> None:
        self.observe()


class _ChainTask:
    """What the driver's :class:`~dlngeo.dynamics.driver.Recorder` needs of a task, for chains."""

    def __init__(self, stepper: ChainStepper, metrics: dict[str, Callable[[State], Any]]):
        self.stepper = stepper
        self.loss = stepper.loss_fn
        self.metrics = metrics

    def state(
        self, point: Any, *, weights: Any = None, time: float = 0.0, iteration: int = 0
    ) -> State:
        """The state of chain 0 (``point`` is the stack the stepper returned); called once per record."""
        self.stepper.keep()
        return State(
            point=self.stepper.chain0(),
            loss=self.loss,
            weights=weights,
            depth=self.stepper.depth,
            time=time,
            iteration=iteration,
        )


def run_chains(
    name: str,
    stepper: ChainStepper,
    *,
    metrics: dict[str, Callable[[State], Any]] | None,
    callback: Callable | None,
    info: dict[str, Any],
    stopping: Stopping | None = None,
) -> Record:
    """Run ``stepper`` with :func:`~dlngeo.dynamics.driver.drive`; return the Record.

    It runs at most ``n_steps`` steps (fewer if ``stopping.max_iterations`` is
    smaller), and stops earlier on any other criterion of ``stopping``.
    ``record.final_point`` has the form of the start (one chain: a single
    point; else the stack), ``record.final_weights`` the factors of chain 0
    (factor samplers).
    """
    observed: dict[str, Callable[[State], Any]] = {}
    if stepper.has_entropy:
        observed = {
            "entropy": lambda state: stepper.observed["entropy"],
            "free_energy": lambda state: stepper.observed["free_energy"],
        }
    task = _ChainTask(stepper, {**observed, **(metrics or {})})
    info = dict(info)
    if stepper.keep_samples:  # filled as the samples are recorded, stacked at the end
        info["singular_values"] = stepper._samples
    if stopping is None:
        stopping = Stopping(max_iterations=stepper.n_steps)
    elif stopping.max_iterations is None or stopping.max_iterations > stepper.n_steps:
        stopping = dataclasses.replace(stopping, max_iterations=stepper.n_steps)
    record = drive(
        name,
        task,  # type: ignore[arg-type]  # duck-typed: loss, metrics, state()
        stepper,
        stopping,
        callback,
        record_every=stepper.record_every,
        info=info,
    )
    final = stepper.final()
    if isinstance(final, tuple):
        record.final_point = tuple(a.copy() for a in final)
    else:
        record.final_point = final.copy()
    if record.final_weights is not None:
        record.final_weights = [W.copy() for W in record.final_weights]
    if stepper.keep_samples:
        record.info["singular_values"] = np.stack(stepper._samples)
    return record
