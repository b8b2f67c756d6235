"""Every hook has a test (the datasette meta-test).

Each hookspec ``dlngeo_*`` in :mod:`dlngeo.hookspecs` needs a test function
named ``test_hook_<hookspec name>`` somewhere in ``tests/``: adding a hook
without a test makes this fail.
"""

import ast
import inspect
from pathlib import Path

import pytest

from dlngeo import hookspecs

TESTS = Path(__file__).resolve().parent


def hookspec_names(module=hookspecs):
    """Names of the functions marked with ``@hookspec`` (pluggy sets ``dlngeo_spec`` on them)."""
    return sorted(
        name
        for name, f in inspect.getmembers(module, inspect.isfunction)
        if hasattr(f, "dlngeo_spec")
    )


def defined_test_functions(folder=TESTS):
    """Names of every ``test_*`` function defined in the test files of ``folder``."""
    names = set()
    for path in folder.glob("test_*.py"):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith(
                "test_"
            ):
                names.add(node.name)
    return names


def untested_hooks(specs, tests):
    return [name for name in specs if f"test_hook_{name}" not in tests]


def test_the_five_registration_hooks_are_specified():
    assert hookspec_names() == [
        "dlngeo_register_losses",
        "dlngeo_register_metrics",
        "dlngeo_register_problems",
        "dlngeo_register_samplers",
        "dlngeo_register_solvers",
    ]


def test_every_hookspec_has_a_test():
    missing = untested_hooks(hookspec_names(), defined_test_functions())
    assert missing == [], f"hooks without a test_hook_<name> test: {missing}"


def test_the_meta_test_catches_a_hook_without_test(tmp_path):
    (tmp_path / "test_fake.py").write_text("def test_hook_dlngeo_register_losses():\n    pass\n")
    tests = defined_test_functions(tmp_path)
    assert untested_hooks(["dlngeo_register_losses", "dlngeo_register_widgets"], tests) == [
        "dlngeo_register_widgets"
    ]


@pytest.mark.parametrize("name", hookspec_names())
def test_hookspecs_take_only_the_register_callback(name):
    assert list(inspect.signature(getattr(hookspecs, name)).parameters) == ["register"]
