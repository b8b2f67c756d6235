"""``results.json``: the documented, JSON-only summary of a comparison.

Schema (``"schema": "dlngeo.comparison/1"``)::

    {
      "schema": "dlngeo.comparison/1",
      "dlngeo_version": "0.1.0",
      "created": "2026-01-01T00:00:00+00:00",     # UTC, ISO 8601
      "config": {...},                              # the merged, validated config
      "problem": {"loss": str, "shape": [m, n], "dims": [d_0, ..., d_N],
                  "depth": N, "rank": r, "initial_loss": float, "seed": int},
      "methods": {
        "<label>": {
          "solver": str,                 # registered solver name
          "time_kind": "flow" | "iteration",   # what metrics.time means
          "final_loss": float | null,
          "iterations": int,
          "evaluations": {"loss": int, "gradient": int, ...},
          "wall_time_s": float,
          "stop_reason": str,            # one of dlngeo.dynamics.record.STOP_REASONS
          "metrics": {"time": [float],       # flow time (or iteration, see time_kind)
                      "iteration": [int],
                      "wall_time": [float],  # seconds since the method started
                      "loss": [float],
                      "<metric>": [float | [float]]},  # e.g. singular_values: one list per sample
          "info": {...}
        }, ...
      },
      "trajectory_gap": [
        {"overparametrized": "<label>", "intrinsic": "<label>",
         "alignment": "exact" | "interpolated",
         "time": [float], "gap": [float]}, ...
      ]
    }

Non-finite numbers (a diverged loss) are written as ``null`` so that the file
is strict JSON. :func:`check_results` validates a loaded document against
this schema (used by the tests and by ``dlngeo report``-style readers).

:class:`ResultsStore` keeps many such documents in one SQLite file (the
standard library's ``sqlite3``): a ``runs`` table (one row per comparison,
with the whole document) and a ``methods`` table (one row per method, the
summary columns), so that sweeps can be queried with plain SQL.
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "SCHEMA",
    "ResultsStore",
    "insert_document",
    "to_json_value",
    "write_results",
    "read_results",
    "check_results",
]

SCHEMA = "dlngeo.comparison/1"

_METHOD_KEYS = {
    "solver": str,
    "time_kind": str,
    "final_loss": (float, type(None)),
    "iterations": int,
    "evaluations": dict,
    "wall_time_s": float,
    "stop_reason": str,
    "metrics": dict,
    "info": dict,
}


def to_json_value(value: Any) -> Any:
    """Plain JSON value of ``value``: arrays to lists, numpy scalars to Python, NaN/inf to ``None``."""
    if isinstance(value, np.ndarray):
        return to_json_value(value.tolist())
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): to_json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json_value(v) for v in value]
    if isinstance(value, (str, int, bool)) or value is None:
        return value
    return repr(value)


def write_results(document: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write ``document`` (already in the schema above) as strict JSON; return the path.

    The file is written to a fresh temporary sibling and renamed, so a crash
    never leaves a half-written ``results.json`` and no other file is touched.
    """
    path = Path(path)
    document = to_json_value(document)
    check_results(document)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(document, fh, indent=1, allow_nan=False)
            fh.write("\n")
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    return path


def read_results(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load and validate a ``results.json``."""
    with open(path, encoding="utf-8") as fh:
        document = json.load(fh)
    check_results(document)
    return document


def _fail(where: str, message: str) -> None:
    raise ValueError(f"results {where}: {message}")


def _is(value: Any, types: Any) -> bool:
    types = types if isinstance(types, tuple) else (types,)
    if isinstance(value, bool) and bool not in types:
        return False
    if float in types and isinstance(value, int) and not isinstance(value, bool):
        return True
    return isinstance(value, types)


def check_results(document: dict[str, Any]) -> None:
    """Raise ``ValueError`` naming the first field that does not follow the schema."""
    if not isinstance(document, dict):
        _fail("document", "must be a JSON object")
    if document.get("schema") != SCHEMA:
        _fail("schema", f"must be {SCHEMA!r}, got {document.get('schema')!r}")
    for key in ("dlngeo_version", "created", "config", "problem", "methods", "trajectory_gap"):
        if key not in document:
            _fail(key, "is missing")
    if not isinstance(document["methods"], dict):
        _fail("methods", "must be an object")
    for label, entry in document["methods"].items():
        for key, types in _METHOD_KEYS.items():
            if key not in entry:
                _fail(f"methods.{label}.{key}", "is missing")
            if not _is(entry[key], types):
                _fail(f"methods.{label}.{key}", f"has type {type(entry[key]).__name__}")
        if entry["time_kind"] not in ("flow", "iteration"):
            _fail(
                f"methods.{label}.time_kind",
                f"must be 'flow' or 'iteration', got {entry['time_kind']!r}",
            )
        series = entry["metrics"]
        for key in ("time", "iteration", "loss"):
            if not isinstance(series.get(key), list):
                _fail(f"methods.{label}.metrics.{key}", "must be a list")
        n = len(series["time"])
        for key, values in series.items():
            if not isinstance(values, list) or len(values) != n:
                _fail(f"methods.{label}.metrics.{key}", f"must be a list of {n} samples")
    if not isinstance(document["trajectory_gap"], list):
        _fail("trajectory_gap", "must be a list")
    for i, gap in enumerate(document["trajectory_gap"]):
        for key in ("overparametrized", "intrinsic", "alignment", "time", "gap"):
            if key not in gap:
                _fail(f"trajectory_gap[{i}].{key}", "is missing")
        if gap["alignment"] not in ("exact", "interpolated"):
            _fail(f"trajectory_gap[{i}].alignment", f"unknown value {gap['alignment']!r}")
        if len(gap["time"]) != len(gap["gap"]):
            _fail(f"trajectory_gap[{i}].gap", "must have one value per time")


_TABLES = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created TEXT NOT NULL,
    loss TEXT, m INTEGER, n INTEGER, depth INTEGER, rank INTEGER, seed INTEGER,
    initial_loss REAL,
    document TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS methods (
    run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    label TEXT NOT NULL,
    solver TEXT NOT NULL,
    final_loss REAL,
    iterations INTEGER,
    wall_time_s REAL,
    stop_reason TEXT,
    PRIMARY KEY (run_id, label)
);
"""


def insert_document(db: sqlite3.Connection, document: dict[str, Any]) -> int:
    """Insert one results document into the ``runs`` and ``methods`` tables of ``db``.

    No commit: the caller owns the transaction (so that a sweep's ledger can
    store a run's results and mark it done in one transaction).
    """
    document = to_json_value(document)
    check_results(document)
    problem = document["problem"]
    shape = problem.get("shape") or [None, None]
    cursor = db.execute(
        "INSERT INTO runs (created, loss, m, n, depth, rank, seed, initial_loss, document)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            document["created"],
            problem.get("loss"),
            shape[0],
            shape[1],
            problem.get("depth"),
            problem.get("rank"),
            problem.get("seed"),
            problem.get("initial_loss"),
            json.dumps(document, allow_nan=False),
        ),
    )
    run_id = int(cursor.lastrowid or 0)
    db.executemany(
        "INSERT INTO methods (run_id, label, solver, final_loss, iterations, wall_time_s, stop_reason)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        [
            (
                run_id,
                label,
                e["solver"],
                e["final_loss"],
                e["iterations"],
                e["wall_time_s"],
                e["stop_reason"],
            )
            for label, e in document["methods"].items()
        ],
    )
    return run_id


class ResultsStore:
    """Comparisons in one SQLite file: ``runs`` (one row per comparison) and ``methods`` (one per method).

    Example::

        with ResultsStore("results.sqlite") as store:
            run_id = store.add(comparison.to_dict())
            store.methods(solver="riemannian_tr")   # rows as dicts
            store.get(run_id)                        # the whole results.json document

    Args:
        path: The database file (created if missing; ``":memory:"`` for a temporary one).
    """

    def __init__(self, path: str | os.PathLike[str]):
        self.path = str(path)
        if self.path != ":memory:" and Path(self.path).is_dir():
            raise ValueError(f"path {self.path!r} is a directory, not a database file")
        self._db = sqlite3.connect(self.path)
        self._db.row_factory = sqlite3.Row
        self._db.executescript(_TABLES)

    def __enter__(self) -> ResultsStore:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        self._db.close()

    def add(self, document: dict[str, Any]) -> int:
        """Store one results document (validated first); return its run id."""
        with self._db:
            return insert_document(self._db, document)

    def runs(self) -> list[dict[str, Any]]:
        """One dict per stored comparison (without the document), oldest first."""
        rows = self._db.execute(
            "SELECT id, created, loss, m, n, depth, rank, seed, initial_loss FROM runs ORDER BY id"
        )
        return [dict(r) for r in rows]

    def methods(self, run_id: int | None = None, solver: str | None = None) -> list[dict[str, Any]]:
        """Method rows, optionally of one run and/or one solver."""
        query, args = "SELECT * FROM methods WHERE 1=1", []
        if run_id is not None:
            query, args = query + " AND run_id = ?", args + [int(run_id)]
        if solver is not None:
            query, args = query + " AND solver = ?", args + [solver]
        return [dict(r) for r in self._db.execute(query + " ORDER BY run_id, rowid", args)]

    def get(self, run_id: int) -> dict[str, Any]:
        """The stored results document of ``run_id``."""
        row = self._db.execute("SELECT document FROM runs WHERE id = ?", (int(run_id),)).fetchone()
        if row is None:
            raise ValueError(f"run_id {run_id} is not in {self.path!r}")
        return json.loads(row["document"])
