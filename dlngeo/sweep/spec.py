"""Sweep files: a base config, a grid and a zip of dotted keys, seeds -> resolved run configs.

The format (``examples/sweeps/*.toml``)::

    base = "../default.toml"      # optional: any `dlngeo run` config (or a list, layered);
                                  # a path is relative to the sweep file
    seed = 0                      # optional tables/keys: config layers over the base
    [network]
    depth = 3

    [sweep]
    name = "arora2019-fig1"       # default: the file's stem
    seeds = 3                     # or a list [0, 4, 9]; each seed is one more run of every point
    [sweep.grid]                  # cartesian product over dotted config keys
    "network.depth" = [1, 2, 3, 4]
    "observations.size" = [1000, 2000]
    [sweep.zip]                   # optional: lists of equal length, varied together
    "init.init_scale" = [1e-3, 1e-2]
    "stopping.max_time" = [120, 60]
    [sweep.report]                # optional defaults of `dlngeo report`
    x = "observations.size"
    y = "test_error"
    by = "network.depth"

``seeds = k`` means the seeds ``0, ..., k - 1``. Every point is merged
(:func:`dlngeo.config.merge_config`), validated and its plugins built
(:func:`check_config`: names and options, no data drawn) before anything
runs; a bad one raises :class:`SweepError`, one line naming the point and the
key. A run is identified by :func:`config_hash`, the SHA-256 of its resolved
config as canonical JSON.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..build import check_config
from ..config import ConfigError, load_config, merge_config

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = [
    "SweepError",
    "Point",
    "Sweep",
    "check_config",
    "config_hash",
    "load_sweep",
    "resolve_sweep",
]

_KEY = re.compile(r"[A-Za-z0-9_\-]+(\.[A-Za-z0-9_\-]+)*")
_SWEEP_KEYS = {"name", "seeds", "grid", "zip", "report"}


class SweepError(ValueError):
    """A bad sweep file or point; ``str(error)`` is one line naming the field or point and key."""


@dataclass(frozen=True)
class Point:
    """One run of a sweep: its axis values (``seed`` included), resolved config and hash."""

    index: int
    axes: dict[str, Any]
    config: dict[str, Any]
    config_hash: str


@dataclass
class Sweep:
    """A resolved sweep: its name, axes (dotted keys, ``seed`` last) and points."""

    name: str
    axes: list[str]
    points: list[Point]
    report: dict[str, str] = field(default_factory=dict)
    source: str = ""

    def describe(self) -> dict[str, Any]:
        """What the ledger keeps about the sweep itself (JSON)."""
        return {"axes": self.axes, "report": self.report, "source": self.source}


def config_hash(config: dict[str, Any]) -> str:
    """SHA-256 (hex, 16 digits) of ``config`` as canonical JSON (sorted keys, no spaces)."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _dotted(key: str, value: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    node = out
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = copy.deepcopy(value)
    return out


def _axis_table(where: str, table: Any) -> dict[str, list[Any]]:
    if not isinstance(table, dict):
        raise SweepError(f"{where}: must be a table of dotted keys to lists")
    for key, values in table.items():
        if not _KEY.fullmatch(key):
            raise SweepError(f'{where}."{key}": not a dotted config key')
        if key == "seed":
            raise SweepError(f'{where}."seed": vary seeds with sweep.seeds, not an axis')
        if not isinstance(values, list) or not values:
            raise SweepError(f'{where}."{key}": must be a non-empty list of values')
    return table


def _seeds(value: Any) -> list[int] | None:
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 1:
            raise SweepError(f"sweep.seeds: must be >= 1 (a count) or a list of seeds, got {value}")
        return list(range(value))
    if isinstance(value, list) and value:
        if any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in value):
            raise SweepError(f"sweep.seeds: must list non-negative integers, got {value!r}")
        if len(set(value)) != len(value):
            raise SweepError(f"sweep.seeds: repeats a seed: {value!r}")
        return list(value)
    raise SweepError(f"sweep.seeds: must be a count or a list of seeds, got {value!r}")


def load_sweep(path: str | Path, *, check: bool = True) -> Sweep:
    """Read a sweep file and resolve it (:func:`resolve_sweep`).

    Raises:
        SweepError: the file is missing, not TOML, or a field or point is bad.
    """
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            document = tomllib.load(fh)
    except FileNotFoundError:
        raise SweepError(f"{path}: no such sweep file") from None
    except IsADirectoryError:
        raise SweepError(f"{path}: is a directory, not a sweep file") from None
    except tomllib.TOMLDecodeError as exc:
        raise SweepError(f"{path}: invalid TOML: {exc}") from None
    return resolve_sweep(document, root=path.parent, default_name=path.stem, check=check)


def resolve_sweep(
    document: dict[str, Any],
    *,
    root: str | Path = ".",
    default_name: str = "sweep",
    check: bool = True,
) -> Sweep:
    """The points of a sweep document (the parsed TOML of a sweep file).

    Args:
        document: ``base``, config layers and the ``[sweep]`` table.
        root: Directory that a relative ``base`` path is taken from.
        default_name: Name when ``sweep.name`` is missing.
        check: Check every point's plugins and their options too
            (:func:`check_config`); else only :func:`~dlngeo.config.validate_config`.

    Raises:
        SweepError: one line naming the field, or the point (its axis values) and the key.
    """
    document = dict(document)
    spec = document.pop("sweep", None)
    if not isinstance(spec, dict):
        raise SweepError("sweep: the [sweep] table is required")
    unknown = sorted(set(spec) - _SWEEP_KEYS)
    if unknown:
        raise SweepError(
            f"sweep.{unknown[0]}: unknown key (known: {', '.join(sorted(_SWEEP_KEYS))})"
        )
    name = spec.get("name", default_name)
    if not isinstance(name, str) or not name:
        raise SweepError(f"sweep.name: must be a non-empty string, got {name!r}")
    bases = document.pop("base", [])
    bases = [bases] if isinstance(bases, str) else bases
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise SweepError(f"base: must be a path or a list of paths, got {bases!r}")
    try:
        config = load_config([Path(root) / b for b in bases], base={})
    except ConfigError as exc:
        raise SweepError(f"base: {exc}") from None
    if isinstance(document.get("methods"), dict):
        config.pop("methods", None)  # as a later config file: its methods replace the base's
    config = merge_config(config, document)
    grid = _axis_table("sweep.grid", spec.get("grid", {}))
    zipped = _axis_table("sweep.zip", spec.get("zip", {}))
    both = sorted(set(grid) & set(zipped))
    if both:
        raise SweepError(f'sweep.zip."{both[0]}": is also a grid axis')
    lengths = {len(v) for v in zipped.values()}
    if len(lengths) > 1:
        raise SweepError(
            "sweep.zip: lists must have equal lengths, got "
            + ", ".join(f"{k}: {len(v)}" for k, v in zipped.items())
        )
    seeds = _seeds(spec.get("seeds"))
    report = spec.get("report", {})
    if not isinstance(report, dict) or any(
        k not in ("x", "y", "by") or not isinstance(v, str) for k, v in report.items()
    ):
        raise SweepError(f"sweep.report: must be a table of x, y, by (strings), got {report!r}")
    axes = [*grid, *zipped, "seed"]
    zip_rows = list(zip(*zipped.values())) if zipped else [()]
    points: list[Point] = []
    seen: dict[str, int] = {}
    for values in itertools.product(*grid.values(), zip_rows):
        assignment = dict(zip(list(grid) + list(zipped), list(values[:-1]) + list(values[-1])))
        for seed in seeds if seeds is not None else [None]:
            point = dict(assignment)
            resolved = config
            for key, value in point.items():
                resolved = merge_config(resolved, _dotted(key, value))
            if seed is not None:
                resolved = merge_config(resolved, {"seed": seed})
            point["seed"] = resolved.get("seed", 0)
            index = len(points)
            _check(resolved, point, check)
            digest = config_hash(resolved)
            if digest in seen:
                raise SweepError(
                    f"point {_label(point)}: resolves to the same config as point {seen[digest]}"
                )
            seen[digest] = index
            points.append(Point(index, point, resolved, digest))
    return Sweep(name=name, axes=axes, points=points, report=dict(report))


def _label(point: dict[str, Any]) -> str:
    return "{" + ", ".join(f"{k}={v!r}" for k, v in point.items()) + "}"


def _check(config: dict[str, Any], point: dict[str, Any], build_it: bool) -> None:
    from ..config import validate_config

    try:
        check_config(config) if build_it else validate_config(config)
        json.dumps(config, allow_nan=False)
    except ConfigError as exc:
        raise SweepError(f"point {_label(point)}: {exc}") from None
    except ValueError as exc:  # a non-finite number in the config
        raise SweepError(f"point {_label(point)}: {' '.join(str(exc).split())}") from None
