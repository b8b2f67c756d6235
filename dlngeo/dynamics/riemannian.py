"""Riemannian optimization on the rank-r manifold: constant-step descent and pymanopt's solvers.

The methods live in :mod:`dlngeo.dynamics.riemannian_gd` (:class:`RiemannianGD`,
:func:`manifold_for`) and :mod:`dlngeo.dynamics.pymanopt_solver`
(:class:`PymanoptSolver`, :func:`pymanopt_reason`); this module re-exports
them under their historical import path.
"""

from __future__ import annotations

from .pymanopt_solver import PYMANOPT_SOLVERS, PymanoptSolver, pymanopt_reason
from .riemannian_gd import RiemannianGD, manifold_for

__all__ = ["RiemannianGD", "PymanoptSolver", "manifold_for", "PYMANOPT_SOLVERS", "pymanopt_reason"]
