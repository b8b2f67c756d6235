r"""The factor gradients of :math:`L(W) = E(W_N \cdots W_1)`, sharing the prefix products.

:math:`\partial L/\partial W_k = A_k^\top E'(X) B_k^\top` with
:math:`A_k = W_N \cdots W_{k+1}`, :math:`B_k = W_{k-1} \cdots W_1` (docs/math.md §1;
Arora, Cohen & Hazan 2018). One evaluation forms the prefix products
:math:`B_k` once, reads :math:`X = W_N B_N` off them, and reuses them for every
gradient: ``O(N d^2 h)`` per step for width ``h``. Used by gradient descent
(:mod:`.overparametrized`) and the gradient flow (:mod:`.factor_flow`) on the factors.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import scipy.sparse as sp

from ..lowrank import Factored, ambient_matmul, ambient_rmatmul, to_dense
from ..network import DeepLinearNetwork

__all__ = ["factor_loss_and_gradients"]


#: A sparse gradient storing at least this fraction of its entries is made dense.
#:
#: The factor methods form the dense ``X`` (``O(N m n h)``), so the ``O(mn)``
#: conversion never changes the order of a step's cost; the products with the
#: factors then run at BLAS speed. A CSR product costs several times a dense
#: one per stored entry plus a fixed overhead of tens of microseconds per call
#: (measured: dense and CSR products break even near density 1/8 at
#: ``300 x 300``; at ``30 x 30`` the dense ones are 5x faster whatever the density).
DENSE_GRADIENT_FRACTION = 0.125


def _as_ambient(G: Any) -> Any:
    if sp.issparse(G):
        m, n = G.shape
        if G.nnz >= DENSE_GRADIENT_FRACTION * m * n:
            return G.toarray()
        return G.tocsr()
    if isinstance(G, Factored):
        return G
    return np.asarray(G, dtype=float)


def factor_loss_and_gradients(
    network: DeepLinearNetwork,
    weights: list[np.ndarray],
    loss: Any,
    gradient: Callable[[np.ndarray], Any] | None = None,
) -> tuple[np.ndarray, float, list[np.ndarray]]:
    """``(X, E(X), [dL/dW_k])`` with the prefix products shared by ``X`` and every gradient.

    Args:
        network: The network.
        weights: ``W_1 .. W_N`` (already checked float arrays).
        loss: A :class:`~dlngeo.losses.Loss`.
        gradient: Optional replacement for ``loss.gradient`` (a stochastic estimate);
            the loss value is always the exact one.

    A nonlinear network (:class:`~dlngeo.relu.ReLUNetwork`) returns its
    outputs ``F`` instead of ``X`` and backpropagates ``loss`` (an
    :class:`~dlngeo.relu.OutputLoss`) through its gates.
    """
    if network.activation != "linear":
        return network.loss_and_gradients(weights, loss, gradient=gradient)  # type: ignore[attr-defined]
    n = network.depth
    prefix: list[Any] = [None] * n  # B_k = W_{k-1} .. W_1
    for k in range(1, n):
        prefix[k] = weights[k - 1] if prefix[k - 1] is None else weights[k - 1] @ prefix[k - 1]
    X = weights[-1] if prefix[-1] is None else weights[-1] @ prefix[-1]
    if gradient is None:
        value, G = loss.value_and_gradient(X)
    else:
        value, G = loss.value(X), gradient(X)
    G = _as_ambient(G)
    suffix: list[Any] = [None] * n  # A_k = W_N .. W_{k+1}
    for k in range(n - 2, -1, -1):
        suffix[k] = weights[k + 1] if suffix[k + 1] is None else suffix[k + 1] @ weights[k + 1]
    grads = []
    if isinstance(G, np.ndarray):  # the common dense case, without the type dispatch
        for B, A in zip(prefix, suffix):
            GB = G if B is None else G @ B.T
            grads.append(GB if A is None else A.T @ GB)
        return X, float(value), grads
    for B, A in zip(prefix, suffix):
        if B is None:
            grads.append(to_dense(G) if A is None else ambient_rmatmul(G, A).T)
        else:
            GB = ambient_matmul(G, B.T)
            grads.append(GB if A is None else A.T @ GB)
    return X, float(value), grads


def _grad_norm(grads: list[np.ndarray]) -> float:
    return float(np.sqrt(sum(float(np.vdot(g, g)) for g in grads)))
