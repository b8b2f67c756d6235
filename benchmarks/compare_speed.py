"""Time to training loss 1e-6 on deep matrix completion, every method, one run, as ratios.

The setting of Arora, Cohen, Hu & Luo (2019) (docs/math.md §5): a 100 x 100
rank-5 target with unit RMS entry, 2000 entries observed uniformly, the mean
squared error on them, a depth-3 network of square 100-wide layers, Gaussian
init of scale 1e-3 (std ``init_scale^(1/N) / sqrt(n)``). Every dlngeo method
runs through :func:`dlngeo.compare` on the same task (same data, same initial
factors) recording only the loss, sparsely; the baseline is plain gradient
descent on the factors in PyTorch (float64, autograd, the same initial
factors, the same step as dlngeo's factor GD), as the paper's own code trains
them. Times are wall-clock seconds to loss <= 1e-6, printed with their ratio
to the PyTorch baseline (or to dlngeo's factor GD when PyTorch is not
installed; it is optional and never a dependency of dlngeo).

Usage::

    python benchmarks/compare_speed.py                 # all methods
    python benchmarks/compare_speed.py --threads 2     # BLAS / torch threads (default 1)
    python benchmarks/compare_speed.py --max-time 120  # per-method cap in seconds
    python benchmarks/compare_speed.py --repeat 3      # fastest of 3 interleaved runs per method

Single-threaded by default so that the ratios measure algorithms, not how
each library uses a shared machine's cores.
"""

from __future__ import annotations

import argparse
import os
import sys
import time


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="BLAS and torch threads (default 1)")
    parser.add_argument(
        "--max-time", type=float, default=300.0, help="per-method time cap in seconds (default 300)"
    )
    parser.add_argument(
        "--step",
        type=float,
        default=4.0,
        help="step of factor GD, dlngeo and PyTorch (default 4.0)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="run everything N times, report each method's fastest (default 1)",
    )
    parser.add_argument(
        "--skip-slow",
        action="store_true",
        help="skip the factor gradient flow (an ODE solve, slowest)",
    )
    return parser.parse_args()


ARGS = _parse() if __name__ == "__main__" else None
if ARGS is not None:  # before numpy is imported: BLAS reads these once
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(ARGS.threads)

import numpy as np  # noqa: E402

from dlngeo.experiment import DEFAULT_CONFIG, build, compare, merge_config  # noqa: E402

LOSS = 1e-6


def config(args: argparse.Namespace) -> dict:
    base = merge_config(
        DEFAULT_CONFIG,
        {
            "seed": args.seed,
            "metrics": [],
            "stopping": {"loss_below": LOSS, "max_time": args.max_time, "max_iterations": 10**7},
        },
    )
    methods = {
        "overparametrized_gd": {"step": args.step, "record_every": 1000},
        "overparametrized_flow": {"record_every": 1000},
        "intrinsic_flow (dense)": {
            "solver": "intrinsic_flow",
            "representation": "dense",
            "record_every": 1000,
        },
        "intrinsic_flow (rank 5)": {
            "solver": "intrinsic_flow",
            "representation": "lowrank",
            "record_every": 1000,
        },
        "riemannian_gd (g_N)": {"solver": "riemannian_gd", "step": args.step, "record_every": 1000},
        "riemannian_sd (g_N)": {"solver": "riemannian_sd", "record_every": 1000},
        "riemannian_cg (g_N)": {"solver": "riemannian_cg", "record_every": 1000},
        "riemannian_cg (embedded)": {
            "solver": "riemannian_cg",
            "metric": "embedded",
            "record_every": 1000,
        },
        "riemannian_tr (g_N)": {"solver": "riemannian_tr", "record_every": 1000},
        "riemannian_tr (embedded)": {
            "solver": "riemannian_tr",
            "metric": "embedded",
            "record_every": 1000,
        },
    }
    if args.skip_slow:
        del methods["overparametrized_flow"]
    base["methods"] = methods
    base["gap"] = []
    return base


def torch_baseline(cfg: dict, args: argparse.Namespace) -> dict | None:
    """Plain GD on the factors in PyTorch from the same task; ``None`` without torch."""
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(args.threads)
    task = build(cfg).task
    loss = task.loss
    rows = torch.as_tensor(loss.rows)
    cols = torch.as_tensor(loss.cols)
    values = torch.as_tensor(np.asarray(loss.values, dtype=float))
    weights = [torch.tensor(W, dtype=torch.float64, requires_grad=True) for W in task.weights0]
    step = args.step
    start = time.perf_counter()
    reason, k, value = "max_time", 0, float("nan")
    while True:
        X = weights[0]
        for W in weights[1:]:
            X = W @ X
        objective = ((X[rows, cols] - values) ** 2).mean()
        value = float(objective.item())
        if not np.isfinite(value):
            reason = "diverged"
            break
        if value <= LOSS:
            reason = "loss_below"
            break
        if time.perf_counter() - start > args.max_time:
            break
        grads = torch.autograd.grad(objective, weights)
        with torch.no_grad():
            for W, G in zip(weights, grads):
                W -= step * G
        k += 1
    return {
        "method": "PyTorch factor GD (baseline)",
        "time": time.perf_counter() - start,
        "iterations": k,
        "loss": value,
        "reason": reason,
        "version": torch.__version__,
    }


def main(args: argparse.Namespace) -> None:
    cfg = config(args)
    print(
        "deep matrix completion, Arora et al. 2019 setting: 100x100 rank 5, 2000 observations, depth 3, "
        f"init 1e-3, mean squared error to {LOSS:g}; threads={args.threads}, factor-GD step {args.step:g}, "
        f"cap {args.max_time:g} s per method, fastest of {args.repeat} run(s)",
        flush=True,
    )
    rows: list[dict] = []
    baseline = None
    for _ in range(args.repeat):  # interleaved, so that a busy spell hits every method alike
        result = torch_baseline(cfg, args)
        comparison = compare(cfg, progress=True)
        current = [] if result is None else [result]
        for label, record in comparison.records.items():
            current.append(
                {
                    "method": label,
                    "time": record.wall_time_s,
                    "iterations": record.n_iterations,
                    "loss": record.final_loss,
                    "reason": record.stop_reason,
                }
            )
        rows = (
            current
            if not rows
            else [min(a, b, key=lambda r: r["time"]) for a, b in zip(rows, current)]
        )
        baseline = result
    if baseline is None:
        print(
            "PyTorch is not installed: baseline skipped, ratios are to dlngeo's overparametrized_gd"
        )
    reference = (
        rows[0]["time"]
        if baseline is not None
        else next(r["time"] for r in rows if r["method"] == "overparametrized_gd")
    )
    name = "PyTorch" if baseline is not None else "dlngeo GD"
    print()
    print(
        f"{'method':<30} {'time (s)':>9} {'iterations':>10} {'final loss':>11}  {'stop reason':<12} {'time / ' + name:>16}"
    )
    for r in rows:
        ratio = r["time"] / reference if reference > 0 else float("nan")
        print(
            f"{r['method']:<30} {r['time']:>9.3f} {r['iterations']:>10d} {r['loss']:>11.3e}  {r['reason']:<12} {ratio:>16.4f}"
        )
    if baseline is not None:
        print(
            f"(torch {baseline['version']}; a ratio below 1 is faster than the baseline; "
            "only methods with stop reason loss_below reached the loss)"
        )


if __name__ == "__main__":
    if not 1 <= ARGS.threads <= 64:
        sys.exit("--threads must be between 1 and 64")
    if ARGS.repeat < 1:
        sys.exit("--repeat must be at least 1")
    main(ARGS)
