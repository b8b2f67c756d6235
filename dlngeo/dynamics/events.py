r"""Events: zero crossings of a function of the state, located during a run (as ``solve_ivp``'s ``events``).

An :class:`Event` is a function ``g(state) -> float`` of the
:class:`~dlngeo.state.State`. :func:`~dlngeo.dynamics.driver.drive` evaluates
it at the start and at every accepted iterate; when its sign changes between
two iterates (in the event's ``direction``) it locates the crossing ``t*``:

* a continuous method (an ODE stepper with dense output) by Brent's method
  on ``g`` along its interpolant, to ``4 eps`` in time (as ``solve_ivp``);
* a discrete method at the first iterate at or past the crossing (as
  ``record_times``).

Every crossing is kept, in order, in ``record.events[i]`` as
``(t*, point, weights)`` (``weights``: the factors, or ``None``), and its
time in ``record.info["event_times"][i]``. A ``terminal`` event ends the run
at its first crossing with reason ``"event"``: the final sample, point and
factors are those at ``t*``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.optimize

from ..state import State

__all__ = ["Event", "EventTracker"]

#: Brent's tolerance on the crossing time, relative and absolute (``solve_ivp``'s).
EVENT_XTOL = 4 * np.finfo(float).eps


@dataclass
class Event:
    """A crossing of ``function(state) = 0`` to locate.

    Attributes:
        function: ``g(state) -> float``.
        terminal: Stop the run at the first crossing (reason ``"event"``).
        direction: ``+1``: only upward crossings (``g`` from negative to
            positive); ``-1``: only downward; ``0``: both.
    """

    function: Callable[[State], float]
    terminal: bool = False
    direction: float = 0.0

    def __post_init__(self) -> None:
        if not callable(self.function):
            raise ValueError("events: an Event's function must be callable as g(state)")
        if self.direction not in (-1, 0, 1):
            raise ValueError(f"events: direction must be -1, 0 or 1, got {self.direction!r}")


def check_events(events: Any) -> tuple[Event, ...]:
    """``events`` as a tuple of :class:`Event` (``None``: none), or a ``ValueError`` naming ``events``."""
    if events is None:
        return ()
    if isinstance(events, Event):
        events = (events,)
    if not isinstance(events, Sequence) or not all(isinstance(e, Event) for e in events):
        raise ValueError(
            f"events must be a sequence of dlngeo.dynamics.events.Event, got {events!r}"
        )
    return tuple(events)


class EventTracker:
    """The events of one run: their last values, their crossings, the first terminal one."""

    def __init__(self, events: Sequence[Event], task: Any, stepper: Any):
        self.events, self.task, self.stepper = tuple(events), task, stepper
        self.hits: list[list[tuple[float, Any, Any]]] = [[] for _ in self.events]
        self.values: list[float] = []
        self.time = 0.0

    def _at(self, point: Any, weights: Any, t: float) -> list[float]:
        state = self.task.state(point, weights=weights, time=t, iteration=self.stepper.iteration)
        return [float(e.function(state)) for e in self.events]

    def start(self) -> None:
        """Evaluate every event at the stepper's initial state."""
        s = self.stepper
        self.time = float(s.t)
        self.values = self._at(s.point(), s.weights(), self.time)

    def after_step(self) -> tuple[float, Any, Any] | None:
        """Locate the crossings of the last step; return the first terminal one (or ``None``)."""
        s = self.stepper
        t0, t1 = self.time, float(s.t)
        new = self._at(s.point(), s.weights(), t1)
        terminal: tuple[float, Any, Any] | None = None
        for i, (event, g0, g1) in enumerate(zip(self.events, self.values, new)):
            up, down = g0 <= 0 <= g1, g0 >= 0 >= g1
            if g0 == g1 or not ((up and event.direction >= 0) or (down and event.direction <= 0)):
                continue
            hit = self._locate(event, t0, t1, g1)
            self.hits[i].append(hit)
            if event.terminal and (terminal is None or hit[0] < terminal[0]):
                terminal = hit
        self.values, self.time = new, t1
        return terminal

    def _locate(self, event: Event, t0: float, t1: float, g1: float) -> tuple[float, Any, Any]:
        s = self.stepper
        if not s.continuous or g1 == 0:
            return (t1, s.point(), s.weights())

        def g(t: float) -> float:
            point, weights = s.interpolate(t)
            return float(event.function(self.task.state(point, weights=weights, time=t)))

        t = float(scipy.optimize.brentq(g, t0, t1, xtol=EVENT_XTOL, rtol=EVENT_XTOL))
        point, weights = s.interpolate(t)
        return (t, point, weights)
