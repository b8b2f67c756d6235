r"""The linearised flow beside the true ReLU flow, and the linearisation horizon.

From factors :math:`W(t_0)` of a bias-free ReLU network, freeze the gates
:math:`G_k = g(Z_k(t_0))` of every sample and hidden unit: the *linearised
network* is the gated deep linear network
:math:`F_{:,i} = W_N D_{N-1,i} \cdots D_{1,i} W_1 A_{:,i}` (Basu, Mukherjee &
Vasudevan 2019). Its gradient flow is smooth (polynomial right-hand side). The
true flow has the same right-hand side, bit for bit (one kernel,
:meth:`~dlngeo.relu.ReLUNetwork.loss_and_gradients`), for as long as no
pre-activation changes sign, so the two trajectories coincide up to the
*linearisation horizon*

.. math:: t_h = \inf\{t : \operatorname{sign} Z_{k,j,i}(t) \ne \operatorname{sign} Z_{k,j,i}(t_0)\ \text{for some}\ k, j, i\}.

:func:`linearisation` finds :math:`t_h` as the root of the event function
:math:`\mu(t) = \min_{k,j,i} s_{k,j,i} Z_{k,j,i}(t)` (:math:`s = \pm 1`, the
initial signs; continuous, positive before :math:`t_h`), a terminal
:class:`~dlngeo.dynamics.events.Event` of the factor flow's stepper run by
:func:`~dlngeo.dynamics.driver.drive` (Brent's method on the step's dense
output, as ``solve_ivp``'s event search, so to the dense output's accuracy).
Past :math:`t_h` the true flow is continued with the fixed-step
:class:`~dlngeo.dynamics.rk4.RK4` (units may slide along a kink, where an
adaptive step collapses), and the gap between the trajectories is measured.
The linearised flow is the same factor flow on the network with frozen gates.
The three runs keep every step's interpolant (as ``solve_ivp``'s
``dense_output``), read at the sample times afterwards: the samples before
and after :math:`t_h` come from two runs, whose split is known only once the
first has ended.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.integrate import OdeSolution

from ..relu import OutputLoss, ReLUNetwork
from ..validation import check_positive
from .base import Stopping, Task
from .driver import drive
from .events import Event
from .factor_flow import _FactorFlowStepper

__all__ = ["Linearisation", "linearisation", "margin", "initial_signs"]


def margin(network: ReLUNetwork, weights: list[np.ndarray], inputs: Any, signs: Any) -> float:
    """``min s * Z`` over the hidden units and samples with ``s != 0``: positive while the pattern ``signs`` holds."""
    Z = network.pre_activations(weights, inputs)
    values = [(s * z)[s != 0] for s, z in zip(signs, Z)]
    return float(min((np.min(v) for v in values if v.size), default=np.inf))


def initial_signs(network: ReLUNetwork, weights: list[np.ndarray], inputs: Any) -> list[np.ndarray]:
    """``+1`` where ``Z > 0``, ``-1`` elsewhere, and ``0`` where ``Z`` vanishes identically.

    ``Z_{k,:,i} = W_k H_{k-1,:,i}`` is exactly zero while sample ``i``'s
    activations ``H_{k-1,:,i}`` below are (every unit of layer ``k-1`` off under
    ``relu``); it changes only after a pattern change below, so it is not watched.
    """
    H, Z, _ = network.forward(weights, inputs)
    return [np.where(z > 0, 1.0, -1.0) * np.any(h != 0, axis=0)[None, :] for h, z in zip(H[:-2], Z)]


@dataclass
class Linearisation:
    """The true and the linearised flow from one start.

    Attributes:
        times: Sample times (``t_0`` first).
        horizon: :math:`t_h` (``inf``: no pattern changed before ``times[-1]``).
        crossing: ``(k, j, i)``: hidden layer (1-based), unit, sample of the first
            pre-activation to change sign, or ``None``.
        true: Flattened factors of the true flow at ``times`` (``len(times) x P``).
        linearised: The same for the linearised flow.
        gap: :math:`\\|W(t) - W^{lin}(t)\\|_F`.
        output_gap: :math:`\\|F(W(t)) - F^{lin}(W^{lin}(t))\\|_F`.
        changed_samples: Samples whose pattern (of the true flow) differs from the start's.
        gates: The frozen gates of the linearised network.
        before: The true flow's dense output on ``[t_0, t_h]`` (``scipy`` ``OdeSolution``;
            ``None`` when the start is on a kink, ``t_h = t_0``).
        evaluations: Right-hand sides evaluated: ``{"true": .., "linearised": ..}``.
    """

    times: np.ndarray
    horizon: float
    crossing: tuple[int, int, int] | None
    true: np.ndarray
    linearised: np.ndarray
    gap: np.ndarray
    output_gap: np.ndarray
    changed_samples: np.ndarray
    gates: list[np.ndarray]
    shapes: list[tuple[int, int]] = field(default_factory=list)
    before: Any = None
    evaluations: dict[str, int] = field(default_factory=dict)

    def weights(self, index: int, which: str = "true") -> list[np.ndarray]:
        """The factors ``W_1 .. W_N`` at ``times[index]`` of the ``"true"`` or ``"linearised"`` flow."""
        y = (self.true if which == "true" else self.linearised)[index]
        return _unpack(y, self.shapes)


def _unpack(y: np.ndarray, shapes: list[tuple[int, int]]) -> list[np.ndarray]:
    out, start = [], 0
    for a, b in shapes:
        out.append(y[start : start + a * b].reshape(a, b))
        start += a * b
    return out


class _FrozenGates(ReLUNetwork):
    """The linearised network: ``network`` with the gates of every sample frozen at ``gates``."""

    def __init__(self, network: ReLUNetwork, gates: list[np.ndarray]):
        slope = network.slope if network.activation == "leaky_relu" else None
        super().__init__(network.dims, network.activation, slope)
        self.frozen = gates

    def loss_and_gradients(
        self, weights: Any, loss: Any, gates: Any = None, gradient: Any = None
    ) -> tuple[np.ndarray, float, list[np.ndarray]]:
        frozen = self.frozen if gates is None else gates
        return super().loss_and_gradients(weights, loss, frozen, gradient)

    def outputs(self, weights: Any, inputs: Any, gates: Any = None) -> np.ndarray:
        return super().outputs(weights, inputs, self.frozen if gates is None else gates)


class _FlowSolution(_FactorFlowStepper):
    """The factor flow from ``t0``, keeping each accepted step's interpolant (``solve_ivp``'s ``dense_output``)."""

    stationary_floor = None  # run to t_bound (or the event): no stationary test, no gradient scale

    def __init__(
        self,
        task: Task,
        integrator: str,
        rtol: float,
        atol: float,
        step: float,
        t0: float,
        t_end: float,
    ):
        super().__init__(task, integrator, rtol, atol, step, t_end)
        self.t = float(t0)
        self.ts: list[float] = [self.t]
        self.interpolants: list[Any] = []

    def step(self) -> None:
        super().step()
        self.ts.append(self.t)
        self.interpolants.append(self.dense_output())

    def run(self, events: tuple[Event, ...] = ()) -> tuple[OdeSolution, Any]:
        """Drive to ``t_end`` (or the first terminal event); the dense output and the record."""
        record = drive(
            "factor_flow", self.task, self, Stopping.only(), None, record_every=2**62, events=events
        )
        failure = getattr(self, "failure", None)  # the scipy solver's message (a step too small)
        if failure is not None or record.stop_reason not in ("end_time", "event"):
            raise ValueError(f"the flow failed: {failure or record.stop_reason}")
        ts = list(self.ts)
        if record.stop_reason == "event":  # the last step's interpolant, up to the crossing
            ts[-1] = record.events[0][0][0]
        return OdeSolution(ts, self.interpolants), record


def linearisation(
    network: ReLUNetwork,
    weights0: list[np.ndarray],
    loss: OutputLoss,
    t_end: float,
    *,
    times: Any = None,
    rtol: float = 1e-10,
    atol: float = 1e-12,
    step: float = 1e-3,
    t0: float = 0.0,
) -> Linearisation:
    """Run the linearised flow beside the true flow from ``weights0`` (at time ``t0``) up to ``t_end``.

    Both flows use DOP853 (``rtol``, ``atol``) up to the horizon; the true flow
    is continued past it by RK4 with step ``step``.

    Args:
        network: The :class:`~dlngeo.relu.ReLUNetwork`.
        weights0: The start (any moment of a run: the gates are frozen there).
        loss: Its :class:`~dlngeo.relu.OutputLoss` (``loss.inputs`` are the samples).
        t_end: Final time (``> t0``).
        times: Sample times in ``[t0, t_end]`` (default: 201 equispaced).
        rtol, atol: DOP853's tolerances.
        step: RK4's step past the horizon.
        t0: The time of ``weights0``.

    Raises:
        ValueError: a bad ``network``, ``loss``, ``t_end``, ``times`` or ``step``.
    """
    if not isinstance(network, ReLUNetwork):
        raise ValueError(f"network must be a ReLUNetwork, got {type(network).__name__}")
    if not isinstance(loss, OutputLoss):
        raise ValueError(f"loss must be an OutputLoss, got {type(loss).__name__}")
    if not (np.isfinite(t_end) and t_end > t0):
        raise ValueError(f"t_end must be finite and > t0 = {t0}, got {t_end!r}")
    step = check_positive("step", step)
    grid = np.linspace(t0, t_end, 201) if times is None else np.asarray(times, dtype=float)
    if grid.ndim != 1 or grid.size == 0 or np.any(np.diff(grid) < 0):
        raise ValueError("times must be a non-empty non-decreasing sequence")
    if grid[0] < t0 or grid[-1] > t_end:
        raise ValueError(f"times must lie in [t0, t_end] = [{t0}, {t_end}]")
    W0 = network.check_weights(weights0)
    A, shapes = loss.inputs, network.shapes
    y0 = np.concatenate([w.ravel() for w in W0])
    gates = network.gates(W0, A)
    signs = initial_signs(network, W0, A)
    counts = {"true": 0, "linearised": 0}

    def flow(
        network: ReLUNetwork,
        weights: list[np.ndarray],
        method: str,
        t_start: float,
        max_step: float = np.inf,
    ) -> _FlowSolution:
        task = Task(loss=loss, network=network, weights0=weights)
        return _FlowSolution(task, method, rtol, atol, max_step, t_start, t_end)

    def event(state: Any) -> float:
        return margin(network, state.weights, A, signs)

    lin_flow = flow(_FrozenGates(network, gates), W0, "DOP853", t0)
    lin, _ = lin_flow.run()
    counts["linearised"] = lin_flow.counts["gradient"]
    horizon, crossing = np.inf, None
    true = np.empty((grid.size, y0.size))
    first: Any = None
    if margin(network, W0, A, signs) <= 0:
        horizon = t0
    else:
        true_flow = flow(network, W0, "DOP853", t0)
        first, record = true_flow.run((Event(event, terminal=True, direction=-1),))
        counts["true"] = true_flow.counts["gradient"]
        if record.stop_reason == "event":
            horizon = float(record.events[0][0][0])
    before = grid <= horizon
    if np.any(before):
        true[before] = first(grid[before]).T if first is not None else y0
    if np.isfinite(horizon):
        y_h = first(horizon) if horizon > t0 else y0
        Z = network.pre_activations(_unpack(y_h, shapes), A)
        scores = [np.where(s != 0, s * z, np.inf) for s, z in zip(signs, Z)]
        k = int(np.argmin([np.min(v) for v in scores]))
        j, i = np.unravel_index(int(np.argmin(scores[k])), Z[k].shape)
        crossing = (k + 1, int(j), int(i))
        if np.any(~before) and horizon < t_end:
            rest_flow = flow(network, _unpack(y_h, shapes), "RK4", horizon, max_step=step)
            rest, _ = rest_flow.run()
            counts["true"] += rest_flow.counts["gradient"]
            true[~before] = rest(grid[~before]).T
    linear = lin(grid).T
    gap = np.linalg.norm(true - linear, axis=1)
    output_gap, changed = np.empty(grid.size), np.zeros(grid.size, dtype=int)
    initial = [s > 0 for s in signs]
    for n in range(grid.size):
        Wt, Wl = _unpack(true[n], shapes), _unpack(linear[n], shapes)
        output_gap[n] = np.linalg.norm(network.outputs(Wt, A) - network.outputs(Wl, A, gates))
        diff = np.zeros(A.shape[1], dtype=bool)
        for p0, p in zip(initial, network.patterns(Wt, A)):
            diff |= np.any(p0 != p, axis=0)
        changed[n] = int(diff.sum())
    return Linearisation(
        times=grid,
        horizon=horizon,
        crossing=crossing,
        true=true,
        linearised=linear,
        gap=gap,
        output_gap=output_gap,
        changed_samples=changed,
        gates=gates,
        shapes=list(shapes),
        before=first,
        evaluations=counts,
    )
