"""Experiments: a config -> a Task -> methods -> a :class:`~dlngeo.comparison.Comparison`.

:func:`build` turns a config (:mod:`dlngeo.config`: layered TOML, validated)
into a :class:`~dlngeo.dynamics.base.Task` and the methods, through the
plugin registry. :func:`compare` runs every enabled method on that task (the
same loss, and the same initial factors, so the end-to-end start
``phi(W(0))`` of the factor methods is exactly the start of the end-to-end
methods), then measures the trajectory gap
:math:`\\|\\phi(W(t)) - X(t)\\|_F / \\|X(t)\\|_F` between each overparametrized
method and each intrinsic (end-to-end, flow-time) method at common flow
times. Overparametrized methods run first; a continuous intrinsic flow is
then sampled (from its integrator's dense output) at exactly their sample
times, so the gap is taken at the same flow times (``alignment =
"exact"``). Otherwise ``X(t)`` is interpolated linearly between the two
neighbouring intrinsic samples (``"interpolated"``, an O(dt^2) error; give
both methods the same ``record_times`` to avoid it).
"""

from __future__ import annotations

import copy
import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

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
from .dynamics.base import Stopping, Task
from .lowrank import entries, to_dense
from .options import OptionError
from .relu import OutputLoss, make_network
from .runner import _INTRINSIC_FLOWS, BALANCED_TOLERANCE, _is_flow, _warn_unbalanced, run_methods

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

# --------------------------------------------------------------------------- building
_UNKNOWN_OPTION = re.compile(r"(?:unexpected keyword argument|unknown option) '([^']+)'")


def _plugin(kind: str, key: str, name: str, options: dict[str, Any]) -> Any:
    """``create_<kind>(name, **options)`` with errors rewritten to name the config key.

    ``key`` is where the name was given (``loss.name``, ``methods.gd``); an
    error about one option is reported at that option's key.
    """
    from . import plugins

    try:
        plugins.lookup(kind, name)
    except ValueError as exc:
        raise ConfigError(key, str(exc)) from None
    table = key.rsplit(".", 1)[0] if key.endswith((".name", ".sampler", ".solver")) else key
    try:
        return plugins.create(kind, name, **options)
    except OptionError as exc:  # an unknown or missing option: at that option's key
        raise ConfigError(f"{table}.{exc.option}", exc.detail) from None
    except (TypeError, ValueError) as exc:
        text = " ".join(str(exc).split())
        match = _UNKNOWN_OPTION.search(text)
        if match:
            raise ConfigError(
                f"{table}.{match.group(1)}", f"unknown option of {kind} {name!r}"
            ) from None
        if isinstance(exc, TypeError) and not text:
            raise
        first = re.match(r"([A-Za-z_][A-Za-z0-9_]*)\b", text)
        if first and first.group(1) in options:
            raise ConfigError(f"{table}.{first.group(1)}", f"{kind} {name!r}: {text}") from None
        raise ConfigError(table, f"{kind} {name!r}: {text}") from None


def _options(table: dict[str, Any], *drop: str) -> dict[str, Any]:
    return {k: v for k, v in table.items() if k not in drop}


@dataclass
class Plan:
    """What :func:`build` makes of a config: the task, the stopping rule, the methods."""

    task: Any
    stopping: Any
    methods: dict[str, tuple[str, Any, Any]]  # label -> (solver name, method, stopping)
    gap_pairs: list[tuple[str, str]]
    problem: dict[str, Any]
    options: dict[str, dict[str, Any]] = field(default_factory=dict)  # label -> solver options


def build(config: dict[str, Any]) -> Plan:
    """Validate ``config`` and build the task, stopping rules and methods (nothing runs yet)."""
    from . import plugins

    validate_config(config)
    for i, module in enumerate(config.get("plugins", [])):
        try:
            plugins.load_plugin_module(module)
        except ValueError as exc:
            raise ConfigError(f"plugins[{i}]", str(exc)) from None
    seed = int(config.get("seed", 0))
    rng = np.random.default_rng(seed)
    dims = network_dims(config)
    net = config["network"]
    network = make_network(dims, net.get("activation", "linear"), net.get("slope"))
    m, n = network.output_shape
    loss, data, visible = _build_loss(config, rng, (m, n))
    if network.activation != "linear":
        loss, data = _output_task(config, loss, data)
    init = config.get("init", {"sampler": "gaussian", "init_scale": 1e-3})
    sampler = _plugin("sampler", "init.sampler", init["sampler"], _options(init, "sampler"))
    context: dict[str, Any] = {"network": network, "target": visible}
    try:
        if "loss" in inspect.signature(sampler.sample).parameters:
            context["loss"] = loss
    except (TypeError, ValueError):  # pragma: no cover - no signature
        pass
    try:
        weights0 = sampler.sample(rng, **context)
    except ValueError as exc:
        raise ConfigError("init", f"sampler {init['sampler']!r}: {exc}") from None
    metrics = _build_metrics(config)
    rank = config.get("rank")
    if rank is None and "rank" in config.get("target", {}):
        rank = min(int(config["target"]["rank"]), network.rank_bound)
    try:
        task = Task(
            loss=loss,
            network=network,
            weights0=weights0,
            rank=rank,
            metrics=metrics,
            data=data,
            seed=seed,
        )
    except ValueError as exc:
        raise ConfigError("rank", str(exc)) from None
    stopping_options = dict(config.get("stopping", {}))
    stopping = _stopping(Stopping, "stopping", stopping_options)
    methods: dict[str, tuple[str, Any, Any]] = {}
    method_options: dict[str, dict[str, Any]] = {}
    for label, options in config["methods"].items():
        if not options.get("enabled", True):
            continue
        solver = options.get("solver", label)
        key = f"methods.{label}.solver" if "solver" in options else f"methods.{label}"
        method = _plugin("solver", key, solver, _options(options, "solver", "enabled", "stopping"))
        method_stopping = _stopping(
            Stopping,
            f"methods.{label}.stopping",
            {**stopping_options, **options.get("stopping", {})},
        )
        methods[label] = (solver, method, method_stopping)
        method_options[label] = _options(options, "solver", "enabled", "stopping")
    if not methods:
        raise ConfigError("methods", "every method is disabled")
    if network.activation != "linear":
        for label, (solver, method, _) in methods.items():
            if not getattr(method, "supports_activation", False):
                raise ConfigError(
                    f"methods.{label}",
                    f"{solver} does not train a {network.activation} network"
                    " (network.activation); use overparametrized_gd or overparametrized_flow",
                )
        data["initial_patterns"] = network.patterns(weights0, loss.inputs)  # type: ignore[attr-defined]
    gap_pairs = (
        [tuple(p) for p in config["gap"]] if "gap" in config else _default_gap_pairs(methods)
    )
    gap_pairs = [p for p in gap_pairs if p[0] in methods and p[1] in methods]
    problem = {
        "loss": config["loss"]["name"],
        "shape": [m, n],
        "dims": list(dims),
        "depth": network.depth,
        "rank": int(task.rank),  # type: ignore[arg-type]  # Task.rank is set in __post_init__
        "seed": seed,
        "initial_loss": float(loss.value(task.X0)),
        "relative_imbalance": network.relative_imbalance(weights0),
    }
    problem["balanced_start"] = problem["relative_imbalance"] <= BALANCED_TOLERANCE
    target = data.get("target")  # a nonlinear network: the target outputs B, like its point F
    if network.activation != "linear":
        problem["activation"] = network.activation
        problem["slope"] = getattr(network, "slope", 0.0)
    if target is not None:
        problem["target_singular_values"] = np.linalg.svd(to_dense(target), compute_uv=False)[
            : problem["rank"]
        ].tolist()
    return Plan(
        task=task,
        stopping=stopping,
        methods=methods,
        options=method_options,
        gap_pairs=gap_pairs,
        problem=problem,
    )


def _output_task(
    config: dict[str, Any], loss: Any, data: dict[str, Any]
) -> tuple[OutputLoss, dict[str, Any]]:
    """A nonlinear network's loss on its outputs ``F`` (``m x b``), and the target outputs as ``target``.

    The metrics see ``state.point = F`` and ``state.data["target"] = B`` (the
    teacher's outputs ``M* A``; whitened: ``M*`` itself, the outputs on ``I_n``),
    and the teacher ``M*`` as ``data["teacher"]``.
    """
    try:
        out = OutputLoss(loss)
    except ValueError as exc:
        raise ConfigError("loss.name", str(exc)) from None
    data = dict(data)
    if "target" in data:
        data["teacher"] = data["target"]
        B = getattr(out.base, "B", None)
        data["target"] = getattr(out.base, "target", None) if B is None else B
    return out, data


def _stopping(cls: Any, key: str, options: dict[str, Any]) -> Any:
    try:
        return cls(**options)
    except (TypeError, ValueError) as exc:
        raise ConfigError(key, str(exc)) from None


def _build_metrics(config: dict[str, Any]) -> dict[str, Any]:
    spec = config.get("metrics", [])
    items = [(name, {}) for name in spec] if isinstance(spec, list) else list(spec.items())
    metrics = {}
    for name, options in items:
        if name == "loss":
            continue  # always recorded by the Task
        metrics[name] = _plugin("metric", f"metrics.{name}", name, dict(options))
    return metrics


def _default_gap_pairs(methods: dict[str, tuple[str, Any, Any]]) -> list[tuple[str, str]]:
    over = [
        label
        for label, (s, m, _) in methods.items()
        if getattr(m, "overparametrized", False) and _is_flow(s, m)
    ]
    intrinsic = [label for label, (s, m, _) in methods.items() if s in _INTRINSIC_FLOWS]
    return [(a, b) for a in over for b in intrinsic]


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


def _sampler_options(table: dict[str, Any], shape: tuple[int, int]) -> dict[str, Any]:
    options = _options(table, "sampler")
    options.setdefault("shape", list(shape))
    return options


def _build_loss(
    config: dict[str, Any], rng: np.random.Generator, shape: tuple[int, int]
) -> tuple[Any, dict[str, Any], Any]:
    """The loss and the problem data, from ``[target]``, ``[observations]``, ``[inputs]`` and ``[loss]``.

    The loss factory's parameters say what it needs (so a third-party loss
    with the same parameters plugs in the same way):

    * ``rows, cols, values`` (completion): ``[observations]`` samples the index
      pairs, the values are the target's entries there;
    * ``A, y`` (sensing): ``[observations]`` samples the measurement matrices,
      the loss measures the target;
    * ``A, B`` or ``target`` (regression): with ``[inputs]`` (``count`` Gaussian
      input vectors, ``B = target @ A``), else the whitened loss on ``target``.

    The data the metrics see (``state.data``) are ``target`` and, for
    completion, ``rows`` and ``cols``.

    Returns:
        ``(loss, data, visible_target)``: the target as the learner may see it
        (the initialization sampler gets it; e.g. ``spectral``) -- the target
        itself for the whitened regression, whose data it is, ``None`` when it
        is hidden behind observations or inputs (then ``spectral`` works from
        the observations, as in the completion literature).
    """
    from . import plugins

    name = config["loss"]["name"]
    options = _options(config["loss"], "name")
    try:
        factory = plugins.lookup("loss", name).factory
    except ValueError as exc:
        raise ConfigError("loss.name", str(exc)) from None
    try:
        params = set(inspect.signature(factory).parameters)
    except (TypeError, ValueError):  # pragma: no cover - builtins without signature
        params = set()
    data: dict[str, Any] = {}
    target = visible = None
    if "target" in config:
        sampler = _plugin(
            "sampler",
            "target.sampler",
            config["target"]["sampler"],
            _sampler_options(config["target"], shape),
        )
        target = _sample("target", sampler, rng)
        data["target"] = target
    observations = config.get("observations")
    if {"rows", "cols", "values"} <= params:
        if target is None or observations is None:
            raise ConfigError(
                "target" if target is None else "observations", f"is required by loss {name!r}"
            )
        sampler = _plugin(
            "sampler",
            "observations.sampler",
            observations["sampler"],
            _sampler_options(observations, shape),
        )
        rows, cols = _sample("observations", sampler, rng)
        options.update(rows=rows, cols=cols, values=entries(target, rows, cols))
        if "shape" in params:
            options.setdefault("shape", shape)
        data.update(rows=rows, cols=cols)
    elif {"A", "y"} <= params:
        if target is None or observations is None:
            raise ConfigError(
                "target" if target is None else "observations", f"is required by loss {name!r}"
            )
        sampler = _plugin(
            "sampler",
            "observations.sampler",
            observations["sampler"],
            _sampler_options(observations, shape),
        )
        A = _sample("observations", sampler, rng)
        dense = to_dense(target)
        options.update(A=A, y=np.einsum("kij,ij->k", np.asarray(A), dense))
    elif "target" in params or {"A", "B"} <= params:
        if observations is not None:
            raise ConfigError(
                "observations",
                f"loss {name!r} takes no observations (use [inputs] for regression data)",
            )
        if target is None:
            raise ConfigError("target", f"is required by loss {name!r}")
        inputs = config.get("inputs")
        if inputs is not None:
            count = inputs.get("count")
            if isinstance(count, bool) or not isinstance(count, int) or count < 1:
                raise ConfigError("inputs.count", f"must be a positive integer, got {count!r}")
            A = rng.standard_normal((shape[1], count))
            options.update(A=A, B=to_dense(target) @ A)
        else:
            options.update(target=to_dense(target))
            visible = target
    elif observations is not None:
        raise ConfigError("observations", f"loss {name!r} takes no observations")
    loss = _plugin("loss", "loss.name", name, options)
    return loss, data, visible


def _sample(key: str, sampler: Any, rng: np.random.Generator) -> Any:
    try:
        return sampler.sample(rng)
    except ValueError as exc:
        raise ConfigError(key, str(exc)) from None
