"""dlngeo.experiment: layered configs, one-line config errors, compare() and the trajectory gap."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

import dlngeo
from dlngeo.experiment import (
    DEFAULT_CONFIG,
    ConfigError,
    build,
    compare,
    load_config,
    merge_config,
    parse_override,
    trajectory_gap,
    validate_config,
)
from dlngeo.results import check_results, write_results


def tiny(**changes) -> dict:
    """A small completion problem (12 x 10, rank 2, 90 entries) that every method solves in well under a second.

    Loss 1e-5 rather than 1e-6: on so small a problem the last decades are slow
    for the depth-3 flows (tiny singular values move slowly), not for the solvers.
    """
    config = merge_config(
        DEFAULT_CONFIG,
        {
            "problem": {"shape": [12, 10]},
            "target": {"rank": 2},
            "observations": {"size": 90},
            "init": {"init_scale": 1e-2},
            "stopping": {"loss_below": 1e-5, "max_time": 10.0},
        },
    )
    config["methods"] = {
        "overparametrized_gd": {"step": 1.0, "record_every": 5},
        "intrinsic_flow": {"representation": "dense"},
        "riemannian_cg": {},
        "riemannian_tr": {},
    }
    return merge_config(config, changes)


# ------------------------------------------------------------------ layering
def test_layers_later_files_and_set_override_earlier(tmp_path):
    a = tmp_path / "a.toml"
    b = tmp_path / "b.toml"
    a.write_text('seed = 1\n[network]\ndepth = 2\nwidth = 7\n[loss]\nname = "regression"\n')
    b.write_text("[network]\ndepth = 4\n")
    config = load_config(
        [a, b],
        ["seed=5", "stopping.max_time=2.5", 'loss.name="matrix_sensing"', "metrics=['loss']"],
        base={},
    )
    assert config["seed"] == 5
    assert config["network"] == {"depth": 4, "width": 7}  # merged table by table
    assert config["stopping"] == {"max_time": 2.5}
    assert config["loss"]["name"] == "matrix_sensing"
    assert config["metrics"] == ["loss"]


def test_a_methods_table_in_a_file_replaces_the_default_methods(tmp_path):
    f = tmp_path / "m.toml"
    f.write_text("[methods.riemannian_tr]\nmetric = 'embedded'\n")
    config = load_config([f])
    assert config["methods"] == {"riemannian_tr": {"metric": "embedded"}}
    config = load_config([], ["methods.riemannian_tr.metric=embedded"])  # --set edits one method
    assert set(config["methods"]) == set(DEFAULT_CONFIG["methods"])
    assert config["methods"]["riemannian_tr"] == {"metric": "embedded"}


def test_parse_override_reads_toml_values_and_falls_back_to_strings():
    assert parse_override("a.b=3") == {"a": {"b": 3}}
    assert parse_override("a=1e-3") == {"a": 1e-3}
    assert parse_override("a=true") == {"a": True}
    assert parse_override("a=[1, 2]") == {"a": [1, 2]}
    assert parse_override("a=dense") == {"a": "dense"}
    with pytest.raises(ConfigError, match="^--set: expected key=value"):
        parse_override("novalue")


def test_missing_or_broken_config_file_names_it(tmp_path):
    with pytest.raises(ConfigError, match="no such config file"):
        load_config([tmp_path / "nope.toml"])
    bad = tmp_path / "bad.toml"
    bad.write_text("seed = = 1\n")
    with pytest.raises(ConfigError, match="bad.toml: invalid TOML"):
        load_config([bad])


# ------------------------------------------------------------------ validation
@pytest.mark.parametrize(
    "override, key, words",
    [
        ("bogus=1", "bogus", "unknown key"),
        ("network.dpth=3", "network.dpth", "unknown key"),
        ("stopping.loss_bellow=1e-3", "stopping.loss_bellow", "unknown key"),
        ('network.depth="3"', "network.depth", "must be an integer"),
        ("seed=1.5", "seed", "must be an integer"),
        ("stopping.max_time=-1.0", "stopping.max_time", "non-negative"),
        ("rank=500", "rank", "narrowest width"),
        ("methods.overparametrized_gd.step=-0.1", "methods.overparametrized_gd.step", "positive"),
        ("methods.overparametrized_gd.step=0", "methods.overparametrized_gd.step", "positive"),
        ('loss.name="matrix_complet"', "loss.name", "did you mean 'matrix_completion'"),
        ('init.sampler="gausian"', "init.sampler", "did you mean 'gaussian'"),
        ('metrics=["effective_rnk"]', "metrics.effective_rnk", "did you mean 'effective_rank'"),
        (
            'methods.riemannian_tr.solver="riemannian_trr"',
            "methods.riemannian_tr.solver",
            "did you mean",
        ),
        ('methods.riemann_cg.metric="dln"', "methods.riemann_cg", "unknown solver"),
        ('methods.riemannian_cg.metrik="dln"', "methods.riemannian_cg.metrik", "unknown option"),
        (
            'methods.riemannian_cg.metric="flat"',
            "methods.riemannian_cg.metric",
            "metric must be one of",
        ),
        ("observations.size=-5", "observations.size", ""),
        ("init.init_scale=-1.0", "init.init_scale", ""),
        ("threads=-1", "threads", "must be >= 0"),
    ],
)
def test_bad_config_is_one_line_naming_the_key(override, key, words):
    config = load_config([], [override])
    with pytest.raises(ConfigError) as info:
        build(config)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{key}:"), message
    assert words in message


def test_rank_above_narrowest_width_with_dims():
    config = load_config([], ["network.dims=[100, 4, 4, 100]", "rank=5"])  # default depth 3 agrees
    with pytest.raises(
        ConfigError,
        match=r"^rank: 5 must be between 1 and the narrowest width 4 of dims \[100, 4, 4, 100\]$",
    ):
        validate_config(config)
    config = load_config([], ["network.dims=[100, 4, 100]"])
    with pytest.raises(
        ConfigError,
        match=r"^network.depth: 3 does not match network.dims \[100, 4, 100\] \(depth 2\)$",
    ):
        validate_config(config)


def test_dims_must_match_the_problem_shape():
    config = load_config([], ["network.dims=[90, 100, 100]"])
    del config["network"]["depth"]
    with pytest.raises(
        ConfigError, match="^network.dims: output and input widths 100, 90 do not match"
    ):
        validate_config(config)


# ------------------------------------------------------------------ compare
def test_same_start_and_exact_gap_alignment_and_records():
    comparison = compare(tiny())
    assert list(comparison.records) == [
        "overparametrized_gd",
        "intrinsic_flow",
        "riemannian_cg",
        "riemannian_tr",
    ]
    for label, record in comparison.records.items():
        assert record.stop_reason == "loss_below", (label, record.stop_reason)
        assert record.final_loss <= 1e-5
        assert record.n_iterations > 0 and record.wall_time_s > 0
    (gap,) = comparison.trajectory_gap
    assert (gap["overparametrized"], gap["intrinsic"]) == ("overparametrized_gd", "intrinsic_flow")
    assert gap["alignment"] == "exact"  # the flow was sampled at GD's flow times
    assert gap["time"][0] == 0.0 and gap["gap"][0] == 0.0  # exactly the same end-to-end start
    gd_times = comparison.records["overparametrized_gd"].times
    assert gap["time"] == [
        t for t in gd_times if t <= comparison.records["intrinsic_flow"].times[-1] * (1 + 1e-9)
    ]
    # The initial loss is the same for every method that starts at phi(W(0)).
    initial = comparison.problem["initial_loss"]
    for label in ("overparametrized_gd", "intrinsic_flow"):
        assert comparison.records[label].metrics["loss"][0] == pytest.approx(initial, rel=1e-12)
    document = comparison.to_dict()
    check_results(document)
    json.dumps(document, allow_nan=False)
    assert document["methods"]["riemannian_tr"]["time_kind"] == "iteration"
    assert document["methods"]["overparametrized_gd"]["time_kind"] == "flow"
    walls = document["methods"]["overparametrized_gd"]["metrics"]["wall_time"]
    assert len(walls) == len(gd_times) and all(np.diff(walls) >= 0)


def test_balanced_start_gd_tracks_the_flow_with_gap_of_order_step():
    """From a balanced start the intrinsic flow is the end-to-end curve of the factor flow
    (docs/math.md §3), so factor GD with step eta is O(eta) away from it: halving eta halves the gap."""

    def run(step: float) -> float:
        config = tiny(
            init={"sampler": "balanced", "init_scale": 0.5},
            stopping={"end_time": 4.0, "loss_below": 0.0, "max_iterations": 10**6},
        )
        config["methods"] = {
            "overparametrized_gd": {"step": step, "record_every": int(round(0.25 / step))},
            "intrinsic_flow": {"representation": "dense", "rtol": 1e-11, "atol": 1e-13},
        }
        (gap,) = compare(config).trajectory_gap
        # the last recorded time is end_time to the rounding of i * step (or of t_bound)
        assert gap["alignment"] == "exact" and gap["time"][-1] == pytest.approx(4.0, rel=1e-12)
        return max(gap["gap"])

    g1, g2 = run(0.01), run(0.005)
    assert 1e-6 < g2 < g1 < 1e-1
    # GD's global error C eta + D eta^2: g1 / g2 = 2 (1 + (D / 2C) eta); the window allows
    # |D / C| eta <= 0.04 at eta = 0.01. The flow's error (rtol 1e-11) and rounding move it < 1e-6.
    assert g1 / g2 == pytest.approx(2.0, rel=0.02)


def test_diverging_method_is_reported_and_the_others_finish(tmp_path):
    config = tiny()
    config["methods"] = {
        "overparametrized_gd": {"step": 1e4},
        "intrinsic_flow": {"representation": "dense"},
        "riemannian_tr": {},
    }
    comparison = compare(config)
    assert comparison.records["overparametrized_gd"].stop_reason == "diverged"
    assert comparison.records["riemannian_tr"].stop_reason == "loss_below"
    flow = comparison.records["intrinsic_flow"]
    assert flow.stop_reason == "loss_below"
    assert len(flow.times) > 20  # its own sampling, not the diverged partner's few times
    paths = comparison.write(tmp_path)
    document = json.loads((tmp_path / "results.json").read_text())
    check_results(document)
    assert document["methods"]["overparametrized_gd"]["stop_reason"] == "diverged"
    assert all(p.stat().st_size > 0 for p in paths)
    assert "diverged" in comparison.table()


def test_same_seed_same_bits_and_seed_changes_the_problem():
    config = tiny()
    config["methods"] = {"overparametrized_gd": {"step": 1.0, "record_every": 10}}
    a, b = compare(config), compare(config)
    assert (
        a.records["overparametrized_gd"].metrics["loss"]
        == b.records["overparametrized_gd"].metrics["loss"]
    )
    c = compare(merge_config(config, {"seed": 1}))
    assert c.problem["initial_loss"] != a.problem["initial_loss"]


def test_trajectory_gap_exact_and_interpolated():
    rng = np.random.default_rng(0)
    A, B = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    X = lambda t: A + t * B  # linear in t: linear interpolation is exact  # noqa: E731
    over_t = [0.0, 0.5, 1.0, 1.5, 3.0]
    over_p = [X(t) + (t * 1e-3) * A for t in over_t]
    exact = trajectory_gap(
        over_t, over_p, [0.0, 0.5, 1.0, 1.5, 2.0], [X(t) for t in [0.0, 0.5, 1.0, 1.5, 2.0]]
    )
    assert exact["alignment"] == "exact" and exact["time"] == [
        0.0,
        0.5,
        1.0,
        1.5,
    ]  # 3.0 is past the flow's end
    expected = [np.linalg.norm(t * 1e-3 * A) / np.linalg.norm(X(t)) for t in exact["time"]]
    np.testing.assert_allclose(exact["gap"], expected, rtol=1e-12)
    interp = trajectory_gap(
        over_t, over_p, [0.0, 0.4, 1.2, 2.0], [X(t) for t in [0.0, 0.4, 1.2, 2.0]]
    )
    assert interp["alignment"] == "interpolated"
    np.testing.assert_allclose(interp["gap"], expected, rtol=1e-9)


def test_results_writer_rejects_a_bad_document_and_writes_strict_json(tmp_path):
    comparison = compare(tiny(methods={"riemannian_tr": {}}) | {"methods": {"riemannian_tr": {}}})
    document = comparison.to_dict()
    bad = json.loads(json.dumps(document))
    del bad["methods"]["riemannian_tr"]["stop_reason"]
    with pytest.raises(ValueError, match="^results methods.riemannian_tr.stop_reason: is missing"):
        write_results(bad, tmp_path / "r.json")
    document["methods"]["riemannian_tr"]["metrics"]["loss"][-1] = float("nan")
    path = write_results(document, tmp_path / "r.json")
    assert json.loads(path.read_text())["methods"]["riemannian_tr"]["metrics"]["loss"][-1] is None


def test_compare_is_exported_lazily_and_accepts_a_toml_path(tmp_path):
    assert dlngeo.compare is compare
    f = tmp_path / "c.toml"
    f.write_text(
        """
seed = 3
[problem]
shape = [6, 5]
[target]
sampler = "low_rank_target"
rank = 2
[loss]
name = "regression"
[network]
depth = 2
[init]
sampler = "gaussian"
init_scale = 0.1
[stopping]
loss_below = 1e-10
[methods.riemannian_tr]
"""
    )
    comparison = dlngeo.compare(f)
    assert comparison.records["riemannian_tr"].stop_reason == "loss_below"
    assert comparison.problem["dims"] == [5, 6, 6]  # n, width max(m, n), m
    assert math.isfinite(comparison.problem["initial_loss"])


def test_results_store_round_trip_and_queries(tmp_path):
    from dlngeo.results import ResultsStore

    config = tiny()
    config["methods"] = {
        "riemannian_tr": {},
        "cg": {"solver": "riemannian_cg", "metric": "embedded"},
    }
    first = compare(config).to_dict()
    second = compare(merge_config(config, {"seed": 4})).to_dict()
    path = tmp_path / "store.sqlite"
    with ResultsStore(path) as store:
        a, b = store.add(first), store.add(second)
    with ResultsStore(path) as store:  # persisted
        assert [r["id"] for r in store.runs()] == [a, b]
        assert [r["seed"] for r in store.runs()] == [0, 4]
        assert store.get(b) == json.loads(json.dumps(second))
        rows = store.methods(solver="riemannian_cg")
        assert [(r["run_id"], r["label"]) for r in rows] == [(a, "cg"), (b, "cg")]
        assert rows[0]["final_loss"] == first["methods"]["cg"]["final_loss"]
        assert {r["stop_reason"] for r in store.methods(run_id=a)} == {"loss_below"}
        with pytest.raises(ValueError, match="^run_id 99 is not in"):
            store.get(99)
        bad = json.loads(json.dumps(first))
        bad["methods"]["cg"]["iterations"] = "many"
        with pytest.raises(ValueError, match="^results methods.cg.iterations: has type str"):
            store.add(bad)
        assert len(store.runs()) == 2  # nothing half-written


def test_spectral_init_sees_the_observations_not_the_hidden_target():
    """Completion: the spectral start comes from the rescaled observed matrix (the target is hidden);
    whitened regression: the target is the data, so the spectral start is aligned with it."""
    completion = build(tiny(init={"sampler": "spectral", "init_scale": 1e-2, "rank": 2})).task
    target = completion.data["target"]
    u_t = np.linalg.svd(target)[0][:, :2]
    X0 = completion.X0
    u0 = np.linalg.svd(X0)[0][:, :2]
    observed = completion.loss.observed_matrix().toarray()
    u_obs = np.linalg.svd(observed)[0][:, :2]
    # From the observations: the same subspace, cos of the largest principal angle = 1 up to
    # rounding (two SVDs: an angle ~ eps |M| / (s_2 - s_3), cos - 1 ~ its square, plus eps).
    assert np.linalg.svd(u_obs.T @ u0, compute_uv=False).min() == pytest.approx(1.0, abs=1e-12)
    # Not the target's directions: the claim is an angle above 8 degrees (cos < 0.99).
    assert np.linalg.svd(u_t.T @ u0, compute_uv=False).min() < 1 - 1e-2
    config = tiny(
        init={"sampler": "spectral", "init_scale": 1e-2, "rank": 2}, loss={"name": "regression"}
    )
    del config["observations"]
    regression = build(config).task
    u_t = np.linalg.svd(regression.data["target"])[0][:, :2]
    u0 = np.linalg.svd(regression.X0)[0][:, :2]
    assert np.linalg.svd(u_t.T @ u0, compute_uv=False).min() == pytest.approx(1.0, abs=1e-9)
