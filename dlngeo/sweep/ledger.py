"""The ledger of a sweep: one SQLite row per run, in the results store's file.

Tables (next to :class:`dlngeo.results.ResultsStore`'s ``runs`` and ``methods``,
which hold each finished run's whole ``results.json`` document)::

    sweeps(name PRIMARY KEY, created, spec)          -- spec: JSON {axes, report, source}
    sweep_runs(id, sweep, point, config_hash, axes, seed, config,
               status, reason, started, ended, worker, attempts,
               run_id -> runs.id, summary)           -- UNIQUE (sweep, config_hash)

``status`` is one of :data:`STATUSES`; ``axes`` is JSON (dotted key -> value,
``seed`` included); ``summary`` is JSON, per method: ``solver``,
``final_loss``, ``stop_reason``, ``iterations``, ``wall_time_s`` and the last
value of every recorded metric. Only the coordinating process writes. The
file is in WAL mode and every state change is one transaction: a run's
results document, its summary and its status ``done`` are committed together,
so a crash at any moment leaves each run either finished or not, never
stored twice.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..results import _TABLES, insert_document, to_json_value
from ..validation import check_choice
from .spec import Point, Sweep

__all__ = ["STATUSES", "Ledger", "now", "summarize_document"]

#: The states of a run.
STATUSES = ("pending", "running", "done", "failed", "interrupted")

_LEDGER_TABLES = """
CREATE TABLE IF NOT EXISTS sweeps (
    name TEXT PRIMARY KEY,
    created TEXT NOT NULL,
    spec TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS sweep_runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    sweep TEXT NOT NULL REFERENCES sweeps(name),
    point INTEGER NOT NULL,
    config_hash TEXT NOT NULL,
    axes TEXT NOT NULL,
    seed INTEGER,
    config TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'running', 'done', 'failed', 'interrupted')),
    reason TEXT,
    started TEXT,
    ended TEXT,
    worker TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    run_id INTEGER REFERENCES runs(id),
    summary TEXT,
    UNIQUE (sweep, config_hash)
);
"""


def now() -> str:
    """UTC time, ISO 8601 with milliseconds."""
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1000):03d}+00:00"


def summarize_document(document: dict[str, Any]) -> dict[str, Any]:
    """Per method: solver, final_loss, stop_reason, iterations, wall_time_s, final metrics."""
    out = {}
    for label, entry in document.get("methods", {}).items():
        finals = {}
        for key, values in entry.get("metrics", {}).items():
            if key in ("iteration", "wall_time") or not values:
                continue
            finals[key] = values[-1]
        out[label] = {
            "solver": entry.get("solver"),
            "final_loss": entry.get("final_loss"),
            "stop_reason": entry.get("stop_reason"),
            "iterations": entry.get("iterations"),
            "wall_time_s": entry.get("wall_time_s"),
            "metrics": finals,
        }
    return to_json_value(out)


class Ledger:
    """Sweep runs in one SQLite file (WAL); the coordinator's only writer.

    Args:
        path: The database file (created if missing, unless ``readonly``).
        readonly: Open for reading only (``dlngeo report``); the file must exist.
    """

    def __init__(self, path: str | Path, readonly: bool = False):
        self.path = str(path)
        if Path(self.path).is_dir():
            raise ValueError(f"--db: {self.path!r} is a directory, not a database file")
        if readonly:
            if not Path(self.path).is_file():
                raise ValueError(f"DB: {self.path!r} is not a ledger file")
            uri = f"file:{Path(self.path).resolve().as_posix()}?mode=ro"
            self._db = sqlite3.connect(uri, uri=True, timeout=30.0)
            self._db.row_factory = sqlite3.Row
            return
        self._db = sqlite3.connect(self.path, timeout=30.0)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_TABLES + _LEDGER_TABLES)

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        self._db.close()

    # ------------------------------------------------------------------ writing
    def register(self, sweep: Sweep) -> None:
        """Record the sweep and one ``pending`` row per new point (one transaction).

        Points already in the ledger (same sweep, same config hash) keep their rows.
        """
        with self._db:
            self._db.execute(
                "INSERT INTO sweeps (name, created, spec) VALUES (?, ?, ?)"
                " ON CONFLICT(name) DO UPDATE SET spec = excluded.spec",
                (sweep.name, now(), json.dumps(sweep.describe())),
            )
            self._db.executemany(
                "INSERT OR IGNORE INTO sweep_runs (sweep, point, config_hash, axes, seed, config,"
                " status) VALUES (?, ?, ?, ?, ?, ?, 'pending')",
                [
                    (
                        sweep.name,
                        p.index,
                        p.config_hash,
                        json.dumps(to_json_value(p.axes)),
                        p.axes.get("seed"),
                        json.dumps(p.config, sort_keys=True),
                    )
                    for p in sweep.points
                ],
            )

    def reset(self, sweep: str, statuses: Iterable[str], reason: str) -> int:
        """Set runs of ``sweep`` in ``statuses`` back to ``pending`` (one transaction); return how many."""
        statuses = list(statuses)
        marks = ",".join("?" * len(statuses))
        with self._db:
            cursor = self._db.execute(
                f"UPDATE sweep_runs SET status = 'pending', reason = ? WHERE sweep = ?"
                f" AND status IN ({marks})",
                (reason, sweep, *statuses),
            )
        return cursor.rowcount

    def start(self, row_id: int, worker: str | None = None) -> None:
        """``pending`` -> ``running``: start time, attempt count."""
        with self._db:
            self._db.execute(
                "UPDATE sweep_runs SET status = 'running', started = ?, ended = NULL, reason = NULL,"
                " worker = ?, attempts = attempts + 1 WHERE id = ?",
                (now(), worker, row_id),
            )

    def finish(self, row_id: int, outcome: dict[str, Any]) -> str:
        """Store a worker's outcome: its results document (if any), summary and status, together.

        ``outcome``: ``status`` (``done`` or ``failed``), ``reason``, ``worker``,
        ``started``, ``ended`` and optionally ``document`` (a results.json).
        Returns the status stored. A run that is not ``running`` any more
        (reset, interrupted) is left alone and ``""`` returned.
        """
        document = outcome.get("document")
        with self._db:
            row = self._db.execute(
                "SELECT status FROM sweep_runs WHERE id = ?", (row_id,)
            ).fetchone()
            if row is None or row["status"] != "running":
                return ""
            run_id = insert_document(self._db, document) if document is not None else None
            summary = json.dumps(summarize_document(document)) if document is not None else None
            self._db.execute(
                "UPDATE sweep_runs SET status = ?, reason = ?, worker = ?, started = ?, ended = ?,"
                " run_id = ?, summary = ? WHERE id = ?",
                (
                    outcome["status"],
                    outcome.get("reason"),
                    outcome.get("worker"),
                    outcome.get("started") or now(),
                    outcome.get("ended") or now(),
                    run_id,
                    summary,
                    row_id,
                ),
            )
        return str(outcome["status"])

    def mark(self, row_ids: Iterable[int], status: str, reason: str) -> None:
        """Set the status of several runs with one reason (one transaction)."""
        check_choice("status", status, STATUSES)
        with self._db:
            self._db.executemany(
                "UPDATE sweep_runs SET status = ?, reason = ?, ended = ? WHERE id = ?",
                [(status, reason, now(), i) for i in row_ids],
            )

    def interrupt(self, sweep: str, reason: str) -> int:
        """Every ``running`` run of ``sweep`` -> ``interrupted`` (one transaction); return how many.

        Only the coordinator writes, so every running run is one of its own.
        """
        with self._db:
            cursor = self._db.execute(
                "UPDATE sweep_runs SET status = 'interrupted', reason = ?, ended = ?"
                " WHERE sweep = ? AND status = 'running'",
                (reason, now(), sweep),
            )
        return cursor.rowcount

    # ------------------------------------------------------------------ reading
    def pending(self, sweep: str) -> list[tuple[int, Point]]:
        """``(row id, point)`` of every pending run of ``sweep``, in point order."""
        rows = self._db.execute(
            "SELECT id, point, config_hash, axes, config FROM sweep_runs"
            " WHERE sweep = ? AND status = 'pending' ORDER BY point",
            (sweep,),
        )
        return [
            (
                int(r["id"]),
                Point(r["point"], json.loads(r["axes"]), json.loads(r["config"]), r["config_hash"]),
            )
            for r in rows
        ]

    def attempts(self, row_id: int) -> int:
        row = self._db.execute("SELECT attempts FROM sweep_runs WHERE id = ?", (row_id,)).fetchone()
        return int(row["attempts"]) if row else 0

    def counts(self, sweep: str) -> dict[str, int]:
        """Status -> number of runs of ``sweep`` (every status present, zeros included)."""
        counts = dict.fromkeys(STATUSES, 0)
        for r in self._db.execute(
            "SELECT status, COUNT(*) AS n FROM sweep_runs WHERE sweep = ? GROUP BY status", (sweep,)
        ):
            counts[r["status"]] = int(r["n"])
        return counts

    def sweeps(self) -> list[dict[str, Any]]:
        """``{"name", "created", "spec"}`` of every sweep in the file, oldest first."""
        try:
            rows = self._db.execute("SELECT name, created, spec FROM sweeps ORDER BY created, name")
        except sqlite3.OperationalError:  # a results store without sweeps (read-only open)
            return []
        return [
            {"name": r["name"], "created": r["created"], "spec": json.loads(r["spec"])}
            for r in rows
        ]

    def rows(self, sweep: str | None = None) -> list[dict[str, Any]]:
        """Every run row (``axes``, ``summary`` decoded), by sweep and point."""
        query = "SELECT * FROM sweep_runs" + (" WHERE sweep = ?" if sweep else "")
        out = []
        for r in self._db.execute(query + " ORDER BY sweep, point", (sweep,) if sweep else ()):
            row = dict(r)
            row["axes"] = json.loads(row["axes"])
            row["config"] = json.loads(row["config"])
            row["summary"] = json.loads(row["summary"]) if row["summary"] else {}
            out.append(row)
        return out
