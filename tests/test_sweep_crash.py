"""dlngeo sweep under crashes: a worker killed, kill -9 of the coordinator, Ctrl-C (real subprocesses)."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_sweep import (  # noqa: F401 - _faults_importable: the autouse fixture
    GRID,
    _faults_importable,
    ledger_rows,
    stored_documents,
    write_sweep,
)

from dlngeo.sweep import load_sweep, run_sweep


def test_local_pool_survives_a_worker_killed_mid_run(tmp_path):
    sweep = load_sweep(
        write_sweep(
            tmp_path / "s.toml",
            '[sweep]\nseeds = 3\n[sweep.grid]\n"methods.gd.solver" = ["overparametrized_gd", "worker_killer"]\n',
        )
    )
    db = tmp_path / "runs.sqlite"
    summary = run_sweep(sweep, db, workers=2, max_attempts=2)
    rows = ledger_rows(db)
    killed = [r for r in rows if r["axes"]["methods.gd.solver"] == "worker_killer"]
    healthy = [r for r in rows if r["axes"]["methods.gd.solver"] != "worker_killer"]
    assert all(r["status"] == "done" for r in healthy) and len(healthy) == 3
    assert all(r["status"] == "failed" and "worker lost" in r["reason"] for r in killed)
    # Each killer ran alone twice (after the first death it is a suspect, isolated).
    assert all(r["attempts"] >= 2 and "(2 times)" in r["reason"] for r in killed)
    assert stored_documents(db) == 3 and summary.counts["failed"] == 3


def _wait_for(db: Path, predicate, timeout: float = 60.0) -> list[dict]:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if db.exists():
            try:
                con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1.0)
                rows = [r[0] for r in con.execute("SELECT status FROM sweep_runs")]
                con.close()
            except sqlite3.OperationalError:
                rows = []
            if rows and predicate(rows):
                return rows
        time.sleep(0.05)
    raise AssertionError("the sweep did not reach the expected state in time")


def _slow_sweep(path: Path) -> Path:
    """The tiny sweep with each run paused first (``slow_gd``): a signal sent once some runs are
    done and one is running finds the others still to do, however fast or loaded the machine."""
    write_sweep(path, GRID, iterations=400)
    text = path.read_text()
    path.write_text(text.replace('solver = "overparametrized_gd"', 'solver = "slow_gd"', 1))
    return path


def _sweep_process(path: Path, db: Path, workers: int = 2) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dlngeo.cli",
            "sweep",
            str(path),
            "--db",
            str(db),
            "--workers",
            str(workers),
            "--no-progress",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )


def test_kill_9_of_the_coordinator_then_rerun_loses_nothing_and_stores_nothing_twice(tmp_path):
    path = _slow_sweep(tmp_path / "s.toml")
    db = tmp_path / "runs.sqlite"
    proc = _sweep_process(path, db)
    try:
        # two runs still pending, each >= slow_gd's pause: the signal cannot come after the end
        _wait_for(db, lambda s: s.count("done") >= 2 and "running" in s and s.count("pending") >= 2)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    before = {r["id"]: r for r in ledger_rows(db)}
    done_before = {i for i, r in before.items() if r["status"] == "done"}
    running = {i for i, r in before.items() if r["status"] == "running"}
    assert done_before and running and len(before) == 8
    summary = run_sweep(load_sweep(path), db, workers=1)
    after = {r["id"]: r for r in ledger_rows(db)}
    assert summary.counts["done"] == 8 and summary.ran == 8 - len(done_before)
    assert all(after[i]["run_id"] == before[i]["run_id"] for i in done_before)  # not repeated
    assert all(after[i]["attempts"] == 2 for i in running)  # run again
    run_ids = [r["run_id"] for r in after.values()]
    assert len(set(run_ids)) == 8 and stored_documents(db) == 8  # nothing stored twice
    # The killed coordinator's pool workers exit too (they watch their parent).
    deadline = time.monotonic() + 20
    while _orphans(db) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _orphans(db)


def _orphans(db: Path) -> list[int]:
    """Processes still running a sweep on ``db`` (Linux /proc)."""
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            if str(db) in (entry / "cmdline").read_bytes().decode(errors="replace"):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


@pytest.mark.parametrize("workers", [1, 2])
def test_ctrl_c_marks_running_runs_interrupted_and_exits_130(tmp_path, workers):
    path = _slow_sweep(tmp_path / "s.toml")
    db = tmp_path / "runs.sqlite"
    proc = _sweep_process(path, db, workers)
    try:
        # two runs still pending, each >= slow_gd's pause: the signal cannot come after the end
        _wait_for(db, lambda s: "done" in s and "running" in s and s.count("pending") >= 2)
        os.killpg(proc.pid, signal.SIGINT)  # as a terminal's Ctrl-C: the whole process group
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130
    assert err.startswith("dlngeo: interrupted: sweep tiny:") and err.count("\n") == 1
    statuses = [r["status"] for r in ledger_rows(db)]
    assert "running" not in statuses and "interrupted" in statuses
    assert run_sweep(load_sweep(path), db, workers=1).counts["done"] == 8
