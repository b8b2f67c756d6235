"""The README's Python tour runs as written and prints what the README says it prints."""

import contextlib
import io
import re
from pathlib import Path

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


def test_tour_runs_and_its_claims_hold():
    """The tour's printed numbers are the README's to the digits that mean something."""
    tour = _blocks("python")[0]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(tour, "README tour", "exec"), {"__name__": "readme_tour"})
    printed = out.getvalue()
    tr = re.search(r"loss (\S+) after (\d+) iterations", printed)
    assert tr is not None, printed
    assert float(tr.group(1)) <= 1e-10 and int(tr.group(2)) <= 20
    flows = re.search(r"loss (\S+) vs (\S+), gap (\S+)", printed)
    assert flows is not None, printed
    assert abs(float(flows.group(1)) - float(flows.group(2))) <= 1e-6 * float(flows.group(1))
    assert float(flows.group(3)) <= 1e-5
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
    # two solutions, each with local error control rtol, over t in [0, 40] with a growth phase:
    # the global error may exceed rtol by the problem's error amplification; 1e4 * rtol allows it
    assert max(gap["gap"]) <= 1e4 * rtol


def test_tour_imports_only_from_the_top_level_api():
    """The tour reaches everything through ``import dlngeo`` (no submodule imports or paths)."""
    import dlngeo

    tour = _blocks("python")[0]
    assert "from dlngeo" not in tour and "import dlngeo." not in tour
    used = set(re.findall(r"\bdlngeo\.([A-Za-z_]\w*)", tour))
    assert used <= set(dlngeo.__all__), used - set(dlngeo.__all__)
    assert {"Task", "Stopping", "Comparison", "RiemannianLangevin"} <= set(dlngeo.__all__)


def test_version_is_the_distribution_metadata():
    import importlib.metadata

    import dlngeo

    assert dlngeo.__version__ == importlib.metadata.version("dlngeo")
