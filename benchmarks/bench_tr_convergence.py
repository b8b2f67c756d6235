"""How often pymanopt's TrustRegions, at its defaults, solves matrix completion: ours against pymanopt's own class.

The instances are those of ``tests/test_pymanopt_solvers.py``: a rank-``k``
``m x n`` truth ``scale * G H / sqrt(k)`` (Gaussian ``G``, ``H``), 35 % of its
entries observed, loss :math:`\\tfrac12\\sum_\\Omega (X_{ij} - M_{ij})^2`.
Each is solved from two starts, TR's default start ``manifold.random_point()``
(after ``np.random.seed(seed)``) and the spectral one (top-``k`` SVD of the
zero-filled observations over the fraction observed), on

* ``FixedRank``, ``DLNFixedRank`` depth 2 and 3: dlngeo's manifolds through
  :func:`dlngeo.problem` (radius and random start follow the data's scale);
* ``pymanopt``: pymanopt's own ``FixedRankEmbedded`` with the ambient
  gradient fix (the Euclidean gradient given as the dense ambient matrix
  :math:`P_\\Omega(X - M)` and projected onto the tangent space, the Hessian
  with Vandereycken's curvature term), pymanopt's ``random_point`` (singular
  values uniform in ``[0, 1]``) and radius (``typical_dist = dim``), on the
  data as it is;
* ``pymanopt-unit``: the same on the data rescaled to unit RMS observed entry
  (what a pymanopt user would do by hand; its relative error is that of the
  unscaled problem).

TrustRegions runs with pymanopt's defaults (``min_gradient_norm = 1e-6``,
radius from ``typical_dist``), except ``max_iterations`` (``--max-iterations``,
default 300: converging runs took at most 40 in the run reported in the
README; a failing one runs away along a nearly unobserved rank-one direction
and only gets slower). A run counts as converged when its relative error
:math:`\\|X - M\\|_F / \\|M\\|_F` is at most ``1e-3`` (the error at TR's gradient
stop is far below, see the test's ``_error_bound``; the runs that failed were at
3e2 and above, ``s_1`` hundreds of times ``||M||``). Printed: counts per
method, start, size and scale, the failing (size, seed, scale, start) cases,
and the stop reasons; ``--json`` writes every run.

Usage::

    python benchmarks/bench_tr_convergence.py [--seeds 20] [--scales 1e-2 1 1e2] [--json out.json]
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import collections  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import pymanopt  # noqa: E402
from pymanopt.manifolds import FixedRankEmbedded  # noqa: E402
from pymanopt.manifolds.fixed_rank import _FixedRankPoint, _FixedRankTangentVector  # noqa: E402
from pymanopt.optimizers import TrustRegions  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import dlngeo  # noqa: E402
from dlngeo.lowrank import to_dense  # noqa: E402
from plugins.losses import MatrixCompletion  # noqa: E402

SIZES = {"45x70": (45, 70, 3), "100x100": (100, 100, 5)}
METHODS = ("FixedRank", "DLNFixedRank-2", "DLNFixedRank-3", "pymanopt", "pymanopt-unit")
CONVERGED = 1e-3


def instance(seed: int, m: int, n: int, k: int, scale: float, fraction: float = 0.35):
    """The test suite's instance: loss (sum normalization), truth, spectral start."""
    rng = np.random.default_rng(seed)
    truth = scale * (rng.standard_normal((m, k)) @ rng.standard_normal((k, n))) / np.sqrt(k)
    observed = rng.choice(m * n, int(fraction * m * n), replace=False)
    rows, cols = np.divmod(observed, n)
    loss = MatrixCompletion(rows, cols, truth[rows, cols], (m, n), normalization="sum")
    zero_filled = np.zeros((m, n))
    zero_filled[rows, cols] = truth[rows, cols] * (m * n / len(observed))
    u, s, vt = np.linalg.svd(zero_filled, full_matrices=False)
    return loss, truth, (u[:, :k], s[:k], vt[:k])


class AmbientFixedRankEmbedded(FixedRankEmbedded):
    """pymanopt's class taking a dense ambient Euclidean gradient (the "10-line fix")."""

    def euclidean_to_riemannian_gradient(self, point, euclidean_gradient):
        return self.projection(point, euclidean_gradient)

    def euclidean_to_riemannian_hessian(
        self, point, euclidean_gradient, euclidean_hessian, tangent_vector
    ):
        u, s, vt = point
        normal = euclidean_gradient - u @ (u.T @ euclidean_gradient)
        normal = normal - (normal @ vt.T) @ vt
        curvature = _FixedRankTangentVector(
            normal @ tangent_vector.Vp / s,
            np.zeros((self._k, self._k)),
            normal.T @ tangent_vector.Up / s,
        )
        return self.projection(point, euclidean_hessian) + curvature


def pymanopt_problem(loss: MatrixCompletion, m: int, n: int, k: int, unit: float):
    """pymanopt's Problem on the fixed class, data divided by ``unit``."""
    manifold = AmbientFixedRankEmbedded(m, n, k)
    rows, cols, values = loss.rows, loss.cols, loss.values / unit

    def residual(u, s, vt):
        return np.einsum("ij,ij->i", (u * s)[rows], vt.T[cols]) - values

    def observed(data):
        dense = np.zeros((m, n))
        dense[rows, cols] = data
        return dense

    @pymanopt.function.numpy(manifold)
    def cost(u, s, vt):
        r = residual(u, s, vt)
        return 0.5 * float(r @ r)

    @pymanopt.function.numpy(manifold)
    def euclidean_gradient(u, s, vt):
        return observed(residual(u, s, vt))

    @pymanopt.function.numpy(manifold)
    def euclidean_hessian(u, s, vt, U, S, V):
        return observed(np.einsum("ij,ij->i", (U @ S)[rows], V[cols]))

    return pymanopt.Problem(
        manifold, cost, euclidean_gradient=euclidean_gradient, euclidean_hessian=euclidean_hessian
    )


def _reason(text: str) -> str:
    """pymanopt's stopping text without its counts: 'min grad norm', 'max iterations', ..."""
    return text.removeprefix("Terminated - ").split(" reached")[0]


def run(method: str, size: str, seed: int, scale: float, start: str, max_iterations: int):
    m, n, k = SIZES[size]
    loss, truth, spectral = instance(seed, m, n, k, scale)
    unit = 1.0
    if method.startswith("pymanopt"):
        if method == "pymanopt-unit":
            unit = float(np.sqrt(np.mean(loss.values**2)))
        problem = pymanopt_problem(loss, m, n, k, unit)
        spectral = (spectral[0], spectral[1] / unit, spectral[2])
    else:
        depth = int(method.split("-")[1]) if "-" in method else None
        man = dlngeo.FixedRank(m, n, k) if depth is None else dlngeo.DLNFixedRank(m, n, k, depth)
        problem = dlngeo.problem(man, loss)
    optimizer = TrustRegions(verbosity=0, max_iterations=max_iterations)
    np.random.seed(seed)
    started = time.process_time()
    if start == "random_point":
        result = optimizer.run(problem)
    else:
        result = optimizer.run(problem, initial_point=_FixedRankPoint(*spectral))
    seconds = time.process_time() - started
    error = float(np.linalg.norm(unit * to_dense(result.point) - truth) / np.linalg.norm(truth))
    return {
        "method": method,
        "size": size,
        "seed": seed,
        "scale": scale,
        "start": start,
        "iterations": int(result.iterations),
        "stop": _reason(result.stopping_criterion),
        "error": error,
        "converged": bool(error <= CONVERGED),
        "s_max": float(np.max(result.point[1])) * unit / float(np.linalg.norm(truth)),
        "seconds": seconds,
    }


def summarize(runs: list[dict]) -> str:
    lines = []
    table: dict = collections.defaultdict(lambda: [0, 0])
    for r in runs:
        cell = table[(r["method"], r["start"], r["size"], r["scale"])]
        cell[0] += r["converged"]
        cell[1] += 1
    scales = sorted({r["scale"] for r in runs})
    lines.append(
        f"{'method':<16}{'start':<14}{'size':<9}" + "".join(f"{f'scale {s:g}':>12}" for s in scales)
    )
    for method in METHODS:
        for start in ("random_point", "spectral"):
            for size in SIZES:
                cells = [table.get((method, start, size, s)) for s in scales]
                if not any(cells):
                    continue
                lines.append(
                    f"{method:<16}{start:<14}{size:<9}"
                    + "".join(f"{f'{c[0]}/{c[1]}' if c else '-':>12}" for c in cells)
                )
    lines.append("")
    lines.append(
        "failures (method, size, seed, scale, start: stop, iterations, error, s_max/||M||):"
    )
    for r in runs:
        if not r["converged"]:
            lines.append(
                f"  {r['method']} {r['size']} seed {r['seed']} scale {r['scale']:g} {r['start']}: "
                f"{r['stop']}, {r['iterations']} it, error {r['error']:.2g}, s_max {r['s_max']:.3g}"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=20, help="seeds 0 .. SEEDS-1")
    parser.add_argument("--scales", type=float, nargs="+", default=[1e-2, 1.0, 1e2])
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument(
        "--starts",
        nargs="+",
        default=["random_point", "spectral"],
        choices=["random_point", "spectral"],
    )
    parser.add_argument("--max-iterations", type=int, default=300)
    parser.add_argument("--json", help="write every run to this file")
    args = parser.parse_args(argv)
    runs = []
    for size in args.sizes:
        for seed in range(args.seeds):
            for scale in args.scales:
                for start in args.starts:
                    for method in args.methods:
                        runs.append(run(method, size, seed, scale, start, args.max_iterations))
                        print(json.dumps(runs[-1]), file=sys.stderr, flush=True)
    print(summarize(runs))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(runs, f, indent=1)


if __name__ == "__main__":
    main()
