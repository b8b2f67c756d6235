"""Thermodynamics of the deep linear network (Menon 2024; Menon & Yu 2024).

The Boltzmann entropy of the balanced fibre over ``X`` and the free energy
``F = E - S / beta`` (:mod:`.entropy`), numerical checks of the orbit volume
(:mod:`.orbit`), and the Riemannian Langevin samplers (:mod:`.langevin`).
"""

from .entropy import entropic_force, entropy, entropy_from_singular_values, free_energy, log_stiefel_volume
from .orbit import log_orbit_volume_gram, orbit_length_crofton

__all__ = [
    "entropy",
    "free_energy",
    "entropic_force",
    "entropy_from_singular_values",
    "log_stiefel_volume",
    "log_orbit_volume_gram",
    "orbit_length_crofton",
]
