r"""Built-in losses: regression, :math:`\ell_p` regression, matrix completion, matrix sensing.

Registered through the ``dlngeo_register_losses`` hook like any plugin (the
two regression losses are defined in :mod:`dlngeo_plugins.regression`, matrix
completion in :mod:`dlngeo_plugins.completion`). Each
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

from dlngeo.hookspecs import hookimpl
from dlngeo.losses import Loss, TangentLinearization, finite_array
from dlngeo.lowrank import to_dense
from dlngeo.measurements import DenseMeasurements

from .completion import (  # re-exported: registered below
    CompletionJacobian,
    MatrixCompletion,
    _normalization,
)
from .regression import LpRegression, Regression  # re-exported: registered below

__all__ = [
    "Regression",
    "LpRegression",
    "MatrixCompletion",
    "MatrixSensing",
    "CompletionJacobian",
]


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
