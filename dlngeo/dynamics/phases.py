r"""Phases of learning from the layers' common growth rate, and how the layers drift apart in each.

Under the gradient flow of a deep linear network every
:math:`G_k = W_{k+1}^\top W_{k+1} - W_k W_k^\top` is constant, so all layers
grow at one rate :math:`\tfrac{d}{dt}\|W_k\|_F^2 = -2\langle X, E'(X)\rangle`
(Arora, Cohen & Hazan 2018). From a small start on a teacher
:math:`U\operatorname{diag}(s)V^\top` that rate shows a *plateau*, one *burst*
per teacher mode (a mode of strength :math:`s_\alpha` peaks at about
:math:`s_\alpha^2/2`, the stronger first: Saxe, McClelland & Ganguli 2014), and
*saturation* (Basu, Mukherjee & Vasudevan 2019). :func:`phases` marks them;
:func:`drift_by_phase` reports, per phase, how much quantities recorded per
layer spread apart (e.g. the layers' squared spectral norms or the
off-diagonal imbalance, which a ReLU network does not conserve).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import signal

__all__ = ["phases", "drift_by_phase"]


def phases(times: Any, rate: Any, level: float = 0.02, prominence: float = 0.5) -> dict[str, Any]:
    """Plateau, bursts and saturation from the common growth rate ``rate(t)``.

    Bursts are the peaks of ``log(rate)`` (``scipy.signal.find_peaks`` with the
    given ``prominence`` in natural-log units: the rate falls by ``e^prominence``
    on both sides; in the log because weak modes' bursts are small in absolute
    terms). The plateau ends, and saturation begins, where the rate first /
    last exceeds ``level`` times its maximum.

    Args:
        times: Sample times, increasing.
        rate: The growth rate at ``times`` (e.g. the mean over layers of ``d||W_k||^2/dt``).
        level: Threshold of the plateau and the saturation, relative to the peak rate.
        prominence: Peak prominence of ``log(rate)``.

    Returns:
        ``peak_times``, ``peak_rates``, ``valley_rates`` (the minimum between
        consecutive peaks), ``plateau_end``, ``saturation_start``, and
        ``intervals``: ``[(name, start, end), ...]`` covering ``[times[0],
        times[-1]]``: ``plateau``, ``burst 1``, ... (split at the minima between
        peaks), ``saturation``.

    Raises:
        ValueError: ``times`` and ``rate`` differ in length, or are empty.
    """
    times = np.asarray(times, dtype=float)
    rate = np.asarray(rate, dtype=float)
    if times.ndim != 1 or times.shape != rate.shape or times.size == 0:
        raise ValueError(
            f"rate must be a non-empty 1-d array like times, got shapes {rate.shape}, {times.shape}"
        )
    top = float(rate.max())
    log_rate = np.log(np.maximum(rate, 1e-6 * top)) if top > 0 else np.zeros_like(rate)
    peaks, _ = signal.find_peaks(log_rate, prominence=prominence)
    above = np.nonzero(rate > level * top)[0] if top > 0 else np.zeros(0, dtype=int)
    lows = [a + int(np.argmin(rate[a:b])) for a, b in zip(peaks[:-1], peaks[1:])]
    plateau_end = float(times[above[0]]) if above.size else float(times[-1])
    saturation = float(times[above[-1]]) if above.size else float(times[-1])
    cuts = [plateau_end, *(float(times[i]) for i in lows), saturation]
    intervals = [("plateau", float(times[0]), plateau_end)]
    intervals += [(f"burst {b + 1}", cuts[b], cuts[b + 1]) for b in range(len(cuts) - 1)]
    intervals.append(("saturation", saturation, float(times[-1])))
    return {
        "peak_times": times[peaks],
        "peak_rates": rate[peaks],
        "valley_rates": np.array([float(rate[i]) for i in lows]),
        "plateau_end": plateau_end,
        "saturation_start": saturation,
        "intervals": intervals,
    }


def drift_by_phase(
    intervals: list[tuple[str, float, float]], times: Any, **series: Any
) -> list[dict[str, Any]]:
    """Per phase, how far each per-layer series spreads apart: the change of ``max_k - min_k`` over it.

    Args:
        intervals: ``phases(...)["intervals"]``.
        times: Sample times of the series.
        series: ``name=array`` of shape ``(len(times), K)``: one column per layer
            (e.g. ``spectral=sigma_1(W_k)^2``, ``offdiagonal=||offdiag G_k||``).

    Returns:
        One dict per phase: ``phase``, ``start``, ``end`` and, for each series,
        ``<name>``: the spread ``ptp_k`` at the phase's end minus at its start.
    """
    times = np.asarray(times, dtype=float)
    arrays = {}
    for name, value in series.items():
        a = np.asarray(value, dtype=float)
        if a.ndim == 1:
            a = a[:, None]
        if a.shape[0] != times.size:
            raise ValueError(f"{name} has {a.shape[0]} samples, times has {times.size}")
        arrays[name] = np.ptp(a, axis=1)
    out = []
    for name, start, end in intervals:
        i0 = int(np.searchsorted(times, start, side="left"))
        i1 = min(int(np.searchsorted(times, end, side="right")) - 1, times.size - 1)
        row: dict[str, Any] = {"phase": name, "start": start, "end": end}
        for key, spread in arrays.items():
            row[key] = float(spread[i1] - spread[min(i0, i1)])
        out.append(row)
    return out
