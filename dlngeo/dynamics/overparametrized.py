r"""Training the factors: gradient descent and the gradient flow of :math:`L(W) = E(W_N \cdots W_1)`.

The factor gradients are :math:`\partial L/\partial W_k = A_k^\top E'(X) B_k^\top` with
:math:`A_k = W_N \cdots W_{k+1}`, :math:`B_k = W_{k-1} \cdots W_1` (docs/math.md §1;
Arora, Cohen & Hazan 2018). One evaluation forms the prefix products
:math:`B_k` once, reads :math:`X = W_N B_N` off them, and reuses them for every
gradient: ``O(N d^2 h)`` per step for width ``h``.

* :class:`OverparametrizedGD`: :math:`W_{k+1} = W_k - \eta \nabla L(W_k)`; flow
  time :math:`t = \eta k`. Optional stochasticity: a ``gradient_sampler``
  (mini-batch estimate of :math:`E'(X)`) and additive Gaussian noise
  ``noise`` (Euler–Maruyama of :math:`dW = -\nabla L\,dt + \sigma\,dB`:
  :math:`+\sigma\sqrt{\eta}\,\xi`).
* :class:`OverparametrizedFlow` (in :mod:`.factor_flow`, re-exported here):
  :math:`\dot W = -\nabla L(W)` integrated by one of ``scipy.integrate``'s ODE
  solvers; the shared gradient evaluation is
  :func:`~.factor_gradients.factor_loss_and_gradients`.

From a balanced start the end-to-end matrix of the flow follows the
intrinsic flow :math:`\dot X = -A_{N,X}(E'(X))` exactly (Arora, Cohen & Hazan
2018, Theorem 1); gradient descent tracks the flow with an :math:`O(\eta)`
error on bounded time intervals.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
import scipy.sparse as sp

from ..validation import positive_integer
from .base import Callback, Method, Stopping, Task
from .driver import (
    NumericalFailure,
    Stepper,
    check_nonnegative,
    check_positive,
    check_record_options,
    drive_method,
)
from .factor_flow import (  # re-exported: the flow's historical import path
    ODE_INTEGRATORS,
    OverparametrizedFlow,
)
from .factor_gradients import factor_loss_and_gradients
from .record import Record

__all__ = [
    "GradientSampler",
    "EntryMinibatch",
    "factor_loss_and_gradients",
    "OverparametrizedGD",
    "OverparametrizedFlow",
    "ODE_INTEGRATORS",
]


class GradientSampler(Protocol):
    """A stochastic estimate of :math:`E'(X)` (mini-batch), for SGD.

    ``sampler(loss, X, rng)`` returns an ambient gradient estimate (dense,
    sparse or factored) of the loss at the dense matrix ``X``, drawing from
    the ``numpy.random.Generator`` ``rng``.
    """

    def __call__(self, loss: Any, X: np.ndarray, rng: np.random.Generator) -> Any: ...


class EntryMinibatch:
    r"""Mini-batch gradient for losses with a sparse gradient (matrix completion): unbiased entry sampling.

    Draws ``batch_size`` of the gradient's stored entries uniformly without
    replacement and rescales them by ``nnz / batch_size``, so that
    :math:`\mathbb E[\hat G] = E'(X)`. With ``batch_size >= nnz`` it returns
    the full gradient. (The full sparse gradient is computed first: the
    sampler changes the noise of the dynamics, not the cost of a step.)
    """

    def __init__(self, batch_size: int):
        self.batch_size = positive_integer(batch_size, "batch_size")

    def __call__(self, loss: Any, X: np.ndarray, rng: np.random.Generator) -> Any:
        G = loss.gradient(X)
        if not sp.issparse(G):
            raise ValueError(
                f"batch_size needs a loss with a sparse gradient (matrix completion); {getattr(loss, 'name', 'the loss')!r} has a dense one"
            )
        G = sp.coo_matrix(G)
        nnz = G.nnz
        if self.batch_size >= nnz:
            return G.tocsr()
        keep = rng.choice(nnz, size=self.batch_size, replace=False)
        scale = nnz / self.batch_size
        return sp.csr_matrix((G.data[keep] * scale, (G.row[keep], G.col[keep])), shape=G.shape)


# ---------------------------------------------------------------------- GD
class _FactorGDStepper(Stepper):
    gradient_norm: float  # set by _evaluate at every point
    #: False for an adaptive rule (:meth:`step_size` overridden): the flow time is then the sum of the steps.
    constant_step = True

    def __init__(
        self, task: Task, step: float, sampler: Any, noise: float, rng: np.random.Generator
    ):
        self.task, self.eta, self.sampler, self.noise, self.rng = task, step, sampler, noise, rng
        # With noise it samples (Euler–Maruyama): its gradient never settles, no stationary stop.
        self.stationary_floor = 0.0 if noise == 0 else None
        self.W = [w.copy() for w in task.initial_weights()]
        self.X = task.point(self.W)
        self.counts = {"loss": 0, "gradient": 0}

    def _evaluate(self) -> None:
        gradient = None
        if self.sampler is not None:
            gradient = lambda X: self.sampler(self.task.loss, X, self.rng)  # noqa: E731
        try:
            self.X, self.loss, self.grads = factor_loss_and_gradients(
                self.task.network, self.W, self.task.loss, gradient
            )
        except (ValueError, FloatingPointError, np.linalg.LinAlgError):
            if all(np.all(np.isfinite(w)) for w in self.W):
                raise
            raise NumericalFailure("non-finite factors") from None
        self.counts["loss"] += 1
        self.counts["gradient"] += 1
        # sum_k ||dL/dW_k||^2, kept for a step rule that needs it (GroupRMSprop).
        self.gradient_square = float(sum(np.vdot(g, g) for g in self.grads))
        self.gradient_norm = float(np.sqrt(self.gradient_square))
        if not (np.isfinite(self.loss) and np.isfinite(self.gradient_norm)):
            raise NumericalFailure("non-finite loss or gradient")

    def start(self) -> None:
        self._evaluate()

    def step_size(self) -> float:
        """The step ``eta_k`` of this iteration (constant here; an adaptive rule overrides it)."""
        return self.eta

    def step(self) -> None:
        eta = self.step_size()
        for W, g in zip(self.W, self.grads):
            W -= eta * g
        if self.noise > 0:
            scale = self.noise * np.sqrt(eta)
            for W in self.W:
                W += scale * self.rng.standard_normal(W.shape)
        self.step_norm = eta * self.gradient_norm
        self.iteration += 1
        # Flow time: eta * k for the constant step (exact), else the sum of the steps taken.
        self.t = eta * self.iteration if self.constant_step else self.t + eta
        self._evaluate()

    def point(self) -> np.ndarray:
        return self.X

    def weights(self) -> list[np.ndarray]:
        return [w.copy() for w in self.W]


class OverparametrizedGD(Method):
    """Gradient descent on the factors with a constant step (DLN training); SGD with a sampler.

    Args:
        step: The step ``eta > 0``. Flow time of iterate ``k`` is ``eta * k``.
        gradient_sampler: Optional :class:`GradientSampler` (mini-batch gradient).
        batch_size: Shorthand for ``gradient_sampler=EntryMinibatch(batch_size)``
            (losses with a sparse gradient, e.g. matrix completion).
        noise: Standard deviation ``sigma >= 0`` of additive Gaussian noise per unit
            time: each step adds ``sigma * sqrt(eta) * N(0, I)`` to every factor.
            With noise the method samples and never stops ``stationary``.
        seed: Seed of the generator for the sampler and the noise (default: the task's seed).
        record_every: Record every ``k``-th iterate.
        record_times: Record the first iterate at or after each of these flow times instead.
    """

    name = "overparametrized_gd"
    flow_time = True
    follows = "overparametrized"
    step_option = "step"
    overparametrized = True
    supports_activation = True

    def __init__(
        self,
        step: float = 1e-2,
        *,
        gradient_sampler: GradientSampler | None = None,
        batch_size: int | None = None,
        noise: float = 0.0,
        seed: int | None = None,
        record_every: int = 1,
        record_times: Any = None,
    ):
        self.step = check_positive("step", step)
        if gradient_sampler is not None and not callable(gradient_sampler):
            raise ValueError("gradient_sampler must be callable as sampler(loss, X, rng)")
        if batch_size is not None:
            if gradient_sampler is not None:
                raise ValueError("batch_size: give either batch_size or gradient_sampler, not both")
            gradient_sampler = EntryMinibatch(batch_size)
        self.batch_size = batch_size
        self.gradient_sampler = gradient_sampler
        self.noise = check_nonnegative("noise", noise)
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))):
            raise ValueError(f"seed must be an integer, got {seed!r}")
        self.seed = seed
        self.record_every, self.record_times = check_record_options(record_every, record_times)

    def run(
        self, task: Task, stopping: Stopping | None = None, callback: Callback | None = None
    ) -> Record:
        rng = np.random.default_rng(task.seed if self.seed is None else self.seed)
        stepper = self._stepper(task, rng)
        return drive_method(self, task, stepper, stopping, callback, info=self._info())

    def _stepper(self, task: Task, rng: np.random.Generator) -> Stepper:
        return _FactorGDStepper(task, self.step, self.gradient_sampler, self.noise, rng)

    def _info(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "noise": self.noise,
            "batch_size": self.batch_size,
            "time": "t = step * iteration",
        }
