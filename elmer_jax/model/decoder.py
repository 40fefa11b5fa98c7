"""The ELMER decoder: bidirectional BART decoder layers with copy-on-exit.

Every token carries an exit layer e. After layer l the decoder keeps
`cache = where(e == l, h, cache)` (the state the token's off-ramp reads) and
feeds `where(e <= l, stop_gradient(cache), h)` to layer l + 1, so a token that
has exited re-enters later layers frozen: later tokens still attend to it, but
no gradient flows back into it through them. All layers always run (no
data-dependent break), which gives the same loss and gradients as stopping.

Exit layers travel in the layer carry, so a layer can also move a token's exit
to itself when its off-ramp is confident (entropy early exit at inference).
Under soft exit the state fed upward passes through `concat_head` with the
embedding of the layer's predicted token (see off_ramp.py); an exited token's
frozen state is fed the same way, so later layers see one fixed input for it.
"""

from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from elmer_jax.model import off_ramp
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
  """One BART decoder layer (no causal mask), copy-on-exit, and what the
  off-ramp decides between layers (entropy exit, soft-exit feedback).

  Carry: (next layer's input, exit-state cache, exit layers). Output: this
  layer's off-ramp logits after copy-on-exit if `collect_logits`, else None.
  """

  config: ElmerConfig
  deterministic: bool = True
  collect_logits: bool = False
  gold_mix_rate: float = 0.0

  @nn.compact
  def __call__(self, carry: tuple[jax.Array, jax.Array, jax.Array],
               layer_index: jax.Array, encoded: jax.Array,
               self_mask: jax.Array, cross_mask: jax.Array,
               weights: off_ramp.OffRampWeights,
               gold_tokens: Optional[jax.Array],
               exit_threshold: Optional[jax.Array]):
    cfg, det = self.config, self.deterministic
    hidden, cache, exit_layers = carry
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
    logits = None
    if cfg.soft_exit or exit_threshold is not None or self.collect_logits:
      # Each token's own state after the copy (an exited token shows its exit
      # logits), with its gradient: the stop-gradient is only for what later
      # layers read, so the loss at a token's exit layer still trains it.
      state = jnp.where((exit_layers <= layer_index)[..., None], cache, hidden)
      logits = off_ramp.logits(cfg, weights, state)
    if exit_threshold is not None:
      # A token still running has the same state before and after the copy,
      # so deciding on post-copy logits and copying again is exact.
      exit_layers = off_ramp.exit_by_entropy(logits, exit_layers, layer_index,
                                             exit_threshold)
      hidden, cache = copy_on_exit(hidden, cache, exit_layers, layer_index)
    if cfg.soft_exit:
      tokens = jnp.argmax(logits, axis=-1)
      if gold_tokens is not None:
        mixing = 0.0 < self.gold_mix_rate < 1.0
        tokens = off_ramp.mix_gold(
            tokens, gold_tokens, self.gold_mix_rate,
            self.make_rng(off_ramp.GOLD_MIX_RNG) if mixing else None)
      hidden = off_ramp.feed_back(cfg, weights, hidden, tokens)
    hidden = nn.with_logical_constraint(hidden, HIDDEN_AXES)
    cache = nn.with_logical_constraint(cache, HIDDEN_AXES)
    return ((hidden, cache, exit_layers),
            logits if self.collect_logits else None)


class Decoder(nn.Module):
  """Returns (exit states, exit layers, per-layer logits if `collect_logits`).

  `exit_threshold` (None: off) adds entropy early exit on top of the given
  exit layers; `gold_tokens` are mixed into the soft-exit feedback at
  `gold_mix_rate` (rng stream `off_ramp.GOLD_MIX_RNG`).
  """

  config: ElmerConfig
  shared: nn.Embed

  @nn.compact
  def __call__(self, tokens: jax.Array, encoded: jax.Array,
               self_mask: jax.Array, cross_mask: jax.Array,
               exit_layers: jax.Array, weights: off_ramp.OffRampWeights,
               positions: Optional[jax.Array] = None,
               deterministic: bool = True, collect_logits: bool = False,
               gold_tokens: Optional[jax.Array] = None,
               gold_mix_rate: float = 0.0,
               exit_threshold: Optional[jax.Array] = None
               ) -> tuple[jax.Array, jax.Array, Optional[jax.Array]]:
    hidden = embed_inputs(self.config, self.shared, tokens, positions,
                          deterministic)
    carry = (hidden, jnp.zeros_like(hidden), exit_layers)
    (_, cache, exit_layers), layer_logits = run_layers(
        DecoderLayer, self.config, self.config.decoder_layers, deterministic,
        carry, (encoded, self_mask, cross_mask, weights, gold_tokens,
                exit_threshold),
        collect_logits=collect_logits, gold_mix_rate=gold_mix_rate)
    return cache, exit_layers, layer_logits
