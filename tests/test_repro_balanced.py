"""Balanced factor flow = Riemannian gradient flow on (M_r, g_N); unbalanced starts are off by O(sigma^2)."""

import numpy as np
import pytest

from dlngeo import DeepLinearNetwork
from dlngeo.reproductions.balanced import (
    compare_flows,
    end_to_end_velocity,
    gaussian_factors,
    intrinsic_flow,
    overparametrized_flow,
    regression_target,
    velocity_gap,
)

Y = regression_target(5, 6, [3.0, 2.0, 1.5, 0.5, 0.2], rng=10)
DIMS3 = (6, 3, 3, 5)
DIMS2 = (6, 3, 5)


@pytest.fixture(scope="module")
def depth3():
    return {
        (s, b): compare_flows(DIMS3, Y, s, 40.0, balanced=b, samples=60)
        for s in (0.4, 0.2)
        for b in (True, False)
    }


@pytest.fixture(scope="module")
def depth2():
    return {s: compare_flows(DIMS2, Y, s, 20.0, balanced=False, samples=40) for s in (0.1, 0.03)}


def test_end_to_end_velocity_is_the_derivative_of_phi():
    """d/dt phi(W(t)) along W' = -grad L, by a central difference."""
    net = DeepLinearNetwork(DIMS3)
    W = gaussian_factors(net, 0.8, 3)
    grads = net.gradients(W, net.product(W) - Y)
    h = 1e-6
    fd = (
        net.product([w - h * g for w, g in zip(W, grads)])
        - net.product([w + h * g for w, g in zip(W, grads)])
    ) / (2 * h)
    # Central difference: truncation h^2 |third derivative| ~ 1e-12, rounding eps / h ~ 2e-10.
    assert np.max(np.abs(end_to_end_velocity(net, W, Y) - fd)) <= 1e-8 * np.max(np.abs(fd))


def test_gaussian_imbalance_scales_exactly_with_sigma_squared():
    net = DeepLinearNetwork(DIMS3)
    G1 = net.imbalance(gaussian_factors(net, 1.0, 5))
    G2 = net.imbalance(gaussian_factors(net, 0.3, 5))
    for a, b in zip(G1, G2):
        # The same draw scaled by 0.3: equal up to the rounding of W^T W (a few eps).
        assert np.allclose(b, 0.09 * a, rtol=1e-12, atol=1e-15)


def _trajectory_error(dims, scale, times):
    """Estimated global errors of the two flows of ``compare_flows`` (rtol 1e-11), relative to ``||Y||``.

    Each flow is rerun at rtol 1e-13: the global error follows the tolerance
    proportionally, so the difference estimates the error of the rtol 1e-11 run.
    """
    net = DeepLinearNetwork(dims)
    g = np.random.default_rng(0)  # compare_flows' draw
    X0 = net.product(gaussian_factors(net, scale, g))
    W0 = net.balanced(X0, rng=g, rank=net.rank_bound)
    runs = {}
    for rtol in (1e-11, 1e-13):
        path, _, _ = overparametrized_flow(net, W0, Y, times, rtol=rtol, atol=1e-2 * rtol)
        Xs = intrinsic_flow(X0, Y, net.depth, net.rank_bound, times, rtol=rtol, atol=1e-2 * rtol)
        runs[rtol] = (np.array([net.product(W) for W in path]), Xs)
    (Xo, Xs), (Xo_ref, Xs_ref) = runs[1e-11], runs[1e-13]
    norm = lambda Z: np.linalg.norm(Z, axis=(1, 2)) / np.linalg.norm(Y)
    return norm(Xo - Xo_ref) + norm(Xs - Xs_ref)


@pytest.mark.parametrize("scale", [0.4, 0.2])
def test_balanced_start_follows_the_riemannian_flow(depth3, scale):
    c = depth3[scale, True]
    assert c.imbalance <= 1e-14  # balanced(): exact up to rounding, eps |W|^2 per entry
    assert np.isfinite(c.t90)
    # Balance is kept exactly by the flow; at t90 the weights carry the integration error
    # dW ~ 10 rtol |W| (rtol 1e-11, |W| <= 1.5), an imbalance <= 2 |W| |dW| ~ 5e-10, which
    # enters the gap linearly with the coefficient gap / imbalance ~ 0.2 of the unbalanced
    # runs (checked <= 0.5 below): ~1e-10, plus rounding eps kappa(X).
    assert c.velocity_gap_t90 <= 1e-10
    unbalanced = depth3[scale, False]
    assert unbalanced.velocity_gap_t90 <= 0.5 * unbalanced.imbalance
    # Same X0, integrated separately (DOP853, rtol 1e-11): equal at 10x both runs' estimated
    # global errors (each run against its rtol / 100 rerun), plus rounding.
    error = _trajectory_error(DIMS3, scale, c.times)
    eps = np.finfo(float).eps
    assert np.all(c.trajectory_gap <= 10 * error + 10 * eps)
    assert error.max() <= 1e-7  # guard: the comparison is at integration accuracy
    # The rank-3 minimum, reached at rate >= N s_3^(2 - 2/N) ~ 5 by t = 40 (e^-200), to rtol 1e-11.
    assert c.loss[-1] == pytest.approx(0.5 * (0.5**2 + 0.2**2), rel=1e-8)


def test_unbalanced_gap_scales_like_the_imbalance(depth3, depth2):
    """Velocity gap once the loss is down 90 %: ratio across scales = (sigma_1/sigma_2)^2 within 5 %."""
    big, small = depth3[0.4, False], depth3[0.2, False]
    assert big.imbalance / small.imbalance == pytest.approx(4.0, rel=1e-12)
    assert 1e-3 < small.velocity_gap_t90 < big.velocity_gap_t90 < 0.2
    assert big.velocity_gap_t90 / small.velocity_gap_t90 == pytest.approx(4.0, rel=0.05)
    r2 = depth2[0.1].velocity_gap_t90 / depth2[0.03].velocity_gap_t90
    assert r2 == pytest.approx((0.1 / 0.03) ** 2, rel=0.05)


def test_unbalanced_trajectory_gap_does_not_shrink_but_limits_agree(depth3):
    """Equal-time trajectories differ by O(1) whatever sigma (escape time shift); both end at the same minimizer."""
    gaps = [depth3[s, False].trajectory_gap for s in (0.4, 0.2)]
    assert all(g.max() > 0.3 for g in gaps)
    assert all(g[-1] <= 1e-8 for g in gaps)  # converged (e^-200) up to ~1e-9 integration error


def test_velocity_gap_zero_on_balanced_factors():
    net = DeepLinearNetwork(DIMS2)
    X = net.product(gaussian_factors(net, 1.0, 7))
    # Zero up to the rounding of the SVD kernel (eps kappa; 1e-12 ~ 4500 eps).
    assert velocity_gap(net, net.balanced(X, rng=1, rank=3), Y) <= 1e-12


def test_bad_input():
    with pytest.raises(ValueError, match="scale"):
        gaussian_factors(DeepLinearNetwork(DIMS2), 0.0)
    with pytest.raises(ValueError, match="singular_values"):
        regression_target(2, 2, [1, 2, 3])


def test_balanced_velocity_is_minus_the_dln_fixed_rank_gradient():
    """dphi[W'] at balanced factors = -grad_{g_N} E of the pymanopt manifold DLNFixedRank(m, n, r, N)."""
    from dlngeo import DLNFixedRank
    from dlngeo.lowrank import tangent_to_factored

    net = DeepLinearNetwork(DIMS3)
    X = net.product(gaussian_factors(net, 1.0, 11))
    W = net.balanced(X, rng=2, rank=3)
    u, s, vt = np.linalg.svd(X, full_matrices=False)
    point = (u[:, :3], s[:3], vt[:3])
    manifold = DLNFixedRank(5, 6, 3, 3)
    grad = manifold.euclidean_to_riemannian_gradient(point, X - Y)
    ambient = tangent_to_factored(point, grad).to_dense()
    # Two computations of one tangent vector: equal up to rounding (1e-12 ~ 4500 eps).
    assert np.max(np.abs(end_to_end_velocity(net, W, Y) + ambient)) <= 1e-12 * np.max(
        np.abs(ambient)
    )


def test_intrinsic_flow_matches_the_library_low_rank_solver():
    """The example's dense rank-r flow = dlngeo's IntrinsicFlow on (u, s, vt) (projected RK45)."""
    import autograd.numpy as anp

    from dlngeo import loss_from_autograd
    from dlngeo.dynamics.base import Stopping, Task
    from dlngeo.dynamics.intrinsic import IntrinsicFlow
    from dlngeo.lowrank import to_dense
    from dlngeo.reproductions.balanced import intrinsic_flow

    net = DeepLinearNetwork(DIMS3)
    W0 = gaussian_factors(net, 0.4, 0)
    loss = loss_from_autograd(lambda X: 0.5 * anp.sum((X - Y) ** 2), shape=(5, 6))
    task = Task(loss=loss, network=net, weights0=W0, rank=3)
    record = IntrinsicFlow(representation="lowrank", rtol=1e-10, atol=1e-13).run(
        task, Stopping(end_time=4.0, max_iterations=None)
    )
    ours = intrinsic_flow(net.product(W0), Y, 3, 3, np.array([0.0, record.times[-1]]))[-1]
    assert record.times[-1] == pytest.approx(4.0, rel=1e-14)  # the integrator ends at t_bound
    # Two integrators at rtol 1e-10 and 1e-11 on a flow that contracts towards the minimizer
    # (no amplification over t <= 4): 10 x the looser rtol.
    assert np.linalg.norm(to_dense(record.final_point) - ours) <= 1e-9 * np.linalg.norm(ours)
