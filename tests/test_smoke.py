import numpy as np

import dlngeo


def test_balanced_factorization_reproduces_matrix():
    rng = np.random.default_rng(0)
    net = dlngeo.DeepLinearNetwork((4, 6, 5, 3))
    X = rng.standard_normal((3, 2)) @ rng.standard_normal((2, 4))
    W = net.balanced(X, rng=1)
    assert np.linalg.norm(net.product(W) - X) <= 1e-12 * np.linalg.norm(X)
    assert max(np.abs(G).max() for G in net.imbalance(W)) <= 1e-12
