r"""ReLU networks without biases, their activation patterns, and the linearised (gated) network.

A depth-``N`` network with activation :math:`\sigma` maps inputs
:math:`A \in \mathbb R^{d_0 \times b}` (one sample per column) to

.. math:: F(W) = W_N\,\sigma(W_{N-1} \cdots \sigma(W_1 A)) \in \mathbb R^{d_N \times b},

with :math:`\sigma(z) = z` for :math:`z > 0` and :math:`a z` otherwise
(``relu``: :math:`a = 0`; ``leaky_relu``: slope :math:`a`). Without biases
:math:`\sigma(z) = g(z)\,z` with the *gate* :math:`g(z) \in \{1, a\}`, so
:math:`\sigma(cz) = c\,\sigma(z)` for :math:`c > 0`: the network is positively
homogeneous. In the *activation region* where every pre-activation
:math:`Z_k = W_k H_{k-1}` keeps its sign, the gates are constant and sample
:math:`i` sees the gated deep linear network

.. math:: F_{:,i} = W_N D_{N-1,i} W_{N-1} \cdots D_{1,i} W_1 A_{:,i},\qquad D_{k,i} = \operatorname{diag} g(Z_{k,:,i}),

exactly, not approximately (Basu, Mukherjee & Vasudevan 2019). Freezing the
gates of one moment gives the *linearised network*; :class:`ReLUNetwork`
evaluates both through one kernel (:meth:`ReLUNetwork.loss_and_gradients`
with or without ``gates``), so they agree bit for bit inside the region.

The symmetry :math:`W_k \to P W_k,\ W_{k+1} \to W_{k+1} P^{-1}` survives the
nonlinearity only for positive diagonal :math:`P`; what the gradient flow
conserves is therefore the diagonal of
:math:`G_k = W_{k+1}^\top W_{k+1} - W_k W_k^\top`: per hidden unit, outgoing
minus incoming squared norm (Du, Hu & Lee 2018), and its trace
:math:`\|W_{k+1}\|_F^2 - \|W_k\|_F^2`.

The loss of a nonlinear network is a loss on its outputs:
:class:`OutputLoss` turns a regression loss :math:`E(X) = \ell(XA)` into
:math:`\ell(F)` on ``d_N x b`` matrices (whitened regression:
:math:`A = I`, ``b = 1``, so :math:`F = f(I)` plays the part of :math:`X`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .losses import Loss
from .network import DeepLinearNetwork
from .validation import check_choice

__all__ = ["ACTIVATIONS", "ReLUNetwork", "OutputLoss", "make_network", "unit_balance"]

#: Activations a network can have (``linear`` is :class:`~dlngeo.DeepLinearNetwork`).
ACTIVATIONS = ("linear", "relu", "leaky_relu")


def make_network(
    dims: Sequence[int], activation: str = "linear", slope: float | None = None
) -> DeepLinearNetwork:
    """``DeepLinearNetwork(dims)`` for ``"linear"``, else ``ReLUNetwork(dims, activation, slope)``.

    Raises:
        ValueError: an unknown ``activation``, or a ``slope`` it does not take.
    """
    check_choice("activation", activation, ACTIVATIONS)
    if activation == "linear":
        if slope is not None:
            raise ValueError("slope: only leaky_relu takes a slope")
        return DeepLinearNetwork(dims)
    return ReLUNetwork(dims, activation, slope)


def _as_list(weights: Sequence[Any]) -> list[np.ndarray]:
    return [np.asarray(W, dtype=float) for W in weights]


class ReLUNetwork(DeepLinearNetwork):
    r"""A bias-free ReLU (or leaky ReLU) network ``x -> W_N s(W_{N-1} ... s(W_1 x))``.

    Shapes, :meth:`imbalance`, :meth:`layer_norms` and the initialization
    samplers are those of :class:`~dlngeo.DeepLinearNetwork`; there is no
    end-to-end matrix (:meth:`product` refuses), the network is evaluated on inputs.

    Args:
        dims: Widths ``(d_0, ..., d_N)``, input first.
        activation: ``"relu"`` or ``"leaky_relu"``.
        slope: The slope ``a`` of ``leaky_relu`` on ``z <= 0`` (finite;
            default 0.01). ``relu`` takes none (``a = 0``).

    Attributes:
        activation: The activation's name.
        slope: ``a``, the gate of a non-positive pre-activation (0 for ``relu``;
            the derivative at 0 is taken as ``a``).
    """

    def __init__(self, dims: Sequence[int], activation: str = "relu", slope: float | None = None):
        super().__init__(dims)
        if activation not in ("relu", "leaky_relu"):
            raise ValueError(f"activation must be 'relu' or 'leaky_relu', got {activation!r}")
        if activation == "relu":
            if slope not in (None, 0, 0.0):
                raise ValueError(f"slope: relu has slope 0, got {slope!r} (use leaky_relu)")
            slope = 0.0
        elif slope is None:
            slope = 0.01
        if isinstance(slope, bool) or not isinstance(slope, (int, float, np.integer, np.floating)):
            raise ValueError(f"slope must be a number, got {slope!r}")
        if not np.isfinite(slope):
            raise ValueError(f"slope must be finite, got {slope!r}")
        self.activation: str = activation
        self.slope: float = float(slope)

    def __repr__(self) -> str:
        extra = f", slope={self.slope}" if self.activation == "leaky_relu" else ""
        return f"ReLUNetwork(dims={self.dims}, activation={self.activation!r}{extra})"

    def product(self, weights: Sequence[Any]) -> np.ndarray:
        raise ValueError(
            f"a {self.activation} network has no end-to-end matrix: use outputs(weights, inputs)"
            " or linearised_matrices(weights, inputs)"
        )

    def gradients(self, weights: Sequence[Any], euclidean_gradient: Any) -> list[np.ndarray]:
        raise ValueError(
            f"a {self.activation} network has no end-to-end matrix: use loss_and_gradients(weights, loss)"
        )

    # ------------------------------------------------------------- kernel
    def _check_inputs(self, inputs: Any) -> np.ndarray:
        A = np.asarray(inputs, dtype=float)
        if A.ndim != 2 or A.shape[0] != self.dims[0]:
            raise ValueError(
                f"inputs must be a {self.dims[0]} x b array (one sample per column), got shape {A.shape}"
            )
        return A

    def _check_gates(self, gates: Any, b: int) -> list[np.ndarray]:
        if len(gates) != self.depth - 1:
            raise ValueError(f"gates must hold {self.depth - 1} arrays, got {len(gates)}")
        out = []
        for k, g in enumerate(gates, start=1):
            g = np.asarray(g, dtype=float)
            if g.shape != (self.dims[k], b):
                raise ValueError(
                    f"gates[{k - 1}] has shape {g.shape}, expected {(self.dims[k], b)}"
                )
            out.append(g)
        return out

    def gate(self, Z: np.ndarray) -> np.ndarray:
        """``g(Z)``: 1 where ``Z > 0``, ``slope`` elsewhere (so ``sigma(Z) = g(Z) * Z``)."""
        return np.where(Z > 0, 1.0, self.slope)

    def forward(
        self, weights: Sequence[Any], inputs: Any, gates: Sequence[Any] | None = None
    ) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
        """``(H, Z, G)``: activations ``H_0 = A, ..., H_N = F``, pre-activations ``Z_1 .. Z_{N-1}``, gates.

        With ``gates`` given (the linearised network) they replace ``g(Z_k)``.
        """
        W = self.check_weights(weights)
        A = self._check_inputs(inputs)
        frozen = None if gates is None else self._check_gates(gates, A.shape[1])
        H, Z, G = [A], [], []
        for k in range(self.depth - 1):
            z = W[k] @ H[-1]
            g = self.gate(z) if frozen is None else frozen[k]
            Z.append(z)
            G.append(g)
            H.append(g * z)
        H.append(W[-1] @ H[-1])
        return H, Z, G

    def outputs(self, weights: Sequence[Any], inputs: Any, gates: Any = None) -> np.ndarray:
        """``F = f(A)`` (``d_N x b``); with ``gates``, the linearised network's outputs."""
        return self.forward(weights, inputs, gates)[0][-1]

    def pre_activations(self, weights: Sequence[Any], inputs: Any) -> list[np.ndarray]:
        """``Z_k = W_k H_{k-1}`` (``d_k x b``) for the hidden layers ``k = 1 .. N-1``."""
        return self.forward(weights, inputs)[1]

    def patterns(self, weights: Sequence[Any], inputs: Any) -> list[np.ndarray]:
        """The activation pattern: boolean ``Z_k > 0`` (``d_k x b``: unit by sample) per hidden layer."""
        return [z > 0 for z in self.pre_activations(weights, inputs)]

    def gates(self, weights: Sequence[Any], inputs: Any) -> list[np.ndarray]:
        """The gates ``g(Z_k)`` now: freeze them to get the linearised network."""
        return self.forward(weights, inputs)[2]

    def loss_and_gradients(
        self, weights: Sequence[Any], loss: Any, gates: Any = None, gradient: Any = None
    ) -> tuple[np.ndarray, float, list[np.ndarray]]:
        r"""``(F, l(F), [dL/dW_k])`` by backpropagation through the gates.

        :math:`\Delta_N = \ell'(F)`, :math:`\partial_k L = \Delta_k H_{k-1}^\top`,
        :math:`\Delta_{k} = G_k \circ (W_{k+1}^\top \Delta_{k+1})`; the derivative
        of :math:`\sigma` at 0 is taken as the slope ``a``.

        Args:
            weights: ``W_1 .. W_N``.
            loss: An :class:`OutputLoss` (its ``inputs`` are ``A``).
            gates: Frozen gates (the linearised network), or ``None``.
            gradient: Optional replacement of ``loss.gradient`` (a stochastic estimate).
        """
        W = self.check_weights(weights)
        if not isinstance(loss, OutputLoss):
            raise ValueError(
                f"loss must be an OutputLoss (a loss on the network's outputs), got {type(loss).__name__}"
            )
        H, _, G = self.forward(W, loss.inputs, gates)
        F = H[-1]
        if gradient is None:
            value, delta = loss.value_and_gradient(F)
        else:
            value, delta = loss.value(F), np.asarray(gradient(F), dtype=float)
        grads: list[Any] = [None] * self.depth
        for k in range(self.depth - 1, -1, -1):
            grads[k] = delta @ H[k].T
            if k:
                delta = G[k - 1] * (W[k].T @ delta)
        return F, float(value), grads

    def linearised_matrices(self, weights: Sequence[Any], gates: Sequence[Any]) -> np.ndarray:
        """Per-sample end-to-end matrices ``X_i = W_N D_{N-1,i} ... D_{1,i} W_1`` (``b x d_N x d_0``)."""
        W = self.check_weights(weights)
        b = np.asarray(gates[0]).shape[1] if len(gates) else 1
        frozen = self._check_gates(gates, b)
        X = np.broadcast_to(W[0], (b, *W[0].shape))
        for k in range(1, self.depth):
            X = W[k] @ (frozen[k - 1].T[:, :, None] * X)
        return np.array(X)


def unit_balance(weights: Sequence[Any]) -> list[np.ndarray]:
    r"""Per-unit balance :math:`\|W_k[j,:]\|^2 - \|W_{k+1}[:,j]\|^2` of each hidden unit ``j`` of layer ``k``.

    Incoming minus outgoing squared norm: minus the diagonal of ``G_k``;
    conserved by the gradient flow of any bias-free ReLU network (Du, Hu & Lee 2018).
    """
    W = _as_list(weights)
    return [np.sum(W[k] ** 2, axis=1) - np.sum(W[k + 1] ** 2, axis=0) for k in range(len(W) - 1)]


class OutputLoss(Loss):
    r"""A regression loss :math:`E(X) = \ell(XA)` read as :math:`\ell(F)` on the outputs ``F`` (``m x b``).

    Args:
        loss: A loss with inputs ``A`` (``n x b``) and an ``output_value_and_gradient(F)``
            method (the built-in ``regression`` and ``lp_regression``); whitened
            (``A = None``): the inputs are ``I_n``.

    Attributes:
        inputs: ``A`` (``n x b``).
        base: The wrapped loss.
        shape: ``(m, b)``.
    """

    def __init__(self, loss: Any):
        if not callable(getattr(loss, "output_value_and_gradient", None)):
            raise ValueError(
                f"loss {getattr(loss, 'name', type(loss).__name__)!r} has no loss on the network's"
                " outputs (output_value_and_gradient); a nonlinear network needs regression or lp_regression"
            )
        self.base = loss
        self.name = getattr(loss, "name", "loss")
        m, n = loss.shape
        A = getattr(loss, "A", None)
        self.inputs = np.eye(n) if A is None else np.asarray(A, dtype=float)
        self.shape = (m, self.inputs.shape[1])

    def value_and_gradient(self, F: Any) -> tuple[float, np.ndarray]:
        self.check_point(F)
        value, grad = self.base.output_value_and_gradient(np.asarray(F, dtype=float))
        return float(value), grad

    def value(self, F: Any) -> float:
        return self.value_and_gradient(F)[0]

    def gradient(self, F: Any) -> np.ndarray:
        return self.value_and_gradient(F)[1]

    def hessian_vector_product(self, F: Any, Z: Any) -> Any:
        self.check_point(F)
        return self.base.output_hessian_vector_product(np.asarray(F, dtype=float), Z)
