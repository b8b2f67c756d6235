"""Built-in methods: factor GD and flow, the intrinsic flow, Riemannian GD and pymanopt's solvers.

Registered through ``dlngeo_register_solvers`` like any plugin. Each factory
takes the method's options as keywords, validates them (``ValueError``
naming the option) and returns a :class:`~dlngeo.dynamics.base.Method`;
``method.run(task, stopping, callback)`` returns a
:class:`~dlngeo.dynamics.record.Record`.

==========================  ==========================================================
name                        options
==========================  ==========================================================
``overparametrized_gd``     step, gradient_sampler, batch_size, noise, seed, record_every, record_times
``group_rmsprop``           lr, alpha, eps, record_every, record_times
``overparametrized_flow``   integrator, rtol, atol, max_step, end_time, record_every, record_times
``intrinsic_flow``          representation, integrator, rtol, atol, max_step, first_step,
                            end_time, record_every, record_times
``riemannian_gd``           step, metric, record_every, record_times
``riemannian_sd``           metric, record_every, initial_step_size
``riemannian_cg``           metric, record_every, initial_step_size, beta_rule
``riemannian_tr``           metric, record_every, trust_radius, initial_radius, max_inner, min_inner,
                            kappa, theta
``riemannian_lm``           radius, forcing, theta, max_inner, max_rejections, projected_steps,
                            power_iterations, preconditioner, record_every
==========================  ==========================================================
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

from dlngeo.dynamics.base import stopping_note
from dlngeo.dynamics.gauss_newton import RiemannianLM
from dlngeo.dynamics.group_rmsprop import GroupRMSpropGD
from dlngeo.dynamics.intrinsic import IntrinsicFlow
from dlngeo.dynamics.overparametrized import OverparametrizedFlow, OverparametrizedGD
from dlngeo.dynamics.riemannian import PymanoptSolver, RiemannianGD
from dlngeo.hookspecs import hookimpl

__all__ = ["SOLVERS", "solver_factory"]


def solver_factory(
    name: str, build: Callable[..., Any], options: tuple[str, ...]
) -> Callable[..., Any]:
    """``factory(**options)`` that rejects unknown option names with a ``ValueError`` naming them."""

    note = stopping_note(build)

    @functools.wraps(build)
    def factory(**kwargs: Any) -> Any:
        unknown = sorted(set(kwargs) - set(options))
        if unknown:
            raise ValueError(
                f"unknown option {unknown[0]!r} for solver {name!r}; options: {', '.join(options)}"
                + (f" (and under [stopping]: by default, {note})" if note else "")
            )
        return build(**kwargs)

    factory.options = options  # type: ignore[attr-defined]
    return factory


def _options(cls: type, skip: tuple[str, ...] = ()) -> tuple[str, ...]:
    params = inspect.signature(cls.__init__).parameters
    return tuple(p for p in params if p not in ("self", *skip))


def _pymanopt(solver: str) -> Callable[..., Any]:
    return functools.partial(PymanoptSolver, solver)


_PYMANOPT_OPTIONS = {
    "riemannian_sd": ("metric", "record_every", "initial_step_size"),
    "riemannian_cg": ("metric", "record_every", "initial_step_size", "beta_rule"),
    "riemannian_tr": (
        "metric",
        "record_every",
        "trust_radius",
        "initial_radius",
        "max_inner",
        "min_inner",
        "kappa",
        "theta",
    ),
}

#: name -> (builder, option names, description)
SOLVERS: dict[str, tuple[Callable[..., Any], tuple[str, ...], str]] = {
    "overparametrized_gd": (
        OverparametrizedGD,
        _options(OverparametrizedGD),
        "gradient descent on the factors, constant step (SGD with a sampler or noise); t = step * k",
    ),
    "group_rmsprop": (
        GroupRMSpropGD,
        _options(GroupRMSpropGD),
        "factor GD with one global RMSprop step (Arora et al. 2019's optimizer); t = sum of steps",
    ),
    "overparametrized_flow": (
        OverparametrizedFlow,
        _options(OverparametrizedFlow),
        "gradient flow on the factors by a scipy ODE solver (rtol/atol)",
    ),
    "intrinsic_flow": (
        IntrinsicFlow,
        _options(IntrinsicFlow),
        "dX/dt = -A_{N,X}(E'(X)): dense (scipy ODE) or low rank (projected embedded RK on (u, s, vt))",
    ),
    "riemannian_gd": (
        RiemannianGD,
        _options(RiemannianGD),
        "constant-step Riemannian GD on (M_r, g_N): Euler for the intrinsic flow; t = step * k",
    ),
    "riemannian_lm": (
        RiemannianLM,
        _options(RiemannianLM),
        "Riemannian Levenberg-Marquardt / Gauss-Newton on (M_r, Frobenius) for least squares "
        "(completion, sensing): trust region on the Gauss-Newton model (truncated CG), "
        "projected-gradient first step",
    ),
    **{
        name: (
            _pymanopt(name),
            options,
            f"pymanopt {label} on DLNFixedRank (metric='dln') or FixedRank ('embedded')",
        )
        for (name, options), label in zip(
            _PYMANOPT_OPTIONS.items(), ("SteepestDescent", "ConjugateGradient", "TrustRegions")
        )
    },
}


@hookimpl
def dlngeo_register_solvers(register):
    # The default stop is added to every solver's description and option list from
    # its declared capabilities (dlngeo.dynamics.base.stopping_note), as for any plugin.
    for name, (build, options, description) in SOLVERS.items():
        register(name, solver_factory(name, build, options), description=description)
