"""Balanced overparametrized flow = Riemannian gradient flow on (M_r, g_N) (Bah et al. 2021; Menon 2024).

Gradient flow on the factors of a depth-N network with hidden width r, from
small Gaussian factors (scale sigma) or from the balanced factorization of the
same end-to-end matrix, against the intrinsic flow dX/dt = -A_{N,X}(E'(X)) on
the rank-r manifold, for E = ||X - Y||^2 / 2 (Y: 5 x 6, full rank, r = 3).

Two gaps, both along the overparametrized trajectory X = phi(W(t)):
  velocity gap    ||dphi(W)[dW/dt] + A_{N,X}(E'(X))|| / ||A_{N,X}(E'(X))||
                  (does the factor flow move X along the Riemannian gradient?)
  trajectory gap  ||phi(W(t)) - X_intrinsic(t)|| / ||Y||, both from the same X0.
Balanced: both are zero to integration accuracy. Unbalanced: the velocity gap
once the loss has fallen by 90 % scales like the conserved imbalance, sigma^2;
the trajectory gap does not shrink (the escape from the saddle at 0 happens at
a different time), but both flows end at the same minimizer.

    python examples/balanced_vs_riemannian.py [--quick] [--out DIR | --update-figures]
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from dlngeo.reproductions.balanced import FlowComparison, compare_flows, regression_target
from dlngeo.reproductions.figure_io import example_parser, save_small_png

SINGULAR_VALUES = [3.0, 2.0, 1.5, 0.5, 0.2]
DEPTH3 = dict(dims=(6, 3, 3, 5), scales=[0.4, 0.2, 0.1], t_end=80.0)
DEPTH2 = dict(dims=(6, 3, 5), scales=[0.3, 0.1, 0.03, 0.01], t_end=30.0)


def _converged_mask(c: FlowComparison) -> np.ndarray:
    """True while the loss is still 0.1 % above its final value (the relative gap is 0/0 after)."""
    return c.loss > c.loss[-1] + 1e-3 * (c.loss[0] - c.loss[-1])


def plot(
    curves: list[FlowComparison], scaling: dict[int, list[FlowComparison]], path: Path
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2, a3) = plt.subplots(1, 3, figsize=(13, 3.9))
    scales = sorted({c.scale for c in curves}, reverse=True)
    cmap = plt.get_cmap("viridis")
    color = {s: cmap(i / max(1, len(scales) - 1) * 0.85) for i, s in enumerate(scales)}
    for c in curves:
        keep = _converged_mask(c)
        keep[0] = False  # t = 0 on a log axis
        ls = "--" if c.start == "balanced" else "-"
        lab = f"{c.start}, σ={c.scale:g}"
        a1.loglog(
            c.times[keep],
            np.maximum(c.velocity_gap[keep], 1e-17),
            ls=ls,
            color=color[c.scale],
            label=lab,
        )
        a2.loglog(
            c.times[1:],
            np.maximum(c.trajectory_gap[1:], 1e-17),
            ls=ls,
            color=color[c.scale],
            label=lab,
        )
        if c.start == "unbalanced":
            a1.plot([c.t90], [c.velocity_gap_t90], "o", color=color[c.scale], ms=5)
    a1.set_title("velocity gap (depth 3); dots: loss down 90 %", fontsize=9)
    a1.set_ylabel(r"$\|d\phi[\dot W] + A_{N,X}E'(X)\| \,/\, \|A_{N,X}E'(X)\|$")
    a2.set_title("trajectory gap, same $X_0$ (depth 3)", fontsize=9)
    a2.set_ylabel(r"$\|\phi(W(t)) - X_{\rm intrinsic}(t)\|_F / \|Y\|_F$")
    for ax in (a1, a2):
        ax.set_xlabel("flow time t")
        ax.grid(alpha=0.3, which="both", lw=0.4)
    a1.legend(fontsize=7, ncol=2, loc="center left")
    markers = {2: "s", 3: "o"}
    for depth, cs in sorted(scaling.items()):
        sig = np.array([c.scale for c in cs])
        gap = np.array([c.velocity_gap_t90 for c in cs])
        a3.loglog(sig, gap, markers[depth] + "-", label=f"unbalanced, depth {depth}")
        a3.loglog(sig, gap[0] * (sig / sig[0]) ** 2, "k:", lw=1)
    a3.plot([], [], "k:", lw=1, label=r"$\propto\sigma^2$ (imbalance)")
    a3.set_xlabel(r"init scale $\sigma$")
    a3.set_ylabel("velocity gap when the loss is down 90 %")
    a3.set_title("the gap scales like the conserved imbalance", fontsize=9)
    a3.grid(alpha=0.3, which="both", lw=0.4)
    a3.legend(fontsize=8)
    fig.suptitle(
        "Balanced factor flow = Riemannian gradient flow on $(M_r, g_N)$; unbalanced: off by $O(\\sigma^2)$",
        fontsize=10,
    )
    fig.tight_layout()
    save_small_png(fig, path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    parser = example_parser(__doc__, __file__, "two scales per depth, fewer samples")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    Y = regression_target(5, 6, SINGULAR_VALUES, rng=10)
    d3 = dict(DEPTH3, scales=DEPTH3["scales"][:2], t_end=40.0) if args.quick else DEPTH3
    d2 = dict(DEPTH2, scales=DEPTH2["scales"][1:3]) if args.quick else DEPTH2
    samples = 80 if args.quick else 110
    curves = [
        compare_flows(d3["dims"], Y, s, d3["t_end"], balanced=b, samples=samples)
        for s in d3["scales"]
        for b in (True, False)
    ]
    scaling = {
        3: [c for c in curves if c.start == "unbalanced"],
        2: [
            compare_flows(d2["dims"], Y, s, d2["t_end"], balanced=False, samples=samples)
            for s in d2["scales"]
        ],
    }
    scaling[2] += [
        compare_flows(d2["dims"], Y, s, d2["t_end"], balanced=True, samples=samples)
        for s in d2["scales"]
    ]

    print(f"E = ||X - Y||^2/2, Y 5x6 with singular values {SINGULAR_VALUES}; hidden width r = 3")
    print(
        f"{'depth':>5} {'start':>10} {'sigma':>6} {'||G||':>9} {'t90':>7} {'vgap(t90)':>10} {'ratio':>6} "
        f"{'sigma^2 ratio':>13} {'max traj gap':>12} {'final traj gap':>14}"
    )
    for depth, cs in ((3, curves), (2, scaling[2])):
        prev = {}
        for c in cs:
            p = prev.get(c.start) if c.start == "unbalanced" else None
            ratio = f"{p.velocity_gap_t90 / c.velocity_gap_t90:6.2f}" if p else " " * 6
            pred = f"{(p.scale / c.scale) ** 2:13.2f}" if p else " " * 13
            print(
                f"{depth:5d} {c.start:>10} {c.scale:6.2f} {c.imbalance:9.2e} {c.t90:7.2f} {c.velocity_gap_t90:10.2e} "
                f"{ratio} {pred} {c.trajectory_gap.max():12.2e} {c.trajectory_gap[-1]:14.2e}"
            )
            prev[c.start] = c
    scaling[2] = [c for c in scaling[2] if c.start == "unbalanced"]
    name = "balanced_vs_riemannian_quick.png" if args.quick else "balanced_vs_riemannian.png"
    path = args.out / name
    plot(curves, scaling, path)
    print(f"figure: {path}  ({time.perf_counter() - start:.1f} s)")
    return {"curves": curves, "scaling": scaling}


if __name__ == "__main__":
    main()
