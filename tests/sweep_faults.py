"""Fault injection for the sweep tests and benchmarks: a plugin module (``plugins = ["sweep_faults"]``).

- solver ``faulty``: raises ``RuntimeError("injected fault")`` when run;
- solver ``worker_killer``: SIGKILLs its own process (a worker dying mid-run);
- sampler ``nan_target``: the ``low_rank_target`` with one entry NaN;
- solver ``slow_gd``: ``overparametrized_gd`` that first sleeps ``SlowGD.delay``
  seconds, so that a crash test's signal reliably finds runs still to do.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import numpy as np
from dlngeo_plugins.samplers import LowRankTarget

from dlngeo.dynamics.base import Method
from dlngeo.dynamics.overparametrized import OverparametrizedGD
from dlngeo.hookspecs import hookimpl


class Faulty(Method):
    name = "faulty"

    def __init__(self, **options: Any):
        self.options = options

    def run(self, task: Any, stopping: Any = None, callback: Any = None) -> Any:
        raise RuntimeError("injected fault")


class WorkerKiller(Faulty):
    name = "worker_killer"

    def run(self, task: Any, stopping: Any = None, callback: Any = None) -> Any:
        os.kill(os.getpid(), signal.SIGKILL)


class SlowGD(OverparametrizedGD):
    name = "slow_gd"
    delay = 0.25

    def run(self, task: Any, stopping: Any = None, callback: Any = None) -> Any:
        time.sleep(self.delay)
        return super().run(task, stopping, callback)


class NaNTarget(LowRankTarget):
    name = "nan_target"

    def sample(self, rng: Any) -> Any:
        M = np.array(super().sample(rng), dtype=float)
        M[0, 0] = np.nan
        return M


@hookimpl
def dlngeo_register_solvers(register):
    register("faulty", Faulty, description="raises (fault injection)")
    register("worker_killer", WorkerKiller, description="kills its process (fault injection)")
    register("slow_gd", SlowGD, description="factor GD after a pause (crash tests)")


@hookimpl
def dlngeo_register_samplers(register):
    register("nan_target", NaNTarget, description="a target with a NaN entry (fault injection)")
