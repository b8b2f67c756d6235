"""The factor gradient flow and the intrinsic flow agree (docs/math.md §2–3; Arora, Cohen & Hazan 2018).

From a balanced start W(0) with phi(W(0)) = X(0), integrating

    dW_k/dt = -dL/dW_k          (factor flow, all N layers)
    dX/dt   = -A_{N,X}(E'(X))   (intrinsic flow on the end-to-end matrix)

with scipy's solve_ivp (DOP853, rtol 1e-11) gives phi(W(t)) = X(t). Under the factor flow,
from any start, the imbalances G_k are conserved and every ||W_k||^2 moves at the
rate -2 <X, E'(X)>.

Every solve is repeated at rtol / 100: the difference estimates the global error of
the rtol run (the global error follows the tolerance proportionally), and the
comparisons are made at K = 10 times those estimates (the estimate's own error,
the rtol / 100 run's error and the order changes of the error, is well below a
factor 2), never at a fixed number measured on one machine.
"""

import numpy as np
import pytest
from scipy.integrate import solve_ivp

import dlngeo
from dlngeo.geometry import metric_operator

RTOL, ATOL = 1e-11, 1e-14
T = 1.0
K = 10  # safety factor on an estimated global error
EPS = np.finfo(float).eps


class Energy:
    """E(X) = ½ ||mask ∘ (X - Y)||² + (c/4) Σ X⁴: masked (completion-like) and not quadratic."""

    def __init__(self, rng, shape, c=0.05):
        self.Y = rng.standard_normal(shape)
        self.mask = (rng.random(shape) < 0.7).astype(float)
        self.c = c

    def gradient(self, X):
        return self.mask * (X - self.Y) + self.c * X**3


def _factor_flow(net, energy, W0, t_eval, tighten=1.0):
    sizes = [int(np.prod(s)) for s in net.shapes]
    splits = np.cumsum(sizes)[:-1]

    def unpack(y):
        return [part.reshape(shape) for part, shape in zip(np.split(y, splits), net.shapes)]

    def rhs(t, y):
        W = unpack(y)
        return -np.concatenate(
            [g.ravel() for g in net.gradients(W, energy.gradient(net.product(W)))]
        )

    sol = solve_ivp(
        rhs,
        (0.0, t_eval[-1]),
        np.concatenate([w.ravel() for w in W0]),
        method="DOP853",
        rtol=RTOL / tighten,
        atol=ATOL / tighten,
        t_eval=t_eval,
    )
    assert sol.success
    return [unpack(y) for y in sol.y.T]


def _intrinsic_flow(energy, X0, depth, t_eval, rank=None, tighten=1.0):
    """Dense intrinsic flow; with ``rank`` the operator is the rank-r one (``metric_operator(..., rank=r)``).

    A bottlenecked X(t) is rank r only up to the integrator's error (~rtol).
    Without ``rank`` the kernel reads those error-level singular values e as
    genuine ones, and K depends on them through e**(2/N): measured gaps of
    1e-8 (N = 2) growing to 1.6e-6 (N = 5), and N = 6 turns stiff.
    """
    shape = X0.shape

    def rhs(t, y):
        X = y.reshape(shape)
        return -metric_operator(X, energy.gradient(X), depth, rank=rank).ravel()

    sol = solve_ivp(
        rhs,
        (0.0, t_eval[-1]),
        X0.ravel(),
        method="DOP853",
        rtol=RTOL / tighten,
        atol=ATOL / tighten,
        t_eval=t_eval,
    )
    assert sol.success
    return [y.reshape(shape) for y in sol.y.T]


CASES = {
    # dims (d_0, ..., d_N) and whether a hidden width is below min(m, n).
    "full rank": lambda depth: (4,) + (5,) * (depth - 1) + (3,),
    "bottleneck": lambda depth: (4,) + (2,) + (4,) * (depth - 2) + (5,),
}


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("depth", [2, 3, 4, 5, 6])
def test_factor_flow_equals_intrinsic_flow(case, depth):
    dims = CASES[case](depth)
    net = dlngeo.DeepLinearNetwork(dims)
    rng = np.random.default_rng(depth + 10 * len(case))
    m, n = net.output_shape
    r = net.rank_bound
    energy = Energy(rng, (m, n))
    X0 = rng.standard_normal((m, r)) @ rng.standard_normal((r, n)) / np.sqrt(r)
    W0 = net.balanced(X0, rng=rng)
    t_eval = np.linspace(0.0, T, 5)
    rank = r if r < min(m, n) else None
    Ws = _factor_flow(net, energy, W0, t_eval)
    Xs = _intrinsic_flow(energy, X0, depth, t_eval, rank=rank)
    Ws_ref = _factor_flow(net, energy, W0, t_eval, tighten=100)
    Xs_ref = _intrinsic_flow(energy, X0, depth, t_eval, rank=rank, tighten=100)
    for W, X, W_ref, X_ref in zip(Ws, Xs, Ws_ref, Xs_ref):
        P, P_ref = net.product(W), net.product(W_ref)
        # Both runs' estimated global errors, plus the rounding of the product (N eps |X|).
        error = np.linalg.norm(P - P_ref) + np.linalg.norm(X - X_ref)
        error += depth * EPS * np.linalg.norm(X)
        assert np.linalg.norm(P - X) <= K * error, (np.linalg.norm(P - X), error)
        # Guard: rtol 1e-11 over T = 1 gives ~1e-10 |X|, so the comparison is tight.
        assert K * error <= 1e-7 * np.linalg.norm(X)
    # The run went somewhere: X(T) is far from X(0) compared to the gap.
    assert np.linalg.norm(Xs[-1] - X0) >= 0.1 * np.linalg.norm(X0)
    # The rank of a bottlenecked product never exceeds the narrowest width: the singular values
    # past r are rounding of the product, a few eps |X| per factor (1e-12 ~ 4500 eps).
    assert np.linalg.svd(net.product(Ws[-1]), compute_uv=False)[r:].max(
        initial=0.0
    ) <= 1e-12 * np.linalg.norm(Xs[-1])


@pytest.mark.parametrize("dims", [(4, 5, 5, 3), (4, 2, 4, 4, 5), (3, 6, 2, 5, 4, 3, 3)])
def test_imbalance_is_conserved_and_layers_grow_at_the_same_rate(dims):
    """From an unbalanced random start: G_k(t) = G_k(0) to the integration error, and d/dt ||W_k||² = -2 <X, E'(X)> for all k."""
    net = dlngeo.DeepLinearNetwork(dims)
    rng = np.random.default_rng(len(dims))
    energy = Energy(rng, net.output_shape)
    W0 = [rng.standard_normal(shape) / np.sqrt(shape[1]) for shape in net.shapes]
    G0 = net.imbalance(W0)
    assert max(np.abs(G).max() for G in G0) > 0.1  # genuinely unbalanced
    t_eval = np.linspace(0.0, T, 4)
    Ws = _factor_flow(net, energy, W0, t_eval)
    Ws_ref = _factor_flow(net, energy, W0, t_eval, tighten=100)
    # G_k = W_{k+1}^T W_{k+1} - W_k W_k^T moves by at most 2 |W| |dW| + |dW|^2 under an error dW
    # of the weights: the bound from the estimated global error of W (plus rounding, eps |W|^2).
    size = max(np.abs(w).max() for W in Ws for w in W)
    width = max(dims)
    errors = [
        max(np.abs(w - w_ref).max() for w, w_ref in zip(W, W_ref)) for W, W_ref in zip(Ws, Ws_ref)
    ]
    bounds = [K * (2 * width * size * e + width * e**2) + 4 * width * EPS * size**2 for e in errors]
    assert max(bounds) <= 1e-8  # guard: rtol 1e-11 keeps this a strong statement
    for W, bound in zip(Ws[1:], bounds[1:]):
        drift = max(np.abs(G - G_init).max() for G, G_init in zip(net.imbalance(W), G0))
        assert drift <= bound, (drift, bound)
        # Rates from the vector field at this point: 2 <W_k, -dL/dW_k>.
        X = net.product(W)
        E_prime = energy.gradient(X)
        rates = [-2.0 * np.sum(w * g) for w, g in zip(W, net.gradients(W, E_prime))]
        expected = -2.0 * np.sum(X * E_prime)
        # An algebraic identity: equal up to the rounding of the sums (1e-12 ~ 4500 eps).
        assert np.allclose(rates, expected, rtol=1e-12, atol=1e-14 * abs(expected)), (
            rates,
            expected,
        )
    # Hence ||W_k||² - ||W_{k+1}||² is conserved along the integrated trajectory.
    # ||W_k||^2 - ||W_{k+1}||^2 = -tr G_k: the same bound, summed over the trace.
    diffs = [np.diff(net.layer_norms(W) ** 2) for W in Ws]
    for d, bound in zip(diffs, bounds):
        assert np.abs(d - diffs[0]).max() <= width * bound
    assert max(np.linalg.norm(a - b) for a, b in zip(Ws[-1], W0)) > 0.1  # the weights did move
