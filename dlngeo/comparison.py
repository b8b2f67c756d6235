"""A :class:`Comparison`: every method's Record on one task, and the trajectory gaps between them.

The trajectory gap between an overparametrized method (factors ``W(t)``) and
an intrinsic one (end-to-end ``X(t)``) is

.. math:: \\|\\phi(W(t)) - X(t)\\|_F / \\|X(t)\\|_F

at the overparametrized method's sample times inside the intrinsic run's
time range (:func:`trajectory_gap`). :meth:`Comparison.to_dict` is the
``results.json`` document (schema in :mod:`dlngeo.results`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from .lowrank import to_dense

__all__ = ["Comparison", "Interrupted", "trajectory_gap"]


@dataclass
class Comparison:
    """Every method's :class:`~dlngeo.dynamics.record.Record` on one task, and their trajectory gaps.

    Attributes:
        config: The merged, validated config.
        problem: Summary of the problem (loss, shape, dims, rank, seed, initial loss).
        records: Method label -> Record.
        solvers: Method label -> registered solver name.
        flow_time: Method label -> whether its Record's times are flow times.
        wall_times: Method label -> wall-clock seconds at each recorded sample.
        trajectory_gap: One entry per (overparametrized, intrinsic) pair:
            ``{"overparametrized", "intrinsic", "alignment", "time", "gap"}``.
        status: ``"running"`` while methods run, ``"interrupted"`` after
            Ctrl-C (the interrupted method has ``stop_reason
            "interrupted"``), else ``"complete"``.
    """

    config: dict[str, Any]
    problem: dict[str, Any]
    records: dict[str, Any] = field(default_factory=dict)
    solvers: dict[str, str] = field(default_factory=dict)
    flow_time: dict[str, bool] = field(default_factory=dict)
    wall_times: dict[str, list[float]] = field(default_factory=dict)
    trajectory_gap: list[dict[str, Any]] = field(default_factory=list)
    status: str = "complete"
    created: str = field(
        default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime())
    )

    def to_dict(self) -> dict[str, Any]:
        """The ``results.json`` document (schema in :mod:`dlngeo.results`)."""
        from .results import SCHEMA, to_json_value

        methods = {}
        for label, record in self.records.items():
            entry = record.to_dict()
            entry.pop("method", None)
            walls = self.wall_times.get(label, [])
            if len(walls) == len(record.times):
                entry["metrics"]["wall_time"] = list(walls)
            methods[label] = {
                "solver": self.solvers[label],
                "time_kind": "flow" if self.flow_time.get(label) else "iteration",
                **entry,
                "final_loss": _finite_or_none(record.final_loss),
                "iterations": int(record.n_iterations),
                "wall_time_s": float(record.wall_time_s),
            }
        return to_json_value(
            {
                "schema": SCHEMA,
                "dlngeo_version": __version__,
                "created": self.created,
                "status": self.status,
                "config": self.config,
                "problem": self.problem,
                "methods": methods,
                "trajectory_gap": self.trajectory_gap,
            }
        )

    def table(self) -> str:
        """The terminal table: method, final loss, iterations, evaluations, wall time, stop reason."""
        header = (
            "method",
            "final loss",
            "iterations",
            "evaluations",
            "wall time (s)",
            "stop reason",
        )
        rows = []
        for label, record in self.records.items():
            evals = ", ".join(f"{k} {v}" for k, v in record.evaluations.items()) or "-"
            rows.append(
                (
                    label,
                    f"{record.final_loss:.3e}",
                    str(record.n_iterations),
                    evals,
                    f"{record.wall_time_s:.3g}",  # 3 digits: a 3 ms run is not "0.00"
                    record.stop_reason,
                )
            )
        widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
        lines = [
            "  ".join(h.ljust(w) for h, w in zip(header, widths)),
            "  ".join("-" * w for w in widths),
        ]
        lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
        for gap in self.trajectory_gap:
            if gap["gap"]:
                finite = [g for g in gap["gap"] if g is not None and math.isfinite(g)]
                worst = max(finite) if finite else float("nan")
                lines.append(
                    f"trajectory gap {gap['overparametrized']} vs {gap['intrinsic']}: max {worst:.2e} over t in "
                    f"[{gap['time'][0]:.3g}, {gap['time'][-1]:.3g}] ({gap['alignment']}, {len(gap['time'])} times)"
                )
        return "\n".join(lines)

    def write(self, out_dir: str | Path, *, plots: bool = True) -> list[Path]:
        """Write ``results.json`` and (unless ``plots=False``) the PNGs into ``out_dir``; return the paths.

        Only these named files are written; nothing else in ``out_dir`` is touched.

        Raises:
            ValueError: ``out_dir`` exists and is not a directory.
        """
        from .results import write_results

        out = Path(out_dir)
        if out.exists() and not out.is_dir():
            raise ValueError(f"out: {str(out)!r} exists and is not a directory")
        out.mkdir(parents=True, exist_ok=True)
        document = self.to_dict()
        paths = [write_results(document, out / "results.json")]
        if plots:
            from .plots import plot_results

            paths += plot_results(document, out)
        return paths


def _finite_or_none(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during :func:`~dlngeo.experiment.compare`: the comparison so far travels with it.

    Attributes:
        comparison: Every finished method, and the interrupted one (``label``)
            with the samples it had recorded and ``stop_reason "interrupted"``;
            ``status`` is ``"interrupted"``.
        label: The method that was running.
    """

    def __init__(self, comparison: Comparison, label: str):
        super().__init__(f"interrupted during {label}")
        self.comparison = comparison
        self.label = label


class _Progress:
    """The tqdm bar of a comparison: one tick per method; the running method named from its start.

    The description is ``"<name> [<label>]"`` and the postfix the running
    method's last recorded loss, redrawn at most every ``interval`` seconds.
    """

    def __init__(self, bar: Any, name: str, interval: float = 0.5):
        self.bar, self.name, self.interval = bar, name, interval
        self._drawn = 0.0

    def start(self, label: str) -> None:
        self.bar.set_description_str(f"{self.name} [{label}]", refresh=False)
        self.bar.set_postfix_str(f"{label}: started", refresh=True)
        self._drawn = time.perf_counter()

    def loss(self, label: str, value: float) -> None:
        self.bar.set_postfix_str(f"{label}: loss {value:.2e}", refresh=False)
        now = time.perf_counter()
        if now - self._drawn >= self.interval:
            self.bar.refresh()
            self._drawn = now

    def done(self) -> None:
        self.bar.update(1)


class _Capture:
    """The callback ``compare`` hands a method: wall time and (if asked) the end-to-end point per sample."""

    def __init__(self, keep_points: bool, progress: _Progress | None = None, label: str = ""):
        self.keep_points = keep_points
        self.started = time.perf_counter()
        self.times: list[float] = []
        self.walls: list[float] = []
        self.points: list[np.ndarray] = []
        self.progress = progress
        self.label = label
        self.record: Any = None  # the running method's Record, as last seen

    def __call__(self, state: Any, record: Any) -> None:
        self.times.append(float(state.time))
        self.walls.append(time.perf_counter() - self.started)
        if self.keep_points:
            self.points.append(np.array(to_dense(state.point), dtype=float, copy=True))
        self.record = record
        if self.progress is not None and record is not None and record.metrics.get("loss"):
            self.progress.loss(self.label, record.metrics["loss"][-1])

    def interrupted(self, solver: str) -> Any:
        """The Record of a method stopped by Ctrl-C: its samples so far, ``stop_reason "interrupted"``."""
        from .dynamics.record import Record

        record = Record(method=solver)
        seen = self.record
        if seen is not None:
            n = min(len(seen.times), len(seen.iterations), len(self.times))
            record.times, record.iterations = list(seen.times[:n]), list(seen.iterations[:n])
            record.metrics = {k: list(v[:n]) for k, v in seen.metrics.items() if len(v) >= n}
            record.time_kind, record.info = seen.time_kind, dict(seen.info)
            record.n_iterations = int(record.iterations[-1]) if n else 0
            del self.times[n:], self.walls[n:], self.points[n:]
        else:
            del self.times[:], self.walls[:], self.points[:]
        record.stop_reason = "interrupted"
        record.wall_time_s = time.perf_counter() - self.started
        return record


def trajectory_gap(
    over_times: Sequence[float],
    over_points: Sequence[np.ndarray],
    intrinsic_times: Sequence[float],
    intrinsic_points: Sequence[np.ndarray],
    *,
    rtol: float = 1e-9,
) -> dict[str, Any]:
    """``||phi(W(t)) - X(t)||_F / ||X(t)||_F`` at the overparametrized sample times ``t`` within the intrinsic range.

    Where the intrinsic run sampled ``t`` itself (to ``rtol``) that sample is
    used; otherwise ``X(t)`` is linearly interpolated between its two
    neighbouring samples and the result is marked ``"interpolated"``.
    """
    t_int = np.asarray(intrinsic_times, dtype=float)
    out_t, out_gap, exact = [], [], True
    if t_int.size == 0:
        return {"alignment": "exact", "time": [], "gap": []}
    order = np.argsort(t_int, kind="stable")
    t_int = t_int[order]
    pts = [intrinsic_points[i] for i in order]
    for t, P in zip(over_times, over_points):
        tol = rtol * max(1.0, abs(t))
        if t < t_int[0] - tol or t > t_int[-1] + tol:
            continue
        j = int(np.searchsorted(t_int, t - tol))
        if j < t_int.size and abs(t_int[j] - t) <= tol:
            X = pts[j]
        else:
            exact = False
            lo, hi = j - 1, j
            w = (t - t_int[lo]) / (t_int[hi] - t_int[lo])
            X = (1 - w) * pts[lo] + w * pts[hi]
        norm = float(np.linalg.norm(X))
        diff = float(np.linalg.norm(np.asarray(P) - X))
        out_t.append(float(t))
        out_gap.append(diff / norm if norm > 0 else (0.0 if diff == 0 else float("inf")))
    return {"alignment": "exact" if exact else "interpolated", "time": out_t, "gap": out_gap}
