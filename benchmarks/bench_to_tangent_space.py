"""``to_tangent_space`` and ``_apply_ambient``: pymanopt's left-to-right products against ours.

pymanopt's ``FixedRankEmbedded.to_tangent_space`` computes ``u @ u.T @ Up``
left to right, which forms the ``m x m`` matrix ``u @ u.T`` (800 MB at
``m = 10^4``) and costs ``O(m^2 k)``; ``dlngeo.FixedRank`` applies it right to
left, ``u @ (u.T @ Up)``, in ``O(m k^2)`` with ``k x k`` intermediates. The
same holds for ``_apply_ambient((U, S, V), B)``, which pymanopt evaluates as
``U @ S @ V.T @ B`` (an ``m x n`` intermediate). This script times both
(min over repeats) and measures the peak memory numpy allocates during one
call (``tracemalloc``, which sees numpy's buffers), in the same run, and
prints the ratios.

Run ``python benchmarks/bench_to_tangent_space.py`` (``--m 10000 --n 10000
--k 10``, the size of issue 11, about 10 s and 1 GB peak for pymanopt's side)
or ``--quick`` (``m = n = 2000``). One BLAS thread (set before numpy is
imported; override with ``OPENBLAS_NUM_THREADS`` / ``OMP_NUM_THREADS``).
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402
import tracemalloc  # noqa: E402
from collections.abc import Callable  # noqa: E402

import numpy as np  # noqa: E402
import pymanopt  # noqa: E402
from pymanopt.manifolds import FixedRankEmbedded  # noqa: E402

import dlngeo  # noqa: E402


def measure(fn: Callable[[], object], repeats: int) -> tuple[float, int]:
    """(best wall time over ``repeats`` calls, peak bytes allocated during one call)."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    tracemalloc.start()
    tracemalloc.reset_peak()
    fn()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return best, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--m", type=int, default=10_000)
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="m = n = 2000")
    args = parser.parse_args()
    m, n, k = (2000, 2000, args.k) if args.quick else (args.m, args.n, args.k)

    np.random.seed(0)
    ours, theirs = dlngeo.FixedRank(m, n, k), FixedRankEmbedded(m, n, k)
    x = ours.random_point()
    rng = np.random.default_rng(0)
    vector = ours.zero_vector(x)
    vector = type(vector)(
        rng.standard_normal((m, k)), rng.standard_normal((k, k)), rng.standard_normal((n, k))
    )
    triple = ours.embedding(x, ours.to_tangent_space(x, vector))
    B = rng.standard_normal((n, k))

    # Same numbers first (rounding of products of length <= m + n).
    a, b = ours.to_tangent_space(x, vector), theirs.to_tangent_space(x, vector)
    gap = max(float(np.max(np.abs(p - q))) for p, q in zip(a, b))
    print(f"numpy {np.__version__}, pymanopt {pymanopt.__version__}, {platform.platform()}")
    print(f"m = {m}, n = {n}, k = {k}; max |ours - pymanopt's| = {gap:.1e}")

    rows = [
        ("to_tangent_space", lambda: theirs.to_tangent_space(x, vector),
         lambda: ours.to_tangent_space(x, vector)),
        ("_apply_ambient (U, S, V)", lambda: theirs._apply_ambient(tuple(triple), B),
         lambda: ours._apply_ambient(tuple(triple), B)),
    ]  # fmt: skip
    print(f"{'method':26s} {'pymanopt':>10s} {'dlngeo':>10s} {'time ratio':>11s} "
          f"{'peak pymanopt':>14s} {'peak dlngeo':>12s} {'memory ratio':>13s}")  # fmt: skip
    for name, slow, fast in rows:
        t_slow, m_slow = measure(slow, args.repeats)
        t_fast, m_fast = measure(fast, args.repeats)
        print(
            f"{name:26s} {t_slow:9.4f}s {t_fast:9.4f}s {t_slow / t_fast:10.0f}x "
            f"{m_slow / 2**20:11.1f} MB {m_fast / 2**20:9.1f} MB {m_slow / max(m_fast, 1):12.0f}x"
        )


if __name__ == "__main__":
    main()
