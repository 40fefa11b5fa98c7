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
from elmer_jax.model.dropout import Dropout
from elmer_jax.model.normalization import layer_norm

POSITION_OFFSET = 2


def token_embedder(config: ElmerConfig, name: str = "shared") -> nn.Embed:
  """The one embedding table shared by encoder, decoder and LM head."""
  return nn.Embed(
      num_embeddings=config.vocab_size, features=config.d_model,
      dtype=config.compute_dtype, param_dtype=config.weight_dtype,
      embedding_init=initializers.normal(config.init_std, ("vocab", "embed")),
      name=name)


def lookup(table: nn.Embed, ids: jax.Array, dtype: jnp.dtype) -> jax.Array:
  """Gathers rows in the table's own (fp32) dtype, then casts.

  nn.Embed casts the whole table to the compute dtype first, which makes the
  backward pass a bf16 scatter-add: on an H100 that cost 136 of 211 ms per
  ELMER-base step. Gathering in fp32 keeps the scatter in fp32 (under 1 ms).
  """
  return jnp.take(table.embedding, ids, axis=0).astype(dtype)


def embed_inputs(config: ElmerConfig, shared: nn.Embed, tokens: jax.Array,
                 positions: Optional[jax.Array],
                 deterministic: bool) -> jax.Array:
  """tokens + positions, then `layernorm_embedding` and dropout.

  Creates `embed_positions` and `layernorm_embedding` in the calling module,
  so call it from the compact method of the encoder or decoder.
  """
  position_table = nn.Embed(
      num_embeddings=config.max_positions + POSITION_OFFSET,
      features=config.d_model, dtype=config.compute_dtype,
      param_dtype=config.weight_dtype,
      embedding_init=initializers.normal(config.init_std, ("length", "embed")),
      name="embed_positions")
  dtype = config.compute_dtype
  if positions is None:
    # Consecutive positions are a slice of the table: no gather, no scatter.
    rows = position_table.embedding[POSITION_OFFSET:
                                    POSITION_OFFSET + tokens.shape[1]]
    position_embeddings = rows[None].astype(dtype)
  else:
    position_embeddings = lookup(position_table, positions + POSITION_OFFSET,
                                 dtype)
  hidden = lookup(shared, tokens, dtype) + position_embeddings
  hidden = layer_norm(config, "layernorm_embedding")(hidden)
  hidden = Dropout(config.dropout_rate)(hidden, deterministic=deterministic)
  return nn.with_logical_constraint(hidden, ("batch", "length", "embed"))
