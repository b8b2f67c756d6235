"""Sweeps: many runs of one config family, on a local pool or a Dask cluster, with a ledger.

``dlngeo sweep SWEEP.toml --db runs.sqlite`` and ``dlngeo report runs.sqlite``:

- :mod:`.spec`: the sweep file -> resolved, validated run configs, each with a config hash;
- :mod:`.ledger`: the SQLite ledger (one row per run, its status and results);
- :mod:`.executors`: in process, a local process pool, or Dask;
- :mod:`.run`: the coordinator (resume after a crash, Ctrl-C, failures as data);
- :mod:`.report`: Markdown/CSV tables, PNG figures and JSON from a ledger.
"""

from __future__ import annotations

from .ledger import STATUSES, Ledger
from .run import SweepInterrupted, SweepSummary, run_sweep
from .spec import Point, Sweep, SweepError, config_hash, load_sweep, resolve_sweep

__all__ = [
    "STATUSES",
    "Ledger",
    "Point",
    "Sweep",
    "SweepError",
    "SweepInterrupted",
    "SweepSummary",
    "config_hash",
    "load_sweep",
    "resolve_sweep",
    "run_sweep",
]
