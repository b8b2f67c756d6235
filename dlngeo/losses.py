"""The Loss protocol: an energy E on m x n matrices, its ambient gradient and Hessian.

Every loss in dlngeo, built in or from a plugin, gives

* ``value(X)``: :math:`E(X)`;
* ``gradient(X)``: the ambient Euclidean gradient :math:`E'(X)`, a dense
  ``m x n`` array or a scipy.sparse matrix (never a derivative with respect
  to SVD factors: those are NaN at repeated singular values);
* ``hessian_vector_product(X, Z)``: :math:`D E'(X)[Z]`, for trust regions.

``X`` is a dense array or a low-rank point ``(u, s, vt)``; ``Z`` is a dense
array or a :class:`~dlngeo.lowrank.Factored` matrix. A loss that can work on
factors (matrix completion does, in ``O(|Omega| r)``) never forms ``m x n``.

:class:`Loss` is the base class plugins subclass; :func:`loss_from_autograd`
turns any autograd-differentiable function of ``X`` into one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from .lowrank import point_shape, to_dense

__all__ = [
    "Loss",
    "AutogradLoss",
    "loss_from_autograd",
    "as_loss",
    "finite_array",
    "check_observations",
    "TangentLinearization",
]


class TangentLinearization(NamedTuple):
    r"""A least-squares loss :math:`E(X) = w\,\|r(X)\|^2` linearized on the tangent space at ``(u, s, vt)``.

    Losses whose residual is linear in ``X`` (matrix completion, matrix
    sensing) offer ``tangent_linearization(point)`` (the dense Jacobian for
    tests and small problems); the Riemannian Levenberg–Marquardt solver uses
    their ``linear_measurements()`` (:mod:`dlngeo.measurements`).

    Attributes:
        residual: :math:`r(X)`, length ``k``.
        jacobian: ``k x (m + n) r`` (dense or scipy.sparse): :math:`r(X + \xi) = r(X) + J c`
            for the tangent vector :math:`\xi = A v^\top + u B^\top`,
            ``c = concatenate(A.ravel(), B.ravel())``.
        blocks: ``(m + n, r, r)``: the diagonal ``r x r`` blocks of :math:`J^\top J`
            (rows of ``A``, then rows of ``B``), for a block-Jacobi preconditioner.
        weight: :math:`w`.
    """

    residual: np.ndarray
    jacobian: Any
    blocks: np.ndarray
    weight: float


class Loss:
    """Base class of energies on ``m x n`` matrices.

    Subclasses implement :meth:`value` and :meth:`gradient`, and
    :meth:`hessian_vector_product` where they can (the default is a central
    finite difference of the gradient, documented as such).

    Attributes:
        name: Registry name of the loss.
        shape: ``(m, n)`` of the matrices it acts on, or ``None`` if any.
    """

    name: str = "loss"
    shape: tuple[int, int] | None = None

    def value(self, X: Any) -> float:  # pragma: no cover - abstract
        raise NotImplementedError

    def gradient(self, X: Any) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def hessian_vector_product(self, X: Any, Z: Any) -> Any:
        """``D E'(X)[Z]`` by a central difference of the gradient (step ``1e-6`` relative)."""
        Xd, Zd = to_dense(X), to_dense(Z)
        h = 1e-6 * max(1.0, float(np.linalg.norm(Xd))) / max(float(np.linalg.norm(Zd)), 1e-300)
        return (to_dense(self.gradient(Xd + h * Zd)) - to_dense(self.gradient(Xd - h * Zd))) / (
            2 * h
        )

    def value_and_gradient(self, X: Any) -> tuple[float, Any]:
        """Both at once; losses that share work override this."""
        return self.value(X), self.gradient(X)

    def check_point(self, X: Any) -> None:
        """Raise ``ValueError`` naming ``X`` if its shape does not match ``shape``."""
        if self.shape is not None and tuple(point_shape(X)) != tuple(self.shape):
            raise ValueError(
                f"X has shape {tuple(point_shape(X))}, loss {self.name!r} expects {self.shape}"
            )

    def __call__(self, X: Any) -> float:
        return self.value(X)


class AutogradLoss(Loss):
    """A loss given by an autograd-differentiable function of the dense matrix ``X``."""

    def __init__(
        self,
        fn: Callable[[Any], Any],
        shape: tuple[int, int] | None = None,
        name: str | None = None,
    ):
        import autograd

        if not callable(fn):
            raise ValueError("fn must be callable")
        self.fn = fn
        self.shape = None if shape is None else (int(shape[0]), int(shape[1]))
        self.name = str(name or getattr(fn, "__name__", "autograd"))
        self._grad = autograd.grad(fn)
        self._hvp = autograd.hessian_tensor_product(fn)

    def value(self, X: Any) -> float:
        self.check_point(X)
        return float(self.fn(to_dense(X)))

    def gradient(self, X: Any) -> np.ndarray:
        self.check_point(X)
        return np.asarray(self._grad(to_dense(X)), dtype=float)

    def hessian_vector_product(self, X: Any, Z: Any) -> np.ndarray:
        self.check_point(X)
        return np.asarray(self._hvp(to_dense(X), to_dense(Z)), dtype=float)


def loss_from_autograd(
    fn: Callable[[Any], Any], shape: tuple[int, int] | None = None, name: str | None = None
) -> AutogradLoss:
    """Wrap an autograd-differentiable ``fn(X) -> scalar`` as a :class:`Loss`.

    Gradient and Hessian-vector product come from autograd
    (``autograd.grad`` and ``autograd.hessian_tensor_product``). Use
    ``autograd.numpy`` inside ``fn``.
    """
    return AutogradLoss(fn, shape=shape, name=name)


def as_loss(cost: Any) -> Loss:
    """A :class:`Loss` as it is, or a plain callable wrapped by :func:`loss_from_autograd`."""
    if isinstance(cost, Loss):
        return cost
    if all(hasattr(cost, a) for a in ("value", "gradient")):
        return cost  # duck-typed loss
    if callable(cost):
        return loss_from_autograd(cost)
    raise ValueError(f"cost must be a Loss or a callable of X, got {type(cost).__name__}")


# ------------------------------------------------------------- validation
def finite_array(value: Any, field: str, ndim: int | None = None) -> np.ndarray:
    """``value`` as a float array, or ``ValueError`` naming ``field`` (wrong ``ndim``, NaN or inf)."""
    try:
        array = np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        raise ValueError(f"{field} must be an array of numbers") from None
    if ndim is not None and array.ndim != ndim:
        raise ValueError(f"{field} must be {ndim}-dimensional, got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{field} must be finite (found NaN or inf)")
    return array


def _index_array(value: Any, field: str) -> np.ndarray:
    array = np.asarray(value)
    if array.ndim != 1:
        raise ValueError(f"{field} must be 1-dimensional, got shape {array.shape}")
    if array.size and not np.issubdtype(array.dtype, np.integer):
        if not (
            np.issubdtype(array.dtype, np.floating)
            and np.all(np.isfinite(array))
            and np.all(array == np.round(array))
        ):
            raise ValueError(f"{field} must hold integer indices")
    return array.astype(np.int64)


def check_observations(
    rows: Any, cols: Any, values: Any, shape: Any
) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[int, int]]:
    """Validate an observed set ``Omega`` of a matrix-completion problem.

    Returns ``(rows, cols, values, (m, n))`` as int64, int64, float arrays.

    Raises:
        ValueError: naming ``shape`` (not two positive integers), ``rows`` /
            ``cols`` (not 1-D integers, out of range, a duplicated index pair,
            empty), or ``values`` (length mismatch, NaN or inf).
    """
    try:
        m, n = (int(d) for d in shape)
        ok = all(float(d) == int(d) for d in shape)
    except (TypeError, ValueError):
        raise ValueError(f"shape must be two positive integers (m, n), got {shape!r}") from None
    if not ok or m < 1 or n < 1:
        raise ValueError(f"shape must be two positive integers (m, n), got {shape!r}")
    rows, cols = _index_array(rows, "rows"), _index_array(cols, "cols")
    values = finite_array(values, "values", ndim=1)
    if rows.size == 0:
        raise ValueError("rows must not be empty (no observed entries)")
    if cols.size != rows.size:
        raise ValueError(f"cols has {cols.size} entries, rows has {rows.size}")
    if values.size != rows.size:
        raise ValueError(f"values has {values.size} entries, rows has {rows.size}")
    for field, idx, bound in (("rows", rows, m), ("cols", cols, n)):
        bad = np.flatnonzero((idx < 0) | (idx >= bound))
        if bad.size:
            raise ValueError(
                f"{field}[{bad[0]}] = {idx[bad[0]]} is out of range for shape {(m, n)}"
            )
    linear = np.sort(rows * n + cols)
    dup = np.flatnonzero(linear[1:] == linear[:-1])
    if dup.size:
        i, j = divmod(int(linear[dup[0]]), n)
        raise ValueError(f"rows/cols: the index pair ({i}, {j}) is observed more than once")
    return rows, cols, values, (m, n)
