"""PARL / A-PARL: preference-based policy alignment as a bilevel problem (Chakraborty et al., 2024)."""

from rlkit.parl.hypergradient import Hypergradient, conjugate_gradient, hypergradient, spectral_radius
from rlkit.parl.parl import PARL

__all__ = ["PARL", "Hypergradient", "conjugate_gradient", "hypergradient", "spectral_radius"]
