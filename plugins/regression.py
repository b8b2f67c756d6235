r"""The regression losses: least squares and :math:`\ell_p` regression (registered by :mod:`.losses`).

* ``regression``: :math:`E = \frac{1}{2b}\|XA - B\|_F^2` (``A``: n x b inputs,
  ``B``: m x b targets); whitened (``target=Y``): :math:`E = \frac12\|X - Y\|_F^2`.
* ``lp_regression``: :math:`E = \frac{1}{p\,b}\sum_{ij}|(XA - B)_{ij}|^p`
  (whitened: ``b = 1``); ``p = 2`` is ``regression``. Arora, Cohen & Hazan
  (2018) use ``p = 4`` to show acceleration by overparametrization.

Both also act on a network's outputs ``F`` (``output_value_and_gradient``), for
nonlinear networks (:mod:`dlngeo.relu`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dlngeo.losses import Loss, finite_array
from dlngeo.lowrank import ambient_matmul, is_lowrank_point, to_dense

__all__ = ["Regression", "LpRegression"]


def _apply(X: Any, A: np.ndarray) -> np.ndarray:
    """``X @ A`` for a dense or ``(u, s, vt)`` ``X`` (``O((m+n) r b)`` on factors)."""
    return ambient_matmul(X, A) if is_lowrank_point(X) else np.asarray(X, dtype=float) @ A


class _Data(Loss):
    """Shared data handling of (ℓp) regression: inputs ``A`` and targets ``B``, or a whitened target ``Y``."""

    def __init__(self, A: Any = None, B: Any = None, target: Any = None):
        if target is not None:
            if A is not None or B is not None:
                raise ValueError("target: give either target (whitened) or A and B, not both")
            self.target = finite_array(target, "target", ndim=2)
            self.A = self.B = None
            self.batch = 1
            self.shape = self.target.shape
        else:
            if A is None or B is None:
                raise ValueError("A: regression needs data A and targets B, or a whitened target")
            self.A = finite_array(A, "A", ndim=2)
            self.B = finite_array(B, "B", ndim=2)
            if self.A.shape[1] != self.B.shape[1]:
                raise ValueError(
                    f"B has {self.B.shape[1]} columns (samples), A has {self.A.shape[1]}"
                )
            self.target = None
            self.batch = self.A.shape[1]
            self.shape = (self.B.shape[0], self.A.shape[0])

    def residual(self, X: Any) -> np.ndarray:
        """``X A - B`` (``m x b``), or ``X - Y`` when whitened."""
        self.check_point(X)
        if self.target is not None:
            return to_dense(X) - self.target
        return _apply(X, self.A) - self.B

    def _back(self, R: np.ndarray) -> np.ndarray:
        """``R A^T / b`` (or ``R`` when whitened): the chain rule through ``X -> X A``."""
        return R if self.A is None else (R @ self.A.T) / self.batch

    def _forward(self, Z: Any) -> np.ndarray:
        """``Z A`` (or ``Z``) for a direction ``Z``."""
        return to_dense(Z) if self.A is None else ambient_matmul(Z, self.A)


class Regression(_Data):
    r"""Least squares :math:`E(X) = \frac{1}{2b}\|XA - B\|_F^2`, or :math:`\frac12\|X - Y\|_F^2` whitened.

    Args:
        A: Inputs, ``n x b`` (one sample per column).
        B: Targets, ``m x b``.
        target: ``Y`` (``m x n``) for the whitened loss; excludes ``A``, ``B``.

    The gradient :math:`(XA - B)A^\top/b` is dense ``m x n``; the value on a
    low-rank point costs ``O((m+n) r b)``. The Hessian is
    :math:`Z \mapsto Z A A^\top / b` (identity when whitened), Saxe et al. (2014).
    """

    name = "regression"

    def value(self, X: Any) -> float:
        R = self.residual(X)
        return 0.5 * float(np.vdot(R, R)) / self.batch

    def gradient(self, X: Any) -> np.ndarray:
        return self._back(self.residual(X))

    def value_and_gradient(self, X: Any) -> tuple[float, np.ndarray]:
        R = self.residual(X)
        return 0.5 * float(np.vdot(R, R)) / self.batch, self._back(R)

    def hessian_vector_product(self, X: Any, Z: Any) -> np.ndarray:
        self.check_point(X)
        return self._back(self._forward(Z))

    def output_value_and_gradient(self, F: np.ndarray) -> tuple[float, np.ndarray]:
        """``l(F) = ||F - B||^2/(2b)`` and ``(F - B)/b`` on a network's outputs ``F`` (``m x b``).

        Whitened: ``B = Y``, ``b = 1`` (the outputs on the inputs ``I_n``).
        """
        R = F - (self.target if self.B is None else self.B)
        return 0.5 * float(np.vdot(R, R)) / self.batch, R / self.batch

    def output_hessian_vector_product(self, F: np.ndarray, Z: Any) -> np.ndarray:
        return to_dense(Z) / self.batch


class LpRegression(_Data):
    r""":math:`\ell_p` regression :math:`E(X) = \frac{1}{p\,b}\sum_{ij} |(XA - B)_{ij}|^p` (Arora, Cohen & Hazan 2018).

    Args:
        p: Exponent, ``p >= 1`` (the paper's experiments: ``p = 4``).
        A, B, target: As for :class:`Regression`.

    Gradient :math:`\frac1b(|R|^{p-1}\operatorname{sign}R)A^\top`; Hessian
    :math:`Z \mapsto \frac{p-1}{b}(|R|^{p-2}\circ ZA)A^\top` (zero for ``p = 1``;
    for ``1 < p < 2`` it is infinite where a residual vanishes).
    """

    name = "lp_regression"

    def __init__(self, p: float = 4.0, A: Any = None, B: Any = None, target: Any = None):
        try:
            p = float(p)
        except (TypeError, ValueError):
            raise ValueError(f"p must be a number >= 1, got {p!r}") from None
        if not np.isfinite(p) or p < 1:
            raise ValueError(f"p must be a finite number >= 1, got {p!r}")
        self.p = p
        super().__init__(A=A, B=B, target=target)

    def value(self, X: Any) -> float:
        R = self.residual(X)
        return float(np.sum(np.abs(R) ** self.p)) / (self.p * self.batch)

    def gradient(self, X: Any) -> np.ndarray:
        R = self.residual(X)
        return self._back(np.sign(R) * np.abs(R) ** (self.p - 1))

    def hessian_vector_product(self, X: Any, Z: Any) -> np.ndarray:
        R = self.residual(X)
        if self.p == 1:
            return np.zeros(self.shape)
        return (self.p - 1) * self._back(np.abs(R) ** (self.p - 2) * self._forward(Z))

    def output_value_and_gradient(self, F: np.ndarray) -> tuple[float, np.ndarray]:
        """``sum |F - B|^p/(p b)`` and its gradient on a network's outputs ``F`` (``m x b``)."""
        R = F - (self.target if self.B is None else self.B)
        value = float(np.sum(np.abs(R) ** self.p)) / (self.p * self.batch)
        return value, np.sign(R) * np.abs(R) ** (self.p - 1) / self.batch

    def output_hessian_vector_product(self, F: np.ndarray, Z: Any) -> np.ndarray:
        R = F - (self.target if self.B is None else self.B)
        if self.p == 1:
            return np.zeros(R.shape)
        return (self.p - 1) * np.abs(R) ** (self.p - 2) * to_dense(Z) / self.batch
