r"""Classical fixed-step Runge–Kutta 4 as a ``scipy.integrate.OdeSolver`` (usable by ``solve_ivp``).

For right-hand sides that jump: the gradient flow of a ReLU network changes
its vector field wherever a pre-activation changes sign, and a unit whose
pre-activation is pushed to zero from both sides *slides* along its kink
(a Filippov sliding mode). An adaptive solver's error control then shrinks
the step without bound and the integration stalls. A fixed step ``h`` does
not: its error is :math:`O(h^4)` on the smooth pieces and :math:`O(h)` over
a stretch of sliding (every step straddles the kink). The step is
``max_step`` (required finite); ``rtol``/``atol`` are accepted and ignored.
Dense output is the cubic Hermite interpolant of the step's end points and
slopes (:math:`O(h^4)` on smooth pieces).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.integrate import DenseOutput, OdeSolver

__all__ = ["RK4"]


class RK4(OdeSolver):
    """Fixed-step classical Runge–Kutta 4; the step is ``max_step`` (the last one shortened to hit ``t_bound``)."""

    def __init__(
        self,
        fun: Any,
        t0: float,
        y0: np.ndarray,
        t_bound: float,
        max_step: float = np.inf,
        rtol: float | None = None,
        atol: float | None = None,
        vectorized: bool = False,
        first_step: float | None = None,
        **extraneous: Any,
    ):
        super().__init__(fun, t0, y0, t_bound, vectorized)
        if not (np.isfinite(max_step) and max_step > 0):
            raise ValueError(
                f"max_step must be a positive finite number: RK4 steps by max_step, got {max_step!r}"
            )
        self.h = float(max_step)
        self.f = self.fun(self.t, self.y)  # type: ignore[has-type]
        self._last: tuple[float, np.ndarray, np.ndarray] | None = None

    def _step_impl(self) -> tuple[bool, str | None]:
        t: float = float(self.t)  # type: ignore[has-type]
        y: np.ndarray = np.asarray(self.y)  # type: ignore[has-type]
        k1 = self.f
        h = min(self.h, abs(self.t_bound - t)) * self.direction
        if h == 0:
            return False, "step is zero"
        k2 = self.fun(t + h / 2, y + (h / 2) * k1)
        k3 = self.fun(t + h / 2, y + (h / 2) * k2)
        k4 = self.fun(t + h, y + h * k3)
        y_new = y + (h / 6) * (k1 + 2 * k2 + 2 * k3 + k4)
        t_new = t + h
        if abs(self.t_bound - t_new) <= 1e-12 * max(1.0, abs(t_new)):
            t_new = self.t_bound
        self._last = (t, y, k1)
        self.t, self.y, self.f = t_new, y_new, self.fun(t_new, y_new)
        return True, None

    def _dense_output_impl(self) -> DenseOutput:
        assert self._last is not None
        t_old, y_old, f_old = self._last
        return _Hermite(t_old, self.t, y_old, self.y, f_old, self.f)


class _Hermite(DenseOutput):
    """Cubic Hermite interpolant on ``[t_old, t]`` from values and slopes at both ends."""

    def __init__(self, t_old: float, t: float, y0: Any, y1: Any, f0: Any, f1: Any):
        super().__init__(t_old, t)
        self.h = t - t_old
        self.y0, self.y1, self.f0, self.f1 = y0, y1, f0, f1

    def _call_impl(self, t: Any) -> np.ndarray:
        s = (np.asarray(t, dtype=float) - self.t_old) / self.h
        h00 = 2 * s**3 - 3 * s**2 + 1
        h10 = s**3 - 2 * s**2 + s
        h01 = -2 * s**3 + 3 * s**2
        h11 = s**3 - s**2
        y = np.multiply.outer(self.y0, h00) + np.multiply.outer(self.y1, h01)
        return y + self.h * (np.multiply.outer(self.f0, h10) + np.multiply.outer(self.f1, h11))
