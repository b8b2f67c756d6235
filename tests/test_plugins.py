"""The plugin spine: entry-point loading, every hook, faults, environment controls,
the CLI table, and the third-party example plugin through the real entry-point path."""

import importlib.metadata as metadata
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


@pytest.fixture(autouse=True)
def fresh_plugins(monkeypatch):
    """Every test starts from a fresh plugin manager and leaves one behind."""
    monkeypatch.delenv("DLNGEO_DISABLE_PLUGIN_AUTOLOAD", raising=False)
    monkeypatch.delenv("DLNGEO_PLUGINS", raising=False)
    before = set(sys.modules)
    plugins.reset_plugins()
    yield
    plugins.reset_plugins()
    for name in set(sys.modules) - before:
        if name.startswith(("dlngeo_testplug_", "dlngeo_plugin_huber")):
            del sys.modules[name]


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
    assert np.allclose(loss.gradient(X), 4.0 * X)
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
    assert all(line.split()[0] in ("KIND", "loss") for line in out.splitlines())
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
    assert dlngeo.available("loss")["huber_completion"] == ("dlngeo_plugin_huber", "0.1.0")
    rng = np.random.default_rng(0)
    rows, cols = dlngeo.create_sampler("uniform_mask", shape=(6, 5), size=15).sample(rng)
    values = 3 * rng.standard_normal(15)
    loss = dlngeo.create_loss(
        "huber_completion", rows=rows, cols=cols, values=values, shape=(6, 5), delta=1.0
    )
    reference = _huber_reference(rows, cols, values, 1.0)
    X = rng.standard_normal((6, 5))
    assert loss.value(X) == pytest.approx(reference.value(X), rel=1e-14)
    assert np.allclose(to_dense(loss.gradient(X)), reference.gradient(X), rtol=1e-13, atol=1e-16)
    Z = rng.standard_normal((6, 5))
    assert np.allclose(
        to_dense(loss.hessian_vector_product(X, Z)),
        reference.hessian_vector_product(X, Z),
        rtol=1e-12,
        atol=1e-15,
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
