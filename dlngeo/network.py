r"""The deep linear network: the product map, its gradients and its invariants.

A depth-``N`` network with widths ``d_0`` (input) ... ``d_N`` (output) has
weights :math:`W_k \in \mathbb R^{d_k \times d_{k-1}}` and end-to-end matrix

.. math:: \phi(W) = W_N W_{N-1} \cdots W_1 \in \mathbb R^{m \times n},\quad m = d_N,\ n = d_0.

For a loss :math:`L(W) = E(\phi(W))` (Arora, Cohen & Hazan 2018; Saxe et al. 2014 eq. 13),

.. math:: \partial L / \partial W_k = (W_N \cdots W_{k+1})^\top E'(X) (W_{k-1} \cdots W_1)^\top,

and under gradient flow the imbalances
:math:`G_k = W_{k+1}^\top W_{k+1} - W_k W_k^\top` are conserved (Arora, Cohen &
Hazan 2018; Du, Hu & Lee 2018). The balanced factorization
:math:`W_k = Q_k \Sigma^{1/N} Q_{k-1}^\top` (docs/math.md §2) has :math:`G_k = 0`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp

from .lowrank import Factored, ambient_matmul, ambient_rmatmul, is_lowrank_point, to_dense
from .validation import integer_between, positive_integers

__all__ = ["DeepLinearNetwork", "haar_stiefel", "DENSE_GRADIENT_FRACTION"]

#: A sparse ``E'(X)`` storing at least this fraction of its entries is made dense.
#:
#: The factor gradients need the dense ``X`` anyway (``O(N m n h)``), so the
#: ``O(mn)`` conversion never changes the order of their cost; the products
#: with the factors then run at BLAS speed. A CSR product costs several times a
#: dense one per stored entry plus a fixed overhead of tens of microseconds per
#: call (measured: dense and CSR products break even near density 1/8 at
#: ``300 x 300``; at ``30 x 30`` the dense ones are 5x faster whatever the density).
DENSE_GRADIENT_FRACTION = 0.125


def _as_ambient(G: Any) -> Any:
    """``E'(X)`` as the type the factor gradients multiply: dense, CSR (if sparse enough) or :class:`Factored`."""
    if sp.issparse(G):
        m, n = G.shape
        return G.toarray() if G.nnz >= DENSE_GRADIENT_FRACTION * m * n else G.tocsr()
    if isinstance(G, Factored):
        return G
    return np.asarray(G, dtype=float)


def haar_stiefel(rng: np.random.Generator, rows: int, cols: int) -> np.ndarray:
    """A Haar-random ``rows x cols`` partial isometry: orthonormal columns (``rows >= cols``) or rows."""
    big, small = max(rows, cols), min(rows, cols)
    q, R = np.linalg.qr(rng.standard_normal((big, small)))
    q = q * np.sign(np.where(np.diag(R) == 0, 1.0, np.diag(R)))
    return q if rows >= cols else q.T


class DeepLinearNetwork:
    """A deep linear network ``x -> W_N ... W_1 x``.

    Args:
        dims: Widths ``(d_0, ..., d_N)``, input first; at least two entries,
            positive integers. Any hidden width (bottlenecks allowed).

    Attributes:
        depth: ``N``, the number of weight matrices.
        dims: The widths as a tuple.
        shapes: ``[(d_1, d_0), ..., (d_N, d_{N-1})]``, the shapes of ``W_1 .. W_N``.
        rank_bound: ``min(dims)``, the largest rank the product can have.
        activation: ``"linear"`` (:class:`~dlngeo.relu.ReLUNetwork` overrides it).
    """

    activation: str = "linear"

    def __init__(self, dims: Sequence[int]):
        try:
            dims = tuple(dims)
        except TypeError:
            raise ValueError(f"dims must be a sequence of widths, got {dims!r}") from None
        if len(dims) < 2:
            raise ValueError(
                f"dims must have at least 2 entries (input and output width), got {dims!r}"
            )
        self.dims: tuple[int, ...] = tuple(positive_integers(dims, "dims"))
        self.depth: int = len(self.dims) - 1
        self.shapes: list[tuple[int, int]] = [
            (self.dims[k + 1], self.dims[k]) for k in range(self.depth)
        ]
        self.rank_bound: int = min(self.dims)

    def __repr__(self) -> str:
        return f"DeepLinearNetwork(dims={self.dims})"

    @property
    def output_shape(self) -> tuple[int, int]:
        """Shape ``(m, n) = (d_N, d_0)`` of the end-to-end matrix."""
        return (self.dims[-1], self.dims[0])

    # ------------------------------------------------------------------ checks
    def check_weights(self, weights: Sequence[Any]) -> list[np.ndarray]:
        """Return the weights as float arrays, or raise ``ValueError`` naming ``weights``."""
        if not hasattr(weights, "__len__"):
            raise ValueError(
                f"weights must be a sequence of {self.depth} matrices, got {type(weights).__name__}"
            )
        if len(weights) != self.depth:
            raise ValueError(f"weights must have {self.depth} matrices, got {len(weights)}")
        out = []
        for k, (W, shape) in enumerate(zip(weights, self.shapes), start=1):
            W = np.asarray(W, dtype=float)
            if W.shape != shape:
                raise ValueError(f"weights[{k - 1}] (W_{k}) has shape {W.shape}, expected {shape}")
            out.append(W)
        return out

    # --------------------------------------------------------------- products
    def product(self, weights: Sequence[Any]) -> np.ndarray:
        """The end-to-end matrix ``phi(W) = W_N ... W_1``."""
        weights = self.check_weights(weights)
        X = weights[0].copy() if self.depth == 1 else weights[0]
        for W in weights[1:]:
            X = W @ X
        return X

    def _prefix_suffix(
        self, weights: list[np.ndarray]
    ) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """``B_k = W_{k-1}..W_1`` (None for k = 1) and ``A_k = W_N..W_{k+1}`` (None for k = N)."""
        n = self.depth
        prefix: list[Any] = [None] * n
        for k in range(1, n):
            prefix[k] = weights[k - 1] if prefix[k - 1] is None else weights[k - 1] @ prefix[k - 1]
        suffix: list[Any] = [None] * n
        for k in range(n - 2, -1, -1):
            suffix[k] = weights[k + 1] if suffix[k + 1] is None else suffix[k + 1] @ weights[k + 1]
        return prefix, suffix

    def gradients(self, weights: Sequence[Any], euclidean_gradient: Any) -> list[np.ndarray]:
        """``dL/dW_k = A_k^T E'(X) B_k^T`` for all ``k``, given ``E'(X)``.

        Args:
            weights: ``W_1 .. W_N``.
            euclidean_gradient: ``E'(X)`` as a dense array, scipy.sparse matrix,
                or :class:`~dlngeo.lowrank.Factored` matrix of shape ``(d_N, d_0)``.
        """
        weights = self.check_weights(weights)
        G = euclidean_gradient
        shape = G.shape if hasattr(G, "shape") else None
        if shape is None or tuple(shape) != self.output_shape:
            raise ValueError(f"euclidean_gradient has shape {shape}, expected {self.output_shape}")
        prefix, suffix = self._prefix_suffix(weights)
        return self._factor_gradients(prefix, suffix, _as_ambient(G))

    def loss_and_gradients(
        self, weights: list[np.ndarray], loss: Any, *, gradient: Any = None
    ) -> tuple[np.ndarray, float, list[np.ndarray]]:
        """``(X, E(X), [dL/dW_k])``, the prefix products shared by ``X`` and every gradient.

        One evaluation forms ``B_k = W_{k-1} .. W_1`` once and reads
        ``X = W_N B_N`` off them: ``O(N d^2 h)`` for width ``h``. ``weights``
        are taken as checked float arrays (the training loops' own);
        ``gradient``: an optional replacement for ``loss.gradient`` (a
        stochastic estimate), the value being the exact one.
        """
        prefix, suffix = self._prefix_suffix(weights)
        X = weights[-1] if prefix[-1] is None else weights[-1] @ prefix[-1]
        if gradient is None:
            value, G = loss.value_and_gradient(X)
        else:
            value, G = loss.value(X), gradient(X)
        return X, float(value), self._factor_gradients(prefix, suffix, _as_ambient(G))

    @staticmethod
    def _factor_gradients(prefix: list[Any], suffix: list[Any], G: Any) -> list[np.ndarray]:
        """``A_k^T G B_k^T`` for every ``k`` (``G`` from :func:`_as_ambient`)."""
        grads = []
        if isinstance(G, np.ndarray):  # the common dense case, without the type dispatch
            for B, A in zip(prefix, suffix):
                GB = G if B is None else G @ B.T
                grads.append(
                    GB.copy() if A is None and B is None else GB if A is None else A.T @ GB
                )
            return grads
        for B, A in zip(prefix, suffix):
            if B is None:
                grads.append(np.array(to_dense(G)) if A is None else ambient_rmatmul(G, A).T)
            else:
                GB = ambient_matmul(G, B.T)  # E'(X) B_k^T
                grads.append(GB if A is None else A.T @ GB)
        return grads

    def imbalance(self, weights: Sequence[Any]) -> list[np.ndarray]:
        """The ``N - 1`` matrices ``G_k = W_{k+1}^T W_{k+1} - W_k W_k^T`` (``d_k x d_k``)."""
        weights = self.check_weights(weights)
        return [
            weights[k + 1].T @ weights[k + 1] - weights[k] @ weights[k].T
            for k in range(self.depth - 1)
        ]

    def relative_imbalance(self, weights: Sequence[Any]) -> float:
        """The largest imbalance relative to the layers it compares, a number in ``[0, 1]``.

        .. math::

            \\delta = \\max_k \\frac{\\|W_{k+1}^T W_{k+1} - W_k W_k^T\\|_F}
                                 {\\|W_{k+1}^T W_{k+1}\\|_F + \\|W_k W_k^T\\|_F}

        ``0`` exactly on the balanced manifold, where ``phi(W(t))`` follows the
        intrinsic flow (Arora, Cohen & Hazan 2018); at most ``1`` by the
        triangle inequality; about ``1/2`` for independent Gaussian square
        layers; a balanced factorization computed in floating point is at the
        rounding level. ``0`` for one layer (``phi = W_1``) and for zero layers.
        """
        weights = self.check_weights(weights)
        worst = 0.0
        for k in range(self.depth - 1):
            upper = weights[k + 1].T @ weights[k + 1]
            lower = weights[k] @ weights[k].T
            scale = float(np.linalg.norm(upper) + np.linalg.norm(lower))
            if scale > 0:
                worst = max(worst, float(np.linalg.norm(upper - lower)) / scale)
        return worst

    def layer_norms(self, weights: Sequence[Any]) -> np.ndarray:
        """Frobenius norms ``||W_k||_F``, ``k = 1 .. N``."""
        return np.array([np.linalg.norm(W) for W in self.check_weights(weights)])

    # ------------------------------------------------------------- balanced
    def balanced(
        self, X: Any, rng: np.random.Generator | int | None = None, rank: int | None = None
    ) -> list[np.ndarray]:
        """A balanced factorization ``W_k = Q_k diag(s)^{1/N} Q_{k-1}^T`` of ``X``.

        ``Q_0 = V``, ``Q_N = U`` from the thin SVD of ``X``; the hidden ``Q_k``
        are Haar-random ``d_k x r`` Stiefel matrices drawn from ``rng``. Then
        ``phi(W) = X`` and every ``G_k = 0`` (docs/math.md §2).

        Args:
            X: The ``(d_N, d_0)`` end-to-end matrix (dense or ``(u, s, vt)``), finite.
            rng: ``numpy.random.Generator`` or seed for the hidden frames.
            rank: The rank to factor at; default: the numerical rank of ``X``.

        Raises:
            ValueError: ``X`` has the wrong shape, is not finite, or its rank
                exceeds the narrowest width.
        """
        rng = np.random.default_rng(rng)
        if is_lowrank_point(X):
            u, s, vt = (np.asarray(a, dtype=float) for a in X)
        else:
            Xd = np.asarray(X, dtype=float)
            if Xd.shape != self.output_shape:
                raise ValueError(f"X has shape {Xd.shape}, expected {self.output_shape}")
            if not np.all(np.isfinite(Xd)):
                raise ValueError("X must be finite")
            u, s, vt = np.linalg.svd(Xd, full_matrices=False)
        if not np.all(np.isfinite(s)):
            raise ValueError("X must be finite")
        if rank is None:
            tol = max(self.output_shape) * np.finfo(float).eps * (s.max() if s.size else 0.0)
            rank = int(np.sum(s > tol))
        else:
            rank = integer_between(rank, "rank", 0, s.size)
        if rank > self.rank_bound:
            raise ValueError(
                f"X has rank {rank}, above the narrowest width {self.rank_bound} of dims {self.dims}"
            )
        u, s, vt = u[:, :rank], s[:rank], vt[:rank]
        root = s ** (1.0 / self.depth)
        frames = [vt.T] + [haar_stiefel(rng, d, rank) for d in self.dims[1:-1]] + [u]
        return [(frames[k + 1] * root) @ frames[k].T for k in range(self.depth)]
