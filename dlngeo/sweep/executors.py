"""Where the runs of a sweep execute: in process, a local process pool, or a Dask cluster.

Every executor runs :func:`execute` on a payload ``{"config": ..., "plugins": [...]}``
and hands back its outcome (a plain dict, see :func:`execute`). The
coordinator (:mod:`dlngeo.sweep.run`) keeps at most :attr:`Executor.slots`
runs in flight, so a run is ``running`` in the ledger exactly while a worker
holds it.

- :class:`InProcess` (``--workers 1``): the run executes when submitted.
- :class:`LocalPool` (``--workers N``): :class:`concurrent.futures.ProcessPoolExecutor`
  whose workers use one BLAS thread each (threadpoolctl), ignore Ctrl-C
  (the coordinator stops them) and exit when the coordinator dies.
- :class:`DaskExecutor` (``--scheduler ADDRESS``): ``dask.distributed.Client``
  on an existing cluster (or a given ``Client``); the optional extra ``scale``.
"""

from __future__ import annotations

import concurrent.futures as cf
import os
import signal
import socket
import traceback
from collections.abc import Sequence
from typing import Any

from ..validation import positive_integer

__all__ = ["execute", "Executor", "InProcess", "LocalPool", "DaskExecutor", "make_executor"]


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or "(no message)"
    return f"{type(exc).__name__}: {text}"[:500]


def _verdict(document: dict[str, Any]) -> tuple[str, str | None]:
    """``failed`` with a reason when a method diverged or ended on a non-finite loss."""
    bad = []
    for label, entry in document["methods"].items():
        if entry["stop_reason"] == "diverged":
            error = entry.get("info", {}).get("error")
            bad.append(f"method {label!r} diverged" + (f" ({error})" if error else ""))
        elif entry["final_loss"] is None:
            bad.append(f"method {label!r} ended with a non-finite loss")
    return ("failed", "; ".join(bad)) if bad else ("done", None)


def execute(payload: dict[str, Any]) -> dict[str, Any]:
    """Run one config (:func:`dlngeo.experiment.compare`) and never raise.

    Returns:
        ``{"status": "done" | "failed", "reason": str | None, "document": dict | None,
        "worker": "host:pid", "started": iso, "ended": iso}``. ``failed``: the
        run raised (reason: the exception, one line) or a method diverged or
        ended on a non-finite loss (the document is kept).
    """
    from ..experiment import compare
    from ..plugins import load_plugin_module
    from .ledger import now

    started = now()
    worker = f"{socket.gethostname()}:{os.getpid()}"
    try:
        for module in payload.get("plugins", ()):
            load_plugin_module(module)
        document = compare(payload["config"]).to_dict()
        status, reason = _verdict(document)
    except Exception as exc:  # noqa: BLE001 - a failed run is data
        status, reason, document = "failed", _one_line(exc), None
        if os.environ.get("DLNGEO_SWEEP_TRACEBACK"):
            traceback.print_exc()
    return {
        "status": status,
        "reason": reason,
        "document": document,
        "worker": worker,
        "started": started,
        "ended": now(),
    }


class Executor:
    """Runs payloads; :meth:`submit` returns a future with ``done()`` and ``result()``."""

    slots: int = 1
    name: str = "executor"

    def submit(self, payload: dict[str, Any]) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def wait(self, futures: Sequence[Any], timeout: float) -> list[Any]:
        """The futures among ``futures`` that are done, waiting up to ``timeout`` for one."""
        done, _ = cf.wait(futures, timeout=timeout, return_when=cf.FIRST_COMPLETED)
        return list(done)

    def close(self, cancel: bool = False) -> None:
        """Release the workers; ``cancel``: stop running work now."""


class InProcess(Executor):
    """Each run executes in the coordinator's process when submitted (``--workers 1``)."""

    name = "in-process"

    def submit(self, payload: dict[str, Any]) -> Any:
        future: cf.Future = cf.Future()
        future.set_result(execute(payload))
        return future


def _exit_with_parent(parent: int, interval: float = 0.5) -> None:
    """Exit this worker when the coordinator ``parent`` is gone (``kill -9``).

    A pool worker blocks reading its task queue, whose other end its sibling
    workers also hold open: without this it would wait forever.
    """
    import threading
    import time

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(interval)
        os._exit(1)

    threading.Thread(target=watch, name="dlngeo-parent-watch", daemon=True).start()


def _init_worker(plugins: Sequence[str], path: Sequence[str], parent: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the coordinator's to handle
    _exit_with_parent(parent)
    os.environ["OMP_NUM_THREADS"] = os.environ["OPENBLAS_NUM_THREADS"] = "1"
    os.environ["MKL_NUM_THREADS"] = "1"
    import sys

    for entry in path:
        if entry not in sys.path:
            sys.path.append(entry)
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=1)
    except ImportError:  # pragma: no cover - threadpoolctl is a dependency
        pass
    from ..plugins import load_plugin_module

    for module in plugins:
        load_plugin_module(module)


class LocalPool(Executor):
    """A local process pool of ``workers`` processes, one BLAS thread each."""

    name = "local pool"

    def __init__(self, workers: int, plugins: Sequence[str] = ()):
        import sys

        self.slots = int(workers)
        self.name = f"local pool of {self.slots}"
        self._args = (list(plugins), list(sys.path), os.getpid())
        self._pool = self._new_pool()

    def _new_pool(self) -> cf.ProcessPoolExecutor:
        return cf.ProcessPoolExecutor(
            max_workers=self.slots, initializer=_init_worker, initargs=self._args
        )

    def submit(self, payload: dict[str, Any]) -> Any:
        return self._pool.submit(execute, payload)

    def restart(self) -> None:
        """A fresh pool after a worker died (the old one is broken)."""
        self.close(cancel=True)
        self._pool = self._new_pool()

    def close(self, cancel: bool = False) -> None:
        if cancel:
            # Runs in flight are stopped now: their workers are terminated.
            processes = list(getattr(self._pool, "_processes", {}).values())
            self._pool.shutdown(wait=False, cancel_futures=True)
            for process in processes:
                process.terminate()
            for process in processes:
                process.join(timeout=5)
        else:
            self._pool.shutdown(wait=True)


class DaskExecutor(Executor):
    """Runs on a Dask distributed cluster: ``Client(address)``, or a ``Client`` given.

    ``slots`` is the number of worker threads of the cluster (at least 1), so
    that only runs a worker holds are ``running`` in the ledger.
    """

    name = "dask"

    def __init__(self, scheduler: Any, plugins: Sequence[str] = ()):
        try:
            from dask.distributed import Client
        except ImportError:
            raise ValueError(
                "--scheduler needs Dask: install the optional extra 'scale' "
                "(pip install 'dlngeo[scale]')"
            ) from None
        self._own = not isinstance(scheduler, Client)
        if self._own:
            try:
                self.client = Client(scheduler, timeout=20)
            except (OSError, TimeoutError) as exc:
                raise ValueError(
                    f"--scheduler: cannot reach {scheduler!r}: {_one_line(exc)}"
                ) from None
        else:
            self.client = scheduler
        self._plugins = list(plugins)
        threads = sum(self.client.nthreads().values())
        self.slots = max(1, int(threads))
        self.name = f"dask at {self.client.scheduler.address}"

    def submit(self, payload: dict[str, Any]) -> Any:
        payload = {**payload, "plugins": [*self._plugins, *payload.get("plugins", [])]}
        return self.client.submit(execute, payload, pure=False)

    def wait(self, futures: Sequence[Any], timeout: float) -> list[Any]:
        from dask.distributed import wait

        try:
            done, _ = wait(list(futures), timeout=timeout, return_when="FIRST_COMPLETED")
        except TimeoutError:
            return []
        return list(done)

    def close(self, cancel: bool = False) -> None:
        if self._own:
            self.client.close()


def make_executor(
    workers: int | None = None, scheduler: Any = None, plugins: Sequence[str] = ()
) -> Executor:
    """The executor for ``--workers`` / ``--scheduler`` (``workers`` default: the number of cores)."""
    if scheduler is not None:
        return DaskExecutor(scheduler, plugins)
    if workers is None:
        workers = os.cpu_count() or 1
    workers = positive_integer(workers, "--workers")
    return InProcess() if workers == 1 else LocalPool(workers, plugins)
