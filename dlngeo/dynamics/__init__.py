"""Dynamics: the methods every comparison runs, their stopping criteria and their records.

=========================  =====================================================  ==========================
method (registered name)   what it integrates / iterates                          ``Record.times``
=========================  =====================================================  ==========================
``overparametrized_gd``    ``W <- W - eta grad L(W)`` (SGD: ``batch_size``, noise)  ``eta * k``
``overparametrized_flow``  ``dW/dt = -grad L(W)``, scipy ODE solver               ODE time
``intrinsic_flow``         ``dX/dt = -A_{N,X}(E'(X))``, dense or on ``(u, s, vt)``  ODE time
``riemannian_gd``          ``X <- R_X(-eta grad_g E)`` on ``(M_r, g_N)``          ``eta * k``
``riemannian_sd``          pymanopt SteepestDescent                               ``sum_k alpha_k``
``riemannian_cg``          pymanopt ConjugateGradient                             iterate number
``riemannian_tr``          pymanopt TrustRegions                                  iterate number
``riemannian_lm``          Levenberg–Marquardt / Gauss–Newton (least squares)     iterate number
=========================  =====================================================  ==========================

The first five share one flow time: from a balanced start the factor flow's
``phi(W(t))`` and the intrinsic flow's ``X(t)`` coincide, and the discrete
methods approximate them at ``t = eta k``. ``Record.time_kind`` says which
kind of time a record carries. Modules: :mod:`.base` (Task, Stopping,
Method), :mod:`.record`, :mod:`.driver` (the shared loop and sampling),
:mod:`.overparametrized` (with :mod:`.factor_gradients` and :mod:`.factor_flow`), :mod:`.intrinsic`, :mod:`.riemannian_gd`,
:mod:`.pymanopt_solver` (both re-exported by :mod:`.riemannian`), :mod:`.gauss_newton`; for ReLU
networks :mod:`.rk4` (fixed-step Runge–Kutta for right-hand sides that jump),
:mod:`.linearisation` (the linearised flow and the horizon) and :mod:`.phases`.
"""

from .base import Method, Stopping, Task
from .gauss_newton import RiemannianLM
from .intrinsic import IntrinsicFlow
from .overparametrized import EntryMinibatch, OverparametrizedFlow, OverparametrizedGD
from .pymanopt_solver import PymanoptSolver
from .record import STOP_REASONS, TIME_KINDS, Record
from .riemannian_gd import RiemannianGD

__all__ = [
    "Task",
    "Stopping",
    "Method",
    "Record",
    "STOP_REASONS",
    "TIME_KINDS",
    "OverparametrizedGD",
    "OverparametrizedFlow",
    "EntryMinibatch",
    "IntrinsicFlow",
    "RiemannianGD",
    "PymanoptSolver",
    "RiemannianLM",
]
