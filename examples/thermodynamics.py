r"""Thermodynamics of the deep linear network (Menon 2024; Menon & Yu 2024).

Three figures, written to ``./dlngeo-out/thermodynamics/`` (``--out DIR``
elsewhere; ``--update-figures`` regenerates the committed ``examples/figures/``):

* ``thermo_free_energy.png``: the free energy
  :math:`F_\beta(X) = E(X) - \beta^{-1} S(X)` of a 2 x 2 regression problem,
  :math:`E = \tfrac12\|X - \operatorname{diag}(1.5, 0.8)\|_F^2`, depth 3, on the
  aligned matrices ``X = diag(s1, s2)``, at several temperatures. As the
  temperature rises the minimum moves away from the target: the entropy
  :math:`S = \tfrac12\log K_{12} + 2\log c_2` rewards larger, better separated
  singular values (Menon & Yu: there is no repulsion at the minimizer, but the
  entropic force pushes the whole spectrum up).
* ``thermo_samples.png``: samples of the singular values of ``X`` at
  equilibrium, :math:`E = \|X\|_F^2`, ``beta = 1``, 2 x 2, depth 2 and 3, from
  ``riemannian_mala`` (exact) and the Euler–Maruyama ``riemannian_langevin``
  (step 1e-3; default scheme, singular values stepped in ``s^{1/N}``, and the
  plain ``scheme="matrix"``), all started from the wrong law, against the law
  by quadrature, and the law without the orbit-volume factor :math:`e^{S}`
  (dashed).
* ``thermo_entropy_depth.png``: entropy against depth for a fixed ``X``: the
  full :math:`S` (with the group-volume constant) and its ``X``-dependent part
  :math:`\tfrac12\sum_{i<j}\log K_{ij}`, whose per-layer value tends to the
  log of the logarithmic mean of the squared singular values.

    python examples/thermodynamics.py            # about a minute on one core
    python examples/thermodynamics.py --quick    # fewer chains (seconds)
"""

from __future__ import annotations

import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from dlngeo.reproductions.figure_io import example_parser  # noqa: E402
from dlngeo.thermodynamics import entropy_from_singular_values  # noqa: E402
from dlngeo.thermodynamics.entropy import log_orthogonal_group_volume  # noqa: E402
from dlngeo.thermodynamics.equilibrium import SingularValueLaw  # noqa: E402
from dlngeo.thermodynamics.langevin import QuadraticEnergy, RiemannianLangevin  # noqa: E402
from dlngeo.thermodynamics.mala import RiemannianMALA  # noqa: E402


def free_energy_contours(path: Path) -> None:
    """Contours of F_beta(diag(s1, s2)) for several temperatures (depth 3), and the path of its minimizer."""
    N, target = 3, np.array([1.5, 0.8])
    g = np.linspace(0.005, 3.0, 240)
    s1, s2 = np.meshgrid(g, g, indexing="xy")
    s = np.stack((s1, s2), axis=-1)
    E = 0.5 * np.sum((s - target) ** 2, axis=-1)
    S = entropy_from_singular_values(s, N)
    path_T = np.linspace(0.0, 3.0, 61)
    argmins = np.array([[s1.flat[k], s2.flat[k]] for k in (np.argmin(E - T * S) for T in path_T)])
    temps = [0.0, 0.3, 1.0, 3.0]
    fig, axes = plt.subplots(1, len(temps), figsize=(12, 3.4), constrained_layout=True, sharey=True)
    levels = np.linspace(0.0, 1.2, 13)
    for ax, T in zip(axes, temps):
        F = E - T * S
        F = F - F.min()
        cs = ax.contourf(s1, s2, F, levels=levels, cmap="viridis", extend="max")
        ax.plot(
            argmins[:, 0], argmins[:, 1], "r-", lw=1.2, label=r"argmin $F$, $1/\beta \in [0, 3]$"
        )
        i = np.unravel_index(np.argmin(F), F.shape)
        ax.plot(*target, "w*", ms=11, mec="k", label="target (argmin E)")
        ax.plot(s1[i], s2[i], "ro", ms=6, mec="k", label="argmin F")
        ax.plot([0, 3], [0, 3], "w--", lw=0.8)
        ax.set_title(f"$1/\\beta$ = {T:g}" + (" (F = E)" if T == 0 else ""))
        ax.set_xlabel(r"$\sigma_1$")
        ax.set_aspect("equal")
    fig.colorbar(cs, ax=axes, shrink=0.85, label=r"$F - \min F$")
    axes[0].set_ylabel(r"$\sigma_2$")
    axes[0].legend(loc="upper left", fontsize=6.5)
    fig.suptitle(
        r"Free energy $F_\beta = E - S/\beta$ on $X = \mathrm{diag}(\sigma_1, \sigma_2)$, "
        r"$E = \frac{1}{2}\|X - \mathrm{diag}(1.5, 0.8)\|^2$, depth 3",
        fontsize=11,
    )
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _haar(rng: np.random.Generator, C: int, d: int) -> np.ndarray:
    Q, R = np.linalg.qr(rng.standard_normal((C, d, d)))
    return Q * np.sign(np.diagonal(R, axis1=1, axis2=2))[:, None, :]


def sample_histograms(path: Path, chains: int) -> None:
    """MALA and RLE samples of the extreme singular values against the quadrature law."""
    energy = lambda s: np.sum(s**2, axis=-1)  # noqa: E731
    fig, axes = plt.subplots(2, 2, figsize=(10, 7), constrained_layout=True)
    for row, N in enumerate((2, 3)):
        law = SingularValueLaw(
            beta=1.0, depth=N, shape=(2, 2), energy=energy, upper=5.5, n_grid=200
        )
        wrong = SingularValueLaw(
            beta=1.0, depth=N, shape=(2, 2), energy=energy, upper=5.5, n_grid=200, entropic=False
        )
        rng = np.random.default_rng(N)
        s0 = wrong.sample(rng, chains)  # start from the wrong law: the samplers must move
        X0 = _haar(rng, chains, 2) @ (s0[:, :, None] * _haar(rng, chains, 2))
        t0 = time.perf_counter()
        mala = RiemannianMALA(step=0.01, n_steps=400, record_every=400).sample(
            1, loss=QuadraticEnergy(1.0), start=X0, depth=N, beta=1.0, chains=chains
        )
        rle = RiemannianLangevin(step=1e-3, n_steps=2000, record_every=2000).sample(
            1, loss=QuadraticEnergy(1.0), start=X0, depth=N, beta=1.0, chains=chains
        )
        rle_matrix = RiemannianLangevin(
            step=1e-3, n_steps=2000, record_every=2000, scheme="matrix"
        ).sample(1, loss=QuadraticEnergy(1.0), start=X0, depth=N, beta=1.0, chains=chains)
        print(
            f"  depth {N}: MALA acceptance {mala.info['acceptance_rate']:.2f}, {time.perf_counter() - t0:.1f} s"
        )
        for col, which in enumerate(("max", "min")):
            ax = axes[row, col]
            k = 0 if which == "max" else -1
            bins = np.linspace(0, 2.6, 40) if which == "max" else np.linspace(0, 1.2, 40)
            runs = (
                (mala, "C0", "riemannian_mala"),
                (rle, "C1", "riemannian_langevin (h = 1e-3)"),
                (rle_matrix, "C3", "riemannian_langevin, scheme='matrix'"),
            )
            for rec, color, label in runs:
                s = np.linalg.svd(rec.final_point, compute_uv=False)[:, k]
                ax.hist(
                    s, bins=bins, density=True, histtype="step", lw=1.6, color=color, label=label
                )
            x, p = law.pdf(which)
            ax.plot(
                x,
                p,
                "k-",
                lw=1.2,
                label=r"law $\propto e^{-\beta E + S}\,d\mathrm{vol}_{g_N}$ (quadrature)",
            )
            x, p = wrong.pdf(which)
            ax.plot(x, p, "k--", lw=1.0, label=r"without $e^{S}$")
            ax.set_xlim(bins[0], bins[-1])
            ax.set_ylim(0, 3.0 if which == "min" else None)
            ax.set_title(f"depth {N}: $\\sigma_{{\\{which}}}$, {chains} chains")
            ax.set_xlabel(f"$\\sigma_{{\\{which}}}$")
            ax.set_ylabel("density")
    axes[0, 0].legend(fontsize=7)
    fig.suptitle(
        r"Equilibrium singular values of a 2x2 $X$, $E = \|X\|_F^2$, $\beta = 1$ "
        r"(the plain Euler step in $X$ is biased near $\det X = 0$: $\sigma_{\min}$ at depth 3)",
        fontsize=10,
    )
    fig.savefig(path, dpi=100)
    plt.close(fig)


def entropy_vs_depth(path: Path) -> None:
    """The X-dependent part of S against depth for a few spectra, and its large-depth limit."""
    depths = np.arange(1, 31)
    spectra = {
        "(2, 1, 0.5)": np.array([2.0, 1.0, 0.5]),
        "(1, 1, 1)": np.ones(3),
        "(2, 1, 0.05)": np.array([2.0, 1.0, 0.05]),
    }
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), constrained_layout=True)
    for k, (label, s) in enumerate(spectra.items()):
        square = np.array(
            [
                entropy_from_singular_values(s, N) - (N - 1) * log_orthogonal_group_volume(3)
                for N in depths
            ]
        )
        axes[0].plot(depths, square, "o-", ms=3, color=f"C{k}", label=f"$\\sigma$ = {label}")
        sq = s**2
        lm = [
            np.exp(0.5 * (np.log(a) + np.log(b))) if a == b else (a - b) / (np.log(a) - np.log(b))
            for a, b in ((sq[0], sq[1]), (sq[0], sq[2]), (sq[1], sq[2]))
        ]
        axes[0].plot(
            depths, 1.5 * np.log(depths) + 0.5 * np.sum(np.log(lm)), ":", color=f"C{k}", lw=1
        )
    axes[0].plot([], [], "k:", lw=1, label=r"$\frac{3}{2}\log N + \frac{1}{2}\sum\log$ logmean")
    axes[0].set_xlabel("depth N")
    axes[0].set_ylabel("nats")
    axes[0].set_title(r"$S(X) - (N-1)\log c_3 = \frac{1}{2}\sum_{i<j}\log K_{ij}$ (widths 3)")
    axes[0].legend(fontsize=8)
    s = spectra["(2, 1, 0.5)"]
    S = np.array(
        [
            entropy_from_singular_values(s, N) - (N - 1) * log_orthogonal_group_volume(3)
            for N in depths
        ]
    )
    pairs = len(s) * (len(s) - 1) // 2
    per_layer = S[1:] - 0.5 * pairs * np.log(depths[1:])  # 1/2 sum log(K_ij / N)
    sq = s**2
    logmean = [
        (a - b) / (np.log(a) - np.log(b))
        for a, b in ((sq[0], sq[1]), (sq[0], sq[2]), (sq[1], sq[2]))
    ]
    axes[1].plot(
        depths[1:],
        per_layer,
        "o-",
        ms=3,
        label=r"$\frac{1}{2}\sum_{i<j}\log(K_{ij}/N)$, $\sigma$ = (2, 1, 0.5)",
    )
    axes[1].axhline(
        0.5 * np.sum(np.log(logmean)),
        color="k",
        ls="--",
        lw=1,
        label=r"$N\to\infty$: $\frac{1}{2}\sum_{i<j}\log$ logmean$(\sigma_i^2, \sigma_j^2)$",
    )
    axes[1].set_xlabel("depth N")
    axes[1].set_title(r"$K_{ij}/N \to$ logarithmic mean (docs/math.md §3.5)")
    axes[1].legend(fontsize=8)
    fig.suptitle(
        "Entropy of the balanced fibre against depth (the group-volume constant grows linearly and is removed)",
        fontsize=10,
    )
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    parser = example_parser(__doc__, __file__, "fewer chains")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    free_energy_contours(args.out / "thermo_free_energy.png")
    print("free energy contours done")
    sample_histograms(args.out / "thermo_samples.png", chains=400 if args.quick else 3000)
    print("samples done")
    entropy_vs_depth(args.out / "thermo_entropy_depth.png")
    print(f"figures in {args.out} ({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
