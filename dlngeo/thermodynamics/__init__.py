"""Thermodynamics of the deep linear network (Menon 2024; Menon & Yu 2024).

The Boltzmann entropy of the balanced fibre over ``X`` and the free energy
``F = E - S / beta`` (:mod:`.entropy`), numerical checks of the orbit volume
(:mod:`.orbit`), the equilibrium law of the singular values by quadrature
(:mod:`.equilibrium`), and the Riemannian Langevin samplers (:mod:`.rle`,
:mod:`.langevin`, :mod:`.mala`, :mod:`.lowrank_langevin`; their run loop is the
driver's, :mod:`.chains`).
"""

from .entropy import (
    entropic_force,
    entropy,
    entropy_from_singular_values,
    free_energy,
    log_stiefel_volume,
)
from .equilibrium import SingularValueLaw, log_density_singular_values
from .langevin import OverparametrizedLangevin, QuadraticEnergy, RiemannianLangevin, rle_drift
from .mala import RiemannianMALA
from .orbit import log_orbit_volume_gram, orbit_length_crofton

__all__ = [
    "entropy",
    "free_energy",
    "entropic_force",
    "entropy_from_singular_values",
    "log_stiefel_volume",
    "log_orbit_volume_gram",
    "orbit_length_crofton",
    "SingularValueLaw",
    "log_density_singular_values",
    "RiemannianLangevin",
    "RiemannianMALA",
    "OverparametrizedLangevin",
    "QuadraticEnergy",
    "rle_drift",
]
