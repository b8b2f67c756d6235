"""dlngeo's built-in plugins, installed as the package ``dlngeo_plugins``.

They are ordinary plugins: each module implements hooks of
:mod:`dlngeo.hookspecs` with ``@dlngeo.hookimpl`` and is declared in dlngeo's
``pyproject.toml`` under ``[project.entry-points.dlngeo]``, the same path a
third-party plugin takes (see ``examples/plugin_huber`` and CONTRIBUTING.md).

* :mod:`dlngeo_plugins.losses`: regression, lp_regression, matrix_completion, matrix_sensing
  (the regression classes live in :mod:`dlngeo_plugins.regression`, matrix completion in
  :mod:`dlngeo_plugins.completion`; neither registers anything itself).
* :mod:`dlngeo_plugins.metrics`: loss, singular_values, effective_rank, ... test_error
  (the metrics of the layers live in :mod:`dlngeo_plugins.layer_metrics`, which registers nothing).
* :mod:`dlngeo_plugins.samplers`: initializations and synthetic data.
* :mod:`dlngeo_plugins.solvers`: flows, descents and Riemannian solvers.
* :mod:`dlngeo_plugins.thermodynamics`: entropy and free energy metrics, Langevin samplers.
"""
