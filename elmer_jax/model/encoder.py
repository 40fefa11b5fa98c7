"""The BART encoder: embeddings, then post-LN self-attention + FFN layers."""

from typing import Optional

import flax.linen as nn
import jax

from elmer_jax.model.attention import MultiHeadAttention
from elmer_jax.model.config import ElmerConfig
from elmer_jax.model.embeddings import embed_inputs
from elmer_jax.model.feed_forward import FeedForward
from elmer_jax.model.layer_stack import run_layers
from elmer_jax.model.normalization import add_and_norm


class EncoderLayer(nn.Module):
  config: ElmerConfig
  deterministic: bool = True

  @nn.compact
  def __call__(self, hidden: jax.Array, layer_index: jax.Array,
               mask: jax.Array) -> tuple[jax.Array, None]:
    del layer_index  # Every encoder layer does the same thing.
    cfg, det = self.config, self.deterministic
    update = MultiHeadAttention(cfg, det, name="self_attn")(hidden, hidden, mask)
    hidden = add_and_norm(cfg, hidden, update, det, "self_attn_layer_norm")
    update = FeedForward(cfg, det, name="ffn")(hidden)
    hidden = add_and_norm(cfg, hidden, update, det, "final_layer_norm")
    return nn.with_logical_constraint(hidden, ("batch", "length", "embed")), None


class Encoder(nn.Module):
  config: ElmerConfig
  shared: nn.Embed

  @nn.compact
  def __call__(self, tokens: jax.Array, mask: jax.Array,
               positions: Optional[jax.Array] = None,
               deterministic: bool = True) -> jax.Array:
    hidden = embed_inputs(self.config, self.shared, tokens, positions,
                          deterministic)
    hidden, _ = run_layers(EncoderLayer, self.config,
                           self.config.encoder_layers, deterministic, hidden,
                           (mask,))
    return hidden
