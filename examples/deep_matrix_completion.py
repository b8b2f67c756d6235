"""Arora, Cohen, Hu & Luo (2019): deep matrix factorization completes from fewer entries.

Their setting: a 100 x 100 rank-5 target with unit RMS entry, |Omega| entries
observed uniformly, square layers with Gaussian init of end-to-end scale
1e-3, the paper's GroupRMSprop (lr 1e-3, alpha 0.99, eps 1e-4) until the mean
squared training error is <= 1e-6. Depth 1 is the nuclear-norm minimizer
(cvxpy + SCS, constraints |X_ij - M_ij| <= 1e-3 on Omega, as in the paper).
Plots test error (mean over all n^2 entries) and effective rank against
|Omega|, one line per depth.

    python examples/deep_matrix_completion.py            # paper size, 2 seeds (30-50 minutes on one core)
    python examples/deep_matrix_completion.py --quick    # n = 30, rank 2 (about a minute)
"""

from __future__ import annotations

import os

# One BLAS thread: 100 x 100 products are too small to gain from threads, and
# threads fighting over shared cores made the sweep several times slower.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from dlngeo.reproductions.completion import (  # noqa: E402
    CompletionRun,
    completion_sweep,
    effective_rank,
    low_rank_target,
)
from dlngeo.reproductions.figure_io import example_parser, save_small_png  # noqa: E402

FULL = dict(n=100, rank=5, counts=[1000, 1250, 1500, 2000, 2500, 3000, 4000, 5000], seeds=[0, 1])
QUICK = dict(n=30, rank=2, counts=[200, 250, 300, 400], seeds=[0, 1])


def _nuclear_available() -> bool:
    try:
        import cvxpy  # noqa: F401
    except ImportError:
        return False
    return True


def summarize(runs: list[CompletionRun]) -> dict[tuple[str, int], tuple[float, float, float]]:
    """(method, |Omega|) -> (geometric-mean test error, mean effective rank, fraction converged) over seeds."""
    groups: dict[tuple[str, int], list[CompletionRun]] = {}
    for run in runs:
        groups.setdefault((run.method, run.observations), []).append(run)
    return {
        key: (
            float(np.exp(np.mean(np.log([r.test_error for r in rs])))),
            float(np.mean([r.effective_rank for r in rs])),
            float(np.mean([r.converged for r in rs])),
        )
        for key, rs in groups.items()
    }


def plot(
    summary, n: int, rank: int, init_scale: float, path: Path, target_erank: float | None = None
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = sorted({m for m, _ in summary}, key=lambda m: (m != "nuclear norm", m))
    colors = {
        "nuclear norm": "0.45",
        "depth 2": "tab:blue",
        "depth 3": "tab:orange",
        "depth 4": "tab:red",
    }
    labels = {"nuclear norm": "depth 1 (min nuclear norm)"}
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
    for m in methods:
        counts = sorted(c for mm, c in summary if mm == m)
        err = [summary[m, c][0] for c in counts]
        er = [summary[m, c][1] for c in counts]
        style = dict(color=colors.get(m), marker="o", ms=4, lw=1.6, label=labels.get(m, m))
        if m == "nuclear norm":
            style.update(ls="--")
        ax1.semilogy(counts, err, **style)
        ax2.plot(counts, er, **style)
    dof = rank * (2 * n - rank)
    for ax in (ax1, ax2):
        ax.axvline(dof, color="k", lw=0.8, ls=":")
        ax.set_xlabel(r"observed entries $|\Omega|$")
        ax.grid(alpha=0.3)
    ax1.text(dof, ax1.get_ylim()[0], " dof", va="bottom", fontsize=8)
    if target_erank is not None:
        ax2.axhline(
            target_erank, color="k", lw=0.8, ls="--", label=f"effective rank of $M^*$ (rank {rank})"
        )
        ax2.legend(fontsize=8)
    ax1.set_ylabel("test error (mean sq. over all entries)")
    ax2.set_ylabel("effective rank")
    ax1.legend(fontsize=8)
    fig.suptitle(
        f"Deep matrix completion (Arora, Cohen, Hu & Luo 2019): {n}x{n}, rank {rank}, init {init_scale:g}",
        fontsize=10,
    )
    fig.tight_layout()
    save_small_png(fig, path, dpi=100)
    plt.close(fig)


def read_csv(path: Path) -> list[CompletionRun]:
    """The runs written by :func:`write_csv` (matrices not stored: ``X`` is ``None``)."""
    runs = []
    for line in path.read_text().splitlines()[1:]:
        method, depth, count, seed, err, er, train, its, conv = line.split(",")
        runs.append(
            CompletionRun(
                method,
                int(depth),
                int(count),
                None,
                float(train),
                float(err),
                float(er),
                int(its),
                bool(int(conv)),
                None if seed == "None" else int(seed),
            )
        )
    return runs


def write_csv(runs: list[CompletionRun], path: Path) -> None:
    """One line per run (without the matrices), so the figure can be re-made without re-running."""
    lines = [
        "method,depth,observations,seed,test_error,effective_rank,train_loss,iterations,converged"
    ]
    for r in runs:
        lines.append(
            f"{r.method},{r.depth},{r.observations},{r.seed},{r.test_error:.6e},{r.effective_rank:.6f},"
            f"{r.train_loss:.3e},{r.iterations},{int(r.converged)}"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> dict:
    parser = example_parser(__doc__, __file__, "n = 30, rank 2, 2 seeds (about a minute)")
    parser.add_argument(
        "--lr", type=float, default=1e-3, help="GroupRMSprop learning rate (paper: 1e-3)"
    )
    parser.add_argument(
        "--init-scale", type=float, default=1e-3, help="end-to-end init scale (paper: 1e-3)"
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="seeds (default: 0 1)")
    parser.add_argument(
        "--from-csv",
        type=Path,
        nargs="+",
        default=None,
        help="re-plot from CSV files of earlier runs",
    )
    parser.add_argument(
        "--max-iterations",
        type=int,
        default=None,
        help="step budget (default 200000; 40000 with --quick)",
    )
    args = parser.parse_args(argv)
    cfg = dict(QUICK if args.quick else FULL)
    if args.seeds:
        cfg["seeds"] = args.seeds
    max_iterations = args.max_iterations or (40_000 if args.quick else 200_000)
    nuclear = _nuclear_available()
    if not nuclear:
        print(
            "cvxpy not installed (pip install 'dlngeo[convex]'): skipping the nuclear-norm baseline"
        )
    start = time.perf_counter()

    def progress(run: CompletionRun) -> None:
        print(
            f"  |Omega|={run.observations:5d} {run.method:13s} test {run.test_error:9.2e}  "
            f"erank {run.effective_rank:6.2f}  steps {run.iterations:6d}  "
            f"{'ok' if run.converged else 'NOT converged'}  [{time.perf_counter() - start:6.0f} s]",
            flush=True,
        )

    if args.from_csv:
        runs = [run for path in args.from_csv for run in read_csv(path)]
        cfg["seeds"] = sorted({r.seed for r in runs})
        cfg["counts"] = sorted({r.observations for r in runs})
    else:
        runs = run_sweep(cfg, nuclear, args, max_iterations, progress)
    summary = summarize(runs)
    methods = sorted({m for m, _ in summary}, key=lambda m: (m != "nuclear norm", m))
    print(
        f"\ngeometric-mean test error / mean effective rank over {len(cfg['seeds'])} seed(s); n={cfg['n']}, rank={cfg['rank']}"
    )
    print("|Omega| " + "".join(f"{m:>22s}" for m in methods))
    for c in cfg["counts"]:
        print(
            f"{c:7d} "
            + "".join(f"{summary[m, c][0]:13.2e} /{summary[m, c][1]:6.2f}" for m in methods)
        )
    name = "deep_matrix_completion_quick" if args.quick else "deep_matrix_completion"
    write_csv(runs, args.out / f"{name}.csv")
    path = args.out / f"{name}.png"
    target_erank = float(
        np.mean(
            [
                effective_rank(low_rank_target(cfg["n"], cfg["rank"], np.random.default_rng(s)))
                for s in cfg["seeds"]
            ]
        )
    )
    print(f"effective rank of the target M*: {target_erank:.3f} (mean over seeds)")
    plot(summary, cfg["n"], cfg["rank"], args.init_scale, path, target_erank)
    print(f"figure: {path}  ({time.perf_counter() - start:.0f} s)")
    return summary


def run_sweep(cfg, nuclear, args, max_iterations, progress) -> list[CompletionRun]:
    return completion_sweep(
        cfg["n"],
        cfg["rank"],
        cfg["counts"],
        [2, 3, 4],
        cfg["seeds"],
        nuclear=nuclear,
        init_scale=args.init_scale,
        lr=args.lr,
        max_iterations=max_iterations,
        progress=progress,
    )


if __name__ == "__main__":
    main()
