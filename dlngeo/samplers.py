"""The three things a sampler is, one signature each: initializations, data, Markov chains.

Every sampler is registered through ``dlngeo_register_samplers`` (config keys
``init.sampler``, ``target.sampler``, ``observations.sampler``;
:func:`dlngeo.create_sampler`) and says which of the three it is with its
``kind`` attribute:

* ``"initialization"`` (:class:`Initialization`):
  ``sample(rng, network, target=None, loss=None) -> [W_1, ..., W_N]``;
* ``"data"`` (:class:`DataSampler`): ``sample(rng)`` -> ``M*``, ``(rows, cols)``,
  the measurement matrices ``A``, ...;
* ``"langevin"`` (:class:`MarkovChain`): ``sample(rng, *, loss, start, depth,
  metrics=None, callback=None, stopping=None, **options) -> Record``.

:func:`dlngeo.create_initialization`, :func:`dlngeo.create_data_sampler` and
:func:`dlngeo.create_chain` build one and check its kind (a ``ValueError``
naming both kinds otherwise); ``dlngeo run`` does the same for each config
table, so ``init.sampler = "uniform_mask"`` is one line at ``init.sampler``.
``rng`` is a ``numpy.random.Generator`` (or a seed), the only source of
randomness.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import numpy as np

__all__ = [
    "CHAIN",
    "DATA",
    "INITIALIZATION",
    "SAMPLER_KINDS",
    "DataSampler",
    "Initialization",
    "MarkovChain",
    "check_sampler_kind",
]

INITIALIZATION = "initialization"
DATA = "data"
#: The Markov chains' kind (the Langevin and MALA chains of :mod:`dlngeo.thermodynamics`).
CHAIN = "langevin"


@runtime_checkable
class Initialization(Protocol):
    """Initial factors of a network: ``sample(rng, network, target=None, loss=None)``.

    ``dlngeo run`` calls it with ``network``, ``target`` (``M*`` only when it
    is the loss's own data, else ``None``) and ``loss``; it returns the
    factors ``[W_1, ..., W_N]``, ``W_k`` of shape ``(d_k, d_{k-1})``.
    """

    kind: str

    def sample(
        self, rng: Any, network: Any, target: Any = None, loss: Any = None
    ) -> list[np.ndarray]: ...


@runtime_checkable
class DataSampler(Protocol):
    """Synthetic data: ``sample(rng)``; ``M*`` for ``[target]``, what the loss's problem function
    expects for the other tables (``(rows, cols)``, a ``k x m x n`` array, ...)."""

    kind: str

    def sample(self, rng: Any) -> Any: ...


@runtime_checkable
class MarkovChain(Protocol):
    """A Markov chain on the matrices or the factors: ``sample(rng, *, loss, start, depth, ...)``
    returns a :class:`~dlngeo.dynamics.record.Record` of its samples."""

    kind: str

    def sample(
        self,
        rng: Any,
        *,
        loss: Any,
        start: Any = None,
        depth: int | None = None,
        metrics: Any = None,
        callback: Callable[..., Any] | None = None,
        stopping: Any = None,
        **options: Any,
    ) -> Any: ...


#: ``kind`` -> its protocol.
SAMPLER_KINDS: dict[str, type] = {
    INITIALIZATION: Initialization,
    DATA: DataSampler,
    CHAIN: MarkovChain,
}

_WORDS = {INITIALIZATION: "an initialization", DATA: "a data sampler", CHAIN: "a Markov chain"}


def check_sampler_kind(sampler: Any, kind: str, name: str = "") -> Any:
    """``sampler`` if its ``kind`` is ``kind``; else a one-line ``ValueError`` naming both."""
    if kind not in SAMPLER_KINDS:
        raise ValueError(f"kind must be one of {', '.join(SAMPLER_KINDS)}, got {kind!r}")
    found = getattr(sampler, "kind", None)
    if found != kind:
        what = _WORDS.get(found, f"of kind {found!r}") if isinstance(found, str) else "of no kind"
        label = f"sampler {name!r}" if name else "the sampler"
        raise ValueError(f"{label} is {what}, not {_WORDS[kind]}")
    return sampler
