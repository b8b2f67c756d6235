"""Built-in losses: gradients against autograd, Hessian-vector products against
autograd and finite differences, on dense and low-rank points; the O(|Omega| r)
completion path; bad input."""

import time
import tracemalloc

import autograd.numpy as anp
import numpy as np
import pytest
import scipy.sparse as sp
from richardson import central_difference_bound

import dlngeo
from dlngeo.geometry.fixed_rank import FixedRank
from dlngeo.lowrank import Factored, to_dense

M_, N_, R_ = 7, 5, 2
EPS = np.finfo(float).eps
# rounding of a loss, its gradient or its Hessian-vector product: residuals from <= 9-term dots,
# a power p <= 4 (relative error x p), summed over <= 35 entries; both sides err, so
# 2 p (9 + 35) eps ~ 350 eps ~ 8e-14
ROUNDING = 2 * 4 * (9 + 35) * EPS


def _lowrank(rng, m=M_, n=N_, r=R_, scale=1.0):
    u = np.linalg.qr(rng.standard_normal((m, r)))[0]
    v = np.linalg.qr(rng.standard_normal((n, r)))[0]
    return u, scale * (1.0 + rng.random(r)), v.T


def _completion_data(rng, m=M_, n=N_, k=20):
    linear = rng.choice(m * n, k, replace=False)
    rows, cols = np.divmod(linear, n)
    return rows, cols, rng.standard_normal(k)


def _cases():
    """(name, loss, autograd reference fn of dense X) for every built-in loss and option."""
    rng = np.random.default_rng(42)
    A, B = rng.standard_normal((N_, 9)), rng.standard_normal((M_, 9))
    Y = rng.standard_normal((M_, N_))
    rows, cols, vals = _completion_data(rng)
    S = rng.standard_normal((11, M_, N_)) / np.sqrt(M_ * N_)
    y = rng.standard_normal(11)
    flat = S.reshape(11, -1)
    cases = [
        (
            "regression",
            dlngeo.create_loss("regression", A=A, B=B),
            lambda X: 0.5 * anp.sum((X @ A - B) ** 2) / 9,
        ),
        (
            "regression-whitened",
            dlngeo.create_loss("regression", target=Y),
            lambda X: 0.5 * anp.sum((X - Y) ** 2),
        ),
        (
            "lp4",
            dlngeo.create_loss("lp_regression", p=4, A=A, B=B),
            lambda X: anp.sum((X @ A - B) ** 4) / (4 * 9),
        ),
        (
            "lp3-whitened",
            dlngeo.create_loss("lp_regression", p=3, target=Y),
            lambda X: anp.sum(anp.abs(X - Y) ** 3) / 3,
        ),
        (
            "completion-mean",
            dlngeo.create_loss(
                "matrix_completion", rows=rows, cols=cols, values=vals, shape=(M_, N_)
            ),
            lambda X: anp.mean((X[rows, cols] - vals) ** 2),
        ),
        (
            "completion-sum",
            dlngeo.create_loss(
                "matrix_completion",
                rows=rows,
                cols=cols,
                values=vals,
                shape=(M_, N_),
                normalization="sum",
            ),
            lambda X: 0.5 * anp.sum((X[rows, cols] - vals) ** 2),
        ),
        (
            "sensing-mean",
            dlngeo.create_loss("matrix_sensing", A=S, y=y),
            lambda X: anp.mean((anp.dot(flat, anp.reshape(X, -1)) - y) ** 2),
        ),
        (
            "sensing-sum",
            dlngeo.create_loss("matrix_sensing", A=S, y=y, normalization="sum"),
            lambda X: 0.5 * anp.sum((anp.dot(flat, anp.reshape(X, -1)) - y) ** 2),
        ),
    ]
    return cases


CASES = _cases()
IDS = [c[0] for c in CASES]


def _rel(a, b):
    return np.linalg.norm(to_dense(a) - to_dense(b)) / max(np.linalg.norm(to_dense(b)), 1e-300)


@pytest.mark.parametrize("name,loss,fn", CASES, ids=IDS)
@pytest.mark.parametrize("lowrank", [False, True], ids=["dense", "lowrank"])
def test_gradient_and_value_match_autograd(name, loss, fn, lowrank):
    rng = np.random.default_rng(1)
    point = _lowrank(rng) if lowrank else rng.standard_normal((M_, N_))
    X = to_dense(point)
    reference = dlngeo.loss_from_autograd(fn)
    scale = max(1.0, abs(reference.value(X)))
    assert abs(loss.value(point) - reference.value(X)) <= ROUNDING * scale
    assert _rel(loss.gradient(point), reference.gradient(X)) <= ROUNDING
    value, gradient = loss.value_and_gradient(point)
    # the same residual sums as value(): at most a reordering, a few eps
    assert value == pytest.approx(loss.value(point), rel=1e-15)
    assert _rel(gradient, reference.gradient(X)) <= ROUNDING


@pytest.mark.parametrize("name,loss,fn", CASES, ids=IDS)
@pytest.mark.parametrize("lowrank", [False, True], ids=["dense", "lowrank"])
def test_hessian_vector_product_matches_autograd_and_finite_differences(name, loss, fn, lowrank):
    rng = np.random.default_rng(2)
    point = _lowrank(rng) if lowrank else rng.standard_normal((M_, N_))
    X = to_dense(point)
    # A dense direction and a factored one (a tangent vector of the rank-r manifold in ambient form).
    directions = [
        rng.standard_normal((M_, N_)),
        Factored(rng.standard_normal((M_, 3)), rng.standard_normal((N_, 3))),
    ]
    if lowrank:
        manifold = FixedRank(M_, N_, R_)
        p = manifold.point(
            *point
        )  # a tangent direction drawn from the test's own generator, not numpy's global state
        directions.append(
            manifold.embedding(p, manifold.projection(p, rng.standard_normal((M_, N_))))
        )
    reference = dlngeo.loss_from_autograd(fn)
    for Z in directions:
        hz = loss.hessian_vector_product(point, Z)
        assert _rel(hz, reference.hessian_vector_product(X, to_dense(Z))) <= ROUNDING
        Zd = to_dense(Z)

        def difference(h, Zd=Zd):
            return (to_dense(loss.gradient(X + h * Zd)) - to_dense(loss.gradient(X - h * Zd))) / (
                2 * h
            )

        # central difference, h = 1e-5: truncation by Richardson (tests/richardson.py; zero for
        # quadratic losses), rounding ROUNDING ||g|| per gradient, two of them, over 2h
        g_norm = np.linalg.norm(to_dense(loss.gradient(X)))
        fd, bound = central_difference_bound(difference, 1e-5, ROUNDING * g_norm / 1e-5)
        hz_dense = to_dense(hz)
        assert np.linalg.norm(hz_dense - fd) <= bound, (np.linalg.norm(hz_dense - fd), bound)
        assert bound <= 1e-6 * np.linalg.norm(hz_dense)  # guard: resolves HZ to 1e-6


def test_completion_gradient_is_sparse_on_omega():
    rng = np.random.default_rng(3)
    rows, cols, vals = _completion_data(rng)
    loss = dlngeo.create_loss(
        "matrix_completion", rows=rows, cols=cols, values=vals, shape=(M_, N_)
    )
    G = loss.gradient(_lowrank(rng))
    assert sp.issparse(G) and G.format == "csr" and G.nnz == rows.size
    mask = np.zeros((M_, N_), bool)
    mask[rows, cols] = True
    assert np.all(G.toarray()[~mask] == 0)
    assert sp.issparse(
        loss.hessian_vector_product(_lowrank(rng), Factored(np.ones((M_, 1)), np.ones((N_, 1))))
    )
    # mean normalisation is exactly Arora et al. 2019's MSE: zero residual -> zero loss, E(X + 1 on Omega) = 1
    X = np.zeros((M_, N_))
    X[rows, cols] = vals + 1.0
    # each residual (v + 1) - v is 1 to ~ eps |v + 1| / 2 (|v| < 3), averaged over k = 20
    assert loss.value(X) == pytest.approx(1.0, rel=1e-15)


def test_completion_large_low_rank_point_never_forms_m_by_n():
    """20000 x 20000, rank 5, 10^5 observations: value+gradient fast and small in memory."""
    rng = np.random.default_rng(4)
    m = n = 20000
    k, r = 100_000, 5
    rows, cols = dlngeo.create_sampler("uniform_mask", shape=(m, n), size=k).sample(rng)
    loss = dlngeo.create_loss(
        "matrix_completion", rows=rows, cols=cols, values=rng.standard_normal(k), shape=(m, n)
    )
    point = _lowrank(rng, m, n, r)
    loss.value_and_gradient(point)  # warm up (imports, caches)
    tracemalloc.start()
    try:
        start = time.perf_counter()
        value, gradient = loss.value_and_gradient(point)
        elapsed = time.perf_counter() - start
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # a budget, not a tolerance: O(k r) work is ~ 1 ms, an m x n pass ~ 1 s
    assert elapsed < 1.0, f"value+gradient took {elapsed:.3f} s"
    assert peak < 50e6, f"peak traced memory {peak / 1e6:.1f} MB (an m x n float array is 3200 MB)"
    assert gradient.shape == (m, n) and gradient.nnz == k
    # spot-check against the definition on a few entries
    i = rng.integers(0, k, 5)
    Xij = np.einsum("ij,ij->i", point[0][rows[i]] * point[1], point[2].T[cols[i]])
    # rounding: X_ij from r = 5 products, |X_ij| ~ 1e-4 << |v_i| ~ 1 (no cancellation): ~ 2 eps
    assert np.allclose(
        gradient[rows[i], cols[i]], 2.0 / k * (Xij - loss.values[i]), rtol=1e-14, atol=0
    )
    tracemalloc.start()
    try:
        Z = Factored(rng.standard_normal((m, 8)), rng.standard_normal((n, 8)))
        loss.hessian_vector_product(point, Z)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 50e6


def test_losses_plug_into_problem():
    """A built-in loss drives pymanopt's problem: the Riemannian gradient is the projected ambient one."""
    rng = np.random.default_rng(5)
    rows, cols, vals = _completion_data(rng, k=25)
    loss = dlngeo.create_loss(
        "matrix_completion", rows=rows, cols=cols, values=vals, shape=(M_, N_)
    )
    manifold = FixedRank(M_, N_, R_)
    problem = dlngeo.problem(manifold, loss)
    x = manifold.point(*_lowrank(rng))
    # the same call through pymanopt's problem: equal up to one rounding
    assert problem.cost(x) == pytest.approx(loss.value(x), rel=1e-15)
    rgrad = manifold.embedding(x, problem.riemannian_gradient(x)).to_dense()
    u, _, vt = x
    G = loss.gradient(x).toarray()
    projected = u @ u.T @ G + G @ vt.T @ vt - u @ u.T @ G @ vt.T @ vt
    # rounding: three projections of width n = 7, ~ 3 n eps
    assert np.linalg.norm(rgrad - projected) <= 3 * 7 * EPS * np.linalg.norm(projected)


def test_loss_from_autograd_on_low_rank_points():
    rng = np.random.default_rng(6)
    loss = dlngeo.loss_from_autograd(lambda X: anp.sum(anp.sin(X)), shape=(M_, N_))
    point = _lowrank(rng)
    X = to_dense(point)
    # rounding: X to ~ r eps |X| (|X| < 4), sin/cos/Z products to eps, a pairwise sum of 35 terms
    # with condition sum |sin X| / |sum sin X| < 2: ~ 10 eps (min |cos X| = 0.6 here)
    assert loss.value(point) == pytest.approx(np.sum(np.sin(X)), rel=1e-14)
    assert np.allclose(loss.gradient(point), np.cos(X), rtol=1e-14, atol=0)
    Z = rng.standard_normal((M_, N_))
    assert np.allclose(
        loss.hessian_vector_product(point, Z), -np.sin(X) * Z, rtol=1e-13, atol=1e-15
    )
    with pytest.raises(ValueError, match="X has shape"):
        loss.value(np.zeros((2, 2)))


# ------------------------------------------------------------------ bad input
def _completion(**overrides):
    options = dict(rows=[0, 1, 2], cols=[0, 1, 2], values=[1.0, 2.0, 3.0], shape=(3, 4))
    options.update(overrides)
    return dlngeo.create_loss("matrix_completion", **options)


@pytest.mark.parametrize(
    "overrides,field",
    [
        (dict(rows=[0, 3, 2]), "rows"),  # index out of range
        (dict(cols=[0, 1, -1]), "cols"),
        (dict(cols=[0, 4, 2]), "cols"),
        (dict(rows=[0, 0, 2], cols=[1, 1, 2]), "rows/cols"),  # duplicate observed index
        (dict(values=[1.0, np.nan, 3.0]), "values"),
        (dict(values=[1.0, 2.0]), "values"),  # length mismatch
        (dict(cols=[0, 1]), "cols"),
        (dict(rows=[0.5, 1, 2]), "rows"),
        (dict(shape=(3, -4)), "shape"),
        (dict(shape=(3,)), "shape"),
        (dict(normalization="median"), "normalization"),
        (dict(rows=[], cols=[], values=[]), "rows"),
    ],
)
def test_completion_bad_input_names_the_field(overrides, field):
    with pytest.raises(ValueError, match=rf"^{field}\b|\b{field}\b"):
        _completion(**overrides)


def test_bad_input_of_regression_lp_and_sensing():
    A, B = np.ones((4, 6)), np.ones((3, 6))
    with pytest.raises(ValueError, match="A must be finite"):
        dlngeo.create_loss("regression", A=np.full((4, 6), np.nan), B=B)
    with pytest.raises(ValueError, match="B has 5 columns"):
        dlngeo.create_loss("regression", A=A, B=np.ones((3, 5)))
    with pytest.raises(ValueError, match="target"):
        dlngeo.create_loss("regression", A=A, B=B, target=np.ones((3, 4)))
    with pytest.raises(ValueError, match="X has shape"):
        dlngeo.create_loss("regression", A=A, B=B).value(np.ones((4, 3)))
    for p in (0.5, -1, np.nan, "four"):
        with pytest.raises(ValueError, match="p must be"):
            dlngeo.create_loss("lp_regression", p=p, A=A, B=B)
    S = np.ones((5, 3, 4))
    with pytest.raises(ValueError, match="y has 4 entries"):
        dlngeo.create_loss("matrix_sensing", A=S, y=np.ones(4))
    with pytest.raises(ValueError, match="A must be 3-dimensional"):
        dlngeo.create_loss("matrix_sensing", A=np.ones((3, 4)), y=np.ones(3))
    with pytest.raises(ValueError, match="y must be finite"):
        dlngeo.create_loss("matrix_sensing", A=S, y=[1, 2, np.inf, 4, 5])
    with pytest.raises(ValueError, match="target has shape"):
        dlngeo.create_loss("matrix_sensing", A=S, target=np.ones((4, 3)))
    with pytest.raises(ValueError, match="X has shape"):
        _completion().gradient((np.ones((4, 1)), np.ones(1), np.ones((1, 4))))
