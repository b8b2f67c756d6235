"""Experiments: a config (dict or layered TOML) -> a Task -> methods -> a :class:`Comparison`.

A config is a nested dict (the TOML tables of ``examples/*.toml``); every key
is documented in ``docs/usage.md``. Layers merge table by table: a later file
or a ``--set key=value`` overrides only the keys it names (as the Arora et
al. 2019 code layers its configs). The merged config is validated before
anything runs; a bad one raises :class:`ConfigError` whose one-line message
starts with the dotted key at fault (``network.depth: ...``).

:func:`compare` runs every enabled method on the same :class:`~dlngeo.dynamics.base.Task`
(the same loss, and the same initial factors, so the end-to-end start
``phi(W(0))`` of the factor methods is exactly the start of the end-to-end
methods), then measures the trajectory gap
:math:`\\|\\phi(W(t)) - X(t)\\|_F / \\|X(t)\\|_F` between each overparametrized
method and each intrinsic (end-to-end, flow-time) method at common flow
times: at the overparametrized method's sample times that the intrinsic
method also sampled (``alignment = "exact"``), else by linear interpolation
of ``X`` between the two neighbouring intrinsic samples (``"interpolated"``,
an O(dt^2) error; give both methods the same ``sample_times`` to avoid it).
"""

from __future__ import annotations

import copy
import inspect
import math
import re
import sys
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from . import __version__
from .dynamics.base import Stopping, Task
from .lowrank import entries, to_dense
from .network import DeepLinearNetwork

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = [
    "ConfigError",
    "Comparison",
    "DEFAULT_CONFIG",
    "QUICK_OVERRIDES",
    "compare",
    "load_config",
    "merge_config",
    "parse_override",
    "validate_config",
]


class ConfigError(ValueError):
    """A bad config; ``str(error)`` is one line starting with the key at fault."""

    def __init__(self, key: str, message: str):
        self.key = key
        super().__init__(f"{key}: {message}" if key else message)


# --------------------------------------------------------------------------- defaults
#: The default comparison (``dlngeo compare`` without arguments): matrix
#: completion in the setting of Arora, Cohen, Hu & Luo 2019 (MATH.md §5)
#: scaled down to run in well under a minute on two cores.
DEFAULT_CONFIG: dict[str, Any] = {
    "seed": 0,
    "problem": {"shape": [100, 100]},
    "target": {"sampler": "low_rank_target", "rank": 5},
    "observations": {"sampler": "uniform_mask", "size": 2000},
    "loss": {"name": "matrix_completion"},
    "network": {"depth": 3},
    "init": {"sampler": "gaussian", "init_scale": 1e-3},
    "metrics": ["singular_values", "effective_rank"],
    "stopping": {"loss_below": 1e-6, "max_time": 60.0},
    "methods": {
        # Factor GD, the mean-squared loss of Arora et al. 2019: step 2 is
        # stable here (4 is too, 8 is not); record every 20th iterate.
        "overparametrized_gd": {"step": 2.0, "record_every": 20},
        # Dense, so that it starts exactly at phi(W(0)) (a low-rank flow would
        # start at its rank-5 truncation, a different trajectory).
        "intrinsic_flow": {"representation": "dense"},
        "riemannian_cg": {},
        "riemannian_tr": {},
    },
}

#: ``--quick``: the default comparison shrunk to a few seconds (used by the tests).
QUICK_OVERRIDES: dict[str, Any] = {
    "problem": {"shape": [30, 30]},
    "target": {"rank": 2},
    "observations": {"size": 300},
    "stopping": {"max_time": 10.0},
    "methods": {"overparametrized_gd": {"step": 0.5, "record_every": 10}},
}

# The solvers whose Record times are flow times (t = eta k for discrete ones).
_FLOW_SOLVERS = {"overparametrized_gd", "overparametrized_flow", "intrinsic_flow", "riemannian_gd"}
# End-to-end methods that follow the intrinsic flow (the default partners of the trajectory gap).
_INTRINSIC_FLOWS = {"intrinsic_flow", "riemannian_gd"}
# Methods that evaluate their dense output at any requested time (``record_times``).
_CONTINUOUS = {"intrinsic_flow", "overparametrized_flow"}

# Schema: key -> type spec. A dict is a table with exactly these keys;
# ("options", {...}) is a table whose other keys are a plugin's options.
_STOPPING_KEYS = {f.name: (int, float) for f in fields(Stopping)}
_SAMPLER = ("options", {"sampler": str})
_SCHEMA: dict[str, Any] = {
    "seed": int,
    "rank": int,
    "plugins": list,
    "problem": {"shape": list},
    "network": {"depth": int, "width": int, "dims": list},
    "target": _SAMPLER,
    "observations": _SAMPLER,
    "loss": ("options", {"name": str}),
    "init": _SAMPLER,
    "metrics": (list, dict),
    "stopping": _STOPPING_KEYS,
    "methods": dict,
    "gap": list,
    "inputs": {"count": int},
    "threads": int,
}
_TYPE_NAMES = {int: "an integer", float: "a number", str: "a string", list: "a list", dict: "a table", bool: "true or false"}


# --------------------------------------------------------------------------- layering
def merge_config(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``override`` merged in, table by table (a new dict; inputs untouched)."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_config(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def parse_override(text: str) -> dict[str, Any]:
    """``"a.b.c=value"`` -> ``{"a": {"b": {"c": value}}}``; the value is read as TOML, else kept as a string."""
    if "=" not in text:
        raise ConfigError("--set", f"expected key=value, got {text!r}")
    key, raw = (part.strip() for part in text.split("=", 1))
    if not key or not all(re.fullmatch(r"[A-Za-z0-9_\-]+", p) for p in key.split(".")):
        raise ConfigError("--set", f"bad key {key!r} in {text!r}")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    out: dict[str, Any] = {}
    node = out
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return out


def load_config(
    paths: Sequence[str | Path] = (),
    overrides: Sequence[str] = (),
    *,
    base: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Merge ``base`` (default :data:`DEFAULT_CONFIG`), then each TOML file, then each ``key=value``.

    A file may replace the whole method list: a ``methods`` table in a file
    replaces the base's methods (so a config names exactly what it runs);
    ``--set methods.<label>.<option>=...`` edits one method.

    Raises:
        ConfigError: a file is missing or not valid TOML, or an override is malformed.
    """
    config = copy.deepcopy(DEFAULT_CONFIG if base is None else base)
    for path in paths:
        try:
            with open(path, "rb") as fh:
                layer = tomllib.load(fh)
        except FileNotFoundError:
            raise ConfigError(str(path), "no such config file") from None
        except IsADirectoryError:
            raise ConfigError(str(path), "is a directory, not a config file") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(str(path), f"invalid TOML: {exc}") from None
        if "methods" in layer and isinstance(layer["methods"], dict):
            config.pop("methods", None)
        config = merge_config(config, layer)
    for text in overrides:
        config = merge_config(config, parse_override(text))
    return config


# --------------------------------------------------------------------------- validation
def _check_type(key: str, value: Any, types: Any) -> None:
    types = types if isinstance(types, tuple) else (types,)
    ok = isinstance(value, types) and not (isinstance(value, bool) and bool not in types)
    if not ok:
        want = " or ".join(_TYPE_NAMES.get(t, t.__name__) for t in types)
        raise ConfigError(key, f"must be {want}, got {type(value).__name__} {value!r}")


def _check_table(prefix: str, table: Any, spec: dict[str, Any], *, open_options: bool = False) -> None:
    _check_type(prefix, table, dict)
    for key, value in table.items():
        path = f"{prefix}.{key}"
        if key not in spec:
            if open_options:
                continue  # a plugin option: checked by the plugin's factory
            known = ", ".join(sorted(spec))
            raise ConfigError(path, f"unknown key (known keys of [{prefix}]: {known})")
        _check_type(path, value, spec[key])


def _int_list(key: str, value: Any, length: int | None = None) -> list[int]:
    _check_type(key, value, list)
    if length is not None and len(value) != length:
        raise ConfigError(key, f"must have {length} entries, got {len(value)}")
    for v in value:
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ConfigError(key, f"must be a list of positive integers, got {value!r}")
    return [int(v) for v in value]


def validate_config(config: dict[str, Any]) -> dict[str, Any]:
    """Check keys, types and cross-field rules; return the config (unchanged).

    Plugin names and plugin options are checked when the plugins are built
    (:func:`build`), with the same one-line errors.

    Raises:
        ConfigError: naming the first bad key.
    """
    _check_type("config", config, dict)
    for key, value in config.items():
        if key not in _SCHEMA:
            raise ConfigError(key, f"unknown key (known top-level keys: {', '.join(sorted(_SCHEMA))})")
        spec = _SCHEMA[key]
        if isinstance(spec, dict):
            _check_table(key, value, spec)
        elif isinstance(spec, tuple) and spec and spec[0] == "options":
            _check_table(key, value, spec[1], open_options=True)
        else:
            _check_type(key, value, spec)
    for key in ("loss", "network", "methods"):
        if key not in config:
            raise ConfigError(key, "is required")
    if "name" not in config["loss"]:
        raise ConfigError("loss.name", "is required")
    for key in ("target", "observations", "init"):
        if key in config and "sampler" not in config[key]:
            raise ConfigError(f"{key}.sampler", "is required")
    if "threads" in config and config["threads"] < 0:
        raise ConfigError("threads", f"must be >= 0 (0: the BLAS library's default), got {config['threads']}")
    if "seed" in config and config["seed"] < 0:
        raise ConfigError("seed", f"must be >= 0, got {config['seed']}")
    if "problem" in config and "shape" in config["problem"]:
        _int_list("problem.shape", config["problem"]["shape"], 2)
    dims = network_dims(config)
    if "rank" in config and not 1 <= config["rank"] <= min(dims):
        raise ConfigError("rank", f"{config['rank']} must be between 1 and the narrowest width {min(dims)} of dims {dims}")
    for name, value in config.get("stopping", {}).items():
        if not math.isfinite(value) or value < 0:
            raise ConfigError(f"stopping.{name}", f"must be a non-negative finite number, got {value!r}")
    if isinstance(config.get("metrics"), list):
        for i, name in enumerate(config["metrics"]):
            _check_type(f"metrics[{i}]", name, str)
    elif isinstance(config.get("metrics"), dict):
        for name, options in config["metrics"].items():
            _check_type(f"metrics.{name}", options, dict)
    if not config["methods"]:
        raise ConfigError("methods", "names no method to run")
    for label, options in config["methods"].items():
        _check_method(label, options)
    for i, pair in enumerate(config.get("gap", [])):
        if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(p, str) for p in pair)):
            raise ConfigError(f"gap[{i}]", f"must be a pair [overparametrized, intrinsic] of method labels, got {pair!r}")
        for p in pair:
            if p not in config["methods"]:
                raise ConfigError(f"gap[{i}]", f"names {p!r}, which is not a method of [methods]")
    for i, name in enumerate(config.get("plugins", [])):
        _check_type(f"plugins[{i}]", name, str)
    return config


def _check_method(label: str, options: Any) -> None:
    prefix = f"methods.{label}"
    _check_type(prefix, options, dict)
    for key in ("solver",):
        if key in options:
            _check_type(f"{prefix}.{key}", options[key], str)
    if "enabled" in options:
        _check_type(f"{prefix}.enabled", options["enabled"], bool)
    if "stopping" in options:
        _check_table(f"{prefix}.stopping", options["stopping"], _STOPPING_KEYS)
        for name, value in options["stopping"].items():
            if not math.isfinite(value) or value < 0:
                raise ConfigError(f"{prefix}.stopping.{name}", f"must be a non-negative finite number, got {value!r}")
    for key in ("step", "lr", "learning_rate", "eta"):
        if key in options:
            value = options[key]
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"{prefix}.{key}", f"must be a number, got {type(value).__name__} {value!r}")
            if not value > 0 or not math.isfinite(value):
                raise ConfigError(f"{prefix}.{key}", f"must be a positive step size, got {value!r}")


def network_dims(config: dict[str, Any]) -> list[int]:
    """The widths ``(d_0, ..., d_N)`` from ``[network]`` and ``problem.shape = [m, n]``.

    ``network.dims`` wins (``depth`` and ``width``, if also given, must agree
    with it); else ``depth`` layers with hidden ``width``
    (default ``max(m, n)``, the square layers of Arora et al. 2019),
    input ``n`` and output ``m``.
    """
    net = config["network"]
    shape = config.get("problem", {}).get("shape")
    if "dims" in net:
        dims = _int_list("network.dims", net["dims"])
        if len(dims) < 2:
            raise ConfigError("network.dims", f"needs at least 2 widths, got {dims!r}")
        if shape is not None and (dims[-1], dims[0]) != tuple(shape):
            raise ConfigError("network.dims", f"output and input widths {dims[-1]}, {dims[0]} do not match problem.shape {shape}")
        if "depth" in net and net["depth"] != len(dims) - 1:
            raise ConfigError("network.depth", f"{net['depth']} does not match network.dims {dims} (depth {len(dims) - 1})")
        if "width" in net and any(d != net["width"] for d in dims[1:-1]):
            raise ConfigError("network.width", f"{net['width']} does not match the hidden widths of network.dims {dims}")
        return dims
    if shape is None:
        raise ConfigError("problem.shape", "is required unless network.dims is given")
    m, n = shape
    depth = net.get("depth")
    if depth is None:
        raise ConfigError("network.depth", "is required unless network.dims is given")
    if depth < 1:
        raise ConfigError("network.depth", f"must be >= 1, got {depth}")
    width = net.get("width", max(m, n))
    if width < 1:
        raise ConfigError("network.width", f"must be >= 1, got {width}")
    return [n] + [width] * (depth - 1) + [m]


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
    except (TypeError, ValueError) as exc:
        text = " ".join(str(exc).split())
        match = _UNKNOWN_OPTION.search(text)
        if match:
            raise ConfigError(f"{table}.{match.group(1)}", f"unknown option of {kind} {name!r}") from None
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
    network = DeepLinearNetwork(dims)
    m, n = network.output_shape
    loss, data, visible = _build_loss(config, rng, (m, n))
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
        task = Task(loss=loss, network=network, weights0=weights0, rank=rank, metrics=metrics, data=data, seed=seed)
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
        method_stopping = _stopping(Stopping, f"methods.{label}.stopping", {**stopping_options, **options.get("stopping", {})})
        methods[label] = (solver, method, method_stopping)
        method_options[label] = _options(options, "solver", "enabled", "stopping")
    if not methods:
        raise ConfigError("methods", "every method is disabled")
    gap_pairs = [tuple(p) for p in config["gap"]] if "gap" in config else _default_gap_pairs(methods)
    gap_pairs = [p for p in gap_pairs if p[0] in methods and p[1] in methods]
    problem = {
        "loss": config["loss"]["name"],
        "shape": [m, n],
        "dims": list(dims),
        "depth": network.depth,
        "rank": int(task.rank),
        "seed": seed,
        "initial_loss": float(loss.value(task.X0)),
    }
    target = data.get("target")
    if target is not None:
        problem["target_singular_values"] = np.linalg.svd(to_dense(target), compute_uv=False)[: int(task.rank)].tolist()
    return Plan(task=task, stopping=stopping, methods=methods, options=method_options, gap_pairs=gap_pairs, problem=problem)


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


def _is_flow(solver: str, method: Any) -> bool:
    flag = getattr(method, "flow_time", None)
    if flag is not None:
        return bool(flag)
    return solver in _FLOW_SOLVERS


def _default_gap_pairs(methods: dict[str, tuple[str, Any, Any]]) -> list[tuple[str, str]]:
    over = [label for label, (s, m, _) in methods.items() if getattr(m, "overparametrized", False) and _is_flow(s, m)]
    intrinsic = [label for label, (s, m, _) in methods.items() if s in _INTRINSIC_FLOWS]
    return [(a, b) for a in over for b in intrinsic]


# --------------------------------------------------------------------------- comparison
@dataclass
class Comparison:
    """Every method's :class:`~dlngeo.dynamics.record.Record` on one task, and their trajectory gaps.

    Attributes:
        config: The merged, validated config.
        problem: Summary of the problem (loss, shape, dims, rank, seed, initial loss).
        records: Method label -> Record.
        solvers: Method label -> registered solver name.
        flow_time: Method label -> whether its Record's times are flow times.
        wall_times: Method label -> wall-clock seconds at each recorded sample.
        trajectory_gap: One entry per (overparametrized, intrinsic) pair:
            ``{"overparametrized", "intrinsic", "alignment", "time", "gap"}``.
    """

    config: dict[str, Any]
    problem: dict[str, Any]
    records: dict[str, Any] = field(default_factory=dict)
    solvers: dict[str, str] = field(default_factory=dict)
    flow_time: dict[str, bool] = field(default_factory=dict)
    wall_times: dict[str, list[float]] = field(default_factory=dict)
    trajectory_gap: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The ``results.json`` document (schema in :mod:`dlngeo.results`)."""
        from .results import SCHEMA, to_json_value

        methods = {}
        for label, record in self.records.items():
            entry = record.to_dict()
            entry.pop("method", None)
            walls = self.wall_times.get(label, [])
            if len(walls) == len(record.times):
                entry["metrics"]["wall_time"] = list(walls)
            methods[label] = {
                "solver": self.solvers[label],
                "time_kind": "flow" if self.flow_time.get(label) else "iteration",
                **entry,
                "final_loss": _finite_or_none(record.final_loss),
                "iterations": int(record.n_iterations),
                "wall_time_s": float(record.wall_time_s),
            }
        return to_json_value(
            {
                "schema": SCHEMA,
                "dlngeo_version": __version__,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime()),
                "config": self.config,
                "problem": self.problem,
                "methods": methods,
                "trajectory_gap": self.trajectory_gap,
            }
        )

    def table(self) -> str:
        """The terminal table: method, final loss, iterations, evaluations, wall time, stop reason."""
        header = ("method", "final loss", "iterations", "evaluations", "wall time (s)", "stop reason")
        rows = []
        for label, record in self.records.items():
            evals = ", ".join(f"{k} {v}" for k, v in record.evaluations.items()) or "-"
            rows.append((label, f"{record.final_loss:.3e}", str(record.n_iterations), evals, f"{record.wall_time_s:.2f}", record.stop_reason))
        widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
        lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths)), "  ".join("-" * w for w in widths)]
        lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
        for gap in self.trajectory_gap:
            if gap["gap"]:
                finite = [g for g in gap["gap"] if g is not None and math.isfinite(g)]
                worst = max(finite) if finite else float("nan")
                lines.append(
                    f"trajectory gap {gap['overparametrized']} vs {gap['intrinsic']}: max {worst:.2e} over t in "
                    f"[{gap['time'][0]:.3g}, {gap['time'][-1]:.3g}] ({gap['alignment']}, {len(gap['time'])} times)"
                )
        return "\n".join(lines)

    def write(self, out_dir: str | Path, *, plots: bool = True) -> list[Path]:
        """Write ``results.json`` and (unless ``plots=False``) the PNGs into ``out_dir``; return the paths.

        Only these named files are written; nothing else in ``out_dir`` is touched.

        Raises:
            ValueError: ``out_dir`` exists and is not a directory.
        """
        from .results import write_results

        out = Path(out_dir)
        if out.exists() and not out.is_dir():
            raise ValueError(f"out: {str(out)!r} exists and is not a directory")
        out.mkdir(parents=True, exist_ok=True)
        document = self.to_dict()
        paths = [write_results(document, out / "results.json")]
        if plots:
            from .plots import plot_results

            paths += plot_results(document, out)
        return paths


def _finite_or_none(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


class _Capture:
    """The callback ``compare`` hands a method: wall time and (if asked) the end-to-end point per sample."""

    def __init__(self, keep_points: bool, progress: Any = None, label: str = ""):
        self.keep_points = keep_points
        self.started = time.perf_counter()
        self.times: list[float] = []
        self.walls: list[float] = []
        self.points: list[np.ndarray] = []
        self.progress = progress
        self.label = label

    def __call__(self, state: Any, record: Any) -> None:
        self.times.append(float(state.time))
        self.walls.append(time.perf_counter() - self.started)
        if self.keep_points:
            self.points.append(np.array(to_dense(state.point), dtype=float, copy=True))
        if self.progress is not None and record is not None and record.metrics.get("loss"):
            self.progress.set_postfix_str(f"{self.label}: loss {record.metrics['loss'][-1]:.2e}", refresh=False)


def trajectory_gap(
    over_times: Sequence[float],
    over_points: Sequence[np.ndarray],
    intrinsic_times: Sequence[float],
    intrinsic_points: Sequence[np.ndarray],
    *,
    rtol: float = 1e-9,
) -> dict[str, Any]:
    """``||phi(W(t)) - X(t)||_F / ||X(t)||_F`` at the overparametrized sample times ``t`` within the intrinsic range.

    Where the intrinsic run sampled ``t`` itself (to ``rtol``) that sample is
    used; otherwise ``X(t)`` is linearly interpolated between its two
    neighbouring samples and the result is marked ``"interpolated"``.
    """
    t_int = np.asarray(intrinsic_times, dtype=float)
    out_t, out_gap, exact = [], [], True
    if t_int.size == 0:
        return {"alignment": "exact", "time": [], "gap": []}
    order = np.argsort(t_int, kind="stable")
    t_int = t_int[order]
    pts = [intrinsic_points[i] for i in order]
    for t, P in zip(over_times, over_points):
        tol = rtol * max(1.0, abs(t))
        if t < t_int[0] - tol or t > t_int[-1] + tol:
            continue
        j = int(np.searchsorted(t_int, t - tol))
        if j < t_int.size and abs(t_int[j] - t) <= tol:
            X = pts[j]
        else:
            exact = False
            lo, hi = j - 1, j
            w = (t - t_int[lo]) / (t_int[hi] - t_int[lo])
            X = (1 - w) * pts[lo] + w * pts[hi]
        norm = float(np.linalg.norm(X))
        diff = float(np.linalg.norm(np.asarray(P) - X))
        out_t.append(float(t))
        out_gap.append(diff / norm if norm > 0 else (0.0 if diff == 0 else float("inf")))
    return {"alignment": "exact" if exact else "interpolated", "time": out_t, "gap": out_gap}


def _run_one(label: str, solver: str, method: Any, task: Any, stopping: Any, capture: _Capture) -> Any:
    """Run one method; a numerical blow-up that escapes the method is recorded as ``diverged``."""
    from .dynamics.record import Record

    capture.started = time.perf_counter()
    try:
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            return method.run(task, stopping, capture)
    except (FloatingPointError, OverflowError, np.linalg.LinAlgError) as exc:
        record = Record(method=solver, stop_reason="diverged")
        record.wall_time_s = time.perf_counter() - capture.started
        record.info["error"] = f"{type(exc).__name__}: {exc}".splitlines()[0]
        capture.times.clear()
        capture.walls.clear()
        capture.points.clear()
        return record


def compare(config: dict[str, Any] | str | Path | None = None, *, progress: bool = False) -> Comparison:
    """Run every enabled method of ``config`` on one task and compare them.

    Args:
        config: A complete config: a dict (e.g. ``load_config(["a.toml"], ["seed=3"])``,
            which layers over :data:`DEFAULT_CONFIG`), or the path of one
            complete TOML file; ``None`` runs :data:`DEFAULT_CONFIG`.
        progress: Show a tqdm progress bar (one tick per method, the current
            method's loss as postfix).

    Returns:
        The :class:`Comparison`.

    Raises:
        ConfigError: a bad config (one line naming the key).
    """
    if isinstance(config, (str, Path)):
        config = load_config([config], base={})
    config = copy.deepcopy(DEFAULT_CONFIG if config is None else config)
    plan = build(config)
    keep = {label for pair in plan.gap_pairs for label in pair}
    comparison = Comparison(config=config, problem=plan.problem)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(plan.methods), unit="method", desc="dlngeo compare", file=sys.stderr, leave=True)
    captures: dict[str, _Capture] = {}
    limits = _blas_threads(config, plan)
    # Overparametrized partners of a gap run first, so that a continuous
    # intrinsic flow can be sampled at exactly their flow times.
    first = [over for over, _ in plan.gap_pairs]
    order = sorted(plan.methods, key=lambda label: (label not in first, list(plan.methods).index(label)))
    try:
        limits.__enter__()
        for label in order:
            solver, method, stopping = plan.methods[label]
            method = _aligned(label, solver, method, plan, captures)
            if bar is not None:
                bar.set_description_str(f"dlngeo compare [{label}]")
            capture = _Capture(label in keep, bar, label)
            record = _run_one(label, solver, method, plan.task, stopping, capture)
            captures[label] = capture
            comparison.records[label] = record
            comparison.solvers[label] = solver
            comparison.flow_time[label] = getattr(record, "time_kind", "flow" if _is_flow(solver, method) else "iteration") == "flow"
            comparison.wall_times[label] = _align_walls(record.times, capture)
            if bar is not None:
                bar.update(1)
    finally:
        limits.__exit__(None, None, None)
        if bar is not None:
            bar.close()
    comparison.records = {label: comparison.records[label] for label in plan.methods}
    for over, intrinsic in plan.gap_pairs:
        a, b = captures[over], captures[intrinsic]
        gap = trajectory_gap(a.times, a.points, b.times, b.points)
        comparison.trajectory_gap.append({"overparametrized": over, "intrinsic": intrinsic, **gap})
    return comparison


#: Problems with at most this many entries (m n) run with one BLAS thread by default.
SMALL_PROBLEM = 250_000


def _blas_threads(config: dict[str, Any], plan: Plan) -> Any:
    """A context that limits BLAS threads (threadpoolctl) to ``config["threads"]``.

    Default: one thread when ``m n <= SMALL_PROBLEM``. On matrices of a few
    hundred rows a multithreaded BLAS gains little and, on a machine whose
    cores are busy, loses badly (a 100 x 100 SVD measured 7 ms on one thread,
    330 ms on two oversubscribed ones). ``threads = 0`` keeps the library's
    default. Without threadpoolctl installed this is a no-op.
    """
    import contextlib

    m, n = plan.problem["shape"]
    threads = config.get("threads", 1 if m * n <= SMALL_PROBLEM else 0)
    if not threads:
        return contextlib.nullcontext()
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - optional at runtime
        return contextlib.nullcontext()
    return threadpool_limits(limits=int(threads), user_api="blas")


def _aligned(label: str, solver: str, method: Any, plan: Plan, captures: dict[str, _Capture]) -> Any:
    """A continuous intrinsic method of a gap pair, rebuilt to sample at its partner's flow times.

    Only when the config sets neither ``record_times`` nor ``record_every``
    for it. The grid is the union of the partners' sample times; past the last one ``T`` the grid continues
    geometrically (``T * 1.03^k``, up to ``~84 T``) so the rest of the run
    is still sampled.
    """
    options = plan.options.get(label, {})
    if solver not in _CONTINUOUS or "record_times" in options or "record_every" in options:
        return method
    partners = [over for over, intrinsic in plan.gap_pairs if intrinsic == label and over in captures]
    times = np.unique(np.concatenate([np.asarray(captures[p].times, dtype=float) for p in partners] or [np.zeros(0)]))
    times = times[np.isfinite(times)]
    if times.size == 0:
        return method
    last = float(times[-1])
    if last > 0:
        times = np.concatenate([times, last * 1.03 ** np.arange(1, 151)])
    return _plugin("solver", f"methods.{label}", solver, {**options, "record_times": times.tolist()})


def _align_walls(record_times: Iterable[float], capture: _Capture) -> list[float]:
    """Wall-clock seconds of each Record sample, from the callback's calls (matched in order by time)."""
    record_times = list(record_times)
    if len(capture.times) == len(record_times):
        return list(capture.walls)
    walls, j = [], 0
    for t in record_times:
        while j < len(capture.times) - 1 and capture.times[j] < t:
            j += 1
        if not capture.times or abs(capture.times[j] - t) > 1e-12 * max(1.0, abs(t)):
            return []
        walls.append(capture.walls[j])
    return walls


def _sampler_options(table: dict[str, Any], shape: tuple[int, int]) -> dict[str, Any]:
    options = _options(table, "sampler")
    options.setdefault("shape", list(shape))
    return options


def _build_loss(config: dict[str, Any], rng: np.random.Generator, shape: tuple[int, int]) -> tuple[Any, dict[str, Any], Any]:
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
        sampler = _plugin("sampler", "target.sampler", config["target"]["sampler"], _sampler_options(config["target"], shape))
        target = _sample("target", sampler, rng)
        data["target"] = target
    observations = config.get("observations")
    if {"rows", "cols", "values"} <= params:
        if target is None or observations is None:
            raise ConfigError("target" if target is None else "observations", f"is required by loss {name!r}")
        sampler = _plugin("sampler", "observations.sampler", observations["sampler"], _sampler_options(observations, shape))
        rows, cols = _sample("observations", sampler, rng)
        options.update(rows=rows, cols=cols, values=entries(target, rows, cols))
        if "shape" in params:
            options.setdefault("shape", shape)
        data.update(rows=rows, cols=cols)
    elif {"A", "y"} <= params:
        if target is None or observations is None:
            raise ConfigError("target" if target is None else "observations", f"is required by loss {name!r}")
        sampler = _plugin("sampler", "observations.sampler", observations["sampler"], _sampler_options(observations, shape))
        A = _sample("observations", sampler, rng)
        dense = to_dense(target)
        options.update(A=A, y=np.einsum("kij,ij->k", np.asarray(A), dense))
    elif "target" in params or {"A", "B"} <= params:
        if observations is not None:
            raise ConfigError("observations", f"loss {name!r} takes no observations (use [inputs] for regression data)")
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
