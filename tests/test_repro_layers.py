"""Layer growth and phases (examples/layer_growth.py) at reduced size.

Claims (docs/math.md §2.1-2.2, §9; Du, Hu & Lee 2018):
* GD changes ||W_k||^2 - ||W_{k+1}||^2 by exactly eta^2 (||d_k L||^2 - ||d_{k+1} L||^2)
  per step, linear and ReLU alike, so the drift over a fixed time halves with eta;
* learning shows a plateau, one burst per teacher mode, saturation, with one
  growth rate shared by all layers;
* ReLU breaks the matrix invariants G_k (their drift is O(1), not O(eta)) but
  keeps their diagonal and the layer-norm differences under gradient flow.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

_PATH = Path(__file__).resolve().parents[1] / "examples" / "layer_growth.py"
_spec = importlib.util.spec_from_file_location("layer_growth", _PATH)
lg = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(lg)


@pytest.fixture(scope="module")
def problem():
    return lg.make_problem(dims=(6, 10, 10, 6), n_samples=40, seed=1)


@pytest.fixture(scope="module")
def drifts(problem):
    """GD over t in [0, 8] at eta and eta/2, for both activations."""
    return {
        act: [lg.gradient_descent(problem, act, eta, 8.0, n_records=2) for eta in (1e-2, 5e-3)]
        for act in lg.ACTIVATIONS
    }


def test_library_gradients_match_backpropagation(problem):
    W, x, y = problem["weights0"], problem["inputs"], problem["targets"]
    l1, g1 = lg.loss_and_gradients(W, x, y, "linear", problem["network"])
    l2, g2 = lg.loss_and_gradients(W, x, y, "linear")
    # One loss and gradient summed in two orders: rounding, ~(samples x width) eps = 400 eps
    # relative to the terms (the loss and the largest gradient entry); bounds ~10x that.
    assert abs(l1 - l2) <= 1e-13 * l1
    g_max = max(np.abs(a).max() for a in g1)
    assert max(np.abs(a - b).max() for a, b in zip(g1, g2)) <= 1e-12 * g_max
    # Whitened inputs: the loss is E(X) = ||X - T||^2 / 2 + const, const = 0 here.
    X = problem["network"].product(W)
    assert abs(l1 - 0.5 * np.sum((X - problem["teacher"]) ** 2)) <= 1e-12 * l1  # rounding


def test_per_step_identity_and_first_order_drift(drifts):
    for act in lg.ACTIVATIONS:
        coarse, fine = drifts[act]
        # Exact identity, up to the cancellation in differences of ||W_k||^2.
        assert coarse["step_identity_residual"] <= 1e-7, act
        assert fine["step_identity_residual"] <= 1e-7, act
        # The layer-norm differences drift at O(eta): halving eta halves it.
        ratio = fine["final_norm_diff_drift"] / coarse["final_norm_diff_drift"]
        assert 0.45 < ratio < 0.55, (act, ratio)
        ratio = fine["final_diagG_drift"] / coarse["final_diagG_drift"]
        assert 0.45 < ratio < 0.55, (act, ratio)
    lin_c, lin_f = drifts["linear"]
    relu_c, relu_f = drifts["relu"]
    assert 0.45 < lin_f["final_G_drift"] / lin_c["final_G_drift"] < 0.55
    # ReLU: the off-diagonal part of G_k really moves (no O(eta) scaling) ...
    assert 0.9 < relu_f["final_G_drift"] / relu_c["final_G_drift"] < 1.1
    # ... and far more than the linear network's discretization drift.
    assert relu_c["final_G_drift"] >= 1e2 * lin_c["final_G_drift"]


def test_phases_and_common_growth_rate(problem):
    eta = 1e-2
    gd = lg.gradient_descent(problem, "linear", eta, 24.0, n_records=300)
    rate = gd["rates"].mean(axis=1)
    ph = lg.phases(gd["times"], rate)
    # One burst per teacher mode (s = 3, 1.5, 0.75), stronger first, separated by deep valleys.
    assert len(ph["peak_times"]) == 3, ph["peak_times"]
    assert np.all(np.diff(ph["peak_times"]) > 0)
    assert np.all(np.diff(ph["peak_rates"]) < 0)
    assert np.all(
        ph["valley_rates"] <= 0.2 * np.minimum(ph["peak_rates"][:-1], ph["peak_rates"][1:])
    )
    # Plateau before the first burst and saturation after the last.
    assert 0 < ph["plateau_end"] < ph["peak_times"][0]
    assert ph["peak_times"][-1] < ph["saturation_start"] < gd["times"][-1]
    assert gd["loss"][-1] <= 1e-4 * gd["loss"][0]
    # All layers share the rate up to O(eta): the one-step rates differ by
    # eta (||d_k L||^2 - ||d_{k+1} L||^2), tiny next to the rate itself.
    spread = np.ptp(gd["rates"], axis=1)
    assert spread.max() <= 1e-3 * rate.max()


def test_gradient_flow_invariants(problem):
    lin = lg.gradient_flow(problem, "linear", 8.0, n_records=40)
    # G_k is conserved by the exact flow, so its drift is G(W_num(t)) - G(W(t)): the effect of
    # the integration error on G, estimated by G(W_num(t)) - G(W_ref(t)) with a run at
    # rtol / 100 (K = 10 for the estimate's own error), plus the rounding of W^T W (d eps |W|^2).
    # A drift that did not shrink with the tolerance (a flow that moves G) fails.
    ref = lg.gradient_flow(problem, "linear", 8.0, n_records=40, rtol=1e-12, atol=1e-14)
    d, eps = max(problem["network"].dims), np.finfo(float).eps
    for i, (W, W_ref) in enumerate(zip(lin["weights"], ref["weights"])):
        size = max(np.abs(w).max() for w in W)
        rounding = 4 * d * eps * size**2
        G_error = max(
            np.abs(a - b).max()
            for a, b in zip(problem["network"].imbalance(W), problem["network"].imbalance(W_ref))
        )
        assert lin["G_drift"][i] <= 10 * G_error + rounding, (i, lin["G_drift"][i], G_error)
        # ||W_{k+1}||^2 - ||W_k||^2 = tr G_k: the same argument with the traces.
        D_error = np.abs(np.diff(lin["sq_norms"][i]) - np.diff(ref["sq_norms"][i])).max()
        assert lin["norm_diff_drift"][i] <= 10 * D_error + d * rounding
        assert G_error + D_error <= 1e-8  # guard: at rtol 1e-10 the statement is strong
    assert lin["sq_norms"][-1, 0] - lin["sq_norms"][0, 0] >= 1.0  # the layers did grow
    # ReLU flow (fixed-step RK4: the right-hand side jumps at the kinks): the
    # matrix invariant moves by O(1e-2), its diagonal and trace stay put up to
    # the integrator's error, which shrinks with the step.
    coarse, fine = (
        lg.gradient_flow(problem, "relu", 8.0, n_records=10, step=h) for h in (4e-3, 2e-3)
    )
    for r in (coarse, fine):
        assert r["G_drift"].max() >= 1e-2
        assert r["diagG_drift"].max() <= 1e-6
        assert r["norm_diff_drift"].max() <= 1e-6
        assert r["G_drift"].max() >= 1e4 * r["norm_diff_drift"].max()
    assert fine["norm_diff_drift"].max() <= 0.6 * coarse["norm_diff_drift"].max()
    assert (
        abs(fine["G_drift"].max() / coarse["G_drift"].max() - 1) <= 1e-3
    )  # G's change is the flow's


def test_bad_input():
    with pytest.raises(ValueError, match="activation"):
        lg.loss_and_gradients([np.eye(2), np.eye(2)], np.eye(2), np.eye(2), "tanh")
    with pytest.raises(ValueError, match="n_samples"):
        lg.make_problem(dims=(6, 8, 6), n_samples=3)
    with pytest.raises(ValueError, match="eta"):
        lg.gradient_descent(lg.make_problem(dims=(6, 8, 6)), "linear", 0.0, 1.0)
