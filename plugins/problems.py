"""Built-in problem functions: the data of each built-in loss, from the config's tables.

Registered through ``dlngeo_register_problems`` like any plugin (the contract
is :mod:`dlngeo.problems`). A plugin whose loss takes the same data as a
built-in one registers the same function under its own loss name, e.g.
``register("huber_completion", completion_data)``.

======================  ====================  ==============================================
loss                    function              data
======================  ====================  ==============================================
``matrix_completion``   ``completion_data``   ``[observations]`` -> ``rows, cols``, ``values``
``matrix_sensing``      ``sensing_data``      ``[observations]`` -> ``A``, ``y = <A_i, M*>``
``regression``          ``regression_data``   ``[inputs]`` -> ``A, B = M* A``; else ``target``
``lp_regression``       ``regression_data``   as ``regression``
======================  ====================  ==============================================
"""

from __future__ import annotations

import numpy as np

from dlngeo.config import ConfigError
from dlngeo.hookspecs import hookimpl
from dlngeo.lowrank import entries, to_dense
from dlngeo.problems import LossData, ProblemContext

__all__ = ["completion_data", "regression_data", "sensing_data"]


def completion_data(problem: ProblemContext) -> LossData:
    """Observed entries: ``[observations]`` samples ``(rows, cols)``, ``values`` are ``M*`` there.

    The loss gets ``rows``, ``cols``, ``values`` and ``shape = (m, n)``
    (unless ``[loss]`` sets ``shape``); the metrics see ``rows`` and ``cols``.
    """
    problem.require("target", "observations")
    problem.refuse("data")
    rows, cols = problem.sample("observations")
    options = {"rows": rows, "cols": cols, "values": entries(problem.target, rows, cols)}
    if "shape" not in problem.options:
        options["shape"] = problem.shape
    return LossData(options=options, data={"rows": rows, "cols": cols})


def sensing_data(problem: ProblemContext) -> LossData:
    """Linear measurements: ``[observations]`` samples ``A`` (``k x m x n``), ``y_i = <A_i, M*>``."""
    problem.require("target", "observations")
    problem.refuse("data")
    A = problem.sample("observations")
    y = np.einsum("kij,ij->k", np.asarray(A), to_dense(problem.target))
    return LossData(options={"A": A, "y": y})


def regression_data(problem: ProblemContext) -> LossData:
    """Regression on ``M*``: with ``[inputs] count = b``, ``A`` (``n x b``, i.i.d. N(0, 1)) and
    ``B = M* A``; without ``[inputs]``, the whitened loss on ``target = M*`` (then visible to
    the initialization)."""
    problem.refuse("observations", " (use [inputs] for regression data)")
    problem.refuse("data")
    problem.require("target")
    inputs = problem.table("inputs")
    target = to_dense(problem.target)
    if inputs is None:
        return LossData(options={"target": target}, visible_target=problem.target)
    count = inputs.get("count")
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ConfigError("inputs.count", f"must be a positive integer, got {count!r}")
    A = problem.rng.standard_normal((problem.shape[1], count))
    return LossData(options={"A": A, "B": target @ A})


@hookimpl
def dlngeo_register_problems(register):
    entries = "[observations] -> rows, cols; values = M* there; shape"
    register("matrix_completion", completion_data, description=entries)
    register("matrix_sensing", sensing_data, description="[observations] -> A; y_i = <A_i, M*>")
    regression = "[inputs] -> A (n x b, N(0, 1)), B = M* A; without [inputs]: target = M*"
    register("regression", regression_data, description=regression)
    register("lp_regression", regression_data, description=regression)
