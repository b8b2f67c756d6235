"""ReLU through the linear lens (examples/relu_linearisation.py) at reduced size.

Claims checked (Basu, Mukherjee & Vasudevan 2019; Du, Hu & Lee 2018):
* the per-layer Frobenius growth rates are one number for the linear and for the ReLU network alike;
* ReLU GD moves the off-diagonal imbalance by O(1), linear GD by O(eta);
* linearised at t = 0 the horizon ends before the plateau does; the per-unit balance holds
  along the ReLU flow to the integrator's error while samples leave their patterns.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

_PATH = Path(__file__).resolve().parents[1] / "examples" / "relu_linearisation.py"
_spec = importlib.util.spec_from_file_location("relu_linearisation", _PATH)
ex = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ex)


@pytest.fixture(scope="module")
def results():
    return ex.study(depths=(3,), scales=(1e-2,), eta=1e-2, T=12.0, T_lin=2.0)


def test_growth_rates_are_common_and_offdiagonal_imbalance_breaks(results):
    row = results["runs"][(3, 1e-2)]
    for act in ("linear", "relu"):
        rates = row[act]["growth_rates"]
        # -2<W_k, d_k L> is the same number for every k (Euler's identity per unit):
        # rounding of inner products of ~100 terms, far below 1e-12 relative.
        assert np.ptp(rates, axis=1).max() <= 1e-12 * np.abs(rates).max(), act
    off = {act: row[act]["imbalance_offdiagonal"] for act in ("linear", "relu")}
    change = {act: np.abs(v - v[0]).max() for act, v in off.items()}
    # Linear GD: O(eta) drift (eta^2 per step over 1200 steps, times ||grad||^2 ~ 1..10).
    assert change["linear"] <= 10 * results["eta"]
    assert change["relu"] >= 0.1
    assert row["linear"]["phases"]["peak_times"].size == 3


def test_horizon_precedes_the_plateau_and_balance_holds(results):
    row = results["runs"][(3, 1e-2)]
    lin = row["linearisation"]
    assert 0 < lin["horizon"] < row["relu"]["phases"]["plateau_end"]
    assert lin["changed"][-1] >= 10
    # The balance is exact for every evaluation of the vector field; RK4 (h = eta) changes
    # it by O(h^5) on a smooth step and by O(h^2 J^2) on a step straddling a kink (J: the
    # jump of the field, <= ||grad L|| <~ 1 here). At most T_lin / h steps straddle one:
    # the drift is at most ~ h T_lin.
    assert lin["balance_drift"].max() <= results["eta"] * lin["times"][-1]
    assert lin["output_gap"][0] == 0.0 and lin["gap"][-1] > 1e-3
