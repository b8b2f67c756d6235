"""``dlngeo report DB``: a sweep ledger as tables, figures or JSON.

For each sweep in the ledger (or the one named):

- ``<sweep>.md`` and ``<sweep>.csv``: one row per group of runs that differ
  only by seed, and per method: how many runs, done, failed, the stop
  reasons, and mean ± standard deviation over the done runs of ``final_loss``,
  ``iterations``, ``wall_time_s``, ``time_to_target`` and the final value of
  every scalar metric;
- ``<sweep>.png``: the metric ``y`` against the axis ``x``, one line (the
  mean over seeds; each run a faint dot) per value of the axis ``by`` (or
  per combination of values of several axes, ``by = "a,b"``) and per method; an axis is logarithmic when its values are positive and span
  two decades or more.

``time_to_target`` is the wall time of a run that met its stopping target
(stop reason ``loss_below``, ``gradient_norm_below`` or ``converged``) and is
missing otherwise. Defaults of ``x``, ``y``, ``by`` come from the sweep's
``[sweep.report]`` table, else: ``x`` the axis with the most values, ``by``
the next one, ``y`` the first scalar metric (else ``final_loss``).
``--format json`` prints a JSON list, one object per run.
"""

from __future__ import annotations

import csv
import json
import math
import sys
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from .ledger import Ledger

__all__ = ["report", "run_objects", "method_values", "group_table", "figure_lines"]

_REACHED = ("loss_below", "gradient_norm_below", "converged")
_BASE_KEYS = ("final_loss", "iterations", "wall_time_s", "time_to_target")


def run_objects(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The JSON objects of ``--format json``, one per ledger row."""
    keys: tuple[str, ...] = ("sweep", "point", "status", "reason", "config_hash", "axes", "seed")
    keys = (*keys, "started", "ended", "worker", "attempts")
    return [{**{k: row[k] for k in keys}, "methods": row["summary"]} for row in rows]


def method_values(entry: dict[str, Any]) -> dict[str, float]:
    """The numbers of one method of one run: the base keys and every scalar final metric."""
    values: dict[str, float] = {}
    for key in ("final_loss", "iterations", "wall_time_s"):
        if isinstance(entry.get(key), (int, float)):
            values[key] = float(entry[key])
    if entry.get("stop_reason") in _REACHED and "wall_time_s" in values:
        values["time_to_target"] = values["wall_time_s"]
    for key, value in entry.get("metrics", {}).items():
        if isinstance(value, (int, float)) and not isinstance(value, bool) and key != "loss":
            values[key] = float(value)
    return values


def _stats(values: list[float]) -> tuple[float, float]:
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return mean, std


def _text(value: Any) -> str:
    return json.dumps(value) if isinstance(value, (dict, list)) else str(value)


def group_table(rows: list[dict[str, Any]], axes: list[str]) -> tuple[list[str], list[list[Any]]]:
    """Rows grouped by ``axes`` (seed excluded) and method: header and table of cells.

    Number cells are ``(mean, std)`` over the group's done runs (``None`` if none).
    """
    group_axes = [a for a in axes if a != "seed"]
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        groups[tuple(_text(row["axes"].get(a)) for a in group_axes)].append(row)
    keys = list(_BASE_KEYS)
    for row in rows:
        for entry in row["summary"].values():
            keys += [k for k in method_values(entry) if k not in keys]
    header = [*group_axes, "method", "runs", "done", "failed", "stop reasons", *keys]
    table = []
    for group, members in groups.items():
        labels = list(dict.fromkeys(label for r in members for label in r["summary"])) or ["-"]
        statuses = Counter(r["status"] for r in members)
        for label in labels:
            done = [
                r["summary"][label]
                for r in members
                if r["status"] == "done" and label in r["summary"]
            ]
            reasons = Counter(
                r["summary"][label]["stop_reason"] for r in members if label in r["summary"]
            )
            cells: list[Any] = [*group, label, len(members), statuses["done"], statuses["failed"]]
            cells.append(" ".join(f"{k}×{n}" for k, n in sorted(reasons.items())) or "-")
            for key in keys:
                values = [v for v in (method_values(e).get(key) for e in done) if v is not None]
                cells.append(_stats(values) if values else None)
            table.append(cells)
    return header, table


def _fmt(cell: Any) -> str:
    if isinstance(cell, tuple):
        mean, std = cell
        return f"{mean:.3g} ± {std:.2g}"
    return "" if cell is None else str(cell)


def _write_tables(name: str, header: list[str], table: list[list[Any]], out: Path) -> list[Path]:
    md = out / f"{name}.md"
    lines = [f"# Sweep {name}", "", "mean ± standard deviation over the seeds' done runs", ""]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "---|" * len(header))
    lines += ["| " + " | ".join(_fmt(c) for c in row) + " |" for row in table]
    md.write_text("\n".join(lines) + "\n", encoding="utf-8")
    path = out / f"{name}.csv"
    first = header.index("stop reasons") + 1
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(
            header[:first] + [f"{k}_{s}" for k in header[first:] for s in ("mean", "std")]
        )
        for row in table:
            numbers = [v for c in row[first:] for v in (c if isinstance(c, tuple) else ("", ""))]
            writer.writerow(list(row[:first]) + numbers)
    return [md, path]


def _defaults(spec: dict[str, Any], rows: list[dict[str, Any]]) -> dict[str, str | None]:
    axes = [a for a in spec.get("axes", []) if a != "seed"]
    counts = {a: len({_text(r["axes"].get(a)) for r in rows}) for a in axes}
    varying = sorted((a for a in axes if counts[a] > 1), key=lambda a: -counts[a])
    chosen: dict[str, str | None] = {"x": None, "y": None, "by": None}
    chosen.update(spec.get("report", {}))
    if chosen["x"] is None and varying:
        chosen["x"] = varying[0]
    if chosen["by"] is None:
        chosen["by"] = next((a for a in varying if a != chosen["x"]), None)
    if chosen["y"] is None:
        metrics = [k for r in rows for e in r["summary"].values() for k in e.get("metrics", {})]
        scalar = [k for k in metrics if k not in ("time", "loss")]
        chosen["y"] = scalar[0] if scalar else "final_loss"
    return chosen


def _by_axes(by: str | None) -> list[str]:
    """The axes of ``by``: none, one, or several separated by commas."""
    return [a.strip() for a in by.split(",")] if by else []


def _group(axes: dict[str, Any], by: str | None) -> str:
    """A run's line label: ``axis = value`` for each axis of ``by``."""
    return ", ".join(f"{a} = {_text(axes.get(a))}" for a in _by_axes(by))


def _natural(label: str) -> list[tuple[int, float, str]]:
    """Sort key of a line label: axis by axis, numbers by value, then text."""
    key = []
    for part in label.split(", "):
        value = part.partition(" = ")[2]
        try:
            key.append((0, float(value), ""))
        except ValueError:
            key.append((1, 0.0, value))
    return key


def _log_scale(values: list[float]) -> bool:
    positive = [v for v in values if v is not None]
    return bool(positive) and min(positive) > 0 and max(positive) / min(positive) >= 100


def figure_lines(
    rows: list[dict[str, Any]], x: str, y: str, by: str | None
) -> dict[tuple[str, str], dict[float, list[float]]]:
    """The figure's data: ``(line label, method) -> x -> the done runs' finite y values``."""
    lines: dict[tuple[str, str], dict[float, list[float]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        xv = row["axes"].get(x)
        if row["status"] != "done" or isinstance(xv, bool) or not isinstance(xv, (int, float)):
            continue
        for label, entry in row["summary"].items():
            value = method_values(entry).get(y)
            if value is not None and math.isfinite(value):
                lines[_group(row["axes"], by), label][float(xv)].append(value)
    return lines


def _figure(
    name: str, rows: list[dict[str, Any]], x: str, y: str, by: str | None, out: Path
) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lines = figure_lines(rows, x, y, by)
    if not lines:
        raise ValueError(f"--y: no done run of sweep {name!r} has a numeric {y!r} against {x!r}")
    methods = sorted({m for _, m in lines})
    groups = sorted({g for g, _ in lines}, key=_natural)
    colors = {
        g: plt.get_cmap("viridis" if len(groups) > 10 else "tab10")(
            i / max(1, len(groups) - 1) if len(groups) > 10 else i
        )
        for i, g in enumerate(groups)
    }
    markers = "osD^vP*X"
    styles = ["-", "--", ":", "-."]
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    xs_all: list[float] = []
    ys_all: list[float] = []
    for (group, method), points in sorted(
        lines.items(), key=lambda kv: (groups.index(kv[0][0]), kv[0][1])
    ):
        xs = sorted(points)
        means = [sum(points[v]) / len(points[v]) for v in xs]
        k = methods.index(method)
        label = ", ".join(p for p in (group, method if len(methods) > 1 else "") if p)
        ax.plot(
            xs,
            means,
            color=colors[group],
            ls=styles[k % 4],
            marker=markers[k % 8],
            ms=4,
            label=label or method,
        )
        for v in xs:
            ax.plot([v] * len(points[v]), points[v], ".", color=colors[group], alpha=0.35, ms=3)
            ys_all += points[v]
        xs_all += xs
    if _log_scale(xs_all):
        ax.set_xscale("log")
    elif all(v == int(v) for v in xs_all):
        from matplotlib.ticker import MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if _log_scale(ys_all):
        ax.set_yscale("log")
    ax.set_xlabel(x)
    ax.set_ylabel(f"{y} (line: mean over seeds; dots: runs)")
    ax.set_title(f"sweep {name}", fontsize=10)
    ax.grid(alpha=0.3, which="both")
    if len(lines) > 5:  # many lines: the legend beside the axes, not over the data
        fig.set_size_inches(8.8, 4.2)
        ax.legend(fontsize=8, bbox_to_anchor=(1.02, 1.0), loc="upper left", borderaxespad=0.0)
    else:
        ax.legend(fontsize=8)
    fig.tight_layout()
    path = out / f"{name}.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def report(
    db: str | Path,
    *,
    out: str | Path = "report",
    fmt: str = "files",
    sweep: str | None = None,
    x: str | None = None,
    y: str | None = None,
    by: str | None = None,
) -> int:
    """Write (``fmt="files"``) or print (``fmt="json"``) the report of a ledger; return 0.

    Raises:
        ValueError: no such ledger or sweep, or ``x``/``by`` not an axis of the sweep.
    """
    with Ledger(db, readonly=True) as ledger:
        sweeps = [s for s in ledger.sweeps() if sweep in (None, s["name"])]
        if not sweeps:
            raise ValueError(
                f"--sweep: no sweep {sweep!r} in {str(db)!r}"
                if sweep
                else f"DB: {str(db)!r} holds no sweep"
            )
        rows = {s["name"]: ledger.rows(s["name"]) for s in sweeps}
    if fmt == "json":
        json.dump([o for s in sweeps for o in run_objects(rows[s["name"]])], sys.stdout, indent=1)
        sys.stdout.write("\n")
        return 0
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out: {str(out)!r} exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    for s in sweeps:
        name, spec = s["name"], s["spec"]
        chosen = _defaults(spec, rows[name])
        chosen.update({k: v for k, v in (("x", x), ("y", y), ("by", by)) if v is not None})
        for key in ("x", "by"):
            for axis in [chosen["x"]] if key == "x" else _by_axes(chosen["by"]):
                if axis is not None and axis not in spec["axes"]:
                    raise ValueError(
                        f"--{key}: {axis!r} is not an axis of sweep {name!r} (axes: {', '.join(spec['axes'])})"
                    )
        header, table = group_table(rows[name], spec["axes"])
        paths = _write_tables(name, header, table, out)
        if chosen["x"] is not None:
            paths.append(
                _figure(name, rows[name], chosen["x"], str(chosen["y"]), chosen["by"], out)
            )
        print(
            f"sweep {name}: {len(rows[name])} runs; wrote {', '.join(p.name for p in paths)} to {out}/"
        )
    return 0
