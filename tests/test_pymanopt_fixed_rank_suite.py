"""pymanopt's own fixed-rank manifold tests, run against dlngeo.FixedRank and dlngeo.DLNFixedRank.

A copy of ``tests/manifolds/test_fixed_rank.py`` from pymanopt 2.2.1
(https://github.com/pymanopt/pymanopt, tag ``2.2.1``, identical on its main
branch), changed only where the class is named: ``FixedRankEmbedded(m, n, k)``
became ``MANIFOLD(m, n, k)``, parametrized over our classes, and pymanopt's
suite-wide seed (its ``tests/conftest.py`` seeds every test with 42) is set
here the same way. Code written against ``FixedRankEmbedded`` must keep
working on our subclasses, so its tests must pass on them.

``DLNFixedRank`` runs at depth 1, where ``g_N`` is the Frobenius metric the
tests assume; at depth 3 it runs too, and exactly the two tests that compare
with the Frobenius metric (``test_inner_product``, and
``test_euclidean_to_riemannian_gradient``, whose expected value is the
Frobenius gradient) are expected to fail, strictly.

Its tolerances (``atol=1e-6``, ``assert_allclose``'s ``rtol=1e-7``,
``assert_almost_equal``'s 7 decimals) are pymanopt's and kept with its code:
they lie far above the rounding of these 5 x 4 .. 10 x 5 computations
(~ n eps ~ 1e-15); the rounding-level bounds are in test_manifolds.py.

pymanopt is distributed under the BSD 3-clause license; its notice follows.

    Copyright (c) 2015-2023, Pymanopt Developers.
    All rights reserved.

    Redistribution and use in source and binary forms, with or without
    modification, are permitted provided that the following conditions are met:

    * Redistributions of source code must retain the above copyright notice, this
      list of conditions and the following disclaimer.

    * Redistributions in binary form must reproduce the above copyright notice,
      this list of conditions and the following disclaimer in the documentation
      and/or other materials provided with the distribution.

    * Neither the name of pymanopt nor the names of its
      contributors may be used to endorse or promote products derived from
      this software without specific prior written permission.

    THIS SOFTWARE IS PROVIDED BY THE COPYRIGHT HOLDERS AND CONTRIBUTORS "AS IS"
    AND ANY EXPRESS OR IMPLIED WARRANTIES, INCLUDING, BUT NOT LIMITED TO, THE
    IMPLIED WARRANTIES OF MERCHANTABILITY AND FITNESS FOR A PARTICULAR PURPOSE ARE
    DISCLAIMED. IN NO EVENT SHALL THE COPYRIGHT HOLDER OR CONTRIBUTORS BE LIABLE
    FOR ANY DIRECT, INDIRECT, INCIDENTAL, SPECIAL, EXEMPLARY, OR CONSEQUENTIAL
    DAMAGES (INCLUDING, BUT NOT LIMITED TO, PROCUREMENT OF SUBSTITUTE GOODS OR
    SERVICES; LOSS OF USE, DATA, OR PROFITS; OR BUSINESS INTERRUPTION) HOWEVER
    CAUSED AND ON ANY THEORY OF LIABILITY, WHETHER IN CONTRACT, STRICT LIABILITY,
    OR TORT (INCLUDING NEGLIGENCE OR OTHERWISE) ARISING IN ANY WAY OUT OF THE USE
    OF THIS SOFTWARE, EVEN IF ADVISED OF THE POSSIBILITY OF SUCH DAMAGE.
"""

import random

import autograd.numpy as np
import pymanopt
import pytest
from numpy import testing as np_testing

import dlngeo

# --- dlngeo: the classes under test (this block replaces pymanopt's import) ---
_DLN_FROBENIUS_ONLY = ("test_inner_product", "test_euclidean_to_riemannian_gradient")
MANIFOLDS = {
    "FixedRank": dlngeo.FixedRank,
    "DLNFixedRank-depth1": lambda m, n, k: dlngeo.DLNFixedRank(m, n, k, 1),
    "DLNFixedRank-depth3": lambda m, n, k: dlngeo.DLNFixedRank(m, n, k, 3),
}


@pytest.fixture(autouse=True, params=list(MANIFOLDS))
def MANIFOLD(request):
    random.seed(42)  # pymanopt's tests/conftest.py
    np.random.seed(42)
    if request.param.endswith("depth3") and request.node.originalname in _DLN_FROBENIUS_ONLY:
        request.applymarker(
            pytest.mark.xfail(strict=True, reason="g_N at depth 3 is not the Frobenius metric")
        )
    return MANIFOLDS[request.param]


# --- pymanopt's file from here on; only the class name is changed ---
# fmt: off


class TestFixedRankEmbeddedManifold:
    @pytest.fixture(autouse=True)
    def setup(self, MANIFOLD):
        self.m = m = 10
        self.n = n = 5
        self.k = k = 3
        self.manifold = MANIFOLD(m, n, k)

        u, s, vt = self.manifold.random_point()
        matrix = (u * s) @ vt

        @pymanopt.function.autograd(self.manifold)
        def cost(u, s, vt):
            return np.linalg.norm((u * s) @ vt - matrix) ** 2

        self.cost = cost

    def test_dim(self):
        assert self.manifold.dim == (self.m + self.n - self.k) * self.k

    def test_typical_dist(self):
        assert self.manifold.dim == self.manifold.typical_dist

    def test_dist(self):
        e = self.manifold
        a = e.random_point()
        x = e.random_tangent_vector(a)
        y = e.random_tangent_vector(a)
        with pytest.raises(NotImplementedError):
            e.dist(x, y)

    def test_inner_product(self):
        e = self.manifold
        x = e.random_point()
        a = e.random_tangent_vector(x)
        b = e.random_tangent_vector(x)
        # First embed in the ambient space
        A = x[0] @ a[1] @ x[2] + a[0] @ x[2] + x[0] @ a[2].T
        B = x[0] @ b[1] @ x[2] + b[0] @ x[2] + x[0] @ b[2].T
        trueinner = np.sum(A * B)
        np_testing.assert_almost_equal(trueinner, e.inner_product(x, a, b))

    def test_proj_range(self):
        m = self.manifold
        x = m.random_point()
        v = np.random.normal(size=(self.m, self.n))

        g = m.projection(x, v)
        # Check that g is a true tangent vector
        np_testing.assert_allclose(
            g[0].T @ x[0], np.zeros((self.k, self.k)), atol=1e-6
        )
        np_testing.assert_allclose(
            g[2].T @ x[2].T, np.zeros((self.k, self.k)), atol=1e-6
        )

    def test_projection(self):
        # Verify that proj gives the closest point within the tangent space
        # by displacing the result slightly and checking that this increases
        # the distance.
        m = self.manifold
        x = self.manifold.random_point()
        v = np.random.normal(size=(self.m, self.n))

        g = m.projection(x, v)
        # Displace g a little
        g_disp = g + 0.01 * m.random_tangent_vector(x)

        # Return to the ambient representation
        g = m.embedding(x, g)
        g_disp = m.embedding(x, g_disp)
        g = g[0] @ g[1] @ g[2].T
        g_disp = g_disp[0] @ g_disp[1] @ g_disp[2].T

        assert np.linalg.norm(g - v) < np.linalg.norm(g_disp - v)

    def test_proj_tangents(self):
        # Verify that proj leaves tangent vectors unchanged
        e = self.manifold
        x = e.random_point()
        u = e.random_tangent_vector(x)
        A = e.projection(x, e.embedding(x, u))
        B = u
        # diff = [A[k]-B[k] for k in range(len(A))]
        np_testing.assert_allclose(A[0], B[0])
        np_testing.assert_allclose(A[1], B[1])
        np_testing.assert_allclose(A[2], B[2])

    def test_norm(self):
        e = self.manifold
        x = e.random_point()
        u = e.random_tangent_vector(x)
        np_testing.assert_almost_equal(
            np.sqrt(e.inner_product(x, u, u)), e.norm(x, u)
        )

    def test_random_point(self):
        e = self.manifold
        x = e.random_point()
        y = e.random_point()
        assert np.shape(x[0]) == (self.m, self.k)
        assert np.shape(x[1]) == (self.k,)
        assert np.shape(x[2]) == (self.k, self.n)
        np_testing.assert_allclose(x[0].T @ x[0], np.eye(self.k), atol=1e-6)
        np_testing.assert_allclose(x[2] @ x[2].T, np.eye(self.k), atol=1e-6)

        assert np.linalg.norm(x[0] - y[0]) > 1e-6
        assert np.linalg.norm(x[1] - y[1]) > 1e-6
        assert np.linalg.norm(x[2] - y[2]) > 1e-6

    def test_transport(self):
        s = self.manifold
        x = s.random_point()
        y = s.random_point()
        u = s.random_tangent_vector(x)
        A = s.transport(x, y, u)
        B = s.projection(y, s.embedding(x, u))
        diff = [A[k] - B[k] for k in range(len(A))]
        np_testing.assert_almost_equal(s.norm(y, diff), 0)

    def test_apply_ambient(self):
        m = self.manifold
        z = np.random.normal(size=(self.m, self.n))

        # Set u, s, v so that z = u @ s @ v.T
        u, s, v = np.linalg.svd(z, full_matrices=False)
        s = np.diag(s)
        v = v.T

        w = np.random.normal(size=(self.n, self.n))

        np_testing.assert_allclose(z @ w, m._apply_ambient(z, w))
        np_testing.assert_allclose(z @ w, m._apply_ambient((u, s, v), w))

    def test_apply_ambient_transpose(self):
        m = self.manifold
        z = np.random.normal(size=(self.n, self.m))

        # Set u, s, v so that z = u @ s @ v.T
        u, s, v = np.linalg.svd(z, full_matrices=False)
        s = np.diag(s)
        v = v.T

        w = np.random.normal(size=(self.n, self.n))

        np_testing.assert_allclose(z.T @ w, m._apply_ambient_transpose(z, w))
        np_testing.assert_allclose(
            z.T @ w, m._apply_ambient_transpose((u, s, v), w)
        )

    def test_embedding(self):
        m = self.manifold
        x = m.random_point()
        z = m.random_tangent_vector(x)

        z_ambient = x[0] @ z[1] @ x[2] + z[0] @ x[2] + x[0] @ z[2].T

        u, s, v = m.embedding(x, z)

        np_testing.assert_allclose(z_ambient, u @ s @ v.T)

    def test_euclidean_to_riemannian_hessian(self):
        pass

    def test_retraction(self):
        # Test that the result is on the manifold and that for small
        # tangent vectors it has little effect.
        x = self.manifold.random_point()
        u = self.manifold.random_tangent_vector(x)

        y = self.manifold.retraction(x, u)

        np_testing.assert_allclose(y[0].T @ y[0], np.eye(self.k), atol=1e-6)
        np_testing.assert_allclose(y[2] @ y[2].T, np.eye(self.k), atol=1e-6)

        u = u * 1e-6
        y = self.manifold.retraction(x, u)
        y = y[0] @ np.diag(y[1]) @ y[2]

        u = self.manifold.embedding(x, u)
        u = u[0] @ u[1] @ u[2].T
        x = x[0] @ np.diag(x[1]) @ x[2]

        np_testing.assert_allclose(y, x + u, atol=1e-5)

    def test_euclidean_to_riemannian_gradient(self):
        # Verify that euclidean_to_riemannian_gradient and proj are equivalent.
        m = self.manifold
        x = m.random_point()
        u, s, vt = x

        i = np.eye(self.k)

        f = 1 / (s[..., np.newaxis, :] ** 2 - s[..., :, np.newaxis] ** 2 + i)

        du = np.random.normal(size=(self.m, self.k))
        ds = np.random.normal(size=self.k)
        dvt = np.random.normal(size=(self.k, self.n))

        Up = (np.eye(self.m) - u @ u.T) @ du @ np.linalg.inv(np.diag(s))
        M = (
            f * (u.T @ du - du.T @ u) @ np.diag(s)
            + np.diag(s) @ f * (vt @ dvt.T - dvt @ vt.T)
            + np.diag(ds)
        )
        Vp = (np.eye(self.n) - vt.T @ vt) @ dvt.T @ np.linalg.inv(np.diag(s))

        up, m, vp = m.euclidean_to_riemannian_gradient(x, (du, ds, dvt))

        np_testing.assert_allclose(Up, up)
        np_testing.assert_allclose(M, m)
        np_testing.assert_allclose(Vp, vp)

    def test_random_tangent_vector(self):
        e = self.manifold
        x = e.random_point()
        u = e.random_tangent_vector(x)

        # Check that u is a tangent vector
        assert np.shape(u[0]) == (self.m, self.k)
        assert np.shape(u[1]) == (self.k, self.k)
        assert np.shape(u[2]) == (self.n, self.k)
        np_testing.assert_allclose(
            u[0].T @ x[0], np.zeros((self.k, self.k)), atol=1e-6
        )
        np_testing.assert_allclose(
            u[2].T @ x[2].T, np.zeros((self.k, self.k)), atol=1e-6
        )

        v = e.random_tangent_vector(x)

        np_testing.assert_almost_equal(e.norm(x, u), 1)
        assert e.norm(x, u - v) > 1e-6
