r"""The rank-k matrices with the deep-linear-network metric :math:`g_N`.

Bah, Rauhut, Terstiege & Westdickenberg (2021) and Menon (2024): the
end-to-end matrix of a balanced depth-``N`` network follows the Riemannian
gradient flow of :math:`E` on :math:`(M_k, g_N)`, where

.. math::

    g_N(X)(\xi, \eta) = \operatorname{tr}\big(\xi^\top A_{N,X}^{-1}(\eta)\big),
    \qquad \operatorname{grad}_{g_N} E(X) = A_{N,X}(E'(X)),

and :math:`A_{N,X}` is the operator of :mod:`dlngeo.geometry.kernel`. In the
tangent coordinates ``(Up, M, Vp)`` at ``(u, s, vt)`` it is diagonal:
:math:`A(\xi) = (U_p c,\ K_k \circ M,\ V_p c)`, ``c = s^{2(N-1)/N}`` (docs/math.md §3).

Points, tangent vectors, retraction and transport are those of
:class:`~dlngeo.FixedRank` (the manifold is the same; only the metric
differs, as in Manifolds.jl's separation of a manifold from its metric).
``depth = 1`` gives back the embedded metric exactly.

**Hessian.** :meth:`euclidean_to_riemannian_hessian` returns the operator
:math:`H` with :math:`g_N(H\xi, \eta) = \langle \operatorname{Hess}^{F} f(X)[\xi], \eta\rangle_F`,
i.e. :math:`H = A_{N,X} \circ \operatorname{Hess}^{F} f`, where
:math:`\operatorname{Hess}^F f` is the embedded (Frobenius) Riemannian
Hessian with Vandereycken's curvature term. Because the retraction is
second order for the embedded metric, :math:`\langle \operatorname{Hess}^F f[\xi], \xi\rangle_F
= \tfrac{d^2}{dt^2} f(R_X(t\xi))|_{t=0}`, so :math:`H` is exactly the Hessian of
the pullback :math:`f \circ R_X` at ``0`` expressed in :math:`g_N`; it is
:math:`g_N`-self-adjoint, and at a critical point it equals the Levi-Civita
Hessian of :math:`g_N` (there the second covariant derivative does not depend
on the connection). This is the model Hessian of the Riemannian trust-region
method of Absil, Baker & Gallivan (2007), whose superlinear convergence
needs exactly these two properties. Away from critical points it differs
from the Levi-Civita Hessian of :math:`g_N` by a term proportional to the
gradient (the difference of the connections); we do not compute that term.

Checked numerically (``tests/test_manifolds.py``): pymanopt's Taylor checks
along the retraction give slope 2 (gradient) and 3 (Hessian) for depths
1–5, rank-deficient and full rank; :math:`g_N(H a, b) = g_N(a, H b)` to
rounding; at a critical point :math:`g_N(H\xi, \xi)` equals the second
derivative of ``f`` along a different curve (``t -> phi(W + tV)`` of a
bottlenecked network). The retraction, shared with :class:`FixedRank`, is
first order in :math:`g_N` (pymanopt's ``check_retraction`` against
integrated :math:`g_N` geodesics: slope 2), second order only in the
embedded metric.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..lowrank import is_ambient
from ..validation import check_depth
from .factor_partials import is_partials
from .fixed_rank import FixedRank, Point, TangentVector
from .kernel import metric_operator_tangent, riemannian_gradient_tangent, tangent_inner_product

__all__ = ["DLNFixedRank"]


class DLNFixedRank(FixedRank):
    """Rank-``k`` ``m x n`` matrices with the metric :math:`g_N` of a depth-``N`` linear network.

    Args:
        m: Rows (output width ``d_N``).
        n: Columns (input width ``d_0``).
        k: Rank, ``1 <= k <= min(m, n)``.
        depth: ``N >= 1``; ``1`` is the embedded metric.
        scale: The Frobenius norm of a typical point, or ``None``
            (:class:`~dlngeo.FixedRank`).
    """

    def __init__(self, m: int, n: int, k: int, depth: int, scale: float | None = None):
        depth = check_depth(depth)
        super().__init__(m, n, k, scale)
        self._depth = depth
        self._name = f"{m}x{n} matrices of rank {k} with the depth-{depth} metric g_N"

    @property
    def depth(self) -> int:
        return self._depth

    def metric_operator(self, point: Any, tangent_vector: Any, power: float = 1.0) -> TangentVector:
        """:math:`A_{N,X}^{power}` on a tangent vector (diagonal in ``(Up, M, Vp)``)."""
        Up, M, Vp = tangent_vector
        return TangentVector(*metric_operator_tangent(point[1], Up, M, Vp, self._depth, power))

    def inner_product(self, point: Any, tangent_vector_a: Any, tangent_vector_b: Any) -> float:
        """``g_N(a, b) = <a, A^{-1} b>``."""
        return tangent_inner_product(point[1], tangent_vector_a, tangent_vector_b, self._depth)

    def norm(self, point: Any, tangent_vector: Any) -> float:
        return float(np.sqrt(self.inner_product(point, tangent_vector, tangent_vector)))

    def euclidean_to_riemannian_gradient(
        self, point: Any, euclidean_gradient: Any
    ) -> TangentVector:
        """``grad_{g_N} E = A_{N,X}(P_T E'(X))`` from the ambient gradient or pymanopt's ``[du, ds, dvt]``."""
        if is_partials(euclidean_gradient) or not is_ambient(euclidean_gradient):
            embedded = super().euclidean_to_riemannian_gradient(point, euclidean_gradient)
            return self.metric_operator(point, embedded)
        u, s, vt = point
        return TangentVector(
            *riemannian_gradient_tangent(u, s, vt, euclidean_gradient, self._depth)
        )

    def euclidean_to_riemannian_hessian(
        self, point: Any, euclidean_gradient: Any, euclidean_hessian: Any, tangent_vector: Any
    ) -> TangentVector:
        """``A_{N,X}`` applied to the embedded Hessian (the pullback Hessian in g_N; see module docs)."""
        embedded = super().euclidean_to_riemannian_hessian(
            point, euclidean_gradient, euclidean_hessian, tangent_vector
        )
        return self.metric_operator(point, embedded)

    def random_point(self) -> Point:
        r""":meth:`FixedRank.random_point`, at a tenth of the data's size in :math:`g_N`-length.

        With :attr:`scale` known, :class:`~dlngeo.FixedRank` starts at Frobenius norm
        ``scale / 10``: a tenth of the way from the origin to a point of the data's
        size, in the embedded metric's length. The same tenth measured in
        :math:`g_N` is a different point: along the ray :math:`\tau \mapsto \tau X`,
        :math:`X = U \operatorname{diag}(s) V^\top`, ``A_{N, tau X}`` multiplies the
        ``M`` part by :math:`N (\tau s_i)^{2(N-1)/N}`, so
        :math:`\|X\|_{g_N(\tau X)} = \tau^{-(N-1)/N} \|X\|_{g_N(X)}` and the length of
        the ray from :math:`0` to :math:`\rho X` is
        :math:`\int_0^\rho \tau^{-(N-1)/N} d\tau\, \|X\|_{g_N(X)} = N \rho^{1/N} \|X\|_{g_N(X)}`:
        a tenth of it is :math:`\rho = 10^{-N}`. So the singular values here have
        Frobenius norm ``scale * 10**-depth`` (``depth = 1``: ``FixedRank``'s). On
        45 x 70 rank-3 completion (35 % observed, seeds 0-19, data scales 1e-2, 1,
        1e2) TrustRegions from this start converged 20/20 (depth 2) and 19/20
        (depth 3), against 18/20 for both from ``scale / 10``; pymanopt's own class,
        on rescaled data, fails on the same seed 1 (a valley of the problem,
        docs/math.md §8.5; ``benchmarks/bench_tr_convergence.py``).
        """
        u, s, vt = super().random_point()
        if self._scale is not None:
            s = s * 10.0 ** (1 - self._depth)
        return Point(u, s, vt)

    def random_tangent_vector(self, point: Any) -> TangentVector:
        """A random tangent vector of unit ``g_N`` norm."""
        xi = super().random_tangent_vector(point)
        return xi / self.norm(point, xi)

    @property
    def typical_dist(self) -> float:
        r"""The trust radius scale in :math:`g_N` units, ``(scale / sqrt(k))**(1/N) / sqrt(N)``, else ``dim``.

        As for :attr:`FixedRank.typical_dist`, the radius is the length, in
        the metric, of the step that takes one rank-one component
        :math:`\sigma u v^\top` of a point of Frobenius norm ``scale`` with
        ``k`` equal singular values, :math:`\sigma = \text{scale}/\sqrt{k}`,
        from :math:`0` to its size along itself. There :math:`A_{N,X}`
        multiplies the ``M`` part by :math:`N\sigma^{2(N-1)/N}`, so
        :math:`\|\sigma u v^\top\|_{g_N}^2 = \sigma^2 / (N \sigma^{2(N-1)/N}) = \sigma^{2/N}/N`.
        ``depth = 1`` gives :attr:`FixedRank.typical_dist`.
        """
        if self._scale is None:
            return float(self.dim)
        N = self._depth
        return float((self._scale / np.sqrt(self._k)) ** (1.0 / N) / np.sqrt(N))
