"""Building an experiment: a config -> a :class:`Plan` (the task, the stopping rules, the methods).

:func:`build` validates the config (:mod:`dlngeo.config`) and makes
everything through the plugin registry: the target from ``[target]``, the
loss's data from the problem function registered under its name
(:mod:`dlngeo.problems`), the loss, the initial factors, the metrics and the
methods. Nothing runs yet (:func:`dlngeo.experiment.compare` runs them).
Which methods are compared in a trajectory gap, and which are checked for
a step size, is what each method declares (its capability attributes,
:class:`~dlngeo.dynamics.base.Method`), never its name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .config import ConfigError, check_step_size, network_dims, validate_config
from .dynamics.base import Stopping, Task
from .lowrank import to_dense
from .options import OptionError
from .problems import LossData, ProblemContext
from .relu import OutputLoss, make_network
from .runner import BALANCED_TOLERANCE, follows
from .samplers import DATA, INITIALIZATION, check_sampler_kind

__all__ = ["Plan", "build", "check_config"]

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


def _validate_and_load_plugins(config: dict[str, Any]) -> None:
    """Validate ``config`` and load the plugin modules it names (``plugins[i]`` errors)."""
    from . import plugins

    validate_config(config)
    for i, module in enumerate(config.get("plugins", [])):
        try:
            plugins.load_plugin_module(module)
        except ValueError as exc:
            raise ConfigError(f"plugins[{i}]", str(exc)) from None


def build(config: dict[str, Any]) -> Plan:
    """Validate ``config`` and build the task, stopping rules and methods (nothing runs yet)."""
    _validate_and_load_plugins(config)
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
    sampler = _sampler("init", INITIALIZATION, init["sampler"], _options(init, "sampler"))
    try:  # the one signature of an initialization (dlngeo.samplers)
        weights0 = sampler.sample(rng, network=network, target=visible, loss=loss)
    except ValueError as exc:
        raise ConfigError("init", f"sampler {init['sampler']!r}: {exc}") from None
    except TypeError as exc:  # not the signature of an initialization
        if "argument" not in str(exc):
            raise
        raise ConfigError(
            "init.sampler",
            f"sampler {init['sampler']!r}: {' '.join(str(exc).split())}; an initialization"
            " takes sample(rng, network, target=None, loss=None)",
        ) from None
    metrics = _build_metrics(config)
    if any(getattr(metric, "reads_initial_weights", False) for metric in metrics.values()):
        data["initial_weights"] = [np.array(W, copy=True) for W in weights0]  # a metric declares it
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
        step = getattr(method, "step_option", None)  # the method declares its step option
        if step is not None and step in options:
            check_step_size(f"methods.{label}.{step}", options[step])
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


def check_config(config: dict[str, Any]) -> None:
    """Everything about a config that :func:`build` checks before drawing any data.

    Keys and types (:func:`~dlngeo.config.validate_config`), the plugin
    modules it names, and the plugins: the loss by name; samplers (of the
    right kind), metrics and solvers made with their options (cheap, nothing
    sampled). What the data does (a sampler that raises, NaN entries) is the
    run's to fail on. A sweep checks each of its points with this.

    Raises:
        ConfigError: naming the key.
    """
    from . import plugins

    _validate_and_load_plugins(config)
    try:
        plugins.lookup("loss", config["loss"]["name"])
    except ValueError as exc:
        raise ConfigError("loss.name", str(exc)) from None
    dims = network_dims(config)
    shape = (dims[-1], dims[0])
    for key in ("target", "observations"):
        if "sampler" in config.get(key, {}):
            table = config[key]
            _sampler(key, DATA, table["sampler"], _sampler_options(table, shape))
    if "init" in config:
        init = config["init"]
        _sampler("init", INITIALIZATION, init["sampler"], _options(init, "sampler"))
    _build_metrics(config)
    for label, options in config["methods"].items():
        solver = options.get("solver", label)
        key = f"methods.{label}.solver" if "solver" in options else f"methods.{label}"
        _plugin("solver", key, solver, _options(options, "solver", "enabled", "stopping"))


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
    """Every method that follows the overparametrized flow against every one that follows the intrinsic flow."""
    over = [label for label, (_, m, _) in methods.items() if follows(m, "overparametrized")]
    intrinsic = [label for label, (_, m, _) in methods.items() if follows(m, "intrinsic")]
    return [(a, b) for a in over for b in intrinsic]


def _sampler(key: str, kind: str, name: str, options: dict[str, Any]) -> Any:
    """The sampler ``name`` of the table ``[key]``, which must be of ``kind`` (:mod:`dlngeo.samplers`)."""
    from . import plugins

    try:  # a class declares its kind: checked before its options
        factory = plugins.lookup("sampler", name).factory
    except ValueError:
        factory = None  # reported by _plugin at the key
    if isinstance(getattr(factory, "kind", None), str):
        try:
            check_sampler_kind(factory, kind, name)
        except ValueError as exc:
            raise ConfigError(f"{key}.sampler", str(exc)) from None
    sampler = _plugin("sampler", f"{key}.sampler", name, options)
    try:
        return check_sampler_kind(sampler, kind, name)
    except ValueError as exc:
        raise ConfigError(f"{key}.sampler", str(exc)) from None


def _sampler_options(table: dict[str, Any], shape: tuple[int, int]) -> dict[str, Any]:
    options = _options(table, "sampler")
    options.setdefault("shape", list(shape))
    return options


def _build_loss(
    config: dict[str, Any], rng: np.random.Generator, shape: tuple[int, int]
) -> tuple[Any, dict[str, Any], Any]:
    """The loss and the problem data, from ``[target]``, the loss's problem function and ``[loss]``.

    ``[target]`` draws ``M*`` first; then the problem function registered
    under the loss's name (``dlngeo_register_problems``,
    :mod:`dlngeo.problems`) turns the other data tables (``[observations]``,
    ``[inputs]``, ...) into the factory's data keywords. A loss without one
    gets only its ``[loss]`` options (and ``[observations]`` is refused).

    Returns:
        ``(loss, data, visible_target)``: ``data`` is ``state.data`` of the
        metrics (``target`` and what the problem function adds);
        ``visible_target`` is the target as the learner may see it (the
        initialization sampler gets it; e.g. ``spectral``), ``None`` when it
        is hidden behind observations or inputs.
    """
    from . import plugins

    name = config["loss"]["name"]
    options = _options(config["loss"], "name")
    try:
        plugins.lookup("loss", name)
    except ValueError as exc:
        raise ConfigError("loss.name", str(exc)) from None
    try:
        make_data = plugins.lookup("problem", name).factory
    except plugins.PluginError as exc:
        raise ConfigError("loss.name", str(exc)) from None
    except ValueError:  # no problem function: the loss takes no data
        make_data = None
    data: dict[str, Any] = {}
    target = None
    if "target" in config:
        table = config["target"]
        sampler = _sampler("target", DATA, table["sampler"], _sampler_options(table, shape))
        target = data["target"] = _sample("target", sampler, rng)

    def sample(key: str) -> Any:
        table = problem.table(key)
        if not isinstance(table, dict) or "sampler" not in table:
            raise ConfigError(key, f"needs a sampler table for loss {name!r}")
        sampler = _sampler(key, DATA, table["sampler"], _sampler_options(table, shape))
        return _sample(key, sampler, rng)

    problem = ProblemContext(name, dict(options), shape, rng, target, config, sample)
    if make_data is None:
        problem.refuse("observations")
        problem.refuse("data")
        made = LossData()
    else:
        try:
            made = make_data(problem)
        except ConfigError:
            raise
        except ValueError as exc:  # the function's own check of a table
            raise ConfigError("loss.name", f"the data of loss {name!r}: {exc}") from None
        if not isinstance(made, LossData):
            raise ConfigError(
                "loss.name",
                f"the problem function of loss {name!r} returned {type(made).__name__}, not LossData",
            )
    data.update(made.data)
    loss = _plugin("loss", "loss.name", name, {**options, **made.options})
    return loss, data, made.visible_target


def _sample(key: str, sampler: Any, rng: np.random.Generator) -> Any:
    try:
        return sampler.sample(rng)
    except ValueError as exc:
        raise ConfigError(key, str(exc)) from None
