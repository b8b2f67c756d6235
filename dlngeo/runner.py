"""Running a comparison's methods one after another (used by :func:`dlngeo.experiment.compare`).

:func:`run_methods` runs every method of a :class:`~dlngeo.experiment.Plan`
on its task, fills a :class:`~dlngeo.comparison.Comparison` as each method
ends (recomputing the trajectory gaps whose two methods have ended), and
hands it to ``on_method`` then, so that results can be saved as they come.
Ctrl-C stops the running method: its samples so far are kept with
``stop_reason "interrupted"``, ``on_method`` sees it, and
:class:`~dlngeo.comparison.Interrupted` carries the comparison out.
"""

from __future__ import annotations

import sys
import time
import warnings
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import numpy as np

from .comparison import Comparison, Interrupted, _Capture, _Progress, trajectory_gap

if TYPE_CHECKING:  # pragma: no cover
    from .build import Plan

__all__ = ["BALANCED_TOLERANCE", "SMALL_PROBLEM", "follows", "run_methods"]

#: A start is balanced when ``network.relative_imbalance(W(0))`` is at most this: a
#: balanced factorization computed in double precision is at the rounding level
#: (~ depth * eps ~ 1e-15); 1e-8 ~ sqrt(eps) leaves that rounding a margin of 1e7
#: while an imbalance above it moves phi(W(t)) off the intrinsic flow by more
#: than the integrators' default tolerances (rtol 1e-6 .. 1e-8) can resolve.
BALANCED_TOLERANCE = 1e-8


def run_methods(
    plan: Plan,
    comparison: Comparison,
    *,
    progress: bool = False,
    progress_name: str = "dlngeo compare",
    on_method: Callable[[Comparison, str], None] | None = None,
) -> Comparison:
    """Run the methods of ``plan`` into ``comparison`` (see :func:`dlngeo.experiment.compare`)."""
    config = comparison.config
    keep = {label for pair in plan.gap_pairs for label in pair}
    bar = progress_bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(
            total=len(plan.methods),
            unit="method",
            desc=progress_name,
            file=sys.stderr,
            leave=True,
        )
        progress_bar = _Progress(bar, progress_name)
    captures: dict[str, _Capture] = {}
    limits = _blas_threads(config, plan)
    # Overparametrized partners of a gap run first, so that a continuous
    # intrinsic flow can be sampled at exactly their flow times.
    first = [over for over, _ in plan.gap_pairs]
    order = sorted(
        plan.methods, key=lambda label: (label not in first, list(plan.methods).index(label))
    )
    interrupted = None
    try:
        limits.__enter__()
        for label in order:
            solver, method, stopping = plan.methods[label]
            capture = captures[label] = _Capture(label in keep, progress_bar, label)
            try:
                if progress_bar is not None:
                    progress_bar.start(label)
                method = _aligned(label, solver, method, plan, captures, comparison.records)
                record = _run_one(label, solver, method, plan.task, stopping, capture)
            except KeyboardInterrupt:
                record, interrupted = capture.interrupted(solver), label
            comparison.records[label] = record
            comparison.solvers[label] = solver
            comparison.flow_time[label] = (
                getattr(
                    record,
                    "time_kind",
                    "flow" if getattr(method, "flow_time", False) else "iteration",
                )
                == "flow"
            )
            comparison.wall_times[label] = _align_walls(record.times, capture)
            comparison.records = {
                k: comparison.records[k] for k in plan.methods if k in comparison.records
            }
            comparison.trajectory_gap = _gaps(plan, captures, comparison.records)
            if interrupted is None and len(comparison.records) == len(plan.methods):
                comparison.status = "complete"
            elif interrupted is not None:
                comparison.status = "interrupted"
            if on_method is not None:
                on_method(comparison, label)
            if interrupted is not None:
                raise Interrupted(comparison, interrupted)
            if progress_bar is not None:
                progress_bar.done()
    finally:
        limits.__exit__(None, None, None)
        if bar is not None:
            bar.close()
    return comparison


def _warn_unbalanced(plan: Plan) -> None:
    """Say when an intrinsic-flow method is not the trajectory of the factor methods."""
    if plan.problem["balanced_start"]:
        return
    labels = [
        label for label, (_, method, _) in plan.methods.items() if follows(method, "intrinsic")
    ]
    if labels:
        warnings.warn(
            f"the start is not balanced (relative imbalance "
            f"{plan.problem['relative_imbalance']:.1e} > {BALANCED_TOLERANCE:.0e}): "
            f"{', '.join(labels)} follow(s) the intrinsic flow from phi(W(0)), which is the "
            "factor methods' training trajectory only from a balanced start "
            '(init.sampler = "balanced")',
            UserWarning,
            stacklevel=3,
        )


def _gaps(
    plan: Plan, captures: dict[str, _Capture], records: dict[str, Any]
) -> list[dict[str, Any]]:
    """The trajectory gap of every pair whose two methods have ended."""
    gaps = []
    for over, intrinsic in plan.gap_pairs:
        if over in records and intrinsic in records:
            a, b = captures[over], captures[intrinsic]
            gap = trajectory_gap(a.times, a.points, b.times, b.points)
            gaps.append({"overparametrized": over, "intrinsic": intrinsic, **gap})
    return gaps


def _run_one(
    label: str, solver: str, method: Any, task: Any, stopping: Any, capture: _Capture
) -> Any:
    """Run one method; a numerical blow-up that escapes the method is recorded as ``diverged``."""
    from .dynamics.record import Record

    capture.started = time.perf_counter()
    try:
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            return method.run(task, stopping, capture)
    except (FloatingPointError, OverflowError, np.linalg.LinAlgError) as exc:
        record = Record(method=solver, stop_reason="diverged")
        record.wall_time_s = time.perf_counter() - capture.started
        record.info["error"] = f"{type(exc).__name__}: {exc}".splitlines()[0]
        capture.times.clear()
        capture.walls.clear()
        capture.points.clear()
        return record


def follows(method: Any, flow: str) -> bool:
    """Whether ``method`` declares that its flow-time samples follow ``flow``.

    ``flow`` is ``"overparametrized"`` or ``"intrinsic"``; the method says so
    with its capability attributes ``follows`` and ``flow_time``
    (:class:`~dlngeo.dynamics.base.Method`), whatever its registry name.
    """
    return bool(getattr(method, "flow_time", False)) and getattr(method, "follows", None) == flow


#: Problems with at most this many entries (m n) run with one BLAS thread by default.
SMALL_PROBLEM = 250_000


def _blas_threads(config: dict[str, Any], plan: Plan) -> Any:
    """A context that limits BLAS threads (threadpoolctl) to ``config["threads"]``.

    Default: one thread when ``m n <= SMALL_PROBLEM``. On matrices of a few
    hundred rows a multithreaded BLAS gains little and, on a machine whose
    cores are busy, loses badly (a 100 x 100 SVD measured 7 ms on one thread,
    330 ms on two oversubscribed ones). ``threads = 0`` keeps the library's
    default. Without threadpoolctl installed this is a no-op.
    """
    import contextlib

    m, n = plan.problem["shape"]
    threads = config.get("threads", 1 if m * n <= SMALL_PROBLEM else 0)
    if not threads:
        return contextlib.nullcontext()
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - optional at runtime
        return contextlib.nullcontext()
    return threadpool_limits(limits=int(threads), user_api="blas")


def _aligned(
    label: str,
    solver: str,
    method: Any,
    plan: Plan,
    captures: dict[str, _Capture],
    records: dict[str, Any],
) -> Any:
    """An intrinsic method of a gap pair that ``samples_at_times``, rebuilt at its partner's times.

    Only when the config sets neither ``record_times`` nor ``record_every``
    for it. The grid is the union of the sample times of the partners that
    did not diverge; past the last one ``T`` the grid continues
    geometrically (``T * 1.03^k``, up to ``~84 T``) so the rest of the run
    is still sampled.
    """
    options = plan.options.get(label, {})
    if (
        not getattr(method, "samples_at_times", False)
        or "record_times" in options
        or "record_every" in options
    ):
        return method
    partners = [
        over
        for over, intrinsic in plan.gap_pairs
        if intrinsic == label and over in captures and records[over].stop_reason != "diverged"
    ]
    times = np.unique(
        np.concatenate(
            [np.asarray(captures[p].times, dtype=float) for p in partners] or [np.zeros(0)]
        )
    )
    times = times[np.isfinite(times)]
    if times.size == 0:
        return method
    last = float(times[-1])
    if last > 0:
        times = np.concatenate([times, last * 1.03 ** np.arange(1, 151)])
    from . import plugins

    return plugins.create("solver", solver, **{**options, "record_times": times.tolist()})


def _align_walls(record_times: Iterable[float], capture: _Capture) -> list[float]:
    """Wall-clock seconds of each Record sample, from the callback's calls (matched in order by time)."""
    record_times = list(record_times)
    if len(capture.times) == len(record_times):
        return list(capture.walls)
    walls, j = [], 0
    for t in record_times:
        while j < len(capture.times) - 1 and capture.times[j] < t:
            j += 1
        if not capture.times or abs(capture.times[j] - t) > 1e-12 * max(1.0, abs(t)):
            return []
        walls.append(capture.walls[j])
    return walls
