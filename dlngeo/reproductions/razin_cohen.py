r"""Razin & Cohen (2020): implicit regularization that no norm explains.

2 x 2 matrix completion with observed :math:`w_{12} = 1`, :math:`w_{21} = 1`,
:math:`w_{22} = 0` and :math:`w_{11}` unobserved (docs/math.md §5.5),

.. math:: E(X) = \tfrac12\big[(X_{12} - 1)^2 + (X_{21} - 1)^2 + X_{22}^2\big].

Every solution :math:`\begin{pmatrix} x & 1 \\ 1 & 0\end{pmatrix}` has
:math:`\det = -1`. Along the end-to-end flow of a balanced depth-``N`` network
(Arora, Cohen & Hazan 2018),

.. math:: \dot X = -A_{N,X}(E'(X)),

each singular value obeys :math:`\dot\sigma = -N\sigma^{2-2/N}\langle E', u v^\top\rangle`
(docs/math.md §3), so for ``N >= 2`` no singular value reaches zero in finite time
and the sign of :math:`\det X` is preserved. Started from a small matrix
with :math:`\det X_0 > 0`, the flow can only approach the solution set
:math:`\{\det = -1\}` by sending :math:`|X_{11}| \to \infty`: the loss goes to
zero while the effective rank falls to 1 and every norm (nuclear, Frobenius)
grows without bound. Since :math:`\det X = X_{11}X_{22} - X_{12}X_{21} > 0`
forces :math:`|X_{22}| > X_{12}X_{21}/|X_{11}|`, the loss obeys
:math:`E \ge \tfrac12 X_{22}^2 \gtrsim 1/(2X_{11}^2)`: the two are locked.

Depth 2 is numerically inconclusive in double precision: the smallest
singular value decays exponentially, rounding loses the sign of the
determinant and the run settles at a finite solution with ``det = -1``
(docs/math.md §5.5). We report what happens and do not tune it away.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..dynamics.base import Stopping, Task
from ..dynamics.driver import NumericalFailure, ScipyODEStepper, drive
from ..dynamics.factor_flow import _finish_flow
from ..dynamics.record import Record
from ..lowrank import to_dense
from ..network import DeepLinearNetwork
from ..plugins import create_loss, create_metric, create_solver
from ..state import State
from ..validation import check_positive, positive_integer

__all__ = [
    "OBSERVED_MASK",
    "OBSERVED_VALUES",
    "completion_loss",
    "loss",
    "loss_gradient",
    "small_init",
    "RazinCohenRun",
    "end_to_end_flow",
    "end_to_end_flow_svd",
    "effective_rank",
]

#: Observed entries (1 = observed): w_12, w_21, w_22.
OBSERVED_MASK = np.array([[0.0, 1.0], [1.0, 1.0]])
#: Their values: w_12 = 1, w_21 = 1, w_22 = 0.
OBSERVED_VALUES = np.array([[0.0, 1.0], [1.0, 0.0]])


def completion_loss() -> Any:
    r"""The registered ``matrix_completion`` loss of the example (``normalization="sum"``).

    :math:`E(X) = \tfrac12\sum_\Omega (X_{ij} - b_{ij})^2`, :math:`E'(X) = P_\Omega(X - b)`.
    """
    rows, cols = np.nonzero(OBSERVED_MASK)
    return create_loss(
        "matrix_completion",
        rows=rows,
        cols=cols,
        values=OBSERVED_VALUES[rows, cols],
        shape=(2, 2),
        normalization="sum",
    )


def loss(X: np.ndarray) -> float:
    r""":math:`E(X) = \tfrac12\sum_\Omega (X_{ij} - b_{ij})^2` (:func:`completion_loss`)."""
    return completion_loss().value(np.asarray(X, dtype=float))


def loss_gradient(X: np.ndarray) -> np.ndarray:
    """:math:`E'(X) = P_\\Omega(X - b)` as a dense array (:func:`completion_loss`)."""
    return to_dense(completion_loss().gradient(np.asarray(X, dtype=float)))


def effective_rank(X: np.ndarray) -> float:
    r"""Roy & Vetterli's :math:`\exp H(\sigma / \sum \sigma)` (the registered ``effective_rank`` metric)."""
    return float(create_metric("effective_rank")(State(point=np.asarray(X, dtype=float))))


def small_init(rng: Any = None, scale: float = 1e-2, max_tries: int = 1000) -> np.ndarray:
    r"""``scale * N(0, 1)`` 2 x 2 matrix, redrawn until :math:`\det > 0` (Razin & Cohen's condition)."""
    scale = check_positive("scale", scale)
    g = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    for _ in range(max_tries):
        X = scale * g.standard_normal((2, 2))
        if np.linalg.det(X) > 0:
            return X
    raise RuntimeError("no init with det > 0 found")  # pragma: no cover - probability 2^-1000


@dataclass
class RazinCohenRun:
    r"""The end-to-end trajectory sampled at ``times``.

    Attributes:
        depth: ``N``.
        times: Flow times (first is 0).
        X: ``(len(times), 2, 2)`` end-to-end matrices.
        loss, w11, det, nuclear, frobenius, effective_rank: The quantities at ``times``.
        log_abs_det: :math:`\log|\det X|` (in log-singular-value coordinates
            :math:`\log\sigma_1 + \log\sigma_2`: finite even where ``det``
            underflows to 0, as long as :math:`\sigma_2` itself does not).
        status: The run's stop reason (``"end_time"``: the integration reached
            ``t_end``), or the integrator's failure message.
    """

    depth: int
    times: np.ndarray
    X: np.ndarray
    loss: np.ndarray
    w11: np.ndarray
    det: np.ndarray
    nuclear: np.ndarray
    frobenius: np.ndarray
    effective_rank: np.ndarray
    log_abs_det: np.ndarray
    status: str


def _sample_grid(t_end: float, samples: int) -> np.ndarray:
    """``t = 0`` and ``samples`` log-spaced times in ``[1e-2, t_end]``."""
    return np.concatenate(([0.0], np.geomspace(1e-2, t_end, samples)))


def _task(start: Any, depth: int) -> Task:
    """The width-free task of the example: the balanced depth-``N`` 2 x 2 network from ``start``."""
    return Task(
        loss=completion_loss(),
        network=DeepLinearNetwork([2] * (depth + 1)),
        start=start,
        metrics={"point": lambda state: state.point},
    )


def _run(
    depth: int,
    record: Record,
    times: np.ndarray,
    Xs: np.ndarray,
    svals: np.ndarray,
    *,
    det: np.ndarray,
    effective_rank: np.ndarray,
    log_abs_det: np.ndarray,
) -> RazinCohenRun:
    """The :class:`RazinCohenRun` of the samples ``Xs`` (singular values ``svals``) of ``record``.

    ``det``, ``effective_rank`` and ``log_abs_det`` are given by the caller,
    which knows how to compute them accurately in its coordinates.
    """
    return RazinCohenRun(
        depth=depth,
        times=times,
        X=Xs,
        loss=np.array(record.sampled("loss", times), dtype=float),
        w11=Xs[:, 0, 0],
        det=det,
        nuclear=svals.sum(axis=1),
        frobenius=np.sqrt((svals**2).sum(axis=1)),
        effective_rank=effective_rank,
        log_abs_det=log_abs_det,
        status=str(record.info.get("solver_message", record.stop_reason)),
    )


def end_to_end_flow(
    X0: np.ndarray,
    depth: int,
    t_end: float = 1e6,
    samples: int = 200,
    method: str = "LSODA",
    rtol: float = 1e-10,
    atol: float = 1e-14,
) -> RazinCohenRun:
    r"""Integrate :math:`\dot X = -A_{N,X}(E'(X))` (dlngeo's dense ``intrinsic_flow``) on a log-time grid.

    Args:
        X0: Start (2 x 2, finite).
        depth: ``N >= 1``.
        t_end: Final flow time.
        samples: Number of log-spaced sample times in ``[1e-2, t_end]`` (plus ``t = 0``).
        method: A stiff-capable scipy integrator (``"LSODA"``, ``"Radau"``, ``"BDF"``).
        rtol, atol: Integrator tolerances.
    """
    X0 = np.asarray(X0, dtype=float)
    if X0.shape != (2, 2) or not np.all(np.isfinite(X0)):
        raise ValueError(f"X0 must be a finite 2 x 2 array, got shape {X0.shape}")
    if not t_end > 1e-2:
        raise ValueError(f"t_end must exceed 1e-2, got {t_end!r}")
    times = _sample_grid(t_end, samples)
    solver = create_solver(
        "intrinsic_flow",
        representation="dense",
        integrator=method,
        rtol=rtol,
        atol=atol,
        record_times=times[1:],
    )
    record = solver.run(_task(X0, int(depth)), Stopping.only(end_time=float(t_end)))
    Xs = np.array(record.sampled("point", times), dtype=float)
    svals = np.linalg.svd(Xs, compute_uv=False)
    return _run(
        int(depth),
        record,
        times,
        Xs,
        svals,
        det=np.linalg.det(Xs),
        effective_rank=np.array([effective_rank(X) for X in Xs]),
        log_abs_det=np.log(np.abs(np.linalg.det(Xs))),
    )


def _rotation(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s], [s, c]])


def _svd_coordinates(X0: np.ndarray) -> tuple[np.ndarray, float]:
    """``(theta, phi, log s1, log s2)`` and the sign ``d`` with ``X = R(theta) diag(s) (R(phi) diag(1, d))^T``."""
    U, s, Vt = np.linalg.svd(X0)
    if np.linalg.det(U) < 0:  # make U a rotation; move the reflection to V
        U[:, 1] *= -1
        Vt[1] *= -1
    V = Vt.T
    d = 1.0 if np.linalg.det(V) > 0 else -1.0
    R_phi = V @ np.diag([1.0, d])
    theta = np.arctan2(U[1, 0], U[0, 0])
    phi = np.arctan2(R_phi[1, 0], R_phi[0, 0])
    return np.array([theta, phi, np.log(s[0]), np.log(s[1])]), d


def _from_svd_coordinates(y: np.ndarray, d: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    U = _rotation(y[0])
    V = _rotation(y[1]) @ np.diag([1.0, d])
    return U, np.exp(y[2:4]), V


class _LogSigmaStepper(ScipyODEStepper):
    """The end-to-end flow in the coordinates ``y = (theta, phi, log s1, log s2)`` (see :func:`end_to_end_flow_svd`).

    Its points are the low-rank points ``(U, s, V^T)``, ``s = exp(l)``. It has
    no gradient norm (the example stops at its end time only).
    """

    def __init__(self, task: Task, d: float, y0: np.ndarray, **options: Any):
        super().__init__(y0, **options)
        self.task, self.d, self.depth = task, d, task.depth
        self.stationary_floor = None  # never "stationary"

    def rhs(self, t: float, y: np.ndarray) -> np.ndarray:
        if not np.all(np.isfinite(y)):
            raise NumericalFailure("non-finite coordinates")
        n = self.depth
        U, s, V = _from_svd_coordinates(y, self.d)
        value, E = self.task.loss.value_and_gradient((U * s) @ V.T)
        self.counts["loss"] += 1
        self.counts["gradient"] += 1
        G = U.T @ to_dense(E) @ V
        # K_ii / sigma_i = N sigma_i^(1 - 2/N) (docs/math.md §3), written without the quotient
        # so that sigma_2 = 0 after underflow (depth 2) stays finite.
        rate = n * np.exp((1.0 - 2.0 / n) * y[2:4])
        # p_1 - p_2 = p_1 (1 - exp(2 (l_2 - l_1) / N)), stable for tiny sigma_2.
        gap = -np.exp(2.0 * y[2] / n) * np.expm1(2.0 * (y[3] - y[2]) / n)
        off = (s[0] * G[1, 0] + s[1] * G[0, 1], s[0] * G[0, 1] + s[1] * G[1, 0])
        # No gradient norm (NaN): the example runs to its end time, never to a stationary point.
        self._cache = (y, float(value), float("nan"))
        return np.array(
            [-off[0] / gap, -self.d * off[1] / gap, -rate[0] * G[0, 0], -rate[1] * G[1, 1]]
        )

    def _point(self, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        U, s, V = _from_svd_coordinates(y, self.d)
        return U, s, V.T

    def point(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self._point(self._y)

    def interpolate(self, t: float) -> tuple[Any, Any]:
        return self._point(self.dense_output()(t)), None


def end_to_end_flow_svd(
    X0: np.ndarray,
    depth: int,
    t_end: float = 1e6,
    samples: int = 200,
    method: str = "LSODA",
    rtol: float = 1e-10,
    atol: float = 1e-12,
) -> RazinCohenRun:
    r"""The same flow integrated in log-singular-value coordinates, where the sign of ``det`` is exact.

    Write :math:`X = R(\theta)\,\mathrm{diag}(e^{\ell_1}, e^{\ell_2})\,(R(\varphi)\,\mathrm{diag}(1, d))^\top`
    with rotations :math:`R` and the fixed sign :math:`d = \operatorname{sign}\det X_0`.
    With :math:`\tilde G = U^\top E'(X) V` and :math:`p_i = \sigma_i^{2/N}`, the flow
    :math:`U^\top \dot X V = -K \circ \tilde G` (docs/math.md §3) reads

    .. math::

        \dot\ell_i = -K_{ii}\tilde G_{ii}/\sigma_i = -N\sigma_i^{1-2/N}\tilde G_{ii},\qquad
        \dot\theta = -\frac{\sigma_1\tilde G_{21} + \sigma_2\tilde G_{12}}{p_1 - p_2},\qquad
        \dot\varphi = -d\,\frac{\sigma_1\tilde G_{12} + \sigma_2\tilde G_{21}}{p_1 - p_2},

    using :math:`K_{12}/(\sigma_1^2 - \sigma_2^2) = 1/(p_1 - p_2)`. The exact
    flow keeps :math:`\sigma_2 > 0` for all time (``N >= 2``), and so does this
    parametrization: in Cartesian coordinates :math:`\sigma_2/\sigma_1` reaches
    the rounding level (about ``1e-14`` by ``t = 1e6`` at depth 3) and the
    integrator's error, not the flow, decides the sign of ``det``. Valid while
    :math:`\sigma_1 \neq \sigma_2` (a generic start).

    The coordinates are a stepper of dlngeo's driver (a scipy ODE stepper on
    ``y``, its points the low-rank ``(U, s, V^T)``), run on the example's task
    and loss like the library's flows.
    """
    X0 = np.asarray(X0, dtype=float)
    if X0.shape != (2, 2) or not np.all(np.isfinite(X0)):
        raise ValueError(f"X0 must be a finite 2 x 2 array, got shape {X0.shape}")
    depth = positive_integer(depth, "depth", 2)
    if not t_end > 1e-2:
        raise ValueError(f"t_end must exceed 1e-2, got {t_end!r}")
    y0, d = _svd_coordinates(X0)
    if not y0[2] > y0[3]:
        raise ValueError("X0 must have two distinct singular values")
    n = int(depth)
    times = _sample_grid(t_end, samples)
    task = _task(X0, n)
    stepper = _LogSigmaStepper(
        task, d, y0, integrator=method, rtol=rtol, atol=atol, max_step=np.inf, t_bound=t_end
    )
    record = _finish_flow(
        drive(
            "razin_cohen_log_sigma",
            task,
            stepper,
            Stopping.only(end_time=float(t_end)),
            None,
            record_times=times[1:],
        ),
        stepper,
    )
    points = record.sampled("point", times)
    Xs = np.array([(U * s) @ Vt for U, s, Vt in points])
    svals = np.array([s for _, s, _ in points])
    with np.errstate(divide="ignore"):  # log 0 = -inf only if sigma_2 underflowed (depth 2)
        logs = np.log(svals)
    p = np.exp(logs - logs.max(axis=1, keepdims=True))
    p = p / p.sum(axis=1, keepdims=True)
    return _run(
        n,
        record,
        times,
        Xs,
        svals,
        det=d * svals.prod(axis=1),
        effective_rank=np.exp(
            -np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0), axis=1)
        ),
        log_abs_det=logs.sum(axis=1),
    )
