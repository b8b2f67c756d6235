r"""Gradient descent on the factors with one global RMSprop step (Arora, Cohen, Hu & Luo 2019).

The optimizer of the deep matrix completion experiments (docs/math.md §5.2):
RMSprop with a single second-moment estimate for all parameters,

.. math::

    v_k = \alpha v_{k-1} + (1 - \alpha)\sum_j \|\nabla_{W_j} L\|_F^2,\qquad
    W_j \leftarrow W_j - \eta_k \nabla_{W_j} L,\qquad
    \eta_k = \frac{\text{lr}}{\sqrt{v_k/(1 - \alpha^k)} + \varepsilon}.

The step is one scalar per iteration, so the iterates follow the path of the
factor gradient flow up to a time change: the flow time of iterate ``k`` is
:math:`t_k = \sum_{i \le k}\eta_i` and the method follows the
``"overparametrized"`` flow (first order in the steps, as constant-step GD).
Every step moves the parameters by about ``lr`` in total Frobenius norm,
whatever the gradient's size: this is what lets the plateau of a small
start be crossed in ``~1e4`` steps.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..validation import check_nonnegative, check_positive
from .base import Task
from .driver import Stepper
from .overparametrized import OverparametrizedGD, _FactorGDStepper

__all__ = ["GroupRMSprop", "GroupRMSpropGD"]


class GroupRMSprop:
    r"""The step rule: one global running mean of :math:`\sum_j\|g_j\|^2`, bias-corrected.

    Args:
        lr: Learning rate (the step's total norm, about).
        alpha: Decay of the running mean, in ``[0, 1)``.
        eps: Added to the root of the mean (``>= 0``).
    """

    def __init__(self, lr: float, alpha: float = 0.99, eps: float = 1e-4):
        lr = check_positive("lr", lr)
        if not 0 <= alpha < 1:
            raise ValueError(f"alpha must be in [0, 1), got {alpha!r}")
        eps = check_nonnegative("eps", eps)
        self.lr, self.alpha, self.eps = float(lr), float(alpha), float(eps)
        self.square_avg = 0.0
        self.t = 0

    def step_size(self, grads: Sequence[np.ndarray], total: float | None = None) -> float:
        r"""Update the running mean with ``grads`` and return the step size for them.

        ``total``: :math:`\sum_k\|g_k\|^2` if the caller has it already.
        """
        self.t += 1
        if total is None:
            total = float(sum(np.vdot(g, g) for g in grads))
        self.square_avg = self.alpha * self.square_avg + (1 - self.alpha) * total
        return self.lr / (np.sqrt(self.square_avg / (1 - self.alpha**self.t)) + self.eps)


class _GroupRMSpropStepper(_FactorGDStepper):
    constant_step = False

    def __init__(self, task: Task, rule: GroupRMSprop, rng: np.random.Generator):
        super().__init__(task, rule.lr, None, 0.0, rng)
        self.rule = rule

    def step_size(self) -> float:
        return self.rule.step_size(self.grads, self.gradient_square)


class GroupRMSpropGD(OverparametrizedGD):
    """Factor gradient descent with the :class:`GroupRMSprop` step (Arora et al. 2019's optimizer).

    Args:
        lr: Learning rate.
        alpha: Decay of the global second-moment estimate.
        eps: Added to its root.
        record_every: Record every ``k``-th iterate.
        record_times: Record the first iterate at or after each of these flow times instead.
    """

    name = "group_rmsprop"
    step_option = "lr"

    def __init__(
        self,
        lr: float = 1e-3,
        *,
        alpha: float = 0.99,
        eps: float = 1e-4,
        record_every: int = 1,
        record_times: Any = None,
    ):
        GroupRMSprop(lr, alpha, eps)  # validates the options
        super().__init__(lr, record_every=record_every, record_times=record_times)
        self.lr, self.alpha, self.eps = float(lr), float(alpha), float(eps)

    def _stepper(self, task: Task, rng: np.random.Generator) -> Stepper:
        return _GroupRMSpropStepper(task, GroupRMSprop(self.lr, self.alpha, self.eps), rng)

    def _info(self) -> dict[str, Any]:
        return {
            "lr": self.lr,
            "alpha": self.alpha,
            "eps": self.eps,
            "time": "t = sum of the steps taken",
        }
