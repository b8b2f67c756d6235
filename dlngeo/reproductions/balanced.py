r"""Balanced overparametrized flow = Riemannian gradient flow on :math:`(M_r, g_N)` (Bah et al. 2021; Menon 2024).

Gradient flow on the factors, :math:`\dot W_k = -\partial L/\partial W_k`, moves the
end-to-end matrix :math:`X = \phi(W)` with velocity

.. math::

    \dot X = d\phi(W)[\dot W] = -\sum_{k=1}^N (W_N\cdots W_{k+1})(W_N\cdots W_{k+1})^\top
    E'(X)\,(W_{k-1}\cdots W_1)^\top (W_{k-1}\cdots W_1).

On the balanced manifold (all :math:`G_k = W_{k+1}^\top W_{k+1} - W_kW_k^\top = 0`)
these products are fractional powers of :math:`XX^\top` and :math:`X^\top X`, and
:math:`\dot X = -A_{N,X}(E'(X)) = -\operatorname{grad}_{g_N}E(X)`: the
intrinsic Riemannian gradient flow on the rank-``r`` manifold with the metric
:math:`g_N` (docs/math.md §3; Arora, Cohen & Hazan 2018, Thm 1). The :math:`G_k`
are conserved, so a start off the balanced manifold stays off it, and the
pushed-forward velocity differs from the Riemannian gradient by terms linear
in the :math:`G_k`. From a small Gaussian start of scale ``sigma`` (every
layer ``sigma * N(0, 1/d_{k-1})``), :math:`G_k = \sigma^2 G_k^{(1)}` exactly,
while once the loss has fallen the layers are of size :math:`\|X\|^{1/N}`,
independent of ``sigma``: the relative velocity gap

.. math::

    \delta(t) = \frac{\|\,d\phi(W)[\dot W] + A_{N,X}(E'(X))\,\|_F}{\|A_{N,X}(E'(X))\|_F},\qquad X = \phi(W(t)),

scales like :math:`\sigma^2` there, and is zero for a balanced start.

Measured at equal *times*, the two trajectories from the same :math:`X_0` do
not get closer as ``sigma -> 0``: while the factors are of size ``sigma`` the
imbalance is as large as the factors themselves, the unbalanced network
leaves the saddle at the origin at an O(1) different rate, and the escape
time differs by an O(1) amount (more for ``N >= 3``, whose escape time
grows like :math:`\sigma^{-(N-2)}`). :func:`compare_flows` reports that
trajectory gap as well, so the figure shows both facts.

The experiment: :math:`E(X) = \tfrac12\|X - Y\|_F^2` on ``m x n`` matrices,
a network with hidden width ``r < min(m, n)`` (the end-to-end matrix lives on
:math:`M_r`), ``Y`` of full rank (the flow converges to its best rank-``r``
approximation).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..dynamics.base import Stopping, Task
from ..dynamics.events import Event
from ..geometry.kernel import metric_operator
from ..network import DeepLinearNetwork
from ..plugins import create_loss, create_sampler, create_solver
from ..validation import check_positive

__all__ = [
    "regression_target",
    "gaussian_factors",
    "end_to_end_velocity",
    "velocity_gap",
    "overparametrized_flow",
    "intrinsic_flow",
    "FlowComparison",
    "compare_flows",
]


def regression_target(
    m: int, n: int, singular_values: Sequence[float], rng: Any = None
) -> np.ndarray:
    """``Y = U diag(singular_values) V^T`` with Haar-random orthonormal ``U`` (m x k), ``V`` (n x k)."""
    g = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    s = np.asarray(singular_values, dtype=float)
    if s.ndim != 1 or s.size > min(m, n) or np.any(s < 0):
        raise ValueError(
            f"singular_values must be at most min(m, n) = {min(m, n)} non-negative numbers, got {s!r}"
        )
    U, _ = np.linalg.qr(g.standard_normal((m, s.size)))
    V, _ = np.linalg.qr(g.standard_normal((n, s.size)))
    return (U * s) @ V.T


def gaussian_factors(network: DeepLinearNetwork, scale: float, rng: Any = None) -> list[np.ndarray]:
    """``W_k = scale * Z_k``, ``Z_k`` iid ``N(0, 1/d_{k-1})``: the imbalances are ``scale**2 * G_k(Z)`` (to rounding).

    The registered ``gaussian`` initialization with ``init_scale = scale**N``.
    """
    scale = check_positive("scale", scale)
    g = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    return create_sampler("gaussian", init_scale=float(scale) ** network.depth).sample(g, network)


def _loss(Y: np.ndarray, X: np.ndarray) -> float:
    return 0.5 * float(np.sum((X - Y) ** 2))


def end_to_end_velocity(
    network: DeepLinearNetwork, weights: Sequence[np.ndarray], Y: np.ndarray
) -> np.ndarray:
    r""":math:`d\phi(W)[\dot W]` for the factor gradient flow :math:`\dot W = -\nabla L`, ``E = ||X - Y||^2/2``."""
    X = network.product(weights)
    grads = network.gradients(weights, X - Y)
    Xdot = np.zeros_like(X)
    for k in range(network.depth):
        term = -grads[k]
        right = np.eye(network.dims[0])
        for W in weights[:k]:
            right = W @ right
        left = np.eye(network.dims[k + 1])
        for W in weights[k + 1 :]:
            left = W @ left
        Xdot += left @ term @ right
    return Xdot


def velocity_gap(network: DeepLinearNetwork, weights: Sequence[np.ndarray], Y: np.ndarray) -> float:
    r"""Relative gap :math:`\|d\phi[\dot W] + A_{N,X}(E'(X))\| / \|A_{N,X}(E'(X))\|` at ``X = phi(W)``."""
    X = network.product(weights)
    riemannian = metric_operator(X, X - Y, network.depth)
    return float(
        np.linalg.norm(end_to_end_velocity(network, weights, Y) + riemannian)
        / np.linalg.norm(riemannian)
    )


def overparametrized_flow(
    network: DeepLinearNetwork,
    weights0: Sequence[np.ndarray],
    Y: np.ndarray,
    times: np.ndarray,
    rtol: float = 1e-11,
    atol: float = 1e-13,
    loss_fraction: float | None = None,
) -> tuple[list[list[np.ndarray]], float, list[np.ndarray] | None]:
    """Factor gradient flow ``W' = -grad L(W)`` (dlngeo's ``overparametrized_flow``, DOP853), sampled at ``times``.

    Returns the factors at ``times``, and, if ``loss_fraction`` is given, the
    first time ``t*`` at which the loss equals ``loss_fraction`` times its
    initial value (an :class:`~dlngeo.dynamics.events.Event` located on the
    integrator's dense output, ``nan`` if never) with the factors there, else
    ``(nan, None)``.
    """
    times = np.asarray(times, dtype=float)
    task = Task(
        loss=create_loss("regression", target=Y),
        network=network,
        weights0=[np.asarray(W, dtype=float) for W in weights0],
        metrics={"weights": lambda state: state.weights},
    )
    events = []
    if loss_fraction is not None:
        level = loss_fraction * _loss(Y, network.product(task.initial_weights()))
        events.append(Event(lambda state: _loss(Y, state.point) - level, direction=-1))
    solver = create_solver(
        "overparametrized_flow",
        integrator="DOP853",
        rtol=rtol,
        atol=atol,
        record_times=times[1:],
        events=events,
    )
    record = solver.run(task, Stopping.only(end_time=float(times[-1])))
    if record.stop_reason != "end_time" or "solver_message" in record.info:  # pragma: no cover
        raise RuntimeError(f"overparametrized flow failed: {record.info.get('solver_message')}")
    path = record.sampled("weights", times)
    if not events or not record.events[0]:
        return path, float("nan"), None
    t_star, _, weights_star = record.events[0][0]
    return path, float(t_star), weights_star


def intrinsic_flow(
    X0: np.ndarray,
    Y: np.ndarray,
    depth: int,
    rank: int,
    times: np.ndarray,
    rtol: float = 1e-11,
    atol: float = 1e-13,
) -> np.ndarray:
    r"""Riemannian gradient flow :math:`\dot X = -A_{N,X}(E'(X))` on :math:`M_r` for ``E = ||X - Y||^2/2``.

    dlngeo's dense ``intrinsic_flow`` solver (DOP853) on a width-free task with
    hidden widths ``rank``: :math:`A_{N,X}` is applied at the rank of ``X0``
    (at most ``rank``; :attr:`~dlngeo.dynamics.base.Task.start_rank`), so the
    velocity is tangent to :math:`M_r` and rounding errors normal to it are not
    amplified (at depth 2 the full-rank operator would make them grow like
    :math:`e^{2 s t}`). Sampled at ``times`` (``times[0] = 0``, increasing) from
    the integrator's dense output. Returns ``(len(times), m, n)``.
    """
    X0 = np.asarray(X0, dtype=float)
    times = np.asarray(times, dtype=float)
    m, n = X0.shape
    network = DeepLinearNetwork([n] + [int(rank)] * (int(depth) - 1) + [m])
    task = Task(
        loss=create_loss("regression", target=Y),
        network=network,
        start=X0,
        metrics={"point": lambda state: np.array(state.point, dtype=float)},
    )
    solver = create_solver(
        "intrinsic_flow",
        representation="dense",
        integrator="DOP853",
        rtol=rtol,
        atol=atol,
        record_times=times[1:],
    )
    record = solver.run(task, Stopping.only(end_time=float(times[-1])))
    if record.stop_reason != "end_time" or "solver_message" in record.info:  # pragma: no cover
        raise RuntimeError(f"intrinsic flow failed: {record.info.get('solver_message')}")
    return np.array(record.sampled("point", times))


@dataclass
class FlowComparison:
    """One start compared with the intrinsic flow from the same end-to-end matrix.

    Attributes:
        start: ``"balanced"`` or ``"unbalanced"``.
        scale: Gaussian init scale ``sigma``.
        times: Sample times.
        loss: Loss of the overparametrized flow at ``times``.
        velocity_gap: :func:`velocity_gap` along the overparametrized trajectory.
        trajectory_gap: ``||phi(W(t)) - X_intrinsic(t)||_F / ||Y||_F``.
        imbalance: ``max_k ||G_k||_F`` at ``t = 0`` (conserved).
        t90: First time at which the loss is 10 % of its start (an integrator event; ``nan`` if never).
        velocity_gap_t90: ``velocity_gap`` at ``t90``.
    """

    start: str
    scale: float
    times: np.ndarray
    loss: np.ndarray
    velocity_gap: np.ndarray
    trajectory_gap: np.ndarray
    imbalance: float
    t90: float
    velocity_gap_t90: float


def compare_flows(
    dims: Sequence[int],
    Y: np.ndarray,
    scale: float,
    t_end: float,
    *,
    balanced: bool,
    samples: int = 200,
    rng: Any = 0,
) -> FlowComparison:
    """Overparametrized flow from a small Gaussian (or its balanced re-factorization) vs the intrinsic flow.

    The Gaussian factors are drawn from ``rng`` (the same draw for every
    ``scale`` when ``rng`` is a seed). The balanced start is
    :meth:`~dlngeo.DeepLinearNetwork.balanced` of the same end-to-end matrix,
    so both starts and the intrinsic flow begin at the same :math:`X_0`.
    """
    network = DeepLinearNetwork(dims)
    g = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    weights0 = gaussian_factors(network, scale, g)
    X0 = network.product(weights0)
    if balanced:
        weights0 = network.balanced(X0, rng=g, rank=network.rank_bound)
    imbalance = max((float(np.linalg.norm(G)) for G in network.imbalance(weights0)), default=0.0)
    times = np.concatenate(([0.0], np.geomspace(t_end * 1e-4, t_end, samples - 1)))
    path, t90, weights90 = overparametrized_flow(network, weights0, Y, times, loss_fraction=0.1)
    Xs = intrinsic_flow(X0, Y, network.depth, network.rank_bound, times)
    Xo = np.array([network.product(W) for W in path])
    return FlowComparison(
        start="balanced" if balanced else "unbalanced",
        scale=float(scale),
        times=times,
        loss=np.array([_loss(Y, X) for X in Xo]),
        velocity_gap=np.array([velocity_gap(network, W, Y) for W in path]),
        trajectory_gap=np.linalg.norm(Xo - Xs, axis=(1, 2)) / np.linalg.norm(Y),
        imbalance=imbalance,
        t90=t90,
        velocity_gap_t90=velocity_gap(network, weights90, Y)
        if weights90 is not None
        else float("nan"),
    )
