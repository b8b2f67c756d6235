r"""Built-in loss: matrix completion on observed entries (Arora, Cohen, Hu & Luo 2019).

Registered with the other built-in losses by the ``dlngeo_register_losses``
hook of :mod:`dlngeo_plugins.losses` (the ``losses`` entry point). A
:class:`dlngeo.losses.Loss`: value, ambient gradient :math:`E'(X)` (sparse,
one pattern validated once) and Hessian-vector product, on a dense ``X`` or a
low-rank point ``(u, s, vt)`` in ``O(|Omega| r)``; the residual's tangent
linearization (matrix-free Jacobian) serves ``riemannian_lm``.
``normalization="mean"`` (default): :math:`E = \frac{1}{|\Omega|}\sum r_i^2`;
``"sum"``: :math:`E = \frac12\sum r_i^2` (docs/math.md §5).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

from dlngeo.losses import Loss, TangentLinearization, check_observations
from dlngeo.lowrank import Factored, entries, is_lowrank_point, point_shape, refill_csr
from dlngeo.measurements import EntryMeasurements

__all__ = ["MatrixCompletion", "CompletionJacobian"]

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
        self._template: sp.csr_array | None = None
        self._csr_rows: np.ndarray | None = None  # rows[_order], built by the first product
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
        """``P_Omega^*`` of values in the order of ``rows``/``cols``."""
        return self._csr(data[self._order])

    def _csr(self, data: np.ndarray) -> sp.csr_array:
        """``P_Omega^*`` of values already in the CSR order of Omega."""
        if self._template is None:  # the pattern of Omega, validated once
            self._template = sp.csr_array((data, self._indices, self._indptr), shape=self.shape)
        return refill_csr(self._template, data)

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
        if self._csr_rows is None:  # the row of each stored entry, int32 when it fits
            m = self.shape[0]
            index = np.int32 if m < 2**31 else np.int64
            self._csr_rows = np.repeat(np.arange(m, dtype=index), np.diff(self._indptr))
        # Z's entries gathered in the CSR order of Omega: the result needs no permutation,
        # and a factored Z's left rows are read in order.
        data = np.asarray(entries(Z, self._csr_rows, self._indices), dtype=float)
        data *= self.scale
        return self._csr(data)
