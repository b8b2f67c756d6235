r"""Huber-loss matrix completion, a dlngeo plugin.

On the observed entries :math:`\Omega` with residuals :math:`r = X_{ij} - M_{ij}`,

.. math:: E(X) = c \sum_{(i,j)\in\Omega} h_\delta(r_{ij}),\qquad
          h_\delta(r) = \begin{cases} \tfrac12 r^2 & |r|\le\delta\\ \delta(|r| - \tfrac12\delta) & |r| > \delta\end{cases}

with ``c = 1/|Omega|`` (``normalization="mean"``) or ``c = 1`` (``"sum"``)
(Huber 1964). The gradient is :math:`c\,P_\Omega(\mathrm{clip}(r, -\delta, \delta))`
and the Hessian :math:`Z \mapsto c\,P_\Omega(\mathbf 1_{|r|\le\delta}\circ Z)`:
both sparse, in ``O(|Omega| r)`` on a low-rank point ``(u, s, vt)``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp
from dlngeo_plugins.problems import completion_data

import dlngeo
from dlngeo.losses import check_observations
from dlngeo.lowrank import entries

__version__ = "0.1.0"


class HuberCompletion(dlngeo.Loss):
    """Huber loss on the observed entries of a matrix (robust matrix completion).

    Args:
        rows, cols: Observed index pairs (distinct, in range).
        values: Observed values (finite).
        shape: ``(m, n)``.
        delta: Huber threshold, positive.
        normalization: ``"mean"`` (default) or ``"sum"``.
    """

    name = "huber_completion"

    def __init__(
        self,
        rows: Any,
        cols: Any,
        values: Any,
        shape: Any,
        delta: float = 1.0,
        normalization: str = "mean",
    ):
        self.rows, self.cols, self.values, self.shape = check_observations(
            rows, cols, values, shape
        )
        if not (isinstance(delta, (int, float)) and np.isfinite(delta) and delta > 0):
            raise ValueError(f"delta must be a positive number, got {delta!r}")
        if normalization not in ("mean", "sum"):
            raise ValueError(f"normalization must be 'mean' or 'sum', got {normalization!r}")
        self.delta = float(delta)
        self.scale = 1.0 / self.rows.size if normalization == "mean" else 1.0

    def _residual(self, X: Any) -> np.ndarray:
        self.check_point(X)
        return entries(X, self.rows, self.cols) - self.values

    def _sparse(self, data: np.ndarray) -> sp.csr_array:
        return sp.csr_array((data, (self.rows, self.cols)), shape=self.shape)

    def value(self, X: Any) -> float:
        a = np.abs(self._residual(X))
        d = self.delta
        return self.scale * float(np.sum(np.where(a <= d, 0.5 * a**2, d * (a - 0.5 * d))))

    def gradient(self, X: Any) -> sp.csr_array:
        return self._sparse(self.scale * np.clip(self._residual(X), -self.delta, self.delta))

    def hessian_vector_product(self, X: Any, Z: Any) -> sp.csr_array:
        inside = np.abs(self._residual(X)) <= self.delta
        return self._sparse(self.scale * inside * entries(Z, self.rows, self.cols))


@dlngeo.hookimpl
def dlngeo_register_losses(register):
    register(
        "huber_completion",
        HuberCompletion,
        description="Huber loss on observed entries (robust completion)",
    )


@dlngeo.hookimpl
def dlngeo_register_problems(register):
    # The data of matrix_completion: [observations] -> rows, cols, values = M* there, shape.
    register("huber_completion", completion_data, description="observed entries of the target")
