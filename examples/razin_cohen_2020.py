"""Razin & Cohen (2020): implicit regularization that no norm explains.

2 x 2 completion with w12 = 1, w21 = 1, w22 = 0 observed: every solution has
det = -1, so from a small start with det > 0 the end-to-end flow of a deep
linear network (dX/dt = -A_{N,X}(E'(X))) can only lower the loss by sending
|w11| to infinity: the effective rank falls to 1 while the nuclear and
Frobenius norms grow without bound.

Integrated by dlngeo's driver (LSODA, rtol 1e-10) up to t = 1e6, in two
coordinate systems: Cartesian entries of X, and log singular values plus
rotation angles, where the sign of det is exact. They agree wherever the
Cartesian run is accurate; at depth 2 the smallest singular value decays
exponentially and the Cartesian run loses the sign of det in double precision
(it settles at a finite solution with det = -1): inconclusive, reported as such.

    python examples/razin_cohen_2020.py [--quick] [--out DIR | --update-figures]
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from dlngeo.reproductions.figure_io import example_parser, save_small_png
from dlngeo.reproductions.razin_cohen import (
    RazinCohenRun,
    end_to_end_flow,
    end_to_end_flow_svd,
    small_init,
)


def at(run: RazinCohenRun, t: float) -> int:
    return int(np.argmin(np.abs(run.times - t)))


def plot(runs: dict[int, RazinCohenRun], cartesian2: RazinCohenRun | None, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {2: "tab:gray", 3: "tab:blue", 4: "tab:red"}
    fig, axes = plt.subplots(2, 2, figsize=(9.5, 6.2), sharex=True)
    (a1, a2), (a3, a4) = axes
    for depth, run in sorted(runs.items()):
        t = run.times[1:]
        sl = slice(1, None)
        label = f"depth {depth}" + (" (log-σ coordinates)" if depth == 2 else "")
        ls = "--" if depth == 2 else "-"
        c = colors[depth]
        a1.loglog(t, np.abs(run.w11[sl]), color=c, ls=ls, label=label)
        a2.loglog(t, run.nuclear[sl], color=c, ls=ls, label=f"nuclear, depth {depth}")
        a2.loglog(t, run.frobenius[sl], color=c, ls=":", lw=2)
        a3.semilogx(t, run.effective_rank[sl], color=c, ls=ls)
        a4.loglog(t, run.loss[sl], color=c, ls=ls)
    if cartesian2 is not None:
        t = cartesian2.times[1:]
        a1.loglog(
            t,
            np.abs(cartesian2.w11[1:]),
            color="k",
            lw=0.8,
            alpha=0.6,
            label="depth 2, Cartesian: det sign lost",
        )
        a4.loglog(t, np.maximum(cartesian2.loss[1:], 1e-30), color="k", lw=0.8, alpha=0.6)
    a1.set_ylabel(r"$|w_{11}|$ (unobserved entry)")
    a2.set_ylabel(r"$\|X\|_*$ (solid/dashed), $\|X\|_F$ (dotted)")
    a3.set_ylabel("effective rank")
    a4.set_ylabel("loss")
    a4.set_ylim(1e-12, 10)
    a3.axhline(1, color="k", lw=0.6)
    for ax in (a3, a4):
        ax.set_xlabel("flow time t")
    for ax in axes.ravel():
        ax.grid(alpha=0.3, which="both", lw=0.4)
    a1.legend(fontsize=8, loc="upper left")
    fig.suptitle(
        r"Razin & Cohen 2020: observed $w_{12}=w_{21}=1,\ w_{22}=0$; start $X_0\sim10^{-2}N(0,1)$, $\det X_0>0$",
        fontsize=10,
    )
    fig.tight_layout()
    save_small_png(fig, path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict[int, RazinCohenRun]:
    parser = example_parser(__doc__, __file__, "t_end = 1e4 instead of 1e6")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    t_end = 1e4 if args.quick else 1e6
    start = time.perf_counter()
    X0 = small_init(args.seed)
    runs = {N: end_to_end_flow_svd(X0, N, t_end=t_end) for N in (2, 3, 4)}
    cartesian = {N: end_to_end_flow(X0, N, t_end=t_end) for N in (2, 3, 4)}

    print(f"X0 = {X0.round(5).tolist()}, det X0 = {np.linalg.det(X0):.2e}; t_end = {t_end:g}")
    print(
        f"{'depth':>5} {'coords':>9} {'|w11|(1e2)':>11} {'|w11|(1e4)':>11} {'|w11|(end)':>11} {'loss(end)':>10} "
        f"{'2*loss*w11^2':>12} {'log|det|':>9} {'min det':>9} {'erank':>8} {'nuclear':>9} {'Frobenius':>9}"
    )
    for N in (2, 3, 4):
        for name, run in (("log-sigma", runs[N]), ("Cartesian", cartesian[N])):
            w = np.abs(run.w11)
            min_det = float(np.min(run.det)) if name == "Cartesian" else float("nan")
            print(
                f"{N:5d} {name:>9} {w[at(run, 1e2)]:11.3f} {w[at(run, min(1e4, t_end))]:11.3f} {w[-1]:11.3f} "
                f"{run.loss[-1]:10.3e} {2 * run.loss[-1] * w[-1] ** 2:12.6f} {run.log_abs_det[-1]:9.1f} "
                f"{min_det:9.2e} {run.effective_rank[-1]:8.5f} {run.nuclear[-1]:9.3f} {run.frobenius[-1]:9.3f}"
            )
    print(
        "log-sigma coordinates: det > 0 exactly (det = sigma_1 sigma_2, signs fixed); min det is printed for Cartesian runs."
    )
    c2 = cartesian[2]
    flipped = np.nonzero(c2.det < 0)[0]
    if flipped.size:
        print(
            f"depth 2, Cartesian: det turns negative at t ~ {c2.times[flipped[0]]:.3g} and the run stops at a finite "
            f"solution (|w11| = {abs(c2.w11[-1]):.2f}, det = {c2.det[-1]:.3f}): inconclusive in double precision."
        )
    name = "razin_cohen_2020_quick.png" if args.quick else "razin_cohen_2020.png"
    path = args.out / name
    plot(runs, c2, path)
    print(f"figure: {path}  ({time.perf_counter() - start:.1f} s)")
    return runs


if __name__ == "__main__":
    main()
