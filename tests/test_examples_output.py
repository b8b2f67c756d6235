"""The example scripts write outside the repository by default; the committed figures only on request."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from dlngeo.reproductions.figure_io import example_parser

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
SCRIPTS = sorted(EXAMPLES.glob("*.py"))


def test_default_out_is_under_the_current_directory_and_update_figures_is_explicit():
    parser = example_parser("An example.\n", EXAMPLES / "saxe_2014.py", "smaller")
    assert parser.parse_args([]).out == Path("dlngeo-out") / "saxe_2014"
    assert parser.parse_args(["--out", "x"]).out == Path("x")
    assert parser.parse_args(["--update-figures"]).out == EXAMPLES / "figures"
    with pytest.raises(SystemExit):
        parser.parse_args(["--out", "x", "--update-figures"])


@pytest.mark.parametrize("script", [p.name for p in SCRIPTS])
def test_every_example_takes_the_shared_options(script):
    source = (EXAMPLES / script).read_text()
    assert "example_parser(__doc__, __file__" in source, script
    assert '"figures"' not in source, script  # no path of its own into examples/figures


def test_an_example_run_writes_beside_the_caller_not_into_examples_figures(tmp_path):
    committed = {p.name: p.stat().st_mtime_ns for p in (EXAMPLES / "figures").iterdir()}
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / "razin_cohen_2020.py"), "--quick"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    written = sorted(p.name for p in (tmp_path / "dlngeo-out" / "razin_cohen_2020").iterdir())
    assert written == ["razin_cohen_2020_quick.png"]
    assert {p.name: p.stat().st_mtime_ns for p in (EXAMPLES / "figures").iterdir()} == committed
