r"""The factor gradients of :math:`L(W) = E(W_N \cdots W_1)`, sharing the prefix products.

:math:`\partial L/\partial W_k = A_k^\top E'(X) B_k^\top` with
:math:`A_k = W_N \cdots W_{k+1}`, :math:`B_k = W_{k-1} \cdots W_1` (docs/math.md §1;
Arora, Cohen & Hazan 2018). One evaluation forms the prefix products
:math:`B_k` once, reads :math:`X = W_N B_N` off them, and reuses them for every
gradient: ``O(N d^2 h)`` per step for width ``h``. The one implementation is
:meth:`dlngeo.DeepLinearNetwork.loss_and_gradients` (the product map's own
module); this is the name gradient descent (:mod:`.overparametrized`) and the
gradient flow (:mod:`.factor_flow`) on the factors call it by.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ..network import DENSE_GRADIENT_FRACTION, DeepLinearNetwork

__all__ = ["factor_loss_and_gradients", "DENSE_GRADIENT_FRACTION"]


def factor_loss_and_gradients(
    network: DeepLinearNetwork,
    weights: list[np.ndarray],
    loss: Any,
    gradient: Callable[[np.ndarray], Any] | None = None,
) -> tuple[np.ndarray, float, list[np.ndarray]]:
    """``(X, E(X), [dL/dW_k])``: the network's own :meth:`~dlngeo.DeepLinearNetwork.loss_and_gradients`.

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
    return network.loss_and_gradients(weights, loss, gradient=gradient)
