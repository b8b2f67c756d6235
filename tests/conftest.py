"""Suite-wide settings.

The test problems are small (at most a few hundred rows); multithreaded BLAS
only adds synchronisation cost there, and with pytest-xdist's two workers on
two cores it oversubscribes the machine. One BLAS thread per worker.
"""

import sys

import matplotlib
import pytest
from threadpoolctl import threadpool_limits

from dlngeo import plugins

matplotlib.use("Agg")
threadpool_limits(limits=1)


@pytest.fixture
def fresh_plugins(request, monkeypatch):
    """A fresh plugin manager for the test, and a fresh one left behind.

    The test module's plugin modules (names starting with one of its
    ``TEST_PLUGIN_PREFIXES``) are dropped from ``sys.modules`` afterwards.
    """
    prefixes = tuple(getattr(request.module, "TEST_PLUGIN_PREFIXES", ()))
    monkeypatch.delenv("DLNGEO_DISABLE_PLUGIN_AUTOLOAD", raising=False)
    monkeypatch.delenv("DLNGEO_PLUGINS", raising=False)
    before = set(sys.modules)
    plugins.reset_plugins()
    yield
    plugins.reset_plugins()
    for name in set(sys.modules) - before:
        if prefixes and name.startswith(prefixes):
            del sys.modules[name]
