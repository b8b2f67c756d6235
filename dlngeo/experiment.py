"""Experiments: a config -> a Task -> methods -> a :class:`~dlngeo.comparison.Comparison`.

:func:`build` (:mod:`dlngeo.build`) turns a config (:mod:`dlngeo.config`:
layered TOML, validated) into a :class:`~dlngeo.dynamics.base.Task` and the
methods, through the plugin registry; :mod:`dlngeo.runner` runs them and
:mod:`dlngeo.comparison` holds the result. :func:`compare` runs every
enabled method on that task (the same loss, and the same initial factors, so
the end-to-end start ``phi(W(0))`` of the factor methods is exactly the
start of the end-to-end methods), then measures the trajectory gap
:math:`\\|\\phi(W(t)) - X(t)\\|_F / \\|X(t)\\|_F` between each overparametrized
method and each intrinsic one at common flow times: by default every method
that declares it follows the overparametrized flow against every one that
follows the intrinsic flow (``Method.follows``). Overparametrized methods
run first; an intrinsic method that evaluates ``record_times`` exactly
(``Method.samples_at_times``, a dense output) is then sampled at exactly
their sample times, so the gap is taken at the same flow times
(``alignment = "exact"``). Otherwise ``X(t)`` is interpolated linearly
between the two neighbouring intrinsic samples (``"interpolated"``, an
O(dt^2) error; give both methods the same ``record_times`` to avoid it).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .build import Plan, build
from .comparison import Comparison, Interrupted, trajectory_gap
from .config import (
    DEFAULT_CONFIG,
    QUICK_OVERRIDES,
    ConfigError,
    load_config,
    merge_config,
    network_dims,
    parse_override,
    validate_config,
)
from .runner import BALANCED_TOLERANCE, _warn_unbalanced, run_methods

__all__ = [
    "BALANCED_TOLERANCE",
    "ConfigError",
    "Comparison",
    "Interrupted",
    "DEFAULT_CONFIG",
    "QUICK_OVERRIDES",
    "Plan",
    "build",
    "compare",
    "load_config",
    "merge_config",
    "network_dims",
    "parse_override",
    "trajectory_gap",
    "validate_config",
]


def compare(
    config: dict[str, Any] | str | Path | None = None,
    *,
    progress: bool = False,
    progress_name: str = "dlngeo compare",
    on_start: Callable[[Comparison], None] | None = None,
    on_method: Callable[[Comparison, str], None] | None = None,
) -> Comparison:
    """Run every enabled method of ``config`` on one task and compare them.

    Args:
        config: A complete config: a dict (e.g. ``load_config(["a.toml"], ["seed=3"])``,
            which layers over :data:`DEFAULT_CONFIG`), or the path of one
            complete TOML file; ``None`` runs :data:`DEFAULT_CONFIG`.
        progress: Show a tqdm progress bar (one tick per method; the running
            method's label and last loss).
        progress_name: The bar's name (``"dlngeo run"`` for ``dlngeo run``).
        on_start: Called with the empty comparison (``status "running"``) once
            the config is built and before any method runs (e.g. to create and
            check the output folder).
        on_method: Called with the comparison and a label after each method
            ends (finished, diverged or interrupted), so that results can be
            saved as they come.

    Returns:
        The :class:`Comparison`. When the intrinsic flow runs from a start
        that is not balanced (``problem["balanced_start"]`` false; the
        relative imbalance is ``problem["relative_imbalance"]``), a
        ``UserWarning`` says that it is not the factor methods' trajectory.

    Raises:
        ConfigError: a bad config (one line naming the key).
        Interrupted: Ctrl-C; the comparison so far (finished methods, the
            interrupted one marked ``"interrupted"``) is its ``comparison``.
    """
    if isinstance(config, (str, Path)):
        config = load_config([config], base={})
    config = copy.deepcopy(DEFAULT_CONFIG if config is None else config)
    plan = build(config)
    comparison = Comparison(config=config, problem=plan.problem, status="running")
    _warn_unbalanced(plan)
    if on_start is not None:
        on_start(comparison)
    return run_methods(
        plan, comparison, progress=progress, progress_name=progress_name, on_method=on_method
    )
