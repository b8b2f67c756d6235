"""Cost of one g_N step (A_{N,X}) against one gradient step on the factors of a deep linear network.

The intrinsic flow needs one application of A_{N,X} per step: dense,
``O(mn min(m, n))`` (one SVD), or at rank ``r`` ``O((m + n) r^2)`` on tangent
coordinates plus one product of the ambient gradient with ``r`` vectors. Its
cost does not depend on the depth ``N`` or on the hidden width ``h``. One
gradient step on the factors (forward product, ``DeepLinearNetwork.gradients``,
update) costs ``O(N h^2 (m + n))``. This script times both in one run and
prints their ratios.

Run ``python benchmarks/bench_kernel.py`` (about 2 minutes; peak memory about
8 GB at width 4096, depth 32) or ``--quick`` (a few seconds). Both sides run
on one BLAS thread (set before numpy is imported; override with the usual
``OPENBLAS_NUM_THREADS`` / ``OMP_NUM_THREADS``), so the ratios compare work, not
thread counts; times are the CPU time of this process (``--clock wall`` for
elapsed time), so that other load on a shared machine does not skew them.
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Sequence  # noqa: E402

import numpy as np  # noqa: E402

import dlngeo  # noqa: E402
from dlngeo.geometry import metric_operator, metric_operator_tangent, riemannian_gradient_tangent

CLOCKS = {"cpu": time.process_time, "wall": time.perf_counter}
clock = CLOCKS["cpu"]


def best_time(fn: Callable[[], object], budget: float = 0.2, repeats: int = 3) -> float:
    """Best time of ``fn`` over ``repeats`` batches; batches sized to ``budget`` seconds."""
    start = clock()
    fn()
    once = clock() - start
    if once > budget:
        return once  # expensive: one run is the measurement
    number = max(1, int(budget / max(once, 1e-7) / repeats))
    times = []
    for _ in range(repeats):
        start = clock()
        for _ in range(number):
            fn()
        times.append((clock() - start) / number)
    return min(times)


def factor_step(
    net: dlngeo.DeepLinearNetwork, weights: list[np.ndarray], Y: np.ndarray, lr: float
) -> None:
    """One gradient-descent step on ½||phi(W) - Y||²: forward product, gradients, update (in place)."""
    X = net.product(weights)
    grads = net.gradients(weights, X - Y)
    for W, G in zip(weights, grads):
        W -= lr * G


def run(
    m: int,
    n: int,
    r: int,
    depths: Sequence[int],
    widths: Sequence[int],
    seed: int = 0,
    budget: float = 0.2,
) -> list[dict]:
    rng = np.random.default_rng(seed)
    Y = rng.standard_normal((m, n))
    G = rng.standard_normal((m, n))  # an ambient gradient E'(X)
    X = rng.standard_normal((m, n))
    u = np.linalg.qr(rng.standard_normal((m, r)))[0]
    vt = np.linalg.qr(rng.standard_normal((n, r)))[0].T
    s = np.sort(rng.uniform(1.0, 2.0, r))[::-1]
    Up = rng.standard_normal((m, r))
    Up -= u @ (u.T @ Up)
    Vp = rng.standard_normal((n, r))
    Vp -= vt.T @ (vt @ Vp)
    M = rng.standard_normal((r, r))
    rows = []
    for depth in depths:
        dense = best_time(lambda: metric_operator(X, G, depth), budget)
        tangent = best_time(lambda: metric_operator_tangent(s, Up, M, Vp, depth), budget)
        gradient = best_time(lambda: riemannian_gradient_tangent(u, s, vt, G, depth), budget)
        for width in widths:
            net = dlngeo.DeepLinearNetwork((n,) + (width,) * (depth - 1) + (m,))
            weights = [rng.standard_normal(shape) / np.sqrt(shape[1]) for shape in net.shapes]
            step = best_time(lambda: factor_step(net, weights, Y, 1e-6), 2.5 * budget, repeats=2)
            del weights
            rows.append(
                dict(
                    depth=depth,
                    width=width,
                    step=step,
                    dense=dense,
                    tangent=tangent,
                    gradient=gradient,
                )
            )
            print(_format(rows[-1]), flush=True)
    return rows


HEADER = (
    f"{'N':>3} {'width':>6} | {'factor step':>12} | {'A dense':>10} {'A tangent':>10} {'grad rank-r':>11} |"
    f" {'step/dense':>10} {'step/tangent':>12} {'step/grad':>10}"
)


def _ms(t: float) -> str:
    return f"{t * 1e3:9.3f}ms" if t >= 1e-3 else f"{t * 1e6:9.1f}us"


def _format(row: dict) -> str:
    return (
        f"{row['depth']:>3} {row['width']:>6} | {_ms(row['step']):>12} | {_ms(row['dense']):>10} "
        f"{_ms(row['tangent']):>10} {_ms(row['gradient']):>11} | {row['step'] / row['dense']:>10.1f} "
        f"{row['step'] / row['tangent']:>12.0f} {row['step'] / row['gradient']:>10.0f}"
    )


def main(argv: Sequence[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small grid, a few seconds")
    parser.add_argument("--m", type=int, default=128, help="output width d_N (rows of X)")
    parser.add_argument("--n", type=int, default=128, help="input width d_0 (columns of X)")
    parser.add_argument("--rank", type=int, default=8, help="rank r of the low-rank point")
    parser.add_argument("--depths", type=int, nargs="+", default=None)
    parser.add_argument("--widths", type=int, nargs="+", default=None)
    parser.add_argument(
        "--budget", type=float, default=0.2, help="seconds of repeats per measurement"
    )
    parser.add_argument(
        "--clock",
        choices=sorted(CLOCKS),
        default="cpu",
        help="cpu: CPU time of this process (default; robust to other load on a shared machine); wall: elapsed time",
    )
    args = parser.parse_args(argv)
    global clock
    clock = CLOCKS[args.clock]
    depths = args.depths or ([2, 8, 32] if args.quick else [2, 4, 8, 16, 32])
    widths = args.widths or ([256, 1024] if args.quick else [256, 1024, 4096])
    for name, values in (("depths", depths), ("widths", widths)):
        if any(v < 1 for v in values):
            raise ValueError(f"{name} must be positive, got {values}")
    if min(depths) < 2:
        raise ValueError(
            f"depths must be >= 2 (a factor network with a hidden layer), got {depths}"
        )
    threads = os.environ.get("OPENBLAS_NUM_THREADS")
    print(
        f"X: {args.m} x {args.n}, rank r = {args.rank}; numpy {np.__version__}, {platform.machine()}, "
        f"BLAS threads {threads}, {args.clock} time"
    )
    print(
        "factor step = product + DeepLinearNetwork.gradients + update (dims n, width, ..., width, m)"
    )
    print(
        "A dense = metric_operator(X, Z, N) (one SVD); A tangent = metric_operator_tangent on (Up, M, Vp);"
    )
    print("grad rank-r = riemannian_gradient_tangent(u, s, vt, E'(X)) with a dense m x n E'(X)")
    print(HEADER)
    print("-" * len(HEADER))
    return run(args.m, args.n, args.rank, depths, widths, budget=args.budget)


if __name__ == "__main__":
    main()
