"""dlngeo sweep / dlngeo report: sweep files, the ledger, executors, crash safety, failures as data."""

from __future__ import annotations

import json
import os
import sqlite3
import sys
from pathlib import Path

import numpy as np
import pytest

from dlngeo.cli import main
from dlngeo.sweep import Ledger, SweepError, load_sweep, run_sweep
from dlngeo.sweep.report import _log_scale, figure_lines

TESTS = Path(__file__).parent

# A tiny completion problem: each run takes a few hundredths of a second.
BASE = """
seed = 0
plugins = ["sweep_faults"]
metrics = ["effective_rank"]
[problem]
shape = [12, 10]
[target]
sampler = "low_rank_target"
rank = 2
[observations]
sampler = "uniform_mask"
size = 80
[loss]
name = "matrix_completion"
[network]
depth = 2
[init]
sampler = "gaussian"
init_scale = 0.1
[stopping]
loss_below = 1e-8
max_iterations = {iterations}
[methods.gd]
solver = "overparametrized_gd"
step = 0.5
record_every = 50
"""


def write_sweep(path: Path, sweep: str, iterations: int = 150) -> Path:
    path.write_text(BASE.format(iterations=iterations) + sweep)
    return path


GRID = """
[sweep]
name = "tiny"
seeds = 2
[sweep.grid]
"network.depth" = [2, 3]
"observations.size" = [60, 90]
"""

# Points 1-3 fail: a diverging step, a raising solver, NaN data.
FAULTS = """
[sweep]
name = "faults"
[sweep.zip]
"methods.gd.solver" = ["overparametrized_gd", "overparametrized_gd", "faulty", "overparametrized_gd"]
"methods.gd.step" = [0.5, 1e4, 0.5, 0.5]
"target.sampler" = ["low_rank_target", "low_rank_target", "low_rank_target", "nan_target"]
"""


@pytest.fixture(autouse=True)
def _faults_importable(monkeypatch):
    monkeypatch.syspath_prepend(str(TESTS))
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])
    )


def ledger_rows(db: Path) -> list[dict]:
    with Ledger(db) as ledger:
        return ledger.rows()


def stored_documents(db: Path) -> int:
    with sqlite3.connect(db) as con:
        return con.execute("SELECT COUNT(*) FROM runs").fetchone()[0]


# ---------------------------------------------------------------- sweep files
def test_grid_zip_seeds_resolve_to_hashed_points(tmp_path):
    path = write_sweep(tmp_path / "s.toml", GRID + '[sweep.zip]\n"init.init_scale" = [0.1, 0.2]\n')
    sweep = load_sweep(path)
    assert sweep.axes == ["network.depth", "observations.size", "init.init_scale", "seed"]
    assert len(sweep.points) == 2 * 2 * 2 * 2
    assert len({p.config_hash for p in sweep.points}) == len(sweep.points)
    p = sweep.points[-1]
    assert p.axes == {
        "network.depth": 3,
        "observations.size": 90,
        "init.init_scale": 0.2,
        "seed": 1,
    }
    assert p.config["network"]["depth"] == 3 and p.config["seed"] == 1
    assert p.config["init"] == {"sampler": "gaussian", "init_scale": 0.2}
    # The hash is of the resolved content: the same config from a reordered file hashes the same.
    again = load_sweep(path)
    assert [q.config_hash for q in again.points] == [q.config_hash for q in sweep.points]


@pytest.mark.parametrize(
    "sweep, message",
    [
        ('"network.depht" = [2, 3]', "point {network.depht=2, seed=0}: network.depht: unknown key"),
        (
            '"network.depth" = [2, 0]',
            "point {network.depth=0, seed=0}: network.depth: must be >= 1",
        ),
        ('"methods.gd.stepp" = [1.0]', "methods.gd.stepp: unknown option of solver"),
        ('"init.sampler" = ["gausian"]', "init.sampler: unknown sampler 'gausian'"),
    ],
)
def test_bad_point_fails_the_whole_sweep_before_anything_runs(tmp_path, capsys, sweep, message):
    path = write_sweep(tmp_path / "s.toml", f"[sweep]\n[sweep.grid]\n{sweep}\n")
    db = tmp_path / "runs.sqlite"
    assert main(["sweep", str(path), "--db", str(db), "--workers", "1", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dlngeo: error: ") and message in err and err.count("\n") == 1
    assert not db.exists()


def test_bad_sweep_fields(tmp_path):
    with pytest.raises(SweepError, match=r"sweep.zip: lists must have equal lengths"):
        load_sweep(write_sweep(tmp_path / "a.toml", '[sweep.zip]\n"seed0" = [1]\n"x.y" = [1, 2]\n'))
    with pytest.raises(SweepError, match=r"sweep.seeds: must be >= 1"):
        load_sweep(write_sweep(tmp_path / "b.toml", "[sweep]\nseeds = 0\n"))
    with pytest.raises(SweepError, match=r"sweep.grid.\"seed\": vary seeds with sweep.seeds"):
        load_sweep(write_sweep(tmp_path / "c.toml", '[sweep.grid]\n"seed" = [1, 2]\n'))
    with pytest.raises(SweepError, match=r"sweep.grdi: unknown key"):
        load_sweep(write_sweep(tmp_path / "d.toml", "[sweep.grdi]\n"))
    with pytest.raises(SweepError, match=r"same config as point 0"):
        load_sweep(write_sweep(tmp_path / "e.toml", '[sweep.grid]\n"network.depth" = [2, 2]\n'))


# ---------------------------------------------------------------- running, resuming, failures
def test_sweep_in_process_then_resume_runs_nothing_twice(tmp_path):
    sweep = load_sweep(write_sweep(tmp_path / "s.toml", GRID))
    db = tmp_path / "runs.sqlite"
    first = run_sweep(sweep, db, workers=1)
    assert first.counts["done"] == first.ran == 8
    rows = ledger_rows(db)
    assert [r["status"] for r in rows] == ["done"] * 8
    row = rows[0]
    assert row["attempts"] == 1 and row["worker"].endswith(f":{os.getpid()}")
    assert row["started"] <= row["ended"] and row["seed"] == row["axes"]["seed"]
    gd = row["summary"]["gd"]
    assert gd["solver"] == "overparametrized_gd" and "effective_rank" in gd["metrics"]
    # The summary is the stored results document's last sample.
    with sqlite3.connect(db) as con:
        doc = json.loads(
            con.execute("SELECT document FROM runs WHERE id = ?", (row["run_id"],)).fetchone()[0]
        )
    assert doc["methods"]["gd"]["metrics"]["effective_rank"][-1] == gd["metrics"]["effective_rank"]
    assert doc["config"] == row["config"]
    second = run_sweep(sweep, db, workers=1)
    assert second.ran == 0 and second.counts["done"] == 8 and stored_documents(db) == 8
    assert "8 runs: 8 done, 0 failed (0 run now" in second.line()


def test_failures_are_data_and_the_sweep_goes_on(tmp_path, capsys):
    path = write_sweep(tmp_path / "s.toml", FAULTS)
    db = tmp_path / "runs.sqlite"
    assert main(["sweep", str(path), "--db", str(db), "--workers", "1", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "4 runs: 1 done, 3 failed" in out
    status = {r["point"]: (r["status"], r["reason"]) for r in ledger_rows(db)}
    assert status[0] == ("done", None)
    assert status[1][0] == "failed" and "method 'gd' diverged" in status[1][1]
    assert status[2] == ("failed", "RuntimeError: injected fault")
    assert status[3][0] == "failed" and status[3][1] and "\n" not in status[3][1]
    # --retry-failed runs exactly the failed ones again (deterministic: they fail again).
    summary = run_sweep(load_sweep(path), db, workers=1, retry_failed=True)
    assert summary.ran == 3 and summary.counts == {**summary.counts, "done": 1, "failed": 3}
    assert {r["point"]: r["attempts"] for r in ledger_rows(db)} == {0: 1, 1: 2, 2: 2, 3: 2}


def test_dask_local_cluster_runs_a_sweep(tmp_path):
    distributed = pytest.importorskip("dask.distributed")
    sweep = load_sweep(write_sweep(tmp_path / "s.toml", GRID.replace("seeds = 2", "seeds = 1")))
    db = tmp_path / "runs.sqlite"
    with (
        distributed.LocalCluster(
            n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        summary = run_sweep(sweep, db, scheduler=client, plugins=["sweep_faults"])
    assert summary.counts["done"] == 4 and summary.executor.startswith("dask at ")
    assert stored_documents(db) == 4


def test_missing_dask_is_one_line_naming_the_extra(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "dask.distributed", None)  # import fails
    path = write_sweep(tmp_path / "s.toml", GRID)
    assert (
        main(["sweep", str(path), "--db", str(tmp_path / "r.sqlite"), "--scheduler", "tcp://x:1"])
        == 2
    )
    err = capsys.readouterr().err
    assert "optional extra 'scale'" in err and err.count("\n") == 1


# ---------------------------------------------------------------- report
def test_report_tables_figure_and_json(tmp_path, capsys):
    path = write_sweep(tmp_path / "s.toml", GRID)
    db = tmp_path / "runs.sqlite"
    run_sweep(load_sweep(path), db, workers=1)
    out = tmp_path / "report"
    assert (
        main(
            [
                "report",
                str(db),
                "--out",
                str(out),
                "--x",
                "observations.size",
                "--y",
                "effective_rank",
                "--by",
                "network.depth",
            ]
        )
        == 0
    )
    assert {p.name for p in out.iterdir()} == {"tiny.md", "tiny.csv", "tiny.png"}
    rows = ledger_rows(db)
    # The table's mean and std are those of the two seeds' final effective ranks.
    import csv

    with open(out / "tiny.csv") as fh:
        table = list(csv.DictReader(fh))
    assert len(table) == 4
    for line in table:
        values = [
            r["summary"]["gd"]["metrics"]["effective_rank"]
            for r in rows
            if r["axes"]["network.depth"] == int(line["network.depth"])
            and r["axes"]["observations.size"] == int(line["observations.size"])
        ]
        # the CSV holds repr(float) (an exact round trip) of sum / n and the same differences as
        # numpy's: a few roundings, ~ eps (|mean| / std) for the std; abs covers std = 0
        assert float(line["effective_rank_mean"]) == pytest.approx(np.mean(values), rel=1e-12)
        assert float(line["effective_rank_std"]) == pytest.approx(
            np.std(values, ddof=1), rel=1e-12, abs=1e-15
        )
        assert line["runs"] == "2" and line["done"] == "2"
    assert " ± " in (out / "tiny.md").read_text()
    capsys.readouterr()
    assert main(["report", str(db), "--format", "json"]) == 0
    objects = json.loads(capsys.readouterr().out)
    assert len(objects) == 8
    first = objects[0]
    assert {"status", "config_hash", "axes"} <= set(first) and "seed" in first["axes"]
    assert {"final_loss", "stop_reason", "metrics"} <= set(first["methods"]["gd"])
    assert main(["report", str(db), "--out", str(out), "--by", "nope"]) == 2
    assert "--by: 'nope' is not an axis of sweep 'tiny'" in capsys.readouterr().err


def test_report_by_several_axes_draws_one_line_per_combination(tmp_path, capsys):
    path = write_sweep(tmp_path / "s.toml", GRID)
    db = tmp_path / "runs.sqlite"
    run_sweep(load_sweep(path), db, workers=1)
    rows = ledger_rows(db)
    by = "network.depth,observations.size"
    lines = figure_lines(rows, "observations.size", "effective_rank", by)
    expected = {
        (f"network.depth = {d}, observations.size = {s}", "gd") for d in (2, 3) for s in (60, 90)
    }
    assert set(lines) == expected
    for (label, _), points in lines.items():
        d, s = (int(part.split(" = ")[1]) for part in label.split(", "))
        # Each combination's one point holds exactly its two seeds' final values.
        assert list(points) == [float(s)]
        assert sorted(points[float(s)]) == sorted(
            r["summary"]["gd"]["metrics"]["effective_rank"]
            for r in rows
            if r["axes"]["network.depth"] == d and r["axes"]["observations.size"] == s
        )
    # One axis is the old behaviour: the seeds and the other axis pool into one line per value.
    single = figure_lines(rows, "observations.size", "effective_rank", "network.depth")
    assert set(single) == {("network.depth = 2", "gd"), ("network.depth = 3", "gd")}
    assert all(len(v) == 2 for p in single.values() for v in p.values())
    out = tmp_path / "report"
    argv = ["report", str(db), "--out", str(out), "--x", "observations.size"]
    assert main([*argv, "--by", by]) == 0 and (out / "tiny.png").exists()
    capsys.readouterr()
    assert main([*argv, "--by", "network.depth,nope"]) == 2
    assert "--by: 'nope' is not an axis of sweep 'tiny'" in capsys.readouterr().err


def test_log_scale_when_values_span_two_decades():
    assert _log_scale([1e-6, 1e-3]) and _log_scale([1.0, 100.0])
    assert (
        not _log_scale([1.0, 99.0]) and not _log_scale([-1.0, 1e3]) and not _log_scale([0.0, 1.0])
    )


def test_example_sweeps_resolve():
    examples = TESTS.parent / "examples" / "sweeps"
    fig1 = load_sweep(examples / "arora2019_fig1.toml")
    assert len(fig1.points) == 5 * 4 * 3 and fig1.report["by"] == "network.depth"
    for point in fig1.points:
        methods = point.config["methods"]
        depth = point.config["network"]["depth"]
        # Depth 1 is the nuclear-norm baseline, deeper networks factor GD.
        assert methods["nuclear_norm"]["enabled"] == (depth == 1)
        assert methods["gd"]["enabled"] == (depth > 1)
    speed = load_sweep(examples / "depth_width.toml")
    assert len(speed.points) == 3 * 4 * 2
    assert {p.config["network"]["depth"] for p in speed.points} == {2, 4, 8, 16}
    relu = load_sweep(examples / "relu_depth_init.toml")
    assert len(relu.points) == 4 * 3 * 2 * 2
    assert {p.config["network"]["activation"] for p in relu.points} == {"linear", "relu"}
    assert {p.config["init"]["init_scale"] for p in relu.points} == {1e-3, 1e-2, 1e-1}
    assert {p.config["network"]["depth"] for p in relu.points} == {2, 3, 4, 5}
    for point in relu.points:
        # The flow runs to its end time: no stationary stop, one method.
        assert point.config["stopping"]["gradient_norm_rtol"] == 0
        assert set(point.config["methods"]) == {"flow"}
        assert "imbalance_drift" in point.config["metrics"]
    assert relu.report["by"] == "network.activation,init.init_scale"
