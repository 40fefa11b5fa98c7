"""Token and learned position embeddings, BART layout.

BART's position table has `max_positions + 2` rows and position p reads row
p + 2 (a quirk of fairseq kept by the released checkpoints).
"""

from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from elmer_jax.model import initializers
from elmer_jax.model.config import ElmerConfig
from elmer_jax.model.normalization import layer_norm

POSITION_OFFSET = 2


def token_embedder(config: ElmerConfig, name: str = "shared") -> nn.Embed:
  """The one embedding table shared by encoder, decoder and LM head."""
  return nn.Embed(
      num_embeddings=config.vocab_size, features=config.d_model,
      dtype=config.compute_dtype, param_dtype=config.weight_dtype,
      embedding_init=initializers.normal(config.init_std, ("vocab", "embed")),
      name=name)


def embed_inputs(config: ElmerConfig, shared: nn.Embed, tokens: jax.Array,
                 positions: Optional[jax.Array],
                 deterministic: bool) -> jax.Array:
  """tokens + positions, then `layernorm_embedding` and dropout.

  Creates `embed_positions` and `layernorm_embedding` in the calling module,
  so call it from the compact method of the encoder or decoder.
  """
  if positions is None:
    positions = jnp.arange(tokens.shape[1])[None, :]
  position_table = nn.Embed(
      num_embeddings=config.max_positions + POSITION_OFFSET,
      features=config.d_model, dtype=config.compute_dtype,
      param_dtype=config.weight_dtype,
      embedding_init=initializers.normal(config.init_std, ("length", "embed")),
      name="embed_positions")
  hidden = shared(tokens) + position_table(positions + POSITION_OFFSET)
  hidden = layer_norm(config, "layernorm_embedding")(hidden)
  hidden = nn.Dropout(config.dropout_rate)(hidden, deterministic=deterministic)
  return nn.with_logical_constraint(hidden, ("batch", "length", "embed"))
