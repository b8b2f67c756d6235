"""dlngeo: deep linear networks as geometry.

The product map, the metric g_N it induces on rank-r matrices (as pymanopt
manifolds), the overparametrized and intrinsic flows, Riemannian solvers,
and the thermodynamics of the network (Menon 2024), with losses, metrics and
samplers supplied by pluggy plugins.
"""

from __future__ import annotations

import importlib
import importlib.metadata
from typing import Any

from .geometry import DLNFixedRank, FixedRank, metric_operator, problem
from .losses import Loss, loss_from_autograd
from .network import DeepLinearNetwork

try:  # the installed distribution's version (pyproject.toml), never a second literal
    __version__ = importlib.metadata.version("dlngeo")
except importlib.metadata.PackageNotFoundError:  # pragma: no cover - run from an uninstalled tree
    __version__ = "0+unknown"

# Names that live in modules with heavier imports (plugins, dynamics, CLI):
# imported on first use so that ``import dlngeo`` stays light.
_LAZY = {
    "hookimpl": "dlngeo.hookspecs",
    "create_loss": "dlngeo.plugins",
    "create_metric": "dlngeo.plugins",
    "create_sampler": "dlngeo.plugins",
    "create_initialization": "dlngeo.plugins",
    "create_data_sampler": "dlngeo.plugins",
    "create_chain": "dlngeo.plugins",
    "create_solver": "dlngeo.plugins",
    "available": "dlngeo.plugins",
    "compare": "dlngeo.experiment",
    "build": "dlngeo.experiment",
    "load_config": "dlngeo.experiment",
    "Comparison": "dlngeo.comparison",
    "Task": "dlngeo.dynamics.base",
    "Stopping": "dlngeo.dynamics.base",
    "Method": "dlngeo.dynamics.base",
    "LossData": "dlngeo.problems",
    "ProblemContext": "dlngeo.problems",
    "to_dense": "dlngeo.lowrank",
    "ReLUNetwork": "dlngeo.relu",
    "make_network": "dlngeo.relu",
    "Record": "dlngeo.dynamics.record",
    "entropy": "dlngeo.thermodynamics",
    "free_energy": "dlngeo.thermodynamics",
    "RiemannianLangevin": "dlngeo.thermodynamics",
    "RiemannianMALA": "dlngeo.thermodynamics",
    "OverparametrizedLangevin": "dlngeo.thermodynamics",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'dlngeo' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = [
    "DeepLinearNetwork",
    "DLNFixedRank",
    "FixedRank",
    "Loss",
    "loss_from_autograd",
    "metric_operator",
    "problem",
    *_LAZY,
]
