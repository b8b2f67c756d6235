"""Geometry: the g_N kernel and the pymanopt manifolds built on it."""

from .dln_fixed_rank import DLNFixedRank
from .fixed_rank import FixedRank
from .kernel import (
    column_weights,
    kernel_matrix,
    metric_operator,
    metric_operator_svd,
    metric_operator_tangent,
    riemannian_gradient_tangent,
    tangent_inner_product,
)
from .problem import AmbientProblem, problem

__all__ = [
    "DLNFixedRank",
    "FixedRank",
    "AmbientProblem",
    "problem",
    "column_weights",
    "kernel_matrix",
    "metric_operator",
    "metric_operator_svd",
    "metric_operator_tangent",
    "riemannian_gradient_tangent",
    "tangent_inner_product",
]
