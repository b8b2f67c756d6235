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
