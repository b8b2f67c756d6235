r"""Built-in metrics of the layers ``W_1 .. W_N`` (registered by :mod:`.metrics`).

Imbalance :math:`G_k = W_{k+1}^\top W_{k+1} - W_k W_k^\top`, layer norms and
their rates, and the quantities a ReLU network conserves or changes (unit
balance, activation patterns); all read ``state.weights``. Also the
:class:`Metric` base shared with :mod:`dlngeo_plugins.metrics` (the metrics of
the end-to-end matrix ``X``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dlngeo.network import DeepLinearNetwork

__all__ = [
    "Metric",
    "Imbalance",
    "LayerNorms",
    "ImbalanceOffDiagonal",
    "ImbalanceDrift",
    "UnitBalance",
    "LayerNormDifferences",
    "GrowthRates",
    "PatternChanges",
]


class Metric:
    """Base of the built-in metrics: ``metric(state) -> float | ndarray``."""

    name = "metric"

    def __call__(self, state: Any) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in vars(self).items())})"


def _weights(state: Any) -> list[np.ndarray]:
    return [] if not state.weights else [np.asarray(W, dtype=float) for W in state.weights]


class Imbalance(Metric):
    """``||G_k||_F`` for ``k = 1..N-1`` (Arora, Cohen & Hazan 2018); empty without weights."""

    name = "imbalance"

    def __call__(self, state: Any) -> np.ndarray:
        weights = _weights(state)
        if len(weights) < 2:
            return np.zeros(0)
        network = state.network or DeepLinearNetwork(
            [weights[0].shape[1]] + [W.shape[0] for W in weights]
        )
        return np.array([np.linalg.norm(G) for G in network.imbalance(weights)])


class LayerNorms(Metric):
    """``||W_k||_F`` for ``k = 1..N``; empty without weights."""

    name = "layer_norms"

    def __call__(self, state: Any) -> np.ndarray:
        return np.array([np.linalg.norm(W) for W in _weights(state)])


def _needs_weights(state: Any, metric: str) -> list[np.ndarray]:
    weights = _weights(state)
    if not weights or state.network is None:
        raise ValueError(f"{metric} needs the factors and the network (an overparametrized method)")
    return weights


class ImbalanceOffDiagonal(Metric):
    """``||G_k - diag G_k||_F`` for ``k = 1..N-1``: what a ReLU network does not conserve."""

    name = "imbalance_offdiagonal"

    def __call__(self, state: Any) -> np.ndarray:
        weights = _weights(state)
        G = [
            weights[k + 1].T @ weights[k + 1] - weights[k] @ weights[k].T
            for k in range(len(weights) - 1)
        ]
        return np.array([np.linalg.norm(g - np.diag(np.diag(g))) for g in G])


class ImbalanceDrift(Metric):
    r"""Relative drift of the invariants, :math:`\max_k \|G_k - G_k(0)\|_F / (\|W_k\|_F^2 + \|W_{k+1}\|_F^2)`.

    :math:`G_k = W_{k+1}^\top W_{k+1} - W_k W_k^\top` is conserved by the gradient
    flow of a linear network (Arora, Cohen & Hazan 2018), so this is 0 there up
    to the integrator's error (factor GD moves :math:`G_k` by
    :math:`\eta^2 (g_{k+1}^\top g_{k+1} - g_k g_k^\top)` per step). A bias-free
    ReLU network conserves only :math:`\operatorname{diag} G_k` (Du, Hu & Lee
    2018); the off-diagonal part moves, which is how the nonlinearity breaks
    the layers' symmetry (Basu, Mukherjee & Vasudevan 2019). The denominator
    bounds :math:`\|G_k\|_F`, so the value is scale free. ``G_k(0)`` comes from
    ``state.data["initial_weights"]``; 0 for a network of one layer.
    """

    name = "imbalance_drift"
    reads_initial_weights = True  # the run puts the initial factors in state.data

    def __call__(self, state: Any) -> float:
        weights = _needs_weights(state, "imbalance_drift")
        initial = (state.data or {}).get("initial_weights")
        if initial is None:
            raise ValueError("imbalance_drift needs state.data['initial_weights']")
        drift = 0.0
        for k in range(len(weights) - 1):
            a, b, a0, b0 = weights[k], weights[k + 1], initial[k], initial[k + 1]
            change = (b.T @ b - a @ a.T) - (b0.T @ b0 - a0 @ a0.T)
            scale = float(np.vdot(a, a) + np.vdot(b, b))
            drift = max(drift, float(np.linalg.norm(change)) / scale if scale > 0 else 0.0)
        return drift


class UnitBalance(Metric):
    """Per hidden unit, ``||W_k[j,:]||^2 - ||W_{k+1}[:,j]||^2`` (layers concatenated); conserved by the ReLU flow."""

    name = "unit_balance"

    def __call__(self, state: Any) -> np.ndarray:
        from dlngeo.relu import unit_balance

        weights = _weights(state)
        return np.concatenate(unit_balance(weights)) if len(weights) > 1 else np.zeros(0)


class LayerNormDifferences(Metric):
    """``||W_{k+1}||_F^2 - ||W_k||_F^2`` for ``k = 1..N-1`` (the trace of ``G_k``)."""

    name = "layer_norm_differences"

    def __call__(self, state: Any) -> np.ndarray:
        return np.diff([float(np.vdot(W, W)) for W in _weights(state)])


class GrowthRates(Metric):
    """Per layer, ``d/dt ||W_k||^2 = -2 <W_k, dL/dW_k>`` along the gradient flow (``norm``: ``"fro"`` or ``"spectral"``)."""

    name = "growth_rates"

    def __init__(self, norm: str = "fro"):
        if norm not in ("fro", "spectral"):
            raise ValueError(f"norm must be 'fro' or 'spectral', got {norm!r}")
        self.norm = norm

    def __call__(self, state: Any) -> np.ndarray:
        from dlngeo.dynamics.overparametrized import factor_loss_and_gradients

        weights = _needs_weights(state, "growth_rates")
        grads = factor_loss_and_gradients(state.network, weights, state.loss)[2]
        if self.norm == "fro":
            return np.array([-2.0 * float(np.vdot(W, g)) for W, g in zip(weights, grads)])
        rates = []
        for W, g in zip(weights, grads):
            u, s, vt = np.linalg.svd(W)
            rates.append(-2.0 * s[0] * float(u[:, 0] @ g @ vt[0]))
        return np.array(rates)


class PatternChanges(Metric):
    """Samples whose activation pattern differs from ``state.data["initial_patterns"]`` (0 for a linear network)."""

    name = "pattern_changes"

    def __call__(self, state: Any) -> float:
        network = state.network
        if network is None or network.activation == "linear":
            return 0.0
        weights = _needs_weights(state, "pattern_changes")
        initial = (state.data or {}).get("initial_patterns")
        if initial is None:
            raise ValueError("pattern_changes needs state.data['initial_patterns']")
        changed = np.zeros(np.asarray(initial[0]).shape[1], dtype=bool)
        for p0, p in zip(initial, network.patterns(weights, state.loss.inputs)):
            changed |= np.any(np.asarray(p0) != p, axis=0)
        return float(changed.sum())
