"""Large-scale matrix completion from a spectral start: dlngeo's solvers against a tuned pymanopt CG.

Problem: an ``m x n`` rank-``r`` target with unit RMS entry (factored, never
formed), ``k`` entries observed uniformly, the mean squared error on them,
and the spectral start (``scipy.sparse.linalg.svds`` of the rescaled sparse
observations, ``mn/k P_Omega(M)``, through dlngeo's ``spectral`` sampler on a
depth-2 network of hidden width ``r``). Every solver stops when the relative
residual on the observations ``||r|| / ||P_Omega(M)||`` reaches ``--tol``; the
table then gives the relative error on the whole matrix
``||X - M||_F / ||M||_F`` (from the factors).

Contenders: dlngeo's ``riemannian_lm`` (with its diagonal preconditioner and
without), ``riemannian_cg`` (embedded metric) and
``riemannian_tr`` (embedded metric with its default ``theta = 1`` and with
``theta = 0.5``, and g_N), and the peer: pymanopt's
``FixedRankEmbedded`` with ``ConjugateGradient`` and three small fixes made
here by subclassing (pymanopt itself is not touched): (1) the adaptive line
search, restarted from its initial step after a failed search; (2) ambient
triples ``(U, S, V)`` and ``to_tangent_space`` applied right to left (never an
``m x m`` product); (3) one residual shared by the cost and the gradient at
the same point (its residual in plain numpy, ``(u * s)[rows]`` against
``v[cols]``). Times are the CPU seconds of this process for the solve (the
start is shared), so that other load on a shared machine does not skew the
ratios (wall seconds are printed as they come); peak memory is measured with ``tracemalloc`` in a second, separate
pass (allocations made by the solve, above what the problem already holds).

``--scale`` instead times the whole pipeline of one method once
(``--scale-method``: ``riemannian_lm``, the fastest at 10^4 and 10^5, or ``riemannian_cg``),
building the problem and the spectral start included, and reports the
process's peak resident memory (``resource.getrusage``).

Usage::

    python benchmarks/bench_large_completion.py                 # 10^4 x 10^4, rank 10, 10^6 entries
    python benchmarks/bench_large_completion.py --quick         # 2000 x 2000, 10^5 entries
    python benchmarks/bench_large_completion.py --scale --size 100000 --observations 10000000
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import tracemalloc  # noqa: E402

import numpy as np  # noqa: E402
import pymanopt  # noqa: E402
import scipy  # noqa: E402
from pymanopt.manifolds import FixedRankEmbedded  # noqa: E402
from pymanopt.manifolds.fixed_rank import _FixedRankTangentVector  # noqa: E402

import dlngeo  # noqa: E402
from dlngeo.dynamics import Stopping, Task  # noqa: E402
from dlngeo.dynamics.intrinsic import lowrank_start  # noqa: E402
from dlngeo.lowrank import entries  # noqa: E402

#: Timed to a target: the default ``stationary`` stop (relative gradient 1e-6) is
#: switched off, so every contender runs until it reaches the loss it is timed to.
TO_TARGET = {"gradient_norm_rtol": 0, "gradient_norm_atol": 0}


METHODS = {
    "dlngeo riemannian_lm": ("riemannian_lm", {}),
    "dlngeo riemannian_lm (no preconditioner)": ("riemannian_lm", {"preconditioner": "none"}),
    "dlngeo riemannian_cg (embedded)": ("riemannian_cg", {"metric": "embedded"}),
    "dlngeo riemannian_tr (embedded)": ("riemannian_tr", {"metric": "embedded"}),
    "dlngeo riemannian_tr (g_N)": ("riemannian_tr", {"metric": "dln"}),
    "dlngeo riemannian_tr (embedded, theta 0.5)": (
        "riemannian_tr",
        {"metric": "embedded", "theta": 0.5},
    ),
}

#: What ``--scale`` can time (``--scale-method``).
SCALE_METHODS = {
    "riemannian_cg": ("riemannian_cg", {"metric": "embedded"}),
    "riemannian_lm": ("riemannian_lm", {}),
}


# ---------------------------------------------------------------- the problem
def build_problem(size: tuple[int, int], rank: int, observations: int, seed: int) -> tuple:
    """``(task, target)``: the completion task with its spectral start, and the factored target."""
    rng = np.random.default_rng(seed)
    target = dlngeo.create_sampler("low_rank_target", shape=size, rank=rank, factored=True).sample(
        rng
    )
    rows, cols = dlngeo.create_sampler("uniform_mask", shape=size, size=observations).sample(rng)
    values = entries(target, rows, cols)
    loss = dlngeo.create_loss("matrix_completion", rows=rows, cols=cols, values=values, shape=size)
    del rows, cols, values
    net = dlngeo.DeepLinearNetwork((size[1], rank, size[0]))
    weights = dlngeo.create_sampler("spectral", init_scale=1.0, rank=rank, weighted=True).sample(
        rng, network=net, loss=loss
    )
    return Task(loss=loss, network=net, weights0=weights, rank=rank), target


def relative_error(point, target) -> float:
    """``||X - M||_F / ||M||_F`` from the factors (Gram matrices, ``O((m + n) r^2)``)."""
    u, s, vt = point
    U, S, Vt = target
    xx = float(np.sum(s**2))
    mm = float(np.sum(S**2))
    xm = float(np.sum((s[:, None] * (u.T @ U)) * ((vt @ Vt.T) * S[None, :])))
    return float(np.sqrt(max(xx + mm - 2 * xm, 0.0) / mm))


# ---------------------------------------------------------------- the peer: tuned pymanopt CG
class RightToLeftFixedRank(FixedRankEmbedded):
    """pymanopt's FixedRankEmbedded with ambient triples and ``to_tangent_space`` applied right to left."""

    def _apply_ambient(self, vector, matrix):
        if isinstance(vector, (list, tuple)):
            return vector[0] @ (vector[1] @ (vector[2].T @ matrix))
        return vector @ matrix

    def _apply_ambient_transpose(self, vector, matrix):
        if isinstance(vector, (list, tuple)):
            return vector[2] @ (vector[1] @ (vector[0].T @ matrix))
        return vector.T @ matrix

    def to_tangent_space(self, point, vector):
        u, _, vt = point
        Up = vector.Up - u @ (u.T @ vector.Up)
        Vp = vector.Vp - vt.T @ (vt @ vector.Vp)
        return _FixedRankTangentVector(Up, vector.M, Vp)


class RestartingAdaptiveLineSearcher(pymanopt.optimizers.line_search.AdaptiveLineSearcher):
    """pymanopt's adaptive line search; after a failed search (stored step 0) it restarts from the initial step."""

    def search(self, objective, manifold, x, d, f0, df0):
        if self._oldalpha is not None and not self._oldalpha > 0:
            self._oldalpha = None
        return super().search(objective, manifold, x, d, f0, df0)


def peer_cg(task: Task, loss_below: float, max_time: float) -> tuple:
    """Tuned pymanopt CG from the task's start; returns ``(point, iterations, reached)``."""
    loss = task.loss
    m, n = loss.shape
    manifold = RightToLeftFixedRank(m, n, task.rank)
    cache: list = [None, None]

    def residual(u, s, vt):  # fix 3: one residual per point, shared by cost and gradient
        key = cache[0]
        if key is not None and key[0] is u and key[1] is s and key[2] is vt:
            return cache[1]
        # Plain numpy, as a pymanopt user writes it: (u * s)[rows] . v[cols].
        r = np.einsum("ij,ij->i", (u * s)[loss.rows], vt.T[loss.cols]) - loss.values
        cache[0], cache[1] = (u, s, vt), r
        return r

    @pymanopt.function.numpy(manifold)
    def cost(u, s, vt):
        r = residual(u, s, vt)
        return float(r @ r) / r.size

    @pymanopt.function.numpy(manifold)
    def riemannian_gradient(u, s, vt):
        S = loss._sparse((2.0 / loss.rows.size) * residual(u, s, vt))
        return manifold.projection((u, s, vt), S)

    problem = pymanopt.Problem(manifold, cost, riemannian_gradient=riemannian_gradient)

    class Stop(pymanopt.optimizers.ConjugateGradient):
        def _check_stopping_criterion(self, *, start_time, iteration=-1, **kwargs):
            reason = super()._check_stopping_criterion(
                start_time=start_time, iteration=iteration, **kwargs
            )
            if reason is None and cache[1] is not None:
                r = cache[1]
                if float(r @ r) / r.size <= loss_below:
                    return "loss_below"
            return reason

    optimizer = Stop(
        line_searcher=RestartingAdaptiveLineSearcher(),  # fix 1
        max_iterations=10**6,
        max_time=max_time,
        min_gradient_norm=0.0,
        min_step_size=0.0,
        max_cost_evaluations=10**9,
        verbosity=0,
        log_verbosity=0,
    )
    start, _ = lowrank_start(task)
    result = optimizer.run(problem, initial_point=start)
    point = result.point
    value = float(loss.value(tuple(point)))
    return tuple(point), int(result.iterations), value <= loss_below


def run(label: str, task: Task, loss_below: float, max_time: float) -> tuple:
    """``(CPU seconds, point, iterations, reached, wall seconds, Hessian-vector products)`` of one contender."""
    start = time.perf_counter()
    cpu = time.process_time()
    products = None
    if label == "pymanopt CG (tuned)":
        point, iterations, reached = peer_cg(task, loss_below, max_time)
    else:
        name, options = METHODS[label]
        if name == "riemannian_tr":
            # The default radius (typical_dist, from the Cauchy scale ||P_Omega(M)||_F) is
            # sqrt(k / mn) ||M||_F, ten times shorter than the distance to cover here. TR's
            # largest radius is typical_dist at the scale of ||M||_F (estimated from the
            # observations), in the metric's own units: ||M||_F / sqrt(k) in Frobenius, the
            # g_N length of the same rank-one step on DLNFixedRank.
            loss = task.loss
            m, n = loss.shape
            scale = float(np.linalg.norm(loss.values) * np.sqrt(m * n / loss.rows.size))
            if options["metric"] == "embedded":
                radius = dlngeo.FixedRank(m, n, task.rank, scale=scale).typical_dist
            else:
                radius = dlngeo.DLNFixedRank(m, n, task.rank, task.depth, scale=scale).typical_dist
            options = {**options, "trust_radius": radius}
        record = dlngeo.create_solver(name, record_every=10**6, **options).run(
            task,
            Stopping(loss_below=loss_below, max_time=max_time, max_iterations=10**6, **TO_TARGET),
        )
        point, iterations = record.final_point, record.n_iterations
        reached = record.stop_reason == "loss_below"
        if name == "riemannian_tr":
            products = record.evaluations["hessian"]
    elapsed = time.process_time() - cpu
    return elapsed, tuple(point), iterations, reached, time.perf_counter() - start, products


def versions() -> str:
    return (
        f"{platform.machine()}, {os.cpu_count()} cores, python {platform.python_version()}, "
        f"numpy {np.__version__}, scipy {scipy.__version__}, pymanopt {pymanopt.__version__}, "
        f"dlngeo {dlngeo.__version__}; BLAS threads {os.environ.get('OPENBLAS_NUM_THREADS')}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=10_000, help="m = n (default 10^4)")
    parser.add_argument("--rank", type=int, default=10)
    parser.add_argument("--observations", type=int, default=1_000_000)
    parser.add_argument("--tol", type=float, default=1e-6, help="relative residual to reach")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=1, help="interleaved timing rounds")
    parser.add_argument("--max-time", type=float, default=600.0, help="cap per contender (s)")
    parser.add_argument("--skip", action="append", default=[], help="skip contenders matching")
    parser.add_argument("--no-memory", action="store_true", help="skip the tracemalloc pass")
    parser.add_argument("--quick", action="store_true", help="2000 x 2000, 10^5 entries")
    parser.add_argument(
        "--scale", action="store_true", help="time build + spectral start + one method once"
    )
    parser.add_argument(
        "--scale-method",
        choices=sorted(SCALE_METHODS),
        default="riemannian_lm",
        help="the method --scale times (default riemannian_lm, the fastest at 10^4 and 10^5)",
    )
    args = parser.parse_args()
    if args.quick:
        args.size, args.observations = 2000, 100_000
    size = (args.size, args.size)
    print(
        f"completion {args.size} x {args.size}, rank {args.rank}, {args.observations} entries, "
        f"spectral start, relative residual {args.tol:g}"
    )
    print(versions())
    if args.scale:
        cpu = time.process_time()
        start = time.perf_counter()
        task, target = build_problem(size, args.rank, args.observations, args.seed)
        built = time.perf_counter() - start
        loss_below = args.tol**2 * float(np.mean(task.loss.values**2))
        name, options = SCALE_METHODS[args.scale_method]
        record = dlngeo.create_solver(name, record_every=10**6, **options).run(
            task,
            Stopping(
                loss_below=loss_below, max_time=args.max_time, max_iterations=10**6, **TO_TARGET
            ),
        )
        total = time.perf_counter() - start
        cpu = time.process_time() - cpu
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # kB -> GB
        print(
            f"build + spectral start {built:.1f} s, {args.scale_method} {record.wall_time_s:.1f} s "
            f"({record.n_iterations} iterations, {record.evaluations.get('inner')} inner, "
            f"{record.stop_reason}); total {total:.1f} s wall, {cpu:.1f} s CPU (goal <= 120 s); "
            f"relative error {max(relative_error(record.final_point, target), 1e-8):.2e} "
            "(1e-8: below the Gram formula's rounding floor); "
            f"peak resident memory {peak:.2f} GB (goal <= 4 GB)"
        )
        return
    start = time.perf_counter()
    task, target = build_problem(size, args.rank, args.observations, args.seed)
    print(f"problem and spectral start built in {time.perf_counter() - start:.1f} s")
    loss_below = args.tol**2 * float(np.mean(task.loss.values**2))
    start_point, _ = lowrank_start(task)
    print(f"spectral start: relative error {relative_error(start_point, target):.2e}")
    labels = [
        label
        for label in ["pymanopt CG (tuned)", *METHODS]
        if not any(word in label for word in args.skip)
    ]
    best: dict[str, tuple] = {}
    for _ in range(args.repeat):
        for label in labels:
            result = run(label, task, loss_below, args.max_time)
            if label not in best or result[0] < best[label][0]:
                best[label] = result
            print(f"  {label}: {result[0]:.2f} s CPU, {result[4]:.2f} s wall", flush=True)
    memory: dict[str, float] = {}
    if not args.no_memory:
        for label in labels:
            tracemalloc.start()
            tracemalloc.reset_peak()
            base = tracemalloc.get_traced_memory()[0]
            run(label, task, loss_below, args.max_time)
            memory[label] = (tracemalloc.get_traced_memory()[1] - base) / 2**20
            tracemalloc.stop()
    obs_mb = 3 * 8 * args.observations / 2**20
    print(
        f"\n{'contender':<44} {'CPU (s)':>9} {'iters':>6} {'Hv':>6} {'rel. error':>10} "
        f"{'peak MB':>8} reached"
    )
    for label in labels:
        seconds, point, iterations, reached, _, products = best[label]
        peak = f"{memory[label]:8.0f}" if label in memory else "       -"
        hv = f"{products:>6d}" if products is not None else "     -"
        print(
            f"{label:<44} {seconds:>9.2f} {iterations:>6d} {hv} "
            f"{max(relative_error(point, target), 1e-8):>10.2e} {peak} {reached}"
        )
    print("(relative errors below 1e-8 print as 1e-8: the Gram formula's rounding floor)")
    print(
        f"(observations: rows, cols, values = {obs_mb:.0f} MB; an m x n array would be "
        f"{8 * args.size**2 / 2**20:.0f} MB)"
    )
    peer = best.get("pymanopt CG (tuned)")
    ours = {k: v for k, v in best.items() if k.startswith("dlngeo") and v[3]}
    if peer and ours:
        fastest = min(ours, key=lambda k: ours[k][0])
        print(
            f"fastest dlngeo: {fastest}; ratio tuned pymanopt CG / dlngeo = "
            f"{peer[0] / ours[fastest][0]:.2f}x (goal >= 2x)"
        )
    cg = best.get("dlngeo riemannian_cg (embedded)")
    for variant in ("embedded", "g_N", "embedded, theta 0.5"):
        tr = best.get(f"dlngeo riemannian_tr ({variant})")
        if tr and cg:
            print(f"TR ({variant}) / CG (embedded) = {tr[0] / cg[0]:.2f} (goal <= 2)")
    if peer:
        for label, result in best.items():
            if label.startswith("dlngeo"):
                print(f"tuned pymanopt CG / {label} = {peer[0] / result[0]:.2f}")


if __name__ == "__main__":
    sys.exit(main())
