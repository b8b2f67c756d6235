"""One version of each helper: the reproductions call the registered samplers and metrics."""

import numpy as np
import pytest

import dlngeo
from dlngeo.network import DeepLinearNetwork, haar_stiefel
from dlngeo.reproductions import balanced, completion, razin_cohen
from dlngeo.state import State

EPS = np.finfo(float).eps


@pytest.mark.parametrize("rows, cols", [(5, 3), (3, 5), (4, 4)])
def test_haar_stiefel_is_a_partial_isometry(rows, cols):
    Q = haar_stiefel(np.random.default_rng(0), rows, cols)
    small = min(rows, cols)
    gram = Q.T @ Q if rows >= cols else Q @ Q.T
    # Householder QR: orthonormal to a few eps times the size
    assert Q.shape == (rows, cols) and np.abs(gram - np.eye(small)).max() <= 10 * rows * EPS


def test_reproduction_helpers_are_the_registered_ones():
    rng = lambda: np.random.default_rng(4)  # noqa: E731
    target = completion.low_rank_target(12, 3, rng())
    same = dlngeo.create_sampler("low_rank_target", shape=(12, 12), rank=3).sample(rng())
    assert np.array_equal(target, same)
    net = DeepLinearNetwork((6, 6, 6, 6))
    W = completion.gaussian_factors(net, 1e-2, rng())
    ref = dlngeo.create_sampler("gaussian", init_scale=1e-2, width=6).sample(rng(), net)
    assert all(np.array_equal(a, b) for a, b in zip(W, ref))
    X = target
    metric = dlngeo.create_metric("effective_rank")(State(point=X))
    assert completion.effective_rank(X) == metric == razin_cohen.effective_rank(X)


def test_balanced_gaussian_factors_have_the_documented_law():
    """W_k = scale Z_k with Z_k iid N(0, 1/d_{k-1}): the same draws as scale = 1, times scale (to rounding)."""
    net = DeepLinearNetwork((4, 7, 5))
    one = balanced.gaussian_factors(net, 1.0, 9)
    tenth = balanced.gaussian_factors(net, 0.1, 9)
    for a, b in zip(one, tenth):
        # scale**N then its N-th root: a few roundings of relative size eps
        np.testing.assert_allclose(b, 0.1 * a, rtol=10 * EPS, atol=0)
