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
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from dlngeo.hookspecs import hookimpl
from dlngeo.lowrank import is_lowrank_point
from dlngeo.thermodynamics import entropy, free_energy
from dlngeo.thermodynamics.entropy import check_beta
from dlngeo.thermodynamics.langevin import OverparametrizedLangevin, RiemannianLangevin, RiemannianMALA

__all__ = ["Entropy", "FreeEnergy"]


def _check_optional_int(value: Any, name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer or None, got {value!r}")
    return int(value)


class Entropy:
    """Boltzmann entropy S(X) = log vol of the balanced fibre over X (Menon & Yu 2024)."""

    name = "entropy"

    def __init__(self, widths: Sequence[int] | None = None, depth: int | None = None, rank: int | None = None):
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
            return (np.asarray(u)[:, : self.rank], np.asarray(s)[: self.rank], np.asarray(vt)[: self.rank])
        u, s, vt = np.linalg.svd(np.asarray(point, dtype=float), full_matrices=False)
        return (u[:, : self.rank], s[: self.rank], vt[: self.rank])

    def __call__(self, state: Any) -> float:
        return entropy(self._point(state), self.depth or state.depth, widths=self.widths)


class FreeEnergy(Entropy):
    """Free energy F = E - S / beta at inverse temperature beta (Menon 2024)."""

    name = "free_energy"

    def __init__(self, beta: float | None = None, widths: Sequence[int] | None = None, depth: int | None = None,
                 rank: int | None = None):
        if beta is None:
            raise ValueError("free_energy metric needs the option beta (inverse temperature > 0)")
        self.beta = check_beta(beta)
        super().__init__(widths=widths, depth=depth, rank=rank)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(beta={self.beta!r}, widths={self.widths!r}, depth={self.depth!r}, rank={self.rank!r})"

    def __call__(self, state: Any) -> float:
        if state.loss is None:
            raise ValueError("free_energy metric needs state.loss")
        return free_energy(self._point(state), state.loss, self.beta, self.depth or state.depth, widths=self.widths)


@hookimpl
def dlngeo_register_metrics(register):
    register("entropy", Entropy, description=Entropy.__doc__)
    register("free_energy", FreeEnergy, description=FreeEnergy.__doc__)


@hookimpl
def dlngeo_register_samplers(register):
    for cls in (RiemannianLangevin, RiemannianMALA, OverparametrizedLangevin):
        register(cls.name, cls, description=f"[{cls.kind}] " + cls.__doc__.strip().splitlines()[0])
