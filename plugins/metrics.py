r"""Built-in metrics: functions of a :class:`~dlngeo.state.State` recorded along a run.

Each registered factory takes its options and returns a callable
``metric(state) -> float | ndarray``. The metric objects are small classes
(picklable, so sweeps can ship them to workers).

* ``loss``: :math:`E(X)` of ``state.loss``.
* ``singular_values``: :math:`\sigma_1 \ge \sigma_2 \ge \dots` (option ``k``: the top ``k``, zero padded).
* ``effective_rank``: :math:`\exp(-\sum_i p_i\log p_i)`, :math:`p_i = \sigma_i/\sum_j\sigma_j`
  (Roy & Vetterli 2007; 0 for the zero matrix).
* ``schatten_quasi_norm``: :math:`\sum_i \sigma_i^{2/N}`, ``N = state.depth``
  (the quantity Arora et al. 2019 log; option ``depth`` overrides ``N``).
* ``nuclear_norm``: :math:`\sum_i\sigma_i`.
* ``imbalance``: :math:`\|G_k\|_F`, :math:`G_k = W_{k+1}^\top W_{k+1} - W_k W_k^\top`,
  ``k = 1..N-1`` (empty when the state has no weights).
* ``layer_norms``: :math:`\|W_k\|_F` (empty when the state has no weights).
* ``imbalance_offdiagonal``: :math:`\|G_k - \operatorname{diag} G_k\|_F`: the part of
  :math:`G_k` a ReLU network does not conserve.
* ``imbalance_drift``: :math:`\max_k \|G_k - G_k(0)\|_F / (\|W_k\|_F^2 + \|W_{k+1}\|_F^2)`,
  ``G_k(0)`` from ``state.data["initial_weights"]``: how far the invariants of the
  linear flow moved, relative to the layers' scale (0 for the linear flow).
* ``unit_balance``: per hidden unit, incoming minus outgoing squared norm
  (:math:`-\operatorname{diag} G_k`, all hidden layers concatenated): conserved by
  the gradient flow of a bias-free ReLU network (Du, Hu & Lee 2018).
* ``layer_norm_differences``: :math:`\|W_{k+1}\|_F^2 - \|W_k\|_F^2 = \operatorname{tr} G_k`.
* ``growth_rates``: :math:`\tfrac{d}{dt}\|W_k\|^2` along the gradient flow, exactly
  :math:`-2\langle W_k, \partial_k L\rangle` (``norm="fro"``), or of the squared spectral
  norm, :math:`-2\sigma_1 u_1^\top \partial_k L\, v_1` (``norm="spectral"``).
* ``pattern_changes``: samples whose activation pattern differs from
  ``state.data["initial_patterns"]`` (0 for a linear network).
* ``distance_to_target``: :math:`\|X - M^\star\|_F`, ``M* = state.data["target"]``.
* ``test_error``: RMSE of ``X - M*`` on the entries not observed by the loss.

Singular values come from ``s`` directly on a low-rank point; effective rank
and the Schatten quasi-norm ignore values below the numerical-rank tolerance
``max(m, n) eps sigma_1`` (rounding noise of a dense SVD); the distances
never form ``m x n`` when both ``X`` and the target are low rank. The metrics
of the layers (``imbalance`` ... ``pattern_changes``) are defined in
:mod:`dlngeo_plugins.layer_metrics`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dlngeo.hookspecs import hookimpl
from dlngeo.lowrank import entries, is_lowrank_point, point_shape, to_dense
from dlngeo.validation import positive_integer

from .layer_metrics import (  # re-exported: registered below
    GrowthRates,
    Imbalance,
    ImbalanceDrift,
    ImbalanceOffDiagonal,
    LayerNormDifferences,
    LayerNorms,
    Metric,
    PatternChanges,
    UnitBalance,
)

__all__ = ["frobenius_distance"]


def frobenius_distance(X: Any, Y: Any) -> float:
    """``||X - Y||_F`` for dense or ``(u, s, vt)`` ``X`` and ``Y``.

    Two low-rank points are subtracted as ``[u1 s1, -u2 s2] [v1, v2]^T`` and
    measured through QR factors of both sides, ``O((m+n)(r1+r2)^2)``, accurate
    to ``eps * (||X|| + ||Y||)`` (no cancellation of squared norms).
    """
    if point_shape(X) != point_shape(Y):
        raise ValueError(f"target has shape {point_shape(Y)}, the point has shape {point_shape(X)}")
    if not (is_lowrank_point(X) and is_lowrank_point(Y)):
        return float(np.linalg.norm(to_dense(X) - to_dense(Y)))
    (u1, s1, vt1), (u2, s2, vt2) = X, Y
    left = np.hstack((np.asarray(u1) * s1, -np.asarray(u2) * s2))
    right = np.hstack((np.asarray(vt1).T, np.asarray(vt2).T))
    return float(np.linalg.norm(np.linalg.qr(left, mode="r") @ np.linalg.qr(right, mode="r").T))


def _target(state: Any, metric: str) -> Any:
    target = (state.data or {}).get("target")
    if target is None:
        raise ValueError(f"{metric} needs state.data['target'] (the matrix to recover)")
    return target


def _significant(state: Any) -> np.ndarray:
    """Singular values above the numerical-rank tolerance ``max(m, n) eps sigma_1``.

    A dense SVD returns rounding-level values (~1e-16 sigma_1) for the zero
    directions; ``sigma^(2/N)`` would turn them into ~1e-8 each.
    """
    s = state.singular_values()
    if s.size == 0:
        return s
    tol = max(point_shape(state.point)) * np.finfo(float).eps * s[0]
    return s[s > tol]


class LossValue(Metric):
    """``E(X)``: the value of ``state.loss`` at ``state.point``."""

    name = "loss"

    def __call__(self, state: Any) -> float:
        if state.loss is None:
            raise ValueError("loss metric needs state.loss")
        return float(state.loss.value(state.point))


class SingularValues(Metric):
    """Singular values of ``X``, descending; ``k``: keep the top ``k`` (padded with zeros)."""

    name = "singular_values"

    def __init__(self, k: int | None = None):
        self.k = None if k is None else positive_integer(k, "k")

    def __call__(self, state: Any) -> np.ndarray:
        s = state.singular_values()
        if self.k is None:
            return s
        return np.concatenate((s[: self.k], np.zeros(max(0, self.k - s.size))))


class EffectiveRank(Metric):
    """Roy & Vetterli (2007) effective rank ``exp(H(p))``, ``p_i = sigma_i / sum_j sigma_j``."""

    name = "effective_rank"

    def __call__(self, state: Any) -> float:
        s = _significant(state)
        if s.size == 0:
            return 0.0
        p = s / s.sum()
        return float(np.exp(-np.sum(p * np.log(p))))


class SchattenQuasiNorm(Metric):
    """``sum_i sigma_i^(2/N)``: the Schatten-2/N quasi-norm to the power 2/N (``N = state.depth``)."""

    name = "schatten_quasi_norm"

    def __init__(self, depth: int | None = None):
        self.depth = None if depth is None else positive_integer(depth, "depth")

    def __call__(self, state: Any) -> float:
        depth = self.depth or state.depth
        if not depth or depth < 1:
            raise ValueError(f"schatten_quasi_norm needs a positive state.depth, got {depth!r}")
        return float(np.sum(_significant(state) ** (2.0 / depth)))


class NuclearNorm(Metric):
    """``||X||_* = sum_i sigma_i``."""

    name = "nuclear_norm"

    def __call__(self, state: Any) -> float:
        return float(np.sum(state.singular_values()))


class DistanceToTarget(Metric):
    """``||X - M*||_F`` with ``M* = state.data["target"]``; ``relative``: divided by ``||M*||_F``."""

    name = "distance_to_target"

    def __init__(self, relative: bool = False):
        self.relative = bool(relative)

    def __call__(self, state: Any) -> float:
        target = _target(state, "distance_to_target")
        d = frobenius_distance(state.point, target)
        if self.relative:
            scale = (
                float(np.linalg.norm(target[1]))
                if is_lowrank_point(target)
                else float(np.linalg.norm(target))
            )
            return d / scale if scale > 0 else float("inf") if d > 0 else 0.0
        return d


class HeldOutError(Metric):
    r"""Completion test error: RMSE of ``X - M*`` on the unobserved entries.

    ``M* = state.data["target"]`` (dense or ``(u, s, vt)``); the observed set
    is ``state.data["rows"], state.data["cols"]`` if given, else the loss's
    ``rows``/``cols``. With ``entries="all"`` the mean runs over all ``m n``
    entries (Arora et al. 2019's "test error" is that MSE: ``squared=True``).

    A dense ``X`` or target costs ``O(mn)``. Two low-rank points cost
    ``O((m+n) r^2 + |Omega| r)``: the unobserved sum is
    :math:`\|X - M^\star\|_F^2 - \sum_\Omega (X - M^\star)_{ij}^2`, which loses
    relative accuracy only when the unobserved error is far below the observed one.

    Args:
        entries: ``"unobserved"`` (default) or ``"all"``.
        squared: Return the mean squared error instead of its root.
    """

    name = "test_error"

    def __init__(self, entries: str = "unobserved", squared: bool = False):
        if entries not in ("unobserved", "all"):
            raise ValueError(f"entries must be 'unobserved' or 'all', got {entries!r}")
        self.entries = entries
        self.squared = bool(squared)

    def _observed(self, state: Any) -> tuple[np.ndarray, np.ndarray]:
        data = state.data or {}
        if data.get("rows") is not None and data.get("cols") is not None:
            return np.asarray(data["rows"], dtype=np.int64), np.asarray(
                data["cols"], dtype=np.int64
            )
        if hasattr(state.loss, "rows") and hasattr(state.loss, "cols"):
            return state.loss.rows, state.loss.cols
        raise ValueError(
            "test_error needs the observed set: state.data['rows'/'cols'] or a completion loss"
        )

    def __call__(self, state: Any) -> float:
        X, target = state.point, _target(state, "test_error")
        m, n = point_shape(X)
        if self.entries == "all":
            total, count = frobenius_distance(X, target) ** 2, m * n
        else:
            rows, cols = self._observed(state)
            linear = np.unique(rows * n + cols)
            count = m * n - linear.size
            if count == 0:
                raise ValueError("test_error: every entry is observed, there is no test set")
            if is_lowrank_point(X) and is_lowrank_point(target):
                r = entries(X, rows, cols) - entries(target, rows, cols)
                total = max(frobenius_distance(X, target) ** 2 - float(r @ r), 0.0)
            else:
                D = to_dense(X) - to_dense(target)
                D.ravel()[linear] = 0.0
                total = float(np.vdot(D, D))
        mse = total / count
        return float(mse if self.squared else np.sqrt(mse))


_METRICS = (
    LossValue,
    SingularValues,
    EffectiveRank,
    SchattenQuasiNorm,
    NuclearNorm,
    Imbalance,
    LayerNorms,
    ImbalanceOffDiagonal,
    ImbalanceDrift,
    UnitBalance,
    LayerNormDifferences,
    GrowthRates,
    PatternChanges,
    DistanceToTarget,
    HeldOutError,
)


@hookimpl
def dlngeo_register_metrics(register):
    for cls in _METRICS:
        register(cls.name, cls, description=cls.__doc__.strip().splitlines()[0])
