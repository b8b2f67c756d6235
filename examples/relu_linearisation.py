r"""ReLU networks through the linear lens: growth rates, phases, and where the symmetry breaks.

Basu, Mukherjee & Vasudevan (2019, arXiv:1904.10689) claim that the layers of
a linear network grow at about the same rate, that learning has phases with
markedly different growth, and that linearising a ReLU network (inside an
activation region it *is* a gated deep linear network) shows how the
nonlinearity breaks the growth symmetry. This study trains, from the same
Gaussian start, on one linear teacher (singular values 3, 1.5, 0.75):

* the linear network and the bias-free ReLU network, by factor GD
  (``dlngeo``'s ``OverparametrizedGD``), recording the library's metrics
  ``growth_rates`` (Frobenius and spectral), ``imbalance_offdiagonal``,
  ``unit_balance`` and ``pattern_changes``;
* the linearised network (gates frozen at t = 0) beside the true ReLU flow
  (:func:`dlngeo.dynamics.linearisation.linearisation`): the linearisation
  horizon and the gap after it;

across depth 2-5 and init scales 1e-3-1e-1, and marks the phases
(:func:`dlngeo.dynamics.phases.phases`) and how far the layers drift apart in
each (:func:`dlngeo.dynamics.phases.drift_by_phase`).

Run::

    python examples/relu_linearisation.py [--quick] [--out DIR]
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

import dlngeo
from dlngeo.dynamics import OverparametrizedGD, Stopping, Task
from dlngeo.dynamics.linearisation import linearisation
from dlngeo.dynamics.phases import drift_by_phase, phases
from dlngeo.relu import OutputLoss, make_network, unit_balance
from dlngeo.reproductions.figure_io import example_parser, save_small_png

__all__ = ["teacher_task", "train", "study", "plot"]

METRICS = ("growth_rates", "imbalance_offdiagonal", "unit_balance", "pattern_changes")


def teacher_task(
    depth: int,
    init_scale: float,
    activation: str,
    width: int = 12,
    d: int = 6,
    s: Sequence[float] = (3.0, 1.5, 0.75),
    n_samples: int = 60,
    seed: int = 0,
) -> Task:
    """Whitened inputs (``A A^T / b = I``), a rank-3 linear teacher, the library's Gaussian init.

    The data and the start depend on ``seed`` (and the shapes) only, so the
    linear and the ReLU network start from the same factors.
    """
    rng = np.random.default_rng(seed)
    Q = np.linalg.qr(rng.standard_normal((n_samples, d)))[0]
    A = np.sqrt(n_samples) * Q.T
    U = np.linalg.qr(rng.standard_normal((d, len(s))))[0]
    V = np.linalg.qr(rng.standard_normal((d, len(s))))[0]
    teacher = (U * np.asarray(s)) @ V.T
    network = make_network([d] + [width] * (depth - 1) + [d], activation)
    weights0 = dlngeo.create_sampler("gaussian", init_scale=init_scale).sample(rng, network)
    loss = dlngeo.create_loss("regression", A=A, B=teacher @ A)
    if activation != "linear":
        loss = OutputLoss(loss)
    metrics: dict[str, Any] = {name: dlngeo.create_metric(name) for name in METRICS}
    metrics["spectral_rates"] = dlngeo.create_metric("growth_rates", norm="spectral")
    metrics["spectral_sq"] = _spectral_sq
    data: dict[str, Any] = {"teacher": teacher}
    if activation != "linear":
        data["initial_patterns"] = network.patterns(weights0, A)  # type: ignore[attr-defined]
    return Task(loss=loss, network=network, weights0=weights0, metrics=metrics, data=data)


def _spectral_sq(state: Any) -> np.ndarray:
    return np.array([np.linalg.norm(W, 2) ** 2 for W in state.weights])


def train(task: Task, eta: float, T: float, every: int) -> dict[str, Any]:
    """Factor GD for flow time ``T``; the record's metrics as arrays, and the factors at each sample."""
    weights: list[list[np.ndarray]] = []
    record = OverparametrizedGD(step=eta, record_every=every).run(
        task,
        Stopping(end_time=T, max_iterations=10**7, gradient_norm_rtol=0, gradient_norm_atol=0),
        lambda state, _record: weights.append(state.weights),
    )
    out: dict[str, Any] = {
        name: np.asarray(values, dtype=float) for name, values in record.metrics.items()
    }
    out["times"] = np.asarray(record.times)
    out["weights"] = weights
    out["stop_reason"] = record.stop_reason
    return out


def phase_horizons(task: Task, run: dict[str, Any], window: float, step: float) -> list[float]:
    """The linearisation horizon from the start of each phase: ``t_h - t_0`` (``inf``: none within ``window``)."""
    out = []
    for _name, start, _end in run["phases"]["intervals"]:
        i = int(np.searchsorted(run["times"], start))
        t0 = float(run["times"][i])
        lin = linearisation(
            task.network,  # type: ignore[arg-type]
            run["weights"][i],
            task.loss,  # type: ignore[arg-type]
            t0 + window,
            times=[t0, t0 + window],
            step=step,
            t0=t0,
        )
        out.append(lin.horizon - t0)
    return out


def _first_above(times: np.ndarray, values: np.ndarray, level: np.ndarray) -> float:
    above = np.nonzero(values > level)[0]
    return float(times[above[0]]) if above.size else float("inf")


def study(
    depths: Sequence[int] = (2, 3, 4, 5),
    scales: Sequence[float] = (1e-3, 1e-2, 1e-1),
    eta: float = 5e-3,
    T: float = 40.0,
    T_lin: float = 8.0,
    seed: int = 0,
) -> dict[str, Any]:
    """Every (depth, scale): linear and ReLU GD runs, phases, per-phase drift, the linearisation."""
    every = max(1, int(round(0.05 / eta)))
    runs: dict[tuple[int, float], dict[str, Any]] = {}
    for depth in depths:
        for scale in scales:
            row: dict[str, Any] = {}
            for act in ("linear", "relu"):
                task = teacher_task(depth, scale, act, seed=seed)
                r = train(task, eta, T, every)
                rate = r["growth_rates"].mean(axis=1)
                ph = phases(r["times"], rate)
                r["phases"] = ph
                r["drift"] = drift_by_phase(
                    ph["intervals"],
                    r["times"],
                    spectral=r["spectral_sq"],
                    offdiagonal=r["imbalance_offdiagonal"],
                    frobenius_rates=r["growth_rates"],
                )
                row[act] = r
            task = teacher_task(depth, scale, "relu", seed=seed)
            row["relu"]["phase_horizons"] = phase_horizons(task, row["relu"], 1.0, eta)
            lin = linearisation(
                task.network,  # type: ignore[arg-type]
                task.weights0,
                task.loss,
                T_lin,
                times=np.linspace(0.0, T_lin, 161),
                step=eta,
            )
            A = task.loss.inputs  # type: ignore[attr-defined]
            losses = {"true": [], "linearised": []}
            for n in range(lin.times.size):
                for which in losses:
                    gates = lin.gates if which == "linearised" else None
                    losses[which].append(
                        task.loss.value(task.network.outputs(lin.weights(n, which), A, gates))  # type: ignore[attr-defined]
                    )
            balance0 = np.concatenate(unit_balance(task.weights0))
            drift = [
                np.abs(np.concatenate(unit_balance(lin.weights(n))) - balance0).max()
                for n in range(lin.times.size)
            ]
            F = np.array(
                [np.linalg.norm(task.point(lin.weights(n))) for n in range(lin.times.size)]
            )
            row["linearisation"] = {
                "times": lin.times,
                "horizon": lin.horizon,
                "horizon_1pct": _first_above(lin.times, lin.output_gap, 0.01 * F),
                "crossing": lin.crossing,
                "gap": lin.gap,
                "output_gap": lin.output_gap,
                "changed": lin.changed_samples,
                "loss_true": np.array(losses["true"]),
                "loss_linearised": np.array(losses["linearised"]),
                "balance_drift": np.array(drift),
            }
            runs[(depth, scale)] = row
    return {"runs": runs, "depths": tuple(depths), "scales": tuple(scales), "eta": eta, "T": T}


# ----------------------------------------------------------------------- plot
def plot(results: dict[str, Any], path: Path, depth: int = 3, scale: float = 1e-2) -> Path:
    """Six panels: rates and phases (linear, ReLU), symmetry breaking, linearisation gap, horizons, drift by phase."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs, depths, scales = results["runs"], results["depths"], results["scales"]
    depth = depth if depth in depths else depths[-1]
    scale = scale if scale in scales else scales[-1]
    fig, axes = plt.subplots(2, 4, figsize=(21, 8.8))
    colors = plt.cm.plasma(np.linspace(0.0, 0.8, depth))
    for col, act in enumerate(("linear", "relu")):
        ax = axes[0, col]
        r = runs[(depth, scale)][act]
        t = r["times"]
        for k in range(depth):
            ax.semilogy(
                t, np.maximum(r["growth_rates"][:, k], 1e-6), color=colors[k], lw=2.4 - 0.5 * k
            )
            ax.semilogy(
                t, np.maximum(r["spectral_rates"][:, k], 1e-6), color=colors[k], lw=1.2, ls="--"
            )
        ph = r["phases"]
        for tp in ph["peak_times"]:
            ax.axvline(tp, color="k", lw=0.6, ls=":")
        ax.axvspan(t[0], ph["plateau_end"], color="tab:blue", alpha=0.08)
        ax.axvspan(ph["saturation_start"], t[-1], color="tab:green", alpha=0.08)
        ax.set_ylim(1e-4, 2 * max(r["growth_rates"].max(), r["spectral_rates"].max()))
        ax.plot([], [], color="gray", lw=2, label=r"$d\|W_k\|_F^2/dt$ (one per layer)")
        ax.plot([], [], color="gray", lw=1.2, ls="--", label=r"$d\sigma_1(W_k)^2/dt$")
        ax.legend(fontsize=8, loc="lower right")
        ax.set_title(
            f"{act}, depth {depth}, init {scale:g}: {len(ph['peak_times'])} bursts"
            f" (plateau blue, saturation green)",
            fontsize=10,
        )
        ax.set_xlabel("t = eta k")
    ax = axes[0, 2]
    dcolors = plt.cm.viridis(np.linspace(0, 0.85, len(depths)))
    for i, N in enumerate(depths):
        for act, ls in (("linear", ":"), ("relu", "-")):
            r = runs[(N, scale)][act]
            off = r["imbalance_offdiagonal"].max(axis=1) if N > 1 else np.zeros_like(r["times"])
            ax.semilogy(
                r["times"], np.maximum(np.abs(off - off[0]), 1e-16), ls=ls, color=dcolors[i]
            )
        lr = runs[(N, scale)]["linearisation"]
        ax.semilogy(
            lr["times"], np.maximum(lr["balance_drift"], 1e-16), ls="--", color=dcolors[i], lw=0.8
        )
        ax.plot([], [], color=dcolors[i], label=f"depth {N}")
    ax.plot([], [], "k-", label=r"ReLU GD: $|\Delta\|$offdiag $G_k\||$")
    ax.plot([], [], "k:", label="linear GD: same (O(eta))")
    ax.plot([], [], "k--", lw=0.8, label="ReLU flow: per-unit balance drift")
    ax.set_ylim(1e-16, 1e2)
    ax.set_title(f"where the symmetry breaks (init {scale:g})", fontsize=10)
    ax.legend(fontsize=7, loc="lower right", ncol=2)
    ax.set_xlabel("t")

    ax = axes[1, 0]
    twin = ax.twinx()
    twin.set_ylabel("samples off their initial pattern (dotted)", fontsize=8)
    for i, N in enumerate(depths):
        lr = runs[(N, scale)]["linearisation"]
        ax.semilogy(lr["times"], np.maximum(lr["gap"], 1e-16), color=dcolors[i], label=f"depth {N}")
        if np.isfinite(lr["horizon"]):
            ax.axvline(lr["horizon"], color=dcolors[i], lw=0.8, ls="--")
        twin.plot(lr["times"], lr["changed"], color=dcolors[i], lw=0.8, ls=":")
    ax.set_ylim(1e-16, 1e2)
    ax.set_title(
        rf"ReLU flow vs linearised (gates frozen at t=0), init {scale:g}: $\|W - W^{{lin}}\|_F$, horizon dashed",
        fontsize=9,
    )
    ax.set_xlabel("t")
    ax.legend(fontsize=8)

    ax = axes[1, 1]
    markers = "os^D"
    for j, sc in enumerate(scales):
        hs = [runs[(N, sc)]["linearisation"]["horizon"] for N in depths]
        h1 = [runs[(N, sc)]["linearisation"]["horizon_1pct"] for N in depths]
        ends = [runs[(N, sc)]["relu"]["phases"]["plateau_end"] for N in depths]
        ax.semilogy(depths, hs, marker=markers[j % 4], color=f"C{j}", label=f"init {sc:g}")
        ax.semilogy(depths, h1, marker=markers[j % 4], color=f"C{j}", ls="--", mfc="none")
        ax.semilogy(depths, ends, marker=markers[j % 4], color=f"C{j}", ls=":", mfc="none")
    ax.plot([], [], "k-", label="horizon (first pattern change)")
    ax.plot([], [], "k--", label="output gap reaches 1% of ||F||")
    ax.plot([], [], "k:", label="ReLU plateau end")
    ax.set_xticks(list(depths))
    ax.set_xlabel("depth N")
    ax.set_title("linearised at t=0: horizon vs end of the plateau", fontsize=10)
    ax.legend(fontsize=7)

    ax = axes[0, 3]
    for i, N in enumerate(depths):
        r = runs[(N, scale)]["relu"]
        names = [name for name, _, _ in r["phases"]["intervals"]]
        hs = np.minimum(r["phase_horizons"], 1.0)
        ax.semilogy(np.arange(len(hs)), hs, "o-", color=dcolors[i], label=f"depth {N}")
        ax.set_xticks(np.arange(len(hs)), names, fontsize=8)
    ax.axhline(1.0, color="k", lw=0.6, ls=":")
    ax.set_title(
        f"horizon when linearised at each phase's start (init {scale:g}; 1 = none)", fontsize=9
    )
    ax.legend(fontsize=8)

    ax = axes[1, 3]
    lr = runs[(depth, scale)]["linearisation"]
    for act, color in (("linear", "tab:gray"), ("relu", "tab:red")):
        r = runs[(depth, scale)][act]
        keep = r["times"] <= lr["times"][-1]
        ax.semilogy(r["times"][keep], r["loss"][keep], color=color, lw=2, label=f"{act} (GD)")
    ax.semilogy(lr["times"], lr["loss_true"], "k:", lw=1.5, label="ReLU flow")
    ax.semilogy(
        lr["times"],
        lr["loss_linearised"],
        color="tab:blue",
        ls="--",
        label="linearised flow (t=0 gates)",
    )
    ax.set_title(f"loss, depth {depth}, init {scale:g}", fontsize=10)
    ax.set_xlabel("t")
    ax.legend(fontsize=8)

    ax = axes[1, 2]
    rows = runs[(depth, scale)]
    width = 0.38
    for i, (act, color) in enumerate((("linear", "tab:gray"), ("relu", "tab:red"))):
        drift = rows[act]["drift"]
        names = [d["phase"] for d in drift]
        values = [abs(d["spectral"]) for d in drift]
        ax.bar(np.arange(len(values)) + (i - 0.5) * width, values, width, color=color, label=act)
        ax.set_xticks(np.arange(len(values)), names, fontsize=8)
    ax.set_yscale("log")
    ax.set_title(
        rf"per phase: change of the spread $\max_k-\min_k\ \sigma_1(W_k)^2$ (depth {depth}, init {scale:g})",
        fontsize=9,
    )
    ax.legend(fontsize=8)
    fig.suptitle(
        "ReLU vs linear vs linearised: Frobenius growth stays common (per-unit balance is conserved);"
        " what ReLU breaks is off-diagonal G_k and the layers' spectra",
        fontsize=11,
    )
    fig.tight_layout()
    save_small_png(fig, path, dpi=90, colors=128)
    plt.close(fig)
    return path


def main(argv: Sequence[str] | None = None) -> int:
    parser = example_parser(__doc__, __file__, "depths 2-3, init 1e-2 and 1e-1, shorter runs")
    args = parser.parse_args(argv)
    options = (
        dict(depths=(2, 3), scales=(1e-2, 1e-1), T=25.0, T_lin=4.0, eta=1e-2) if args.quick else {}
    )
    results = study(**options)
    print(
        f"{'N':>2} {'init':>6} {'act':>6} {'bursts':>6} {'plateau':>8} {'spread |W|^2 rates':>18}"
        f" {'|d offdiag G|':>13} {'|d sigma1^2 spread|':>19} {'horizon':>8} {'1% gap':>8}"
        f" {'gap(T_lin)':>10} {'balance':>8}  horizons from each phase start"
    )
    for (N, sc), row in results["runs"].items():
        lr = row["linearisation"]
        for act in ("linear", "relu"):
            r = row[act]
            rates = r["growth_rates"]
            spread = float(np.ptp(rates, axis=1).max() / max(np.abs(rates).max(), 1e-300))
            ph = ", ".join(f"{h:.2g}" for h in r.get("phase_horizons", []))
            off = r["imbalance_offdiagonal"]
            doff = float(np.abs(off - off[0]).max()) if off.size else 0.0
            dspec = max(abs(d["spectral"]) for d in r["drift"])
            tail = (
                f" {lr['horizon']:8.3g} {lr['horizon_1pct']:8.3g} {lr['gap'][-1]:10.2e}"
                f" {lr['balance_drift'].max():8.1e}  {ph}"
                if act == "relu"
                else ""
            )
            print(
                f"{N:2d} {sc:6.0e} {act:>6} {len(r['phases']['peak_times']):6d}"
                f" {r['phases']['plateau_end']:8.2f} {spread:18.1e} {doff:13.2e} {dspec:19.2e}{tail}"
            )
    path = plot(results, args.out / "relu_linearisation.png")
    print(f"figure: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
