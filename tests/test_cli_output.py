"""No result is ever lost: outputs checked before anything runs, results saved method by method,
Ctrl-C and kill -9 in real processes, no silent overwrite, one file mode; the progress bar; the
balanced-start scope warning."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from dlngeo.cli import main
from dlngeo.experiment import BALANCED_TOLERANCE
from dlngeo.plots import FIGURES
from dlngeo.results import ResultsStore, check_results

# A 20 x 20 completion whose first method (trust regions) ends in well under a second and whose
# second (factor GD at step 1e-4, no iteration cap) runs for two minutes unless stopped.
SLOW = """
seed = 0
metrics = ["effective_rank"]
[problem]
shape = [20, 20]
[target]
sampler = "low_rank_target"
rank = 2
[observations]
sampler = "uniform_mask"
size = 200
[loss]
name = "matrix_completion"
[network]
depth = 3
[init]
sampler = "gaussian"
init_scale = 1e-2
[stopping]
loss_below = 1e-8
max_time = 120.0
[methods.riemannian_tr]
[methods.slow_gd]
solver = "overparametrized_gd"
step = 1e-4
record_every = 50
stopping = { max_iterations = 1000000000 }
[methods.riemannian_cg]
"""

# A few-millisecond run: whitened regression 5 x 4, rank 2, trust regions only.
TINY = """
seed = 0
[problem]
shape = [5, 4]
[target]
sampler = "low_rank_target"
rank = 2
[loss]
name = "regression"
[network]
depth = 2
[init]
sampler = "gaussian"
init_scale = 1e-1
[stopping]
loss_below = 1e-10
max_time = 10.0
[methods.riemannian_tr]
"""


def _error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("dlngeo: error:")]
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture
def tiny(tmp_path) -> Path:
    path = tmp_path / "tiny.toml"
    path.write_text(TINY)
    return path


@pytest.fixture
def no_method_may_run(monkeypatch):
    """Any method that starts fails the test: the check must come before the computation."""

    def refuse(*args, **kwargs):
        raise AssertionError("a method ran before the outputs were checked")

    import dlngeo.experiment

    where = "dlngeo.experiment" if hasattr(dlngeo.experiment, "_run_one") else "dlngeo.runner"
    monkeypatch.setattr(f"{where}._run_one", refuse)


# ------------------------------------------------------------- outputs checked first
def test_out_under_a_regular_file_is_refused_before_any_method(
    tmp_path, capsys, tiny, no_method_may_run
):
    blocker = tmp_path / "file"
    blocker.write_text("precious")
    assert main(["run", str(tiny), "--no-progress", "--out", str(blocker / "sub" / "out")]) == 2
    line = _error_line(capsys)
    assert line.startswith("dlngeo: error: --out: cannot create directory") and "file" in line
    assert blocker.read_text() == "precious"


def test_out_that_cannot_be_created_is_refused_before_any_method(capsys, tiny, no_method_may_run):
    # /proc refuses new entries even to root, unlike a chmod-ed folder
    assert main(["run", str(tiny), "--no-progress", "--out", "/proc/self/dlngeo-out"]) == 2
    assert _error_line(capsys).startswith("dlngeo: error: --out: cannot create")


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root writes in read-only folders"
)
def test_out_in_a_read_only_folder_is_refused(tmp_path, capsys, tiny, no_method_may_run):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        assert main(["run", str(tiny), "--no-progress", "--out", str(folder / "out")]) == 2
        assert "--out: cannot create directory" in _error_line(capsys)
    finally:
        folder.chmod(0o755)


@pytest.mark.parametrize("kind", ["text file", "under a file", "foreign sqlite", "directory"])
def test_bad_db_is_refused_before_any_method_and_left_alone(
    tmp_path, capsys, tiny, no_method_may_run, kind
):
    db = tmp_path / "store.sqlite"
    if kind == "text file":
        db.write_text("not a database\n")
    elif kind == "under a file":
        (tmp_path / "file").write_text("x")
        db = tmp_path / "file" / "store.sqlite"
    elif kind == "foreign sqlite":
        with sqlite3.connect(db) as con:
            con.execute("CREATE TABLE runs (name TEXT)")
        con.close()
    else:
        db.mkdir()
    before = db.read_bytes() if db.is_file() else None
    out = tmp_path / "out"
    assert main(["run", str(tiny), "--no-progress", "--out", str(out), "--db", str(db)]) == 2
    assert _error_line(capsys).startswith("dlngeo: error: --db: ")
    assert not out.exists()
    if before is not None:
        assert db.read_bytes() == before


# ------------------------------------------------------------- no silent overwrite
def test_second_run_into_the_same_out_is_refused_unless_overwrite(tmp_path, capsys, tiny):
    out = tmp_path / "out"
    args = ["run", str(tiny), "--no-progress", "--no-plots", "--out", str(out)]
    assert main([*args, "--set", "seed=1"]) == 0
    first = (out / "results.json").read_bytes()
    capsys.readouterr()
    assert main([*args, "--set", "seed=2"]) == 2
    line = _error_line(capsys)
    assert line.startswith("dlngeo: error: --out:") and "--overwrite" in line
    assert (out / "results.json").read_bytes() == first
    assert main([*args, "--set", "seed=2", "--overwrite"]) == 0
    assert json.loads((out / "results.json").read_text())["config"]["seed"] == 2


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_every_file_of_a_run_gets_the_umask_mode(tmp_path, tiny, umask):
    out = tmp_path / "out"
    old = os.umask(umask)
    try:
        args = ["run", str(tiny), "--no-progress", "--out", str(out)]
        assert main([*args, "--set", "metrics=['singular_values', 'effective_rank']"]) == 0
    finally:
        os.umask(old)
    modes = {p.name: p.stat().st_mode & 0o777 for p in out.iterdir()}
    assert sorted(modes) == sorted(["results.json", *FIGURES[:2], FIGURES[3]])
    assert set(modes.values()) == {0o666 & ~umask}, modes


def test_a_killed_write_leaves_no_temporary_file_for_the_next_run(tmp_path, tiny):
    out = tmp_path / "out"
    out.mkdir()
    (out / ".results.json.0badf00d.tmp").write_text('{"half": ')  # as a kill -9 mid-write leaves
    assert main(["run", str(tiny), "--no-progress", "--no-plots", "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["results.json"]


def test_no_blank_figure_is_written(tmp_path, tiny):
    """Without an overparametrized / intrinsic pair or recorded metrics there is only the loss to draw."""
    out = tmp_path / "out"
    assert main(["run", str(tiny), "--no-progress", "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["loss.png", "results.json"]


# ------------------------------------------------------------- Ctrl-C and kill -9
def _start(tmp_path: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "dlngeo.cli", *args],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # a shell's background jobs ignore SIGINT; give the child the default, as a terminal does
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def _wait_until_saved(proc: subprocess.Popen, results: Path, label: str) -> dict:
    """Poll results.json (written whole, so always valid JSON) until ``label`` is in it."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        if results.exists():
            document = json.loads(results.read_text())
            if label in document["methods"]:
                return document
        time.sleep(0.05)
    proc.kill()
    raise AssertionError(f"{label} never appeared in {results}")


def _db_methods(db: Path) -> list[tuple[str, str]]:
    with ResultsStore(db) as store:
        (run,) = store.runs()
        return [(m["label"], m["stop_reason"]) for m in store.methods(run["id"])]


posix_signals = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")


@posix_signals
@pytest.mark.parametrize("command", ["run", "compare"])
def test_ctrl_c_keeps_finished_methods_and_marks_the_interrupted_one(tmp_path, command):
    (tmp_path / "slow.toml").write_text(SLOW)
    args = [command, "slow.toml", "--out", "out", "--db", "runs.sqlite", "--no-progress"]
    proc = _start(tmp_path, *args)
    results = tmp_path / "out" / "results.json"
    document = _wait_until_saved(proc, results, "riemannian_tr")
    assert document["status"] == "running" and list(document["methods"]) == ["riemannian_tr"]
    time.sleep(1.0)  # well inside slow_gd (two minutes)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    (line,) = stderr.strip().splitlines()
    assert line.startswith("dlngeo: interrupted during slow_gd: ") and "1 finished" in line

    document = json.loads(results.read_text())
    check_results(document)
    assert document["status"] == "interrupted"
    methods = document["methods"]
    assert list(methods) == ["riemannian_tr", "slow_gd"]  # riemannian_cg never started
    assert methods["riemannian_tr"]["stop_reason"] == "loss_below"
    gd = methods["slow_gd"]
    assert gd["stop_reason"] == "interrupted"
    assert len(gd["metrics"]["loss"]) >= 2 and gd["iterations"] == gd["metrics"]["iteration"][-1]
    assert gd["final_loss"] == gd["metrics"]["loss"][-1]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["results.json"]
    assert _db_methods(tmp_path / "runs.sqlite") == [
        ("riemannian_tr", "loss_below"),
        ("slow_gd", "interrupted"),
    ]


@posix_signals
def test_kill_9_keeps_every_finished_method(tmp_path):
    (tmp_path / "slow.toml").write_text(SLOW)
    proc = _start(
        tmp_path, "run", "slow.toml", "--out", "out", "--db", "runs.sqlite", "--no-progress"
    )
    results = tmp_path / "out" / "results.json"
    _wait_until_saved(proc, results, "riemannian_tr")
    time.sleep(0.5)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    document = json.loads(results.read_text())
    check_results(document)
    assert document["status"] == "running"
    assert list(document["methods"]) == ["riemannian_tr"]
    assert document["methods"]["riemannian_tr"]["stop_reason"] == "loss_below"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["results.json"]
    assert _db_methods(tmp_path / "runs.sqlite") == [("riemannian_tr", "loss_below")]


def test_results_are_saved_after_each_method_in_process(tmp_path, tiny):
    """The saved document grows method by method and ends complete (no process needed)."""
    from dlngeo.experiment import compare, load_config
    from dlngeo.output import RunOutput

    config = load_config([tiny], ["methods.cg = {solver = 'riemannian_cg'}"], base={})
    seen = []
    with RunOutput(tmp_path / "out", db=tmp_path / "r.sqlite", plots=False) as output:

        def update(comparison, label):
            output.update(comparison, label)
            document = json.loads((tmp_path / "out" / "results.json").read_text())
            seen.append((label, document["status"], list(document["methods"])))

        compare(config, on_start=output.start, on_method=update)
    assert seen == [
        ("riemannian_tr", "running", ["riemannian_tr"]),
        ("cg", "complete", ["riemannian_tr", "cg"]),
    ]
    assert _db_methods(tmp_path / "r.sqlite") == [
        ("riemannian_tr", "loss_below"),
        ("cg", "loss_below"),
    ]


# ------------------------------------------------------------- progress bar
def _frames(stderr: str) -> list[str]:
    return [f.strip() for f in stderr.replace("\n", "\r").split("\r") if "|" in f]


@pytest.mark.parametrize("command, name", [("compare", "dlngeo compare"), ("run", "dlngeo run")])
def test_progress_bar_names_the_running_method(tmp_path, capsys, command, name):
    args = (
        ["--quick"]
        if command == "compare"
        else [
            str(Path(__file__).parent.parent / "examples" / "default.toml"),
            "--set",
            "problem.shape=[30, 30]",
            "--set",
            "target.rank=2",
            "--set",
            "observations.size=300",
            "--set",
            "methods.overparametrized_gd.step=0.5",
        ]
    )
    assert main([command, *args, "--no-plots", "--out", str(tmp_path / "o")]) == 0
    frames = _frames(capsys.readouterr().err)
    labels = ["overparametrized_gd", "intrinsic_flow", "riemannian_cg", "riemannian_tr"]
    for label in labels:
        # the bar names each method as soon as it starts (before any loss of it is known)
        assert any(f.startswith(f"{name} [{label}]") and f"{label}: started" in f for f in frames)
    for frame in frames:
        assert frame.startswith(name), frame
        if "[" in frame.split(":")[0]:
            running = frame.split("[", 1)[1].split("]", 1)[0]
            named = [label for label in labels if f"{label}: " in frame]
            assert named in ([], [running]), frame  # never the previous method's loss


# ------------------------------------------------------------- balanced-start scope
def test_unbalanced_start_warns_with_the_measured_imbalance(tmp_path, capsys):
    out = tmp_path / "o"
    assert main(["compare", "--quick", "--no-progress", "--no-plots", "--out", str(out)]) == 0
    warnings = [
        line for line in capsys.readouterr().err.splitlines() if line.startswith("dlngeo: warning:")
    ]
    (line,) = [w for w in warnings if "not balanced" in w]
    problem = json.loads((out / "results.json").read_text())["problem"]
    delta = problem["relative_imbalance"]
    assert problem["balanced_start"] is False and delta > BALANCED_TOLERANCE
    assert f"relative imbalance {delta:.1e}" in line and "intrinsic_flow" in line


def test_balanced_start_is_the_training_trajectory_and_does_not_warn(tmp_path, capsys):
    out = tmp_path / "o"
    args = ["compare", "--quick", "--no-progress", "--no-plots", "--out", str(out)]
    assert main([*args, "--set", "init.sampler='balanced'"]) == 0
    assert "not balanced" not in capsys.readouterr().err
    problem = json.loads((out / "results.json").read_text())["problem"]
    assert problem["balanced_start"] is True
    # a balanced factorization in double precision: rounding, a few eps per layer product
    assert problem["relative_imbalance"] <= 100 * problem["depth"] * np.finfo(float).eps
