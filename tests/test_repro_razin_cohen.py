"""Razin & Cohen (2020) 2x2 example: |w11| -> infinity, effective rank -> 1, norms grow (docs/math.md §5)."""

import numpy as np
import pytest

from dlngeo.reproductions.razin_cohen import end_to_end_flow, end_to_end_flow_svd, small_init

# docs/math.md §5.5 (check_08, an independent script): |X11| = 388 (N = 3) and 631 (N = 4) at t = 1e6.
REFERENCE_W11 = {3: 388.0, 4: 631.0}


@pytest.fixture(scope="module")
def runs():
    return {
        (N, seed): end_to_end_flow_svd(small_init(seed), N, t_end=1e6, samples=120)
        for N in (3, 4)
        for seed in (0, 1)
    }


@pytest.mark.parametrize("N", [3, 4])
@pytest.mark.parametrize("seed", [0, 1])
def test_monotone_trends(runs, N, seed):
    """Monotone from the moment the loss has fallen to 10 % of its start (before, w11 may first dip)."""
    run = runs[N, seed]
    assert run.status.startswith("The solver successfully")
    assert np.all(np.diff(run.loss) < 0)
    late = slice(int(np.nonzero(run.loss <= 0.1 * run.loss[0])[0][0]), None)
    assert run.times[late][0] < 20
    assert np.all(np.diff(np.abs(run.w11[late])) > 0)
    assert np.all(np.diff(run.nuclear[late]) > 0)
    assert np.all(np.diff(run.frobenius[late]) > 0)
    assert np.all(np.diff(run.effective_rank[late]) < 0)
    assert abs(run.w11[-1]) > 1e4 * abs(run.w11[0])
    assert np.all(np.isfinite(run.log_abs_det)) and np.all(run.det > 0)


@pytest.mark.parametrize("N", [3, 4])
@pytest.mark.parametrize("seed", [0, 1])
def test_final_numbers(runs, N, seed):
    run = runs[N, seed]
    w = abs(run.w11[-1])
    assert abs(w - REFERENCE_W11[N]) <= 0.01 * REFERENCE_W11[N]
    assert run.loss[-1] <= 1e-5 and run.effective_rank[-1] - 1 <= 1e-4
    # det > 0 forces |X22| > X12 X21 / |X11|: the loss is locked to 1 / (2 X11^2).
    assert abs(2 * run.loss[-1] * w**2 - 1) <= 1e-4
    # The norms are carried by the unobserved entry.
    assert abs(run.nuclear[-1] - w) <= 1e-3 * w and abs(run.frobenius[-1] - w) <= 1e-3 * w


@pytest.mark.parametrize("N", [3, 4])
def test_cartesian_and_log_sigma_coordinates_agree_and_det_stays_positive(N):
    """Where Cartesian coordinates are accurate (t <= 1e4) both integrations give the same X and det > 0."""
    X0 = small_init(0)
    a = end_to_end_flow(X0, N, t_end=1e4, samples=40)
    b = end_to_end_flow_svd(X0, N, t_end=1e4, samples=40)
    assert np.max(np.abs(a.X - b.X)) <= 1e-7 * np.max(np.abs(b.X))  # measured <= 4.7e-9
    assert np.all(a.det > 0)
    assert np.max(np.abs(a.det / b.det - 1)) <= 1e-4


def test_log_sigma_coordinates_integrate_the_end_to_end_flow():
    """From a generic start (both coordinate systems accurate) the two integrations agree, at every depth."""
    X0 = np.array([[0.7, -0.3], [0.4, 0.9]])
    for N in (2, 3, 4):
        a = end_to_end_flow(X0, N, t_end=2.0, samples=20, rtol=1e-12, atol=1e-14)
        b = end_to_end_flow_svd(X0, N, t_end=2.0, samples=20, rtol=1e-12, atol=1e-14)
        assert np.max(np.abs(a.X - b.X)) <= 1e-10  # measured <= 4.5e-12


def test_bad_input():
    with pytest.raises(ValueError, match="X0"):
        end_to_end_flow_svd(np.zeros((3, 3)), 3)
    with pytest.raises(ValueError, match="depth"):
        end_to_end_flow_svd(small_init(0), 1)
    with pytest.raises(ValueError, match="scale"):
        small_init(0, scale=-1.0)
