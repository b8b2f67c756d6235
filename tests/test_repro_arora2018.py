"""Arora, Cohen & Hazan 2018 (examples/arora_2018.py) at reduced size.

What is measured: on the example's synthetic regression set (n = 100, d = 10,
feature covariance condition 100, label noise 0.1), the number of gradient
descent iterations until the excess loss E - E_* is at most 1e-4 (E_0 - E_*),
for each variant at its best step size from one geometric grid (ratio 1.35);
the best step must lie strictly inside the grid, so that no variant is
handicapped by the grid's range.

Claims: for the l4 loss, depth 2, depth 3 and the one-scalar-layer variant
each need at least 2x fewer iterations than depth 1 (measured: 2.9x, 4.6x,
3.5x); for the l2 loss none of them is faster than depth 1 by more than the
grid's resolution (measured: 0.78x, 0.37x, 0.76x, i.e. slower). The Jacobian of X -> A_{N,X}(E'(X)) is
symmetric for N = 1 (to finite-difference error) and not for N = 2, 3.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

import dlngeo

_PATH = Path(__file__).resolve().parents[1] / "examples" / "arora_2018.py"
_spec = importlib.util.spec_from_file_location("arora_2018", _PATH)
ach = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ach)

ETAS = np.geomspace(0.05, 3.2, 15)


@pytest.fixture(scope="module")
def results():
    return ach.run(etas=ETAS, tol=1e-4, max_iter=2000, curves=False)


def test_best_steps_are_inside_the_grid(results):
    for p in (2.0, 4.0):
        for v in ach.VARIANTS:
            r = results[p][v]
            assert np.isfinite(r["iterations"]), (p, v)
            assert ETAS[0] < r["eta"] < ETAS[-1], (p, v, r["eta"])


def test_depth_accelerates_l4(results):
    r = results[4.0]
    for v in ("depth 2", "depth 3", "scalar layer"):
        assert r["speedup"][v] >= 2.0, (v, r["speedup"])


def test_no_acceleration_for_l2(results):
    r = results[2.0]
    step_ratio = ETAS[1] / ETAS[0]
    for v in ("depth 2", "depth 3", "scalar layer"):
        # Depth 1 at its best step is at least as fast, up to the grid's resolution.
        assert r["speedup"][v] <= step_ratio, (v, r["speedup"])
    # The contrast itself: every deep variant gains far more on l4 than on l2.
    for v in ("depth 2", "depth 3", "scalar layer"):
        assert results[4.0]["speedup"][v] >= 3.0 * r["speedup"][v]


def test_thresholds_and_optimum(results):
    for p in (2.0, 4.0):
        r = results[p]
        assert 0 < r["E_star"] < r["threshold"] < r["E0"]
    # l2: the trust-region optimum equals the least-squares solution.
    pr = results["problem"]
    w_ls = np.linalg.lstsq(pr["inputs"].T, pr["targets"][0], rcond=None)[0]
    loss = dlngeo.create_loss("lp_regression", p=2, A=pr["inputs"], B=pr["targets"])
    X, E = ach.optimum(loss, pr["inputs"].shape[0])
    # trust-exact stops at |grad| <= gtol = 1e-13, i.e. |X - X*| <= gtol / lambda_min(H) for the
    # (constant) Hessian H; lstsq is exact up to eps kappa(H)^(1/2) |w| (a factor 10 on each).
    d = pr["inputs"].shape[0]
    H = np.stack([loss.hessian_vector_product(X, e[None, :])[0] for e in np.eye(d)])
    lam = np.linalg.eigvalsh(0.5 * (H + H.T))
    eps = np.finfo(float).eps
    bound = 10 * 1e-13 / lam[0] + 10 * eps * np.sqrt(lam[-1] / lam[0]) * np.abs(w_ls).max()
    assert np.abs(X[0] - w_ls).max() <= bound
    assert bound <= 1e-9  # guard: the check pins the optimum
    assert abs(E - results[2.0]["E_star"]) <= 1e-14  # the same computation: rounding


def test_factor_updates_match_end_to_end_preconditioner():
    # One small GD step on balanced factors moves X by -eta A_{N,X}(E'(X)) + O(eta^2):
    # the update whose Jacobian the next test examines.
    rng = np.random.default_rng(0)
    loss = dlngeo.create_loss(
        "lp_regression", p=4, A=rng.standard_normal((2, 8)), B=rng.standard_normal((3, 8))
    )
    net = dlngeo.DeepLinearNetwork((2, 4, 4, 3))
    X = rng.standard_normal((3, 2))
    W = net.balanced(X, rng=1)
    F = dlngeo.metric_operator(X, loss.gradient(X), 3)
    errs = []
    for eta in (1e-4, 5e-5):
        W1 = [w - eta * g for w, g in zip(W, net.gradients(W, loss.gradient(X)))]
        step = (net.product(W1) - X) / eta
        errs.append(np.abs(step + F).max() / np.abs(F).max())
    assert errs[0] <= 1e-2 and 0.45 < errs[1] / errs[0] < 0.55, errs


def test_update_is_not_a_gradient():
    jac = ach.jacobian_study(depths=(1, 2, 3))
    a, e = jac["asymmetry"], jac["fd_error"]
    assert np.all(e <= 1e-8)
    assert a[0] <= 10 * max(e[0], 1e-12)  # N = 1: the Hessian of E, symmetric
    assert np.all(a[1:] >= 1e-2)  # N = 2, 3: a relative asymmetry of order 1/3
    assert np.all(a[1:] >= 1e6 * e[1:])


def test_bad_input():
    with pytest.raises(ValueError, match="variant"):
        ach.variant_dims("depth 9", 3, 2)
    with pytest.raises(ValueError, match="eta"):
        ach.descend(dlngeo.create_loss("regression", target=np.ones((1, 3))), (3, 1), 0.0, 10)
    with pytest.raises(ValueError, match="cond"):
        ach.make_problem(cond=0.5)


def test_descend_is_plain_factor_gradient_descent():
    # descend runs the library's overparametrized_gd under Stopping.only; it must be the
    # textbook loop W_k <- W_k - eta dL/dW_k (the example's loop before it used the library).
    pr = ach.make_problem(n=30, d=4)
    loss = dlngeo.create_loss("lp_regression", p=4, A=pr["inputs"], B=pr["targets"])
    dims, eta, steps = (4, 3, 3, 1), 0.05, 40
    net = dlngeo.DeepLinearNetwork(dims)
    W = ach._init(dims, 1e-1, 1)
    expected = []
    for _ in range(steps + 1):
        X = net.product(W)
        expected.append(loss.value(X))
        W = [w - eta * g for w, g in zip(W, net.gradients(W, loss.gradient(X)))]
    r = ach.descend(loss, dims, eta, steps, init=1e-1, seed=1)
    assert r["hit"] is None and not r["diverged"] and len(r["losses"]) == steps + 1
    # The same arithmetic up to the association of the products: a few eps per step, carried
    # through 40 steps of a contracting map (stable step): far below 1e-12 relative.
    assert np.allclose(r["losses"], expected, rtol=1e-12, atol=0)
    # The threshold stop: hit is the first step at or below it.
    k = 25
    r = ach.descend(loss, dims, eta, steps, init=1e-1, seed=1, threshold=expected[k])
    assert r["hit"] == min(i for i, v in enumerate(expected) if v <= expected[k])
