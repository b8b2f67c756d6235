"""Built-in samplers: the papers' scalings, balance, reproducibility (same seed, same bits), bad input."""

import numpy as np
import pytest

import dlngeo

EPS = np.finfo(float).eps

INITS = [
    ("gaussian", {}),
    ("balanced", {}),
    ("balanced", {"rank": 2}),
    ("orthogonal", {}),
    ("identity", {}),
    ("spectral", {"rank": 2}),
]
DATA = [
    ("low_rank_target", {"shape": (8, 6), "rank": 2}),
    ("low_rank_target", {"shape": (8, 6), "rank": 2, "factored": True}),
    ("uniform_mask", {"shape": (8, 6), "size": 20}),
    ("gaussian_sensing", {"shape": (8, 6), "count": 5}),
]


def _equal(a, b):
    if isinstance(a, (tuple, list)):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    return np.array_equal(a, b)


@pytest.mark.parametrize(
    "name,options", INITS + DATA, ids=[f"{n}-{i}" for i, (n, _) in enumerate(INITS + DATA)]
)
def test_same_seed_same_bits(name, options):
    sampler = dlngeo.create_sampler(name, **options)
    if sampler.kind == "initialization":
        net = dlngeo.DeepLinearNetwork((6, 7, 7, 8))
        target = np.random.default_rng(0).standard_normal((8, 6))
        draw = lambda seed: sampler.sample(np.random.default_rng(seed), network=net, target=target)  # noqa: E731
        weights = draw(7)
        assert [W.shape for W in weights] == net.shapes
    else:
        assert sampler.kind == "data"
        draw = lambda seed: sampler.sample(np.random.default_rng(seed))  # noqa: E731
    assert _equal(draw(7), draw(7))
    assert _equal(
        draw(7),
        sampler.sample(
            7, **({"network": net, "target": target} if sampler.kind == "initialization" else {})
        ),
    )
    if name != "identity":
        assert not _equal(draw(7), draw(8))


def test_gaussian_init_has_arora_scaling():
    """std = init_scale^(1/N) / sqrt(n) per layer; ||X(0)||_F ~ init_scale sqrt(n) (the code's own check: within 20%)."""
    n, depth, scale = 100, 3, 1e-3
    net = dlngeo.DeepLinearNetwork((n,) * (depth + 1))
    weights = dlngeo.create_sampler("gaussian", init_scale=scale).sample(
        np.random.default_rng(0), network=net
    )
    expected = scale ** (1 / depth) / np.sqrt(n)
    # Monte Carlo: the sample std of k entries has relative standard error 1/sqrt(2k), the
    # mean std / sqrt(k); 5 and 4 standard errors
    for W in weights:
        assert abs(W.std() / expected - 1) < 5 / np.sqrt(2 * W.size)
        assert abs(W.mean()) < 4 * expected / np.sqrt(W.size)
    # ||X||_F^2 has relative variance ~ N (N + 1) / n^2 (layer k adds 2k / n^2), so ||X||_F has
    # standard error sqrt(N (N + 1)) / (2n) ~ 0.017: 6 of them (the code's own check is 20%)
    ratio = np.linalg.norm(net.product(weights)) / (scale * np.sqrt(n))
    assert abs(ratio - 1) <= 6 * np.sqrt(depth * (depth + 1)) / (2 * n)
    wide = dlngeo.create_sampler("gaussian", init_scale=scale, width=400).sample(0, network=net)
    assert abs(wide[0].std() / (scale ** (1 / depth) / 20) - 1) < 5 / np.sqrt(2 * wide[0].size)


def test_balanced_init_reproduces_x_and_is_balanced():
    rng = np.random.default_rng(1)
    net = dlngeo.DeepLinearNetwork((5, 6, 4, 7))
    X = rng.standard_normal((7, 2)) @ rng.standard_normal((2, 5))
    W = dlngeo.create_sampler("balanced", X=X).sample(rng, network=net)
    # rounding (as in test_network): (N + 2) n eps relative for the product, 2 n eps s_1^(2/N)
    # for the imbalance; N = 3, n = 7
    bound = 5 * 7 * EPS
    assert np.linalg.norm(net.product(W) - X) <= bound * np.linalg.norm(X)
    gram = np.linalg.norm(X, 2) ** (2 / 3)
    assert max(np.abs(G).max() for G in net.imbalance(W)) <= 2 * 7 * EPS * gram
    W = dlngeo.create_sampler("balanced", init_scale=0.01, rank=3).sample(rng, network=net)
    P = net.product(W)
    assert np.linalg.norm(P) == pytest.approx(0.01 * np.sqrt(7), rel=bound)
    assert np.linalg.matrix_rank(P) == 3
    gram = np.linalg.norm(P, 2) ** (2 / 3)
    assert max(np.abs(G).max() for G in net.imbalance(W)) <= 2 * 7 * EPS * gram
    with pytest.raises(ValueError, match="rank 5 exceeds"):
        dlngeo.create_sampler("balanced", rank=5).sample(rng, network=net)


def test_orthogonal_and_identity_inits():
    n, depth, scale = 6, 3, 1e-2
    net = dlngeo.DeepLinearNetwork((n,) * (depth + 1))
    W = dlngeo.create_sampler("orthogonal", init_scale=scale).sample(0, network=net)
    gain = (scale * np.sqrt(n)) ** (1 / depth)
    # rounding: QR factors orthonormal to ~ n eps, scaled by gain^2 (one Gram each side)
    for w in W:
        assert np.allclose(w @ w.T, gain**2 * np.eye(n), rtol=0, atol=n * EPS * gain**2)
    assert max(np.abs(G).max() for G in net.imbalance(W)) <= 2 * n * EPS * gain**2
    rect = dlngeo.DeepLinearNetwork((3, 5, 2))
    for w, (r, c) in zip(
        dlngeo.create_sampler("orthogonal", init_scale=1.0).sample(0, network=rect), rect.shapes
    ):
        small = w @ w.T if r <= c else w.T @ w
        g2 = np.sqrt(3) ** (2 / 2)  # gain^2 with gain = (1 * sqrt(d_0))^(1/N), d_0 = 3, N = 2
        assert np.allclose(small, g2 * np.eye(min(r, c)), rtol=0, atol=max(r, c) * EPS * g2)
    I = dlngeo.create_sampler("identity", init_scale=scale).sample(None, network=net)
    # (scale^(1/N))^N: N + 1 roundings; the zeros stay exact
    assert np.allclose(net.product(I), scale * np.eye(n), rtol=(depth + 1) * EPS, atol=0)


def test_spectral_init_from_target_and_from_observations():
    rng = np.random.default_rng(2)
    m, n, r = 12, 10, 2
    net = dlngeo.DeepLinearNetwork((n, 11, m))
    M = dlngeo.create_sampler("low_rank_target", shape=(m, n), rank=r).sample(rng)
    U, s, Vt = np.linalg.svd(M)
    W = dlngeo.create_sampler("spectral", init_scale=1e-3).sample(rng, network=net, target=M)
    # rounding of a balanced factorization (see test_network): (N + 2) n eps relative, N = 2,
    # n = 12, and 2 n eps s_1^(2/N) for the imbalance; singular gaps of M and of the observed
    # matrix are O(1) (s_2 - s_3 > 5 s_1 / 100), so the singular vectors stay to eps
    bound = 4 * 12 * EPS
    expected = 1e-3 * U[:, :r] @ Vt[:r]
    assert np.linalg.norm(net.product(W) - expected) <= bound * np.linalg.norm(expected)
    gram = np.linalg.norm(expected, 2)
    assert max(np.abs(G).max() for G in net.imbalance(W)) <= 2 * 12 * EPS * gram
    W = dlngeo.create_sampler("spectral", init_scale=1.0, weighted=True).sample(
        rng, network=net, target=M
    )
    assert np.linalg.norm(net.product(W) - M) <= bound * np.linalg.norm(M)
    # from a completion loss: top-r SVD of (mn/|Omega|) P_Omega(M)
    rows, cols = dlngeo.create_sampler("uniform_mask", shape=(m, n), size=60).sample(rng)
    loss = dlngeo.create_loss(
        "matrix_completion", rows=rows, cols=cols, values=M[rows, cols], shape=(m, n)
    )
    observed = np.zeros((m, n))
    observed[rows, cols] = M[rows, cols] * (m * n / 60)
    U, s, Vt = np.linalg.svd(observed)
    W = dlngeo.create_sampler("spectral", init_scale=1.0, rank=r, weighted=True).sample(
        rng, network=net, loss=loss
    )
    best = (U[:, :r] * s[:r]) @ Vt[:r]
    assert s[r - 1] - s[r] > 0.05 * s[0]  # the gap that keeps the top-r subspace to ~ eps
    assert np.linalg.norm(net.product(W) - best) <= bound * np.linalg.norm(best)
    with pytest.raises(ValueError, match="rank"):
        dlngeo.create_sampler("spectral").sample(rng, network=net, loss=loss)
    with pytest.raises(ValueError, match="target"):
        dlngeo.create_sampler("spectral", rank=2).sample(
            rng, network=net, loss=dlngeo.create_loss("regression", target=M)
        )


def test_spectral_init_from_large_sparse_observations_uses_a_truncated_svd():
    rng = np.random.default_rng(3)
    m, n, r = 2500, 2000, 3
    net = dlngeo.DeepLinearNetwork((n, r, m))
    target = dlngeo.create_sampler("low_rank_target", shape=(m, n), rank=r, factored=True).sample(
        rng
    )
    rows, cols = dlngeo.create_sampler("uniform_mask", shape=(m, n), size=60_000).sample(rng)
    u, s, vt = target
    values = np.einsum("ij,ij->i", u[rows] * s, vt.T[cols])
    loss = dlngeo.create_loss(
        "matrix_completion", rows=rows, cols=cols, values=values, shape=(m, n)
    )
    W = dlngeo.create_sampler("spectral", init_scale=1.0, rank=r, weighted=True).sample(
        rng, network=net, loss=loss
    )
    q = np.linalg.qr(W[0].T)[
        0
    ]  # X = W_2 W_1 = (W_2 W_1 q) q^T: singular values from an m x r matrix
    sx = np.linalg.svd(W[1] @ (W[0] @ q), compute_uv=False)
    # reference: the top-r singular values of the same sparse matrix by a dense-free Lanczos solve
    import scipy.sparse.linalg as spla

    ref = np.sort(
        spla.svds(
            loss.observed_matrix() * (m * n / rows.size),
            k=r,
            return_singular_vectors=False,
            random_state=0,
        )
    )[::-1]
    # ARPACK at tol = 0 stops at a residual <= eps theta (eigenvalue error <= residual), on both
    # sides; the m x r QR and SVD add ~ m eps: 1e-12 ~ 4500 eps (m = 2500)
    assert np.allclose(sx, ref, rtol=1e-12, atol=0)


def test_low_rank_target_follows_the_recipe():
    (m, n), r = (30, 20), 3
    M = dlngeo.create_sampler("low_rank_target", shape=(m, n), rank=r).sample(
        np.random.default_rng(5)
    )
    rng = np.random.default_rng(5)
    U, V = rng.standard_normal((m, r)), rng.standard_normal((n, r))
    ref = U @ V.T / np.sqrt(r)
    ref *= np.sqrt(m * n) / np.linalg.norm(ref)
    # the same recipe: ~ (r + 3) eps an entry plus the norm's ~ log2(m n) eps, ~ 16 eps
    assert np.linalg.norm(M - ref) <= 1e-14 * np.linalg.norm(ref)
    assert np.linalg.norm(M) == pytest.approx(np.sqrt(m * n), rel=1e-14)  # RMS entry 1
    u, s, vt = dlngeo.create_sampler("low_rank_target", shape=(m, n), rank=r, factored=True).sample(
        np.random.default_rng(5)
    )
    # rounding: QR of the m x r and n x r factors and an r x r SVD, ~ m eps each (m = 30)
    assert np.linalg.norm((u * s) @ vt - ref) <= 2 * m * EPS * np.linalg.norm(ref)
    assert np.allclose(u.T @ u, np.eye(r), atol=m * EPS) and np.allclose(
        vt @ vt.T, np.eye(r), atol=m * EPS
    )


def test_uniform_mask_and_gaussian_sensing():
    rows, cols = dlngeo.create_sampler("uniform_mask", shape=(20000, 20000), size=100_000).sample(0)
    linear = rows * 20000 + cols
    assert rows.size == 100_000 and np.unique(linear).size == 100_000
    assert rows.min() >= 0 and rows.max() < 20000 and cols.min() >= 0 and cols.max() < 20000
    assert np.all(np.diff(linear) > 0)  # row-major order
    full = dlngeo.create_sampler("uniform_mask", shape=(3, 4), size=12).sample(1)
    assert sorted(zip(*full)) == [(i, j) for i in range(3) for j in range(4)]
    m, n, k = 30, 30, 400
    A = dlngeo.create_sampler("gaussian_sensing", shape=(m, n), count=k).sample(
        np.random.default_rng(2)
    )
    assert A.shape == (k, m, n)
    # Monte Carlo, 5 standard errors: a sample std over 3.6e5 entries has 1/sqrt(2k)
    assert abs(A.std() * np.sqrt(m * n) - 1) < 5 / np.sqrt(2 * A.size)
    M = dlngeo.create_sampler("low_rank_target", shape=(m, n), rank=3).sample(3)
    y = np.tensordot(A, M, axes=2)
    # y_i ~ N(0, ||M||^2 / (m n)) = N(0, 1): the rms of k draws has standard error 1/sqrt(2k);
    # 5 of them (0.18 at k = 400) is inside the 20% check of Arora et al.'s gen_obs.py
    assert abs(np.sqrt(np.mean(y**2)) - 1) <= 5 / np.sqrt(2 * k)


@pytest.mark.parametrize(
    "name,options,field",
    [
        ("gaussian", {"init_scale": -1e-3}, "init_scale"),
        ("gaussian", {"init_scale": 0.0}, "init_scale"),
        ("gaussian", {"width": 0}, "width"),
        ("orthogonal", {"init_scale": float("nan")}, "init_scale"),
        ("identity", {"init_scale": "big"}, "init_scale"),
        ("balanced", {"rank": 0}, "rank"),
        ("spectral", {"init_scale": -1.0}, "init_scale"),
        ("low_rank_target", {"shape": (10, 8), "rank": 9}, "rank"),
        ("low_rank_target", {"shape": (10,)}, "shape"),
        ("low_rank_target", {"shape": (10, -8)}, "shape"),
        ("uniform_mask", {"shape": (3, 4), "size": 13}, "size"),
        ("uniform_mask", {"shape": (3, 4), "size": 0}, "size"),
        ("gaussian_sensing", {"shape": (3, 4), "count": 2.5}, "count"),
    ],
)
def test_bad_sampler_options_name_the_field(name, options, field):
    with pytest.raises(ValueError, match=field):
        dlngeo.create_sampler(name, **options)


def test_initializations_check_the_network():
    with pytest.raises(ValueError, match="network"):
        dlngeo.create_sampler("gaussian").sample(0, network=(3, 3))
    net = dlngeo.DeepLinearNetwork((4, 4))
    with pytest.raises(ValueError, match="target has shape"):
        dlngeo.create_sampler("spectral").sample(0, network=net, target=np.ones((3, 4)))
