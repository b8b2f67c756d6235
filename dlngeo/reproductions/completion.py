r"""Deep matrix completion (Arora, Cohen, Hu & Luo 2019): depth sharpens the low-rank bias.

Setting of the paper's official code (docs/math.md §5.2): a square ``n x n``
target :math:`M^* = UV^\top/\sqrt r` with ``U, V ~ N(0, 1)^{n x r}``, rescaled
to :math:`\|M^*\|_F = n` (unit RMS entry); ``|Omega|`` entries observed
uniformly without replacement; the loss is the *mean* squared error on
:math:`\Omega`,

.. math::

    \ell(X) = \frac{1}{|\Omega|}\sum_{(i,j)\in\Omega}(X_{ij} - M^*_{ij})^2,
    \qquad E'(X) = \frac{2}{|\Omega|} P_\Omega(X - M^*);

a depth-``N`` network of square ``n x n`` layers, each entry
:math:`\mathcal N(0, (\text{init\_scale}^{1/N}/\sqrt n)^2)`, trained by
``GroupRMSprop`` (one global running mean of :math:`\sum_k\|\nabla_{W_k}\|^2`,
:math:`\alpha = 0.99`, :math:`\varepsilon = 10^{-4}`; step
``lr / (sqrt(avg / (1 - alpha^t)) + eps)``) until the training loss is
``<= 1e-6``. The test error is the mean of :math:`(X - M^*)^2` over all
:math:`n^2` entries; the effective rank is Roy & Vetterli's (2007)
:math:`\exp H(\sigma/\textstyle\sum\sigma)`. Depth 1 is replaced by the
nuclear-norm minimizer subject to :math:`|X_{ij} - M^*_{ij}| \le 10^{-3}` on
:math:`\Omega` (the paper's convex baseline, solved with cvxpy).

The claim (docs/math.md §5): with few observations, depth >= 3 reaches lower test
error and lower effective rank than depth 2, and beats the nuclear norm.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..dynamics.base import Stopping, Task
from ..dynamics.group_rmsprop import GroupRMSprop
from ..network import DeepLinearNetwork
from ..plugins import create_loss, create_metric, create_sampler, create_solver
from ..state import State
from ..validation import check_choice, check_nonnegative, positive_integer

__all__ = [
    "low_rank_target",
    "uniform_observations",
    "effective_rank",
    "gaussian_factors",
    "GroupRMSprop",
    "CompletionRun",
    "train_deep_factorization",
    "nuclear_norm_completion",
    "completion_sweep",
]


def _rng(rng: Any) -> np.random.Generator:
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


def low_rank_target(n: int, rank: int, rng: Any = None) -> np.ndarray:
    r"""The ``n x n`` ground truth :math:`UV^\top/\sqrt r`, rescaled to Frobenius norm ``n``.

    The registered ``low_rank_target`` data sampler with ``shape = (n, n)``.

    Args:
        n: Size (rows = columns).
        rank: ``1 <= rank <= n``.
        rng: ``numpy.random.Generator`` or seed.
    """
    n = positive_integer(n, "n")
    sampler = create_sampler("low_rank_target", shape=(n, n), rank=positive_integer(rank, "rank"))
    return sampler.sample(_rng(rng))


def uniform_observations(
    shape: tuple[int, int], count: int, rng: Any = None
) -> tuple[np.ndarray, np.ndarray]:
    """``count`` distinct entries of an ``m x n`` matrix, uniformly without replacement.

    Returns:
        ``(rows, cols)`` integer arrays of length ``count``.
    """
    m, n = (int(shape[0]), int(shape[1]))
    count = positive_integer(count, "count")
    if count > m * n:
        raise ValueError(f"count must be at most {m * n} (all entries), got {count}")
    flat = _rng(rng).choice(m * n, size=count, replace=False)
    return flat // n, flat % n


def effective_rank(X: np.ndarray) -> float:
    r"""Roy & Vetterli's effective rank :math:`\exp(-\sum_i p_i \log p_i)`, :math:`p = \sigma/\sum\sigma` (the registered metric)."""
    return float(create_metric("effective_rank")(State(point=np.asarray(X, dtype=float))))


def gaussian_factors(
    network: DeepLinearNetwork, init_scale: float, rng: Any = None
) -> list[np.ndarray]:
    r"""Arora et al.'s Gaussian init: iid :math:`\mathcal N(0, (\text{init\_scale}^{1/N}/\sqrt{d_0})^2)` entries.

    The registered ``gaussian`` initialization with ``width = d_0``. For
    square layers :math:`\|\phi(W)\|_F \approx \text{init\_scale}\sqrt n`.
    """
    sampler = create_sampler("gaussian", init_scale=init_scale, width=network.dims[0])
    return sampler.sample(_rng(rng), network)


@dataclass
class CompletionRun:
    """Result of one completion run.

    Attributes:
        method: ``"depth N"`` or ``"nuclear norm"``.
        depth: ``N`` (``1`` for the nuclear norm).
        observations: ``|Omega|``.
        X: The completed matrix.
        train_loss: Mean squared error on ``Omega``.
        test_error: Mean squared error over all ``n^2`` entries.
        effective_rank: Roy & Vetterli effective rank of ``X``.
        iterations: Optimizer steps (``0`` for the convex solver).
        converged: Training loss reached the threshold (solver status optimal for cvxpy).
        seed: The sweep seed (target, observations and init), when run by :func:`completion_sweep`.
    """

    method: str
    depth: int
    observations: int
    X: np.ndarray
    train_loss: float
    test_error: float
    effective_rank: float
    iterations: int
    converged: bool
    seed: int | None = None


def _summary(method, depth, omega, target, X, iterations, converged) -> CompletionRun:
    rows, cols = omega
    return CompletionRun(
        method=method,
        depth=depth,
        observations=len(rows),
        X=X,
        train_loss=float(np.mean((X[rows, cols] - target[rows, cols]) ** 2)),
        test_error=float(np.mean((X - target) ** 2)),
        effective_rank=effective_rank(X),
        iterations=iterations,
        converged=converged,
    )


def train_deep_factorization(
    target: np.ndarray,
    rows: np.ndarray,
    cols: np.ndarray,
    depth: int,
    *,
    init_scale: float = 1e-3,
    lr: float = 1e-3,
    optimizer: str = "group_rmsprop",
    max_iterations: int = 100_000,
    loss_threshold: float = 1e-6,
    rng: Any = None,
) -> CompletionRun:
    """Train a depth-``N`` square factorization on the observed entries (Arora et al. 2019).

    Args:
        target: The ``n x n`` ground truth (only its entries on ``Omega`` are used for training).
        rows, cols: The observed entries ``Omega``.
        depth: ``N >= 2`` (square ``n x n`` layers).
        init_scale: End-to-end init scale (Gaussian layers, see :func:`gaussian_factors`).
        lr: Learning rate.
        optimizer: ``"group_rmsprop"`` (the paper's) or ``"gd"`` (plain gradient descent).
        max_iterations: Step budget.
        loss_threshold: Stop once the mean squared training error is at or below this.
        rng: Generator or seed for the init.
    """
    target = np.asarray(target, dtype=float)
    if target.ndim != 2 or target.shape[0] != target.shape[1]:
        raise ValueError(f"target must be a square matrix, got shape {target.shape}")
    depth = positive_integer(depth, "depth")
    if depth < 2:
        raise ValueError(
            "depth must be >= 2 (depth 1 is the convex baseline nuclear_norm_completion)"
        )
    check_choice("optimizer", optimizer, ("group_rmsprop", "gd"))
    rows, cols = np.asarray(rows), np.asarray(cols)
    n = target.shape[0]
    net = DeepLinearNetwork([n] * (depth + 1))
    task = Task(
        loss=create_loss(
            "matrix_completion", rows=rows, cols=cols, values=target[rows, cols], shape=(n, n)
        ),
        network=net,
        weights0=gaussian_factors(net, init_scale, rng),
    )
    # Only the start and the end are recorded; the run stops at the loss threshold or the
    # budget (no stationary or divergence test: the paper's loop has none).
    record_every = max_iterations + 1
    if optimizer == "group_rmsprop":
        solver = create_solver("group_rmsprop", lr=lr, record_every=record_every)
    else:
        solver = create_solver("overparametrized_gd", step=lr, record_every=record_every)
    record = solver.run(
        task, Stopping.only(max_iterations=max_iterations, loss_below=loss_threshold)
    )
    return _summary(
        f"depth {depth}",
        depth,
        (rows, cols),
        target,
        record.final_point,
        record.n_iterations,
        record.stop_reason == "loss_below",
    )


def nuclear_norm_completion(
    target: np.ndarray, rows: np.ndarray, cols: np.ndarray, tolerance: float = 1e-3
) -> CompletionRun:
    r"""Minimum nuclear norm subject to :math:`|X_{ij} - M^*_{ij}| \le` ``tolerance`` on ``Omega`` (cvxpy).

    The paper's convex baseline (depth 1 in its figure). Needs the optional
    dependency ``cvxpy`` (``pip install dlngeo[convex]``); solved with SCS
    (as the paper) at tight accuracy, falling back to cvxpy's default solver.

    Raises:
        ImportError: cvxpy is not installed.
    """
    import cvxpy as cp

    target = np.asarray(target, dtype=float)
    rows, cols = np.asarray(rows), np.asarray(cols)
    tolerance = check_nonnegative("tolerance", tolerance)
    X = cp.Variable(target.shape)
    constraints = [cp.abs(X[rows, cols] - target[rows, cols]) <= tolerance]
    problem = cp.Problem(cp.Minimize(cp.normNuc(X)), constraints)
    try:
        problem.solve(solver=cp.SCS, eps=1e-7, max_iters=200_000)
    except cp.SolverError:  # pragma: no cover - solver availability
        problem.solve()
    if X.value is None:
        raise RuntimeError(f"cvxpy found no solution (status {problem.status})")
    return _summary(
        "nuclear norm", 1, (rows, cols), target, np.asarray(X.value), 0, problem.status == "optimal"
    )


def completion_sweep(
    n: int,
    rank: int,
    counts: Sequence[int],
    depths: Sequence[int],
    seeds: Sequence[int],
    *,
    nuclear: bool = True,
    init_scale: float = 1e-3,
    lr: float = 1e-3,
    optimizer: str = "group_rmsprop",
    max_iterations: int = 100_000,
    loss_threshold: float = 1e-6,
    progress: Any = None,
) -> list[CompletionRun]:
    """Every (seed, count, method) of the experiment; the target and Omega depend on the seed only.

    For seed ``s`` the target is drawn from ``default_rng(s)``; the observed
    set for count ``c`` from ``default_rng((s, c))`` (so the sets for
    different counts are independent draws, as in the paper's separate data
    files); the init of depth ``N`` from ``default_rng((s, c, N))``.

    Args:
        progress: Optional callable ``progress(run)`` called after each run.
    """
    runs: list[CompletionRun] = []
    for seed in seeds:
        target = low_rank_target(n, rank, np.random.default_rng(seed))
        for count in counts:
            rows, cols = uniform_observations(
                target.shape, count, np.random.default_rng((seed, count))
            )
            methods: list[Any] = []
            if nuclear:
                methods.append(lambda: nuclear_norm_completion(target, rows, cols))
            for depth in depths:
                methods.append(
                    lambda depth=depth: train_deep_factorization(
                        target,
                        rows,
                        cols,
                        depth,
                        init_scale=init_scale,
                        lr=lr,
                        optimizer=optimizer,
                        max_iterations=max_iterations,
                        loss_threshold=loss_threshold,
                        rng=np.random.default_rng((seed, count, depth)),
                    )
                )
            for method in methods:
                run = method()
                run.seed = seed
                runs.append(run)
                if progress is not None:
                    progress(run)
    return runs
