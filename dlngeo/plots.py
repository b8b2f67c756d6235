"""Figures of a comparison, drawn from its ``results.json`` document (matplotlib, Agg).

Up to four PNGs, each readable on its own (a figure with nothing to show is
not written: see :func:`plot_results`):

* ``loss.png``: the loss against flow time (methods that follow a flow:
  ``t = eta k`` for discrete ones) and against wall-clock seconds (every
  method), log scale on the loss.
* ``singular_values.png``: the leading singular values (rank + 3, at most
  10) of the end-to-end matrix against flow time, one panel per flow method: the stage-by-stage
  "incremental learning" staircase from small initialization (Saxe et al.
  2014; Arora, Cohen, Hu & Luo 2019; docs/math.md §3-§5).
* ``trajectory_gap.png``: :math:`\\|\\phi(W(t)) - X(t)\\|_F / \\|X(t)\\|_F` between the
  overparametrized and the intrinsic trajectories against flow time (log y).
* ``effective_rank.png``: the effective rank (Roy & Vetterli 2007) against
  flow time and against wall-clock seconds.

Working from the JSON document (not live objects) means a saved
``results.json`` can be re-plotted: ``plot_results(read_results(path), out)``.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

__all__ = ["plot_results", "FIGURES"]

#: File names written by :func:`plot_results`.
FIGURES = ("loss.png", "singular_values.png", "trajectory_gap.png", "effective_rank.png")

_MAX_SINGULAR_VALUES = 10


def _series(entry: dict[str, Any], key: str) -> np.ndarray:
    values = entry["metrics"].get(key)
    if values is None:
        return np.array([])
    return np.array([np.nan if v is None else v for v in values], dtype=float)


def _positive(y: np.ndarray) -> np.ndarray:
    y = np.array(y, dtype=float)
    y[~(y > 0)] = np.nan
    return y


def _flow_methods(document: dict[str, Any]) -> list[str]:
    return [label for label, e in document["methods"].items() if e.get("time_kind") == "flow"]


def _finish(ax: Any, xlabel: str, ylabel: str, title: str, logy: bool = False) -> None:
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if logy:
        ax.set_yscale("log")
    ax.grid(True, which="major", alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="small", framealpha=0.8)


def _empty(ax: Any, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, fontsize="medium")
    ax.set_xticks([])
    ax.set_yticks([])


def _label(label: str, entry: dict[str, Any]) -> str:
    return f"{label} ({entry['stop_reason']})"


def _metric_vs_time(
    document: dict[str, Any], key: str, path: Path, ylabel: str, title: str, logy: bool
) -> None:
    fig, (ax_flow, ax_wall) = plt.subplots(1, 2, figsize=(12, 4.5))
    flow = _flow_methods(document)
    drew_flow = drew_wall = False
    for label, entry in document["methods"].items():
        y = _series(entry, key)
        if y.size == 0:
            continue
        y = _positive(y) if logy else y
        if label in flow:
            ax_flow.plot(_series(entry, "time"), y, label=label, lw=1.6)
            drew_flow = True
        wall = _series(entry, "wall_time")
        if wall.size == y.size:
            ax_wall.plot(
                wall, y, label=_label(label, entry), lw=1.6, marker="." if y.size < 60 else None
            )
            drew_wall = True
    if drew_flow:
        _finish(
            ax_flow,
            "flow time t  (t = step x iteration for discrete methods)",
            ylabel,
            f"{title} vs flow time",
            logy,
        )
    else:
        _empty(ax_flow, "no flow-time method in this comparison")
    if drew_wall:
        _finish(
            ax_wall,
            "wall-clock time (s, log scale)",
            ylabel,
            f"{title} vs wall-clock time (all methods)",
            logy,
        )
        ax_wall.set_xscale("log")
    else:
        _empty(ax_wall, f"no {key} recorded")
    fig.tight_layout()
    _save(fig, path)


def _singular_values(document: dict[str, Any], path: Path) -> None:
    methods = [
        m
        for m in _flow_methods(document)
        if document["methods"][m]["metrics"].get("singular_values")
    ]
    if not methods:
        methods = [
            m for m, e in document["methods"].items() if e["metrics"].get("singular_values")
        ][:1]
    panels = max(1, len(methods))
    fig, axes = plt.subplots(1, panels, figsize=(5.5 * panels, 4.5), squeeze=False)
    target = document.get("problem", {}).get("target_singular_values")
    for ax, label in zip(axes[0], methods):
        entry = document["methods"][label]
        rows = [
            np.array([np.nan if v is None else v for v in sv], dtype=float)
            for sv in entry["metrics"]["singular_values"]
        ]
        rank = int(document.get("problem", {}).get("rank") or _MAX_SINGULAR_VALUES)
        k = min(_MAX_SINGULAR_VALUES, rank + 3, min(len(r) for r in rows))
        S = np.array([r[:k] for r in rows])
        t = _series(entry, "time")
        xlabel = "flow time t" if entry.get("time_kind") == "flow" else "iteration"
        colors = plt.cm.tab10(np.arange(k) % 10)
        for i in range(k):
            ax.plot(t, S[:, i], color=colors[i], lw=1.5, label=f"$\\sigma_{{{i + 1}}}$")
        if target:
            for j, s in enumerate(target[:k]):
                ax.axhline(
                    s, color="grey", ls=":", lw=0.8, label="target $\\sigma_i$" if j == 0 else None
                )
        _finish(ax, xlabel, "singular value of X", f"{label}: leading singular values")
        if ax.get_legend() is not None:
            ax.legend(fontsize="x-small", ncol=2, framealpha=0.8, loc="upper left")
    if not methods:
        _empty(axes[0][0], "no singular_values metric recorded")
    fig.tight_layout()
    _save(fig, path)


def _trajectory_gap(document: dict[str, Any], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    drew = False
    notes: list[str] = []
    for gap in document["trajectory_gap"]:
        y = _positive(np.array([np.nan if v is None else v for v in gap["gap"]], dtype=float))
        if np.isfinite(y).any():
            ax.plot(
                gap["time"],
                y,
                lw=1.6,
                label=f"{gap['overparametrized']} vs {gap['intrinsic']} ({gap['alignment']})",
            )
            drew = True
        zero = [t for t, g in zip(gap["time"], gap["gap"]) if g == 0]
        if zero:
            note = f"gap = 0 (not drawn on the log scale) at t = {', '.join(f'{t:g}' for t in zero[:3])}{' ...' if len(zero) > 3 else ''}"
            if note not in notes:
                notes.append(note)
    if drew:
        _finish(
            ax,
            "flow time t",
            "$\\|\\phi(W(t)) - X(t)\\|_F\\, /\\, \\|X(t)\\|_F$",
            "trajectory gap: overparametrized vs intrinsic",
            logy=True,
        )
        if notes:
            ax.text(
                0.01,
                0.01,
                "; ".join(notes),
                transform=ax.transAxes,
                fontsize="x-small",
                va="bottom",
                color="0.3",
            )
    else:
        _empty(ax, "no overparametrized / intrinsic pair to compare")
    fig.tight_layout()
    _save(fig, path)


def _save(fig: Any, path: Path) -> None:
    """Save ``fig`` as a PNG written whole (:func:`dlngeo.files.atomic_write`) and close it."""
    from .files import atomic_write

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    atomic_write(path, buffer.getvalue())


def _recorded(document: dict[str, Any], key: str) -> bool:
    return any(entry["metrics"].get(key) for entry in document["methods"].values())


def plot_results(document: dict[str, Any], out_dir: str | Path) -> list[Path]:
    """Write the figures of :data:`FIGURES` that have something to show into ``out_dir``; return their paths.

    ``loss.png`` always; ``singular_values.png`` and ``effective_rank.png``
    when some method recorded that metric; ``trajectory_gap.png`` when the
    comparison has an overparametrized / intrinsic pair.
    """
    out = Path(out_dir)
    paths = []
    loss, singular_values, gap, effective_rank = (out / name for name in FIGURES)
    _metric_vs_time(document, "loss", loss, "training loss", "loss", logy=True)
    paths.append(loss)
    if _recorded(document, "singular_values"):
        _singular_values(document, singular_values)
        paths.append(singular_values)
    if document["trajectory_gap"]:
        _trajectory_gap(document, gap)
        paths.append(gap)
    if _recorded(document, "effective_rank"):
        _metric_vs_time(
            document,
            "effective_rank",
            effective_rank,
            r"effective rank  $\exp H(\sigma / \|\sigma\|_1)$",
            "effective rank",
            logy=False,
        )
        paths.append(effective_rank)
    return paths
