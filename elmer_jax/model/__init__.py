"""The ELMER Flax model: a BART-shaped encoder-decoder with off-ramps."""

from elmer_jax.model.config import ElmerConfig
from elmer_jax.model.elmer import Elmer, ElmerOutput, validate_inputs

__all__ = ["ElmerConfig", "Elmer", "ElmerOutput", "validate_inputs"]
