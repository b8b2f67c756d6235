"""Error bounds for central differences that follow from the difference itself (Richardson).

A central difference of step ``h`` is ``D(h) = D(0) + c h^2 + O(h^4) + rounding(h)``
(first derivative: ``(f(x + h) - f(x - h)) / (2h)``; second: ``(f(x + h) - 2 f(x) +
f(x - h)) / h^2``). The same difference at ``2h`` gives ``D(2h) - D(h) = 3 c h^2 +
O(h^4)`` plus the two roundings, so ``|D(2h) - D(h)| / 3`` estimates the truncation
error of ``D(h)`` without knowing ``f''' `` (or ``f''''``); the rounding of ``D(h)`` is
at most the rounding of the differenced values over the step's power, given by the
caller. The bound is ``K = 10`` times their sum: ``K`` covers the ``O(h^4)`` term and
the estimate's own error (its rounding enters ``D(2h) - D(h)`` too), as long as
``c h^2`` is the leading error, i.e. the next term is below a tenth of it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

K = 10.0


def central_difference_bound(
    difference: Callable[[float], Any], h: float, rounding: float
) -> tuple[Any, float]:
    """``(D(h), bound)`` with ``||D(h) - D(0)|| <= bound`` (module docs); norms are Frobenius."""
    d_h = np.asarray(difference(h), dtype=float)
    d_2h = np.asarray(difference(2 * h), dtype=float)
    return d_h, K * (float(np.linalg.norm(d_2h - d_h)) / 3 + rounding)
