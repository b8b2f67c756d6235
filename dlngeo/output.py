"""Where a comparison's results go, saved as each method ends: an output folder and a SQLite store.

:class:`RunOutput` is what ``dlngeo compare`` and ``dlngeo run`` write
through, and works the same from Python::

    with RunOutput("runs/a", db="runs.sqlite") as output:   # checks; creates nothing
        comparison = compare(config, on_start=output.start, on_method=output.update)
        output.finish(comparison)                             # the figures

* Before anything runs, ``RunOutput(...)`` checks that the folder can be
  created (no regular file on its path, a writable nearest existing
  folder), that it does not already hold a run's results (``results.json``
  or a figure) unless ``overwrite=True``, and that ``db`` is an SQLite file
  with dlngeo's tables or can be created; :meth:`start` then creates them
  (the first real write, still before any method runs). Each failure is an
  :class:`OutputError` naming the option.
* :meth:`update` rewrites ``results.json`` (``"status": "running"`` until the
  last method, see :mod:`dlngeo.results`) and replaces the run's rows in the
  store after every method, so a killed process keeps every finished
  method; after Ctrl-C the interrupted method is in both with
  ``stop_reason "interrupted"``.
* Every file is written whole (a temporary sibling renamed over it) with
  the mode an ordinary ``open`` gives (``0o666`` less the umask), the
  figures as well as ``results.json``.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any

from .comparison import Comparison
from .plots import FIGURES
from .results import ResultsStore, write_results

__all__ = ["OutputError", "RunOutput"]

RESULTS = "results.json"


class OutputError(ValueError):
    """An output that cannot be written: ``option`` is ``"out"`` or ``"db"``."""

    def __init__(self, option: str, message: str):
        super().__init__(f"{option}: {message}")
        self.option = option
        self.message = message


def _nearest_existing(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _writable_folder(option: str, path: Path, what: str) -> None:
    """Raise unless ``path`` (or its nearest existing ancestor) is a folder we may write in."""
    anchor = _nearest_existing(path)
    if not anchor.is_dir():
        raise OutputError(
            option, f"cannot create {what} {str(path)!r}: {str(anchor)!r} is not a directory"
        )
    if not os.access(anchor, os.W_OK | os.X_OK):
        if anchor == path.absolute():
            raise OutputError(option, f"{what} {str(path)!r} is not writable")
        raise OutputError(
            option, f"cannot create {what} {str(path)!r}: {str(anchor)!r} is not writable"
        )


class RunOutput:
    """An output folder (``results.json`` and the figures) and an optional SQLite store.

    Args:
        out: The output folder (created with its parents by :meth:`start`).
        db: A SQLite file (:class:`~dlngeo.results.ResultsStore`) that gets
            one run (a ``runs`` row and one ``methods`` row per method), or ``None``.
        plots: Draw the figures in :meth:`finish`.
        overwrite: Replace the results of an earlier run in ``out`` (its
            ``results.json`` and figures; nothing else is touched). Without
            it such a folder is refused.

    Raises:
        OutputError: ``out`` or ``db`` cannot be used (checked without creating anything).
    """

    def __init__(
        self,
        out: str | os.PathLike[str],
        *,
        db: str | os.PathLike[str] | None = None,
        plots: bool = True,
        overwrite: bool = False,
    ):
        self.out = Path(out)
        self.db = None if db is None else Path(db)
        self.plots = plots
        self.overwrite = overwrite
        self.run_id: int | None = None
        self.written = False  # whether this run has saved anything yet
        self.saved: dict[str, str] = {}  # label -> stop reason, as last saved
        self._store: ResultsStore | None = None
        self._check_out()
        if self.db is not None:
            self._check_db(self.db)

    # ------------------------------------------------------------------ checks
    def _check_out(self) -> None:
        out = self.out
        if out.exists() and not out.is_dir():
            raise OutputError("out", f"{str(out)!r} exists and is not a directory")
        _writable_folder("out", out, "directory")
        held = [name for name in (RESULTS, *FIGURES) if (out / name).exists()]
        if held and not self.overwrite:
            raise OutputError(
                "out",
                f"{str(out)!r} already holds a run's results ({', '.join(held)}); "
                "pass --overwrite to replace them, or choose another --out",
            )

    @staticmethod
    def _check_db(db: Path) -> None:
        if db.is_dir():
            raise OutputError("db", f"{str(db)!r} is a directory, not a database file")
        if db.exists():
            try:
                ResultsStore.check(db)
            except ValueError as exc:
                raise OutputError("db", _strip_path(str(exc), db)) from None
            if not os.access(db, os.W_OK) or not os.access(db.absolute().parent, os.W_OK):
                raise OutputError("db", f"{str(db)!r} (or its folder) is not writable")
            return
        _writable_folder("db", db, "database")
        if not db.absolute().parent.is_dir():
            raise OutputError(
                "db", f"cannot create {str(db)!r}: folder {str(db.parent)!r} does not exist"
            )

    # ------------------------------------------------------------------ writing
    def start(self, comparison: Comparison) -> None:
        """Create the folder and the store and save the empty run (``status "running"``)."""
        try:
            self.out.mkdir(parents=True, exist_ok=True)
            if self.overwrite:
                for name in FIGURES:  # an earlier run's figures must not sit beside the new results
                    (self.out / name).unlink(missing_ok=True)
            for name in (RESULTS, *FIGURES):  # temporary files of a process killed mid-write
                for stale in self.out.glob(f".{name}.*.tmp"):
                    stale.unlink(missing_ok=True)
        except OSError as exc:
            raise OutputError(
                "out", f"cannot create {str(self.out)!r}: {exc.strerror or exc}"
            ) from None
        if self.db is not None:
            try:
                self._store = ResultsStore(self.db)
            except ValueError as exc:
                raise OutputError("db", _strip_path(str(exc), self.db)) from None
        self._save(comparison)  # the first real write of both, before any method runs

    def update(self, comparison: Comparison, label: str) -> None:
        """Save the comparison after method ``label`` ended."""
        self._save(comparison)

    def _save(self, comparison: Comparison) -> None:
        document = comparison.to_dict()
        try:
            write_results(document, self.out / RESULTS)
        except OSError as exc:
            raise OutputError(
                "out", f"cannot write {str(self.out / RESULTS)!r}: {exc.strerror or exc}"
            ) from None
        if self._store is not None:
            try:
                self.run_id = self._store.save(document, self.run_id)
            except sqlite3.Error as exc:
                raise OutputError("db", f"cannot write to {str(self.db)!r}: {exc}") from None
        self.written = True
        self.saved = {label: e["stop_reason"] for label, e in document["methods"].items()}

    def finish(self, comparison: Comparison) -> list[Path]:
        """Draw the figures (unless ``plots=False``); return every file written in ``out``."""
        paths = [self.out / RESULTS]
        if self.plots:
            from .plots import plot_results

            paths += plot_results(comparison.to_dict(), self.out)
        return paths

    def summary(self) -> str:
        """What is saved so far, in words (for the line printed after Ctrl-C)."""
        if not self.written:
            return "nothing written"
        finished = [k for k, v in self.saved.items() if v != "interrupted"]
        stopped = [k for k, v in self.saved.items() if v == "interrupted"]
        text = f"{self.out / RESULTS} holds {len(finished)} finished method(s)"
        if stopped:
            text += f" and {', '.join(stopped)} (interrupted)"
        if self.run_id is not None:
            text += f", also run {self.run_id} in {self.db}"
        return text

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None

    def __enter__(self) -> RunOutput:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _strip_path(message: str, path: Path) -> str:
    """``ResultsStore``'s "path '...': reason" as "'...': reason"."""
    prefix = f"path {str(path)!r}"
    return f"{str(path)!r}{message[len(prefix) :]}" if message.startswith(prefix) else message
