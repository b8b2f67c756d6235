r"""Built-in samplers: initializations of the weights and synthetic data.

A sampler has a ``kind`` and a ``sample(rng, ...)`` method; ``rng`` is a
``numpy.random.Generator`` (or a seed for ``numpy.random.default_rng``), the
only source of randomness: same seed, same bits.

Initializations (``kind = "initialization"``),
``sample(rng, network, target=None, loss=None) -> [W_1, ..., W_N]``:

* ``gaussian``: i.i.d. :math:`N(0, \mathrm{std}^2)`, std ``init_scale^(1/N) / sqrt(width)``
  (Arora, Cohen, Hu & Luo 2019; ``width`` defaults to each layer's input width,
  their ``n`` for square layers), so :math:`\|X(0)\|_F \approx` ``init_scale * sqrt(m)``.
* ``balanced``: a balanced factorization (docs/math.md §2) of a given ``X`` or of a
  random rank-``r`` ``X`` with :math:`\|X\|_F` = ``init_scale * sqrt(m)``.
* ``orthogonal``: Haar partial isometries times ``(init_scale sqrt(d_0))^(1/N)``
  (as in Arora et al. 2019's code; balanced for square layers).
* ``identity``: ``init_scale^(1/N)`` times the (rectangular) identity.
* ``spectral``: ``X_0 = init_scale * U_r V_r^T`` (or ``U_r diag(sigma_r) V_r^T``
  with ``weighted=True``) from the top-``r`` SVD of the target, or of the
  rescaled observations of the loss (``(mn/|Omega|) P_Omega(M)`` for completion,
  ``(mn/k) sum_i y_i A_i`` for sensing), then balanced.

Data (``kind = "data"``), ``sample(rng)``:

* ``low_rank_target``: docs/math.md §5: ``U, V ~ N(0, 1)``, ``M = U V^T / sqrt(r)``
  rescaled to :math:`\|M\|_F = \sqrt{mn}` (unit RMS entry); dense, or ``(u, s, vt)``
  with ``factored=True`` (for sizes where ``m x n`` does not fit).
* ``uniform_mask``: ``(rows, cols)`` of ``size`` distinct entries, uniform
  without replacement, in row-major order.
* ``gaussian_sensing``: ``k`` matrices with i.i.d. :math:`N(0, 1/(mn))` entries
  (Arora et al. 2019: ``randn(n, n) / n``), so ``y_i = <A_i, M>`` has unit variance.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from dlngeo.geometry.lowrank_ops import svd_of_product
from dlngeo.hookspecs import hookimpl
from dlngeo.lowrank import is_lowrank_point, point_shape
from dlngeo.network import DeepLinearNetwork, haar_stiefel
from dlngeo.validation import positive_integer, positive_number

__all__ = [
    "Gaussian",
    "Balanced",
    "Orthogonal",
    "Identity",
    "Spectral",
    "LowRankTarget",
    "UniformMask",
    "GaussianSensing",
]


# ---------------------------------------------------------------- validation
def _positive(value: Any, field: str) -> float:
    return positive_number(value, field)


def _count(value: Any, field: str, allow_none: bool = False) -> int | None:
    if value is None and allow_none:
        return None
    return positive_integer(value, field)


def _shape(value: Any) -> tuple[int, int]:
    try:
        m, n = value
    except (TypeError, ValueError):
        raise ValueError(f"shape must be two positive integers (m, n), got {value!r}") from None
    return _count(m, "shape"), _count(n, "shape")


def _network(network: Any) -> DeepLinearNetwork:
    if not isinstance(network, DeepLinearNetwork):
        raise ValueError(f"network must be a DeepLinearNetwork, got {type(network).__name__}")
    return network


class Sampler:
    """Base of the built-in samplers."""

    kind = "initialization"
    name = "sampler"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in vars(self).items())})"


# ------------------------------------------------------------ initializations
class Gaussian(Sampler):
    """i.i.d. Gaussian layers, std ``init_scale^(1/N) / sqrt(width)`` (Arora et al. 2019)."""

    name = "gaussian"

    def __init__(self, init_scale: float = 1e-3, width: int | None = None):
        self.init_scale = _positive(init_scale, "init_scale")
        self.width = _count(width, "width", allow_none=True)

    def sample(
        self, rng: Any, network: DeepLinearNetwork, target: Any = None, loss: Any = None
    ) -> list[np.ndarray]:
        rng, network = np.random.default_rng(rng), _network(network)
        root = self.init_scale ** (1.0 / network.depth)
        return [
            rng.standard_normal(shape) * (root / np.sqrt(self.width or shape[1]))
            for shape in network.shapes
        ]


class Balanced(Sampler):
    """Balanced factorization of ``X`` (given, or random of rank ``rank`` with ``||X||_F = init_scale sqrt(m)``)."""

    name = "balanced"

    def __init__(self, X: Any = None, init_scale: float = 1e-3, rank: int | None = None):
        self.X = X
        self.init_scale = _positive(init_scale, "init_scale")
        self.rank = _count(rank, "rank", allow_none=True)

    def sample(
        self, rng: Any, network: DeepLinearNetwork, target: Any = None, loss: Any = None
    ) -> list[np.ndarray]:
        rng, network = np.random.default_rng(rng), _network(network)
        if self.X is not None:
            return network.balanced(self.X, rng=rng, rank=self.rank)
        m, n = network.output_shape
        rank = self.rank or network.rank_bound
        if rank > network.rank_bound:
            raise ValueError(
                f"rank {rank} exceeds the narrowest width {network.rank_bound} of dims {network.dims}"
            )
        X = rng.standard_normal((m, rank)) @ rng.standard_normal((n, rank)).T
        X *= self.init_scale * np.sqrt(m) / np.linalg.norm(X)
        return network.balanced(X, rng=rng, rank=rank)


class Orthogonal(Sampler):
    """Haar partial isometries scaled by ``(init_scale sqrt(d_0))^(1/N)`` (Arora et al. 2019's code)."""

    name = "orthogonal"

    def __init__(self, init_scale: float = 1e-3):
        self.init_scale = _positive(init_scale, "init_scale")

    def sample(
        self, rng: Any, network: DeepLinearNetwork, target: Any = None, loss: Any = None
    ) -> list[np.ndarray]:
        rng, network = np.random.default_rng(rng), _network(network)
        gain = (self.init_scale * np.sqrt(network.dims[0])) ** (1.0 / network.depth)
        return [gain * haar_stiefel(rng, *shape) for shape in network.shapes]


class Identity(Sampler):
    """``init_scale^(1/N)`` times the rectangular identity in every layer (deterministic)."""

    name = "identity"

    def __init__(self, init_scale: float = 1.0):
        self.init_scale = _positive(init_scale, "init_scale")

    def sample(
        self, rng: Any, network: DeepLinearNetwork, target: Any = None, loss: Any = None
    ) -> list[np.ndarray]:
        network = _network(network)
        root = self.init_scale ** (1.0 / network.depth)
        return [root * np.eye(*shape) for shape in network.shapes]


class Spectral(Sampler):
    """Balanced start at ``init_scale`` times the target's (or observations') top-``rank`` singular directions."""

    name = "spectral"

    def __init__(self, init_scale: float = 1e-3, rank: int | None = None, weighted: bool = False):
        self.init_scale = _positive(init_scale, "init_scale")
        self.rank = _count(rank, "rank", allow_none=True)
        self.weighted = bool(weighted)

    @staticmethod
    def _observations(loss: Any, shape: tuple[int, int]) -> Any:
        m, n = shape
        if hasattr(loss, "observed_matrix") and hasattr(loss, "rows"):
            return loss.observed_matrix() * (m * n / loss.rows.size)
        if hasattr(loss, "A") and hasattr(loss, "y") and np.ndim(loss.A) == 3:
            k = len(loss.y)
            return (loss.y @ np.reshape(loss.A, (k, m * n))).reshape(m, n) * (m * n / k)
        raise ValueError("target: a spectral start needs a target, or a completion or sensing loss")

    def sample(
        self, rng: Any, network: DeepLinearNetwork, target: Any = None, loss: Any = None
    ) -> list[np.ndarray]:
        rng, network = np.random.default_rng(rng), _network(network)
        shape = network.output_shape
        if target is not None:
            if tuple(point_shape(target)) != shape:
                raise ValueError(
                    f"target has shape {point_shape(target)}, the network maps to {shape}"
                )
            matrix = target
        else:
            if self.rank is None:
                raise ValueError("rank: a spectral start from observations needs an explicit rank")
            matrix = self._observations(loss, shape)
        u, s, vt = self._top(matrix, rng, network.rank_bound)
        values = self.init_scale * (s if self.weighted else np.ones_like(s))
        return network.balanced((u, values, vt), rng=rng, rank=s.size)

    def _top(
        self, matrix: Any, rng: np.random.Generator, bound: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if is_lowrank_point(matrix):
            u, s, vt = (np.asarray(a, dtype=float) for a in matrix)
            order = np.argsort(-s)
            u, s, vt = u[:, order], s[order], vt[order]
        else:
            rank = min(self.rank or bound, bound)
            small = min(matrix.shape)
            if (
                sp.issparse(matrix)
                and rank < small - 1
                and matrix.shape[0] * matrix.shape[1] > 4_000_000
            ):
                v0 = rng.standard_normal(small)
                u, s, vt = spla.svds(matrix, k=rank, v0=v0)
                order = np.argsort(-s)
                u, s, vt = u[:, order], s[order], vt[order]
            else:
                dense = matrix.toarray() if sp.issparse(matrix) else np.asarray(matrix, dtype=float)
                if not np.all(np.isfinite(dense)):
                    raise ValueError("target must be finite")
                u, s, vt = np.linalg.svd(dense, full_matrices=False)
        if self.rank is None:  # numerical rank of the target, within the network's bound
            tol = max(u.shape[0], vt.shape[1]) * np.finfo(float).eps * (s[0] if s.size else 0.0)
            rank = min(int(np.sum(s > tol)), bound)
        else:
            rank = self.rank
        if rank > bound:
            raise ValueError(f"rank {rank} exceeds the narrowest width {bound} of the network")
        if rank == 0:
            raise ValueError("target is zero: it has no singular directions")
        return u[:, :rank], s[:rank], vt[:rank]


# ---------------------------------------------------------------------- data
class LowRankTarget(Sampler):
    """Rank-``rank`` target ``U V^T / sqrt(r)`` rescaled to unit RMS entry (Arora et al. 2019, docs/math.md §5)."""

    kind = "data"
    name = "low_rank_target"

    def __init__(self, shape: Any = (100, 100), rank: int = 5, factored: bool = False):
        self.shape = _shape(shape)
        self.rank = _count(rank, "rank")
        if self.rank > min(self.shape):
            raise ValueError(f"rank {self.rank} exceeds min(shape) = {min(self.shape)}")
        self.factored = bool(factored)

    def sample(self, rng: Any) -> Any:
        rng = np.random.default_rng(rng)
        (m, n), r = self.shape, self.rank
        U, V = rng.standard_normal((m, r)), rng.standard_normal((n, r))
        target_norm = np.sqrt(m * n)
        if not self.factored:
            M = U @ V.T / np.sqrt(r)
            return M * (target_norm / np.linalg.norm(M))
        u, s, vt = svd_of_product(U, V)  # of U V^T; the 1/sqrt(r) cancels in the rescaling
        return u, s * (target_norm / np.linalg.norm(s)), vt


class UniformMask(Sampler):
    """``size`` distinct entries of an ``m x n`` matrix, uniform without replacement."""

    kind = "data"
    name = "uniform_mask"

    def __init__(self, shape: Any = (100, 100), size: int = 2000):
        self.shape = _shape(shape)
        self.size = _count(size, "size")
        if self.size > self.shape[0] * self.shape[1]:
            raise ValueError(
                f"size {self.size} exceeds the {self.shape[0] * self.shape[1]} entries of shape {self.shape}"
            )

    def sample(self, rng: Any) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng(rng)
        m, n = self.shape
        linear = np.sort(rng.choice(m * n, size=self.size, replace=False))
        rows, cols = np.divmod(linear, n)
        return rows.astype(np.int64), cols.astype(np.int64)


class GaussianSensing(Sampler):
    """``count`` measurement matrices with i.i.d. ``N(0, 1/(mn))`` entries (Arora et al. 2019)."""

    kind = "data"
    name = "gaussian_sensing"

    def __init__(self, shape: Any = (100, 100), count: int = 2000):
        self.shape = _shape(shape)
        self.count = _count(count, "count")

    def sample(self, rng: Any) -> np.ndarray:
        rng = np.random.default_rng(rng)
        m, n = self.shape
        return rng.standard_normal((self.count, m, n)) / np.sqrt(m * n)


_SAMPLERS = (
    Gaussian,
    Balanced,
    Orthogonal,
    Identity,
    Spectral,
    LowRankTarget,
    UniformMask,
    GaussianSensing,
)


@hookimpl
def dlngeo_register_samplers(register):
    for cls in _SAMPLERS:
        register(cls.name, cls, description=f"[{cls.kind}] " + cls.__doc__.strip().splitlines()[0])
