r"""Built-in thermodynamics plugin: the entropy and free-energy metrics and the Langevin samplers.

Metrics (``dlngeo_register_metrics``), ``metric(state) -> float``:

* ``entropy``: :math:`S(X) = \log\operatorname{vol}(O_X)`, the Boltzmann entropy
  of the balanced fibre over ``state.point`` (:func:`dlngeo.thermodynamics.entropy`).
  Options: ``widths`` (hidden widths), ``depth`` (default ``state.depth``),
  ``rank`` (evaluate on ``M_rank`` from the top-``rank`` SVD of a dense point;
  default: a dense point is full rank, a ``(u, s, vt)`` point has rank ``len(s)``).
* ``free_energy``: :math:`F_\beta = E - S/\beta` with ``E = state.loss``.
  Options: ``beta`` (required, ``> 0``) and those of ``entropy``.

Samplers (``dlngeo_register_samplers``, ``kind = "langevin"``),
``sample(rng, *, loss, start, depth, **options) -> Record``:
``riemannian_langevin``, ``riemannian_mala``, ``overparametrized_langevin``
(:mod:`dlngeo.thermodynamics.langevin`).

Solvers (``dlngeo_register_solvers``): the same three, as methods that
``dlngeo compare`` / ``run`` put beside the flows (one chain from the task's
start; ``riemannian_*`` start at ``phi(W_0)``, which must have full rank
``min(m, n)``, except that ``riemannian_langevin`` runs on ``M_r`` from the
top-``r`` SVD when the task's rank ``r`` is below ``min(m, n)``; ``overparametrized_langevin`` starts at ``W_0`` itself). Options:
``beta``, ``step``, ``drift``, ``record_every``, ``scheme`` (``riemannian_langevin``); the run stops on
the criteria of ``stopping`` like any method (``max_iterations`` steps, flow
time ``end_time``, ``max_time``, ``loss_below`` on the chain's energy), never
``stationary``, and ``diverged`` only when a step is non-finite
(:mod:`dlngeo.thermodynamics.chains`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from dlngeo.dynamics.base import Method, Stopping
from dlngeo.hookspecs import hookimpl
from dlngeo.lowrank import is_lowrank_point
from dlngeo.thermodynamics import entropy, free_energy
from dlngeo.thermodynamics.entropy import check_beta
from dlngeo.thermodynamics.langevin import OverparametrizedLangevin, RiemannianLangevin
from dlngeo.thermodynamics.mala import RiemannianMALA
from dlngeo.validation import positive_integer

__all__ = ["Entropy", "FreeEnergy", "LangevinMethod"]


def _check_optional_int(value: Any, name: str) -> int | None:
    return None if value is None else positive_integer(value, name)


class Entropy:
    """Boltzmann entropy S(X) = log vol of the balanced fibre over X (Menon & Yu 2024)."""

    name = "entropy"

    def __init__(
        self, widths: Sequence[int] | None = None, depth: int | None = None, rank: int | None = None
    ):
        self.widths = None if widths is None else [int(w) for w in widths]
        self.depth = _check_optional_int(depth, "depth")
        self.rank = _check_optional_int(rank, "rank")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(widths={self.widths!r}, depth={self.depth!r}, rank={self.rank!r})"

    def _point(self, state: Any) -> Any:
        point = state.point
        if self.rank is None:
            return point
        if is_lowrank_point(point):
            u, s, vt = point
            return (
                np.asarray(u)[:, : self.rank],
                np.asarray(s)[: self.rank],
                np.asarray(vt)[: self.rank],
            )
        u, s, vt = np.linalg.svd(np.asarray(point, dtype=float), full_matrices=False)
        return (u[:, : self.rank], s[: self.rank], vt[: self.rank])

    def __call__(self, state: Any) -> float:
        return entropy(self._point(state), self.depth or state.depth, widths=self.widths)


class FreeEnergy(Entropy):
    """Free energy F = E - S / beta at inverse temperature beta (Menon 2024)."""

    name = "free_energy"

    def __init__(
        self,
        beta: float | None = None,
        widths: Sequence[int] | None = None,
        depth: int | None = None,
        rank: int | None = None,
    ):
        if beta is None:
            raise ValueError("free_energy metric needs the option beta (inverse temperature > 0)")
        self.beta = check_beta(beta)
        super().__init__(widths=widths, depth=depth, rank=rank)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(beta={self.beta!r}, widths={self.widths!r}, depth={self.depth!r}, rank={self.rank!r})"

    def __call__(self, state: Any) -> float:
        if state.loss is None:
            raise ValueError("free_energy metric needs state.loss")
        return free_energy(
            self._point(state), state.loss, self.beta, self.depth or state.depth, widths=self.widths
        )


class LangevinMethod(Method):
    """A Langevin sampler run as a method of ``dlngeo compare`` (one chain, the task's start)."""

    flow_time = True
    #: A chain samples a Gibbs measure: it follows no flow (name it in ``gap`` to compare).
    follows = None
    step_option = "step"
    #: A chain's iterates do not settle: it never stops ``stationary``.
    stops_stationary = False

    def __init__(
        self,
        sampler: type,
        beta: float = 1.0,
        step: float = 1e-3,
        drift: str = "full",
        record_every: int | None = None,
        scheme: str = "layer",
    ):
        extra = {"scheme": scheme} if sampler is RiemannianLangevin else {}
        if scheme != "layer" and sampler is not RiemannianLangevin:
            raise ValueError(
                f"scheme applies to riemannian_langevin only, got scheme={scheme!r} for {sampler.name}"
            )
        self.sampler = sampler(
            beta=beta, step=step, drift=drift, record_every=record_every, **extra
        )
        self.name = sampler.name
        self.overparametrized = sampler is OverparametrizedLangevin

    def __repr__(self) -> str:
        return f"LangevinMethod({self.sampler!r})"

    def run(self, task: Any, stopping: Stopping | None = None, callback: Any = None):
        stopping = stopping or Stopping()
        step = self.sampler.options["step"]
        n_steps = stopping.max_iterations if stopping.max_iterations is not None else 10_000
        if stopping.end_time is not None:
            n_steps = min(n_steps, int(np.ceil(stopping.end_time / step - 1e-9)))
        every = self.sampler.options["record_every"] or max(1, n_steps // 100)
        common = dict(
            loss=task.loss,
            depth=task.depth,
            metrics=task.metrics,
            callback=callback,
            n_steps=int(n_steps),
            record_every=int(min(every, max(1, n_steps))),
            widths=list(task.network.dims[1:-1]),
            stopping=stopping,
        )
        if self.overparametrized:
            record = self.sampler.sample(task.seed, weights=task.initial_weights(), **common)
        elif isinstance(self.sampler, RiemannianLangevin) and task.rank < min(task.X0.shape):
            u, s, vt = np.linalg.svd(
                task.X0, full_matrices=False
            )  # run on M_rank from the top-rank part
            record = self.sampler.sample(
                task.seed, start=(u[:, : task.rank], s[: task.rank], vt[: task.rank]), **common
            )
        else:
            record = self.sampler.sample(task.seed, start=task.X0, **common)
        return record


def _solver_factory(sampler: type):
    def factory(
        beta: float = 1.0,
        step: float = 1e-3,
        drift: str = "full",
        record_every: int | None = None,
        scheme: str = "layer",
    ) -> LangevinMethod:
        return LangevinMethod(
            sampler, beta=beta, step=step, drift=drift, record_every=record_every, scheme=scheme
        )

    factory.__doc__ = sampler.__doc__
    factory.options = ("beta", "step", "drift", "record_every", "scheme")  # type: ignore[attr-defined]
    return factory


@hookimpl
def dlngeo_register_solvers(register):
    for cls in (RiemannianLangevin, RiemannianMALA, OverparametrizedLangevin):
        register(
            cls.name,
            _solver_factory(cls),
            description=f"[langevin] {cls.__doc__.strip().splitlines()[0]}",
        )


@hookimpl
def dlngeo_register_metrics(register):
    register("entropy", Entropy, description=Entropy.__doc__)
    register("free_energy", FreeEnergy, description=FreeEnergy.__doc__)


@hookimpl
def dlngeo_register_samplers(register):
    for cls in (RiemannianLangevin, RiemannianMALA, OverparametrizedLangevin):
        register(cls.name, cls, description=f"[{cls.kind}] " + cls.__doc__.strip().splitlines()[0])
