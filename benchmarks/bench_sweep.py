"""The sweep machinery: per-run overhead, 1- vs 2-worker throughput, crash safety under kill -9.

Three measurements, each against a baseline taken in the same run:

- ``overhead``: 200 quick runs (a 12 x 10 completion, factor GD, ~0.1 s each)
  as a plain loop of :func:`dlngeo.experiment.compare`, then as a sweep
  in process (``--workers 1``: sweep file resolution and checks, ledger
  writes) and on a local pool of one worker (plus process hand-off). Prints
  the overhead per run, ``(T_sweep - T_loop) / runs``.
- ``workers``: a CPU-bound sweep (40 x 40 depth-3 completion, 3000 steps of
  factor GD each) on a pool of 1 and of 2 workers, interleaved, best of two;
  prints the throughput ratio, and the same ratio for two processes of plain
  CPU work measured in the same run (what the machine allows at that moment).
- ``crash``: a 200-run sweep with 10 % injected failures (a raising solver, a
  diverging step, NaN data), run as ``dlngeo sweep`` in a subprocess killed
  with SIGKILL at three random moments and restarted each time, then run to
  the end. Checks 200 rows, every healthy run ``done`` with exactly one
  stored results document, every failure ``failed`` with its reason.

Usage::

    python benchmarks/bench_sweep.py              # all three
    python benchmarks/bench_sweep.py overhead --runs 200
    python benchmarks/bench_sweep.py workers --runs 40
    python benchmarks/bench_sweep.py crash --seed 1
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))  # the fault-injection plugin module

BASE = """
seed = 0
plugins = ["sweep_faults"]
[problem]
shape = [12, 10]
[target]
sampler = "low_rank_target"
rank = 2
[observations]
sampler = "uniform_mask"
size = 80
[loss]
name = "matrix_completion"
[network]
depth = 2
[init]
sampler = "gaussian"
init_scale = 0.1
[stopping]
loss_below = 1e-12
max_iterations = {iterations}
[methods.gd]
solver = "overparametrized_gd"
step = 0.5
record_every = 50
"""


def _sweep_file(directory: Path, name: str, runs: int, iterations: int) -> Path:
    path = directory / f"{name}.toml"
    path.write_text(
        BASE.format(iterations=iterations) + f'[sweep]\nname = "{name}"\nseeds = {runs}\n'
    )
    return path


def overhead(runs: int) -> None:
    from dlngeo.experiment import compare
    from dlngeo.sweep import load_sweep, run_sweep

    with tempfile.TemporaryDirectory() as tmp:
        path = _sweep_file(Path(tmp), "overhead", runs, 100)
        configs = [p.config for p in load_sweep(path).points]
        compare(configs[0])  # warm up imports and caches
        start = time.perf_counter()
        for config in configs:
            compare(config).to_dict()
        loop = time.perf_counter() - start
        times = {}
        for label, workers in (("in process", 1), ("pool of 1", None)):
            db = Path(tmp) / f"{label.replace(' ', '_')}.sqlite"
            start = time.perf_counter()
            if workers == 1:
                summary = run_sweep(load_sweep(path), db, workers=1)
            else:
                from dlngeo.sweep.executors import LocalPool

                pool = LocalPool(1)
                summary = run_sweep(load_sweep(path), db, executor=pool)
                pool.close()
            times[label] = time.perf_counter() - start
            assert summary.counts["done"] == runs, summary.line()
    print(f"plain loop: {runs} runs in {loop:.2f} s ({1e3 * loop / runs:.1f} ms per run)")
    for label, t in times.items():
        print(
            f"sweep, {label}: {t:.2f} s; overhead {1e3 * (t - loop) / runs:+.1f} ms per run"
            f" (ratio {t / loop:.2f})"
        )


def _burn(n: int) -> float:
    start = time.perf_counter()
    x = 0
    for i in range(n):
        x += i
    return time.perf_counter() - start


def capacity(n: int = 10_000_000) -> float:
    """Throughput of 2 processes over 1 on plain CPU work now: the ceiling of any 2-worker speedup."""
    import concurrent.futures as cf

    with cf.ProcessPoolExecutor(2) as pool:
        list(pool.map(_burn, [1000, 1000]))  # start both processes
        start = time.perf_counter()
        pool.submit(_burn, n).result()
        one = time.perf_counter() - start
        start = time.perf_counter()
        list(pool.map(_burn, [n, n]))
        two = time.perf_counter() - start
    return 2 * one / two


def workers(runs: int) -> None:
    from dlngeo.sweep import Ledger, load_sweep, run_sweep
    from dlngeo.sweep.executors import LocalPool

    times: dict[int, list[float]] = {}
    busy: dict[int, list[float]] = {}
    ceiling = []
    with tempfile.TemporaryDirectory() as tmp:
        path = _sweep_file(Path(tmp), "workers", runs, 3000)
        # CPU-bound: a 40 x 40 depth-3 completion, a fixed number of steps (no early stop).
        text = path.read_text().replace("shape = [12, 10]", "shape = [40, 40]")
        text = text.replace("size = 80", "size = 600").replace("depth = 2", "depth = 3")
        path.write_text(text.replace("loss_below = 1e-12", "loss_below = 0.0"))
        for k, n in enumerate((1, 2, 1, 2)):  # interleaved: the machine's load drifts
            ceiling.append(capacity())
            pool = LocalPool(n)
            db = Path(tmp) / f"w{k}.sqlite"
            start = time.perf_counter()
            summary = run_sweep(load_sweep(path), db, executor=pool)
            elapsed = time.perf_counter() - start
            pool.close()
            assert summary.counts["done"] == runs
            with Ledger(db) as ledger:
                walls = [r["summary"]["gd"]["wall_time_s"] for r in ledger.rows()]
            times.setdefault(n, []).append(elapsed)
            busy.setdefault(n, []).append(sum(walls) / (n * elapsed))
    best = {n: min(t) for n, t in times.items()}
    print(f"load average (1, 5, 15 min): {os.getloadavg()} on {os.cpu_count()} cores")
    print(
        f"{runs} runs: 1 worker {best[1]:.2f} s, 2 workers {best[2]:.2f} s (best of 2 each);"
        f" throughput ratio {best[1] / best[2]:.2f}"
    )
    print(
        "occupancy (sum of run wall times / (workers x sweep time)):"
        + "".join(f" {n} worker(s) {min(b):.2f}-{max(b):.2f};" for n, b in busy.items())
    )
    print(
        f"the machine meanwhile: 2 processes of plain CPU work give {min(ceiling):.2f}-"
        f"{max(ceiling):.2f}x the throughput of 1 (the ceiling of any 2-worker speedup on it)"
    )


CRASH_VARIANTS = (
    # 36 healthy variants and 4 faulty ones, each run with 5 seeds: 200 runs, 10 % failing.
    [("overparametrized_gd", 0.5, "low_rank_target", 0.05 + 0.01 * k) for k in range(36)]
    + [("faulty", 0.5, "low_rank_target", 0.1)] * 1
    + [("faulty", 0.5, "low_rank_target", 0.2)]
    + [("overparametrized_gd", 1e4, "low_rank_target", 0.1)]
    + [("overparametrized_gd", 0.5, "nan_target", 0.1)]
)


def _finished(db: Path) -> int:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
        query = "SELECT COUNT(*) FROM sweep_runs WHERE status IN ('done', 'failed')"
        return int(con.execute(query).fetchone()[0])


def _wait_progress(db: Path, before: int, timeout: float = 120.0) -> None:
    """Until the new coordinator has finished a run (so it is past start-up and resuming)."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        try:
            if _finished(db) > before:
                return
        except sqlite3.OperationalError:
            pass
        time.sleep(0.05)


def crash(seed: int) -> None:
    from dlngeo.sweep import Ledger

    rng = random.Random(seed)
    solvers, steps, samplers, scales = zip(*CRASH_VARIANTS)
    zipped = (
        f'"methods.gd.solver" = {list(solvers)!r}\n"methods.gd.step" = {list(steps)!r}\n'
        f'"target.sampler" = {list(samplers)!r}\n"init.init_scale" = {list(scales)!r}\n'
    ).replace("'", '"')
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "crash.toml"
        path.write_text(
            BASE.format(iterations=400)
            + f'[sweep]\nname = "crash"\nseeds = 5\n[sweep.zip]\n{zipped}'
        )
        db = Path(tmp) / "runs.sqlite"
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE.parent / "tests"), *sys.path])}
        command = [
            sys.executable,
            "-m",
            "dlngeo.cli",
            "sweep",
            str(path),
            "--db",
            str(db),
            "--workers",
            "2",
            "--no-progress",
        ]
        kills = []
        before = 0
        for _ in range(3):
            proc = subprocess.Popen(
                command,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
            _wait_progress(db, before)  # a random moment once this coordinator is running
            time.sleep(rng.uniform(0.0, 3.0))
            finished = proc.poll() is not None
            if not finished:
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            with sqlite3.connect(db) as con:
                states = dict(
                    con.execute(
                        "SELECT status, COUNT(*) FROM sweep_runs GROUP BY status"
                    ).fetchall()
                )
            before = _finished(db)
            kills.append(not finished and states.get("pending", 0) > 0)
            print(f"{'finished before the kill' if finished else 'killed'}: ledger then {states}")
            # the orphaned workers finish their current run and exit on the closed pipe
            time.sleep(1.0)
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        print(done.stdout.strip().splitlines()[-1])
        with Ledger(db) as ledger:
            rows = ledger.rows("crash")
        with sqlite3.connect(db) as con:
            documents = con.execute("SELECT COUNT(*) FROM runs").fetchone()[0]
            linked = con.execute(
                "SELECT COUNT(DISTINCT run_id) FROM sweep_runs WHERE run_id IS NOT NULL"
            ).fetchone()[0]
    healthy = [
        r
        for r in rows
        if r["axes"]["methods.gd.solver"] != "faulty"
        and r["axes"]["methods.gd.step"] < 10
        and r["axes"]["target.sampler"] != "nan_target"
    ]
    faulty = [r for r in rows if r not in healthy]
    ok = (
        len(rows) == 200
        and len(healthy) == 180
        and all(r["status"] == "done" and r["run_id"] is not None for r in healthy)
        and all(r["status"] == "failed" and r["reason"] for r in faulty)
        and documents == linked  # every stored document belongs to exactly one row
        and all(kills)  # each kill landed mid-sweep
    )
    reasons = sorted({r["reason"].split(" (")[0] for r in faulty})
    print(
        f"{len(rows)} rows; healthy done {sum(r['status'] == 'done' for r in healthy)}/{len(healthy)};"
        f" failed {sum(r['status'] == 'failed' for r in faulty)}/{len(faulty)} with reasons {reasons};"
        f" results documents {documents} (= rows linking one: {linked});"
        f" runs started more than once: {sum(r['attempts'] > 1 for r in rows)}"
    )
    print("crash test:", "PASS" if ok else "FAIL")
    if not ok:
        sys.exit(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "what", nargs="?", choices=("overhead", "workers", "crash", "all"), default="all"
    )
    parser.add_argument("--runs", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.what in ("overhead", "all"):
        overhead(args.runs or 200)
    if args.what in ("workers", "all"):
        workers(args.runs or 40)
    if args.what in ("crash", "all"):
        crash(args.seed)


if __name__ == "__main__":
    main()
