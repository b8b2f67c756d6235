r"""Built-in losses: regression, :math:`\ell_p` regression, matrix completion, matrix sensing.

Registered through the ``dlngeo_register_losses`` hook like any plugin (the
two regression losses are defined in :mod:`dlngeo_plugins.regression`). Each
is a :class:`dlngeo.losses.Loss`: value, ambient gradient :math:`E'(X)` and
Hessian-vector product :math:`D E'(X)[Z]`, on a dense ``X`` or a low-rank
point ``(u, s, vt)``; directions ``Z`` may be dense, sparse or
:class:`~dlngeo.lowrank.Factored`.

Normalisations (exactly):

* ``regression``: :math:`E = \frac{1}{2b}\|XA - B\|_F^2` (``A``: n x b inputs,
  ``B``: m x b targets); whitened (``target=Y``): :math:`E = \frac12\|X - Y\|_F^2`.
* ``lp_regression``: :math:`E = \frac{1}{p\,b}\sum_{ij}|(XA - B)_{ij}|^p`
  (whitened: ``b = 1``); ``p = 2`` is ``regression``. Arora, Cohen & Hazan
  (2018) use ``p = 4`` to show acceleration by overparametrization.
* ``matrix_completion`` and ``matrix_sensing``, residuals :math:`r_i`:
  ``normalization="mean"`` (default) :math:`E = \frac{1}{|\Omega|}\sum r_i^2`,
  the mean squared error of Arora, Cohen, Hu & Luo (2019)'s code (no ½; their
  train threshold 1e-6 applies as is); ``"sum"``:
  :math:`E = \frac12\sum r_i^2` (docs/math.md §5).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

from dlngeo.hookspecs import hookimpl
from dlngeo.losses import Loss, TangentLinearization, check_observations, finite_array
from dlngeo.lowrank import Factored, entries, is_lowrank_point, point_shape, to_dense
from dlngeo.measurements import DenseMeasurements, EntryMeasurements

from .regression import LpRegression, Regression  # re-exported: registered below

__all__ = [
    "Regression",
    "LpRegression",
    "MatrixCompletion",
    "MatrixSensing",
    "CompletionJacobian",
]

_NORMALIZATIONS = ("mean", "sum")


def _normalization(value: Any) -> str:
    if value not in _NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {_NORMALIZATIONS}, got {value!r}")
    return value


#: Observations processed at a time by the chunked passes over Omega (bounds temporaries).
CHUNK = 1 << 16


class CompletionJacobian:
    r"""The Jacobian of the completion residual on the tangent space at ``(u, s, v^T)``, matrix-free.

    ``J @ c`` for ``c = (A, B)`` flattened: :math:`(J c)_k = A_{i_k}\cdot v_{j_k} + u_{i_k}\cdot B_{j_k}`
    (chunked gathers); ``J.T @ y = (S v, S^\top u)`` with :math:`S = P_\Omega^*(y)` sparse.
    Both ``O(|Omega| r)``; nothing of size ``|Omega| r`` is kept.
    """

    def __init__(self, loss: MatrixCompletion, u: np.ndarray, v: np.ndarray):
        self.loss, self.u, self.v = loss, u, v
        m, n = loss.shape
        self.shape = (loss.rows.size, (m + n) * u.shape[1])

    def __matmul__(self, c: np.ndarray) -> np.ndarray:
        m, n = self.loss.shape
        rank = self.u.shape[1]
        A = c[: m * rank].reshape(m, rank)
        B = c[m * rank :].reshape(n, rank)
        # One gather pass: A v^T + u B^T = [A, u] [v, B]^T.
        both = Factored(np.hstack((A, self.u)), np.hstack((self.v, B)))
        return entries(both, self.loss.rows, self.loss.cols)

    @property
    def T(self) -> _CompletionJacobianT:
        return _CompletionJacobianT(self)

    def toarray(self) -> np.ndarray:
        """Dense ``|Omega| x (m + n) r`` matrix (tests, small problems)."""
        return np.column_stack([self @ e for e in np.eye(self.shape[1])])


class _CompletionJacobianT:
    def __init__(self, jacobian: CompletionJacobian):
        self.jacobian = jacobian
        self.shape = jacobian.shape[::-1]

    def __matmul__(self, y: np.ndarray) -> np.ndarray:
        J = self.jacobian
        S, St = J.loss._adjoint_workspace()
        np.take(np.asarray(y, dtype=float), J.loss._order, out=S.data)  # St shares S.data
        return np.concatenate(((S @ J.v).ravel(), (St @ J.u).ravel()))


class MatrixCompletion(Loss):
    r"""Matrix completion on observed entries :math:`\Omega` (Arora, Cohen, Hu & Luo 2019).

    ``normalization="mean"`` (default): :math:`E = \frac{1}{|\Omega|}\sum_\Omega (X_{ij} - M_{ij})^2`,
    :math:`E' = \frac{2}{|\Omega|}P_\Omega(X - M)`; ``"sum"``:
    :math:`E = \frac12\sum_\Omega (X_{ij} - M_{ij})^2`, :math:`E' = P_\Omega(X - M)`.

    On a low-rank point ``(u, s, vt)`` value and gradient cost ``O(|Omega| r)``
    and never form ``m x n``: the gradient is a ``scipy.sparse.csr_array``
    whose sparsity structure is built once. The Hessian is
    :math:`Z \mapsto c\,P_\Omega(Z)`, ``O(|Omega| q)`` for a factored ``Z`` of rank ``q``.

    Args:
        rows, cols: Observed index pairs (distinct, in range).
        values: Observed values ``M_ij`` (finite).
        shape: ``(m, n)``.
        normalization: ``"mean"`` or ``"sum"``.

    Attributes:
        scale: ``c`` in :math:`E' = c\,P_\Omega(X - M)`: ``2/|Omega|`` or ``1``.
    """

    name = "matrix_completion"

    def __init__(self, rows: Any, cols: Any, values: Any, shape: Any, normalization: str = "mean"):
        self.rows, self.cols, self.values, self.shape = check_observations(
            rows, cols, values, shape
        )
        self.normalization = _normalization(normalization)
        count = self.rows.size
        self.scale = 2.0 / count if normalization == "mean" else 1.0
        self._weight = 1.0 / count if normalization == "mean" else 0.5
        # CSR structure of Omega, built once: the gradient only fills in data.
        self._order = np.lexsort((self.cols, self.rows))
        self._indices = self.cols[self._order]
        self._indptr = np.concatenate(
            ([0], np.cumsum(np.bincount(self.rows, minlength=self.shape[0])))
        )
        self._residual_cache: tuple | None = None
        self._pattern: sp.csr_array | None = None
        self._workspace: tuple[sp.csr_array, sp.csc_array] | None = None

    def _adjoint_workspace(self) -> tuple[sp.csr_array, sp.csc_array]:
        """A private ``P_Omega^*(y)`` and its transpose sharing one data array, built once.

        The Jacobian's transpose writes ``y`` into it and multiplies at once: no
        sparse matrix is validated per product. Never handed out.
        """
        if self._workspace is None:
            S = self._sparse(np.zeros(self.rows.size))
            self._workspace = (S, S.T)
        return self._workspace

    def _sparse(self, data: np.ndarray) -> sp.csr_array:
        return sp.csr_array((data[self._order], self._indices, self._indptr), shape=self.shape)

    def residual(self, X: Any) -> np.ndarray:
        """``X_ij - M_ij`` on ``Omega`` (in the order of ``rows``/``cols``).

        On a low-rank point the last residual is kept, keyed on the identity of
        the arrays ``u``, ``s``, ``vt`` and on the values of ``s``: the cost and
        the gradient at the same point (pymanopt asks for both) share one pass
        over ``Omega``. Modifying ``u`` or ``vt`` in place between two calls is
        not detected (no dlngeo method does; retractions return new arrays).
        """
        if is_lowrank_point(X):
            u, s, vt = X
            cached = self._residual_cache
            if (
                cached is not None
                and cached[0] is u
                and cached[1] is s
                and cached[2] is vt
                and np.array_equal(cached[3], s)
            ):
                return cached[4]
            self.check_point(X)
            r = entries(X, self.rows, self.cols) - self.values
            self._residual_cache = (u, s, vt, np.array(s, copy=True), r)
            return r
        self.check_point(X)
        return entries(X, self.rows, self.cols) - self.values

    def tangent_linearization(self, X: Any) -> TangentLinearization:
        r"""Residual and Jacobian at ``X = u diag(s) vt`` in the tangent coordinates ``(A, B)``.

        A tangent vector is :math:`\xi = A v^\top + u B^\top` (``A``: m x r, ``B``:
        n x r); the residual is linear in ``X``, so
        :math:`r(X + \xi)_k = r_k + A_{i_k} \cdot v_{j_k} + u_{i_k} \cdot B_{j_k}`. The
        Jacobian is matrix-free (:class:`CompletionJacobian`: ``O(|Omega| r)``
        a product, memory ``O((m + n) r)`` beyond the observations); ``blocks``
        are the ``r x r`` diagonal blocks of :math:`J^\top J` (one per row of
        ``A`` and of ``B``), two sparse products with the pattern of ``Omega``.
        """
        u, s, vt = (np.asarray(a, dtype=float) for a in X)
        r = self.residual(X)
        m, n = self.shape
        rank = s.shape[0]
        v = vt.T
        if self._pattern is None:
            self._pattern = self._sparse(np.ones(self.rows.size))
        # Block of row i of A: sum over observed (i, j) of v_j v_j^T = (P @ W)_i with
        # W_j = vec(v_j v_j^T), P the 0/1 pattern of Omega; likewise P^T for B.
        outer_v = (v[:, :, None] * v[:, None, :]).reshape(n, rank * rank)
        outer_u = (u[:, :, None] * u[:, None, :]).reshape(m, rank * rank)
        blocks = np.concatenate(
            (
                (self._pattern @ outer_v).reshape(m, rank, rank),
                (self._pattern.T @ outer_u).reshape(n, rank, rank),
            )
        )
        return TangentLinearization(r, CompletionJacobian(self, u, v), blocks, self._weight)

    def linear_measurements(self) -> EntryMeasurements:
        r""":math:`E = w\|\mathcal A(X) - b\|^2` with :math:`\mathcal A(X) = X_\Omega` (for ``riemannian_lm``)."""
        structure = (self._order, self._indices, self._indptr)
        return EntryMeasurements(
            self.rows, self.cols, self.shape, self.values, self._weight, structure
        )

    def observed_matrix(self) -> sp.csr_array:
        """``P_Omega(M)`` as a sparse matrix."""
        return self._sparse(self.values)

    def value(self, X: Any) -> float:
        r = self.residual(X)
        return self._weight * float(r @ r)

    def gradient(self, X: Any) -> sp.csr_array:
        return self._sparse(self.scale * self.residual(X))

    def value_and_gradient(self, X: Any) -> tuple[float, sp.csr_array]:
        r = self.residual(X)
        return self._weight * float(r @ r), self._sparse(self.scale * r)

    def hessian_vector_product(self, X: Any, Z: Any) -> sp.csr_array:
        self.check_point(X)
        if tuple(point_shape(Z)) != self.shape:
            raise ValueError(f"Z has shape {tuple(point_shape(Z))}, expected {self.shape}")
        return self._sparse(self.scale * entries(Z, self.rows, self.cols))


class MatrixSensing(Loss):
    r"""Matrix sensing :math:`y_i = \langle A_i, M^\star\rangle`, residuals :math:`r_i = \langle A_i, X\rangle - y_i`.

    ``normalization="mean"`` (default): :math:`E = \frac1k\sum_i r_i^2`; ``"sum"``:
    :math:`E = \frac12\sum_i r_i^2`. Gradient :math:`c\sum_i r_i A_i`, Hessian
    :math:`Z \mapsto c\sum_i \langle A_i, Z\rangle A_i` (``c = 2/k`` or ``1``).
    The ``A_i`` are dense, so a low-rank point is formed (``O(mnr)``, below
    the ``O(kmn)`` of the measurements). Arora et al. (2019) draw
    :math:`A_i` with i.i.d. :math:`N(0, 1/(mn))` entries (sampler ``gaussian_sensing``).

    Args:
        A: Measurement matrices, shape ``(k, m, n)``.
        y: Measurements, length ``k``; or
        target: ``M*`` (``m x n``), from which ``y`` is computed.
        normalization: ``"mean"`` or ``"sum"``.
    """

    name = "matrix_sensing"

    def __init__(self, A: Any, y: Any = None, target: Any = None, normalization: str = "mean"):
        self.A = finite_array(A, "A", ndim=3)
        k, m, n = self.A.shape
        if k == 0:
            raise ValueError("A must hold at least one measurement matrix")
        self.shape = (m, n)
        self._flat = self.A.reshape(k, m * n)
        if (y is None) == (target is None):
            raise ValueError("y: give exactly one of the measurements y or the target")
        if target is not None:
            target = finite_array(target, "target", ndim=2)
            if target.shape != self.shape:
                raise ValueError(
                    f"target has shape {target.shape}, A has matrices of shape {self.shape}"
                )
            y = self._flat @ target.ravel()
        self.y = finite_array(y, "y", ndim=1)
        if self.y.size != k:
            raise ValueError(f"y has {self.y.size} entries, A has {k} measurement matrices")
        self.normalization = _normalization(normalization)
        self.scale = 2.0 / k if normalization == "mean" else 1.0
        self._weight = 1.0 / k if normalization == "mean" else 0.5

    def residual(self, X: Any) -> np.ndarray:
        """``<A_i, X> - y_i``."""
        self.check_point(X)
        return self._flat @ to_dense(X).ravel() - self.y

    def tangent_linearization(self, X: Any) -> TangentLinearization:
        r"""Residual and dense Jacobian at ``X = u diag(s) vt`` in the tangent coordinates ``(A, B)``.

        :math:`\langle A_i, A v^\top + u B^\top\rangle = \langle A_i v, A\rangle + \langle A_i^\top u, B\rangle`:
        the Jacobian is ``k x (m + n) r`` (``O(k m n r)``); see
        :meth:`MatrixCompletion.tangent_linearization`.
        """
        u, s, vt = (np.asarray(a, dtype=float) for a in X)
        r = self.residual(X)
        k, (m, n) = self.y.size, self.shape
        rank = s.shape[0]
        AV = self.A @ vt.T  # k x m x r
        AtU = np.einsum("kmn,mr->knr", self.A, u)  # k x n x r
        jacobian = np.hstack((AV.reshape(k, m * rank), AtU.reshape(k, n * rank)))
        blocks = np.concatenate(
            (np.einsum("kia,kib->iab", AV, AV), np.einsum("kia,kib->iab", AtU, AtU))
        )
        return TangentLinearization(r, jacobian, blocks, self._weight)

    def linear_measurements(self) -> DenseMeasurements:
        r""":math:`E = w\|\mathcal A(X) - y\|^2`, :math:`\mathcal A(X)_i = \langle A_i, X\rangle` (for ``riemannian_lm``)."""
        return DenseMeasurements(self._flat, self.shape, self.y, self._weight)

    def value(self, X: Any) -> float:
        r = self.residual(X)
        return self._weight * float(r @ r)

    def gradient(self, X: Any) -> np.ndarray:
        return (self.scale * self.residual(X) @ self._flat).reshape(self.shape)

    def value_and_gradient(self, X: Any) -> tuple[float, np.ndarray]:
        r = self.residual(X)
        return self._weight * float(r @ r), (self.scale * r @ self._flat).reshape(self.shape)

    def hessian_vector_product(self, X: Any, Z: Any) -> np.ndarray:
        self.check_point(X)
        Zd = to_dense(Z)
        if Zd.shape != self.shape:
            raise ValueError(f"Z has shape {Zd.shape}, expected {self.shape}")
        return (self.scale * (self._flat @ Zd.ravel()) @ self._flat).reshape(self.shape)


@hookimpl
def dlngeo_register_losses(register):
    register(
        "regression", Regression, description="E = ||XA - B||^2/(2b), or ||X - Y||^2/2 whitened"
    )
    register(
        "lp_regression",
        LpRegression,
        description="E = sum |XA - B|^p/(p b), p >= 1 (Arora-Cohen-Hazan 2018: p = 4)",
    )
    register(
        "matrix_completion",
        MatrixCompletion,
        description="squared error on observed entries; O(|Omega| r) on a low-rank point",
    )
    register(
        "matrix_sensing",
        MatrixSensing,
        description="squared error of <A_i, X> against y_i (Gaussian A_i)",
    )
