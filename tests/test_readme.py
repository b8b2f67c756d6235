"""The README's Python tour runs as written and prints what the README says it prints."""

import contextlib
import io
import re
from pathlib import Path

import numpy as np
import pytest

import dlngeo

README = Path(__file__).resolve().parents[1] / "README.md"


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)


def test_quick_start_is_two_commands():
    quick = README.read_text(encoding="utf-8").split("## Quick start", 1)[1]
    commands = [line for line in _blocks_in(quick, "bash")[0].splitlines() if line.strip()]
    assert len(commands) == 2
    assert "dlngeo compare" in commands[0]
    assert "pytest" in commands[1]


def _blocks_in(text: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.S)


def _tangent_hessian_floor(loss, truth: np.ndarray, k: int) -> float:
    """Smallest eigenvalue of P_T E'' P_T at the truth for the mean completion loss.

    E'' = (2 / |Omega|) P_Omega, so it is (2 / |Omega|) sigma_min(J)^2 with J the observed
    rows of an orthonormal basis of the tangent space at the truth.
    """
    U, _, Vt = np.linalg.svd(truth)
    u, v, u_perp, v_perp = U[:, :k], Vt[:k].T, U[:, k:], Vt[k:].T
    r, c = loss.rows, loss.cols
    J = np.hstack(
        [
            np.einsum("ia,ib->iab", a[r], b[c]).reshape(len(r), -1)
            for a, b in ((u, v), (u_perp, v), (u, v_perp))
        ]
    )
    return 2.0 / len(r) * np.linalg.svd(J, compute_uv=False)[-1] ** 2


def test_tour_runs_and_its_claims_hold():
    """The tour's printed numbers are the README's to the digits that mean something."""
    tour = _blocks("python")[0]
    out = io.StringIO()
    names: dict = {"__name__": "readme_tour"}
    with contextlib.redirect_stdout(out):
        exec(compile(tour, "README tour", "exec"), names)
    printed = out.getvalue()
    tr = re.search(r"loss (\S+) after (\d+) iterations", printed)
    assert tr is not None, printed
    # TrustRegions stopped by its own gradient test (pymanopt's min_gradient_norm = 1e-6, in
    # g_3), not by its iteration budget; then the loss is bounded: near the truth (E = 0)
    # E <= ||P_T E'||^2 / (2 lam) and ||grad||_{g_N}^2 >= a_min ||P_T E'||^2, a_min =
    # s_min^{2(N-1)/N} the smallest eigenvalue of A_{N,X}; a factor 2 for the second-order
    # remainder (as in test_pymanopt_solvers._error_bound).
    result, target = names["result"], names["target"]
    assert "min grad norm" in result.stopping_criterion, result.stopping_criterion
    s_min = np.linalg.svd(target, compute_uv=False)[3]
    lam = _tangent_hessian_floor(names["loss"], target, 4)
    assert float(tr.group(1)) <= 2 * 1e-6**2 / (2 * lam * s_min ** (4 / 3))
    flows = re.search(r"loss (\S+) vs (\S+), gap (\S+)", printed)
    assert flows is not None, printed
    # The two flows solve the same ODE for X(t) (balanced start), each with local error
    # control rtol = 1e-7. Their global errors are estimated by solving again at rtol / 100
    # (tolerance proportionality: the error scales with rtol, so |X(rtol) - X(rtol/100)| is
    # the error at rtol up to 1 %); the factor 2 allows the tighter solution to be only twice
    # as accurate. gap <= err_factor + err_intrinsic by the triangle inequality.
    net, task, stop = names["net"], names["task"], names["stop"]
    tight = dict(rtol=1e-9, atol=1e-12)
    factors_tight = dlngeo.create_solver("overparametrized_flow", **tight).run(task, stop)
    intrinsic_tight = dlngeo.create_solver("intrinsic_flow", **tight).run(task, stop)
    X_factors = net.product(names["factors"].final_weights)
    X_intrinsic = dlngeo.to_dense(names["intrinsic"].final_point)
    err_factors = np.linalg.norm(X_factors - net.product(factors_tight.final_weights))
    err_intrinsic = np.linalg.norm(X_intrinsic - dlngeo.to_dense(intrinsic_tight.final_point))
    gap = np.linalg.norm(X_factors - X_intrinsic)
    assert gap <= 2 * (err_factors + err_intrinsic), (gap, err_factors, err_intrinsic)
    assert float(flows.group(3)) == pytest.approx(gap, rel=0.06)  # printed to 2 digits
    # The losses differ by at most ||E'(X_i)|| gap + ||E''|| gap^2 / 2, E'' = (2/|Omega|) P_Omega.
    loss = names["loss"]
    grad = loss.gradient(X_intrinsic)
    grad_norm = float(np.sqrt(grad.multiply(grad).sum()))
    bound = grad_norm * gap + gap**2 / len(loss.rows)
    printed_rounding = 5e-4 * float(flows.group(1))  # each printed to 4 significant digits
    assert abs(float(flows.group(1)) - float(flows.group(2))) <= bound + 2 * printed_rounding
    # The README shows the same figures (to the printed digits) as this run.
    text = README.read_text(encoding="utf-8")
    assert f"loss {flows.group(1)} vs {flows.group(2)}" in text


def test_the_run_example_ends_for_good_reasons_with_a_trajectory_gap(tmp_path, monkeypatch):
    """The README's `dlngeo run ...` line: every method stops for a reason of its own (no budget
    hit), and the factor flow and the intrinsic flow from its balanced start agree."""
    import json
    import shlex

    from dlngeo.cli import main

    (line,) = [
        line[2:] for line in _blocks("console")[0].splitlines() if line.startswith("$ dlngeo run ")
    ]
    argv = shlex.split(line.split("#")[0])[1:]
    argv[argv.index("--out") + 1] = str(tmp_path / "out")
    monkeypatch.chdir(README.parent)  # the example config paths are relative to the checkout
    assert main([*argv, "--no-progress"]) == 0
    document = json.loads((tmp_path / "out" / "results.json").read_text())
    assert document["problem"]["balanced_start"] is True
    for label, entry in document["methods"].items():
        assert entry["stop_reason"] in ("loss_below", "end_time", "converged"), label
    assert (tmp_path / "out" / "trajectory_gap.png").exists()
    flows = [
        g for g in document["trajectory_gap"] if g["overparametrized"] == "overparametrized_flow"
    ]
    (gap,) = flows
    rtol = document["config"]["methods"]["intrinsic_flow"]["rtol"]
    assert len(gap["gap"]) > 10
    # The two flows are one curve (balanced start), so their gap is the integrators' global
    # error, which is proportional to the tolerance (tolerance proportionality of the error
    # control): the same run with rtol and atol 100 times larger has a gap ~100 times larger.
    # A factor 10 allows the proportionality to be off by 10; a true difference of the curves
    # would not shrink at all.
    loose = [
        "--set",
        f"methods.overparametrized_flow.rtol={100 * rtol}",
        "--set",
        f"methods.intrinsic_flow.rtol={100 * rtol}",
        "--set",
        f"methods.overparametrized_flow.atol={100 * document['config']['methods']['overparametrized_flow']['atol']}",
        "--set",
        f"methods.intrinsic_flow.atol={100 * document['config']['methods']['intrinsic_flow']['atol']}",
    ]
    argv[argv.index("--out") + 1] = str(tmp_path / "loose")
    assert main([*argv, *loose, "--no-progress"]) == 0
    loose_document = json.loads((tmp_path / "loose" / "results.json").read_text())
    (loose_gap,) = [
        g
        for g in loose_document["trajectory_gap"]
        if g["overparametrized"] == "overparametrized_flow"
    ]
    assert max(gap["gap"]) <= max(loose_gap["gap"]) / 10, (max(gap["gap"]), max(loose_gap["gap"]))


def test_tour_imports_only_from_the_top_level_api():
    """The tour reaches everything through ``import dlngeo`` (no submodule imports or paths)."""

    tour = _blocks("python")[0]
    assert "from dlngeo" not in tour and "import dlngeo." not in tour
    used = set(re.findall(r"\bdlngeo\.([A-Za-z_]\w*)", tour))
    assert used <= set(dlngeo.__all__), used - set(dlngeo.__all__)
    assert {"Task", "Stopping", "Comparison", "RiemannianLangevin"} <= set(dlngeo.__all__)


def test_version_is_the_distribution_metadata():
    import importlib.metadata

    assert dlngeo.__version__ == importlib.metadata.version("dlngeo")
