"""The hooks a dlngeo plugin can implement (pluggy, project name ``dlngeo``).

Every hook takes a ``register`` callback (the style of simonw/llm)::

    register(name: str, factory: Callable[..., Any], *, description: str = "")

``factory(**options)`` builds the object: a :class:`~dlngeo.losses.Loss`, a
metric (a callable ``metric(state) -> float | ndarray`` of a
:class:`~dlngeo.state.State`), a sampler, or a solver (a method that runs on a
problem and returns a :class:`~dlngeo.dynamics.record.Record`). A problem
function (``dlngeo_register_problems``) is registered under a loss's name
and gives that loss its data (:mod:`dlngeo.problems`). Built-in
plugins in ``plugins/`` use exactly these hooks. A plugin module::

    import dlngeo

    @dlngeo.hookimpl
    def dlngeo_register_losses(register):
        register("my_loss", MyLoss, description="one line for `dlngeo plugins`")

declared in its ``pyproject.toml`` under ``[project.entry-points.dlngeo]``
(CONTRIBUTING.md, "Write a plugin"). Names are identifiers (letters, digits,
``_ - .``); a name registered by two plugins is an error when looked up.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pluggy

hookspec = pluggy.HookspecMarker("dlngeo")
hookimpl = pluggy.HookimplMarker("dlngeo")

Register = Callable[..., Any]


@hookspec
def dlngeo_register_losses(register: Register) -> None:
    """Register loss factories: ``register(name, factory, description=...)``; ``factory(**options) -> Loss``."""


@hookspec
def dlngeo_register_metrics(register: Register) -> None:
    """Register metric factories; ``factory(**options)`` returns a callable of a :class:`~dlngeo.state.State`."""


@hookspec
def dlngeo_register_samplers(register: Register) -> None:
    """Register samplers: initializations, data and Markov chains, each with one signature
    (:mod:`dlngeo.samplers`); ``factory(**options)`` returns the sampler, whose ``kind`` says which."""


@hookspec
def dlngeo_register_solvers(register: Register) -> None:
    """Register methods (flows, descents, Riemannian solvers, samplers run as methods)."""


@hookspec
def dlngeo_register_problems(register: Register) -> None:
    """Register, per loss name, the data it is trained on: ``register(loss_name, make_data)``.

    ``make_data(problem)`` turns the config's data tables into the loss
    factory's data keywords (:mod:`dlngeo.problems`: ``ProblemContext`` in,
    ``LossData`` out).
    """
