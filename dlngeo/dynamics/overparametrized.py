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
* :class:`OverparametrizedFlow`: :math:`\dot W = -\nabla L(W)` integrated by
  one of ``scipy.integrate``'s ODE solvers (the classes ``solve_ivp`` uses:
  ``RK45``, ``DOP853``, ``RK23``, ``Radau``, ``BDF``, ``LSODA``), stepped one
  accepted step at a time so that stopping is checked after every step; flow
  time is the ODE time, and ``record_times`` are evaluated with the
  solver's dense output.

From a balanced start the end-to-end matrix of the flow follows the
intrinsic flow :math:`\dot X = -A_{N,X}(E'(X))` exactly (Arora, Cohen & Hazan
2018, Theorem 1); gradient descent tracks the flow with an :math:`O(\eta)`
error on bounded time intervals.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import numpy as np
import scipy.sparse as sp

from ..lowrank import Factored, ambient_matmul, ambient_rmatmul, to_dense
from ..network import DeepLinearNetwork
from .base import Callback, Method, Stopping, Task
from .driver import (
    NumericalFailure,
    ScipyODEStepper,
    Stepper,
    check_choice,
    check_nonnegative,
    check_positive,
    check_record_options,
    drive,
)
from .record import Record

__all__ = [
    "GradientSampler",
    "EntryMinibatch",
    "factor_loss_and_gradients",
    "OverparametrizedGD",
    "OverparametrizedFlow",
    "ODE_INTEGRATORS",
]

#: ``scipy.integrate`` solver classes accepted as ``integrator``.
ODE_INTEGRATORS = ("RK45", "DOP853", "RK23", "Radau", "BDF", "LSODA")


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
        if (
            isinstance(batch_size, bool)
            or not isinstance(batch_size, (int, np.integer))
            or batch_size < 1
        ):
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.batch_size = int(batch_size)

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


def _as_ambient(G: Any) -> Any:
    if sp.issparse(G):
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
    for B, A in zip(prefix, suffix):
        if B is None:
            grads.append(to_dense(G) if A is None else ambient_rmatmul(G, A).T)
        else:
            GB = ambient_matmul(G, B.T)
            grads.append(GB if A is None else A.T @ GB)
    return X, float(value), grads


def _grad_norm(grads: list[np.ndarray]) -> float:
    return float(np.sqrt(sum(float(np.vdot(g, g)) for g in grads)))


# ---------------------------------------------------------------------- GD
class _FactorGDStepper(Stepper):
    gradient_norm: float  # set by _evaluate at every point

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
        self.gradient_norm = _grad_norm(self.grads)
        if not (np.isfinite(self.loss) and np.isfinite(self.gradient_norm)):
            raise NumericalFailure("non-finite loss or gradient")

    def start(self) -> None:
        self._evaluate()

    def step(self) -> None:
        eta = self.eta
        for W, g in zip(self.W, self.grads):
            W -= eta * g
        if self.noise > 0:
            scale = self.noise * np.sqrt(eta)
            for W in self.W:
                W += scale * self.rng.standard_normal(W.shape)
        self.step_norm = eta * self.gradient_norm
        self.iteration += 1
        self.t = eta * self.iteration
        self._evaluate()

    def point(self) -> np.ndarray:
        return self.X

    def weights(self) -> list[np.ndarray]:
        return [w.copy() for w in self.W]

    def evaluations(self) -> dict[str, int]:
        return dict(self.counts)


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
        stepper = _FactorGDStepper(task, self.step, self.gradient_sampler, self.noise, rng)
        return drive(
            self.name,
            task,
            stepper,
            stopping,
            callback,
            record_every=self.record_every,
            record_times=self.record_times,
            info={
                "step": self.step,
                "noise": self.noise,
                "batch_size": self.batch_size,
                "time": "t = step * iteration",
            },
        )


# ---------------------------------------------------------------------- flow
class _FactorFlowStepper(ScipyODEStepper):
    """The factor flow on the concatenated ``vec(W_1), ..., vec(W_N)``."""

    def __init__(
        self, task: Task, integrator: str, rtol: float, atol: float, max_step: float, t_bound: float
    ):
        super().__init__(
            np.concatenate([w.ravel() for w in task.initial_weights()]),
            integrator,
            rtol,
            atol,
            max_step,
            t_bound,
        )
        self.task = task
        self.shapes = task.network.shapes
        self.sizes = [a * b for a, b in self.shapes]
        self.offsets = np.cumsum([0] + self.sizes)

    def unpack(self, y: np.ndarray) -> list[np.ndarray]:
        return [
            y[a:b].reshape(s) for a, b, s in zip(self.offsets[:-1], self.offsets[1:], self.shapes)
        ]

    def rhs(self, t: float, y: np.ndarray) -> np.ndarray:
        if not np.all(np.isfinite(y)):
            raise NumericalFailure("non-finite factors")
        _, value, grads = factor_loss_and_gradients(
            self.task.network, self.unpack(y), self.task.loss
        )
        self.counts["loss"] += 1
        self.counts["gradient"] += 1
        out = -np.concatenate([g.ravel() for g in grads])
        if not (np.isfinite(value) and np.all(np.isfinite(out))):
            raise NumericalFailure("non-finite loss or gradient")
        self._cache = (y, float(value), float(np.linalg.norm(out)))
        return out

    def point(self) -> np.ndarray:
        return self.task.point(self.unpack(self._y))

    def weights(self) -> list[np.ndarray]:
        return [w.copy() for w in self.unpack(self._y)]

    def interpolate(self, t: float) -> tuple[Any, Any]:
        y = self.solver.dense_output()(t)
        W = [w.copy() for w in self.unpack(y)]
        return self.task.point(W), W


def _check_ode_options(rtol: Any, atol: Any, max_step: Any) -> tuple[float, float, float]:
    """The scipy solver options of a flow: positive ``rtol``, ``atol``, ``max_step`` (``None`` or ``inf``: no bound)."""
    rtol, atol = check_positive("rtol", rtol), check_positive("atol", atol)
    return (
        rtol,
        atol,
        np.inf if max_step is None or max_step == np.inf else check_positive("max_step", max_step),
    )


class OverparametrizedFlow(Method):
    """The gradient flow on the factors, :math:`\\dot W = -\\nabla L(W)`, by a scipy ODE solver.

    Args:
        integrator: One of :data:`ODE_INTEGRATORS` (scipy.integrate's classes;
            ``solve_ivp(method=...)`` names), or ``"RK4"``: fixed-step
            :class:`~dlngeo.dynamics.rk4.RK4` with step ``max_step``, for the
            flow of a ReLU network (its right-hand side jumps at the kinks,
            where an adaptive step can collapse).
        rtol, atol: The solver's relative and absolute tolerances (componentwise,
            as in ``solve_ivp``; unused by ``RK4``).
        max_step: Largest step (flow time); ``RK4``'s step (required).
        end_time: Default final flow time when the stopping has no ``end_time``
            (``None``: integrate until another criterion stops the run).
        record_every: Record every ``k``-th accepted step.
        record_times: Record at these flow times (dense output) instead.

    Iterations are accepted ODE steps; ``evaluations`` counts right-hand sides.
    Non-finite values, a loss blow-up, or a solver failure ("required step
    size is less than spacing between numbers": a finite-time singularity)
    stop with ``"diverged"``.
    """

    name = "overparametrized_flow"
    flow_time = True
    follows = "overparametrized"
    samples_at_times = True
    overparametrized = True
    supports_activation = True

    def __init__(
        self,
        *,
        integrator: str = "RK45",
        rtol: float = 1e-7,
        atol: float = 1e-10,
        max_step: float = np.inf,
        end_time: float | None = None,
        record_every: int = 1,
        record_times: Any = None,
    ):
        self.integrator = check_choice("integrator", integrator, (*ODE_INTEGRATORS, "RK4"))
        self.rtol, self.atol, self.max_step = _check_ode_options(rtol, atol, max_step)
        if integrator == "RK4" and not np.isfinite(self.max_step):
            raise ValueError("max_step: integrator RK4 needs its fixed step as max_step")
        self.end_time = check_positive("end_time", end_time, allow_none=True)
        self.record_every, self.record_times = check_record_options(record_every, record_times)

    def run(
        self, task: Task, stopping: Stopping | None = None, callback: Callback | None = None
    ) -> Record:
        stopping = stopping if stopping is not None else Stopping()
        t_bound = _t_bound(stopping, self.end_time)
        stepper = _FactorFlowStepper(
            task, self.integrator, self.rtol, self.atol, self.max_step, t_bound
        )
        return _finish_flow(
            drive(
                self.name,
                task,
                stepper,
                stopping,
                callback,
                record_every=self.record_every,
                record_times=self.record_times,
                info={
                    "integrator": self.integrator,
                    "rtol": self.rtol,
                    "atol": self.atol,
                    "time": "ODE time",
                },
            ),
            stepper,
        )


def _t_bound(stopping: Stopping, end_time: float | None) -> float:
    if stopping.end_time is not None:
        return float(stopping.end_time)
    return float(end_time) if end_time is not None else np.inf


def _finish_flow(record: Record, stepper: Stepper) -> Record:
    """Report an integrator failure as ``diverged``, with the solver's message in ``info``.

    An explicit integrator fails only when the step size it needs falls below
    the spacing of floats: the solution's derivatives exploded (a finite-time
    singularity), which is what ``diverged`` means for a flow.
    """
    failure = getattr(stepper, "failure", None)
    if failure is not None:
        record.info["solver_message"] = failure
        if record.stop_reason == "end_time":
            record.stop_reason = "diverged"
    return record
