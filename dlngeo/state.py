"""The state a metric is evaluated on.

A metric plugin is a callable ``metric(state) -> float | ndarray``. The
state carries the end-to-end point (dense ``X`` or low-rank ``(u, s, vt)``),
the factors when the method trains them, the loss, and what the run knows
about the problem (the target, a test mask).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .lowrank import to_dense

__all__ = ["State"]


@dataclass
class State:
    """One instant of a run.

    Attributes:
        point: End-to-end matrix ``X``: dense ``m x n`` or ``(u, s, vt)``.
        loss: The :class:`~dlngeo.losses.Loss` being minimized.
        weights: The factors ``W_1 .. W_N`` for overparametrized methods, else ``None``.
        network: The :class:`~dlngeo.DeepLinearNetwork`, when there is one.
        depth: ``N`` (the metric g_N's depth).
        time: Flow time ``t`` (``eta * k`` for discrete methods).
        iteration: Iteration count.
        data: Problem data a metric may need: ``target`` (``M*``, dense or
            ``(u, s, vt)``) for ``distance_to_target`` and ``test_error``;
            ``rows``/``cols`` (the observed set) for ``test_error`` when the
            loss does not carry them.
    """

    point: Any
    loss: Any = None
    weights: list[np.ndarray] | None = None
    network: Any = None
    depth: int = 1
    time: float = 0.0
    iteration: int = 0
    data: dict[str, Any] = field(default_factory=dict)

    def dense(self) -> np.ndarray:
        """The end-to-end matrix as a dense array (forms ``m x n``)."""
        return to_dense(self.point)

    def singular_values(self) -> np.ndarray:
        """Singular values of ``X``, descending; from ``s`` directly on a low-rank point."""
        if isinstance(self.point, (tuple, list)) and len(self.point) == 3:
            return np.sort(np.abs(np.asarray(self.point[1])))[::-1]
        return np.linalg.svd(self.dense(), compute_uv=False)
