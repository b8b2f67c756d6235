"""The plugin spine: entry-point loading, every hook, faults, environment controls,
the CLI table, and the third-party example plugin through the real entry-point path."""

import importlib.metadata as metadata
import inspect
import json
import os
import shutil
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib

import autograd.numpy as anp
import numpy as np
import pytest

import dlngeo
from dlngeo import plugins
from dlngeo.cli import main
from dlngeo.hookspecs import hookimpl
from dlngeo.lowrank import to_dense
from dlngeo.plugins import PluginError, PluginWarning

ROOT = Path(__file__).resolve().parents[1]
HUBER = ROOT / "examples" / "plugin_huber"


# a fresh plugin manager per test (tests/conftest.py), dropping these test modules after
TEST_PLUGIN_PREFIXES = ("dlngeo_testplug_", "dlngeo_plugin_huber")
pytestmark = pytest.mark.usefixtures("fresh_plugins")


def _unique(tag):
    return f"dlngeo_testplug_{tag}_{uuid.uuid4().hex[:8]}"


def _distribution(root, name, version, entry_points, modules):
    """A minimal installed distribution in ``root``: modules plus a ``.dist-info`` with entry points."""
    for module, source in modules.items():
        (root / f"{module}.py").write_text(textwrap.dedent(source))
    info = root / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(
        "[dlngeo]\n" + "".join(f"{k} = {v}\n" for k, v in entry_points.items())
    )


def _loss_plugin_source(loss_name, marker=""):
    return f"""
        import dlngeo

        class Toy(dlngeo.Loss):
            name = {loss_name!r}
            def value(self, X):
                return 0.0
            def gradient(self, X):
                return 0.0 * X

        @dlngeo.hookimpl
        def dlngeo_register_losses(register):
            {marker}
            register({loss_name!r}, Toy, description="a toy loss")
    """


# ------------------------------------------------------------ built-in path
def test_builtins_are_ordinary_entry_points_of_the_dlngeo_distribution():
    eps = {ep.name: ep for ep in metadata.entry_points(group="dlngeo")}
    for name in ("losses", "metrics", "samplers"):
        assert eps[name].value == f"dlngeo_plugins.{name}"
        assert eps[name].dist.metadata["Name"] == "dlngeo"
    expected = {
        "loss": ("losses", {"regression", "lp_regression", "matrix_completion", "matrix_sensing"}),
        "metric": (
            "metrics",
            {
                "loss",
                "singular_values",
                "effective_rank",
                "schatten_quasi_norm",
                "nuclear_norm",
                "imbalance",
                "layer_norms",
                "distance_to_target",
                "test_error",
            },
        ),
        "sampler": (
            "samplers",
            {
                "gaussian",
                "balanced",
                "orthogonal",
                "identity",
                "spectral",
                "low_rank_target",
                "uniform_mask",
                "gaussian_sensing",
            },
        ),
    }
    for kind, (module, names) in expected.items():
        found = dlngeo.available(kind)
        assert names <= set(found)
        for name in names:
            assert found[name] == (f"dlngeo_plugins.{module}", dlngeo.__version__)


# ------------------------------------------------------------------ hooks
def test_hook_dlngeo_register_losses():
    class Plugin:
        @hookimpl
        def dlngeo_register_losses(self, register):
            register(
                "toy_quadratic",
                lambda scale=1.0: dlngeo.loss_from_autograd(lambda X: scale * anp.sum(X**2)),
            )

    plugins.register_plugin(Plugin(), name="toy-losses", version="9.9")
    loss = dlngeo.create_loss("toy_quadratic", scale=2.0)
    X = np.arange(6.0).reshape(2, 3)
    assert loss.value(X) == 2.0 * np.sum(X**2)
    assert np.array_equal(loss.gradient(X), 4.0 * X)  # exact: small integers times 2 and 2
    assert dlngeo.available("loss")["toy_quadratic"] == ("toy-losses", "9.9")
    plugins.unregister_plugin("toy-losses")
    with pytest.raises(ValueError, match="unknown loss 'toy_quadratic'"):
        dlngeo.create_loss("toy_quadratic")


def test_hook_dlngeo_register_metrics():
    class Plugin:
        @hookimpl
        def dlngeo_register_metrics(self, register):
            register(
                "trace",
                lambda: lambda state: float(np.trace(to_dense(state.point))),
                description="trace of X",
            )

    plugins.register_plugin(Plugin(), name="toy-metrics")
    from dlngeo.state import State

    assert dlngeo.create_metric("trace")(State(point=np.diag([1.0, 2.0]))) == 3.0
    assert any(
        r["name"] == "trace" and r["description"] == "trace of X" for r in plugins.plugin_rows()
    )


def test_hook_dlngeo_register_samplers():
    class Zeros:
        kind = "initialization"

        def sample(self, rng, network, target=None, loss=None):
            return [np.zeros(s) for s in network.shapes]

    class Plugin:
        @hookimpl
        def dlngeo_register_samplers(self, register):
            register("zeros", Zeros)

    plugins.register_plugin(Plugin(), name="toy-samplers")
    net = dlngeo.DeepLinearNetwork((2, 3, 4))
    weights = dlngeo.create_sampler("zeros").sample(0, network=net)
    assert [w.shape for w in weights] == net.shapes and not any(w.any() for w in weights)


def test_hook_dlngeo_register_solvers():
    class Plugin:
        @hookimpl
        def dlngeo_register_solvers(self, register):
            register("toy_solver", lambda step=0.1: ("toy", step), description="does nothing")

    plugins.register_plugin(Plugin(), name="toy-solvers")
    assert dlngeo.create_solver("toy_solver", step=0.5) == ("toy", 0.5)
    assert dlngeo.available("solver")["toy_solver"][0] == "toy-solvers"


# ------------------------------------------------------------------ faults
def test_faulty_plugins_warn_in_one_line_and_the_rest_loads(tmp_path, monkeypatch):
    broken, raising, good = _unique("broken"), _unique("raising"), _unique("good")
    _distribution(
        tmp_path,
        "dlngeo-faulty-plugins",
        "1.2.3",
        {"broken": broken, "raising": raising, "good": good},
        {
            broken: "import numpy\nraise ImportError('this plugin needs a missing library')\n",
            raising: _loss_plugin_source(
                "never_registered", marker="raise RuntimeError('boom in the hook')"
            ),
            good: _loss_plugin_source("good_toy_loss"),
        },
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.warns(PluginWarning) as record:
        names = dlngeo.available("loss")
    messages = [str(w.message) for w in record]
    assert all("\n" not in m for m in messages)
    assert any(
        broken in m and "ImportError: this plugin needs a missing library" in m for m in messages
    )
    assert any(
        raising in m and "dlngeo_register_losses" in m and "RuntimeError: boom in the hook" in m
        for m in messages
    )
    # every other plugin still loads: the good third-party one and the built-ins
    assert names["good_toy_loss"] == (good, "1.2.3")
    assert "never_registered" not in names
    assert {"regression", "matrix_completion"} <= set(names)
    assert "effective_rank" in dlngeo.available("metric")


def test_duplicate_names_are_an_error_naming_both_plugins():
    class First:
        @hookimpl
        def dlngeo_register_losses(self, register):
            register("shared_name", lambda: "first")
            register("only_first", lambda: "first")

    class Second:
        @hookimpl
        def dlngeo_register_losses(self, register):
            register("shared_name", lambda: "second")
            register("regression", lambda: "shadow")

    plugins.register_plugin(First(), name="plugin-one", version="1.0")
    plugins.register_plugin(Second(), name="plugin-two", version="2.0")
    with pytest.raises(
        PluginError,
        match="loss 'shared_name'.*'plugin-one' \\(1.0\\).*'plugin-two' \\(2.0\\)|loss 'shared_name'.*'plugin-two' \\(2.0\\).*'plugin-one' \\(1.0\\)",
    ):
        dlngeo.create_loss("shared_name")
    with pytest.raises(
        PluginError, match="dlngeo_plugins.losses.*plugin-two|plugin-two.*dlngeo_plugins.losses"
    ):
        dlngeo.create_loss("regression")
    assert dlngeo.create_loss("only_first") == "first"  # the rest works
    assert "matrix_completion" in dlngeo.available("loss")
    conflicts = [r for r in plugins.plugin_rows() if r["name"] == "shared_name"]
    assert len(conflicts) == 2 and all(r["description"].startswith("CONFLICT") for r in conflicts)


def test_unknown_names_list_close_matches():
    with pytest.raises(ValueError, match="unknown loss 'regresion'; did you mean 'regression'"):
        dlngeo.create_loss("regresion")
    with pytest.raises(ValueError, match="did you mean 'effective_rank'"):
        dlngeo.create_metric("efective_rank")
    with pytest.raises(ValueError, match=r"unknown sampler 'qwerty' \(available: balanced, "):
        dlngeo.create_sampler("qwerty")
    with pytest.raises(ValueError, match="kind must be one of"):
        dlngeo.available("optimizer")


def test_a_hook_registering_garbage_is_reported_not_raised():
    class Bad:
        @hookimpl
        def dlngeo_register_metrics(self, register):
            register("not a name!", lambda: None)

    plugins.register_plugin(Bad(), name="bad-names")
    with pytest.warns(PluginWarning, match="bad-names.*metric name must be"):
        found = dlngeo.available("metric")
    assert "loss" in found


# ----------------------------------------------------- environment controls
def test_disable_autoload_keeps_builtins_and_load_plugin_module_adds_one(tmp_path, monkeypatch):
    good = _unique("good")
    _distribution(
        tmp_path, "dlngeo-toy", "0.3", {"toy": good}, {good: _loss_plugin_source("toy_autoloaded")}
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("DLNGEO_DISABLE_PLUGIN_AUTOLOAD", "1")
    names = dlngeo.available("loss")
    assert "toy_autoloaded" not in names and "regression" in names
    module = plugins.load_plugin_module(good)
    assert plugins.load_plugin_module(good) is module  # loading twice is a no-op
    assert dlngeo.available("loss")["toy_autoloaded"][0] == good
    plugins.reset_plugins()
    monkeypatch.delenv("DLNGEO_DISABLE_PLUGIN_AUTOLOAD")
    assert dlngeo.available("loss")["toy_autoloaded"] == (good, "0.3")


def test_dlngeo_plugins_environment_variable(tmp_path, monkeypatch):
    extra = _unique("extra")
    (tmp_path / f"{extra}.py").write_text(textwrap.dedent(_loss_plugin_source("from_env")))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("DLNGEO_PLUGINS", f"{extra}, dlngeo_testplug_missing_module")
    with pytest.warns(PluginWarning, match="dlngeo_testplug_missing_module"):
        names = dlngeo.available("loss")
    assert names["from_env"][0] == extra


def test_load_plugin_module_bad_names():
    with pytest.raises(
        ValueError,
        match="plugin module 'dlngeo_testplug_nope' could not be imported: ModuleNotFoundError",
    ):
        plugins.load_plugin_module("dlngeo_testplug_nope")
    with pytest.raises(ValueError, match="plugin module name"):
        plugins.load_plugin_module("")


# ---------------------------------------------------------------------- CLI
def test_cli_plugins_lists_every_kind_with_plugin_and_version(capsys):
    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split()[:4] == ["KIND", "NAME", "PLUGIN", "VERSION"]
    for kind in ("loss", "metric", "sampler"):
        for name, (plugin, version) in dlngeo.available(kind).items():
            assert any(line.split()[:4] == [kind, name, plugin, version] for line in lines), (
                kind,
                name,
            )


def test_cli_loads_a_module_with_p_and_rejects_bad_input(tmp_path, monkeypatch, capsys):
    extra = _unique("cli")
    (tmp_path / f"{extra}.py").write_text(textwrap.dedent(_loss_plugin_source("cli_toy")))
    monkeypatch.syspath_prepend(str(tmp_path))
    assert main(["-p", extra, "plugins", "--kind", "loss"]) == 0
    out = capsys.readouterr().out
    assert any(line.split()[:3] == ["loss", "cli_toy", extra] for line in out.splitlines())
    rows = [line for line in out.splitlines() if not line.startswith(" ")]  # not option lines
    assert all(line.split()[0] in ("KIND", "loss") for line in rows)
    for argv, message in (
        (
            ["-p", "dlngeo_testplug_nope", "plugins"],
            "dlngeo: error: plugin module 'dlngeo_testplug_nope' could not be imported",
        ),
        (["plugins", "--kind", "optimizer"], "dlngeo: error: "),
        (["no-such-command"], "dlngeo: error: "),
        ([], "dlngeo: error: a command is required"),
    ):
        assert main(argv) == 2
        errors = [line for line in capsys.readouterr().err.splitlines() if "warning" not in line]
        assert len(errors) == 1 and errors[0].startswith(message), errors


def test_cli_runs_as_a_program():
    result = subprocess.run(
        [sys.executable, "-m", "dlngeo.cli", "plugins", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert '"name": "matrix_completion"' in result.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "dlngeo.cli", "plugins", "--kind", "x"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and "Traceback" not in bad.stderr


# ------------------------------------------------------- options of factories
# One misspelt option per kind, through the Python API: (kind, name, options, misspelt, meant).
_OPTION_TYPOS = [
    ("loss", "regression", {"targt": np.eye(2)}, "targt", "target"),
    ("metric", "singular_values", {"kk": 2}, "kk", "k"),
    ("sampler", "gaussian", {"init_scal": 1.0}, "init_scal", "init_scale"),
    ("solver", "overparametrized_gd", {"stepp": 0.1}, "stepp", "step"),
]


@pytest.mark.parametrize("kind, name, options, typo, meant", _OPTION_TYPOS)
def test_option_typos_get_did_you_mean_and_the_valid_options(kind, name, options, typo, meant):
    with pytest.raises(ValueError) as info:
        plugins.create(kind, name, **options)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(
        f"unknown option {typo!r} of {kind} {name!r}; did you mean {meant!r}?"
    )
    listed = message.split("(options: ", 1)[1].rstrip(")").split(", ")
    assert meant in listed and typo not in listed


def test_loss_option_errors_are_value_errors_not_raw_type_errors():
    with pytest.raises(ValueError, match=r"did you mean 'normalization'\?"):
        dlngeo.create_loss(
            "matrix_completion", rows=[0], cols=[0], values=[1.0], shape=(2, 2), normalisation="sum"
        )
    with pytest.raises(ValueError, match=r"^option 'rows' is required by loss 'matrix_completion'"):
        dlngeo.create_loss("matrix_completion")


def _signature_defaults(cls):
    params = inspect.signature(cls).parameters.values()
    return {p.name: (None if p.default is p.empty else p.default) for p in params}


def test_plugin_rows_list_each_factorys_options_from_its_signature():
    from dlngeo_plugins.solvers import SOLVERS

    from dlngeo.dynamics.overparametrized import OverparametrizedGD

    rows = {(r["kind"], r["name"]): r for r in plugins.plugin_rows()}
    for row in rows.values():
        for option in row["options"]:
            assert set(option) == {"name", "type", "default", "required", "default_text"}
    # Solvers: exactly the names their factories accept, with the class's defaults.
    for name, (_, accepted, _) in SOLVERS.items():
        assert [o["name"] for o in rows["solver", name]["options"]] == list(accepted), name
    gd = {o["name"]: o for o in rows["solver", "overparametrized_gd"]["options"]}
    defaults = _signature_defaults(OverparametrizedGD)
    assert gd["step"]["type"] == "float" and gd["step"]["default"] == defaults["step"]
    assert gd["record_every"]["default"] == defaults["record_every"]
    completion = {o["name"]: o for o in rows["loss", "matrix_completion"]["options"]}
    MatrixCompletion = plugins.lookup("loss", "matrix_completion").factory  # by entry point
    assert list(completion) == list(_signature_defaults(MatrixCompletion))
    assert completion["rows"]["required"] and not completion["normalization"]["required"]
    assert completion["normalization"]["default"] == "mean"


def test_a_third_party_dataclass_factory_lists_its_fields_and_kwargs_factories_accept_anything():
    import dataclasses

    @dataclasses.dataclass
    class Scaled:
        scale: float = 2.0
        label: str = "x"

        def __call__(self, state):
            return self.scale

    def open_factory(base: int = 1, **extra):
        return lambda state: base

    class Plugin:
        @hookimpl
        def dlngeo_register_metrics(self, register):
            register("scaled_metric", Scaled)
            register("open_metric", open_factory)

    plugins.register_plugin(Plugin(), name=_unique("options"))
    rows = {r["name"]: r for r in plugins.plugin_rows() if r["kind"] == "metric"}
    assert rows["scaled_metric"]["options"] == [
        {
            "name": "scale",
            "type": "float",
            "default": 2.0,
            "required": False,
            "default_text": "2.0",
        },
        {"name": "label", "type": "str", "default": "x", "required": False, "default_text": "'x'"},
    ]
    with pytest.raises(ValueError, match="did you mean 'scale'"):
        dlngeo.create_metric("scaled_metric", scal=3.0)
    assert dlngeo.create_metric("scaled_metric", scale=3.0)(None) == 3.0
    assert dlngeo.create_metric("open_metric", anything=1)(None) == 1  # **extra: not checked


def test_cli_plugins_shows_each_factorys_options_with_type_and_default(capsys):
    assert main(["plugins", "--kind", "solver"]) == 0
    out = capsys.readouterr().out
    blocks, current = {}, None
    for line in out.splitlines()[1:]:
        if line.startswith(" "):
            blocks[current] += " " + line.strip()
        else:
            current = line.split()[1]
            blocks[current] = ""
    assert set(blocks) == set(dlngeo.available("solver"))
    assert "options: step: float = 0.01," in blocks["overparametrized_gd"]
    assert "max_step: float = inf" in blocks["intrinsic_flow"]
    assert "metric: str = 'dln'" in blocks["riemannian_tr"]
    for kind in ("loss", "metric", "sampler"):
        assert main(["plugins", "--kind", kind]) == 0
        lines = capsys.readouterr().out.splitlines()
        names = [line.split()[1] for line in lines[1:] if not line.startswith(" ")]
        options = [line for line in lines if line.startswith("    options: ")]
        assert len(options) == len(names) == len(dlngeo.available(kind)), kind
    assert main(["plugins", "--kind", "loss"]) == 0
    assert "rows: Any (required)" in capsys.readouterr().out


def test_cli_plugins_json_has_the_options(capsys):
    assert main(["plugins", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["kind"] for r in rows} == set(plugins.KINDS)
    tr = next(r for r in rows if r["name"] == "riemannian_tr")
    assert {
        "name": "min_inner",
        "type": "int",
        "default": 1,
        "required": False,
        "default_text": "1",
    } in tr["options"]


def test_readme_plugins_sample_is_what_the_cli_prints(capsys):
    """The README shows `dlngeo plugins --kind solver` output; each shown line is printed."""
    readme = (ROOT / "README.md").read_text()
    block = readme.split("$ dlngeo plugins --kind solver\n", 1)[1].split("```", 1)[0]
    shown = [line.rstrip() for line in block.splitlines() if line.strip() and "…" not in line]
    assert len(shown) >= 3
    assert main(["plugins", "--kind", "solver"]) == 0
    printed = [line.rstrip() for line in capsys.readouterr().out.splitlines()]
    for line in shown:
        assert " ".join(line.split()) in {" ".join(p.split()) for p in printed}, line


def test_p_is_accepted_after_the_subcommand(tmp_path, monkeypatch, capsys):
    extra = _unique("after")
    (tmp_path / f"{extra}.py").write_text(textwrap.dedent(_loss_plugin_source("after_toy")))
    monkeypatch.syspath_prepend(str(tmp_path))
    assert main(["plugins", "-p", extra, "--kind", "loss"]) == 0
    assert any(
        line.split()[:2] == ["loss", "after_toy"] for line in capsys.readouterr().out.splitlines()
    )
    for argv in (
        ["compare", "-p", "dlngeo_testplug_nope"],
        ["run", "x.toml", "--plugin", "dlngeo_testplug_nope"],
    ):
        assert main(argv) == 2
        errors = [line for line in capsys.readouterr().err.splitlines() if "warning" not in line]
        assert errors == [
            "dlngeo: error: plugin module 'dlngeo_testplug_nope' could not be imported: "
            "ModuleNotFoundError: No module named 'dlngeo_testplug_nope'"
        ], argv


# ---------------------------------------------------- third-party example
def _install_metadata(target: Path) -> None:
    """What pip puts in site-packages, read from the example's own pyproject.toml."""
    project = tomllib.loads((HUBER / "pyproject.toml").read_text())["project"]
    modules = {"dlngeo_plugin_huber": (HUBER / "dlngeo_plugin_huber.py").read_text()}
    _distribution(
        target, project["name"], project["version"], project["entry-points"]["dlngeo"], {}
    )
    for module, source in modules.items():
        (target / f"{module}.py").write_text(source)


def _huber_reference(rows, cols, values, delta):
    def fn(X):
        r = X[rows, cols] - values
        a = anp.abs(r)
        return anp.mean(anp.where(a <= delta, 0.5 * r**2, delta * (a - 0.5 * delta)))

    return dlngeo.loss_from_autograd(fn)


def _check_huber_through_entry_points():
    from dlngeo.experiment import build, load_config

    assert dlngeo.available("loss")["huber_completion"] == ("dlngeo_plugin_huber", "0.1.0")
    assert dlngeo.available("problem")["huber_completion"] == ("dlngeo_plugin_huber", "0.1.0")
    # its problem function gives it the data of matrix_completion from the same config
    config = load_config([], ["problem.shape=[12, 10]", "target.rank=2", "observations.size=60"])
    reference = build(config).task.loss
    config["loss"] = {"name": "huber_completion", "delta": 0.5}
    loss = build(config).task.loss
    for field in ("rows", "cols", "values"):
        assert np.array_equal(getattr(loss, field), getattr(reference, field)), field
    assert loss.shape == (12, 10) and loss.delta == 0.5
    rng = np.random.default_rng(0)
    rows, cols = dlngeo.create_sampler("uniform_mask", shape=(6, 5), size=15).sample(rng)
    values = 3 * rng.standard_normal(15)
    loss = dlngeo.create_loss(
        "huber_completion", rows=rows, cols=cols, values=values, shape=(6, 5), delta=1.0
    )
    reference = _huber_reference(rows, cols, values, 1.0)
    X = rng.standard_normal((6, 5))
    # rounding: residuals to eps (|X| + |v|) ~ 2e-15; the value sums k = 15 positive terms (~ 6
    # eps); the gradient clip(r) / k errs by <= 2e-15 / 15 ~ 1e-16 absolute; the Hessian is
    # Z 1{|r| < delta} / k, a rounding or two (no residual within 1e-15 of delta here)
    assert loss.value(X) == pytest.approx(reference.value(X), rel=1e-14)
    assert np.allclose(to_dense(loss.gradient(X)), reference.gradient(X), rtol=1e-13, atol=1e-16)
    Z = rng.standard_normal((6, 5))
    assert np.allclose(
        to_dense(loss.hessian_vector_product(X, Z)),
        reference.hessian_vector_product(X, Z),
        rtol=1e-14,
        atol=1e-16,
    )
    with pytest.raises(ValueError, match="delta"):
        dlngeo.create_loss(
            "huber_completion", rows=rows, cols=cols, values=values, shape=(6, 5), delta=-1.0
        )


def test_third_party_plugin_from_its_distribution_metadata(tmp_path, monkeypatch):
    _install_metadata(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    _check_huber_through_entry_points()
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])
    )
    result = subprocess.run(
        [sys.executable, "-m", "dlngeo.cli", "plugins"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert any(
        line.split()[:4] == ["loss", "huber_completion", "dlngeo_plugin_huber", "0.1.0"]
        for line in result.stdout.splitlines()
    )


def _can_build_without_isolation():
    try:
        import setuptools
    except ImportError:
        return False
    try:
        import wheel  # noqa: F401

        return True
    except ImportError:
        major, minor = (int(x) for x in setuptools.__version__.split(".")[:2])
        return (major, minor) >= (70, 1)


@pytest.mark.skipif(
    not _can_build_without_isolation(), reason="needs setuptools>=70.1 (or wheel) to build offline"
)
def test_third_party_plugin_pip_installs(tmp_path, monkeypatch):
    """``pip install`` of the example (into a target folder, not the running environment)."""
    source = tmp_path / "src"
    shutil.copytree(
        HUBER, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__")
    )
    target = tmp_path / "site"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--target",
            str(target),
            str(source),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    monkeypatch.syspath_prepend(str(target))
    _check_huber_through_entry_points()


# ------------------------------------------------- CONTRIBUTING's contract, run
def _contributing_blocks(language):
    text = (ROOT / "CONTRIBUTING.md").read_text()
    fence = f"```{language}\n"
    return [part.split("```", 1)[0] for part in text.split(fence)[1:]]


def _block(language, marker):
    (found,) = [b for b in _contributing_blocks(language) if marker in b]
    return found


def test_contributing_loss_metric_and_config_examples_run(tmp_path, monkeypatch):
    from dlngeo.experiment import build, load_config
    from dlngeo.lowrank import SparsePlusLowRank

    source = "\n".join(
        [
            _block("python", '"""Smoothed absolute error'),
            _block("python", "class RidgeSmoothL1Completion"),
            _block("python", "class Frobenius:"),
        ]
    )
    (tmp_path / "dlngeo_plugin_smoothl1.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    module = plugins.load_plugin_module("dlngeo_plugin_smoothl1")
    # The config of section 4 builds as it stands, and eps reaches the factory.
    config = tomllib.loads(_block("toml", 'name = "smoothl1_completion"'))
    plan = build(load_config([], base=config))
    assert plan.task.loss.eps == 0.05 and len(plan.task.loss.rows) == 300
    assert set(plan.task.data) == {"target", "rows", "cols"}
    # The regularised loss: gradient and Hessian-vector product at a low-rank
    # point are sparse plus low rank, and equal autograd's up to rounding: the
    # residuals carry ~ 2 eps (|X|, |v| < 2); the value (positive terms) ~ 10 eps;
    # h'(r) = r / sqrt(r^2 + e^2) amplifies a residual error by <= 1/e = 100 and
    # h'' by <= 3/e: ~ 1e-13 and ~ 3e-13 relative (e = 1e-2).
    rng = np.random.default_rng(0)
    m, n, lam, eps = 6, 5, 0.3, 1e-2
    rows, cols = dlngeo.create_sampler("uniform_mask", shape=(m, n), size=15).sample(rng)
    values = rng.standard_normal(15)
    loss = module.RidgeSmoothL1Completion(rows, cols, values, (m, n), eps=eps, lam=lam)
    reference = dlngeo.loss_from_autograd(
        lambda X: (
            anp.mean(anp.sqrt((X[rows, cols] - values) ** 2 + eps**2)) + 0.5 * lam * anp.sum(X**2)
        )
    )
    u, _ = np.linalg.qr(rng.standard_normal((m, 2)))
    v, _ = np.linalg.qr(rng.standard_normal((n, 2)))
    point = (u, np.array([2.0, 1.0]), v.T)
    X = to_dense(point)
    assert loss.value(point) == pytest.approx(reference.value(X), rel=1e-14)
    G = loss.gradient(point)
    assert isinstance(G, SparsePlusLowRank)
    assert np.allclose(to_dense(G), reference.gradient(X), rtol=1e-12, atol=1e-14)
    xi = dlngeo.FixedRank(m, n, 2).random_tangent_vector(point)
    Z = dlngeo.FixedRank(m, n, 2).embedding(point, xi)
    H = loss.hessian_vector_product(point, Z)
    assert isinstance(H, SparsePlusLowRank)
    assert np.allclose(
        to_dense(H), reference.hessian_vector_product(X, to_dense(Z)), rtol=1e-12, atol=1e-13
    )
    frobenius = dlngeo.create_metric("frobenius", relative=True)
    state = plan.task.state(plan.task.X0)
    # two Frobenius norms of the same matrices (pairwise sums, ~ log2(mn) eps each) and the
    # target densified from r factors (~ r eps): < 30 eps
    assert frobenius(state) == pytest.approx(
        np.linalg.norm(plan.task.X0) / np.linalg.norm(to_dense(plan.task.data["target"])),
        rel=1e-14,
    )


def test_contributing_solver_example_runs_and_its_typo_message_is_what_it_shows(
    tmp_path, monkeypatch, capsys
):
    from dlngeo.experiment import compare

    (tmp_path / "dlngeo_plugin_svp.py").write_text(_block("python", "class SVP(Method)"))
    monkeypatch.syspath_prepend(str(tmp_path))
    plugins.load_plugin_module("dlngeo_plugin_svp")
    config = {
        "seed": 0,
        "problem": {"shape": [12, 10]},
        "target": {"sampler": "low_rank_target", "rank": 2},
        "observations": {"sampler": "uniform_mask", "size": 80},
        "loss": {"name": "matrix_completion", "normalization": "sum"},
        "network": {"depth": 2},
        "stopping": {"max_iterations": 40},
        **tomllib.loads(_block("toml", "[methods.svp]")),
        "gap": [["overparametrized_gd", "svp"]],
    }
    config["methods"]["overparametrized_gd"] = {"step": 0.1}
    config["methods"]["svp_long"]["stopping"]["max_iterations"] = 60  # per method, over [stopping]
    result = compare(config)
    for label, step, steps in (("svp", 0.5, 40), ("svp_long", 0.1, 60)):
        record = result.records[label]
        assert record.stop_reason == "max_iterations" and record.n_iterations == steps, label
        # times are i * step: one rounding each (eps / 2)
        assert np.allclose(record.times, step * np.arange(steps + 1), rtol=1e-15, atol=0)
        assert record.metrics["loss"][-1] < record.metrics["loss"][0]
        assert result.flow_time[label]
    assert result.trajectory_gap[0]["intrinsic"] == "svp"
    shown = [line for line in _contributing_blocks("") if "methods.svp.stepp" in line]
    (block,) = shown
    cli_line, api_line = block.strip().splitlines()
    (tmp_path / "svp.toml").write_text(
        'plugins = ["dlngeo_plugin_svp"]\n[methods.svp]\nstepp = 2\n'
        '[problem]\nshape = [4, 4]\n[loss]\nname = "regression"\n[target]\n'
        'sampler = "low_rank_target"\nrank = 1\n[network]\ndepth = 2\n'
    )
    assert main(["run", str(tmp_path / "svp.toml"), "--out", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err.strip() == cli_line
    with pytest.raises(ValueError) as info:
        dlngeo.create_solver("svp", stepp=2)
    assert f"ValueError: {info.value}" == api_line
