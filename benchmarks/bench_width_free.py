"""Width-free trajectories: the training trajectory of a very wide balanced network, without its factors.

A balanced deep linear network is fully described by its end-to-end matrix
(Arora, Cohen & Hazan 2018): from a balanced start, the product of the factor
gradient flow solves the intrinsic flow :math:`\\dot X = -A_{N,X}(E'(X))`. A
width-free :class:`~dlngeo.dynamics.Task` (``Task(loss, network, start=X0)``)
holds only ``X0``; the rank-``r`` intrinsic flow then costs ``O(|Omega| r)``
per evaluation whatever the widths.

Problem (defaults): ``2000 x 2000`` rank-10 completion with ``10^5`` entries,
depth 8, hidden width 4096, balanced spectral start of scale 1e-2
(``init_scale * U_r V_r^T`` from the rescaled observations). Printed:

* the whole trajectory to loss 1e-6 (``intrinsic_flow``, low rank, RK45):
  wall time and peak memory (``tracemalloc``; goals <= 60 s and <= 1 GB);
* one factor gradient-descent step at that width (forward product, the N
  factor gradients, the update; dlngeo's ``factor_loss_and_gradients``,
  numpy, one thread), its peak memory, and the time PyTorch or any factor
  method would need for the trajectory: at least ``T / eta_max`` steps, with
  ``T`` the flow time reached and ``eta_max = 2 / lambda_max`` the stability
  limit of GD on the factors, ``lambda_max >= N s_1^{2 - 2/N} c`` at the end
  (``c = 2/|Omega|``, the curvature of the mean squared error), a lower bound.

Usage::

    python benchmarks/bench_width_free.py            # the full benchmark (a few minutes, ~3 GB for the factor step)
    python benchmarks/bench_width_free.py --quick    # 500 x 500, 10^4 entries, width 512
    python benchmarks/bench_width_free.py --no-factor-step
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402
import tracemalloc  # noqa: E402

import numpy as np  # noqa: E402
import scipy  # noqa: E402

import dlngeo  # noqa: E402
from dlngeo.dynamics import Stopping, Task  # noqa: E402
from dlngeo.dynamics.overparametrized import factor_loss_and_gradients  # noqa: E402
from dlngeo.lowrank import entries  # noqa: E402

#: Timed to a target: the default ``stationary`` stop (relative gradient 1e-6) is
#: switched off, so every contender runs until it reaches the loss it is timed to.
TO_TARGET = {"gradient_norm_rtol": 0, "gradient_norm_atol": 0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=2000)
    parser.add_argument("--rank", type=int, default=10)
    parser.add_argument("--observations", type=int, default=100_000)
    parser.add_argument("--depth", type=int, default=8)
    parser.add_argument("--width", type=int, default=4096)
    parser.add_argument("--scale", type=float, default=1e-2, help="init scale of the start")
    parser.add_argument("--loss", type=float, default=1e-6, help="loss to reach")
    parser.add_argument("--rtol", type=float, default=1e-4, help="integrator rtol (default 1e-4)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-time", type=float, default=600.0)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--no-factor-step", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.size, args.observations, args.width = 500, 10_000, 512
    m = n = args.size
    rng = np.random.default_rng(args.seed)
    print(
        f"width-free trajectory: {m} x {n} rank {args.rank} completion, {args.observations} entries, "
        f"depth {args.depth}, hidden width {args.width}, balanced spectral start of scale {args.scale:g}, "
        f"to loss {args.loss:g}"
    )
    print(
        f"{platform.machine()}, {os.cpu_count()} cores, python {platform.python_version()}, numpy "
        f"{np.__version__}, scipy {scipy.__version__}, dlngeo {dlngeo.__version__}; one BLAS thread"
    )
    target = dlngeo.create_sampler(
        "low_rank_target", shape=(m, n), rank=args.rank, factored=True
    ).sample(rng)
    rows, cols = dlngeo.create_sampler("uniform_mask", shape=(m, n), size=args.observations).sample(
        rng
    )
    loss = dlngeo.create_loss(
        "matrix_completion", rows=rows, cols=cols, values=entries(target, rows, cols), shape=(m, n)
    )
    observed = loss.observed_matrix() * (m * n / args.observations)
    u, _, vt = scipy.sparse.linalg.svds(observed, k=args.rank, v0=rng.standard_normal(n))
    start = (u, np.full(args.rank, args.scale), vt)
    net = dlngeo.DeepLinearNetwork((n,) + (args.width,) * (args.depth - 1) + (m,))
    task = Task(loss, net, start=start, rank=args.rank)

    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    cpu = time.process_time()
    record = dlngeo.create_solver(
        "intrinsic_flow", representation="lowrank", rtol=args.rtol, atol=1e-12, record_every=10**6
    ).run(
        task,
        Stopping(loss_below=args.loss, max_time=args.max_time, max_iterations=None, **TO_TARGET),
    )
    cpu = time.process_time() - cpu
    peak = (tracemalloc.get_traced_memory()[1] - base) / 2**20
    tracemalloc.stop()
    T = record.times[-1]
    s1 = float(record.final_point[1][0])
    print(
        f"\nintrinsic flow (width-free, rank {args.rank}, RK45 rtol {args.rtol:g}): "
        f"{record.wall_time_s:.1f} s wall, {cpu:.1f} s CPU (goal <= 60 s), peak {peak:.0f} MB (goal <= 1024 MB), "
        f"{record.n_iterations} steps, flow time {T:.4g}, loss {record.final_loss:.2e}, "
        f"stop {record.stop_reason}"
    )
    lam = args.depth * s1 ** (2 - 2 / args.depth) * 2 / args.observations
    steps = int(np.ceil(T / (2 / lam)))
    print(
        f"factor GD needs at least {steps} steps for this trajectory (eta <= 2/lambda_max = {2 / lam:.3g})"
    )
    if args.no_factor_step:
        return
    weights = net.balanced(start, rng=rng, rank=args.rank)
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    begin = time.perf_counter()
    step_cpu = time.process_time()
    _, _, grads = factor_loss_and_gradients(net, weights, loss)
    for W, G in zip(weights, grads):
        W -= 1e-3 * G
    step = time.perf_counter() - begin
    step_cpu = time.process_time() - step_cpu
    step_peak = (tracemalloc.get_traced_memory()[1] - base) / 2**20
    tracemalloc.stop()
    weights_mb = sum(W.nbytes for W in weights) / 2**20
    print(
        f"one factor-GD step at width {args.width}: {step:.1f} s wall, {step_cpu:.1f} s CPU, {step_peak:.0f} MB above the "
        f"factors' {weights_mb:.0f} MB; the trajectory by factor GD: >= {steps} x {step_cpu:.1f} s "
        f"CPU = {steps * step_cpu:.3g} s; ratio to the width-free flow >= {steps * step_cpu / cpu:.3g}x"
    )
    print(f"the whole width-free trajectory costs {record.wall_time_s / step:.2f} factor-GD steps")


if __name__ == "__main__":
    main()
