"""Experiment configs: defaults, layering (TOML files, ``--set key=value``) and validation.

A config is a nested dict (the TOML tables of ``examples/*.toml``); every key
is documented in ``docs/usage.md``. Layers merge table by table: a later file
or a ``--set key=value`` overrides only the keys it names (as the Arora et
al. 2019 code layers its configs). The merged config is validated before
anything runs; a bad one raises :class:`ConfigError` whose one-line message
starts with the dotted key at fault (``network.depth: ...``). Plugin names
and plugin options are checked when :func:`dlngeo.experiment.build` builds
the plugins, with the same kind of message.
"""

from __future__ import annotations

import copy
import math
import re
import sys
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

from .dynamics.base import Stopping

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = [
    "ConfigError",
    "check_step_size",
    "DEFAULT_CONFIG",
    "QUICK_OVERRIDES",
    "load_config",
    "merge_config",
    "network_dims",
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
#: completion in the setting of Arora, Cohen, Hu & Luo 2019 (docs/math.md §5)
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
        "riemannian_lm": {},  # Gauss-Newton trust region for least squares (docs/math.md §8.6)
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

# Schema: key -> type spec. A dict is a table with exactly these keys;
# ("options", {...}) is a table whose other keys are a plugin's options.
_STOPPING_KEYS = {f.name: (int, float) for f in fields(Stopping)}
_SAMPLER = ("options", {"sampler": str})
_SCHEMA: dict[str, Any] = {
    "seed": int,
    "rank": int,
    "plugins": list,
    "problem": {"shape": list},
    "network": {"depth": int, "width": int, "dims": list, "activation": str, "slope": (int, float)},
    "target": _SAMPLER,
    "observations": _SAMPLER,
    "loss": ("options", {"name": str}),
    "init": _SAMPLER,
    "metrics": (list, dict),
    "stopping": _STOPPING_KEYS,
    "methods": dict,
    "gap": list,
    "inputs": {"count": int},
    "data": dict,  # free: read by the loss's problem function (dlngeo.problems)
    "threads": int,
}
_TYPE_NAMES = {
    int: "an integer",
    float: "a number",
    str: "a string",
    list: "a list",
    dict: "a table",
    bool: "true or false",
}


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
        except UnicodeDecodeError as exc:  # TOML is UTF-8 (tomllib decodes the bytes)
            raise ConfigError(
                str(path),
                f"is not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset {exc.start})",
            ) from None
        if "methods" in layer and isinstance(layer["methods"], dict):
            config.pop("methods", None)
        config = merge_config(config, layer)
    for text in overrides:
        layer = parse_override(text)
        _check_not_empty_table(config, layer, text)
        config = merge_config(config, layer)
    return config


def _check_not_empty_table(config: dict[str, Any], layer: dict[str, Any], text: str) -> None:
    """``--set key={}`` on a table: merged table by table it would change nothing; refuse it."""
    node: Any = config
    while isinstance(layer, dict) and len(layer) == 1:
        key, layer = next(iter(layer.items()))
        existing = node.get(key) if isinstance(node, dict) else None
        if layer == {} and isinstance(existing, dict):
            raise ConfigError(
                "--set",
                f"{text.strip()} sets an empty table, which changes nothing; set keys inside "
                "it (key.<name>=...), or replace the table in a config file",
            )
        node = existing


# --------------------------------------------------------------------------- validation
def _check_type(key: str, value: Any, types: Any) -> None:
    types = types if isinstance(types, tuple) else (types,)
    ok = isinstance(value, types) and not (isinstance(value, bool) and bool not in types)
    if not ok:
        want = " or ".join(_TYPE_NAMES.get(t, t.__name__) for t in types)
        raise ConfigError(key, f"must be {want}, got {type(value).__name__} {value!r}")


def _check_table(
    prefix: str, table: Any, spec: dict[str, Any], *, open_options: bool = False
) -> None:
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
            raise ConfigError(
                key, f"unknown key (known top-level keys: {', '.join(sorted(_SCHEMA))})"
            )
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
        raise ConfigError(
            "threads", f"must be >= 0 (0: the BLAS library's default), got {config['threads']}"
        )
    if "seed" in config and config["seed"] < 0:
        raise ConfigError("seed", f"must be >= 0, got {config['seed']}")
    if "problem" in config and "shape" in config["problem"]:
        _int_list("problem.shape", config["problem"]["shape"], 2)
    dims = network_dims(config)
    _check_activation(config["network"])
    if "rank" in config and not 1 <= config["rank"] <= min(dims):
        raise ConfigError(
            "rank",
            f"{config['rank']} must be between 1 and the narrowest width {min(dims)} of dims {dims}",
        )
    for name, value in config.get("stopping", {}).items():
        if not math.isfinite(value) or value < 0:
            raise ConfigError(
                f"stopping.{name}", f"must be a non-negative finite number, got {value!r}"
            )
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
        if not (
            isinstance(pair, list) and len(pair) == 2 and all(isinstance(p, str) for p in pair)
        ):
            raise ConfigError(
                f"gap[{i}]",
                f"must be a pair [overparametrized, intrinsic] of method labels, got {pair!r}",
            )
        for p in pair:
            if p not in config["methods"]:
                raise ConfigError(f"gap[{i}]", f"names {p!r}, which is not a method of [methods]")
    for i, name in enumerate(config.get("plugins", [])):
        _check_type(f"plugins[{i}]", name, str)
    return config


def _check_activation(net: dict[str, Any]) -> None:
    """``network.activation`` is one of :data:`~dlngeo.relu.ACTIVATIONS`; ``slope`` only with ``leaky_relu``."""
    from .relu import ACTIVATIONS

    activation = net.get("activation", "linear")
    if activation not in ACTIVATIONS:
        raise ConfigError(
            "network.activation", f"must be one of {', '.join(ACTIVATIONS)}; got {activation!r}"
        )
    if "slope" in net:
        if activation != "leaky_relu":
            raise ConfigError("network.slope", f"only leaky_relu takes a slope, not {activation}")
        if not math.isfinite(net["slope"]):
            raise ConfigError("network.slope", f"must be finite, got {net['slope']!r}")


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
                raise ConfigError(
                    f"{prefix}.stopping.{name}",
                    f"must be a non-negative finite number, got {value!r}",
                )


def check_step_size(key: str, value: Any) -> None:
    """A method's step-size option (the one its ``step_option`` names) is a positive finite number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(key, f"must be a number, got {type(value).__name__} {value!r}")
    if not value > 0 or not math.isfinite(value):
        raise ConfigError(key, f"must be a positive step size, got {value!r}")


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
            raise ConfigError(
                "network.dims",
                f"output and input widths {dims[-1]}, {dims[0]} do not match problem.shape {shape}",
            )
        if "depth" in net and net["depth"] != len(dims) - 1:
            raise ConfigError(
                "network.depth",
                f"{net['depth']} does not match network.dims {dims} (depth {len(dims) - 1})",
            )
        if "width" in net and any(d != net["width"] for d in dims[1:-1]):
            raise ConfigError(
                "network.width",
                f"{net['width']} does not match the hidden widths of network.dims {dims}",
            )
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
