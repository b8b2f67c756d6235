r"""Linear measurement operators of least-squares losses, applied to factored matrices.

Matrix completion and matrix sensing are :math:`E(X) = w\,\|\mathcal A(X) - b\|^2`
with a *linear* operator :math:`\mathcal A: \mathbb R^{m\times n} \to \mathbb R^k`.
A loss that has this structure offers ``linear_measurements()``, returning one
of the operators here; the Riemannian Gauss–Newton solver
(:mod:`dlngeo.dynamics.gauss_newton`) needs nothing else. Each operator gives

* ``apply(left, right)``: :math:`\mathcal A(L R^\top)` for ``L`` (m x q) and ``R`` (n x q),
  never forming ``m x n`` when that would be large;
* ``adjoint(y)``: :math:`\mathcal A^*(y)` as a matrix ``Z`` with ``Z @ V`` and
  ``Z.T @ U`` (a dense array or a scipy.sparse matrix);
* ``gram(y)``: :math:`\mathcal A\mathcal A^*(y)`;
* ``diagonal(u, v)``: the squared norms :math:`\|\mathcal A(e_i v_l^\top)\|^2`
  (``m x q``) and :math:`\|\mathcal A(u_l e_j^\top)\|^2` (``n x q``), the diagonal
  of the Gauss–Newton matrix in the coordinates of
  :mod:`dlngeo.dynamics.gauss_newton`;
* ``measure(left, right, out=None)``: :math:`\mathcal A(L R^\top)` in whatever form
  ``adjoint`` takes fastest, with the inner products of the measurement
  vectors (``numpy.vdot``), and ``vector(y)`` turning it into the vector;
* ``isotropic_scale()``: :math:`mn / \sum_i \|A_i\|_F^2`, the scale that makes
  :math:`\mathcal A` an isometry on average (``1/p`` for completion; 0 without
  measurements);
* ``values`` (:math:`b`), ``weight`` (:math:`w`), ``shape`` (``(m, n)``).

:class:`EntryMeasurements` (completion) costs ``O(k q)`` per ``apply`` and
``O(k r)`` per product with ``adjoint(y)``; for small ``m n`` (at most
:data:`DENSE_ENTRIES`, and at most 16 entries per observation) it works on
the dense ``m x n`` matrix instead, which is faster there (one BLAS product
and one gather, no per-product sparse-matrix overhead) and gives the same
numbers up to rounding.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

from .lowrank import Factored, entries

__all__ = ["EntryMeasurements", "DenseMeasurements", "DENSE_ENTRIES"]

#: Largest ``m * n`` for which :class:`EntryMeasurements` uses dense ``m x n`` work arrays.
DENSE_ENTRIES = 1 << 18


class EntryMeasurements:
    r"""Observed entries :math:`\mathcal A(X) = (X_{i_k j_k})_k`; :math:`\mathcal A\mathcal A^* = I`.

    Args:
        rows, cols: Observed index pairs (distinct, in range; checked by the loss).
        shape: ``(m, n)``.
        values: :math:`b`, the observed values.
        weight: :math:`w` in :math:`E = w\|\mathcal A(X) - b\|^2`.
        structure: Optional ``(order, indices, indptr)`` of the CSR matrix of Omega
            (``order`` sorts the pairs by row, then column), when the caller has it
            already: shared, not copied.

    Attributes:
        order: ``None`` when the measurements are in the caller's order (the dense
            case); else the sparse case's renumbering: measurement ``k`` (of ``rows``,
            ``cols``, ``values`` and every vector here) is the caller's pair ``order[k]``,
            the CSR order of Omega.
    """

    def __init__(
        self,
        rows: np.ndarray,
        cols: np.ndarray,
        shape: Any,
        values: Any,
        weight: float,
        structure: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
    ):
        m, n = int(shape[0]), int(shape[1])
        self.rows, self.cols = np.asarray(rows), np.asarray(cols)
        self.shape = (m, n)
        self.values = np.asarray(values, dtype=float)
        self.weight = float(weight)
        count = self.rows.size
        self.dense = m * n <= DENSE_ENTRIES and m * n <= 16 * max(count, 1)
        self.order: np.ndarray | None = None
        if self.dense:
            self.flat = self.rows.astype(np.intp) * n + self.cols
            self.mask = np.zeros((m, n))
            self.mask.ravel()[self.flat] = 1.0
        else:
            # CSR structure of Omega built once; the adjoint only writes data (shared with its CSC transpose).
            if structure is None:
                order = np.lexsort((self.cols, self.rows))
                indices = self.cols[order]
                indptr = np.concatenate(([0], np.cumsum(np.bincount(self.rows, minlength=m))))
            else:
                order, indices, indptr = structure
            # The measurements are renumbered in the CSR order (rows sorted, then columns):
            # a gather then reads the left factor's rows in order and only the right
            # factor's at random (cache-friendly), and the adjoint needs no permutation.
            index = np.int32 if max(m, n) < 2**31 else np.intp
            self.order = order
            self.rows = np.repeat(np.arange(m, dtype=index), np.diff(indptr))
            self.cols = indices
            self.values = self.values[order]
            self._S = sp.csr_array((np.zeros(count), indices, indptr), shape=(m, n))
            self._St = self._S.T

    def apply(self, left: np.ndarray, right: np.ndarray) -> np.ndarray:
        """``(left @ right.T)[rows, cols]``."""
        if self.dense:
            return np.take(left @ right.T, self.flat)
        # Row-major factors: each gathered row is one contiguous run (a transposed view,
        # e.g. ``vt.T``, would touch ``q`` cache lines per entry).
        return entries(
            Factored(np.ascontiguousarray(left), np.ascontiguousarray(right)), self.rows, self.cols
        )

    def measure(
        self, left: np.ndarray, right: np.ndarray, out: np.ndarray | None = None
    ) -> np.ndarray:
        """``A(left @ right.T)`` in the form :meth:`adjoint` takes fastest (see :meth:`vector`).

        Dense case: the ``m x n`` matrix ``P_Omega(left @ right.T)`` (its inner products
        are those of the measurement vectors: zeros off Omega), written into ``out``
        when that is an earlier result; else :meth:`apply` (``out`` unused).
        """
        if self.dense:
            product = np.matmul(left, right.T, out=out)
            product *= self.mask
            return product
        return self.apply(left, right)

    def vector(self, y: np.ndarray) -> np.ndarray:
        """The measurement vector of a :meth:`measure` result."""
        return np.take(y, self.flat) if y.ndim == 2 else y

    def adjoint(self, y: np.ndarray) -> Any:
        """:math:`P_\\Omega^*(y)`, the m x n matrix with ``y`` on Omega (``y`` a vector or a :meth:`measure` result).

        Sparse case: a private work matrix, overwritten by the next call.
        """
        if y.ndim == 2:
            return y
        if self.dense:
            Z = np.zeros(self.shape[0] * self.shape[1])
            Z[self.flat] = y
            return Z.reshape(self.shape)
        np.copyto(self._S.data, y)  # CSR order already; _St shares the data array
        return _SparsePair(self._S, self._St)

    def gram(self, y: np.ndarray) -> np.ndarray:
        return y

    def isotropic_scale(self) -> float:
        """``mn / |Omega|`` (each measurement is one unit entry)."""
        m, n = self.shape
        return m * n / self.values.size if self.values.size else 0.0

    def diagonal(self, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(P_Omega @ v**2, P_Omega.T @ u**2)``, ``P_Omega`` the 0/1 pattern of Omega."""
        if self.dense:
            return self.mask @ (v * v), self.mask.T @ (u * u)
        self._S.data.fill(1.0)  # the work matrix of adjoint(), overwritten by its next call
        return self._S @ (v * v), self._St @ (u * u)


class _SparsePair:
    """A sparse matrix and its transpose sharing data: ``Z @ V`` and ``Z.T @ U`` without re-validation."""

    def __init__(self, S: Any, St: Any):
        self.S, self.St = S, St

    def __matmul__(self, V: np.ndarray) -> np.ndarray:
        return self.S @ V

    @property
    def T(self) -> _SparsePair:
        return _SparsePair(self.St, self.S)


class DenseMeasurements:
    r"""Dense measurements :math:`\mathcal A(X)_i = \langle A_i, X\rangle` (matrix sensing).

    Args:
        flat: ``k x mn``, row ``i`` the flattened ``A_i``.
        shape, values, weight: as :class:`EntryMeasurements`.
    """

    def __init__(self, flat: np.ndarray, shape: Any, values: Any, weight: float):
        self.flat = np.asarray(flat, dtype=float)
        self.shape = (int(shape[0]), int(shape[1]))
        self.values = np.asarray(values, dtype=float)
        self.weight = float(weight)

    def apply(self, left: np.ndarray, right: np.ndarray) -> np.ndarray:
        return self.flat @ (left @ right.T).ravel()

    def measure(
        self, left: np.ndarray, right: np.ndarray, out: np.ndarray | None = None
    ) -> np.ndarray:
        return self.apply(left, right)

    def vector(self, y: np.ndarray) -> np.ndarray:
        return y

    def adjoint(self, y: np.ndarray) -> np.ndarray:
        return (y @ self.flat).reshape(self.shape)

    def gram(self, y: np.ndarray) -> np.ndarray:
        return self.flat @ (y @ self.flat)

    def isotropic_scale(self) -> float:
        """``mn / sum_i |A_i|_F^2``."""
        energy = float(np.einsum("ij,ij->", self.flat, self.flat))
        return self.shape[0] * self.shape[1] / energy if energy > 0 else 0.0

    def diagonal(self, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``sum_k (A_k v)**2`` and ``sum_k (A_k^T u)**2``, ``O(k m n q)``."""
        m, n = self.shape
        stack = self.flat.reshape(-1, m, n)
        Av = stack @ v  # k x m x q
        Atu = stack.transpose(0, 2, 1) @ u  # k x n x q
        return np.einsum("kil,kil->il", Av, Av), np.einsum("kjl,kjl->jl", Atu, Atu)
