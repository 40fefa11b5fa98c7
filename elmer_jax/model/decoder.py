"""The ELMER decoder: bidirectional BART decoder layers with copy-on-exit.

Every token carries an exit layer e. After layer l the decoder keeps
`cache = where(e == l, h, cache)` (the state the token's off-ramp reads) and
feeds `where(e <= l, stop_gradient(cache), h)` to layer l + 1, so a token that
has exited re-enters later layers frozen: later tokens still attend to it, but
no gradient flows back into it through them. All layers always run (no
data-dependent break), which gives the same loss and gradients as stopping.
"""

from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from elmer_jax.model.attention import MultiHeadAttention
from elmer_jax.model.config import ElmerConfig
from elmer_jax.model.embeddings import embed_inputs
from elmer_jax.model.feed_forward import FeedForward
from elmer_jax.model.layer_stack import run_layers
from elmer_jax.model.normalization import add_and_norm

HIDDEN_AXES = ("batch", "length", "embed")


def copy_on_exit(hidden: jax.Array, cache: jax.Array, exit_layers: jax.Array,
                 layer_index: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Returns (next layer's input, exit-state cache) after `layer_index`."""
  cache = jnp.where((exit_layers == layer_index)[..., None], hidden, cache)
  hidden = jnp.where((exit_layers <= layer_index)[..., None],
                     jax.lax.stop_gradient(cache), hidden)
  return hidden, cache


class DecoderLayer(nn.Module):
  """One BART decoder layer (no causal mask) followed by copy-on-exit."""

  config: ElmerConfig
  deterministic: bool = True
  collect_states: bool = False

  @nn.compact
  def __call__(self, carry: tuple[jax.Array, jax.Array], layer_index: jax.Array,
               encoded: jax.Array, self_mask: jax.Array, cross_mask: jax.Array,
               exit_layers: jax.Array):
    cfg, det = self.config, self.deterministic
    hidden, cache = carry
    update = MultiHeadAttention(cfg, det, name="self_attn")(hidden, hidden,
                                                           self_mask)
    hidden = add_and_norm(cfg, hidden, update, det, "self_attn_layer_norm")
    update = MultiHeadAttention(cfg, det, name="encoder_attn")(hidden, encoded,
                                                              cross_mask)
    hidden = add_and_norm(cfg, hidden, update, det, "encoder_attn_layer_norm")
    update = FeedForward(cfg, det, name="ffn")(hidden)
    hidden = add_and_norm(cfg, hidden, update, det, "final_layer_norm")
    # A zero perturbation: lets tests and analyses take d(loss)/d(layer output).
    hidden = self.perturb("output", hidden)
    hidden, cache = copy_on_exit(hidden, cache, exit_layers, layer_index)
    hidden = nn.with_logical_constraint(hidden, HIDDEN_AXES)
    cache = nn.with_logical_constraint(cache, HIDDEN_AXES)
    return (hidden, cache), (hidden if self.collect_states else None)


class Decoder(nn.Module):
  """Returns the exit states and, if `collect_states`, every layer's state."""

  config: ElmerConfig
  shared: nn.Embed

  @nn.compact
  def __call__(self, tokens: jax.Array, encoded: jax.Array,
               self_mask: jax.Array, cross_mask: jax.Array,
               exit_layers: jax.Array, positions: Optional[jax.Array] = None,
               deterministic: bool = True, collect_states: bool = False
               ) -> tuple[jax.Array, Optional[jax.Array]]:
    hidden = embed_inputs(self.config, self.shared, tokens, positions,
                          deterministic)
    carry = (hidden, jnp.zeros_like(hidden))
    (_, cache), states = run_layers(
        DecoderLayer, self.config, self.config.decoder_layers, deterministic,
        carry, (encoded, self_mask, cross_mask, exit_layers),
        collect_states=collect_states)
    return cache, states
