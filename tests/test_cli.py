"""`dlngeo compare` and `dlngeo run`: end to end at a reduced size, outputs, and exit code 2 on bad configs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dlngeo.cli import main
from dlngeo.experiment import build, load_config
from dlngeo.plots import FIGURES
from dlngeo.results import check_results

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("dlngeo: error:")]
    assert len(lines) == 1, err
    return lines[0]


def test_compare_default_quick_end_to_end(tmp_path, capsys):
    out = tmp_path / "out"
    (tmp_path / "out").mkdir()
    keep = out / "notes.txt"
    keep.write_text("mine")  # a user's file in the output directory is left alone
    assert main(["compare", "--quick", "--no-progress", "--out", str(out)]) == 0
    stdout = capsys.readouterr().out
    for label in ("overparametrized_gd", "intrinsic_flow", "riemannian_cg", "riemannian_tr"):
        assert label in stdout
    assert "stop reason" in stdout and "trajectory gap" in stdout
    assert keep.read_text() == "mine"
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["notes.txt", "results.json", *FIGURES]
    )  # nothing else

    document = json.loads((out / "results.json").read_text())
    check_results(document)
    assert document["schema"] == "dlngeo.comparison/1"
    assert document["problem"]["shape"] == [30, 30] and document["problem"]["depth"] == 3
    assert list(document["methods"]) == [
        "overparametrized_gd",
        "intrinsic_flow",
        "riemannian_cg",
        "riemannian_tr",
        "riemannian_lm",
    ]
    for label, entry in document["methods"].items():
        # 1e-6 is the default config's stopping.loss_below (the stop reason is checked below)
        assert isinstance(entry["final_loss"], float) and entry["final_loss"] <= 1e-6, label
        assert isinstance(entry["iterations"], int) and entry["iterations"] > 0
        assert isinstance(entry["wall_time_s"], float) and entry["wall_time_s"] > 0
        assert entry["stop_reason"] == "loss_below", (label, entry["stop_reason"])
        assert (
            all(isinstance(v, int) for v in entry["evaluations"].values()) and entry["evaluations"]
        )
        metrics = entry["metrics"]
        n = len(metrics["time"])
        assert n >= 2
        for key in ("iteration", "loss", "wall_time", "effective_rank", "singular_values"):
            assert len(metrics[key]) == n, (label, key)
        assert all(isinstance(row, list) and len(row) >= 2 for row in metrics["singular_values"])
    (gap,) = document["trajectory_gap"]
    assert gap["overparametrized"] == "overparametrized_gd" and gap["intrinsic"] == "intrinsic_flow"
    assert gap["alignment"] == "exact" and gap["gap"][0] == 0.0 and len(gap["gap"]) > 10
    for name in FIGURES:
        data = (out / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 10_000, name


def test_run_layers_configs_and_set(tmp_path, capsys):
    extra = tmp_path / "extra.toml"
    extra.write_text(
        "seed = 2\ngap = []\n[methods.riemannian_tr]\n[methods.cg]\nsolver = 'riemannian_cg'\nmetric = 'embedded'\n"
    )
    out = tmp_path / "o"
    code = main(
        [
            "run",
            str(EXAMPLES / "regression.toml"),
            str(extra),
            "--set",
            "problem.shape=[5, 4]",
            "--set",
            "target.rank=2",
            "--set",
            "stopping.loss_below=1e-10",
            "--set",
            "stopping.max_time=10.0",
            "--out",
            str(out),
            "--no-progress",
            "--no-plots",
            "--db",
            str(tmp_path / "runs.sqlite"),
        ]
    )
    assert code == 0, capsys.readouterr().err
    document = json.loads((out / "results.json").read_text())
    assert document["config"]["seed"] == 2
    assert list(document["methods"]) == [
        "riemannian_tr",
        "cg",
    ]  # the file's [methods] replaced the earlier list
    assert document["methods"]["cg"]["solver"] == "riemannian_cg"
    assert document["problem"]["shape"] == [5, 4]
    assert {m["stop_reason"] for m in document["methods"].values()} == {"loss_below"}
    assert not any((out / name).exists() for name in FIGURES)
    from dlngeo.results import ResultsStore

    with ResultsStore(tmp_path / "runs.sqlite") as store:
        (run,) = store.runs()
        assert [m["label"] for m in store.methods(run["id"])] == ["riemannian_tr", "cg"]
        assert store.get(run["id"])["config"]["seed"] == 2


@pytest.mark.parametrize("example", sorted(p.name for p in EXAMPLES.glob("*.toml")))
def test_every_example_config_builds(example):
    plan = build(load_config([EXAMPLES / example], base={}))
    assert plan.methods


@pytest.mark.parametrize(
    "args, key",
    [
        (["--set", "bogus=1"], "bogus"),
        (["--set", "network.depth=three"], "network.depth"),
        (["--set", "network.width=4", "--set", "rank=5"], "rank"),
        (["--set", "methods.overparametrized_gd.step=-1"], "methods.overparametrized_gd.step"),
        (["--set", "loss.name=matrix_complet"], "loss.name"),
        (
            ["--set", "methods.riemannian_tr.trust_radius=-2.0"],
            "methods.riemannian_tr.trust_radius",
        ),
    ],
)
def test_bad_config_exits_2_with_one_line_naming_the_key(tmp_path, capsys, args, key):
    out = tmp_path / "never"
    assert main(["compare", "--no-progress", "--out", str(out), *args]) == 2
    line = _error_line(capsys)
    assert line.startswith(f"dlngeo: error: {key}:"), line
    assert not out.exists()


def test_out_is_a_file_is_refused_and_left_alone(tmp_path, capsys):
    target = tmp_path / "results"
    target.write_text("precious")
    assert main(["compare", "--quick", "--out", str(target)]) == 2
    assert "--out" in _error_line(capsys)
    assert target.read_text() == "precious"


def test_run_needs_a_config_and_a_missing_file_is_named(tmp_path, capsys):
    assert main(["run"]) == 2
    capsys.readouterr()
    assert main(["run", str(tmp_path / "missing.toml")]) == 2
    assert "missing.toml: no such config file" in _error_line(capsys)


def test_console_exit_code_is_2_in_a_real_process(tmp_path):
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "dlngeo.cli",
            "compare",
            "--set",
            "network.dpth=3",
            "--out",
            str(tmp_path / "x"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("dlngeo: error:")]
    assert errors == [
        "dlngeo: error: network.dpth: unknown key (known keys of [network]: activation, depth, dims, slope, width)"
    ]


def test_a_diverging_method_is_reported_and_the_run_succeeds(tmp_path, capsys):
    out = tmp_path / "d"
    code = main(
        [
            "compare",
            "--quick",
            "--no-progress",
            "--no-plots",
            "--out",
            str(out),
            "--set",
            "methods.overparametrized_gd.step=1e3",
            "--set",
            "methods.intrinsic_flow.enabled=false",
        ]
    )
    assert code == 0
    table = capsys.readouterr().out
    gd_line = next(line for line in table.splitlines() if line.startswith("overparametrized_gd"))
    assert gd_line.rstrip().endswith("diverged")
    document = json.loads((out / "results.json").read_text())
    assert document["methods"]["overparametrized_gd"]["stop_reason"] == "diverged"
    assert document["methods"]["riemannian_tr"]["stop_reason"] == "loss_below"
    assert document["methods"]["riemannian_cg"]["stop_reason"] == "loss_below"


def test_examples_default_toml_is_the_default_comparison():
    from dlngeo.experiment import DEFAULT_CONFIG

    assert load_config([EXAMPLES / "default.toml"], base={}) == DEFAULT_CONFIG


@pytest.mark.parametrize(
    "args, key, meant",
    [
        (
            ["--set", "methods.overparametrized_gd.stepp=0.5"],
            "methods.overparametrized_gd.stepp",
            "step",
        ),
        (["--set", 'loss.normalisation="sum"'], "loss.normalisation", "normalization"),
        (["--set", "init.init_scal=0.1"], "init.init_scal", "init_scale"),
        (["--set", "target.rnk=2"], "target.rnk", "rank"),
        (["--set", "metrics={singular_values={kk=2}}"], "metrics.singular_values.kk", "k"),
    ],
)
def test_option_typos_of_every_kind_get_did_you_mean_at_their_key(
    tmp_path, capsys, args, key, meant
):
    out = tmp_path / "never"
    assert main(["compare", "--quick", "--no-progress", "--out", str(out), *args]) == 2
    line = _error_line(capsys)
    assert line.startswith(f"dlngeo: error: {key}: unknown option of "), line
    assert (
        f"did you mean {meant!r}?" in line
        and "(options: " in line
        and meant in line.split("(options: ")[1]
    )
    assert not out.exists()


def test_a_config_that_is_not_utf8_is_named_in_one_line(tmp_path, capsys):
    config = tmp_path / "latin1.toml"
    config.write_bytes("# café\n[network]\ndepth = 2\n".encode("latin-1"))
    assert main(["run", str(config), "--no-progress", "--out", str(tmp_path / "o")]) == 2
    line = _error_line(capsys)
    assert line.startswith(f"dlngeo: error: {config}: is not UTF-8 text"), line


@pytest.mark.parametrize("table", ["methods", "loss", "network", "stopping"])
def test_set_with_an_empty_table_is_an_error_not_ignored(tmp_path, capsys, table):
    out = tmp_path / "never"
    assert (
        main(["compare", "--quick", "--no-progress", "--out", str(out), "--set", f"{table}={{}}"])
        == 2
    )
    line = _error_line(capsys)
    assert line.startswith(f"dlngeo: error: --set: {table}={{}} sets an empty table"), line
    assert not out.exists()
