"""Methods declare what they are and losses declare their data; ``dlngeo run`` asks, never names.

A third-party solver that subclasses a built-in flow is a side of a default
trajectory gap; a third-party loss with new data is one plugin module (its
loss and its problem function, ``dlngeo_register_problems``).
"""

import json
import textwrap
import uuid

import numpy as np
import pytest

import dlngeo
from dlngeo import plugins
from dlngeo.cli import main
from dlngeo.dynamics.base import Method
from dlngeo.experiment import ConfigError, build, load_config
from dlngeo.hookspecs import hookimpl
from dlngeo.lowrank import entries
from dlngeo.problems import LossData

# a fresh plugin manager per test (tests/conftest.py), dropping these test modules after
TEST_PLUGIN_PREFIXES = ("dlngeo_testcap_",)
pytestmark = pytest.mark.usefixtures("fresh_plugins")


def _module(tmp_path, monkeypatch, source):
    name = f"dlngeo_testcap_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


# ------------------------------------------------------------------ capabilities
def test_builtin_methods_declare_their_capabilities():
    expected = {  # solver -> (flow_time, follows, samples_at_times, step_option)
        "overparametrized_gd": (True, "overparametrized", False, "step"),
        "group_rmsprop": (True, "overparametrized", False, "lr"),
        "overparametrized_flow": (True, "overparametrized", True, None),
        "intrinsic_flow": (True, "intrinsic", True, None),
        "riemannian_gd": (True, "intrinsic", False, "step"),
        "riemannian_sd": (True, None, False, None),
        "riemannian_cg": (False, None, False, None),
        "riemannian_tr": (False, None, False, None),
        "riemannian_langevin": (True, None, False, "step"),
        "riemannian_mala": (True, None, False, "step"),
        "overparametrized_langevin": (True, None, False, "step"),
    }
    for name, capabilities in expected.items():
        method = dlngeo.create_solver(name)
        found = (method.flow_time, method.follows, method.samples_at_times, method.step_option)
        assert found == capabilities, name
    assert (Method.flow_time, Method.follows, Method.samples_at_times, Method.step_option) == (
        True,
        None,
        False,
        None,
    )


SUBCLASS_PLUGIN = """
    import dlngeo
    from dlngeo.dynamics.intrinsic import IntrinsicFlow


    class MyFlow(IntrinsicFlow):
        '''The intrinsic flow, as a third-party package would ship it.'''

        name = "my_flow"

        def run(self, task, stopping=None, callback=None):
            record = super().run(task, stopping, callback)
            record.info["third_party"] = True
            return record


    @dlngeo.hookimpl
    def dlngeo_register_solvers(register):
        register("my_flow", MyFlow)
"""


def test_a_third_party_subclass_of_a_builtin_flow_is_a_default_gap_side(
    tmp_path, monkeypatch, capsys
):
    """``dlngeo run -p module``: the subclass inherits follows = "intrinsic" and
    samples_at_times, so it is paired with the factor flow and sampled exactly at its times."""
    module = _module(tmp_path, monkeypatch, SUBCLASS_PLUGIN)
    rtol = 1e-10
    (tmp_path / "run.toml").write_text(
        textwrap.dedent(
            f"""
            seed = 1
            [problem]
            shape = [5, 4]
            [target]
            sampler = "low_rank_target"
            rank = 2
            [loss]
            name = "regression"
            [network]
            depth = 3
            [init]
            sampler = "balanced"
            init_scale = 0.5
            [stopping]
            end_time = 2.0
            loss_below = 0.0
            [methods.overparametrized_flow]
            rtol = {rtol}
            atol = 1e-12
            record_every = 5
            [methods.my_flow]
            representation = "dense"
            rtol = {rtol}
            atol = 1e-12
            """
        )
    )
    out = tmp_path / "out"
    argv = ["run", str(tmp_path / "run.toml"), "-p", module, "--out", str(out), "--no-progress"]
    assert main(argv) == 0, capsys.readouterr().err
    document = json.loads((out / "results.json").read_text())
    assert document["methods"]["my_flow"]["info"]["third_party"] is True
    (gap,) = document["trajectory_gap"]
    assert (gap["overparametrized"], gap["intrinsic"]) == ("overparametrized_flow", "my_flow")
    assert gap["alignment"] == "exact"  # my_flow was rebuilt with the factor flow's times
    times = document["methods"]["overparametrized_flow"]["metrics"]["time"]
    assert gap["time"] == times and gap["gap"][0] == 0.0
    # From a balanced start the two flows are one curve (docs/math.md §3): the gap is the two
    # integrators' global errors, each with local error control rtol; as in the README's run,
    # 1e4 * rtol allows the problem's error amplification over t in [0, 2].
    assert max(gap["gap"]) <= 1e4 * rtol


def test_a_third_party_flow_gets_the_flows_default_stop_wording_from_its_capabilities(
    tmp_path, monkeypatch, capsys
):
    """The stationary default of ``dlngeo plugins`` and of option errors is read from the class
    (``rtol_option``, ``stops_stationary``), not from a list of names."""
    from dlngeo.dynamics.base import stationary_default_text

    module = _module(tmp_path, monkeypatch, SUBCLASS_PLUGIN)
    assert main(["plugins", "--kind", "solver", "--json", "-p", module]) == 0
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    flow_text, plain_text = stationary_default_text(flow=True), stationary_default_text()
    assert rows["my_flow"]["description"].endswith(flow_text)  # inherited rtol_option
    assert rows["intrinsic_flow"]["description"].endswith(flow_text)
    assert rows["overparametrized_gd"]["description"].endswith(plain_text)
    for sampler in ("riemannian_langevin", "riemannian_mala", "overparametrized_langevin"):
        assert "stationary" not in rows[sampler]["description"]  # stops_stationary = False
    with pytest.raises(ValueError, match="at least 100 x the integrator's rtol"):
        dlngeo.create_solver("my_flow", rtool=1e-8)


def test_a_method_that_declares_nothing_is_no_default_gap_side_and_its_step_option_is_checked(
    tmp_path, monkeypatch
):
    module = _module(
        tmp_path,
        monkeypatch,
        """
        import dlngeo
        from dlngeo.dynamics.base import Method


        class Plain(Method):
            name = "plain"

            def __init__(self, lr: float = 0.1):
                self.lr = lr


        class Stepped(Plain):
            name = "stepped"
            step_option = "lr"


        @dlngeo.hookimpl
        def dlngeo_register_solvers(register):
            register("plain", Plain)
            register("stepped", Stepped)
        """,
    )
    base = ["loss.name='regression'", "problem.shape=[4, 4]", "network.depth=2", "target.rank=2"]
    config = load_config([], [*base, f"plugins=['{module}']"])
    config["methods"] = {"overparametrized_gd": {}, "plain": {"lr": -1.0}}
    config.pop("observations")
    plan = build(config)  # plain declares no step option: its lr is its own business
    assert plan.gap_pairs == []  # and it follows no flow
    config["methods"] = {"stepped": {"lr": -1.0}}
    with pytest.raises(ConfigError, match=r"^methods\.stepped\.lr: must be a positive step size"):
        build(config)


# ------------------------------------------------------------------ problems
NOISY_PLUGIN = """
    import dlngeo
    from dlngeo.losses import check_observations
    from dlngeo.lowrank import entries
    from dlngeo.problems import LossData


    class NoisyCompletion(dlngeo.Loss):
        '''Squared error on observed entries of M* + sigma * noise.'''

        def __init__(self, rows, cols, values, shape):
            self.rows, self.cols, self.values, self.shape = check_observations(
                rows, cols, values, shape
            )

        def value(self, X):
            return 0.5 * float(((entries(X, self.rows, self.cols) - self.values) ** 2).sum())


    def noisy_entries(problem):
        problem.require("target", "observations")
        rows, cols = problem.sample("observations")
        noise = problem.rng.standard_normal(len(rows))
        values = entries(problem.target, rows, cols) + problem.table("data.sigma") * noise
        return LossData(
            options={"rows": rows, "cols": cols, "values": values, "shape": problem.shape},
            data={"rows": rows, "cols": cols, "noise": noise},
        )


    @dlngeo.hookimpl
    def dlngeo_register_losses(register):
        register("noisy_completion", NoisyCompletion)


    @dlngeo.hookimpl
    def dlngeo_register_problems(register):
        register("noisy_completion", noisy_entries, description="noisy observed entries")
"""


def test_hook_dlngeo_register_problems(tmp_path, monkeypatch):
    """A loss with new data is one module: its problem function draws from the run's generator
    after the target and the observations, before the initial factors (same seed, same data)."""
    module = _module(tmp_path, monkeypatch, NOISY_PLUGIN)
    overrides = [f"plugins=['{module}']", "loss.name='noisy_completion'", "data.sigma=0.25"]
    config = load_config([], [*overrides, "problem.shape=[8, 6]", "target.rank=2"])
    config["observations"]["size"] = 30
    plan = build(config)
    loss, data = plan.task.loss, plan.task.data
    assert set(data) == {"target", "rows", "cols", "noise"}
    rng = np.random.default_rng(config["seed"])
    target = dlngeo.create_sampler("low_rank_target", shape=[8, 6], rank=2).sample(rng)
    rows, cols = dlngeo.create_sampler("uniform_mask", shape=[8, 6], size=30).sample(rng)
    noise = rng.standard_normal(30)
    weights = dlngeo.create_sampler("gaussian", init_scale=1e-3).sample(
        rng, network=plan.task.network
    )
    assert np.array_equal(loss.rows, rows) and np.array_equal(loss.cols, cols)
    assert np.array_equal(loss.values, entries(target, rows, cols) + 0.25 * noise)
    assert all(np.array_equal(a, b) for a, b in zip(plan.task.weights0, weights))
    assert dlngeo.available("problem")["noisy_completion"][0] == module
    rows_listed = [r for r in plugins.plugin_rows() if r["kind"] == "problem"]
    assert {r["name"] for r in rows_listed} >= {
        "matrix_completion",
        "matrix_sensing",
        "regression",
        "lp_regression",
        "noisy_completion",
    }
    assert all(r["options"] == [] for r in rows_listed)


def test_a_problem_function_errors_name_the_config_key(tmp_path, monkeypatch):
    module = _module(tmp_path, monkeypatch, NOISY_PLUGIN)
    overrides = [f"plugins=['{module}']", "loss.name='noisy_completion'", "data.sigma=0.25"]
    config = load_config([], overrides)
    del config["observations"]
    with pytest.raises(ConfigError, match="^observations: is required by loss 'noisy_completion'"):
        build(config)
    # the built-in problem functions and a loss without one take no [data]
    config = load_config([], ["data.sigma=0.25"])
    with pytest.raises(ConfigError, match="^data: loss 'matrix_completion' takes no data$"):
        build(config)

    class Bare:
        @hookimpl
        def dlngeo_register_losses(self, register):
            register("bare_quadratic", lambda: dlngeo.loss_from_autograd(lambda X: (X**2).sum()))

    plugins.register_plugin(Bare(), name="bare")
    config["loss"] = {"name": "bare_quadratic"}
    with pytest.raises(ConfigError, match="^observations: loss 'bare_quadratic' takes no obs"):
        build(config)
    del config["observations"]
    with pytest.raises(ConfigError, match="^data: loss 'bare_quadratic' takes no data$"):
        build(config)
    del config["data"]
    assert set(build(config).task.data) == {"target"}  # its only data: the metrics' target


def test_a_problem_function_must_return_loss_data():
    class Plugin:
        @hookimpl
        def dlngeo_register_problems(self, register):
            register("matrix_sensing_twin", lambda problem: {"A": None})

        @hookimpl
        def dlngeo_register_losses(self, register):
            register("matrix_sensing_twin", lambda A=None: A)

    plugins.register_plugin(Plugin(), name="twin")
    config = load_config([], ["loss.name='matrix_sensing_twin'"])
    with pytest.raises(ConfigError, match="^loss.name: .* returned dict, not LossData"):
        build(config)
    assert LossData().options == {} and LossData().visible_target is None


# ------------------------------------------------------------------ sampler kinds
def test_samplers_are_initializations_data_or_markov_chains_with_one_signature_each():
    from dlngeo.samplers import DataSampler, Initialization, MarkovChain

    init = dlngeo.create_initialization("gaussian", init_scale=0.1)
    data = dlngeo.create_data_sampler("uniform_mask", shape=[4, 3], size=5)
    chain = dlngeo.create_chain("riemannian_langevin", beta=10.0)
    assert isinstance(init, Initialization) and init.kind == "initialization"
    assert isinstance(data, DataSampler) and data.kind == "data"
    assert isinstance(chain, MarkovChain) and chain.kind == "langevin"
    # the old name still builds every kind
    assert dlngeo.create_sampler("uniform_mask", shape=[4, 3], size=5).kind == "data"
    with pytest.raises(ValueError, match="^sampler 'uniform_mask' is a data sampler, not an init"):
        dlngeo.create_initialization("uniform_mask", shape=[4, 3], size=5)
    with pytest.raises(ValueError, match="^sampler 'gaussian' is an initialization, not a Markov"):
        dlngeo.create_chain("gaussian")


@pytest.mark.parametrize(
    "override, key, words",
    [
        ('init.sampler="low_rank_target"', "init.sampler", "is a data sampler, not an init"),
        ('target.sampler="gaussian"', "target.sampler", "is an initialization, not a data"),
        ('observations.sampler="balanced"', "observations.sampler", "not a data sampler"),
    ],
)
def test_a_sampler_of_the_wrong_kind_is_one_line_at_its_table(override, key, words):
    with pytest.raises(ConfigError) as info:
        build(load_config([], [override]))
    assert str(info.value).startswith(f"{key}: sampler ") and words in str(info.value)


# ------------------------------------------------------------------ same draws as before
def _draws(config, rng):
    """The documented order: [target], then the problem function's draws, then [init]."""
    shape = config["problem"]["shape"]
    t = {k: v for k, v in config["target"].items() if k != "sampler"}
    target = dlngeo.create_sampler(config["target"]["sampler"], shape=shape, **t).sample(rng)
    return target


@pytest.mark.parametrize("loss", ["matrix_completion", "matrix_sensing", "regression_inputs"])
def test_built_in_problem_functions_draw_in_the_documented_order(loss):
    """build() of the default comparison (and of sensing and regression with inputs) gives,
    bit for bit, the data and start drawn by hand in the order CONTRIBUTING documents."""
    overrides = ["problem.shape=[12, 10]", "target.rank=2", "observations.size=40"]
    if loss == "matrix_sensing":
        overrides = ["problem.shape=[6, 5]", "target.rank=2", "loss.name='matrix_sensing'"]
    if loss == "regression_inputs":
        overrides = ["problem.shape=[6, 5]", "target.rank=2", "loss.name='regression'"]
    config = load_config([], overrides)
    if loss == "matrix_sensing":
        config["observations"] = {"sampler": "gaussian_sensing", "count": 30}
    if loss == "regression_inputs":
        del config["observations"]
        config["inputs"] = {"count": 7}
    plan = build(config)
    rng = np.random.default_rng(config["seed"])
    target = _draws(config, rng)
    task_loss = plan.task.loss
    if loss == "matrix_completion":
        rows, cols = dlngeo.create_sampler("uniform_mask", shape=[12, 10], size=40).sample(rng)
        assert np.array_equal(task_loss.values, entries(target, rows, cols))
        assert np.array_equal(task_loss.rows, rows) and np.array_equal(task_loss.cols, cols)
    elif loss == "matrix_sensing":
        A = dlngeo.create_sampler("gaussian_sensing", shape=[6, 5], count=30).sample(rng)
        assert np.array_equal(task_loss.y, np.einsum("kij,ij->k", A, target))
    else:
        A = rng.standard_normal((5, 7))
        assert np.array_equal(task_loss.A, A) and np.array_equal(task_loss.B, target @ A)
    init = {k: v for k, v in config["init"].items() if k != "sampler"}
    weights = dlngeo.create_sampler(config["init"]["sampler"], **init).sample(
        rng, network=plan.task.network, loss=task_loss
    )
    assert all(np.array_equal(a, b) for a, b in zip(plan.task.weights0, weights))
    X0 = plan.task.network.product(weights)
    assert plan.problem["initial_loss"] == float(task_loss.value(X0))


def test_cli_lists_the_problem_functions_without_options(capsys):
    assert main(["plugins", "--kind", "problem"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:4] == ["KIND", "NAME", "PLUGIN", "VERSION"]
    names = {line.split()[1] for line in lines[1:]}
    assert names >= {"matrix_completion", "matrix_sensing", "regression", "lp_regression"}
    assert all(line.startswith("problem ") for line in lines[1:])  # no "options:" lines


def test_an_initialization_without_the_one_signature_is_one_line_at_init_sampler():
    class OldStyle:
        kind = "initialization"

        def sample(self, rng, network, target=None):  # no loss parameter
            return [np.zeros(s) for s in network.shapes]

    class Plugin:
        @hookimpl
        def dlngeo_register_samplers(self, register):
            register("old_style_zeros", OldStyle)

    plugins.register_plugin(Plugin(), name="old-style")
    with pytest.raises(ConfigError, match=r"^init.sampler: sampler 'old_style_zeros': .*loss"):
        build({**load_config([], []), "init": {"sampler": "old_style_zeros"}})
