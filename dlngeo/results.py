"""``results.json``: the documented, JSON-only summary of a comparison.

Schema (``"schema": "dlngeo.comparison/1"``)::

    {
      "schema": "dlngeo.comparison/1",
      "dlngeo_version": "0.1.0",
      "created": "2026-01-01T00:00:00+00:00",     # UTC, ISO 8601
      "status": "complete" | "running" | "interrupted",   # optional; absent means complete
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
                                         # ("interrupted": stopped by Ctrl-C, samples so far)
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

``"status"`` is ``"running"`` while a comparison is written method by method
(a process killed mid-run leaves that, with every finished method), and
``"interrupted"`` after Ctrl-C. Non-finite numbers (a diverged loss) are written as ``null`` so that the file
is strict JSON. :func:`check_results` validates a loaded document against
this schema (used by the tests and by ``dlngeo report``-style readers).

:class:`ResultsStore` keeps many such documents in one SQLite file (the
standard library's ``sqlite3``): a ``runs`` table (one row per comparison,
with the whole document) and a ``methods`` table (one row per method, the
summary columns), so that sweeps can be queried with plain SQL.
:meth:`ResultsStore.save` replaces one run's rows in a transaction, so a
run can be stored method by method and a crash keeps the last complete state.

Every file is written whole or not at all (:func:`~dlngeo.files.atomic_write`: a fresh
temporary sibling, then ``os.replace``), with the mode an ordinary ``open``
would give (``0o666`` less the umask).
"""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path
from typing import Any

from .dynamics.record import to_json_value
from .files import atomic_write

__all__ = [
    "SCHEMA",
    "STATUSES",
    "ResultsStore",
    "insert_document",
    "to_json_value",
    "atomic_write",
    "write_results",
    "read_results",
    "check_results",
]

SCHEMA = "dlngeo.comparison/1"

#: Values of the optional top-level ``"status"``.
STATUSES = ("complete", "running", "interrupted")

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


def write_results(document: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write ``document`` (already in the schema above) as strict JSON; return the path.

    Written by :func:`atomic_write`: a crash never leaves a half-written
    ``results.json`` and no other file is touched.
    """
    document = to_json_value(document)
    check_results(document)
    text = json.dumps(document, indent=1, allow_nan=False) + "\n"
    return atomic_write(path, text.encode("utf-8"))


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
    if document.get("status", "complete") not in STATUSES:
        _fail("status", f"must be one of {', '.join(STATUSES)}, got {document['status']!r}")
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

_COLUMNS = {
    "runs": (
        "id",
        "created",
        "loss",
        "m",
        "n",
        "depth",
        "rank",
        "seed",
        "initial_loss",
        "document",
    ),
    "methods": (
        "run_id",
        "label",
        "solver",
        "final_loss",
        "iterations",
        "wall_time_s",
        "stop_reason",
    ),
}


def _check_tables(db: sqlite3.Connection, path: str) -> None:
    """Refuse an SQLite file whose ``runs`` / ``methods`` tables are someone else's (before creating any)."""
    for table, need in _COLUMNS.items():
        have = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
        if have and not set(need) <= have:
            raise ValueError(
                f"path {path!r}: table {table!r} is not a dlngeo results table "
                f"(missing columns: {', '.join(c for c in need if c not in have)})"
            )


def insert_document(
    db: sqlite3.Connection, document: dict[str, Any], run_id: int | None = None
) -> int:
    """Store one results document in the ``runs`` and ``methods`` tables of ``db``; return its run id.

    ``run_id=None`` inserts a new run; otherwise run ``run_id`` is replaced
    (its row updated, its method rows rewritten). No commit: the caller owns
    the transaction (so that a run saved after each finished method changes
    its run and method rows together, and a sweep's ledger can store a run's
    results and mark it done in one transaction).
    """
    document = to_json_value(document)
    check_results(document)
    problem = document["problem"]
    shape = problem.get("shape") or [None, None]
    columns = (
        document["created"],
        problem.get("loss"),
        shape[0],
        shape[1],
        problem.get("depth"),
        problem.get("rank"),
        problem.get("seed"),
        problem.get("initial_loss"),
        json.dumps(document, allow_nan=False),
    )
    if run_id is None:
        cursor = db.execute(
            "INSERT INTO runs (created, loss, m, n, depth, rank, seed, initial_loss, document)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            columns,
        )
        run_id = int(cursor.lastrowid or 0)
    else:
        cursor = db.execute(
            "UPDATE runs SET created = ?, loss = ?, m = ?, n = ?, depth = ?, rank = ?,"
            " seed = ?, initial_loss = ?, document = ? WHERE id = ?",
            (*columns, int(run_id)),
        )
        if cursor.rowcount != 1:
            raise ValueError(f"run_id {run_id} is not in the results store")
        db.execute("DELETE FROM methods WHERE run_id = ?", (int(run_id),))
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
        try:
            self._db = sqlite3.connect(self.path)
        except sqlite3.Error as exc:
            raise ValueError(f"path {self.path!r}: cannot open a database: {exc}") from None
        self._db.row_factory = sqlite3.Row
        try:
            self._check_columns()
            self._db.executescript(_TABLES)
        except sqlite3.Error as exc:
            self._db.close()
            raise ValueError(f"path {self.path!r}: not a usable SQLite database: {exc}") from None
        except ValueError:
            self._db.close()
            raise

    def _check_columns(self) -> None:
        _check_tables(self._db, self.path)

    @staticmethod
    def check(path: str | os.PathLike[str]) -> None:
        """Raise ``ValueError`` unless the existing file ``path`` is an SQLite database that
        :class:`ResultsStore` can use (its ``runs`` / ``methods`` tables, if any, are dlngeo's).

        Opened read-only: the file is not changed.
        """
        uri = f"{Path(path).absolute().as_uri()}?mode=ro"
        try:
            db = sqlite3.connect(uri, uri=True)
        except sqlite3.Error as exc:
            raise ValueError(f"path {str(path)!r}: cannot open a database: {exc}") from None
        try:
            db.execute("PRAGMA schema_version").fetchone()
            _check_tables(db, str(path))
        except sqlite3.Error as exc:
            raise ValueError(f"path {str(path)!r}: not a usable SQLite database: {exc}") from None
        finally:
            db.close()

    def __enter__(self) -> ResultsStore:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        self._db.close()

    def add(self, document: dict[str, Any]) -> int:
        """Store one results document (validated first); return its run id."""
        return self.save(document)

    def save(self, document: dict[str, Any], run_id: int | None = None) -> int:
        """Store ``document`` as a new run (``run_id=None``) or replace run ``run_id``; return the id.

        One transaction: the run's row and its method rows change together,
        so a run saved after each finished method keeps, after a crash, the
        last state saved.
        """
        with self._db:
            return insert_document(self._db, document, run_id)

    def runs(self) -> list[dict[str, Any]]:
        """One dict per stored comparison (without the document), oldest first."""
        rows = self._db.execute(
            "SELECT id, created, loss, m, n, depth, rank, seed, initial_loss FROM runs ORDER BY id"
        )
        return [dict(r) for r in rows]

    def methods(self, run_id: int | None = None, solver: str | None = None) -> list[dict[str, Any]]:
        """Method rows, optionally of one run and/or one solver."""
        query, args = "SELECT * FROM methods WHERE 1=1", list[Any]()
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
