"""Built-in metrics against their definitions, on dense and low-rank points."""

import numpy as np
import pytest
from dlngeo_plugins.metrics import frobenius_distance

import dlngeo
from dlngeo.state import State

EPS = np.finfo(float).eps


def _lowrank(rng, m, n, r):
    u = np.linalg.qr(rng.standard_normal((m, r)))[0]
    v = np.linalg.qr(rng.standard_normal((n, r)))[0]
    return u, np.sort(1.0 + rng.random(r))[::-1], v.T


def _dense(point):
    u, s, vt = point
    return (u * s) @ vt


def test_spectral_metrics_on_a_known_matrix():
    X = np.diag([3.0, 1.0, 0.0])
    state = State(point=X, depth=3)
    # a diagonal X: the SVD applies no rotation, exact up to one rounding (3 eps ~ 7e-16); the
    # values below are a few roundings (a sum, a log, a power) of exact singular values: < 10 eps
    assert np.allclose(dlngeo.create_metric("singular_values")(state), [3, 1, 0], atol=1e-15)
    assert np.allclose(
        dlngeo.create_metric("singular_values", k=5)(state), [3, 1, 0, 0, 0], atol=1e-15
    )
    assert np.allclose(dlngeo.create_metric("singular_values", k=1)(state), [3], atol=1e-15)
    p = np.array([0.75, 0.25])
    assert dlngeo.create_metric("effective_rank")(state) == pytest.approx(
        np.exp(-np.sum(p * np.log(p))), rel=1e-14
    )
    assert dlngeo.create_metric("nuclear_norm")(state) == pytest.approx(4.0, rel=1e-15)
    assert dlngeo.create_metric("schatten_quasi_norm")(state) == pytest.approx(
        3 ** (2 / 3) + 1, rel=1e-14
    )
    assert dlngeo.create_metric("schatten_quasi_norm", depth=1)(state) == pytest.approx(
        10.0, rel=1e-14
    )
    assert dlngeo.create_metric("effective_rank")(State(point=np.zeros((2, 3)))) == 0.0
    assert dlngeo.create_metric("effective_rank")(State(point=np.eye(4))) == pytest.approx(
        4.0, rel=1e-14
    )


def test_spectral_metrics_agree_on_low_rank_and_dense_points():
    rng = np.random.default_rng(0)
    point = _lowrank(rng, 9, 6, 3)
    s = point[1]
    # rounding: the dense SVD's values err by ~ n eps s_1 (n = 9), relative ~ n eps kappa with
    # kappa = s_1 / s_r < 2; the metrics' relative condition is O(1) (x2 for the entropy's log)
    for name in ("effective_rank", "nuclear_norm", "schatten_quasi_norm"):
        metric = dlngeo.create_metric(name)
        assert metric(State(point=point, depth=4)) == pytest.approx(
            metric(State(point=_dense(point), depth=4)), rel=2 * 9 * EPS * s[0] / s[-1]
        )
    sv = dlngeo.create_metric("singular_values", k=4)
    dense_sv = sv(State(point=_dense(point)))
    assert np.allclose(sv(State(point=point)), dense_sv, rtol=0, atol=9 * EPS * s[0])


def test_loss_metric_and_missing_loss():
    rng = np.random.default_rng(1)
    Y = rng.standard_normal((4, 3))
    loss = dlngeo.create_loss("regression", target=Y)
    X = rng.standard_normal((4, 3))
    # rounding: 12 squares summed, ~ n eps relative (no cancellation), n = 12: 3e-15
    assert dlngeo.create_metric("loss")(State(point=X, loss=loss)) == pytest.approx(
        0.5 * np.sum((X - Y) ** 2), rel=1e-14
    )
    with pytest.raises(ValueError, match="state.loss"):
        dlngeo.create_metric("loss")(State(point=X))


def test_imbalance_and_layer_norms():
    rng = np.random.default_rng(2)
    net = dlngeo.DeepLinearNetwork((3, 5, 4, 2))
    W = net.balanced(rng.standard_normal((2, 3)), rng=rng)
    state = State(point=net.product(W), weights=W, network=net, depth=3)
    assert dlngeo.create_metric("imbalance")(state).shape == (2,)
    # rounding: two Gram products of width n = 5 of factors with singular values s^(1/N), N = 3
    gram = np.linalg.norm(state.point, 2) ** (2 / 3)
    assert np.max(dlngeo.create_metric("imbalance")(state)) <= 2 * 5 * EPS * gram
    W[1] = W[1] + 0.1 * rng.standard_normal(W[1].shape)
    state = State(point=net.product(W), weights=W, depth=3)  # no network: built from the weights
    expected = [np.linalg.norm(W[k + 1].T @ W[k + 1] - W[k] @ W[k].T) for k in range(2)]
    # rounding: n eps (||W_k||^2 + ||W_k+1||^2) / ||G_k|| ~ 5 eps * 6 / 0.8 ~ 40 eps < 1e-14;
    # layer norms: <= 20 squares summed (~ log2(20) eps), halved by sqrt
    assert np.allclose(dlngeo.create_metric("imbalance")(state), expected, rtol=1e-14, atol=0)
    assert np.allclose(
        dlngeo.create_metric("layer_norms")(state), [np.linalg.norm(w) for w in W], rtol=1e-15
    )
    # intrinsic methods have no weights: empty arrays, never NaN
    empty = State(point=np.eye(2), depth=3)
    assert dlngeo.create_metric("imbalance")(empty).shape == (0,)
    assert dlngeo.create_metric("layer_norms")(empty).shape == (0,)


def test_distance_to_target_low_rank_is_accurate_for_close_points():
    rng = np.random.default_rng(3)
    u, s, vt = _lowrank(rng, 50, 40, 4)
    delta = 1e-9 * rng.standard_normal(4)
    X, Y = (u, s + delta, vt), (u, s, vt)
    d = frobenius_distance(X, Y)
    # a squared-norm expansion would lose everything below sqrt(eps) * ||X|| ~ 3e-8; the QR form
    # errs by ~ 2r eps (||X|| + ||Y||) (Householder QR of 2r = 8 columns): ~ 4e-6 relative here
    bound = 8 * EPS * 2 * np.linalg.norm(s) / np.linalg.norm(delta)
    assert d == pytest.approx(np.linalg.norm(delta), rel=bound)
    state = State(point=X, data={"target": Y})
    assert dlngeo.create_metric("distance_to_target")(state) == pytest.approx(
        np.linalg.norm(delta), rel=bound
    )
    # mixed dense / low rank, relative. Rounding: forming X (r = 4 terms an entry) and a sum of
    # 2000 squares (pairwise, ~ log2(2000) eps), no cancellation: < n eps, n = 50
    Z = rng.standard_normal((50, 40))
    expected = np.linalg.norm(_dense(X) - Z)
    assert frobenius_distance(X, Z) == pytest.approx(expected, rel=50 * EPS)
    rel = dlngeo.create_metric("distance_to_target", relative=True)(
        State(point=Z, data={"target": X})
    )
    assert rel == pytest.approx(expected / np.linalg.norm(_dense(X)), rel=50 * EPS)
    with pytest.raises(ValueError, match="target"):
        dlngeo.create_metric("distance_to_target")(State(point=Z))
    with pytest.raises(ValueError, match="shape"):
        frobenius_distance(Z, np.zeros((3, 3)))


def test_test_error_on_unobserved_entries():
    rng = np.random.default_rng(4)
    m, n, k = 30, 20, 150
    target = _lowrank(rng, m, n, 2)
    point = _lowrank(rng, m, n, 3)
    rows, cols = dlngeo.create_sampler("uniform_mask", shape=(m, n), size=k).sample(rng)
    M = _dense(target)
    loss = dlngeo.create_loss(
        "matrix_completion", rows=rows, cols=cols, values=M[rows, cols], shape=(m, n)
    )
    mask = np.ones((m, n), bool)
    mask[rows, cols] = False
    D = _dense(point) - M
    rmse = np.sqrt(np.mean(D[mask] ** 2))
    metric = dlngeo.create_metric("test_error")
    # rounding: each entry of D from <= r + 1 = 4 products, D's rms (0.12) against M's and X's
    # (0.08, 0.09): ~ 2 (r + 1) eps 0.17 / 0.12 ~ 12 eps in the mean square, so 1e-14
    for p, t in ((point, target), (_dense(point), target), (point, M), (_dense(point), M)):
        assert metric(State(point=p, loss=loss, data={"target": t})) == pytest.approx(
            rmse, rel=1e-14
        )
    # observed set from state.data instead of the loss
    assert metric(
        State(point=point, data={"target": target, "rows": rows, "cols": cols})
    ) == pytest.approx(rmse, rel=1e-14)
    mse_all = dlngeo.create_metric("test_error", entries="all", squared=True)(
        State(point=point, data={"target": target})
    )
    assert mse_all == pytest.approx(np.mean(D**2), rel=1e-14)
    with pytest.raises(ValueError, match="observed set"):
        metric(State(point=point, data={"target": target}))
    with pytest.raises(ValueError, match="entries"):
        dlngeo.create_metric("test_error", entries="some")


def test_metric_options_are_validated():
    with pytest.raises(ValueError, match="k must be"):
        dlngeo.create_metric("singular_values", k=0)
    with pytest.raises(ValueError, match="depth must be"):
        dlngeo.create_metric("schatten_quasi_norm", depth=-2)
