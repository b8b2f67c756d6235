r"""Convex baselines: the minimum-nuclear-norm completion (depth 1 of Arora et al. 2019, Fig. 1).

``nuclear_norm`` solves

.. math::

    \min_X \|X\|_* \quad\text{s.t.}\quad |X_{ij} - M_{ij}| \le \text{tolerance}
    \quad\text{for } (i, j) \in \Omega

with cvxpy (SCS), on the observed entries of a completion loss (one with
``rows``, ``cols``, ``values``), as in the paper's convex baseline
(:func:`dlngeo.reproductions.completion.nuclear_norm_completion`). The network
is ignored: this is what "depth 1" means in the paper's figure, the limit
Gunasekar et al. (2017) conjectured for small-init gradient descent. It needs
the optional dependency cvxpy (``pip install 'dlngeo[convex]'``).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from dlngeo.dynamics.base import Method
from dlngeo.dynamics.record import Record
from dlngeo.hookspecs import hookimpl
from dlngeo.validation import check_positive, positive_integer

__all__ = ["NuclearNormCompletion"]


class NuclearNormCompletion(Method):
    """Minimum nuclear norm subject to the observed entries within ``tolerance`` (cvxpy, SCS).

    Args:
        tolerance: Allowed deviation on each observed entry (paper: 1e-3).
        eps: SCS accuracy (paper's code: tight; default 1e-7).
        max_iters: SCS iteration budget.
    """

    name = "nuclear_norm"
    flow_time = False
    #: One convex solve: no gradient iteration to stop ``stationary``.
    stops_stationary = False

    def __init__(self, tolerance: float = 1e-3, eps: float = 1e-7, max_iters: int = 200_000):
        if not tolerance >= 0:  # the message tests/test_convex pins
            raise ValueError(f"tolerance must be non-negative, got {tolerance!r}")
        self.tolerance = float(tolerance)
        self.eps = check_positive("eps", eps)
        self.max_iters = positive_integer(max_iters, "max_iters")

    def run(self, task: Any, stopping: Any = None, callback: Any = None) -> Record:
        try:
            import cvxpy as cp
        except ImportError:
            raise ValueError(
                "solver 'nuclear_norm' needs cvxpy: pip install 'dlngeo[convex]'"
            ) from None
        loss = task.loss
        if not all(hasattr(loss, a) for a in ("rows", "cols", "values", "shape")):
            raise ValueError("solver 'nuclear_norm' needs a completion loss (rows, cols, values)")
        start = time.perf_counter()
        rows, cols = np.asarray(loss.rows), np.asarray(loss.cols)
        X = cp.Variable(tuple(loss.shape))
        constraints = [cp.abs(X[rows, cols] - np.asarray(loss.values)) <= self.tolerance]
        problem = cp.Problem(cp.Minimize(cp.normNuc(X)), constraints)
        problem.solve(solver=cp.SCS, eps=self.eps, max_iters=self.max_iters)
        if X.value is None:
            raise RuntimeError(f"cvxpy found no solution (status {problem.status})")
        point = np.asarray(X.value)
        record = Record(method=self.name, time_kind="iteration")
        state = task.state(point, iteration=1, time=1.0)
        record.append(1.0, 1, task.evaluate(state))
        if callback is not None:
            callback(state, record)
        record.final_point = point
        record.stop_reason = "converged" if problem.status == "optimal" else "stalled"
        record.n_iterations = int(problem.solver_stats.num_iters or 0)
        record.evaluations = {"solve": 1}
        record.wall_time_s = time.perf_counter() - start
        record.info = {"status": problem.status, "nuclear_norm": float(problem.value)}
        return record


@hookimpl
def dlngeo_register_solvers(register):
    register(
        "nuclear_norm",
        NuclearNormCompletion,
        description="min nuclear norm s.t. observed entries within tolerance (cvxpy; depth-1 baseline)",
    )
