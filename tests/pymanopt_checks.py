"""Run pymanopt's own diagnostics under numpy 2, and turn what they print into numbers.

pymanopt 2.2.1's ``identify_linear_piece`` does ``residues[k] = np.sqrt(residuals)``
where ``residuals`` (from ``np.polyfit(..., full=True)``) is a length-1 array;
numpy 2 refuses to assign an array to an array element, so
``check_gradient``, ``check_hessian`` and ``check_retraction`` all crash.
:func:`numpy2_diagnostics` swaps in a copy with that one line fixed
(``.item()``, and ``0`` for a window whose fit is exact, where polyfit returns
an empty residual array), for the duration of a ``with`` block, without
touching pymanopt's files. It also selects matplotlib's ``Agg`` backend and
turns ``plt.show`` into a no-op so the checks can run headless.

pymanopt's checks only *print* their verdicts (a slope to read off a plot, a
tangent-space residual, a linearity and a symmetry defect).
:func:`hessian_properties` recomputes the last three so a test can assert
them; the slopes are checked instead by central differences with a derived
error bound (``tests/richardson.py``), since a fitted slope's deviation has
no tolerance of its own.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from typing import Any

import numpy as np

__all__ = [
    "numpy2_diagnostics",
    "identify_linear_piece",
    "hessian_properties",
    "run_pymanopt_checks",
]


def identify_linear_piece(
    x: np.ndarray, y: np.ndarray, window_length: int
) -> tuple[np.ndarray, np.ndarray]:
    """pymanopt's ``identify_linear_piece`` with the numpy-2 fix (``.item()`` on the residual)."""
    residues = np.zeros(len(x) - window_length)
    polys = np.zeros((2, len(residues)))
    for k in np.arange(len(residues)):
        segment = np.arange(k, k + window_length + 1)
        poly, residuals, *_ = np.polyfit(x[segment], y[segment], deg=1, full=True)
        residues[k] = np.sqrt(residuals).item() if np.size(residuals) else 0.0
        polys[:, k] = poly
    best = np.argmin(residues)
    segment = np.arange(best, best + window_length + 1)
    return segment, polys[:, best]


@contextlib.contextmanager
def numpy2_diagnostics() -> Iterator[None]:
    """Within the block, pymanopt's diagnostics use the fixed ``identify_linear_piece`` and draw nowhere."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pymanopt.tools.diagnostics as diagnostics

    saved = (diagnostics.identify_linear_piece, plt.show)
    diagnostics.identify_linear_piece = identify_linear_piece
    plt.show = lambda *args, **kwargs: None
    try:
        yield
    finally:
        diagnostics.identify_linear_piece, plt.show = saved
        plt.close("all")


def hessian_properties(problem: Any, x: Any, rng: np.random.Generator) -> dict[str, float]:
    """The three numbers ``check_hessian`` prints after its slope, relative to the scale of ``H``.

    Returns:
        ``tangent``: ``||H d - P_T(H d)|| / ||H d||`` (is ``H d`` a tangent vector);
        ``linearity``: ``||H[a d1 + b d2] - a H d1 - b H d2|| / (|a| ||H d1|| + |b| ||H d2||)``;
        ``symmetry``: ``|<d1, H d2> - <H d1, d2>| / (||d1|| ||H d2|| + ||H d1|| ||d2||)``,
        all in the manifold's own metric.
    """
    man = problem.manifold
    hess = problem.riemannian_hessian
    d1, d2 = man.random_tangent_vector(x), man.random_tangent_vector(x)
    h1, h2 = hess(x, d1), hess(x, d2)
    a, b = rng.standard_normal(2)
    tangent = man.norm(x, h1 - man.to_tangent_space(x, h1)) / man.norm(x, h1)
    linearity = man.norm(x, hess(x, a * d1 + b * d2) - (a * h1 + b * h2)) / (
        abs(a) * man.norm(x, h1) + abs(b) * man.norm(x, h2)
    )
    symmetry = abs(man.inner_product(x, d1, h2) - man.inner_product(x, h1, d2)) / (
        man.norm(x, d1) * man.norm(x, h2) + man.norm(x, h1) * man.norm(x, d2)
    )
    return {"tangent": tangent, "linearity": linearity, "symmetry": symmetry}


def run_pymanopt_checks(problem: Any, x: Any, d: Any) -> str:
    """Run pymanopt's own ``check_gradient`` and ``check_hessian``; return what they print."""
    from pymanopt.tools.diagnostics import check_gradient, check_hessian

    with numpy2_diagnostics(), contextlib.redirect_stdout(io.StringIO()) as out:
        check_gradient(problem, x, d)
        check_hessian(problem, x, d)
    return out.getvalue()
