"""What data a loss needs: the contract of the ``dlngeo_register_problems`` hook.

``dlngeo run`` builds a loss from a config in two steps. First the *problem
function* registered under the loss's name turns the config's data tables
(``[target]``, ``[observations]``, ``[inputs]``, ...) and the seeded random
generator into the loss factory's data keywords; then the loss factory is
called with those and the ``[loss]`` options. A plugin registers one::

    @dlngeo.hookimpl
    def dlngeo_register_problems(register):
        register("my_loss", my_data, description="what my_loss is trained on")

    def my_data(problem: ProblemContext) -> LossData:
        problem.require("target", "observations")
        rows, cols = problem.sample("observations")
        return LossData(
            options={"rows": rows, "cols": cols, "values": entries(problem.target, rows, cols)},
            data={"rows": rows, "cols": cols},  # extra state.data for the metrics
        )

A loss with no problem function gets only its ``[loss]`` options (and a
config with ``[observations]`` or ``[data]`` is refused). ``[data]`` is a free
table for a plugin's problem function: its own settings and nested sampler
tables (``[data.noise] sampler = ...``, drawn with ``problem.sample("data.noise")``). The target ``M*`` is drawn from
``[target]`` before the problem function runs; every draw uses the one
generator ``problem.rng`` (seeded by ``seed``), in the order the function
makes them, then the initialization draws the factors: same seed, same data.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .config import ConfigError

__all__ = ["LossData", "ProblemContext", "ProblemFunction"]


@dataclass
class LossData:
    """What a problem function returns.

    Attributes:
        options: Keyword arguments of the loss factory (the data); they win
            over ``[loss]`` options of the same name.
        data: Extra entries of ``state.data`` that the metrics see (next to
            ``target``), e.g. the observed ``rows`` and ``cols``.
        visible_target: The target as the learner may see it (the
            initialization sampler's ``target``, e.g. ``spectral``): ``M*``
            when it is the loss's own data (the whitened regression), else
            ``None`` (hidden behind observations or inputs).
    """

    options: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    visible_target: Any = None


class ProblemContext:
    """What a problem function gets: the config's data tables, the generator, the target.

    Attributes:
        loss: The loss's registry name (``loss.name``).
        options: The ``[loss]`` options (without ``name``), read-only.
        shape: ``(m, n)``, the end-to-end shape.
        rng: The run's ``numpy.random.Generator``; draw from it only.
        target: ``M*`` as the ``[target]`` sampler returned it (dense or
            ``(u, s, vt)``), or ``None`` without ``[target]``.
        config: The whole (validated) config, read-only.
    """

    def __init__(
        self,
        loss: str,
        options: dict[str, Any],
        shape: tuple[int, int],
        rng: np.random.Generator,
        target: Any,
        config: dict[str, Any],
        sample: Callable[[str], Any],
    ):
        self.loss, self.options, self.shape = loss, options, shape
        self.rng, self.target, self.config = rng, target, config
        self._sample = sample

    def table(self, key: str) -> Any:
        """The config table (or value) at ``key``, dotted for nested tables
        (``"data.noise"``: ``[data.noise]``), or ``None`` when the config has none."""
        value: Any = self.config
        for part in key.split("."):
            if not isinstance(value, dict) or part not in value:
                return None
            value = value[part]
        return value

    def require(self, *keys: str) -> None:
        """Raise :class:`~dlngeo.config.ConfigError` at the first of ``keys`` the config lacks."""
        for key in keys:
            present = self.target is not None if key == "target" else self.table(key) is not None
            if not present:
                raise ConfigError(key, f"is required by loss {self.loss!r}")

    def refuse(self, key: str, hint: str = "") -> None:
        """Raise :class:`~dlngeo.config.ConfigError` at ``key`` if the config has that table."""
        if self.table(key) is not None:
            raise ConfigError(key, f"loss {self.loss!r} takes no {key}{hint}")

    def sample(self, key: str) -> Any:
        """Draw from the data sampler of the table at ``key`` (dotted for nested tables).

        The table's ``sampler`` names a sampler of kind ``"data"``; its other
        keys are the sampler's options, ``shape`` defaulting to ``(m, n)``.
        Errors are :class:`~dlngeo.config.ConfigError` at ``key``.
        """
        return self._sample(key)


#: ``make_data(problem) -> LossData``, registered per loss name.
ProblemFunction = Callable[[ProblemContext], LossData]
