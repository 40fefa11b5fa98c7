"""BART's post-LayerNorm residual: norm(residual + dropout(update))."""

import flax.linen as nn
import jax

from elmer_jax.model import initializers
from elmer_jax.model.config import ElmerConfig
from elmer_jax.model.dropout import Dropout


def layer_norm(config: ElmerConfig, name: str) -> nn.LayerNorm:
  """LayerNorm with statistics in fp32 whatever the compute dtype."""
  return nn.LayerNorm(
      epsilon=config.layer_norm_eps, dtype=config.compute_dtype,
      param_dtype=config.weight_dtype,
      scale_init=initializers.ones(("embed",)),
      bias_init=initializers.zeros(("embed",)), name=name)


def add_and_norm(config: ElmerConfig, residual: jax.Array, update: jax.Array,
                 deterministic: bool, name: str) -> jax.Array:
  update = Dropout(config.dropout_rate)(update, deterministic=deterministic)
  return layer_norm(config, name)(residual + update)
