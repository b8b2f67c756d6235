"""The ``nuclear_norm`` solver plugin: the paper's convex baseline through the config machinery."""

from __future__ import annotations

import numpy as np
import pytest

from dlngeo.experiment import compare

pytest.importorskip("cvxpy")

CONFIG = {
    "seed": 3,
    "problem": {"shape": [12, 12]},
    "target": {"sampler": "low_rank_target", "rank": 2},
    "observations": {"sampler": "uniform_mask", "size": 90},
    "loss": {"name": "matrix_completion"},
    "network": {"depth": 1},
    "metrics": {"test_error": {"entries": "all", "squared": True}},
    "methods": {"nn": {"solver": "nuclear_norm", "tolerance": 1e-3}},
}


def test_nuclear_norm_solver_is_the_reproductions_convex_baseline():
    from dlngeo.experiment import build
    from dlngeo.reproductions.completion import nuclear_norm_completion

    comparison = compare(CONFIG)
    record = comparison.records["nn"]
    assert record.stop_reason == "converged" and record.time_kind == "iteration"
    plan = build(dict(CONFIG))
    target = plan.task.data["target"]
    rows, cols = plan.task.data["rows"], plan.task.data["cols"]
    reference = nuclear_norm_completion(target, rows, cols, tolerance=1e-3)
    # The same convex program, the same SCS settings and data: the same iterate
    # up to rounding (SCS is deterministic), so 1e-9 is many orders above eps.
    assert np.max(np.abs(record.final_point - reference.X)) <= 1e-9
    assert record.metrics["test_error"][-1] == pytest.approx(reference.test_error, rel=1e-9)
    # The target is feasible, so the minimum is at most its nuclear norm (SCS
    # eps = 1e-7 relative accuracy on the objective, 1e-6 allowed).
    assert record.info["nuclear_norm"] <= np.linalg.norm(target, "nuc") * (1 + 1e-6)


def test_nuclear_norm_solver_refuses_a_loss_without_observations():
    config = {
        "problem": {"shape": [6, 5]},
        "target": {"sampler": "low_rank_target", "rank": 1},
        "loss": {"name": "regression"},
        "network": {"depth": 1},
        "methods": {"nn": {"solver": "nuclear_norm"}},
    }
    with pytest.raises(ValueError, match="solver 'nuclear_norm' needs a completion loss"):
        compare(config)


def test_nuclear_norm_options_are_checked():
    config = {**CONFIG, "methods": {"nn": {"solver": "nuclear_norm", "tolerance": -1.0}}}
    with pytest.raises(ValueError, match=r"methods.nn.tolerance: .*must be non-negative"):
        compare(config)
