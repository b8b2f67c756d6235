r"""Saxe, McClelland & Ganguli 2014: exact sigmoidal learning in deep linear networks.

Whitened regression :math:`E(X) = \tfrac12\|X - Y\|_F^2` with a target
:math:`Y = \sum_\alpha s_\alpha u_\alpha v_\alpha^\top` of distinct singular
values, from a balanced start aligned with :math:`Y`:
:math:`X(0) = a_0 \sum_\alpha u_\alpha v_\alpha^\top`. The modes
:math:`a_\alpha(t) = u_\alpha^\top X(t) v_\alpha` decouple (docs/math.md §4):

.. math:: \dot a = N a^{2 - 2/N} (s - a),

solved in closed form for ``N = 2``,
:math:`a(t) = s a_0 e^{2st} / (s - a_0 + a_0 e^{2st})`, and by the quadrature
:math:`t(a) = \int_{a_0}^a dx / (N x^{2-2/N}(s - x))` for ``N >= 3``.
Stronger modes are learned first, in sigmoidal steps.

The simulation runs two dynamics from the same start and reads the mode
strengths off :math:`X(t)` in the target's singular basis:

* the intrinsic (end-to-end) flow :math:`\dot X = -A_{N,X}(E'(X))`: the
  registered ``intrinsic_flow`` (dense, DOP853, rtol 1e-10);
* gradient descent on the factors of a :class:`dlngeo.DeepLinearNetwork` with
  a small step ``eta`` (time ``t = eta k``), whose error is ``O(eta)``: the
  registered ``overparametrized_gd``.

Both are compared with the exact mode solution, not with Saxe et al.'s
large-depth limit formula, which overestimates finite-depth times (docs/math.md §4).

Run::

    python examples/saxe_2014.py [--quick] [--out DIR | --update-figures]
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy import integrate, optimize  # quadrature and root finding of the theory

import dlngeo
from dlngeo.reproductions.figure_io import example_parser, save_small_png

__all__ = [
    "mode_time",
    "mode_strength",
    "make_problem",
    "intrinsic_flow",
    "factor_gd",
    "half_times",
    "run",
    "plot",
]


# --------------------------------------------------------------------- theory
def _check_mode(a0: float, s: float, depth: int) -> None:
    if not (isinstance(depth, (int, np.integer)) and depth >= 1):
        raise ValueError(f"depth must be an integer >= 1, got {depth!r}")
    if not s > 0:
        raise ValueError(f"s must be positive, got {s!r}")
    if not 0 < a0 < s:
        raise ValueError(f"a0 must lie in (0, s) = (0, {s}), got {a0!r}")


def mode_time(a: float, a0: float, s: float, depth: int) -> float:
    r"""The exact time for a mode to go from ``a0`` to ``a`` (``0 < a < s``; negative if ``a < a0``).

    :math:`t(a) = \int_{a_0}^a dx / (N x^{p} (s - x))`, ``p = 2 - 2/N``, split as

    .. math::

        t = \frac{1}{Ns}\Big[\int_{a_0}^a x^{-p}dx + s^{q}\log\frac{s - a_0}{s - a}
            + \int_{a_0}^a \frac{x^{q} - s^{q}}{s - x}\,dx\Big],\quad q = 1 - p,

    so that the logarithmic singularity at ``s`` is exact and the remaining
    integrand is smooth (adaptive quadrature, ``scipy.integrate.quad``). For
    ``N = 2`` (``q = 0``) this is Saxe et al.'s eq. (11); for ``N = 1`` the
    Euclidean relaxation :math:`t = \log((s - a_0)/(s - a))/s`.
    """
    _check_mode(a0, s, depth)
    if not 0 < a < s:
        raise ValueError(f"a must lie in (0, s) = (0, {s}), got {a!r}")
    n = int(depth)
    p = 2.0 - 2.0 / n
    q = 1.0 - p
    first = math.log(a / a0) if q == 0 else (a**q - a0**q) / q
    log_term = s**q * (math.log(s - a0) - math.log(s - a))
    smooth = 0.0
    if q != 0 and a != a0:
        smooth, _ = integrate.quad(
            lambda x: (x**q - s**q) / (s - x), a0, a, epsabs=1e-15, epsrel=1e-13, limit=200
        )
    return (first + log_term + smooth) / (n * s)


def mode_strength(t: float, a0: float, s: float, depth: int, guess: float | None = None) -> float:
    r"""The exact mode strength :math:`a(t)` from ``a(0) = a0``.

    ``N = 2``: Saxe et al.'s closed form (eq. 12),
    :math:`a = s a_0 e^{2st}/(s - a_0 + a_0 e^{2st})`. ``N = 1``:
    :math:`a = s - (s - a_0)e^{-st}`. ``N >= 3``: the inverse of
    :func:`mode_time`, by Newton's method in :math:`w = \log(a/(s - a))`
    (where :math:`dt/dw = a^{q}/(Ns)` is known exactly), bracketed root
    finding as a fallback.
    """
    _check_mode(a0, s, depth)
    if t < 0:
        raise ValueError(f"t must be non-negative, got {t!r}")
    n = int(depth)
    if n == 1:
        return s - (s - a0) * math.exp(-s * t)
    if n == 2:
        # Written with e^{-2st} so that it never overflows.
        e = math.exp(-2.0 * s * t)
        return s * a0 / ((s - a0) * e + a0)
    if t == 0:
        return a0
    q = 2.0 / n - 1.0
    a = a0 if guess is None else float(np.clip(guess, a0, s * (1 - 1e-12)))
    w = math.log(a / (s - a))
    for _ in range(50):
        a = s / (1.0 + math.exp(-w))
        if not 0 < a < s:
            break
        f = mode_time(a, a0, s, n) - t
        step = f * n * s * a ** (-q)
        w -= step
        # Converged once the change in a (not in w: near saturation w is
        # ill-determined while a is not) is at rounding level.
        if abs(step) * a * (s - a) / s < 1e-15 * s:
            return s / (1.0 + math.exp(-w))
    # Fallback: bracketing (slow but safe).
    hi = s * (1 - 1e-15)
    if mode_time(hi, a0, s, n) <= t:
        return hi
    return optimize.brentq(lambda x: mode_time(x, a0, s, n) - t, a0, hi, xtol=1e-15, rtol=1e-15)


# ----------------------------------------------------------------- simulation
def make_problem(
    s: Sequence[float],
    a0: float,
    depth: int,
    shape: tuple[int, int] = (6, 5),
    hidden: int = 6,
    seed: int = 0,
) -> dict[str, Any]:
    """Target ``Y = U diag(s) V^T`` and a balanced start aligned with it.

    Returns a dict with ``Y``, ``U`` (m x r), ``V`` (n x r), ``X0 = a0 U V^T``,
    the :class:`dlngeo.DeepLinearNetwork` ``network`` (widths
    ``(n, hidden, ..., hidden, m)``) and its balanced factors ``weights0``
    (``network.balanced(X0)``: every ``G_k = 0``, modes aligned with ``Y``).
    """
    s = np.asarray(s, dtype=float)
    m, n = shape
    r = len(s)
    if r > min(m, n) or r > hidden:
        raise ValueError(f"s has {r} values, more than min(shape, hidden) = {min(m, n, hidden)}")
    if np.any(np.diff(s) >= 0) or np.any(s <= 0):
        raise ValueError("s must be positive and strictly decreasing")
    rng = np.random.default_rng(seed)
    U = np.linalg.qr(rng.standard_normal((m, r)))[0]
    V = np.linalg.qr(rng.standard_normal((n, r)))[0]
    Y = (U * s) @ V.T
    X0 = a0 * U @ V.T
    net = dlngeo.DeepLinearNetwork((n,) + (hidden,) * (depth - 1) + (m,))
    weights0 = net.balanced(X0, rng=rng)
    return {
        "Y": Y,
        "U": U,
        "V": V,
        "X0": X0,
        "network": net,
        "weights0": weights0,
        "s": s,
        "a0": a0,
    }


#: The metric the runs record: the end-to-end matrix.
_POINT = {"point": lambda state: np.array(state.point, dtype=float)}


def _modes(X: np.ndarray, U: np.ndarray, V: np.ndarray) -> np.ndarray:
    """``a_alpha = u_alpha^T X v_alpha``."""
    return np.einsum("ia,ij,ja->a", U, X, V)


def intrinsic_flow(
    X0: np.ndarray,
    Y: np.ndarray,
    depth: int,
    times: np.ndarray,
    rtol: float = 1e-10,
    atol: float = 1e-12,
) -> np.ndarray:
    r"""``X(t)`` of :math:`\dot X = -A_{N,X}(X - Y)` at ``times`` (array ``len(times) x m x n``).

    dlngeo's dense ``intrinsic_flow`` (DOP853) on the width-free task from
    ``X0``, restarted at every sample time (``restart_at_record_times``), so
    every sample is an accepted step end point: DOP853's dense output is much
    less accurate than its steps on the saturated, stiff modes (rate
    ``N s^{2(N-1)/N}``): 3e-6 vs 1e-8 at rtol 1e-10 for ``N = 4``.
    """
    times = np.asarray(times, dtype=float)
    m, n = X0.shape
    # Width-free: every balanced network of widths >= rank X0 has this end-to-end flow.
    task = dlngeo.Task(
        loss=dlngeo.create_loss("regression", target=Y),
        network=dlngeo.DeepLinearNetwork((n,) + (min(m, n),) * (depth - 1) + (m,)),
        start=X0,
        metrics=dict(_POINT),
    )
    solver = dlngeo.create_solver(
        "intrinsic_flow",
        representation="dense",
        integrator="DOP853",
        rtol=rtol,
        atol=atol,
        record_times=times,
        restart_at_record_times=True,
    )
    record = solver.run(task, dlngeo.Stopping.only(end_time=float(times[-1])))
    if record.stop_reason != "end_time":
        raise RuntimeError(
            f"the flow stopped early: {record.info.get('solver_message', record.stop_reason)}"
        )
    return np.array(record.sampled("point", times), dtype=float)


def factor_gd(
    network: dlngeo.DeepLinearNetwork,
    weights0: list[np.ndarray],
    Y: np.ndarray,
    eta: float,
    steps: np.ndarray,
) -> np.ndarray:
    r"""Gradient descent :math:`W_k \leftarrow W_k - \eta\,\partial_k L` on the factors.

    dlngeo's ``overparametrized_gd`` with ``record_times = eta * steps``.
    Returns ``phi(W)`` after each iteration count in ``steps`` (sorted, from 0).
    """
    steps = np.asarray(steps, dtype=int)
    task = dlngeo.Task(
        loss=dlngeo.create_loss("regression", target=Y),
        network=network,
        weights0=[w.copy() for w in weights0],
        metrics=dict(_POINT),
    )
    times = steps * eta  # the flow time of iterate k is eta * k, this very product
    solver = dlngeo.create_solver("overparametrized_gd", step=eta, record_times=times)
    record = solver.run(task, dlngeo.Stopping.only(max_iterations=int(steps[-1])))
    return np.array(record.sampled("point", times), dtype=float)


def half_times(times: np.ndarray, a: np.ndarray, s: np.ndarray) -> np.ndarray:
    r"""First time each mode (columns of ``a``) reaches half its target ``s/2``.

    The root of a cubic spline through :math:`\log(a/(s - a))` (exactly
    linear in time for ``N = 2``, smooth otherwise) over the samples with
    ``0 < a < s``.
    """
    from scipy.interpolate import CubicSpline

    out = np.full(len(s), np.nan)
    for j, sj in enumerate(s):
        ok = (a[:, j] > 0) & (a[:, j] < sj * (1 - 1e-9))
        ok &= np.cumprod(ok).astype(bool)  # the leading stretch only
        t, x = times[ok], a[ok, j]
        if len(t) < 4 or x[-1] < sj / 2 or x[0] >= sj / 2:
            continue
        roots = CubicSpline(t, np.log(x / (sj - x))).solve(0.0, extrapolate=False)
        if roots.size:
            out[j] = roots[0]
    return out


def run(
    depths: Sequence[int] = (2, 3, 4),
    s: Sequence[float] = (5.0, 4.0, 3.0, 2.0, 1.0),
    a0: float = 1e-3,
    eta: float = 1e-3,
    n_times: int = 200,
    horizon: float = 1.25,
    gd: bool = True,
    seed: int = 0,
) -> dict[int, dict[str, Any]]:
    """Simulate and compare with theory for each depth.

    The time horizon for depth ``N`` is ``horizon`` times the exact time at
    which the weakest mode reaches 99 % of its target; ``n_times`` samples on a
    grid of multiples of ``eta`` (so that gradient descent lands on them).

    Returns, per depth: ``times``, ``theory`` / ``flow`` / ``gd`` mode
    strengths (``len(times) x len(s)``), ``flow_error`` and ``gd_error`` (max
    absolute deviation from theory), ``off_diagonal`` (largest
    ``|u_a^T X v_b|``, ``a != b``, along the flow: the modes stay decoupled),
    and the half-learning times ``t_half_theory`` / ``t_half_flow``.
    """
    s = np.asarray(s, dtype=float)
    out: dict[int, dict[str, Any]] = {}
    for depth in depths:
        prob = make_problem(s, a0, depth, seed=seed)
        T = horizon * mode_time(0.99 * s[-1], a0, s[-1], depth)
        steps = np.unique(np.round(np.linspace(0.0, T, n_times) / eta).astype(int))
        times = steps * eta
        theory = np.empty((len(times), len(s)))
        for j, sj in enumerate(s):
            guess = a0
            for i, t in enumerate(times):
                guess = theory[i, j] = mode_strength(t, a0, sj, depth, guess=guess)
        Xf = intrinsic_flow(prob["X0"], prob["Y"], depth, times)
        flow = np.stack([_modes(X, prob["U"], prob["V"]) for X in Xf])
        UXV = np.einsum("ia,tij,jb->tab", prob["U"], Xf, prob["V"])
        off = np.abs(UXV - np.einsum("tab,ab->tab", UXV, np.eye(len(s)))).max()
        res: dict[str, Any] = {
            "times": times,
            "theory": theory,
            "flow": flow,
            "flow_error": float(np.abs(flow - theory).max()),
            "off_diagonal": float(off),
            "t_half_theory": np.array([mode_time(sj / 2, a0, sj, depth) for sj in s]),
            "t_half_flow": half_times(times, flow, s),
            "s": s,
            "a0": a0,
            "eta": eta,
        }
        if gd:
            Xg = factor_gd(prob["network"], prob["weights0"], prob["Y"], eta, steps)
            res["gd"] = np.stack([_modes(X, prob["U"], prob["V"]) for X in Xg])
            res["gd_error"] = float(np.abs(res["gd"] - theory).max())
        out[int(depth)] = res
    return out


# ----------------------------------------------------------------------- plot
def plot(results: dict[int, dict[str, Any]], path: Path) -> Path:
    """Mode strengths ``a(t)/s`` per depth: flow solid, GD dots, theory dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    depths = sorted(results)
    fig, axes = plt.subplots(1, len(depths), figsize=(4.2 * len(depths), 3.6), sharey=True)
    axes = np.atleast_1d(axes)
    colors = plt.cm.viridis(np.linspace(0.0, 0.85, len(results[depths[0]]["s"])))
    for ax, depth in zip(axes, depths):
        r = results[depth]
        t = r["times"]
        for j, sj in enumerate(r["s"]):
            ax.plot(t, r["flow"][:, j] / sj, color=colors[j], lw=2.2, label=f"s = {sj:g}")
            if "gd" in r:
                every = max(1, len(t) // 25)
                ax.plot(t[::every], r["gd"][::every, j] / sj, "o", color=colors[j], ms=3)
            ax.plot(t, r["theory"][:, j] / sj, "--", color="k", lw=0.9)
        ax.set_title(f"N = {depth}  (flow error {r['flow_error']:.1e})")
        ax.set_xlabel("time t")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(r"mode strength $a_\alpha(t)/s_\alpha$")
    axes[0].plot([], [], "--", color="k", lw=0.9, label="exact (closed form / quadrature)")
    axes[0].plot([], [], "o", color="gray", ms=3, label="factor GD")
    axes[0].legend(fontsize=7, loc="lower right")
    fig.suptitle(
        f"Saxe, McClelland & Ganguli 2014: stage-like learning from a0 = {results[depths[0]]['a0']:g}",
        fontsize=11,
    )
    fig.tight_layout()
    save_small_png(fig, path, dpi=100, colors=128)
    plt.close(fig)
    return path


def main(argv: Sequence[str] | None = None) -> int:
    parser = example_parser(__doc__, __file__, "fewer samples, larger GD step")
    args = parser.parse_args(argv)
    kwargs = dict(n_times=80, eta=4e-3) if args.quick else {}
    results = run(**kwargs)
    print("Saxe et al. 2014: mode strengths vs the exact solution (max |a_sim - a_exact|)")
    print(
        f"{'N':>2} {'flow err':>9} {'GD err':>9} {'eta':>7} {'off-diag':>9}   t_half per mode (exact / flow)"
    )
    for depth, r in results.items():
        halves = "  ".join(f"{a:.3f}/{b:.3f}" for a, b in zip(r["t_half_theory"], r["t_half_flow"]))
        print(
            f"{depth:>2} {r['flow_error']:9.1e} {r.get('gd_error', math.nan):9.1e} {r['eta']:7.0e}"
            f" {r['off_diagonal']:9.1e}   {halves}"
        )
    path = plot(results, args.out / "saxe_2014.png")
    print(f"figure: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
