"""The coordinator of a sweep: ledger in, runs out to an executor, outcomes back into the ledger.

:func:`run_sweep` is what ``dlngeo sweep`` does:

1. register the sweep's points in the ledger (new ones ``pending``; rows of
   earlier attempts kept);
2. put back to ``pending`` every run left ``running`` (the coordinator was
   killed while it ran) or ``interrupted`` (Ctrl-C), and with
   ``retry_failed`` every ``failed`` one; ``done`` runs are never repeated;
3. keep at most ``executor.slots`` runs in flight, each ``running`` in the
   ledger from submission to its outcome;
4. store each outcome (results document, summary, ``done``/``failed``) in one
   transaction. A run whose worker died is run again; if other runs were in
   flight then, it runs alone (so the run that kills its worker is known),
   and a run whose worker died ``max_attempts`` times while it ran alone is
   ``failed``.

Ctrl-C marks the runs in flight ``interrupted``, stops the workers and raises
:class:`SweepInterrupted`.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .executors import Executor, make_executor
from .ledger import Ledger
from .spec import Point, Sweep

__all__ = ["SweepSummary", "SweepInterrupted", "run_sweep"]


@dataclass
class SweepSummary:
    """What a sweep ended with: counts per status (of its points) and how many ran now."""

    name: str
    counts: dict[str, int]
    ran: int = 0
    executor: str = ""
    failures: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def line(self) -> str:
        c = self.counts
        left = c["pending"] + c["running"] + c["interrupted"]
        earlier = self.total - self.ran - left
        text = (
            f"sweep {self.name}: {self.total} runs: {c['done']} done, {c['failed']} failed"
            f" ({self.ran} run now on {self.executor}, {earlier} from earlier)"
        )
        return text + (f", {left} not run" if left else "")


class SweepInterrupted(KeyboardInterrupt):
    """Ctrl-C during a sweep; ``summary`` counts the runs, the interrupted ones included."""

    def __init__(self, summary: SweepSummary, interrupted: int):
        self.summary = summary
        self.interrupted = interrupted
        super().__init__(
            f"sweep {summary.name}: {interrupted} running run(s) marked interrupted "
            f"({summary.counts['done']} done, {summary.counts['failed']} failed); "
            "run the same command again to resume"
        )


def _counts(ledger: Ledger, sweep: Sweep) -> dict[str, int]:
    hashes = {p.config_hash for p in sweep.points}
    counts = {s: 0 for s in ("pending", "running", "done", "failed", "interrupted")}
    for row in ledger.rows(sweep.name):
        if row["config_hash"] in hashes:
            counts[row["status"]] += 1
    return counts


def run_sweep(
    sweep: Sweep,
    db: str | Path,
    *,
    workers: int | None = None,
    scheduler: Any = None,
    executor: Executor | None = None,
    retry_failed: bool = False,
    progress: bool = False,
    plugins: Sequence[str] = (),
    max_attempts: int = 3,
) -> SweepSummary:
    """Run every point of ``sweep`` not yet ``done`` (nor ``failed``, unless ``retry_failed``).

    Args:
        sweep: From :func:`dlngeo.sweep.spec.load_sweep`.
        db: The ledger file (a results store; created if missing).
        workers: Local processes (default: the number of cores); 1 runs in process.
        scheduler: A Dask scheduler address or ``dask.distributed.Client``.
        executor: An executor to use instead (then ``workers``/``scheduler`` are ignored).
        retry_failed: Run ``failed`` runs again.
        progress: A tqdm bar over runs (done, failed, running, ETA).
        plugins: Plugin modules every worker loads (the CLI's ``-p``).
        max_attempts: A run whose worker died this many times (running alone) is ``failed``.

    Raises:
        SweepInterrupted: Ctrl-C (runs in flight are marked ``interrupted``).
        ValueError: a bad ``workers``, or Dask missing or unreachable.
    """
    with Ledger(db) as ledger:
        ledger.register(sweep)
        ledger.reset(sweep.name, ["running"], "was running when its coordinator stopped")
        ledger.reset(sweep.name, ["interrupted"], "interrupted earlier")
        if retry_failed:
            ledger.reset(sweep.name, ["failed"], "retry of a failed run")
        hashes = {p.config_hash for p in sweep.points}
        queue = [(i, p) for i, p in ledger.pending(sweep.name) if p.config_hash in hashes]
        counts = _counts(ledger, sweep)
        summary = SweepSummary(sweep.name, counts)
        if not queue:
            summary.executor = "no executor"
            return summary
        own = executor is None
        if executor is None:
            executor = make_executor(workers, scheduler, plugins)
        summary.executor = executor.name
        bar = _bar(sweep, counts) if progress else None
        inflight: dict[Any, tuple[int, Point]] = {}
        try:
            _loop(ledger, executor, queue, inflight, summary, bar, list(plugins), max_attempts)
        except KeyboardInterrupt:
            for future in inflight:
                future.cancel()
            executor.close(cancel=True)
            stopped = ledger.interrupt(sweep.name, "interrupted by Ctrl-C")
            summary.counts = _counts(ledger, sweep)
            raise SweepInterrupted(summary, stopped) from None
        finally:
            if bar is not None:
                bar.close()
        if own:
            executor.close()
        summary.counts = _counts(ledger, sweep)
        return summary


def _bar(sweep: Sweep, counts: dict[str, int]) -> Any:
    from tqdm.auto import tqdm

    bar = tqdm(
        total=len(sweep.points),
        initial=counts["done"] + counts["failed"],
        unit="run",
        desc=f"dlngeo sweep {sweep.name}",
        file=sys.stderr,
        dynamic_ncols=True,
    )
    bar.set_postfix(done=counts["done"], failed=counts["failed"], running=0)
    return bar


def _loop(
    ledger: Ledger,
    executor: Executor,
    queue: list[tuple[int, Point]],
    inflight: dict[Any, tuple[int, Point]],
    summary: SweepSummary,
    bar: Any,
    plugins: list[str],
    max_attempts: int,
) -> None:
    counts = summary.counts
    broken = False  # a worker died: drain the runs in flight, then a fresh pool
    suspects: set[int] = set()  # in flight with others when a worker died: rerun alone
    losses: dict[int, int] = {}  # row id -> worker deaths while it ran alone
    while queue or inflight:
        while queue and len(inflight) < executor.slots and not broken:
            row_id, point = queue[0]
            alone = any(r in suspects for r, _ in inflight.values())
            if alone or (row_id in suspects and inflight):
                break
            queue.pop(0)
            ledger.start(row_id)
            counts["pending"] -= 1
            counts["running"] += 1
            future = executor.submit({"config": point.config, "plugins": plugins})
            inflight[future] = (row_id, point)
        if bar is not None:
            bar.set_postfix(done=counts["done"], failed=counts["failed"], running=len(inflight))
        flying = len(inflight)
        for future in executor.wait(list(inflight), timeout=1.0):
            row_id, point = inflight.pop(future)
            counts["running"] -= 1
            try:
                outcome = future.result()
            except Exception as exc:  # noqa: BLE001 - the worker died, not the run
                broken = True
                reason = f"worker lost: {type(exc).__name__}: {' '.join(str(exc).split())}"[:300]
                if flying == 1:
                    losses[row_id] = losses.get(row_id, 0) + 1
                else:
                    suspects.add(row_id)
                if losses.get(row_id, 0) < max_attempts:
                    ledger.mark([row_id], "pending", reason)
                    queue.insert(0, (row_id, point))
                    counts["pending"] += 1
                    continue
                outcome = {"status": "failed", "reason": f"{reason} ({max_attempts} times)"}
            suspects.discard(row_id)
            status = ledger.finish(row_id, outcome)
            if status:
                counts[status] += 1
                summary.ran += 1
                if status == "failed":
                    summary.failures.append(
                        f"point {point.index} {point.axes}: {outcome['reason']}"
                    )
                if bar is not None:
                    bar.update(1)
        if broken and not inflight:
            restart = getattr(executor, "restart", None)
            if restart is not None:
                restart()
            broken = False
