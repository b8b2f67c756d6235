"""Small least-squares problems shared by the Gauss–Newton / Levenberg–Marquardt tests."""

from __future__ import annotations

import numpy as np

import dlngeo


def completion(size=(30, 24), rank=2, observations=400, seed=0):
    """Rank-``rank`` completion from ``observations`` uniform entries: ``(loss, M)``."""
    rng = np.random.default_rng(seed)
    M = dlngeo.create_sampler("low_rank_target", shape=size, rank=rank).sample(rng)
    rows, cols = dlngeo.create_sampler("uniform_mask", shape=size, size=observations).sample(rng)
    loss = dlngeo.create_loss(
        "matrix_completion", rows=rows, cols=cols, values=M[rows, cols], shape=size
    )
    return loss, M


def sensing(size=(8, 6), rank=2, measurements=60, seed=1):
    """Rank-``rank`` sensing with Gaussian measurement matrices: ``(loss, M)``."""
    rng = np.random.default_rng(seed)
    M = dlngeo.create_sampler("low_rank_target", shape=size, rank=rank).sample(rng)
    A = rng.standard_normal((measurements, *size)) / np.sqrt(size[0] * size[1])
    return dlngeo.create_loss("matrix_sensing", A=A, target=M), M
