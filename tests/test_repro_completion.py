"""Arora, Cohen, Hu & Luo (2019) at reduced size (docs/math.md §5): n = 30, rank 2, 250 observations, 3 seeds."""

import importlib.util

import numpy as np
import pytest

from dlngeo.reproductions.completion import (
    GroupRMSprop,
    effective_rank,
    low_rank_target,
    nuclear_norm_completion,
    train_deep_factorization,
    uniform_observations,
)

N, RANK, COUNT, SEEDS = 30, 2, 250, (0, 1, 2)
HAS_CVXPY = importlib.util.find_spec("cvxpy") is not None


def _problem(seed):
    target = low_rank_target(N, RANK, np.random.default_rng(seed))
    rows, cols = uniform_observations(target.shape, COUNT, np.random.default_rng((seed, COUNT)))
    return target, rows, cols


@pytest.fixture(scope="module")
def deep_runs():
    runs = {}
    for seed in SEEDS:
        target, rows, cols = _problem(seed)
        for depth in (2, 3):
            runs[seed, depth] = train_deep_factorization(
                target,
                rows,
                cols,
                depth,
                init_scale=1e-3,
                lr=1e-3,
                max_iterations=50_000,
                rng=np.random.default_rng((seed, COUNT, depth)),
            )
    return runs


def test_all_runs_fit_the_observations(deep_runs):
    for run in deep_runs.values():
        assert run.converged and run.train_loss <= 1e-6


@pytest.mark.parametrize("seed", SEEDS)
def test_depth3_beats_depth2_at_few_observations(deep_runs, seed):
    d2, d3 = deep_runs[seed, 2], deep_runs[seed, 3]
    # Depth 3 recovers the target, depth 2 does not (test MSE ~0.03-0.07). These are claims
    # about the outcome, not integration tolerances: recovery means a test error two orders
    # below depth 2's (asserted below) and below 2e-4, i.e. entries right to ~1e-2.
    assert d3.test_error <= 2e-4
    assert d2.test_error >= 1e-2
    assert d3.test_error <= 1e-2 * d2.test_error
    assert d3.effective_rank < d2.effective_rank - 0.5
    assert abs(d3.effective_rank - RANK) <= 0.05


@pytest.mark.skipif(
    not HAS_CVXPY, reason="cvxpy not installed (optional extra: pip install 'dlngeo[convex]')"
)
@pytest.mark.parametrize("seed", SEEDS)
def test_nuclear_norm_is_worse_than_depth3(deep_runs, seed):
    target, rows, cols = _problem(seed)
    nuc = nuclear_norm_completion(target, rows, cols)
    # The constraints |X_ij - M_ij| <= 1e-3 on Omega hold (SCS accuracy).
    assert np.max(np.abs(nuc.X[rows, cols] - target[rows, cols])) <= 1.1e-3
    assert nuc.test_error >= 1e-2
    assert nuc.test_error >= 100 * deep_runs[seed, 3].test_error
    assert nuc.effective_rank > deep_runs[seed, 3].effective_rank + 0.5


def test_target_and_observations_follow_the_protocol():
    target = low_rank_target(40, 3, 1)
    assert np.linalg.norm(target) == pytest.approx(40, rel=1e-12)
    assert np.linalg.matrix_rank(target) == 3
    rows, cols = uniform_observations(target.shape, 500, 2)
    assert len(set(zip(rows.tolist(), cols.tolist()))) == 500


def test_effective_rank_of_equal_singular_values_is_the_rank():
    u, _ = np.linalg.qr(np.random.default_rng(0).standard_normal((10, 4)))
    assert effective_rank(u @ u.T) == pytest.approx(4.0, rel=1e-12)
    assert effective_rank(np.outer(np.arange(1, 6), np.ones(5))) == pytest.approx(1.0, abs=1e-6)


def test_group_rmsprop_moves_about_lr_per_step():
    """First step: bias-corrected average = sum ||g||^2, so the step's total norm is lr ||g|| / (||g|| + eps)."""
    opt = GroupRMSprop(lr=1e-3, eps=1e-4)
    grads = [np.full((3, 3), 2.0), np.full((2, 3), -1.0)]
    norm = np.sqrt(sum(np.sum(g**2) for g in grads))
    assert opt.step_size(grads) * norm == pytest.approx(1e-3 * norm / (norm + 1e-4), rel=1e-12)


def test_bad_input():
    target, rows, cols = _problem(0)
    with pytest.raises(ValueError, match="depth"):
        train_deep_factorization(target, rows, cols, 1)
    with pytest.raises(ValueError, match="optimizer"):
        train_deep_factorization(target, rows, cols, 2, optimizer="adam")
    with pytest.raises(ValueError, match="count"):
        uniform_observations((3, 3), 10)
    with pytest.raises(ValueError, match="rank"):
        low_rank_target(3, 4)


def test_group_rmsprop_is_a_time_change_of_gradient_descent():
    """One global scalar step size: in the small-step limit GroupRMSprop follows the gradient-flow path, so
    plain GD's end point approaches it linearly in the learning rate."""
    target = low_rank_target(12, 1, 0)
    rows, cols = uniform_observations(target.shape, 80, 1)
    ref = train_deep_factorization(
        target, rows, cols, 2, init_scale=0.1, lr=1e-3, max_iterations=50_000, rng=2
    )
    gaps = []
    for lr in (1.0, 0.5):
        gd = train_deep_factorization(
            target,
            rows,
            cols,
            2,
            init_scale=0.1,
            lr=lr,
            optimizer="gd",
            max_iterations=10_000,
            rng=2,
        )
        assert gd.converged and ref.converged
        gaps.append(np.max(np.abs(gd.X - ref.X)))
    # First order in the step: gap = C lr + D lr^2, so the ratio is 2 (1 + (D / 2C) lr); the
    # window allows |D / C| lr <= 0.06 at lr = 1 (the reference, lr 1e-3, is 1e-3 of the gaps).
    assert gaps[0] / gaps[1] == pytest.approx(2.0, rel=0.03)
    assert gaps[1] <= 0.05
